//! What the lab tests of the `vmctl` binary share: the lab's guest image, a scratch directory
//! with a key pair and vmctl's directories, vmctl run inside the lab's network namespace, and
//! a VM that is removed when the test ends, passed or failed.
#![allow(dead_code)] // each lab test binary uses its own part

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn lab_image_dir() -> PathBuf {
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

/// A scratch dir (readable by qemu) with an SSH key pair `id`, `id.pub` and an empty config
/// file; [`vmctl`] puts vmctl's storage, state and image cache in `vms/`, `state/`, `images/`.
pub fn scratch() -> tempfile::TempDir {
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
pub fn vmctl(tmp: &Path, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", "vmlab"])
        .arg(env!("CARGO_BIN_EXE_vmctl"))
        .args(["--connect", "qemu:///system", "--config"])
        .arg(tmp.join("config.toml"))
        .args(args)
        .env("VMCTL_STORAGE_DIR", tmp.join("vms"))
        .env("VMCTL_STATE_DIR", tmp.join("state"))
        .env("VMCTL_IMAGE_CACHE", tmp.join("images"))
        .output()
        .unwrap()
}

/// `create ubuntu NAME` of the lab image (2 vCPUs, 1 GiB, user e2e, key `tmp/id.pub`) by direct kernel boot on labbr0 (TCG), with `extra`
/// (`--wait` or `--no-start`).
pub fn create_lab_vm(tmp: &Path, img: &Path, name: &str, ip: &str, extra: &[&str]) -> Output {
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
    ];
    args.extend(extra);
    vmctl(tmp, &args)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A lab VM: destroyed, deleted and undefined when dropped.
pub struct Vm<'a> {
    pub name: String,
    pub tmp: &'a Path,
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
