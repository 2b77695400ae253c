//! Lab tests against the real libvirtd of the test lab (`tests/lab/up.sh`: libvirtd in netns
//! `vmlab`, bridge `labbr0`, cached guest image). Run with GVB_LAB=1 as root; without it they
//! print "skipped" and pass. With it they fail loudly when the lab is missing.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::process::Stdio;

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

/// A temporary directory holding an SSH key pair `id`, `id.pub`.
fn keyed_tempdir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", ""])
            .arg("-f")
            .arg(tmp.path().join("id"))
            .status()
            .unwrap()
            .success()
    );
    tmp
}

/// `create ubuntu NAME` of the lab image by direct kernel boot on `labbr0` at `ip` (TCG).
fn create_args(img: &Path, pubkey: &Path, name: &str, ip: &str) -> Vec<String> {
    let s = |p: PathBuf| p.display().to_string();
    [
        "create",
        "ubuntu",
        name,
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
        ip,
        "--gateway",
        "198.18.0.1",
        "--domain-type",
        "qemu",
        "--cpu-mode",
        "host-model",
        "--ssh-key",
        &s(pubkey.to_path_buf()),
    ]
    .map(String::from)
    .to_vec()
}

#[test]
#[ignore = "lab: root, the lab libvirtd and a booting guest; run with GVB_LAB=1 and --include-ignored"]
fn define_on_system_libvirtd_validates_and_deletes_cleanly() {
    let img = lab_image_dir();
    let tmp = keyed_tempdir();
    let storage = tmp.path().join("vms");
    let name = format!("vmctl-lab-{}", std::process::id());
    let mut args = create_args(&img, &tmp.path().join("id.pub"), &name, "198.18.0.97/24");
    args.extend(["--no-start".into(), "--json".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = vmctl_in_lab(&args, &storage);
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
    // delete released the address create reserved for the first boot.
    let reservations = std::fs::read_to_string("/var/lib/vmctl/ip-reservations.json").unwrap();
    assert!(
        !reservations.contains(&format!("\"{name}\"")),
        "{reservations}"
    );
    let gone = Command::new("virsh")
        .args(["-c", "qemu:///system", "domstate", &name])
        .output()
        .unwrap();
    assert!(!gone.status.success());
}

/// Destroys and undefines a lab domain when dropped, so a failed assertion leaves no VM behind.
struct DomainGuard(String);

impl Drop for DomainGuard {
    fn drop(&mut self) {
        for args in [
            &["destroy", &self.0][..],
            &["undefine", &self.0, "--nvram"][..],
        ] {
            let _ = Command::new("virsh")
                .args(["-c", "qemu:///system"])
                .args(args)
                .output();
        }
    }
}

/// Ctrl-C (a real SIGINT) while `create --wait` waits for SSH: exit 130, the VM is kept and
/// running, and the message says how to reach or remove it.
#[test]
#[ignore = "lab: root, the lab libvirtd and a booting guest; run with GVB_LAB=1 and --include-ignored"]
fn ctrl_c_during_wait_keeps_the_running_vm() {
    let img = lab_image_dir();
    let tmp = keyed_tempdir();
    let storage = tmp.path().join("vms");
    let name = format!("vmctl-int-{}", std::process::id());
    let _guard = DomainGuard(name.clone());
    let mut args = create_args(&img, &tmp.path().join("id.pub"), &name, "198.18.0.98/24");
    args.push("--wait".into());
    // `ip netns exec` execs vmctl, so the child's pid is vmctl's own.
    let mut child = Command::new("ip")
        .args(["netns", "exec", "vmlab"])
        .arg(env!("CARGO_BIN_EXE_vmctl"))
        .args(["--connect", "qemu:///system"])
        .args(&args)
        .env("VMCTL_STORAGE_DIR", &storage)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The "defined and started" line (stderr) comes before the wait; a TCG guest takes far
    // longer than this to answer SSH.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut err = String::new();
    while !err.contains("defined and started") {
        assert!(
            stderr.read_line(&mut err).unwrap() > 0,
            "create ended before the wait: {err}"
        );
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    stderr.read_to_string(&mut err).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains(&format!(
            "error: interrupted during the wait for SSH on {name}"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "help: {name} is created and keeps running: `vmctl ssh {name}`"
        )),
        "{err}"
    );
    let state = Command::new("virsh")
        .args(["-c", "qemu:///system", "domstate", &name])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "running");
    let _ = Command::new("virsh")
        .args(["-c", "qemu:///system", "destroy", &name])
        .output();
    let del = vmctl_in_lab(&["delete", &name, "--yes"], &storage);
    assert!(
        del.status.success(),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
}

/// Runs `program args…` as nobody:nogroup without supplementary groups (setpriv(1)).
fn as_nobody(program: &str, args: &[&Path]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--",
            program,
        ])
        .args(args)
        .output()
        .unwrap()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// The modes vmctl gives a VM's storage (files 0600, directories 0711: searchable, not
/// listable) are enough for qemu under `qemu:///system`: libvirt's DAC labelling hands the disk,
/// seed, kernel and initrd to the qemu user, which reaches them through the 0711 directories
/// vmctl made (`vms/` and `vms/NAME` in a scratch parent that is itself only searchable). The
/// guest boots and answers SSH; no other user can read or list anything.
#[test]
#[ignore = "lab: root, the lab libvirtd and a booting guest; run with GVB_LAB=1 and --include-ignored"]
fn private_vm_storage_boots_under_system_libvirt() {
    let img = lab_image_dir();
    let tmp = keyed_tempdir();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let storage = tmp.path().join("vms");
    let name = "sec-boot";
    let _guard = DomainGuard(name.to_string());
    // The kernel and initrd as `create --desktop` keeps the installer's: 0600 files in a 0711
    // directory (libvirt labels them for qemu like the disks).
    let boot = tmp.path().join("boot");
    std::fs::create_dir(&boot).unwrap();
    for f in ["vmlinuz", "initrd.img"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::copy(img.join(f), boot.join(f)).unwrap();
        std::fs::set_permissions(boot.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::set_permissions(&boot, {
        use std::os::unix::fs::PermissionsExt;
        std::fs::Permissions::from_mode(0o711)
    })
    .unwrap();
    let mut args = create_args(&img, &tmp.path().join("id.pub"), name, "198.18.0.120/24");
    for (flag, f) in [("--kernel", "vmlinuz"), ("--initrd", "initrd.img")] {
        let at = args.iter().position(|a| a == flag).unwrap();
        args[at + 1] = boot.join(f).display().to_string();
    }
    args.extend(["--wait".into(), "--wait-timeout".into(), "600".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = vmctl_in_lab(&args, &storage);
    let vm = storage.join(name);
    assert!(
        out.status.success(),
        "create --wait failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(vm.join("console.log")).unwrap_or_default()
    );
    let ssh = vmctl_in_lab(&["ssh", name, "--", "uname", "-a"], &storage);
    assert!(
        String::from_utf8_lossy(&ssh.stdout).starts_with("Linux "),
        "{}",
        String::from_utf8_lossy(&ssh.stderr)
    );

    assert_eq!(format!("{:o}", mode(&storage)), "711");
    assert_eq!(format!("{:o}", mode(&vm)), "711");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&vm)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in &files {
        let cat = as_nobody("cat", &[f]);
        assert!(
            !cat.status.success(),
            "nobody reads {} (mode {:o})",
            f.display(),
            mode(f)
        );
        // While the VM runs, libvirt's DAC driver has given disk and seed to the qemu user.
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(f).unwrap();
        eprintln!("{} {:o} {}:{}", f.display(), mode(f), m.uid(), m.gid());
    }
    for d in [&storage, &vm] {
        assert!(
            !as_nobody("ls", &[d]).status.success(),
            "nobody lists {}",
            d.display()
        );
    }
    for f in ["disk.qcow2", "seed.iso", "console.log"] {
        assert!(files.contains(&vm.join(f)), "{f} missing: {files:?}");
    }

    let _ = Command::new("virsh")
        .args(["-c", "qemu:///system", "destroy", name])
        .output();
    let del = vmctl_in_lab(&["delete", name, "--yes"], &storage);
    assert!(
        del.status.success(),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
    assert!(!vm.exists(), "{}", String::from_utf8_lossy(&del.stdout));
}
