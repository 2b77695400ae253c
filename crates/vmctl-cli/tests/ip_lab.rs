//! `vmctl ip` and `create --ip` on a namespace LAN (root, `GVB_LAB=1`; issue 6). Each test
//! builds a LAN with `tests/lab/netns-lan.sh` (a scanner namespace with bridge br0, one namespace
//! per host), runs the real `vmctl` binary inside the scanner namespace under `ip netns exec`,
//! and compares with the ground truth the script prints. libvirt is the test driver: a node XML
//! file whose domains carry the MACs of lab hosts. Only 198.18.0.0/15, only inside namespaces
//! named `gvbscan-<pid>-…`, removed on drop (panics too).
#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

#[path = "../../../tests/lab/netns_lan.rs"]
mod netns_lan;

use netns_lan::Lan;

fn vmctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vmctl"))
}

/// A namespace LAN plus a scratch directory for the test-driver node file.
struct Lab {
    lan: Lan,
    dir: tempfile::TempDir,
}

impl std::ops::Deref for Lab {
    type Target = Lan;
    fn deref(&self) -> &Lan {
        &self.lan
    }
}

impl Lab {
    fn up(tag: &str, bridge_cidr: &str, hosts: &[&str]) -> Lab {
        Lab {
            lan: Lan::up(tag, bridge_cidr, hosts),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// `vmctl ARGS` inside the scanner namespace, settings from `env` only.
    fn vmctl_cmd(&self, args: &[&str], env: &[(&str, String)]) -> Command {
        let mut c = self.exec(Path::new("env"));
        c.args(env.iter().map(|(k, v)| format!("{k}={v}")))
            .arg(vmctl_bin())
            .args(args);
        c
    }

    /// vmctl's state (the scan summary `ip check` keeps) goes to the lab's own directory, never
    /// to the machine's /var/lib/vmctl.
    fn state_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }

    fn vmctl(&self, args: &[&str]) -> Output {
        let state = self.state_dir().display().to_string();
        self.vmctl_cmd(
            args,
            &[
                ("VMCTL_CONNECT", "test:///default".into()),
                ("VMCTL_STATE_DIR", state),
            ],
        )
        .output()
        .expect("ip netns exec vmctl")
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.vmctl(&[args, &["--json"]].concat());
        assert!(
            out.status.success(),
            "vmctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    }

    /// A test-driver node file: one domain per (name, MAC, state, metadata IP).
    /// States are libvirt's: 1 running, 3 paused, 5 shut off.
    fn node_xml(&self, domains: &[(&str, &str, u8, Option<&str>)]) -> String {
        let mut xml = String::from("<node>\n");
        for (name, mac, state, ip) in domains {
            let md = ip
                .map(|ip| {
                    format!(
                        "<metadata><vmctl:vm xmlns:vmctl='https://github.com/gpu-vm-bootstrap/gpu-vm-bootstrap/vmctl/1'><vmctl:os>ubuntu</vmctl:os><vmctl:ip>{ip}</vmctl:ip></vmctl:vm></metadata>"
                    )
                })
                .unwrap_or_default();
            xml += &format!(
                "<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'><name>{name}</name><memory>65536</memory><os><type>hvm</type></os>{md}<devices><interface type='bridge'><mac address='{mac}'/><source bridge='br0'/></interface></devices><test:runstate>{state}</test:runstate></domain>\n"
            );
        }
        xml += "</node>\n";
        let path = self.dir.path().join("node.xml");
        std::fs::write(&path, xml).unwrap();
        format!("test://{}", path.display())
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
                h["ip"].as_str().unwrap().to_string(),
                h["mac"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
#[ignore = "lab: root and network namespaces; run with GVB_LAB=1 and --include-ignored"]
fn lab_ip_check_of_a_24_matches_the_ground_truth_and_names_the_vm() {
    // 23 plain hosts (one ignores ICMP) and a duplicate-IP pair: 25 namespaces.
    let mut hosts: Vec<String> = (10..=32).map(|i| format!("198.18.41.{i}")).collect();
    hosts[1].push_str(",noicmp");
    hosts.push("198.18.41.200".into());
    hosts.push("198.18.41.200".into());
    let refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let lab = Lab::up("ipc24", "198.18.41.1/24", &refs);
    assert_eq!(lab.truth.len(), 25);
    let vm_mac = lab.mac_of("198.18.41.11");
    let uri = lab.node_xml(&[("lab-vm", &vm_mac, 1, None)]);
    let v = lab.json(&["--connect", &uri, "ip", "check"]);
    assert_eq!(v["interface"], "br0");
    assert_eq!(v["subnet"], "198.18.41.0/24");
    assert_eq!(v["method"], "raw");
    assert_eq!(found(&v), lab.truth, "recall 100 % and no false positives");
    let conflicts = v["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0]["ip"], "198.18.41.200");
    assert_eq!(v["free_count"], 254 - 1 - 24);
    assert_eq!(v["free"][0], "198.18.41.2-198.18.41.9");
    // The scan's summary (what `vmctl top` and `vmctl metrics` show) is kept in the state dir
    // vmctl was given.
    let kept: Value =
        serde_json::from_slice(&std::fs::read(lab.state_dir().join("scans/br0.json")).unwrap())
            .unwrap();
    assert_eq!(
        (kept["free_count"].clone(), kept["conflicts"][0].clone()),
        (v["free_count"].clone(), Value::from("198.18.41.200"))
    );
    assert!(v["duration_ms"].as_u64().is_some());
    let used = v["used"].as_array().unwrap();
    for h in used {
        let expect = if h["mac"] == vm_mac.as_str() {
            Value::from("lab-vm")
        } else {
            Value::Null
        };
        assert_eq!(h["vm"], expect, "{h}");
        assert!(h.get("vendor").is_some());
    }
    // The human view has the same rows.
    let out = lab.vmctl(&["--connect", &uri, "ip", "check", "--bridge", "br0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("lab-vm") && text.contains("CONFLICT 198.18.41.200"),
        "{text}"
    );
    assert!(
        text.contains("free (229): 198.18.41.2-198.18.41.9, "),
        "{text}"
    );
}

#[test]
#[ignore = "lab: root and network namespaces; run with GVB_LAB=1 and --include-ignored"]
fn lab_ip_check_of_a_23_and_libvirt_unreachable() {
    let lab = Lab::up(
        "ipc23",
        "198.18.42.1/23",
        &[
            "198.18.42.5",
            "198.18.42.255",
            "198.18.43.0",
            "198.18.43.254,noicmp",
        ],
    );
    let out = lab.vmctl(&[
        "--connect",
        "gvb-no-such-driver:///x",
        "ip",
        "check",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["subnet"], "198.18.42.0/23");
    assert_eq!(found(&v), lab.truth);
    assert_eq!(v["free_count"], 510 - 1 - 4);
    assert_eq!(v["vms_known"], false);
    assert!(
        v["used"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["vm"].is_null())
    );
    let err = stderr(&out);
    assert_eq!(err.matches("note: libvirt").count(), 1, "{err}");
}

#[test]
#[ignore = "lab: root and network namespaces; run with GVB_LAB=1 and --include-ignored"]
fn lab_ip_check_one_address_exit_0_free_1_taken() {
    let lab = Lab::up(
        "ipc1",
        "198.18.44.1/24",
        &["198.18.44.20", "198.18.44.30", "198.18.44.30"],
    );
    let taken = lab.vmctl(&["ip", "check", "198.18.44.20"]);
    assert_eq!(taken.status.code(), Some(1), "{}", stderr(&taken));
    let text = String::from_utf8_lossy(&taken.stdout);
    assert!(text.contains(&lab.mac_of("198.18.44.20")), "{text}");
    let dup = lab.vmctl(&["ip", "check", "198.18.44.30", "--json"]);
    assert_eq!(dup.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&dup.stdout).unwrap();
    assert_eq!(v["free"], false);
    assert_eq!(v["taken_by"].as_array().map(Vec::len), Some(2), "{v}");
    let ours = lab.vmctl(&["ip", "check", "198.18.44.1"]);
    assert_eq!(
        ours.status.code(),
        Some(1),
        "the bridge's own address is taken"
    );
    let free = lab.vmctl(&["ip", "check", "198.18.44.21", "--json"]);
    assert_eq!(free.status.code(), Some(0), "{}", stderr(&free));
    let v: Value = serde_json::from_slice(&free.stdout).unwrap();
    assert_eq!(v["free"], true);
    let outside = lab.vmctl(&["ip", "check", "198.18.45.21"]);
    assert_eq!(outside.status.code(), Some(2));
    assert!(stderr(&outside).contains("not inside a subnet of br0"));
}

#[test]
#[ignore = "lab: root and network namespaces; run with GVB_LAB=1 and --include-ignored"]
fn lab_ip_check_bad_input_exits_2() {
    let lab = Lab::up("ipcbad", "198.18.46.1/24", &["198.18.46.9"]);
    for args in [
        &["link", "add", "nov4", "type", "bridge"][..],
        &["link", "set", "nov4", "up"],
        &["link", "add", "wide", "type", "bridge"],
        &["addr", "add", "198.18.0.1/15", "dev", "wide"],
        &["link", "set", "wide", "up"],
    ] {
        assert!(lab.ip(args).status.success(), "ip {args:?}");
    }
    let cases: &[(&[&str], &str)] = &[
        (&["--interface", "nov4"], "has none"),
        (&["--bridge", "wide"], "needs force"),
        (&["--subnet", "198.18.46.0/33"], "parse subnet"),
        (&["--subnet", "198.18.0.0/15"], "needs force"),
        (&["--rate", "0"], "rate must be at least 1"),
        (
            &["--subnet", "198.18.47.0/24"],
            "not inside a subnet of br0",
        ),
    ];
    for (args, needle) in cases {
        let out = lab.vmctl(&[&["ip", "check"], *args].concat());
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle) && err.contains("help:"),
            "{args:?}: {err}"
        );
    }
}

#[test]
#[ignore = "lab: root and network namespaces; run with GVB_LAB=1 and --include-ignored"]
fn lab_ip_list_takes_each_address_from_the_first_source_that_knows_it() {
    let lab = Lab::up(
        "ipl",
        "198.18.48.1/24",
        &["198.18.48.10", "198.18.48.11,noicmp", "198.18.48.12"],
    );
    let uri = lab.node_xml(&[
        // Static in vmctl's metadata, even while shut off.
        ("vm-static", "52:54:00:aa:00:01", 5, Some("198.18.48.50/24")),
        // Paused: no guest agent, but it is on the bridge (the test driver's fake agent answers
        // only for running domains).
        ("vm-neigh", &lab.mac_of("198.18.48.11"), 3, None),
        ("vm-arp", &lab.mac_of("198.18.48.12"), 3, None),
        ("vm-off", "52:54:00:aa:00:02", 5, None),
    ]);
    // Fill the neighbour table for .11 only: a datagram to the discard port makes the kernel
    // resolve it (bash's /dev/udp; no ping needed).
    let fill = Command::new("ip")
        .args(["netns", "exec", &lab.name, "bash", "-c"])
        .arg("echo x > /dev/udp/198.18.48.11/9; sleep 0.3")
        .status()
        .unwrap();
    assert!(fill.success());
    let v = lab.json(&["--connect", &uri, "ip", "list"]);
    let rows: BTreeSet<(String, String, String)> = v["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["vm"].as_str().unwrap().to_string(),
                a["ip"].as_str().unwrap_or("-").to_string(),
                a["source"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    let expect: BTreeSet<(String, String, String)> = [
        ("vm-static", "198.18.48.50", "metadata"),
        ("vm-neigh", "198.18.48.11", "neighbour"),
        ("vm-arp", "198.18.48.12", "arp"),
        ("vm-off", "-", "-"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(rows, expect, "{v}");
    assert_eq!(v["scanned"], true);
}

fn create_env(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("VMCTL_CONNECT", "test:///default".into()),
        ("VMCTL_STATE_DIR", dir.join("state").display().to_string()),
        ("VMCTL_STORAGE_DIR", dir.join("vms").display().to_string()),
        ("VMCTL_IMAGE_CACHE", dir.join("cache").display().to_string()),
        ("VMCTL_RESERVED_IPS", "198.18.50.1-198.18.50.9".into()),
    ]
}

fn create_args<'a>(dir: &'a Path, name: &'a str, ip: &'a str) -> Vec<String> {
    [
        "create",
        "ubuntu",
        name,
        "--ip",
        ip,
        "--no-start",
        "--json",
        "--domain-type",
        "qemu",
        "--bridge",
        "br0",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "--image".into(),
        dir.join("base.qcow2").display().to_string(),
        "--ssh-key".into(),
        dir.join("id.pub").display().to_string(),
    ])
    .collect()
}

/// Two `vmctl create --ip auto` processes at once must get distinct addresses. Each process has
/// its own test:///default (it cannot see the other's domain), so only the lock and the
/// reservation in the shared state directory keep them apart.
#[test]
#[ignore = "lab: root and network namespaces; run with GVB_LAB=1 and --include-ignored"]
fn lab_parallel_create_ip_auto_gets_distinct_addresses() {
    let lab = Lab::up(
        "iprace",
        "198.18.50.1/24",
        &["198.18.50.10", "198.18.50.11", "198.18.50.13"],
    );
    let d = lab.dir.path();
    assert!(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(d.join("base.qcow2"))
            .arg("64M")
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(
        d.join("id.pub"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6 t@h\n",
    )
    .unwrap();
    let env = create_env(d);
    let spawn = |name: &str, ip: &str| {
        let args = create_args(d, name, ip);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        lab.vmctl_cmd(&refs, &env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children = [spawn("race-a", "auto"), spawn("race-b", "auto")];
    let ips: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            v["ip"].as_str().unwrap().to_string()
        })
        .collect();
    let got: BTreeSet<&str> = ips.iter().map(String::as_str).collect();
    let want: BTreeSet<&str> = ["198.18.50.12/24", "198.18.50.14/24"].into();
    assert_eq!(
        got, want,
        "distinct, first free, outside the reserved range: {ips:?}"
    );

    // A third create sees both held (their VMs are silent and in another libvirt).
    let run = |name: &str, ip: &str| {
        let args = create_args(d, name, ip);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        lab.vmctl_cmd(&refs, &env).output().unwrap()
    };
    let third = run("race-c", "auto");
    assert!(third.status.success(), "{}", stderr(&third));
    let v: Value = serde_json::from_slice(&third.stdout).unwrap();
    assert_eq!(v["ip"], "198.18.50.15/24");

    // Static addresses: one that answers ARP is refused naming the MAC, one held by another
    // create is refused, a free one is accepted.
    let taken = run("static-a", "198.18.50.10/24");
    assert_eq!(taken.status.code(), Some(2), "{}", stderr(&taken));
    let err = stderr(&taken);
    assert!(
        err.contains(&lab.mac_of("198.18.50.10")) && err.contains("help:"),
        "{err}"
    );
    let held = run("static-b", "198.18.50.12/24");
    assert_eq!(held.status.code(), Some(2), "{}", stderr(&held));
    assert!(stderr(&held).contains("race-a") || stderr(&held).contains("race-b"));
    let ok = run("static-c", "198.18.50.20/24");
    assert!(ok.status.success(), "{}", stderr(&ok));
    // Nothing left of the refused creates.
    assert!(!d.join("vms/static-a").exists() && !d.join("vms/static-b").exists());
}

/// Without CAP_NET_RAW `ip check` falls back to the kernel neighbour table, still finds every
/// address, and says once on stderr that it is slower (issue 6, behaviour 1).
#[test]
#[ignore = "lab: root and network namespaces; run with GVB_LAB=1 and --include-ignored"]
fn lab_ip_check_unprivileged_falls_back_and_says_so() {
    let lab = Lab::up(
        "ipcnp",
        "198.18.52.1/24",
        &["198.18.52.10", "198.18.52.11,noicmp", "198.18.52.77"],
    );
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.name, "setpriv"])
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["--inh-caps=-all", "--bounding-set=-all"])
        .args(["env", "VMCTL_CONNECT=test:///default", "VMCTL_BRIDGE=br0"])
        .arg(format!("VMCTL_STATE_DIR={}", lab.state_dir().display()))
        .arg(vmctl_bin())
        .args(["--config", "/dev/null", "ip", "check", "--json"])
        .output()
        .expect("setpriv");
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["method"], "neighbour");
    assert_eq!(v["fallback"], true);
    let ips: BTreeSet<String> = found(&v).into_iter().map(|(ip, _)| ip).collect();
    let truth: BTreeSet<String> = lab.truth.iter().map(|(ip, _)| ip.clone()).collect();
    assert_eq!(ips, truth);
    assert_eq!(err.matches("slower").count(), 1, "{err}");
}
