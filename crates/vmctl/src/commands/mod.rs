//! The commands, one module per area. Each takes a [`Ctx`] (settings, host root, runner,
//! hypervisor) and returns typed results that the binary renders as text or JSON.

pub mod create;
pub mod desktop;
pub mod gpu;
pub mod image;
pub mod inspect;
pub mod ip;
pub mod lifecycle;
pub mod ssh;
pub mod talos;

use hostio::{CommandRunner, HostRoot};

use crate::config::Config;
use hypervisor::Hypervisor;

/// What every command works with; everything is passed in so tests can substitute any part.
pub struct Ctx<'a> {
    pub config: &'a Config,
    pub host: &'a HostRoot,
    pub runner: &'a dyn CommandRunner,
    pub hv: &'a dyn Hypervisor,
    /// Environment lookup (HOME, SUDO_USER…).
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("uri", &self.hv.uri())
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}
