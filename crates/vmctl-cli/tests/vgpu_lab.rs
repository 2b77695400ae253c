//! `vmctl gpu attach|detach --vgpu` and `delete` against the lab's real libvirtd
//! (`tests/lab/up.sh`), config-only on a stopped domain. The lab host has no NVIDIA GPU, so the
//! sysfs side comes from the vGPU fixture hosts (`--host-root`): the writes land in the fixture,
//! and libvirt checks the domain XML (mdev hostdev by UUID, VF hostdev with managed='no'). The
//! VM is never started: libvirt only looks for the mdev and the VF when it starts the domain.
//! Run as root with GVB_LAB=1 and --include-ignored.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic

use std::path::Path;
use std::process::{Command, Output};

const URI: &str = "qemu:///system";

fn virsh(args: &[&str]) -> Output {
    Command::new("virsh")
        .args(["-c", URI])
        .args(args)
        .output()
        .expect("virsh (libvirt-clients) is installed")
}

fn vmctl(host: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmctl"))
        .args(["--connect", URI, "--host-root"])
        .arg(host)
        .args(args)
        .env_remove("VMCTL_CONNECT")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Undefines the domain even when an assertion fails.
struct Domain(String);

impl Drop for Domain {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.0]);
        let _ = virsh(&["undefine", &self.0]);
    }
}

fn validate(xml: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("dumped.xml");
    std::fs::write(&p, xml).unwrap();
    let v = Command::new("virt-xml-validate")
        .arg(&p)
        .arg("domain")
        .output()
        .unwrap();
    assert!(v.status.success(), "{}{}", text(&v.stdout), text(&v.stderr));
}

#[test]
#[ignore = "lab: root and the lab libvirtd; run with GVB_LAB=1 and --include-ignored"]
fn vgpu_config_attach_detach_and_delete_on_the_lab_libvirtd() {
    let list = virsh(&["list", "--all"]);
    assert!(
        list.status.success(),
        "lab libvirtd not reachable at {URI} (run tests/lab/up.sh): {}",
        text(&list.stderr)
    );
    let name = format!("vgpu-lab-{}", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    let xml_path = tmp.path().join("dom.xml");
    std::fs::write(
        &xml_path,
        format!(
            "<domain type='qemu'><name>{name}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='q35'>hvm</type></os><devices/></domain>"
        ),
    )
    .unwrap();
    let def = virsh(&["define", xml_path.to_str().unwrap()]);
    assert!(def.status.success(), "{}", text(&def.stderr));
    let _guard = Domain(name.clone());

    // mdev form: libvirt takes an mdev hostdev whose UUID does not exist on this host into the
    // config (it looks the mdev up only when the domain starts).
    let a100 = fixture_builder::build_host("synthetic-a100-vgpu16-mdev");
    let t0 = std::time::Instant::now();
    let out = vmctl(
        a100.path(),
        &["--json", "gpu", "attach", &name, "--vgpu", "GRID A100-4C"],
    );
    eprintln!("attach --vgpu (mdev): {:?}", t0.elapsed());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let uuid = v["plan"]["uuid"].as_str().unwrap().to_string();
    assert_eq!(
        std::fs::read_to_string(
            a100.path()
                .join("sys/bus/pci/devices/0000:41:00.5/mdev_supported_types/nvidia-559/create")
        )
        .unwrap(),
        uuid
    );
    let xml = text(&virsh(&["dumpxml", "--inactive", &name]).stdout);
    // libvirt 9.0 fills in managed='no' and display='off' for an mdev.
    assert!(
        xml.contains("<hostdev mode='subsystem' type='mdev' managed='no' model='vfio-pci'"),
        "{xml}"
    );
    assert!(xml.contains(&format!("<address uuid='{uuid}'/>")), "{xml}");
    assert!(
        xml.contains(&format!("<vmctl:mdev>{uuid}</vmctl:mdev>")),
        "{xml}"
    );
    validate(&xml);

    // SR-IOV VF form: a PCI hostdev libvirt must not rebind.
    let l40s = fixture_builder::build_host("synthetic-l40s-vgpu17-sriov");
    let out = vmctl(l40s.path(), &["gpu", "attach", &name, "--vgpu", "1155"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let vf_type = l40s
        .path()
        .join("sys/bus/pci/devices/0000:81:00.5/nvidia/current_vgpu_type");
    assert_eq!(std::fs::read_to_string(&vf_type).unwrap(), "1155");
    let xml = text(&virsh(&["dumpxml", "--inactive", &name]).stdout);
    assert!(
        xml.contains("<hostdev mode='subsystem' type='pci' managed='no'>"),
        "{xml}"
    );
    assert!(
        xml.contains("<address domain='0x0000' bus='0x81' slot='0x00' function='0x5'/>"),
        "{xml}"
    );
    assert!(
        xml.contains("<vmctl:vgpu-vf>0000:81:00.5</vmctl:vgpu-vf>"),
        "{xml}"
    );
    validate(&xml);

    // Detach the mdev by UUID: gone from the config and the record; the VF stays.
    let out = vmctl(a100.path(), &["gpu", "detach", &name, "--vgpu", &uuid]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let xml = text(&virsh(&["dumpxml", "--inactive", &name]).stdout);
    assert!(!xml.contains("type='mdev'"), "{xml}");
    assert!(!xml.contains("vmctl:mdev"), "{xml}");
    assert!(xml.contains("managed='no'"), "{xml}");

    // Delete gives the VF its type 0 back.
    let out = vmctl(l40s.path(), &["delete", &name, "--yes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&vf_type).unwrap(), "0");
    assert!(!text(&virsh(&["list", "--all", "--name"]).stdout).contains(&name));
}
