//! Lab test of `vmctl image list|remove|prune` against the real libvirtd and qemu of the test
//! lab (`tests/lab/up.sh`): a running domain defined outside vmctl whose disk is an overlay of a
//! cached blob (no vmctl metadata names it: only the backing chain does) keeps that blob from
//! being removed or pruned; once the domain is gone the blob can go. Run with GVB_LAB=1 as root.
//! No network: the domain boots nothing. VM name `share-img-PID`.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use sha2::Digest;

fn vmctl(tmp: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmctl"))
        .args(["--connect", "qemu:///system", "--config"])
        .arg(tmp.join("config.toml"))
        .args(args)
        .env("VMCTL_IMAGE_CACHE", tmp.join("cache"))
        .env("VMCTL_STORAGE_DIR", tmp.join("vms"))
        .output()
        .unwrap()
}

fn virsh(args: &[&str]) -> Output {
    Command::new("virsh")
        .args(["-c", "qemu:///system"])
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Domain(String);

impl Drop for Domain {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.0]);
        let _ = virsh(&["undefine", &self.0]);
    }
}

fn qemu_img(args: &[&str]) {
    let st = Command::new("qemu-img").args(args).status().unwrap();
    assert!(st.success(), "qemu-img {args:?}");
}

#[test]
#[ignore = "lab: root and the lab libvirtd; run with GVB_LAB=1 and --include-ignored"]
fn a_blob_under_a_running_domains_disk_is_never_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(t.join("config.toml"), "").unwrap();
    // A qcow2 blob, named by its sha256 as a fetch would name it, and an unused blob.
    let made = t.join("made.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", made.to_str().unwrap(), "16M"]);
    let body = std::fs::read(&made).unwrap();
    std::fs::remove_file(&made).unwrap();
    let sha = hex::encode(sha2::Sha256::digest(&body));
    let blobs = t.join("cache/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for d in [t.join("cache"), blobs.clone()] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let blob = blobs.join(&sha);
    std::fs::write(&blob, &body).unwrap();
    let unused = hex::encode(sha2::Sha256::digest(b"unused"));
    std::fs::write(blobs.join(&unused), b"unused").unwrap();
    // The domain's disk: an overlay made outside vmctl.
    let overlay = t.join("disk.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        blob.to_str().unwrap(),
        overlay.to_str().unwrap(),
    ]);
    let name = format!("share-img-{}", std::process::id());
    let dom = Domain(name.clone());
    let xml = format!(
        "<domain type='qemu'><name>{name}</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='q35'>hvm</type></os><devices>\
         <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
        overlay.display()
    );
    std::fs::write(t.join("dom.xml"), xml).unwrap();
    let d = virsh(&["define", t.join("dom.xml").to_str().unwrap()]);
    assert!(d.status.success(), "{}", text(&d.stderr));
    let s = virsh(&["start", &name]);
    assert!(s.status.success(), "{}", text(&s.stderr));

    let out = vmctl(t, &["image", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["sha256"] == sha.as_str())
        .unwrap()
        .clone();
    let users = f["used_by"].as_array().unwrap();
    assert_eq!(users.len(), 1, "{v:#}");
    assert_eq!(users[0]["vm"], name.as_str());
    assert_eq!(users[0]["via"], "backing-chain");
    assert_eq!(users[0]["state"], "running");

    let out = vmctl(t, &["image", "remove", &sha[..12], "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("in use by {name}")));
    let out = vmctl(t, &["image", "prune", "--yes", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["removed"][0]["sha256"], unused.as_str());
    assert_eq!(v["in_use"][0]["sha256"], sha.as_str());
    assert!(blob.exists() && !blobs.join(&unused).exists());

    drop(dom);
    let out = vmctl(t, &["image", "remove", &sha, "--yes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!blob.exists());
}
