//! `cluster create`, checked before anything is made: the cluster and node names, the counts,
//! each node's size, the Talos version, the bridge, the VIP, and each GPU worker's whole GPUs
//! with the same checks and explanations as `gpu attach`.

use std::net::Ipv4Addr;
use std::time::Duration;

use hwdetect::{Gpu, HostFacts};
use passthrough::{Attachment, GpuUser, Refusal, Selector};
use serde::Serialize;
use talos_image::TalosVersion;
use talos_image::machineconfig::{self, Role};
use talos_image::nvidia::{Driver, Flavour};

use super::ClusterError;
use crate::commands::create::talos::{DEFAULT_DISK, DEFAULT_MEMORY};
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::net::NetworkRequest;
use crate::talos::{ClusterDir, TalosError};

/// The most workers of one kind one command makes.
pub const MAX_WORKERS: u32 = 64;

/// One role's VM size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSize {
    pub cpus: u32,
    /// MiB, or with a unit (`4G`).
    pub memory: String,
    pub disk: String,
}

impl Default for NodeSize {
    fn default() -> Self {
        NodeSize {
            cpus: 2,
            memory: DEFAULT_MEMORY.into(),
            disk: DEFAULT_DISK.into(),
        }
    }
}

/// `vmctl cluster create` options, as given.
#[derive(Debug, Clone)]
pub struct ClusterRequest {
    pub name: String,
    /// 1, 3 or 5.
    pub control_planes: u32,
    pub workers: u32,
    /// GPU workers; with `worker_gpus` given, their count (and it must agree).
    pub gpu_workers: Option<u32>,
    /// One selector list per GPU worker (`--worker-gpu`).
    pub worker_gpus: Vec<String>,
    /// `auto`, an address, or none (auto with more than one control plane).
    pub vip: Option<String>,
    pub version: Option<String>,
    pub allow_prerelease: bool,
    pub cp: NodeSize,
    pub worker: NodeSize,
    pub bridge: Option<String>,
    pub gateway: Option<String>,
    pub dns: Vec<String>,
    pub gpu_force: bool,
    pub nvidia: Flavour,
    pub driver: Option<Driver>,
    pub no_start: bool,
    pub wait: bool,
    /// How long the bootstrap and `--wait` may take.
    pub timeout: Duration,
    /// `--hosts`: the `[hosts.NAME]` (and `local`) the nodes are spread over; empty: this
    /// machine only.
    pub hosts: Vec<String>,
}

impl ClusterRequest {
    pub fn new(name: &str) -> Self {
        ClusterRequest {
            name: name.into(),
            control_planes: 1,
            workers: 0,
            gpu_workers: None,
            worker_gpus: Vec::new(),
            vip: None,
            version: None,
            allow_prerelease: false,
            cp: NodeSize::default(),
            worker: NodeSize::default(),
            bridge: None,
            gateway: None,
            dns: Vec::new(),
            gpu_force: false,
            nvidia: Flavour::Production,
            driver: None,
            no_start: false,
            wait: false,
            timeout: Duration::from_secs(900),
            hosts: Vec::new(),
        }
    }
}

/// One node to make.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedNode {
    pub name: String,
    pub role: Role,
    /// The BDFs of its GPUs (first function of each).
    pub gpus: Vec<String>,
    pub cpus: u32,
    pub memory: String,
    pub disk: String,
}

/// The cluster's shared address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Vip {
    None,
    Auto,
    Fixed(Ipv4Addr),
}

/// The checked request.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterPlan {
    pub name: String,
    pub version: TalosVersion,
    pub bridge: String,
    pub vip: Vip,
    /// Control planes first, then workers, then GPU workers.
    pub nodes: Vec<PlannedNode>,
}

fn invalid(option: &str, value: &str, reason: impl Into<String>) -> Error {
    Error::InvalidOption {
        option: option.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// Checks the request against the host, libvirt and the factory. Creates nothing.
pub fn plan(ctx: &Ctx, req: &ClusterRequest) -> Result<ClusterPlan> {
    machineconfig::validate_cluster_name(&req.name)?;
    let dir = ClusterDir::new(ctx.host, ctx.config, &req.name);
    if dir.exists() {
        return Err(TalosError::ClusterExists {
            cluster: req.name.clone(),
            dir: dir.dir,
        }
        .into());
    }
    let (gpu_workers, vip) = checked_counts(req)?;
    let mut nodes = planned_nodes(req, gpu_workers);
    let storage = ctx.config.storage_dir(ctx.host);
    for n in &nodes {
        crate::build::check_name_and_size(ctx, &n.name, true, n.cpus, &n.memory)?;
        crate::names::parse_size("--disk", &n.disk)?;
        let vm_dir = crate::storage::vm_dir(&storage, &n.name);
        if vm_dir.exists() {
            return Err(Error::StorageExists {
                name: n.name.clone(),
                path: vm_dir,
            });
        }
    }

    if gpu_workers > 0 {
        // The GPU workers are the last nodes.
        let first_gpu = nodes.len() - gpu_workers as usize;
        let names: Vec<String> = nodes[first_gpu..].iter().map(|n| n.name.clone()).collect();
        let selectors = req
            .worker_gpus
            .iter()
            .map(|s| crate::gpu::parse_selectors(std::slice::from_ref(s)))
            .collect::<Result<Vec<_>>>()?;
        let (facts, users, atts) = crate::gpu::gather(ctx)?;
        let given = allocate_gpus(&facts, &atts, &users, &names, &selectors, req.gpu_force)?;
        for (node, gpus) in nodes[first_gpu..].iter_mut().zip(given) {
            node.gpus = gpus.iter().map(|g| g.bdf.clone()).collect();
        }
    }

    let (bridge, _) = crate::build::bridge_and_address(
        ctx,
        req.bridge.as_deref(),
        &NetworkRequest::Static {
            ip: crate::address::AUTO.into(),
            gateway: req.gateway.clone(),
            dns: req.dns.clone(),
        },
    )?;
    let version = match &req.version {
        Some(v) => crate::talos::requested_version(ctx.config, v, req.allow_prerelease)?,
        None => crate::talos::latest_version(ctx.config)?,
    };
    Ok(ClusterPlan {
        name: req.name.clone(),
        version,
        bridge,
        vip,
        nodes,
    })
}

/// The counts checked: control planes 1, 3 or 5, the GPU workers (from `--gpu-workers` or one
/// per `--worker-gpu`, which must agree), at most [`MAX_WORKERS`] of a kind, and the VIP.
pub(crate) fn checked_counts(req: &ClusterRequest) -> Result<(u32, Vip)> {
    if ![1, 3, 5].contains(&req.control_planes) {
        return Err(invalid(
            "--control-planes",
            &req.control_planes.to_string(),
            "etcd needs an odd number of members: 1, 3 or 5",
        ));
    }
    let gpu_workers = match (req.gpu_workers, req.worker_gpus.len()) {
        (Some(n), given) if given > 0 && n as usize != given => {
            return Err(invalid(
                "--gpu-workers",
                &n.to_string(),
                format!("{given} --worker-gpu selector(s) were given: one per GPU worker"),
            ));
        }
        (_, given) if given > 0 => given as u32,
        (n, _) => n.unwrap_or(0),
    };
    for (opt, n) in [("--workers", req.workers), ("--gpu-workers", gpu_workers)] {
        if n > MAX_WORKERS {
            return Err(invalid(
                opt,
                &n.to_string(),
                format!("at most {MAX_WORKERS}"),
            ));
        }
    }
    let vip = match req.vip.as_deref() {
        None if req.control_planes > 1 => Vip::Auto,
        None => Vip::None,
        Some(v) if crate::address::is_auto(v) => Vip::Auto,
        Some(v) => Vip::Fixed(v.parse().map_err(|_| {
            invalid(
                "--vip",
                v,
                "expected an IPv4 address on the bridge, or auto",
            )
        })?),
    };
    Ok((gpu_workers, vip))
}

/// The nodes by name and size: control planes, then workers, then GPU workers (no GPUs yet).
pub(crate) fn planned_nodes(req: &ClusterRequest, gpu_workers: u32) -> Vec<PlannedNode> {
    let mut nodes = Vec::new();
    let mut add = |prefix: &str, role: Role, count: u32, size: &NodeSize| {
        for i in 1..=count {
            nodes.push(PlannedNode {
                name: format!("{}-{prefix}-{i}", req.name),
                role,
                gpus: Vec::new(),
                cpus: size.cpus,
                memory: size.memory.clone(),
                disk: size.disk.clone(),
            });
        }
    };
    add("cp", Role::Controlplane, req.control_planes, &req.cp);
    add("w", Role::Worker, req.workers, &req.worker);
    add("gpu", Role::Worker, gpu_workers, &req.worker);
    nodes
}

/// Each GPU worker's GPUs: whole GPUs (every function), no GPU for two workers, each worker's
/// checked like `gpu attach` (isolation, boot VGA, host users, other VMs; `force` overrides what
/// `--gpu-force` may). With no selectors, each worker gets one GPU that passes those checks on its
/// own; too few is [`ClusterError::NotEnoughGpus`], naming why each other GPU cannot go.
pub fn allocate_gpus<'a>(
    facts: &'a HostFacts,
    atts: &[Attachment],
    users: &[GpuUser],
    workers: &[String],
    selectors: &[Vec<Selector>],
    force: bool,
) -> Result<Vec<Vec<&'a Gpu>>> {
    let mut out: Vec<Vec<&Gpu>> = Vec::new();
    if !selectors.is_empty() {
        for (vm, sel) in workers.iter().zip(selectors) {
            let gpus = crate::gpu::select(facts, sel, vm, atts)?;
            for g in &gpus {
                if let Some(i) = out.iter().position(|o| o.iter().any(|h| h.bdf == g.bdf)) {
                    return Err(ClusterError::GpuTwice {
                        gpu: g.bdf.clone(),
                        first: workers[i].clone(),
                        second: vm.clone(),
                    }
                    .into());
                }
            }
            crate::gpu::check_selection(facts, vm, &gpus, atts, users, force, "--gpu-force")?;
            // An NVSwitch host's fabric (`create talos` checks it again per node): up front, so
            // a refused GPU node stops the cluster before any node is made.
            crate::gpu::nvswitch::check(facts, vm, &gpus, atts, force, "--gpu-force")?;
            out.push(gpus);
        }
        return Ok(out);
    }
    let mut usable = Vec::new();
    let mut blockers = Vec::new();
    for g in &facts.gpus {
        let refusals: Vec<Refusal> = passthrough::check(facts, &[g], None, atts, users)
            .into_iter()
            .filter(|r| !(force && r.forceable()))
            .collect();
        if refusals.is_empty() {
            usable.push(g);
        } else {
            blockers.extend(refusals);
        }
    }
    if usable.len() < workers.len() {
        return Err(ClusterError::NotEnoughGpus {
            wanted: workers.len(),
            usable: usable.len(),
            blockers,
        }
        .into());
    }
    let out: Vec<Vec<&Gpu>> = usable
        .into_iter()
        .take(workers.len())
        .map(|g| vec![g])
        .collect();
    for (vm, gpus) in workers.iter().zip(&out) {
        crate::gpu::nvswitch::check(facts, vm, gpus, atts, force, "--gpu-force")?;
    }
    Ok(out)
}
