//! Bridge phase: a netplan file (mode 0600) that moves the NIC's addressing onto the bridge, keeps
//! the NIC's MAC on it, and sets `stp: false`, `forward-delay: 0` (host-setup.md). The NIC's
//! stanza is taken out of the file that defined it (netplan merges files, and a list such as
//! `addresses` cannot be cleared by a later file), so the IP lives on the bridge only.
//! Applying runs under the applier's watchdog ([`crate::plan::ActionKind::ApplyBridge`]).

use hostio::paths;
use hwdetect::Nic;
use serde_yaml::{Mapping, Value};

use crate::plan::{ActionKind, Phase};
use crate::planner::Planner;

/// Keys of an ethernet stanza that describe addressing and move to the bridge.
const ADDRESSING: &[&str] = &[
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
/// Keys that identify the NIC and stay on its stanza.
const IDENTITY: &[&str] = &["match", "set-name"];

/// First line of a netplan file this tool took a NIC stanza out of.
const EDITED_HEADER: &str = "# Edited by gpu-vm-bootstrap:";

fn key(s: &str) -> Value {
    Value::String(s.to_string())
}

/// `s` for a `#` comment line: control characters (a newline would end the comment and start a
/// line of YAML) are shown escaped.
fn comment_text(s: &str) -> String {
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
fn cloud_init_network_off() -> String {
    let mut network = Mapping::new();
    network.insert(key("config"), key("disabled"));
    let mut doc = Mapping::new();
    doc.insert(key("network"), Value::Mapping(network));
    format!(
        "# Written by gpu-vm-bootstrap: keep cloud-init from rewriting 50-cloud-init.yaml over the bridge.\n{}",
        serde_yaml::to_string(&Value::Mapping(doc)).unwrap_or_default()
    )
}

/// An ethernet stanza found in an existing netplan file.
#[derive(Debug, Clone)]
struct Source {
    path: String,
    doc: Value,
    /// The stanza's id under `ethernets` (the NIC name, or a name used with `match`).
    id: String,
    stanza: Mapping,
}

fn stanza_matches(id: &str, stanza: &Value, iface: &str, mac: Option<&str>) -> bool {
    if id == iface {
        return true;
    }
    if stanza.get("set-name").and_then(Value::as_str) == Some(iface) {
        return true;
    }
    let m = stanza.get("match");
    let by_name = m.and_then(|m| m.get("name")).and_then(Value::as_str) == Some(iface);
    let by_mac = mac.is_some_and(|mac| {
        m.and_then(|m| m.get("macaddress"))
            .and_then(Value::as_str)
            .is_some_and(|v| v.eq_ignore_ascii_case(mac))
    });
    by_name || by_mac
}

fn find_source(path: &str, doc: &Value, iface: &str, mac: Option<&str>) -> Option<Source> {
    let eths = doc.get("network")?.get("ethernets")?.as_mapping()?;
    for (k, v) in eths {
        let id = k.as_str()?;
        if stanza_matches(id, v, iface, mac) {
            return Some(Source {
                path: path.to_string(),
                doc: doc.clone(),
                id: id.to_string(),
                stanza: v.as_mapping().cloned().unwrap_or_default(),
            });
        }
    }
    None
}

/// The source document without the NIC's stanza (and without an emptied `ethernets`).
fn without_stanza(src: &Source) -> String {
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

/// The bridge file. `stanza` is the NIC's old stanza (None: DHCP).
fn bridge_yaml(bridge: &str, id: &str, stanza: Option<&Mapping>, mac: Option<&str>) -> String {
    let mut eth = Mapping::new();
    if let Some(s) = stanza {
        for k in IDENTITY {
            if let Some(v) = s.get(*k) {
                eth.insert(key(k), v.clone());
            }
        }
    }
    eth.insert(key("dhcp4"), Value::Bool(false));
    eth.insert(key("dhcp6"), Value::Bool(false));
    let mut br = Mapping::new();
    br.insert(key("interfaces"), Value::Sequence(vec![key(id)]));
    if let Some(mac) = mac {
        // The bridge keeps the NIC's MAC, so a DHCP server hands out the same lease.
        br.insert(key("macaddress"), key(mac));
    }
    match stanza {
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
            br.insert(key("dhcp4"), Value::Bool(true));
        }
    }
    let mut params = Mapping::new();
    // STP defaults to on (and forward-delay to 15 s): a single-uplink host bridge needs neither.
    params.insert(key("stp"), Value::Bool(false));
    params.insert(key("forward-delay"), Value::Number(0.into()));
    br.insert(key("parameters"), Value::Mapping(params));

    let mut eths = Mapping::new();
    eths.insert(key(id), Value::Mapping(eth));
    let mut bridges = Mapping::new();
    bridges.insert(key(bridge), Value::Mapping(br));
    let mut net = Mapping::new();
    net.insert(key("version"), Value::Number(2.into()));
    net.insert(key("ethernets"), Value::Mapping(eths));
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

fn bridge_holds(doc: &Value, bridge: &str, id: &str) -> bool {
    doc.get("network")
        .and_then(|n| n.get("bridges"))
        .and_then(|b| b.get(bridge))
        .and_then(|b| b.get("interfaces"))
        .and_then(Value::as_sequence)
        .is_some_and(|s| s.iter().any(|v| v.as_str() == Some(id)))
}

fn first_ipv4(nic: &Nic) -> Option<String> {
    nic.addresses
        .iter()
        .find(|a| !a.contains(':'))
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
}

pub fn plan(p: &mut Planner<'_>) {
    let ph = Phase::Bridge;
    let facts = p.facts;
    let br = p.opts.bridge_name.clone();
    let names: Vec<&str> = facts.nics.iter().map(|n| n.name.as_str()).collect();
    let names = names.join(", ");
    // The NIC to enslave: --bridge-iface, else the default-route NIC (or, when the default route
    // already runs over our bridge, the physical NIC inside it).
    let iface = match &p.opts.bridge_iface {
        Some(i) => i.clone(),
        None => match &facts.default_route {
            Some(r) if r.interface == br => facts
                .nics
                .iter()
                .find(|n| n.bridge.as_deref() == Some(br.as_str()) && n.physical)
                .map_or_else(|| r.interface.clone(), |n| n.name.clone()),
            Some(r) => r.interface.clone(),
            None => {
                p.problem(
                    ph,
                    false,
                    "no default route: cannot tell which NIC the bridge should take over".into(),
                    "pass --bridge-iface IFACE (one of the host's NICs), or --skip-bridge".into(),
                );
                return;
            }
        },
    };
    let Some(nic) = facts.nics.iter().find(|n| n.name == iface) else {
        p.problem(
            ph,
            false,
            format!("bridge interface `{iface}` does not exist (interfaces here: {names})"),
            "pass --bridge-iface with one of the listed interfaces, or --skip-bridge".into(),
        );
        return;
    };
    if nic.is_bridge {
        p.problem(
            ph,
            false,
            format!("`{iface}` is itself a bridge; the bridge needs a physical NIC"),
            "pass --bridge-iface with the physical NIC, or --skip-bridge to keep the existing bridge".into(),
        );
        return;
    }
    if let Some(other) = nic.bridge.as_deref().filter(|b| *b != br) {
        p.problem(
            ph,
            false,
            format!("`{iface}` is already enslaved to bridge `{other}`"),
            format!("pass --bridge-name {other} to use that bridge, or --skip-bridge"),
        );
        return;
    }
    if nic.name.starts_with("wl") {
        p.warn(format!("`{iface}` looks like a Wi-Fi interface; most access points drop frames from bridged VMs"));
    }

    let mut sources = Vec::new();
    let mut ours: Option<Value> = None;
    for path in &p.state.netplan_files {
        let text = p.state.content(path).unwrap_or("");
        let doc: Value = match serde_yaml::from_str(text) {
            Ok(d) => d,
            Err(e) => {
                p.problem(
                    ph,
                    false,
                    format!("cannot parse {path}: {e}"),
                    format!("fix {path} (`netplan generate` shows the error), then run again"),
                );
                return;
            }
        };
        if path == paths::NETPLAN_BRIDGE_FILE {
            ours = Some(doc);
            continue;
        }
        if doc
            .get("network")
            .and_then(|n| n.get("bridges"))
            .and_then(|b| b.get(br.as_str()))
            .is_some()
        {
            p.warn(format!(
                "bridge {br} is already defined in {path}; the network config is left as it is"
            ));
            return;
        }
        if let Some(src) = find_source(path, &doc, &iface, nic.mac.as_deref()) {
            sources.push(src);
        }
    }
    if sources.is_empty() && nic.bridge.as_deref() == Some(br.as_str()) && ours.is_none() {
        // Bridged already, by something other than netplan files we can read.
        return;
    }
    let configured =
        sources.is_empty() && ours.as_ref().is_some_and(|d| bridge_holds(d, &br, &iface));
    // cloud-init renders 50-cloud-init.yaml again when its datasource says so; with the NIC's
    // stanza moved to the bridge file, that would put the address back on the NIC.
    if p.state
        .netplan_files
        .iter()
        .any(|f| f.ends_with("/50-cloud-init.yaml"))
    {
        p.write_file(
            ph,
            paths::CLOUD_INIT_NETWORK_OFF,
            0o644,
            cloud_init_network_off(),
            "stop cloud-init from regenerating the NIC's netplan config at boot",
        );
    }
    let mut files = Vec::new();
    if configured {
        // An earlier run wrote the files. Unless the bridge is live, it did not get to apply
        // them (interrupted, or --host-root): apply now, with the files it wrote as the ones to
        // restore on failure.
        if facts.nics.iter().any(|n| n.name == br && n.is_bridge) {
            return;
        }
        files.push(paths::NETPLAN_BRIDGE_FILE.to_string());
        for f in &p.state.netplan_files {
            if p.state
                .content(f)
                .is_some_and(|c| c.starts_with(EDITED_HEADER))
            {
                files.push(f.clone());
            }
        }
        plan_apply(p, nic, &iface, &br, files);
        return;
    }
    let src = sources.last();
    if src.is_none() {
        p.warn(format!(
            "no netplan stanza for `{iface}` found: {br} will use DHCP (check that nothing else, such as NetworkManager, manages `{iface}`)"
        ));
    }
    let id = src.map_or(iface.clone(), |s| s.id.clone());
    let content = bridge_yaml(&br, &id, src.map(|s| &s.stanza), nic.mac.as_deref());
    let how = match src {
        Some(s) => format!("the addressing found in {}", s.path),
        None => "DHCP".into(),
    };
    if p.write_file(
        ph,
        paths::NETPLAN_BRIDGE_FILE,
        0o600,
        content,
        format!("bridge {br} over {iface} with {how}, the NIC's MAC, stp off, forward-delay 0"),
    ) {
        files.push(paths::NETPLAN_BRIDGE_FILE.to_string());
    }
    for s in &sources {
        if p.write_file(
            ph,
            &s.path,
            0o600,
            without_stanza(s),
            format!("move `{}` out of this file: its addressing now lives on {br} (a later file cannot clear it)", s.id),
        ) {
            files.push(s.path.clone());
        }
    }
    if files.is_empty() {
        return;
    }
    plan_apply(p, nic, &iface, &br, files);
}

fn plan_apply(p: &mut Planner<'_>, nic: &Nic, iface: &str, br: &str, files: Vec<String>) {
    let facts = p.facts;
    let gateway = facts
        .default_route
        .as_ref()
        .filter(|r| r.interface == iface || r.interface == br)
        .map(|r| r.gateway.clone());
    let ip = first_ipv4(nic).or_else(|| {
        facts
            .nics
            .iter()
            .find(|n| n.name == br)
            .and_then(first_ipv4)
    });
    p.push(
        Phase::Bridge,
        ActionKind::ApplyBridge {
            bridge: br.to_string(),
            argv: vec!["netplan".into(), "apply".into()],
            gateway,
            expect_ip: ip,
            files,
        },
        format!("activate {br}; if {br} does not get the host's address and reach the gateway in time, the old files are restored and applied again"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(s: &str) -> Value {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn gateway4_becomes_a_default_route_and_nameservers_move() {
        let d = doc(
            "network:\n  ethernets:\n    eth0:\n      addresses: [198.18.0.10/24]\n      gateway4: 198.18.0.1\n      nameservers: {addresses: [198.18.0.53]}\n",
        );
        let src = find_source("/etc/netplan/00.yaml", &d, "eth0", None).unwrap();
        let y = bridge_yaml("br0", &src.id, Some(&src.stanza), Some("52:54:00:00:00:01"));
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
}
