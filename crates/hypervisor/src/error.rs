//! The errors of the libvirt layer: variants are named after the operation that failed, carry
//! the domain or URI involved and keep libvirt's own error as `#[source]`.

/// What failed in the libvirt layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect to libvirt at {uri}")]
    Connect {
        uri: String,
        #[source]
        source: LibvirtError,
    },
    /// A libvirt call on a domain (or on the connection: `domain` is then the URI).
    #[error("libvirt: {op} {domain}")]
    Libvirt {
        op: &'static str,
        domain: String,
        #[source]
        source: LibvirtError,
    },
    /// The driver has no such operation (the test driver has no device hot-plug).
    #[error("the libvirt driver cannot {op} VM `{domain}`")]
    Unsupported { op: &'static str, domain: String },
    #[error("no domain named {name:?}")]
    NoSuchDomain { name: String },
    #[error("read domain XML of {domain}")]
    ParseDomainXml {
        domain: String,
        #[source]
        source: quick_xml::Error,
    },
    #[error("render domain XML of {domain}")]
    RenderDomainXml {
        domain: String,
        #[source]
        source: std::io::Error,
    },
    /// Splicing a device into the domain: every PCI controller index (0-255) is in use.
    #[error("domain XML of {domain}: all 256 PCI controller indexes are taken")]
    NoFreePciController { domain: String },
    /// Splicing a device into the domain: its XML has no `<devices>` element to put it in.
    #[error("domain XML of {domain}: it has no <devices> element")]
    NoDevices { domain: String },
    /// Editing a disk of the domain: it has no disk with that target (`vda`).
    #[error("domain XML of {domain}: it has no disk {target}")]
    NoDisk { domain: String, target: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// libvirt's own error, as the `virt` crate reports it. Kept as text so that the crates above
/// this one never name `virt`; displays exactly as libvirt's.
#[derive(Debug, thiserror::Error)]
#[error("{display}")]
pub struct LibvirtError {
    display: String,
    message: String,
}

impl LibvirtError {
    /// libvirt's message, e.g. `Requested operation is not valid: PCI device … is in use`.
    pub fn message(&self) -> &str {
        &self.message
    }
}

#[cfg(feature = "libvirt")]
impl From<virt::error::Error> for LibvirtError {
    fn from(e: virt::error::Error) -> Self {
        LibvirtError {
            display: e.to_string(),
            message: e.message().to_string(),
        }
    }
}

/// A value of the domain spec that does not parse (`--domain-type`, `--cpu-mode`, a PCI
/// address…): bad input from the user or a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {option} {value:?}: {reason}")]
pub struct InvalidValue {
    pub option: String,
    pub value: String,
    pub reason: String,
}
