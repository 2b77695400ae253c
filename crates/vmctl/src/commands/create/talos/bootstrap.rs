//! After a Talos node is defined: the next steps to print (`talosctl bootstrap` for the first
//! control plane, `talosctl kubeconfig`, the NVIDIA RuntimeClass), and `--bootstrap`, which runs
//! them through the runner until the node's API answers.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use hostio::Cmd;
use talos_image::machineconfig::{self, Role};

use super::*;
use crate::ctx::Ctx;
use crate::error::Result;
use crate::talos::TalosError;

/// `talosctl bootstrap` (first control plane only), `talosctl kubeconfig`, the RuntimeClass.
pub(super) fn next_steps(
    plan: &TalosPlan,
    ip: Option<Ipv4Addr>,
    endpoint: &str,
    runtime_class: Option<&Path>,
) -> Vec<Step> {
    let tc = plan.cluster.talosconfig().display().to_string();
    let first = plan.role == Role::Controlplane && matches!(plan.cluster_state, ClusterState::New);
    // The first control plane is talked to directly; a joining node's cluster through its
    // control plane (the endpoint's host), which serves the kubeconfig.
    let node = match (first, ip) {
        (true, Some(i)) => i.to_string(),
        _ => machineconfig::endpoint_host(endpoint)
            .map(|h| h.trim_matches(['[', ']']).to_string())
            .unwrap_or_else(|_| "CONTROL_PLANE_IP".into()),
    };
    let talosctl = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec![
            "talosctl".into(),
            "--talosconfig".into(),
            tc.clone(),
            "--nodes".into(),
            node.clone(),
            "--endpoints".into(),
            node.clone(),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    let kubeconfig = plan.cluster.kubeconfig().display().to_string();
    let mut steps = Vec::new();
    if first {
        steps.push(Step {
            what: "bootstrap etcd on the first control plane (once)".into(),
            argv: talosctl(&["bootstrap"]),
            done: false,
        });
    }
    steps.push(Step {
        what: "fetch the admin kubeconfig".into(),
        argv: talosctl(&["kubeconfig", "--force", &kubeconfig]),
        done: false,
    });
    if let Some(rc) = runtime_class {
        steps.push(Step {
            what: "create the RuntimeClass `nvidia` (pods use runtimeClassName: nvidia)".into(),
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

/// `--bootstrap`: runs the next steps through the runner, retrying each until the node's API
/// (or the Kubernetes API) answers.
pub(super) fn bootstrap(ctx: &Ctx, plan: &TalosPlan, created: &mut TalosCreated) -> Result<()> {
    let deadline = Instant::now() + BOOTSTRAP_TIMEOUT;
    for step in &mut created.next_steps {
        let mut argv = step.argv.clone();
        match argv[0].as_str() {
            "talosctl" => {
                if let Some(t) = &plan.talosctl {
                    argv[0] = t.display().to_string();
                }
            }
            _ => match &plan.kubectl {
                Some(k) => argv[0] = k.display().to_string(),
                None => {
                    tracing::warn!("kubectl is not on PATH: {} left to do", step.what);
                    continue;
                }
            },
        }
        loop {
            // Ctrl-C also kills the running talosctl/kubectl: stop instead of retrying.
            ctx.check_cancelled(
                || format!("--bootstrap ({})", step.what),
                || {
                    format!(
                        "{} is created and keeps running; run the printed steps by hand from `{}`",
                        plan.name,
                        step.argv.join(" ")
                    )
                },
            )?;
            match ctx.runner.run(&Cmd::new(argv.clone())) {
                Ok(_) => break,
                Err(source) if Instant::now() >= deadline => {
                    return Err(TalosError::Bootstrap {
                        step: step.argv.join(" "),
                        secs: BOOTSTRAP_TIMEOUT.as_secs(),
                        source,
                    }
                    .into());
                }
                Err(e) => {
                    tracing::info!("{}: {e}; retrying", step.what);
                    std::thread::sleep(Duration::from_secs(10));
                }
            }
        }
        step.done = true;
    }
    Ok(())
}
