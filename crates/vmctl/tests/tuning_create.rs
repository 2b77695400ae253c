//! `vmctl create ubuntu --cpu-pinning/--hugepages` on the 8×H200 HGX fixture host (GPUs on two
//! NUMA nodes; Shared NVSwitch multitenancy, so a VM may take some of the GPUs) and libvirt's
//! test driver: the domain gets the planner's pins, cells and hugepage backing, a second pinned
//! VM reads the first one's pins from its XML, and refusals leave nothing behind.

use std::path::PathBuf;

use crate::support::{TestHost, no_env, test_host_in};

use guest_media::cache::NoProgress;
use hostio::{Cmd, CommandRunner, HostRoot, SystemRunner};
use hypervisor::domain::parse::parse_domain;
use hypervisor::{Hypervisor, Libvirt};
use vmctl::ExitKind;
use vmctl::commands::Ctx;
use vmctl::commands::create::{Created, UbuntuRequest, create_ubuntu};
use vmctl::config::Config;
use vmctl::tuning::{PageSize, PinMode, TuningRequest};

struct Fixture {
    _dir: tempfile::TempDir,
    _tree: tempfile::TempDir,
    host: HostRoot,
    config: Config,
    key: PathBuf,
    base: PathBuf,
    lv: Libvirt,
}

/// The H200 host with 1G hugepages reserved: 6 of 8 free on node 0, 8 of 8 on node 1.
fn fixture() -> Fixture {
    // Some of the GPUs per VM: the Shared NVSwitch setup of the host allows it.
    fixture_on(
        fixture_builder::build_from_str(&format!(
            "base = \"hgx-h200x8-nvswitch-truncated\"\n\
         [numa.0.hugepages]\n1048576 = {{ total = 8, free = 6 }}\n\
         [numa.1.hugepages]\n1048576 = {{ total = 8, free = 8 }}\n{}",
            crate::support::SHARED_NVSWITCH
        ))
        .unwrap(),
    )
}

fn fixture_on(tree: tempfile::TempDir) -> Fixture {
    let TestHost {
        dir,
        tree,
        host,
        config,
        lv,
    } = test_host_in(tree);
    let key = dir.path().join("id_ed25519.pub");
    std::fs::write(
        &key,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6 t@h\n",
    )
    .unwrap();
    let base = dir.path().join("base.qcow2");
    SystemRunner
        .run(&Cmd::new([
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            &base.display().to_string(),
            "64M",
        ]))
        .unwrap();
    Fixture {
        _dir: dir,
        _tree: tree,
        host,
        config,
        key,
        base,
        lv,
    }
}

fn request(
    f: &Fixture,
    name: &str,
    gpus: &[&str],
    cpus: u32,
    tuning: TuningRequest,
) -> UbuntuRequest {
    let mut r = UbuntuRequest::new(name);
    r.image = Some(f.base.display().to_string());
    r.ssh_key = Some(f.key.clone());
    r.bridge = Some("br0".into());
    r.no_start = true;
    r.gpus = gpus.iter().map(|s| s.to_string()).collect();
    // Passthrough only: the guest driver stack has its own tests (it fetches keys).
    r.gpu_stack = Some(vmctl::commands::create::GpuStack::None);
    r.cpus = cpus;
    r.memory = "4096".into();
    r.tuning = tuning;
    r
}

fn create(f: &Fixture, r: &UbuntuRequest) -> vmctl::Result<Created> {
    let ctx = Ctx::new(&f.config, &f.host, &SystemRunner, &f.lv).with_env(&no_env);
    create_ubuntu(&ctx, r, &NoProgress)
}

const AUTO: TuningRequest = TuningRequest {
    pinning: Some(PinMode::Auto),
    hugepages: None,
};

fn pins(f: &Fixture, name: &str) -> Vec<String> {
    let facts = parse_domain(&f.lv.inactive_xml(name).unwrap()).unwrap();
    facts
        .tuning
        .vcpupins
        .into_iter()
        .map(|p| p.cpuset)
        .collect()
}

#[test]
fn pinned_creates_on_the_h200_host() {
    let f = fixture();
    let c = create(&f, &request(&f, "p1", &["18:00.0"], 4, AUTO)).unwrap();
    assert_eq!(pins(&f, "p1"), ["1", "2", "3", "4"]);
    let placement = c.placement.as_ref().unwrap();
    assert_eq!(placement.cpu.as_ref().unwrap().nodes, [0]);
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(
        json["placement"]["cpu"]["vcpu_cpus"],
        serde_json::json!([1, 2, 3, 4])
    );
    let xml = f.lv.inactive_xml("p1").unwrap();
    assert!(
        xml.contains("<emulatorpin cpuset='0,5-55,112-167'/>"),
        "{xml}"
    );
    assert!(xml.contains("<memory mode='strict' nodeset='0'/>"), "{xml}");

    // The second VM reads p1's pins from its domain XML and takes the next CPUs.
    create(&f, &request(&f, "p2", &["2a:00.0"], 4, AUTO)).unwrap();
    assert_eq!(pins(&f, "p2"), ["5", "6", "7", "8"]);

    // GPUs on both nodes: two guest NUMA cells, vCPUs split by GPU count.
    let mut both = request(&f, "p3", &["3a:00.0", "9a:00.0"], 4, AUTO);
    both.memory = "4096".into();
    create(&f, &both).unwrap();
    assert_eq!(pins(&f, "p3"), ["9", "10", "57", "58"]);
    let facts = parse_domain(&f.lv.inactive_xml("p3").unwrap()).unwrap();
    assert_eq!(facts.tuning.numa_cells.len(), 2);
    assert_eq!(facts.tuning.numa_cells[1].memory_mib, 2048);

    // `shared` ignores the others' pins.
    let shared = TuningRequest {
        pinning: Some(PinMode::Shared),
        hugepages: None,
    };
    create(&f, &request(&f, "p4", &["5d:00.0"], 2, shared)).unwrap();
    assert_eq!(pins(&f, "p4"), ["1", "2"]);
}

#[test]
fn hugepage_refusal_gives_numbers_and_leaves_nothing() {
    let f = fixture();
    let both = TuningRequest {
        pinning: Some(PinMode::Auto),
        hugepages: Some(PageSize::G1),
    };
    let mut r = request(&f, "h1", &["18:00.0"], 2, both);
    r.memory = "8G".into();
    let err = create(&f, &r).unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    assert_eq!(
        err.to_string(),
        "not enough free 1G hugepages on NUMA node 0: the VM needs 8, 6 are free of 8 reserved"
    );
    assert!(f.lv.get("h1").unwrap().is_none());
    assert!(!f.host.path("/vms/h1").exists());

    // On node 1 they fit; the domain is backed by 1G pages there.
    let mut r = request(&f, "h2", &["9a:00.0"], 2, both);
    r.memory = "8G".into();
    create(&f, &r).unwrap();
    let xml = f.lv.inactive_xml("h2").unwrap();
    assert!(xml.contains("<page size='1048576' unit='KiB'/>"), "{xml}");
    assert!(xml.contains("nodeset='1'"), "{xml}");
}

#[test]
fn full_hgx_passthrough_pins_by_the_gpus_not_the_nvswitches() {
    // 8 GPUs (4 per node) and 4 NVSwitches (node 0): the vCPUs split evenly by GPU.
    let f = fixture_on(fixture_builder::build_host("hgx-h200x8-nvswitch"));
    let c = create(&f, &request(&f, "full", &["all"], 8, AUTO)).unwrap();
    let cpu = c.placement.as_ref().unwrap().cpu.clone().unwrap();
    assert_eq!(cpu.nodes, [0, 1]);
    assert_eq!(
        pins(&f, "full"),
        ["1", "2", "3", "4", "57", "58", "59", "60"]
    );
    let d = parse_domain(&f.lv.inactive_xml("full").unwrap()).unwrap();
    assert_eq!(d.hostdevs.len(), 12);
}
