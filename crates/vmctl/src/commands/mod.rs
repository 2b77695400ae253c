//! The commands, one module per area. Each takes a [`Ctx`] (settings, host root, runner,
//! hypervisor) and returns typed results that the binary renders as text or JSON. A command
//! uses the modules below it (`crate::gpu`, `crate::address`, `crate::build`…), never a
//! sibling command: what two commands share lives a layer down.

pub mod clone;
pub mod cluster;
pub mod create;
pub mod desktop;
pub mod disk;
pub mod gpu;
pub mod hosts;
pub mod image;
pub mod inspect;
pub mod ip;
pub mod lifecycle;
pub mod metrics;
pub mod observe;
pub mod resize;
pub mod share;
pub mod snapshot;
pub mod ssh;
pub mod talos;
pub mod template;

pub use crate::ctx::Ctx;
