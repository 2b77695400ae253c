//! The netplan documents of the bridge phase: finding the stanza that defines the port (exact
//! name, `match:` globs as networkd evaluates them), taking it or its addressing out of its file,
//! and writing the bridge file. Pure functions over `serde_yaml` values.

use hostio::paths;
use hwdetect::Nic;
use serde_yaml::{Mapping, Value};

/// Keys of an ethernet stanza that describe addressing and move to the bridge.
pub(super) const ADDRESSING: &[&str] = &[
    "dhcp4",
    "dhcp6",
    "dhcp4-overrides",
    "dhcp6-overrides",
    "dhcp-identifier",
    "accept-ra",
    "ipv6-privacy",
    "link-local",
    "addresses",
    "nameservers",
    "routes",
    "routing-policy",
    "mtu",
];
/// Keys that identify the NIC and stay on its stanza. `mtu` also stays: a bridge's MTU cannot
/// exceed its ports' (net/bridge/br_if.c), so a jumbo-frame NIC keeps its MTU under the bridge.
pub(super) const IDENTITY: &[&str] = &["match", "set-name", "mtu"];

/// netplan's device sections (netplan YAML reference) other than `ethernets` and `bonds`: a
/// bridge port defined in one of them is not supported here.
pub(super) const OTHER_KINDS: &[(&str, &str)] = &[
    ("vlans", "a VLAN interface"),
    ("tunnels", "a tunnel"),
    ("vrfs", "a VRF"),
    ("modems", "a modem"),
    ("dummy-devices", "a dummy device"),
    ("virtual-ethernets", "a veth"),
    ("nm-devices", "a NetworkManager device"),
    ("bridges", "a bridge"),
];

/// First line of a netplan file this tool took a NIC stanza out of.
pub(super) const EDITED_HEADER: &str = "# Edited by gpu-vm-bootstrap:";

pub(super) fn key(s: &str) -> Value {
    Value::String(s.to_string())
}

/// `s` for a `#` comment line: control characters (a newline would end the comment and start a
/// line of YAML) are shown escaped.
pub(super) fn comment_text(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let esc: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            esc
        })
        .collect()
}

/// cloud-init's switch for its network config (cloud-init docs, "Network configuration:
/// Disabling network configuration"), serialized like every other generated YAML.
pub(super) fn cloud_init_network_off() -> String {
    let mut network = Mapping::new();
    network.insert(key("config"), key("disabled"));
    let mut doc = Mapping::new();
    doc.insert(key("network"), Value::Mapping(network));
    format!(
        "# Written by gpu-vm-bootstrap: keep cloud-init from rewriting 50-cloud-init.yaml over the bridge.\n{}",
        serde_yaml::to_string(&Value::Mapping(doc)).unwrap_or_default()
    )
}

/// How the bridge port is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Under `ethernets`: the stanza moves into the bridge file.
    Ethernet,
    /// Under `bonds`: the stanza stays in its file, without its addressing.
    Bond,
}

/// A stanza found in an existing netplan file that defines the bridge port.
#[derive(Debug, Clone)]
pub(super) struct Source {
    pub(super) path: String,
    pub(super) doc: Value,
    /// The stanza's id (the NIC name, a name used with `match`, or the bond's name).
    pub(super) id: String,
    pub(super) stanza: Mapping,
    /// A `match: {name: GLOB}` this NIC is the only one to match: the bridge file matches the
    /// NIC by its name instead.
    pub(super) narrowed: Option<String>,
}

/// Whether a stanza applies to a NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Applies {
    Exactly,
    /// Through a `match: {name: GLOB}` with wildcards.
    ByGlob(String),
    /// Through match keys this tool cannot evaluate (e.g. `driver`).
    Maybe(String),
    No,
}

/// `fnmatch(3)` without flags, which networkd uses for `[Match] Name=` (systemd.network(5)):
/// `*`, `?` and `[...]` (with `!` or `^` negation and ranges).
pub(super) fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => {
                let Some(end) = p.iter().skip(2).position(|&c| c == ']').map(|e| e + 2) else {
                    return n.first() == Some(&'[') && go(&p[1..], &n[1..]);
                };
                let Some(&c) = n.first() else { return false };
                let (neg, set) = match p[1] {
                    '!' | '^' => (true, &p[2..end]),
                    _ => (false, &p[1..end]),
                };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= c && c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == c;
                        i += 1;
                    }
                }
                hit != neg && go(&p[end + 1..], &n[1..])
            }
            Some(&c) => n.first() == Some(&c) && go(&p[1..], &n[1..]),
        }
    }
    go(&p, &n)
}

pub(super) fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Whether the stanza `id` applies to the NIC `iface` (MAC `mac`). All `match` keys must hold
/// (netplan YAML reference, "Properties for physical device types").
pub(super) fn applies(id: &str, stanza: &Value, iface: &str, mac: Option<&str>) -> Applies {
    let Some(m) = stanza.get("match").and_then(Value::as_mapping) else {
        return if id == iface || stanza.get("set-name").and_then(Value::as_str) == Some(iface) {
            Applies::Exactly
        } else {
            Applies::No
        };
    };
    if stanza.get("set-name").and_then(Value::as_str) == Some(iface) {
        return Applies::Exactly;
    }
    let mut glob = None;
    let mut unknown = Vec::new();
    for (k, v) in m {
        match (k.as_str(), v.as_str()) {
            (Some("name"), Some(pat)) => {
                if !glob_match(pat, iface) {
                    return Applies::No;
                }
                if has_wildcard(pat) {
                    glob = Some(pat.to_string());
                }
            }
            (Some("macaddress"), Some(want)) => {
                if !mac.is_some_and(|mac| mac.eq_ignore_ascii_case(want)) {
                    return Applies::No;
                }
            }
            (Some(other), _) => unknown.push(other.to_string()),
            (None, _) => unknown.push(format!("{k:?}")),
        }
    }
    if !unknown.is_empty() {
        return Applies::Maybe(unknown.join(", "));
    }
    match glob {
        Some(g) => Applies::ByGlob(g),
        None => Applies::Exactly,
    }
}

/// The `(id, stanza)` pairs of a netplan section (`ethernets`, `bonds`, ...).
pub(super) fn section<'a>(doc: &'a Value, name: &str) -> Vec<(&'a str, &'a Value)> {
    doc.get("network")
        .and_then(|n| n.get(name))
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?, v)))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn list_of_strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_sequence)
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

pub(super) fn has_addressing(stanza: &Mapping) -> bool {
    ADDRESSING
        .iter()
        .chain(&["gateway4", "gateway6"])
        .any(|k| *k != "mtu" && stanza.contains_key(*k))
}

/// The source document without the NIC's stanza (and without an emptied `ethernets`).
pub(super) fn without_stanza(src: &Source) -> String {
    let mut doc = src.doc.clone();
    if let Some(net) = doc.get_mut("network").and_then(Value::as_mapping_mut) {
        let mut empty = false;
        if let Some(eths) = net.get_mut("ethernets").and_then(Value::as_mapping_mut) {
            eths.shift_remove(src.id.as_str());
            empty = eths.is_empty();
        }
        if empty {
            net.shift_remove("ethernets");
        }
    }
    format!(
        "{EDITED_HEADER} the `{}` stanza moved to {} (bridge); comments were not kept.\n{}",
        comment_text(&src.id),
        paths::NETPLAN_BRIDGE_FILE,
        serde_yaml::to_string(&doc).unwrap_or_default()
    )
}

/// The source document with the bond's addressing taken out (the bond itself stays here).
pub(super) fn without_addressing(src: &Source) -> String {
    let mut doc = src.doc.clone();
    if let Some(stanza) = doc
        .get_mut("network")
        .and_then(|n| n.get_mut("bonds"))
        .and_then(|b| b.get_mut(src.id.as_str()))
        .and_then(Value::as_mapping_mut)
    {
        for k in ADDRESSING.iter().chain(&["gateway4", "gateway6"]) {
            if *k != "mtu" {
                stanza.shift_remove(*k);
            }
        }
    }
    format!(
        "{EDITED_HEADER} the addressing of `{}` moved to {} (bridge); comments were not kept.\n{}",
        comment_text(&src.id),
        paths::NETPLAN_BRIDGE_FILE,
        serde_yaml::to_string(&doc).unwrap_or_default()
    )
}

/// The bridge file. `id` is the port's netplan id; `stanza` its old stanza (None: DHCP);
/// `port` the stanza to write for it here (None for a bond, which stays in its own file).
pub(super) fn bridge_yaml(
    bridge: &str,
    id: &str,
    stanza: Option<&Mapping>,
    mac: Option<&str>,
    port: Option<Mapping>,
) -> String {
    let mut br = Mapping::new();
    br.insert(key("interfaces"), Value::Sequence(vec![key(id)]));
    if let Some(mac) = mac {
        // The bridge keeps the NIC's MAC, so a DHCP server hands out the same lease.
        br.insert(key("macaddress"), key(mac));
    }
    match stanza.filter(|s| has_addressing(s)) {
        Some(s) => {
            for k in ADDRESSING {
                if let Some(v) = s.get(*k) {
                    br.insert(key(k), v.clone());
                }
            }
            // gateway4/gateway6 are deprecated in netplan; carry them over as default routes.
            let mut extra = Vec::new();
            for g in ["gateway4", "gateway6"] {
                if let Some(via) = s.get(g) {
                    let mut r = Mapping::new();
                    r.insert(key("to"), key("default"));
                    r.insert(key("via"), via.clone());
                    extra.push(Value::Mapping(r));
                }
            }
            if !extra.is_empty() {
                let mut routes = br
                    .get("routes")
                    .and_then(Value::as_sequence)
                    .cloned()
                    .unwrap_or_default();
                routes.extend(extra);
                br.insert(key("routes"), Value::Sequence(routes));
            }
        }
        None => {
            if let Some(mtu) = stanza.and_then(|s| s.get("mtu")) {
                br.insert(key("mtu"), mtu.clone());
            }
            br.insert(key("dhcp4"), Value::Bool(true));
        }
    }
    let mut params = Mapping::new();
    // STP defaults to on (and forward-delay to 15 s): a single-uplink host bridge needs neither.
    params.insert(key("stp"), Value::Bool(false));
    params.insert(key("forward-delay"), Value::Number(0.into()));
    br.insert(key("parameters"), Value::Mapping(params));

    let mut bridges = Mapping::new();
    bridges.insert(key(bridge), Value::Mapping(br));
    let mut net = Mapping::new();
    net.insert(key("version"), Value::Number(2.into()));
    if let Some(port) = port {
        let mut eths = Mapping::new();
        eths.insert(key(id), Value::Mapping(port));
        net.insert(key("ethernets"), Value::Mapping(eths));
    }
    net.insert(key("bridges"), Value::Mapping(bridges));
    let mut doc = Mapping::new();
    doc.insert(key("network"), Value::Mapping(net));
    format!(
        "# Written by gpu-vm-bootstrap: bridge {} for VMs, carrying the addressing of {}.\n{}",
        comment_text(bridge),
        comment_text(id),
        serde_yaml::to_string(&Value::Mapping(doc)).unwrap_or_default()
    )
}

/// The stanza the bridge file writes for an Ethernet port: its identity (a narrowed `match`
/// names the NIC itself), and no addressing of its own.
pub(super) fn port_stanza(src: Option<&Source>, iface: &str) -> Mapping {
    let mut eth = Mapping::new();
    if let Some(s) = src {
        for k in IDENTITY {
            if let Some(v) = s.stanza.get(*k) {
                eth.insert(key(k), v.clone());
            }
        }
        if s.narrowed.is_some()
            && let Some(m) = eth.get_mut("match").and_then(Value::as_mapping_mut)
        {
            m.insert(key("name"), key(iface));
        }
    }
    eth.insert(key("dhcp4"), Value::Bool(false));
    eth.insert(key("dhcp6"), Value::Bool(false));
    eth
}

/// Whether the bridge file `doc` already makes `br` a bridge over this port.
pub(super) fn ours_holds(
    doc: &Value,
    br: &str,
    kind: Kind,
    target: &str,
    mac: Option<&str>,
) -> bool {
    let ports = list_of_strings(
        doc.get("network")
            .and_then(|n| n.get("bridges"))
            .and_then(|b| b.get(br))
            .and_then(|b| b.get("interfaces")),
    );
    let eths = section(doc, "ethernets");
    ports.iter().any(|id| {
        *id == target
            || (kind == Kind::Ethernet
                && eths
                    .iter()
                    .any(|(i, s)| i == id && applies(i, s, target, mac) == Applies::Exactly))
    })
}

pub(super) fn first_ipv4(nic: &Nic) -> Option<String> {
    nic.addresses
        .iter()
        .find(|a| !a.contains(':'))
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
}

pub(super) fn is_loopback(nic: &Nic) -> bool {
    nic.name == "lo"
        || (!nic.addresses.is_empty()
            && nic
                .addresses
                .iter()
                .all(|a| a.starts_with("127.") || a.starts_with("::1/")))
}
