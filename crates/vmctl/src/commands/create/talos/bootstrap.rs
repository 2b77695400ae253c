//! After a Talos node is defined: the next steps to print. The first control plane of a new
//! cluster is bootstrapped through the Talos API (`vmctl cluster bootstrap`, which `--bootstrap`
//! runs); a GPU node joining a cluster whose control planes do not carry the NVIDIA manifests
//! gets them as a file to apply.

use std::path::Path;

use talos_image::machineconfig::Role;

use super::*;

/// `vmctl cluster bootstrap` (first control plane of a new cluster), the GPU manifests file.
pub(super) fn next_steps(plan: &TalosPlan, runtime_class: Option<&Path>) -> Vec<Step> {
    // A --machine-config node: the next steps are the machine's that holds the cluster.
    if matches!(plan.cluster_state, ClusterState::Given(_)) {
        return Vec::new();
    }
    let first = plan.role == Role::Controlplane && matches!(plan.cluster_state, ClusterState::New);
    let kubeconfig = plan.cluster.kubeconfig().display().to_string();
    let mut steps = Vec::new();
    if first {
        steps.push(Step {
            what: "bootstrap etcd and fetch the admin kubeconfig, through the Talos API".into(),
            argv: [
                "vmctl",
                "cluster",
                "bootstrap",
                &plan.cluster.name,
                "--wait",
            ]
            .map(String::from)
            .to_vec(),
            done: false,
        });
    }
    if !first {
        steps.push(Step {
            what: "see the node join once it has booted".into(),
            argv: [
                "kubectl",
                "--kubeconfig",
                &kubeconfig,
                "get",
                "nodes",
                "-o",
                "wide",
            ]
            .map(String::from)
            .to_vec(),
            done: false,
        });
    }
    if let Some(rc) = runtime_class {
        steps.push(Step {
            what: "apply the NVIDIA RuntimeClass and device plugin (pods use runtimeClassName: nvidia)"
                .into(),
            argv: vec![
                "kubectl".into(),
                "--kubeconfig".into(),
                kubeconfig.clone(),
                "apply".into(),
                "-f".into(),
                rc.display().to_string(),
            ],
            done: false,
        });
    }
    steps
}
