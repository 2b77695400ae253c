//! A fake kernel for tests: it records every sysfs write and updates a fixture tree the way the
//! PCI core would (Documentation/ABI/testing/sysfs-bus-pci), so detection afterwards sees the
//! new binding.
//!
//! - `<dev>/driver_override`: stores the value; an empty write clears it (reads back `(null)`).
//! - `<dev>/driver/unbind` with the device's BDF: removes `<dev>/driver` and the driver's link
//!   back to the device; writing it for an unbound device fails with ENODEV.
//! - `drivers_probe` with a BDF: an unbound device is bound to its `driver_override` when set,
//!   else to its native driver (given by the test); a bound device stays as it is.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use hostio::HostRoot;
use hostio::paths::{SYS_BUS_PCI_DEVICES, SYS_BUS_PCI_DRIVERS, SYS_BUS_PCI_DRIVERS_PROBE};

use crate::rebind::{SysfsWrite, SysfsWriter};

/// Records writes and moves `driver` links in a fixture tree. Not for real hosts.
#[derive(Debug)]
pub struct FakeKernel {
    root: HostRoot,
    /// BDF → the driver the kernel would pick without an override (e.g. `nvidia`).
    native: BTreeMap<String, String>,
    writes: RefCell<Vec<SysfsWrite>>,
    fail_at: Option<usize>,
}

impl FakeKernel {
    pub fn new(root: HostRoot, native: &[(&str, &str)]) -> Self {
        Self {
            root,
            native: native
                .iter()
                .map(|(b, d)| (b.to_string(), d.to_string()))
                .collect(),
            writes: RefCell::new(Vec::new()),
            fail_at: None,
        }
    }

    /// Makes the n-th write (from 0) fail with EBUSY, as an unbind of a busy device can.
    pub fn failing_at(mut self, n: usize) -> Self {
        self.fail_at = Some(n);
        self
    }

    /// Every write so far, in order (including a failed one).
    pub fn writes(&self) -> Vec<SysfsWrite> {
        self.writes.borrow().clone()
    }

    fn device_dir(&self, bdf: &str) -> io::Result<PathBuf> {
        fs::canonicalize(self.root.path(format!("{SYS_BUS_PCI_DEVICES}/{bdf}")))
    }

    fn rel(&self, real: &Path) -> PathBuf {
        real.strip_prefix(self.root.root())
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| real.to_path_buf())
    }

    fn unbind(&self, bdf: &str) -> io::Result<()> {
        let dev = self.device_dir(bdf)?;
        let link = dev.join("driver");
        let driver = fs::read_link(&link)
            .map_err(|_| io::Error::from_raw_os_error(ENODEV))?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        fs::remove_file(&link)?;
        let back = self
            .root
            .path(format!("{SYS_BUS_PCI_DRIVERS}/{driver}/{bdf}"));
        match fs::remove_file(back) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn probe(&self, bdf: &str) -> io::Result<()> {
        let dev = self.device_dir(bdf)?;
        if dev.join("driver").symlink_metadata().is_ok() {
            return Ok(());
        }
        let over = fs::read_to_string(dev.join("driver_override")).unwrap_or_default();
        let over = over.trim();
        let driver = if over.is_empty() || over == "(null)" {
            match self.native.get(bdf) {
                Some(d) => d.clone(),
                None => return Ok(()),
            }
        } else {
            over.to_string()
        };
        let drv_dir = self.root.path(format!("{SYS_BUS_PCI_DRIVERS}/{driver}"));
        fs::create_dir_all(&drv_dir)?;
        let dev_rel = self.rel(&dev);
        let drv_rel = self.rel(&drv_dir);
        symlink(relative(&dev_rel, &drv_rel), dev.join("driver"))?;
        symlink(relative(&drv_rel, &dev_rel), drv_dir.join(bdf))
    }

    fn apply(&self, host_path: &str, value: &str) -> io::Result<()> {
        let bdf = value.trim();
        if host_path == SYS_BUS_PCI_DRIVERS_PROBE {
            return self.probe(bdf);
        }
        let rest = host_path
            .strip_prefix(SYS_BUS_PCI_DEVICES)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        match rest.split_once('/') {
            Some((dev, "driver_override")) => {
                let stored = if bdf.is_empty() { "(null)" } else { bdf };
                fs::write(
                    self.device_dir(dev)?.join("driver_override"),
                    format!("{stored}\n"),
                )
            }
            Some((dev, "driver/unbind")) if dev == bdf => self.unbind(bdf),
            _ => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }
}

impl SysfsWriter for FakeKernel {
    fn write_attribute(&self, host_path: &str, value: &str) -> io::Result<()> {
        let n = {
            let mut w = self.writes.borrow_mut();
            w.push(SysfsWrite {
                path: host_path.to_string(),
                value: value.to_string(),
            });
            w.len() - 1
        };
        if self.fail_at == Some(n) {
            return Err(io::Error::from_raw_os_error(EBUSY));
        }
        self.apply(host_path, value)
    }
}

/// What the kernel returns for `unbind` of a device without a driver (errno-base.h).
const ENODEV: i32 = 19;
/// Device or resource busy.
const EBUSY: i32 = 16;

/// The relative path from directory `from` to `to`, both relative to the same root, spelled
/// as the kernel's links are (`../../../bus/pci/drivers/vfio-pci`).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_links_look_like_the_kernels() {
        assert_eq!(
            relative(
                Path::new("sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0"),
                Path::new("sys/bus/pci/drivers/vfio-pci")
            ),
            Path::new("../../../../bus/pci/drivers/vfio-pci")
        );
    }
}
