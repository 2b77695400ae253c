//! The cache's files on disk: URL records, seals (the stat identity of hashed bytes) and their
//! check before a use, flock(2) locks, quarantine, and installing a finished download as a blob.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::download::CHUNK;
use super::{BlobCheck, Checked, ImageCache, Progress};
use crate::error::{Error, Result};

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct UrlRecord {
    pub(super) url: String,
    pub(super) sha256: String,
    pub(super) size: u64,
}

/// The stat fields a seal compares: the ones that change when the file's bytes change or the
/// file is replaced (inode(7)).
/// - `size`; `mtime` to the nanosecond: every write(2) and truncate(2) sets it;
/// - `ino` and `dev`: a file renamed or copied over the blob is another inode.
///
/// Not `ctime`, although it also moves on every write: chown(2) and chmod(2) move it too, and
/// libvirt's DAC driver chowns a VM's disks and their backing chain at every start (and back
/// at stop; libvirt `dynamic_ownership`), so a seal with `ctime` would re-hash a 20 GiB base at
/// every VM start.
/// The limits, by design: a seal sees changes made through the file system that leave `mtime`
/// moved. Whoever restores `mtime` afterwards (utimensat(2), which needs the file's owner or
/// CAP_FOWNER: root, for blobs that are root's and 0444) or writes the block device under the
/// file system, and silent media corruption, are not seen; `vmctl image verify --all` re-hashes
/// every file regardless of its seal. A root attacker can rewrite the seal too: no seal holds
/// against root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct FileId {
    pub(super) size: u64,
    pub(super) mtime: i64,
    pub(super) mtime_nsec: i64,
    pub(super) ino: u64,
    pub(super) dev: u64,
}

impl FileId {
    pub(super) fn of(m: &fs::Metadata) -> Self {
        FileId {
            size: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ino: m.ino(),
            dev: m.dev(),
        }
    }

    /// In words, how `now` differs from this (sealed) identity.
    pub(super) fn change(&self, now: &FileId) -> String {
        let mut what = Vec::new();
        if self.size != now.size {
            what.push(format!("size {} → {}", self.size, now.size));
        }
        if (self.mtime, self.mtime_nsec) != (now.mtime, now.mtime_nsec) {
            what.push("modified since it was sealed".to_string());
        }
        if (self.ino, self.dev) != (now.ino, now.dev) {
            what.push("another file than the one sealed (inode)".to_string());
        }
        what.join(", ")
    }
}

/// Written next to a cached file (`seals/<path>.json`) when its bytes have been hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Seal {
    pub(super) sha256: String,
    #[serde(flatten)]
    pub(super) id: FileId,
    /// When the bytes were hashed (UTC).
    pub(super) hashed_at: String,
}

/// Cached files are read-only: nothing vmctl does writes them, and a VM that was given one as
/// a writable disk by mistake fails instead of changing it (root still can: see [`FileId`]).
pub(super) const CACHED_MODE: u32 = 0o444;
/// The cache's directories: anyone may read the verified images (libvirt's qemu user opens
/// blobs as VM backing files).
pub(super) const DIR_MODE: u32 = 0o755;
/// What the cache writes and rewrites itself: URL records, seals, partial downloads, lock files.
/// World-readable (`vmctl image list` as any user), writable by the owner only.
pub(super) const STATE_MODE: u32 = 0o644;

pub(super) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub(super) fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(super) fn now_utc() -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(&f)
        .unwrap_or_default()
}

pub(super) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

/// Makes `dir` and its missing parents ([`DIR_MODE`]).
pub(super) fn make_dirs(dir: &Path) -> Result<()> {
    hostio::create_dir_all_mode(dir, DIR_MODE).map_err(io_err("create cache directory", dir))
}

/// Replaces `path` with `content` atomically ([`hostio::file::write_atomic`], [`STATE_MODE`]).
/// Callers hold the lock that covers `path`.
pub(super) fn write_atomic(path: &Path, content: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        make_dirs(dir)?;
    }
    hostio::file::write_atomic(path, content, STATE_MODE).map_err(io_err("write", path))
}

/// The SHA-256 of a file's bytes, read from the start.
pub(super) fn hash_file(file: &File, path: &Path, progress: &dyn Progress) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let n = file
            .read_at(&mut buf, offset)
            .map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
        progress.advance(n as u64);
    }
    Ok(hex::encode(hasher.finalize()))
}

impl ImageCache {
    pub(super) fn blob_rel(sha256: &str) -> String {
        format!("sha256/{sha256}")
    }
    pub(super) fn url_key(url: &str) -> String {
        sha256_hex(url.as_bytes())
    }
    pub(super) fn partial_path(&self, url: &str) -> PathBuf {
        self.dir
            .join("partial")
            .join(format!("{}.partial", Self::url_key(url)))
    }
    pub(super) fn record_path(&self, url: &str) -> PathBuf {
        self.dir
            .join("urls")
            .join(format!("{}.json", Self::url_key(url)))
    }
    pub(super) fn seal_path(&self, rel: &str) -> PathBuf {
        self.dir.join("seals").join(format!("{rel}.json"))
    }
    pub(super) fn read_record(&self, url: &str) -> Option<UrlRecord> {
        let text = fs::read_to_string(self.record_path(url)).ok()?;
        serde_json::from_str(&text).ok()
    }
    pub(super) fn read_seal(&self, rel: &str) -> Option<Seal> {
        let text = fs::read_to_string(self.seal_path(rel)).ok()?;
        serde_json::from_str(&text).ok()
    }
    pub(super) fn write_seal(&self, rel: &str, seal: &Seal) -> Result<()> {
        let body = serde_json::to_vec_pretty(seal).unwrap_or_default();
        write_atomic(&self.seal_path(rel), &body)
    }
    pub(super) fn mkdirs(&self) -> Result<()> {
        for sub in ["sha256", "seals/sha256", "partial", "urls", "locks"] {
            make_dirs(&self.dir.join(sub))?;
        }
        Ok(())
    }
    /// Takes the exclusive flock(2) `locks/<name>.lock`, waiting (and saying so) while another
    /// process holds it. Released when the returned file is closed.
    pub(super) fn lock(&self, name: &str, holder: &str, progress: &dyn Progress) -> Result<File> {
        let path = self.dir.join("locks").join(format!("{name}.lock"));
        let file = hostio::file::open_or_create(&path, STATE_MODE)
            .map_err(io_err("open lock file", &path))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {}
            Err(e) => return Err(io_err("lock", &path)(e.into())),
        }
        let line = format!("waiting for another vmctl {holder}");
        tracing::info!("{line}");
        progress.note(&line);
        loop {
            match flock(&file, FlockOperation::LockExclusive) {
                Ok(()) => return Ok(file),
                // A signal without SA_RESTART: stop if it was Ctrl-C, else wait on.
                Err(e) if e == rustix::io::Errno::INTR => self.check_cancel(
                    || format!("the wait for another vmctl {holder}"),
                    || "run the same command again".to_string(),
                )?,
                Err(e) => return Err(io_err("lock", &path)(e.into())),
            }
        }
    }
    /// The lock name of a cached file (`sha256/<hex>` → `sha256-<hex>`).
    pub(super) fn file_lock_name(rel: &str) -> String {
        rel.replace('/', "-")
    }
    /// Checks the cached file `rel` before a use; the caller holds its lock. `expected` is the
    /// hash it must have (a blob's name); `None` takes the seal's word for it (derived files).
    /// With `force`, re-hashes even when the seal is intact.
    pub(super) fn check_locked(
        &self,
        rel: &str,
        expected: Option<&str>,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<Checked> {
        let path = self.dir.join(rel);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Checked::Absent),
            Err(e) => return Err(io_err("open cached file", &path)(e)),
        };
        let before = FileId::of(&file.metadata().map_err(io_err("stat", &path))?);
        let seal = self
            .read_seal(rel)
            .filter(|s| expected.is_none_or(|e| s.sha256 == e));
        let reason = match &seal {
            Some(s) if s.id == before && !force => {
                return Ok(Checked::Good {
                    sha256: s.sha256.clone(),
                    size: before.size,
                    check: BlobCheck::SealIntact {
                        hashed_at: s.hashed_at.clone(),
                    },
                });
            }
            Some(_) if force => "asked to re-hash".to_string(),
            Some(s) => s.id.change(&before),
            None => "it had no seal".to_string(),
        };
        let want = expected.map(str::to_string).or(seal.map(|s| s.sha256));
        tracing::info!(path = %path.display(), reason, "re-hashing a cached file");
        progress.begin_check(&path, before.size);
        let actual = hash_file(&file, &path, progress);
        progress.finish();
        let actual = actual?;
        let after = FileId::of(&file.metadata().map_err(io_err("stat", &path))?);
        if want.as_deref() == Some(actual.as_str()) && after == before {
            self.write_seal(
                rel,
                &Seal {
                    sha256: actual.clone(),
                    id: before,
                    hashed_at: now_utc(),
                },
            )?;
            return Ok(Checked::Good {
                sha256: actual,
                size: before.size,
                check: BlobCheck::RehashedNow { reason },
            });
        }
        let moved_to = self.quarantine(rel, &path)?;
        let line = format!(
            "{} does not hash to {} ({reason}): moved to {}",
            path.display(),
            want.as_deref().unwrap_or("anything sealed"),
            moved_to.display()
        );
        // Said once, through the progress line; the log has it at -v.
        tracing::info!("{line}");
        progress.note(&line);
        Ok(Checked::Corrupt {
            expected: want,
            actual,
            moved_to,
        })
    }
    /// Moves a cached file that failed its check to `quarantine/`, and drops its seal.
    pub(super) fn quarantine(&self, rel: &str, path: &Path) -> Result<PathBuf> {
        let q = self.dir.join("quarantine");
        make_dirs(&q)?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let to = q.join(format!("{name}.{stamp}"));
        hostio::file::persist(path, &to)
            .map_err(io_err("move aside the corrupt cached file", path))?;
        let _ = hostio::file::remove_file(&self.seal_path(rel));
        Ok(to)
    }
    /// Moves a finished download (already fsync'd; `file` is open on it) into the cache as
    /// `sha256/<sha256>` and seals it, under the blob's lock. The blob is the very file whose
    /// bytes were hashed: renamed, never copied.
    pub(super) fn install(
        &self,
        partial: &Path,
        file: &File,
        sha256: &str,
        progress: &dyn Progress,
    ) -> Result<PathBuf> {
        let rel = Self::blob_rel(sha256);
        let _lock = self.lock(
            &Self::file_lock_name(&rel),
            &format!("using {rel}"),
            progress,
        )?;
        let blob = self.dir.join(&rel);
        // fchmod(2) moves ctime only, which the seal leaves out.
        hostio::file::persist_with_mode(file, partial, &blob, CACHED_MODE)
            .map_err(io_err("move download into the cache at", &blob))?;
        let id = FileId::of(&file.metadata().map_err(io_err("stat", &blob))?);
        self.write_seal(
            &rel,
            &Seal {
                sha256: sha256.to_string(),
                id,
                hashed_at: now_utc(),
            },
        )?;
        Ok(blob)
    }
}

/// Hashes what passes through it on the way to `inner`.
pub(super) struct HashingWriter<W: Write> {
    pub(super) inner: W,
    pub(super) hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
