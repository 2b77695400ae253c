//! `cluster create --hosts` (issue 20): one cluster whose nodes run on several vmctl hosts.
//!
//! - The hosts' rows (`hosts status`, every host asked at once) and a scan of the bridge on
//!   each host decide everything before anything is made: every host reachable, every bridge on
//!   one subnet (the nodes share the bridged LAN), control planes on distinct hosts ([`place`]),
//!   GPU workers where free isolated GPUs are, addresses free in every scan and held by no host
//!   ([`pick_addresses`]).
//! - Each node is then checked on its own host (`create talos --dry-run`, which also says which
//!   installer image that host boots it from).
//! - The secrets stay on this machine. Each node's whole machine config is made here and sent
//!   to its host on the ssh session's standard input (`create talos --machine-config -`), where
//!   it only lands on the node's 0600 seed.
//! - A failure removes the nodes already made, on their hosts, and the cluster's directory.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Instant;

use guest_media::cache::Progress;
use hostio::Cmd;
use talos_image::machineconfig::{self, Role};
use talos_image::{ConfigInput, SecretsBundle};

use super::ClusterError;
use super::api::Report;
use super::create::{ApiFactory, ClusterCreated, CreatedNode, Timings, ms, start_and_bootstrap};
use super::plan::{ClusterRequest, Vip, checked_counts, planned_nodes};
use crate::build::now_rfc3339;
use crate::commands::create::talos::{TalosDryRun, TalosRequest, node_patch};
use crate::commands::hosts::{HostRow, collect, local_row};
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::hosts::{HostEntry, LOCAL};
use crate::net::NetworkRequest;
use crate::talos::{ClusterDir, ClusterRecord, NodeRecord, write_private};
use crate::transaction::Transaction;

/// Seconds a remote vmctl may take past the connect timeout (a create fetches its image from the
/// cache, or the factory, and writes the disks).
const REMOTE_LIMIT: u64 = 900;

/// Where a node runs.
#[derive(Debug, Clone)]
pub enum Site {
    Local,
    Remote(HostEntry),
}

impl Site {
    pub fn name(&self) -> &str {
        match self {
            Site::Local => LOCAL,
            Site::Remote(e) => &e.name,
        }
    }

    /// The record's `host` (none for this machine).
    fn record_name(&self) -> Option<String> {
        match self {
            Site::Local => None,
            Site::Remote(e) => Some(e.name.clone()),
        }
    }
}

/// The site a record's `host` names.
pub fn site_of(ctx: &Ctx, host: Option<&str>) -> Result<Site> {
    match host {
        None | Some(LOCAL) => Ok(Site::Local),
        Some(h) => Ok(Site::Remote(
            crate::hosts::find(&ctx.config.hosts, h)?.clone(),
        )),
    }
}

/// `vmctl ARGS…` run by the vmctl on `entry` (over ssh, `stdin` given), bounded by `timeout`.
/// Its stdout, or [`ClusterError::Remote`] with the remote's own error and help lines.
pub fn remote_vmctl(
    ctx: &Ctx,
    entry: &HostEntry,
    args: &[String],
    stdin: Option<&str>,
) -> Result<Vec<u8>> {
    let connect = ctx.config.ssh_connect_timeout()?;
    let mut argv = vec![
        "timeout".to_string(),
        "-k".into(),
        "2".into(),
        (connect + REMOTE_LIMIT).to_string(),
    ];
    argv.extend(entry.ssh_argv(connect, false, &entry.remote_command(args)));
    let mut cmd = Cmd::new(argv);
    if let Some(s) = stdin {
        cmd = cmd.stdin(s.as_bytes().to_vec());
    }
    let command = format!("vmctl {}", args.join(" "));
    let out = ctx.runner.output(&cmd).map_err(|e| ClusterError::Remote {
        host: entry.name.clone(),
        command: command.clone(),
        status: None,
        error: e.to_string(),
        help: Vec::new(),
    })?;
    if out.status == 0 {
        return Ok(out.stdout);
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let mut error = Vec::new();
    let mut help = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.trim_start().strip_prefix("help:") {
            help.push(h.trim().to_string());
        } else if !line.trim().is_empty() && help.is_empty() {
            error.push(line.trim().trim_start_matches("error:").trim().to_string());
        }
    }
    Err(ClusterError::Remote {
        host: entry.name.clone(),
        command,
        status: Some(out.status),
        error: error.join("; "),
        help,
    }
    .into())
}

/// The `create talos` words of a node's request (for a remote host).
fn talos_args(r: &TalosRequest, dry_run: bool) -> Vec<String> {
    let mut a: Vec<String> = [
        "--json",
        "create",
        "talos",
        &r.name,
        "--role",
        r.role.as_str(),
    ]
    .map(String::from)
    .to_vec();
    let mut opt = |k: &str, v: &str| {
        a.push(k.into());
        a.push(v.into());
    };
    if let Some(c) = &r.cluster {
        opt("--cluster", c);
    }
    if let Some(v) = &r.version {
        opt("--version", v);
    }
    if let NetworkRequest::Static { ip, gateway, dns } = &r.network {
        opt("--ip", ip);
        if let Some(g) = gateway {
            opt("--gateway", g);
        }
        if !dns.is_empty() {
            opt("--dns", &dns.join(","));
        }
    }
    if let Some(m) = &r.mac {
        opt("--mac", m);
    }
    opt("--cpus", &r.cpus.to_string());
    opt("--memory", &r.memory);
    if let Some(d) = &r.disk {
        opt("--disk", d);
    }
    if let Some(b) = &r.bridge {
        opt("--bridge", b);
    }
    for g in &r.gpus {
        opt("--gpu", g);
    }
    if !r.gpus.is_empty() {
        opt("--nvidia", r.nvidia.as_str());
        if let Some(d) = r.driver {
            opt(
                "--driver",
                match d {
                    talos_image::nvidia::Driver::Open => "open",
                    talos_image::nvidia::Driver::Proprietary => "proprietary",
                },
            );
        }
    }
    opt("--machine-config", "-");
    if r.allow_prerelease {
        a.push("--allow-prerelease".into());
    }
    if r.gpu_force {
        a.push("--gpu-force".into());
    }
    a.push("--no-start".into());
    if dry_run {
        a.push("--dry-run".into());
    }
    a
}

fn parse_json<T: serde::de::DeserializeOwned>(host: &str, command: &str, out: &[u8]) -> Result<T> {
    serde_json::from_slice(out).map_err(|e| {
        ClusterError::Remote {
            host: host.into(),
            command: command.into(),
            status: Some(0),
            error: format!("unexpected output: {e}"),
            help: vec![format!(
                "run the same vmctl version on both machines (`vmctl hosts status` shows each host's)"
            )],
        }
        .into()
    })
}

/// One node's checks on its host, nothing made.
fn dry_run(ctx: &Ctx, site: &Site, r: &TalosRequest) -> Result<TalosDryRun> {
    match site {
        Site::Local => crate::commands::create::talos::dry_run(ctx, r),
        Site::Remote(e) => {
            let out = remote_vmctl(ctx, e, &talos_args(r, true), None)?;
            parse_json(&e.name, "create talos --dry-run", &out)
        }
    }
}

/// Makes one node on its host with the config given; its MAC.
fn make_node(
    ctx: &Ctx,
    site: &Site,
    r: &TalosRequest,
    config: String,
    progress: &dyn Progress,
) -> Result<String> {
    match site {
        Site::Local => {
            let mut r = r.clone();
            r.machine_config = Some(config);
            Ok(crate::commands::create::talos::create_talos(ctx, &r, progress)?.mac)
        }
        Site::Remote(e) => {
            let out = remote_vmctl(ctx, e, &talos_args(r, false), Some(&config))?;
            let v: serde_json::Value = parse_json(&e.name, "create talos", &out)?;
            Ok(v["mac"].as_str().unwrap_or_default().to_string())
        }
    }
}

/// What deleting a node removed on its host, and what it kept (with why).
#[derive(Debug, Clone, Default)]
pub struct NodeDeleted {
    pub removed: Vec<String>,
    pub kept: Vec<String>,
}

/// Stops (hard) and deletes a node's VM and storage on its host, like `vmctl delete --force`;
/// `None` when the host has no such VM.
pub fn delete_node(ctx: &Ctx, site: &Site, vm: &str) -> Result<Option<NodeDeleted>> {
    let e = match site {
        Site::Remote(e) => e,
        Site::Local => {
            let Some(d) = ctx.hv.get(vm)? else {
                return Ok(None);
            };
            if d.state.is_active() {
                ctx.hv.destroy(vm)?;
            }
            let deleted = crate::commands::lifecycle::delete(ctx, vm, true, false)?;
            return Ok(Some(NodeDeleted {
                removed: deleted
                    .removed
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
                kept: deleted
                    .kept
                    .iter()
                    .map(|k| format!("{}: {}", k.path.display(), k.reason))
                    .collect(),
            }));
        }
    };
    let Some(state) = remote_state(ctx, e, vm)? else {
        return Ok(None);
    };
    if !matches!(state.as_str(), "shut-off" | "crashed") {
        let args = ["stop", vm, "--timeout", "0", "--force"].map(String::from);
        remote_vmctl(ctx, e, &args, None)?;
    }
    let args = ["--json", "delete", vm, "--yes", "--force"].map(String::from);
    let out = remote_vmctl(ctx, e, &args, None)?;
    let v: serde_json::Value = parse_json(&e.name, "delete", &out)?;
    let strings = |k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .map(|p| match (p.as_str(), p["path"].as_str()) {
                        (Some(s), _) => format!("{}:{s}", e.name),
                        (None, Some(path)) => format!(
                            "{}:{path}: {}",
                            e.name,
                            p["reason"].as_str().unwrap_or_default()
                        ),
                        _ => format!("{}: {p}", e.name),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Some(NodeDeleted {
        removed: strings("removed"),
        kept: strings("kept"),
    }))
}

/// Every VM of a remote host with its state (`vmctl --json list` there).
pub fn remote_states(ctx: &Ctx, e: &HostEntry) -> Result<Vec<(String, String)>> {
    let out = remote_vmctl(ctx, e, &["--json".into(), "list".into()], None)?;
    let v: serde_json::Value = parse_json(&e.name, "list", &out)?;
    Ok(v["vms"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
                    (s("name"), s("state"))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The state of `vm` on a remote host (`None`: no such VM).
fn remote_state(ctx: &Ctx, e: &HostEntry, vm: &str) -> Result<Option<String>> {
    Ok(remote_states(ctx, e)?
        .into_iter()
        .find(|(name, _)| name == vm)
        .map(|(_, st)| st))
}

/// The hosts `--hosts` names, each once, `local` being this machine.
pub fn sites(ctx: &Ctx, names: &[String]) -> Result<Vec<Site>> {
    let mut out: Vec<Site> = Vec::new();
    for n in names {
        if out.iter().any(|s| s.name() == n) {
            return Err(Error::InvalidOption {
                option: "--hosts".into(),
                value: names.join(","),
                reason: format!("{n} is named twice"),
            });
        }
        out.push(site_of(ctx, Some(n))?);
    }
    if out.is_empty() {
        return Err(Error::InvalidOption {
            option: "--hosts".into(),
            value: String::new(),
            reason: "name at least one host (`vmctl hosts list`)".into(),
        });
    }
    Ok(out)
}

/// A host's GPUs a GPU worker can have: bound to vfio-pci, isolated, held by no VM.
fn free_gpus(row: &HostRow) -> Vec<String> {
    row.gpus
        .iter()
        .filter(|g| {
            g.vm.is_none() && g.driver.as_deref() == Some("vfio-pci") && g.isolated != Some(false)
        })
        .map(|g| g.bdf.clone())
        .collect()
}

/// Where each node goes (an index into `rows`) and a GPU worker's GPU: control plane i on host
/// i (distinct hosts: losing one host keeps etcd's quorum), workers each on the host with the
/// fewest nodes so far, GPU workers on the hosts with free isolated GPUs (the most free first).
/// Refused, with every host's count, when there are fewer hosts than control planes or fewer
/// free GPUs than GPU workers.
pub fn place(rows: &[HostRow], nodes: &[(Role, bool)]) -> Result<Vec<(usize, Option<String>)>> {
    let cps = nodes
        .iter()
        .filter(|(role, _)| *role == Role::Controlplane)
        .count();
    if cps > rows.len() {
        return Err(ClusterError::ControlPlanesNotSpread {
            control_planes: cps,
            hosts: rows.iter().map(|r| r.name.clone()).collect(),
        }
        .into());
    }
    let mut free: Vec<Vec<String>> = rows.iter().map(free_gpus).collect();
    let wanted = nodes.iter().filter(|(_, gpu)| *gpu).count();
    let have: usize = free.iter().map(Vec::len).sum();
    if have < wanted {
        return Err(ClusterError::NotEnoughGpusAcross {
            wanted,
            hosts: rows
                .iter()
                .zip(&free)
                .map(|(r, f)| (r.name.clone(), f.len()))
                .collect(),
        }
        .into());
    }
    let mut load = vec![0usize; rows.len()];
    let mut out = Vec::new();
    for (i, &(role, gpu)) in nodes.iter().enumerate() {
        let h = if role == Role::Controlplane {
            i
        } else if gpu {
            (0..rows.len())
                .filter(|&h| !free[h].is_empty())
                .max_by_key(|&h| (free[h].len(), std::cmp::Reverse((load[h], h))))
                .unwrap_or(0)
        } else {
            (0..rows.len()).min_by_key(|&h| (load[h], h)).unwrap_or(0)
        };
        load[h] += 1;
        out.push((h, gpu.then(|| free[h].remove(0))));
    }
    Ok(out)
}

/// One host's scan of its bridge: the bridge, its subnet, the addresses that answered (its own
/// included).
#[derive(Debug, Clone)]
pub struct Scan {
    pub interface: String,
    pub subnet: ipnet::Ipv4Net,
    pub used: Vec<Ipv4Addr>,
}

/// A scan of `bridge` (default: the host's own setting `bridge`) on the host.
fn scan(ctx: &Ctx, site: &Site, bridge: Option<&str>) -> Result<Scan> {
    let v: serde_json::Value = match site {
        Site::Local => {
            let req =
                netscan::ScanRequest::new(bridge.unwrap_or_else(|| ctx.config.value("bridge")));
            let owners = crate::address::mac_owners(ctx.hv).ok();
            serde_json::to_value(crate::address::check(ctx.scanner, &req, owners.as_ref())?)
                .unwrap_or_default()
        }
        Site::Remote(e) => {
            let mut args: Vec<String> = ["--json", "ip", "check"].map(String::from).to_vec();
            if let Some(b) = bridge {
                args.extend(["--bridge".into(), b.into()]);
            }
            let out = remote_vmctl(ctx, e, &args, None)?;
            parse_json(&e.name, "ip check", &out)?
        }
    };
    let bad = || ClusterError::Remote {
        host: site.name().into(),
        command: "vmctl ip check".into(),
        status: Some(0),
        error: "no subnet in its answer".into(),
        help: Vec::new(),
    };
    let subnet: ipnet::Ipv4Net = v["subnet"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let mut used: Vec<Ipv4Addr> = v["used"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u["ip"].as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    used.extend(
        v["local_ip"]
            .as_str()
            .and_then(|s| s.parse::<Ipv4Addr>().ok()),
    );
    Ok(Scan {
        interface: v["interface"].as_str().unwrap_or_default().to_string(),
        subnet,
        used,
    })
}

/// `count` addresses of `subnet` in order: not its network or broadcast address, not answering
/// in any scan, held by no host, outside `reserved`, and not `fixed` (a `--vip` given).
pub fn pick_addresses(
    subnet: ipnet::Ipv4Net,
    taken: &[Ipv4Addr],
    reserved: &[netscan::IpRange],
    count: usize,
) -> Result<Vec<Ipv4Addr>> {
    let out: Vec<Ipv4Addr> = subnet
        .hosts()
        .filter(|ip| !taken.contains(ip) && !reserved.iter().any(|r| r.contains(*ip)))
        .take(count)
        .collect();
    if out.len() < count {
        return Err(ClusterError::NoAddresses {
            subnet: subnet.to_string(),
            wanted: count,
            free: out.len(),
        }
        .into());
    }
    Ok(out)
}

/// `cluster create NAME --hosts …` (see the module doc).
pub fn create(
    ctx: &Ctx,
    req: &ClusterRequest,
    api: ApiFactory,
    progress: &dyn Progress,
    report: &dyn Report,
) -> Result<ClusterCreated> {
    machineconfig::validate_cluster_name(&req.name)?;
    let dir = ClusterDir::new(ctx.host, ctx.config, &req.name);
    if dir.exists() {
        return Err(crate::talos::TalosError::ClusterExists {
            cluster: req.name.clone(),
            dir: dir.dir,
        }
        .into());
    }
    if !req.worker_gpus.is_empty() {
        return Err(Error::InvalidOption {
            option: "--worker-gpu".into(),
            value: req.worker_gpus.join(" "),
            reason: "a selector names GPUs of one host; with --hosts, --gpu-workers N takes free isolated GPUs where they are".into(),
        });
    }
    let (gpu_workers, vip) = checked_counts(req)?;
    let nodes = planned_nodes(req, gpu_workers);
    let sites = sites(ctx, &req.hosts)?;

    // Every host's row at once; every one must answer.
    report.stage(&format!("asking {} host(s)", sites.len()));
    let remote: BTreeMap<String, HostEntry> = sites
        .iter()
        .filter_map(|s| match s {
            Site::Remote(e) => Some((e.name.clone(), e.clone())),
            Site::Local => None,
        })
        .collect();
    let status = collect(
        ctx.runner,
        &remote,
        ctx.config.ssh_connect_timeout()?,
        || local_row(ctx.config, ctx.host, ctx.runner, Ok(ctx)),
    );
    let down: Vec<(String, String)> = status
        .hosts
        .iter()
        .filter(|r| !r.reachable)
        .map(|r| {
            (
                r.name.clone(),
                r.error
                    .as_ref()
                    .map(|e| e.message.clone())
                    .unwrap_or_default(),
            )
        })
        .collect();
    if !down.is_empty() {
        return Err(ClusterError::HostsDown { hosts: down }.into());
    }
    // Every node is made by its host's vmctl with this one's options: one version everywhere.
    if let Some(r) = status.hosts.iter().find(|r| r.version_mismatch) {
        return Err(ClusterError::OtherVersion {
            host: r.name.clone(),
            theirs: r.vmctl_version.clone().unwrap_or_default(),
            help: remote
                .get(&r.name)
                .map(|e| crate::hosts::upgrade_help(&r.name, e, crate::hosts::this_version()))
                .unwrap_or_default(),
        }
        .into());
    }
    // Held by any host (this machine's too: its cluster records name their addresses).
    let mut taken: Vec<Ipv4Addr> = status
        .hosts
        .iter()
        .flat_map(|r| r.addresses_held.iter().copied())
        .collect();
    let rows: Vec<HostRow> = sites
        .iter()
        .filter_map(|s| status.hosts.iter().find(|r| r.name == s.name()).cloned())
        .collect();

    // Placement: nothing is made when the hosts cannot take the nodes (GPU workers are last).
    let first_gpu = nodes.len() - gpu_workers as usize;
    let kinds: Vec<(Role, bool)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.role, i >= first_gpu))
        .collect();
    let placed = place(&rows, &kinds)?;

    // The bridge on every host (--bridge, else each host's own setting): one subnet, as the
    // nodes share the LAN; each host's scan of it.
    report.stage(&format!("scanning the bridge on {} host(s)", sites.len()));
    let mut scans: Vec<(String, Scan)> = Vec::new();
    for site in &sites {
        let sc = scan(ctx, site, req.bridge.as_deref())?;
        taken.extend(sc.used.iter().copied());
        scans.push((site.name().to_string(), sc));
    }
    let subnet = scans[0].1.subnet.trunc();
    if scans.iter().any(|(_, s)| s.subnet.trunc() != subnet) {
        return Err(ClusterError::NotOneLan {
            subnets: scans
                .iter()
                .map(|(h, s)| (h.clone(), format!("{} {}", s.interface, s.subnet.trunc())))
                .collect(),
        }
        .into());
    }
    let bridge = req
        .bridge
        .clone()
        .unwrap_or_else(|| scans[0].1.interface.clone());
    let reserved = crate::address::reserved_ranges(ctx.config, subnet)?;
    let fixed_vip = match vip {
        Vip::Fixed(ip) => {
            if !subnet.contains(&ip) || taken.contains(&ip) {
                return Err(Error::InvalidOption {
                    option: "--vip".into(),
                    value: ip.to_string(),
                    reason: format!("not a free address of {subnet} on every host"),
                });
            }
            taken.push(ip);
            Some(ip)
        }
        _ => None,
    };
    let want = nodes.len() + usize::from(vip == Vip::Auto);
    let ips = pick_addresses(subnet, &taken, &reserved, want)?;
    let vip = fixed_vip.or((vip == Vip::Auto).then(|| ips[nodes.len()]));
    let version = match &req.version {
        Some(v) => crate::talos::requested_version(ctx.config, v, req.allow_prerelease)?,
        None => crate::talos::latest_version(ctx.config)?,
    };

    // Each node's request, checked on its host (the installer image comes back).
    let mut requests = Vec::new();
    for (i, (n, (h, gpu))) in nodes.iter().zip(&placed).enumerate() {
        let mut r = TalosRequest::new(&n.name);
        r.role = n.role;
        r.cluster = Some(req.name.clone());
        r.version = Some(version.to_string());
        r.allow_prerelease = req.allow_prerelease;
        r.gpus = gpu.iter().cloned().collect();
        r.gpu_force = req.gpu_force;
        r.nvidia = req.nvidia;
        r.driver = req.driver;
        r.network = NetworkRequest::Static {
            ip: format!("{}/{}", ips[i], subnet.prefix_len()),
            gateway: req.gateway.clone(),
            dns: req.dns.clone(),
        };
        r.mac = Some(crate::names::random_mac());
        r.cpus = n.cpus;
        r.memory = n.memory.clone();
        r.disk = Some(n.disk.clone());
        r.bridge = req.bridge.clone();
        r.no_start = true;
        r.machine_config = Some(String::new());
        if n.role == Role::Controlplane {
            r.vip = vip;
        }
        report.stage(&format!("checking {} on {}", n.name, sites[*h].name()));
        let d = dry_run(ctx, &sites[*h], &r)?;
        requests.push((r, d));
    }

    // The secrets and the cluster's record, here only.
    let endpoint = format!("https://{}:6443", vip.unwrap_or(ips[0]));
    let mut rb = Transaction::new(ctx.hv);
    let mut timings = Timings::default();
    report.stage("generating the cluster's keys and certificates");
    let t = Instant::now();
    let secrets = SecretsBundle::generate(&version)?;
    timings.key_generation_ms = ms(t.elapsed());
    dir.create(&mut rb)?;
    write_private(&dir.secrets(), secrets.to_yaml()?.as_bytes())?;
    let gpu_cluster = placed.iter().any(|(_, g)| g.is_some());
    let record = ClusterRecord {
        name: req.name.clone(),
        endpoint: endpoint.clone(),
        version: version.clone(),
        created: now_rfc3339(),
        vip,
        gpu: gpu_cluster,
        nodes: nodes
            .iter()
            .zip(&placed)
            .enumerate()
            .map(|(i, (n, (h, gpu)))| NodeRecord {
                host: sites[*h].record_name(),
                name: n.name.clone(),
                role: n.role,
                ip: Some(ips[i]),
                gpus: gpu.iter().cloned().collect(),
            })
            .collect(),
    };
    dir.save_record(&record, true)?;
    let mut input = ConfigInput::new(&req.name, &endpoint, version.clone());
    input.talos_endpoints = record
        .control_planes()
        .filter_map(|n| n.ip.map(|i| i.to_string()))
        .collect();
    let tc = machineconfig::talosconfig(&input, &secrets, time::OffsetDateTime::now_utc())?;
    write_private(&dir.talosconfig(), tc.as_bytes())?;

    // Every node on its host; a failure removes the ones made.
    let mut made: Vec<CreatedNode> = Vec::new();
    let result = (|| -> Result<()> {
        for (i, ((r, d), (h, _))) in requests.iter().zip(&placed).enumerate() {
            ctx.check_cancelled(
                || format!("the create of cluster {}", req.name),
                || "the nodes made were removed; run the same command again".into(),
            )?;
            let site = &sites[*h];
            report.stage(&format!(
                "node {}/{}: {} on {} ({}{}, {})",
                i + 1,
                requests.len(),
                r.name,
                site.name(),
                r.role.as_str(),
                if d.gpus.is_empty() {
                    String::new()
                } else {
                    format!(", GPU {}", d.gpus.join(" + "))
                },
                ips[i]
            ));
            let t = Instant::now();
            let mut node_input = input.clone();
            node_input.installer_image = d.installer_image.clone();
            if gpu_cluster && r.role == Role::Controlplane {
                node_input.inline_manifests = talos_image::nvidia::inline_manifests()?;
            }
            let st = crate::net::parse_static(
                &format!("{}/{}", ips[i], subnet.prefix_len()),
                req.gateway.as_deref(),
                &req.dns,
            )?;
            let patch = node_patch(
                &r.name,
                r.mac.as_deref().unwrap_or_default(),
                Some(&st),
                !d.gpus.is_empty(),
                &r.labels,
                r.vip,
            );
            let config = machineconfig::node_config(&node_input, &secrets, r.role, &patch)?;
            timings.configs_ms += ms(t.elapsed());
            let t = Instant::now();
            let mac = make_node(ctx, site, r, config, progress)?;
            timings.domains_ms += ms(t.elapsed());
            made.push(CreatedNode {
                name: r.name.clone(),
                role: r.role,
                ip: Some(ips[i]),
                mac,
                gpus: d.gpus.clone(),
                schematic_id: d.schematic_id.clone(),
                started: false,
                host: site.record_name(),
            });
        }
        Ok(())
    })();
    if let Err(e) = result {
        for n in made.iter().rev() {
            let site = site_of(ctx, n.host.as_deref())?;
            if let Err(d) = delete_node(ctx, &site, &n.name) {
                tracing::warn!("{} on {} is left behind: {d}", n.name, site.name());
            }
        }
        return Err(e);
    }
    rb.commit();

    let mut created = ClusterCreated::made(&record, bridge, made, &dir, timings);
    start_and_bootstrap(ctx, req, &dir, &record, &mut created, api, report)?;
    Ok(created)
}

/// Starts a node on its host (`vmctl start` there for a remote one).
pub fn start_node(ctx: &Ctx, host: Option<&str>, vm: &str) -> Result<()> {
    match site_of(ctx, host)? {
        Site::Local => Ok(ctx.hv.start(vm)?),
        Site::Remote(e) => remote_vmctl(ctx, &e, &["start".into(), vm.into()], None).map(|_| ()),
    }
}

#[cfg(test)]
mod tests;
