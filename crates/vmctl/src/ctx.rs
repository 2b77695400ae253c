//! The context every command and shared step works with: settings, the host root, the
//! command runner, the hypervisor, the network scanner, the clock, cancellation and the
//! environment. All are passed in: the composition root (the vmctl binary) wires the real ones,
//! and a test substitutes any part. No command asks "am I on the real host?"; it uses what it
//! was given.

use std::time::SystemTime;

use hostio::{CommandRunner, HostRoot};
use hypervisor::Hypervisor;
use netscan::{NoScan, Scan};

use crate::config::Config;
use crate::error::{Error, Result};

/// What every command works with; everything is passed in so tests can substitute any part.
pub struct Ctx<'a> {
    pub config: &'a Config,
    pub host: &'a HostRoot,
    pub runner: &'a dyn CommandRunner,
    pub hv: &'a dyn Hypervisor,
    /// Environment lookup (HOME, SUDO_USER…).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// ARP scans and probes of the bridge (`--ip auto`, the probe of a static `--ip`).
    pub scanner: &'a dyn Scan,
    /// The wall clock (reservation lifetimes). A plain function, so what outlives the command's
    /// borrow (an address [`crate::address::Claim`]) can keep it.
    pub clock: fn() -> SystemTime,
    /// Whether the user asked to stop (Ctrl-C, SIGTERM): long waits check it between steps,
    /// downloads between chunks. A plain function, so the image cache can keep it.
    pub cancelled: fn() -> bool,
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn never() -> bool {
    false
}

impl<'a> Ctx<'a> {
    /// A context with the parts every command needs, and inert defaults for the rest: an
    /// empty environment, no network scanner ([`NoScan`]), the system clock, never cancelled.
    /// The binary replaces them with the real ones (`with_*`).
    pub fn new(
        config: &'a Config,
        host: &'a HostRoot,
        runner: &'a dyn CommandRunner,
        hv: &'a dyn Hypervisor,
    ) -> Self {
        Ctx {
            config,
            host,
            runner,
            hv,
            env: &no_env,
            scanner: &NoScan,
            clock: SystemTime::now,
            cancelled: never,
        }
    }

    /// The same context with this environment lookup.
    pub fn with_env(self, env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Ctx { env, ..self }
    }

    /// The same context with this network scanner.
    pub fn with_scanner(self, scanner: &'a dyn Scan) -> Self {
        Ctx { scanner, ..self }
    }

    /// The same context with this clock.
    pub fn with_clock(self, clock: fn() -> SystemTime) -> Self {
        Ctx { clock, ..self }
    }

    /// The same context with this cancellation check.
    pub fn with_cancel(self, cancelled: fn() -> bool) -> Self {
        Ctx { cancelled, ..self }
    }

    /// `Err(Interrupted)` once the user asked to stop: `during` says what was stopped, `next`
    /// what the user can do now.
    pub fn check_cancelled(
        &self,
        during: impl FnOnce() -> String,
        next: impl FnOnce() -> String,
    ) -> Result<()> {
        if (self.cancelled)() {
            return Err(Error::Interrupted {
                during: during(),
                next: next(),
            });
        }
        Ok(())
    }
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("uri", &self.hv.uri())
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}
