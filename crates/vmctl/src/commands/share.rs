//! `vmctl share add|remove|list VM`: virtiofs shares of an existing domain.
//!
//! Changes go to the persistent definition only and take effect at the domain's next start:
//! on libvirt 9.0 a live attach of a virtiofs filesystem crashed libvirtd (lab, qemu 7.2), and
//! a domain started without shared memory cannot get it live. The result says so, and gives
//! the guest's mount command (cloud-init mounts only the shares given at create).

use hypervisor::domain::parse::parse_domain;
use hypervisor::share_splice;
use serde::Serialize;

use crate::ctx::Ctx;
use crate::error::Result;
use crate::share::{ShareError, ShareSpec};

/// What `share add` or `share remove` changed.
#[derive(Debug, Clone, Serialize)]
pub struct ShareChange {
    pub vm: String,
    pub tag: String,
    /// `add` or `remove`.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_dir: Option<std::path::PathBuf>,
    pub readonly: bool,
    /// True when the domain runs: the change waits for its next start.
    pub pending_restart: bool,
    /// When it takes effect, in words.
    pub takes_effect: String,
    /// What to run in the guest (after the restart).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_command: Option<String>,
}

/// One share of `share list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShareInfo {
    pub tag: String,
    pub host_dir: Option<std::path::PathBuf>,
    pub readonly: bool,
    /// Where the guest mounts it when vmctl's seed does (`/mnt/TAG`).
    pub guest_path: String,
    /// `active`; `next-start` (added, the running domain does not have it yet); `removed`
    /// (still in the running domain, gone at its next start).
    pub status: &'static str,
}

fn effect(running: bool) -> String {
    if running {
        "at the next start: the running VM keeps its devices until it is shut down and started again (`vmctl stop` then `vmctl start`; a reboot inside the guest is not enough)".into()
    } else {
        "at the next start (`vmctl start`)".into()
    }
}

/// Adds a share to `vm`'s persistent definition, with the shared memory virtiofs needs.
pub fn add(ctx: &Ctx, vm: &str, value: &str) -> Result<ShareChange> {
    let rec = ctx.hv.require(vm)?;
    let spec = ShareSpec::parse(value)?;
    crate::share::require_virtiofsd(ctx)?;
    let xml = ctx.hv.inactive_xml(vm)?;
    if share_splice::filesystem_tags(vm, &xml)?.contains(&spec.tag) {
        return Err(ShareError::TagTaken {
            vm: vm.into(),
            tag: spec.tag,
        }
        .into());
    }
    let new = share_splice::add_filesystem(vm, &xml, &spec.filesystem(), spec.readonly)?;
    ctx.hv.define(vm, &new)?;
    let running = rec.state.is_active();
    Ok(ShareChange {
        vm: vm.into(),
        tag: spec.tag.clone(),
        action: "add",
        host_dir: Some(spec.host_dir.clone()),
        readonly: spec.readonly,
        pending_restart: running,
        takes_effect: effect(running),
        guest_command: Some(spec.mount_command()),
    })
}

/// Removes the share `tag` from `vm`'s persistent definition.
pub fn remove(ctx: &Ctx, vm: &str, tag: &str) -> Result<ShareChange> {
    let rec = ctx.hv.require(vm)?;
    let xml = ctx.hv.inactive_xml(vm)?;
    let new =
        share_splice::remove_filesystem(vm, &xml, tag)?.ok_or_else(|| ShareError::NoSuchShare {
            vm: vm.into(),
            tag: tag.into(),
        })?;
    let readonly = parse_domain(&xml)?
        .metadata
        .is_some_and(|m| m.readonly_shares.iter().any(|t| t == tag));
    ctx.hv.define(vm, &new)?;
    let running = rec.state.is_active();
    Ok(ShareChange {
        vm: vm.into(),
        tag: tag.into(),
        action: "remove",
        host_dir: None,
        readonly,
        pending_restart: running,
        takes_effect: effect(running),
        // The fstab line cloud-init wrote has `nofail`: the boot goes on without the share.
        guest_command: Some(format!(
            "sudo umount /mnt/{tag}; sudo sed -i '\\|^{tag} /mnt/{tag} virtiofs |d' /etc/fstab"
        )),
    })
}

/// The shares of `vm`: its persistent definition's, and the running domain's where they differ.
pub fn list(ctx: &Ctx, vm: &str) -> Result<Vec<ShareInfo>> {
    let rec = ctx.hv.require(vm)?;
    let persistent = parse_domain(&ctx.hv.inactive_xml(vm)?)?;
    let live = parse_domain(&rec.xml)?;
    let ro = persistent
        .metadata
        .as_ref()
        .map(|m| m.readonly_shares.clone())
        .unwrap_or_default();
    let running = rec.state.is_active();
    let in_live = |tag: &str| live.filesystems.iter().any(|f| f.tag == tag);
    let mut out = Vec::new();
    for f in &persistent.filesystems {
        out.push(ShareInfo {
            tag: f.tag.clone(),
            host_dir: f.source_dir.clone(),
            readonly: ro.contains(&f.tag),
            guest_path: format!("/mnt/{}", f.tag),
            status: if running && !in_live(&f.tag) {
                "next-start"
            } else {
                "active"
            },
        });
    }
    if running {
        for f in &live.filesystems {
            if !persistent.filesystems.iter().any(|p| p.tag == f.tag) {
                out.push(ShareInfo {
                    tag: f.tag.clone(),
                    host_dir: f.source_dir.clone(),
                    readonly: false,
                    guest_path: format!("/mnt/{}", f.tag),
                    status: "removed",
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::error::ExitKind;
    use hostio::{HostRoot, SystemRunner};
    use hypervisor::domain::render::to_xml;
    use hypervisor::domain::{CpuMode, DomainSpec, DomainType, Firmware, Metadata};
    use hypervisor::{Hypervisor, Libvirt};

    #[test]
    fn add_list_remove_on_the_test_driver() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path().join("host"));
        let config = Config::defaults();
        let hv = Libvirt::open("test:///default").unwrap();
        let ctx = Ctx::new(&config, &host, &SystemRunner, &hv);
        let mut spec = DomainSpec::new(
            "share-t1",
            DomainType::Qemu,
            CpuMode::HostModel,
            Firmware::Bios,
        );
        spec.metadata = Some(Metadata {
            os: "ubuntu".into(),
            ..Default::default()
        });
        hv.define("share-t1", &to_xml(&spec).unwrap()).unwrap();
        let d = dir.path().display().to_string();
        let a = add(&ctx, "share-t1", &format!("{d}:models,ro")).unwrap();
        assert!(!a.pending_restart);
        assert!(a.guest_command.unwrap().contains("-o ro models"));
        let xml = hv.inactive_xml("share-t1").unwrap();
        crate::test_support::assert_valid_domain_xml(&xml);
        let facts = parse_domain(&xml).unwrap();
        assert!(facts.shared_memory);
        add(&ctx, "share-t1", &format!("{d}:data")).unwrap();
        let err = add(&ctx, "share-t1", &format!("{d}:data")).unwrap_err();
        assert!(matches!(
            err.command::<ShareError>(),
            Some(ShareError::TagTaken { .. })
        ));
        assert_eq!(err.exit_kind(), ExitKind::Usage);
        let l = list(&ctx, "share-t1").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!((l[0].tag.as_str(), l[0].readonly), ("models", true));
        assert_eq!((l[1].tag.as_str(), l[1].readonly), ("data", false));
        assert!(l.iter().all(|s| s.status == "active"));
        // Running: a change waits for the next start.
        hv.start("share-t1").unwrap();
        let r = remove(&ctx, "share-t1", "models").unwrap();
        assert!(r.pending_restart && r.readonly);
        let l = list(&ctx, "share-t1").unwrap();
        let models = l.iter().find(|s| s.tag == "models").unwrap();
        assert_eq!(models.status, "removed");
        let err = remove(&ctx, "share-t1", "models").unwrap_err();
        assert!(matches!(
            err.command::<ShareError>(),
            Some(ShareError::NoSuchShare { .. })
        ));
        hv.destroy("share-t1").unwrap();
        let l = list(&ctx, "share-t1").unwrap();
        assert_eq!(l.len(), 1);
        assert!(
            parse_domain(&hv.inactive_xml("share-t1").unwrap())
                .unwrap()
                .metadata
                .unwrap()
                .readonly_shares
                .is_empty()
        );
        hv.undefine("share-t1", false).unwrap();
        assert!(add(&ctx, "share-t1", &format!("{d}:x")).is_err());
    }
}
