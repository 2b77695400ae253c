//! The cluster commands after `create`: `list`, `show`, `kubeconfig`, `talosconfig`,
//! `add-worker`, `remove-node`, `destroy`, and [`node_of`], which `vmctl delete` asks first.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use guest_media::cache::Progress;
use serde::Serialize;
use talos_image::machineconfig::Role;

use super::ClusterError;
use super::api::TalosApi;
use crate::commands::create::talos::{TalosCreated, TalosRequest, create_talos};
use crate::ctx::Ctx;
use crate::error::Result;
use crate::net::NetworkRequest;
use crate::talos::{ClusterDir, ClusterRecord, NodeRecord, TalosError};

/// Every cluster directory under the state directory, by name.
fn cluster_dirs(ctx: &Ctx) -> Vec<ClusterDir> {
    crate::talos::cluster_dirs(ctx.host, ctx.config)
}

/// The cluster `name`'s directory and record, or [`ClusterError::NoSuchCluster`].
pub fn open(ctx: &Ctx, name: &str) -> Result<(ClusterDir, ClusterRecord)> {
    let dir = ClusterDir::new(ctx.host, ctx.config, name);
    if !dir.record().is_file() {
        return Err(ClusterError::NoSuchCluster {
            cluster: name.into(),
            dir: dir.dir,
        }
        .into());
    }
    let record = dir.load_record()?;
    Ok((dir, record))
}

/// The cluster VM `vm` belongs to, if any (`vmctl delete` refuses a node).
pub fn node_of(ctx: &Ctx, vm: &str) -> Option<String> {
    cluster_dirs(ctx).into_iter().find_map(|d| {
        d.load_record()
            .ok()
            .filter(|r| r.nodes.iter().any(|n| n.name == vm))
            .map(|r| r.name)
    })
}

/// One node as `cluster show` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub name: String,
    pub role: Role,
    pub ip: Option<Ipv4Addr>,
    pub gpus: Vec<String>,
    /// libvirt's state, `missing` when no such domain exists, `unreachable` when its host did
    /// not answer.
    pub state: String,
    /// The `[hosts.NAME]` it runs on; none: this machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// `cluster show --json`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    pub name: String,
    pub version: String,
    pub endpoint: String,
    pub vip: Option<Ipv4Addr>,
    pub gpu: bool,
    pub created: String,
    /// `running` when every node runs, `stopped` when none does, else `partial`.
    pub state: String,
    pub nodes: Vec<NodeView>,
    pub talosconfig: PathBuf,
    /// Present once the cluster is bootstrapped.
    pub kubeconfig: Option<PathBuf>,
}

fn view(ctx: &Ctx, dir: &ClusterDir, r: &ClusterRecord) -> Result<ClusterView> {
    // One `list` per remote host.
    let mut remote: std::collections::BTreeMap<String, Option<Vec<(String, String)>>> =
        Default::default();
    let mut nodes = Vec::new();
    for n in &r.nodes {
        let state = match super::spread::site_of(ctx, n.host.as_deref())? {
            super::spread::Site::Local => match ctx.hv.get(&n.name)? {
                Some(d) => d.state.as_str().to_string(),
                None => "missing".into(),
            },
            super::spread::Site::Remote(e) => {
                let states = remote
                    .entry(e.name.clone())
                    .or_insert_with(|| super::spread::remote_states(ctx, &e).ok());
                match states {
                    None => "unreachable".into(),
                    Some(list) => list
                        .iter()
                        .find(|(vm, _)| *vm == n.name)
                        .map_or_else(|| "missing".into(), |(_, st)| st.clone()),
                }
            }
        };
        nodes.push(NodeView {
            name: n.name.clone(),
            role: n.role,
            ip: n.ip,
            gpus: n.gpus.clone(),
            state,
            host: n.host.clone(),
        });
    }
    let running = nodes.iter().filter(|n| n.state == "running").count();
    let state = match running {
        0 => "stopped",
        n if n == nodes.len() => "running",
        _ => "partial",
    };
    Ok(ClusterView {
        name: r.name.clone(),
        version: r.version.to_string(),
        endpoint: r.endpoint.clone(),
        vip: r.vip,
        gpu: r.gpu,
        created: r.created.clone(),
        state: state.into(),
        nodes,
        talosconfig: dir.talosconfig(),
        kubeconfig: dir.kubeconfig().is_file().then(|| dir.kubeconfig()),
    })
}

/// `cluster list`: every cluster with its nodes and their state.
pub fn list(ctx: &Ctx) -> Result<Vec<ClusterView>> {
    cluster_dirs(ctx)
        .iter()
        .map(|d| view(ctx, d, &d.load_record()?))
        .collect()
}

/// `cluster show NAME`.
pub fn show(ctx: &Ctx, name: &str) -> Result<ClusterView> {
    let (dir, r) = open(ctx, name)?;
    view(ctx, &dir, &r)
}

/// Which credentials file `cluster kubeconfig|talosconfig` hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Kubeconfig,
    Talosconfig,
}

/// The file's path; with `out`, a copy written there (0600; an existing file only with
/// `force`).
pub fn credential(
    ctx: &Ctx,
    name: &str,
    which: Credential,
    out: Option<&Path>,
    force: bool,
) -> Result<PathBuf> {
    let (dir, _) = open(ctx, name)?;
    let path = match which {
        Credential::Kubeconfig => dir.kubeconfig(),
        Credential::Talosconfig => dir.talosconfig(),
    };
    let bytes = std::fs::read(&path).map_err(|source| TalosError::ReadFile {
        path: path.clone(),
        source,
    })?;
    let Some(out) = out else {
        return Ok(path);
    };
    if out.exists() && !force {
        return Err(ClusterError::OutputExists {
            path: out.to_path_buf(),
        }
        .into());
    }
    hostio::file::write_atomic(out, &bytes, 0o600).map_err(|source| TalosError::WriteFile {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(out.to_path_buf())
}

/// `cluster add-worker` options.
#[derive(Debug, Clone, Default)]
pub struct AddWorker {
    /// GPU selectors: a GPU worker (`<cluster>-gpu-N`) when any is given.
    pub gpus: Vec<String>,
    pub gpu_force: bool,
    pub size: super::NodeSize,
    pub no_start: bool,
}

/// `cluster add-worker NAME`: `<cluster>-w-N` (or `-gpu-N`) through `create talos`, with an
/// address of `--ip auto`, in the cluster's record from then on.
pub fn add_worker(
    ctx: &Ctx,
    name: &str,
    req: &AddWorker,
    progress: &dyn Progress,
) -> Result<TalosCreated> {
    let (_, record) = open(ctx, name)?;
    let kind = if req.gpus.is_empty() { "w" } else { "gpu" };
    let prefix = format!("{name}-{kind}");
    let storage = ctx.config.storage_dir(ctx.host);
    let node = (1..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|n| {
            !record.nodes.iter().any(|r| &r.name == n)
                && !crate::storage::vm_dir(&storage, n).exists()
                && !matches!(ctx.hv.get(n), Ok(Some(_)))
        })
        .unwrap_or_default();
    let mut r = TalosRequest::new(&node);
    r.role = Role::Worker;
    r.cluster = Some(name.into());
    r.gpus = req.gpus.clone();
    r.gpu_force = req.gpu_force;
    r.network = NetworkRequest::Static {
        ip: crate::address::AUTO.into(),
        gateway: None,
        dns: Vec::new(),
    };
    r.cpus = req.size.cpus;
    r.memory = req.size.memory.clone();
    r.disk = Some(req.size.disk.clone());
    r.no_start = req.no_start;
    create_talos(ctx, &r, progress)
}

/// What `remove-node` and `destroy` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Removed {
    pub cluster: String,
    /// How each control plane left etcd (`left`, `removed by <node>`, `not a member`).
    pub etcd: Vec<String>,
    /// VMs undefined.
    pub vms: Vec<String>,
    /// Files and directories removed.
    pub paths: Vec<PathBuf>,
    /// Files and directories removed on other hosts, as `HOST:PATH`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remote_paths: Vec<String>,
    /// Addresses released.
    pub addresses: Vec<Ipv4Addr>,
    /// What was kept, and why.
    pub kept: Vec<String>,
}

/// Undefines a node's VM (stopped first) and removes its storage, like `vmctl delete`, on the
/// node's host.
fn delete_vm(ctx: &Ctx, node: &NodeRecord, out: &mut Removed) -> Result<()> {
    let site = super::spread::site_of(ctx, node.host.as_deref())?;
    let Some(d) = super::spread::delete_node(ctx, &site, &node.name)? else {
        out.kept.push(format!("{}: no such domain", node.name));
        return Ok(());
    };
    match &node.host {
        Some(h) => {
            out.vms.push(format!("{h}:{}", node.name));
            out.remote_paths.extend(d.removed);
        }
        None => {
            out.vms.push(node.name.clone());
            out.paths.extend(d.removed.into_iter().map(PathBuf::from));
        }
    }
    out.kept.extend(d.kept);
    Ok(())
}

/// Takes control plane `node` out of etcd: it leaves itself (`EtcdLeaveCluster`) or, when it
/// cannot be reached, another control plane removes its member (`EtcdRemoveMemberByID`).
fn leave_etcd(
    api: &dyn TalosApi,
    record: &ClusterRecord,
    node: &str,
) -> std::result::Result<String, String> {
    let ip = |n: &str| record.nodes.iter().find(|r| r.name == n).and_then(|r| r.ip);
    let own = ip(node).map(|i| api.etcd_leave(i));
    match own {
        Some(Ok(())) => return Ok("left etcd".into()),
        Some(Err(e)) => tracing::info!("{node} could not leave etcd itself: {e}"),
        None => {}
    }
    let mut last = String::from("no other control plane answered");
    for other in record.control_planes().filter(|n| n.name != node) {
        let Some(oip) = other.ip else { continue };
        match api.etcd_members(oip) {
            Ok(members) => {
                let Some(m) = members.iter().find(|m| m.hostname == node) else {
                    return Ok("not an etcd member".into());
                };
                return match api.etcd_remove(oip, m.id) {
                    Ok(()) => Ok(format!("removed from etcd by {}", other.name)),
                    Err(e) => Err(format!("{}: EtcdRemoveMemberByID: {e}", other.name)),
                };
            }
            Err(e) => last = format!("{}: EtcdMemberList: {e}", other.name),
        }
    }
    Err(last)
}

/// `cluster remove-node NAME NODE`: a control plane leaves etcd first (refused when that cannot
/// be done, unless `force`); then the VM is deleted, its address released and the record
/// updated. The last control plane is refused: `destroy` removes the cluster.
pub fn remove_node(
    ctx: &Ctx,
    api: &dyn TalosApi,
    name: &str,
    node: &str,
    force: bool,
) -> Result<Removed> {
    let (dir, mut record) = open(ctx, name)?;
    let Some(entry) = record.nodes.iter().find(|n| n.name == node).cloned() else {
        return Err(ClusterError::NoSuchNode {
            cluster: name.into(),
            node: node.into(),
        }
        .into());
    };
    let mut out = Removed {
        cluster: name.into(),
        ..Default::default()
    };
    if entry.role == Role::Controlplane {
        if record.control_planes().count() == 1 {
            return Err(ClusterError::LastControlPlane {
                cluster: name.into(),
                node: node.into(),
            }
            .into());
        }
        match leave_etcd(api, &record, node) {
            Ok(how) => out.etcd.push(format!("{node}: {how}")),
            Err(why) if force => out
                .etcd
                .push(format!("{node}: still a member (--force): {why}")),
            Err(why) => {
                return Err(ClusterError::EtcdLeave {
                    node: node.into(),
                    why,
                }
                .into());
            }
        }
    }
    delete_vm(ctx, &entry, &mut out)?;
    out.addresses.extend(entry.ip);
    record.nodes.retain(|n| n.name != node);
    dir.save_record(&record, false)?;
    Ok(out)
}

/// `cluster destroy NAME --yes`: every node's VM and storage, the addresses (the VIP's too) and
/// the cluster's directory with its secrets. Without `yes` it refuses.
pub fn destroy(ctx: &Ctx, name: &str, yes: bool) -> Result<Removed> {
    let (dir, record) = open(ctx, name)?;
    if !yes {
        return Err(ClusterError::NotConfirmed {
            cluster: name.into(),
            nodes: record.nodes.len(),
        }
        .into());
    }
    let mut out = Removed {
        cluster: name.into(),
        ..Default::default()
    };
    for n in record.nodes.iter().rev() {
        delete_vm(ctx, n, &mut out)?;
        out.addresses.extend(n.ip);
    }
    if let Some(vip) = record.vip {
        crate::address::release_deleted(ctx, &format!("{name}-vip"), Some(&vip.to_string()));
        out.addresses.push(vip);
    }
    hostio::file::remove_tree(&dir.dir).map_err(|source| TalosError::WriteFile {
        path: dir.dir.clone(),
        source,
    })?;
    out.paths.push(dir.dir.clone());
    Ok(out)
}
