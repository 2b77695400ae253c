//! Namespace LAN tests (root, `GVB_LAB=1`): build a LAN of network namespaces with
//! `tests/lab/netns-lan.sh`, scan it from the scanner namespace with the `scan` example under
//! `ip netns exec`, and compare with the ground truth the script prints.
//! Only 198.18.0.0/15, only inside namespaces named `gvbscan-<pid>-…`, removed on drop (panics too).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

#[path = "../../../tests/lab/netns_lan.rs"]
mod netns_lan;

use netns_lan::Lan;

/// `cargo test` builds examples next to the test binaries: target/<profile>/examples/scan.
fn scan_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let bin = profile_dir.join("examples/scan");
    assert!(
        bin.exists(),
        "{} missing: run `cargo test -p netscan` (it builds examples)",
        bin.display()
    );
    bin
}

/// A namespace LAN with the scanner run inside it.
struct Lab(Lan);

impl std::ops::Deref for Lab {
    type Target = Lan;
    fn deref(&self) -> &Lan {
        &self.0
    }
}

impl Lab {
    fn up(tag: &str, bridge_cidr: &str, hosts: &[&str]) -> Lab {
        Lab(Lan::up(tag, bridge_cidr, hosts))
    }

    fn scan(&self, args: &[&str]) -> Output {
        self.exec(&scan_bin())
            .args(args)
            .output()
            .expect("ip netns exec scan")
    }

    fn scan_json(&self, args: &[&str]) -> Value {
        let out = self.scan(&[args, &["--json"]].concat());
        assert!(
            out.status.success(),
            "scan failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("scan JSON")
    }
}

fn found(v: &Value) -> BTreeSet<(String, String)> {
    v["used"]
        .as_array()
        .expect("used")
        .iter()
        .filter(|h| h["local"] == false)
        .map(|h| {
            (
                h["ip"].as_str().expect("ip").to_string(),
                h["mac"].as_str().expect("mac").to_string(),
            )
        })
        .collect()
}

/// 25 host namespaces on a /24: 23 plain hosts (one ignores ICMP echo) and a duplicate-IP pair.
fn lan24(tag: &str) -> Lab {
    let mut hosts: Vec<String> = (10..=32).map(|i| format!("198.18.7.{i}")).collect();
    hosts[1].push_str(",noicmp");
    hosts.push("198.18.7.200".into());
    hosts.push("198.18.7.200".into());
    let refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
    Lab::up(tag, "198.18.7.1/24", &refs)
}

#[test]
#[ignore = "lab: root and network namespaces; run with GVB_LAB=1 and --include-ignored"]
fn lab_raw_scan_of_a_24_finds_every_host_and_the_duplicate() {
    let lab = lan24("raw24");
    assert_eq!(lab.truth.len(), 25);
    let v = lab.scan_json(&["-i", "br0", "--method", "raw"]);
    assert_eq!(v["method"], "raw");
    assert_eq!(found(&v), lab.truth, "recall 100 % and no false positives");
    let conflicts = v["conflicts"].as_array().expect("conflicts");
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0]["ip"], "198.18.7.200");
    assert_eq!(conflicts[0]["macs"].as_array().expect("macs").len(), 2);
    // 254 hosts - ours - 24 distinct live addresses.
    assert_eq!(v["free_count"], 229);
    assert_eq!(v["free"][0], "198.18.7.2-198.18.7.9");
    assert_eq!(v["used"][1]["vendor"], "QEMU/KVM virtual NIC");
}

#[test]
#[ignore = "lab: root and network namespaces; run with GVB_LAB=1 and --include-ignored"]
fn lab_neighbour_fallback_finds_every_address() {
    let lab = lan24("neigh24");
    let truth_ips: BTreeSet<String> = lab.truth.iter().map(|(ip, _)| ip.clone()).collect();
    // Explicitly, and as an unprivileged user through the automatic fallback.
    let v = lab.scan_json(&["-i", "br0", "--method", "neighbour"]);
    assert_eq!(v["method"], "neighbour");
    let ips: BTreeSet<String> = found(&v).into_iter().map(|(ip, _)| ip).collect();
    assert_eq!(ips, truth_ips);
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.name,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .args(["--inh-caps=-all", "--bounding-set=-all"])
        .arg(scan_bin())
        .args(["-i", "br0", "--json"])
        .output()
        .expect("setpriv");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["fallback"], true);
    assert!(String::from_utf8_lossy(&out.stderr).contains("slower"));
    let ips: BTreeSet<String> = found(&v).into_iter().map(|(ip, _)| ip).collect();
    assert_eq!(ips, truth_ips);
}

#[test]
#[ignore = "lab: root and network namespaces; run with GVB_LAB=1 and --include-ignored"]
fn lab_23_subnet_includes_the_addresses_a_24_would_call_broadcast_or_network() {
    let lab = Lab::up(
        "23",
        "198.18.8.1/23",
        &[
            "198.18.8.5",
            "198.18.8.255",
            "198.18.9.0",
            "198.18.9.254,noicmp",
        ],
    );
    let v = lab.scan_json(&["-i", "br0"]);
    assert_eq!(v["subnet"], "198.18.8.0/23");
    assert_eq!(found(&v), lab.truth);
    assert_eq!(v["free_count"], 510 - 1 - 4);
    assert_eq!(v["conflicts"].as_array().map(Vec::len), Some(0));
}

#[test]
#[ignore = "lab: root and network namespaces; run with GVB_LAB=1 and --include-ignored"]
fn lab_probe_one_address() {
    let lab = Lab::up(
        "probe",
        "198.18.10.1/24",
        &["198.18.10.20", "198.18.10.30", "198.18.10.30"],
    );
    let taken = lab.scan(&["-i", "br0", "--probe", "198.18.10.20"]);
    assert_eq!(taken.status.code(), Some(1));
    let dup = lab.scan(&["-i", "br0", "--probe", "198.18.10.30", "--json"]);
    assert_eq!(dup.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&dup.stdout).expect("json");
    assert_eq!(v["macs"].as_array().map(Vec::len), Some(2), "{v}");
    let free = lab.scan(&["-i", "br0", "--probe", "198.18.10.21"]);
    assert_eq!(
        free.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&free.stdout)
    );
    let outside = lab.scan(&["-i", "br0", "--probe", "198.18.11.21"]);
    assert_eq!(outside.status.code(), Some(2));
}

#[test]
#[ignore = "lab: root and network namespaces; run with GVB_LAB=1 and --include-ignored"]
fn lab_bad_input_exits_2_with_a_clear_message() {
    let lab = Lab::up("bad", "198.18.12.1/24", &["198.18.12.9"]);
    assert!(
        lab.ip(&["link", "add", "nov4", "type", "bridge"])
            .status
            .success()
    );
    assert!(
        lab.ip(&["link", "add", "wide", "type", "bridge"])
            .status
            .success()
    );
    assert!(
        lab.ip(&["addr", "add", "198.18.0.1/15", "dev", "wide"])
            .status
            .success()
    );
    assert!(lab.ip(&["link", "set", "wide", "up"]).status.success());
    let cases: &[(&[&str], &str)] = &[
        (&["-i", "nov4"], "has none"),
        (&["-i", "nosuch0"], "no such interface"),
        (&["-i", "lo"], "needs an Ethernet interface"),
        (&["-i", "br0", "--subnet", "198.18.12.0/33"], "parse subnet"),
        (&["-i", "br0", "--subnet", "198.18.12.0"], "parse subnet"),
        (
            &["-i", "br0", "--subnet", "198.18.13.0/24"],
            "not inside a subnet of br0",
        ),
        (&["-i", "wide"], "needs force"),
        (&["-i", "br0", "--rate", "0"], "rate must be at least 1"),
    ];
    // A down interface is a runtime failure (exit 1), caught before any packet.
    assert!(
        lab.ip(&["addr", "add", "198.18.30.1/24", "dev", "nov4"])
            .status
            .success()
    );
    let down = lab.scan(&["-i", "nov4"]);
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("ip link set nov4 up"));
    assert!(lab.ip(&["addr", "flush", "dev", "nov4"]).status.success());
    for (args, needle) in cases {
        let out = lab.scan(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(err.contains("help:"), "{args:?}: {err}");
    }
}

#[test]
#[ignore = "lab: root and network namespaces; run with GVB_LAB=1 and --include-ignored"]
fn lab_parallel_allocations_get_distinct_ips() {
    let lab = Lab::up(
        "race",
        "198.18.14.1/24",
        &["198.18.14.10", "198.18.14.11", "198.18.14.13"],
    );
    let state = tempfile::tempdir().expect("state dir");
    let dir = state.path().to_str().expect("utf-8").to_string();
    // Each process scans, then takes the lock and allocates: all race on the same store.
    let children: Vec<_> = (0..4)
        .map(|i| {
            Command::new("ip")
                .args(["netns", "exec", &lab.name])
                .arg(scan_bin())
                .args([
                    "-i",
                    "br0",
                    "--allocate",
                    &dir,
                    "--owner",
                    &format!("vm-{i}"),
                ])
                .args(["--reserved", "198.18.14.1-198.18.14.9"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let ips: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("wait");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .collect();
    let distinct: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), ips.len(), "{ips:?}");
    let expected: BTreeSet<String> = ["12", "14", "15", "16"]
        .iter()
        .map(|o| format!("198.18.14.{o}"))
        .collect();
    assert_eq!(
        ips.iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "first free, outside the reserved range"
    );
}
