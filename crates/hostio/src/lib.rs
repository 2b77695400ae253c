//! The one door to the host: every read or write of `/sys`, `/proc`, `/etc`, `/dev` or `/var`
//! goes through [`HostRoot`], and every external program runs through a [`CommandRunner`].
//!
//! `HostRoot::new("/some/tree")` makes every absolute host path relative to that tree, which is
//! how `--host-root DIR` and the fixture tests work. Commands are argv vectors, never shell strings.

#![forbid(unsafe_code)]

pub mod file;
pub mod paths;
mod root;
mod runner;

pub use file::create_dir_all_mode;
pub use root::{HostRoot, temp_prefix};
pub use runner::{Cmd, CommandError, CommandRunner, Output, RecordingRunner, SystemRunner};
