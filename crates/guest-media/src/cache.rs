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

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{FlockOperation, flock};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

#[derive(Debug, Serialize, Deserialize)]
struct UrlRecord {
    url: String,
    sha256: String,
    size: u64,
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
struct FileId {
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ino: u64,
    dev: u64,
}

impl FileId {
    fn of(m: &fs::Metadata) -> Self {
        FileId {
            size: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ino: m.ino(),
            dev: m.dev(),
        }
    }

    /// In words, how `now` differs from this (sealed) identity.
    fn change(&self, now: &FileId) -> String {
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
struct Seal {
    sha256: String,
    #[serde(flatten)]
    id: FileId,
    /// When the bytes were hashed (UTC).
    hashed_at: String,
}

/// The cache directory, an HTTP client, and the check that stops a long wait or download.
#[derive(Debug, Clone)]
pub struct ImageCache {
    dir: PathBuf,
    client: reqwest::blocking::Client,
    cancelled: fn() -> bool,
}

const CHUNK: usize = 1 << 20;
/// Written data is handed to the disk in windows of this size during the download.
const WRITEBACK_WINDOW: u64 = 32 << 20;
/// Cached files are read-only: nothing vmctl does writes them, and a VM that was given one as
/// a writable disk by mistake fails instead of changing it (root still can: see [`FileId`]).
const CACHED_MODE: u32 = 0o444;

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn now_utc() -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(&f)
        .unwrap_or_default()
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

/// fsync(2) of a directory, so a rename in it survives a crash.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

/// Replaces `path` with `content` atomically: a temporary file in the same directory, fsync'd,
/// renamed over it. Callers hold the lock that covers `path`.
fn write_atomic(path: &Path, content: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err("write", path))?;
    sync_dir(dir)
}

/// The SHA-256 of a file's bytes, read from the start.
fn hash_file(file: &File, path: &Path, progress: &dyn Progress) -> Result<String> {
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

    fn blob_rel(sha256: &str) -> String {
        format!("sha256/{sha256}")
    }

    fn url_key(url: &str) -> String {
        sha256_hex(url.as_bytes())
    }

    fn partial_path(&self, url: &str) -> PathBuf {
        self.dir
            .join("partial")
            .join(format!("{}.partial", Self::url_key(url)))
    }

    fn record_path(&self, url: &str) -> PathBuf {
        self.dir
            .join("urls")
            .join(format!("{}.json", Self::url_key(url)))
    }

    fn seal_path(&self, rel: &str) -> PathBuf {
        self.dir.join("seals").join(format!("{rel}.json"))
    }

    fn read_record(&self, url: &str) -> Option<UrlRecord> {
        let text = fs::read_to_string(self.record_path(url)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn read_seal(&self, rel: &str) -> Option<Seal> {
        let text = fs::read_to_string(self.seal_path(rel)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn write_seal(&self, rel: &str, seal: &Seal) -> Result<()> {
        let body = serde_json::to_vec_pretty(seal).unwrap_or_default();
        write_atomic(&self.seal_path(rel), &body)
    }

    fn mkdirs(&self) -> Result<()> {
        for sub in ["sha256", "seals/sha256", "partial", "urls", "locks"] {
            let p = self.dir.join(sub);
            fs::create_dir_all(&p).map_err(io_err("create cache directory", &p))?;
        }
        Ok(())
    }

    /// Takes the exclusive flock(2) `locks/<name>.lock`, waiting (and saying so) while another
    /// process holds it. Released when the returned file is closed.
    fn lock(&self, name: &str, holder: &str, progress: &dyn Progress) -> Result<File> {
        let path = self.dir.join("locks").join(format!("{name}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
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
    fn file_lock_name(rel: &str) -> String {
        rel.replace('/', "-")
    }

    /// Checks the cached file `rel` before a use; the caller holds its lock. `expected` is the
    /// hash it must have (a blob's name); `None` takes the seal's word for it (derived files).
    /// With `force`, re-hashes even when the seal is intact.
    fn check_locked(
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
    fn quarantine(&self, rel: &str, path: &Path) -> Result<PathBuf> {
        let q = self.dir.join("quarantine");
        fs::create_dir_all(&q).map_err(io_err("create cache directory", &q))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let to = q.join(format!("{name}.{stamp}"));
        fs::rename(path, &to).map_err(io_err("move aside the corrupt cached file", path))?;
        let _ = fs::remove_file(self.seal_path(rel));
        Ok(to)
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

    fn request(&self, url: &str, range_from: u64) -> Result<reqwest::blocking::Response> {
        let mut req = self.client.get(url);
        if range_from > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={range_from}-"));
        }
        req.send().map_err(|source| Error::FetchUnreachable {
            url: url.to_string(),
            source,
        })
    }

    /// Downloads a small file (checksum lists, signatures) into memory.
    pub fn get_bytes(&self, url: &str) -> Result<Vec<u8>> {
        let resp = self.request(url, 0)?;
        if !resp.status().is_success() {
            return Err(Error::HttpStatus {
                url: url.to_string(),
                status: resp.status().as_u16(),
            });
        }
        resp.bytes()
            .map(|b| b.to_vec())
            .map_err(|source| Error::Download {
                url: url.to_string(),
                source: std::io::Error::other(source),
            })
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
            let _ = fs::remove_file(&partial);
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

    /// Moves a finished download (already fsync'd; `file` is open on it) into the cache as
    /// `sha256/<sha256>` and seals it, under the blob's lock. The blob is the very file whose
    /// bytes were hashed: renamed, never copied.
    fn install(
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
        file.set_permissions(Permissions::from_mode(CACHED_MODE))
            .map_err(io_err("make read-only", partial))?;
        fs::rename(partial, &blob).map_err(io_err("move download into the cache at", &blob))?;
        sync_dir(&self.dir.join("sha256"))?;
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

    /// Streams `url` into `partial`, resuming what is there, and returns (sha256, size, the open
    /// file). The hash is of the bytes as read back from the file, so it is the hash of what will
    /// be renamed into the cache. An interrupted transfer keeps the partial file so the next run
    /// resumes it. The caller holds the URL's lock: no other vmctl writes this partial file.
    fn download(
        &self,
        url: &str,
        partial: &Path,
        progress: &dyn Progress,
    ) -> Result<(String, u64, File)> {
        let io = |op: &'static str| io_err(op, partial);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(partial)
            .map_err(io("open partial download"))?;
        // Re-hash what is already there: SHA-256 cannot be resumed from a saved state.
        let mut hasher = Sha256::new();
        let mut have = 0u64;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = file.read(&mut buf).map_err(io("read partial download"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            have += n as u64;
        }
        drop(buf);
        tracing::info!(url, resume_from = have, "downloading");
        let mut resp = self.request(url, have)?;
        let status = resp.status().as_u16();
        tracing::debug!(url, status, "response");
        match status {
            // Appends at the end, where reading the prefix left the file offset.
            206 if have > 0 => {}
            200 | 206 | 416 => {
                // 200: the server ignored the range; 416: the partial is not a prefix we can
                // extend. Both mean start over.
                if status != 200 || have > 0 {
                    hasher = Sha256::new();
                    have = 0;
                    if status == 416 {
                        resp = self.request(url, 0)?;
                        if !resp.status().is_success() {
                            return Err(Error::HttpStatus {
                                url: url.to_string(),
                                status: resp.status().as_u16(),
                            });
                        }
                    }
                }
                file.set_len(0).map_err(io("truncate partial download"))?;
                file.seek(SeekFrom::Start(0))
                    .map_err(io("truncate partial download"))?;
            }
            _ => {
                return Err(Error::HttpStatus {
                    url: url.to_string(),
                    status,
                });
            }
        }
        let remaining = resp.content_length();
        progress.begin(url, remaining.map(|r| r + have), have);
        // Hashing runs on its own thread, fed through a bounded channel, so that SHA-256
        // overlaps with receiving and writing; memory stays at a few chunks. The thread hashes
        // each chunk as read back from the file (pread(2) of what was just written, from the
        // page cache): the hash is of the file's bytes, not of the stream.
        // Hashed chunks come back through `done` and are reused: fresh 1 MiB buffers would
        // cost a page fault per 4 KiB on every chunk.
        let reader = file.try_clone().map_err(io("open partial download"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(4);
        let (done_tx, done) = std::sync::mpsc::channel::<Vec<u8>>();
        let hasher_thread = std::thread::spawn(move || -> std::io::Result<Sha256> {
            let mut hasher = hasher;
            for (offset, mut chunk) in rx {
                reader.read_exact_at(&mut chunk, offset)?;
                hasher.update(&chunk);
                let _ = done_tx.send(chunk);
            }
            Ok(hasher)
        });
        let mut got = 0u64;
        let mut failure = None;
        loop {
            let mut chunk = done.try_recv().unwrap_or_default();
            chunk.resize(CHUNK, 0);
            let (n, read_error) = read_full(&mut resp, &mut chunk);
            if let Some(source) = read_error {
                failure = Some(Error::Download {
                    url: url.to_string(),
                    source,
                });
            }
            if n == 0 {
                break;
            }
            chunk.truncate(n);
            if let Err(e) = file.write_all(&chunk) {
                failure = Some(io("write partial download")(e));
                break;
            }
            let offset = have + got;
            got += n as u64;
            progress.advance(n as u64);
            if got.is_multiple_of(WRITEBACK_WINDOW) {
                crate::writeback::start(&file, have + got - WRITEBACK_WINDOW, WRITEBACK_WINDOW);
            }
            if let Err(e) = self.check_cancel(
                || format!("the download of {url}"),
                || "run the same command again: the download resumes where it stopped".to_string(),
            ) {
                failure = Some(e);
            }
            if tx.send((offset, chunk)).is_err() || n < CHUNK || failure.is_some() {
                break;
            }
        }
        drop(tx);
        progress.finish();
        let hashed = hasher_thread.join().map_err(|_| Error::Download {
            url: url.to_string(),
            source: std::io::Error::other("the hashing thread panicked"),
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        let hasher = hashed.map_err(io("read back partial download"))?;
        if let Some(len) = remaining
            && got < len
        {
            return Err(Error::Download {
                url: url.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "transfer interrupted after {} of {} bytes; run again to resume",
                        got + have,
                        len + have
                    ),
                ),
            });
        }
        file.sync_all().map_err(io("sync partial download"))?;
        let on_disk = file.metadata().map_err(io("stat partial download"))?.len();
        if on_disk != have + got {
            // Something outside vmctl's locks wrote to the file: nothing in it can be trusted.
            let _ = fs::remove_file(partial);
            return Err(Error::Download {
                url: url.to_string(),
                source: std::io::Error::other(format!(
                    "{} changed during the download ({on_disk} bytes, {} written); it was deleted",
                    partial.display(),
                    have + got
                )),
            });
        }
        Ok((hex::encode(hasher.finalize()), have + got, file))
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
        fs::create_dir_all(&dir).map_err(io_err("create cache directory", &dir))?;
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
            let file = File::create(&tmp).map_err(io_err("create", &tmp))?;
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
            file.set_permissions(Permissions::from_mode(CACHED_MODE))
                .map_err(io_err("make read-only", &tmp))?;
            fs::rename(&tmp, &path).map_err(io_err("move into the cache at", &path))?;
            Ok((sha256, file))
        })();
        let (sha256, file) = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        sync_dir(&dir)?;
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

/// Hashes what passes through it on the way to `inner`.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
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

/// Reads until `buf` is full or the stream ends; returns the bytes read and the error that
/// stopped it early, if any (the bytes before an error are still good and are kept).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> (usize, Option<std::io::Error>) {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return (filled, Some(e)),
        }
    }
    (filled, None)
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

#[cfg(any(test, feature = "test-server"))]
// Test code (built for the tests of crates above through the feature): a broken setup panics.
#[allow(clippy::unwrap_used)]
pub mod testserver {
    //! A tiny HTTP/1.1 server for download tests: serves one body, honours `Range`, and can cut
    //! the connection after N bytes or lie about the content.
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone, Default)]
    pub struct Behaviour {
        /// Stop sending after this many body bytes (simulates a dropped connection).
        pub cut_after: Option<usize>,
        /// Ignore Range headers.
        pub no_range: bool,
        /// Send the body in 64 KiB pieces with this pause after each (a slow mirror).
        pub pause: Option<std::time::Duration>,
    }

    #[derive(Debug)]
    pub struct Server {
        pub base: String,
        pub behaviour: Arc<Mutex<Behaviour>>,
        pub ranges: Arc<Mutex<Vec<Option<u64>>>>,
    }

    /// Serves `files` (path → body) on 127.0.0.1.
    pub fn serve(files: Vec<(String, Vec<u8>)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let behaviour = Arc::new(Mutex::new(Behaviour::default()));
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let (b, r) = (behaviour.clone(), ranges.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut range = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    let lower = h.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("range: bytes=") {
                        range = v.trim().trim_end_matches('-').parse::<u64>().ok();
                    }
                }
                let beh = b.lock().unwrap().clone();
                r.lock().unwrap().push(range);
                let Some((_, body)) = files.iter().find(|(p, _)| *p == path) else {
                    let _ = stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    continue;
                };
                let (status, start) = match range {
                    Some(from) if !beh.no_range && (from as usize) < body.len() => {
                        ("206 Partial Content", from as usize)
                    }
                    Some(_) if !beh.no_range => {
                        let _ = stream.write_all(b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        continue;
                    }
                    _ => ("200 OK", 0),
                };
                let part = &body[start..];
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    part.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let send = beh
                    .cut_after
                    .map(|n| n.min(part.len()))
                    .unwrap_or(part.len());
                match beh.pause {
                    None => {
                        let _ = stream.write_all(&part[..send]);
                    }
                    Some(pause) => {
                        for piece in part[..send].chunks(64 << 10) {
                            if stream.write_all(piece).is_err() {
                                break;
                            }
                            std::thread::sleep(pause);
                        }
                    }
                }
            }
        });
        Server {
            base,
            behaviour,
            ranges,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testserver::serve;
    use super::*;

    fn body(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn fetch_verifies_and_reuses_cached_blob() {
        let data = body(3 * CHUNK + 17);
        let srv = serve(vec![("/img".into(), data.clone())]);
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path());
        let url = format!("{}/img", srv.base);
        let h = sha256_hex(&data);
        let f = cache
            .fetch(&url, &Expect::Sha256(h.clone()), &NoProgress)
            .unwrap();
        assert!(f.downloaded);
        assert_eq!(f.sha256, h);
        assert_eq!(fs::read(&f.path).unwrap(), data);
        assert_eq!(f.path, dir.path().join("sha256").join(&h));
        let again = cache.fetch(&url, &Expect::Sha256(h), &NoProgress).unwrap();
        assert!(!again.downloaded);
        assert_eq!(srv.ranges.lock().unwrap().len(), 1);
    }

    #[test]
    fn corrupted_download_is_deleted_and_fails() {
        let data = body(1000);
        let srv = serve(vec![("/img".into(), data)]);
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path());
        let url = format!("{}/img", srv.base);
        let err = cache
            .fetch(&url, &Expect::Sha256("0".repeat(64)), &NoProgress)
            .unwrap_err();
        assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
        assert!(!cache.partial_path(&url).exists());
        assert_eq!(fs::read_dir(dir.path().join("sha256")).unwrap().count(), 0);
    }

    #[test]
    fn interrupted_download_resumes_with_range() {
        let data = body(2 * CHUNK + 5);
        let srv = serve(vec![("/img".into(), data.clone())]);
        srv.behaviour.lock().unwrap().cut_after = Some(CHUNK + 3);
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path());
        let url = format!("{}/img", srv.base);
        let h = sha256_hex(&data);
        let err = cache
            .fetch(&url, &Expect::Sha256(h.clone()), &NoProgress)
            .unwrap_err();
        assert!(matches!(err, Error::Download { .. }), "{err}");
        let kept = fs::metadata(cache.partial_path(&url)).unwrap().len();
        assert_eq!(kept, (CHUNK + 3) as u64);
        srv.behaviour.lock().unwrap().cut_after = None;
        let f = cache
            .fetch(&url, &Expect::Sha256(h.clone()), &NoProgress)
            .unwrap();
        assert_eq!(f.sha256, h);
        assert_eq!(srv.ranges.lock().unwrap().as_slice(), &[None, Some(kept)]);
        assert_eq!(fs::read(f.path).unwrap(), data);
    }

    #[test]
    fn truncated_file_on_server_is_detected_and_removed() {
        let data = body(5000);
        let h = sha256_hex(&data);
        // The mirror serves a shorter file with a matching Content-Length.
        let srv = serve(vec![("/img".into(), data[..4000].to_vec())]);
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path());
        let url = format!("{}/img", srv.base);
        let err = cache
            .fetch(&url, &Expect::Sha256(h), &NoProgress)
            .unwrap_err();
        assert!(matches!(err, Error::ChecksumMismatch { .. }));
        assert!(!cache.partial_path(&url).exists());
    }

    #[test]
    fn server_ignoring_range_restarts_cleanly() {
        let data = body(CHUNK + 100);
        let srv = serve(vec![("/img".into(), data.clone())]);
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path());
        let url = format!("{}/img", srv.base);
        fs::create_dir_all(dir.path().join("partial")).unwrap();
        fs::write(cache.partial_path(&url), b"garbage").unwrap();
        srv.behaviour.lock().unwrap().no_range = true;
        let f = cache
            .fetch(&url, &Expect::Sha256(sha256_hex(&data)), &NoProgress)
            .unwrap();
        assert_eq!(fs::read(f.path).unwrap(), data);
    }

    #[test]
    fn record_first_then_require_recorded_hash() {
        let srv = serve(vec![("/talos.qcow2".into(), body(4096))]);
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path());
        let url = format!("{}/talos.qcow2", srv.base);
        let first = cache
            .fetch(&url, &Expect::RecordFirst, &NoProgress)
            .unwrap();
        assert_eq!(first.verification.basis, Basis::RecordedFirst);
        assert_eq!(first.verification.check, BlobCheck::HashedNow);
        let second = cache
            .fetch(&url, &Expect::RecordFirst, &NoProgress)
            .unwrap();
        assert_eq!(second.verification.basis, Basis::MatchedRecord);
        assert!(matches!(
            second.verification.check,
            BlobCheck::SealIntact { .. }
        ));
        assert!(!second.downloaded);
        // The blob vanishes and the publisher now serves different bytes: refused.
        fs::remove_file(&first.path).unwrap();
        let srv2 = serve(vec![("/talos.qcow2".into(), body(4097))]);
        let rec = cache.record_path(&url);
        let moved = cache.record_path(&format!("{}/talos.qcow2", srv2.base));
        fs::rename(rec, moved).unwrap();
        let err = cache
            .fetch(
                &format!("{}/talos.qcow2", srv2.base),
                &Expect::RecordFirst,
                &NoProgress,
            )
            .unwrap_err();
        assert!(matches!(err, Error::ChecksumMismatch { .. }));
    }

    #[test]
    fn unreachable_and_missing_urls_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path());
        // Port 9 on 127.0.0.1 (discard) is closed here: connection refused.
        let err = cache
            .fetch("http://127.0.0.1:9/x", &Expect::RecordFirst, &NoProgress)
            .unwrap_err();
        assert!(matches!(err, Error::FetchUnreachable { .. }));
        assert!(err.is_usage(), "{err}");
        let srv = serve(vec![]);
        let err = cache
            .fetch(
                &format!("{}/nope", srv.base),
                &Expect::RecordFirst,
                &NoProgress,
            )
            .unwrap_err();
        assert!(matches!(err, Error::HttpStatus { status: 404, .. }));
        assert!(err.is_usage(), "{err}");
    }

    /// Flips one bit at `at` in place: same size and inode, new mtime.
    fn flip(path: &Path, at: u64) {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        b[0] ^= 1;
        f.write_all_at(&b, at).unwrap();
    }

    fn fetch_ok(cache: &ImageCache, url: &str, h: &str) -> Fetched {
        cache
            .fetch(url, &Expect::Sha256(h.to_string()), &NoProgress)
            .unwrap()
    }

    #[test]
    fn concurrent_fetches_share_one_download_and_one_sound_blob() {
        let data = body(2 * CHUNK + 99);
        let h = sha256_hex(&data);
        let srv = serve(vec![("/img".into(), data.clone())]);
        srv.behaviour.lock().unwrap().pause = Some(Duration::from_millis(2));
        let dir = tempfile::tempdir().unwrap();
        let url = format!("{}/img", srv.base);
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        ImageCache::new(dir.path()).fetch(&url, &Expect::RecordFirst, &NoProgress)
                    })
                })
                .collect();
            handles.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let fetched: Vec<_> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(fetched.iter().filter(|f| f.downloaded).count(), 1);
        assert!(fetched.iter().all(|f| f.sha256 == h));
        assert_eq!(srv.ranges.lock().unwrap().len(), 1, "one download");
        assert_eq!(sha256_hex(&fs::read(&fetched[0].path).unwrap()), h);
        assert_eq!(fs::read_dir(dir.path().join("partial")).unwrap().count(), 0);
    }

    #[test]
    fn a_blob_enters_the_cache_read_only_and_sealed() {
        let data = body(5000);
        let h = sha256_hex(&data);
        let srv = serve(vec![("/img".into(), data)]);
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path());
        let f = fetch_ok(&cache, &format!("{}/img", srv.base), &h);
        let meta = fs::metadata(&f.path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o444);
        let seal = cache.read_seal(&format!("sha256/{h}")).unwrap();
        assert_eq!(seal.sha256, h);
        assert_eq!(seal.id, FileId::of(&meta));
        assert_eq!(seal.id.size, 5000);
    }

    #[test]
    fn a_changed_blob_is_moved_aside_and_fetched_again() {
        let data = body(CHUNK + 5);
        let h = sha256_hex(&data);
        let srv = serve(vec![("/img".into(), data.clone())]);
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path());
        let url = format!("{}/img", srv.base);
        let f = fetch_ok(&cache, &url, &h);
        flip(&f.path, 12345);
        let again = fetch_ok(&cache, &url, &h);
        assert!(again.downloaded);
        assert_eq!(again.verification.check, BlobCheck::HashedNow);
        let q = again.verification.quarantined.clone().unwrap();
        assert!(q.starts_with(dir.path().join("quarantine")), "{q:?}");
        assert_ne!(sha256_hex(&fs::read(&q).unwrap()), h);
        assert_eq!(fs::read(&again.path).unwrap(), data);
        assert_eq!(srv.ranges.lock().unwrap().len(), 2);
        let said = again.verification.to_string();
        assert!(
            said.contains("moved to") && said.contains("downloaded now"),
            "{said}"
        );
    }

    #[test]
    fn an_intact_seal_is_trusted_without_reading_the_blob() {
        // Using a cached blob costs an fstat, not a read: a change that also puts the mtime
        // back (the documented limit of a seal) is not seen at use; `verify` re-hashes and sees it.
        let data = body(3 * CHUNK);
        let h = sha256_hex(&data);
        let srv = serve(vec![("/img".into(), data)]);
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path());
        let url = format!("{}/img", srv.base);
        let f = fetch_ok(&cache, &url, &h);
        let mtime = fs::metadata(&f.path).unwrap().modified().unwrap();
        flip(&f.path, 7);
        File::options()
            .write(true)
            .open(&f.path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let used = fetch_ok(&cache, &url, &h);
        assert!(!used.downloaded);
        assert!(matches!(
            used.verification.check,
            BlobCheck::SealIntact { .. }
        ));
        let checked = cache.verify(&format!("sha256/{h}"), &NoProgress).unwrap();
        assert!(
            matches!(&checked, Checked::Corrupt { expected: Some(e), .. } if *e == h),
            "{checked:?}"
        );
        assert!(!f.path.exists());
    }

    #[test]
    fn a_touched_blob_is_rehashed_once_and_sealed_again() {
        let data = body(2000);
        let h = sha256_hex(&data);
        let srv = serve(vec![("/img".into(), data)]);
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path());
        let url = format!("{}/img", srv.base);
        let f = fetch_ok(&cache, &url, &h);
        File::options()
            .write(true)
            .open(&f.path)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
            .unwrap();
        let used = fetch_ok(&cache, &url, &h);
        assert!(!used.downloaded);
        assert_eq!(
            used.verification.check,
            BlobCheck::RehashedNow {
                reason: "modified since it was sealed".into()
            }
        );
        let said = used.verification.to_string();
        assert!(
            said.contains("re-hashed now") && said.contains("matches"),
            "{said}"
        );
        let next = fetch_ok(&cache, &url, &h);
        assert!(matches!(
            next.verification.check,
            BlobCheck::SealIntact { .. }
        ));
        assert_eq!(srv.ranges.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_blob_without_a_seal_is_rehashed_before_use() {
        // Blobs cached by a vmctl from before seals: re-hashed at their first use, then sealed.
        let data = body(2000);
        let h = sha256_hex(&data);
        let srv = serve(vec![("/img".into(), data)]);
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path());
        let url = format!("{}/img", srv.base);
        fetch_ok(&cache, &url, &h);
        fs::remove_file(cache.seal_path(&format!("sha256/{h}"))).unwrap();
        let used = fetch_ok(&cache, &url, &h);
        assert_eq!(
            used.verification.check,
            BlobCheck::RehashedNow {
                reason: "it had no seal".into()
            }
        );
    }

    #[test]
    fn chown_and_chmod_do_not_break_the_seal() {
        // libvirt's DAC driver chowns a VM's backing chain at every start: that moves ctime,
        // which is why the seal leaves ctime out.
        let data = body(2000);
        let h = sha256_hex(&data);
        let srv = serve(vec![("/img".into(), data)]);
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path());
        let url = format!("{}/img", srv.base);
        let f = fetch_ok(&cache, &url, &h);
        let before = fs::metadata(&f.path).unwrap();
        // As root this really changes the owner; otherwise it is a no-op chown to oneself.
        let (uid, gid) = if before.uid() == 0 {
            (64055, 108)
        } else {
            (before.uid(), before.gid())
        };
        std::os::unix::fs::chown(&f.path, Some(uid), Some(gid)).unwrap();
        fs::set_permissions(&f.path, Permissions::from_mode(0o644)).unwrap();
        let used = fetch_ok(&cache, &url, &h);
        assert!(
            matches!(used.verification.check, BlobCheck::SealIntact { .. }),
            "{:?}",
            used.verification
        );
    }

    #[test]
    fn verification_serialises_what_ran_with_the_kind_tag() {
        let v = Verification {
            basis: Basis::MatchedRecord,
            check: BlobCheck::SealIntact {
                hashed_at: "2026-12-04T10:00:00Z".into(),
            },
            quarantined: None,
        };
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["kind"], "matched-record");
        assert_eq!(json["check"]["kind"], "seal-intact");
        assert_eq!(json["check"]["hashed_at"], "2026-12-04T10:00:00Z");
        assert!(json.get("quarantined").is_none());
        assert_eq!(
            v.to_string(),
            "cached, not re-read now: seal intact (its bytes were hashed at 2026-12-04T10:00:00Z); \
             its name is the sha256 recorded at this URL's first download"
        );
    }

    #[test]
    fn derived_files_are_sealed_and_made_again_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path());
        let made = std::cell::Cell::new(0);
        let mut make = |w: &mut dyn Write| -> Result<()> {
            made.set(made.get() + 1);
            w.write_all(&body(CHUNK + 1)).unwrap();
            Ok(())
        };
        let d = cache
            .derived("talos/x.raw", &NoProgress, &mut make)
            .unwrap();
        assert!(d.made && d.check == BlobCheck::HashedNow);
        assert_eq!(d.sha256, sha256_hex(&body(CHUNK + 1)));
        assert_eq!(d.path, dir.path().join("talos/x.raw"));
        let again = cache
            .derived("talos/x.raw", &NoProgress, &mut make)
            .unwrap();
        assert!(!again.made && matches!(again.check, BlobCheck::SealIntact { .. }));
        assert_eq!(cache.cached_files().unwrap(), ["talos/x.raw"]);
        flip(&d.path, 3);
        let remade = cache
            .derived("talos/x.raw", &NoProgress, &mut make)
            .unwrap();
        assert!(remade.made && remade.quarantined.is_some());
        assert_eq!(fs::read(&remade.path).unwrap(), body(CHUNK + 1));
        assert_eq!(made.get(), 2);
        // One without a seal (made by an older vmctl) cannot be checked: made again.
        fs::remove_file(cache.seal_path("talos/x.raw")).unwrap();
        let unsealed = cache
            .derived("talos/x.raw", &NoProgress, &mut make)
            .unwrap();
        assert!(unsealed.made);
        assert_eq!(made.get(), 3);
    }

    #[test]
    fn sums_parsing() {
        let h = "a".repeat(64);
        let sums = format!(
            "{h} *noble-server-cloudimg-amd64.img\n{} *other.img\n",
            "b".repeat(64)
        );
        assert_eq!(
            sha256_from_sums(&sums, "noble-server-cloudimg-amd64.img"),
            Some(h.clone())
        );
        assert_eq!(sha256_from_sums(&format!("{h}  x.iso\n"), "x.iso"), Some(h));
        assert_eq!(sha256_from_sums(&sums, "missing.img"), None);
    }
}
