//! GPU passthrough rules shared by `gpu-vm-bootstrap` and `vmctl`: which GPUs a selector names,
//! whether handing them to a VM is safe, who is using them on the host, and the sysfs writes that
//! move a function between its host driver and vfio-pci.
//!
//! Everything here works on [`hwdetect::HostFacts`] and a [`hostio::HostRoot`], so it runs the same
//! on a fixture tree as on the real host.

#![forbid(unsafe_code)]

mod checks;
mod fake;
pub mod nvswitch;
mod rebind;
mod select;
mod usage;

pub use checks::{Attachment, Refusal, check};
pub use fake::FakeKernel;
pub use nvswitch::{Fabric, check_fabric};
pub use rebind::{
    SysfsWrite, SysfsWriter, apply_writes, bind_host_steps, bind_vfio_steps, mig_capable,
};
pub use select::{Selector, default_set, parse_selectors, resolve, select};
pub use usage::{GpuUser, gpu_users, host_gpu_users, nvidia_smi_users};

/// Errors of this crate; each names the operation and what it was applied to.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{selector}` is not a GPU selector")]
    ParseSelector { selector: String },
    #[error("no NVIDIA GPU matches `{selector}`")]
    UnknownSelector {
        selector: String,
        /// The GPUs that do exist, for the help line.
        available: Vec<String>,
    },
    /// No selector was given and no GPU qualifies for the default set ([`default_set`]).
    #[error("{}", nothing_qualifies(excluded))]
    NothingQualifies { excluded: Vec<Refusal> },
    #[error("writing `{value}` to {path}")]
    SysfsWrite {
        path: String,
        value: String,
        #[source]
        source: std::io::Error,
    },
}

fn nothing_qualifies(excluded: &[Refusal]) -> String {
    if excluded.is_empty() {
        return "this host has no NVIDIA GPU to pass through".to_string();
    }
    let mut s = "no NVIDIA GPU qualifies for passthrough by default (isolated, not the boot VGA \
                 device, not attached to another VM):"
        .to_string();
    for r in excluded {
        s += &format!("\n  - {}", r.reason());
    }
    s
}
