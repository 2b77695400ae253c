//! Runtime driver binding through sysfs (Documentation/ABI/testing/sysfs-bus-pci):
//! `driver_override` names the driver the next probe must use, `driver/unbind` releases the
//! device, and `drivers_probe` asks the kernel to bind it again.

use std::io;

use hostio::HostRoot;
use hostio::paths::{SYS_BUS_PCI_DEVICES, SYS_BUS_PCI_DRIVERS_PROBE};
use serde::Serialize;

use crate::Error;

/// One write to a kernel attribute, as a host path and the value written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SysfsWrite {
    pub path: String,
    pub value: String,
}

fn write(path: String, value: impl Into<String>) -> SysfsWrite {
    SysfsWrite {
        path,
        value: value.into(),
    }
}

/// Binds each function to vfio-pci: set the override, unbind from the current driver (if any),
/// then probe. `functions` pairs each BDF with its currently bound driver.
pub fn bind_vfio_steps(functions: &[(String, Option<String>)]) -> Vec<SysfsWrite> {
    steps(functions, "vfio-pci", |driver| driver != Some("vfio-pci"))
}

/// Returns each function to its host driver: clear the override (a newline clears it), unbind
/// from vfio-pci (if bound), then probe so the kernel picks the native driver.
pub fn bind_host_steps(functions: &[(String, Option<String>)]) -> Vec<SysfsWrite> {
    steps(functions, "\n", |driver| driver.is_some())
}

fn steps(
    functions: &[(String, Option<String>)],
    override_value: &str,
    needs_unbind: impl Fn(Option<&str>) -> bool,
) -> Vec<SysfsWrite> {
    let mut out = Vec::new();
    for (bdf, driver) in functions {
        let dev = format!("{SYS_BUS_PCI_DEVICES}/{bdf}");
        out.push(write(format!("{dev}/driver_override"), override_value));
        if needs_unbind(driver.as_deref()) {
            out.push(write(format!("{dev}/driver/unbind"), bdf.as_str()));
        }
        out.push(write(SYS_BUS_PCI_DRIVERS_PROBE.to_string(), bdf.as_str()));
    }
    out
}

/// Where kernel attribute writes go: the host (through [`HostRoot`]) or a fake kernel in tests
/// ([`crate::FakeKernel`]), which records them and moves the `driver` links as the kernel would.
pub trait SysfsWriter {
    fn write_attribute(&self, host_path: &str, value: &str) -> io::Result<()>;
}

impl SysfsWriter for HostRoot {
    fn write_attribute(&self, host_path: &str, value: &str) -> io::Result<()> {
        HostRoot::write_attribute(self, host_path, value)
    }
}

/// Performs the writes in order, stopping at the first failure.
pub fn apply_writes(sysfs: &dyn SysfsWriter, writes: &[SysfsWrite]) -> Result<(), Error> {
    for w in writes {
        sysfs
            .write_attribute(&w.path, &w.value)
            .map_err(|source| Error::SysfsWrite {
                path: w.path.clone(),
                value: w.value.trim().to_string(),
                source,
            })?;
    }
    Ok(())
}

/// Whether a chip supports Multi-Instance GPU (A100/A30 = GA100, H100/H200 = GH100, B200 = GB100/GB102).
pub fn mig_capable(chip: Option<&str>) -> bool {
    matches!(chip, Some("GA100" | "GH100" | "GB100" | "GB102"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rebind_sequence_is_override_unbind_probe_per_function() {
        let f = vec![
            ("0000:01:00.0".to_string(), Some("vfio-pci".to_string())),
            ("0000:01:00.1".to_string(), None),
        ];
        let paths: Vec<(String, String)> = bind_host_steps(&f)
            .into_iter()
            .map(|w| (w.path, w.value))
            .collect();
        assert_eq!(
            paths,
            vec![
                (
                    "/sys/bus/pci/devices/0000:01:00.0/driver_override".into(),
                    "\n".into()
                ),
                (
                    "/sys/bus/pci/devices/0000:01:00.0/driver/unbind".into(),
                    "0000:01:00.0".into()
                ),
                ("/sys/bus/pci/drivers_probe".into(), "0000:01:00.0".into()),
                (
                    "/sys/bus/pci/devices/0000:01:00.1/driver_override".into(),
                    "\n".into()
                ),
                ("/sys/bus/pci/drivers_probe".into(), "0000:01:00.1".into()),
            ]
        );
        // Already on vfio-pci: no unbind.
        assert_eq!(bind_vfio_steps(&f[..1]).len(), 2);
    }
}
