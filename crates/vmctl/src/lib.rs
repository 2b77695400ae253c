//! vmctl as a library: the libvirt layer, the domain spec, the image cache, seeds, disks and the
//! commands. The `vmctl` binary (`main.rs`) only parses arguments and renders results.

// Not forbid: `writeback` calls sync_file_range(2), which neither rustix nor nix wraps.
#![deny(unsafe_code)]

pub mod cache;
pub mod commands;
pub mod config;
pub mod disk;
pub mod error;
pub mod input;
pub mod interrupt;
pub mod names;
pub mod net;
pub mod releases;
pub mod seed;
pub mod writeback;
pub mod yaml;

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
