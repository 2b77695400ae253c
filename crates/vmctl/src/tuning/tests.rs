//! The planner on the 8×H200 HGX fixture host (two NUMA nodes: GPUs 18, 2a, 3a, 5d on node 0,
//! 9a, ab, ba, db on node 1; CPUs 0-55,112-167 and 56-111,168-223).

use super::*;
use hostio::HostRoot;

fn h200(overlay: &str) -> (tempfile::TempDir, NumaFacts) {
    let host = fixture_builder::build_from_str(&format!(
        "base = \"hgx-h200x8-nvswitch-truncated\"\n{overlay}"
    ))
    .unwrap();
    let root = HostRoot::new(host.path());
    let facts = hwdetect::numa::numa(&root);
    (host, facts)
}

/// The GPUs as `place` finds them: each address with the node sysfs gives it.
fn gpus(host: &tempfile::TempDir, bdfs: &[&str]) -> Vec<(String, Option<u32>)> {
    let root = HostRoot::new(host.path());
    bdfs.iter()
        .map(|b| {
            let bdf = format!("0000:{b}");
            let node = hwdetect::numa::pci_numa_node(&root, &bdf);
            (bdf, node)
        })
        .collect()
}

const PIN: TuningRequest = TuningRequest {
    pinning: Some(PinMode::Auto),
    hugepages: None,
};

fn input<'a>(
    facts: &'a NumaFacts,
    gpus: &'a [(String, Option<u32>)],
    vcpus: u32,
    memory_mib: u64,
    others: &'a [Pinned],
) -> PlanInput<'a> {
    PlanInput {
        facts,
        gpus,
        vcpus,
        memory_mib,
        others,
    }
}

fn pinned(vm: &str, p: &Placement) -> Pinned {
    Pinned {
        vm: vm.into(),
        cpus: p.cpu.as_ref().unwrap().vcpu_cpus.iter().copied().collect(),
    }
}

#[test]
fn two_gpu_vm_on_node_0_pins_to_node_0_cpus() {
    let (host, facts) = h200("");
    let g = gpus(&host, &["18:00.0", "2a:00.0"]);
    let p = plan(&input(&facts, &g, 8, 16384, &[]), PIN).unwrap();
    let c = p.cpu.as_ref().unwrap();
    assert_eq!(c.nodes, [0]);
    // CPU 0 stays with the host; the first threads of cores 1-8 come first.
    assert_eq!(c.vcpu_cpus, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(c.emulator_cpuset, "0,9-55,112-167");
    assert!(c.cells.is_empty());
    assert!(c.reason.contains("0000:18:00.0"), "{}", c.reason);
    let t = p.tuning();
    assert_eq!(t.vcpupins.len(), 8);
    assert_eq!(t.vcpupins[7].cpuset, "8");
    assert_eq!(t.memory_nodeset.as_deref(), Some("0"));
    assert!(t.numa_cells.is_empty() && p.hugepages.is_none());
}

#[test]
fn vm_with_gpus_on_both_nodes_gets_two_guest_cells() {
    let (host, facts) = h200("");
    // Three GPUs: two on node 0, one on node 1, so the 12 vCPUs split 8 + 4.
    let g = gpus(&host, &["18:00.0", "2a:00.0", "9a:00.0"]);
    let p = plan(&input(&facts, &g, 12, 24576, &[]), PIN).unwrap();
    let c = p.cpu.as_ref().unwrap();
    assert_eq!(c.nodes, [0, 1]);
    assert_eq!(c.vcpu_cpus[..8], [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(c.vcpu_cpus[8..], [57, 58, 59, 60]);
    assert_eq!(c.cells.len(), 2);
    assert_eq!((c.cells[0].host_node, c.cells[0].vcpus.len()), (0, 8));
    assert_eq!((c.cells[1].host_node, c.cells[1].vcpus.len()), (1, 4));
    assert_eq!(c.cells[0].memory_mib + c.cells[1].memory_mib, 24576);
    assert_eq!(c.cells[0].memory_mib, 16384);
    assert_eq!(c.emulator_cpuset, "0,9-56,61-223");
    let t = p.tuning();
    assert_eq!(t.numa_cells[1].cpus, "8-11");
    assert_eq!(t.memory_nodeset.as_deref(), Some("0-1"));
    assert_eq!(t.memnodes[1].nodeset, "1");
    // The rendered domain passes libvirt's schema.
    let mut spec = hypervisor::domain::DomainSpec::new(
        "cells",
        hypervisor::domain::DomainType::Kvm,
        hypervisor::domain::CpuMode::HostPassthrough,
        hypervisor::domain::Firmware::Efi { secure_boot: false },
    );
    spec.vcpus = 12;
    spec.memory_mib = 24576;
    spec.tuning = t;
    crate::test_support::assert_valid_domain_xml(
        &hypervisor::domain::render::to_xml(&spec).unwrap(),
    );
}

#[test]
fn a_second_pinned_vm_gets_disjoint_cpus_and_shared_may_overlap() {
    let (host, facts) = h200("");
    let g = gpus(&host, &["18:00.0"]);
    let first = plan(&input(&facts, &g, 16, 8192, &[]), PIN).unwrap();
    let others = [pinned("vm-a", &first)];
    let g2 = gpus(&host, &["3a:00.0"]);
    let second = plan(&input(&facts, &g2, 16, 8192, &others), PIN).unwrap();
    let a: BTreeSet<u32> = others[0].cpus.clone();
    let b: BTreeSet<u32> = second
        .cpu
        .as_ref()
        .unwrap()
        .vcpu_cpus
        .iter()
        .copied()
        .collect();
    assert!(a.is_disjoint(&b), "{a:?} {b:?}");
    assert_eq!(b.iter().next(), Some(&17));
    // The emulator threads stay off both VMs' vCPUs.
    let emu = parse_cpuset(&second.cpu.as_ref().unwrap().emulator_cpuset).unwrap();
    assert!(emu.iter().all(|c| !a.contains(c) && !b.contains(c)));

    let shared = TuningRequest {
        pinning: Some(PinMode::Shared),
        hugepages: None,
    };
    let third = plan(&input(&facts, &g2, 16, 8192, &others), shared).unwrap();
    assert_eq!(
        third.cpu.as_ref().unwrap().vcpu_cpus,
        first.cpu.as_ref().unwrap().vcpu_cpus
    );
}

#[test]
fn too_big_vm_is_refused_with_the_numbers() {
    let (host, facts) = h200("");
    let g = gpus(&host, &["18:00.0"]);
    let first = plan(&input(&facts, &g, 100, 8192, &[]), PIN).unwrap();
    let others = [pinned("big-1", &first)];
    let e = plan(&input(&facts, &g, 16, 8192, &others), PIN).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("NUMA node 0 for 16 pinned vCPUs: 11 free of 112 (1 kept for the host)"),
        "{msg}"
    );
    assert!(msg.contains("big-1 holds 100"), "{msg}");
    assert!(e.help().iter().any(|h| h.contains("--cpu-pinning shared")));
    // Alone, a VM bigger than a node is refused too: it is never spread without GPUs there.
    let e = plan(&input(&facts, &g, 112, 8192, &[]), PIN).unwrap_err();
    assert!(e.to_string().contains("111 free of 112"), "{e}");
    let g2 = gpus(&host, &["18:00.0", "9a:00.0"]);
    let e = plan(&input(&facts, &g2, 1, 8192, &[]), PIN).unwrap_err();
    assert!(matches!(e, TuningError::TooFewVcpus { nodes: 2, vcpus: 1 }));
}

#[test]
fn without_a_gpu_the_node_with_most_free_cpus() {
    let (_host, facts) = h200("");
    let p = plan(&input(&facts, &[], 4, 4096, &[]), PIN).unwrap();
    assert_eq!(p.cpu.as_ref().unwrap().nodes, [0]);
    let busy = [Pinned {
        vm: "x".into(),
        cpus: (1..20).collect(),
    }];
    let p = plan(&input(&facts, &[], 4, 4096, &busy), PIN).unwrap();
    let c = p.cpu.unwrap();
    assert_eq!(c.nodes, [1]);
    assert_eq!(c.vcpu_cpus, [57, 58, 59, 60]);
    assert!(c.reason.starts_with("no GPU"), "{}", c.reason);
}

#[test]
fn hugepages_are_checked_on_the_pinned_node_and_refused_with_numbers() {
    let (host, facts) = h200(
        "[numa.0.hugepages]\n1048576 = { total = 16, free = 6 }\n\
         [numa.1.hugepages]\n1048576 = { total = 16, free = 16 }\n",
    );
    let g = gpus(&host, &["18:00.0"]);
    let both = TuningRequest {
        pinning: Some(PinMode::Auto),
        hugepages: Some(PageSize::G1),
    };
    let ok = plan(&input(&facts, &g, 4, 6144, &[]), both).unwrap();
    let h = ok.hugepages.as_ref().unwrap();
    assert_eq!((h.pages, h.per_node[&0]), (6, 6));
    let mut spec = hypervisor::domain::DomainSpec::new(
        "h",
        hypervisor::domain::DomainType::Kvm,
        hypervisor::domain::CpuMode::HostPassthrough,
        hypervisor::domain::Firmware::Efi { secure_boot: false },
    );
    ok.apply_to(&mut spec);
    assert_eq!(spec.memory_backing.hugepage_kib, Some(1048576));

    let e = plan(&input(&facts, &g, 4, 8192, &[]), both).unwrap_err();
    assert_eq!(
        e.to_string(),
        "not enough free 1G hugepages on NUMA node 0: the VM needs 8, 6 are free of 16 reserved"
    );
    let help = e.help();
    assert!(
        help[0].contains("gpu-vm-bootstrap --hugepages 1G:36"),
        "{help:?}"
    );
    // Unpinned, the host-wide pool counts: 22 free.
    let only = TuningRequest {
        pinning: None,
        hugepages: Some(PageSize::G1),
    };
    assert!(plan(&input(&facts, &g, 4, 8192, &[]), only).is_ok());
    let e = plan(&input(&facts, &g, 4, 24 * 1024, &[]), only).unwrap_err();
    assert!(
        e.to_string()
            .contains("on this host: the VM needs 24, 22 are free of 32 reserved"),
        "{e}"
    );
    // No 2M pool at all.
    let e = plan(
        &input(&facts, &g, 4, 512, &[]),
        TuningRequest {
            pinning: None,
            hugepages: Some(PageSize::M2),
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("needs 256, 0 are free of 0"), "{e}");
    // Memory not a whole number of pages.
    let e = plan(&input(&facts, &g, 4, 1536, &[]), only).unwrap_err();
    assert!(
        e.to_string()
            .contains("1536 MiB is not a whole number of 1G hugepages"),
        "{e}"
    );
}

#[test]
fn hugepages_split_over_two_cells_in_whole_pages() {
    let (host, facts) = h200(
        "[numa.0.hugepages]\n1048576 = { total = 8, free = 8 }\n\
         [numa.1.hugepages]\n1048576 = { total = 8, free = 8 }\n",
    );
    let g = gpus(&host, &["18:00.0", "2a:00.0", "9a:00.0"]);
    let both = TuningRequest {
        pinning: Some(PinMode::Auto),
        hugepages: Some(PageSize::G1),
    };
    // 3 vCPUs split 2 + 1; 5 GiB split in whole GiB: 3 + 2.
    let p = finish(
        plan(&input(&facts, &g, 3, 5120, &[]), both).unwrap(),
        5120,
        3,
    );
    let c = p.cpu.as_ref().unwrap();
    assert_eq!(c.cells[0].memory_mib, 3072);
    assert_eq!(c.cells[1].memory_mib, 2048);
    let h = p.hugepages.as_ref().unwrap();
    assert_eq!((h.per_node[&0], h.per_node[&1]), (3, 2));
}

#[test]
fn flags_parse() {
    assert_eq!(
        TuningRequest::parse(Some("auto"), Some("1G")).unwrap(),
        TuningRequest {
            pinning: Some(PinMode::Auto),
            hugepages: Some(PageSize::G1)
        }
    );
    assert!(TuningRequest::parse(Some("on"), None).is_err());
    assert!(TuningRequest::parse(None, Some("4K")).is_err());
}
