//! `vmctl disk list|add|remove VM` and the data disks of `create --data-disk`: blank qcow2
//! files in the VM's own storage directory (`data-NAME.qcow2`), attached as the next free
//! virtio disk and recorded in vmctl's metadata, so `disk remove` and `delete` know them as
//! vmctl's. A disk vmctl did not create is detached but never deleted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hypervisor::domain::Disk;
use hypervisor::domain::parse::{DiskFacts, parse_domain};
use hypervisor::domain::render::{disk_xml, metadata_xml};
use serde::Serialize;

use super::Ctx;
use super::lifecycle::{inside, own_dir};
use crate::data_disks::{data_disk_path, next_target, validate_name};
use crate::error::{CommandFailure, Error, ExitKind, Failure, Result};
use crate::names;
use crate::transaction::{Transaction, Undo};

/// What `vmctl disk` refuses.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{vm} has no disk {disk:?}")]
    NoSuchDisk { vm: String, disk: String },
    #[error("{disk} is {vm}'s {role} disk; only data disks are removed this way")]
    NotData {
        vm: String,
        disk: String,
        role: &'static str,
    },
    #[error("refusing to remove disk {disk} of {vm} without confirmation")]
    NotConfirmed { vm: String, disk: String },
    #[error("{vm} already has a data disk named {name:?}")]
    NameTaken { vm: String, name: String },
    #[error("{vm} has no free virtio disk name (vda to vdz are taken)")]
    NoTarget { vm: String },
    #[error(
        "{vm} is not a VM vmctl created: it has no storage directory of vmctl's for a new disk"
    )]
    NotVmctl { vm: String },
    #[error("{vm} did not release disk {disk} within {secs} s of the detach request")]
    DetachTimeout { vm: String, disk: String, secs: u64 },
}

impl CommandFailure for DiskError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            DiskError::DetachTimeout { .. } => ExitKind::Failure,
            _ => ExitKind::Usage,
        }
    }

    fn help(&self) -> Vec<String> {
        match self {
            DiskError::NoSuchDisk { vm, .. } => {
                vec![format!("`vmctl disk list {vm}` shows its disks")]
            }
            DiskError::NotData { vm, .. } => vec![format!(
                "grow the system disk with `vmctl resize {vm} --disk +SIZE`; the seed goes with `vmctl delete {vm}`"
            )],
            DiskError::NotConfirmed { vm, disk } => {
                vec![format!("re-run with --yes: `vmctl disk remove {vm} {disk} --yes`")]
            }
            DiskError::NameTaken { vm, .. } => vec![format!(
                "pick another --name; `vmctl disk list {vm}` shows the ones in use"
            )],
            DiskError::NoTarget { vm } => vec![format!(
                "remove a disk first (`vmctl disk remove {vm} DISK`)"
            )],
            DiskError::NotVmctl { vm } => vec![format!(
                "create a file yourself and attach it with `virsh attach-disk {vm} FILE vdX --persistent`"
            )],
            DiskError::DetachTimeout { vm, .. } => vec![
                "the guest must acknowledge the unplug (ACPI hot-plug); unmount the disk in the guest and try again".into(),
                format!("or stop the VM first: `vmctl stop {vm}`"),
            ],
        }
    }
}

impl From<DiskError> for Error {
    fn from(e: DiskError) -> Self {
        Error::Command(Failure::new(e))
    }
}

/// One row of `vmctl disk list`.
#[derive(Debug, Clone, Serialize)]
pub struct DiskRow {
    pub target: String,
    pub device: String,
    /// `system`, `seed`, `data` or `other`.
    pub role: &'static str,
    pub path: Option<PathBuf>,
    pub format: Option<String>,
    /// The size the guest sees, when libvirt or qemu-img can tell.
    pub bytes: Option<u64>,
    pub readonly: bool,
    /// vmctl created it (it is in vmctl's metadata): `disk remove` and `delete` delete it.
    pub vmctl: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskList {
    pub name: String,
    pub disks: Vec<DiskRow>,
}

fn role(d: &DiskFacts, first_disk: bool, vm_dir: Option<&Path>) -> &'static str {
    let is_data = match (vm_dir, &d.path) {
        (Some(dir), Some(p)) => {
            p.parent() == Some(dir)
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("data-") && n.ends_with(".qcow2"))
        }
        _ => false,
    };
    if is_data {
        "data"
    } else if d.device == "disk" && first_disk {
        "system"
    } else if d.readonly {
        "seed"
    } else {
        "other"
    }
}

pub fn list(ctx: &Ctx, name: &str) -> Result<DiskList> {
    let rec = ctx.hv.require(name)?;
    let facts = parse_domain(&rec.xml)?;
    let md = facts.metadata.clone().unwrap_or_default();
    let first = facts
        .disks
        .iter()
        .position(|d| d.device == "disk" && !d.readonly);
    let disks = facts
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let bytes = ctx.hv.disk_capacity(name, &d.target).ok().or_else(|| {
                d.path
                    .as_ref()
                    .filter(|p| p.is_file())
                    .and_then(|p| guest_media::disk::image_info(ctx.runner, p).ok())
                    .map(|i| i.virtual_size)
            });
            DiskRow {
                target: d.target.clone(),
                device: d.device.clone(),
                role: role(d, Some(i) == first, md.dir.as_deref()),
                path: d.path.clone(),
                format: d.format.clone(),
                bytes,
                readonly: d.readonly,
                vmctl: d.path.as_ref().is_some_and(|p| md.disks.contains(p)),
            }
        })
        .collect();
    Ok(DiskList {
        name: name.into(),
        disks,
    })
}

/// `vmctl disk add` result.
#[derive(Debug, Clone, Serialize)]
pub struct Added {
    pub name: String,
    pub disk: String,
    pub target: String,
    pub path: PathBuf,
    pub bytes: u64,
    /// The running guest has it now; otherwise from the next start.
    pub live: bool,
    /// Why a running VM gets it only at its next start.
    pub note: Option<String>,
}

/// Creates a blank qcow2 data disk in the VM's directory and attaches it: to the running
/// guest too when it runs (hot-plug), to the definition always. One transaction: a failure
/// removes the file and the attachment again.
pub fn add(ctx: &Ctx, name: &str, size: &str, disk_name: Option<&str>) -> Result<Added> {
    let rec = ctx.hv.require(name)?;
    if !rec.persistent {
        return Err(Error::Transient { name: name.into() });
    }
    let bytes = names::parse_size("SIZE", size)?;
    let facts = parse_domain(&ctx.hv.inactive_xml(name)?)?;
    let mut md = facts
        .metadata
        .clone()
        .ok_or_else(|| DiskError::NotVmctl { vm: name.into() })?;
    let dir = md
        .dir
        .clone()
        .ok_or_else(|| DiskError::NotVmctl { vm: name.into() })?;
    let disk_name = match disk_name {
        Some(n) => {
            validate_name("--name", n)?;
            n.to_string()
        }
        None => (1..)
            .map(|i| format!("data{i}"))
            .find(|n| !data_disk_path(&dir, n).exists())
            .unwrap_or_default(),
    };
    let path = data_disk_path(&dir, &disk_name);
    if std::fs::symlink_metadata(&path).is_ok() {
        return Err(DiskError::NameTaken {
            vm: name.into(),
            name: disk_name,
        }
        .into());
    }
    // Targets of the definition and of the running domain (a disk hot-plugged only live).
    let live = parse_domain(&rec.xml)?;
    let taken: Vec<&str> = facts
        .disks
        .iter()
        .chain(&live.disks)
        .map(|d| d.target.as_str())
        .collect();
    let target = next_target(&taken).ok_or_else(|| DiskError::NoTarget { vm: name.into() })?;
    let running = rec.state.is_active();

    let mut tx = Transaction::new(ctx.hv);
    tx.record_file(&path);
    guest_media::disk::create_blank(ctx.runner, &path, bytes)?;
    let xml = disk_xml(&Disk::virtio(&path, "qcow2", &target))?;
    let mut note = None;
    let live_ok = if running {
        match ctx.hv.attach_device(name, &xml, true) {
            Ok(()) => true,
            Err(e) => {
                // q35 hot-plugs only into a free PCIe root port; a VM without one gets the
                // disk at its next start instead.
                tracing::info!("hot-plug of {target} into {name} failed: {e}");
                note = Some(format!(
                    "not hot-plugged ({e}); the guest sees it after `vmctl stop {name}` and `vmctl start {name}`"
                ));
                false
            }
        }
    } else {
        false
    };
    if !live_ok {
        ctx.hv.attach_device(name, &xml, false)?;
    }
    tx.record(Undo::Device {
        vm: name.into(),
        xml: xml.clone(),
        live: live_ok,
    });
    md.disks.push(path.clone());
    ctx.hv
        .set_vmctl_metadata(name, &metadata_xml(&md)?, running)?;
    tx.commit();
    Ok(Added {
        name: name.into(),
        disk: disk_name,
        target,
        path,
        bytes,
        live: live_ok,
        note,
    })
}

/// `vmctl disk remove` result.
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    pub name: String,
    pub target: String,
    pub path: Option<PathBuf>,
    /// The file was deleted (vmctl made it); otherwise it is kept, and `kept` says why.
    pub deleted: bool,
    pub kept: Option<String>,
}

/// Detaches a data disk (by target `vdc` or name `datasets`) and deletes its file when vmctl
/// created it. The system disk and the seed are refused; `yes` is the confirmation.
pub fn remove(ctx: &Ctx, name: &str, which: &str, yes: bool, wait: Duration) -> Result<Removed> {
    let rec = ctx.hv.require(name)?;
    let facts = parse_domain(&ctx.hv.inactive_xml(name)?)?;
    let mut md = facts.metadata.clone().unwrap_or_default();
    let listed = list(ctx, name)?;
    let row = listed
        .disks
        .iter()
        .find(|d| {
            d.target == which
                || (d.role == "data"
                    && d.path.as_ref().is_some_and(|p| {
                        md.dir
                            .as_ref()
                            .is_some_and(|dir| *p == data_disk_path(dir, which))
                    }))
        })
        .ok_or_else(|| DiskError::NoSuchDisk {
            vm: name.into(),
            disk: which.into(),
        })?;
    if matches!(row.role, "system" | "seed") {
        return Err(DiskError::NotData {
            vm: name.into(),
            disk: row.target.clone(),
            role: row.role,
        }
        .into());
    }
    if !yes {
        return Err(DiskError::NotConfirmed {
            vm: name.into(),
            disk: row.target.clone(),
        }
        .into());
    }
    let d = facts
        .disks
        .iter()
        .chain(&parse_domain(&rec.xml)?.disks)
        .find(|d| d.target == row.target)
        .cloned()
        .unwrap_or_default();
    let xml = disk_xml(&Disk {
        readonly: d.readonly,
        ..Disk::virtio(
            d.path.clone().unwrap_or_default(),
            d.format.as_deref().unwrap_or("raw"),
            &d.target,
        )
    })?;
    let running = rec.state.is_active();
    let in_live = running
        && parse_domain(&rec.xml)?
            .disks
            .iter()
            .any(|x| x.target == row.target);
    let in_config = facts.disks.iter().any(|x| x.target == row.target);
    if in_live {
        ctx.hv.detach_device(name, &xml, true)?;
        // The unplug completes when the guest acknowledges it: wait on the live definition.
        let start = Instant::now();
        while ctx
            .hv
            .require(name)
            .ok()
            .and_then(|r| parse_domain(&r.xml).ok())
            .is_some_and(|f| f.disks.iter().any(|x| x.target == row.target))
        {
            if start.elapsed() >= wait {
                return Err(DiskError::DetachTimeout {
                    vm: name.into(),
                    disk: row.target.clone(),
                    secs: wait.as_secs(),
                }
                .into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    } else if in_config {
        ctx.hv.detach_device(name, &xml, false)?;
    }
    let mut deleted = false;
    let mut kept = None;
    if let Some(p) = &d.path {
        if md.disks.contains(p) {
            let own = own_dir(&ctx.config.storage_dir(ctx.host), name, md.dir.as_deref());
            match inside(&own, p) {
                Ok(Some(real)) => match hostio::file::remove_file(&real) {
                    Ok(_) => deleted = true,
                    Err(e) => kept = Some(format!("cannot remove it: {e}")),
                },
                Ok(None) => {}
                Err(reason) => kept = Some(reason),
            }
            md.disks.retain(|x| x != p);
            ctx.hv
                .set_vmctl_metadata(name, &metadata_xml(&md)?, running)?;
        } else {
            kept = Some("vmctl did not create it".into());
        }
    }
    Ok(Removed {
        name: name.into(),
        target: row.target.clone(),
        path: d.path.clone(),
        deleted,
        kept,
    })
}
