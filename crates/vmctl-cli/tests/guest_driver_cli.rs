//! `vmctl create ubuntu --gpu --gpu-stack` and `vmctl gpu check` through the real binary, on
//! fixture hosts (`--host-root`) and libvirt's test driver: the guest stack in the seed and the
//! JSON, the Kepler refusal, `--gpu-stack` without GPUs, `gpu check` on a stopped VM and a
//! Talos node.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

fn vmctl() -> Command {
    let mut c = Command::cargo_bin("vmctl").unwrap();
    for k in [
        "VMCTL_CONNECT",
        "VMCTL_BRIDGE",
        "VMCTL_STORAGE_DIR",
        "VMCTL_IMAGE_CACHE",
        "VMCTL_SSH_KEY",
        "VMCTL_SSH_USER",
        "VMCTL_LOG",
        "VMCTL_GUEST_DRIVER_BRANCH",
        "VMCTL_GUEST_CUDA_REPO",
        "VMCTL_GUEST_CUDA_KEY",
        "VMCTL_GUEST_CONTAINER_KEY",
    ] {
        c.env_remove(k);
    }
    c.timeout(std::time::Duration::from_secs(120));
    c
}

/// A fixture host (committed, or this crate's `tests/fixtures/NAME.toml`) with bridge br0 and
/// an SSH key beside it.
struct Host {
    tree: TempDir,
    key: PathBuf,
}

fn host(name: &str) -> Host {
    let own = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.toml"));
    let tree = match std::fs::read_to_string(&own) {
        Ok(text) => fixture_builder::build_from_str(&text).unwrap(),
        Err(_) => fixture_builder::build_host(name),
    };
    std::fs::create_dir_all(tree.path().join("sys/class/net/br0/bridge")).unwrap();
    let key = tree.path().join("id.pub");
    std::fs::write(
        &key,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6 t@h\n",
    )
    .unwrap();
    Host { tree, key }
}

impl Host {
    /// `create ubuntu NAME --seed-only` on the test driver with `extra`; the CUDA key URL is
    /// `key_url`, and so is the container toolkit's (nothing is fetched for a refusal).
    fn create(&self, name: &str, key_url: &str, extra: &[&str]) -> std::process::Output {
        vmctl()
            .env("VMCTL_STORAGE_DIR", "/vms")
            .env("VMCTL_IMAGE_CACHE", "/cache")
            .env("VMCTL_GUEST_CUDA_KEY", key_url)
            .env("VMCTL_GUEST_CONTAINER_KEY", key_url)
            .arg("--host-root")
            .arg(self.tree.path())
            .args(["--connect", "test:///default", "create", "ubuntu", name])
            .args(["--bridge", "br0", "--seed-only", "--ssh-key"])
            .arg(&self.key)
            .args(extra)
            .output()
            .unwrap()
    }
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_kepler_gpu_is_refused_for_a_driver_install_and_passed_with_stack_none() {
    let h = host("gpu-kepler-isolated");
    let o = h.create(
        "kep1",
        "http://127.0.0.1:9/never-fetched",
        &["--gpu", "0000:01:00.0"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("Kepler") && err.contains("470 legacy"),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("help:") && l.contains("--gpu-stack none")),
        "{err}"
    );
    assert!(!h.tree.path().join("vms/kep1").exists(), "nothing made");
    let o = h.create(
        "kep2",
        "http://127.0.0.1:9/never-fetched",
        &["--gpu", "0000:01:00.0", "--gpu-stack", "none", "--json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["guest_stack"]["stack"], "none");
    assert_eq!(v["guest_stack"]["packages"], serde_json::json!([]));
}

#[test]
fn gpu_stack_without_a_gpu_is_a_usage_error_except_none() {
    let h = host("intel-z170-gtx960");
    for stack in ["driver", "container"] {
        let o = h.create("nogpu1", "http://127.0.0.1:9/x", &["--gpu-stack", stack]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("needs GPUs"), "{err}");
        assert!(
            err.lines()
                .any(|l| l.starts_with("help:") && l.contains("--gpu")),
            "{err}"
        );
    }
    let o = h.create("nogpu2", "http://127.0.0.1:9/x", &["--gpu-stack", "none"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = h.create(
        "nogpu3",
        "http://127.0.0.1:9/x",
        &["--gpu-stack", "everything"],
    );
    assert_eq!(o.status.code(), Some(2));
}

/// Serves one file once per request on 127.0.0.1 (a key URL for the create).
fn serve(body: Vec<u8>, requests: usize) -> (String, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/3bf863cc.pub", l.local_addr().unwrap());
    let t = std::thread::spawn(move || {
        for _ in 0..requests {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&body).unwrap();
        }
    });
    (url, t)
}

const ARMOURED: &[u8] = include_bytes!("../../vmctl/src/gpu/guest_stack/test-key.asc");
const BINARY: &[u8] = include_bytes!("../../vmctl/src/gpu/guest_stack/test-key.gpg");

#[test]
fn a_turing_gpu_gets_the_open_driver_in_the_seed_and_the_json() {
    let h = host("amd-b550m-gt710-rtx2070s");
    let (url, t) = serve(ARMOURED.to_vec(), 2);
    let o = h.create(
        "tu1",
        &url,
        &[
            "--gpu",
            "0000:2b:00.0",
            "--gpu-force",
            "--gpu-stack",
            "container",
            "--json",
        ],
    );
    t.join().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let st = &v["guest_stack"];
    assert_eq!(st["stack"], "container");
    assert_eq!(st["flavour"], "open");
    assert_eq!(
        st["packages"],
        serde_json::json!(["nvidia-open-580", "nvidia-container-toolkit"])
    );
    assert!(st["reason"].as_str().unwrap().contains("Turing"), "{st}");
    // The seed's user-data: the keyring as gpg --dearmor writes it.
    let seed = h.tree.path().join("vms/tu1/seed.iso");
    let out = std::process::Command::new("isoinfo")
        .args(["-R", "-x", "/user-data", "-i"])
        .arg(&seed)
        .output()
        .unwrap();
    let ud = String::from_utf8(out.stdout).unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(BINARY);
    assert!(ud.contains(&b64), "{ud}");
    assert!(ud.contains("! modprobe nvidia"), "{ud}");
}

#[test]
fn a_key_url_that_fails_stops_the_create_with_the_url() {
    let h = host("amd-b550m-gt710-rtx2070s");
    let o = h.create(
        "tu2",
        "http://127.0.0.1:9/3bf863cc.pub",
        &["--gpu", "0000:2b:00.0", "--gpu-force"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("127.0.0.1:9/3bf863cc.pub"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("help:") && l.contains("guest_cuda_key")),
        "{err}"
    );
    assert!(!h.tree.path().join("vms/tu2").exists(), "rolled back");
}

/// A node with a stopped Ubuntu VM and a running Talos VM.
fn node(dir: &Path) -> String {
    let p = dir.join("node.xml");
    std::fs::write(
        &p,
        "<node>
  <domain type='test'>
    <name>stopped1</name>
    <uuid>6b5a8e02-0000-4000-8000-0000000001a1</uuid>
    <memory>1048576</memory>
    <os><type arch='x86_64' machine='q35'>hvm</type></os>
    <metadata>
      <vmctl:vm xmlns:vmctl='https://github.com/gpu-vm-bootstrap/gpu-vm-bootstrap/vmctl/1'>
        <vmctl:os>ubuntu</vmctl:os>
      </vmctl:vm>
    </metadata>
    <devices/>
    <test:runstate xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>5</test:runstate>
  </domain>
  <domain type='test'>
    <name>talos1</name>
    <uuid>6b5a8e02-0000-4000-8000-0000000001a2</uuid>
    <memory>1048576</memory>
    <os><type arch='x86_64' machine='q35'>hvm</type></os>
    <metadata>
      <vmctl:vm xmlns:vmctl='https://github.com/gpu-vm-bootstrap/gpu-vm-bootstrap/vmctl/1'>
        <vmctl:os>talos</vmctl:os>
      </vmctl:vm>
    </metadata>
    <devices/>
  </domain>
</node>
",
    )
    .unwrap();
    format!("test://{}", p.display())
}

#[test]
fn gpu_check_refuses_a_stopped_vm_and_a_talos_node_with_help() {
    let h = host("intel-z170-gtx960");
    let n = tempfile::tempdir().unwrap();
    let uri = node(n.path());
    let check = |vm: &str| {
        vmctl()
            .arg("--connect")
            .arg(&uri)
            .arg("--host-root")
            .arg(h.tree.path())
            .args(["gpu", "check", vm])
            .output()
            .unwrap()
    };
    let o = check("stopped1");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("stopped1 is not running"), "{err}");
    assert!(err.contains("help: start it first"), "{err}");
    let o = check("talos1");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("does not support Talos nodes yet"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("help:") && l.contains("talosctl")),
        "{err}"
    );
}

#[test]
fn an_hgx_guest_gets_fabric_manager_only_when_it_holds_the_nvswitches() {
    let h = host("hgx-h200x8-nvswitch");
    let (url, t) = serve(ARMOURED.to_vec(), 1);
    let o = h.create("hgx-all", &url, &["--gpu", "all", "--json"]);
    t.join().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["guest_stack"]["packages"],
        serde_json::json!(["nvidia-open-580", "nvidia-fabricmanager-580"])
    );
    // One GPU without the switches (forced past the fabric refusal): no fabric to manage.
    let (url, t) = serve(ARMOURED.to_vec(), 1);
    let o = h.create("hgx-one", &url, &["--gpu", "0", "--gpu-force", "--json"]);
    t.join().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["guest_stack"]["packages"],
        serde_json::json!(["nvidia-open-580"])
    );
}
