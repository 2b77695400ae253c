//! The base image of `create ubuntu`: a local file used as is, a URL fetched into the cache
//! (its hash recorded at the first download), or the release's cloud image from the mirror,
//! verified against the signed `SHA256SUMS`; and what was verified, in words.

use std::path::PathBuf;

use guest_media::cache::{Expect, Progress};
use guest_media::releases;
use serde::Serialize;

use super::{ImageSource, UbuntuPlan};
use crate::ctx::Ctx;
use crate::error::Result;

/// What was checked about the base image in this run: `--json` keeps the structure, `Display`
/// says it in words, and says only what ran now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum BaseVerification {
    /// `--seed-only`: no base image was used.
    NoImage,
    /// `--image PATH`: used as is.
    Local,
    /// `--image URL`: no published checksum; the cache's record of the URL.
    Url {
        blob: guest_media::cache::Verification,
    },
    /// The release's cloud image: its `SHA256SUMS` (and signature), then the blob it lists.
    Release {
        sums: releases::Provenance,
        blob: guest_media::cache::Verification,
    },
}

impl std::fmt::Display for BaseVerification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BaseVerification::NoImage => write!(f, "no base image"),
            BaseVerification::Local => write!(f, "local image, used as is (not verified)"),
            BaseVerification::Url { blob } => write!(f, "{blob}"),
            BaseVerification::Release { sums, blob } => {
                write!(f, "{sums}; the expected sha256 is the one it lists; {blob}")
            }
        }
    }
}

/// Resolves the base image: (path, sha256 if known, what was verified).
pub(super) fn fetch_base(
    ctx: &Ctx,
    plan: &UbuntuPlan,
    progress: &dyn Progress,
) -> Result<(PathBuf, Option<String>, BaseVerification)> {
    let cache = crate::media::image_cache(ctx);
    match &plan.image {
        ImageSource::Local { path } => Ok((path.clone(), None, BaseVerification::Local)),
        ImageSource::Url { url } => {
            let f = cache.fetch(url, &Expect::RecordFirst, progress)?;
            Ok((
                f.path,
                Some(f.sha256),
                BaseVerification::Url {
                    blob: f.verification,
                },
            ))
        }
        ImageSource::Release { version, .. } => {
            let rel = releases::find(version)?;
            let (dir, file) =
                releases::cloud_image_location(ctx.config.value("ubuntu_cloud_url"), rel);
            let keyring = ctx.config.get("gpg_keyring").map(PathBuf::from);
            let policy = releases::SignaturePolicy {
                keyring: keyring.as_deref(),
                keyring_setting: "gpg_keyring",
                require: ctx.config.require_signature()?,
            };
            let (f, sums) =
                releases::fetch_with_sums(&cache, ctx.runner, &policy, &dir, &file, progress)?;
            Ok((
                f.path,
                Some(f.sha256),
                BaseVerification::Release {
                    sums,
                    blob: f.verification,
                },
            ))
        }
    }
}
