//! Lab tests of `create ubuntu --wait` against the real libvirtd of the test lab
//! (`tests/lab/up.sh`, cached guest image: Debian 12, cloud-init 22.4, TCG). `--wait` means
//! ready: SSH takes the VM's key AND cloud-init has finished; a cloud-init error is a failed
//! create. Run with GVB_LAB=1 as root; without it they print "skipped" and pass. Addresses
//! 198.18.0.132 and .133 (tests/lab/README.md).
#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic

#[path = "lab_support.rs"]
mod lab_support;

use lab_support::{Vm, create_lab_vm, lab_image_dir, scratch, text, vmctl};

use std::path::Path;
use std::process::{Command, Output};

/// `create ubuntu NAME --wait` of the lab image by direct kernel boot on labbr0 (TCG).
fn create_wait(tmp: &Path, img: &Path, name: &str, ip: &str, extra: &[&str]) -> Output {
    let mut args = vec!["--wait", "--wait-timeout", "600"];
    args.extend(extra);
    create_lab_vm(tmp, img, name, ip, &args)
}

/// The finding: `create --wait` returned as soon as sshd first answered; cloud-init then
/// restarted sshd and the next scp got "Connection refused". Right after `create --wait`
/// returns, cloud-init in the guest must say `done` (asked WITHOUT --wait) and its
/// boot-finished marker must be there, and new SSH connections must all get in.
#[test]
#[ignore = "lab: root, the lab libvirtd and a booting guest; run with GVB_LAB=1 and --include-ignored"]
fn create_wait_returns_only_after_cloud_init_finished() {
    let img = lab_image_dir();
    let tmp = scratch();
    let vm = Vm {
        name: format!("wait-lab-{}", std::process::id()),
        tmp: tmp.path(),
    };
    let out = create_wait(tmp.path(), &img, &vm.name, "198.18.0.132/24", &[]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "create --wait failed:\n{err}");

    let status = vmctl(
        tmp.path(),
        &[
            "ssh",
            &vm.name,
            "--",
            "cloud-init",
            "status",
            "--format",
            "json",
        ],
    );
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_else(|e| {
        panic!(
            "cloud-init status: {e}\n{}\n{}",
            text(&status.stdout),
            text(&status.stderr)
        )
    });
    assert_eq!(
        json["status"], "done",
        "create --wait returned while cloud-init was not done:\n{json:#}\nvmctl said:\n{err}"
    );
    // One line per stage on stderr.
    assert!(
        err.contains("SSH up after ") && err.contains("; waiting for cloud-init"),
        "no per-stage progress:\n{err}"
    );
    assert!(err.contains(&format!("{}: ready after ", vm.name)), "{err}");
    for _ in 0..3 {
        let again = vmctl(
            tmp.path(),
            &[
                "ssh",
                &vm.name,
                "--",
                "test",
                "-e",
                "/var/lib/cloud/instance/boot-finished",
            ],
        );
        assert!(
            again.status.success(),
            "a new SSH connection after create --wait failed (exit {:?}): {}",
            again.status.code(),
            text(&again.stderr)
        );
    }
}

/// A cloud-init failure (here a package apt can't find: the package module fails, `cloud-init
/// status` says error) is a failed create: exit 1, cloud-init's errors and the tail of the
/// guest's /var/log/cloud-init-output.log in the message, and the VM is kept running to look at.
#[test]
#[ignore = "lab: root, the lab libvirtd and a booting guest; run with GVB_LAB=1 and --include-ignored"]
fn create_wait_fails_when_cloud_init_fails() {
    let img = lab_image_dir();
    let tmp = scratch();
    let vm = Vm {
        name: format!("wait-fail-{}", std::process::id()),
        tmp: tmp.path(),
    };
    let out = create_wait(
        tmp.path(),
        &img,
        &vm.name,
        "198.18.0.133/24",
        &["--packages", "gvb-no-such-package"],
    );
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a cloud-init error must fail the create:\n{err}"
    );
    for want in [
        format!("error: cloud-init failed in {} after ", vm.name),
        "  - ('package-update-upgrade-install', ".to_string(),
        format!("lines of /var/log/cloud-init-output.log in {}:", vm.name),
        "E: Unable to locate package gvb-no-such-package".to_string(),
        format!(
            "help: {} is kept and keeps running: `vmctl ssh {}",
            vm.name, vm.name
        ),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
    let state = Command::new("virsh")
        .args(["-c", "qemu:///system", "domstate", &vm.name])
        .output()
        .unwrap();
    assert_eq!(text(&state.stdout).trim(), "running");
}
