//! `image list|remove|prune` on a tempdir cache with blobs made here, against libvirt's test
//! driver with domains whose metadata or disks reference them.

use std::path::{Path, PathBuf};

use guest_media::cache::NoProgress;
use hostio::{Cmd, CommandRunner, HostRoot, SystemRunner};
use hypervisor::domain::render::to_xml;
use hypervisor::domain::{CpuMode, Disk, DomainSpec, DomainType, Firmware, Metadata};
use hypervisor::{Hypervisor, Libvirt};
use sha2::Digest;

use super::*;
use crate::config::Config;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    host: HostRoot,
    config: Config,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("host");
    let host = HostRoot::new(&root);
    let mut config = Config::defaults();
    config.set("image_cache", "/cache");
    config.set("storage_dir", "/vms");
    Fixture {
        root,
        _dir: dir,
        host,
        config,
    }
}

impl Fixture {
    /// A libvirt test driver of this test's own: `test:///default` is one instance shared by
    /// every test in the process, so another test's domain (whose disk may be gone) would be
    /// read as a possible user of the cache.
    fn libvirt(&self) -> Libvirt {
        let node = self.root.with_file_name("node.xml");
        std::fs::write(&node, "<node/>").unwrap();
        Libvirt::open(&format!("test://{}", node.display())).unwrap()
    }

    fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }
    /// Puts `body` into the cache as a blob, as a fetch would name it.
    fn blob(&self, body: &[u8]) -> (String, PathBuf) {
        let h = hex::encode(sha2::Sha256::digest(body));
        let dir = self.cache().join("sha256");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(&h);
        std::fs::write(&p, body).unwrap();
        (h, p)
    }
    /// A small qcow2 made by qemu-img, moved into the cache as a blob.
    fn qcow2_blob(&self) -> (String, PathBuf) {
        let tmp = self.root.join("made.qcow2");
        std::fs::create_dir_all(&self.root).unwrap();
        SystemRunner
            .run(&Cmd::new([
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                &tmp.display().to_string(),
                "1M",
            ]))
            .unwrap();
        let body = std::fs::read(&tmp).unwrap();
        std::fs::remove_file(&tmp).unwrap();
        self.blob(&body)
    }
}

fn ctx<'a>(f: &'a Fixture, hv: &'a Libvirt) -> Ctx<'a> {
    Ctx::new(&f.config, &f.host, &SystemRunner, hv)
}

/// A domain on the test driver: vmctl metadata with `base_sha256`, and `disks`.
fn define(hv: &Libvirt, name: &str, base_sha256: Option<&str>, disks: &[&Path]) {
    let mut spec = DomainSpec::new(name, DomainType::Qemu, CpuMode::HostModel, Firmware::Bios);
    spec.disks = disks
        .iter()
        .zip(["vda", "vdb"])
        .map(|(d, t)| Disk::virtio(*d, "qcow2", t))
        .collect();
    spec.metadata = Some(Metadata {
        os: "ubuntu".into(),
        base_sha256: base_sha256.map(str::to_string),
        ..Default::default()
    });
    hv.define(name, &to_xml(&spec).unwrap()).unwrap();
}

fn usage_of<'a>(l: &'a ImageList, sha: &str) -> &'a [Use] {
    &l.files
        .iter()
        .find(|f| f.entry.sha256 == sha)
        .unwrap()
        .used_by
}

#[test]
fn list_names_the_vms_using_each_blob_by_metadata_and_backing_chain() {
    let f = fixture();
    let hv = f.libvirt();
    let (a, _) = f.blob(b"image a");
    let (b, b_path) = f.qcow2_blob();
    let (c, _) = f.blob(b"unused");
    define(&hv, "img-meta", Some(&a), &[]);
    // A disk made outside vmctl, backed by blob b: no metadata names it.
    let overlay = f.root.join("overlay.qcow2");
    SystemRunner
        .run(&Cmd::new([
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            &b_path.display().to_string(),
            &overlay.display().to_string(),
        ]))
        .unwrap();
    define(&hv, "img-chain", None, &[&overlay]);
    let l = list(&ctx(&f, &hv)).unwrap();
    hv.undefine("img-meta", false).unwrap();
    hv.undefine("img-chain", false).unwrap();
    assert_eq!(l.files.len(), 3);
    let ua = usage_of(&l, &a);
    assert_eq!(ua.len(), 1);
    assert_eq!(
        (ua[0].vm.as_str(), &ua[0].via),
        ("img-meta", &Via::Metadata)
    );
    assert_eq!(ua[0].state, "shut off");
    let ub = usage_of(&l, &b);
    assert_eq!(ub.len(), 1);
    assert_eq!(ub[0].vm, "img-chain");
    assert_eq!(ub[0].via, Via::BackingChain { disk: overlay });
    assert!(usage_of(&l, &c).is_empty());
    assert!(l.unreadable.is_empty());
    let json = serde_json::to_value(&l).unwrap();
    let fa = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["sha256"] == a.as_str())
        .unwrap();
    assert_eq!(fa["kind"], "blob");
    assert_eq!(fa["used_by"][0]["via"], "metadata");
    assert_eq!(fa["used_by"][0]["vm"], "img-meta");
}

#[test]
fn a_blob_in_use_is_refused_and_an_unused_one_removed() {
    let f = fixture();
    let hv = f.libvirt();
    let (a, a_path) = f.blob(b"in use");
    let (b, b_path) = f.blob(b"free");
    define(&hv, "img-user", Some(&a), &[]);
    let c = ctx(&f, &hv);
    let err = remove(&c, &[a[..12].to_string()], true, &NoProgress).unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    assert!(err.to_string().contains("img-user"), "{err}");
    assert!(err.help()[0].contains("vmctl delete img-user"));
    assert!(a_path.exists());
    // One in use refuses all: b stays too.
    assert!(remove(&c, &[b.clone(), a.clone()], true, &NoProgress).is_err());
    assert!(b_path.exists());
    // Without --yes nothing happens.
    let err = remove(&c, std::slice::from_ref(&b), false, &NoProgress).unwrap_err();
    assert!(matches!(
        err.command::<ImageError>(),
        Some(ImageError::NotConfirmed { count: 1 })
    ));
    let r = remove(&c, &[b[..8].to_uppercase()], true, &NoProgress).unwrap();
    assert_eq!(r.removed.len(), 1);
    assert_eq!(r.bytes_freed, 4);
    assert!(!b_path.exists());
    hv.undefine("img-user", false).unwrap();
    // Once its VM is gone, it can go.
    remove(&c, &[a], true, &NoProgress).unwrap();
    assert!(!a_path.exists());
}

#[test]
fn prefixes_must_name_exactly_one_file() {
    let f = fixture();
    let hv = f.libvirt();
    let c = ctx(&f, &hv);
    // Find two blobs whose sha256 share a first digit.
    let mut by_first: std::collections::BTreeMap<char, Vec<String>> = Default::default();
    let mut i = 0;
    let (x, y) = loop {
        let (h, _) = f.blob(format!("blob {i}").as_bytes());
        let first = h.chars().next().unwrap();
        by_first.entry(first).or_default().push(h);
        if by_first[&first].len() == 2 {
            break (by_first[&first][0].clone(), by_first[&first][1].clone());
        }
        i += 1;
    };
    let err = remove(&c, &[x[..1].to_string()], true, &NoProgress).unwrap_err();
    assert!(matches!(
        err.command::<ImageError>(),
        Some(ImageError::Ambiguous { .. })
    ));
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    for bad in ["", "xyz", &"a".repeat(65)] {
        let err = remove(&c, &[bad.to_string()], true, &NoProgress).unwrap_err();
        assert!(matches!(
            err.command::<ImageError>(),
            Some(ImageError::BadPrefix { .. })
        ));
    }
    let none = if x.starts_with("0") { "f" } else { "0" };
    let missing = format!("{none}{}", &"0".repeat(63));
    let err = remove(&c, &[missing], true, &NoProgress).unwrap_err();
    assert!(matches!(
        err.command::<ImageError>(),
        Some(ImageError::NoMatch { .. })
    ));
    assert!(f.cache().join("sha256").join(&x).exists());
    assert!(f.cache().join("sha256").join(&y).exists());
}

#[test]
fn prune_removes_what_no_vm_uses_and_the_leftovers() {
    let f = fixture();
    let hv = f.libvirt();
    let (a, a_path) = f.blob(b"kept: in use");
    let (_, b_path) = f.blob(b"unused");
    let q = f.cache().join("quarantine");
    std::fs::create_dir_all(&q).unwrap();
    std::fs::write(q.join("x.1"), b"qq").unwrap();
    let partial = f.cache().join("partial");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join(format!("{}.partial", "ab".repeat(32))), b"ppp").unwrap();
    define(&hv, "img-prune", Some(&a), &[]);
    let c = ctx(&f, &hv);
    let dry = prune(&c, true, false, &NoProgress).unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.removed.len(), 3);
    assert_eq!(dry.bytes_freed, 6 + 2 + 3);
    assert_eq!(dry.in_use.len(), 1);
    assert!(
        b_path.exists() && q.join("x.1").exists(),
        "dry run changes nothing"
    );
    assert!(prune(&c, false, false, &NoProgress).is_err(), "asks first");
    let done = prune(&c, false, true, &NoProgress).unwrap();
    hv.undefine("img-prune", false).unwrap();
    assert_eq!(done.bytes_freed, 11);
    assert!(!b_path.exists() && !q.join("x.1").exists());
    assert!(a_path.exists(), "a blob in use is never removed");
    assert_eq!(done.in_use[0].used_by[0].vm, "img-prune");
}
