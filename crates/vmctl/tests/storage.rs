//! Per-VM storage: what a create writes (disk, seed, the VM's directory and the directories vmctl
//! makes above it) is readable by root and the qemu user libvirt hands it to, never by other
//! local users; two creates of one name never share a directory.
//!
//! The "as another user" checks run `cat`/`ls` as `nobody:nogroup` without supplementary groups
//! (setpriv(1), util-linux), so they need root: without it they print "skipped" and pass, and
//! with GVB_LAB=1 (where root is given) a missing root fails.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;

use guest_media::cache::NoProgress;
use hostio::SystemRunner;
use vmctl::commands::Ctx;
use vmctl::commands::create::{NetworkRequest, UbuntuRequest, create_ubuntu};

use crate::support::{TestHost, no_env, test_host};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6 t@h\n";

/// True when running as root; otherwise "skipped" (a failure under GVB_LAB=1).
pub fn root_or_skip() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&out.stdout).trim() == "0" {
        return true;
    }
    assert_ne!(
        std::env::var("GVB_LAB").as_deref(),
        Ok("1"),
        "GVB_LAB=1: this test needs root (it runs commands as nobody)"
    );
    eprintln!("skipped: needs root to run commands as nobody");
    false
}

/// Runs `program args…` as nobody:nogroup with no supplementary groups.
fn as_nobody<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--",
            program,
        ])
        .args(args)
        .output()
        .expect("setpriv (util-linux)")
}

/// Makes `dir` and its ancestors up to `/` traversable and listable, so a check as `nobody` can
/// only fail because of the modes vmctl gave to what it made below.
pub fn open_up(dir: &Path) {
    let mut p = Some(dir);
    while let Some(d) = p {
        if d == Path::new("/") || d == Path::new("/tmp") {
            break;
        }
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        p = d.parent();
    }
}

/// Every file and directory below `top` (and `top` itself), as root sees them.
fn walk(top: &Path) -> Vec<PathBuf> {
    let mut out = vec![top.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() && !out[i].is_symlink() {
            let mut children: Vec<PathBuf> = std::fs::read_dir(&out[i])
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            children.sort();
            out.extend(children);
        }
        i += 1;
    }
    out
}

/// As nobody: reading each file and listing each directory below `top` fails, while `top`'s
/// parent is searchable (the check is not blocked above). With `searchable`, each directory
/// stays searchable: qemu, running as its own user, must reach its files by path.
pub fn assert_private_to_others(top: &Path, searchable: bool) {
    let parent = top.parent().unwrap();
    let search = as_nobody("test", &[OsStr::new("-x"), parent.as_os_str()]);
    assert!(
        search.status.success(),
        "{} must be searchable by others for this check",
        parent.display()
    );
    let all = walk(top);
    assert!(all.len() > 1, "nothing below {}", top.display());
    for p in all {
        let mode = std::fs::symlink_metadata(&p).unwrap().permissions().mode() & 0o7777;
        if p.is_dir() {
            let ls = as_nobody("ls", &[&p]);
            assert!(
                !ls.status.success(),
                "nobody lists {} (mode {mode:o}): {}",
                p.display(),
                String::from_utf8_lossy(&ls.stdout)
            );
            if searchable {
                let search = as_nobody("test", &[OsStr::new("-x"), p.as_os_str()]);
                assert!(
                    search.status.success(),
                    "{} (mode {mode:o}) must stay searchable for the qemu user",
                    p.display()
                );
            }
        } else {
            let cat = as_nobody("cat", &[&p]);
            assert!(
                !cat.status.success(),
                "nobody reads {} (mode {mode:o}, {} bytes)",
                p.display(),
                cat.stdout.len()
            );
        }
    }
}

fn ubuntu_request(dir: &Path, name: &str, ip: &str) -> UbuntuRequest {
    let key = dir.join("id.pub");
    std::fs::write(&key, KEY).unwrap();
    let base = dir.join("base.qcow2");
    if !base.exists() {
        let st = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&base)
            .arg("64M")
            .status()
            .unwrap();
        assert!(st.success());
    }
    let mut r = UbuntuRequest::new(name);
    r.image = Some(base.display().to_string());
    r.ssh_key = Some(key);
    r.bridge = Some("br0".into());
    r.no_start = true;
    r.password_hash = Some("$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1".into());
    r.network = NetworkRequest::Static {
        ip: ip.into(),
        gateway: Some("198.18.0.1".into()),
        dns: vec![],
    };
    r
}

#[test]
fn ubuntu_vm_storage_is_unreadable_by_other_users() {
    if !root_or_skip() {
        return;
    }
    let TestHost {
        dir,
        tree: _tree,
        host,
        config,
        lv,
    } = test_host("intel-z370-no-nvidia");
    open_up(dir.path());
    let ctx = Ctx {
        config: &config,
        host: &host,
        runner: &SystemRunner,
        hv: &lv,
        env: &no_env,
    };
    let r = ubuntu_request(dir.path(), "sec-modes", "198.18.0.120/24");
    let c = create_ubuntu(&ctx, &r, &NoProgress).unwrap();
    assert!(c.seed.is_file() && c.disk.as_ref().unwrap().is_file());
    // The seed carries the password hash: root and (after libvirt's DAC labelling) qemu only.
    assert_private_to_others(&dir.path().join("vms"), true);
    for f in [&c.seed, c.disk.as_ref().unwrap()] {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(format!("{mode:o}"), "600", "{}", f.display());
    }
}

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
    c.env("VMCTL_STORAGE_DIR", dir.join("vms"))
        .env("VMCTL_IMAGE_CACHE", dir.join("cache"))
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
    let vm = d.join("vms/sec-race");
    let info = guest_media::disk::image_info(&SystemRunner, &vm.join("disk.qcow2")).unwrap();
    let backing = PathBuf::from(info.backing_file.unwrap());
    assert!(
        backing.starts_with(d.join("cache")),
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
