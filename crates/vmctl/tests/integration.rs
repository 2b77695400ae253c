//! The integration tests of the vmctl library, linked into one test binary (each module was its
//! own binary before: one binary per crate keeps a test build small and links once). The tests
//! of the `vmctl` binary (assert_cmd, help snapshots, the lab) are crates/vmctl-cli's.
// Helpers outside #[test] fns panic on a broken setup too.
#![allow(clippy::unwrap_used)]

mod cluster;
mod desktop_seed;
mod gpu_attach;
mod gpu_create;
mod storage;
mod support;
mod talos_create;
mod talos_support;
mod tuning_create;
