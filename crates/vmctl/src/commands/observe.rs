//! What `vmctl top` shows and `vmctl metrics` exports: every VM with its counters and rates,
//! the GPUs and who holds them, and the bridge as the last scan saw it.
//!
//! A refresh is one libvirt round trip: the bulk statistics call
//! ([`hypervisor::Hypervisor::all_domain_stats`]). What only the domain XML knows (GPUs, the
//! static address, the cluster) is kept between refreshes and read again (a listing: N + 6
//! calls) only when the set of domains or a state changed, when [`Observer::invalidate`] asks
//! (after an action), or every [`FULL_EVERY`] refreshes. A network scan is never run here:
//! [`record_scan`] keeps what `vmctl ip check` (or `top`'s scan key) found, [`last_scan`] reads
//! it back.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hostio::HostRoot;
use hypervisor::domain::parse::parse_domain;
use hypervisor::{DomainStats, State};
use serde::{Deserialize, Serialize};

use super::Ctx;
use super::ip::{self, IpCheck};
use crate::config::Config;
use crate::error::Result;

/// A full re-read of the domain XML every this many refreshes (30 s at the default 2 s), so a
/// change made elsewhere (another vmctl, virsh) shows up without a state change.
pub const FULL_EVERY: u64 = 15;

/// One VM: what libvirt counts and what vmctl knows of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmRow {
    pub name: String,
    pub state: State,
    pub vcpus: u32,
    /// Host CPU used since the last refresh, 100 = one host CPU (`top`'s convention). `None`
    /// on the first refresh and for a stopped VM.
    pub cpu_percent: Option<f64>,
    /// Total host CPU time (`cpu.time`), ns.
    pub cpu_time_ns: Option<u64>,
    /// The qemu process's resident memory on the host, KiB (running VMs).
    pub memory_used_kib: Option<u64>,
    /// The memory assigned: the balloon's current size when running, else the definition's.
    pub memory_kib: u64,
    /// Byte counters over all disks and NICs since the VM started.
    pub disk_read_bytes: Option<u64>,
    pub disk_write_bytes: Option<u64>,
    pub net_rx_bytes: Option<u64>,
    pub net_tx_bytes: Option<u64>,
    /// Rates since the last refresh, bytes per second.
    pub disk_read_bps: Option<f64>,
    pub disk_write_bps: Option<f64>,
    pub net_rx_bps: Option<f64>,
    pub net_tx_bps: Option<f64>,
    /// From vmctl's metadata and the host's neighbour table (the guest agent is not asked).
    pub ips: Vec<Ipv4Addr>,
    /// Host PCI addresses passed through.
    pub gpus: Vec<String>,
    pub autostart: bool,
    pub persistent: bool,
    /// vmctl created it (it carries vmctl's metadata).
    pub vmctl: bool,
    pub os: Option<String>,
    /// The vmctl cluster it is a node of, and its role there.
    pub cluster: Option<String>,
    pub role: Option<String>,
}

/// One NVIDIA GPU of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuRow {
    pub bdf: String,
    pub name: String,
    /// The driver bound to its first function (`vfio-pci`, `nvidia`), if any.
    pub driver: Option<String>,
    /// The VM whose definition holds it.
    pub vm: Option<String>,
    /// Alone in its IOMMU group (with its own functions and bridges); `None`: no IOMMU groups.
    pub isolated: Option<bool>,
}

/// The bridge as the last scan saw it (`vmctl ip check`, or `top`'s scan key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeScan {
    pub interface: String,
    pub subnet: String,
    pub free_count: u64,
    pub used_count: u64,
    /// Addresses that more than one MAC answered for.
    pub conflicts: Vec<Ipv4Addr>,
    /// When the scan ran, seconds since the Unix epoch.
    pub scanned_at: u64,
}

/// One refresh.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct View {
    pub uri: String,
    pub vms: Vec<VmRow>,
    pub gpus: Vec<GpuRow>,
    /// Why `gpus` is empty though the host may have some (a remote connection: GPU facts are
    /// this machine's sysfs, not the remote host's).
    pub gpus_note: Option<String>,
    /// The configured bridge's last scan; `None` before the first.
    pub bridge: Option<BridgeScan>,
    /// The configured bridge's name (what a scan key scans).
    pub bridge_name: String,
    /// Libvirt round trips this refresh took (1 when only the statistics were read).
    pub round_trips: u64,
}

/// What the XML says of one domain, kept between refreshes.
#[derive(Debug, Clone)]
struct Known {
    state: State,
    vcpus: u32,
    memory_kib: u64,
    ips: Vec<Ipv4Addr>,
    gpus: Vec<String>,
    autostart: bool,
    persistent: bool,
    vmctl: bool,
    os: Option<String>,
}

/// The counters of the previous refresh, for rates.
#[derive(Debug, Clone, Copy)]
struct Counters {
    at: Instant,
    cpu: Option<u64>,
    rd: Option<u64>,
    wr: Option<u64>,
    rx: Option<u64>,
    tx: Option<u64>,
}

/// Refreshes [`View`]s, keeping what the XML said and the last counters between them.
#[derive(Debug, Default)]
pub struct Observer {
    known: HashMap<String, Known>,
    members: HashMap<String, (String, String)>,
    gpus: Vec<GpuRow>,
    prev: HashMap<String, Counters>,
    refreshes: u64,
    stale: bool,
}

impl Observer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next refresh re-reads every domain's XML and the host's GPUs (call it after acting
    /// on a VM: a GPU attached shows at once).
    pub fn invalidate(&mut self) {
        self.stale = true;
    }

    /// One refresh at `now` (the caller's monotonic clock, so tests choose the interval).
    pub fn refresh(&mut self, ctx: &Ctx, now: Instant) -> Result<View> {
        let stats = ctx.hv.all_domain_stats()?;
        let mut round_trips = 1;
        let changed = self.known.len() != stats.len()
            || stats.iter().any(|s| {
                self.known
                    .get(&s.name)
                    .is_none_or(|k| k.state != comparable(s.state))
            });
        if self.known.is_empty()
            || changed
            || self.stale
            || self.refreshes.is_multiple_of(FULL_EVERY)
        {
            round_trips += self.reread(ctx)?;
        }
        self.refreshes += 1;
        let vms = stats.iter().map(|s| self.row(s, now)).collect();
        self.prev = stats
            .iter()
            .map(|s| {
                let c = Counters {
                    at: now,
                    cpu: s.cpu_time_ns,
                    rd: s.block_read_bytes,
                    wr: s.block_write_bytes,
                    rx: s.net_rx_bytes,
                    tx: s.net_tx_bytes,
                };
                (s.name.clone(), c)
            })
            .collect();
        let bridge_name = ctx.config.value("bridge").to_string();
        let uri = ctx.hv.uri().to_string();
        Ok(View {
            gpus_note: is_remote(&uri).then(|| {
                "GPUs are not shown for a remote connection: vmctl reads GPUs from this \
                 machine's sysfs"
                    .to_string()
            }),
            uri,
            vms,
            gpus: self.gpus.clone(),
            bridge: last_scan(ctx.config, ctx.host, &bridge_name),
            bridge_name,
            round_trips,
        })
    }

    /// Reads every domain's XML, the clusters and the GPUs; returns the libvirt calls it took.
    fn reread(&mut self, ctx: &Ctx) -> Result<u64> {
        let records = ctx.hv.list()?;
        let (neighbours, _) = ip::neighbours(ctx.host);
        let mut holders: BTreeMap<String, String> = BTreeMap::new();
        self.known = records
            .iter()
            .filter_map(|rec| {
                // A domain whose XML cannot be read still shows, with what the statistics say.
                let f = parse_domain(&rec.xml).ok()?;
                for h in &f.hostdevs {
                    holders.insert(h.to_string(), rec.name.clone());
                }
                let known = Known {
                    state: comparable(rec.state),
                    vcpus: f.vcpus,
                    memory_kib: f.memory_kib,
                    ips: ip::known_addresses_without_agent(&neighbours, rec, &f)
                        .into_iter()
                        .map(|a| a.ip)
                        .collect(),
                    gpus: f.hostdevs.iter().map(ToString::to_string).collect(),
                    autostart: rec.autostart,
                    persistent: rec.persistent,
                    vmctl: f.metadata.is_some(),
                    os: f.metadata.as_ref().map(|m| m.os.clone()),
                };
                Some((rec.name.clone(), known))
            })
            .collect();
        self.members = crate::talos::cluster_dirs(ctx.host, ctx.config)
            .iter()
            .filter_map(|d| d.load_record().ok())
            .flat_map(|r| {
                r.nodes
                    .iter()
                    .map(|n| {
                        (
                            n.name.clone(),
                            (r.name.clone(), n.role.as_str().to_string()),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        self.gpus = if is_remote(ctx.hv.uri()) {
            Vec::new()
        } else {
            gpu_rows(ctx.host, &holders)
        };
        self.stale = false;
        // The listing: every domain's XML plus the six filtered listings.
        Ok(records.len() as u64 + 6)
    }

    fn row(&self, s: &DomainStats, now: Instant) -> VmRow {
        let k = self.known.get(&s.name);
        let prev = self.prev.get(&s.name);
        let secs = prev.map(|p| now.saturating_duration_since(p.at).as_secs_f64());
        let rate = |cur: Option<u64>, old: fn(&Counters) -> Option<u64>| -> Option<f64> {
            let (cur, old, secs) = (cur?, old(prev?)?, secs?);
            // A counter that went back (the VM restarted) has no rate this time.
            (secs > 0.0 && cur >= old).then(|| (cur - old) as f64 / secs)
        };
        let cpu = rate(s.cpu_time_ns, |c| c.cpu).map(|ns_per_s| ns_per_s / 1e7);
        let (cluster, role) = self
            .members
            .get(&s.name)
            .cloned()
            .map_or((None, None), |(c, r)| (Some(c), Some(r)));
        VmRow {
            name: s.name.clone(),
            state: s.state,
            vcpus: s.vcpus.or(k.map(|k| k.vcpus)).unwrap_or(0),
            cpu_percent: cpu,
            cpu_time_ns: s.cpu_time_ns,
            memory_used_kib: s.rss_kib,
            memory_kib: s.memory_kib.or(k.map(|k| k.memory_kib)).unwrap_or_default(),
            disk_read_bytes: s.block_read_bytes,
            disk_write_bytes: s.block_write_bytes,
            net_rx_bytes: s.net_rx_bytes,
            net_tx_bytes: s.net_tx_bytes,
            disk_read_bps: rate(s.block_read_bytes, |c| c.rd),
            disk_write_bps: rate(s.block_write_bytes, |c| c.wr),
            net_rx_bps: rate(s.net_rx_bytes, |c| c.rx),
            net_tx_bps: rate(s.net_tx_bytes, |c| c.tx),
            ips: k.map(|k| k.ips.clone()).unwrap_or_default(),
            gpus: k.map(|k| k.gpus.clone()).unwrap_or_default(),
            autostart: k.is_some_and(|k| k.autostart),
            persistent: k.is_some_and(|k| k.persistent),
            vmctl: k.is_some_and(|k| k.vmctl),
            os: k.and_then(|k| k.os.clone()),
            cluster,
            role,
        }
    }
}

/// States that the listing and the statistics both tell apart: a domain's "changed" test
/// must not fire on every refresh because one source says blocked where the other says
/// running.
fn comparable(s: State) -> State {
    match s {
        State::Blocked => State::Running,
        other => other,
    }
}

/// A URI naming another machine (`qemu+ssh://gpu2/system`): one with a host part.
pub fn is_remote(uri: &str) -> bool {
    uri.split_once("://")
        .is_some_and(|(_, rest)| !rest.starts_with('/') && !rest.is_empty())
}

/// One refresh without history (a metrics scrape): counters, no rates.
pub fn snapshot(ctx: &Ctx) -> Result<View> {
    Observer::new().refresh(ctx, Instant::now())
}

/// The host's NVIDIA GPUs with their holders (`holders`: PCI address → domain).
fn gpu_rows(host: &HostRoot, holders: &BTreeMap<String, String>) -> Vec<GpuRow> {
    hwdetect::detect(host)
        .gpus
        .iter()
        .map(|g| GpuRow {
            bdf: g.bdf.clone(),
            name: g.name.clone(),
            driver: g.function_drivers.first().cloned().flatten(),
            vm: g.functions.iter().find_map(|f| holders.get(f).cloned()),
            isolated: g.isolated,
        })
        .collect()
}

fn scan_path(config: &Config, host: &HostRoot, interface: &str) -> PathBuf {
    config
        .state_dir(host)
        .join("scans")
        .join(format!("{interface}.json"))
}

/// Keeps a scan's summary for [`last_scan`] (`state_dir/scans/IFACE.json`). A failure to
/// write (an unprivileged `ip check`) only loses the summary.
pub fn record_scan(config: &Config, host: &HostRoot, check: &IpCheck, at: SystemTime) {
    let summary = BridgeScan {
        interface: check.interface.clone(),
        subnet: check.subnet.to_string(),
        free_count: check.free_count,
        used_count: check.used.len() as u64,
        conflicts: check.conflicts.iter().map(|c| c.ip).collect(),
        scanned_at: at
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs(),
    };
    let path = scan_path(config, host, &check.interface);
    let written = serde_json::to_vec_pretty(&summary)
        .map_err(std::io::Error::other)
        .and_then(|json| {
            if let Some(dir) = path.parent() {
                hostio::create_dir_all_mode(dir, 0o755)?;
            }
            hostio::file::write_atomic(&path, &json, 0o644)
        });
    if let Err(e) = written {
        tracing::debug!("scan summary not kept at {}: {e}", path.display());
    }
}

/// The last scan of `interface` kept by [`record_scan`], if any.
pub fn last_scan(config: &Config, host: &HostRoot, interface: &str) -> Option<BridgeScan> {
    let bytes = std::fs::read(scan_path(config, host, interface)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests;
