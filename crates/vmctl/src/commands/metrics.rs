//! `vmctl metrics`: the Prometheus text exposition format (version 0.0.4) of what
//! [`observe`] sees, for `vmctl metrics serve` (an exporter that reads libvirt at scrape time)
//! and `vmctl metrics textfile` (a `.prom` file for node_exporter's textfile collector).
//!
//! Rendering is pure ([`render`]): a [`Scrape`] (the view, or why libvirt could not be read,
//! and how long reading took) and the [`BuildInfo`] in, the text out. When libvirt cannot be
//! read the text still carries `vmctl_libvirt_up 0`, the build info and the bridge's last scan,
//! so an exporter answers 200 and an alert can fire on `vmctl_libvirt_up == 0` (Prometheus's
//! own `up` says whether the exporter answered, not whether libvirt did).
//!
//! Naming follows Prometheus's conventions: base units (`_seconds`, `_bytes`), `_total` for
//! counters, `_info` series valued 1 for labels. A value vmctl does not know (the CPU time of a
//! stopped VM, the isolation of a GPU without IOMMU groups) has no sample, never a 0.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hypervisor::State;
use serde::Serialize;

use super::Ctx;
use super::observe::{self, BridgeScan, View};
use crate::config::Config;
use crate::error::{CommandFailure, Error, ExitKind, Failure, Result};
use hostio::HostRoot;

/// The content type of the text format served on `/metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The default `--listen` of `vmctl metrics serve` (9177: libvirt exporters' customary port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9177";

/// Every state `vmctl_vm_state` has a series for, with its label value.
pub const STATES: [(State, &str); 8] = [
    (State::Running, "running"),
    (State::Blocked, "blocked"),
    (State::Paused, "paused"),
    (State::ShuttingDown, "shutting_down"),
    (State::ShutOff, "shut_off"),
    (State::Crashed, "crashed"),
    (State::Suspended, "pmsuspended"),
    (State::Unknown, "unknown"),
];

/// What `vmctl_build_info` says of the binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildInfo {
    pub version: String,
    /// The git commit (`1a2b3c4`, `1a2b3c4-dirty`, `unknown`).
    pub revision: String,
}

impl BuildInfo {
    /// From the binary's `--version` string, `0.1.0 (1a2b3c4)`.
    pub fn parse(build_version: &str) -> Self {
        match build_version.split_once(" (") {
            Some((v, rest)) => BuildInfo {
                version: v.to_string(),
                revision: rest.trim_end_matches(')').to_string(),
            },
            None => BuildInfo {
                version: build_version.to_string(),
                revision: "unknown".into(),
            },
        }
    }
}

/// One scrape: what libvirt said (or why it could not be read), the bridge's last scan, and
/// how long reading took.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The view, or the error that kept libvirt from being read (its message).
    pub view: std::result::Result<View, String>,
    /// The configured bridge's last scan (also when libvirt is down: it is vmctl's own file).
    pub bridge: Option<BridgeScan>,
    pub duration: Duration,
}

impl Scrape {
    /// A scrape from a refresh's outcome; when it failed, the bridge's last scan is read on
    /// its own.
    pub fn new(
        view: Result<View>,
        config: &Config,
        host: &HostRoot,
        duration: Duration,
    ) -> (Self, Option<Error>) {
        match view {
            Ok(v) => (
                Scrape {
                    bridge: v.bridge.clone(),
                    view: Ok(v),
                    duration,
                },
                None,
            ),
            Err(e) => {
                let bridge = observe::last_scan(config, host, config.value("bridge"));
                (
                    Scrape {
                        view: Err(e.to_string()),
                        bridge,
                        duration,
                    },
                    Some(e),
                )
            }
        }
    }

    /// libvirt read now, through `ctx` (one refresh without history: counters, no rates).
    pub fn read(ctx: &Ctx) -> (Self, Option<Error>) {
        let start = std::time::Instant::now();
        let view = observe::snapshot(ctx);
        Self::new(view, ctx.config, ctx.host, start.elapsed())
    }
}

/// A label value in the exposition format: backslash, double quote and newline escaped.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// HELP text: backslash and newline escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// One metric family being written: HELP and TYPE once, then its samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Seconds from nanoseconds, exactly as a decimal (`12.000000345`, `3`).
fn seconds(ns: u64) -> String {
    let (s, frac) = (ns / 1_000_000_000, ns % 1_000_000_000);
    if frac == 0 {
        s.to_string()
    } else {
        format!("{s}.{frac:09}").trim_end_matches('0').to_string()
    }
}

fn bool_value(b: bool) -> u8 {
    u8::from(b)
}

/// The exposition text of one scrape.
pub fn render(scrape: &Scrape, build: &BuildInfo) -> String {
    let mut out = String::new();
    Family::new(
        &mut out,
        "vmctl_build_info",
        "gauge",
        "vmctl's version and git revision, as labels; the value is always 1",
    )
    .sample(
        &[("version", &build.version), ("revision", &build.revision)],
        1,
    );
    Family::new(
        &mut out,
        "vmctl_libvirt_up",
        "gauge",
        "1 if libvirt answered this scrape, 0 if it could not be reached (then no VM or GPU series are exported)",
    )
    .sample(&[], bool_value(scrape.view.is_ok()));
    Family::new(
        &mut out,
        "vmctl_scrape_duration_seconds",
        "gauge",
        "Time this scrape took to read libvirt, the domain definitions and the GPUs",
    )
    .sample(&[], scrape.duration.as_secs_f64());
    if let Ok(view) = &scrape.view {
        render_vms(&mut out, view);
        render_gpus(&mut out, view);
    }
    if let Some(b) = &scrape.bridge {
        render_bridge(&mut out, b);
    }
    out
}

fn render_vms(out: &mut String, view: &View) {
    if view.vms.is_empty() {
        return;
    }
    let mut vms: Vec<_> = view.vms.iter().collect();
    vms.sort_by(|a, b| a.name.cmp(&b.name));
    let mut f = Family::new(
        out,
        "vmctl_vm_info",
        "gauge",
        "One series per VM, valued 1: its OS (vmctl's metadata) and the vmctl cluster and role it has there (empty when none)",
    );
    for vm in &vms {
        f.sample(
            &[
                ("vm", &vm.name),
                ("os", vm.os.as_deref().unwrap_or("")),
                ("cluster", vm.cluster.as_deref().unwrap_or("")),
                ("role", vm.role.as_deref().unwrap_or("")),
            ],
            1,
        );
    }
    let names: Vec<&str> = STATES.iter().map(|(_, n)| *n).collect();
    let mut f = Family::new(
        out,
        "vmctl_vm_state",
        "gauge",
        &format!(
            "The VM's libvirt state: one series per state ({}), 1 for the current one and 0 for the others, so vmctl_vm_state{{state=\"running\"}} == 1 selects running VMs and a change of state is not a new series",
            names.join(", ")
        ),
    );
    for vm in &vms {
        for (state, label) in STATES {
            f.sample(
                &[("vm", &vm.name), ("state", label)],
                bool_value(vm.state == state),
            );
        }
    }
    let mut f = Family::new(
        out,
        "vmctl_vm_running",
        "gauge",
        "1 if the VM's guest is running (libvirt state running or blocked), else 0",
    );
    for vm in &vms {
        f.sample(
            &[("vm", &vm.name)],
            bool_value(matches!(vm.state, State::Running | State::Blocked)),
        );
    }
    let mut f = Family::new(
        out,
        "vmctl_vm_autostart",
        "gauge",
        "1 if libvirt starts the VM with the host, else 0",
    );
    for vm in &vms {
        f.sample(&[("vm", &vm.name)], bool_value(vm.autostart));
    }
    let mut f = Family::new(
        out,
        "vmctl_vm_vcpus",
        "gauge",
        "Virtual CPUs: online ones when running, else the definition's",
    );
    for vm in &vms {
        f.sample(&[("vm", &vm.name)], vm.vcpus);
    }
    let mut f = Family::new(
        out,
        "vmctl_vm_memory_bytes",
        "gauge",
        "Memory assigned to the VM: the balloon's current size when running, else the definition's",
    );
    for vm in &vms {
        f.sample(&[("vm", &vm.name)], vm.memory_kib.saturating_mul(1024));
    }
    counter_family(
        out,
        &vms,
        "vmctl_vm_memory_resident_bytes",
        "gauge",
        "Resident memory of the VM's qemu process on the host (active VMs only)",
        |vm| {
            vm.memory_used_kib
                .map(|k| k.saturating_mul(1024).to_string())
        },
    );
    counter_family(
        out,
        &vms,
        "vmctl_vm_cpu_seconds_total",
        "counter",
        "Host CPU time used by the VM since it started (active VMs only)",
        |vm| vm.cpu_time_ns.map(seconds),
    );
    counter_family(
        out,
        &vms,
        "vmctl_vm_disk_read_bytes_total",
        "counter",
        "Bytes read over all the VM's disks since it started (active VMs only)",
        |vm| vm.disk_read_bytes.map(|v| v.to_string()),
    );
    counter_family(
        out,
        &vms,
        "vmctl_vm_disk_written_bytes_total",
        "counter",
        "Bytes written over all the VM's disks since it started (active VMs only)",
        |vm| vm.disk_write_bytes.map(|v| v.to_string()),
    );
    counter_family(
        out,
        &vms,
        "vmctl_vm_network_receive_bytes_total",
        "counter",
        "Bytes received over all the VM's NICs since it started (active VMs only)",
        |vm| vm.net_rx_bytes.map(|v| v.to_string()),
    );
    counter_family(
        out,
        &vms,
        "vmctl_vm_network_transmit_bytes_total",
        "counter",
        "Bytes sent over all the VM's NICs since it started (active VMs only)",
        |vm| vm.net_tx_bytes.map(|v| v.to_string()),
    );
}

/// A per-VM family whose value may be unknown: a VM without one has no sample, and the family
/// is left out when no VM has one (a HELP/TYPE header alone says nothing). An inactive VM
/// (shut off, crashed) has none whatever libvirt says: libvirt 9.0's bulk statistics give a
/// shut-off domain a `cpu.time` that is not the VM's (seen in the lab: 0.82 s for a domain
/// that never ran).
fn counter_family(
    out: &mut String,
    vms: &[&observe::VmRow],
    name: &'static str,
    kind: &str,
    help: &str,
    value: impl Fn(&observe::VmRow) -> Option<String>,
) {
    let known: Vec<_> = vms
        .iter()
        .filter(|vm| vm.state.is_active())
        .filter_map(|vm| value(vm).map(|v| (vm.name.as_str(), v)))
        .collect();
    if known.is_empty() {
        return;
    }
    let mut f = Family::new(out, name, kind, help);
    for (vm, v) in known {
        f.sample(&[("vm", vm)], v);
    }
}

fn render_gpus(out: &mut String, view: &View) {
    if view.gpus.is_empty() {
        return;
    }
    let mut f = Family::new(
        out,
        "vmctl_gpu_info",
        "gauge",
        "One series per NVIDIA GPU of the host, valued 1: its name, the driver bound to it and the VM whose definition holds it (empty when none)",
    );
    for g in &view.gpus {
        f.sample(
            &[
                ("bdf", &g.bdf),
                ("name", &g.name),
                ("driver", g.driver.as_deref().unwrap_or("")),
                ("vm", g.vm.as_deref().unwrap_or("")),
            ],
            1,
        );
    }
    if view.gpus.iter().any(|g| g.isolated.is_some()) {
        let mut f = Family::new(
            out,
            "vmctl_gpu_isolated",
            "gauge",
            "1 if the GPU is alone in its IOMMU group (with its own functions and bridges), so it can be passed through; no sample without IOMMU groups",
        );
        for g in &view.gpus {
            if let Some(i) = g.isolated {
                f.sample(&[("bdf", &g.bdf)], bool_value(i));
            }
        }
    }
}

fn render_bridge(out: &mut String, b: &BridgeScan) {
    let labels = [
        ("bridge", b.interface.as_str()),
        ("subnet", b.subnet.as_str()),
    ];
    Family::new(
        out,
        "vmctl_bridge_free_addresses",
        "gauge",
        "Addresses of the bridge's subnet that nothing answered for at the last scan (`vmctl ip check`)",
    )
    .sample(&labels, b.free_count);
    Family::new(
        out,
        "vmctl_bridge_used_addresses",
        "gauge",
        "Addresses of the bridge's subnet that answered ARP at the last scan",
    )
    .sample(&labels, b.used_count);
    Family::new(
        out,
        "vmctl_bridge_conflicts",
        "gauge",
        "Addresses more than one MAC answered for at the last scan",
    )
    .sample(&labels, b.conflicts.len());
    Family::new(
        out,
        "vmctl_bridge_last_scan_timestamp_seconds",
        "gauge",
        "When the last scan of the bridge ran, seconds since the Unix epoch",
    )
    .sample(&labels, b.scanned_at);
}

/// The number of samples in an exposition text (lines that are not comments).
pub fn sample_count(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// What `vmctl metrics textfile` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Written {
    pub path: PathBuf,
    pub bytes: usize,
    pub samples: usize,
    pub libvirt_up: bool,
}

/// Errors of `vmctl metrics`.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("textfile {path}: the name must end in .prom")]
    NotProm { path: PathBuf },
    #[error("textfile {path}: directory {dir} does not exist")]
    NoDirectory { path: PathBuf, dir: PathBuf },
    #[error("write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--json does not apply to `metrics serve`: it serves the Prometheus text format")]
    ServeJson,
}

impl CommandFailure for MetricsError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            Self::NotProm { .. } | Self::NoDirectory { .. } | Self::ServeJson => ExitKind::Usage,
            Self::Write { .. } | Self::Listen { .. } => ExitKind::Failure,
        }
    }

    fn help(&self) -> Vec<String> {
        match self {
            Self::NotProm { .. } => vec![
                "node_exporter's textfile collector reads only *.prom files: name it e.g. /var/lib/prometheus/node-exporter/vmctl.prom".into(),
            ],
            Self::NoDirectory { dir, .. } => vec![format!(
                "create it first (`mkdir -p {}`), or point at node_exporter's --collector.textfile.directory",
                dir.display()
            )],
            Self::Write { .. } => vec![
                "may you write that directory? node_exporter's textfile directory is usually root's".into(),
            ],
            Self::Listen { addr, source } => match source.kind() {
                std::io::ErrorKind::AddrInUse => vec![
                    format!(
                        "another program listens on {addr}: `ss -ltnp` shows which (the vmctl-metrics service? `systemctl status vmctl-metrics`)"
                    ),
                    "pick another port with --listen ADDR:PORT".into(),
                ],
                std::io::ErrorKind::PermissionDenied => vec![
                    "ports below 1024 need root: pick another port with --listen ADDR:PORT".into(),
                ],
                _ => vec![
                    "is the address one of this host's? `ip -br addr` lists them; --listen 127.0.0.1:9177 is the default".into(),
                ],
            },
            Self::ServeJson => vec!["drop --json; `curl -s http://127.0.0.1:9177/metrics` reads what it serves".into()],
        }
    }
}

impl From<MetricsError> for Error {
    fn from(e: MetricsError) -> Self {
        Error::Command(Failure::new(e))
    }
}

/// The checks of a textfile path, before libvirt is read: it ends in `.prom` and its directory
/// exists.
pub fn check_textfile_path(path: &Path) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.ends_with(".prom") || name == ".prom" {
        return Err(MetricsError::NotProm {
            path: path.to_path_buf(),
        }
        .into());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(MetricsError::NoDirectory {
            path: path.to_path_buf(),
            dir,
        }
        .into());
    }
    Ok(())
}

/// Writes `text` to `path` atomically (mode 0644: node_exporter reads it as another user), so
/// the collector never reads half a file.
pub fn write_textfile(path: &Path, text: &str, libvirt_up: bool) -> Result<Written> {
    check_textfile_path(path)?;
    hostio::file::write_atomic(path, text.as_bytes(), 0o644).map_err(|source| {
        MetricsError::Write {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(Written {
        path: path.to_path_buf(),
        bytes: text.len(),
        samples: sample_count(text),
        libvirt_up,
    })
}

#[cfg(test)]
mod tests;
