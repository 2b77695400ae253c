//! `vmctl image fetch URL`: fetch a file into the content-addressed cache (to pre-seed
//! air-gapped hosts, or to check a mirror), verified against `--sha256` or the hash recorded at
//! the URL's first download. `vmctl image verify`: re-hash cached files now, whatever their seals
//! say, and move the ones that fail aside. `list|remove|prune`: [`manage`].

use std::path::PathBuf;

use guest_media::cache::{Checked, Expect, Fetched, ImageCache, Progress};
use hostio::HostRoot;
use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};

pub mod manage;

fn is_sha256(h: &str) -> bool {
    h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit())
}

pub fn fetch(
    host: &HostRoot,
    config: &Config,
    url: &str,
    sha256: Option<&str>,
    progress: &dyn Progress,
) -> Result<Fetched> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::InvalidOption {
            option: "URL".into(),
            value: url.into(),
            reason: "expected an http:// or https:// URL".into(),
        });
    }
    let expect = match sha256 {
        Some(h) if is_sha256(h) => Expect::Sha256(h.to_ascii_lowercase()),
        Some(h) => {
            return Err(Error::InvalidOption {
                option: "--sha256".into(),
                value: h.into(),
                reason: "expected 64 hex digits".into(),
            });
        }
        None => Expect::RecordFirst,
    };
    Ok(ImageCache::new(config.image_cache(host)).fetch(url, &expect, progress)?)
}

/// Which cached files `vmctl image verify` re-hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    /// These blobs, by sha256 (each must be in the cache).
    Blobs(Vec<String>),
    /// Every blob, and every file made from one (`--all`).
    All,
}

/// The result of `vmctl image verify`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub cache: PathBuf,
    pub blobs: Vec<FileReport>,
    pub ok: usize,
    pub corrupt: usize,
}

/// One cached file, re-hashed now.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// Relative to the cache (`sha256/<hex>`, `talos/<file>`).
    pub file: String,
    /// What it must hash to: its name, or its seal's hash.
    pub sha256: String,
    pub size: u64,
    pub result: Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Verdict {
    /// Its bytes hash to `sha256`; sealed again.
    Ok,
    /// Its bytes hash to something else: moved aside, never used again.
    Corrupt { actual: String, moved_to: PathBuf },
}

impl VerifyReport {
    /// Exit 1 when a file was corrupt (after the report is printed).
    pub fn into_result(self) -> Result<()> {
        if self.corrupt == 0 {
            return Ok(());
        }
        Err(Error::CorruptInCache {
            count: self.corrupt,
            quarantine: self.cache.join("quarantine"),
        })
    }
}

/// Re-hashes the chosen cached files. Bad input (not a sha256, not in the cache) is refused
/// before anything is read.
pub fn verify(
    host: &HostRoot,
    config: &Config,
    which: &Which,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let cache = ImageCache::new(config.image_cache(host));
    let files = match which {
        Which::All => cache.cached_files()?,
        Which::Blobs(shas) => {
            let mut files = Vec::new();
            for h in shas {
                if !is_sha256(h) {
                    return Err(Error::InvalidOption {
                        option: "SHA256".into(),
                        value: h.clone(),
                        reason: "expected 64 hex digits".into(),
                    });
                }
                let h = h.to_ascii_lowercase();
                if !cache.blob_path(&h).is_file() {
                    return Err(Error::InvalidOption {
                        option: "SHA256".into(),
                        value: h,
                        reason: format!("no such blob in {}", cache.dir().display()),
                    });
                }
                files.push(format!("sha256/{h}"));
            }
            files
        }
    };
    let mut report = VerifyReport {
        cache: cache.dir().to_path_buf(),
        blobs: Vec::new(),
        ok: 0,
        corrupt: 0,
    };
    for file in files {
        let size = std::fs::metadata(cache.dir().join(&file))
            .map(|m| m.len())
            .unwrap_or(0);
        let (sha256, result) = match cache.verify(&file, progress)? {
            // Gone since it was listed (another vmctl moved it aside): nothing to report.
            Checked::Absent => continue,
            Checked::Good { sha256, .. } => {
                report.ok += 1;
                (sha256, Verdict::Ok)
            }
            Checked::Corrupt {
                expected,
                actual,
                moved_to,
            } => {
                report.corrupt += 1;
                (
                    expected.unwrap_or_default(),
                    Verdict::Corrupt { actual, moved_to },
                )
            }
        };
        report.blobs.push(FileReport {
            file,
            sha256,
            size,
            result,
        });
    }
    Ok(report)
}
