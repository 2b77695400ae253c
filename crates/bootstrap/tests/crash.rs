//! Crash test: `apply --host-root` is SIGKILLed at random points (50 trials by default,
//! `GVB_CRASH_TRIALS` to change, `GVB_CRASH_SEED` to replay). After every kill each planned file
//! is either its old or its new version (content and mode), never a mix; a re-run converges to
//! the full new state, leaves no temp files behind, and plans no file actions afterwards.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use gpu_vm_bootstrap::{ActionKind, GpuMode};

/// xorshift64: enough randomness for kill points, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// (host path, old content or None when absent, new content, new mode)
type Expect = (String, Option<Vec<u8>>, Vec<u8>, u32);

fn expectations(h: &Host, vmctl: &Path) -> Vec<Expect> {
    let o = gpu_vm_bootstrap::Options {
        vmctl_source: gpu_vm_bootstrap::VmctlSource::Binary(vmctl.to_path_buf()),
        ..opts(GpuMode::Passthrough)
    };
    let plan = h.plan(&o).unwrap();
    plan.actions
        .iter()
        .filter_map(|a| match &a.kind {
            ActionKind::WriteFile {
                path,
                mode,
                content,
                old_content,
            } => Some((
                path.clone(),
                old_content.as_ref().map(|c| c.clone().into_bytes()),
                content.clone().into_bytes(),
                *mode,
            )),
            ActionKind::InstallFile { path, mode, source } => {
                Some((path.clone(), None, std::fs::read(source).unwrap(), *mode))
            }
            _ => None,
        })
        .collect()
}

fn apply_cmd(root: &Path, vmctl: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gpu-vm-bootstrap"));
    c.args(["apply", "--yes", "--host-root"])
        .arg(root)
        .arg("--vmctl-from")
        .arg(vmctl)
        .env("SUDO_USER", "alice")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Which state each expected file is in: `Some(false)` old, `Some(true)` new; panics on a mix.
fn states(root: &Path, expect: &[Expect]) -> Vec<bool> {
    expect
        .iter()
        .map(|(path, old, new, mode)| {
            let p = root.join(path.trim_start_matches('/'));
            let now = std::fs::read(&p).ok();
            if now.as_deref() == Some(new.as_slice()) {
                let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
                assert_eq!(m, *mode, "{path}: new content with mode {m:o}");
                true
            } else if now == *old {
                false
            } else {
                panic!("{path} is neither the old nor the new version: {now:?}")
            }
        })
        .collect()
}

fn temp_files(root: &Path, expect: &[Expect]) -> Vec<String> {
    let mut out = Vec::new();
    for (path, ..) in expect {
        let p = root.join(path.trim_start_matches('/'));
        let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
            continue;
        };
        let prefix = format!(".{}.tmp-", name.to_string_lossy());
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

#[test]
fn sigkill_at_random_points_leaves_old_or_new_and_rerun_converges() {
    let trials: usize = std::env::var("GVB_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("GVB_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test: {trials} trials, GVB_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let scratch = tempfile::tempdir().unwrap();
    let vmctl = scratch.path().join("vmctl");
    std::fs::write(&vmctl, vec![0x7fu8; 256 * 1024]).unwrap();

    // How long a whole apply takes (median of 3), to spread the kills over it.
    let mut runs: Vec<Duration> = (0..3)
        .map(|_| {
            let h = host("amd-b550m-gt710-rtx2070s", Net::Dhcp);
            let start = Instant::now();
            assert!(apply_cmd(h.path(), &vmctl).status().unwrap().success());
            start.elapsed()
        })
        .collect();
    runs.sort();
    let full = runs[1];
    eprintln!("a full apply takes {full:?}");

    let (mut interrupted, mut partial) = (0, 0);
    for trial in 0..trials {
        let h = host("amd-b550m-gt710-rtx2070s", Net::Dhcp);
        let expect = expectations(&h, &vmctl);
        assert!(expect.len() >= 8);
        let delay = Duration::from_micros(rng.next() % (full.as_micros() as u64 + 1));
        let mut child = apply_cmd(h.path(), &vmctl).spawn().unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if status.signal() == Some(libc_sigkill()) {
            interrupted += 1;
        }
        let st = states(h.path(), &expect);
        if st.iter().any(|n| *n) && st.iter().any(|n| !*n) {
            partial += 1;
        }
        // Re-run to completion: everything new, no temp files, nothing left to write.
        assert!(
            apply_cmd(h.path(), &vmctl).status().unwrap().success(),
            "trial {trial}: re-run failed"
        );
        let old: Vec<&str> = expect
            .iter()
            .zip(states(h.path(), &expect))
            .filter(|(_, new)| !new)
            .map(|(e, _)| e.0.as_str())
            .collect();
        assert!(
            old.is_empty(),
            "trial {trial}: still old after the re-run: {old:?}"
        );
        assert_eq!(temp_files(h.path(), &expect), Vec::<String>::new());
        let o = gpu_vm_bootstrap::Options {
            vmctl_source: gpu_vm_bootstrap::VmctlSource::Binary(vmctl.clone()),
            ..opts(GpuMode::Passthrough)
        };
        let again = h.plan(&o).unwrap();
        assert_eq!(again.file_actions().count(), 0, "trial {trial}");
    }
    eprintln!("{interrupted} of {trials} runs killed mid-apply, {partial} left a partial state");
    assert!(
        interrupted * 5 >= trials,
        "most kills landed after the run ended ({interrupted}/{trials}): the test proves little"
    );
}

/// SIGKILL's number on Linux (signal(7)).
fn libc_sigkill() -> i32 {
    9
}
