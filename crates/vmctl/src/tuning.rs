//! `create --cpu-pinning auto|shared` and `--hugepages 2M|1G`: where a VM's vCPUs, emulator
//! threads and memory go. The facts are the host's NUMA nodes and hugepage pools
//! (`hwdetect::numa`), the node of each passed-through GPU and the CPUs other domains pin; the
//! [`plan`] from them is pure; [`PinLock`] holds the choice from the last check to the define.
//!
//! The rules, and why:
//! - vCPUs go on the NUMA node of the VM's GPUs, so the guest's DMA and its memory stay local.
//!   GPUs on several nodes split the vCPUs in proportion to the GPUs on each node and give the
//!   guest one NUMA cell per node (with the memory split the same way), so the guest kernel
//!   knows which GPUs are near which CPUs. Without a GPU the VM goes on the node with the most
//!   free CPUs; a VM that does not fit on one node is refused rather than spread.
//! - The lowest CPU of every node stays off every VM's vCPU list: the host's own work (and
//!   the emulator threads) need somewhere to run that no vCPU spins on. A node with one CPU
//!   therefore takes no pinned vCPU.
//! - Emulator threads (QEMU's main loop, I/O) run on the node's CPUs that no pinned vCPU holds.
//! - `auto` never gives a CPU that another domain's `<vcpupin>` holds (running or not: a
//!   defined VM starts later on the CPUs it names); `shared` skips that check, for VMs that
//!   are not meant to run at the same time.
//! - vCPUs take free CPUs in ascending order, which on Linux's numbering gives each vCPU its own
//!   core before any two share one (the second threads of a socket's cores come after all the
//!   first ones).
//! - Memory is bound to the same nodes (`<numatune>` strict). With `--hugepages` the free pages
//!   of that size must cover the memory on each node used (host-wide without pinning).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::str::FromStr;

use hwdetect::numa::NumaFacts;
use hypervisor::domain::PciAddress;
use hypervisor::domain::parse::parse_domain;
use hypervisor::domain::tuning::{MemNode, NumaCell, Tuning, VcpuPin, format_cpuset, parse_cpuset};
use serde::Serialize;

use crate::ctx::Ctx;
use crate::error::{CommandFailure, Error, ExitKind, Failure, Result};

/// `--cpu-pinning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PinMode {
    /// CPUs no other domain pins.
    Auto,
    /// The same choice, ignoring other domains' pins.
    Shared,
}

impl FromStr for PinMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "shared" => Ok(Self::Shared),
            _ => Err(Error::InvalidOption {
                option: "--cpu-pinning".into(),
                value: s.into(),
                reason: "expected auto or shared".into(),
            }),
        }
    }
}

/// `--hugepages`: the x86-64 hugepage sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PageSize {
    #[serde(rename = "2M")]
    M2,
    #[serde(rename = "1G")]
    G1,
}

impl PageSize {
    pub fn kib(self) -> u64 {
        match self {
            Self::M2 => 2048,
            Self::G1 => 1024 * 1024,
        }
    }

    pub fn mib(self) -> u64 {
        self.kib() / 1024
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::M2 => "2M",
            Self::G1 => "1G",
        })
    }
}

impl FromStr for PageSize {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "2M" | "2m" => Ok(Self::M2),
            "1G" | "1g" => Ok(Self::G1),
            _ => Err(Error::InvalidOption {
                option: "--hugepages".into(),
                value: s.into(),
                reason: "expected 2M or 1G".into(),
            }),
        }
    }
}

/// What the create asked for (`None`: not asked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TuningRequest {
    pub pinning: Option<PinMode>,
    pub hugepages: Option<PageSize>,
}

impl TuningRequest {
    /// Parses the flags as given.
    pub fn parse(pinning: Option<&str>, hugepages: Option<&str>) -> Result<Self> {
        Ok(Self {
            pinning: pinning.map(str::parse).transpose()?,
            hugepages: hugepages.map(str::parse).transpose()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.pinning.is_none() && self.hugepages.is_none()
    }
}

/// CPUs another domain pins its vCPUs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    pub vm: String,
    pub cpus: BTreeSet<u32>,
}

/// A guest NUMA cell and the host node behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub id: u32,
    pub host_node: u32,
    pub vcpus: Vec<u32>,
    pub memory_mib: u64,
}

/// Where the vCPUs and emulator threads run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CpuPlacement {
    pub mode: PinMode,
    /// The host NUMA nodes used, ascending.
    pub nodes: Vec<u32>,
    /// Why these nodes (`the node of GPU 0000:18:00.0`, …).
    pub reason: String,
    /// Host CPU of each vCPU (index = vCPU).
    pub vcpu_cpus: Vec<u32>,
    /// `emulatorpin`, as a cpuset.
    pub emulator_cpuset: String,
    /// Guest NUMA cells, when the VM spans more than one node.
    pub cells: Vec<Cell>,
}

/// Hugepage backing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HugepagePlacement {
    pub size: PageSize,
    /// Pages the VM takes in all.
    pub pages: u64,
    /// Pages per host node, when the memory is bound to nodes.
    pub per_node: BTreeMap<u32, u64>,
}

/// The placement shown in the create's plan and written into the domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub cpu: Option<CpuPlacement>,
    pub hugepages: Option<HugepagePlacement>,
}

impl Placement {
    /// The domain's `<cputune>`, `<numatune>`, `<cpu><numa>` and `<memoryBacking>`.
    pub fn tuning(&self) -> Tuning {
        let mut t = Tuning::default();
        if let Some(c) = &self.cpu {
            t.vcpupins = c
                .vcpu_cpus
                .iter()
                .enumerate()
                .map(|(v, cpu)| VcpuPin {
                    vcpu: v as u32,
                    cpuset: cpu.to_string(),
                })
                .collect();
            t.emulatorpin = Some(c.emulator_cpuset.clone());
            t.memory_nodeset = Some(format_cpuset(&c.nodes));
            t.numa_cells = c
                .cells
                .iter()
                .map(|cell| NumaCell {
                    id: cell.id,
                    cpus: format_cpuset(&cell.vcpus),
                    memory_mib: cell.memory_mib,
                })
                .collect();
            t.memnodes = c
                .cells
                .iter()
                .map(|cell| MemNode {
                    cellid: cell.id,
                    nodeset: cell.host_node.to_string(),
                })
                .collect();
        }
        t
    }

    /// Writes the placement into a domain: [`Self::tuning`] and the hugepage backing (a
    /// virtiofs share's shared memory, if any, is kept).
    pub fn apply_to(&self, spec: &mut hypervisor::domain::DomainSpec) {
        spec.tuning = self.tuning();
        spec.memory_backing.hugepage_kib = self.hugepages.as_ref().map(|h| h.size.kib());
    }
}

/// Refusals of `--cpu-pinning` and `--hugepages`; carried by [`Error::Command`].
#[derive(Debug, thiserror::Error)]
pub enum TuningError {
    #[error(
        "not enough free CPUs on NUMA node {node} for {needed} pinned vCPUs: {free} free of {total} ({}){}",
        if *reserved { "1 kept for the host" } else { "none kept for the host" },
        used_by_text(used_by)
    )]
    NotEnoughCpus {
        node: u32,
        needed: u32,
        free: u32,
        total: u32,
        reserved: bool,
        /// Other VMs pinned on the node, with how many of its CPUs each holds.
        used_by: Vec<(String, u32)>,
        /// The VM's GPUs, when it has any (the help then suggests GPUs on another node).
        gpu: Option<String>,
    },
    #[error(
        "a VM whose GPUs sit on {nodes} NUMA nodes needs at least {nodes} vCPUs, one per node; --cpus is {vcpus}"
    )]
    TooFewVcpus { nodes: usize, vcpus: u32 },
    #[error("--memory {memory_mib} MiB is not a whole number of {size} hugepages ({} MiB each){}", size.mib(), if *cells > 1 { format!(", split over {cells} guest NUMA cells") } else { String::new() })]
    NotPageMultiple {
        memory_mib: u64,
        size: PageSize,
        cells: usize,
    },
    #[error(
        "not enough free {size} hugepages {place}: the VM needs {needed}, {free} are free of {total} reserved"
    )]
    NotEnoughHugepages {
        size: PageSize,
        place: String,
        needed: u64,
        free: u64,
        total: u64,
        /// The `N` to reserve at boot so this VM fits.
        suggest: u64,
    },
    #[error("taking the CPU pinning lock {path}")]
    Lock {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn used_by_text(used: &[(String, u32)]) -> String {
    if used.is_empty() {
        return String::new();
    }
    let list: Vec<String> = used
        .iter()
        .map(|(vm, n)| format!("{vm} holds {n}"))
        .collect();
    format!("; pinned VMs there: {}", list.join(", "))
}

impl CommandFailure for TuningError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            Self::Lock { .. } => ExitKind::Failure,
            _ => ExitKind::Usage,
        }
    }

    fn help(&self) -> Vec<String> {
        match self {
            Self::NotEnoughCpus { used_by, gpu, .. } => {
                let mut h = vec![format!(
                    "lower --cpus{}",
                    if gpu.is_some() {
                        ", or pick GPUs on another node (`vmctl gpu status`)"
                    } else {
                        ""
                    }
                )];
                if !used_by.is_empty() {
                    h.push(
                        "or use --cpu-pinning shared to share CPUs with the VMs pinned there \
                         (they then compete for them when both run)"
                            .into(),
                    );
                }
                h
            }
            Self::TooFewVcpus { nodes, .. } => vec![format!("use --cpus {nodes} or more")],
            Self::NotPageMultiple { size, .. } => {
                vec![format!("give --memory as a multiple of {} MiB", size.mib())]
            }
            Self::NotEnoughHugepages { size, suggest, .. } => vec![
                format!(
                    "reserve them at boot: `sudo gpu-vm-bootstrap --hugepages {size}:{suggest}` (then reboot)"
                ),
                format!(
                    "or at run time, if memory is not yet fragmented: `echo N | sudo tee /sys/kernel/mm/hugepages/hugepages-{}kB/nr_hugepages`",
                    size.kib()
                ),
            ],
            Self::Lock { .. } => vec![
                "check that vmctl's state_dir is writable (`vmctl config get state_dir`)".into(),
            ],
        }
    }
}

impl From<TuningError> for Error {
    fn from(e: TuningError) -> Self {
        Error::Command(Failure::new(e))
    }
}

/// What [`plan`] needs beyond the request.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub facts: &'a NumaFacts,
    /// Each passed-through GPU (its first function's address) with its node, if sysfs gives one.
    pub gpus: &'a [(String, Option<u32>)],
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Other domains' pinned CPUs.
    pub others: &'a [Pinned],
}

/// The lowest CPU of a node, kept off every vCPU list for the host (see the module doc).
fn host_cpu(cpus: &[u32]) -> Option<u32> {
    cpus.first().copied()
}

/// The placement for the request. Pure.
pub fn plan(
    input: &PlanInput<'_>,
    req: TuningRequest,
) -> std::result::Result<Placement, TuningError> {
    let mut out = Placement::default();
    if let Some(mode) = req.pinning {
        out.cpu = Some(place_cpus(input, mode)?);
    }
    if let Some(size) = req.hugepages {
        out.hugepages = Some(place_hugepages(input, size, out.cpu.as_ref())?);
    }
    Ok(out)
}

fn place_cpus(
    input: &PlanInput<'_>,
    mode: PinMode,
) -> std::result::Result<CpuPlacement, TuningError> {
    let facts = input.facts;
    let taken: BTreeSet<u32> = match mode {
        PinMode::Auto => input
            .others
            .iter()
            .flat_map(|o| o.cpus.iter().copied())
            .collect(),
        PinMode::Shared => BTreeSet::new(),
    };
    let free_on = |node: u32| -> Vec<u32> {
        let Some(n) = facts.node(node) else {
            return Vec::new();
        };
        let keep = host_cpu(&n.cpus);
        n.cpus
            .iter()
            .copied()
            .filter(|c| Some(*c) != keep && !taken.contains(c))
            .collect()
    };
    // GPUs per known node, in node order.
    let mut gpu_nodes: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for (bdf, node) in input.gpus {
        if let Some(n) = node.filter(|n| facts.node(*n).is_some()) {
            gpu_nodes.entry(n).or_default().push(bdf);
        }
    }
    let (shares, reason): (Vec<(u32, u32)>, String) = if gpu_nodes.is_empty() {
        // The node with the most free CPUs (the lowest id on a tie).
        let best = facts
            .nodes
            .iter()
            .map(|n| (free_on(n.id).len(), std::cmp::Reverse(n.id)))
            .max()
            .map_or(0, |(_, std::cmp::Reverse(id))| id);
        let why = if input.gpus.is_empty() {
            format!("no GPU: node {best} has the most free CPUs")
        } else {
            format!("sysfs gives the GPUs no NUMA node: node {best} has the most free CPUs")
        };
        (vec![(best, input.vcpus)], why)
    } else if gpu_nodes.len() == 1 {
        let (node, bdfs) = gpu_nodes.iter().next().expect("one node");
        (
            vec![(*node, input.vcpus)],
            format!("the node of GPU {}", bdfs.join(", ")),
        )
    } else {
        if (input.vcpus as usize) < gpu_nodes.len() {
            return Err(TuningError::TooFewVcpus {
                nodes: gpu_nodes.len(),
                vcpus: input.vcpus,
            });
        }
        // In proportion to the GPUs on each node, at least one each; the rest to the first nodes.
        let total_gpus: usize = gpu_nodes.values().map(Vec::len).sum();
        let mut shares: Vec<(u32, u32)> = gpu_nodes
            .iter()
            .map(|(n, g)| {
                let s = (input.vcpus as usize * g.len() / total_gpus).max(1);
                (*n, s as u32)
            })
            .collect();
        let mut sum: u32 = shares.iter().map(|s| s.1).sum();
        let mut i = 0;
        let n_shares = shares.len();
        while sum < input.vcpus {
            shares[i % n_shares].1 += 1;
            sum += 1;
            i += 1;
        }
        while sum > input.vcpus {
            // Only from rounding up to one: take back from the largest share.
            let max = shares.iter_mut().max_by_key(|s| s.1).expect("shares");
            max.1 -= 1;
            sum -= 1;
        }
        let why: Vec<String> = gpu_nodes
            .iter()
            .map(|(n, g)| format!("node {n} has GPU {}", g.join(", ")))
            .collect();
        (shares, why.join("; "))
    };
    let gpu_text = (!input.gpus.is_empty()).then(|| {
        input
            .gpus
            .iter()
            .map(|g| g.0.clone())
            .collect::<Vec<_>>()
            .join(", ")
    });
    let mut vcpu_cpus = Vec::new();
    let mut cells = Vec::new();
    for (cell, (node, want)) in shares.iter().enumerate() {
        let free = free_on(*node);
        let n = facts.node(*node).expect("a known node");
        if free.len() < *want as usize {
            let mut used_by: Vec<(String, u32)> = Vec::new();
            if mode == PinMode::Auto {
                for o in input.others {
                    let k = o.cpus.iter().filter(|c| n.cpus.contains(c)).count() as u32;
                    if k > 0 {
                        used_by.push((o.vm.clone(), k));
                    }
                }
            }
            return Err(TuningError::NotEnoughCpus {
                node: *node,
                needed: *want,
                free: free.len() as u32,
                total: n.cpus.len() as u32,
                reserved: !n.cpus.is_empty(),
                used_by,
                gpu: gpu_text,
            });
        }
        let first = vcpu_cpus.len() as u32;
        vcpu_cpus.extend(free.iter().take(*want as usize));
        cells.push(Cell {
            id: cell as u32,
            host_node: *node,
            vcpus: (first..first + want).collect(),
            memory_mib: 0,
        });
    }
    let nodes: Vec<u32> = shares.iter().map(|s| s.0).collect();
    let mine: BTreeSet<u32> = vcpu_cpus.iter().copied().collect();
    let emulator: Vec<u32> = nodes
        .iter()
        .filter_map(|n| facts.node(*n))
        .flat_map(|n| n.cpus.iter().copied())
        .filter(|c| !mine.contains(c) && !taken.contains(c))
        .collect();
    let cells = if cells.len() > 1 { cells } else { Vec::new() };
    let mut nodes_sorted = nodes.clone();
    nodes_sorted.sort_unstable();
    Ok(CpuPlacement {
        mode,
        nodes: nodes_sorted,
        reason,
        vcpu_cpus,
        emulator_cpuset: format_cpuset(&emulator),
        cells: split_memory(cells, input.vcpus, input.memory_mib, 1),
    })
}

/// Gives each cell memory in proportion to its vCPUs, in whole `unit_mib`; the last cell takes
/// the rest.
fn split_memory(mut cells: Vec<Cell>, vcpus: u32, memory_mib: u64, unit_mib: u64) -> Vec<Cell> {
    let n = cells.len();
    let mut given = 0;
    for (i, c) in cells.iter_mut().enumerate() {
        c.memory_mib = if i + 1 == n {
            memory_mib - given
        } else {
            memory_mib * c.vcpus.len() as u64 / u64::from(vcpus) / unit_mib * unit_mib
        };
        given += c.memory_mib;
    }
    cells
}

fn place_hugepages(
    input: &PlanInput<'_>,
    size: PageSize,
    cpu: Option<&CpuPlacement>,
) -> std::result::Result<HugepagePlacement, TuningError> {
    let unit = size.mib();
    let cells = cpu.map_or(0, |c| c.cells.len());
    if !input.memory_mib.is_multiple_of(unit) {
        return Err(TuningError::NotPageMultiple {
            memory_mib: input.memory_mib,
            size,
            cells,
        });
    }
    let pages = input.memory_mib / unit;
    let mut per_node = BTreeMap::new();
    match cpu {
        Some(c) if !c.cells.is_empty() => {
            // Re-split the cells' memory in whole pages; each cell must get some.
            let cells = split_memory(c.cells.clone(), input.vcpus, input.memory_mib, unit);
            if cells
                .iter()
                .any(|c| c.memory_mib == 0 || !c.memory_mib.is_multiple_of(unit))
            {
                return Err(TuningError::NotPageMultiple {
                    memory_mib: input.memory_mib,
                    size,
                    cells: cells.len(),
                });
            }
            for cell in &cells {
                *per_node.entry(cell.host_node).or_insert(0) += cell.memory_mib / unit;
            }
        }
        Some(c) => {
            per_node.insert(c.nodes[0], pages);
        }
        None => {}
    }
    let nodes = input.facts.nodes.len() as u64;
    if per_node.is_empty() {
        let pool = input.facts.pool(size.kib());
        if pool.free < pages {
            return Err(TuningError::NotEnoughHugepages {
                size,
                place: "on this host".into(),
                needed: pages,
                free: pool.free,
                total: pool.total,
                suggest: pool.total + (pages - pool.free),
            });
        }
    } else {
        for (node, want) in &per_node {
            let pool = input
                .facts
                .node(*node)
                .map(|n| n.pool(size.kib()))
                .unwrap_or_default();
            if pool.free < *want {
                // A boot-time reservation is spread evenly over the nodes.
                return Err(TuningError::NotEnoughHugepages {
                    size,
                    place: format!("on NUMA node {node}"),
                    needed: *want,
                    free: pool.free,
                    total: pool.total,
                    suggest: (pool.total + (want - pool.free)) * nodes.max(1),
                });
            }
        }
    }
    Ok(HugepagePlacement {
        size,
        pages,
        per_node,
    })
}

/// The cells of a placement with their memory in whole pages when hugepages back them.
pub fn finish(mut p: Placement, memory_mib: u64, vcpus: u32) -> Placement {
    if let (Some(c), Some(h)) = (&mut p.cpu, &p.hugepages)
        && !c.cells.is_empty()
    {
        c.cells = split_memory(c.cells.clone(), vcpus, memory_mib, h.size.mib());
    }
    p
}

/// Other domains' pinned CPUs, from their XML (`<cputune><vcpupin cpuset>`).
pub fn pinned_elsewhere(ctx: &Ctx, except: &str) -> Result<Vec<Pinned>> {
    let mut out = Vec::new();
    for rec in ctx.hv.list()? {
        if rec.name == except {
            continue;
        }
        let Ok(f) = parse_domain(&rec.xml) else {
            continue;
        };
        let cpus: BTreeSet<u32> = f
            .tuning
            .vcpupins
            .iter()
            .filter_map(|p| parse_cpuset(&p.cpuset).ok())
            .flatten()
            .collect();
        if !cpus.is_empty() {
            out.push(Pinned { vm: rec.name, cpus });
        }
    }
    Ok(out)
}

/// The placement for a create: facts from the host root, GPUs' nodes from sysfs, other
/// domains' pins from libvirt. `None` when nothing was asked.
pub fn place(
    ctx: &Ctx,
    vm: &str,
    req: TuningRequest,
    gpus: &[Vec<PciAddress>],
    vcpus: u32,
    memory_mib: u64,
) -> Result<Option<Placement>> {
    if req.is_empty() {
        return Ok(None);
    }
    let facts = hwdetect::numa::numa(ctx.host);
    let gpus: Vec<(String, Option<u32>)> = gpus
        .iter()
        .filter_map(|f| f.first())
        // The NVSwitches of a full passthrough ride along as hostdevs; they are no GPUs here.
        .filter(|a| !crate::gpu::nvswitch::is_nvswitch(ctx.host, a))
        .map(|a| {
            let bdf = a.to_string();
            let node = hwdetect::numa::pci_numa_node(ctx.host, &bdf);
            (bdf, node)
        })
        .collect();
    let others = if req.pinning.is_some() {
        pinned_elsewhere(ctx, vm)?
    } else {
        Vec::new()
    };
    let input = PlanInput {
        facts: &facts,
        gpus: &gpus,
        vcpus,
        memory_mib,
        others: &others,
    };
    let p = plan(&input, req)?;
    Ok(Some(finish(p, memory_mib, vcpus)))
}

/// The flock(2) every pinned create holds from its last check of the other domains' pins to
/// its define, so two creates at once cannot pick the same CPUs. Released on drop.
#[derive(Debug)]
pub struct PinLock {
    _file: Option<File>,
}

impl PinLock {
    /// Takes the lock when `placement` pins CPUs; a create without pinning takes none.
    pub fn take(ctx: &Ctx, placement: Option<&Placement>) -> Result<Self> {
        if placement.and_then(|p| p.cpu.as_ref()).is_none() {
            return Ok(Self { _file: None });
        }
        let dir = ctx.config.state_dir(ctx.host);
        let path = dir.join("cpu-pinning.lock");
        let err = |source: std::io::Error| TuningError::Lock {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(err)?;
        let file = hostio::file::open_or_create(&path, 0o644).map_err(err)?;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive) {
                Ok(()) => break,
                Err(e) if e == rustix::io::Errno::INTR => {
                    if (ctx.cancelled)() {
                        return Err(Error::Interrupted {
                            during: "the wait for the CPU pinning lock".into(),
                            next: "run the same command again".into(),
                        });
                    }
                }
                Err(e) => return Err(err(e.into()).into()),
            }
        }
        Ok(Self { _file: Some(file) })
    }
}

#[cfg(test)]
mod tests;
