//! `create ubuntu --desktop` on the lab libvirtd (GVB_LAB=1, root, `tests/lab/up.sh` done): the
//! fake release ISO (`tests/lab/fake-ubuntu-iso.sh`: the lab kernel and initrd at
//! `casper/vmlinuz`, `casper/initrd`) is served by `tests/lab/http-mirror.sh` inside the lab
//! netns, vmctl downloads and verifies it, defines and starts the install phase; then the test
//! gives the simulated "install finished" signal (destroy + switch) and checks the final phase.
//! Without GVB_LAB=1 the test prints "skipped" and passes; with it, a missing lab fails loudly.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic

use std::path::{Path, PathBuf};
use std::process::Command;

use hostio::{HostRoot, SystemRunner};
use vmctl::commands::Ctx;
use vmctl::config::Config;
use vmctl::desktop::{InstallPhase, phase_of, switch_to_final};
use vmctl::hypervisor::{Hypervisor, Libvirt};

const URI: &str = "qemu:///system";
const NAME: &str = "gvb-desktop-lab";
const PORT: &str = "18790";
/// Lab addresses: .70 and up are free for later tests (tests/lab/README.md); this one is ours.
const IP: &str = "198.18.0.74/24";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dumpxml(dir: &Path) -> String {
    let xml = run(Command::new("virsh").args(["-c", URI, "dumpxml", NAME]));
    let p = dir.join("dump.xml");
    std::fs::write(&p, &xml).unwrap();
    run(Command::new("virt-xml-validate").arg(&p).arg("domain"));
    xml
}

/// Removes the domain, the mirror and the scratch directory whatever happens.
struct Cleanup {
    work: PathBuf,
    iso_dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("virsh")
            .args(["-c", URI, "destroy", NAME])
            .output();
        let _ = Command::new("virsh")
            .args(["-c", URI, "undefine", NAME, "--nvram"])
            .output();
        let _ = Command::new(repo().join("tests/lab/http-mirror.sh"))
            .arg("stop")
            .arg(&self.iso_dir)
            .arg(PORT)
            .output();
        if std::env::var("GVB_LAB_KEEP").as_deref() != Ok("1") {
            let _ = std::fs::remove_dir_all(&self.work);
        }
    }
}

#[test]
#[ignore = "lab: root, the lab libvirtd and qemu; run with GVB_LAB=1 and --include-ignored"]
fn install_phase_from_the_fake_iso_then_switch_to_disk_boot() {
    let netns = run(Command::new("ip").args(["netns", "list"]));
    assert!(
        netns.lines().any(|l| l.starts_with("vmlab")),
        "no netns vmlab: run tests/lab/up.sh first"
    );
    // Leftovers of an interrupted run.
    let _ = Command::new("virsh")
        .args(["-c", URI, "destroy", NAME])
        .output();
    let _ = Command::new("virsh")
        .args(["-c", URI, "undefine", NAME, "--nvram"])
        .output();

    // qemu runs as libvirt-qemu: scratch files live under /var/lib/gvb-lab, world-readable dirs.
    std::fs::create_dir_all("/var/lib/gvb-lab").unwrap();
    let work = tempfile::Builder::new()
        .prefix("desktop.")
        .tempdir_in("/var/lib/gvb-lab")
        .unwrap()
        .keep();
    run(Command::new("chmod").arg("0755").arg(&work));
    let iso_dir = work.join("mirror");
    let _cleanup = Cleanup {
        work: work.clone(),
        iso_dir: iso_dir.clone(),
    };
    let iso = run(Command::new(repo().join("tests/lab/fake-ubuntu-iso.sh"))
        .arg(&iso_dir)
        .args(["24.04", "desktop"]));
    assert!(
        iso.trim_end().ends_with("ubuntu-24.04-desktop-amd64.iso"),
        "{iso}"
    );
    let url = run(Command::new(repo().join("tests/lab/http-mirror.sh"))
        .env("GVB_LAB_MIRROR_NETNS", "vmlab")
        .arg("start")
        .arg(&iso_dir)
        .arg(PORT));
    let url = url.lines().last().unwrap().trim().to_string();

    let key = work.join("id_ed25519.pub");
    std::fs::write(
        &key,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6 lab@desktop\n",
    )
    .unwrap();
    let config = work.join("config.toml");
    std::fs::write(&config, "").unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", "vmlab"])
        .arg(env!("CARGO_BIN_EXE_vmctl"))
        .arg("--config")
        .arg(&config)
        .args(["--connect", URI, "create", "ubuntu", NAME, "--desktop"])
        .args(["--release", "24.04", "--bridge", "labbr0", "--ip", IP])
        .args(["--gateway", "198.18.0.1", "--domain-type", "qemu"])
        .args([
            "--cpu-mode",
            "host-model",
            "--firmware",
            "bios",
            "--cpus",
            "1",
        ])
        .args([
            "--memory", "1024", "--disk", "25G", "--user", "lab", "--json",
        ])
        .arg("--ssh-key")
        .arg(&key)
        .env("VMCTL_STORAGE_DIR", work.join("vms"))
        .env("VMCTL_IMAGE_CACHE", work.join("images"))
        .env("VMCTL_STATE_DIR", work.join("state"))
        .env("VMCTL_UBUNTU_RELEASES_URL", &url)
        .env(
            "VMCTL_UBUNTU_ISO_KEYRING",
            "/nonexistent/ubuntu-archive-keyring.gpg",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "create --desktop failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["created"]["started"], true);
    assert_eq!(v["created"]["iso"]["checksum_verified"], true);
    let vm_dir = work.join("vms").join(NAME);
    let state = run(Command::new("virsh").args(["-c", URI, "domstate", NAME]));
    assert_eq!(state.trim(), "running");

    let xml = dumpxml(&work);
    assert!(
        xml.contains(&format!(
            "<kernel>{}</kernel>",
            vm_dir.join("installer-vmlinuz").display()
        )),
        "{xml}"
    );
    assert!(xml.contains("<initrd>") && xml.contains("<cmdline>autoinstall ds=nocloud"));
    assert!(
        xml.contains("device='cdrom'") && xml.contains("bus='sata'"),
        "{xml}"
    );
    assert!(xml.contains("seed.iso"), "{xml}");

    // The ISO's kernel really boots: its messages reach the console log that --wait reads.
    let log = vm_dir.join("console.log");
    let began = std::time::Instant::now();
    loop {
        let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
        if phase_of(&text) >= Some(InstallPhase::Booting) {
            break;
        }
        assert!(
            began.elapsed().as_secs() < 120,
            "no kernel output in {} after 120 s:\n{text}",
            log.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    eprintln!(
        "installer kernel output after {:.1} s",
        began.elapsed().as_secs_f64()
    );

    // The simulated "install finished" signal: destroy + switch, as `--wait` does on power-off.
    let lv = Libvirt::open(URI).unwrap();
    let mut cfg = Config::defaults();
    cfg.set("connect", URI);
    let env = |_: &str| None;
    let host = HostRoot::system();
    let ctx = Ctx::new(&cfg, &host, &SystemRunner, &lv).with_env(&env);
    let s = switch_to_final(&ctx, NAME, true).unwrap();
    assert!(s.destroyed && s.started);
    assert!(lv.state(NAME).unwrap().is_active());
    let xml = dumpxml(&work);
    for gone in [
        "<kernel>",
        "<initrd>",
        "<cmdline>",
        "device='cdrom'",
        "seed.iso",
    ] {
        assert!(
            !xml.contains(gone),
            "{gone} still in the final phase:\n{xml}"
        );
    }
    assert!(xml.contains("<boot dev='hd'/>"), "{xml}");
    assert!(xml.contains(&vm_dir.join("disk.qcow2").display().to_string()));
    assert!(!vm_dir.join("seed.iso").exists() && !vm_dir.join("installer-vmlinuz").exists());

    // delete removes what vmctl made, the cached ISO stays.
    let _ = Command::new("virsh")
        .args(["-c", URI, "destroy", NAME])
        .output();
    let del = Command::new("ip")
        .args(["netns", "exec", "vmlab"])
        .arg(env!("CARGO_BIN_EXE_vmctl"))
        .arg("--config")
        .arg(&config)
        .args(["--connect", URI, "delete", NAME, "--yes"])
        .env("VMCTL_STORAGE_DIR", work.join("vms"))
        .output()
        .unwrap();
    assert!(
        del.status.success(),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
    assert!(!vm_dir.exists());
    assert_eq!(
        std::fs::read_dir(work.join("images/sha256"))
            .unwrap()
            .count(),
        1
    );
}
