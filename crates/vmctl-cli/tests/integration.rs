//! The tests of the `vmctl` binary, linked into one test binary: its CLI contracts (assert_cmd
//! against fixture roots and libvirt's test driver, help snapshots), Ctrl-C, input safety. The
//! lab tests (libvirtd, network namespaces, VMs) are separate binaries, so they run one file at
//! a time. The library's own tests are crates/vmctl's; the helpers both use are shared from
//! there.
// Helpers outside #[test] fns panic on a broken setup too.
#![allow(clippy::unwrap_used)]

mod cli;
mod cli_conventions;
mod closed_pipes;
mod day2_cli;
mod desktop_cli;
mod gpu_cli;
mod guest_driver_cli;
mod help_lines;
mod help_snapshots;
mod hgx_cli;
mod image_cache;
mod image_share_cli;
mod input_safety;
mod interrupt;
mod ip_cli;
mod metrics_cli;
mod metrics_support;
mod snapshot_cli;
mod storage;
mod talos_cli;
#[path = "../../vmctl/tests/talos_support/mod.rs"]
mod talos_support;
mod top_cli;
mod tuning_cli;
mod vgpu_cli;
