//! `vmctl cluster …` on the binary side: arguments (clap) and the rendering of
//! [`vmctl::commands::cluster`] results as text or JSON.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::ProgressBar;
use vmctl::Error;
use vmctl::commands::cluster::api::{NativeApi, Report, TalosApi};
use vmctl::commands::cluster::ops::{self, AddWorker, ClusterView, Credential, Removed};
use vmctl::commands::cluster::{self, ClusterCreated, ClusterRequest, NodeSize};
use vmctl::commands::create::talos::{BOOTSTRAP_TIMEOUT, Step, TalosCreated};
use vmctl::ctx::Ctx;
use vmctl::talos::ClusterDir;

use crate::cli_talos::{DriverArg, FlavourArg};
use crate::{Bar, esc, out, out_json, table};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Create a Talos Kubernetes cluster on the host bridge: control planes, workers and GPU
    /// workers (whole GPUs each, the NVIDIA device plugin included), every address from one
    /// scan, etcd bootstrapped and the kubeconfig fetched through the Talos API (no talosctl)
    Create(Box<CreateArgs>),
    /// The clusters vmctl made, with their nodes and state
    List,
    /// One cluster: endpoint, version, nodes, roles, addresses, GPUs and state
    Show {
        /// Cluster name (`vmctl cluster list`)
        name: String,
    },
    /// Print the path of the cluster's admin kubeconfig, or copy it with --out
    Kubeconfig(CredentialArgs),
    /// Print the path of the cluster's talosconfig, or copy it with --out
    Talosconfig(CredentialArgs),
    /// Bootstrap etcd on the first control plane and fetch the kubeconfig (after `create
    /// --no-start` and `vmctl start`); safe to repeat
    Bootstrap {
        /// Cluster name (`vmctl cluster list`)
        name: String,
        /// Then wait until etcd has every control plane, the API server is ready and every
        /// node is Ready
        #[arg(long)]
        wait: bool,
        /// Seconds the bootstrap and --wait may take
        #[arg(long, default_value_t = 900, value_name = "SECS")]
        timeout: u64,
    },
    /// Add a worker (`<cluster>-w-N`), or a GPU worker (`<cluster>-gpu-N`) with --gpu
    AddWorker(Box<AddWorkerArgs>),
    /// Remove a node: a control plane leaves etcd first; then its VM is deleted and its address
    /// released
    RemoveNode {
        /// Cluster name (`vmctl cluster list`)
        name: String,
        /// The node's VM name (`vmctl cluster show NAME`)
        node: String,
        /// Delete the VM even when the control plane cannot be taken out of etcd
        #[arg(long)]
        force: bool,
    },
    /// Remove every VM, disk, seed, address reservation and the secrets of a cluster; lists
    /// what it removed
    Destroy {
        /// Cluster name (`vmctl cluster list`)
        name: String,
        /// Required: the cluster's keys are gone for good
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct CredentialArgs {
    /// Cluster name (`vmctl cluster list`)
    name: String,
    /// Write a copy here (mode 0600) instead of printing the path
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Replace an existing --out file
    #[arg(long, requires = "out")]
    force: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Cluster name, a DNS label; nodes are NAME-cp-N, NAME-w-N and NAME-gpu-N (default: the
    /// first free cluster-N)
    name: Option<String>,
    /// Control planes: 1, 3 or 5 (more than one share a VIP)
    #[arg(long, default_value_t = 1, value_name = "N")]
    control_planes: u32,
    /// Workers without GPUs
    #[arg(long, default_value_t = 0, value_name = "N")]
    workers: u32,
    /// Workers with a whole GPU each, picked from the isolated GPUs (`vmctl gpu status`)
    #[arg(long, value_name = "N")]
    gpu_workers: Option<u32>,
    /// One GPU worker's GPUs (BDF, index, `group:N`; a comma list gives it several);
    /// repeatable, one per GPU worker
    #[arg(long = "worker-gpu", value_name = "SELECTOR")]
    worker_gpus: Vec<String>,
    /// The control planes' shared address: an IPv4 address on the bridge, or `auto` (the
    /// default with more than one control plane)
    #[arg(long, value_name = "IP|auto")]
    vip: Option<String>,
    /// Talos version vX.Y.Z (default: latest stable)
    #[arg(long, value_name = "vX.Y.Z")]
    version: Option<String>,
    /// Allow a pre-release --version
    #[arg(long)]
    allow_prerelease: bool,
    /// Control plane vCPUs
    #[arg(long, default_value_t = 2, value_name = "N")]
    cp_cpus: u32,
    /// Control plane memory: MiB, or with a unit (4G)
    #[arg(long, default_value = "4096", value_name = "SIZE")]
    cp_memory: String,
    /// Control plane disk
    #[arg(long, default_value = "20G", value_name = "SIZE")]
    cp_disk: String,
    /// Worker vCPUs (GPU workers too)
    #[arg(long, default_value_t = 2, value_name = "N")]
    worker_cpus: u32,
    /// Worker memory
    #[arg(long, default_value = "4096", value_name = "SIZE")]
    worker_memory: String,
    /// Worker disk
    #[arg(long, default_value = "20G", value_name = "SIZE")]
    worker_disk: String,
    /// Host bridge (default: setting `bridge`, br0)
    #[arg(long)]
    bridge: Option<String>,
    /// Default gateway of the nodes
    #[arg(long)]
    gateway: Option<String>,
    /// DNS server of the nodes (repeatable)
    #[arg(long)]
    dns: Vec<String>,
    /// Override the isolation, boot VGA and host-use refusals of the GPU checks
    #[arg(long)]
    gpu_force: bool,
    /// NVIDIA extension flavour of GPU workers
    #[arg(long, value_enum, default_value = "production", value_name = "FLAVOUR")]
    nvidia: FlavourArg,
    /// NVIDIA kernel modules (default: from the GPUs' architecture)
    #[arg(long, value_enum)]
    driver: Option<DriverArg>,
    /// Define every VM but start none (and bootstrap nothing)
    #[arg(long)]
    no_start: bool,
    /// After the bootstrap, wait until etcd has every control plane, the API server is ready
    /// and every node is Ready
    #[arg(long, conflicts_with = "no_start")]
    wait: bool,
    /// Seconds the bootstrap and --wait may take
    #[arg(long, default_value_t = 900, value_name = "SECS")]
    timeout: u64,
    /// Spread the nodes over these hosts (`[hosts.NAME]` of the config, `local` for this
    /// machine; `vmctl hosts list`): control planes on distinct hosts, GPU workers where free
    /// isolated GPUs are, addresses free in every host's scan. The secrets stay here; each
    /// node's config goes to its host over SSH
    #[arg(long, value_delimiter = ',', value_name = "H1,H2,…")]
    hosts: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AddWorkerArgs {
    /// Cluster name (`vmctl cluster list`)
    name: String,
    /// GPUs for a GPU worker (BDF, index, `group:N`; repeatable)
    #[arg(long = "gpu", value_name = "SELECTOR")]
    gpus: Vec<String>,
    /// Override the isolation, boot VGA and host-use refusals
    #[arg(long)]
    gpu_force: bool,
    /// Virtual CPUs
    #[arg(long, default_value_t = 2, value_name = "N")]
    cpus: u32,
    /// Memory: MiB, or with a unit (4G)
    #[arg(long, default_value = "4096", value_name = "SIZE")]
    memory: String,
    /// Disk size
    #[arg(long, default_value = "20G", value_name = "SIZE")]
    disk: String,
    /// Define the VM but do not start it
    #[arg(long)]
    no_start: bool,
}

/// Progress lines on stderr (none with --json), a spinner while a stage waits.
struct Lines {
    spinner: Option<ProgressBar>,
}

impl Lines {
    fn new(json: bool) -> Self {
        let spinner = (!json).then(|| {
            let s = ProgressBar::new_spinner();
            s.enable_steady_tick(Duration::from_millis(120));
            s
        });
        Lines { spinner }
    }
}

impl Report for Lines {
    fn stage(&self, line: &str) {
        if let Some(s) = &self.spinner {
            s.suspend(|| clikit::errln(&clikit::escape(line)));
        }
    }
    fn status(&self, line: &str) {
        if let Some(s) = &self.spinner {
            s.set_message(clikit::escape(line).into_owned());
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        if let Some(s) = &self.spinner {
            s.finish_and_clear();
        }
    }
}

fn native(dir: &ClusterDir) -> Result<Box<dyn TalosApi>, Error> {
    Ok(Box::new(NativeApi::for_cluster(dir)?))
}

/// The first `cluster-N` with no cluster directory.
fn default_name(ctx: &Ctx) -> String {
    (1..)
        .map(|i| format!("cluster-{i}"))
        .find(|n| !ClusterDir::new(ctx.host, ctx.config, n).exists())
        .unwrap_or_default()
}

pub fn run(cmd: ClusterCommand, ctx: &Ctx, json: bool) -> Result<(), Error> {
    match cmd {
        ClusterCommand::Create(a) => {
            let mut r = ClusterRequest::new(&a.name.clone().unwrap_or_else(|| default_name(ctx)));
            r.control_planes = a.control_planes;
            r.workers = a.workers;
            r.gpu_workers = a.gpu_workers;
            r.worker_gpus = a.worker_gpus;
            r.vip = a.vip;
            r.version = a.version;
            r.allow_prerelease = a.allow_prerelease;
            r.cp = NodeSize {
                cpus: a.cp_cpus,
                memory: a.cp_memory,
                disk: a.cp_disk,
            };
            r.worker = NodeSize {
                cpus: a.worker_cpus,
                memory: a.worker_memory,
                disk: a.worker_disk,
            };
            r.bridge = a.bridge;
            r.gateway = a.gateway;
            r.dns = a.dns;
            r.gpu_force = a.gpu_force;
            r.nvidia = a.nvidia.into();
            r.hosts = a.hosts;
            r.driver = a.driver.map(Into::into);
            r.no_start = a.no_start;
            r.wait = a.wait;
            r.timeout = Duration::from_secs(a.timeout);
            let bar = Bar(ProgressBar::new(0));
            let lines = Lines::new(json);
            let c = cluster::create(ctx, &r, &native, &bar, &lines)?;
            drop(lines);
            if json {
                out_json(&c);
            } else {
                out(&render_created(&c));
            }
        }
        ClusterCommand::List => {
            let l = ops::list(ctx)?;
            if json {
                out_json(&l);
            } else if l.is_empty() {
                clikit::errln("no clusters; `vmctl cluster create NAME` makes one");
            } else {
                let rows: Vec<Vec<String>> = l
                    .iter()
                    .map(|c| {
                        vec![
                            c.name.clone(),
                            c.version.clone(),
                            c.endpoint.clone(),
                            c.nodes.len().to_string(),
                            c.nodes
                                .iter()
                                .map(|n| n.gpus.len())
                                .sum::<usize>()
                                .to_string(),
                            c.state.clone(),
                        ]
                    })
                    .collect();
                let head = ["NAME", "VERSION", "ENDPOINT", "NODES", "GPUS", "STATE"];
                out(&table(
                    [head.map(String::from).to_vec()]
                        .into_iter()
                        .chain(rows)
                        .collect(),
                ));
            }
        }
        ClusterCommand::Show { name } => {
            let v = ops::show(ctx, &name)?;
            if json {
                out_json(&v);
            } else {
                out(&render_view(&v));
            }
        }
        ClusterCommand::Kubeconfig(a) => credential(ctx, a, Credential::Kubeconfig, json)?,
        ClusterCommand::Talosconfig(a) => credential(ctx, a, Credential::Talosconfig, json)?,
        ClusterCommand::Bootstrap {
            name,
            wait,
            timeout,
        } => {
            let (dir, record) = ops::open(ctx, &name)?;
            let api = native(&dir)?;
            let lines = Lines::new(json);
            let t = Duration::from_secs(timeout);
            let path = cluster::create::bootstrap(ctx, &dir, &record, api.as_ref(), t, &lines)?;
            if wait {
                cluster::create::wait_healthy(ctx, &dir, &record, api.as_ref(), t, &lines)?;
            }
            drop(lines);
            if json {
                out_json(&serde_json::json!({
                    "cluster": name, "kubeconfig": path, "healthy": wait,
                }));
            } else {
                out(&format!("{}\n", esc(&path.display().to_string())));
            }
        }
        ClusterCommand::AddWorker(a) => {
            let req = AddWorker {
                gpus: a.gpus,
                gpu_force: a.gpu_force,
                size: NodeSize {
                    cpus: a.cpus,
                    memory: a.memory,
                    disk: a.disk,
                },
                no_start: a.no_start,
            };
            let bar = Bar(ProgressBar::new(0));
            let c = ops::add_worker(ctx, &a.name, &req, &bar)?;
            if json {
                out_json(&c);
            } else {
                out(&format!(
                    "{} joined cluster {} ({}{})\n",
                    esc(&c.name),
                    esc(&c.cluster),
                    c.ip.as_deref().unwrap_or("dhcp"),
                    if c.started { ", started" } else { ", defined" }
                ));
            }
        }
        ClusterCommand::RemoveNode { name, node, force } => {
            let (dir, _) = ops::open(ctx, &name)?;
            let api = native(&dir)?;
            let r = ops::remove_node(ctx, api.as_ref(), &name, &node, force)?;
            render_removed(&r, json);
        }
        ClusterCommand::Destroy { name, yes } => {
            let r = ops::destroy(ctx, &name, yes)?;
            render_removed(&r, json);
        }
    }
    Ok(())
}

/// `create talos --bootstrap`: the new cluster's first control plane bootstrapped through the
/// Talos API once it answers, its kubeconfig fetched; the printed step is then done.
pub fn bootstrap_created(ctx: &Ctx, created: &mut TalosCreated, json: bool) -> Result<(), Error> {
    let (dir, record) = ops::open(ctx, &created.cluster)?;
    let api = native(&dir)?;
    let lines = Lines::new(json);
    cluster::create::bootstrap(ctx, &dir, &record, api.as_ref(), BOOTSTRAP_TIMEOUT, &lines)?;
    for s in &mut created.next_steps {
        if s.argv.get(1).map(String::as_str) == Some("cluster") {
            s.done = true;
        }
    }
    Ok(())
}

fn credential(ctx: &Ctx, a: CredentialArgs, which: Credential, json: bool) -> Result<(), Error> {
    let p = ops::credential(ctx, &a.name, which, a.out.as_deref(), a.force)?;
    if json {
        out_json(&serde_json::json!({ "cluster": a.name, "path": p }));
    } else {
        out(&format!("{}\n", esc(&p.display().to_string())));
    }
    Ok(())
}

fn render_removed(r: &Removed, json: bool) {
    if json {
        return out_json(r);
    }
    let mut s = String::new();
    for e in &r.etcd {
        s += &format!("etcd:     {}\n", esc(e));
    }
    for v in &r.vms {
        s += &format!("vm:       {}\n", esc(v));
    }
    for p in &r.paths {
        s += &format!("removed:  {}\n", esc(&p.display().to_string()));
    }
    for p in &r.remote_paths {
        s += &format!("removed:  {}\n", esc(p));
    }
    for a in &r.addresses {
        s += &format!("released: {a}\n");
    }
    for k in &r.kept {
        s += &format!("kept:     {}\n", esc(k));
    }
    out(&s);
}

fn render_steps(steps: &[Step]) -> String {
    let mut s = String::new();
    if !steps.is_empty() {
        s += "next steps:\n";
    }
    for st in steps {
        s += &format!(
            "  # {}\n  {}\n",
            esc(&st.what),
            esc(&crate::render::shell_line(&st.argv))
        );
    }
    s
}

fn render_created(c: &ClusterCreated) -> String {
    let mut s = format!(
        "cluster {} (Talos {}), endpoint {}\n",
        esc(&c.name),
        c.version,
        esc(&c.endpoint)
    );
    for n in &c.nodes {
        let on = n
            .host
            .as_deref()
            .map(|h| format!(" on {}", esc(h)))
            .unwrap_or_default();
        s += &format!(
            "  {:<24} {:<13} {:<15} {}{on}\n",
            esc(&n.name),
            n.role.as_str(),
            n.ip.map(|i| i.to_string()).unwrap_or_default(),
            if n.gpus.is_empty() {
                String::new()
            } else {
                format!("GPU {}", n.gpus.join(", "))
            }
        );
    }
    s += &format!(
        "talosconfig: {}\n",
        esc(&c.talosconfig.display().to_string())
    );
    if let Some(k) = &c.kubeconfig {
        s += &format!("kubeconfig:  {}\n", esc(&k.display().to_string()));
    }
    s += &format!(
        "time: keys {:.0} ms, configs {:.1} ms, domains {:.0} ms, total {:.0} ms\n",
        c.timings.key_generation_ms, c.timings.configs_ms, c.timings.domains_ms, c.timings.total_ms
    );
    s + &render_steps(&c.next_steps)
}

fn render_view(v: &ClusterView) -> String {
    let mut s = format!(
        "cluster:     {}\nversion:     {}\nendpoint:    {}\nstate:       {}\ntalosconfig: {}\n",
        esc(&v.name),
        v.version,
        esc(&v.endpoint),
        v.state,
        esc(&v.talosconfig.display().to_string())
    );
    if let Some(k) = &v.kubeconfig {
        s += &format!("kubeconfig:  {}\n", esc(&k.display().to_string()));
    }
    // A HOST column when the nodes are spread over hosts (`create --hosts`).
    let spread = v.nodes.iter().any(|n| n.host.is_some());
    let rows: Vec<Vec<String>> = v
        .nodes
        .iter()
        .map(|n| {
            let mut row = vec![n.name.clone(), n.role.as_str().into()];
            if spread {
                row.push(n.host.clone().unwrap_or_else(|| "local".into()));
            }
            row.extend([
                n.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
                if n.gpus.is_empty() {
                    "-".into()
                } else {
                    n.gpus.join(",")
                },
                n.state.clone(),
            ]);
            row
        })
        .collect();
    let mut head = vec!["NODE", "ROLE"];
    if spread {
        head.push("HOST");
    }
    head.extend(["IP", "GPUS", "STATE"]);
    let head: Vec<String> = head.into_iter().map(String::from).collect();
    s + &table([head].into_iter().chain(rows).collect())
}
