//! Unit tests of `observe`: rates between refreshes, what a refresh costs in libvirt calls, the
//! kept scan, and a real bulk statistics call on libvirt's test driver.

use std::cell::{Cell, RefCell};

use hostio::{HostRoot, RecordingRunner};
use hypervisor::{DomainRecord, Hypervisor, Libvirt};

use super::*;

const XML: &str = "<domain type='kvm'><name>NAME</name><memory unit='KiB'>2097152</memory>\
<vcpu>2</vcpu><os><type arch='x86_64' machine='q35'>hvm</type></os><devices>\
<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x01' \
slot='0x00' function='0x0'/></source></hostdev></devices></domain>";

/// Domains whose state and counters a test sets; counts the listings.
struct Fake {
    states: RefCell<Vec<(String, State)>>,
    stats: RefCell<Vec<DomainStats>>,
    listings: Cell<u32>,
}

impl Fake {
    fn new(doms: &[(&str, State)]) -> Self {
        Fake {
            states: RefCell::new(doms.iter().map(|(n, s)| (n.to_string(), *s)).collect()),
            stats: RefCell::new(Vec::new()),
            listings: Cell::new(0),
        }
    }
}

impl Hypervisor for Fake {
    fn uri(&self) -> &str {
        "fake:///"
    }
    fn capabilities(&self) -> hypervisor::Result<hypervisor::Capabilities> {
        unimplemented!()
    }
    fn list(&self) -> hypervisor::Result<Vec<DomainRecord>> {
        self.listings.set(self.listings.get() + 1);
        Ok(self
            .states
            .borrow()
            .iter()
            .map(|(name, state)| DomainRecord {
                name: name.clone(),
                id: None,
                state: *state,
                persistent: true,
                autostart: name == "vm1",
                xml: XML.replace("NAME", name),
            })
            .collect())
    }
    fn get(&self, name: &str) -> hypervisor::Result<Option<DomainRecord>> {
        Ok(self.list()?.into_iter().find(|d| d.name == name))
    }
    fn define(&self, _: &str, _: &str) -> hypervisor::Result<()> {
        unimplemented!()
    }
    fn undefine(&self, _: &str, _: bool) -> hypervisor::Result<()> {
        unimplemented!()
    }
    fn start(&self, _: &str) -> hypervisor::Result<()> {
        unimplemented!()
    }
    fn shutdown(&self, _: &str) -> hypervisor::Result<()> {
        unimplemented!()
    }
    fn destroy(&self, _: &str) -> hypervisor::Result<()> {
        unimplemented!()
    }
    fn state(&self, _: &str) -> hypervisor::Result<State> {
        unimplemented!()
    }
    fn agent_addresses(&self, _: &str) -> hypervisor::Result<Vec<hypervisor::GuestAddress>> {
        panic!("a refresh never asks the guest agent")
    }
    fn all_domain_stats(&self) -> hypervisor::Result<Vec<DomainStats>> {
        let states = self.states.borrow();
        let stats = self.stats.borrow();
        Ok(states
            .iter()
            .map(|(name, state)| {
                stats
                    .iter()
                    .find(|s| &s.name == name)
                    .cloned()
                    .map(|s| DomainStats { state: *state, ..s })
                    .unwrap_or(DomainStats {
                        name: name.clone(),
                        state: *state,
                        ..Default::default()
                    })
            })
            .collect())
    }
}

fn counters(name: &str, cpu_s: u64, bytes: u64) -> DomainStats {
    DomainStats {
        name: name.into(),
        state: State::Running,
        cpu_time_ns: Some(cpu_s * 1_000_000_000),
        vcpus: Some(2),
        memory_kib: Some(2_097_152),
        memory_max_kib: Some(2_097_152),
        rss_kib: Some(500_000),
        block_read_bytes: Some(bytes),
        block_write_bytes: Some(bytes / 2),
        net_rx_bytes: Some(bytes),
        net_tx_bytes: Some(bytes),
    }
}

fn with_ctx<T>(hv: &dyn Hypervisor, f: impl FnOnce(&Ctx) -> T) -> T {
    let tmp = tempfile::tempdir().unwrap();
    let host = HostRoot::new(tmp.path());
    let config = Config::defaults();
    let runner = RecordingRunner::new();
    let ctx = Ctx::new(&config, &host, &runner, hv);
    f(&ctx)
}

#[test]
fn rates_come_from_two_refreshes_and_a_steady_refresh_is_one_round_trip() {
    let hv = Fake::new(&[("vm1", State::Running), ("vm2", State::ShutOff)]);
    with_ctx(&hv, |ctx| {
        let mut o = Observer::new();
        let t0 = Instant::now();
        *hv.stats.borrow_mut() = vec![counters("vm1", 10, 1_000)];
        let first = o.refresh(ctx, t0).unwrap();
        assert_eq!(hv.listings.get(), 1);
        assert!(first.round_trips > 1);
        let vm1 = &first.vms[0];
        assert_eq!(vm1.cpu_percent, None, "no rate on the first refresh");
        assert_eq!(vm1.gpus, vec!["0000:01:00.0"]);
        assert!(vm1.autostart);

        // 2 s later vm1 used 1 s of CPU (50 % of one host CPU) and moved 2000 bytes.
        *hv.stats.borrow_mut() = vec![counters("vm1", 11, 5_000)];
        let second = o.refresh(ctx, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(second.round_trips, 1, "only the statistics call");
        assert_eq!(hv.listings.get(), 1, "the XML was not read again");
        let vm1 = &second.vms[0];
        assert_eq!(vm1.cpu_percent, Some(50.0));
        assert_eq!(vm1.disk_read_bps, Some(2_000.0));
        assert_eq!(vm1.net_tx_bps, Some(2_000.0));
        assert_eq!(vm1.memory_used_kib, Some(500_000));
        let vm2 = &second.vms[1];
        assert_eq!(
            (vm2.state, vm2.cpu_percent, vm2.vcpus),
            (State::ShutOff, None, 2)
        );
    });
}

#[test]
fn a_state_change_or_an_invalidate_rereads_the_definitions() {
    let hv = Fake::new(&[("vm1", State::Running)]);
    with_ctx(&hv, |ctx| {
        let mut o = Observer::new();
        let t0 = Instant::now();
        o.refresh(ctx, t0).unwrap();
        hv.states.borrow_mut()[0].1 = State::ShutOff;
        let v = o.refresh(ctx, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(hv.listings.get(), 2);
        assert_eq!(v.vms[0].state, State::ShutOff);
        o.refresh(ctx, t0 + Duration::from_secs(4)).unwrap();
        assert_eq!(hv.listings.get(), 2);
        o.invalidate();
        o.refresh(ctx, t0 + Duration::from_secs(6)).unwrap();
        assert_eq!(hv.listings.get(), 3);
    });
}

#[test]
fn a_counter_that_went_back_has_no_rate() {
    let hv = Fake::new(&[("vm1", State::Running)]);
    with_ctx(&hv, |ctx| {
        let mut o = Observer::new();
        let t0 = Instant::now();
        *hv.stats.borrow_mut() = vec![counters("vm1", 100, 9_000)];
        o.refresh(ctx, t0).unwrap();
        *hv.stats.borrow_mut() = vec![counters("vm1", 1, 10)];
        let v = o.refresh(ctx, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(v.vms[0].cpu_percent, None);
        assert_eq!(v.vms[0].net_rx_bps, None);
    });
}

#[test]
fn a_kept_scan_is_read_back_for_its_bridge_only() {
    let tmp = tempfile::tempdir().unwrap();
    let host = HostRoot::new(tmp.path());
    let config = Config::defaults();
    let check = IpCheck {
        interface: "br0".into(),
        subnet: "198.18.0.0/24".parse().unwrap(),
        used: Vec::new(),
        free: Vec::new(),
        free_count: 250,
        duration_ms: 900,
        conflicts: vec![netscan::Conflict {
            ip: "198.18.0.7".parse().unwrap(),
            macs: Vec::new(),
        }],
        method: netscan::ScanMethod::Raw,
        fallback: false,
        vms_known: true,
        local_ip: "198.18.0.1".parse().unwrap(),
        probed: 254,
        packets_sent: 254,
        rate_pps: 1000,
        retries: 1,
        timeout_ms: 500,
    };
    assert_eq!(last_scan(&config, &host, "br0"), None);
    let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    record_scan(&config, &host, &check, at);
    let kept = last_scan(&config, &host, "br0").unwrap();
    assert_eq!(kept.subnet, "198.18.0.0/24");
    assert_eq!(kept.scanned_at, 1_800_000_000);
    assert_eq!((kept.free_count, kept.conflicts.len()), (250, 1));
    assert_eq!(last_scan(&config, &host, "br1"), None);
}

#[test]
fn the_test_driver_answers_one_bulk_call_for_every_domain() {
    let hv = Libvirt::open("test:///default").unwrap();
    with_ctx(&hv, |ctx| {
        let v = snapshot(ctx).unwrap();
        let test = v.vms.iter().find(|r| r.name == "test").unwrap();
        assert_eq!(test.state, State::Running);
        assert!(test.vcpus > 0 && test.memory_kib > 0);
    });
}

#[test]
fn a_uri_with_a_host_part_is_remote() {
    for local in ["qemu:///system", "test:///default", "qemu+unix:///system"] {
        assert!(!is_remote(local), "{local}");
    }
    for remote in [
        "qemu+ssh://root@gpu2/system",
        "qemu://gpu2/system",
        "qemu+tcp://10.0.0.2/system",
    ] {
        assert!(is_remote(remote), "{remote}");
    }
}
