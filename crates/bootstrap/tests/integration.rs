//! The integration tests of this crate, linked into one test binary (each module was its own
//! binary before: one binary per crate keeps a test build small and links once).
// Helpers outside #[test] fns panic on a broken setup too.
#![allow(clippy::unwrap_used)]

mod cli;
mod cli_conventions;
mod closed_pipes;
mod common;
mod crash;
mod debris;
mod detect_cli;
mod grub_corpus;
mod help_snapshots;
mod hugepages;
mod names;
mod netplan_layouts;
mod phases;
mod real_hosts;
mod resume;
mod rollback_edits;
mod vmctl_deb;
mod watchdog;
