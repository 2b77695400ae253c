//! CLI tests of `vmctl talos schematic|versions|config` and `vmctl create talos` (assert_cmd)
//! against a local stand-in for the Image Factory and GitHub: output contracts, files 0600, and
//! bad input exiting 2 with a `help:` line and nothing made.

use crate::talos_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use assert_cmd::Command;
use httpmock::MockServer;
use predicates::prelude::*;
use talos_image::Schematic;
use talos_support::*;

/// vmctl with every setting from the environment cleared and the mock's URLs.
fn vmctl(server: Option<&MockServer>) -> Command {
    let mut c = Command::cargo_bin("vmctl").unwrap();
    for k in [
        "VMCTL_CONNECT",
        "VMCTL_BRIDGE",
        "VMCTL_STORAGE_DIR",
        "VMCTL_IMAGE_CACHE",
        "VMCTL_STATE_DIR",
        "VMCTL_TALOS_FACTORY_URL",
        "VMCTL_GITHUB_API_URL",
    ] {
        c.env_remove(k);
    }
    // Nothing may reach the internet: an unset mock points at a closed port.
    let base = server
        .map(|s| s.base_url())
        .unwrap_or_else(|| "http://127.0.0.1:9".into());
    c.env("VMCTL_TALOS_FACTORY_URL", &base)
        .env("VMCTL_GITHUB_API_URL", &base);
    c
}

fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).unwrap()
}

#[test]
fn schematic_offline_prints_canonical_yaml_and_id() {
    // The upstream vector for the empty schematic.
    vmctl(None)
        .args(["talos", "schematic"])
        .assert()
        .success()
        .stdout("customization: {}\n---\nid: 376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba\n");
    vmctl(None)
        .args([
            "talos",
            "schematic",
            "--kernel-arg",
            "noapic",
            "--kernel-arg",
            "nolapic",
        ])
        .assert()
        .success()
        .stdout(predicate::str::ends_with(
            "id: 9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c\n",
        ));
    let out = vmctl(None)
        .args([
            "talos",
            "schematic",
            "--nvidia",
            "lts",
            "--driver",
            "proprietary",
            "--extension",
            "qemu-guest-agent",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out.stdout);
    let want = [
        "siderolabs/nonfree-kmod-nvidia-lts",
        "siderolabs/nvidia-container-toolkit-lts",
        "siderolabs/qemu-guest-agent",
    ];
    assert_eq!(v["extensions"], serde_json::json!(want));
    assert_eq!(v["id"], Schematic::with_extensions(want).id().unwrap().id);
    assert_eq!(v["computed"], "offline");
    assert!(v["yaml"].as_str().unwrap().contains("officialExtensions"));
}

#[test]
fn schematic_driver_follows_the_detected_gpu() {
    let tree = fixture_builder::build_host("synthetic-vfio-bound");
    let out = vmctl(None)
        .arg("--host-root")
        .arg(tree.path())
        .args(["talos", "schematic", "--nvidia", "production", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v = json(&out.stdout);
    assert_eq!(
        v["extensions"][0],
        "siderolabs/nvidia-open-gpu-kernel-modules-production"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Turing or newer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A schematic file as the starting point keeps its own fields.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.yaml");
    std::fs::write(
        &file,
        "customization:\n  meta:\n    - key: 10\n      value: foo\n",
    )
    .unwrap();
    vmctl(None)
        .args(["talos", "schematic", "--file"])
        .arg(&file)
        .assert()
        .success()
        .stdout(predicate::str::ends_with(
            "id: d308a2a5ee2277bed5fbaa104fcbc8d59122abfa737df987a95b4ca763459a7f\n",
        ));
}

#[test]
fn schematic_refusals_exit_2_with_help() {
    // Not plain-safe: no offline ID.
    vmctl(None)
        .args(["talos", "schematic", "--kernel-arg", "a: b"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("use the online mode"))
        .stderr(predicate::str::contains("help: add --online"));
    // Unknown extension, checked online.
    let server = factory(None);
    vmctl(Some(&server))
        .args([
            "talos",
            "schematic",
            "--online",
            "--extension",
            "no-such-thing",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("siderolabs/no-such-thing"))
        .stderr(predicate::str::contains("help:"));
    // A driver without the preset is a usage error (clap).
    vmctl(None)
        .args(["talos", "schematic", "--driver", "open"])
        .assert()
        .code(2);
}

#[test]
fn schematic_online_is_checked_against_the_offline_id() {
    let server = factory(None);
    let s = Schematic::with_extensions(["siderolabs/qemu-guest-agent"]);
    let id = accept_schematic(&server, &s);
    let out = vmctl(Some(&server))
        .args([
            "talos",
            "schematic",
            "--online",
            "--extension",
            "qemu-guest-agent",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out.stdout);
    assert_eq!(v["id"], id);
    assert_eq!(v["computed"], "online-verified");
}

#[test]
fn versions_lists_releases_and_marks_latest() {
    let server = factory(None);
    let out = vmctl(Some(&server))
        .args(["talos", "versions", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v = json(&out.stdout);
    assert_eq!(v["latest"], LATEST);
    let tags: Vec<&str> = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["version"].as_str().unwrap())
        .collect();
    assert_eq!(
        tags,
        ["v1.13.0-beta.0", LATEST, "v1.11.5", "v1.10.7"],
        "draft dropped"
    );
    vmctl(Some(&server))
        .args(["talos", "versions"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("{LATEST}  (latest)\n")))
        .stdout(predicate::str::contains("v1.13.0-beta.0  (pre-release)\n"));
    // The factory's list instead: no draft/pre-release flags, pre-releases by their tag.
    let out = vmctl(Some(&server))
        .args(["talos", "versions", "--source", "factory", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v = json(&out.stdout);
    assert_eq!(v["latest"], LATEST);
    assert!(v["source"].as_str().unwrap().ends_with("/versions"));
    // Unreachable API: a failure naming the URL and the setting.
    vmctl(None)
        .args(["talos", "versions"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("127.0.0.1:9"))
        .stderr(predicate::str::contains("github_api_url"));
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn config_writes_four_private_files_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("lab");
    let out = vmctl(None)
        .args([
            "talos",
            "config",
            "--cluster",
            "lab",
            "--endpoint",
            "https://198.18.0.10:6443",
            "--version",
            "v1.11.5",
            "--out",
        ])
        .arg(&out_dir)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out.stdout);
    assert_eq!(v["version"], "v1.11.5");
    for f in [
        "secrets.yaml",
        "controlplane.yaml",
        "worker.yaml",
        "talosconfig",
    ] {
        assert_eq!(mode(&out_dir.join(f)), 0o600, "{f}");
    }
    let cp = std::fs::read_to_string(out_dir.join("controlplane.yaml")).unwrap();
    let docs = yaml_docs(&cp);
    assert_eq!(docs[0]["machine"]["type"], "controlplane");
    assert_eq!(
        docs[0]["cluster"]["controlPlane"]["endpoint"],
        "https://198.18.0.10:6443"
    );
    let worker = std::fs::read_to_string(out_dir.join("worker.yaml")).unwrap();
    assert_eq!(yaml_docs(&worker)[0]["machine"]["type"], "worker");
    let before = std::fs::read(out_dir.join("secrets.yaml")).unwrap();
    vmctl(None)
        .args([
            "talos",
            "config",
            "--cluster",
            "lab",
            "--endpoint",
            "https://198.18.0.10:6443",
            "--version",
            "v1.11.5",
            "--out",
        ])
        .arg(&out_dir)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("already exists"))
        .stderr(predicate::str::contains("help:"));
    assert_eq!(std::fs::read(out_dir.join("secrets.yaml")).unwrap(), before);
}

#[test]
fn config_refuses_bad_endpoint_and_cluster_name() {
    let dir = tempfile::tempdir().unwrap();
    for (cluster, endpoint, msg) in [
        ("lab", "198.18.0.10:6443", "not an https:// URL"),
        ("lab", "https://198.18.0.10:port", "bad port"),
        ("Lab_1", "https://198.18.0.10:6443", "cluster name"),
    ] {
        vmctl(None)
            .args([
                "talos",
                "config",
                "--cluster",
                cluster,
                "--endpoint",
                endpoint,
            ])
            .args(["--version", "v1.12.1", "--out"])
            .arg(dir.path().join("x"))
            .assert()
            .code(2)
            .stderr(predicate::str::contains(msg))
            .stderr(predicate::str::contains("help:"));
    }
    assert!(!dir.path().join("x").exists(), "nothing written");
}

/// A fixture host with gvbfix0 and its own libvirt test-driver node (in `dir`); storage and the
/// image cache are host paths, so they land under the fixture tree.
fn create_cmd(server: &MockServer, tree: &Path, dir: &Path) -> Command {
    let node = dir.join("node.xml");
    if !node.exists() {
        std::fs::write(&node, "<node/>\n").unwrap();
    }
    let mut c = vmctl(Some(server));
    c.arg("--connect")
        .arg(format!("test://{}", node.display()))
        .arg("--host-root")
        .arg(tree)
        .env("VMCTL_STORAGE_DIR", "/vms")
        .env("VMCTL_IMAGE_CACHE", "/cache")
        .env("VMCTL_DOMAIN_TYPE", "qemu")
        .args(["create", "talos"]);
    c
}

#[test]
fn create_talos_cli_defines_and_refuses_bad_input_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let server = factory(Some(fake_qcow2(dir.path(), "64M")));
    let tree = fixture_builder::build_host("intel-z370-no-nvidia");
    std::fs::create_dir_all(tree.path().join("sys/class/net/gvbfix0/bridge")).unwrap();
    let base = [
        "--bridge",
        "gvbfix0",
        "--no-start",
        "--disk",
        "1G",
        "--ip",
        "198.18.9.10/24",
    ];

    // A version that does not exist, a pre-release without --allow-prerelease.
    for (v, msg, help) in [
        (
            "v1.9.99",
            "is not a published release",
            "vmctl talos versions",
        ),
        ("v1.13.0-beta.0", "is a pre-release", "--allow-prerelease"),
    ] {
        create_cmd(&server, tree.path(), dir.path())
            .arg("cp1")
            .args(base)
            .args(["--version", v])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(msg))
            .stderr(predicate::str::contains(help));
    }
    // An endpoint that is not a URL; a worker without a cluster.
    create_cmd(&server, tree.path(), dir.path())
        .arg("cp1")
        .args(base)
        .args(["--endpoint", "198.18.9.10"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not an https:// URL"));
    create_cmd(&server, tree.path(), dir.path())
        .arg("w1")
        .args(base)
        .args(["--role", "worker", "--cluster", "nope"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no Talos cluster \"nope\""));
    assert!(!tree.path().join("vms").exists(), "nothing made");

    // The real thing.
    let out = create_cmd(&server, tree.path(), dir.path())
        .arg("cp1")
        .args(base)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out.stdout);
    assert_eq!(v["version"], LATEST);
    assert_eq!(v["defined"], true);
    assert_eq!(v["started"], false);
    assert_eq!(v["new_cluster"], true);
    let seed = Path::new(v["seed"].as_str().unwrap());
    let user_data = iso_file(seed, "user-data");
    assert!(user_data.contains("198.18.9.10/24"));
    let tc = tree.path().join("var/lib/vmctl/talos/cp1/talosconfig");
    assert_eq!(mode(&tc), 0o600);

    // The same cluster name again (a new VM name would clash with it): refused, exit 2.
    create_cmd(&server, tree.path(), dir.path())
        .arg("cp1")
        .args([
            "--bridge",
            "gvbfix0",
            "--no-start",
            "--ip",
            "198.18.9.11/24",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "Talos cluster \"cp1\" already exists",
        ))
        .stderr(predicate::str::contains(
            "help: to add this VM to it, pass `--cluster cp1`",
        ));

    // The human view prints the next steps.
    create_cmd(&server, tree.path(), dir.path())
        .arg("w1")
        .args([
            "--bridge",
            "gvbfix0",
            "--no-start",
            "--disk",
            "1G",
            "--ip",
            "198.18.9.20/24",
        ])
        .args(["--role", "worker", "--cluster", "cp1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("talosconfig: "))
        .stdout(predicate::str::contains("kubeconfig"))
        .stderr(predicate::str::contains("worker of cluster cp1"));
}

#[test]
fn create_talos_iso_cli_shows_the_schematic_installer_and_boot_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = factory(None);
    serve_metal_iso(&server, fake_iso(dir.path()));
    let tree = fixture_builder::build_host("intel-z370-no-nvidia");
    std::fs::create_dir_all(tree.path().join("sys/class/net/gvbfix0/bridge")).unwrap();
    let base = ["--bridge", "gvbfix0", "--no-start", "--disk", "1G", "--iso"];

    // Bad input with --iso: exit 2, a help: line, nothing made, nothing downloaded.
    create_cmd(&server, tree.path(), dir.path())
        .arg("iso0")
        .args(base)
        .args(["--ip", "198.18.9.40/24", "--mac", "not-a-mac"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("help:"));
    assert!(!tree.path().join("vms").exists(), "nothing made");
    assert!(!tree.path().join("cache").exists(), "nothing downloaded");

    let out = create_cmd(&server, tree.path(), dir.path())
        .arg("iso1")
        .args(base)
        .args(["--ip", "198.18.9.41/24", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out.stdout);
    assert_eq!(v["media"], "metal-iso");
    assert_eq!(v["image_kind"], "metal-iso");
    assert_eq!(
        v["kernel_args"],
        serde_json::json!(["talos.config=metal-iso"])
    );
    assert_eq!(v["seed_label"], "metal-iso");
    let id = v["schematic_id"].as_str().unwrap();
    assert!(
        v["installer_image"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/metal-installer/{id}:{LATEST}"))
    );
    let order: Vec<_> = v["boot_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["order"].as_u64().unwrap(), b["target"].as_str().unwrap()))
        .collect();
    assert_eq!(order, [(1, "vda"), (2, "sda")]);
    assert!(
        v["boot_order"][1]["path"]
            .as_str()
            .unwrap()
            .starts_with(tree.path().join("cache").to_str().unwrap()),
        "the ISO is the cached one: {v}"
    );
    assert_eq!(
        iso_file(Path::new(v["seed"].as_str().unwrap()), "config.yaml"),
        rerender_user_data(&v, &server.base_url(), None)
    );

    // The human view says the same on stderr.
    create_cmd(&server, tree.path(), dir.path())
        .arg("iso2")
        .args(base)
        .args(["--ip", "198.18.9.42/24"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "kernel args talos.config=metal-iso",
        ))
        .stderr(predicate::str::contains("/metal-installer/"))
        .stderr(predicate::str::contains("config on the metal-iso volume"))
        .stderr(predicate::str::contains("boot 1: vda"))
        .stderr(predicate::str::contains("boot 2: sda"))
        .stderr(predicate::str::contains("metal-amd64.iso sha256"));
}

/// A fixture host with a bridge `gvbfix0`: a name no live interface has, because `--ip auto`
/// (the Talos default) scans the live bridge of that name, and tests never touch real ones.
fn bridged_host(name: &str) -> tempfile::TempDir {
    let tree = fixture_builder::build_host(name);
    std::fs::create_dir_all(tree.path().join("sys/class/net/gvbfix0/bridge")).unwrap();
    tree
}

fn created(c: &mut Command) -> serde_json::Value {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out.stdout)
}

#[test]
fn create_talos_without_a_name_picks_the_next_free_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = factory(Some(fake_qcow2(dir.path(), "64M")));
    let tree = bridged_host("intel-z370-no-nvidia");
    let base = [
        "--bridge",
        "gvbfix0",
        "--no-start",
        "--disk",
        "1G",
        "--json",
    ];
    let first = created(
        create_cmd(&server, tree.path(), dir.path())
            .args(base)
            .args(["--ip", "198.18.9.60/24"]),
    );
    assert_eq!(first["name"], "talos-1");
    assert!(tree.path().join("vms/talos-1").is_dir());
    let second = created(
        create_cmd(&server, tree.path(), dir.path())
            .args(base)
            .args(["--ip", "198.18.9.61/24"]),
    );
    assert_eq!(second["name"], "talos-2");
    // Inside a cluster: `<cluster>-w-N`; the human view prints the name first on stdout.
    create_cmd(&server, tree.path(), dir.path())
        .args(["--bridge", "gvbfix0", "--no-start", "--disk", "1G"])
        .args([
            "--ip",
            "198.18.9.62/24",
            "--cluster",
            "talos-1",
            "--role",
            "worker",
        ])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("talos-1-w-1\n"));
}

#[test]
fn create_talos_defaults_to_an_automatic_address() {
    let dir = tempfile::tempdir().unwrap();
    let server = factory(None);
    let tree = bridged_host("intel-z370-no-nvidia");
    // No --ip, no --endpoint: the address is `auto`, whose scan of the (absent) live bridge
    // fails, not a demand for an endpoint.
    create_cmd(&server, tree.path(), dir.path())
        .args(["cp1", "--bridge", "gvbfix0", "--no-start"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("needs a Kubernetes API endpoint").not())
        .stderr(predicate::str::contains("ARP scan on gvbfix0"));
    assert!(!tree.path().join("vms/cp1").exists(), "nothing kept");
}

#[test]
fn create_talos_gpu_alone_passes_the_isolated_gpu_not_the_boot_vga() {
    // GT 710 (Kepler): boot VGA in a shared group; RTX 2070 SUPER (Turing): isolated.
    let dir = tempfile::tempdir().unwrap();
    let server = factory(Some(fake_qcow2(dir.path(), "64M")));
    let tree = bridged_host("amd-b550m-gt710-rtx2070s");
    let v = created(
        create_cmd(&server, tree.path(), dir.path())
            .args([
                "g1",
                "--bridge",
                "gvbfix0",
                "--no-start",
                "--disk",
                "1G",
                "--gpu",
            ])
            .args(["--ip", "198.18.9.70/24", "--json"]),
    );
    let ext: Vec<&str> = v["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        ext.contains(&"siderolabs/nvidia-open-gpu-kernel-modules-production"),
        "the driver follows the Turing GPU being passed: {ext:?}"
    );
    assert!(v["driver_note"].as_str().unwrap().contains("TU104"), "{v}");
}

#[test]
fn create_talos_gpu_alone_says_which_gpus_were_excluded_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let server = factory(None);
    let tree = bridged_host("synthetic-nvidia-boot-vga-only");
    create_cmd(&server, tree.path(), dir.path())
        .args([
            "g2",
            "--bridge",
            "gvbfix0",
            "--no-start",
            "--gpu",
            "--ip",
            "198.18.9.71/24",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no NVIDIA GPU qualifies"))
        .stderr(predicate::str::contains(
            "0000:01:00.0 is the boot VGA device",
        ))
        .stderr(predicate::str::contains(
            "help: name the GPUs with `--gpu SELECTOR`",
        ));
    assert!(!tree.path().join("vms/g2").exists(), "nothing kept");
}

#[test]
fn create_talos_refuses_a_gpu_no_current_driver_supports() {
    let dir = tempfile::tempdir().unwrap();
    let server = factory(None);
    let tree = bridged_host("amd-b550m-gt710-rtx2070s");
    create_cmd(&server, tree.path(), dir.path())
        .args([
            "k1",
            "--bridge",
            "gvbfix0",
            "--no-start",
            "--ip",
            "198.18.9.72/24",
        ])
        .args(["--gpu", "04:00.0", "--gpu-force"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "no GPU to pass is supported by current NVIDIA drivers",
        ))
        .stderr(predicate::str::contains("help:"));
    assert!(!tree.path().join("vms/k1").exists(), "nothing kept");
}

#[test]
fn talos_schematic_driver_follows_the_gpu_to_pass_not_the_boot_vga() {
    let tree = fixture_builder::build_host("amd-b550m-gt710-rtx2070s");
    let out = vmctl(None)
        .arg("--host-root")
        .arg(tree.path())
        .args(["talos", "schematic", "--nvidia", "production", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out.stdout);
    assert_eq!(
        v["extensions"][0], "siderolabs/nvidia-open-gpu-kernel-modules-production",
        "{v}"
    );
}

#[test]
fn ssh_to_a_talos_vm_explains_and_prints_the_talosctl_command() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node.xml");
    std::fs::write(
        &node,
        "<node>
  <domain type='test'>
    <name>lab</name>
    <uuid>6b5a8e02-0000-4000-8000-0000000000aa</uuid>
    <memory>1048576</memory>
    <os><type arch='x86_64' machine='q35'>hvm</type></os>
    <metadata>
      <vmctl:vm xmlns:vmctl='https://github.com/gpu-vm-bootstrap/gpu-vm-bootstrap/vmctl/1'>
        <vmctl:os>talos</vmctl:os>
        <vmctl:ip>198.18.9.80/24</vmctl:ip>
      </vmctl:vm>
    </metadata>
    <devices/>
  </domain>
</node>
",
    )
    .unwrap();
    let root = dir.path().join("root");
    let cluster = root.join("var/lib/vmctl/talos/lab");
    std::fs::create_dir_all(&cluster).unwrap();
    let talosconfig = cluster.join("talosconfig");
    vmctl(None)
        .arg("--connect")
        .arg(format!("test://{}", node.display()))
        .arg("--host-root")
        .arg(&root)
        .args(["ssh", "lab"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "runs Talos Linux, which has no SSH",
        ))
        .stderr(predicate::str::contains(format!(
            "talosctl --talosconfig {} -n 198.18.9.80 dashboard",
            talosconfig.display()
        )));
}

#[test]
fn an_explicit_version_works_without_github() {
    let dir = tempfile::tempdir().unwrap();
    let server = factory(Some(fake_qcow2(dir.path(), "64M")));
    let tree = fixture_builder::build_host("intel-z370-no-nvidia");
    std::fs::create_dir_all(tree.path().join("sys/class/net/gvbfix0/bridge")).unwrap();
    // GitHub's API at a closed port: only the factory answers.
    let out = create_cmd(&server, tree.path(), dir.path())
        .env("VMCTL_GITHUB_API_URL", "http://127.0.0.1:9")
        .arg("cp1")
        .args(["--bridge", "gvbfix0", "--no-start", "--disk", "1G"])
        .args(["--ip", "198.18.9.10/24", "--version", "v1.11.5", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out.stdout)["version"], "v1.11.5");
    // Nothing at all answers `talos config`.
    vmctl(None)
        .args(["talos", "config", "--cluster", "lab"])
        .args([
            "--endpoint",
            "https://198.18.0.10:6443",
            "--version",
            "v1.11.5",
        ])
        .arg("--out")
        .arg(dir.path().join("lab"))
        .assert()
        .success();
}

#[test]
fn an_unresolvable_latest_suggests_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = factory(Some(fake_qcow2(dir.path(), "64M")));
    let tree = fixture_builder::build_host("intel-z370-no-nvidia");
    std::fs::create_dir_all(tree.path().join("sys/class/net/gvbfix0/bridge")).unwrap();
    let config = vmctl(None)
        .args(["talos", "config", "--cluster", "lab"])
        .args(["--endpoint", "https://198.18.0.10:6443", "--out"])
        .arg(dir.path().join("lab"))
        .output()
        .unwrap();
    let create = create_cmd(&server, tree.path(), dir.path())
        .env("VMCTL_GITHUB_API_URL", "http://127.0.0.1:9")
        .arg("cp1")
        .args(["--bridge", "gvbfix0", "--no-start", "--disk", "1G"])
        .args(["--ip", "198.18.9.10/24"])
        .output()
        .unwrap();
    for out in [config, create] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("127.0.0.1:9"), "{err}");
        assert!(
            err.lines()
                .any(|l| l.starts_with("help: ") && l.contains("--version")),
            "{err}"
        );
    }
    assert!(!tree.path().join("vms").exists(), "nothing made");
}
