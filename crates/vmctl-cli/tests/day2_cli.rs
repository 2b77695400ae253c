//! CLI tests of the day-2 commands against libvirt's test driver (its `test` domain runs and
//! has one disk): refusals are exit 2 with a `help:` line and change nothing; the rest of their
//! behaviour is in the lab tests (day2_lab.rs, clone_lab.rs).

use assert_cmd::Command;
use predicates::prelude::*;

fn vmctl(state: &std::path::Path) -> Command {
    let mut c = Command::cargo_bin("vmctl").unwrap();
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("VMCTL_STATE_DIR", state)
        .env("VMCTL_IMAGE_CACHE", state.join("images"))
        .args(["--connect", "test:///default", "--config", "/dev/null"]);
    c
}

fn refused(args: &[&str], says: &str) {
    let tmp = tempfile::tempdir().unwrap();
    vmctl(tmp.path())
        .args(args)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(says).and(predicate::str::contains("help:")));
}

#[test]
fn autostart_on_and_off_on_the_test_driver() {
    let tmp = tempfile::tempdir().unwrap();
    let out = vmctl(tmp.path())
        .args(["autostart", "test", "on", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["autostart"], true);
    assert_eq!(v["changed"], true);
    vmctl(tmp.path())
        .args(["autostart", "test", "off"])
        .assert()
        .success()
        .stdout(predicate::str::contains("autostart off (unchanged)"));
}

#[test]
fn day2_refusals_are_usage_errors_with_help() {
    refused(&["resize", "test"], "nothing to change");
    refused(&["clone", "test", "copy1"], "test is running");
    refused(&["reboot", "nope"], "nope");
    refused(
        &["template", "show", "gpu-worker"],
        "no template \"gpu-worker\"",
    );
    refused(&["template", "save", "test", "bad/name"], "bad/name");
    refused(
        &["disk", "remove", "test", "vdz", "--yes"],
        "has no disk \"vdz\"",
    );
    refused(
        &[
            "create",
            "ubuntu",
            "x1",
            "--data-disk",
            "10G,size=3",
            "--seed-only",
        ],
        "--data-disk",
    );
}

#[test]
fn disk_list_shows_the_test_domains_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let out = vmctl(tmp.path())
        .args(["disk", "list", "test", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "test");
    assert!(v["disks"].is_array());
}
