//! `vmctl image list|remove|prune`: what the cache holds, which VMs use each file, and the
//! removal of what no VM uses.
//!
//! A VM uses a cached file when, on the connection vmctl uses, in any state:
//! - its vmctl metadata names it (`base-sha256` equal to the file's sha256, or `base-image`
//!   resolving to the file), or
//! - one of its disks is the file, or has it in its backing chain. The chain is read with
//!   `qemu-img info --backing-chain -U --output=json` through the runner: a disk made outside
//!   vmctl (or a clone of a vmctl disk) names no cached file in any metadata, yet its qcow2
//!   header points into the cache, and removing that base would break it. A disk whose chain
//!   cannot be read makes removals refuse (list shows it): it might use any file.
//!
//! Removals hold the cache's exclusive use lock ([`guest_media::cache::ImageCache::exclusive`])
//! and ask who uses what under it, while every create holds the shared one from before it
//! fetches its base until its domain is defined: a create cannot slip in between the check
//! and the removal.

use std::path::{Path, PathBuf};

use guest_media::cache::{CacheEntry, EntryKind, Leftover, LeftoverKind, Progress, Removed};
use hypervisor::domain::parse::parse_domain;
use serde::Serialize;

use crate::ctx::Ctx;
use crate::error::{CommandFailure, Error, ExitKind, Failure, Result};

/// Errors of `vmctl image list|remove|prune`.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("no cached file's sha256 starts with {prefix:?}")]
    NoMatch { prefix: String },
    #[error("{prefix:?} matches {} cached files: {}", matches.len(), matches.join(", "))]
    Ambiguous {
        prefix: String,
        matches: Vec<String>,
    },
    #[error("invalid SHA256 {value:?}: expected 1 to 64 hex digits")]
    BadPrefix { value: String },
    #[error("refusing to remove {file}: in use by {}", vms.join(", "))]
    InUse { file: String, vms: Vec<String> },
    #[error(
        "cannot tell which cached files VM {vm:?} uses: the backing chain of {disk} is unreadable ({reason})"
    )]
    UsageUnknown {
        vm: String,
        disk: PathBuf,
        reason: String,
    },
    #[error("refusing to remove {count} cached file(s) without confirmation")]
    NotConfirmed { count: usize },
}

impl CommandFailure for ImageError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            Self::UsageUnknown { .. } => ExitKind::Failure,
            _ => ExitKind::Usage,
        }
    }

    fn help(&self) -> Vec<String> {
        match self {
            Self::NoMatch { .. } => vec!["`vmctl image list` shows the cached files".into()],
            Self::Ambiguous { .. } => {
                vec!["give more digits of the sha256 (`vmctl image list`)".into()]
            }
            Self::BadPrefix { .. } => {
                vec!["`vmctl image list` shows each file's sha256".into()]
            }
            Self::InUse { vms, .. } => vec![format!(
                "a cached file in use is never removed: delete the VM(s) first (`vmctl delete {}`), then remove it",
                vms.first().map(String::as_str).unwrap_or("NAME")
            )],
            Self::UsageUnknown { disk, .. } => vec![format!(
                "check that `qemu-img info --backing-chain -U {}` works (run vmctl as root?), then try again",
                disk.display()
            )],
            Self::NotConfirmed { .. } => vec!["re-run with --yes".into()],
        }
    }
}

impl From<ImageError> for Error {
    fn from(e: ImageError) -> Self {
        Error::Command(Failure::new(e))
    }
}

/// How a VM uses a cached file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "via")]
pub enum Via {
    /// vmctl's metadata names it as the base image.
    Metadata,
    /// The disk is the file itself (an ISO, a raw image attached directly).
    Disk { disk: PathBuf },
    /// The disk's backing chain goes through it.
    BackingChain { disk: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Use {
    pub vm: String,
    pub state: String,
    #[serde(flatten)]
    pub via: Via,
}

/// A disk whose backing chain could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub vm: String,
    pub disk: PathBuf,
    pub reason: String,
}

/// One cached file and its users.
#[derive(Debug, Clone, Serialize)]
pub struct ListedFile {
    #[serde(flatten)]
    pub entry: CacheEntry,
    pub used_by: Vec<Use>,
}

/// `vmctl image list`.
#[derive(Debug, Clone, Serialize)]
pub struct ImageList {
    pub cache: PathBuf,
    pub files: Vec<ListedFile>,
    /// Quarantined files and partial downloads (`prune` clears them).
    pub leftovers: Vec<Leftover>,
    /// Disks whose backing chain was unreadable: their users are unknown.
    pub unreadable: Vec<Unreadable>,
    pub total_bytes: u64,
}

/// What `remove` or `prune` removed, or (`--dry-run`) would remove.
#[derive(Debug, Clone, Serialize)]
pub struct Removal {
    pub dry_run: bool,
    pub removed: Vec<RemovedFile>,
    /// Prune only: files left because a VM uses them.
    pub in_use: Vec<ListedFile>,
    /// Partial downloads left because a fetch is writing them.
    pub busy: Vec<PathBuf>,
    pub bytes_freed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovedFile {
    /// `blob`, `derived`, `quarantine`, `partial`.
    pub kind: String,
    pub path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub size: u64,
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::Blob => "blob",
        EntryKind::Derived => "derived",
    }
}

fn canon(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Who uses each entry (by index), and the disks whose chain could not be read.
fn usage(ctx: &Ctx, entries: &[CacheEntry]) -> Result<(Vec<Vec<Use>>, Vec<Unreadable>)> {
    let paths: Vec<PathBuf> = entries.iter().map(|e| canon(&e.path)).collect();
    let mut uses: Vec<Vec<Use>> = vec![Vec::new(); entries.len()];
    let mut unreadable = Vec::new();
    for dom in ctx.hv.list()? {
        let Ok(facts) = parse_domain(&dom.xml) else {
            continue;
        };
        let state = dom.state.as_str().to_string();
        let mut add = |i: usize, via: Via| {
            let u = Use {
                vm: dom.name.clone(),
                state: state.clone(),
                via,
            };
            if !uses[i].contains(&u) {
                uses[i].push(u);
            }
        };
        if let Some(md) = &facts.metadata {
            let base = md.base_image.as_deref().map(canon);
            for (i, e) in entries.iter().enumerate() {
                let by_sha = md.base_sha256.as_deref() == Some(e.sha256.as_str());
                if by_sha || base.as_ref() == Some(&paths[i]) {
                    add(i, Via::Metadata);
                }
            }
        }
        for disk in facts.disks.iter().filter_map(|d| d.path.as_ref()) {
            // A disk that is not there uses nothing (the test driver's domains, a deleted file).
            if std::fs::symlink_metadata(disk).is_err() {
                continue;
            }
            let chain = match guest_media::disk::backing_chain(ctx.runner, disk) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(vm = dom.name, disk = %disk.display(), "backing chain: {e}");
                    unreadable.push(Unreadable {
                        vm: dom.name.clone(),
                        disk: disk.clone(),
                        reason: error_chain(&e),
                    });
                    vec![disk.clone()]
                }
            };
            for (depth, file) in chain.iter().enumerate() {
                let file = canon(file);
                for (i, p) in paths.iter().enumerate() {
                    if *p == file {
                        let via = if depth == 0 {
                            Via::Disk { disk: disk.clone() }
                        } else {
                            Via::BackingChain { disk: disk.clone() }
                        };
                        add(i, via);
                    }
                }
            }
        }
    }
    Ok((uses, unreadable))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn vm_names(uses: &[Use]) -> Vec<String> {
    let mut v: Vec<String> = uses.iter().map(|u| u.vm.clone()).collect();
    v.dedup();
    v
}

/// Every cached file, its users, and the leftovers.
pub fn list(ctx: &Ctx) -> Result<ImageList> {
    let cache = crate::media::image_cache(ctx);
    let entries = cache.entries()?;
    let leftovers = cache.leftovers()?;
    let (uses, unreadable) = usage(ctx, &entries)?;
    let total_bytes =
        entries.iter().map(|e| e.size).sum::<u64>() + leftovers.iter().map(|l| l.size).sum::<u64>();
    Ok(ImageList {
        cache: cache.dir().to_path_buf(),
        files: entries
            .into_iter()
            .zip(uses)
            .map(|(entry, used_by)| ListedFile { entry, used_by })
            .collect(),
        leftovers,
        unreadable,
        total_bytes,
    })
}

/// The entries `prefixes` name: each must match exactly one file's sha256.
fn resolve<'a>(entries: &'a [CacheEntry], prefixes: &[String]) -> Result<Vec<&'a CacheEntry>> {
    let mut out: Vec<&CacheEntry> = Vec::new();
    for p in prefixes {
        let lower = p.to_ascii_lowercase();
        if lower.is_empty() || lower.len() > 64 || !lower.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ImageError::BadPrefix { value: p.clone() }.into());
        }
        let matches: Vec<&CacheEntry> = entries
            .iter()
            .filter(|e| e.sha256.starts_with(&lower))
            .collect();
        match matches.as_slice() {
            [] => return Err(ImageError::NoMatch { prefix: p.clone() }.into()),
            [one] => {
                if !out.iter().any(|e| e.file == one.file) {
                    out.push(one);
                }
            }
            many => {
                return Err(ImageError::Ambiguous {
                    prefix: p.clone(),
                    matches: many.iter().map(|e| e.file.clone()).collect(),
                }
                .into());
            }
        }
    }
    Ok(out)
}

/// The files `prefixes` name, for the confirmation question (refuses bad or ambiguous ones).
pub fn resolve_for_removal(ctx: &Ctx, prefixes: &[String]) -> Result<Vec<CacheEntry>> {
    let entries = crate::media::image_cache(ctx).entries()?;
    Ok(resolve(&entries, prefixes)?.into_iter().cloned().collect())
}

fn refuse_unknown(unreadable: &[Unreadable]) -> Result<()> {
    match unreadable.first() {
        Some(u) => Err(ImageError::UsageUnknown {
            vm: u.vm.clone(),
            disk: u.disk.clone(),
            reason: u.reason.clone(),
        }
        .into()),
        None => Ok(()),
    }
}

/// Removes the cached files whose sha256 starts with each of `prefixes`, if no VM uses any of
/// them (checked again under the exclusive use lock). All or nothing: one in use refuses all.
pub fn remove(
    ctx: &Ctx,
    prefixes: &[String],
    yes: bool,
    progress: &dyn Progress,
) -> Result<Removal> {
    let cache = crate::media::image_cache(ctx);
    let count = resolve(&cache.entries()?, prefixes)?.len();
    if !yes {
        return Err(ImageError::NotConfirmed { count }.into());
    }
    let held = cache.exclusive(progress)?;
    // Under the lock: what is there now, and who uses it now.
    let entries = cache.entries()?;
    let chosen = resolve(&entries, prefixes)?;
    let (uses, unreadable) = usage(ctx, &entries)?;
    for e in &chosen {
        let i = entries.iter().position(|x| x.file == e.file).unwrap_or(0);
        if !uses[i].is_empty() {
            return Err(ImageError::InUse {
                file: e.file.clone(),
                vms: vm_names(&uses[i]),
            }
            .into());
        }
    }
    refuse_unknown(&unreadable)?;
    let mut report = Removal {
        dry_run: false,
        removed: Vec::new(),
        in_use: Vec::new(),
        busy: Vec::new(),
        bytes_freed: 0,
    };
    for e in chosen {
        if let Removed::Freed(n) = cache.remove_file(&held, &e.file, progress)? {
            report.bytes_freed += n;
            report.removed.push(RemovedFile {
                kind: kind_name(e.kind).into(),
                path: e.path.clone(),
                sha256: Some(e.sha256.clone()),
                size: n,
            });
        }
    }
    Ok(report)
}

/// Removes every cached file no VM uses, the quarantined files and the partial downloads no
/// fetch is writing. `dry_run`: lists them only (no lock is taken, nothing changes).
pub fn prune(ctx: &Ctx, dry_run: bool, yes: bool, progress: &dyn Progress) -> Result<Removal> {
    let cache = crate::media::image_cache(ctx);
    if !dry_run && !yes {
        let entries = cache.entries()?;
        return Err(ImageError::NotConfirmed {
            count: entries.len() + cache.leftovers()?.len(),
        }
        .into());
    }
    let held = if dry_run {
        None
    } else {
        Some(cache.exclusive(progress)?)
    };
    let entries = cache.entries()?;
    let leftovers = cache.leftovers()?;
    let (uses, unreadable) = usage(ctx, &entries)?;
    if !dry_run {
        refuse_unknown(&unreadable)?;
    }
    let mut report = Removal {
        dry_run,
        removed: Vec::new(),
        in_use: Vec::new(),
        busy: Vec::new(),
        bytes_freed: 0,
    };
    for (entry, used_by) in entries.into_iter().zip(uses) {
        if !used_by.is_empty() {
            report.in_use.push(ListedFile { entry, used_by });
            continue;
        }
        let freed = match &held {
            None => Some(entry.size),
            Some(h) => match cache.remove_file(h, &entry.file, progress)? {
                Removed::Freed(n) => Some(n),
                _ => None,
            },
        };
        if let Some(n) = freed {
            report.bytes_freed += n;
            report.removed.push(RemovedFile {
                kind: kind_name(entry.kind).into(),
                path: entry.path,
                sha256: Some(entry.sha256),
                size: n,
            });
        }
    }
    for item in leftovers {
        let kind = match item.kind {
            LeftoverKind::Quarantined => "quarantine",
            LeftoverKind::Partial => "partial",
        };
        let freed = match &held {
            None => Some(item.size),
            Some(h) => match cache.remove_leftover(h, &item)? {
                Removed::Freed(n) => Some(n),
                Removed::Busy => {
                    report.busy.push(item.path.clone());
                    None
                }
                Removed::Absent => None,
            },
        };
        if let Some(n) = freed {
            report.bytes_freed += n;
            report.removed.push(RemovedFile {
                kind: kind.into(),
                path: item.path,
                sha256: None,
                size: n,
            });
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
