//! A SIGKILLed apply leaves temp files (`.NAME.tmp-PID`) behind: the next apply clears the ones
//! it owns, and a rollback clears them too and removes the directories apply created, so the
//! tree is as it was before the first apply.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn bin(root: &Path, vmctl: &Path, sub: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gpu-vm-bootstrap"));
    c.args([sub, "--yes", "--host-root"])
        .arg(root)
        .arg("--vmctl-from")
        .arg(vmctl)
        .env("SUDO_USER", "alice")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Every `.NAME.tmp-PID` file under `root`.
fn temp_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                dirs.push(e.path());
            } else if e.file_name().to_string_lossy().contains(".tmp-") {
                out.push(e.path());
            }
        }
    }
    out
}

/// A fresh host where an apply was SIGKILLed while it wrote the (large) vmctl binary: the state
/// waited on is the temp file appearing in /usr/local/bin. The rename can win the race against
/// the kill; then another host is tried.
fn host_killed_while_installing_vmctl(vmctl: &Path) -> (Host, Vec<(PathBuf, Vec<u8>, u32)>) {
    for _ in 0..5 {
        let h = host("intel-z170-gtx960", Net::Dhcp);
        let before = snapshot_tree(h.path(), &["var"]);
        let mut child = bin(h.path(), vmctl, "apply").spawn().unwrap();
        let dir = h.path().join("usr/local/bin");
        let deadline = Instant::now() + Duration::from_secs(60);
        let tmp = loop {
            let found = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .find(|e| {
                    e.file_name().to_string_lossy().starts_with(".vmctl.tmp-")
                        && e.metadata().is_ok_and(|m| m.len() > 0)
                });
            if let Some(e) = found {
                break Some(e.path());
            }
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                break None;
            }
            std::thread::yield_now();
        };
        child.kill().unwrap();
        child.wait().unwrap();
        if tmp.is_some_and(|t| t.exists()) {
            return (h, before);
        }
    }
    panic!("five applies finished the vmctl write before the kill landed");
}

fn big_vmctl(dir: &Path) -> PathBuf {
    let p = dir.join("vmctl");
    std::fs::write(&p, vec![0x7fu8; 64 * 1024 * 1024]).unwrap();
    p
}

#[test]
fn rollback_after_a_sigkill_leaves_no_temp_files_or_created_dirs() {
    let scratch = tempfile::tempdir().unwrap();
    let vmctl = big_vmctl(scratch.path());
    let (h, before) = host_killed_while_installing_vmctl(&vmctl);
    let status = bin(h.path(), &vmctl, "rollback").status().unwrap();
    assert!(status.success());
    assert_eq!(temp_files(h.path()), Vec::<PathBuf>::new());
    assert_eq!(
        tree_diff(&before, &snapshot_tree(h.path(), &["var"])),
        Vec::<String>::new()
    );
}

#[test]
fn apply_after_a_sigkill_clears_every_stale_temp_file_it_owns() {
    let scratch = tempfile::tempdir().unwrap();
    let vmctl = big_vmctl(scratch.path());
    let (h, _) = host_killed_while_installing_vmctl(&vmctl);
    // A kill can also land in a journal or backup write: plant those temp files too.
    let runs = h.path().join("var/lib/gpu-vm-bootstrap/runs");
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    std::fs::write(run.join(".journal.json.tmp-4242"), b"{\"id\":").unwrap();
    std::fs::create_dir_all(run.join("files")).unwrap();
    std::fs::write(run.join("files/.0.tmp-4242"), b"GRUB_").unwrap();
    // And one of the user's own, which is not ours to delete.
    std::fs::write(h.path().join("etc/default/.notes.tmp-1"), b"mine").unwrap();
    let status = bin(h.path(), &vmctl, "apply").status().unwrap();
    assert!(status.success());
    assert_eq!(
        temp_files(h.path()),
        vec![h.path().join("etc/default/.notes.tmp-1")]
    );
}
