//! vmctl as a library: the libvirt layer, the domain spec, the image cache, seeds, disks and the
//! commands. The `vmctl` binary (`main.rs`) only parses arguments and renders results.

// Not forbid: `writeback` calls sync_file_range(2), which neither rustix nor nix wraps.
#![deny(unsafe_code)]

pub mod cache;
pub mod commands;
pub mod config;
pub mod disk;
pub mod domain;
pub mod error;
pub mod input;
pub mod interrupt;
pub mod libvirt;
pub mod names;
pub mod net;
pub mod releases;
pub mod seed;
pub mod writeback;
pub mod yaml;

pub use error::{Error, ExitKind, Result};

/// vmctl's version, recorded in every domain it creates.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
