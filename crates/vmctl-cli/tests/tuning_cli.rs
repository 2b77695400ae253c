//! `vmctl create ubuntu --cpu-pinning/--hugepages` through the binary, on the 8×H200 HGX
//! fixture host (`--host-root`) and a private test-driver node: the placement in `--json` and
//! in the summary, and a hugepage refusal with its numbers and `help:` line (exit 2).

use assert_cmd::Command;

fn shared_nvswitch(root: &std::path::Path) {
    let cfg = root.join("usr/share/nvidia/nvswitch");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("fabricmanager.cfg"), "FABRIC_MODE=1\n").unwrap();
    std::fs::create_dir_all(root.join("proc/4242")).unwrap();
    std::fs::write(root.join("proc/4242/comm"), "nv-fabricmanage\n").unwrap();
}

struct H200 {
    tree: tempfile::TempDir,
    dir: tempfile::TempDir,
}

impl H200 {
    fn new() -> Self {
        let tree = fixture_builder::build_host("hgx-h200x8-nvswitch-truncated");
        // Two of the eight GPUs per VM: the host runs Shared NVSwitch multitenancy (Fabric
        // Manager with FABRIC_MODE=1), as tests/fixtures/hosts/synthetic-hgx-shared-nvswitch.
        shared_nvswitch(tree.path());
        std::fs::create_dir_all(tree.path().join("sys/class/net/br0/bridge")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("node.xml"), "<node/>\n").unwrap();
        std::fs::write(
            dir.path().join("id.pub"),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6 t@h\n",
        )
        .unwrap();
        let ok = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(dir.path().join("base.qcow2"))
            .arg("64M")
            .status()
            .unwrap();
        assert!(ok.success());
        Self { tree, dir }
    }

    fn create(&self, name: &str, extra: &[&str]) -> std::process::Output {
        let d = self.dir.path();
        let mut c = Command::cargo_bin("vmctl").unwrap();
        for k in [
            "VMCTL_CONNECT",
            "VMCTL_BRIDGE",
            "VMCTL_SSH_KEY",
            "VMCTL_STATE_DIR",
        ] {
            c.env_remove(k);
        }
        c.env("VMCTL_STORAGE_DIR", "/vms")
            .env("VMCTL_IMAGE_CACHE", "/cache")
            .arg("--host-root")
            .arg(self.tree.path())
            .arg("--connect")
            .arg(format!("test://{}", d.join("node.xml").display()))
            .args([
                "create",
                "ubuntu",
                name,
                "--domain-type",
                "qemu",
                "--bridge",
                "br0",
            ])
            .args(["--no-start", "--gpu", "18:00.0", "--gpu", "9a:00.0"])
            .args(["--gpu-stack", "none"])
            .arg("--image")
            .arg(d.join("base.qcow2"))
            .arg("--ssh-key")
            .arg(d.join("id.pub"))
            .args(extra)
            .output()
            .unwrap()
    }
}

#[test]
fn pinned_create_shows_its_placement() {
    let h = H200::new();
    let out = h.create(
        "pin1",
        &[
            "--cpus",
            "4",
            "--memory",
            "8G",
            "--cpu-pinning",
            "auto",
            "--json",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cpu = &v["placement"]["cpu"];
    assert_eq!(cpu["mode"], "auto");
    assert_eq!(cpu["nodes"], serde_json::json!([0, 1]));
    assert_eq!(cpu["vcpu_cpus"], serde_json::json!([1, 2, 57, 58]));
    assert_eq!(cpu["cells"][1]["host_node"], 1);
    assert_eq!(cpu["cells"][1]["memory_mib"], 4096);

    let out = h.create("pin2", &["--cpus", "2", "--cpu-pinning", "shared"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("  CPU pinning (shared): vCPUs on host CPUs 1,57, emulator on 0,2-56,58-223"),
        "{err}"
    );
    assert!(
        err.contains("  guest NUMA cell 1: vCPUs 1, 1024 MiB on host node 1"),
        "{err}"
    );
}

#[test]
fn hugepage_refusal_exits_2_with_numbers_and_help() {
    let h = H200::new();
    let out = h.create(
        "huge1",
        &[
            "--cpus",
            "2",
            "--memory",
            "4G",
            "--cpu-pinning",
            "auto",
            "--hugepages",
            "1G",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "not enough free 1G hugepages on NUMA node 0: the VM needs 2, 0 are free of 0 reserved"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "help: reserve them at boot: `sudo gpu-vm-bootstrap --hugepages 1G:4` (then reboot)"
        ),
        "{err}"
    );
    let out = h.create("huge2", &["--memory", "1536", "--hugepages", "1G"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--memory 1536 MiB is not a whole number of 1G hugepages (1024 MiB each)"),
        "{err}"
    );
    // A value clap does not know is a usage error too.
    let out = h.create("huge3", &["--hugepages", "4K"]);
    assert_eq!(out.status.code(), Some(2));
}
