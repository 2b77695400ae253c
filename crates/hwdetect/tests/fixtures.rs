//! Detection on the committed fixture hosts (tests/fixtures/hosts): JSON snapshots for every
//! host (the table view is `gpu-vm-bootstrap detect`'s, snapshot in its tests), exact facts for
//! the five real hosts, and the capture round trip.

use std::path::Path;

use hostio::HostRoot;
use hwdetect::{CpuVendor, HostFacts, Virtualization, capture, detect};

fn facts(host: &str) -> HostFacts {
    let tree = fixture_builder::build_host(host);
    detect(&HostRoot::new(tree.path()))
}

fn gpu<'a>(f: &'a HostFacts, bdf: &str) -> &'a hwdetect::Gpu {
    f.gpus
        .iter()
        .find(|g| g.bdf == bdf)
        .unwrap_or_else(|| panic!("no GPU {bdf} in {:?}", f.gpus))
}

fn bdfs(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn snapshot_every_fixture() {
    for host in fixture_builder::host_names() {
        let f = facts(&host);
        insta::assert_json_snapshot!(format!("{host}.json"), f);
    }
}

#[test]
fn b550_gt710_shares_group_13_and_rtx2070s_is_isolated() {
    let f = facts("amd-b550m-gt710-rtx2070s");
    assert_eq!(f.cpu.vendor, CpuVendor::Amd);
    assert_eq!(f.cpu.virtualization, Some(Virtualization::Svm));
    assert!(f.iommu.enabled);
    assert_eq!(f.iommu.group_count, 20);
    assert_eq!(f.gpus.len(), 2);

    let gt710 = gpu(&f, "0000:04:00.0");
    assert_eq!(gt710.name, "GK208B [GeForce GT 710]");
    assert_eq!(gt710.chip.as_deref(), Some("GK208B"));
    assert_eq!(gt710.iommu_group, Some(13));
    assert_eq!(gt710.isolated, Some(false));
    assert_eq!(gt710.functions, bdfs(&["0000:04:00.0", "0000:04:00.1"]));
    // The chipset USB/SATA and the NIC block; the bridges 02:00.2, 03:00.0, 03:09.0 do not.
    assert_eq!(
        gt710.group_blockers,
        bdfs(&["0000:02:00.0", "0000:02:00.1", "0000:2a:00.0"])
    );

    let rtx = gpu(&f, "0000:2b:00.0");
    assert_eq!(rtx.name, "TU104 [GeForce RTX 2070 SUPER]");
    assert_eq!(rtx.chip.as_deref(), Some("TU104"));
    assert_eq!(rtx.iommu_group, Some(14));
    assert_eq!(rtx.isolated, Some(true));
    assert!(rtx.group_blockers.is_empty());
    assert_eq!(
        rtx.functions,
        bdfs(&[
            "0000:2b:00.0",
            "0000:2b:00.1",
            "0000:2b:00.2",
            "0000:2b:00.3"
        ])
    );
    assert_eq!(
        rtx.function_ids,
        ["10de:1e84", "10de:10f8", "10de:1ad8", "10de:1ad9"]
    );
    assert!(f.nvswitches.is_empty());
}

#[test]
fn z170_gtx960_isolated_with_its_root_port() {
    let f = facts("intel-z170-gtx960");
    assert_eq!(f.cpu.vendor, CpuVendor::Intel);
    assert_eq!(f.cpu.virtualization, Some(Virtualization::Vmx));
    assert_eq!(f.iommu.group_count, 14);
    assert_eq!(f.iommu.cmdline, ["intel_iommu=on", "iommu=pt"]);
    assert_eq!(f.gpus.len(), 1, "the Intel iGPU is not an NVIDIA GPU");
    let g = gpu(&f, "0000:01:00.0");
    assert_eq!(g.name, "GM206 [GeForce GTX 960]");
    assert_eq!(g.chip.as_deref(), Some("GM206"));
    assert_eq!(g.iommu_group, Some(1));
    assert_eq!(g.isolated, Some(true));
    assert!(g.group_blockers.is_empty());
    assert_eq!(g.functions, bdfs(&["0000:01:00.0", "0000:01:00.1"]));
    assert!(!g.boot_vga);
    let bridge = f.pci_devices.iter().find(|d| d.bdf == "0000:00:01.0");
    assert_eq!(bridge.map(|d| d.iommu_group), Some(Some(1)));
    assert_eq!(f.pci_devices.len(), 20);
}

#[test]
fn z370_has_no_gpus() {
    let f = facts("intel-z370-no-nvidia");
    assert!(f.gpus.is_empty());
    assert!(f.nvswitches.is_empty());
    assert_eq!(f.pci_devices.len(), 15);
    assert_eq!(f.iommu.group_count, 12);
    assert_eq!(
        f.iommu.cmdline,
        ["amd_iommu=on", "iommu=pt", "intel_iommu=on"]
    );
    assert_eq!(f.os.id, "debian");
}

#[test]
fn hgx_has_eight_h200_and_no_nvswitch_counted() {
    let f = facts("hgx-h200x8-nvswitch-truncated");
    assert_eq!(f.gpus.len(), 8);
    for g in &f.gpus {
        assert_eq!(g.class, "0302");
        assert_eq!(g.name, "GH100 [H200 SXM 141GB]");
        assert_eq!(g.chip.as_deref(), Some("GH100"));
        assert_eq!(g.driver.as_deref(), Some("nvidia"));
        assert_eq!(g.isolated, Some(true));
        assert_eq!(g.functions, std::slice::from_ref(&g.bdf));
        assert!(!g.boot_vga);
    }
    let groups: Vec<Option<u32>> = f.gpus.iter().map(|g| g.iommu_group).collect();
    assert_eq!(
        groups,
        [59, 50, 41, 15, 107, 98, 89, 79].map(Some),
        "GPUs sorted by BDF: 18, 2a, 3a, 5d, 9a, ab, ba, db"
    );
    assert_eq!(f.nvswitches, bdfs(&["0000:05:00.0", "0000:06:00.0"]));
    assert_eq!(f.cpu.vendor, CpuVendor::Unknown);
    assert!(f.warnings.iter().any(|w| w.starts_with("/proc/cpuinfo:")));
}

#[test]
fn completed_hgx_has_four_nvswitches_together_in_group_114() {
    let f = facts("hgx-h200x8-nvswitch");
    assert_eq!(f.gpus.len(), 8, "NVSwitches are never GPUs");
    let all = [
        "0000:05:00.0",
        "0000:06:00.0",
        "0000:07:00.0",
        "0000:08:00.0",
    ];
    assert_eq!(f.nvswitches, bdfs(&all));
    for s in &f.nvswitch_devices {
        assert_eq!(s.device_id, "22a3", "{s:?}");
        assert_eq!(s.name, "GH100 [H100 NVSwitch]");
        assert_eq!(s.iommu_group, Some(114));
        assert_eq!(s.driver.as_deref(), Some("nvidia-nvswitch"));
        // The other members are NVSwitches too: all go to one VM together.
        assert_eq!(s.isolated, Some(true));
        assert!(s.group_blockers.is_empty());
    }
    let seen: Vec<&str> = f.nvswitch_devices.iter().map(|s| s.bdf.as_str()).collect();
    assert_eq!(seen, all);
    // No Fabric Manager files in the listing: nothing claimed.
    assert_eq!(f.fabric_manager, hwdetect::FabricManagerInfo::default());
}

#[test]
fn shared_nvswitch_needs_fabric_mode_1_and_the_running_process() {
    let f = facts("synthetic-hgx-shared-nvswitch");
    let fm = &f.fabric_manager;
    assert_eq!(
        fm.config.as_deref(),
        Some("/usr/share/nvidia/nvswitch/fabricmanager.cfg")
    );
    assert_eq!(
        (fm.fabric_mode, fm.pid, fm.shared_nvswitch),
        (Some(1), Some(4242), true)
    );

    // The mode alone, without the process, is no setup; nor the process in mode 0.
    let cfg = "[files]\n\"/usr/share/nvidia/nvswitch/fabricmanager.cfg\" = \"FABRIC_MODE=1\\n\"\n";
    let only_cfg =
        fixture_builder::build_from_str(&format!("base = \"hgx-h200x8-nvswitch\"\n{cfg}")).unwrap();
    let fm = detect(&HostRoot::new(only_cfg.path())).fabric_manager;
    assert_eq!(
        (fm.fabric_mode, fm.pid, fm.shared_nvswitch),
        (Some(1), None, false)
    );
    let mode0 = fixture_builder::build_from_str(
        "base = \"synthetic-hgx-shared-nvswitch\"\n\
         [files]\n\"/usr/share/nvidia/nvswitch/fabricmanager.cfg\" = \"FABRIC_MODE=0\\n\"\n\
         \"/proc/4242/comm\" = \"nv-fabricmanage\\n\"\n",
    )
    .unwrap();
    let fm = detect(&HostRoot::new(mode0.path())).fabric_manager;
    assert_eq!(
        (fm.fabric_mode, fm.pid, fm.shared_nvswitch),
        (Some(0), Some(4242), false)
    );

    // `-c FILE` on the process's command line names the config that counts.
    let other = fixture_builder::build_from_str(
        "base = \"synthetic-hgx-shared-nvswitch\"\n\
         [files]\n\"/usr/share/nvidia/nvswitch/fabricmanager.cfg\" = \"FABRIC_MODE=0\\n\"\n\
         \"/etc/fm/shared.cfg\" = \"FABRIC_MODE=1\\n\"\n\
         \"/proc/4242/comm\" = \"nv-fabricmanage\\n\"\n\
         \"/proc/4242/cmdline\" = \"nv-fabricmanager\\u0000--config=/etc/fm/shared.cfg\\u0000\"\n",
    )
    .unwrap();
    let fm = detect(&HostRoot::new(other.path())).fabric_manager;
    assert_eq!(fm.config.as_deref(), Some("/etc/fm/shared.cfg"));
    assert!(fm.shared_nvswitch);
}

#[test]
fn a_gpu_host_without_nvswitches_reads_no_fabric_manager() {
    let f = facts("hgx-h200x8-nvswitch-truncated");
    assert_eq!(f.nvswitch_devices.len(), 2);
    let f = facts("intel-z170-gtx960");
    assert!(f.nvswitch_devices.is_empty());
    assert_eq!(f.fabric_manager, hwdetect::FabricManagerInfo::default());
}

#[test]
fn ryzen_1080ti_without_groups_has_unknown_isolation() {
    let f = facts("amd-ryzen-gtx1080ti-nogroups");
    assert!(!f.iommu.enabled);
    assert_eq!(f.iommu.group_count, 0);
    assert_eq!(f.gpus.len(), 1);
    let g = gpu(&f, "0000:29:00.0");
    assert_eq!(g.name, "GP102 [GeForce GTX 1080 Ti]");
    assert_eq!(g.chip.as_deref(), Some("GP102"));
    assert_eq!(g.iommu_group, None);
    assert_eq!(g.isolated, None);
    assert!(g.group_blockers.is_empty());
    assert_eq!(g.functions, bdfs(&["0000:29:00.0", "0000:29:00.1"]));
    assert_eq!(
        g.function_drivers,
        [
            Some("nvidia".to_string()),
            Some("snd_hda_intel".to_string())
        ]
    );
    assert!(g.boot_vga);
    assert!(f.nvidia_module_loaded);
    assert_eq!(f.pci_devices.len(), 40);
    let json = serde_json::to_value(&f).unwrap();
    assert_eq!(json["gpus"][0]["isolated"], serde_json::Value::Null);
    assert_eq!(json["gpus"][0]["iommu_group"], serde_json::Value::Null);
}

#[test]
fn iommu_off_means_unknown_not_isolated() {
    let f = facts("synthetic-iommu-off");
    assert!(!f.iommu.enabled);
    assert!(f.iommu.cmdline.is_empty());
    let g = gpu(&f, "0000:01:00.0");
    assert_eq!((g.iommu_group, g.isolated), (None, None));
    assert_eq!(g.reset_methods, ["bus"]);
    assert!(g.reset);
}

#[test]
fn vfio_bound_gpu_and_bridge_membership() {
    let f = facts("synthetic-vfio-bound");
    let g = gpu(&f, "0000:01:00.0");
    assert_eq!(g.driver.as_deref(), Some("vfio-pci"));
    assert_eq!(
        g.function_drivers,
        [Some("vfio-pci".to_string()), Some("vfio-pci".to_string())]
    );
    assert_eq!(g.isolated, Some(true));
    let dev = f.pci_devices.iter().find(|d| d.bdf == g.bdf).unwrap();
    assert_eq!(dev.driver_override.as_deref(), Some("vfio-pci"));
    assert!(!f.nvidia_module_loaded);
    assert_eq!(
        f.iommu.cmdline,
        [
            "intel_iommu=on",
            "iommu=pt",
            "vfio-pci.ids=10de:2204,10de:1aef"
        ]
    );

    let nic = |n: &str| f.nics.iter().find(|x| x.name == n).unwrap();
    let br0 = nic("br0");
    assert!(br0.is_bridge && !br0.physical && br0.default_route);
    assert_eq!(
        br0.addresses,
        ["198.18.11.10/24", "fe80::aaa1:59ff:fe00:11/64"]
    );
    let port = nic("enp5s0");
    assert!(port.physical && !port.is_bridge);
    assert_eq!(port.bridge.as_deref(), Some("br0"));
    assert!(port.addresses.is_empty());
    assert_eq!(nic("virbr0").addresses, ["198.18.12.1/24"]);
    assert_eq!(nic("lo").addresses, ["127.0.0.1/8", "::1/128"]);
    let d = f.default_route.as_ref().unwrap();
    assert_eq!(
        (d.interface.as_str(), d.gateway.as_str()),
        ("br0", "198.18.11.1")
    );
}

#[test]
fn amd_cpu_host() {
    let f = facts("synthetic-amd-cpu");
    assert_eq!(f.cpu.vendor, CpuVendor::Amd);
    assert_eq!(f.cpu.virtualization, Some(Virtualization::Svm));
    assert_eq!(f.iommu.cmdline, ["iommu=pt"]);
    assert_eq!(f.gpus.len(), 2, "the ASPEED BMC VGA is not an NVIDIA GPU");
    let l40s = gpu(&f, "0000:41:00.0");
    assert_eq!(l40s.class, "0302");
    assert!(l40s.mdev_supported);
    assert_eq!(l40s.isolated, Some(true));
    assert_eq!(gpu(&f, "0000:01:00.0").chip.as_deref(), Some("AD102"));
}

#[test]
fn nvidia_boot_vga_as_only_display() {
    let f = facts("synthetic-nvidia-boot-vga-only");
    assert_eq!(f.gpus.len(), 1);
    let g = &f.gpus[0];
    assert!(g.boot_vga);
    assert_eq!(g.functions.len(), 4);
    assert_eq!(g.isolated, Some(true));
    let vga: Vec<_> = f.pci_devices.iter().filter(|d| d.class == "0300").collect();
    assert_eq!(vga.len(), 1);
}

#[test]
fn broken_files_warn_with_paths_and_detection_goes_on() {
    let f = facts("synthetic-broken-files");
    let has = |needle: &str| f.warnings.iter().any(|w| w.contains(needle));
    assert!(
        has("/sys/bus/pci/devices/0000:01:00.1/vendor: cannot read"),
        "{:#?}",
        f.warnings
    );
    assert!(has(
        "/sys/bus/pci/devices/0000:03:00.0/class: malformed value \"0xZZ\""
    ));
    assert!(has("/sys/bus/pci/devices/0000:04:00.0/device: cannot read"));
    assert!(has(
        "/sys/bus/pci/devices/0000:01:00.0/boot_vga: malformed value \"yes\""
    ));
    assert!(has("/etc/os-release: no ID= line"));
    assert!(has("/proc/net/route: cannot read"));
    assert_eq!(f.cpu.virtualization, None);
    assert_eq!(f.pci_devices.len(), 6);

    let g = gpu(&f, "0000:01:00.0");
    assert_eq!(g.functions, bdfs(&["0000:01:00.0", "0000:01:00.1"]));
    assert_eq!(g.isolated, Some(true));
    let a100 = gpu(&f, "0000:02:00.0");
    assert_eq!(
        a100.isolated,
        Some(false),
        "an unreadable class is never a bridge"
    );
    assert_eq!(a100.group_blockers, bdfs(&["0000:03:00.0"]));
}

#[test]
fn empty_root_gives_warnings_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let f = detect(&HostRoot::new(dir.path()));
    assert!(f.gpus.is_empty() && f.pci_devices.is_empty());
    assert!(f.warnings.len() >= 5, "{:#?}", f.warnings);
}

#[test]
fn capture_round_trips_on_every_fixture() {
    for host in fixture_builder::host_names() {
        let tree = fixture_builder::build_host(&host);
        let root = HostRoot::new(tree.path());
        let before = detect(&root);
        let out = tempfile::tempdir().unwrap();
        let archive = out.path().join("capture.tar.gz");
        let n = capture(&root, &archive).unwrap();
        assert!(n > 0, "{host}");
        let x = fixture_builder::unpack_capture(&archive).unwrap();
        let after = detect(&HostRoot::new(x.path()));
        assert_eq!(
            before, after,
            "{host}: detect differs after capture round trip"
        );
    }
}

#[test]
fn capture_holds_only_what_detection_reads() {
    let tree = fixture_builder::build_host("synthetic-vfio-bound");
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("c.tar.gz");
    capture(&HostRoot::new(tree.path()), &archive).unwrap();
    let f = std::fs::File::open(&archive).unwrap();
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut names = Vec::new();
    let mut links = Vec::new();
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        if e.header().entry_type() == tar::EntryType::Symlink {
            links.push((
                p.clone(),
                e.link_name()
                    .unwrap()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            ));
        }
        names.push(p);
    }
    let link = |p: &str| links.iter().find(|(l, _)| l == p).map(|(_, t)| t.as_str());
    // Symlinks are kept, with the kernel's relative targets.
    assert_eq!(
        link("sys/bus/pci/devices/0000:01:00.0"),
        Some("../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0")
    );
    assert_eq!(
        link("sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/driver"),
        Some("../../../../bus/pci/drivers/vfio-pci")
    );
    assert_eq!(link("etc/os-release"), Some("../usr/lib/os-release"));
    assert_eq!(link("proc/net"), Some("self/net"));
    assert!(names.contains(&"usr/lib/os-release".to_string()));
    // The exact list is the contract of "only what detection reads".
    let listing: Vec<String> = names
        .iter()
        .map(|n| match link(n) {
            Some(t) => format!("{n} -> {t}"),
            None => n.clone(),
        })
        .collect();
    insta::assert_snapshot!("capture-synthetic-vfio-bound", listing.join("\n"));
    // Nothing detection does not read: driver directories, brif links, extra attributes.
    for p in &names {
        assert!(!p.starts_with("sys/bus/pci/drivers"), "{p}");
        assert!(!p.contains("/brif"), "{p}");
    }
}

/// SR-IOV VFs (vGPU on Ampere+) share the PF's slot but are separate devices: each VF is its
/// own single function, and the PF's functions do not list them.
#[test]
fn sriov_virtual_functions_are_not_functions_of_the_pf() {
    let tree = fixture_builder::build_from_str(
        r#"
        [[device]]
        bdf = "00:03.1"
        class = "0604"
        id = "1022:1483"
        group = 4
        [[device]]
        bdf = "41:00.0"
        class = "0302"
        id = "10de:20b5"
        parent = "00:03.1"
        group = 40
        driver = "nvidia"
        [[device]]
        bdf = "41:00.4"
        class = "0302"
        id = "10de:20b5"
        parent = "00:03.1"
        physfn = "41:00.0"
        group = 41
        [[device]]
        bdf = "41:00.5"
        class = "0302"
        id = "10de:20b5"
        parent = "00:03.1"
        physfn = "41:00.0"
        group = 42
        "#,
    )
    .unwrap();
    let f = detect(&HostRoot::new(tree.path()));
    assert!(
        !f.warnings.iter().any(|w| w.starts_with("/sys")),
        "{:#?}",
        f.warnings
    );
    let pf = gpu(&f, "0000:41:00.0");
    assert_eq!(pf.functions, bdfs(&["0000:41:00.0"]));
    assert_eq!(pf.physfn, None);
    assert_eq!(pf.isolated, Some(true));
    let vf = gpu(&f, "0000:41:00.5");
    assert_eq!(vf.functions, bdfs(&["0000:41:00.5"]));
    assert_eq!(vf.physfn.as_deref(), Some("0000:41:00.0"));
    assert_eq!((vf.iommu_group, vf.isolated), (Some(42), Some(true)));
}

/// os-release(5): without /etc/os-release, /usr/lib/os-release is read.
#[test]
fn os_release_falls_back_to_usr_lib() {
    let tree =
        fixture_builder::build_from_str("[os]\nid = \"ubuntu\"\nversion_id = \"24.04\"\n").unwrap();
    std::fs::remove_file(tree.path().join("etc/os-release")).unwrap();
    let f = detect(&HostRoot::new(tree.path()));
    assert_eq!(
        (f.os.id.as_str(), f.os.version_id.as_str()),
        ("ubuntu", "24.04")
    );
    assert!(!f.warnings.iter().any(|w| w.contains("os-release")));
}

/// Snapshots must not depend on the machine's own pci.ids: every fixture ID has to be in the
/// `pci-ids` crate (the system file is only consulted for IDs the crate lacks).
#[test]
fn fixture_ids_are_known_to_the_pci_ids_crate() {
    for host in fixture_builder::host_names() {
        let desc = fixture_builder::host_desc(&host).unwrap();
        for d in &desc.devices {
            let (v, p) = d.id.split_once(':').unwrap();
            let (v, p) = (
                u16::from_str_radix(v, 16).unwrap(),
                u16::from_str_radix(p, 16).unwrap(),
            );
            assert!(
                pci_ids::Device::from_vid_pid(v, p).is_some(),
                "{host}: {} {} is not in the pci-ids crate",
                d.bdf,
                d.id
            );
        }
    }
}

#[test]
fn capture_to_an_unwritable_place_is_an_error_naming_it() {
    let tree = fixture_builder::build_host("intel-z170-gtx960");
    let out = Path::new("/nonexistent-dir-gvb/capture.tar.gz");
    let err = capture(&HostRoot::new(tree.path()), out).unwrap_err();
    assert!(
        err.to_string()
            .contains("/nonexistent-dir-gvb/capture.tar.gz"),
        "{err}"
    );
    assert!(std::error::Error::source(&err).is_some());
}

/// vGPU <= 16 on an SR-IOV A100: the mdev types sit on the VFs, with their counts, and the
/// existing mdev is found with its parent VF and type.
#[test]
fn a100_mdev_types_on_vfs_and_the_existing_mdev() {
    let tree = fixture_builder::build_host("synthetic-a100-vgpu16-mdev");
    let f = detect(&HostRoot::new(tree.path()));
    assert!(
        !f.warnings.iter().any(|w| w.starts_with("/sys")),
        "{:#?}",
        f.warnings
    );
    let pf = gpu(&f, "0000:41:00.0");
    assert!(pf.mdev_types.is_empty());
    let sriov = pf.sriov.as_ref().unwrap();
    assert_eq!((sriov.total_vfs, sriov.num_vfs), (16, 4));
    assert_eq!(
        sriov.vfs,
        bdfs(&[
            "0000:41:00.4",
            "0000:41:00.5",
            "0000:41:00.6",
            "0000:41:00.7"
        ])
    );
    let vf = gpu(&f, "0000:41:00.5");
    let t = &vf.mdev_types[0];
    assert_eq!(
        (t.id.as_str(), t.name.as_deref(), t.available_instances),
        ("nvidia-559", Some("GRID A100-4C"), 1)
    );
    assert_eq!(t.device_api.as_deref(), Some("vfio-pci"));
    let used = gpu(&f, "0000:41:00.4");
    assert_eq!(
        used.mdev_types[0].devices,
        ["aa618089-8b16-4d01-a136-25a0f3c73123"]
    );
    assert_eq!(
        f.mdevs,
        [hwdetect::Mdev {
            uuid: "aa618089-8b16-4d01-a136-25a0f3c73123".into(),
            parent: Some("0000:41:00.4".into()),
            type_id: Some("nvidia-559".into()),
        }]
    );
}

/// vGPU >= 17 on an L40S: each VF's `nvidia/` directory, the taken VF's type, the others'
/// creatable types.
#[test]
fn l40s_vfs_show_creatable_and_current_vgpu_types() {
    let tree = fixture_builder::build_host("synthetic-l40s-vgpu17-sriov");
    let f = detect(&HostRoot::new(tree.path()));
    assert!(
        f.warnings.iter().all(|w| !w.contains("nvidia/")),
        "{:#?}",
        f.warnings
    );
    assert!(f.mdevs.is_empty());
    let taken = gpu(&f, "0000:81:00.4").nvidia_vgpu.clone().unwrap();
    assert_eq!((taken.current_type, taken.creatable.len()), (1155, 0));
    let free = gpu(&f, "0000:81:00.5").nvidia_vgpu.clone().unwrap();
    assert_eq!(free.current_type, 0);
    assert_eq!(
        free.creatable,
        [
            hwdetect::VgpuType {
                id: 1155,
                name: "NVIDIA L40S-24Q".into()
            },
            hwdetect::VgpuType {
                id: 1167,
                name: "NVIDIA L40S-24C".into()
            }
        ]
    );
    assert_eq!(gpu(&f, "0000:81:00.0").nvidia_vgpu, None);
}

/// MIG instances come from the driver's capability files, found through the GPU's minor.
#[test]
fn h100_mig_instances_from_procfs() {
    let tree = fixture_builder::build_host("synthetic-h100-mig");
    let f = detect(&HostRoot::new(tree.path()));
    let g = gpu(&f, "0000:c1:00.0");
    assert_eq!(
        g.mig_instances,
        [
            hwdetect::MigInstance {
                gpu_instance: 1,
                compute_instances: vec![0]
            },
            hwdetect::MigInstance {
                gpu_instance: 2,
                compute_instances: vec![0]
            }
        ]
    );
    // No capability files: no instances, and no warning either.
    let plain = fixture_builder::build_host("synthetic-l40s-vgpu17-sriov");
    let f = detect(&HostRoot::new(plain.path()));
    assert!(gpu(&f, "0000:81:00.0").mig_instances.is_empty());
}
