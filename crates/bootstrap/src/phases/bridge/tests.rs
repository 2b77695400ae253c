//! Unit tests of `bridge`.

use super::*;

fn doc(s: &str) -> Value {
    serde_yaml::from_str(s).unwrap()
}

fn find_source(path: &str, doc: &Value, iface: &str, mac: Option<&str>) -> Option<Source> {
    section(doc, "ethernets").into_iter().find_map(|(id, s)| {
        (applies(id, s, iface, mac) == Applies::Exactly).then(|| Source {
            path: path.to_string(),
            doc: doc.clone(),
            id: id.to_string(),
            stanza: s.as_mapping().cloned().unwrap_or_default(),
            narrowed: None,
        })
    })
}

#[test]
fn globs_match_like_fnmatch() {
    for (p, n, want) in [
        ("en*", "enp3s0f0", true),
        ("en*", "eno1", true),
        ("en*", "wlp2s0", false),
        ("eth?", "eth0", true),
        ("eth?", "eth10", false),
        ("enp[0-9]s0", "enp3s0", true),
        ("enp[!3]s0", "enp3s0", false),
        ("*", "lo", true),
        ("eno1", "eno1", true),
        ("eno1", "eno10", false),
    ] {
        assert_eq!(glob_match(p, n), want, "{p} {n}");
    }
}

#[test]
fn match_keys_must_all_hold() {
    let s = doc("match: {name: \"en*\", macaddress: \"aa:bb:cc:dd:ee:ff\"}\ndhcp4: true\n");
    assert_eq!(
        applies("x", &s, "eno1", Some("AA:BB:CC:DD:EE:FF")),
        Applies::ByGlob("en*".into())
    );
    assert_eq!(
        applies("x", &s, "eno1", Some("aa:bb:cc:dd:ee:00")),
        Applies::No
    );
    let d = doc("match: {driver: ixgbe}\n");
    assert_eq!(
        applies("x", &d, "eno1", None),
        Applies::Maybe("driver".into())
    );
    let n = doc("match: {name: eno1}\n");
    assert_eq!(applies("x", &n, "eno1", None), Applies::Exactly);
    assert_eq!(
        applies("eno1", &doc("dhcp4: true\n"), "eno1", None),
        Applies::Exactly
    );
}

#[test]
fn gateway4_becomes_a_default_route_and_nameservers_move() {
    let d = doc(
        "network:\n  ethernets:\n    eth0:\n      addresses: [198.18.0.10/24]\n      gateway4: 198.18.0.1\n      nameservers: {addresses: [198.18.0.53]}\n",
    );
    let src = find_source("/etc/netplan/00.yaml", &d, "eth0", None).unwrap();
    let y = bridge_yaml(
        "br0",
        &src.id,
        Some(&src.stanza),
        Some("52:54:00:00:00:01"),
        Some(port_stanza(Some(&src), "eth0")),
    );
    let v = doc(&y);
    let br = &v["network"]["bridges"]["br0"];
    assert_eq!(br["routes"][0]["to"].as_str(), Some("default"));
    assert_eq!(br["routes"][0]["via"].as_str(), Some("198.18.0.1"));
    assert!(br.get("gateway4").is_none());
    assert_eq!(
        br["nameservers"]["addresses"][0].as_str(),
        Some("198.18.0.53")
    );
    assert_eq!(br["macaddress"].as_str(), Some("52:54:00:00:00:01"));
    assert_eq!(br["parameters"]["stp"].as_bool(), Some(false));
    assert_eq!(
        v["network"]["ethernets"]["eth0"]["dhcp4"].as_bool(),
        Some(false)
    );
}

#[test]
fn stanza_is_found_by_mac_match_and_removed_cleanly() {
    let d = doc(
        "network:\n  version: 2\n  ethernets:\n    id0:\n      match: {macaddress: \"AA:bb:cc:dd:ee:ff\"}\n      set-name: lan\n      dhcp4: true\n",
    );
    let src = find_source(
        "/etc/netplan/50-cloud-init.yaml",
        &d,
        "enp1s0",
        Some("aa:bb:cc:dd:ee:ff"),
    )
    .unwrap();
    assert_eq!(src.id, "id0");
    let rest = without_stanza(&src);
    assert!(rest.starts_with(EDITED_HEADER));
    let v = doc(&rest);
    assert!(v["network"].get("ethernets").is_none(), "{rest}");
    assert_eq!(v["network"]["version"].as_u64(), Some(2));
}
