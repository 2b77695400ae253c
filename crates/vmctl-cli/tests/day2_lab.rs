//! Lab tests of the day-2 commands on real guests (the lab's Debian cloud-init image, TCG, on
//! the lab libvirtd): autostart by default and `autostart on|off`, `create --data-disk`,
//! `disk list|add|remove`, `resize` live (the disk) and stopped (vCPUs, memory, disk), `reboot`,
//! and `console` refused on a stopped VM. What the guest sees is read over SSH. Address
//! 198.18.0.160 (tests/lab/README.md). Run as root with the lab up (`make test` does).
#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic

#[path = "clone_lab.rs"]
mod clone;
#[path = "lab_support.rs"]
mod lab_support;

pub(crate) use lab_support::{Vm, lab_image_dir, scratch, text, vmctl};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Runs vmctl, asserts success and returns stdout.
fn ok(tmp: &Path, args: &[&str]) -> String {
    let o = vmctl(tmp, args);
    assert!(
        o.status.success(),
        "vmctl {args:?} failed ({:?}):\n{}{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

fn json(tmp: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&ok(tmp, &a)).unwrap()
}

/// A command in the guest over `vmctl ssh`, retried until it succeeds or `timeout` passes:
/// a wait on the guest answering, not a fixed sleep.
fn guest(tmp: &Path, vm: &str, cmd: &str, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        // ssh hands the words after the destination to the remote shell as one line.
        let o = vmctl(tmp, &["ssh", vm, "--", cmd]);
        if o.status.success() {
            return text(&o.stdout).trim().to_string();
        }
        assert!(
            start.elapsed() < timeout,
            "`{cmd}` in {vm} still failing after {timeout:?}: {}",
            text(&o.stderr)
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

const BOOT: Duration = Duration::from_secs(600);

#[test]
#[ignore = "lab: root, the lab libvirtd and a booting guest; run with GVB_LAB=1 and --include-ignored"]
fn day2_operations_on_a_real_guest() {
    let img = lab_image_dir();
    let tmp = scratch();
    let t = tmp.path();
    let vm = Vm {
        name: format!("day2-{}", std::process::id()),
        tmp: t,
    };
    let name = vm.name.as_str();
    let s = |p: PathBuf| p.display().to_string();
    let (base, kernel, initrd, key) = (
        s(img.join("base.qcow2")),
        s(img.join("vmlinuz")),
        s(img.join("initrd.img")),
        s(t.join("id.pub")),
    );
    let created = Instant::now();
    ok(
        t,
        &[
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
            "198.18.0.160/24",
            "--gateway",
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
            "--data-disk",
            "64M,name=scratch",
            "--wait",
            "--wait-timeout",
            "600",
        ],
    );
    eprintln!("create --wait: {:.1} s", created.elapsed().as_secs_f64());

    // Autostart is on by default, and shown by list; off and on again.
    let autostart = |t: &Path| {
        json(t, &["list"])["vms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap()["autostart"]
            .clone()
    };
    assert_eq!(autostart(t), true);
    ok(t, &["autostart", name, "off"]);
    assert_eq!(autostart(t), false);
    ok(t, &["autostart", name, "on"]);
    assert_eq!(autostart(t), true);

    // The data disk made at create: vmctl's, 64 MiB, seen by the guest as vdc.
    let disks = json(t, &["disk", "list", name]);
    let data = disks["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["role"] == "data")
        .unwrap()
        .clone();
    assert_eq!(data["target"], "vdc", "{disks:#}");
    assert_eq!(data["vmctl"], true);
    assert_eq!(data["bytes"], 64 << 20);
    assert_eq!(
        guest(t, name, "cat /sys/block/vdc/size", BOOT),
        (64u64 << 20 >> 9).to_string()
    );

    // The system disk grows live: the guest's block device has the new size at once.
    let sectors = |t: &Path| -> u64 {
        guest(t, name, "cat /sys/block/vda/size", BOOT)
            .parse()
            .unwrap()
    };
    let before = sectors(t);
    let r = json(t, &["resize", name, "--disk", "+512M"]);
    assert_eq!(r["running"], true, "{r:#}");
    let start = Instant::now();
    while sectors(t) != before + (512 << 11) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "vda did not grow in the guest"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // A shrink is refused and changes nothing.
    let shrink = vmctl(t, &["resize", name, "--disk", "1G"]);
    assert_eq!(shrink.status.code(), Some(2), "{}", text(&shrink.stderr));
    assert!(
        text(&shrink.stderr).contains("help:"),
        "{}",
        text(&shrink.stderr)
    );

    // A disk added to the running VM: hot-plugged, or (no free PCIe port) from the next start.
    let added = json(t, &["disk", "add", name, "32M", "--name", "extra"]);
    assert_eq!(added["target"], "vdd", "{added:#}");

    // Reboot: a new boot id once the guest is back.
    let boot_id = guest(t, name, "cat /proc/sys/kernel/random/boot_id", BOOT);
    ok(t, &["reboot", name]);
    let start = Instant::now();
    while guest(t, name, "cat /proc/sys/kernel/random/boot_id", BOOT) == boot_id {
        assert!(start.elapsed() < BOOT, "no reboot after `vmctl reboot`");
        std::thread::sleep(Duration::from_secs(2));
    }

    // Stopped: vCPUs, memory and the disk change; the next boot has them all.
    let root_before = root_kib(t, name);
    ok(t, &["stop", name, "--timeout", "300"]);
    let console = vmctl(t, &["console", name]);
    assert_eq!(console.status.code(), Some(2), "{}", text(&console.stderr));
    let r = json(
        t,
        &[
            "resize", name, "--cpus", "3", "--memory", "1280M", "--disk", "+256M",
        ],
    );
    assert_eq!(r["changes"].as_array().unwrap().len(), 3, "{r:#}");
    ok(t, &["start", name]);
    let root_after = root_kib(t, name);
    assert!(root_after > root_before, "{root_after} <= {root_before}");
    assert_eq!(guest(t, name, "nproc", BOOT), "3");
    let mem_kib: u64 = guest(t, name, "awk '/MemTotal/ {print $2}' /proc/meminfo", BOOT)
        .parse()
        .unwrap();
    assert!(mem_kib > 1100 * 1024 && mem_kib <= 1280 * 1024, "{mem_kib}");
    // Both data disks are there after the start.
    assert_eq!(
        guest(t, name, "cat /sys/block/vdd/size", BOOT),
        (32u64 << 11).to_string()
    );

    // Removing asks first; with --yes the guest lets go of it and vmctl deletes its file.
    let no = vmctl(t, &["disk", "remove", name, "extra"]);
    assert_eq!(no.status.code(), Some(2), "{}", text(&no.stderr));
    let extra = t.join("vms").join(name).join("data-extra.qcow2");
    assert!(extra.exists());
    let removed = json(
        t,
        &["disk", "remove", name, "extra", "--yes", "--timeout", "120"],
    );
    assert_eq!(removed["deleted"], true, "{removed:#}");
    assert!(!extra.exists());
    let start = Instant::now();
    while guest(
        t,
        name,
        "test -e /sys/block/vdd && echo yes || echo no",
        BOOT,
    ) == "yes"
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "vdd still in the guest"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Delete removes the data disk vmctl made with the rest.
    ok(t, &["stop", name, "--timeout", "300"]);
    ok(t, &["delete", name, "--yes"]);
    let left: Vec<_> = std::fs::read_dir(t.join("vms"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The size of the guest's root file system in KiB, once cloud-init (which grows it at boot)
/// has finished.
fn root_kib(t: &Path, name: &str) -> u64 {
    guest(
        t,
        name,
        "cloud-init status --wait >/dev/null 2>&1; df -k --output=size / | tail -n1",
        BOOT,
    )
    .trim()
    .parse()
    .unwrap()
}
