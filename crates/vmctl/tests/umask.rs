//! The modes of the files and directories vmctl creates, under a strict (077) and a permissive
//! (000) umask: a VM's directory and the storage above it 0711, a Talos secret 0600, the
//! `talos config --out` directory 0755, whatever the umask of the vmctl that made them.
//! umask(2) is process-wide, so these tests are a binary of their own
//! ([`fixture_builder::umask`] makes them take turns).
#![allow(clippy::unwrap_used)]

use fixture_builder::umask::{self, assert_mode};
use vmctl::guest_media::disk;

#[test]
fn vm_directories_have_their_mode_under_any_umask() {
    umask::each(|mask| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("lib/vms/vm1");
        vmctl::storage::claim_vm_dir(&dir, "vm1").unwrap();
        for p in [&dir, &tmp.path().join("lib/vms"), &tmp.path().join("lib")] {
            assert_mode(p, disk::DIR_MODE, mask);
        }
    });
}

#[test]
fn talos_secrets_are_private_under_any_umask() {
    umask::each(|mask| {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("secrets.yaml");
        vmctl::talos::write_private(&p, b"x").unwrap();
        assert_mode(&p, 0o600, mask);
    });
}

/// Under the strict umask only: `talos config` generates a 4096-bit RSA key, seconds each.
#[test]
fn talos_config_out_directory_has_its_mode_under_a_strict_umask() {
    umask::with(umask::STRICT, || {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("cfg/out");
        let req = vmctl::commands::talos::ConfigRequest {
            cluster: "w13".into(),
            endpoint: "https://198.18.0.50:6443".into(),
            version: Some("v1.10.0".into()),
            out: out.clone(),
        };
        let config = vmctl::config::Config::defaults();
        let done = vmctl::commands::talos::config(&config, &req).unwrap();
        assert_mode(&out, 0o755, umask::STRICT);
        assert_mode(&tmp.path().join("cfg"), 0o755, umask::STRICT);
        for f in &done.files {
            assert_mode(f, 0o600, umask::STRICT);
        }
    });
}
