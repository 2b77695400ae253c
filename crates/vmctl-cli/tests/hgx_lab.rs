//! Lab test of HGX full passthrough against the real libvirtd of the test lab
//! (`tests/lab/up.sh`): `vmctl --host-root <8xH200 fixture> create ubuntu hgx-… --gpu all
//! --no-start` defines a domain with the 8 GPUs and 4 NVSwitches as managed hostdevs, which
//! libvirt accepts and `virt-xml-validate` passes; one GPU alone is refused before anything is
//! defined. Define only: the lab has no such devices (and no IOMMU), so nothing is started.
//! Run with GVB_LAB=1 as root.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic

#[path = "lab_support.rs"]
mod lab_support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use lab_support::{Vm, scratch, text};

fn virsh(args: &[&str]) -> std::process::Output {
    Command::new("virsh")
        .args(["-c", "qemu:///system"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
#[ignore = "lab: root and the lab libvirtd; run with GVB_LAB=1 and --include-ignored"]
fn hgx_gpu_all_defines_eight_gpus_and_four_nvswitches_on_the_lab_libvirtd() {
    let tmp = scratch();
    let tree = fixture_builder::build_host("hgx-h200x8-nvswitch");
    std::fs::set_permissions(tree.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(tree.path().join("sys/class/net/labbr0/bridge")).unwrap();
    let base = tmp.path().join("base.qcow2");
    let ok = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg("64M")
        .status()
        .unwrap();
    assert!(ok.success());
    let run = |name: &str, gpu: &str| {
        let (base, key) = (
            base.display().to_string(),
            tmp.path().join("id.pub").display().to_string(),
        );
        lab_support::vmctl(
            tmp.path(),
            &[
                "--host-root",
                &tree.path().display().to_string(),
                "create",
                "ubuntu",
                name,
                "--image",
                &base,
                "--ssh-key",
                &key,
                "--bridge",
                "labbr0",
                "--domain-type",
                "qemu",
                "--gpu",
                gpu,
                "--gpu-stack",
                "none",
                "--no-start",
            ],
        )
    };
    let pid = std::process::id();

    let partial = format!("hgx-part-{pid}");
    let _p = Vm {
        name: partial.clone(),
        tmp: tmp.path(),
    };
    let out = run(&partial, "0");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("NVLink/NVSwitch fabric will not work in the guest"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !virsh(&["dominfo", &partial]).status.success(),
        "nothing defined"
    );

    let name = format!("hgx-full-{pid}");
    let _vm = Vm {
        name: name.clone(),
        tmp: tmp.path(),
    };
    let out = run(&name, "all");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let xml = virsh(&["dumpxml", "--inactive", &name]);
    assert!(xml.status.success(), "{}", text(&xml.stderr));
    let xml = text(&xml.stdout);
    assert_eq!(
        xml.matches("<hostdev mode='subsystem' type='pci' managed='yes'>")
            .count(),
        12,
        "{xml}"
    );
    for bus in ["0x05", "0x06", "0x07", "0x08", "0x18", "0xdb"] {
        assert!(
            xml.contains(&format!("bus='{bus}' slot='0x00' function='0x0'")),
            "{bus}: {xml}"
        );
    }
    let path = tmp.path().join("hgx.xml");
    std::fs::write(&path, &xml).unwrap();
    let v = Command::new("virt-xml-validate")
        .arg(&path)
        .arg("domain")
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", text(&v.stderr));
}
