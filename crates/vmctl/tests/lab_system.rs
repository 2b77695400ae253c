//! Lab tests against the real libvirtd of the test lab (`tests/lab/up.sh`: libvirtd in netns
//! `vmlab`, bridge `labbr0`, cached guest image). Run with GVB_LAB=1 as root; without it they
//! print "skipped" and pass. With it they fail loudly when the lab is missing.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic

use std::path::PathBuf;
use std::process::Command;

fn lab() -> bool {
    if std::env::var("GVB_LAB").as_deref() != Ok("1") {
        eprintln!("skipped: set GVB_LAB=1");
        return false;
    }
    true
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn lab_image_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("GVB_LAB_IMAGE_DIR") {
        return PathBuf::from(dir);
    }
    let out = Command::new(repo_root().join("tests/lab/build-image.sh"))
        .arg("--print-dir")
        .output()
        .expect("tests/lab/build-image.sh runs");
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        dir.join(".complete").is_file(),
        "no lab image in {}: run tests/lab/build-image.sh and tests/lab/up.sh first",
        dir.display()
    );
    dir
}

fn vmctl_in_lab(args: &[&str], storage: &std::path::Path) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", "vmlab"])
        .arg(env!("CARGO_BIN_EXE_vmctl"))
        .args(["--connect", "qemu:///system"])
        .args(args)
        .env("VMCTL_STORAGE_DIR", storage)
        .output()
        .unwrap()
}

#[test]
fn define_on_system_libvirtd_validates_and_deletes_cleanly() {
    if !lab() {
        return;
    }
    let img = lab_image_dir();
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("id");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", ""])
            .arg("-f")
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    let storage = tmp.path().join("vms");
    let name = format!("vmctl-lab-{}", std::process::id());
    let s = |p: PathBuf| p.display().to_string();
    let out = vmctl_in_lab(
        &[
            "create",
            "ubuntu",
            &name,
            "--image",
            &s(img.join("base.qcow2")),
            "--kernel",
            &s(img.join("vmlinuz")),
            "--initrd",
            &s(img.join("initrd.img")),
            "--kernel-args",
            "root=/dev/vda rw console=ttyS0 net.ifnames=0",
            "--bridge",
            "labbr0",
            "--ip",
            "198.18.0.97/24",
            "--gateway",
            "198.18.0.1",
            "--domain-type",
            "qemu",
            "--cpu-mode",
            "host-model",
            "--ssh-key",
            &s(tmp.path().join("id.pub")),
            "--no-start",
            "--json",
        ],
        &storage,
    );
    assert!(
        out.status.success(),
        "create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let xml = Command::new("virsh")
        .args(["-c", "qemu:///system", "dumpxml", &name])
        .output()
        .unwrap();
    assert!(xml.status.success());
    let xml_path = tmp.path().join("d.xml");
    std::fs::write(&xml_path, &xml.stdout).unwrap();
    let v = Command::new("virt-xml-validate")
        .arg(&xml_path)
        .arg("domain")
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let text = String::from_utf8_lossy(&xml.stdout);
    assert!(
        text.contains("<source bridge='labbr0'/>") && text.contains("vmctl:vm"),
        "{text}"
    );

    let list = vmctl_in_lab(&["list", "--json"], &storage);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let row = v["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["ips"][0], "198.18.0.97");
    assert_eq!(row["vmctl"], true);

    let del = vmctl_in_lab(&["delete", &name, "--yes"], &storage);
    assert!(
        del.status.success(),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
    assert!(!storage.join(&name).exists());
    assert!(img.join("base.qcow2").is_file());
    let gone = Command::new("virsh")
        .args(["-c", "qemu:///system", "domstate", &name])
        .output()
        .unwrap();
    assert!(!gone.status.success());
}
