//! create against libvirt's real test driver, with real qemu-img/genisoimage or a recording
//! runner that fails at a chosen step; every failure must leave nothing behind.

use std::path::{Path, PathBuf};

use guest_media::cache::NoProgress;
use hostio::{Cmd, CommandRunner, HostRoot, Output, RecordingRunner, SystemRunner};
use hypervisor::domain::parse::parse_domain;
use hypervisor::domain::{Disk, DomainSpec};
use hypervisor::{DomainRecord, GuestAddress, Hypervisor, Libvirt, State};

use super::*;
use crate::commands::{Ctx, lifecycle};
use crate::config::Config;

struct Fixture {
    dir: tempfile::TempDir,
    host: HostRoot,
    config: Config,
    key: PathBuf,
    base: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let host = HostRoot::new(dir.path().join("host"));
    host.create_dir_all("/sys/class/net/br0/bridge").unwrap();
    host.create_dir_all("/sys/class/net/eth0").unwrap();
    let mut config = Config::defaults();
    // vmctl's directories are host paths: under the fixture root, host/vms and host/cache.
    config.set("storage_dir", "/vms");
    config.set("image_cache", "/cache");
    config.set("domain_type", "qemu");
    let key = dir.path().join("id_ed25519.pub");
    std::fs::write(
        &key,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6 t@h\n",
    )
    .unwrap();
    let base = dir.path().join("base.qcow2");
    SystemRunner
        .run(&Cmd::new([
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            &base.display().to_string(),
            "64M",
        ]))
        .unwrap();
    Fixture {
        dir,
        host,
        config,
        key,
        base,
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// Every request gets its own address: test:///default is shared by all tests in this process.
static NEXT_HOST: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(10);

fn request(f: &Fixture, name: &str) -> UbuntuRequest {
    let host = NEXT_HOST.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut r = UbuntuRequest::new(name);
    r.image = Some(f.base.display().to_string());
    r.ssh_key = Some(f.key.clone());
    r.bridge = Some("br0".into());
    r.network = NetworkRequest::Static {
        ip: format!("198.18.0.{host}/24"),
        gateway: Some("198.18.0.1".into()),
        dns: vec!["198.18.0.1".into()],
    };
    r.mac = Some("52:54:00:00:10:10".into());
    r
}

fn ctx<'a>(f: &'a Fixture, runner: &'a dyn CommandRunner, hv: &'a dyn Hypervisor) -> Ctx<'a> {
    Ctx::new(&f.config, &f.host, runner, hv).with_env(&no_env)
}

fn vm_dir_of(f: &Fixture, name: &str) -> PathBuf {
    f.host.path("/vms").join(name)
}

#[test]
fn create_then_delete_on_the_test_driver() {
    let f = fixture();
    let lv = Libvirt::open("test:///default").unwrap();
    let c = ctx(&f, &SystemRunner, &lv);
    let req = request(&f, "ct-ok");
    let created = create_ubuntu(&c, &req, &NoProgress).unwrap();
    assert!(created.defined && created.started);
    let dir = vm_dir_of(&f, "ct-ok");
    assert!(dir.join("disk.qcow2").is_file() && dir.join("seed.iso").is_file());
    let info = guest_media::disk::image_info(&SystemRunner, &dir.join("disk.qcow2")).unwrap();
    assert_eq!(info.backing_file.as_deref(), Some(f.base.to_str().unwrap()));
    let blkid = std::process::Command::new("blkid")
        .arg(dir.join("seed.iso"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&blkid.stdout).contains("LABEL=\"cidata\""));

    let rec = lv.require("ct-ok").unwrap();
    crate::test_support::assert_valid_domain_xml(&rec.xml);
    let facts = parse_domain(&rec.xml).unwrap();
    let md = facts.metadata.unwrap();
    assert_eq!(md.ip, created.ip);
    assert_eq!(md.os, "ubuntu");
    assert_eq!(md.disks, vec![dir.join("disk.qcow2"), dir.join("seed.iso")]);
    assert_eq!(facts.domain_type, "qemu");

    // Another VM with the same static address is refused.
    let mut same = request(&f, "ct-sameip");
    same.network = req.network.clone();
    let err = create_ubuntu(&c, &same, &NoProgress).unwrap_err();
    assert!(matches!(err, Error::IpInUse { .. }), "{err}");
    assert!(!vm_dir_of(&f, "ct-sameip").exists());

    // A second create with the same name is refused before anything is made.
    let err = create_ubuntu(&c, &req, &NoProgress).unwrap_err();
    assert!(matches!(err, Error::NameTaken { .. }));

    // Running: delete refuses; after stop it removes exactly what vmctl made.
    assert!(matches!(
        lifecycle::delete(&c, "ct-ok", true, false),
        Err(Error::DomainRunning { .. })
    ));
    lifecycle::stop(&c, "ct-ok", std::time::Duration::from_secs(5), false).unwrap();
    assert!(matches!(
        lifecycle::delete(&c, "ct-ok", false, false),
        Err(Error::NotConfirmed { .. })
    ));
    let d = lifecycle::delete(&c, "ct-ok", true, false).unwrap();
    assert!(d.removed.contains(&dir.join("disk.qcow2")));
    assert!(!dir.exists(), "VM directory removed");
    assert!(f.base.is_file(), "base image untouched");
    assert!(lv.get("ct-ok").unwrap().is_none());
}

#[test]
fn seed_only_writes_just_the_seed() {
    let f = fixture();
    let lv = Libvirt::open("test:///default").unwrap();
    let mut r = request(&f, "ct-seed");
    r.seed_only = true;
    let created = create_ubuntu(&ctx(&f, &SystemRunner, &lv), &r, &NoProgress).unwrap();
    assert!(!created.defined);
    let names: Vec<_> = std::fs::read_dir(vm_dir_of(&f, "ct-seed"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("seed.iso")]);
    assert!(lv.get("ct-seed").unwrap().is_none());
}

fn assert_nothing_left(f: &Fixture, lv: &Libvirt, name: &str) {
    assert!(lv.get(name).unwrap().is_none(), "domain {name} left behind");
    assert!(
        !vm_dir_of(f, name).exists(),
        "storage for {name} left behind"
    );
}

fn expect_usage(f: &Fixture, r: UbuntuRequest, what: &str) {
    let lv = Libvirt::open("test:///default").unwrap();
    let runner = RecordingRunner::new().answer(
        ["ip"],
        Output::ok(r#"[{"addr_info":[{"family":"inet","local":"198.18.0.1","prefixlen":24}]}]"#),
    );
    let name = r.name.clone();
    let err = create_ubuntu(&ctx(f, &runner, &lv), &r, &NoProgress).unwrap_err();
    assert_eq!(err.exit_kind(), crate::ExitKind::Usage, "{what}: {err}");
    assert!(!err.help().is_empty(), "{what}: no help line");
    if crate::names::validate_vm_name(&name).is_ok() && name != "test" {
        assert_nothing_left(f, &lv, &name);
    }
    // Nothing was run that changes anything (only the read-only `ip addr`).
    assert!(
        runner.calls().iter().all(|c| c[0] == "ip"),
        "{what}: {:?}",
        runner.calls()
    );
}

#[test]
fn bad_input_is_refused_before_anything_is_made() {
    let f = fixture();
    // An empty name is no error: it asks for the next free `ubuntu-N` (vmctl-cli's
    // storage::concurrent_unnamed_creates_get_different_names).
    for name in ["a/b", "..", "my vm", "-x"] {
        expect_usage(&f, request(&f, name), &format!("name {name:?}"));
    }
    expect_usage(&f, request(&f, "test"), "existing name");

    let mut r = request(&f, "ct-bad");
    r.network = NetworkRequest::Static {
        ip: "198.19.0.10/24".into(),
        gateway: None,
        dns: vec![],
    };
    expect_usage(&f, r, "IP outside the bridge subnet");
    for ip in ["198.18.0.10", "198.18.0.10/40", "300.1.1.1/24"] {
        let mut r = request(&f, "ct-bad");
        r.network = NetworkRequest::Static {
            ip: ip.into(),
            gateway: None,
            dns: vec![],
        };
        expect_usage(&f, r, ip);
    }
    let mut r = request(&f, "ct-bad");
    r.bridge = Some("nobr0".into());
    expect_usage(&f, r, "missing bridge");
    let mut r = request(&f, "ct-bad");
    r.bridge = Some("eth0".into());
    expect_usage(&f, r, "not a bridge");
    let mut r = request(&f, "ct-bad");
    r.ssh_key = Some(f.dir.path().join("missing.pub"));
    expect_usage(&f, r, "missing SSH key");
    let mut r = request(&f, "ct-bad");
    r.ssh_key = None;
    expect_usage(&f, r, "no SSH key anywhere");
    let mut r = request(&f, "ct-bad");
    r.image = Some("/nonexistent/base.qcow2".into());
    expect_usage(&f, r, "missing local image");
    let mut r = request(&f, "ct-bad");
    r.memory = "lots".into();
    expect_usage(&f, r, "bad memory");
    let mut r = request(&f, "ct-bad");
    r.cpu_mode = Some("fastest".into());
    expect_usage(&f, r, "bad cpu mode");
    let mut r = request(&f, "ct-bad");
    r.release = Some("99.04".into());
    r.image = None;
    expect_usage(&f, r, "unknown release");
    let mut r = request(&f, "ct-bad");
    r.password_hash = Some("hunter2".into());
    expect_usage(&f, r, "plaintext password");
    let mut r = request(&f, "ct-bad");
    r.kernel = Some("/nonexistent/vmlinuz".into());
    expect_usage(&f, r, "missing kernel");
}

#[test]
fn unreachable_image_url_leaves_nothing() {
    let f = fixture();
    let lv = Libvirt::open("test:///default").unwrap();
    let mut r = request(&f, "ct-url");
    r.image = Some("http://127.0.0.1:9/base.qcow2".into());
    let err = create_ubuntu(&ctx(&f, &SystemRunner, &lv), &r, &NoProgress).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Media(guest_media::Error::FetchUnreachable { .. })
        ),
        "{err}"
    );
    assert_eq!(err.exit_kind(), crate::ExitKind::Usage);
    assert_nothing_left(&f, &lv, "ct-url");
}

#[test]
fn failure_at_each_runner_step_rolls_back() {
    let f = fixture();
    let lv = Libvirt::open("test:///default").unwrap();
    // Calls: 0 `ip addr` (the bridge check), 1 `ip addr` (is the static address on the bridge, to
    // probe it), 2 `qemu-img info`, 3 `qemu-img create`, 4 `genisoimage`.
    for n in 2..=4 {
        let name = format!("ct-fail{n}");
        let runner = RecordingRunner::failing_at(n).answer(
            ["qemu-img", "info"],
            Output::ok(r#"{"virtual-size": 67108864, "format": "qcow2"}"#),
        );
        let err =
            create_ubuntu(&ctx(&f, &runner, &lv), &request(&f, &name), &NoProgress).unwrap_err();
        assert_eq!(err.exit_kind(), crate::ExitKind::Failure, "{err}");
        assert_eq!(runner.calls().len(), n + 1, "stopped at the failing step");
        assert_nothing_left(&f, &lv, &name);
    }
}

/// The real test driver, with one operation made to fail.
struct Failing<'a> {
    inner: &'a Libvirt,
    fail: &'static str,
}

fn injected(op: &'static str, name: &str) -> hypervisor::Error {
    hypervisor::Error::Unsupported {
        op,
        domain: format!("{name} (injected failure)"),
    }
}

impl Hypervisor for Failing<'_> {
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
        if self.fail == "define" {
            return Err(injected("define", name));
        }
        self.inner.define(name, xml)
    }
    fn undefine(&self, name: &str, nvram: bool) -> hypervisor::Result<()> {
        self.inner.undefine(name, nvram)
    }
    fn start(&self, name: &str) -> hypervisor::Result<()> {
        if self.fail == "start" {
            return Err(injected("start", name));
        }
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
}

#[test]
fn define_or_start_failure_rolls_back_files_and_domain() {
    let f = fixture();
    let lv = Libvirt::open("test:///default").unwrap();
    for fail in ["define", "start"] {
        let name = format!("ct-{fail}");
        let hv = Failing { inner: &lv, fail };
        create_ubuntu(
            &ctx(&f, &SystemRunner, &hv),
            &request(&f, &name),
            &NoProgress,
        )
        .unwrap_err();
        assert_nothing_left(&f, &lv, &name);
    }
}

#[test]
fn delete_never_removes_foreign_or_base_files() {
    let f = fixture();
    let lv = Libvirt::open("test:///default").unwrap();
    let c = ctx(&f, &SystemRunner, &lv);
    let mut r = request(&f, "ct-del");
    r.no_start = true;
    create_ubuntu(&c, &r, &NoProgress).unwrap();
    // Another domain uses the same seed file: it must survive the delete.
    let dir = vm_dir_of(&f, "ct-del");
    let other = format!(
        "<domain type='qemu'><name>ct-other</name><memory>65536</memory><os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'><source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
        dir.join("seed.iso").display()
    );
    lv.define("ct-other", &other).unwrap();
    let d = lifecycle::delete(&c, "ct-del", true, false).unwrap();
    assert!(d.kept.iter().any(|k| k.path == dir.join("seed.iso")));
    assert!(dir.join("seed.iso").is_file());
    assert!(!dir.join("disk.qcow2").exists());
    assert!(f.base.is_file());
    lv.undefine("ct-other", false).unwrap();
}

/// Defines `name` with vmctl metadata listing `disks` (attached) and `files`, owning `dir`.
fn define_with_metadata(
    lv: &Libvirt,
    name: &str,
    disks: &[PathBuf],
    files: &[PathBuf],
    dir: &Path,
) {
    let mut spec = DomainSpec::new(name, DomainType::Qemu, CpuMode::HostModel, Firmware::Bios);
    let targets = ["vda", "vdb", "vdc", "vdd"];
    spec.disks = disks
        .iter()
        .zip(targets)
        .map(|(d, t)| Disk::virtio(d, "qcow2", t))
        .collect();
    spec.metadata = Some(Metadata {
        os: "ubuntu".into(),
        disks: disks.to_vec(),
        files: files.to_vec(),
        dir: Some(dir.to_path_buf()),
        ..Default::default()
    });
    lv.define(name, &to_xml(&spec).unwrap()).unwrap();
}

fn touch(p: &Path) -> PathBuf {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, "keep me\n").unwrap();
    p.to_path_buf()
}

/// Metadata naming files outside the VM's directory (directly, through `..`, or through a
/// symlink inside the directory), or a directory that is not `storage_dir/NAME`: delete removes
/// only what really lies inside the VM's own directory and reports the rest as kept.
#[test]
fn delete_removes_only_what_lies_inside_the_vm_directory() {
    let f = fixture();
    let lv = Libvirt::open("test:///default").unwrap();
    let c = ctx(&f, &SystemRunner, &lv);
    let outside = f.dir.path().join("outside");
    let passwd = touch(&outside.join("etc/passwd"));
    let shadow = touch(&outside.join("etc/shadow"));
    let foreign_disk = touch(&outside.join("data.qcow2"));
    let neighbour = touch(&vm_dir_of(&f, "ct-esc-other").join("disk.qcow2"));

    let dir = vm_dir_of(&f, "ct-esc");
    let own_disk = touch(&dir.join("disk.qcow2"));
    let own_log = touch(&dir.join("console.log"));
    std::os::unix::fs::symlink(outside.join("etc"), dir.join("link")).unwrap();
    let through_link = dir.join("link/shadow");
    let dotdot = dir.join("../ct-esc-other/disk.qcow2");
    define_with_metadata(
        &lv,
        "ct-esc",
        &[own_disk.clone(), foreign_disk.clone(), dotdot.clone()],
        &[own_log.clone(), passwd.clone(), through_link.clone()],
        &dir,
    );
    let d = lifecycle::delete(&c, "ct-esc", true, false).unwrap();
    for p in [&passwd, &shadow, &foreign_disk, &neighbour] {
        assert!(p.is_file(), "{} was removed", p.display());
    }
    assert!(!own_disk.exists() && !own_log.exists());
    let kept: Vec<PathBuf> = d.kept.iter().map(|k| k.path.clone()).collect();
    for p in [&passwd, &foreign_disk, &dotdot, &through_link] {
        assert!(
            kept.contains(p),
            "{} not reported as kept: {kept:?}",
            p.display()
        );
    }
    assert!(d.kept.iter().all(|k| !k.reason.is_empty()));
    assert!(lv.get("ct-esc").unwrap().is_none());

    // A metadata directory that is not the VM's own: nothing in it is removed, nor itself.
    let fake = outside.join("fake");
    let fake_log = touch(&fake.join("console.log"));
    define_with_metadata(&lv, "ct-esc2", &[], std::slice::from_ref(&fake_log), &fake);
    let d = lifecycle::delete(&c, "ct-esc2", true, false).unwrap();
    assert!(fake_log.is_file(), "removed through a foreign metadata dir");
    assert!(d.removed.is_empty(), "{:?}", d.removed);
    let kept: Vec<PathBuf> = d.kept.iter().map(|k| k.path.clone()).collect();
    assert!(kept.contains(&fake_log) && kept.contains(&fake), "{kept:?}");
}

#[test]
fn create_from_release_fetches_and_verifies_through_the_mirror_setting() {
    use sha2::Digest;
    let mut f = fixture();
    let img = std::fs::read(&f.base).unwrap();
    let sha = hex::encode(sha2::Sha256::digest(&img));
    let srv = guest_media::cache::testserver::serve(vec![
        ("/noble/current/noble-server-cloudimg-amd64.img".into(), img),
        (
            "/noble/current/SHA256SUMS".into(),
            format!("{sha} *noble-server-cloudimg-amd64.img\n").into_bytes(),
        ),
    ]);
    f.config.set("ubuntu_cloud_url", srv.base.clone());
    f.config.set("gpg_keyring", "/nonexistent/keyring.gpg");
    let lv = Libvirt::open("test:///default").unwrap();
    let mut r = request(&f, "ct-release");
    r.image = None;
    r.release = Some("noble".into());
    r.no_start = true;
    let created = create_ubuntu(&ctx(&f, &SystemRunner, &lv), &r, &NoProgress).unwrap();
    assert_eq!(created.base_sha256.as_deref(), Some(sha.as_str()));
    assert!(
        created.verification.to_string().contains("checksum only"),
        "{}",
        created.verification
    );
    assert_eq!(
        created.base_image,
        Some(f.host.path("/cache/sha256").join(&sha))
    );
    let md = parse_domain(&lv.require("ct-release").unwrap().xml)
        .unwrap()
        .metadata
        .unwrap();
    assert_eq!(md.release.as_deref(), Some("24.04"));
    assert_eq!(md.base_sha256.as_deref(), Some(sha.as_str()));
    lifecycle::delete(&ctx(&f, &SystemRunner, &lv), "ct-release", true, false).unwrap();
    assert!(created.base_image.unwrap().is_file(), "cached base kept");

    // A mirror whose SHA256SUMS disagrees: refused, nothing created, nothing cached.
    let srv2 = guest_media::cache::testserver::serve(vec![
        (
            "/noble/current/noble-server-cloudimg-amd64.img".into(),
            b"corrupt".to_vec(),
        ),
        (
            "/noble/current/SHA256SUMS".into(),
            format!("{} *noble-server-cloudimg-amd64.img\n", "1".repeat(64)).into_bytes(),
        ),
    ]);
    f.config.set("ubuntu_cloud_url", srv2.base.clone());
    let mut r = request(&f, "ct-release2");
    r.image = None;
    r.release = Some("24.04".into());
    let err = create_ubuntu(&ctx(&f, &SystemRunner, &lv), &r, &NoProgress).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Media(guest_media::Error::ChecksumMismatch { .. })
        ),
        "{err}"
    );
    assert_nothing_left(&f, &lv, "ct-release2");
    assert!(!f.host.path("/cache/sha256").join("1".repeat(64)).exists());
}

/// `--share DIR:TAG[,ro]`: the domain gets shared memory and a virtiofs filesystem, the seed
/// mounts it at /mnt/TAG, vmctl's metadata records the read-only tag; a bad or duplicate share
/// is refused before anything is made.
#[test]
fn create_with_shares_defines_virtiofs_and_mounts_them_in_the_seed() {
    let f = fixture();
    let lv = Libvirt::open("test:///default").unwrap();
    let c = ctx(&f, &SystemRunner, &lv);
    let shared = f.dir.path().join("models");
    std::fs::create_dir(&shared).unwrap();
    let mut req = request(&f, "ct-share");
    req.shares = vec![
        format!("{}:models", shared.display()),
        format!("{}:ro-data,ro", shared.display()),
    ];
    let mut dup = request(&f, "ct-share-dup");
    dup.shares = vec![
        format!("{}:models", shared.display()),
        format!("{}:models,ro", shared.display()),
    ];
    expect_usage(&f, dup, "a tag given twice");
    let mut missing = request(&f, "ct-share-missing");
    missing.shares = vec![format!("{}/nope:models", shared.display())];
    expect_usage(&f, missing, "a missing share directory");

    create_ubuntu(&c, &req, &NoProgress).unwrap();
    let xml = lv.inactive_xml("ct-share").unwrap();
    crate::test_support::assert_valid_domain_xml(&xml);
    let facts = parse_domain(&xml).unwrap();
    assert!(facts.shared_memory);
    let tags: Vec<_> = facts.filesystems.iter().map(|f| f.tag.as_str()).collect();
    assert_eq!(tags, ["models", "ro-data"]);
    assert_eq!(
        facts.filesystems[0].source_dir.as_deref(),
        Some(std::fs::canonicalize(&shared).unwrap().as_path())
    );
    assert_eq!(facts.metadata.unwrap().readonly_shares, ["ro-data"]);
    let iso = vm_dir_of(&f, "ct-share").join("seed.iso");
    let out = std::process::Command::new("isoinfo")
        .args(["-R", "-x", "/user-data", "-i"])
        .arg(&iso)
        .output()
        .unwrap();
    let ud = String::from_utf8_lossy(&out.stdout);
    assert!(
        ud.contains("models /mnt/models virtiofs defaults,nofail 0 0")
            && ud.contains("ro-data /mnt/ro-data virtiofs ro,nofail 0 0"),
        "{ud}"
    );
    lifecycle::stop(&c, "ct-share", std::time::Duration::from_secs(5), true).unwrap();
    lifecycle::delete(&c, "ct-share", true, false).unwrap();
    assert!(shared.is_dir(), "delete never touches a shared directory");
}
