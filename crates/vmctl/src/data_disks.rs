//! Data disks: blank qcow2 files in a VM's own storage directory (`data-NAME.qcow2`),
//! attached as virtio disks after the system disk and the seed. `create --data-disk` makes
//! them with the VM; `vmctl disk add|remove` later.

use std::path::{Path, PathBuf};

use hypervisor::domain::Disk;
use serde::Serialize;

use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::names;
use crate::transaction::Transaction;

/// A data disk asked for at create or by `disk add`: `SIZE[,name=NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataDisk {
    pub name: String,
    pub bytes: u64,
}

/// Data disk names: the file is `data-NAME.qcow2`, so letters, digits and '-' only.
pub(crate) fn validate_name(option: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 32
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        || name.starts_with('-')
    {
        return Err(Error::InvalidOption {
            option: option.into(),
            value: name.into(),
            reason: "a data disk name is 1 to 32 letters, digits and '-', not starting with '-'"
                .into(),
        });
    }
    Ok(())
}

/// Parses the values of `--data-disk SIZE[,name=NAME]`; unnamed disks get `data1`, `data2`…
/// (the first not taken).
pub fn parse_data_disks(values: &[String]) -> Result<Vec<DataDisk>> {
    let bad = |v: &str, reason: &str| Error::InvalidOption {
        option: "--data-disk".into(),
        value: v.into(),
        reason: reason.into(),
    };
    let mut named: Vec<(Option<String>, u64)> = Vec::new();
    for v in values {
        let mut parts = v.split(',');
        let size = parts.next().unwrap_or_default();
        let bytes = names::parse_size("--data-disk", size)?;
        if bytes == 0 {
            return Err(bad(v, "a data disk needs a size above 0"));
        }
        let mut name = None;
        for p in parts {
            match p.split_once('=') {
                Some(("name", n)) => {
                    validate_name("--data-disk", n)?;
                    name = Some(n.to_string());
                }
                _ => return Err(bad(v, "expected SIZE[,name=NAME], e.g. 100G,name=datasets")),
            }
        }
        named.push((name, bytes));
    }
    let mut out: Vec<DataDisk> = Vec::new();
    let given: Vec<String> = named.iter().filter_map(|(n, _)| n.clone()).collect();
    for (name, bytes) in named {
        let name = match name {
            Some(n) => n,
            None => (1..)
                .map(|i| format!("data{i}"))
                .find(|n| !given.contains(n) && !out.iter().any(|d| &d.name == n))
                .unwrap_or_default(),
        };
        if out.iter().any(|d| d.name == name) {
            return Err(bad(&name, "two data disks with the same name"));
        }
        out.push(DataDisk { name, bytes });
    }
    Ok(out)
}

/// The file of data disk `name` in the VM's directory.
pub fn data_disk_path(vm_dir: &Path, name: &str) -> PathBuf {
    vm_dir.join(format!("data-{name}.qcow2"))
}

/// The next free `vdX` after those taken.
pub(crate) fn next_target(taken: &[&str]) -> Option<String> {
    ('b'..='z')
        .map(|c| format!("vd{c}"))
        .find(|t| !taken.contains(&t.as_str()))
}

/// Creates the data disks of a create (recorded in `rb`) and returns them as virtio disks
/// after the targets already used.
pub(crate) fn create_data_disks(
    ctx: &Ctx,
    rb: &mut Transaction,
    vm_dir: &Path,
    disks: &[DataDisk],
    used: &[&str],
) -> Result<Vec<Disk>> {
    let mut taken: Vec<String> = used.iter().map(|s| s.to_string()).collect();
    let mut out = Vec::new();
    for d in disks {
        let refs: Vec<&str> = taken.iter().map(String::as_str).collect();
        let target = next_target(&refs).ok_or_else(|| Error::InvalidOption {
            option: "--data-disk".into(),
            value: d.name.clone(),
            reason: "more disks than virtio names vda to vdz".into(),
        })?;
        let path = data_disk_path(vm_dir, &d.name);
        rb.record_file(&path);
        guest_media::disk::create_blank(ctx.runner, &path, d.bytes)?;
        out.push(Disk::virtio(&path, "qcow2", &target));
        taken.push(target);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_disk_values_name_themselves_in_order() {
        let v = |s: &[&str]| parse_data_disks(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        let d = v(&["10G", "1T,name=datasets", "5G"]).unwrap();
        assert_eq!(
            d.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
            ["data1", "datasets", "data2"]
        );
        assert_eq!(d[1].bytes, 1 << 40);
        // A given name that looks automatic is skipped by the automatic ones.
        let d = v(&["1G", "1G,name=data1"]).unwrap();
        assert_eq!(d[0].name, "data2");
        assert!(v(&["10G,name=a/b"]).is_err());
        assert!(v(&["10G,size=3"]).is_err());
        assert!(v(&["0"]).is_err());
        assert!(v(&["1G,name=x", "2G,name=x"]).is_err());
    }

    #[test]
    fn next_target_skips_the_taken() {
        assert_eq!(next_target(&["vda", "vdb"]).as_deref(), Some("vdc"));
        assert_eq!(next_target(&["vda", "vdc"]).as_deref(), Some("vdb"));
        let all: Vec<String> = ('a'..='z').map(|c| format!("vd{c}")).collect();
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        assert_eq!(next_target(&refs), None);
    }
}
