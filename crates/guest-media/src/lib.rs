//! guest-media: what a guest boots from and is configured by, made and verified on the host.
//!
//! - [`cache`]: the content-addressed image cache (locked, resumable downloads hashed in one
//!   pass, sealed blobs checked before every use).
//! - [`releases`]: Ubuntu release data and the resolution of a release's cloud image through a
//!   mirror's `SHA256SUMS`, authenticated by its signature.
//! - [`iso`]: the Ubuntu desktop release ISO: which one, fetched and verified, files taken out of
//!   it.
//! - [`disk`]: private VM files and qcow2 overlays (`qemu-img`).
//! - [`seed`]: cloud-init NoCloud seeds and the ISO volume they are written to (`genisoimage`);
//!   [`autoinstall`]: the seed of an unattended Ubuntu Desktop install; [`mounts`]: the
//!   guest's virtiofs mounts in the seed.
//!
//! External programs run through [`hostio::CommandRunner`]. Nothing here knows which tool uses
//! it: a long operation stops when the caller's cancellation check says so
//! ([`cache::ImageCache::cancel_on`]), and errors ([`Error`]) say what failed, not what to do
//! about it.

// Not forbid: `writeback` calls sync_file_range(2), which neither rustix nor nix wraps.
#![deny(unsafe_code)]

pub mod autoinstall;
pub mod cache;
pub mod disk;
mod error;
pub mod iso;
pub mod mounts;
pub mod releases;
pub mod seed;
pub mod text;
mod writeback;
mod yaml;

pub use error::{Error, Result};
