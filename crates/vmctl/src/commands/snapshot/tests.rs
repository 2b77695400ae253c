//! Unit tests of `snapshot`: names, the decisions (who reverts, `--memory` with VFIO), and
//! vmctl's own revert on libvirt's test driver with a fake snapshot store (the test driver
//! makes internal snapshots only), including a failure at its last step.

use std::sync::Mutex;

use hostio::{CommandRunner, HostRoot, RecordingRunner};
use hypervisor::domain::Metadata;
use hypervisor::snapshot::SnapshotDisk;
use hypervisor::{DomainRecord, GuestAddress, Hypervisor, Libvirt, State};

use super::*;
use crate::config::Config;

#[test]
fn names() {
    for ok in ["s1", "before-upgrade", "a_b.c", &"x".repeat(64)] {
        validate_name(ok).unwrap();
    }
    for bad in ["", "-x", ".x", "..", "a/b", "a b", "é", &"x".repeat(65)] {
        let e = validate_name(bad).unwrap_err();
        assert_eq!(e.exit_kind(), ExitKind::Usage, "{bad}");
        assert!(e.help()[0].contains("letters, digits"), "{bad}");
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_947_882);
    assert_eq!(utc(1_764_947_882), "2025-12-05 15:18:02Z");
    let d = default_name(t);
    assert_eq!(d, "snap-20251205-151802");
    validate_name(&d).unwrap();
}

fn snap(name: &str, external: bool) -> SnapshotInfo {
    SnapshotInfo {
        name: name.into(),
        disks: vec![SnapshotDisk {
            target: "vda".into(),
            kind: if external { "external" } else { "internal" }.into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn libvirt_reverts_external_snapshots_from_9_9_0_and_internal_ones_always() {
    assert_eq!(revert_by(9_000_000, &snap("s", true)), RevertBy::Vmctl);
    assert_eq!(revert_by(9_008_000, &snap("s", true)), RevertBy::Vmctl);
    assert_eq!(revert_by(9_009_000, &snap("s", true)), RevertBy::Libvirt);
    assert_eq!(revert_by(10_000_000, &snap("s", true)), RevertBy::Libvirt);
    assert_eq!(revert_by(9_000_000, &snap("s", false)), RevertBy::Libvirt);
}

#[test]
fn memory_is_refused_with_a_vfio_device_and_a_quiesced_disk_only_snapshot_offered() {
    let facts = DomainFacts {
        hostdevs: vec!["0000:01:00.0".parse().unwrap()],
        ..Default::default()
    };
    let e = check_memory_allowed("gpu1", "s1", &facts).unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::Usage);
    assert!(e.to_string().contains("0000:01:00.0"), "{e}");
    assert!(e.to_string().contains("cannot be saved"), "{e}");
    assert_eq!(
        e.help(),
        [
            "take a disk-only snapshot instead, quiesced through the guest agent: `vmctl snapshot create gpu1 s1 --quiesce`"
        ]
    );
    check_memory_allowed("plain", "s1", &DomainFacts::default()).unwrap();
}

/// The test driver for domains; snapshots, the version and failures are the fake's.
struct Fake<'a> {
    inner: &'a Libvirt,
    version: u32,
    snaps: Mutex<Vec<SnapshotInfo>>,
    redefined: Mutex<Vec<(String, bool)>>,
    fail_redefine: bool,
}

impl Hypervisor for Fake<'_> {
    fn uri(&self) -> &str {
        self.inner.uri()
    }
    fn capabilities(&self) -> hypervisor::Result<hypervisor::Capabilities> {
        self.inner.capabilities()
    }
    fn list(&self) -> hypervisor::Result<Vec<DomainRecord>> {
        self.inner.list()
    }
    fn get(&self, name: &str) -> hypervisor::Result<Option<DomainRecord>> {
        self.inner.get(name)
    }
    fn define(&self, name: &str, xml: &str) -> hypervisor::Result<()> {
        self.inner.define(name, xml)
    }
    fn undefine(&self, name: &str, nvram: bool) -> hypervisor::Result<()> {
        self.inner.undefine(name, nvram)
    }
    fn start(&self, name: &str) -> hypervisor::Result<()> {
        self.inner.start(name)
    }
    fn shutdown(&self, name: &str) -> hypervisor::Result<()> {
        self.inner.shutdown(name)
    }
    fn destroy(&self, name: &str) -> hypervisor::Result<()> {
        self.inner.destroy(name)
    }
    fn state(&self, name: &str) -> hypervisor::Result<State> {
        self.inner.state(name)
    }
    fn agent_addresses(&self, name: &str) -> hypervisor::Result<Vec<GuestAddress>> {
        self.inner.agent_addresses(name)
    }
    fn inactive_xml(&self, name: &str) -> hypervisor::Result<String> {
        self.inner.inactive_xml(name)
    }
    fn set_vmctl_metadata(&self, name: &str, xml: &str, live: bool) -> hypervisor::Result<()> {
        self.inner.set_vmctl_metadata(name, xml, live)
    }
    fn lib_version(&self) -> hypervisor::Result<u32> {
        Ok(self.version)
    }
    fn snapshots(&self, _: &str) -> hypervisor::Result<Vec<SnapshotInfo>> {
        Ok(self.snaps.lock().unwrap().clone())
    }
    /// As libvirt 9.0 does for an external snapshot: the overlay merged and removed, the
    /// memory file left.
    fn snapshot_delete(&self, _: &str, snapshot: &str) -> hypervisor::Result<()> {
        let mut snaps = self.snaps.lock().unwrap();
        if let Some(s) = snaps.iter().find(|s| s.name == snapshot) {
            for f in s.disks.iter().filter_map(|d| d.file.as_ref()) {
                let _ = std::fs::remove_file(f);
            }
        }
        snaps.retain(|s| s.name != snapshot);
        Ok(())
    }
    fn snapshot_redefine(&self, name: &str, xml: &str, current: bool) -> hypervisor::Result<()> {
        if self.fail_redefine {
            return Err(hypervisor::Error::Unsupported {
                op: "redefine a snapshot of",
                domain: format!("{name} (injected failure)"),
            });
        }
        let s = hypervisor::snapshot::parse_snapshot(xml, current)?;
        self.redefined.lock().unwrap().push((s.name, current));
        Ok(())
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    host: HostRoot,
    config: Config,
}

/// A VM `name` (test driver) whose vda is `vda.s1.qcow2` on `disk.qcow2`, snapshot `s1` taken
/// when vda was `disk.qcow2`.
fn setup(lv: &Libvirt, name: &str) -> (Setup, SnapshotInfo) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vms").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let (disk, overlay) = (dir.join("disk.qcow2"), dir.join("vda.s1.qcow2"));
    std::fs::write(&disk, "state at s1").unwrap();
    std::fs::write(&overlay, "changes since s1").unwrap();
    let md = Metadata {
        os: "ubuntu".into(),
        created: "2026-12-05T00:00:00Z".into(),
        version: "0".into(),
        disks: vec![disk.clone()],
        files: vec![overlay.clone()],
        dir: Some(dir.clone()),
        ..Default::default()
    };
    let mut spec = hypervisor::domain::DomainSpec::new(
        name,
        hypervisor::domain::DomainType::Qemu,
        hypervisor::domain::CpuMode::HostModel,
        hypervisor::domain::Firmware::Bios,
    );
    spec.disks = vec![hypervisor::domain::Disk::virtio(&overlay, "qcow2", "vda")];
    spec.metadata = Some(md);
    let xml = hypervisor::domain::render::to_xml(&spec)
        .unwrap()
        .replace("<domain type=\"qemu\">", "<domain type=\"test\">");
    lv.define(name, &xml).unwrap();
    let s1 = SnapshotInfo {
        name: "s1".into(),
        current: true,
        disks: vec![SnapshotDisk {
            target: "vda".into(),
            kind: "external".into(),
            file: Some(overlay),
            backing: Some(disk),
        }],
        xml: "<domainsnapshot><name>s1</name></domainsnapshot>".into(),
        ..Default::default()
    };
    let host = HostRoot::new(tmp.path().join("host"));
    (
        Setup {
            dir,
            _tmp: tmp,
            host,
            config: Config::defaults(),
        },
        s1,
    )
}

fn fake(lv: &Libvirt, s1: SnapshotInfo, fail_redefine: bool) -> Fake<'_> {
    Fake {
        inner: lv,
        version: 9_000_000,
        snaps: Mutex::new(vec![s1]),
        redefined: Mutex::new(Vec::new()),
        fail_redefine,
    }
}

#[test]
fn vmctl_reverts_the_latest_snapshot_in_place_on_libvirt_9_0() {
    let lv = Libvirt::open("test:///default").unwrap();
    let (s, s1) = setup(&lv, "rev1");
    let hv = fake(&lv, s1, false);
    let runner = RecordingRunner::new();
    let ctx = Ctx::new(&s.config, &s.host, &runner as &dyn CommandRunner, &hv);
    let before = lv.require("rev1").unwrap().xml;
    let r = revert(&ctx, "rev1", "s1").unwrap();
    assert_eq!(r.by, RevertBy::Vmctl);
    assert_eq!(r.libvirt_version.as_deref(), Some("9.0.0"));
    let overlay = s.dir.join("vda.s1.qcow2");
    assert_eq!(
        r.overlays,
        [Overlay {
            target: "vda".into(),
            file: overlay.clone()
        }]
    );
    let calls = runner.calls();
    assert_eq!(calls.len(), 1);
    let argv = calls[0].join(" ");
    assert!(
        argv.starts_with("qemu-img create -q -f qcow2 -b ")
            && argv.contains(&format!(
                "-b {} -F qcow2 {}",
                s.dir.join("disk.qcow2").display(),
                overlay.display()
            )),
        "{argv}"
    );
    // The discarded changes are gone, the new overlay is there (empty: the runner records only).
    assert_eq!(std::fs::read(&overlay).unwrap(), b"");
    assert!(!s.dir.join("vda.s1.qcow2.discarded").exists());
    assert_eq!(r.removed, [s.dir.join("vda.s1.qcow2.discarded")]);
    assert_eq!(
        std::fs::read(s.dir.join("disk.qcow2")).unwrap(),
        b"state at s1"
    );
    // Same disk path, same record: the domain is not redefined; the snapshot is made current.
    assert_eq!(lv.require("rev1").unwrap().xml, before);
    assert_eq!(*hv.redefined.lock().unwrap(), [("s1".to_string(), true)]);
    lv.undefine("rev1", true).unwrap();
}

/// A failure at the last step (making the snapshot current) leaves everything as it was: the
/// discarded changes are back in place, the new overlay is gone.
#[test]
fn a_failed_revert_by_vmctl_leaves_the_vm_as_it_was() {
    let lv = Libvirt::open("test:///default").unwrap();
    let (s, s1) = setup(&lv, "rev2");
    let hv = fake(&lv, s1, true);
    let runner = RecordingRunner::new();
    let ctx = Ctx::new(&s.config, &s.host, &runner as &dyn CommandRunner, &hv);
    let before = lv.require("rev2").unwrap().xml;
    let e = revert(&ctx, "rev2", "s1").unwrap_err();
    assert!(e.to_string().contains("redefine a snapshot"), "{e}");
    assert_eq!(
        std::fs::read(s.dir.join("vda.s1.qcow2")).unwrap(),
        b"changes since s1"
    );
    assert!(!s.dir.join("vda.s1.qcow2.discarded").exists());
    assert_eq!(lv.require("rev2").unwrap().xml, before);
    lv.undefine("rev2", true).unwrap();
}

/// Reverting to an older snapshot whose overlay a later snapshot needs: a fresh overlay, the
/// domain pointed at it and the record updated; the later snapshot's files stay.
#[test]
fn reverting_an_older_snapshot_makes_a_fresh_overlay_and_keeps_what_later_ones_need() {
    let lv = Libvirt::open("test:///default").unwrap();
    let (s, s1) = setup(&lv, "rev3");
    // s2 was taken on top of vda.s1.qcow2; the VM now runs on vda.s2.qcow2.
    let s2_overlay = s.dir.join("vda.s2.qcow2");
    std::fs::write(&s2_overlay, "changes since s2").unwrap();
    let xml = lv.require("rev3").unwrap().xml;
    let facts = parse_domain(&xml).unwrap();
    let mut md = facts.metadata.unwrap();
    md.files.push(s2_overlay.clone());
    lv.define(
        "rev3",
        &set_disk_source("rev3", &xml, "vda", &s2_overlay).unwrap(),
    )
    .unwrap();
    lv.set_vmctl_metadata("rev3", &metadata_xml(&md).unwrap(), false)
        .unwrap();
    let s2 = SnapshotInfo {
        name: "s2".into(),
        current: true,
        disks: vec![SnapshotDisk {
            target: "vda".into(),
            kind: "external".into(),
            file: Some(s2_overlay.clone()),
            backing: s1.disks[0].file.clone(),
        }],
        ..Default::default()
    };
    let hv = fake(&lv, s1, false);
    hv.snaps.lock().unwrap().push(s2);
    let runner = RecordingRunner::new();
    let ctx = Ctx::new(&s.config, &s.host, &runner as &dyn CommandRunner, &hv);
    let r = revert(&ctx, "rev3", "s1").unwrap();
    let fresh = s.dir.join("vda.s1.1.qcow2");
    assert_eq!(r.overlays[0].file, fresh);
    let after = parse_domain(&lv.require("rev3").unwrap().xml).unwrap();
    assert_eq!(after.disks[0].path.as_deref(), Some(fresh.as_path()));
    let files = after.metadata.unwrap().files;
    assert!(files.contains(&fresh), "{files:?}");
    // vda.s2.qcow2 held only changes after s2 and no snapshot needs it: removed and unrecorded.
    assert_eq!(r.removed, std::slice::from_ref(&s2_overlay));
    assert!(!s2_overlay.exists() && !files.contains(&s2_overlay));
    assert_eq!(
        std::fs::read(s.dir.join("vda.s1.qcow2")).unwrap(),
        b"changes since s1",
        "s2's state stays"
    );
    lv.undefine("rev3", true).unwrap();
}

#[test]
fn a_running_vm_is_not_reverted() {
    let lv = Libvirt::open("test:///default").unwrap();
    let (s, s1) = setup(&lv, "rev4");
    lv.start("rev4").unwrap();
    let hv = fake(&lv, s1, false);
    let runner = RecordingRunner::new();
    let ctx = Ctx::new(&s.config, &s.host, &runner as &dyn CommandRunner, &hv);
    let e = revert(&ctx, "rev4", "s1").unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::Usage);
    assert_eq!(
        e.help(),
        ["stop it first: `vmctl stop rev4`, then `vmctl snapshot revert rev4 s1`"]
    );
    let e = revert(&ctx, "rev4", "nope").unwrap_err();
    assert_eq!(e.help(), ["`vmctl snapshot list rev4` shows its snapshots"]);
    assert!(runner.calls().is_empty());
    lv.destroy("rev4").unwrap();
    lv.undefine("rev4", true).unwrap();
}

/// libvirt 9.0 leaves the memory file of an external snapshot it deletes: vmctl removes it (it
/// made it) and drops both files from its record.
#[test]
fn delete_removes_the_memory_file_libvirt_9_0_leaves_and_updates_the_record() {
    let lv = Libvirt::open("test:///default").unwrap();
    let (s, mut s1) = setup(&lv, "del1");
    let memory = s.dir.join("memory.s1.save");
    std::fs::write(&memory, "ram").unwrap();
    s1.memory = Some(memory.clone());
    let xml = lv.require("del1").unwrap().xml;
    let mut md = parse_domain(&xml).unwrap().metadata.unwrap();
    md.files.push(memory.clone());
    lv.set_vmctl_metadata("del1", &metadata_xml(&md).unwrap(), false)
        .unwrap();
    let hv = fake(&lv, s1, false);
    let runner = RecordingRunner::new();
    let ctx = Ctx::new(&s.config, &s.host, &runner as &dyn CommandRunner, &hv);
    let d = delete(&ctx, "del1", "s1").unwrap();
    assert_eq!(d.merged, [s.dir.join("vda.s1.qcow2")]);
    assert_eq!(d.removed, std::slice::from_ref(&memory));
    assert!(!memory.exists());
    let files = parse_domain(&lv.require("del1").unwrap().xml)
        .unwrap()
        .metadata
        .unwrap()
        .files;
    assert!(files.is_empty(), "{files:?}");
    let e = delete(&ctx, "del1", "s1").unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::Usage);
    lv.undefine("del1", true).unwrap();
}

/// A create that libvirt refuses leaves vmctl's record as it was (the overlays it would have
/// made are not left recorded).
#[test]
fn a_failed_create_puts_the_record_back() {
    let lv = Libvirt::open("test:///default").unwrap();
    let (s, s1) = setup(&lv, "cre1");
    let hv = fake(&lv, s1, false);
    let runner = RecordingRunner::new();
    let ctx = Ctx::new(&s.config, &s.host, &runner as &dyn CommandRunner, &hv);
    let before = parse_domain(&lv.require("cre1").unwrap().xml)
        .unwrap()
        .metadata;
    let req = CreateRequest {
        vm: "cre1".into(),
        name: Some("s9".into()),
        ..Default::default()
    };
    // The fake has no snapshot_create: libvirt's refusal, after the record was written.
    let e = create(&ctx, &req).unwrap_err();
    assert!(e.to_string().contains("snapshot"), "{e}");
    let after = parse_domain(&lv.require("cre1").unwrap().xml)
        .unwrap()
        .metadata;
    assert_eq!(after, before);
    let both = CreateRequest {
        memory: true,
        quiesce: true,
        ..req
    };
    let e = create(&ctx, &both).unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::Usage);
    assert!(
        e.help()[0].contains("`vmctl snapshot create cre1 s9 --quiesce`"),
        "{e}"
    );
    lv.undefine("cre1", true).unwrap();
}
