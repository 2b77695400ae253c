//! The integration tests of this crate, linked into one test binary (each module was its own
//! binary before: one binary per crate keeps a test build small and links once).
//! The lab tests (libvirtd, network namespaces, VMs) stay separate binaries, so they run one file at a time.
// Helpers outside #[test] fns panic on a broken setup too.
#![allow(clippy::unwrap_used)]

mod cli;
mod cli_conventions;
mod closed_pipes;
mod desktop_cli;
mod desktop_seed;
mod gpu_attach;
mod gpu_cli;
mod gpu_create;
mod help_snapshots;
mod image_cache;
mod input_safety;
mod interrupt;
mod ip_cli;
mod storage;
mod support;
mod talos_cli;
mod talos_create;
mod talos_support;
