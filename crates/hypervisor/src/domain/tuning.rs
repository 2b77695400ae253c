//! CPU and memory placement of a domain: vCPU and emulator pinning (`<cputune>`), host NUMA
//! memory policy (`<numatune>`) and guest NUMA cells (`<cpu><numa>`), as libvirt's formatdomain
//! "CPU Tuning", "NUMA Node Tuning" and "CPU model and topology" describe them; and libvirt's
//! cpuset syntax (`1-4,^3,6`). Hugepage backing is [`super::MemoryBacking::hugepage_kib`].

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::InvalidValue;

/// `<vcpupin vcpu='N' cpuset='…'/>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuPin {
    pub vcpu: u32,
    /// Host CPUs, in libvirt's cpuset syntax.
    pub cpuset: String,
}

/// A guest NUMA cell (`<cell id cpus memory unit='MiB'/>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaCell {
    pub id: u32,
    /// Guest vCPUs in the cell, in cpuset syntax.
    pub cpus: String,
    pub memory_mib: u64,
}

/// `<memnode cellid='N' mode='strict' nodeset='…'/>`: a guest cell's memory on host nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemNode {
    pub cellid: u32,
    pub nodeset: String,
}

/// Everything in this module a domain may carry; empty by default (nothing rendered).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tuning {
    pub vcpupins: Vec<VcpuPin>,
    /// `<emulatorpin cpuset='…'/>`: where QEMU's non-vCPU threads run.
    pub emulatorpin: Option<String>,
    /// `<numatune><memory mode='strict' nodeset='…'/>`: the host nodes guest memory comes from.
    pub memory_nodeset: Option<String>,
    /// Per guest cell, within `memory_nodeset`.
    pub memnodes: Vec<MemNode>,
    /// Guest NUMA cells; their memory adds up to the domain's.
    pub numa_cells: Vec<NumaCell>,
}

impl Tuning {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

fn invalid(value: &str, reason: &str) -> InvalidValue {
    InvalidValue {
        option: "cpuset".into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// Parses libvirt's cpuset syntax (formatdomain "CPU Allocation": a comma-separated list of
/// numbers and ranges, `^N` excluding a number): `0-3,^2,8` is 0, 1, 3, 8. Sorted, no
/// duplicates.
pub fn parse_cpuset(s: &str) -> Result<Vec<u32>, InvalidValue> {
    let mut set = BTreeSet::new();
    let mut excluded = BTreeSet::new();
    let num = |t: &str| -> Result<u32, InvalidValue> {
        let n: u32 = t
            .trim()
            .parse()
            .map_err(|_| invalid(s, "expected numbers and ranges like 0-3,^2,8"))?;
        // libvirt's VIR_DOMAIN_CPUMASK_LEN.
        if n >= 16384 {
            return Err(invalid(s, "CPU numbers stop at 16383"));
        }
        Ok(n)
    };
    for part in s.split(',') {
        let part = part.trim();
        if let Some(x) = part.strip_prefix('^') {
            excluded.insert(num(x)?);
            continue;
        }
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(part)?;
                (n, n)
            }
        };
        if a > b {
            return Err(invalid(s, "a range runs backwards"));
        }
        set.extend(a..=b);
    }
    Ok(set.difference(&excluded).copied().collect())
}

/// Writes CPUs as a cpuset with ranges (`0-3,8`), the form libvirt itself writes back.
pub fn format_cpuset(cpus: &[u32]) -> String {
    let sorted: BTreeSet<u32> = cpus.iter().copied().collect();
    let sorted: Vec<u32> = sorted.into_iter().collect();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        parts.push(if sorted[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", sorted[i])
        });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpusets() {
        assert_eq!(parse_cpuset("0-3,^2,8").unwrap(), [0, 1, 3, 8]);
        assert_eq!(parse_cpuset("5").unwrap(), [5]);
        assert_eq!(parse_cpuset("1, 3").unwrap(), [1, 3]);
        for bad in ["", "a", "3-1", "1,,2", "99999"] {
            assert!(parse_cpuset(bad).is_err(), "{bad}");
        }
        assert_eq!(format_cpuset(&[8, 0, 1, 2, 3]), "0-3,8");
        assert_eq!(format_cpuset(&[]), "");
    }
}
