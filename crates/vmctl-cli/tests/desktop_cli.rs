//! `vmctl create ubuntu NAME --desktop` through the binary: bad input exits 2 with a `help:`
//! line and leaves nothing behind; a full run against the test driver and a local mirror.

use assert_cmd::Command;
use httpmock::prelude::*;
use predicates::prelude::*;
use sha2::Digest;

struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("root/sys/class/net/br0/bridge")).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        std::fs::write(
            dir.path().join("id.pub"),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6 t@h\n",
        )
        .unwrap();
        Self { dir }
    }

    fn cmd(&self, mirror: &str) -> Command {
        let d = self.dir.path();
        let mut c = Command::cargo_bin("vmctl").unwrap();
        for k in [
            "VMCTL_CONNECT",
            "VMCTL_BRIDGE",
            "VMCTL_SSH_KEY",
            "VMCTL_SSH_USER",
        ] {
            c.env_remove(k);
        }
        c.env("VMCTL_STORAGE_DIR", "/vms")
            .env("VMCTL_IMAGE_CACHE", "/cache")
            .env("VMCTL_UBUNTU_RELEASES_URL", mirror)
            .env("VMCTL_UBUNTU_OLD_RELEASES_URL", mirror)
            .env("VMCTL_UBUNTU_ISO_KEYRING", d.join("no-keyring.gpg"))
            .env("HOME", d.join("home"))
            .env_remove("SUDO_USER")
            .arg("--host-root")
            .arg(d.join("root"))
            .args(["--connect", "test:///default"]);
        c
    }

    fn create(&self, mirror: &str, name: &str, extra: &[&str]) -> assert_cmd::assert::Assert {
        self.create_cmd(mirror, name, extra).assert()
    }

    fn create_cmd(&self, mirror: &str, name: &str, extra: &[&str]) -> Command {
        let mut c = self.cmd(mirror);
        c.args([
            "create",
            "ubuntu",
            name,
            "--desktop",
            "--domain-type",
            "qemu",
        ])
        .args([
            "--firmware",
            "bios",
            "--bridge",
            "br0",
            "--release",
            "24.04",
        ])
        .args(["--ip", "198.18.0.81/24", "--mac", "52:54:00:00:81:01"])
        .args(extra);
        c
    }

    fn key(&self) -> String {
        self.dir.path().join("id.pub").display().to_string()
    }

    fn left(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("root/vms"))
            .map(|r| r.count())
            .unwrap_or(0)
    }
}

/// A tiny ISO with casper/vmlinuz and casper/initrd.
fn fake_iso(dir: &std::path::Path) -> Vec<u8> {
    let stage = dir.join("stage");
    std::fs::create_dir_all(stage.join("casper")).unwrap();
    std::fs::write(stage.join("casper/vmlinuz"), b"k").unwrap();
    std::fs::write(stage.join("casper/initrd"), b"i").unwrap();
    let out = dir.join("fake.iso");
    let ok = std::process::Command::new("genisoimage")
        .args(["-quiet", "-J", "-R", "-V", "Ubuntu 24.04 amd64", "-o"])
        .arg(&out)
        .arg(&stage)
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::read(out).unwrap()
}

fn mirror(iso: Vec<u8>, listed: String) -> MockServer {
    let server = MockServer::start();
    server.mock(|when, then| {
        when.method(GET).path("/24.04/SHA256SUMS");
        then.status(200)
            .body(format!("{listed} *ubuntu-24.04.2-desktop-amd64.iso\n"));
    });
    server.mock(|when, then| {
        when.method(GET)
            .path("/24.04/ubuntu-24.04.2-desktop-amd64.iso");
        then.status(200).body(iso);
    });
    server
}

#[test]
fn bad_input_exits_2_with_help_and_leaves_nothing() {
    let h = Host::new();
    let key = h.key();
    let bad_sum = mirror(fake_iso(h.dir.path()), "0".repeat(64));
    let url = bad_sum.base_url();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--release", "23.99", "--ssh-key", &key],
            "unknown Ubuntu release",
        ),
        (
            vec!["--ssh-key", &key, "--disk", "20G"],
            "minimum of 25 GiB",
        ),
        (vec!["--ssh-key", "/nonexistent.pub"], "SSH public key"),
        // No --ssh-key, no setting and nothing in ~/.ssh.
        (vec![], "SSH public key"),
        (vec!["--ssh-key", &key, "--user", ""], "--user"),
        (
            vec!["--ssh-key", &key, "--password", "hunter2"],
            "plaintext password",
        ),
        (
            vec!["--ssh-key", &key, "--password-hash", "hunter2"],
            "plaintext passwords are refused",
        ),
        (vec!["--ssh-key", &key], "ISO checksum mismatch"),
        (vec!["--ssh-key", &key, "--keyboard", "US"], "--keyboard"),
        (
            vec!["--ssh-key", &key, "--image", "x.img"],
            "not with --desktop",
        ),
    ];
    for (extra, msg) in cases {
        h.create(&url, "dcli1", &extra)
            .code(2)
            .stderr(predicate::str::contains(msg).and(predicate::str::contains("help: ")));
        assert_eq!(h.left(), 0, "{extra:?} left storage behind");
    }
    // The refusal of a plaintext password points to the prompt.
    h.create(&url, "dcli1", &["--ssh-key", &key, "--password", "x"])
        .code(2)
        .stderr(predicate::str::contains("--password-prompt"));
    // Desktop-only options need --desktop (clap usage error).
    h.cmd(&url)
        .args(["create", "ubuntu", "x", "--minimal"])
        .assert()
        .code(2);
}

#[test]
fn creates_the_install_phase_from_a_verified_mirror_iso() {
    let h = Host::new();
    let iso = fake_iso(h.dir.path());
    let sha = hex::encode(sha2::Sha256::digest(&iso));
    let m = mirror(iso, sha.clone());
    let out = h
        .create_cmd(
            &m.base_url(),
            "dcli2",
            &[
                "--ssh-key",
                &h.key(),
                "--user",
                "alice",
                "--no-start",
                "--json",
                "--minimal",
                "--password-prompt",
            ],
        )
        // --password-prompt reads one line from stdin when it is not a terminal.
        .write_stdin("s3cret horse\n")
        .assert()
        .success()
        .get_output()
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &v["created"];
    assert_eq!(c["phase"], "install");
    assert_eq!(c["flavour"], "ubuntu-desktop-minimal");
    assert_eq!(c["iso"]["sha256"], sha.as_str());
    assert_eq!(c["iso"]["checksum_verified"], true);
    assert_eq!(c["iso"]["signature_verified"], false);
    let seed = std::path::PathBuf::from(c["seed"].as_str().unwrap());
    let listing = std::process::Command::new("isoinfo")
        .args(["-R", "-i"])
        .arg(&seed)
        .args(["-x", "/user-data"])
        .output()
        .unwrap();
    let ud = String::from_utf8_lossy(&listing.stdout);
    // Only the SHA-512-crypt hash is in the seed, never the password.
    assert!(
        ud.contains("password: \"$6$") && !ud.contains("s3cret"),
        "{ud}"
    );
    assert!(ud.starts_with("#cloud-config\nautoinstall:"), "{ud}");
    assert!(
        ud.contains("ubuntu-desktop-minimal") && ud.contains("198.18.0.81/24"),
        "{ud}"
    );
    // Every file of the VM is root's alone, the installer's kernel and initrd too (xorriso
    // would give them the ISO's modes); the directory is searchable, not listable.
    use std::os::unix::fs::PermissionsExt;
    let dir = seed.parent().unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(format!("{:o}", mode(dir)), "711");
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(format!("{:o}", mode(&p)), "600", "{}", p.display());
        names.push(p.file_name().unwrap().to_string_lossy().into_owned());
    }
    names.sort();
    assert_eq!(
        names,
        [
            "disk.qcow2",
            "final-domain.xml",
            "installer-initrd",
            "installer-vmlinuz",
            "known_hosts",
            "seed.iso"
        ]
    );
    // (test:///default lives in the vmctl process: the domain is gone with it.)
}
