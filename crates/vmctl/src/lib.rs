//! vmctl as a library: the settings, names and addresses, and the commands, over two layers of
//! their own crates: `hypervisor` (libvirt, the domain spec) and `guest_media` (the image cache,
//! seeds, disks). The `vmctl` binary (`main.rs`) only parses arguments and renders results.
#![forbid(unsafe_code)]

// The layers below, for the binary and the tests: one dependency gives the whole stack.
pub use guest_media;
pub use hypervisor;

pub mod address;
pub(crate) mod build;
pub mod commands;
pub mod config;
pub mod ctx;
pub mod data_disks;
pub mod desktop;
pub mod error;
pub mod gpu;
pub mod hosts;
pub mod input;
pub mod interrupt;
pub mod media;
pub mod names;
pub mod net;
pub mod share;
pub mod storage;
pub mod talos;
pub mod templates;
pub(crate) mod transaction;
pub mod tuning;

pub use error::{Error, ExitKind, Result};

/// vmctl's version, recorded in every domain it creates.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers the unit tests of several modules share.

    /// Validates domain XML with libvirt's schema (`virt-xml-validate`, package libvirt-clients).
    pub fn assert_valid_domain_xml(xml: &str) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("domain.xml");
        std::fs::write(&p, xml).unwrap();
        let out = std::process::Command::new("virt-xml-validate")
            .arg(&p)
            .arg("domain")
            .output()
            .expect("virt-xml-validate is installed (apt-get install libvirt-clients)");
        assert!(
            out.status.success(),
            "virt-xml-validate rejected:\n{xml}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
