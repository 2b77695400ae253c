//! hypervisor: the libvirt layer of both tools, and the only crate that links libvirt (through
//! the `virt` crate, behind the `libvirt` feature).
//!
//! Without the feature the crate is pure: the domain spec, splicing and the capabilities parser.
//! gpu-vm-bootstrap uses it that way, because it must start on a host without libvirt (it is
//! the tool that installs libvirt); vmctl turns the feature on.
//!
//! - [`Hypervisor`]: the operations the tools ask of libvirt, implemented by [`Libvirt`] for any
//!   URI (`qemu:///system`, `test:///default`, `test:///path/node.xml`); tests wrap it to inject
//!   failures.
//! - [`domain`]: the typed domain spec vmctl creates, its pure rendering to XML and the reading
//!   back of any domain's XML.
//! - [`splice`]: config changes to an existing domain's XML (adding and removing PCI hostdevs),
//!   keeping everything else byte for byte; [`share_splice`]: the same for virtiofs shares;
//!   [`vgpu_splice`]: for vGPU hostdevs (mdevs, VFs).
//! - [`snapshot`]: external snapshots: their XML, read and written, and which libvirt reverts
//!   them itself.
//! - [`stats`]: every domain's counters in one call (`vmctl top`, `vmctl metrics`).
//! - [`Capabilities`]: what the host's libvirt offers (`virsh capabilities`).
//!
//! It knows nothing of the commands above it: its errors ([`Error`]) are named after the
//! libvirt operation that failed, and the tools word the next step.
// One module reads libvirt's bulk statistics through raw pointers (the `virt` crate has no safe
// reader for them): `stats::fetch`, allowed there alone.
#![deny(unsafe_code)]

mod caps;
pub mod clone;
pub mod domain;
mod error;
#[cfg(feature = "libvirt")]
mod libvirt;
pub mod share_splice;
pub mod snapshot;
pub mod splice;
#[cfg(feature = "libvirt")]
pub mod stats;
pub mod vgpu_splice;

pub use caps::Capabilities;
pub use error::{Error, InvalidValue, LibvirtError, Result};
#[cfg(feature = "libvirt")]
pub use libvirt::{DomainRecord, GuestAddress, Hypervisor, Libvirt, State};
#[cfg(feature = "libvirt")]
pub use stats::DomainStats;
