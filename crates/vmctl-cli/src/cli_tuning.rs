//! `--cpu-pinning` and `--hugepages` of `create ubuntu` and `create talos`, and the lines the
//! creates print about where the VM went.

use clap::{Args, ValueEnum};
use vmctl::tuning::{PageSize, PinMode, Placement, TuningRequest};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum PinArg {
    // No doc comments: possible values with help switch clap's `--help` to its long layout.
    Auto,
    Shared,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum PageArg {
    #[value(name = "2M", alias = "2m")]
    M2,
    #[value(name = "1G", alias = "1g")]
    G1,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct TuningArgs {
    /// Pin each vCPU to a host CPU on the NUMA node of the VM's GPUs (without a GPU: the node
    /// with the most free CPUs), the emulator threads to the node's other CPUs, and memory to the
    /// node; GPUs on two nodes give the guest two NUMA cells. The lowest CPU of each node stays
    /// with the host. auto: never a CPU another VM pins; shared: ignore other VMs' pins
    #[arg(long, value_enum, value_name = "MODE")]
    pub(crate) cpu_pinning: Option<PinArg>,
    /// Back the memory with hugepages of this size; refused unless enough are free (on the
    /// pinned node, else host-wide): reserve them with `gpu-vm-bootstrap --hugepages 1G:N`.
    /// --memory must be a multiple of the size
    #[arg(long, value_enum, value_name = "SIZE")]
    pub(crate) hugepages: Option<PageArg>,
}

impl TuningArgs {
    pub(crate) fn request(&self) -> TuningRequest {
        TuningRequest {
            pinning: self.cpu_pinning.map(|p| match p {
                PinArg::Auto => PinMode::Auto,
                PinArg::Shared => PinMode::Shared,
            }),
            hugepages: self.hugepages.map(|h| match h {
                PageArg::M2 => PageSize::M2,
                PageArg::G1 => PageSize::G1,
            }),
        }
    }
}

/// `  CPU pinning: …` and `  hugepages: …` lines (stderr) for a create's summary.
pub(crate) fn placement_lines(p: &Placement) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(c) = &p.cpu {
        let pins: Vec<String> = c.vcpu_cpus.iter().map(u32::to_string).collect();
        out.push(format!(
            "  CPU pinning ({}): vCPUs on host CPUs {}, emulator on {} ({})",
            match c.mode {
                PinMode::Auto => "auto",
                PinMode::Shared => "shared",
            },
            pins.join(","),
            c.emulator_cpuset,
            c.reason
        ));
        for cell in &c.cells {
            out.push(format!(
                "  guest NUMA cell {}: vCPUs {}, {} MiB on host node {}",
                cell.id,
                vmctl::hypervisor::domain::tuning::format_cpuset(&cell.vcpus),
                cell.memory_mib,
                cell.host_node
            ));
        }
    }
    if let Some(h) = &p.hugepages {
        let per: Vec<String> = h
            .per_node
            .iter()
            .map(|(n, k)| format!("{k} on node {n}"))
            .collect();
        out.push(format!(
            "  hugepages: {} × {}{}",
            h.pages,
            h.size,
            if per.is_empty() {
                String::new()
            } else {
                format!(" ({})", per.join(", "))
            }
        ));
    }
    out
}
