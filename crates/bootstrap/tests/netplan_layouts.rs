//! The bridge phase on the network layouts of real servers and workstations, checked with the
//! real `netplan generate`: a bridge over a bond (the common server layout), and the layouts it
//! must refuse with a reason instead of writing a config netplan rejects (a VLAN parent, Wi-Fi,
//! loopback, a `match: {name: "en*"}` stanza shared with other NICs, a live bridge netplan does
//! not know). `plan` itself runs the proposed config through `netplan generate`.

use crate::common;

use std::path::Path;

use common::*;

/// An Intel server with one passthrough GPU and the NICs (and their PCI functions) given.
fn server(devices: &str, nics: &str) -> String {
    format!(
        r#"
cmdline = "BOOT_IMAGE=/boot/vmlinuz-6.8.0-48-generic root=UUID=0 ro"
kvm = true
[cpu]
vendor = "intel"
[os]
id = "ubuntu"
version_id = "24.04"
[[device]]
bdf = "01:00.0"
class = "0302"
id = "10de:2330"
driver = "nvidia"
group = 1
{devices}
{nics}
"#
    )
}

/// Two Intel X710 ports.
const TWO_PORTS: &str = r#"
[[device]]
bdf = "03:00.0"
class = "0200"
id = "8086:1572"
driver = "i40e"
group = 3
[[device]]
bdf = "03:00.1"
class = "0200"
id = "8086:1572"
driver = "i40e"
group = 3
"#;

/// eno1 + eno2 in an LACP bond0 that holds the address, as the Ubuntu server installer
/// (subiquity) writes it.
const BOND_NICS: &str = r#"
[[nic]]
name = "eno1"
pci = "03:00.0"
mac = "3c:fd:fe:00:00:01"
[[nic]]
name = "eno2"
pci = "03:00.1"
mac = "3c:fd:fe:00:00:01"
[[nic]]
name = "bond0"
mac = "3c:fd:fe:00:00:01"
addresses = ["198.18.20.10/24"]
gateway = "198.18.20.1"
"#;

const BOND_YAML: &str = "\
# This is the network config written by 'subiquity'
network:
  bonds:
    bond0:
      addresses:
      - 198.18.20.10/24
      interfaces:
      - eno1
      - eno2
      nameservers:
        addresses:
        - 198.18.20.53
        search: []
      parameters:
        lacp-rate: fast
        mii-monitor-interval: 100
        mode: 802.3ad
        transmit-hash-policy: layer3+4
      routes:
      - to: default
        via: 198.18.20.1
  ethernets:
    eno1: {}
    eno2: {}
  version: 2
";

const ONE_NIC: &str = r#"
[[nic]]
name = "eno1"
pci = "03:00.0"
mac = "3c:fd:fe:00:00:01"
addresses = ["198.18.20.10/24"]
gateway = "198.18.20.1"
"#;

fn bare_host(devices: &str, nics: &str, netplan: &[(&str, &str)]) -> Host {
    let h = host_from_toml(&server(devices, nics), Net::None);
    for (path, yaml) in netplan {
        write(h.path(), path, yaml, 0o600);
    }
    h
}

const BRIDGE_ONLY: &[&str] = &[
    "--skip-nvidia",
    "--skip-kvm",
    "--skip-iommu",
    "--skip-vmctl",
];

fn bin() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("gpu-vm-bootstrap").unwrap();
    c.env_remove("SUDO_USER");
    c
}

/// `plan` on the host with `extra` args must refuse: exit 2, a `help:` line, nothing changed.
/// Returns stderr.
fn plan_refused(h: &Host, extra: &[&str]) -> String {
    let before = snapshot_tree(h.path(), &[]);
    let out = bin()
        .arg("plan")
        .args(BRIDGE_ONLY)
        .args(extra)
        .arg("--host-root")
        .arg(h.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{extra:?}: expected a refusal\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains("help:"), "{stderr}");
    assert_eq!(
        tree_diff(&before, &snapshot_tree(h.path(), &[])),
        Vec::<String>::new()
    );
    stderr
}

/// `apply --yes` of the bridge phase, then the real `netplan generate` on the result: the
/// networkd files by name.
fn apply_and_generate(h: &Host, extra: &[&str]) -> Vec<(String, String)> {
    let out = bin()
        .args(["apply", "--yes"])
        .args(BRIDGE_ONLY)
        .args(extra)
        .arg("--host-root")
        .arg(h.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    netplan_generate(h.path())
}

fn netplan_generate(root: &Path) -> Vec<(String, String)> {
    let out = std::process::Command::new("netplan")
        .args(["generate", "--root-dir"])
        .arg(root)
        .output()
        .expect("netplan is installed (apt-get install netplan.io)");
    assert!(
        out.status.success(),
        "netplan generate rejects the written config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<(String, String)> = std::fs::read_dir(root.join("run/systemd/network"))
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn file<'a>(files: &'a [(String, String)], name: &str) -> &'a str {
    files
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, c)| c.as_str())
        .unwrap_or_else(|| {
            panic!(
                "no {name} in {:?}",
                files.iter().map(|f| &f.0).collect::<Vec<_>>()
            )
        })
}

#[test]
fn bridge_over_a_bond_bridges_the_bond_and_netplan_accepts_it() {
    // Default route on bond0, and --bridge-iface naming one of its members: both bridge bond0.
    for extra in [&[][..], &["--bridge-iface", "eno1"]] {
        let h = bare_host(
            TWO_PORTS,
            BOND_NICS,
            &[("/etc/netplan/00-installer-config.yaml", BOND_YAML)],
        );
        let files = apply_and_generate(&h, extra);
        let br = file(&files, "10-netplan-br0.network");
        assert!(br.contains("Address=198.18.20.10/24"), "{br}");
        assert!(br.contains("Gateway=198.18.20.1"), "{br}");
        assert!(br.contains("DNS=198.18.20.53"), "{br}");
        let bond = file(&files, "10-netplan-bond0.network");
        assert!(bond.contains("Bridge=br0"), "{bond}");
        assert!(
            !bond.contains("Address="),
            "the bond keeps no address: {bond}"
        );
        for member in ["eno1", "eno2"] {
            let m = file(&files, &format!("10-netplan-{member}.network"));
            assert!(m.contains("Bond=bond0"), "{m}");
        }
        let netdev = file(&files, "10-netplan-bond0.netdev");
        assert!(
            netdev.contains("Mode=802.3ad"),
            "the bond is kept: {netdev}"
        );
        assert_eq!(
            file_actions_left(&h, extra),
            Vec::<String>::new(),
            "{}",
            netplan_texts(&h)
        );
    }
}

/// The files a `plan` after the apply would still write (none: the apply converged).
fn file_actions_left(h: &Host, extra: &[&str]) -> Vec<String> {
    let out = bin()
        .args(["plan", "--json"])
        .args(BRIDGE_ONLY)
        .args(extra)
        .arg("--host-root")
        .arg(h.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["path"].as_str().map(str::to_string))
        .collect()
}

/// Every netplan file of the host, for the log of a failing run.
fn netplan_texts(h: &Host) -> String {
    let dir = h.path().join("etc/netplan");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| {
            format!(
                "--- {}\n{}",
                p.display(),
                std::fs::read_to_string(p).unwrap()
            )
        })
        .collect()
}

#[test]
fn vlan_parent_is_refused_with_a_reason() {
    let yaml = "\
network:
  version: 2
  ethernets:
    eno1:
      addresses: [198.18.20.10/24]
      routes: [{to: default, via: 198.18.20.1}]
  vlans:
    vlan20:
      id: 20
      link: eno1
      addresses: [198.18.21.10/24]
";
    let h = bare_host(
        TWO_PORTS,
        ONE_NIC,
        &[("/etc/netplan/00-installer-config.yaml", yaml)],
    );
    let e = plan_refused(&h, &[]);
    assert!(e.contains("VLAN") && e.contains("vlan20"), "{e}");
}

#[test]
fn wifi_nic_is_refused_with_a_reason() {
    let devices = r#"
[[device]]
bdf = "02:00.0"
class = "0280"
id = "8086:2723"
driver = "iwlwifi"
group = 2
"#;
    let nics = r#"
[[nic]]
name = "wlp2s0"
pci = "02:00.0"
mac = "a4:c3:f0:00:00:01"
addresses = ["198.18.22.10/24"]
gateway = "198.18.22.1"
"#;
    let yaml = "\
network:
  version: 2
  wifis:
    wlp2s0:
      dhcp4: true
      access-points:
        \"lab-ap\":
          password: \"not-a-real-secret\"
";
    let h = bare_host(devices, nics, &[("/etc/netplan/50-cloud-init.yaml", yaml)]);
    let e = plan_refused(&h, &[]);
    assert!(e.contains("Wi-Fi"), "{e}");
}

#[test]
fn loopback_is_refused_with_a_reason() {
    let h = bare_host(
        TWO_PORTS,
        ONE_NIC,
        &[(
            "/etc/netplan/00-installer-config.yaml",
            "network:\n  version: 2\n  ethernets:\n    eno1:\n      dhcp4: true\n",
        )],
    );
    let e = plan_refused(&h, &["--bridge-iface", "lo"]);
    assert!(e.contains("loopback"), "{e}");
}

const EN_GLOB: &str = "\
network:
  version: 2
  ethernets:
    all-en:
      match:
        name: \"en*\"
      dhcp4: true
";

#[test]
fn name_glob_stanza_matching_only_this_nic_is_narrowed() {
    let nics = r#"
[[nic]]
name = "enp3s0f0"
pci = "03:00.0"
mac = "3c:fd:fe:00:00:01"
addresses = ["198.18.20.10/24"]
gateway = "198.18.20.1"
"#;
    let h = bare_host(TWO_PORTS, nics, &[("/etc/netplan/01-netcfg.yaml", EN_GLOB)]);
    let files = apply_and_generate(&h, &[]);
    assert_eq!(file_actions_left(&h, &[]), Vec::<String>::new());
    let br = file(&files, "10-netplan-br0.network");
    assert!(br.contains("DHCP=ipv4"), "{br}");
    // No other .network file still gives an en* NIC its own DHCP.
    for (name, content) in &files {
        if name != "10-netplan-br0.network" && name.ends_with(".network") {
            assert!(
                !content.contains("DHCP="),
                "{name} still configures DHCP: {content}"
            );
            assert!(
                !content.contains("Name=en*"),
                "{name} still matches en*: {content}"
            );
        }
    }
}

#[test]
fn name_glob_stanza_shared_with_other_nics_is_refused() {
    let nics = r#"
[[nic]]
name = "enp3s0f0"
pci = "03:00.0"
mac = "3c:fd:fe:00:00:01"
addresses = ["198.18.20.10/24"]
gateway = "198.18.20.1"
[[nic]]
name = "enp3s0f1"
pci = "03:00.1"
mac = "3c:fd:fe:00:00:02"
"#;
    let h = bare_host(TWO_PORTS, nics, &[("/etc/netplan/01-netcfg.yaml", EN_GLOB)]);
    let e = plan_refused(&h, &[]);
    assert!(e.contains("all-en") && e.contains("enp3s0f1"), "{e}");
}

#[test]
fn live_bridge_unknown_to_netplan_is_refused() {
    let nics = format!(
        "{ONE_NIC}\n[[nic]]\nname = \"br0\"\nbridge = true\nmac = \"52:54:00:aa:bb:cc\"\nstate = \"down\"\n"
    );
    let yaml = "network:\n  version: 2\n  ethernets:\n    eno1:\n      dhcp4: true\n";
    let h = bare_host(
        TWO_PORTS,
        &nics,
        &[("/etc/netplan/00-installer-config.yaml", yaml)],
    );
    let e = plan_refused(&h, &[]);
    assert!(e.contains("br0") && e.contains("netplan"), "{e}");
}

#[test]
fn plan_refuses_a_config_netplan_generate_rejects() {
    // The address parses as YAML but is no IPv4 address: only netplan itself catches it.
    let yaml = "\
network:
  version: 2
  ethernets:
    eno1:
      addresses: [198.18.20.10/24]
      routes:
      - to: default
        via: 198.18.20.300
";
    let h = bare_host(
        TWO_PORTS,
        ONE_NIC,
        &[("/etc/netplan/00-installer-config.yaml", yaml)],
    );
    let e = plan_refused(&h, &[]);
    assert!(e.contains("netplan generate"), "{e}");
    assert!(
        e.contains("198.18.20.300"),
        "netplan's own message is quoted: {e}"
    );
}
