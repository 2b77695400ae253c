//! NUMA topology, hugepage pools and a PCI device's node, from sysfs: what CPU pinning and
//! hugepage-backed memory (`vmctl create --cpu-pinning/--hugepages`) and `gpu-vm-bootstrap
//! --hugepages` plan from. Layout: Documentation/ABI/stable/sysfs-devices-node (`nodeN/cpulist`,
//! `nodeN/hugepages/`), Documentation/admin-guide/mm/hugetlbpage.rst (`/sys/kernel/mm/hugepages/
//! hugepages-<size>kB/{nr,free,resv}_hugepages`), Documentation/ABI/testing/sysfs-bus-pci
//! (`numa_node`, -1 when the platform does not say).
//!
//! Read separately from [`crate::detect`]: only the commands that pin or reserve need it.

use std::collections::BTreeSet;

use hostio::HostRoot;
use hostio::paths::{
    PROC_MEMINFO, SYS_BUS_PCI_DEVICES, SYS_DEVICES_SYSTEM_CPU_ONLINE, SYS_DEVICES_SYSTEM_NODE,
    SYS_KERNEL_MM_HUGEPAGES,
};
use serde::{Deserialize, Serialize};

use crate::parse;
use crate::probe::Probe;

/// One hugepage pool (one page size, host-wide or on one node).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HugepagePool {
    /// Page size in KiB: 2048 (2M) or 1048576 (1G) on x86-64.
    pub size_kib: u64,
    /// `nr_hugepages`: pages reserved in the pool.
    pub total: u64,
    /// `free_hugepages` (less `resv_hugepages` host-wide: pages promised to a mapping that has
    /// not touched them yet are not free for a new VM).
    pub free: u64,
}

/// A NUMA node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaNode {
    pub id: u32,
    /// Its online CPUs, sorted.
    pub cpus: Vec<u32>,
    /// Its share of each hugepage pool, by size.
    pub hugepages: Vec<HugepagePool>,
}

/// The host's NUMA topology and hugepage pools.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaFacts {
    /// Online CPUs, sorted.
    pub online_cpus: Vec<u32>,
    /// Nodes by id. A kernel without NUMA support has no `node/` directory: it is then one node
    /// 0 holding every online CPU and the host-wide pools, which is what the scheduler sees.
    pub nodes: Vec<NumaNode>,
    /// Host-wide hugepage pools, by size.
    pub hugepages: Vec<HugepagePool>,
    /// `MemTotal` from `/proc/meminfo`, in KiB.
    pub mem_total_kib: Option<u64>,
    /// What could not be read (a path and why).
    pub warnings: Vec<String>,
}

impl NumaFacts {
    pub fn node(&self, id: u32) -> Option<&NumaNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The host-wide pool of a page size (a size the kernel has no pool for reads as empty).
    pub fn pool(&self, size_kib: u64) -> HugepagePool {
        pool_of(&self.hugepages, size_kib)
    }
}

impl NumaNode {
    /// This node's pool of a page size.
    pub fn pool(&self, size_kib: u64) -> HugepagePool {
        pool_of(&self.hugepages, size_kib)
    }
}

fn pool_of(pools: &[HugepagePool], size_kib: u64) -> HugepagePool {
    pools
        .iter()
        .find(|p| p.size_kib == size_kib)
        .copied()
        .unwrap_or(HugepagePool {
            size_kib,
            ..Default::default()
        })
}

/// Reads the topology. Never fails: what cannot be read is a warning.
pub fn numa(root: &HostRoot) -> NumaFacts {
    let probe = Probe::new(root);
    let mut f = NumaFacts::default();
    let online = match probe.read(SYS_DEVICES_SYSTEM_CPU_ONLINE) {
        Ok(t) => match parse::cpulist(&t) {
            Ok(c) => Some(c),
            Err(e) => {
                f.warnings
                    .push(format!("{SYS_DEVICES_SYSTEM_CPU_ONLINE}: {e}"));
                None
            }
        },
        Err(e) => {
            f.warnings
                .push(format!("{SYS_DEVICES_SYSTEM_CPU_ONLINE}: cannot read: {e}"));
            None
        }
    };
    f.hugepages = pools(&probe, SYS_KERNEL_MM_HUGEPAGES, true, &mut f.warnings);
    let mut ids: Vec<u32> = probe
        .list(SYS_DEVICES_SYSTEM_NODE)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n.strip_prefix("node")?.parse().ok())
        .collect();
    ids.sort_unstable();
    for id in ids {
        let dir = format!("{SYS_DEVICES_SYSTEM_NODE}/node{id}");
        let cpus = match probe.read(format!("{dir}/cpulist")) {
            Ok(t) => parse::cpulist(&t).unwrap_or_else(|e| {
                f.warnings.push(format!("{dir}/cpulist: {e}"));
                Vec::new()
            }),
            Err(e) => {
                f.warnings.push(format!("{dir}/cpulist: cannot read: {e}"));
                Vec::new()
            }
        };
        let cpus = match &online {
            Some(on) => cpus.into_iter().filter(|c| on.contains(c)).collect(),
            None => cpus,
        };
        let hugepages = pools(&probe, &format!("{dir}/hugepages"), false, &mut f.warnings);
        f.nodes.push(NumaNode {
            id,
            cpus,
            hugepages,
        });
    }
    f.online_cpus = match online {
        Some(c) => c,
        None => f
            .nodes
            .iter()
            .flat_map(|n| n.cpus.iter().copied())
            .collect::<BTreeSet<u32>>()
            .into_iter()
            .collect(),
    };
    if f.nodes.is_empty() {
        f.nodes.push(NumaNode {
            id: 0,
            cpus: f.online_cpus.clone(),
            hugepages: f.hugepages.clone(),
        });
    }
    match probe.read(PROC_MEMINFO) {
        Ok(t) => f.mem_total_kib = parse::meminfo_kib(&t, "MemTotal"),
        Err(e) => f.warnings.push(format!("{PROC_MEMINFO}: cannot read: {e}")),
    }
    f
}

/// The pools under `dir` (`hugepages-<size>kB/`), sorted by size. `resv`: subtract
/// `resv_hugepages` from the free count (only the host-wide pools have it).
fn pools(probe: &Probe, dir: &str, resv: bool, warn: &mut Vec<String>) -> Vec<HugepagePool> {
    let mut out = Vec::new();
    for name in probe.list(dir).unwrap_or_default() {
        let Some(size_kib) = name
            .strip_prefix("hugepages-")
            .and_then(|s| s.strip_suffix("kB"))
            .and_then(|s| s.parse().ok())
        else {
            continue;
        };
        let count = |file: &str, warn: &mut Vec<String>| -> u64 {
            let path = format!("{dir}/{name}/{file}");
            match probe.read_optional(&path) {
                Ok(Some(t)) => t.trim().parse().unwrap_or_else(|_| {
                    warn.push(format!("{path}: not a number: {:?}", t.trim()));
                    0
                }),
                Ok(None) => 0,
                Err(e) => {
                    warn.push(format!("{path}: cannot read: {e}"));
                    0
                }
            }
        };
        let total = count("nr_hugepages", warn);
        let mut free = count("free_hugepages", warn);
        if resv {
            free = free.saturating_sub(count("resv_hugepages", warn));
        }
        out.push(HugepagePool {
            size_kib,
            total,
            free,
        });
    }
    out.sort_by_key(|p| p.size_kib);
    out
}

/// The NUMA node of a PCI function (`numa_node`; `bdf` as sysfs names it, `0000:18:00.0`).
/// `None` when the platform gives none (-1, a kernel without NUMA) or the file is missing.
pub fn pci_numa_node(root: &HostRoot, bdf: &str) -> Option<u32> {
    let text = Probe::new(root)
        .read(format!("{SYS_BUS_PCI_DEVICES}/{bdf}/numa_node"))
        .ok()?;
    text.trim()
        .parse::<i64>()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h200_host_has_two_nodes_with_its_gpus_split() {
        let host = fixture_builder::build_host("hgx-h200x8-nvswitch-truncated");
        let root = HostRoot::new(host.path());
        let f = numa(&root);
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);
        assert_eq!(f.nodes.len(), 2);
        assert_eq!(f.online_cpus.len(), 224);
        assert_eq!(f.node(0).unwrap().cpus.len(), 112);
        assert_eq!(f.node(1).unwrap().cpus[0], 56);
        for (bdf, node) in [
            ("0000:18:00.0", 0),
            ("0000:5d:00.0", 0),
            ("0000:9a:00.0", 1),
            ("0000:db:00.0", 1),
        ] {
            assert_eq!(pci_numa_node(&root, bdf), Some(node), "{bdf}");
        }
        assert!(f.mem_total_kib.unwrap() > 1 << 30);
        assert_eq!(f.pool(1048576).total, 0);
    }

    #[test]
    fn hugepage_pools_per_node_and_host_wide() {
        let host = fixture_builder::build_from_str(
            r#"
            base = "hgx-h200x8-nvswitch-truncated"
            [numa.0.hugepages]
            1048576 = { total = 64, free = 60 }
            2048 = { total = 512, free = 512 }
            [numa.1.hugepages]
            1048576 = { total = 64, free = 64 }
            "#,
        )
        .unwrap();
        let f = numa(&HostRoot::new(host.path()));
        assert_eq!(
            f.node(0).unwrap().pool(1048576),
            HugepagePool {
                size_kib: 1048576,
                total: 64,
                free: 60
            }
        );
        assert_eq!(f.pool(1048576).total, 128);
        assert_eq!(f.pool(1048576).free, 124);
        assert_eq!(f.pool(2048).free, 512);
        assert_eq!(f.node(1).unwrap().pool(2048).total, 0);
    }

    #[test]
    fn a_host_without_numa_is_one_node() {
        let host = fixture_builder::build_host("intel-z170-gtx960");
        let root = HostRoot::new(host.path());
        let f = numa(&root);
        assert_eq!(f.nodes.len(), 1);
        assert_eq!(f.nodes[0].cpus, f.online_cpus);
        assert_eq!(pci_numa_node(&root, "0000:01:00.0"), None);
    }

    /// The machine running the tests: whatever it is, it has a node with its CPUs.
    #[test]
    fn real_host() {
        let f = numa(&HostRoot::system());
        assert!(!f.online_cpus.is_empty(), "{:?}", f.warnings);
        assert!(f.nodes.iter().any(|n| !n.cpus.is_empty()));
    }
}
