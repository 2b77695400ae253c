//! `vmctl cluster create`: every node's address in one reservation lock, one secrets bundle,
//! every node made by `create talos`'s own steps inside one transaction (a failure or Ctrl-C at
//! any point removes everything this command made), started, then etcd bootstrapped and the
//! kubeconfig fetched through the Talos API; with `--wait`, the health stages of [`super::api`].

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use guest_media::cache::Progress;
use serde::Serialize;
use talos_image::machineconfig::{self, Role};
use talos_image::{ConfigInput, SecretsBundle, TalosVersion};

use super::api::{KubeAccess, Report, TalosApi, Waiting, api_waiting, retry};
use super::plan::{ClusterPlan, ClusterRequest, Vip, plan};
use crate::build::now_rfc3339;
use crate::commands::create::talos::{Step, TalosRequest, apply_claimed, plan_claimed};
use crate::ctx::Ctx;
use crate::error::Result;
use crate::net::NetworkRequest;
use crate::talos::{ClusterDir, ClusterRecord, NodeRecord, write_private};
use crate::transaction::Transaction;

/// Builds the Talos API client once the cluster's talosconfig exists.
pub type ApiFactory<'a> = &'a dyn Fn(&ClusterDir) -> Result<Box<dyn TalosApi>>;

/// One node `cluster create` made.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedNode {
    pub name: String,
    pub role: Role,
    pub ip: Option<Ipv4Addr>,
    pub mac: String,
    pub gpus: Vec<String>,
    pub schematic_id: String,
    pub started: bool,
    /// The `[hosts.NAME]` it runs on (`--hosts`); none: this machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Where the time of a create went, in milliseconds (to 0.01 ms: a node's config takes less
/// than one).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Timings {
    /// The secrets bundle (the RSA-4096 service-account key is most of it).
    pub key_generation_ms: f64,
    /// Every node's machine config and seed files, and the talosconfig.
    pub configs_ms: f64,
    /// Disks, seed volumes and domain definitions (image fetches from the cache included).
    pub domains_ms: f64,
    pub total_ms: f64,
}

/// What `cluster create` made.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterCreated {
    pub name: String,
    pub version: TalosVersion,
    pub endpoint: String,
    pub vip: Option<Ipv4Addr>,
    pub bridge: String,
    pub nodes: Vec<CreatedNode>,
    pub cluster_dir: PathBuf,
    pub talosconfig: PathBuf,
    /// Written once etcd is bootstrapped.
    pub kubeconfig: Option<PathBuf>,
    pub started: bool,
    pub bootstrapped: bool,
    /// `--wait` saw etcd, the API server and every node ready.
    pub healthy: bool,
    pub timings: Timings,
    pub next_steps: Vec<Step>,
}

pub(super) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

/// Makes the cluster (see the module doc).
pub fn create(
    ctx: &Ctx,
    req: &ClusterRequest,
    api: ApiFactory,
    progress: &dyn Progress,
    report: &dyn Report,
) -> Result<ClusterCreated> {
    let started_at = Instant::now();
    let mut created = if req.hosts.is_empty() {
        create_here(ctx, req, api, progress, report)?
    } else {
        super::spread::create(ctx, req, api, progress, report)?
    };
    created.timings.total_ms = ms(started_at.elapsed());
    if created.bootstrapped && req.wait {
        let dir = ClusterDir::new(ctx.host, ctx.config, &created.name);
        let record = dir.load_record()?;
        let api = api(&dir)?;
        wait_healthy(ctx, &dir, &record, api.as_ref(), req.timeout, report)?;
        created.healthy = true;
    }
    Ok(created)
}

/// [`create`] with every node on this machine.
fn create_here(
    ctx: &Ctx,
    req: &ClusterRequest,
    api: ApiFactory,
    progress: &dyn Progress,
    report: &dyn Report,
) -> Result<ClusterCreated> {
    let plan = plan(ctx, req)?;
    let dir = ClusterDir::new(ctx.host, ctx.config, &plan.name);
    let mut rb = Transaction::new(ctx.hv);
    let storage = ctx.config.storage_dir(ctx.host);
    for n in &plan.nodes {
        rb.claim_dir(&crate::storage::vm_dir(&storage, &n.name), &n.name)?;
    }

    // Addresses: every node and the VIP, from one scan and one reservation lock.
    let mut owners: Vec<String> = plan.nodes.iter().map(|n| n.name.clone()).collect();
    let vip_owner = format!("{}-vip", plan.name);
    let fixed = match plan.vip {
        Vip::Fixed(ip) => vec![(vip_owner.clone(), ip)],
        Vip::Auto => {
            owners.push(vip_owner.clone());
            Vec::new()
        }
        Vip::None => Vec::new(),
    };
    report.stage(&format!(
        "claiming {} address(es) on {}",
        owners.len() + fixed.len(),
        plan.bridge
    ));
    let claims = crate::address::claim_many(
        ctx,
        &owners,
        &fixed,
        &plan.bridge,
        req.gateway.as_deref(),
        &req.dns,
    )?;
    let result = make(
        ctx, req, &plan, &dir, &claims, api, &mut rb, progress, report,
    );
    let ok = result.is_ok();
    for (c, _) in claims {
        c.settle(ok);
    }
    let created = result?;
    rb.commit();
    Ok(created)
}

/// Everything after the claims, in `rb`.
#[allow(clippy::too_many_arguments)]
fn make(
    ctx: &Ctx,
    req: &ClusterRequest,
    plan: &ClusterPlan,
    dir: &ClusterDir,
    claims: &[(crate::address::Claim, crate::net::StaticIp)],
    api: ApiFactory,
    rb: &mut Transaction,
    progress: &dyn Progress,
    report: &dyn Report,
) -> Result<ClusterCreated> {
    let addr = |i: usize| claims[i].1.address.addr();
    let vip = (plan.vip != Vip::None).then(|| addr(plan.nodes.len()));
    let first_cp = addr(0);
    let endpoint = format!("https://{}:6443", vip.unwrap_or(first_cp));
    let mut timings = Timings::default();

    report.stage("generating the cluster's keys and certificates");
    let t = Instant::now();
    let secrets = SecretsBundle::generate(&plan.version)?;
    timings.key_generation_ms = ms(t.elapsed());
    dir.create(rb)?;
    write_private(&dir.secrets(), secrets.to_yaml()?.as_bytes())?;
    let nodes: Vec<NodeRecord> = plan
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| NodeRecord {
            host: None,
            name: n.name.clone(),
            role: n.role,
            ip: Some(addr(i)),
            gpus: n.gpus.clone(),
        })
        .collect();
    let record = ClusterRecord {
        name: plan.name.clone(),
        endpoint: endpoint.clone(),
        version: plan.version.clone(),
        created: now_rfc3339(),
        vip,
        gpu: plan.nodes.iter().any(|n| !n.gpus.is_empty()),
        nodes,
    };
    dir.save_record(&record, true)?;
    let t = Instant::now();
    let mut input = ConfigInput::new(&plan.name, &endpoint, plan.version.clone());
    input.talos_endpoints = record
        .control_planes()
        .filter_map(|n| n.ip.map(|i| i.to_string()))
        .collect();
    let tc = machineconfig::talosconfig(&input, &secrets, time::OffsetDateTime::now_utc())?;
    write_private(&dir.talosconfig(), tc.as_bytes())?;
    timings.configs_ms = ms(t.elapsed());

    let mut made = Vec::new();
    for (i, n) in plan.nodes.iter().enumerate() {
        ctx.check_cancelled(
            || format!("the create of cluster {}", plan.name),
            || "nothing was kept but the image cache; run the same command again".into(),
        )?;
        report.stage(&format!(
            "node {}/{}: {} ({}{}, {})",
            i + 1,
            plan.nodes.len(),
            n.name,
            n.role.as_str(),
            if n.gpus.is_empty() {
                String::new()
            } else {
                format!(", GPU {}", n.gpus.join(" + "))
            },
            addr(i)
        ));
        let mut r = TalosRequest::new(&n.name);
        r.role = n.role;
        r.cluster = Some(plan.name.clone());
        r.gpus = n.gpus.clone();
        r.gpu_force = req.gpu_force;
        r.nvidia = req.nvidia;
        r.driver = req.driver;
        r.network = NetworkRequest::Static {
            ip: claims[i].1.address.to_string(),
            gateway: req.gateway.clone(),
            dns: req.dns.clone(),
        };
        r.cpus = n.cpus;
        r.memory = n.memory.clone();
        r.disk = Some(n.disk.clone());
        r.bridge = Some(plan.bridge.clone());
        r.no_start = true;
        if n.role == Role::Controlplane {
            r.vip = vip;
        }
        let node_plan = plan_claimed(ctx, &r, true)?;
        let c = apply_claimed(ctx, &r, &node_plan, rb, progress)?;
        timings.configs_ms += ms(c.timings.config);
        timings.domains_ms += ms(c.timings.domain);
        made.push(CreatedNode {
            name: c.name,
            role: n.role,
            ip: Some(addr(i)),
            mac: c.mac,
            gpus: n.gpus.clone(),
            schematic_id: c.schematic_id,
            started: false,
            host: None,
        });
    }

    let mut created = ClusterCreated::made(&record, plan.bridge.clone(), made, dir, timings);
    start_and_bootstrap(ctx, req, dir, &record, &mut created, api, report)?;
    Ok(created)
}

impl ClusterCreated {
    /// The cluster as made, nothing started yet.
    pub(super) fn made(
        record: &ClusterRecord,
        bridge: String,
        nodes: Vec<CreatedNode>,
        dir: &ClusterDir,
        timings: Timings,
    ) -> Self {
        ClusterCreated {
            name: record.name.clone(),
            version: record.version.clone(),
            endpoint: record.endpoint.clone(),
            vip: record.vip,
            bridge,
            nodes,
            cluster_dir: dir.dir.clone(),
            talosconfig: dir.talosconfig(),
            kubeconfig: None,
            started: false,
            bootstrapped: false,
            healthy: false,
            timings,
            next_steps: Vec::new(),
        }
    }
}

/// Unless `--no-start`: starts every node (each on its host), bootstraps etcd and fetches the
/// kubeconfig. Then the next steps.
pub(super) fn start_and_bootstrap(
    ctx: &Ctx,
    req: &ClusterRequest,
    dir: &ClusterDir,
    record: &ClusterRecord,
    created: &mut ClusterCreated,
    api: ApiFactory,
    report: &dyn Report,
) -> Result<()> {
    if !req.no_start {
        for n in &mut created.nodes {
            report.stage(&format!("starting {}", n.name));
            super::spread::start_node(ctx, n.host.as_deref(), &n.name)?;
            n.started = true;
        }
        created.started = true;
        let api = api(dir)?;
        created.kubeconfig = Some(bootstrap(
            ctx,
            dir,
            record,
            api.as_ref(),
            req.timeout,
            report,
        )?);
        created.bootstrapped = true;
    }
    created.next_steps = next_steps(dir, record, created.bootstrapped);
    Ok(())
}

/// Bootstraps etcd on the first control plane (retried until its API answers; a cluster already
/// bootstrapped is fine) and writes the admin kubeconfig (0600). Returns its path.
pub fn bootstrap(
    ctx: &Ctx,
    dir: &ClusterDir,
    record: &ClusterRecord,
    api: &dyn TalosApi,
    timeout: Duration,
    report: &dyn Report,
) -> Result<PathBuf> {
    let started = Instant::now();
    let deadline = started + timeout;
    let cp = first_control_plane(record)?;
    let ip = cp.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let stage = format!("bootstrapping etcd on {} ({ip})", cp.name);
    report.stage(&stage);
    retry(ctx, &stage, deadline, started, report, || {
        api.bootstrap(ip)
            .map_err(|e| api_waiting(&cp.name, ip, "Bootstrap", e))
    })?;
    let stage = format!("fetching the kubeconfig from {}", cp.name);
    report.stage(&stage);
    let kubeconfig = retry(ctx, &stage, deadline, started, report, || {
        api.kubeconfig(ip)
            .map_err(|e| api_waiting(&cp.name, ip, "Kubeconfig", e))
    })?;
    let path = dir.kubeconfig();
    hostio::file::write_atomic(&path, &kubeconfig, 0o600).map_err(|source| {
        crate::talos::TalosError::WriteFile {
            path: path.clone(),
            source,
        }
    })?;
    Ok(path)
}

fn first_control_plane(record: &ClusterRecord) -> Result<&NodeRecord> {
    record
        .control_planes()
        .find(|n| n.ip.is_some())
        .ok_or_else(|| {
            crate::Error::from(crate::talos::TalosError::NoEndpoint {
                cluster: record.name.clone(),
            })
        })
}

/// `--wait`: etcd has every control plane as a member, the Kubernetes API answers `/readyz`,
/// and every node of the record is Ready; a line per stage, one overall timeout.
pub fn wait_healthy(
    ctx: &Ctx,
    dir: &ClusterDir,
    record: &ClusterRecord,
    api: &dyn TalosApi,
    timeout: Duration,
    report: &dyn Report,
) -> Result<()> {
    let started = Instant::now();
    let deadline = started + timeout;
    let cp = first_control_plane(record)?;
    let ip = cp.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let want: Vec<&str> = record.control_planes().map(|n| n.name.as_str()).collect();
    let stage = format!("etcd: {} member(s)", want.len());
    report.stage(&stage);
    retry(ctx, &stage, deadline, started, report, || {
        let members = api
            .etcd_members(ip)
            .map_err(|e| api_waiting(&cp.name, ip, "EtcdMemberList", e))?;
        let voting = members.iter().filter(|m| !m.is_learner).count();
        if voting == want.len() {
            Ok(())
        } else {
            Err(Waiting::NotYet(format!(
                "{voting} of {} members",
                want.len()
            )))
        }
    })?;
    let text = std::fs::read_to_string(dir.kubeconfig()).map_err(|source| {
        crate::talos::TalosError::ReadFile {
            path: dir.kubeconfig(),
            source,
        }
    })?;
    let kube = KubeAccess::from_kubeconfig(&text).map_err(|what| super::ClusterError::Kube {
        url: dir.kubeconfig().display().to_string(),
        what,
    })?;
    let stage = format!("Kubernetes API {}/readyz", kube.server);
    report.stage(&stage);
    retry(ctx, &stage, deadline, started, report, || {
        kube.ready().map_err(Waiting::NotYet)
    })?;
    let stage = format!("{} node(s) Ready", record.nodes.len());
    report.stage(&stage);
    retry(ctx, &stage, deadline, started, report, || {
        let nodes = kube.nodes().map_err(Waiting::NotYet)?;
        let not_ready: Vec<&str> = record
            .nodes
            .iter()
            .filter(|n| !nodes.iter().any(|(name, ready)| *name == n.name && *ready))
            .map(|n| n.name.as_str())
            .collect();
        if not_ready.is_empty() {
            Ok(())
        } else {
            Err(Waiting::NotYet(format!(
                "not Ready: {}",
                not_ready.join(", ")
            )))
        }
    })
}

/// What to run next, as command lines that work as printed.
pub fn next_steps(dir: &ClusterDir, record: &ClusterRecord, bootstrapped: bool) -> Vec<Step> {
    let s = |what: &str, argv: &[&str]| Step {
        what: what.into(),
        argv: argv.iter().map(|a| a.to_string()).collect(),
        done: false,
    };
    let kc = dir.kubeconfig().display().to_string();
    let tc = dir.talosconfig().display().to_string();
    let mut out = Vec::new();
    if !bootstrapped {
        for n in &record.nodes {
            let mut argv = vec!["vmctl"];
            if let Some(h) = &n.host {
                argv.extend(["--host", h]);
            }
            argv.extend(["start", &n.name]);
            out.push(s(&format!("start {}", n.name), &argv));
        }
        out.push(s(
            "bootstrap etcd, fetch the kubeconfig and wait for every node",
            &["vmctl", "cluster", "bootstrap", &record.name, "--wait"],
        ));
    }
    out.push(s(
        "list the nodes",
        &["kubectl", "--kubeconfig", &kc, "get", "nodes", "-o", "wide"],
    ));
    if let Some(cp) = record.control_planes().find_map(|n| n.ip) {
        let cp = cp.to_string();
        out.push(s(
            "check the cluster's health through the Talos API",
            &["talosctl", "--talosconfig", &tc, "--nodes", &cp, "health"],
        ));
    }
    if record.gpu {
        out.push(s(
            "see each GPU worker's nvidia.com/gpu (pods ask for it with runtimeClassName: nvidia)",
            &[
                "kubectl",
                "--kubeconfig",
                &kc,
                "get",
                "nodes",
                "-l",
                "nvidia.com/gpu.present=true",
                "-o",
                "custom-columns=NAME:.metadata.name,GPUS:.status.allocatable.nvidia\\.com/gpu",
            ],
        ));
    }
    out
}
