//! `vmctl hosts status`: one inventory over this machine (row `local`, computed here) and every
//! configured host (each the output of `ssh … VMCTL --json hosts status --local` on it), all
//! collected at once: one thread per host, each bounded by its connect timeout (ssh's
//! ConnectTimeout) and an overall deadline (`timeout`), so an unreachable host never stalls the
//! others.

use std::collections::BTreeMap;
use std::time::Instant;

use hostio::{Cmd, CommandRunner, HostRoot};
use serde::{Deserialize, Serialize};

use super::Ctx;
use super::observe;
use crate::config::Config;
use crate::hosts::{self, HostEntry, LOCAL};

/// Seconds a reachable host's `hosts status --local` may take beyond the connect timeout
/// before the row is given up as unreachable.
pub const COMMAND_GRACE: u64 = 30;

/// One GPU of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostGpu {
    pub bdf: String,
    pub name: String,
    pub driver: Option<String>,
    pub isolated: Option<bool>,
    pub vm: Option<String>,
}

/// One VM of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostVm {
    pub name: String,
    pub state: String,
}

/// The bridge's last kept scan (`vmctl ip check`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostBridge {
    pub name: String,
    pub subnet: String,
    pub free: u64,
    pub used: u64,
    pub conflicts: u64,
    pub scanned_at: u64,
}

/// Why a host gave no facts (or, on a reachable host, which facts are missing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    pub message: String,
    pub help: Vec<String>,
}

/// One host's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRow {
    pub name: String,
    pub ssh: Option<String>,
    pub reachable: bool,
    pub error: Option<RowError>,
    pub elapsed_ms: u64,
    pub vmctl_version: Option<String>,
    pub bootstrap_version: Option<String>,
    pub version_mismatch: bool,
    pub cpus: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
    #[serde(default)]
    pub gpus: Vec<HostGpu>,
    #[serde(default)]
    pub gpus_free: u64,
    #[serde(default)]
    pub gpus_used: u64,
    #[serde(default)]
    pub vms: Vec<HostVm>,
    pub bridge: Option<HostBridge>,
    /// The addresses this host's VMs and reservations hold (`cluster create --hosts` uses none
    /// of any host's).
    #[serde(default)]
    pub addresses_held: Vec<std::net::Ipv4Addr>,
}

/// `hosts status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub hosts: Vec<HostRow>,
    pub reachable: u64,
    pub unreachable: u64,
}

impl Status {
    pub fn new(hosts: Vec<HostRow>) -> Self {
        let reachable = hosts.iter().filter(|h| h.reachable).count() as u64;
        Self {
            unreachable: hosts.len() as u64 - reachable,
            reachable,
            hosts,
        }
    }
}

impl HostRow {
    /// A row with no facts.
    pub fn empty(name: &str, ssh: Option<&str>) -> Self {
        Self {
            name: name.into(),
            ssh: ssh.map(str::to_string),
            reachable: false,
            error: None,
            elapsed_ms: 0,
            vmctl_version: None,
            bootstrap_version: None,
            version_mismatch: false,
            cpus: None,
            memory_bytes: None,
            memory_available_bytes: None,
            gpus: Vec::new(),
            gpus_free: 0,
            gpus_used: 0,
            vms: Vec::new(),
            bridge: None,
            addresses_held: Vec::new(),
        }
    }
}

/// CPUs (processor lines of /proc/cpuinfo) and memory (MemTotal, MemAvailable of
/// /proc/meminfo, bytes), read through the host root.
pub fn cpu_memory(host: &HostRoot) -> (Option<u64>, Option<u64>, Option<u64>) {
    let cpus = host.read_to_string("/proc/cpuinfo").ok().map(|t| {
        t.lines()
            .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
            .count() as u64
    });
    let mem = host.read_to_string("/proc/meminfo").ok();
    let field = |name: &str| {
        mem.as_deref()?.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| {
                let mut w = v.split_whitespace();
                let n: u64 = w.next()?.parse().ok()?;
                Some(match w.next() {
                    Some("kB") => n * 1024,
                    _ => n,
                })
            })?
        })
    };
    (
        cpus.filter(|n| *n > 0),
        field("MemTotal"),
        field("MemAvailable"),
    )
}

/// `gpu-vm-bootstrap --version` on this machine, bare; `None` when it is not installed.
pub fn bootstrap_version(runner: &dyn CommandRunner) -> Option<String> {
    let out = runner
        .output(&Cmd::new(["gpu-vm-bootstrap", "--version"]))
        .ok()?;
    (out.status == 0)
        .then(|| hosts::bare_version(&out.stdout_str()))
        .flatten()
}

fn gpu_counts(gpus: &[HostGpu]) -> (u64, u64) {
    let used = gpus.iter().filter(|g| g.vm.is_some()).count() as u64;
    let free = gpus
        .iter()
        .filter(|g| {
            g.vm.is_none() && g.driver.as_deref() == Some("vfio-pci") && g.isolated != Some(false)
        })
        .count() as u64;
    (free, used)
}

/// This machine's row. `ctx` is `None` when libvirt could not be opened (`libvirt_error`):
/// the GPUs are then read without their holders, and the row says why VMs are missing.
pub fn local_row(
    config: &Config,
    host: &HostRoot,
    runner: &dyn CommandRunner,
    ctx: Result<&Ctx, String>,
) -> HostRow {
    let started = Instant::now();
    let mut row = HostRow::empty(LOCAL, None);
    row.reachable = true;
    row.vmctl_version = Some(hosts::this_version().into());
    row.bootstrap_version = bootstrap_version(runner);
    (row.cpus, row.memory_bytes, row.memory_available_bytes) = cpu_memory(host);
    let bridge_name = config.value("bridge").to_string();
    row.addresses_held = ctx
        .as_ref()
        .map(|c| crate::address::held_addresses(c))
        .unwrap_or_default();
    let (gpus, vms, bridge, error): (Vec<HostGpu>, Vec<HostVm>, _, _) =
        match ctx.map(observe::snapshot) {
            Ok(Ok(view)) => (
                view.gpus
                    .into_iter()
                    .map(|g| HostGpu {
                        bdf: g.bdf,
                        name: g.name,
                        driver: g.driver,
                        isolated: g.isolated,
                        vm: g.vm,
                    })
                    .collect(),
                view.vms
                    .into_iter()
                    .map(|v| HostVm {
                        name: v.name,
                        state: serde_json::to_value(v.state)
                            .ok()
                            .and_then(|s| s.as_str().map(str::to_string))
                            .unwrap_or_default(),
                    })
                    .collect(),
                view.bridge,
                None,
            ),
            other => {
                let message = match other {
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e,
                    Ok(Ok(_)) => String::new(),
                };
                let gpus = hwdetect::detect(host)
                    .gpus
                    .iter()
                    .map(|g| HostGpu {
                        bdf: g.bdf.clone(),
                        name: g.name.clone(),
                        driver: g.function_drivers.first().cloned().flatten(),
                        isolated: g.isolated,
                        vm: None,
                    })
                    .collect();
                (
                    gpus,
                    Vec::new(),
                    observe::last_scan(config, host, &bridge_name),
                    Some(RowError {
                        message: format!("libvirt: {message}; VMs and GPU holders unknown"),
                        help: vec![
                            "check that libvirtd runs and `vmctl list` works on this host".into(),
                        ],
                    }),
                )
            }
        };
    (row.gpus_free, row.gpus_used) = gpu_counts(&gpus);
    row.gpus = gpus;
    row.vms = vms;
    row.bridge = bridge.map(|b| HostBridge {
        name: b.interface,
        subnet: b.subnet,
        free: b.free_count,
        used: b.used_count,
        conflicts: b.conflicts.len() as u64,
        scanned_at: b.scanned_at,
    });
    row.error = error;
    row.elapsed_ms = started.elapsed().as_millis() as u64;
    row
}

/// The argv that asks `entry` for its row: `timeout` bounds the whole exchange (connect
/// timeout + [`COMMAND_GRACE`]), ssh's ConnectTimeout the connection.
pub fn remote_status_argv(entry: &HostEntry, connect_timeout: u64) -> Vec<String> {
    let remote = entry.remote_command(&["--json", "hosts", "status", "--local"]);
    let mut argv = vec![
        "timeout".to_string(),
        "-k".into(),
        "2".into(),
        (connect_timeout + COMMAND_GRACE).to_string(),
    ];
    argv.extend(entry.ssh_argv(connect_timeout, false, &remote));
    argv
}

/// ssh's exit status for a connection or authentication failure.
pub const SSH_FAILED: i32 = 255;

/// One remote host's row.
pub fn remote_row(runner: &dyn CommandRunner, entry: &HostEntry, connect_timeout: u64) -> HostRow {
    let started = Instant::now();
    let mut row = HostRow::empty(&entry.name, Some(&entry.ssh));
    let out = runner.output(&Cmd::new(remote_status_argv(entry, connect_timeout)));
    let elapsed = started.elapsed();
    let unreachable = |message: String, help: Vec<String>| RowError { message, help };
    let default_help = || {
        vec![format!(
            "check that `ssh -o BatchMode=yes {} {} --version` works from this machine (key, known_hosts, vmctl installed there)",
            entry.ssh, entry.vmctl
        )]
    };
    match out {
        Err(e) => {
            row.error = Some(unreachable(
                format!("ssh {}: {e}", entry.ssh),
                vec![
                    "install ssh (`apt-get install openssh-client`) and timeout (coreutils)".into(),
                ],
            ));
        }
        Ok(o) if o.status == 0 => match parse_remote(&o.stdout) {
            Some(mut r) => {
                r.name = entry.name.clone();
                r.ssh = Some(entry.ssh.clone());
                r.version_mismatch = r
                    .vmctl_version
                    .as_deref()
                    .is_some_and(|v| v != hosts::this_version());
                row = r;
            }
            None => {
                row.error = Some(unreachable(
                    format!(
                        "ssh {}: `{} hosts status --local` printed no status",
                        entry.ssh, entry.vmctl
                    ),
                    default_help(),
                ));
            }
        },
        Ok(o) if o.status == 124 || o.status == 137 => {
            row.error = Some(unreachable(
                format!(
                    "ssh {}: no answer within {} s",
                    entry.ssh,
                    connect_timeout + COMMAND_GRACE
                ),
                default_help(),
            ));
        }
        Ok(o) if o.status == SSH_FAILED => {
            let reason = hosts::ssh_reason(&o.stderr);
            let message = if reason.to_ascii_lowercase().contains("timed out") {
                format!(
                    "ssh {}: connect timed out after {connect_timeout} s",
                    entry.ssh
                )
            } else {
                format!("ssh {}: {reason}", entry.ssh)
            };
            row.error = Some(unreachable(message, default_help()));
        }
        Ok(o) => {
            // ssh got through: the remote vmctl failed (an old one without `hosts`?).
            let version = remote_version(runner, entry, connect_timeout);
            row.version_mismatch = version
                .as_deref()
                .is_some_and(|v| v != hosts::this_version());
            let mut help = Vec::new();
            if row.version_mismatch {
                help.push(hosts::upgrade_help(
                    &entry.name,
                    entry,
                    hosts::this_version(),
                ));
            }
            help.extend(default_help());
            row.vmctl_version = version;
            row.error = Some(unreachable(
                format!(
                    "ssh {}: `{} hosts status --local` exited with status {}: {}",
                    entry.ssh,
                    entry.vmctl,
                    o.status,
                    hosts::ssh_reason(&o.stderr)
                ),
                help,
            ));
        }
    }
    row.elapsed_ms = elapsed.as_millis() as u64;
    row
}

fn parse_remote(stdout: &[u8]) -> Option<HostRow> {
    let status: Status = serde_json::from_slice(stdout).ok()?;
    status.hosts.into_iter().next()
}

/// The remote `vmctl --version`, bare; `None` when it cannot be run.
pub fn remote_version(
    runner: &dyn CommandRunner,
    entry: &HostEntry,
    connect_timeout: u64,
) -> Option<String> {
    let remote = entry.remote_command(&["--version"]);
    let mut argv = vec![
        "timeout".to_string(),
        "-k".into(),
        "2".into(),
        (connect_timeout + COMMAND_GRACE).to_string(),
    ];
    argv.extend(entry.ssh_argv(connect_timeout, false, &remote));
    let out = runner.output(&Cmd::new(argv)).ok()?;
    (out.status == 0)
        .then(|| hosts::bare_version(&out.stdout_str()))
        .flatten()
}

/// Every configured host's row, at once (one thread each), in the order of `hosts`; `local`
/// (this machine's row, computed on this thread while the others run) first.
pub fn collect(
    runner: &dyn CommandRunner,
    hosts: &BTreeMap<String, HostEntry>,
    connect_timeout: u64,
    local: impl FnOnce() -> HostRow,
) -> Status {
    let (local, remote): (HostRow, Vec<HostRow>) = std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .values()
            .map(|entry| {
                (
                    entry,
                    s.spawn(move || remote_row(runner, entry, connect_timeout)),
                )
            })
            .collect();
        let local = local();
        let remote = handles
            .into_iter()
            .map(|(entry, h)| {
                h.join().unwrap_or_else(|_| {
                    let mut row = HostRow::empty(&entry.name, Some(&entry.ssh));
                    row.error = Some(RowError {
                        message: "collecting this host's status panicked".into(),
                        help: Vec::new(),
                    });
                    row
                })
            })
            .collect();
        (local, remote)
    });
    Status::new(std::iter::once(local).chain(remote).collect())
}

#[cfg(test)]
mod tests;
