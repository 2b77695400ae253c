//! Downloads: a request (resumed with an HTTP Range from the partial file), streamed to disk
//! and hashed on a second thread from the bytes read back, stopped by the caller's cancellation
//! check after each chunk.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::store::{STATE_MODE, io_err};
use super::{ImageCache, Progress};
use crate::error::{Error, Result};

pub(super) const CHUNK: usize = 1 << 20;
/// Written data is handed to the disk in windows of this size during the download.
pub(super) const WRITEBACK_WINDOW: u64 = 32 << 20;

impl ImageCache {
    pub(super) fn request(
        &self,
        url: &str,
        range_from: u64,
    ) -> Result<reqwest::blocking::Response> {
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
    /// Streams `url` into `partial`, resuming what is there, and returns (sha256, size, the open
    /// file). The hash is of the bytes as read back from the file, so it is the hash of what will
    /// be renamed into the cache. An interrupted transfer keeps the partial file so the next run
    /// resumes it. The caller holds the URL's lock: no other vmctl writes this partial file.
    pub(super) fn download(
        &self,
        url: &str,
        partial: &Path,
        progress: &dyn Progress,
    ) -> Result<(String, u64, File)> {
        let io = |op: &'static str| io_err(op, partial);
        let mut file = hostio::file::open_or_create(partial, STATE_MODE)
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
            let offset = have + got;
            if let Err(e) = store_chunk(&mut file, offset, &chunk) {
                failure = Some(io("write partial download")(e));
                break;
            }
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
            let _ = hostio::file::remove_file(partial);
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
}

/// Writes one chunk at the file's offset `offset` (its end). A chunk of zeros is not written:
/// the file is extended over it, which leaves a hole that reads back as zeros and holds no disk
/// blocks, as `cp --sparse` does. Raw disk images are mostly such runs, so a 20 GiB base
/// costs the disk only its data. Extending (not just seeking) keeps the file as long as what was
/// received, for the hashing thread's read-back and a resume's length.
fn store_chunk(file: &mut File, offset: u64, chunk: &[u8]) -> std::io::Result<()> {
    if is_zeros(chunk) {
        let end = offset + chunk.len() as u64;
        file.set_len(end)?;
        file.seek(SeekFrom::Start(end))?;
        Ok(())
    } else {
        file.write_all(chunk)
    }
}

/// Whether every byte is zero; OR-folds 64-byte blocks (which the compiler vectorizes) and stops
/// at the first block with data, so a chunk of data costs one block.
fn is_zeros(chunk: &[u8]) -> bool {
    chunk
        .chunks(64)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Reads until `buf` is full or the stream ends; returns the bytes read and the error that
/// stopped it early, if any (the bytes before an error are still good and are kept).
pub(super) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> (usize, Option<std::io::Error>) {
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
