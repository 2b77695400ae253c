//! `vmctl image list|remove|prune` and `vmctl share` through the binary: exit codes, `--json`,
//! refusals with help lines. libvirt is the test driver, loaded from a node file whose domain's
//! vmctl metadata names a cached blob (`test:///PATH` keeps the domains of that file).

use std::path::PathBuf;

use assert_cmd::Command;
use predicates::prelude::*;
use sha2::Digest;

const NS: &str = "https://github.com/gpu-vm-bootstrap/gpu-vm-bootstrap/vmctl/1";

struct Fx {
    dir: tempfile::TempDir,
}

impl Fx {
    fn new() -> Self {
        let f = Fx {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(f.dir.path().join("config.toml"), "").unwrap();
        f
    }
    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
    fn blob(&self, body: &[u8]) -> String {
        let h = hex::encode(sha2::Sha256::digest(body));
        std::fs::create_dir_all(self.cache().join("sha256")).unwrap();
        std::fs::write(self.cache().join("sha256").join(&h), body).unwrap();
        h
    }
    /// A test-driver node with one (running) domain `user-vm` whose metadata names `sha`.
    fn node(&self, sha: &str) -> String {
        let xml = format!(
            "<node>\n<domain type='test'>\n  <name>user-vm</name>\n  <metadata>\n    <vmctl:vm xmlns:vmctl='{NS}'>\n      <vmctl:os>ubuntu</vmctl:os>\n      <vmctl:base-sha256>{sha}</vmctl:base-sha256>\n      <vmctl:created>2026-01-01T00:00:00Z</vmctl:created>\n      <vmctl:version>0</vmctl:version>\n    </vmctl:vm>\n  </metadata>\n  <memory>262144</memory>\n  <vcpu>1</vcpu>\n  <os><type arch='x86_64'>hvm</type></os>\n</domain>\n</node>\n"
        );
        let p = self.dir.path().join("node.xml");
        std::fs::write(&p, xml).unwrap();
        format!("test://{}", p.display())
    }
    fn vmctl(&self, connect: &str) -> Command {
        let mut c = Command::cargo_bin("vmctl").unwrap();
        for (k, _) in std::env::vars() {
            if k.starts_with("VMCTL_") {
                c.env_remove(k);
            }
        }
        c.env("VMCTL_IMAGE_CACHE", self.cache())
            .env("VMCTL_STORAGE_DIR", self.dir.path().join("vms"))
            .env("VMCTL_STATE_DIR", self.dir.path().join("state"))
            .args(["--config"])
            .arg(self.dir.path().join("config.toml"))
            .args(["--connect", connect]);
        c
    }
}

fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).unwrap()
}

#[test]
fn image_list_json_names_the_vm_using_a_blob() {
    let f = Fx::new();
    let used = f.blob(b"used by user-vm");
    let free = f.blob(b"free");
    let uri = f.node(&used);
    let out = f
        .vmctl(&uri)
        .args(["image", "list", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out.stdout);
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    let u = files.iter().find(|x| x["sha256"] == used.as_str()).unwrap();
    assert_eq!(u["used_by"][0]["vm"], "user-vm");
    assert_eq!(u["used_by"][0]["via"], "metadata");
    // The test driver runs the domains of a node file.
    assert_eq!(u["used_by"][0]["state"], "running");
    let fr = files.iter().find(|x| x["sha256"] == free.as_str()).unwrap();
    assert_eq!(fr["used_by"].as_array().unwrap().len(), 0);
    assert_eq!(v["total_bytes"], 15 + 4);
    // The human view: one row per file, the user named.
    f.vmctl(&uri)
        .args(["image", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("user-vm (base, running)"))
        .stdout(predicate::str::contains("2 file(s), 19 B"));
}

#[test]
fn image_remove_refuses_a_blob_in_use_and_removes_a_free_one() {
    let f = Fx::new();
    let used = f.blob(b"used by user-vm");
    let free = f.blob(b"free");
    let uri = f.node(&used);
    f.vmctl(&uri)
        .args(["image", "remove", &used[..10], "--yes"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("in use by user-vm"))
        .stderr(predicate::str::contains(
            "help: a cached file in use is never removed",
        ));
    assert!(f.cache().join("sha256").join(&used).exists());
    // Without --yes and no terminal to ask on: refused, nothing removed.
    f.vmctl(&uri)
        .args(["image", "remove", &free])
        .write_stdin("")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("without confirmation"));
    f.vmctl(&uri)
        .args(["image", "remove", "0000000000000000", "--yes"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "no cached file's sha256 starts with",
        ));
    f.vmctl(&uri)
        .args(["image", "remove", "not-hex", "--yes"])
        .assert()
        .code(2);
    let out = f
        .vmctl(&uri)
        .args(["image", "remove", &free[..12], "--yes", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out.stdout);
    assert_eq!(v["removed"][0]["sha256"], free.as_str());
    assert_eq!(v["removed"][0]["kind"], "blob");
    assert_eq!(v["bytes_freed"], 4);
    assert!(!f.cache().join("sha256").join(&free).exists());
}

#[test]
fn image_prune_dry_run_lists_then_prune_frees() {
    let f = Fx::new();
    let used = f.blob(b"used by user-vm");
    let free = f.blob(b"free");
    std::fs::create_dir_all(f.cache().join("quarantine")).unwrap();
    std::fs::write(f.cache().join("quarantine/x.1"), b"qq").unwrap();
    let uri = f.node(&used);
    let out = f
        .vmctl(&uri)
        .args(["image", "prune", "--dry-run", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v = json(&out.stdout);
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["bytes_freed"], 6);
    assert_eq!(v["removed"].as_array().unwrap().len(), 2);
    assert!(f.cache().join("sha256").join(&free).exists());
    f.vmctl(&uri)
        .args(["image", "prune", "--yes"])
        .assert()
        .success()
        .stdout(predicate::str::contains("freed: 2 file(s), 6 B (6 bytes)"))
        .stdout(predicate::str::contains("(in use by user-vm)"));
    assert!(!f.cache().join("sha256").join(&free).exists());
    assert!(f.cache().join("sha256").join(&used).exists());
}

#[test]
fn share_add_and_list_and_refusals() {
    let f = Fx::new();
    let uri = f.node(&"0".repeat(64));
    let d = f.dir.path().display().to_string();
    let out = f
        .vmctl(&uri)
        .args([
            "share",
            "add",
            "user-vm",
            &format!("{d}:models,ro"),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out.stdout);
    assert_eq!(v["tag"], "models");
    assert_eq!(v["readonly"], true);
    assert_eq!(
        v["pending_restart"], true,
        "the domain runs: a restart is needed"
    );
    f.vmctl(&uri)
        .args(["share", "add", "user-vm", "/nonexistent-dir:models"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("help: give --share HOST_DIR:TAG"));
    f.vmctl(&uri)
        .args(["share", "add", "user-vm", &format!("{d}:bad tag")])
        .assert()
        .code(2);
    f.vmctl(&uri)
        .args(["share", "remove", "user-vm", "nope"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("has no share tagged"));
    f.vmctl(&uri)
        .args(["share", "list", "no-such-vm"])
        .assert()
        .code(2);
    f.vmctl(&uri)
        .args(["share", "list", "user-vm", "--json"])
        .assert()
        .success()
        .stdout(predicate::str::diff("[]\n"));
}

#[test]
fn create_share_conflicts_with_desktop_and_checks_its_value() {
    let f = Fx::new();
    f.vmctl("test:///default")
        .args(["create", "ubuntu", "x", "--desktop", "--share", "/tmp:m"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--share"));
}
