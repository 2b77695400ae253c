//! Lab tests of `create ubuntu --cpu-pinning auto` and `--hugepages 2M` against the real
//! libvirtd of the test lab (`tests/lab/up.sh`, TCG): the domain vmctl defines starts, and the
//! running domain is pinned / backed by hugepages. This machine has one NUMA node with two CPUs,
//! so a pinned 1-vCPU VM gets CPU 1 (CPU 0 stays with the host and the emulator threads). The
//! hugepages test reserves 2M pages through /proc/sys/vm/nr_hugepages and puts the old count
//! back at the end, even on failure. No address: the VMs take DHCP, nothing reaches them.
//! Run with GVB_LAB=1 as root.
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

/// A scratch dir qemu can read, with an SSH public key, storage `vms/`, vmctl state `state/`
/// and an empty config file.
fn scratch() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(tmp.path().join("config.toml"), "").unwrap();
    std::fs::write(
        tmp.path().join("id.pub"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6 t@h\n",
    )
    .unwrap();
    tmp
}

/// vmctl inside netns vmlab (the bridge), on the lab's libvirtd.
fn vmctl(tmp: &Path, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", "vmlab"])
        .arg(env!("CARGO_BIN_EXE_vmctl"))
        .args(["--connect", "qemu:///system", "--config"])
        .arg(tmp.join("config.toml"))
        .args(args)
        .env("VMCTL_STORAGE_DIR", tmp.join("vms"))
        .env("VMCTL_STATE_DIR", tmp.join("state"))
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

/// `create ubuntu NAME --no-start` of the lab image by direct kernel boot on labbr0 (TCG,
/// DHCP), with `extra` flags.
fn create(tmp: &Path, img: &Path, name: &str, extra: &[&str]) -> Output {
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
        "--domain-type",
        "qemu",
        "--cpu-mode",
        "host-model",
        "--ssh-key",
        &key,
        "--no-start",
        "--json",
    ];
    args.extend_from_slice(extra);
    vmctl(tmp, &args)
}

/// Destroys and deletes the VM when the test ends, whatever happened.
struct Vm<'a> {
    name: String,
    tmp: &'a Path,
}

impl Drop for Vm<'_> {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.name]);
        let _ = vmctl(self.tmp, &["delete", &self.name, "--yes"]);
    }
}

/// The running domain's XML, checked against libvirt's schema.
fn live_xml(tmp: &Path, name: &str) -> String {
    let out = virsh(&["dumpxml", name]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let path = tmp.join(format!("{name}.xml"));
    std::fs::write(&path, &out.stdout).unwrap();
    let v = Command::new("virt-xml-validate")
        .arg(&path)
        .arg("domain")
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", text(&v.stderr));
    text(&out.stdout)
}

#[test]
#[ignore = "lab: root and the lab libvirtd; run with GVB_LAB=1 and --include-ignored"]
fn pinned_vm_defines_and_starts() {
    let img = lab_image_dir();
    let tmp = scratch();
    let vm = Vm {
        name: format!("tune-pin-{}", std::process::id()),
        tmp: tmp.path(),
    };
    let out = create(
        tmp.path(),
        &img,
        &vm.name,
        &["--cpus", "1", "--memory", "256", "--cpu-pinning", "auto"],
    );
    assert!(
        out.status.success(),
        "create failed:\n{}",
        text(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cpu = &created["placement"]["cpu"];
    assert_eq!(cpu["nodes"], serde_json::json!([0]), "{created}");
    assert_eq!(cpu["vcpu_cpus"], serde_json::json!([1]), "{created}");
    assert_eq!(cpu["emulator_cpuset"], "0", "{created}");

    let start = virsh(&["start", &vm.name]);
    assert!(start.status.success(), "{}", text(&start.stderr));
    let xml = live_xml(tmp.path(), &vm.name);
    assert!(xml.contains("<vcpupin vcpu='0' cpuset='1'/>"), "{xml}");
    assert!(xml.contains("<emulatorpin cpuset='0'/>"), "{xml}");
    assert!(xml.contains("<memory mode='strict' nodeset='0'/>"), "{xml}");
    // libvirt applied them to the running threads.
    let pins = virsh(&["vcpupin", &vm.name, "--live"]);
    let pins = text(&pins.stdout);
    assert!(
        pins.lines()
            .any(|l| l.trim().starts_with('0') && l.trim().ends_with('1')),
        "{pins}"
    );
    let emu = text(&virsh(&["emulatorpin", &vm.name, "--live"]).stdout);
    assert!(
        emu.lines()
            .any(|l| l.trim().ends_with(": 0") || l.trim() == "*: 0"),
        "{emu}"
    );

    // A second auto-pinned VM finds no free CPU: CPU 1 is the first VM's, CPU 0 the host's.
    let second = format!("tune-pin2-{}", std::process::id());
    let out = create(
        tmp.path(),
        &img,
        &second,
        &["--cpus", "1", "--memory", "256", "--cpu-pinning", "auto"],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("0 free of 2 (1 kept for the host); pinned VMs there:")
            && err.contains(&format!("{} holds 1", vm.name)),
        "{err}"
    );
    assert!(virsh(&["dominfo", &second]).status.code() != Some(0));
}

/// Puts `/proc/sys/vm/nr_hugepages` back when dropped.
struct NrHugepages(String);

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

impl Drop for NrHugepages {
    fn drop(&mut self) {
        let _ = std::fs::write(NR_HUGEPAGES, &self.0);
    }
}

fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim().split(' ').next()?.parse().ok())
        .unwrap()
}

#[test]
#[ignore = "lab: root (it reserves hugepages) and the lab libvirtd; run with GVB_LAB=1 and --include-ignored"]
fn hugepage_backed_vm_defines_and_starts() {
    let img = lab_image_dir();
    let tmp = scratch();
    let vm = Vm {
        name: format!("tune-huge-{}", std::process::id()),
        tmp: tmp.path(),
    };
    let old = std::fs::read_to_string(NR_HUGEPAGES).unwrap();
    let _restore = NrHugepages(old.clone());
    let old: u64 = old.trim().parse().unwrap();
    // 256 MiB is 128 pages of 2M.
    let args = ["--cpus", "1", "--memory", "256", "--hugepages", "2M"];

    // Too few free: refused with the numbers, nothing defined.
    std::fs::write(NR_HUGEPAGES, (old + 16).to_string()).unwrap();
    let out = create(tmp.path(), &img, &vm.name, &args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("not enough free 2M hugepages on this host: the VM needs 128,"),
        "{err}"
    );
    assert!(err.contains("gpu-vm-bootstrap --hugepages 2M:"), "{err}");
    assert!(virsh(&["dominfo", &vm.name]).status.code() != Some(0));

    std::fs::write(NR_HUGEPAGES, (old + 128 + 16).to_string()).unwrap();
    assert!(
        meminfo("HugePages_Free:") >= 128,
        "the kernel could not reserve 128 more 2M pages"
    );
    let out = create(tmp.path(), &img, &vm.name, &args);
    assert!(
        out.status.success(),
        "create failed:\n{}",
        text(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["placement"]["hugepages"]["pages"], 128, "{created}");
    assert_eq!(created["placement"]["hugepages"]["size"], "2M", "{created}");

    let free_before = meminfo("HugePages_Free:");
    let start = virsh(&["start", &vm.name]);
    assert!(start.status.success(), "{}", text(&start.stderr));
    let xml = live_xml(tmp.path(), &vm.name);
    assert!(xml.contains("<page size='2048' unit='KiB'/>"), "{xml}");
    assert!(xml.contains("<source type='memfd'/>"), "{xml}");
    // QEMU took its memory from the pool (libvirt preallocates hugepage memory).
    let free_after = meminfo("HugePages_Free:");
    assert!(
        free_before - free_after >= 128,
        "HugePages_Free went from {free_before} to {free_after}"
    );
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let qemu = text(&ps.stdout)
        .lines()
        .find(|l| l.contains(&format!("guest={},", vm.name)))
        .unwrap_or_default()
        .to_string();
    assert!(
        qemu.contains("memory-backend-memfd") && qemu.contains("\"hugetlb\":true"),
        "{qemu}"
    );
}
