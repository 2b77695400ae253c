//! HGX (NVSwitch) hosts through the binary, on the 8×H200 fixture hosts (`--host-root`) and
//! private test-driver nodes: `gpu status --json` with the switches and the fabric mode,
//! `create ubuntu --gpu all`, and the partial-passthrough refusal (exit 2, reason, `help:`), its
//! `--gpu-force`/`--force` warning and the Shared NVSwitch note.

use std::path::Path;

use assert_cmd::Command;

/// An HGX fixture host with bridge br0, a node with `vm1` (shut off, q35), a key and a base image.
struct Hgx {
    tree: tempfile::TempDir,
    dir: tempfile::TempDir,
}

impl Hgx {
    fn new(host: &str) -> Self {
        let tree = fixture_builder::build_host(host);
        std::fs::create_dir_all(tree.path().join("sys/class/net/br0/bridge")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("node.xml"),
            "<node>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>vm1</name>
    <uuid>6b5a8e02-0000-4000-8000-0000000000a1</uuid>
    <memory>1048576</memory>
    <os><type arch='x86_64' machine='q35'>hvm</type></os>
    <devices/>
    <test:runstate>5</test:runstate>
  </domain>
</node>
",
        )
        .unwrap();
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

    fn vmctl(&self, args: &[&str]) -> (i32, String, String) {
        let d = self.dir.path();
        let mut c = Command::cargo_bin("vmctl").unwrap();
        for k in [
            "VMCTL_CONNECT",
            "VMCTL_BRIDGE",
            "VMCTL_SSH_KEY",
            "VMCTL_STATE_DIR",
            "VMCTL_LOG",
        ] {
            c.env_remove(k);
        }
        let out = c
            .env("VMCTL_STORAGE_DIR", "/vms")
            .env("VMCTL_IMAGE_CACHE", "/cache")
            .arg("--host-root")
            .arg(self.tree.path())
            .arg("--connect")
            .arg(format!("test://{}", d.join("node.xml").display()))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn create(&self, name: &str, gpu_args: &[&str]) -> (i32, String, String) {
        let d = self.dir.path();
        let image = d.join("base.qcow2");
        let key = d.join("id.pub");
        let mut args = vec![
            "create",
            "ubuntu",
            name,
            "--domain-type",
            "qemu",
            "--bridge",
            "br0",
            "--no-start",
            "--image",
            path(&image),
            "--ssh-key",
            path(&key),
            // The guest driver's key would be fetched from NVIDIA (guest_driver_cli tests it).
            "--gpu-stack",
            "none",
        ];
        args.extend_from_slice(gpu_args);
        self.vmctl(&args)
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

const SWITCHES: [&str; 4] = [
    "0000:05:00.0",
    "0000:06:00.0",
    "0000:07:00.0",
    "0000:08:00.0",
];

#[test]
fn gpu_status_json_lists_the_nvswitches_with_groups_drivers_and_the_fabric_mode() {
    let h = Hgx::new("hgx-h200x8-nvswitch");
    let (code, stdout, stderr) = h.vmctl(&["--json", "gpu", "status"]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["gpus"].as_array().unwrap().len(), 8);
    let rows: Vec<(String, u64, String, usize)> = v["nvswitches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["bdf"].as_str().unwrap().to_string(),
                s["iommu_group"].as_u64().unwrap(),
                s["driver"].as_str().unwrap().to_string(),
                s["attached"].as_array().unwrap().len(),
            )
        })
        .collect();
    let want: Vec<(String, u64, String, usize)> = SWITCHES
        .iter()
        .map(|s| (s.to_string(), 114, "nvidia-nvswitch".to_string(), 0))
        .collect();
    assert_eq!(rows, want);
    assert_eq!(v["fabric_manager"]["shared_nvswitch"], false);
    assert!(
        v["nvlink_fabric"]
            .as_str()
            .unwrap()
            .starts_with("full passthrough: `--gpu all` passes every GPU and the 4 NVSwitches"),
        "{}",
        v["nvlink_fabric"]
    );

    let (code, text, _) = h.vmctl(&["gpu", "status"]);
    assert_eq!(code, 0);
    assert!(
        text.contains(
            "NVSwitch 0000:07:00.0  GH100 [H100 NVSwitch]  group 114, isolated, driver \
             nvidia-nvswitch, attached: -"
        ),
        "{text}"
    );

    let shared = Hgx::new("synthetic-hgx-shared-nvswitch");
    let (_, stdout, _) = shared.vmctl(&["--json", "gpu", "status"]);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        v["fabric_manager"],
        serde_json::json!({
            "config": "/usr/share/nvidia/nvswitch/fabricmanager.cfg",
            "fabric_mode": 1,
            "pid": 4242,
            "shared_nvswitch": true
        })
    );
}

#[test]
fn create_ubuntu_gpu_all_on_hgx_is_defined_and_fewer_gpus_are_refused() {
    let h = Hgx::new("hgx-h200x8-nvswitch");
    let (code, _, stderr) = h.create("hgx-all", &["--gpu", "all"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");

    let (code, stdout, stderr) = h.create("hgx-two", &["--gpu", "0,1"]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains(
            "only 2 (0000:18:00.0, 0000:2a:00.0) of this host's 8 GPUs would go to the VM \
             without the NVSwitches 0000:05:00.0, 0000:06:00.0, 0000:07:00.0, 0000:08:00.0: the \
             NVLink/NVSwitch fabric will not work in the guest, and CUDA may fail on multi-GPU \
             jobs"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "help: pass `--gpu all` for full passthrough (every GPU and NVSwitch to this one \
             VM), or set up Shared NVSwitch multitenancy"
        ) && stderr.contains("or use --gpu-force to pass the GPUs without NVLink"),
        "{stderr}"
    );
    assert!(
        !h.tree.path().join("vms/hgx-two").exists(),
        "refused: nothing made"
    );

    let (code, _, stderr) = h.create("hgx-forced", &["--gpu", "0,1", "--gpu-force"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("--gpu-force: only 2 (0000:18:00.0, 0000:2a:00.0) of this host's 8 GPUs")
            && stderr.contains("NVLink/NVSwitch fabric will not work in the guest"),
        "{stderr}"
    );

    let shared = Hgx::new("synthetic-hgx-shared-nvswitch");
    let (code, _, stderr) = shared.create("hgx-one", &["--gpu", "0"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr
            .contains("note: Shared NVSwitch multitenancy on this host (nv-fabricmanager pid 4242"),
        "{stderr}"
    );
}

#[test]
fn gpu_attach_refuses_a_partial_hgx_set_then_forces_it_with_a_warning() {
    let h = Hgx::new("hgx-h200x8-nvswitch");
    let (code, stdout, stderr) = h.vmctl(&["gpu", "attach", "vm1", "--gpu", "0"]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("only GPU 0000:18:00.0 of this host's 8 GPUs would go to the VM")
            && stderr.contains("or use --force to pass the GPUs without NVLink"),
        "{stderr}"
    );
    let (code, stdout, stderr) = h.vmctl(&["gpu", "attach", "vm1", "--gpu", "0", "--force"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.starts_with("warning: --force: only GPU 0000:18:00.0 of this host's 8 GPUs"),
        "{stderr}"
    );
    assert_eq!(
        stdout,
        "vm1: attached 0000:18:00.0 (live: -, config: 0000:18:00.0)\n"
    );

    let (code, stdout, stderr) = h.vmctl(&["gpu", "attach", "vm1", "--gpu", "all"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with(
            "vm1: attached 0000:18:00.0, 0000:2a:00.0, 0000:3a:00.0, 0000:5d:00.0, \
             0000:9a:00.0, 0000:ab:00.0, 0000:ba:00.0, 0000:db:00.0 and NVSwitches \
             0000:05:00.0, 0000:06:00.0, 0000:07:00.0, 0000:08:00.0 (live: -, config: "
        ),
        "{stdout}"
    );
}

#[test]
fn talos_schematic_preview_adds_the_fabric_manager_on_an_hgx_host_and_says_why() {
    let h = Hgx::new("hgx-h200x8-nvswitch");
    let (code, stdout, stderr) =
        h.vmctl(&["--json", "talos", "schematic", "--nvidia", "production"]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        v["extensions"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(
                "siderolabs/nvidia-fabricmanager-production"
            )),
        "{v}"
    );
    assert!(
        stderr.contains("note: nvidia-fabricmanager added because this host has NVSwitches"),
        "{stderr}"
    );

    // Shared NVSwitch multitenancy: nodes never get switches, so no fabric manager.
    let shared = Hgx::new("synthetic-hgx-shared-nvswitch");
    let (code, stdout, stderr) =
        shared.vmctl(&["--json", "talos", "schematic", "--nvidia", "production"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("fabricmanager"), "{stdout}");
    assert!(!stderr.contains("fabricmanager"), "{stderr}");
}
