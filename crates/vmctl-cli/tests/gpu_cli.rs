//! `vmctl gpu` CLI tests on fixture hosts (`--host-root`) and libvirt's test driver: the exact
//! `gpu status --json` per host kind, and the exact refusal (exit 2, reason, `help:`) per case.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

fn vmctl() -> Command {
    let mut c = Command::cargo_bin("vmctl").unwrap();
    for k in ["VMCTL_CONNECT", "VMCTL_LOG"] {
        c.env_remove(k);
    }
    c
}

/// A committed fixture host, or one of this crate's (`tests/fixtures/NAME.toml`).
fn host(name: &str) -> TempDir {
    let own = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.toml"));
    match std::fs::read_to_string(&own) {
        Ok(text) => fixture_builder::build_from_str(&text).unwrap(),
        Err(_) => fixture_builder::build_host(name),
    }
}

/// A test-driver node: `vm1` shut off and empty, `vm2` running with the RTX 2070 SUPER's
/// function 0 of the B550 host (0000:2b:00.0) in its live and persistent XML.
fn node(dir: &Path) -> String {
    let p: PathBuf = dir.join("node.xml");
    std::fs::write(
        &p,
        "<node>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>vm1</name>
    <uuid>6b5a8e02-0000-4000-8000-000000000001</uuid>
    <memory>1048576</memory>
    <os><type arch='x86_64' machine='q35'>hvm</type></os>
    <devices/>
    <test:runstate>5</test:runstate>
  </domain>
  <domain type='test'>
    <name>vm2</name>
    <uuid>6b5a8e02-0000-4000-8000-000000000002</uuid>
    <memory>1048576</memory>
    <os><type arch='x86_64' machine='q35'>hvm</type></os>
    <devices>
      <hostdev mode='subsystem' type='pci' managed='yes'>
        <source><address domain='0x0000' bus='0x2b' slot='0x00' function='0x0'/></source>
      </hostdev>
    </devices>
  </domain>
</node>
",
    )
    .unwrap();
    format!("test://{}", p.display())
}

fn status_json(host_name: &str) -> String {
    let h = host(host_name);
    let n = tempfile::tempdir().unwrap();
    let out = vmctl()
        .arg("--connect")
        .arg(node(n.path()))
        .arg("--host-root")
        .arg(h.path())
        .args(["gpu", "status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn status_json_per_host_kind() {
    for h in [
        // isolated GTX 960 without a reset method
        "intel-z170-gtx960",
        // GT 710 in a shared group and boot VGA; 4-function RTX 2070 SUPER isolated, held by vm2
        "amd-b550m-gt710-rtx2070s",
        "gpu-two-in-one-group",
        // the only display is the NVIDIA GPU
        "synthetic-nvidia-boot-vga-only",
        // 3D controllers: an L40S with vGPU types; H200s (MIG)
        "synthetic-amd-cpu",
        "hgx-h200x8-nvswitch-truncated",
        // the completed HGX host: four NVSwitches in group 114; and in Shared NVSwitch mode
        "hgx-h200x8-nvswitch",
        "synthetic-hgx-shared-nvswitch",
        "synthetic-iommu-off",
    ] {
        insta::assert_snapshot!(format!("status_{h}"), status_json(h));
    }
}

#[test]
fn status_text_names_blockers_and_the_holding_vm() {
    let h = host("amd-b550m-gt710-rtx2070s");
    let n = tempfile::tempdir().unwrap();
    let out = vmctl()
        .arg("--connect")
        .arg(node(n.path()))
        .arg("--host-root")
        .arg(h.path())
        .args(["gpu", "status"])
        .output()
        .unwrap();
    assert!(out.status.success());
    insta::assert_snapshot!(String::from_utf8(out.stdout).unwrap());
}

#[test]
fn status_without_libvirt_still_reports_the_host() {
    let h = host("intel-z170-gtx960");
    let out = vmctl()
        .args(["--connect", "test:///nonexistent/node.xml", "--host-root"])
        .arg(h.path())
        .args(["gpu", "status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["gpus"][0]["bdf"], "0000:01:00.0");
    assert!(
        v["warnings"][0]
            .as_str()
            .unwrap()
            .contains("attached VMs unknown")
    );
}

/// Runs `gpu attach`/`detach` on a fixture host and the node; returns (exit code, stdout, stderr)
/// with the temp paths blanked.
fn run(host_name: &str, args: &[&str], tweak: impl FnOnce(&Path)) -> (i32, String, String) {
    let h = host(host_name);
    tweak(h.path());
    let n = tempfile::tempdir().unwrap();
    let out = vmctl()
        .arg("--connect")
        .arg(node(n.path()))
        .arg("--host-root")
        .arg(h.path())
        .arg("gpu")
        .args(args)
        .output()
        .unwrap();
    let clean = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .replace(&n.path().display().to_string(), "[NODE]")
            .replace(&h.path().display().to_string(), "[HOST]")
    };
    (
        out.status.code().unwrap_or(-1),
        clean(&out.stdout),
        clean(&out.stderr),
    )
}

fn refusal(host_name: &str, args: &[&str], tweak: impl FnOnce(&Path)) -> String {
    let (code, stdout, stderr) = run(host_name, args, tweak);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    stderr
}

/// A process holding /dev/nvidia0, the device node of the GPU at `bdf`.
fn gpu_user(bdf: &'static str) -> impl FnOnce(&Path) {
    move |root: &Path| {
        let info = root.join(format!("proc/driver/nvidia/gpus/{bdf}"));
        std::fs::create_dir_all(&info).unwrap();
        std::fs::write(info.join("information"), "Model: x\nDevice Minor: 0\n").unwrap();
        let fd = root.join("proc/4242/fd");
        std::fs::create_dir_all(&fd).unwrap();
        std::os::unix::fs::symlink("/dev/nvidia0", fd.join("5")).unwrap();
        std::fs::write(root.join("proc/4242/comm"), "python3\n").unwrap();
    }
}

/// (snapshot name, host, `gpu` arguments, change to the host tree).
type Case = (
    &'static str,
    &'static str,
    Vec<&'static str>,
    Box<dyn FnOnce(&Path)>,
);

#[test]
fn refusals_are_exact() {
    let cases: Vec<Case> = vec![
        (
            "shared_group_and_boot_vga",
            "amd-b550m-gt710-rtx2070s",
            vec!["attach", "vm1", "--gpu", "04:00.0"],
            Box::new(|_: &Path| {}),
        ),
        (
            "two_gpus_one_group_alone",
            "gpu-two-in-one-group",
            vec!["attach", "vm1", "--gpu", "0"],
            Box::new(|_: &Path| {}),
        ),
        (
            "boot_vga",
            "synthetic-nvidia-boot-vga-only",
            vec!["attach", "vm1", "--gpu", "01:00.0"],
            Box::new(|_: &Path| {}),
        ),
        (
            "no_iommu_even_forced",
            "synthetic-iommu-off",
            vec!["attach", "vm1", "--gpu", "all", "--force"],
            Box::new(|_: &Path| {}),
        ),
        (
            "in_use_on_the_host",
            "synthetic-amd-cpu",
            vec!["attach", "vm1", "--gpu", "41:00.0"],
            Box::new(gpu_user("0000:41:00.0")),
        ),
        (
            "attached_to_another_vm_even_forced",
            "amd-b550m-gt710-rtx2070s",
            vec!["attach", "vm1", "--gpu", "2b:00.1", "--force"],
            Box::new(|_: &Path| {}),
        ),
        (
            "unknown_selector",
            "amd-b550m-gt710-rtx2070s",
            vec!["attach", "vm1", "--gpu", "07:00.0"],
            Box::new(|_: &Path| {}),
        ),
        (
            "bad_selector",
            "amd-b550m-gt710-rtx2070s",
            vec!["attach", "vm1", "--gpu", "gpu0"],
            Box::new(|_: &Path| {}),
        ),
        (
            "no_such_vm",
            "amd-b550m-gt710-rtx2070s",
            vec!["attach", "nope", "--gpu", "2b:00.0"],
            Box::new(|_: &Path| {}),
        ),
        (
            "live_on_a_shut_off_vm",
            "intel-z170-gtx960",
            vec!["attach", "vm1", "--live"],
            Box::new(|_: &Path| {}),
        ),
        (
            "detach_a_gpu_the_vm_does_not_hold",
            "amd-b550m-gt710-rtx2070s",
            vec!["detach", "vm1"],
            Box::new(|_: &Path| {}),
        ),
    ];
    for (name, h, args, tweak) in cases {
        insta::assert_snapshot!(format!("refusal_{name}"), refusal(h, &args, tweak));
    }
}

#[test]
fn forced_and_whole_group_attaches_succeed_on_a_shut_off_vm() {
    // --force passes the boot VGA GPU, with a warning naming what was overridden.
    let (code, stdout, stderr) = run(
        "synthetic-nvidia-boot-vga-only",
        &["attach", "vm1", "--gpu", "0", "--force"],
        |_| {},
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "vm1: attached 0000:01:00.0 (live: -, config: 0000:01:00.0 0000:01:00.1 0000:01:00.2 0000:01:00.3)\n"
    );
    assert!(stderr.starts_with("warning: --force: GPU 0000:01:00.0 is the boot VGA device"));

    // The whole group, by group or by naming both GPUs.
    for sel in [&["--gpu", "group:16"][..], &["--gpu", "0", "--gpu", "1"]] {
        let mut args = vec!["attach", "vm1", "--json"];
        args.extend_from_slice(sel);
        let (code, stdout, stderr) = run("gpu-two-in-one-group", &args, |_| {});
        assert_eq!(code, 0, "{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(
            v["gpus"],
            serde_json::json!(["0000:03:00.0", "0000:04:00.0"])
        );
        assert_eq!(v["config"].as_array().unwrap().len(), 4);
        assert_eq!(v["live"], serde_json::json!([]));
    }

    // A datacenter 3D controller goes alone; a second GPU goes to the same VM (some of the GPUs
    // of an NVSwitch host: its Fabric Manager runs Shared NVSwitch multitenancy).
    let (code, stdout, stderr) = run(
        "hgx-h200x8-nvswitch-truncated",
        &["attach", "vm1", "--gpu", "0", "--gpu", "5d:00.0"],
        |root| {
            let cfg = root.join("usr/share/nvidia/nvswitch");
            std::fs::create_dir_all(&cfg).unwrap();
            std::fs::write(cfg.join("fabricmanager.cfg"), "FABRIC_MODE=1\n").unwrap();
            std::fs::create_dir_all(root.join("proc/4242")).unwrap();
            std::fs::write(root.join("proc/4242/comm"), "nv-fabricmanage\n").unwrap();
        },
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "vm1: attached 0000:18:00.0, 0000:5d:00.0 (live: -, config: 0000:18:00.0 0000:5d:00.0)\n"
    );
}
