use std::net::Ipv4Addr;

use talos_image::machineconfig::Role;

use super::*;
use crate::commands::hosts::{HostGpu, HostRow};

/// A host with `free` isolated GPUs nobody holds, plus one held by a VM and one on the host's
/// own driver (neither can be given).
fn host(name: &str, free: usize) -> HostRow {
    let mut r = HostRow::empty(name, Some(&format!("ops@{name}")));
    r.reachable = true;
    let gpu = |i: usize, driver: &str, vm: Option<&str>| HostGpu {
        bdf: format!("0000:{:02x}:00.0", i + 1),
        name: "NVIDIA GA102".into(),
        driver: Some(driver.into()),
        isolated: Some(true),
        vm: vm.map(str::to_string),
    };
    r.gpus = (0..free).map(|i| gpu(i, "vfio-pci", None)).collect();
    r.gpus.push(gpu(free, "vfio-pci", Some("other-vm")));
    r.gpus.push(gpu(free + 1, "nvidia", None));
    r
}

const CP: (Role, bool) = (Role::Controlplane, false);
const W: (Role, bool) = (Role::Worker, false);
const GPU: (Role, bool) = (Role::Worker, true);

#[test]
fn control_planes_go_to_distinct_hosts_and_workers_to_the_least_loaded() {
    let rows = [host("a", 0), host("b", 0), host("c", 0)];
    let placed = place(&rows, &[CP, CP, CP, W, W, W, W]).unwrap();
    let hosts: Vec<usize> = placed.iter().map(|(h, _)| *h).collect();
    assert_eq!(hosts, [0, 1, 2, 0, 1, 2, 0]);
    assert!(placed.iter().all(|(_, g)| g.is_none()));
}

#[test]
fn more_control_planes_than_hosts_is_refused_naming_the_hosts() {
    let rows = [host("a", 0), host("b", 0)];
    let e = place(&rows, &[CP, CP, CP]).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("3 control planes need 3 distinct hosts") && text.contains("a, b"),
        "{text}"
    );
    assert_eq!(e.exit_kind(), crate::error::ExitKind::Usage);
}

#[test]
fn gpu_workers_go_where_free_isolated_gpus_are_each_gpu_once() {
    // a has none free, b one, c two: c takes the first GPU worker, then b and c have one each.
    let rows = [host("a", 0), host("b", 1), host("c", 2)];
    let placed = place(&rows, &[CP, GPU, GPU, GPU]).unwrap();
    assert_eq!(placed[0], (0, None));
    let gpus: Vec<(usize, String)> = placed[1..]
        .iter()
        .map(|(h, g)| (*h, g.clone().unwrap()))
        .collect();
    assert_eq!(
        gpus,
        [
            (2, "0000:01:00.0".to_string()),
            (1, "0000:01:00.0".to_string()),
            (2, "0000:02:00.0".to_string()),
        ]
    );
}

#[test]
fn too_few_free_gpus_across_hosts_is_refused_with_each_hosts_count() {
    // The held GPU and the one on the nvidia driver are not free.
    let rows = [host("a", 1), host("b", 0)];
    let e = place(&rows, &[CP, GPU, GPU]).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("2 GPU worker(s) need 2 free isolated GPU(s), and the hosts have 1")
            && text.contains("  - a: 1 free")
            && text.contains("  - b: 0 free"),
        "{text}"
    );
    assert_eq!(e.exit_kind(), crate::error::ExitKind::Usage);
}

#[test]
fn addresses_skip_what_any_host_holds_or_sees_and_the_reserved_ranges() {
    let subnet: ipnet::Ipv4Net = "198.18.2.0/24".parse().unwrap();
    let ip = |d: u8| Ipv4Addr::new(198, 18, 2, d);
    // Host a's scan saw .1 (its bridge) and .2; host b holds .4 (a stopped VM) and .6.
    let taken = [ip(1), ip(2), ip(4), ip(6)];
    let reserved = [netscan::IpRange {
        first: ip(7),
        last: ip(9),
    }];
    assert_eq!(
        pick_addresses(subnet, &taken, &reserved, 4).unwrap(),
        [ip(3), ip(5), ip(10), ip(11)]
    );
    let small: ipnet::Ipv4Net = "198.18.2.0/29".parse().unwrap();
    let e = pick_addresses(small, &taken, &reserved, 3).unwrap_err();
    assert!(
        e.to_string()
            .contains("3 address(es) are needed in 198.18.2.0/29, and 2 are free"),
        "{e}"
    );
}

#[test]
fn a_remote_node_is_asked_with_its_whole_request_and_the_config_on_stdin() {
    let mut r = TalosRequest::new("c1-gpu-1");
    r.role = Role::Worker;
    r.cluster = Some("c1".into());
    r.version = Some("v1.12.1".into());
    r.network = NetworkRequest::Static {
        ip: "198.18.2.20/24".into(),
        gateway: Some("198.18.2.1".into()),
        dns: vec!["198.18.2.1".into()],
    };
    r.mac = Some("52:54:00:aa:bb:cc".into());
    r.disk = Some("20G".into());
    r.bridge = Some("br0".into());
    r.gpus = vec!["0000:2b:00.0".into()];
    let args = talos_args(&r, true);
    assert_eq!(
        args.join(" "),
        "--json create talos c1-gpu-1 --role worker --cluster c1 --version v1.12.1 \
         --ip 198.18.2.20/24 --gateway 198.18.2.1 --dns 198.18.2.1 --mac 52:54:00:aa:bb:cc \
         --cpus 2 --memory 4096 --disk 20G --bridge br0 --gpu 0000:2b:00.0 --nvidia production \
         --machine-config - --no-start --dry-run"
    );
    assert!(!talos_args(&r, false).contains(&"--dry-run".to_string()));
}

#[test]
fn hosts_named_twice_or_unknown_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let host = hostio::HostRoot::new(t.path());
    let lv = hypervisor::Libvirt::open("test:///default").unwrap();
    let config = crate::config::Config::defaults();
    let ctx = Ctx::new(&config, &host, &hostio::SystemRunner, &lv);
    let twice = sites(&ctx, &["local".into(), "local".into()]).unwrap_err();
    assert!(
        twice.to_string().contains("local is named twice"),
        "{twice}"
    );
    let unknown = sites(&ctx, &["local".into(), "nowhere".into()]).unwrap_err();
    assert!(
        unknown.to_string().contains("no host named \"nowhere\""),
        "{unknown}"
    );
    assert_eq!(unknown.exit_kind(), crate::error::ExitKind::Usage);
}
