//! The modes of the files and directories vmctl creates, under a strict (077) and a permissive
//! (000) umask: a VM's directory and the storage above it 0711, a Talos secret 0600, the
//! `talos config --out` directory 0755, whatever the umask of the vmctl that made them.
//! umask(2) is process-wide, so these tests are a binary of their own and take turns through
//! [`UMASK`].
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::Path;
use std::sync::Mutex;

use vmctl::guest_media::disk;

static UMASK: Mutex<()> = Mutex::new(());
const UMASKS: [u32; 2] = [0o077, 0o000];

/// Runs `f` under `mask`, then restores the umask (also when `f` panics).
fn with_umask(mask: u32, f: impl FnOnce()) {
    let _turn = UMASK.lock().unwrap_or_else(|e| e.into_inner());
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(mask));
    let result = catch_unwind(AssertUnwindSafe(f));
    rustix::process::umask(old);
    if let Err(p) = result {
        resume_unwind(p);
    }
}

fn assert_mode(p: &Path, want: u32, mask: u32) {
    let got = std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(
        got,
        want,
        "{} under umask {mask:03o}: {got:o}, want {want:o}",
        p.display()
    );
}

#[test]
fn vm_directories_have_their_mode_under_any_umask() {
    for mask in UMASKS {
        with_umask(mask, || {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("lib/vms/vm1");
            vmctl::storage::claim_vm_dir(&dir, "vm1").unwrap();
            for p in [&dir, &tmp.path().join("lib/vms"), &tmp.path().join("lib")] {
                assert_mode(p, disk::DIR_MODE, mask);
            }
        });
    }
}

#[test]
fn talos_secrets_are_private_under_any_umask() {
    for mask in UMASKS {
        with_umask(mask, || {
            let tmp = tempfile::tempdir().unwrap();
            let p = tmp.path().join("secrets.yaml");
            vmctl::talos::write_private(&p, b"x").unwrap();
            assert_mode(&p, 0o600, mask);
        });
    }
}

/// Under the strict umask only: `talos config` generates a 4096-bit RSA key, seconds each.
#[test]
fn talos_config_out_directory_has_its_mode_under_a_strict_umask() {
    let mask = 0o077;
    with_umask(mask, || {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("cfg/out");
        let req = vmctl::commands::talos::ConfigRequest {
            cluster: "w13".into(),
            endpoint: "https://198.18.0.50:6443".into(),
            version: Some("v1.10.0".into()),
            out: out.clone(),
        };
        let done =
            vmctl::commands::talos::config(&vmctl::config::Config::defaults(), &req).unwrap();
        assert_mode(&out, 0o755, mask);
        assert_mode(&tmp.path().join("cfg"), 0o755, mask);
        for f in &done.files {
            assert_mode(f, 0o600, mask);
        }
    });
}
