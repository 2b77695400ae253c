//! Unit tests of `transaction`, on libvirt's test driver.

use hypervisor::Libvirt;

use super::*;

const XML: &str =
    "<domain type='test'><name>NAME</name><memory>65536</memory><os><type>hvm</type></os></domain>";

fn xml(name: &str) -> String {
    XML.replace("NAME", name)
}

#[test]
fn drop_undoes_newest_first_and_keeps_what_was_there_before() {
    let lv = Libvirt::open("test:///default").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let before = tmp.path().join("before");
    std::fs::create_dir(&before).unwrap();
    let dir = tmp.path().join("vm");
    {
        let mut tx = Transaction::new(&lv);
        tx.claim_dir(&dir, "vm").unwrap();
        assert!(tx.has_dir());
        let f = dir.join("disk");
        std::fs::write(&f, "x").unwrap();
        tx.record_file(&f);
        tx.define_and_start(|| false, "tx1", &xml("tx1"), true, true)
            .unwrap();
        assert!(lv.get("tx1").unwrap().is_some());
        // A directory that existed is never claimed, so never removed.
        assert!(tx.claim_dir(&before, "before").is_err());
    }
    assert!(lv.get("tx1").unwrap().is_none(), "the domain is undefined");
    assert!(!dir.exists(), "the claimed directory is gone");
    assert!(before.exists(), "what was there before stays");
}

#[test]
fn commit_keeps_everything() {
    let lv = Libvirt::open("test:///default").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vm");
    {
        let mut tx = Transaction::new(&lv);
        tx.claim_dir(&dir, "vm").unwrap();
        tx.define_and_start(|| false, "tx2", &xml("tx2"), false, false)
            .unwrap();
        tx.commit();
    }
    assert!(dir.exists());
    assert!(lv.get("tx2").unwrap().is_some());
}

#[test]
fn an_undo_that_fails_does_not_stop_the_others() {
    let lv = Libvirt::open("test:///default").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vm");
    let mut tx = Transaction::new(&lv);
    tx.claim_dir(&dir, "vm").unwrap();
    // The test driver has no hot-unplug: this undo fails, the directory still goes.
    let dev = Undo::LiveDevice {
        vm: "test".into(),
        xml: "<hostdev/>".into(),
    };
    tx.record(dev.clone());
    assert_eq!(tx.rollback(), vec![dev]);
    assert!(!dir.exists());
}

#[test]
fn a_cancelled_create_defines_nothing() {
    let lv = Libvirt::open("test:///default").unwrap();
    let mut tx = Transaction::new(&lv);
    let e = tx
        .define_and_start(|| true, "tx3", &xml("tx3"), true, true)
        .unwrap_err();
    assert!(matches!(e, Error::Interrupted { .. }), "{e}");
    assert!(lv.get("tx3").unwrap().is_none());
}

#[test]
fn a_redefined_domain_and_a_moved_file_are_put_back() {
    let lv = Libvirt::open("test:///default").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (from, to) = (tmp.path().join("a"), tmp.path().join("a.aside"));
    std::fs::write(&from, "x").unwrap();
    lv.define("tx5", &xml("tx5")).unwrap();
    let before = lv.require("tx5").unwrap().xml;
    {
        let mut tx = Transaction::new(&lv);
        std::fs::rename(&from, &to).unwrap();
        tx.record(Undo::Renamed {
            from: from.clone(),
            to: to.clone(),
        });
        lv.define("tx5", &before.replace("65536", "131072"))
            .unwrap();
        assert_ne!(lv.require("tx5").unwrap().xml, before);
        tx.record(Undo::Redefine {
            vm: "tx5".into(),
            xml: before.clone(),
        });
    }
    assert_eq!(lv.require("tx5").unwrap().xml, before);
    assert_eq!(std::fs::read(&from).unwrap(), b"x");
    assert!(!to.exists());
    lv.undefine("tx5", true).unwrap();
}

#[test]
fn replaced_metadata_is_set_back() {
    use hypervisor::domain::Metadata;
    use hypervisor::domain::parse::parse_domain;
    use hypervisor::domain::render::metadata_xml;
    let lv = Libvirt::open("test:///default").unwrap();
    lv.define("tx6", &xml("tx6")).unwrap();
    let old = Metadata {
        os: "ubuntu".into(),
        ..Default::default()
    };
    lv.set_vmctl_metadata("tx6", &metadata_xml(&old).unwrap(), false)
        .unwrap();
    {
        let mut tx = Transaction::new(&lv);
        let new = Metadata {
            files: vec!["/vms/tx6/vda.s1.qcow2".into()],
            ..old.clone()
        };
        lv.set_vmctl_metadata("tx6", &metadata_xml(&new).unwrap(), false)
            .unwrap();
        tx.record(Undo::Metadata {
            vm: "tx6".into(),
            xml: metadata_xml(&old).unwrap(),
            live: false,
        });
    }
    let back = parse_domain(&lv.require("tx6").unwrap().xml).unwrap();
    assert_eq!(back.metadata, Some(old));
    lv.undefine("tx6", true).unwrap();
}
