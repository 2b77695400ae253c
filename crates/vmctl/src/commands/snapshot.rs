//! `vmctl snapshot create|list|revert|delete`: external snapshots of a VM's writable qcow2
//! disks, through libvirt's snapshot API, with overlays in the VM's own storage directory
//! (`vda.NAME.qcow2`, the memory state in `memory.NAME.save`), recorded in vmctl's metadata so
//! `vmctl delete` removes them.
//!
//! Only external snapshots, because internal ones are refused for UEFI (pflash) VMs by the
//! libvirt versions our hosts ship (see [`hypervisor::snapshot`] for the versions and sources).
//! libvirt reverts external snapshots itself from 9.9.0 on (Ubuntu 24.04's 10.0); on older ones
//! (Debian 12's 9.0) vmctl reverts a stopped VM itself: a new empty overlay on the file that
//! was the disk's top when the snapshot was taken, the domain pointed at it, the snapshot made
//! current again, all in one [`Transaction`]. It restores disks only: a memory state is not
//! loaded by hand, and the result says so. Deleting uses libvirt's own delete (9.0 and later:
//! it merges the overlay back, for running and shut-off VMs alike).
//!
//! A VM holding a VFIO device cannot save its memory state (VFIO devices block migration,
//! which a memory snapshot is), so `--memory` is refused there; `--quiesce` freezes the
//! guest's filesystems through qemu-guest-agent and is refused when the agent does not answer.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hypervisor::domain::parse::{DomainFacts, parse_domain};
use hypervisor::domain::render::metadata_xml;
use hypervisor::snapshot::{
    self, CreateFlags, DiskRequest, SnapshotInfo, SnapshotRequest, reverts_external,
    set_disk_source, version_string,
};
use serde::Serialize;

use super::Ctx;
use crate::error::{CommandFailure, Error, ExitKind, Failure, Result};
use crate::transaction::{Transaction, Undo};

/// The longest snapshot name vmctl takes.
pub const MAX_NAME_LEN: usize = 64;

/// Why a snapshot command refused or failed; nothing was changed unless said.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("invalid snapshot name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error(
        "{vm} has a VFIO device passed through ({devices}): its memory state cannot be saved (a \
         VFIO device blocks migration, and a memory snapshot is a migration to a file)"
    )]
    MemoryWithVfio {
        vm: String,
        name: String,
        devices: String,
    },
    #[error("--quiesce and --memory do not go together: libvirt quiesces disk-only snapshots only")]
    QuiesceWithMemory { vm: String, name: String },
    #[error("{flag} needs {vm} running")]
    NotRunning { vm: String, flag: &'static str },
    #[error("the guest agent of {vm} does not answer, so its filesystems cannot be quiesced")]
    AgentSilent {
        vm: String,
        #[source]
        source: hypervisor::Error,
    },
    #[error("{vm} has no snapshot named {name:?}")]
    NoSuchSnapshot { vm: String, name: String },
    #[error("{vm} already has a snapshot named {name:?}")]
    Exists { vm: String, name: String },
    #[error("{vm} has no writable qcow2 disk to snapshot")]
    NothingToSnapshot { vm: String },
    #[error("{path} already exists")]
    FileExists { path: PathBuf },
    #[error("{vm} is running: vmctl reverts a stopped VM only")]
    RevertRunning { vm: String, name: String },
    #[error("snapshot {name} of {vm}: disk {target} has no {what} in the snapshot's XML")]
    Incomplete {
        vm: String,
        name: String,
        target: String,
        what: &'static str,
    },
}

impl CommandFailure for SnapshotError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            Self::Incomplete { .. } => ExitKind::Failure,
            _ => ExitKind::Usage,
        }
    }

    fn help(&self) -> Vec<String> {
        match self {
            Self::InvalidName { .. } => vec![format!(
                "use letters, digits, '-', '_' and '.', at most {MAX_NAME_LEN} characters, not starting with '-' or '.'"
            )],
            Self::MemoryWithVfio { vm, name, .. } => vec![format!(
                "take a disk-only snapshot instead, quiesced through the guest agent: `vmctl snapshot create {vm} {name} --quiesce`"
            )],
            Self::QuiesceWithMemory { vm, name } => vec![
                format!("for a consistent disk-only snapshot: `vmctl snapshot create {vm} {name} --quiesce`"),
                "a --memory snapshot needs no quiescing: the guest is paused while its memory is saved, and reverting it (libvirt 9.9.0 and later) resumes that very moment".into(),
            ],
            Self::NotRunning { vm, flag } => vec![format!(
                "start it first (`vmctl start {vm}`), or leave out {flag}: the disks of a stopped VM are consistent as they are"
            )],
            Self::AgentSilent { vm, .. } => vec![
                format!(
                    "is qemu-guest-agent running in the guest? `vmctl ssh {vm} -- systemctl status qemu-guest-agent`"
                ),
                "or leave out --quiesce for a crash-consistent snapshot".into(),
            ],
            Self::NoSuchSnapshot { vm, .. } => {
                vec![format!("`vmctl snapshot list {vm}` shows its snapshots")]
            }
            Self::Exists { vm, name } => vec![format!(
                "pick another name, or delete the old one first: `vmctl snapshot delete {vm} {name}`"
            )],
            Self::NothingToSnapshot { .. } => vec![
                "vmctl snapshots writable qcow2 disks; read-only disks, cdroms and raw disks are left out".into(),
            ],
            Self::FileExists { path } => vec![format!(
                "a file of that name is left from something else: pick another snapshot name, or move {} away",
                path.display()
            )],
            Self::RevertRunning { vm, name } => vec![
                format!("stop it first: `vmctl stop {vm}`, then `vmctl snapshot revert {vm} {name}`"),
            ],
            Self::Incomplete { .. } => vec![
                "the snapshot was not made by vmctl or libvirt lost part of it: `virsh snapshot-dumpxml` shows it".into(),
            ],
        }
    }
}

impl From<SnapshotError> for Error {
    fn from(e: SnapshotError) -> Self {
        Error::Command(Failure::new(e))
    }
}

/// Checks a snapshot name: it names files in the VM's directory, so letters, digits, `-`, `_`
/// and `.`, at most [`MAX_NAME_LEN`], not starting with `-` (an option) or `.` (hidden, `..`).
pub fn validate_name(name: &str) -> Result<(), SnapshotError> {
    let bad = |reason: &str| SnapshotError::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad(&format!("longer than {MAX_NAME_LEN} characters")));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
    {
        return Err(bad(&format!("{c:?} is not allowed")));
    }
    if name.starts_with(['-', '.']) {
        return Err(bad("it starts with '-' or '.'"));
    }
    Ok(())
}

/// The name of a snapshot created without one: `snap-YYYYMMDD-HHMMSS` (UTC).
pub fn default_name(now: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(now);
    let fmt = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    format!("snap-{}", t.format(&fmt).unwrap_or_default())
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SSZ` (a snapshot's creation time).
pub fn utc(secs: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

/// Who reverts an external snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RevertBy {
    /// `virDomainSnapshotRevert` (libvirt 9.9.0 and later, or an internal snapshot).
    Libvirt,
    /// vmctl itself, on a stopped VM (libvirt older than 9.9.0).
    Vmctl,
}

/// Who reverts `snap` on a libvirt of `lib_version`: libvirt when it can (any internal
/// snapshot, or an external one from 9.9.0 on), else vmctl.
pub fn revert_by(lib_version: u32, snap: &SnapshotInfo) -> RevertBy {
    if !snap.is_external() || reverts_external(lib_version) {
        RevertBy::Libvirt
    } else {
        RevertBy::Vmctl
    }
}

/// Refuses `--memory` for a VM that holds VFIO devices (`<hostdev type='pci'>`).
pub fn check_memory_allowed(
    vm: &str,
    name: &str,
    facts: &DomainFacts,
) -> Result<(), SnapshotError> {
    if facts.hostdevs.is_empty() {
        return Ok(());
    }
    Err(SnapshotError::MemoryWithVfio {
        vm: vm.to_string(),
        name: name.to_string(),
        devices: facts
            .hostdevs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// `vmctl snapshot create`.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub vm: String,
    /// `None`: [`default_name`].
    pub name: Option<String>,
    pub memory: bool,
    pub quiesce: bool,
}

/// A disk's overlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overlay {
    pub target: String,
    pub file: PathBuf,
}

/// A disk left out of a snapshot, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub target: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Created {
    pub vm: String,
    pub name: String,
    /// `disk-only` or `memory`.
    pub kind: &'static str,
    pub quiesced: bool,
    pub overlays: Vec<Overlay>,
    pub memory: Option<PathBuf>,
    pub skipped: Vec<Skipped>,
    /// Wall time of libvirt's snapshot call.
    pub secs: f64,
}

/// The directory a VM's snapshot files go to: its own storage directory when vmctl made it,
/// else the directory of its first disk.
fn snapshot_dir(ctx: &Ctx, vm: &str, facts: &DomainFacts) -> PathBuf {
    if let Some(dir) = facts.metadata.as_ref().and_then(|m| m.dir.clone()) {
        return dir;
    }
    facts
        .disks
        .iter()
        .find_map(|d| d.path.as_deref()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| crate::storage::vm_dir(&ctx.config.storage_dir(ctx.host), vm))
}

fn no_such(vm: &str, name: &str) -> SnapshotError {
    SnapshotError::NoSuchSnapshot {
        vm: vm.to_string(),
        name: name.to_string(),
    }
}

fn secs(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 100.0).round() / 100.0
}

pub fn create(ctx: &Ctx, req: &CreateRequest) -> Result<Created> {
    let vm = req.vm.as_str();
    let name = req
        .name
        .clone()
        .unwrap_or_else(|| default_name((ctx.clock)()));
    validate_name(&name)?;
    let rec = ctx.hv.require(vm)?;
    let facts = parse_domain(&rec.xml)?;
    if ctx.hv.snapshots(vm)?.iter().any(|s| s.name == name) {
        return Err(SnapshotError::Exists {
            vm: vm.into(),
            name,
        }
        .into());
    }
    if req.memory {
        check_memory_allowed(vm, &name, &facts)?;
        // libvirt: "Flag 'VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY' is required by flag
        // 'VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE'".
        if req.quiesce {
            return Err(SnapshotError::QuiesceWithMemory {
                vm: vm.into(),
                name,
            }
            .into());
        }
    }
    for (asked, flag) in [(req.memory, "--memory"), (req.quiesce, "--quiesce")] {
        if asked && !rec.state.is_active() {
            return Err(SnapshotError::NotRunning {
                vm: vm.into(),
                flag,
            }
            .into());
        }
    }
    if req.quiesce
        && let Err(source) = ctx.hv.agent_addresses(vm)
    {
        return Err(SnapshotError::AgentSilent {
            vm: vm.into(),
            source,
        }
        .into());
    }
    let dir = snapshot_dir(ctx, vm, &facts);
    let mut disks = Vec::new();
    let mut overlays = Vec::new();
    let mut skipped = Vec::new();
    for d in &facts.disks {
        let why_not = if d.device != "disk" {
            Some(d.device.clone())
        } else if d.readonly {
            Some("read-only".to_string())
        } else if d.format.as_deref() != Some("qcow2") {
            Some(format!(
                "{}, not qcow2",
                d.format.as_deref().unwrap_or("no format")
            ))
        } else if d.path.is_none() {
            Some("no file".to_string())
        } else {
            None
        };
        let overlay = match why_not {
            Some(reason) => {
                skipped.push(Skipped {
                    target: d.target.clone(),
                    reason,
                });
                None
            }
            None => {
                let file = dir.join(format!("{}.{name}.qcow2", d.target));
                if std::fs::symlink_metadata(&file).is_ok() {
                    return Err(SnapshotError::FileExists { path: file }.into());
                }
                overlays.push(Overlay {
                    target: d.target.clone(),
                    file: file.clone(),
                });
                Some(file)
            }
        };
        disks.push(DiskRequest {
            target: d.target.clone(),
            overlay,
        });
    }
    if overlays.is_empty() {
        return Err(SnapshotError::NothingToSnapshot { vm: vm.into() }.into());
    }
    let memory = req.memory.then(|| dir.join(format!("memory.{name}.save")));
    if let Some(m) = &memory
        && std::fs::symlink_metadata(m).is_ok()
    {
        return Err(SnapshotError::FileExists { path: m.clone() }.into());
    }
    let xml = snapshot::to_xml(&SnapshotRequest {
        name: name.clone(),
        description: Some("vmctl snapshot create".into()),
        memory: memory.clone(),
        disks,
    })?;

    let mut tx = Transaction::new(ctx.hv);
    // Recorded before libvirt makes them, so `vmctl delete` knows them whatever happens next; a
    // failed create puts the old record back, in the running domain too.
    if let Some(old) = parse_domain(&ctx.hv.inactive_xml(vm)?)?.metadata {
        let mut md = old.clone();
        for f in overlays.iter().map(|o| &o.file).chain(&memory) {
            if !md.files.contains(f) {
                md.files.push(f.clone());
            }
        }
        let live = rec.state.is_active();
        ctx.hv.set_vmctl_metadata(vm, &metadata_xml(&md)?, live)?;
        tx.record(Undo::Metadata {
            vm: vm.into(),
            xml: metadata_xml(&old)?,
            live,
        });
    }
    let flags = CreateFlags {
        disk_only: !req.memory,
        quiesce: req.quiesce,
        atomic: true,
    };
    let t = Instant::now();
    ctx.hv.snapshot_create(vm, &xml, flags)?;
    let secs = secs(t);
    tx.commit();
    Ok(Created {
        vm: vm.into(),
        name,
        kind: if req.memory { "memory" } else { "disk-only" },
        quiesced: req.quiesce,
        overlays,
        memory,
        skipped,
        secs,
    })
}

/// `vmctl snapshot list`.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub vm: String,
    /// The libvirt version that decides who reverts (`null` if the driver does not say).
    pub libvirt_version: Option<String>,
    /// Who reverts this VM's external snapshots.
    pub revert_by: RevertBy,
    pub snapshots: Vec<SnapshotInfo>,
}

pub fn list(ctx: &Ctx, vm: &str) -> Result<Listing> {
    ctx.hv.require(vm)?;
    let snapshots = ctx.hv.snapshots(vm)?;
    let version = ctx.hv.lib_version().ok();
    Ok(Listing {
        vm: vm.into(),
        libvirt_version: version.map(version_string),
        revert_by: if version.is_some_and(reverts_external) {
            RevertBy::Libvirt
        } else {
            RevertBy::Vmctl
        },
        snapshots,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Reverted {
    pub vm: String,
    pub name: String,
    pub by: RevertBy,
    pub libvirt_version: Option<String>,
    /// The disks' new tops (vmctl's revert: the new empty overlays).
    pub overlays: Vec<Overlay>,
    /// Files that held only the discarded changes, removed.
    pub removed: Vec<PathBuf>,
    /// Discarded files kept, and why.
    pub kept: Vec<Skipped>,
    /// Set when something was not restored (a memory state, by vmctl).
    pub note: Option<String>,
    /// Wall time of the revert.
    pub secs: f64,
}

pub fn revert(ctx: &Ctx, vm: &str, name: &str) -> Result<Reverted> {
    validate_name(name)?;
    let rec = ctx.hv.require(vm)?;
    let snaps = ctx.hv.snapshots(vm)?;
    let snap = snaps
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| no_such(vm, name))?;
    // A running guest would lose its disks under its feet; a stopped VM is the one case both
    // libvirt and vmctl handle the same way.
    if rec.state.is_active() {
        return Err(SnapshotError::RevertRunning {
            vm: vm.into(),
            name: name.into(),
        }
        .into());
    }
    let version = ctx.hv.lib_version()?;
    let t = Instant::now();
    let mut out = match revert_by(version, snap) {
        RevertBy::Libvirt => revert_by_libvirt(ctx, vm, snap)?,
        RevertBy::Vmctl => revert_by_hand(ctx, vm, snap, &snaps)?,
    };
    out.libvirt_version = Some(version_string(version));
    if out.by == RevertBy::Vmctl
        && let Some(m) = &snap.memory
    {
        out.note = Some(format!(
            "disks only: libvirt {} cannot revert external snapshots, and vmctl does not load the memory state ({}); the VM boots from the disks as they were when the snapshot was taken",
            version_string(version),
            m.display()
        ));
    }
    out.secs = secs(t);
    Ok(out)
}

fn revert_by_libvirt(ctx: &Ctx, vm: &str, snap: &SnapshotInfo) -> Result<Reverted> {
    ctx.hv.snapshot_revert(vm, &snap.name)?;
    // libvirt makes the new overlays itself; record those in the VM's directory as vmctl's, so
    // `vmctl delete` removes them.
    let xml = ctx.hv.inactive_xml(vm)?;
    let facts = parse_domain(&xml)?;
    let mut overlays = Vec::new();
    if let Some(md) = &facts.metadata {
        let mut new = md.clone();
        for d in &facts.disks {
            if let Some(p) = &d.path
                && md.dir.as_ref().is_some_and(|dir| p.starts_with(dir))
                && !md.disks.contains(p)
                && !new.files.contains(p)
            {
                new.files.push(p.clone());
                overlays.push(Overlay {
                    target: d.target.clone(),
                    file: p.clone(),
                });
            }
        }
        if new != *md {
            ctx.hv.set_vmctl_metadata(vm, &metadata_xml(&new)?, false)?;
        }
    }
    Ok(Reverted {
        vm: vm.into(),
        name: snap.name.clone(),
        by: RevertBy::Libvirt,
        libvirt_version: None,
        overlays,
        removed: Vec::new(),
        kept: Vec::new(),
        note: None,
        secs: 0.0,
    })
}

/// vmctl's own revert of an external snapshot on a stopped VM, for libvirt before 9.9.0.
///
/// For each disk the snapshot covers: the state to go back to is the file that was the disk's
/// top when the snapshot was taken (its overlay's backing). A new empty overlay on that file
/// becomes the disk's top. It takes the snapshot's own overlay name when no other snapshot
/// needs that file (the usual case: reverting the latest snapshot), so the snapshot's libvirt
/// metadata stays true and a later `snapshot delete` merges it as usual; else a fresh name.
/// The file that held the discarded changes is removed if no snapshot needs it and vmctl made
/// it. Every step is in one transaction: a failure leaves the VM, its files and its snapshots
/// as they were.
fn revert_by_hand(
    ctx: &Ctx,
    vm: &str,
    snap: &SnapshotInfo,
    snaps: &[SnapshotInfo],
) -> Result<Reverted> {
    let before = ctx.hv.inactive_xml(vm)?;
    let facts = parse_domain(&before)?;
    let md = facts.metadata.clone();
    let ours = |p: &Path| {
        md.as_ref()
            .is_some_and(|m| m.files.iter().chain(&m.disks).any(|f| f == p))
            && md.as_ref().and_then(|m| m.base_image.as_deref()) != Some(p)
    };
    let needed: BTreeSet<&Path> = snaps.iter().flat_map(SnapshotInfo::needs).collect();
    let incomplete = |target: &str, what| SnapshotError::Incomplete {
        vm: vm.into(),
        name: snap.name.clone(),
        target: target.into(),
        what,
    };

    let mut tx = Transaction::new(ctx.hv);
    let mut xml = before.clone();
    let mut new_md = md.clone();
    let mut overlays = Vec::new();
    // (file, remove it?) of the discarded changes, dealt with once everything else is done.
    let mut discarded: Vec<(PathBuf, bool)> = Vec::new();
    for d in snap.disks.iter().filter(|d| d.kind == "external") {
        let backing = d
            .backing
            .as_deref()
            .ok_or_else(|| incomplete(&d.target, "backing file"))?;
        let own = d
            .file
            .as_deref()
            .ok_or_else(|| incomplete(&d.target, "overlay"))?;
        let top = facts
            .disks
            .iter()
            .find(|f| f.target == d.target)
            .and_then(|f| f.path.clone())
            .ok_or_else(|| hypervisor::Error::NoDisk {
                domain: vm.into(),
                target: d.target.clone(),
            })?;
        let overlay = if needed.contains(own) {
            fresh_name(own)
        } else {
            if std::fs::symlink_metadata(own).is_ok() {
                // Moved aside, not removed, until everything else has worked.
                let aside = aside_name(own);
                if std::fs::symlink_metadata(&aside).is_ok() {
                    return Err(SnapshotError::FileExists { path: aside }.into());
                }
                std::fs::rename(own, &aside).map_err(|source| Error::Io {
                    op: "move aside",
                    path: own.to_path_buf(),
                    source,
                })?;
                tx.record(Undo::Renamed {
                    from: own.to_path_buf(),
                    to: aside.clone(),
                });
                discarded.push((aside, ours(own)));
            }
            own.to_path_buf()
        };
        guest_media::disk::create_overlay(ctx.runner, backing, "qcow2", &overlay, None)?;
        tx.record_file(&overlay);
        if top != overlay {
            xml = set_disk_source(vm, &xml, &d.target, &overlay)?;
            if !needed.contains(top.as_path()) && top != own {
                discarded.push((top.clone(), ours(&top)));
                if let Some(m) = new_md.as_mut() {
                    m.files.retain(|f| *f != top);
                }
            }
        }
        if let Some(m) = new_md.as_mut()
            && !m.files.contains(&overlay)
        {
            m.files.push(overlay.clone());
        }
        overlays.push(Overlay {
            target: d.target.clone(),
            file: overlay,
        });
    }
    if xml != before || new_md != md {
        // One undo for both: the old definition holds the old record too.
        tx.record(Undo::Redefine {
            vm: vm.into(),
            xml: before.clone(),
        });
        if xml != before {
            ctx.hv.define(vm, &xml)?;
        }
        if let Some(m) = new_md.as_ref().filter(|m| Some(*m) != md.as_ref()) {
            ctx.hv.set_vmctl_metadata(vm, &metadata_xml(m)?, false)?;
        }
    }
    ctx.hv.snapshot_redefine(vm, &snap.xml, true)?;
    tx.commit();

    let mut removed = Vec::new();
    let mut kept = Vec::new();
    for (file, remove) in discarded {
        if !remove {
            kept.push(Skipped {
                target: file.display().to_string(),
                reason: "vmctl did not make it".into(),
            });
            continue;
        }
        match hostio::file::remove_file(&file) {
            Ok(_) => removed.push(file),
            Err(e) => kept.push(Skipped {
                target: file.display().to_string(),
                reason: format!("cannot remove it: {e}"),
            }),
        }
    }
    Ok(Reverted {
        vm: vm.into(),
        name: snap.name.clone(),
        by: RevertBy::Vmctl,
        libvirt_version: None,
        overlays,
        removed,
        kept,
        note: None,
        secs: 0.0,
    })
}

/// `vda.s1.qcow2` → `vda.s1.qcow2.discarded`: where the changes being discarded wait.
fn aside_name(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".discarded");
    PathBuf::from(s)
}

/// `vda.s1.qcow2` → the first free `vda.s1.N.qcow2` (N = 1, 2, …).
fn fresh_name(file: &Path) -> PathBuf {
    let stem = file.with_extension("");
    (1..)
        .map(|n| PathBuf::from(format!("{}.{n}.qcow2", stem.display())))
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or_else(|| file.to_path_buf())
}

#[derive(Debug, Clone, Serialize)]
pub struct Deleted {
    pub vm: String,
    pub name: String,
    /// Overlays libvirt merged into the chain and removed, now dropped from vmctl's record.
    pub merged: Vec<PathBuf>,
    /// The memory state file libvirt left (9.0), removed by vmctl.
    pub removed: Vec<PathBuf>,
    /// Wall time of libvirt's delete.
    pub secs: f64,
}

/// Deletes a snapshot through libvirt (for an external one, 9.0 and later merge its overlay
/// into the chain), removes a memory file libvirt left, then drops the files now gone from
/// vmctl's record.
pub fn delete(ctx: &Ctx, vm: &str, name: &str) -> Result<Deleted> {
    validate_name(name)?;
    ctx.hv.require(vm)?;
    let snaps = ctx.hv.snapshots(vm)?;
    let snap = snaps
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| no_such(vm, name))?;
    let t = Instant::now();
    ctx.hv.snapshot_delete(vm, name)?;
    let secs = secs(t);
    let xml = ctx.hv.inactive_xml(vm)?;
    let md = parse_domain(&xml)?.metadata;
    // libvirt 9.0 leaves an external snapshot's memory file behind (fixed in 9.1.0, NEWS.rst:
    // "QEMU: fix deleting memory snapshot when deleting external snapshots"): vmctl removes it
    // when vmctl made it.
    let mut removed = Vec::new();
    if let Some(m) = &snap.memory
        && md.as_ref().is_some_and(|md| md.files.contains(m))
        && std::fs::symlink_metadata(m).is_ok()
    {
        hostio::file::remove_file(m).map_err(|source| Error::Io {
            op: "remove the memory state",
            path: m.clone(),
            source,
        })?;
        removed.push(m.clone());
    }
    let gone: Vec<PathBuf> = snap
        .disks
        .iter()
        .filter_map(|d| d.file.clone())
        .chain(snap.memory.clone())
        .filter(|f| std::fs::symlink_metadata(f).is_err())
        .collect();
    if let Some(md) = md {
        let mut new = md.clone();
        new.files.retain(|f| !gone.contains(f));
        if new != md {
            let live = ctx.hv.state(vm)?.is_active();
            ctx.hv.set_vmctl_metadata(vm, &metadata_xml(&new)?, live)?;
        }
    }
    let merged = gone.into_iter().filter(|f| !removed.contains(f)).collect();
    Ok(Deleted {
        vm: vm.into(),
        name: name.into(),
        merged,
        removed,
        secs,
    })
}

#[cfg(test)]
mod tests;
