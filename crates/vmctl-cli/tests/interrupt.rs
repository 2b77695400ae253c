//! Ctrl-C during `create`, with a real SIGINT to the real binary: during a download the create
//! stops, keeps the partial file for a resume, removes nothing else and exits 130. (Ctrl-C
//! during `--wait` needs a real guest network: lab_system.rs.)

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PUBKEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6 t@h\n";

/// A server that announces 64 MiB and sends 64 KiB every 50 ms: a download that lasts a minute.
fn trickle_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let head = "HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n";
                if s.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let block = vec![0u8; 64 << 10];
                while s.write_all(&block).is_ok() {
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
    });
    format!("http://127.0.0.1:{port}/slow.qcow2")
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("root/sys/class/net/br0/bridge")).unwrap();
        std::fs::write(dir.path().join("id.pub"), PUBKEY).unwrap();
        Setup { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `vmctl create ubuntu NAME` on the test driver, stderr captured.
    fn spawn(&self, name: &str, image: &str, extra: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_vmctl"))
            .env("VMCTL_STORAGE_DIR", "/vms")
            .env("VMCTL_IMAGE_CACHE", "/cache")
            .env_remove("VMCTL_CONNECT")
            .env_remove("VMCTL_BRIDGE")
            .arg("--host-root")
            .arg(self.path("root"))
            .args(["--connect", "test:///default", "create", "ubuntu", name])
            .args(["--domain-type", "qemu", "--bridge", "br0", "--image", image])
            .arg("--ssh-key")
            .arg(self.path("id.pub"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(60), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigint(child: &Child) {
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -INT");
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn ctrl_c_during_the_download_keeps_the_partial_and_exits_130() {
    let s = Setup::new();
    let url = trickle_server();
    let child = s.spawn("int1", &url, &[]);
    let partial_dir = s.path("root/cache/partial");
    wait_until("the download never started", || {
        files_under(&partial_dir)
            .iter()
            .any(|p| p.metadata().is_ok_and(|m| m.len() > 0))
    });
    sigint(&child);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains(&format!("error: interrupted during the download of {url}")),
        "{err}"
    );
    assert!(
        err.contains("help: run the same command again: the download resumes"),
        "{err}"
    );
    assert_eq!(
        files_under(&partial_dir).len(),
        1,
        "the partial file is kept"
    );
    assert!(
        files_under(&s.path("root/vms")).is_empty(),
        "nothing else is left"
    );
}
