//! Two creates of one name never share a VM directory: two real `vmctl` processes, the first
//! stalled inside its image download when the second starts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use hostio::SystemRunner;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6 t@h\n";

/// A tiny HTTP server whose one file stalls mid-body until the test lets it go: the first
/// create is inside its download for as long as the test wants.
struct StallingServer {
    url: String,
    /// Receives once the client has the headers and the first half of the body.
    started: mpsc::Receiver<()>,
    /// Send to deliver the rest.
    go: mpsc::Sender<()>,
}

fn stalling_server(body: Vec<u8>) -> StallingServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/base.qcow2", listener.local_addr().unwrap());
    let (started_tx, started) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let half = body.len() / 2;
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body[..half]);
            let _ = stream.flush();
            let _ = started_tx.send(());
            let _ = go_rx.recv();
            let _ = stream.write_all(&body[half..]);
        }
    });
    StallingServer { url, started, go }
}

fn vmctl_create(dir: &Path, name: &str, image: &str, ip: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmctl"));
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
        .arg(dir.join("root"))
        .args(["--connect", "test:///default", "create", "ubuntu", name])
        .args(["--domain-type", "qemu", "--bridge", "br0", "--no-start"])
        .args(["--image", image, "--ip", ip, "--json"])
        .arg("--ssh-key")
        .arg(dir.join("id.pub"));
    c
}

/// Two real processes: the first create is stalled inside its image download when the second,
/// of the same name, starts. The second must fail at once (exit 2) without touching the
/// first's files, and the first must finish with its own disk and seed.
#[test]
fn same_name_creates_never_share_storage() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("root/sys/class/net/br0/bridge")).unwrap();
    std::fs::write(d.join("id.pub"), KEY).unwrap();
    let remote = d.join("remote.qcow2");
    let local = d.join("local.qcow2");
    for (p, size) in [(&remote, "64M"), (&local, "32M")] {
        let st = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(p)
            .arg(size)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let server = stalling_server(std::fs::read(&remote).unwrap());

    let mut first = vmctl_create(d, "sec-race", &server.url, "198.18.0.121/24")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    server
        .started
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the first create starts its download");

    let second = vmctl_create(
        d,
        "sec-race",
        &local.display().to_string(),
        "198.18.0.122/24",
    )
    .output()
    .unwrap();
    let second_err = String::from_utf8_lossy(&second.stderr);
    // Its outcome is checked after the first create ends, so the first is never left stalled.
    server.go.send(()).unwrap();
    let mut out = String::new();
    first
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    first
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = first.wait().unwrap();

    assert_eq!(
        second.status.code(),
        Some(2),
        "the second create of sec-race must be refused at once: {second_err}"
    );
    assert!(second_err.contains("help: "), "{second_err}");
    assert!(status.success(), "the first create failed: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ip"], "198.18.0.121/24");
    let vm = d.join("root/vms/sec-race");
    let info = vmctl::guest_media::disk::image_info(&SystemRunner, &vm.join("disk.qcow2")).unwrap();
    let backing = PathBuf::from(info.backing_file.unwrap());
    assert!(
        backing.starts_with(d.join("root/cache")),
        "the disk is the first create's overlay of the downloaded image, not {}",
        backing.display()
    );
    let seed = Command::new("isoinfo")
        .args(["-R", "-x", "/network-config", "-i"])
        .arg(vm.join("seed.iso"))
        .output()
        .unwrap();
    let seed = String::from_utf8_lossy(&seed.stdout);
    assert!(
        seed.contains("198.18.0.121/24") && !seed.contains("198.18.0.122"),
        "the seed is the first create's: {seed}"
    );
}

/// `create ubuntu` without a name, as [`vmctl_create`] otherwise.
fn vmctl_create_unnamed(dir: &Path, image: &str, ip: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmctl"));
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
        .arg(dir.join("root"))
        .args(["--connect", "test:///default", "create", "ubuntu"])
        .args(["--domain-type", "qemu", "--bridge", "br0", "--no-start"])
        .args(["--image", image, "--ip", ip, "--json"])
        .arg("--ssh-key")
        .arg(dir.join("id.pub"));
    c
}

/// Without a name, a create takes the next free `ubuntu-N`. The first create is stalled inside
/// its download holding `ubuntu-1` when the second starts: the second must get `ubuntu-2`, and
/// a third (after a storage directory `ubuntu-3` appeared by hand) `ubuntu-4`.
#[test]
fn concurrent_unnamed_creates_get_different_names() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("root/sys/class/net/br0/bridge")).unwrap();
    std::fs::write(d.join("id.pub"), KEY).unwrap();
    let remote = d.join("remote.qcow2");
    let local = d.join("local.qcow2");
    for (p, size) in [(&remote, "64M"), (&local, "32M")] {
        let st = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(p)
            .arg(size)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let server = stalling_server(std::fs::read(&remote).unwrap());
    let mut first = vmctl_create_unnamed(d, &server.url, "198.18.0.131/24")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    server
        .started
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the first create starts its download");
    let local = local.display().to_string();
    let second = vmctl_create_unnamed(d, &local, "198.18.0.132/24")
        .output()
        .unwrap();
    server.go.send(()).unwrap();
    let mut out = String::new();
    first
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = first.wait().unwrap();
    assert!(status.success());
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let name = |s: &[u8]| serde_json::from_slice::<serde_json::Value>(s).unwrap()["name"].clone();
    assert_eq!(name(out.as_bytes()), "ubuntu-1");
    assert_eq!(name(&second.stdout), "ubuntu-2");
    std::fs::create_dir(d.join("root/vms/ubuntu-3")).unwrap();
    let third = vmctl_create_unnamed(d, &local, "198.18.0.133/24")
        .output()
        .unwrap();
    assert!(third.status.success());
    assert_eq!(name(&third.stdout), "ubuntu-4");
}
