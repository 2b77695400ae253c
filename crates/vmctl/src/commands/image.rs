//! `vmctl image fetch URL`: fetch a file into the content-addressed cache (to pre-seed
//! air-gapped hosts, or to check a mirror), verified against `--sha256` or the hash recorded at
//! the URL's first download.

use crate::cache::{Expect, Fetched, ImageCache, Progress};
use crate::config::Config;
use crate::error::{Error, Result};

pub fn fetch(
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
        Some(h) if h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()) => {
            Expect::Sha256(h.to_ascii_lowercase())
        }
        Some(h) => {
            return Err(Error::InvalidOption {
                option: "--sha256".into(),
                value: h.into(),
                reason: "expected 64 hex digits".into(),
            });
        }
        None => Expect::RecordFirst,
    };
    ImageCache::new(config.image_cache()).fetch(url, &expect, progress)
}
