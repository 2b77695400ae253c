//! CLI tests of the `vmctl` binary against libvirt's in-process test driver and fixture roots.

use assert_cmd::Command;
use predicates::prelude::*;

fn vmctl() -> Command {
    let mut c = Command::cargo_bin("vmctl").unwrap();
    for k in [
        "VMCTL_CONNECT",
        "VMCTL_BRIDGE",
        "VMCTL_STORAGE_DIR",
        "VMCTL_IMAGE_CACHE",
        "VMCTL_SSH_KEY",
    ] {
        c.env_remove(k);
    }
    c
}

#[test]
fn list_shows_the_test_driver_domain() {
    vmctl()
        .args(["--connect", "test:///default", "list"])
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"(?m)^test\s+running\s+off\s+2\s+8 GiB").unwrap());
    let out = vmctl()
        .args(["--connect", "test:///default", "list", "--all", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["uri"], "test:///default");
    assert_eq!(v["vms"][0]["name"], "test");
    assert_eq!(v["vms"][0]["state"], "running");
    assert_eq!(v["vms"][0]["vmctl"], false);
}

#[test]
fn connect_comes_from_env_then_config_file() {
    let dir = tempfile::tempdir().unwrap();
    vmctl()
        .env("VMCTL_CONNECT", "test:///default")
        .args(["list"])
        .assert()
        .success();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "connect = \"test:///default\"\n").unwrap();
    vmctl()
        .arg("--config")
        .arg(&cfg)
        .args(["list"])
        .assert()
        .success();
    // The flag wins over env.
    vmctl()
        .env("VMCTL_CONNECT", "qemu+tcp://192.0.2.1/system")
        .args(["--connect", "test:///default", "list"])
        .assert()
        .success();
    let out = vmctl()
        .env("VMCTL_CONNECT", "test:///default")
        .arg("--config")
        .arg(&cfg)
        .args(["config", "show", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["settings"]["connect"]["value"], "test:///default");
    assert_eq!(v["settings"]["connect"]["source"]["kind"], "env");
    assert_eq!(v["settings"]["bridge"]["source"]["kind"], "default");
}

#[test]
fn info_of_test_domain_and_missing_domain() {
    vmctl()
        .args(["--connect", "test:///default", "info", "test"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "Console:    virsh -c test:///default console test",
        ));
    vmctl()
        .args(["--connect", "test:///default", "info", "nope"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("error: no domain named \"nope\"")
                .and(predicate::str::contains("help: ")),
        );
}

#[test]
fn bad_config_file_is_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "bridgee = \"br0\"\n").unwrap();
    vmctl()
        .arg("--config")
        .arg(&cfg)
        .args(["list"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("line 1, column 1: unknown key; did you mean `bridge`?")
                .and(predicate::str::contains("help: ")),
        );
}

struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("root/sys/class/net/br0/bridge")).unwrap();
        std::fs::write(
            dir.path().join("id.pub"),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6 t@h\n",
        )
        .unwrap();
        let base = dir.path().join("base.qcow2");
        std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&base)
            .arg("64M")
            .status()
            .unwrap();
        Self { dir }
    }

    fn create(&self, name: &str, extra: &[&str]) -> assert_cmd::assert::Assert {
        let d = self.dir.path();
        vmctl()
            .env("VMCTL_STORAGE_DIR", "/vms")
            .env("VMCTL_IMAGE_CACHE", "/cache")
            .arg("--host-root")
            .arg(d.join("root"))
            .args([
                "--connect",
                "test:///default",
                "create",
                "ubuntu",
                name,
                "--domain-type",
                "qemu",
                "--bridge",
                "br0",
            ])
            .arg("--image")
            .arg(d.join("base.qcow2"))
            .arg("--ssh-key")
            .arg(d.join("id.pub"))
            .args(extra)
            .assert()
    }

    fn vms_left(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("root/vms"))
            .map(|r| r.count())
            .unwrap_or(0)
    }
}

/// `--host-root DIR` maps vmctl's own directories like every other host path: with the default
/// settings, a create writes its disk and seed under DIR/var/lib/vmctl/vms, never under the
/// real /var/lib/vmctl/vms.
#[test]
fn create_under_a_host_root_writes_only_inside_it() {
    let h = Host::new();
    let d = h.dir.path();
    let name = format!("hostroot-{}", std::process::id());
    vmctl()
        .env_remove("VMCTL_STORAGE_DIR")
        .env_remove("VMCTL_IMAGE_CACHE")
        .env_remove("VMCTL_STATE_DIR")
        .arg("--host-root")
        .arg(d.join("root"))
        .args(["--connect", "test:///default", "create", "ubuntu", &name])
        .args([
            "--domain-type",
            "qemu",
            "--bridge",
            "br0",
            "--dhcp",
            "--no-start",
        ])
        .arg("--image")
        .arg(d.join("base.qcow2"))
        .arg("--ssh-key")
        .arg(d.join("id.pub"))
        .assert()
        .success();
    let inside = d.join("root/var/lib/vmctl/vms").join(&name);
    assert!(inside.join("disk.qcow2").is_file(), "no disk in {inside:?}");
    assert!(inside.join("seed.iso").is_file(), "no seed in {inside:?}");
    let real = std::path::Path::new("/var/lib/vmctl/vms").join(&name);
    assert!(!real.exists(), "wrote to the real {real:?}");
}

#[test]
fn create_ubuntu_on_test_driver_prints_json() {
    let h = Host::new();
    let out = h
        .create(
            "cli1",
            &[
                "--ip",
                "198.18.0.20/24",
                "--gateway",
                "198.18.0.1",
                "--dns",
                "198.18.0.1",
                "--json",
                "--no-start",
            ],
        )
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["name"], "cli1");
    assert_eq!(v["defined"], true);
    assert_eq!(v["started"], false);
    assert_eq!(v["ip"], "198.18.0.20/24");
    assert!(v["mac"].as_str().unwrap().starts_with("52:54:00:"));
}

#[test]
fn create_bad_input_exits_2_and_leaves_nothing() {
    let h = Host::new();
    let cases: &[(&str, &[&str], &str)] = &[
        ("a/b", &[], "invalid VM name"),
        ("..", &[], "invalid VM name"),
        ("my vm", &[], "invalid VM name"),
        ("test", &[], "already exists"),
        ("cli2", &["--ip", "198.18.0.20"], "CIDR"),
        ("cli2", &["--ip", "198.18.0.0/24"], "network address"),
        (
            "cli2",
            &["--ip", "198.18.0.20/24", "--gateway", "198.19.0.1"],
            "not inside",
        ),
        (
            "cli2",
            &["--bridge", "nobr0"],
            "bridge \"nobr0\" does not exist",
        ),
        ("cli2", &["--ssh-key", "/nonexistent.pub"], "SSH public key"),
        (
            "cli2",
            &["--image", "http://127.0.0.1:9/img.qcow2"],
            "cannot reach",
        ),
        ("cli2", &["--cpu-mode", "turbo"], "--cpu-mode"),
        ("cli2", &["--domain-type", "xen"], "--domain-type"),
    ];
    for (name, extra, msg) in cases {
        h.create(name, extra)
            .code(2)
            .stderr(predicate::str::contains(*msg).and(predicate::str::contains("help: ")));
        assert_eq!(h.vms_left(), 0, "{name} {extra:?} left storage behind");
    }
}

/// A `--wait` that runs out of time fails (exit 1) and says which stage it was in, but the
/// started VM is not rolled back: it is kept, like an interrupted wait. 192.0.2.10 (TEST-NET-1,
/// RFC 5737) never answers.
#[test]
fn create_wait_that_times_out_exits_1_and_keeps_the_vm() {
    let h = Host::new();
    h.create(
        "cliw",
        &["--ip", "192.0.2.10/24", "--wait", "--wait-timeout", "0"],
    )
    .code(1)
    .stderr(
        predicate::str::contains("cliw: waiting for SSH on 192.0.2.10:22")
            .and(predicate::str::contains(
                "error: cliw was not ready within 0 s: SSH on 192.0.2.10:22 does not answer",
            ))
            .and(predicate::str::contains(
                "help: cliw is kept: `vmctl ssh cliw`",
            )),
    );
    assert_eq!(h.vms_left(), 1, "the started VM's storage was removed");
}

#[test]
fn help_snapshots() {
    for args in [
        &["--help"][..],
        &["create", "ubuntu", "--help"],
        &["stop", "--help"],
        &["delete", "--help"],
    ] {
        let out = vmctl().args(args).output().unwrap();
        assert!(out.status.success());
        let name = format!(
            "help_vmctl_{}",
            args.iter()
                .filter(|a| !a.starts_with('-'))
                .cloned()
                .collect::<Vec<_>>()
                .join("_")
        );
        insta::assert_snapshot!(name, String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn clap_usage_errors_exit_2() {
    vmctl()
        .args(["create", "ubuntu", "x", "--ip", "198.18.0.2/24", "--dhcp"])
        .assert()
        .code(2);
    vmctl().args(["frobnicate"]).assert().code(2);
}

#[test]
fn release_help_states_the_defaults_create_uses() {
    use vmctl::guest_media::{iso, releases};
    let out = Command::cargo_bin("vmctl")
        .unwrap()
        .args(["create", "ubuntu", "--help"])
        .env("COLUMNS", "1000")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let line = help
        .lines()
        .find(|l| l.trim_start().starts_with("--release"))
        .unwrap();
    let cloud = format!("default {}", releases::DEFAULT_RELEASE);
    let desktop = iso::default_release(&iso::this_month()).version;
    assert!(line.contains(&cloud), "{line}");
    assert!(
        line.contains("--desktop") && line.contains(&format!("({desktop})")),
        "--desktop installs {desktop} by default: {line}"
    );
}
