//! The desktop path against libvirt's test driver and a local mirror: the two phases' XML
//! (snapshots + virt-xml-validate), the install signal, the switch, and every refusal before
//! anything is made.

use std::path::{Path, PathBuf};
use std::time::Duration;

use guest_media::autoinstall::{DONE_MARKER, FAILED_MARKER};
use guest_media::cache::NoProgress;
use guest_media::cache::testserver::{Server, serve};
use hostio::{Cmd, CommandRunner, HostRoot, RecordingRunner, SystemRunner};
use hypervisor::{Hypervisor, Libvirt};
use sha2::Digest;

use super::*;
use crate::ExitKind;
use crate::commands::create::ubuntu::ImageSource;
use crate::commands::desktop::{WaitEvent, wait_install};
use crate::config::Config;
use crate::desktop::*;
use crate::net::NetworkRequest;
use crate::test_support::assert_valid_domain_xml;

struct Fixture {
    dir: tempfile::TempDir,
    host: HostRoot,
    config: Config,
    key: PathBuf,
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let host = HostRoot::new(dir.path().join("host"));
    host.create_dir_all("/sys/class/net/br0/bridge").unwrap();
    let mut config = Config::defaults();
    // vmctl's directories are host paths: under the fixture root, host/vms and host/cache.
    config.set("storage_dir", "/vms");
    config.set("image_cache", "/cache");
    config.set("domain_type", "qemu");
    config.set("firmware", "bios");
    config.set("ubuntu_iso_keyring", "/nonexistent/keyring.gpg");
    let key = dir.path().join("id_ed25519.pub");
    std::fs::write(
        &key,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6 t@h\n",
    )
    .unwrap();
    Fixture {
        dir,
        host,
        config,
        key,
    }
}

fn ctx<'a>(f: &'a Fixture, runner: &'a dyn CommandRunner, hv: &'a dyn Hypervisor) -> Ctx<'a> {
    Ctx::new(&f.config, &f.host, runner, hv).with_env(&no_env)
}

static NEXT_HOST: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(40);

fn request(f: &Fixture, name: &str) -> DesktopRequest {
    let host = NEXT_HOST.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut r = DesktopRequest::new(name);
    r.base.release = Some("24.04".into());
    r.base.ssh_key = Some(f.key.clone());
    r.base.bridge = Some("br0".into());
    r.base.user = Some("alice".into());
    r.base.network = NetworkRequest::Static {
        ip: format!("198.18.0.{host}/24"),
        gateway: Some("198.18.0.1".into()),
        dns: vec!["198.18.0.1".into()],
    };
    r.base.mac = Some(format!("52:54:00:00:20:{host:02x}"));
    r
}

/// A tiny "release ISO": casper/vmlinuz and casper/initrd at the real paths (Joliet + RR).
fn fake_iso(dir: &Path) -> Vec<u8> {
    let stage = dir.join("iso-stage");
    std::fs::create_dir_all(stage.join("casper")).unwrap();
    std::fs::write(stage.join("casper/vmlinuz"), b"fake kernel").unwrap();
    std::fs::write(stage.join("casper/initrd"), b"fake initrd").unwrap();
    let out = dir.join("fake.iso");
    SystemRunner
        .run(&Cmd::new([
            "genisoimage".to_string(),
            "-quiet".into(),
            "-o".into(),
            out.display().to_string(),
            "-V".into(),
            "Ubuntu 24.04 amd64".into(),
            "-J".into(),
            "-R".into(),
            stage.display().to_string(),
        ]))
        .unwrap();
    std::fs::read(out).unwrap()
}

/// A releases.ubuntu.com layout: `/24.04/ubuntu-24.04.1-desktop-amd64.iso` + `SHA256SUMS`.
fn mirror(iso: &[u8], listed_sha: Option<&str>) -> Server {
    let sha = listed_sha
        .map(str::to_string)
        .unwrap_or_else(|| hex::encode(sha2::Sha256::digest(iso)));
    serve(vec![
        (
            "/24.04/ubuntu-24.04.1-desktop-amd64.iso".into(),
            iso.to_vec(),
        ),
        (
            "/24.04/SHA256SUMS".into(),
            format!("{sha} *ubuntu-24.04.1-desktop-amd64.iso\n").into_bytes(),
        ),
    ])
}

fn fixed_plan(f: &Fixture, gpus: bool) -> UbuntuPlan {
    UbuntuPlan {
        name: "desk1".into(),
        image: ImageSource::Release {
            version: "24.04".into(),
            codename: "noble".into(),
        },
        vcpus: 4,
        memory_mib: 4096,
        disk_bytes: Some(40 << 30),
        bridge: "br0".into(),
        mac: "52:54:00:12:34:56".into(),
        static_ip: None,
        ssh_key: PathBuf::from("/home/alice/.ssh/id_ed25519.pub"),
        ssh_public_key: std::fs::read_to_string(&f.key).unwrap().trim().into(),
        user: "alice".into(),
        domain_type: hypervisor::domain::DomainType::Kvm,
        cpu: hypervisor::domain::CpuMode::HostPassthrough,
        firmware: hypervisor::domain::Firmware::Efi { secure_boot: false },
        direct_boot: None,
        vm_dir: PathBuf::from("/var/lib/vmctl/vms/desk1"),
        gpus: if gpus {
            vec![vec![
                "0000:01:00.0".parse().unwrap(),
                "0000:01:00.1".parse().unwrap(),
            ]]
        } else {
            Vec::new()
        },
        placement: None,
        data_disks: Vec::new(),
        shares: Vec::new(),
        guest_stack: None,
    }
}

fn fixed_specs(f: &Fixture, gpus: bool) -> (DomainSpec, DomainSpec) {
    let plan = fixed_plan(f, gpus);
    let layout = Layout::new(&plan.vm_dir);
    phase_specs(&PhaseInputs {
        plan: &plan,
        layout: &layout,
        uuid: "6f1c3a52-8d0e-4b7a-9c1e-2a3b4c5d6e7f".into(),
        created: "2026-11-22T01:00:00Z".into(),
        release: "24.04".into(),
        iso: PathBuf::from("/var/lib/vmctl/images/sha256/aaaa"),
        iso_sha256: "aaaa".into(),
    })
}

#[test]
fn install_phase_xml_boots_the_iso_kernel_with_iso_and_seed_attached() {
    let f = fixture();
    let (install, _) = fixed_specs(&f, true);
    let xml = to_xml(&install).unwrap();
    assert!(xml.contains("<feature enabled=\"no\" name=\"secure-boot\"/>"));
    assert_valid_domain_xml(&xml);
    assert!(xml.contains("<kernel>/var/lib/vmctl/vms/desk1/installer-vmlinuz</kernel>"));
    assert!(xml.contains("<initrd>/var/lib/vmctl/vms/desk1/installer-initrd</initrd>"));
    assert!(xml.contains(&format!("<cmdline>{INSTALL_CMDLINE}</cmdline>")));
    assert!(xml.contains("device=\"cdrom\"") && xml.contains("bus=\"sata\""));
    assert!(xml.contains("seed.iso") && xml.contains("<hostdev"));
    insta::assert_snapshot!("desktop_install_phase", xml);
}

#[test]
fn final_phase_xml_boots_from_disk_with_nothing_else_attached() {
    let f = fixture();
    let (install, fin) = fixed_specs(&f, true);
    let xml = to_xml(&fin).unwrap();
    assert_valid_domain_xml(&xml);
    for gone in [
        "<kernel>",
        "<initrd>",
        "<cmdline>",
        "cdrom",
        "seed.iso",
        "installer-",
    ] {
        assert!(!xml.contains(gone), "{gone} in final XML:\n{xml}");
    }
    assert!(xml.contains("<boot dev=\"hd\"/>"));
    assert_eq!(fin.disks.len(), 1);
    // Same identity and the GPU stays: only the boot and the installer media change.
    assert_eq!(fin.uuid, install.uuid);
    assert_eq!(fin.hostdevs, install.hostdevs);
    insta::assert_snapshot!("desktop_final_phase", xml);
}

#[test]
fn phases_from_the_console_and_the_finish_signal() {
    assert_eq!(phase_of(""), None);
    let mut log = String::from("[    0.000000] Linux version 6.8.0-31-generic\n");
    assert_eq!(phase_of(&log), Some(InstallPhase::Booting));
    log += "Cloud-init v. 24.1 running 'init'\nstart: subiquity/Early/run\n";
    assert_eq!(phase_of(&log), Some(InstallPhase::Installer));
    log += "start: subiquity/Install/install/curtin_install/cmd-install/stage-partitioning\n";
    assert_eq!(phase_of(&log), Some(InstallPhase::Partitioning));
    log += "start: .../cmd-install/stage-extract/builtin/cmd-extract\n";
    assert_eq!(phase_of(&log), Some(InstallPhase::Copying));
    log += "start: .../cmd-install/stage-curthooks/builtin/cmd-curthooks\n";
    assert_eq!(phase_of(&log), Some(InstallPhase::Configuring));
    log += "start: subiquity/Late/run\n";
    assert_eq!(phase_of(&log), Some(InstallPhase::LateCommands));
    assert_eq!(
        install_status(&log, true),
        InstallStatus::Running {
            phase: Some(InstallPhase::LateCommands)
        }
    );
    assert_eq!(install_status(&log, false), InstallStatus::StoppedEarly);
    let failed = format!("{log}{FAILED_MARKER}\n");
    assert_eq!(install_status(&failed, false), InstallStatus::Failed);
    log += &format!("{DONE_MARKER}\nreboot: Power down\n");
    assert_eq!(phase_of(&log), Some(InstallPhase::Finished));
    assert_eq!(
        install_status(&log, true),
        InstallStatus::Running {
            phase: Some(InstallPhase::Finished)
        }
    );
    assert_eq!(install_status(&log, false), InstallStatus::Finished);
}

#[test]
fn create_then_simulated_install_finished_switches_to_disk_boot() {
    let f = fixture();
    let iso = fake_iso(f.dir.path());
    let srv = mirror(&iso, None);
    let mut f = f;
    f.config.set("ubuntu_releases_url", srv.base.clone());
    let lv = Libvirt::open("test:///default").unwrap();
    let c = ctx(&f, &SystemRunner, &lv);
    let mut req = request(&f, "dt-switch");
    req.base.gpus = Vec::new();
    let created = create_desktop(&c, &req, "2026-11", &NoProgress).unwrap();
    assert!(created.started && created.iso.checksum_verified && !created.iso.signature_verified);
    assert!(
        created.iso.verification.contains("checksum only"),
        "{}",
        created.iso.verification
    );
    assert_eq!(std::fs::read(&created.kernel).unwrap(), b"fake kernel");
    assert_eq!(std::fs::read(&created.initrd).unwrap(), b"fake initrd");
    let info = guest_media::disk::image_info(&SystemRunner, &created.disk).unwrap();
    assert_eq!(info.virtual_size, 40 << 30);
    let xml = lv.require("dt-switch").unwrap().xml;
    assert_valid_domain_xml(&xml);
    assert!(xml.contains("installer-vmlinuz") && xml.contains("cdrom"));

    // Not finished yet: nothing to switch at `vmctl start`.
    assert!(switch_if_installed(&c, "dt-switch").unwrap().is_none());

    // The simulated "install finished" signal: destroy + switch.
    let s = switch_to_final(&c, "dt-switch", true).unwrap();
    assert!(s.destroyed && s.started);
    assert_eq!(s.removed.len(), 4);
    assert!(!created.seed.exists() && !created.kernel.exists());
    let rec = lv.require("dt-switch").unwrap();
    assert!(rec.state.is_active());
    assert_valid_domain_xml(&rec.xml);
    for gone in ["<kernel>", "cdrom", "seed.iso"] {
        assert!(!rec.xml.contains(gone), "{gone}:\n{}", rec.xml);
    }
    // A second switch is refused: it is no longer installing.
    let err = switch_to_final(&c, "dt-switch", true).unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage);

    let d = crate::commands::lifecycle::delete(&c, "dt-switch", true, false);
    if d.is_err() {
        let _ = lv.destroy("dt-switch");
        crate::commands::lifecycle::delete(&c, "dt-switch", true, false).unwrap();
    }
    assert!(!f.host.path("/vms/dt-switch").exists());
}

#[test]
fn start_after_a_finished_install_switches_first() {
    let f = fixture();
    let iso = fake_iso(f.dir.path());
    let srv = mirror(&iso, None);
    let mut f = f;
    f.config.set("ubuntu_releases_url", srv.base.clone());
    let lv = Libvirt::open("test:///default").unwrap();
    let c = ctx(&f, &SystemRunner, &lv);
    let mut req = request(&f, "dt-start");
    req.base.no_start = true;
    let created = create_desktop(&c, &req, "2026-11", &NoProgress).unwrap();
    std::fs::write(&created.console_log, format!("...\n{DONE_MARKER}\n")).unwrap();
    let o = crate::commands::lifecycle::start(&c, "dt-start").unwrap();
    assert!(o.action.contains("switched"), "{}", o.action);
    assert!(!lv.require("dt-start").unwrap().xml.contains("<kernel>"));
    let _ = lv.destroy("dt-start");
    crate::commands::lifecycle::delete(&c, "dt-start", true, false).unwrap();
}

#[test]
fn iso_checksum_mismatch_is_refused_and_leaves_nothing() {
    let f = fixture();
    let iso = fake_iso(f.dir.path());
    let srv = mirror(&iso, Some(&"0".repeat(64)));
    let mut f = f;
    f.config.set("ubuntu_releases_url", srv.base.clone());
    let lv = Libvirt::open("test:///default").unwrap();
    let c = ctx(&f, &SystemRunner, &lv);
    let err = create_desktop(&c, &request(&f, "dt-badsum"), "2026-11", &NoProgress).unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage, "{err}");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    assert!(lv.get("dt-badsum").unwrap().is_none());
    assert!(!f.host.path("/vms/dt-badsum").exists());
}

#[test]
fn local_iso_not_matching_the_release_sums_is_refused() {
    let f = fixture();
    let iso = fake_iso(f.dir.path());
    let srv = mirror(b"the real one", None);
    let local = f.dir.path().join("ubuntu-24.04.1-desktop-amd64.iso");
    std::fs::write(&local, &iso).unwrap();
    let mut f = f;
    f.config.set("ubuntu_releases_url", srv.base.clone());
    let lv = Libvirt::open("test:///default").unwrap();
    let c = ctx(&f, &SystemRunner, &lv);
    let mut req = request(&f, "dt-localbad");
    req.iso = Some(local.display().to_string());
    let err = create_desktop(&c, &req, "2026-11", &NoProgress).unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage, "{err}");
}

#[test]
fn refusals_before_anything_is_made() {
    let f = fixture();
    let lv = Libvirt::open("test:///default").unwrap();
    let runner = RecordingRunner::new();
    let c = ctx(&f, &runner, &lv);
    let usage = |r: &DesktopRequest| {
        let e = plan(&c, r, "2026-11").unwrap_err();
        assert_eq!(e.exit_kind(), ExitKind::Usage, "{e}");
        e.to_string()
    };
    let mut r = request(&f, "dt-ref");
    r.base.release = Some("23.99".into());
    assert!(usage(&r).contains("unknown Ubuntu release"));
    let mut r = request(&f, "dt-ref");
    r.base.disk = Some("20G".into());
    assert!(usage(&r).contains("minimum of 25 GiB"));
    let mut r = request(&f, "dt-ref");
    r.base.ssh_key = Some(f.dir.path().join("missing.pub"));
    assert!(usage(&r).contains("SSH public key"));
    let mut r = request(&f, "dt-ref");
    r.base.user = Some(String::new());
    assert!(usage(&r).contains("--user"));
    let mut r = request(&f, "dt-ref");
    r.base.password_hash = Some("hunter2".into());
    assert!(usage(&r).contains("plaintext"));
    let mut r = request(&f, "dt-ref");
    r.keyboard = Some("US".into());
    usage(&r);
    let mut r = request(&f, "dt-ref");
    r.timezone = Some("Europe/Berlin; rm".into());
    usage(&r);
    let mut r = request(&f, "dt-ref");
    r.base.image = Some("x.qcow2".into());
    usage(&r);
    // Only the bridge's addresses were read (`ip`): nothing was made.
    assert!(
        runner.calls().iter().all(|c| c[0] == "ip"),
        "{:?}",
        runner.calls()
    );
    assert!(!f.host.path("/vms").exists());
}

#[test]
fn defaults_newest_supported_release_and_sizes() {
    let f = fixture();
    let lv = Libvirt::open("test:///default").unwrap();
    let runner = RecordingRunner::new();
    let c = ctx(&f, &runner, &lv);
    let mut r = request(&f, "dt-def");
    r.base.release = None;
    let p = plan(&c, &r, "2026-11").unwrap();
    assert_eq!(p.release.version, "26.04");
    assert_eq!(p.disk_bytes, 40 << 30);
    assert_eq!(p.base.memory_mib, 4096);
    assert_eq!(p.flavour, Flavour::Full);
    assert_eq!(p.keyboard.layout, "us");
    // 25.10 is past its end of support in 2026-11: its ISO comes from old-releases.
    r.base.release = Some("25.10".into());
    let p = plan(&c, &r, "2026-11").unwrap();
    assert!(
        with_iso_sources(&c, |s| iso::release_dir_url(s, &p.release, &p.month))
            .starts_with("https://old-releases.ubuntu.com/releases/25.10")
    );
}

/// The hash is made in process, and glibc-compatible: `openssl passwd -6` with the same salt
/// gives the same `$6$` string (openssl leaves out the default `rounds=5000`).
#[test]
fn password_hashed_in_process_matches_openssl_passwd_6() {
    use sha_crypt::{PasswordVerifier, ShaCrypt};
    let hash = hash_password("correct horse").unwrap();
    let fields: Vec<&str> = hash.split('$').collect();
    assert_eq!(fields[..3], ["", "6", "rounds=5000"], "{hash}");
    let (salt, digest) = (fields[3], fields[4]);
    assert_eq!(salt.len(), 16, "{hash}");
    assert!(
        ShaCrypt::SHA512
            .verify_password(b"correct horse", hash.as_str())
            .is_ok()
    );
    assert_ne!(
        hash_password("correct horse").unwrap(),
        hash,
        "a fresh salt each time"
    );
    let out = std::process::Command::new("openssl")
        .args(["passwd", "-6", "-salt", salt, "-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(b"correct horse\n")?;
            c.wait_with_output()
        })
        .expect("run openssl (scripts/install-deps.sh installs it)");
    let openssl = String::from_utf8(out.stdout).unwrap();
    assert_eq!(openssl.trim(), format!("$6${salt}${digest}"));
}

#[test]
fn wait_switches_after_the_installer_powers_off_and_reports_an_early_stop() {
    let f = fixture();
    let iso = fake_iso(f.dir.path());
    let srv = mirror(&iso, None);
    let mut f = f;
    f.config.set("ubuntu_releases_url", srv.base.clone());
    let lv = Libvirt::open("test:///default").unwrap();
    let c = ctx(&f, &SystemRunner, &lv);
    for name in ["dt-wait-ok", "dt-wait-early"] {
        let created = create_desktop(&c, &request(&f, name), "2026-11", &NoProgress).unwrap();
        // The installer powers off (on_poweroff destroy).
        lv.destroy(name).unwrap();
        let mut log = String::from("Linux version 6.8\nstart: subiquity/Early/run\n");
        if name == "dt-wait-ok" {
            log += &format!("{DONE_MARKER}\nreboot: Power down\n");
        }
        std::fs::write(&created.console_log, log).unwrap();
    }
    let phases = std::cell::RefCell::new(Vec::new());
    let s = wait_install(&c, "dt-wait-ok", Duration::from_secs(30), &|e| {
        if let WaitEvent::Phase(p, _) = e {
            phases.borrow_mut().push(*p);
        }
    })
    .unwrap();
    assert_eq!(*phases.borrow(), [InstallPhase::Finished]);
    assert!(s.started && !s.destroyed);
    assert!(!lv.require("dt-wait-ok").unwrap().xml.contains("<kernel>"));

    let err = wait_install(&c, "dt-wait-early", Duration::from_secs(30), &|_| {}).unwrap_err();
    assert!(err.to_string().contains("powered off before"), "{err}");
    assert_eq!(err.exit_kind(), ExitKind::Failure);
    // Left in its install phase for inspection.
    assert!(
        lv.require("dt-wait-early")
            .unwrap()
            .xml
            .contains("<kernel>")
    );

    let _ = lv.destroy("dt-wait-ok");
    for name in ["dt-wait-ok", "dt-wait-early"] {
        crate::commands::lifecycle::delete(&c, name, true, false).unwrap();
    }
}

/// `create ubuntu --desktop` without a name plans the next free `ubuntu-N`, as the cloud-image
/// path does (it was refused: the plan is shown before anything is claimed, so the name is
/// picked, not yet claimed; the create claims it and refuses if another create took it).
#[test]
fn desktop_without_a_name_plans_the_next_free_ubuntu_name() {
    let f = fixture();
    let lv = Libvirt::open("test:///default").unwrap();
    let runner = RecordingRunner::new();
    let c = ctx(&f, &runner, &lv);
    let r = request(&f, "");
    assert_eq!(plan(&c, &r, "2026-11").unwrap().base.name, "ubuntu-1");
    std::fs::create_dir_all(f.host.path("/vms/ubuntu-1")).unwrap();
    assert_eq!(plan(&c, &r, "2026-11").unwrap().base.name, "ubuntu-2");
}
