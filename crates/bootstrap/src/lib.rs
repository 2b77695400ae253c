//! `gpu-vm-bootstrap` as a library: host facts → pure [`planner::plan`] → typed [`Plan`] →
//! [`apply::Applier`] (atomic writes, backups, journal, watchdog, rollback) → [`verify::verify`].
//! No argument parsing and no printing here; the binary does both.

#![forbid(unsafe_code)]

pub mod apply;
pub mod bootloader;
pub mod debversion;
pub mod grubcfg;
pub mod netcheck;
pub mod options;
pub mod phases;
pub mod plan;
pub mod planner;
pub mod state;
pub mod verify;

pub use apply::{Applier, ApplyReport, Level, Log, NullLog, RollbackReport, Watchdog};
pub use options::{GpuMode, HugepageSize, Hugepages, Options, RepoUrls, Skips, VmctlSource};
pub use plan::{Action, ActionKind, Phase, Plan};
pub use planner::{Problem, Refusal, plan};
pub use state::HostState;
pub use verify::{VerifyReport, verify};

/// Everything that can go wrong while applying or rolling back.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("reading {path}")]
    ReadFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}")]
    WriteFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("saving the backup of {path}")]
    Backup {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the journal {path}")]
    Journal {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("restoring {path}")]
    Restore {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("running a command")]
    Command {
        #[source]
        source: hostio::CommandError,
    },
    #[error(
        "bridge {bridge} failed its check ({reason}); the old network config was restored and applied again"
    )]
    BridgeReverted { bridge: String, reason: String },
    #[error("nothing to roll back: no apply recorded a changed file under {dir}")]
    NothingToRollBack { dir: String },
}
