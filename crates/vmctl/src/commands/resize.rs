//! `vmctl resize VM --cpus N --memory SIZE --disk +SIZE`: vCPUs and memory in the persistent
//! definition (the next start has them), the system disk grown in place: live through
//! libvirt's block resize when the VM runs, with `qemu-img resize` when it is stopped. The
//! guest's root grows on its next boot (cloud-init's `growpart` and `resizefs` run every boot).
//!
//! Everything is checked before anything changes; a disk never shrinks. The definition changes
//! come first and are put back if a later step fails; the disk, which cannot be put back, last.

use hostio::Cmd;
use hypervisor::domain::parse::{DiskFacts, parse_domain};
use serde::Serialize;

use super::Ctx;
use crate::error::{CommandFailure, Error, ExitKind, Failure, Result};
use crate::names;

/// What `vmctl resize` refuses.
#[derive(Debug, thiserror::Error)]
pub enum ResizeError {
    #[error("nothing to change: give --cpus, --memory or --disk")]
    NothingAsked,
    #[error(
        "{vm}'s disk {target} is {current} bytes; {wanted} bytes would shrink it, and shrinking loses the data past the new end"
    )]
    Shrink {
        vm: String,
        target: String,
        current: u64,
        wanted: u64,
    },
    #[error("{vm} has no disk {target}")]
    NoSuchDisk { vm: String, target: String },
    #[error("grow {path}")]
    GrowDisk {
        path: std::path::PathBuf,
        #[source]
        source: hostio::CommandError,
    },
    #[error(
        "{vm}'s vCPUs are pinned to host CPUs ({pins} pins); a new count would leave them unpinned or half pinned"
    )]
    Pinned { vm: String, pins: usize },
}

impl CommandFailure for ResizeError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            ResizeError::GrowDisk { .. } => ExitKind::Failure,
            _ => ExitKind::Usage,
        }
    }

    fn help(&self) -> Vec<String> {
        match self {
            ResizeError::NothingAsked => {
                vec!["e.g. `vmctl resize VM --cpus 4 --memory 8G --disk +10G`".into()]
            }
            ResizeError::Shrink { vm, .. } => vec![
                format!("grow it instead (`vmctl resize {vm} --disk +10G`), or add a data disk: `vmctl disk add {vm} 20G`"),
            ],
            ResizeError::NoSuchDisk { vm, .. } => {
                vec![format!("`vmctl disk list {vm}` shows its disks")]
            }
            ResizeError::GrowDisk { .. } => vec![
                "qemu-img cannot grow a disk another process holds open: is the VM (or a backup) still using it?".into(),
            ],
            ResizeError::Pinned { vm, .. } => vec![format!(
                "re-create the VM with the new count and --cpu-pinning, or remove the pins with `virsh edit {vm}` first"
            )],
        }
    }
}

impl From<ResizeError> for Error {
    fn from(e: ResizeError) -> Self {
        Error::Command(Failure::new(e))
    }
}

/// `vmctl resize` options, as given.
#[derive(Debug, Clone, Default)]
pub struct ResizeRequest {
    pub cpus: Option<u32>,
    /// MiB, or with a unit (`8G`).
    pub memory: Option<String>,
    /// `+SIZE` grows by SIZE; `SIZE` is the new size.
    pub disk: Option<String>,
    /// The disk to grow (default `vda`, the system disk).
    pub target: Option<String>,
}

/// One value changed.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// `vcpus`, `memory_mib` or `disk:TARGET` (bytes).
    pub what: String,
    pub from: u64,
    pub to: u64,
    /// When it takes effect, in words.
    pub effective: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Resized {
    pub name: String,
    pub running: bool,
    pub changes: Vec<Change>,
}

/// The new size of a disk of `current` bytes: `+SIZE` adds, `SIZE` sets.
fn disk_target_size(text: &str, current: u64) -> Result<u64> {
    match text.strip_prefix('+') {
        Some(more) => Ok(current.saturating_add(names::parse_size("--disk", more)?)),
        None => names::parse_size("--disk", text),
    }
}

fn the_disk<'a>(vm: &str, disks: &'a [DiskFacts], target: &str) -> Result<&'a DiskFacts> {
    disks
        .iter()
        .find(|d| d.target == target && d.device == "disk")
        .ok_or_else(|| {
            ResizeError::NoSuchDisk {
                vm: vm.into(),
                target: target.into(),
            }
            .into()
        })
}

/// Checks everything, then changes the definition, then grows the disk.
pub fn resize(ctx: &Ctx, name: &str, req: &ResizeRequest) -> Result<Resized> {
    if req.cpus.is_none() && req.memory.is_none() && req.disk.is_none() {
        return Err(ResizeError::NothingAsked.into());
    }
    let rec = ctx.hv.require(name)?;
    if !rec.persistent {
        return Err(Error::Transient { name: name.into() });
    }
    let running = rec.state.is_active();
    let facts = parse_domain(&ctx.hv.inactive_xml(name)?)?;
    if let Some(c) = req.cpus
        && !(1..=1024).contains(&c)
    {
        return Err(Error::InvalidOption {
            option: "--cpus".into(),
            value: c.to_string(),
            reason: "expected 1 to 1024".into(),
        });
    }
    let pins = rec.xml.matches("<vcpupin ").count();
    if req.cpus.is_some_and(|c| c != facts.vcpus) && pins > 0 {
        return Err(ResizeError::Pinned {
            vm: name.into(),
            pins,
        }
        .into());
    }
    let memory_mib = req
        .memory
        .as_deref()
        .map(names::parse_memory_mib)
        .transpose()?;
    let target = req.target.as_deref().unwrap_or("vda");
    let disk = match &req.disk {
        Some(text) => {
            let d = the_disk(name, &facts.disks, target)?;
            let current = ctx.hv.disk_capacity(name, target)?;
            let wanted = disk_target_size(text, current)?;
            if wanted < current {
                return Err(ResizeError::Shrink {
                    vm: name.into(),
                    target: target.into(),
                    current,
                    wanted,
                }
                .into());
            }
            Some((d.clone(), current, wanted))
        }
        None => None,
    };

    let next_start = if running {
        "after `vmctl stop` and `vmctl start` (a reboot keeps the running size)"
    } else {
        "at the next start"
    };
    let mut changes = Vec::new();
    let old_vcpus = facts.vcpus;
    let old_mib = facts.memory_kib / 1024;
    // Put back what this call changed in the definition if a later step fails.
    let restore = |changes: &[Change]| {
        for c in changes {
            let r = match c.what.as_str() {
                "vcpus" => ctx.hv.set_vcpus_config(name, old_vcpus),
                "memory_mib" => ctx.hv.set_memory_config(name, old_mib * 1024),
                _ => Ok(()),
            };
            if let Err(e) = r {
                tracing::warn!("could not put back {} of {name}: {e}", c.what);
            }
        }
    };
    let result = (|| -> Result<()> {
        if let Some(c) = req.cpus.filter(|c| *c != old_vcpus) {
            ctx.hv.set_vcpus_config(name, c)?;
            changes.push(Change {
                what: "vcpus".into(),
                from: old_vcpus.into(),
                to: c.into(),
                effective: next_start.into(),
            });
        }
        if let Some(m) = memory_mib.filter(|m| *m != old_mib) {
            ctx.hv.set_memory_config(name, m * 1024)?;
            changes.push(Change {
                what: "memory_mib".into(),
                from: old_mib,
                to: m,
                effective: next_start.into(),
            });
        }
        Ok(())
    })();
    if let Err(e) = result {
        restore(&changes);
        return Err(e);
    }
    if let Some((d, current, wanted)) = disk.filter(|(_, c, w)| w > c) {
        let grown = if running {
            ctx.hv
                .resize_disk_live(name, target, wanted)
                .map_err(Error::from)
        } else {
            grow_offline(ctx, name, &d, wanted)
        };
        if let Err(e) = grown {
            restore(&changes);
            return Err(e);
        }
        changes.push(Change {
            what: format!("disk:{target}"),
            from: current,
            to: wanted,
            effective: if running {
                "now for the block device; the root file system grows at the next boot".into()
            } else {
                "the root file system grows at the next boot".into()
            },
        });
    }
    Ok(Resized {
        name: name.into(),
        running,
        changes,
    })
}

/// `qemu-img resize` of a stopped VM's disk file.
fn grow_offline(ctx: &Ctx, name: &str, d: &DiskFacts, bytes: u64) -> Result<()> {
    let path = d.path.as_ref().ok_or_else(|| ResizeError::NoSuchDisk {
        vm: name.into(),
        target: d.target.clone(),
    })?;
    let mut argv = vec!["qemu-img".to_string(), "resize".into()];
    if let Some(f) = &d.format {
        argv.extend(["-f".into(), f.clone()]);
    }
    argv.extend([path.display().to_string(), bytes.to_string()]);
    ctx.runner
        .run(&Cmd::new(argv))
        .map(|_| ())
        .map_err(|source| {
            ResizeError::GrowDisk {
                path: path.clone(),
                source,
            }
            .into()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_sizes_grow_by_or_set() {
        assert_eq!(disk_target_size("+1G", 10 << 30).unwrap(), 11 << 30);
        assert_eq!(disk_target_size("20G", 10 << 30).unwrap(), 20 << 30);
        assert_eq!(disk_target_size("5G", 10 << 30).unwrap(), 5 << 30);
        assert!(disk_target_size("+lots", 1).is_err());
    }
}
