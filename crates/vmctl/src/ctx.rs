//! The context every command and shared step works with: settings, the host root, the
//! command runner, the hypervisor and the environment, all passed in so tests can substitute
//! any part.

use hostio::{CommandRunner, HostRoot};
use hypervisor::Hypervisor;

use crate::config::Config;

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
