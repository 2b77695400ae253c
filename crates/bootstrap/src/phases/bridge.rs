//! Bridge phase: a netplan file (mode 0600) that moves the NIC's addressing onto the bridge, keeps
//! the NIC's MAC on it, and sets `stp: false`, `forward-delay: 0` (host-setup.md). The NIC's
//! stanza is taken out of the file that defined it (netplan merges files, and a list such as
//! `addresses` cannot be cleared by a later file), so the IP lives on the bridge only.
//! Applying runs under the applier's watchdog ([`crate::plan::ActionKind::ApplyBridge`]).
//!
//! The port is an Ethernet NIC or a bond (the common server layout: the bridge takes `bond0`,
//! whose stanza stays where it is, minus its addressing). A VLAN parent, a Wi-Fi NIC, loopback,
//! a virtual interface netplan does not define, a `match:` stanza that also configures other
//! NICs, and a live bridge of that name that netplan does not know are refused with a reason:
//! netplan would reject the config, or accept one that cuts the host off.

use hostio::paths;
use hwdetect::Nic;
use serde_yaml::Value;

use crate::plan::{ActionKind, Phase};
use crate::planner::Planner;

mod netplan;

use netplan::*;

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
    let refuse = |p: &mut Planner<'_>, msg: String, help: String| p.problem(ph, false, msg, help);
    if is_loopback(nic) {
        refuse(
            p,
            format!("`{iface}` is the loopback interface; a bridge needs an Ethernet NIC or a bond"),
            "pass --bridge-iface with the NIC that carries the host's address (`ip -br addr`), or --skip-bridge".into(),
        );
        return;
    }
    if nic.is_bridge {
        refuse(
            p,
            format!("`{iface}` is itself a bridge; the bridge needs a physical NIC"),
            "pass --bridge-iface with the physical NIC, or --skip-bridge to keep the existing bridge".into(),
        );
        return;
    }
    if let Some(other) = nic.bridge.as_deref().filter(|b| *b != br) {
        refuse(
            p,
            format!("`{iface}` is already enslaved to bridge `{other}`"),
            format!("pass --bridge-name {other} to use that bridge, or --skip-bridge"),
        );
        return;
    }

    let mut docs: Vec<(String, Value)> = Vec::new();
    let mut ours: Option<Value> = None;
    for path in &p.state.netplan_files {
        let text = p.state.content(path).unwrap_or("");
        let doc: Value = match serde_yaml::from_str(text) {
            Ok(d) => d,
            Err(e) => {
                refuse(
                    p,
                    format!("cannot parse {path}: {e}"),
                    format!("fix {path} (`netplan generate` shows the error), then run again"),
                );
                return;
            }
        };
        if path == paths::NETPLAN_BRIDGE_FILE {
            ours = Some(doc);
        } else {
            docs.push((path.clone(), doc));
        }
    }
    let mac = nic.mac.as_deref();

    // Wi-Fi: netplan puts it under `wifis`; predictable names start with `wl` (udev's
    // net_id builtin). Access points drop frames from other MACs, and netplan cannot make a
    // Wi-Fi NIC a bridge port.
    let wifi = docs.iter().find_map(|(path, doc)| {
        section(doc, "wifis")
            .into_iter()
            .any(|(id, s)| applies(id, s, &iface, mac) != Applies::No)
            .then(|| format!(" (under `wifis:` in {path})"))
    });
    if wifi.is_some() || iface.starts_with("wl") {
        refuse(
            p,
            format!(
                "`{iface}` is a Wi-Fi interface{}: access points drop frames from bridged VMs, and netplan cannot make it a bridge port",
                wifi.unwrap_or_default()
            ),
            "pass --bridge-iface with a wired NIC, or --skip-bridge (VMs on Wi-Fi need NAT instead of a bridge)".into(),
        );
        return;
    }

    // The ids that may name this NIC in netplan: its own name and the stanzas that apply to it.
    let mut eth_ids: Vec<String> = vec![iface.clone()];
    for (_, doc) in &docs {
        for (id, s) in section(doc, "ethernets") {
            if applies(id, s, &iface, mac) != Applies::No && !eth_ids.iter().any(|i| i == id) {
                eth_ids.push(id.to_string());
            }
        }
    }
    // A bond, or a port of one: the bridge takes the bond.
    let bond = docs.iter().find_map(|(path, doc)| {
        section(doc, "bonds").into_iter().find_map(|(id, s)| {
            let member = list_of_strings(s.get("interfaces"))
                .iter()
                .any(|m| eth_ids.iter().any(|i| i == m));
            (id == iface || member).then(|| (id.to_string(), path.clone(), id != iface))
        })
    });
    let (kind, target) = match &bond {
        Some((id, path, member)) => {
            if *member {
                p.warn(format!(
                    "`{iface}` is a port of bond `{id}` ({path}): {br} takes the bond, with the bond's addressing"
                ));
            }
            (Kind::Bond, id.clone())
        }
        None => (Kind::Ethernet, iface.clone()),
    };
    let target_nic = facts.nics.iter().find(|n| n.name == target);
    let target_mac = target_nic.and_then(|n| n.mac.as_deref());
    let port_ids: Vec<String> = match kind {
        Kind::Bond => vec![target.clone()],
        Kind::Ethernet => eth_ids.clone(),
    };
    for (path, doc) in &docs {
        for (section_name, what) in OTHER_KINDS {
            for (id, s) in section(doc, section_name) {
                if *section_name == "bridges" {
                    // Our bridge in another file: left alone below. Another bridge with this
                    // port: refused.
                    let ports = list_of_strings(s.get("interfaces"));
                    if id != br && ports.iter().any(|m| port_ids.iter().any(|i| i == m)) {
                        refuse(
                            p,
                            format!("`{target}` is already a port of bridge `{id}` in {path}"),
                            format!("pass --bridge-name {id} to use that bridge, or --skip-bridge"),
                        );
                        return;
                    }
                }
                if id == target {
                    refuse(
                        p,
                        format!("`{target}` is {what} (under `{section_name}:` in {path}); the bridge takes an Ethernet NIC or a bond"),
                        "pass --bridge-iface with the NIC or bond that carries the host's address, or --skip-bridge".into(),
                    );
                    return;
                }
            }
        }
    }
    // VLANs ride on their parent: once the parent is a bridge port its frames go to the bridge,
    // and the VLAN interfaces lose their traffic.
    let vlans: Vec<String> = docs
        .iter()
        .flat_map(|(path, doc)| {
            section(doc, "vlans")
                .into_iter()
                .filter(|(_, s)| {
                    s.get("link")
                        .and_then(Value::as_str)
                        .is_some_and(|l| port_ids.iter().any(|i| i == l))
                })
                .map(|(id, _)| format!("{id} ({path})"))
                .collect::<Vec<_>>()
        })
        .collect();
    if !vlans.is_empty() {
        refuse(
            p,
            format!(
                "`{target}` is the parent of VLAN(s) {}: as a bridge port it would stop carrying them for the host",
                vlans.join(", ")
            ),
            "bridge a NIC without VLANs (--bridge-iface), move the VLANs onto the bridge yourself, or pass --skip-bridge".into(),
        );
        return;
    }
    if kind == Kind::Ethernet && !nic.physical {
        refuse(
            p,
            format!("`{iface}` is a virtual interface that no netplan file defines as a bond"),
            "pass --bridge-iface with a physical NIC or a bond defined in netplan, or --skip-bridge".into(),
        );
        return;
    }

    // The stanzas that configure the port.
    let mut sources: Vec<Source> = Vec::new();
    for (path, doc) in &docs {
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
        let section_name = match kind {
            Kind::Ethernet => "ethernets",
            Kind::Bond => "bonds",
        };
        for (id, s) in section(doc, section_name) {
            let stanza = s.as_mapping().cloned().unwrap_or_default();
            let found = |narrowed| Source {
                path: path.clone(),
                doc: doc.clone(),
                id: id.to_string(),
                stanza: stanza.clone(),
                narrowed,
            };
            if kind == Kind::Bond {
                if id == target {
                    sources.push(found(None));
                }
                continue;
            }
            match applies(id, s, &iface, mac) {
                Applies::No => {}
                Applies::Exactly => sources.push(found(None)),
                Applies::ByGlob(glob) => {
                    let others: Vec<&str> = facts
                        .nics
                        .iter()
                        .filter(|n| n.name != iface)
                        .filter(|n| applies(id, s, &n.name, n.mac.as_deref()) != Applies::No)
                        .map(|n| n.name.as_str())
                        .collect();
                    if !others.is_empty() {
                        refuse(
                            p,
                            format!(
                                "`{id}` in {path} matches `{glob}`, which is {iface} and also {}: moving it to the bridge would take their config too",
                                others.join(", ")
                            ),
                            format!(
                                "give {iface} a stanza of its own (e.g. `{iface}:` with its addressing) and narrow `{id}`'s match, then run again; or pass --skip-bridge"
                            ),
                        );
                        return;
                    }
                    p.warn(format!(
                        "`{id}` in {path} matches `{glob}`; only {iface} matches it here, so the bridge file matches {iface} by name (a NIC added later that matches `{glob}` gets no config)"
                    ));
                    sources.push(found(Some(glob)));
                }
                Applies::Maybe(keys) => {
                    refuse(
                        p,
                        format!(
                            "cannot tell whether `{id}` in {path} (match on {keys}) configures {iface}"
                        ),
                        format!(
                            "give {iface} a stanza of its own matched by name or MAC, then run again; or pass --skip-bridge"
                        ),
                    );
                    return;
                }
            }
        }
    }
    let ids: Vec<&str> = {
        let mut v: Vec<&str> = sources.iter().map(|s| s.id.as_str()).collect();
        v.dedup();
        v
    };
    if ids.len() > 1 {
        refuse(
            p,
            format!(
                "{iface} is configured by several netplan stanzas ({}); which addressing wins is not clear",
                ids.join(", ")
            ),
            format!("keep one stanza for {iface}, then run again; or pass --skip-bridge"),
        );
        return;
    }
    let bridged_already = target_nic.is_some_and(|n| n.bridge.as_deref() == Some(br.as_str()));
    if kind == Kind::Ethernet && sources.is_empty() && bridged_already && ours.is_none() {
        // Bridged already, by something other than netplan files we can read.
        return;
    }
    // A live interface of that name that netplan does not define (NetworkManager, ifupdown,
    // libvirt or `ip link` made it): netplan would take it over, or fail on a non-bridge.
    if let Some(live) = facts.nics.iter().find(|n| n.name == br) {
        let defined = ours.iter().chain(docs.iter().map(|(_, d)| d)).any(|d| {
            d.get("network")
                .and_then(|n| n.get("bridges"))
                .and_then(|b| b.get(br.as_str()))
                .is_some()
        });
        if !defined {
            let what = if live.is_bridge {
                "a bridge"
            } else {
                "an interface that is not a bridge"
            };
            refuse(
                p,
                format!(
                    "{br} already exists as {what} that no netplan file defines (made by NetworkManager, ifupdown, libvirt or `ip link`); netplan would take it over"
                ),
                format!(
                    "pass --bridge-name with a new name, or --skip-bridge and set vmctl's bridge to {br}"
                ),
            );
            return;
        }
    }
    let configured = ours
        .as_ref()
        .is_some_and(|d| ours_holds(d, &br, kind, &target, target_mac))
        && match kind {
            Kind::Ethernet => sources.is_empty(),
            Kind::Bond => sources.iter().all(|s| !has_addressing(&s.stanza)),
        };
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
        plan_apply(p, target_nic, &target, &br, files);
        return;
    }
    let src = sources.last();
    if src.is_none() {
        p.warn(format!(
            "no netplan stanza for `{iface}` found: {br} will use DHCP (check that nothing else, such as NetworkManager, manages `{iface}`)"
        ));
    }
    let (id, port) = match kind {
        Kind::Ethernet => (
            src.map_or(iface.clone(), |s| s.id.clone()),
            Some(port_stanza(src, &iface)),
        ),
        Kind::Bond => (target.clone(), None),
    };
    let content = bridge_yaml(&br, &id, src.map(|s| &s.stanza), target_mac, port);
    let how = match src {
        Some(s) if has_addressing(&s.stanza) => format!("the addressing found in {}", s.path),
        _ => "DHCP".into(),
    };
    let mac_note = if target_mac.is_some() {
        format!(
            "the {} MAC",
            if kind == Kind::Bond {
                "bond's"
            } else {
                "NIC's"
            }
        )
    } else {
        "its own MAC".into()
    };
    if p.write_file(
        ph,
        paths::NETPLAN_BRIDGE_FILE,
        0o600,
        content,
        format!("bridge {br} over {target} with {how}, {mac_note}, stp off, forward-delay 0"),
    ) {
        files.push(paths::NETPLAN_BRIDGE_FILE.to_string());
    }
    for s in &sources {
        let (text, why) = match kind {
            Kind::Ethernet => (
                without_stanza(s),
                format!(
                    "move `{}` out of this file: its addressing now lives on {br} (a later file cannot clear it)",
                    s.id
                ),
            ),
            Kind::Bond => (
                without_addressing(s),
                format!(
                    "take the addressing off bond `{}`: it now lives on {br} (a later file cannot clear it)",
                    s.id
                ),
            ),
        };
        if p.write_file(ph, &s.path, 0o600, text, why) {
            files.push(s.path.clone());
        }
    }
    if files.is_empty() {
        return;
    }
    plan_apply(p, target_nic, &target, &br, files);
}

fn plan_apply(p: &mut Planner<'_>, nic: Option<&Nic>, port: &str, br: &str, files: Vec<String>) {
    let facts = p.facts;
    let gateway = facts
        .default_route
        .as_ref()
        .filter(|r| r.interface == port || r.interface == br)
        .map(|r| r.gateway.clone());
    let ip = nic.and_then(first_ipv4).or_else(|| {
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
mod tests;
