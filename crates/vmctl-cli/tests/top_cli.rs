//! `vmctl top` without a terminal: refused with a pointer at `--once`; `--once` as text and
//! JSON on libvirt's test driver; a bad `--interval` refused before libvirt is asked.

use assert_cmd::Command;
use predicates::prelude::*;

fn vmctl() -> Command {
    let mut c = Command::cargo_bin("vmctl").unwrap();
    // Settings and state must not come from the machine running the tests: a bridge scan kept
    // in its /var/lib/vmctl would show on the screen.
    let state = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("top-cli-state");
    c.env("VMCTL_CONNECT", "test:///default")
        .env("VMCTL_BRIDGE", "br0")
        .env("VMCTL_STATE_DIR", state)
        .env_remove("VMCTL_LOG");
    c
}

#[test]
fn top_without_a_terminal_is_refused_with_a_pointer_at_once() {
    vmctl()
        .arg("top")
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("vmctl top needs a terminal"))
        .stderr(predicate::str::contains("help: ").and(predicate::str::contains("--once")));
}

#[test]
fn top_refuses_an_interval_outside_0_2_s_to_1_h() {
    for bad in ["0.1", "0", "-2", "3601", "two"] {
        vmctl()
            // An unreachable URI: the interval is refused before libvirt is asked.
            .args([
                "--connect",
                "qemu+ssh://nosuchhost.invalid/system",
                "top",
                "--once",
            ])
            .args(["--interval", bad])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("invalid --interval"))
            .stderr(predicate::str::contains("help: see `vmctl top --help`"));
    }
}

#[test]
fn top_once_prints_the_screen_as_text() {
    vmctl()
        .args(["top", "--once"])
        .assert()
        .success()
        .stdout(predicate::str::contains("vmctl top - test:///default"))
        .stdout(predicate::str::is_match(r"(?m)^  test +running +2 ").unwrap())
        .stdout(predicate::str::contains("Bridge br0: not scanned yet"))
        .stdout(predicate::str::contains("\x1b").not());
}

#[test]
fn top_once_json_has_the_view_and_vmctls_own_refresh_time() {
    let out = vmctl().args(["top", "--once", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["refresh_ms"].as_f64().unwrap() >= 0.0, "{v}");
    assert!(v["first_refresh_ms"].as_f64().is_some(), "{v}");
    assert_eq!(v["round_trips"], 1, "a steady refresh is one round trip");
    assert_eq!(v["view"]["vms"][0]["name"], "test");
    assert_eq!(v["view"]["vms"][0]["state"], "running");
    assert_eq!(v["view"]["bridge_name"], "br0");
}
