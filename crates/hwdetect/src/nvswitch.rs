//! NVSwitches (HGX baseboards) with their IOMMU groups, and NVIDIA Fabric Manager on the host:
//! the `FABRIC_MODE` of its config and whether `nv-fabricmanager` runs (NVIDIA Fabric Manager
//! user guide, docs.nvidia.com/datacenter/tesla/fabric-manager-user-guide: "Fabric Manager
//! Startup Options" for the default config path and `-c/--config`, "Virtualization Models" for
//! the modes).

use std::collections::{BTreeMap, BTreeSet};

use hostio::paths::{FABRICMANAGER_CFG, PROC};

use crate::facts::{FabricManagerInfo, NvSwitch, PciDevice};
use crate::pci::{CLASS_PCI_BRIDGE, is_nvswitch};
use crate::probe::Probe;

/// `/proc/<pid>/comm` holds at most 15 bytes (TASK_COMM_LEN 16 with the NUL; proc(5)), so
/// `nv-fabricmanager` shows as `nv-fabricmanage`. Both are accepted.
const FM_COMMS: [&str; 2] = ["nv-fabricmanage", "nv-fabricmanager"];
/// `FABRIC_MODE=1`: "Start Fabric Manager in Shared NVSwitch multitenancy mode".
pub const FABRIC_MODE_SHARED_NVSWITCH: u32 = 1;

/// The NVSwitches among `devices`, sorted by BDF, with isolation judged as for GPUs except that
/// other NVSwitches are no blockers: full passthrough hands every switch to the same VM.
pub(crate) fn switches(
    devices: &[PciDevice],
    groups: Option<&BTreeMap<u32, BTreeSet<String>>>,
) -> Vec<NvSwitch> {
    let by_bdf: BTreeMap<&str, &PciDevice> = devices.iter().map(|d| (d.bdf.as_str(), d)).collect();
    devices
        .iter()
        .filter(|d| is_nvswitch(d))
        .map(|d| {
            let group = groups.and_then(|g| {
                d.iommu_group
                    .or_else(|| g.iter().find(|(_, m)| m.contains(&d.bdf)).map(|(n, _)| *n))
            });
            let (isolated, group_blockers) = match (groups, group) {
                (Some(groups), Some(n)) => {
                    let members = crate::pci::group_members(groups, devices, n);
                    // An unreadable member counts as a blocker: isolation is never guessed.
                    let blockers: Vec<String> = members
                        .into_iter()
                        .filter(|m| *m != d.bdf)
                        .filter(|m| {
                            by_bdf
                                .get(m)
                                .is_none_or(|x| x.class != CLASS_PCI_BRIDGE && !is_nvswitch(x))
                        })
                        .map(str::to_string)
                        .collect();
                    (Some(blockers.is_empty()), blockers)
                }
                _ => (None, Vec::new()),
            };
            NvSwitch {
                bdf: d.bdf.clone(),
                device_id: d.device_id.clone(),
                name: d
                    .device_name
                    .clone()
                    .unwrap_or_else(|| format!("NVIDIA device {}:{}", d.vendor_id, d.device_id)),
                iommu_group: group,
                driver: d.driver.clone(),
                isolated,
                group_blockers,
            }
        })
        .collect()
}

/// Fabric Manager on this host: the running process (if any), the config it reads, its mode.
pub(crate) fn fabric_manager(probe: &Probe, warn: &mut Vec<String>) -> FabricManagerInfo {
    let mut info = FabricManagerInfo::default();
    let mut config = FABRICMANAGER_CFG.to_string();
    if let Some((pid, cmdline)) = find_process(probe) {
        info.pid = Some(pid);
        if let Some(c) = config_arg(&cmdline) {
            config = c;
        }
    }
    match probe.read_optional(&config) {
        Ok(Some(text)) => {
            info.config = Some(config.clone());
            info.fabric_mode = fabric_mode(&text);
            if info.fabric_mode.is_none() {
                warn.push(format!("{config}: no numeric FABRIC_MODE= line"));
            }
        }
        Ok(None) => {}
        Err(e) => warn.push(format!("{config}: cannot read: {e}")),
    }
    info.shared_nvswitch =
        info.pid.is_some() && info.fabric_mode == Some(FABRIC_MODE_SHARED_NVSWITCH);
    info
}

/// The first `/proc/<pid>` whose `comm` is Fabric Manager's, with its argv. Only that process's
/// files are recorded for a capture.
fn find_process(probe: &Probe) -> Option<(u32, Vec<String>)> {
    let mut pids: Vec<u32> = probe
        .peek_list(PROC)
        .ok()?
        .iter()
        .filter_map(|p| p.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.into_iter().find_map(|pid| {
        let comm = probe.peek(format!("{PROC}/{pid}/comm")).ok()?;
        if !FM_COMMS.contains(&comm.trim()) {
            return None;
        }
        let _ = probe.read(format!("{PROC}/{pid}/comm"));
        // proc(5): the arguments, each ended by a NUL.
        let argv = probe
            .read_optional(format!("{PROC}/{pid}/cmdline"))
            .ok()
            .flatten()
            .unwrap_or_default()
            .split('\0')
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        Some((pid, argv))
    })
}

/// `-c FILE`, `--config FILE` or `--config=FILE` (`nv-fabricmanager -h`).
fn config_arg(argv: &[String]) -> Option<String> {
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "-c" || a == "--config" {
            return it.next().cloned();
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(v.to_string());
        }
    }
    None
}

/// The last `FABRIC_MODE=<n>` of a config file (`KEY=VALUE` lines, `#` comments).
pub fn fabric_mode(text: &str) -> Option<u32> {
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next().unwrap_or_default();
            let (k, v) = l.split_once('=')?;
            (k.trim() == "FABRIC_MODE").then(|| v.trim().parse().ok())?
        })
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fabric_mode_is_the_last_numeric_assignment_outside_comments() {
        assert_eq!(fabric_mode("# FABRIC_MODE=1\nFABRIC_MODE=0\n"), Some(0));
        assert_eq!(
            fabric_mode("FABRIC_MODE=0\nFABRIC_MODE = 1 # shared\n"),
            Some(1)
        );
        assert_eq!(fabric_mode("FABRIC_MODE_RESTART=1\n"), None);
        assert_eq!(fabric_mode("FABRIC_MODE=x\n"), None);
    }

    #[test]
    fn config_comes_from_either_flag_form() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            config_arg(&argv(&["nv-fabricmanager", "-c", "/etc/fm.cfg"])),
            Some("/etc/fm.cfg".into())
        );
        assert_eq!(
            config_arg(&argv(&["nv-fabricmanager", "--config=/x.cfg", "-r"])),
            Some("/x.cfg".into())
        );
        assert_eq!(config_arg(&argv(&["nv-fabricmanager", "-r"])), None);
    }
}
