//! The content-addressed image cache (default `/var/lib/vmctl/images`): blobs are stored as
//! `sha256/<hex>`, downloads stream through SHA-256 in one pass, resume from `partial/` with an
//! HTTP Range request, and are checked against an expected hash or the hash recorded at the
//! first download of a URL (for publishers without checksums, e.g. the Talos Image Factory).
//! A file whose hash does not match is deleted, never used.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// How a fetched file was verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Verification {
    /// Matched the expected hash given by the caller.
    Expected,
    /// First download of this URL; its hash is now recorded.
    RecordedFirst,
    /// Matched the hash recorded at the first download.
    MatchedRecord,
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

/// Progress reporting for downloads; the binary draws it (indicatif), the library never prints.
pub trait Progress {
    fn begin(&self, _url: &str, _total: Option<u64>, _resumed_from: u64) {}
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
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

/// The cache directory and an HTTP client.
#[derive(Debug, Clone)]
pub struct ImageCache {
    dir: PathBuf,
    client: reqwest::blocking::Client,
}

const CHUNK: usize = 1 << 20;
/// Written data is handed to the disk in windows of this size during the download.
const WRITEBACK_WINDOW: u64 = 32 << 20;

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
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
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a blob with this hash lives.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("sha256").join(sha256)
    }

    /// The cached blob with this hash, if present.
    pub fn lookup(&self, sha256: &str) -> Option<PathBuf> {
        let p = self.blob_path(sha256);
        p.is_file().then_some(p)
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

    fn read_record(&self, url: &str) -> Option<UrlRecord> {
        let text = fs::read_to_string(self.record_path(url)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn mkdirs(&self) -> Result<()> {
        for sub in ["sha256", "partial", "urls"] {
            let p = self.dir.join(sub);
            fs::create_dir_all(&p).map_err(|source| Error::Io {
                op: "create cache directory",
                path: p,
                source,
            })?;
        }
        Ok(())
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

    /// Fetches `url` into the cache, verified as `expect` says. A cached blob is used without
    /// downloading when its hash is already known (expected or recorded).
    pub fn fetch(&self, url: &str, expect: &Expect, progress: &dyn Progress) -> Result<Fetched> {
        let record = self.read_record(url);
        let known = match expect {
            Expect::Sha256(h) => Some(h.to_ascii_lowercase()),
            Expect::RecordFirst => record.as_ref().map(|r| r.sha256.clone()),
        };
        let verification = match (expect, &record) {
            (Expect::Sha256(_), _) => Verification::Expected,
            (Expect::RecordFirst, Some(_)) => Verification::MatchedRecord,
            (Expect::RecordFirst, None) => Verification::RecordedFirst,
        };
        if let Some(h) = &known
            && let Some(path) = self.lookup(h)
        {
            let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            return Ok(Fetched {
                url: url.to_string(),
                path,
                sha256: h.clone(),
                size,
                downloaded: false,
                verification,
            });
        }
        self.mkdirs()?;
        let partial = self.partial_path(url);
        let (sha256, size) = self.download(url, &partial, progress)?;
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
        let blob = self.blob_path(&sha256);
        fs::rename(&partial, &blob).map_err(|source| Error::Io {
            op: "move download into the cache at",
            path: blob.clone(),
            source,
        })?;
        let rec = UrlRecord {
            url: url.to_string(),
            sha256: sha256.clone(),
            size,
        };
        let rec_path = self.record_path(url);
        let body = serde_json::to_vec_pretty(&rec).unwrap_or_default();
        fs::write(&rec_path, body).map_err(|source| Error::Io {
            op: "write cache record",
            path: rec_path,
            source,
        })?;
        Ok(Fetched {
            url: url.to_string(),
            path: blob,
            sha256,
            size,
            downloaded: true,
            verification,
        })
    }

    /// Streams `url` into `partial`, resuming what is there, and returns (sha256, size).
    /// An interrupted transfer keeps the partial file so the next run resumes it.
    fn download(
        &self,
        url: &str,
        partial: &Path,
        progress: &dyn Progress,
    ) -> Result<(String, u64)> {
        let io = |op: &'static str| {
            let path = partial.to_path_buf();
            move |source| Error::Io { op, path, source }
        };
        let mut hasher = Sha256::new();
        let mut have = 0u64;
        let mut buf = vec![0u8; CHUNK];
        if let Ok(mut f) = File::open(partial) {
            // Re-hash what is already there: SHA-256 cannot be resumed from a saved state.
            loop {
                let n = f.read(&mut buf).map_err(io("read partial download"))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                have += n as u64;
            }
        }
        tracing::info!(url, resume_from = have, "downloading");
        let mut resp = self.request(url, have)?;
        let status = resp.status().as_u16();
        tracing::debug!(url, status, "response");
        let mut file = match status {
            206 if have > 0 => OpenOptions::new()
                .append(true)
                .open(partial)
                .map_err(io("open partial download"))?,
            200 | 206 | 416 => {
                // 200: the server ignored the range; 416: the partial is not a prefix we can
                // extend. Both mean start over.
                if status != 200 || have > 0 {
                    hasher = Sha256::new();
                    have = 0;
                    if status == 416 {
                        let _ = fs::remove_file(partial);
                        resp = self.request(url, 0)?;
                        if !resp.status().is_success() {
                            return Err(Error::HttpStatus {
                                url: url.to_string(),
                                status: resp.status().as_u16(),
                            });
                        }
                    }
                }
                File::create(partial).map_err(io("create partial download"))?
            }
            _ => {
                return Err(Error::HttpStatus {
                    url: url.to_string(),
                    status,
                });
            }
        };
        let remaining = resp.content_length();
        progress.begin(url, remaining.map(|r| r + have), have);
        // Hashing runs on its own thread, fed full chunks through a bounded channel, so that
        // SHA-256 overlaps with receiving and writing; memory stays at a few chunks.
        // Hashed chunks come back through `done` and are reused: fresh 1 MiB buffers would
        // cost a page fault per 4 KiB on every chunk.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let (done_tx, done) = std::sync::mpsc::channel::<Vec<u8>>();
        let hasher_thread = std::thread::spawn(move || {
            let mut hasher = hasher;
            for chunk in rx {
                hasher.update(&chunk);
                let _ = done_tx.send(chunk);
            }
            hasher
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
            got += n as u64;
            progress.advance(n as u64);
            if got.is_multiple_of(WRITEBACK_WINDOW) {
                crate::writeback::start(&file, have + got - WRITEBACK_WINDOW, WRITEBACK_WINDOW);
            }
            if let Err(e) = crate::interrupt::check(
                || format!("the download of {url}"),
                || "run the same command again: the download resumes where it stopped".to_string(),
            ) {
                failure = Some(e);
            }
            if tx.send(chunk).is_err() || n < CHUNK || failure.is_some() {
                break;
            }
        }
        drop(tx);
        progress.finish();
        let hasher = hasher_thread.join().map_err(|_| Error::Download {
            url: url.to_string(),
            source: std::io::Error::other("the hashing thread panicked"),
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
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
        Ok((hex::encode(hasher.finalize()), have + got))
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

#[cfg(test)]
pub(crate) mod testserver {
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
                let _ = stream.write_all(&part[..send]);
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
        assert_eq!(first.verification, Verification::RecordedFirst);
        let second = cache
            .fetch(&url, &Expect::RecordFirst, &NoProgress)
            .unwrap();
        assert_eq!(second.verification, Verification::MatchedRecord);
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
        assert_eq!(err.exit_kind(), crate::ExitKind::Usage);
        let srv = serve(vec![]);
        let err = cache
            .fetch(
                &format!("{}/nope", srv.base),
                &Expect::RecordFirst,
                &NoProgress,
            )
            .unwrap_err();
        assert!(matches!(err, Error::HttpStatus { status: 404, .. }));
        assert_eq!(err.exit_kind(), crate::ExitKind::Usage);
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
