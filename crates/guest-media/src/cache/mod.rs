//! The content-addressed image cache (default `/var/lib/vmctl/images`). Downloads stream through
//! SHA-256 in one pass, resume from `partial/` with an HTTP Range request, and are checked
//! against an expected hash or the hash recorded at the first download of a URL (for
//! publishers without checksums, e.g. the Talos Image Factory). Every later use checks the file
//! again, cheaply, through its seal.
//!
//! Layout under the cache directory:
//! - `sha256/<hex>`: blobs, named by the SHA-256 of their bytes, read-only (0444).
//! - `seals/<path>.json`: the [`Seal`] of each cached file: its hash and the stat fields that
//!   change when it is written or replaced. A file whose stat still matches its seal is used
//!   without reading it (so using a 20 GiB image costs one `fstat`); one that does not is
//!   re-hashed, and if its bytes no longer hash to its name it is moved to `quarantine/`, never
//!   used, and fetched again.
//! - `urls/<key>.json`: the hash recorded at a URL's first download.
//! - `partial/<key>.partial`: an interrupted download, resumed by the next fetch of that URL.
//! - `locks/<name>.lock`: flock(2) locks. One per URL, held for the whole fetch, so two
//!   processes never write one partial file: the second waits, then finds the blob the first
//!   made. One per cached file, held while it is checked, installed or moved aside. Lock files
//!   are never deleted: a process could still hold the unlinked inode while the next one locks
//!   a new file of the same name.
//! - `quarantine/<name>.<unix-ns>`: files that failed their re-hash, kept for inspection.
//! - `talos/`: files made from blobs (decompressed `.raw.xz`), sealed like blobs.

mod download;
mod manage;
mod store;
#[cfg(test)]
mod tests;
#[cfg(any(test, feature = "test-server"))]
pub mod testserver;

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

pub use self::manage::{
    CacheEntry, EntryKind, Exclusive, Leftover, LeftoverKind, Removed, UseLease,
};
use self::store::{
    CACHED_MODE, FileId, HashingWriter, STATE_MODE, Seal, UrlRecord, io_err, is_sha256, make_dirs,
    now_utc, write_atomic,
};
use crate::error::{Error, Result};

/// What the downloaded bytes must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A hash from the publisher (e.g. a verified `SHA256SUMS`).
    Sha256(String),
    /// No published hash: record the hash of the first download of this URL and require it on
    /// every later download.
    RecordFirst,
}

/// What a blob's hash was compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Basis {
    /// The expected hash given by the caller (e.g. listed in a `SHA256SUMS`).
    Expected,
    /// Nothing: first download of this URL, whose hash is now recorded (trust on first use).
    RecordedFirst,
    /// The hash recorded at the URL's first download.
    MatchedRecord,
}

/// What was done in this run to the bytes of a cached file before it was used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum BlobCheck {
    /// Written in this run; its sha256 was computed now from the bytes in the file.
    HashedNow,
    /// Already cached and not re-read: its stat matched the seal written when its bytes were
    /// last hashed (at `hashed_at`, UTC).
    SealIntact { hashed_at: String },
    /// Already cached; its seal was missing or no longer matched (`reason`), so it was
    /// re-hashed now, matched, and was sealed again.
    RehashedNow { reason: String },
}

impl std::fmt::Display for BlobCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobCheck::HashedNow => write!(f, "downloaded now, sha256 computed now"),
            BlobCheck::SealIntact { hashed_at } => write!(
                f,
                "cached, not re-read now: seal intact (its bytes were hashed at {hashed_at})"
            ),
            BlobCheck::RehashedNow { reason } => write!(f, "cached, re-hashed now ({reason})"),
        }
    }
}

/// How a fetched file was verified in this run: `--json` keeps the structure, `Display` says it
/// in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    #[serde(flatten)]
    pub basis: Basis,
    pub check: BlobCheck,
    /// A cached copy that failed its re-hash in this run: moved here and not used; the file was
    /// downloaded again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<PathBuf>,
}

impl std::fmt::Display for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(q) = &self.quarantined {
            write!(
                f,
                "the cached copy had changed and failed its re-hash: moved to {} and not used; ",
                q.display()
            )?;
        }
        let against = match self.basis {
            Basis::Expected => "the expected sha256",
            Basis::MatchedRecord => "the sha256 recorded at this URL's first download",
            Basis::RecordedFirst => "",
        };
        match (&self.check, self.basis) {
            (BlobCheck::HashedNow, Basis::RecordedFirst) => write!(
                f,
                "downloaded now; no published checksum, so the sha256 computed now was recorded for later downloads"
            ),
            (BlobCheck::HashedNow, _) => {
                write!(f, "downloaded now; sha256 computed now matches {against}")
            }
            (check @ BlobCheck::SealIntact { .. }, _) => {
                write!(f, "{check}; its name is {against}")
            }
            (check @ BlobCheck::RehashedNow { .. }, _) => write!(f, "{check}: matches {against}"),
        }
    }
}

/// A file in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fetched {
    pub url: String,
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
    /// False when the blob was already cached.
    pub downloaded: bool,
    pub verification: Verification,
}

/// A file made from cached data by [`ImageCache::derived`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Derived {
    pub path: PathBuf,
    pub sha256: String,
    /// True when it was made in this run.
    pub made: bool,
    pub check: BlobCheck,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<PathBuf>,
}

/// The outcome of checking one cached file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Checked {
    Absent,
    Good {
        sha256: String,
        size: u64,
        check: BlobCheck,
    },
    /// Its bytes do not hash to what its name or seal says (or it has no seal to say it): moved
    /// aside, never used.
    Corrupt {
        expected: Option<String>,
        actual: String,
        moved_to: PathBuf,
    },
}

/// Progress reporting for downloads and re-hashes; the binary draws it (indicatif), the library
/// never prints.
pub trait Progress {
    fn begin(&self, _url: &str, _total: Option<u64>, _resumed_from: u64) {}
    /// A cached file of `total` bytes is re-hashed (advance and finish follow as for a download).
    fn begin_check(&self, _path: &Path, _total: u64) {}
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
    /// A step that is not a byte count: waiting for another vmctl's lock, moving a file aside.
    fn note(&self, _line: &str) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// The cache directory, an HTTP client, and the check that stops a long wait or download.
#[derive(Debug, Clone)]
pub struct ImageCache {
    dir: PathBuf,
    client: reqwest::blocking::Client,
    cancelled: fn() -> bool,
}

impl ImageCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .timeout(None::<Duration>)
            .user_agent(concat!("vmctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self {
            dir: dir.into(),
            client,
            cancelled: || false,
        }
    }
    /// Stops lock waits and downloads with [`Error::Interrupted`] once `cancelled` returns true
    /// (it is asked after each chunk and at each interrupted wait; vmctl passes its Ctrl-C
    /// flag). A stopped download keeps its partial file, to resume.
    pub fn cancel_on(self, cancelled: fn() -> bool) -> Self {
        Self { cancelled, ..self }
    }
    /// `Err(Interrupted)` once the caller's check says stop.
    fn check_cancel(
        &self,
        during: impl FnOnce() -> String,
        next: impl FnOnce() -> String,
    ) -> Result<()> {
        if (self.cancelled)() {
            return Err(Error::Interrupted {
                during: during(),
                next: next(),
            });
        }
        Ok(())
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Where a blob with this hash lives.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.dir.join(Self::blob_rel(sha256))
    }
    /// Re-hashes one cached file now, whatever its seal says (`vmctl image verify`): a file
    /// that does not match is moved aside. `rel` is `sha256/<hex>` or a derived file's path.
    pub fn verify(&self, rel: &str, progress: &dyn Progress) -> Result<Checked> {
        self.mkdirs()?;
        let expected = rel.strip_prefix("sha256/").filter(|h| is_sha256(h));
        let _lock = self.lock(
            &Self::file_lock_name(rel),
            &format!("using {rel}"),
            progress,
        )?;
        self.check_locked(rel, expected, true, progress)
    }
    /// The cached files `vmctl image verify --all` checks, relative to the cache: every blob,
    /// and every derived file that has a seal.
    pub fn cached_files(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let blobs = self.dir.join("sha256");
        match fs::read_dir(&blobs) {
            Ok(rd) => {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if is_sha256(&name) {
                        out.push(Self::blob_rel(&name));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("list", &blobs)(e)),
        }
        let seals = self.dir.join("seals");
        for e in fs::read_dir(&seals).into_iter().flatten().flatten() {
            let sub = e.file_name().to_string_lossy().into_owned();
            if sub == "sha256" || !e.path().is_dir() {
                continue;
            }
            for s in fs::read_dir(e.path()).into_iter().flatten().flatten() {
                let name = s.file_name().to_string_lossy().into_owned();
                if let Some(file) = name.strip_suffix(".json")
                    && !file.starts_with('.')
                {
                    out.push(format!("{sub}/{file}"));
                }
            }
        }
        out.sort();
        Ok(out)
    }
    /// Fetches `url` into the cache, verified as `expect` says, under the URL's lock. A cached
    /// blob of a known hash (expected or recorded) is checked through its seal and used without
    /// downloading; one that fails its re-hash is moved aside and downloaded again.
    pub fn fetch(&self, url: &str, expect: &Expect, progress: &dyn Progress) -> Result<Fetched> {
        self.mkdirs()?;
        let _url_lock = self.lock(
            &format!("url-{}", Self::url_key(url)),
            &format!("downloading {url}"),
            progress,
        )?;
        // Read under the lock: a fetch that held it before may have just recorded the URL.
        let record = self.read_record(url);
        let known = match expect {
            Expect::Sha256(h) => Some(h.to_ascii_lowercase()),
            Expect::RecordFirst => record.as_ref().map(|r| r.sha256.clone()),
        };
        let basis = match (expect, &record) {
            (Expect::Sha256(_), _) => Basis::Expected,
            (Expect::RecordFirst, Some(_)) => Basis::MatchedRecord,
            (Expect::RecordFirst, None) => Basis::RecordedFirst,
        };
        let mut quarantined = None;
        if let Some(h) = &known {
            let rel = Self::blob_rel(h);
            let _blob_lock = self.lock(
                &Self::file_lock_name(&rel),
                &format!("using {rel}"),
                progress,
            )?;
            match self.check_locked(&rel, Some(h), false, progress)? {
                Checked::Good { size, check, .. } => {
                    return Ok(Fetched {
                        url: url.to_string(),
                        path: self.blob_path(h),
                        sha256: h.clone(),
                        size,
                        downloaded: false,
                        verification: Verification {
                            basis,
                            check,
                            quarantined: None,
                        },
                    });
                }
                Checked::Corrupt { moved_to, .. } => quarantined = Some(moved_to),
                Checked::Absent => {}
            }
        }
        let partial = self.partial_path(url);
        let (sha256, size, file) = self.download(url, &partial, progress)?;
        if let Some(expected) = &known
            && &sha256 != expected
        {
            let _ = hostio::file::remove_file(&partial);
            return Err(Error::ChecksumMismatch {
                url: url.to_string(),
                expected: expected.clone(),
                actual: sha256,
            });
        }
        let blob = self.install(&partial, &file, &sha256, progress)?;
        let rec = UrlRecord {
            url: url.to_string(),
            sha256: sha256.clone(),
            size,
        };
        write_atomic(
            &self.record_path(url),
            &serde_json::to_vec_pretty(&rec).unwrap_or_default(),
        )?;
        Ok(Fetched {
            url: url.to_string(),
            path: blob,
            sha256,
            size,
            downloaded: true,
            verification: Verification {
                basis,
                check: BlobCheck::HashedNow,
                quarantined,
            },
        })
    }
    /// A file made from cached data (the Talos `.raw.xz` decompressed), kept at `<cache>/<rel>`
    /// and sealed like a blob: its sha256 is computed from the bytes as they are written, and
    /// every later use checks the seal. `make` writes the content; it runs again when the file
    /// is missing, has no seal, or fails its re-hash (then it is moved aside first). `make`'s
    /// error type is the caller's, so its own failures keep their words.
    pub fn derived<E: From<Error>>(
        &self,
        rel: &str,
        progress: &dyn Progress,
        make: &mut dyn FnMut(&mut dyn Write) -> Result<(), E>,
    ) -> Result<Derived, E> {
        self.mkdirs()?;
        let path = self.dir.join(rel);
        let dir = path.parent().unwrap_or(&self.dir).to_path_buf();
        make_dirs(&dir)?;
        let _lock = self.lock(
            &Self::file_lock_name(rel),
            &format!("making {rel}"),
            progress,
        )?;
        let mut quarantined = None;
        match self.check_locked(rel, None, false, progress)? {
            Checked::Good { sha256, check, .. } => {
                return Ok(Derived {
                    path,
                    sha256,
                    made: false,
                    check,
                    quarantined: None,
                });
            }
            Checked::Corrupt { moved_to, .. } => quarantined = Some(moved_to),
            Checked::Absent => {}
        }
        // Private to this process (its pid) and made under the lock: the bytes hashed on their
        // way in are the file's.
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{name}.part-{}", std::process::id()));
        let result = (|| -> Result<(String, File), E> {
            // A file of this name is a leftover of a killed process that had this pid: nobody
            // else makes it without the lock held here.
            let _ = hostio::file::remove_file(&tmp);
            let file =
                hostio::file::create_new(&tmp, STATE_MODE).map_err(io_err("create", &tmp))?;
            let sha256 = {
                let mut out = HashingWriter {
                    inner: std::io::BufWriter::new(&file),
                    hasher: Sha256::new(),
                };
                make(&mut out)?;
                out.inner.flush().map_err(io_err("write", &tmp))?;
                hex::encode(out.hasher.finalize())
            };
            file.sync_all().map_err(io_err("sync", &tmp))?;
            hostio::file::persist_with_mode(&file, &tmp, &path, CACHED_MODE)
                .map_err(io_err("move into the cache at", &path))?;
            Ok((sha256, file))
        })();
        let (sha256, file) = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = hostio::file::remove_file(&tmp);
                return Err(e);
            }
        };
        let id = FileId::of(&file.metadata().map_err(io_err("stat", &path))?);
        self.write_seal(
            rel,
            &Seal {
                sha256: sha256.clone(),
                id,
                hashed_at: now_utc(),
            },
        )?;
        Ok(Derived {
            path,
            sha256,
            made: true,
            check: BlobCheck::HashedNow,
            quarantined,
        })
    }
}

/// Parses a `SHA256SUMS` file (`<hex> *<name>` or `<hex>  <name>`) and returns the hash of `file`.
pub fn sha256_from_sums(sums: &str, file: &str) -> Option<String> {
    sums.lines().find_map(|line| {
        let (hash, name) = line.split_once(char::is_whitespace)?;
        let name = name.trim_start().trim_start_matches('*');
        (name == file && hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| hash.to_ascii_lowercase())
    })
}
