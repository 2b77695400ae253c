//! `vmctl gpu attach|detach --vgpu` and the vGPU/MIG part of `gpu status`, on the vGPU fixture
//! hosts (`--host-root`, a fresh copy per run: the sysfs writes land in it) and a libvirt
//! test-driver node: the attribute written for each form, the domain change, the record in the
//! VM's metadata, and each refusal (exit 2, reason, `help:`).

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

const MDEV_HOST: &str = "synthetic-a100-vgpu16-mdev";
const VF_HOST: &str = "synthetic-l40s-vgpu17-sriov";
/// The mdev that exists on the A100 host (VF 41:00.4).
const USED: &str = "aa618089-8b16-4d01-a136-25a0f3c73123";

fn vmctl() -> Command {
    let mut c = Command::cargo_bin("vmctl").unwrap();
    for k in ["VMCTL_CONNECT", "VMCTL_LOG"] {
        c.env_remove(k);
    }
    c
}

/// `vm1`: shut off, empty. `vm2`: shut off, with the A100 host's mdev and the L40S host's
/// taken VF (81:00.4) in its config, both recorded by vmctl in its metadata. With `big`, also a
/// shut-off VM `big` holding the whole A100 (41:00.0).
fn node(dir: &Path, big: bool) -> String {
    let big = if big { BIG } else { "" };
    let p: PathBuf = dir.join("node.xml");
    std::fs::write(
        &p,
        format!(
            "<node>
  <domain type='test'>
    <name>vm1</name>
    <uuid>6b5a8e02-0000-4000-8000-000000000011</uuid>
    <memory>1048576</memory>
    <os><type arch='x86_64' machine='q35'>hvm</type></os>
    <devices/>
    <test:runstate xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>5</test:runstate>
  </domain>
  <domain type='test'>
    <name>vm2</name>
    <uuid>6b5a8e02-0000-4000-8000-000000000012</uuid>
    <metadata>
      <vmctl:vm xmlns:vmctl='https://github.com/gpu-vm-bootstrap/gpu-vm-bootstrap/vmctl/1'>
        <vmctl:os>ubuntu</vmctl:os>
        <vmctl:created>2026-12-05T00:00:00Z</vmctl:created>
        <vmctl:version>0</vmctl:version>
        <vmctl:mdev>{USED}</vmctl:mdev>
        <vmctl:vgpu-vf>0000:81:00.4</vmctl:vgpu-vf>
      </vmctl:vm>
    </metadata>
    <memory>1048576</memory>
    <os><type arch='x86_64' machine='q35'>hvm</type></os>
    <devices>
      <hostdev mode='subsystem' type='mdev' model='vfio-pci'>
        <source><address uuid='{USED}'/></source>
      </hostdev>
      <hostdev mode='subsystem' type='pci' managed='no'>
        <source><address domain='0x0000' bus='0x81' slot='0x00' function='0x4'/></source>
      </hostdev>
    </devices>
    <test:runstate xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>5</test:runstate>
  </domain>
{big}</node>
"
        ),
    )
    .unwrap();
    format!("test://{}", p.display())
}

const BIG: &str = "  <domain type='test'>
    <name>big</name>
    <uuid>6b5a8e02-0000-4000-8000-000000000013</uuid>
    <memory>1048576</memory>
    <os><type arch='x86_64' machine='q35'>hvm</type></os>
    <devices>
      <hostdev mode='subsystem' type='pci' managed='yes'>
        <source><address domain='0x0000' bus='0x41' slot='0x00' function='0x0'/></source>
      </hostdev>
    </devices>
    <test:runstate xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>5</test:runstate>
  </domain>
";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    host: TempDir,
}

fn run_on(host: TempDir, args: &[&str]) -> Run {
    run_node(host, args, false)
}

fn run_node(host: TempDir, args: &[&str], big: bool) -> Run {
    let n = tempfile::tempdir().unwrap();
    let out = vmctl()
        .arg("--connect")
        .arg(node(n.path(), big))
        .arg("--host-root")
        .arg(host.path())
        .arg("gpu")
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        host,
    }
}

fn run(host_name: &str, args: &[&str]) -> Run {
    run_on(fixture_builder::build_host(host_name), args)
}

fn read(host: &TempDir, path: &str) -> String {
    std::fs::read_to_string(host.path().join(path.trim_start_matches('/'))).unwrap()
}

fn json(r: &Run) -> serde_json::Value {
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

#[test]
fn attach_mdev_writes_a_uuid_to_create_and_records_it() {
    let r = run(
        MDEV_HOST,
        &["attach", "vm1", "--vgpu", "GRID A100-4C", "--json"],
    );
    let v = json(&r);
    let uuid = v["plan"]["uuid"].as_str().unwrap().to_string();
    let shape: Vec<usize> = uuid.split('-').map(str::len).collect();
    assert_eq!(shape, [8, 4, 4, 4, 12], "{uuid}");
    assert!(
        uuid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
        "{uuid}"
    );
    assert_eq!(v["plan"]["form"], "mdev");
    assert_eq!(v["plan"]["parent"], "0000:41:00.5");
    assert_eq!(
        (v["live"].as_bool(), v["config"].as_bool()),
        (Some(false), Some(true))
    );
    // The kernel's `create` file got the UUID (the fixture keeps what was written).
    assert_eq!(
        read(
            &r.host,
            "/sys/bus/pci/devices/0000:41:00.5/mdev_supported_types/nvidia-559/create"
        ),
        uuid
    );
    assert!(
        r.stderr
            .contains("note: the vGPU does not survive a host reboot"),
        "{}",
        r.stderr
    );
}

#[test]
fn attach_vf_writes_the_type_id_to_current_vgpu_type() {
    let r = run(VF_HOST, &["attach", "vm1", "--vgpu", "1155"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout,
        "vm1: attached VF 0000:81:00.5 with vGPU type 1155 (NVIDIA L40S-24Q) (live: no, config: yes)\n  wrote \"1155\" to /sys/bus/pci/devices/0000:81:00.5/nvidia/current_vgpu_type\n"
    );
    assert_eq!(
        read(
            &r.host,
            "/sys/bus/pci/devices/0000:81:00.5/nvidia/current_vgpu_type"
        ),
        "1155"
    );
}

#[test]
fn detach_removes_what_vmctl_made() {
    // vm2 holds the A100 host's mdev: `remove` gets 1.
    let r = run(MDEV_HOST, &["detach", "vm2", "--vgpu", "--json"]);
    let v = json(&r);
    assert_eq!(v["config"], true);
    assert!(v["removed"].as_array().unwrap().iter().any(|x| x == USED));
    assert_eq!(
        read(&r.host, &format!("/sys/bus/mdev/devices/{USED}/remove")),
        "1"
    );
    // On the L40S host, vm2's VF goes back to type 0.
    let r = run(VF_HOST, &["detach", "vm2", "--vgpu", "81:00.4"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.starts_with("vm2: removed vGPU 0000:81:00.4"),
        "{}",
        r.stdout
    );
    assert_eq!(
        read(
            &r.host,
            "/sys/bus/pci/devices/0000:81:00.4/nvidia/current_vgpu_type"
        ),
        "0"
    );
}

fn refused(r: &Run) -> &str {
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    &r.stderr
}

#[test]
fn refusals_say_why_and_what_next() {
    // A type not offered: the offered ones are listed.
    let r = run(MDEV_HOST, &["attach", "vm1", "--vgpu", "A100-7C"]);
    let e = refused(&r);
    assert!(e.contains("vGPU type `A100-7C` is not offered here"), "{e}");
    assert!(
        e.contains("help: the types offered (id or name): 0000:41:00.0: nvidia-559 (GRID A100-4C); 0000:41:00.0: nvidia-562 (GRID A100-10C)"),
        "{e}"
    );
    // No free instance: the counts.
    let r = run(MDEV_HOST, &["attach", "vm1", "--vgpu", "nvidia-562"]);
    let e = refused(&r);
    assert!(
        e.contains("no free instance of vGPU type `nvidia-562`: 0000:41:00.0 has 0 of nvidia-562 (GRID A100-10C) available"),
        "{e}"
    );
    assert!(
        e.contains("help: free one: `vmctl gpu detach VM --vgpu`"),
        "{e}"
    );
    // The GPU passed whole to `big`.
    let r = run_node(
        fixture_builder::build_host(MDEV_HOST),
        &["attach", "vm1", "--vgpu", "nvidia-559", "--gpu", "41:00.0"],
        true,
    );
    let e = refused(&r);
    assert!(
        e.contains("GPU 0000:41:00.0 is passed whole to VM `big`"),
        "{e}"
    );
    // Its functions on vfio-pci (no VM holds it, but the host gave it to vfio-pci).
    // (The same L40S host with the PF given to vfio-pci.)
    let mut desc =
        std::fs::read_to_string(fixture_builder::hosts_dir().join(format!("{VF_HOST}.toml")))
            .unwrap();
    desc = desc.replacen(
        "subsystem = \"10de:1851\"\ndriver = \"nvidia\"",
        "subsystem = \"10de:1851\"\ndriver = \"vfio-pci\"",
        1,
    );
    let r = run_on(
        fixture_builder::build_from_str(&desc).unwrap(),
        &["attach", "vm1", "--vgpu", "1155"],
    );
    let e = refused(&r);
    assert!(e.contains("GPU 0000:81:00.0 is bound to vfio-pci"), "{e}");
    // A host without either form.
    let r = run(
        "synthetic-h100-mig",
        &["attach", "vm1", "--vgpu", "nvidia-559"],
    );
    let e = refused(&r);
    assert!(e.contains("no vGPU on this host"), "{e}");
    assert!(e.contains("help: or pass the whole GPU"), "{e}");
    // Nothing to detach.
    let r = run(MDEV_HOST, &["detach", "vm1", "--vgpu"]);
    assert!(refused(&r).contains("VM `vm1` has no vGPU"));
}

#[test]
fn status_lists_form_types_users_and_mig() {
    let r = run(MDEV_HOST, &["status", "--json"]);
    let v = json(&r);
    let pf = &v["gpus"][0];
    assert_eq!(pf["bdf"], "0000:41:00.0");
    assert_eq!(pf["vgpu"]["form"], "mdev");
    assert_eq!(pf["vgpu"]["types"][0]["available"], 3);
    assert_eq!(pf["vgpu"]["in_use"][0]["id"], USED);
    assert_eq!(pf["vgpu"]["in_use"][0]["vm"], "vm2");
    assert_eq!(v["gpus"][1]["vgpu"]["vf_of"], "0000:41:00.0");
    let text = run(MDEV_HOST, &["status"]).stdout;
    assert!(
        text.contains("    vGPU:       mdev; types: nvidia-559 GRID A100-4C (3 free), nvidia-562 GRID A100-10C (0 free)\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "    vGPU used:  {USED} (GRID A100-4C) on 0000:41:00.4, VM vm2\n"
        )),
        "{text}"
    );
    let text = run(VF_HOST, &["status"]).stdout;
    assert!(text.contains("    vGPU:       sriov-vf; types: 1155 NVIDIA L40S-24Q (3 free), 1167 NVIDIA L40S-24C (3 free)\n"), "{text}");
    assert!(
        text.contains("    vGPU used:  0000:81:00.4 (NVIDIA L40S-24Q) on 0000:81:00.4, VM vm2\n"),
        "{text}"
    );
    let text = run("synthetic-h100-mig", &["status"]).stdout;
    assert!(
        text.contains("    MIG:        mode not reported (no nvidia-smi); instances: GI 1 (CI 0), GI 2 (CI 0)\n"),
        "{text}"
    );
    assert!(
        text.contains("    MIG note:   MIG mode is on: passed whole"),
        "{text}"
    );
}

#[test]
fn a_gpu_in_mig_mode_passed_whole_says_it_keeps_mig_mode() {
    let r = run("synthetic-h100-mig", &["attach", "vm1", "--gpu", "c1:00.0"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(
            "note: 0000:c1:00.0: MIG mode is on: passed whole, the GPU stays in MIG mode"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn a_gpu_hosting_vgpus_is_not_passed_whole() {
    let r = run(MDEV_HOST, &["attach", "vm1", "--gpu", "41:00.0"]);
    let e = refused(&r);
    assert!(
        e.contains(&format!(
            "GPU 0000:41:00.0 hosts vGPUs ({USED}): passing it whole"
        )),
        "{e}"
    );
    // One of its VFs named alone: the same.
    let r = run(VF_HOST, &["attach", "vm1", "--gpu", "81:00.6"]);
    assert!(refused(&r).contains("GPU 0000:81:00.0 hosts vGPUs (0000:81:00.4)"));
}
