//! Listing and removing what the cache holds (`vmctl image list|remove|prune`), and the cache's
//! use lock that keeps a removal from racing a VM creation.
//!
//! Which VMs use a file is the caller's knowledge (libvirt's domains); this module gives the
//! lock under which that answer stays true:
//! - `locks/use.lock`: a create holds it shared ([`ImageCache::use_lease`]) from before it
//!   fetches its base image until its domain is defined, so the domain's disks name the blob
//!   before anyone may remove it. A removal holds it exclusively ([`ImageCache::exclusive`]),
//!   asks who uses what under it, and removes only what nobody uses. Creates share the lock
//!   with each other; a removal waits for the creates in progress (and they for it).
//! - A file is removed under its own lock too (the one fetch and verify take), so a fetch
//!   or verify of that very file finishes first.
//! - A partial download is removed only when its URL's lock is free (no fetch is writing it).
//!
//! URL records (`urls/`) stay when a blob goes: a URL fetched without a published checksum
//! must still hash to what its first download did when it is fetched again.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use serde::Serialize;

use super::store::{STATE_MODE, UrlRecord, io_err, is_sha256};
use super::{ImageCache, Progress};
use crate::error::Result;

/// What a cached file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// `sha256/<hex>`: downloaded bytes, named by their hash.
    Blob,
    /// A file made from a blob (`talos/<file>`: a decompressed `.raw.xz`), sealed like one.
    Derived,
}

/// One file in the cache, as `vmctl image list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheEntry {
    /// Relative to the cache: `sha256/<hex>`, `talos/<file>`.
    pub file: String,
    pub kind: EntryKind,
    pub path: PathBuf,
    /// A blob's name; a derived file's seal.
    pub sha256: String,
    pub size: u64,
    /// The URLs whose recorded download is this blob (`urls/`), sorted.
    pub urls: Vec<String>,
    /// When its bytes were last hashed (its seal), UTC: at the download, or the last re-hash.
    pub hashed_at: Option<String>,
}

/// What `prune` may also clear: a quarantined file or a partial download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeftoverKind {
    /// `quarantine/<name>.<ns>`: a file that failed its re-hash, kept for inspection.
    Quarantined,
    /// `partial/<key>.partial`: an interrupted download.
    Partial,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leftover {
    pub kind: LeftoverKind,
    pub path: PathBuf,
    pub size: u64,
}

/// The shared use lock: while held, no cached file is removed.
#[derive(Debug)]
pub struct UseLease {
    _file: File,
}

/// The exclusive use lock: no create is between fetching a cached file and defining the domain
/// that uses it. Removals take this as proof that the caller holds it.
#[derive(Debug)]
pub struct Exclusive {
    _file: File,
}

/// What a removal did to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// Removed; this many bytes freed.
    Freed(u64),
    /// Nothing there (removed by another vmctl meanwhile).
    Absent,
    /// Its lock is held (a fetch is writing this partial download): left alone.
    Busy,
}

fn size_of(path: &Path) -> u64 {
    fs::symlink_metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    match fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            v.sort();
            Ok(v)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err("list", dir)(e)),
    }
}

impl ImageCache {
    fn use_lock_file(&self) -> Result<File> {
        self.mkdirs()?;
        let path = self.dir.join("locks").join("use.lock");
        hostio::file::open_or_create(&path, STATE_MODE).map_err(io_err("open lock file", &path))
    }

    /// Takes `op` on the use lock, waiting (and saying so) while a holder of the other kind has it.
    fn flock_waiting(
        &self,
        file: &File,
        op: FlockOperation,
        nonblocking: FlockOperation,
        holder: &str,
        progress: &dyn Progress,
    ) -> Result<()> {
        let path = self.dir.join("locks").join("use.lock");
        match flock(file, nonblocking) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {}
            Err(e) => return Err(io_err("lock", &path)(e.into())),
        }
        let line = format!("waiting for another vmctl {holder}");
        tracing::info!("{line}");
        progress.note(&line);
        loop {
            match flock(file, op) {
                Ok(()) => return Ok(()),
                Err(e) if e == rustix::io::Errno::INTR => self.check_cancel(
                    || format!("the wait for another vmctl {holder}"),
                    || "run the same command again".to_string(),
                )?,
                Err(e) => return Err(io_err("lock", &path)(e.into())),
            }
        }
    }

    /// Held by a create from before it fetches a cached file until its domain is defined: no
    /// removal runs meanwhile.
    pub fn use_lease(&self, progress: &dyn Progress) -> Result<UseLease> {
        let file = self.use_lock_file()?;
        self.flock_waiting(
            &file,
            FlockOperation::LockShared,
            FlockOperation::NonBlockingLockShared,
            "removing cached images to finish",
            progress,
        )?;
        Ok(UseLease { _file: file })
    }

    /// Held by a removal: waits for the creates in progress, and keeps new ones waiting.
    pub fn exclusive(&self, progress: &dyn Progress) -> Result<Exclusive> {
        let file = self.use_lock_file()?;
        self.flock_waiting(
            &file,
            FlockOperation::LockExclusive,
            FlockOperation::NonBlockingLockExclusive,
            "creating a VM from a cached image to define it",
            progress,
        )?;
        Ok(Exclusive { _file: file })
    }

    /// Every blob and sealed derived file, sorted by file name.
    pub fn entries(&self) -> Result<Vec<CacheEntry>> {
        let mut urls: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for p in files_in(&self.dir.join("urls"))? {
            let rec = fs::read_to_string(&p)
                .ok()
                .and_then(|t| serde_json::from_str::<UrlRecord>(&t).ok());
            if let Some(r) = rec {
                urls.entry(r.sha256).or_default().push(r.url);
            }
        }
        let mut out = Vec::new();
        for rel in self.cached_files()? {
            let path = self.dir.join(&rel);
            let Ok(meta) = fs::metadata(&path) else {
                continue; // a seal whose file is gone
            };
            let seal = self.read_seal(&rel);
            let (kind, sha256) = match rel.strip_prefix("sha256/") {
                Some(h) => (EntryKind::Blob, h.to_string()),
                None => (
                    EntryKind::Derived,
                    seal.as_ref().map(|s| s.sha256.clone()).unwrap_or_default(),
                ),
            };
            let mut u = urls.get(&sha256).cloned().unwrap_or_default();
            if kind == EntryKind::Derived {
                u.clear();
            }
            u.sort();
            out.push(CacheEntry {
                file: rel,
                kind,
                path,
                sha256,
                size: meta.len(),
                urls: u,
                hashed_at: seal.map(|s| s.hashed_at),
            });
        }
        Ok(out)
    }

    /// Quarantined files and partial downloads.
    pub fn leftovers(&self) -> Result<Vec<Leftover>> {
        let mut out = Vec::new();
        for path in files_in(&self.dir.join("quarantine"))? {
            out.push(Leftover {
                kind: LeftoverKind::Quarantined,
                size: size_of(&path),
                path,
            });
        }
        for path in files_in(&self.dir.join("partial"))? {
            if path.extension().is_some_and(|e| e == "partial") {
                out.push(Leftover {
                    kind: LeftoverKind::Partial,
                    size: size_of(&path),
                    path,
                });
            }
        }
        Ok(out)
    }

    /// Removes the cached file `rel` (`sha256/<hex>` or a derived file) and its seal, under its
    /// lock. The caller holds [`Exclusive`] and has checked, under it, that nothing uses it.
    pub fn remove_file(
        &self,
        _held: &Exclusive,
        rel: &str,
        progress: &dyn Progress,
    ) -> Result<Removed> {
        let valid = match rel.strip_prefix("sha256/") {
            Some(h) => is_sha256(h),
            None => !rel.contains("..") && !rel.starts_with('/'),
        };
        if !valid {
            return Ok(Removed::Absent);
        }
        let _lock = self.lock(
            &Self::file_lock_name(rel),
            &format!("using {rel}"),
            progress,
        )?;
        let path = self.dir.join(rel);
        let size = size_of(&path);
        let removed = hostio::file::remove_file(&path).map_err(io_err("remove", &path))?;
        let _ = hostio::file::remove_file(&self.seal_path(rel));
        Ok(if removed {
            Removed::Freed(size)
        } else {
            Removed::Absent
        })
    }

    /// Removes a quarantined file or a partial download that no fetch is writing.
    pub fn remove_leftover(&self, _held: &Exclusive, item: &Leftover) -> Result<Removed> {
        let path = &item.path;
        // Only files directly in the cache's own directories.
        let parent = match item.kind {
            LeftoverKind::Quarantined => self.dir.join("quarantine"),
            LeftoverKind::Partial => self.dir.join("partial"),
        };
        if path.parent() != Some(parent.as_path()) {
            return Ok(Removed::Absent);
        }
        let _url_lock = match item.kind {
            LeftoverKind::Quarantined => None,
            LeftoverKind::Partial => {
                let key = path
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let lock = self.dir.join("locks").join(format!("url-{key}.lock"));
                let file = hostio::file::open_or_create(&lock, STATE_MODE)
                    .map_err(io_err("open lock file", &lock))?;
                match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                    Ok(()) => Some(file),
                    Err(e) if e == rustix::io::Errno::WOULDBLOCK => return Ok(Removed::Busy),
                    Err(e) => return Err(io_err("lock", &lock)(e.into())),
                }
            }
        };
        let size = size_of(path);
        Ok(
            match hostio::file::remove_file(path).map_err(io_err("remove", path))? {
                true => Removed::Freed(size),
                false => Removed::Absent,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::NoProgress;
    use super::super::store::{FileId, Seal};
    use super::*;

    /// A blob as fetch leaves it: `sha256/<hex>` sealed, with a URL record.
    pub(crate) fn fake_blob(cache: &ImageCache, body: &[u8], url: Option<&str>) -> String {
        use sha2::Digest;
        let h = hex::encode(sha2::Sha256::digest(body));
        cache.mkdirs().unwrap();
        let p = cache.blob_path(&h);
        fs::write(&p, body).unwrap();
        let id = FileId::of(&fs::metadata(&p).unwrap());
        cache
            .write_seal(
                &ImageCache::blob_rel(&h),
                &Seal {
                    sha256: h.clone(),
                    id,
                    hashed_at: "2026-01-02T03:04:05Z".into(),
                },
            )
            .unwrap();
        if let Some(u) = url {
            let rec = UrlRecord {
                url: u.into(),
                sha256: h.clone(),
                size: body.len() as u64,
            };
            fs::write(cache.record_path(u), serde_json::to_vec(&rec).unwrap()).unwrap();
        }
        h
    }

    #[test]
    fn entries_list_blobs_with_size_urls_and_seal_time() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path());
        assert!(
            cache.entries().unwrap().is_empty(),
            "an empty cache lists nothing"
        );
        let a = fake_blob(&cache, b"aaaa", Some("http://m/a.img"));
        let b = fake_blob(&cache, b"bbbbbbbb", None);
        let e = cache.entries().unwrap();
        assert_eq!(e.len(), 2);
        let ea = e.iter().find(|x| x.sha256 == a).unwrap();
        assert_eq!(ea.size, 4);
        assert_eq!(ea.kind, EntryKind::Blob);
        assert_eq!(ea.urls, vec!["http://m/a.img".to_string()]);
        assert_eq!(ea.hashed_at.as_deref(), Some("2026-01-02T03:04:05Z"));
        assert_eq!(ea.file, format!("sha256/{a}"));
        let eb = e.iter().find(|x| x.sha256 == b).unwrap();
        assert!(eb.urls.is_empty());
        assert_eq!(eb.size, 8);
    }

    #[test]
    fn derived_files_are_listed_with_their_seal() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path());
        let mut make = |w: &mut dyn std::io::Write| -> Result<()> {
            w.write_all(b"raw").unwrap();
            Ok(())
        };
        let d = cache
            .derived("talos/x.raw", &NoProgress, &mut make)
            .unwrap();
        let e = cache.entries().unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].kind, EntryKind::Derived);
        assert_eq!(e[0].file, "talos/x.raw");
        assert_eq!(e[0].sha256, d.sha256);
    }

    #[test]
    fn remove_takes_the_blob_and_its_seal_and_keeps_the_url_record() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path());
        let a = fake_blob(&cache, b"aaaa", Some("http://m/a.img"));
        let held = cache.exclusive(&NoProgress).unwrap();
        let rel = format!("sha256/{a}");
        assert_eq!(
            cache.remove_file(&held, &rel, &NoProgress).unwrap(),
            Removed::Freed(4)
        );
        assert!(!cache.blob_path(&a).exists());
        assert!(!cache.seal_path(&rel).exists());
        assert!(cache.record_path("http://m/a.img").exists());
        assert_eq!(
            cache.remove_file(&held, &rel, &NoProgress).unwrap(),
            Removed::Absent
        );
        assert!(cache.entries().unwrap().is_empty());
    }

    #[test]
    fn a_path_outside_the_cache_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path().join("c"));
        fs::write(dir.path().join("victim"), b"x").unwrap();
        let held = cache.exclusive(&NoProgress).unwrap();
        for rel in ["../victim", "sha256/../../victim", "/etc/passwd"] {
            assert_eq!(
                cache.remove_file(&held, rel, &NoProgress).unwrap(),
                Removed::Absent
            );
        }
        assert!(dir.path().join("victim").exists());
        let outside = Leftover {
            kind: LeftoverKind::Quarantined,
            path: dir.path().join("victim"),
            size: 1,
        };
        assert_eq!(
            cache.remove_leftover(&held, &outside).unwrap(),
            Removed::Absent
        );
        assert!(dir.path().join("victim").exists());
    }

    #[test]
    fn leftovers_are_listed_and_a_partial_being_written_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path());
        cache.mkdirs().unwrap();
        fs::create_dir_all(dir.path().join("quarantine")).unwrap();
        fs::write(dir.path().join("quarantine/abc.123"), b"qq").unwrap();
        let busy_url = "http://m/busy.img";
        let idle_url = "http://m/idle.img";
        fs::write(cache.partial_path(busy_url), b"ppp").unwrap();
        fs::write(cache.partial_path(idle_url), b"pppp").unwrap();
        let l = cache.leftovers().unwrap();
        assert_eq!(l.len(), 3);
        // A fetch of busy_url holds its URL lock.
        let _fetching = cache
            .lock(
                &format!("url-{}", ImageCache::url_key(busy_url)),
                "t",
                &NoProgress,
            )
            .unwrap();
        let held = cache.exclusive(&NoProgress).unwrap();
        let mut freed = 0;
        let mut busy = 0;
        for item in &l {
            match cache.remove_leftover(&held, item).unwrap() {
                Removed::Freed(n) => freed += n,
                Removed::Busy => busy += 1,
                Removed::Absent => {}
            }
        }
        assert_eq!((freed, busy), (2 + 4, 1));
        assert!(cache.partial_path(busy_url).exists());
        assert!(!cache.partial_path(idle_url).exists());
    }

    #[test]
    fn a_lease_keeps_the_exclusive_lock_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path());
        let lease = cache.use_lease(&NoProgress).unwrap();
        // Leases share.
        let second = cache.use_lease(&NoProgress).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let c2 = cache.clone();
        let t = std::thread::spawn(move || {
            let _x = c2.exclusive(&NoProgress).unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "exclusive waits while a lease is held"
        );
        drop(lease);
        drop(second);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("exclusive once the leases are gone");
        t.join().unwrap();
    }
}
