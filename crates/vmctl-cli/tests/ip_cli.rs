//! `vmctl ip check` bad input (issue 6): exit 2, a message naming what is wrong, a `help:` line,
//! and nothing sent. These need no privilege: every case fails before a socket is opened. The
//! interface-without-IPv4 case needs a namespace and lives in `ip_lab.rs`.

use assert_cmd::Command;
use predicates::prelude::*;

fn vmctl() -> Command {
    let mut c = Command::cargo_bin("vmctl").unwrap();
    // Settings must not come from the machine running the tests.
    c.env("VMCTL_CONNECT", "test:///default")
        .env("VMCTL_BRIDGE", "br0")
        .env_remove("VMCTL_LOG");
    c
}

#[test]
fn ip_check_bad_input_exits_2_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--subnet", "198.18.5.0/33"],
            "parse subnet \"198.18.5.0/33\"",
        ),
        (&["--subnet", "198.18.5.0"], "expected IPv4 CIDR"),
        (&["--subnet", "garbage"], "parse subnet"),
        (
            &["--subnet", "198.18.0.0/15"],
            "a prefix shorter than /16 needs force",
        ),
        (&["--rate", "0"], "the rate must be at least 1"),
        (&["-i", "gvbnosuch0"], "no such interface"),
        (&["-i", "lo"], "ARP needs an Ethernet interface"),
    ];
    for (args, needle) in cases {
        vmctl()
            .args(["ip", "check"])
            .args(*args)
            .assert()
            .code(2)
            .stdout("")
            .stderr(
                predicate::str::contains(*needle)
                    .and(predicate::str::contains("help: "))
                    .and(predicate::str::contains("note: libvirt").not()),
            );
    }
}

#[test]
fn ip_check_clap_errors_exit_2() {
    for args in [
        &["ip", "check", "198.18.5.300"][..],
        &["ip", "check", "--interface", "a", "--bridge", "b"],
        &["ip", "check", "198.18.5.7", "--subnet", "198.18.5.0/24"],
        &["ip", "check", "--rate", "-5"],
        &["ip", "check", "--method", "magic"],
    ] {
        vmctl().args(args).assert().code(2).stdout("");
    }
}

#[test]
fn ip_list_needs_libvirt_and_says_so() {
    vmctl()
        .args(["--connect", "gvb-no-such-driver:///x", "ip", "list"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("connect to libvirt").and(predicate::str::contains("help: ")),
        );
}

#[test]
fn ip_help_lists_check_and_list() {
    vmctl()
        .args(["ip", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("check").and(predicate::str::contains("list")));
    vmctl()
        .args(["ip", "check", "--help"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("--force")
                .and(predicate::str::contains("--timeout-ms"))
                .and(predicate::str::contains("[default: 2000]")),
        );
}

/// `--ip auto` scans the live bridge the VM will join, also with a fixture host root (which maps
/// files, not the network). A bridge that does not exist is bad input: exit 2, the scan's own
/// error and help, and nothing is made.
#[test]
fn create_ip_auto_scans_the_live_bridge_even_with_a_fixture_host_root() {
    let d = tempfile::tempdir().unwrap();
    // A bridge the fixture has and no live host has, so the scan can only fail.
    std::fs::create_dir_all(d.path().join("root/sys/class/net/gvbnosuch0/bridge")).unwrap();
    std::fs::write(
        d.path().join("id.pub"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6 t@h\n",
    )
    .unwrap();
    std::fs::write(d.path().join("base.img"), b"").unwrap();
    vmctl()
        .env("VMCTL_STORAGE_DIR", "/vms")
        .env("VMCTL_STATE_DIR", d.path().join("state"))
        .env("VMCTL_BRIDGE", "gvbnosuch0")
        .arg("--host-root")
        .arg(d.path().join("root"))
        .args(["create", "ubuntu", "auto1", "--ip", "auto", "--no-start"])
        .arg("--image")
        .arg(d.path().join("base.img"))
        .arg("--ssh-key")
        .arg(d.path().join("id.pub"))
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("gvbnosuch0")
                .and(predicate::str::contains("no such interface"))
                .and(predicate::str::contains("help: ")),
        );
    assert!(!d.path().join("root/vms/auto1").exists());
    assert!(!d.path().join("state").exists());
}

/// The `ip check --json` document is the contract scripts read (issue 6): field names, order,
/// `a-b` free ranges, `vm` null when no domain has the MAC.
#[test]
fn ip_check_json_shape_snapshot() {
    use netscan::{Conflict, Host, ScanMethod, ScanResult};
    use std::collections::BTreeSet;
    use std::net::Ipv4Addr;
    use vmctl::commands::ip::{MacOwners, check_from_scan};

    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    let mac = |s: &str| s.parse::<netscan::MacAddr>().unwrap();
    let host = |i: &str, m: &str, vendor: Option<&str>, local: bool| Host {
        ip: ip(i),
        mac: mac(m),
        vendor: vendor.map(String::from),
        local,
    };
    let used = vec![
        host("198.18.5.1", "02:00:00:00:00:01", None, true),
        host(
            "198.18.5.10",
            "52:54:00:00:00:0a",
            Some("QEMU/KVM virtual NIC"),
            false,
        ),
        host("198.18.5.200", "02:00:00:00:00:c8", None, false),
        host(
            "198.18.5.200",
            "52:54:00:00:00:c8",
            Some("QEMU/KVM virtual NIC"),
            false,
        ),
    ];
    let subnet: ipnet::Ipv4Net = "198.18.5.0/24".parse().unwrap();
    let taken: BTreeSet<Ipv4Addr> = used.iter().map(|h| h.ip).collect();
    let (free, free_count) = netscan::free_ranges(subnet, &taken);
    let scan = ScanResult {
        interface: "br0".into(),
        subnet,
        local_ip: ip("198.18.5.1"),
        method: ScanMethod::Raw,
        fallback: false,
        used,
        conflicts: vec![Conflict {
            ip: ip("198.18.5.200"),
            macs: vec![mac("02:00:00:00:00:c8"), mac("52:54:00:00:00:c8")],
        }],
        free,
        free_count,
        probed: 253,
        packets_sent: 482,
        rate_pps: 2000,
        retries: 1,
        timeout_ms: 100,
        duration_ms: 341,
    };
    let owners: MacOwners = [(mac("52:54:00:00:00:0a"), "web1".to_string())].into();
    let doc = serde_json::to_string_pretty(&check_from_scan(scan, Some(&owners))).unwrap();
    insta::assert_snapshot!(doc);
}

/// `vmctl ARGS --json` on libvirt's test driver, as JSON.
fn json_of(args: &[&str]) -> serde_json::Value {
    let out = vmctl().args(args).arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn list_info_ssh_and_ip_list_agree_on_the_address() {
    // The test driver's running domain `test`: no vmctl metadata, a guest agent answering.
    let ip_list = json_of(&["ip", "list"]);
    let row = ip_list["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["vm"] == "test")
        .unwrap()
        .clone();
    let (ip, source) = (row["ip"].clone(), row["source"].clone());
    assert!(ip.is_string(), "ip list: {row}");

    let list = json_of(&["list"]);
    let vm = list["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "test")
        .unwrap()
        .clone();
    let info = json_of(&["info", "test"]);
    for (what, v) in [("list", &vm), ("info", &info)] {
        assert_eq!(v["ips"], serde_json::json!([ip]), "{what}: {v}");
        assert_eq!(
            v["addresses"],
            serde_json::json!([{"ip": ip, "source": source}]),
            "{what}: {v}"
        );
    }

    // ssh: a stand-in `ssh` first on PATH prints the destination it was given.
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("ssh");
    std::fs::write(&fake, "#!/bin/sh\nfor a; do echo \"$a\"; done\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = vmctl()
        .args(["ssh", "test", "--", "true"])
        .env("PATH", path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ssh: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dest = stdout.lines().find(|l| l.contains('@')).unwrap_or_default();
    assert_eq!(
        dest.split('@').nth(1),
        ip.as_str(),
        "ssh went elsewhere: {stdout}"
    );
}
