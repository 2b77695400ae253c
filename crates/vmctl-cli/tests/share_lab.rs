//! Lab test of shared folders (virtiofs) against the real libvirtd of the test lab
//! (`tests/lab/up.sh`; libvirt 9.0, qemu 7.2 with its C virtiofsd from qemu-system-common;
//! guest: Debian 12 cloud kernel 6.1, which has virtiofs.ko). `create ubuntu --share` of a
//! read-write and a read-only share, files crossing both ways, a refused write on the
//! read-only one, then `share add|list|remove` on the running VM and the added share present
//! in qemu after a stop and start. Run with GVB_LAB=1 as root. Address 198.18.0.170, VM names
//! `share-lab-PID` (tests/lab/README.md).
#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lab_image_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("GVB_LAB_IMAGE_DIR") {
        return PathBuf::from(dir);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/lab/build-image.sh");
    let out = Command::new(script).arg("--print-dir").output().unwrap();
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        dir.join(".complete").is_file(),
        "no lab image in {}: run tests/lab/build-image.sh and tests/lab/up.sh first",
        dir.display()
    );
    dir
}

/// A scratch dir (readable by qemu) with an SSH key pair `id`, `id.pub`, storage `vms/` and
/// an empty config file.
fn scratch() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(tmp.path().join("config.toml"), "").unwrap();
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(tmp.path().join("id"))
        .status()
        .unwrap();
    assert!(keygen.success());
    tmp
}

/// vmctl inside netns vmlab (the bridge, the guests' addresses), on the lab's libvirtd.
fn vmctl(tmp: &Path, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", "vmlab"])
        .arg(env!("CARGO_BIN_EXE_vmctl"))
        .args(["--connect", "qemu:///system", "--config"])
        .arg(tmp.join("config.toml"))
        .args(args)
        .env("VMCTL_STORAGE_DIR", tmp.join("vms"))
        .output()
        .unwrap()
}

/// `create ubuntu NAME --wait` of the lab image by direct kernel boot on labbr0 (TCG).
fn create_wait(tmp: &Path, img: &Path, name: &str, ip: &str, extra: &[&str]) -> Output {
    let s = |p: PathBuf| p.display().to_string();
    let (base, kernel, initrd, key) = (
        s(img.join("base.qcow2")),
        s(img.join("vmlinuz")),
        s(img.join("initrd.img")),
        s(tmp.join("id.pub")),
    );
    let mut args = vec![
        "create",
        "ubuntu",
        name,
        "--image",
        &base,
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--kernel-args",
        "root=/dev/vda rw console=ttyS0 net.ifnames=0",
        "--firmware",
        "bios",
        "--bridge",
        "labbr0",
        "--ip",
        ip,
        "--gateway",
        "198.18.0.1",
        "--dns",
        "198.18.0.1",
        "--domain-type",
        "qemu",
        "--cpu-mode",
        "host-model",
        "--cpus",
        "2",
        "--memory",
        "1024",
        "--ssh-key",
        &key,
        "--user",
        "e2e",
        "--wait",
        "--wait-timeout",
        "600",
    ];
    args.extend(extra);
    vmctl(tmp, &args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Destroys, undefines and deletes a lab VM when dropped, so a failed assertion leaves no VM.
struct Vm<'a> {
    name: String,
    tmp: &'a Path,
}

impl Drop for Vm<'_> {
    fn drop(&mut self) {
        let _ = Command::new("virsh")
            .args(["-c", "qemu:///system", "destroy", &self.name])
            .output();
        let _ = vmctl(self.tmp, &["delete", &self.name, "--yes"]);
        let _ = Command::new("virsh")
            .args(["-c", "qemu:///system", "undefine", &self.name, "--nvram"])
            .output();
    }
}

fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed (exit {:?}):\n{}\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The qemu process of `name`: its command line, from /proc (qemu runs as libvirt-qemu).
fn qemu_args(name: &str) -> String {
    let needle = format!("guest={name},");
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("qemu-system") && cmd.contains(&needle) {
                return cmd;
            }
        }
    }
    String::new()
}

#[test]
#[ignore = "lab: root, the lab libvirtd and a booting guest; run with GVB_LAB=1 and --include-ignored"]
fn a_host_file_is_visible_in_the_guest_and_a_read_only_share_refuses_writes() {
    let img = lab_image_dir();
    let tmp = scratch();
    let models = tmp.path().join("models");
    let data = tmp.path().join("data");
    let extra = tmp.path().join("extra");
    for d in [&models, &data, &extra] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let vm = Vm {
        name: format!("share-lab-{}", std::process::id()),
        tmp: tmp.path(),
    };
    let s_models = format!("{}:models", models.display());
    let s_data = format!("{}:data,ro", data.display());
    let out = create_wait(
        tmp.path(),
        &img,
        &vm.name,
        "198.18.0.170/24",
        &["--share", &s_models, "--share", &s_data],
    );
    ok("create --share --wait", &out);
    let q = qemu_args(&vm.name);
    assert!(
        q.contains("vhost-user-fs-pci")
            && q.contains(r#""tag":"models""#)
            && q.contains(r#""tag":"data""#),
        "qemu has no vhost-user-fs devices: {q}"
    );

    // Written on the host after the guest booted: visible in the guest at /mnt/models.
    std::fs::write(models.join("hello.txt"), "written on the host\n").unwrap();
    std::fs::write(data.join("weights.bin"), "read-only data\n").unwrap();
    let ssh = |cmd: &[&str]| {
        let mut a = vec!["ssh", vm.name.as_str(), "--"];
        a.extend(cmd);
        vmctl(tmp.path(), &a)
    };
    let seen = ok("cat in the guest", &ssh(&["cat", "/mnt/models/hello.txt"]));
    assert_eq!(seen, "written on the host\n");
    let seen = ok("cat in the guest", &ssh(&["cat", "/mnt/data/weights.bin"]));
    assert_eq!(seen, "read-only data\n");
    let mounts = ok(
        "findmnt",
        &ssh(&[
            "findmnt",
            "-rn",
            "-o",
            "TARGET,FSTYPE,OPTIONS",
            "-t",
            "virtiofs",
        ]),
    );
    assert!(mounts.contains("/mnt/models virtiofs rw"), "{mounts}");
    assert!(mounts.contains("/mnt/data virtiofs ro"), "{mounts}");
    // Read-write both ways.
    ok(
        "write in the guest",
        // One remote command line: ssh joins its arguments and the remote shell parses them,
        // so the redirection must be inside the quoted `sh -c` to run as root.
        &ssh(&["sudo sh -c 'echo from the guest > /mnt/models/guest.txt'"]),
    );
    assert_eq!(
        std::fs::read_to_string(models.join("guest.txt")).unwrap(),
        "from the guest\n"
    );
    // Read-only: a write fails, even as root.
    let w = ssh(&["sudo", "touch", "/mnt/data/nope"]);
    assert!(
        !w.status.success(),
        "a write to the read-only share succeeded"
    );
    assert!(
        text(&w.stderr).contains("Read-only file system"),
        "{}",
        text(&w.stderr)
    );
    assert!(!data.join("nope").exists());

    // vmctl share list: both, with their modes.
    let list: serde_json::Value = serde_json::from_str(&ok(
        "share list",
        &vmctl(tmp.path(), &["share", "list", &vm.name, "--json"]),
    ))
    .unwrap();
    let tags: Vec<(&str, bool, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["tag"].as_str().unwrap(),
                s["readonly"].as_bool().unwrap(),
                s["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tags,
        [("models", false, "active"), ("data", true, "active")]
    );

    // share add on the running VM: config only, for the next start.
    let s_extra = format!("{}:extra", extra.display());
    let add: serde_json::Value = serde_json::from_str(&ok(
        "share add",
        &vmctl(tmp.path(), &["share", "add", &vm.name, &s_extra, "--json"]),
    ))
    .unwrap();
    assert_eq!(add["pending_restart"], true);
    let list = ok(
        "share list",
        &vmctl(tmp.path(), &["share", "list", &vm.name]),
    );
    assert!(
        list.contains("extra") && list.contains("next-start"),
        "{list}"
    );
    let removed = ok(
        "share remove",
        &vmctl(tmp.path(), &["share", "remove", &vm.name, "data"]),
    );
    assert!(
        removed.contains("takes effect at the next start"),
        "{removed}"
    );
    let list = ok(
        "share list",
        &vmctl(tmp.path(), &["share", "list", &vm.name]),
    );
    assert!(list.contains("removed"), "{list}");
    // After a stop and a start, qemu has the new share and not the removed one.
    ok(
        "stop",
        &vmctl(
            tmp.path(),
            &["stop", &vm.name, "--timeout", "120", "--force"],
        ),
    );
    ok("start", &vmctl(tmp.path(), &["start", &vm.name]));
    let q = qemu_args(&vm.name);
    assert!(
        q.contains(r#""tag":"extra""#) && q.contains(r#""tag":"models""#),
        "{q}"
    );
    assert!(!q.contains(r#""tag":"data""#), "{q}");
}
