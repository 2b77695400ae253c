//! `vmctl cluster …` (issue 16): a Talos Kubernetes cluster of VMs on the host bridge in one
//! command, GPU workers included, bootstrapped through the Talos API with no `talosctl`.
//!
//! - [`plan`]: the request checked against the host before anything is made: names, counts,
//!   sizes, the version, and each GPU worker's whole GPUs ([`plan::allocate_gpus`]).
//! - [`create`]: the addresses (one scan, one reservation lock), the secrets, every node made
//!   through `create talos`'s own steps in one transaction, started, bootstrapped.
//! - [`api`]: the Talos API calls (through the `talos-api` crate) and the health stages of
//!   `--wait` (etcd members, the Kubernetes API's `/readyz`, every node Ready).
//! - [`ops`]: `list`, `show`, `kubeconfig`, `talosconfig`, `add-worker`, `remove-node`,
//!   `destroy`, and the refusal of a plain `vmctl delete` of a node.
//!
//! The cluster's state is `crate::talos::ClusterDir`: secrets, `cluster.json` (which lists the
//! nodes), `talosconfig` and `kubeconfig`, all 0600 in a 0700 directory.

pub mod api;
pub mod create;
pub mod ops;
pub mod plan;
pub mod spread;

use std::path::PathBuf;

use passthrough::Refusal;

use crate::error::{CommandFailure, Error, ExitKind, Failure};

pub use create::{ClusterCreated, create};
pub use plan::{ClusterPlan, ClusterRequest, NodeSize, PlannedNode, plan};

/// Errors of the cluster commands.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no cluster {cluster:?} ({dir} does not exist)")]
    NoSuchCluster { cluster: String, dir: PathBuf },
    #[error(
        "{wanted} GPU worker(s) need {wanted} GPU(s) that can be passed whole, and this host has {usable}:\n{}",
        blockers.iter().map(|r| format!("  - {}", r.reason())).collect::<Vec<_>>().join("\n")
    )]
    NotEnoughGpus {
        wanted: usize,
        usable: usize,
        blockers: Vec<Refusal>,
    },
    #[error("GPU {gpu} is given to both {first} and {second}: each GPU worker gets its own GPUs")]
    GpuTwice {
        gpu: String,
        first: String,
        second: String,
    },
    #[error("VM `{vm}` is a node of cluster {cluster:?}")]
    ClusterNode { vm: String, cluster: String },
    #[error("`{node}` is not a node of cluster {cluster:?}")]
    NoSuchNode { cluster: String, node: String },
    #[error("`{node}` is the last control plane of cluster {cluster:?}")]
    LastControlPlane { cluster: String, node: String },
    #[error(
        "destroying cluster {cluster:?} removes its {nodes} VM(s), their disks and its secrets"
    )]
    NotConfirmed { cluster: String, nodes: usize },
    #[error("the Talos API of {node} ({ip}): {what}")]
    Api {
        node: String,
        ip: String,
        what: String,
        #[source]
        source: talos_api::Error,
    },
    #[error("control plane `{node}` could not be taken out of etcd: {why}")]
    EtcdLeave { node: String, why: String },
    #[error("{stage} did not happen within {secs} s: {last}")]
    Timeout {
        stage: String,
        secs: u64,
        last: String,
    },
    #[error("the Kubernetes API at {url}: {what}")]
    Kube { url: String, what: String },
    #[error("{path} already exists")]
    OutputExists { path: PathBuf },
    #[error("host {host}: `{command}` failed{}: {error}", status.map(|s| format!(" (exit {s})")).unwrap_or_default())]
    Remote {
        host: String,
        command: String,
        status: Option<i32>,
        error: String,
        help: Vec<String>,
    },
    #[error(
        "{control_planes} control planes need {control_planes} distinct hosts, and --hosts names {}: {}",
        hosts.len(), hosts.join(", ")
    )]
    ControlPlanesNotSpread {
        control_planes: usize,
        hosts: Vec<String>,
    },
    #[error(
        "{wanted} GPU worker(s) need {wanted} free isolated GPU(s), and the hosts have {}:\n{}",
        hosts.iter().map(|(_, n)| n).sum::<usize>(),
        hosts.iter().map(|(h, n)| format!("  - {h}: {n} free")).collect::<Vec<_>>().join("\n")
    )]
    NotEnoughGpusAcross {
        wanted: usize,
        hosts: Vec<(String, usize)>,
    },
    #[error(
        "{} host(s) did not answer, and every host of --hosts must:\n{}",
        hosts.len(),
        hosts.iter().map(|(h, e)| format!("  - {h}: {e}")).collect::<Vec<_>>().join("\n")
    )]
    HostsDown { hosts: Vec<(String, String)> },
    #[error(
        "the nodes must share one LAN, and the hosts' bridges are on different subnets:\n{}",
        subnets.iter().map(|(h, s)| format!("  - {h}: {s}")).collect::<Vec<_>>().join("\n")
    )]
    NotOneLan { subnets: Vec<(String, String)> },
    #[error(
        "host {host} runs vmctl {theirs}, and this machine {}",
        crate::hosts::this_version()
    )]
    OtherVersion {
        host: String,
        theirs: String,
        help: String,
    },
    #[error("{wanted} address(es) are needed in {subnet}, and {free} are free on every host")]
    NoAddresses {
        subnet: String,
        wanted: usize,
        free: usize,
    },
}

impl CommandFailure for ClusterError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            ClusterError::Api { .. }
            | ClusterError::EtcdLeave { .. }
            | ClusterError::Timeout { .. }
            | ClusterError::Kube { .. }
            | ClusterError::HostsDown { .. } => ExitKind::Failure,
            ClusterError::Remote { status, .. } if *status != Some(2) => ExitKind::Failure,
            _ => ExitKind::Usage,
        }
    }

    fn help(&self) -> Vec<String> {
        match self {
            ClusterError::NoSuchCluster { .. } => {
                vec!["`vmctl cluster list` shows the clusters; `vmctl cluster create NAME` makes one".into()]
            }
            ClusterError::NotEnoughGpus { blockers, .. } => {
                let mut out: Vec<String> = Vec::new();
                for r in blockers {
                    let h = r.help("--gpu-force");
                    if !out.contains(&h) {
                        out.push(h);
                    }
                }
                out.push(
                    "or ask for fewer GPU workers (--gpu-workers N); `vmctl gpu status` shows every GPU"
                        .into(),
                );
                out
            }
            ClusterError::GpuTwice { .. } => vec![
                "give each --worker-gpu its own GPUs (`vmctl gpu status` lists them)".into(),
            ],
            ClusterError::ClusterNode { vm, cluster } => vec![
                format!("remove it from the cluster first: `vmctl cluster remove-node {cluster} {vm}`"),
                format!("or remove the whole cluster: `vmctl cluster destroy {cluster} --yes`"),
                "or delete the VM alone with --force (etcd keeps its member until it is removed)".into(),
            ],
            ClusterError::NoSuchNode { cluster, .. } => {
                vec![format!("`vmctl cluster show {cluster}` lists its nodes")]
            }
            ClusterError::LastControlPlane { cluster, .. } => vec![format!(
                "a cluster needs a control plane: remove the whole cluster with `vmctl cluster destroy {cluster} --yes`"
            )],
            ClusterError::NotConfirmed { cluster, .. } => vec![format!(
                "re-run with --yes: `vmctl cluster destroy {cluster} --yes`"
            )],
            ClusterError::Api { source, .. } if source.is_retryable() => vec![
                "the node may still be booting: watch it with `virsh console NODE`, then run `vmctl cluster bootstrap NAME`".into(),
            ],
            ClusterError::Api { .. } => vec![
                "the node refused vmctl's client certificate or the call: check that the cluster's talosconfig belongs to this cluster".into(),
            ],
            ClusterError::EtcdLeave { node, .. } => vec![
                format!("start it so that it can leave etcd itself (`vmctl start {node}`), and try again"),
                "or pass --force to remove the VM anyway; etcd then counts a member that never answers until it is removed with `talosctl etcd remove-member`".into(),
            ],
            ClusterError::Timeout { .. } => vec![
                "the cluster is kept: watch a node with `virsh console NODE`, or check again with `vmctl cluster bootstrap NAME --wait`".into(),
            ],
            ClusterError::Kube { .. } => vec![
                "the cluster is kept: check it with `kubectl --kubeconfig $(vmctl cluster kubeconfig NAME) get nodes`".into(),
            ],
            ClusterError::OutputExists { .. } => {
                vec!["choose another --out, or pass --force to replace the file".into()]
            }
            ClusterError::Remote { help, host, .. } => {
                let mut out = help.clone();
                out.push(format!(
                    "nothing of the cluster was kept; `vmctl hosts status` shows what {host} has"
                ));
                out
            }
            ClusterError::ControlPlanesNotSpread { .. } => vec![
                "add hosts to --hosts (`vmctl hosts list`), or ask for fewer control planes (--control-planes 1)".into(),
            ],
            ClusterError::NotEnoughGpusAcross { .. } => vec![
                "isolate more GPUs (`sudo gpu-vm-bootstrap --gpu-mode passthrough` on a host), add a host with free GPUs, or ask for fewer GPU workers".into(),
                "`vmctl hosts status` lists each host's GPUs and who holds them".into(),
            ],
            ClusterError::HostsDown { .. } => vec![
                "`vmctl hosts status` shows why; leave the host out of --hosts, or bring it back".into(),
            ],
            ClusterError::NotOneLan { .. } => vec![
                "bridge every host's br0 to the same LAN (`gpu-vm-bootstrap` phase bridge), or name hosts that share one".into(),
            ],
            ClusterError::OtherVersion { help, .. } => vec![help.clone()],
            ClusterError::NoAddresses { .. } => vec![
                "free addresses on the bridge's subnet, or narrow setting reserved_ips on this machine".into(),
            ],
        }
    }
}

impl From<ClusterError> for Error {
    fn from(e: ClusterError) -> Self {
        Error::Command(Failure::new(e))
    }
}
