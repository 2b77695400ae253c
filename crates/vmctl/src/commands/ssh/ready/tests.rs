//! The wait for a ready VM against a recording runner: every stage, retries, a cloud-init
//! error with the guest's log, timeouts.

use std::cell::Cell;
use std::sync::Mutex;

use hostio::RecordingRunner;

use super::*;

fn guest() -> Guest {
    Guest {
        name: "vm1".into(),
        addr: "198.18.0.60:22".parse().unwrap(),
        ssh: ["ssh", "-o", "BatchMode=yes", "e2e@198.18.0.60"]
            .map(String::from)
            .to_vec(),
        console_log: None,
    }
}

fn fast() -> Policy {
    Policy {
        poll: Duration::ZERO,
        slice: Duration::from_secs(30),
        log_lines: 5,
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/cloud-init-status/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn answer(status: i32, stdout: &[u8], stderr: &str) -> Output {
    Output {
        status,
        stdout: stdout.to_vec(),
        stderr: stderr.as_bytes().to_vec(),
    }
}

const SSH: [&str; 4] = ["ssh", "-o", "BatchMode=yes", "e2e@198.18.0.60"];

fn remote(cmd: &[String]) -> String {
    cmd[SSH.len()..].join(" ")
}

fn run(runner: &RecordingRunner, timeout: Duration) -> (Result<(u64, Verdict)>, Vec<Progress>) {
    let seen = Mutex::new(Vec::new());
    let r = wait_in_guest(
        runner,
        &guest(),
        (Instant::now(), timeout),
        &fast(),
        &|| Ok(true),
        || false,
        &|p| seen.lock().unwrap().push(p),
    );
    (r, seen.into_inner().unwrap())
}

/// The finding: sshd first answers, cloud-init then restarts it. The wait logs in, asks
/// cloud-init, survives the refused connections of the restart and the slices that time
/// out, and returns only once cloud-init says done.
#[test]
fn wait_returns_only_after_cloud_init_done_across_an_sshd_restart() {
    let refused = "ssh: connect to host 198.18.0.60 port 22: Connection refused";
    let runner = RecordingRunner::new()
        .answer(
            SSH,
            answer(255, b"", "e2e@198.18.0.60: Permission denied (publickey)."),
        )
        .answer(SSH, answer(0, b"", ""))
        .answer(SSH, answer(124, b"", ""))
        .answer(SSH, answer(255, b"", refused))
        .answer(SSH, answer(255, b"", refused))
        .answer(SSH, answer(0, &fixture("22.4-done.json"), ""));
    let (r, seen) = run(&runner, Duration::from_secs(600));
    assert_eq!(r.unwrap().1, Verdict::Done);
    let calls: Vec<String> = runner.calls().iter().map(|c| remote(c)).collect();
    assert_eq!(
        calls,
        vec![
            "true",
            "true",
            "timeout 30 cloud-init status --wait --format json",
            "timeout 30 cloud-init status --wait --format json",
            "timeout 30 cloud-init status --wait --format json",
            "timeout 30 cloud-init status --wait --format json",
        ]
    );
    let stages: Vec<&str> = seen
        .iter()
        .filter_map(|p| match p {
            Progress::Stage(s) => Some(s.as_str()),
            Progress::Status(_) => None,
        })
        .collect();
    assert_eq!(stages.len(), 3, "{stages:?}");
    assert!(stages[0].starts_with("SSH up after "), "{stages:?}");
    assert!(
        stages[0].ends_with("; waiting for cloud-init"),
        "{stages:?}"
    );
    assert!(stages[1].contains("Connection refused"), "{stages:?}");
    assert!(stages[2].starts_with("SSH back after "), "{stages:?}");
}

#[test]
fn degraded_done_is_ready_with_its_warnings() {
    let runner = RecordingRunner::new()
        .answer(SSH, answer(0, b"", ""))
        .answer(SSH, answer(2, &fixture("24.4-degraded.json"), ""));
    let (r, _) = run(&runner, Duration::from_secs(600));
    let (_, v) = r.unwrap();
    assert!(
        matches!(v, Verdict::Degraded { ref warnings } if warnings.len() == 1),
        "{v:?}"
    );
}

#[test]
fn cloud_init_error_fails_with_the_guest_log() {
    let log = "Reading package lists...\nE: Unable to locate package gvb-no-such-package\n\x1b[0;32m util.py[WARNING]: Failed to install packages\n";
    let runner = RecordingRunner::new()
        .answer(SSH, answer(0, b"", ""))
        .answer(SSH, answer(1, &fixture("22.4-error.json"), ""))
        .answer(SSH, answer(0, log.as_bytes(), ""));
    let (r, _) = run(&runner, Duration::from_secs(600));
    let err = r.unwrap_err();
    let Some(ReadyError::CloudInitFailed {
        name,
        errors,
        log: excerpt,
        ..
    }) = err.command::<ReadyError>()
    else {
        panic!("{err:?}");
    };
    assert_eq!(name, "vm1");
    assert!(errors[0].starts_with("('package-update-upgrade-install', "));
    assert_eq!(excerpt.source, "/var/log/cloud-init-output.log in vm1");
    assert_eq!(
        excerpt.lines,
        vec![
            "Reading package lists...",
            "E: Unable to locate package gvb-no-such-package",
            " util.py[WARNING]: Failed to install packages",
        ]
    );
    let calls = runner.calls();
    assert_eq!(
        remote(calls.last().unwrap()),
        "sudo -n tail -n 5 /var/log/cloud-init-output.log"
    );
    let text = err.to_string();
    assert!(
        text.starts_with("cloud-init failed in vm1 after "),
        "{text}"
    );
    assert!(
        text.contains("\n  - ('package-update-upgrade-install', "),
        "{text}"
    );
    assert!(
        text.contains("\n  last 3 lines of /var/log/cloud-init-output.log in vm1:\n  | Reading package lists..."),
        "{text}"
    );
    assert_eq!(err.exit_kind(), crate::ExitKind::Failure);
    assert!(err.help()[0].contains("vmctl ssh vm1"), "{:?}", err.help());
}

#[test]
fn old_cloud_init_is_asked_again_without_format() {
    let usage =
        "usage: /usr/bin/cloud-init [-h]\ncloud-init: error: unrecognized arguments: --format json";
    let runner = RecordingRunner::new()
        .answer(SSH, answer(0, b"", ""))
        .answer(SSH, answer(2, b"", usage))
        .answer(SSH, answer(0, b"...\nstatus: done\n", ""));
    let (r, _) = run(&runner, Duration::from_secs(600));
    assert_eq!(r.unwrap().1, Verdict::Done);
    assert_eq!(
        remote(&runner.calls()[2]),
        "timeout 30 cloud-init status --wait --long"
    );
}

#[test]
fn a_refused_key_times_out_naming_the_login() {
    let runner = RecordingRunner::new().answer(
        SSH,
        answer(255, b"", "e2e@198.18.0.60: Permission denied (publickey)."),
    );
    let (r, _) = run(&runner, Duration::ZERO);
    let err = r.unwrap_err();
    assert!(
        matches!(err.command(), Some(ReadyError::NotReady { .. })),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "vm1 was not ready within 0 s: SSH on 198.18.0.60:22 does not let e2e in: e2e@198.18.0.60: Permission denied (publickey)."
    );
    assert!(
        err.help().iter().any(|h| h.contains("ssh-agent")),
        "{:?}",
        err.help()
    );
    assert_eq!(runner.calls().len(), 1);
}

#[test]
fn the_slice_never_outlasts_the_deadline() {
    let runner = RecordingRunner::new()
        .answer(SSH, answer(0, b"", ""))
        .answer(SSH, answer(0, &fixture("24.4-done.json"), ""));
    let (r, _) = run(&runner, Duration::from_millis(4500));
    r.unwrap();
    let slice = remote(&runner.calls()[1]);
    assert!(
        ["timeout 5 ", "timeout 4 "]
            .iter()
            .any(|p| slice.starts_with(p)),
        "{slice}"
    );
}

#[test]
fn a_vm_that_stops_ends_the_wait() {
    let unreachable = "ssh: connect to host 198.18.0.60 port 22: No route to host";
    let runner = RecordingRunner::new()
        .answer(SSH, answer(255, b"", unreachable))
        .answer(SSH, answer(255, b"", unreachable))
        .answer(SSH, answer(255, b"", unreachable));
    let stopped = Cell::new(false);
    let r = wait_in_guest(
        &runner,
        &guest(),
        (Instant::now(), Duration::from_secs(600)),
        &fast(),
        &|| Ok(!stopped.replace(true)),
        || false,
        &|_| {},
    );
    // The first retry sees it running, the second stopped.
    let err = r.unwrap_err();
    assert!(err.to_string().contains("it stopped running"), "{err}");
    assert_eq!(runner.calls().len(), 2);
}

#[test]
fn console_excerpt_is_the_clean_tail() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("console.log");
    std::fs::write(
        &p,
        "boot\r\n[\x1b[0;32m  OK  \x1b[0m] Started ssh.service\r\n\r\nlab-guest login: \n",
    )
    .unwrap();
    let e = console_excerpt(Some(&p), 2);
    assert_eq!(
        e.lines,
        vec!["[  OK  ] Started ssh.service", "lab-guest login:"]
    );
    assert!(
        console_excerpt(Some(&dir.path().join("none")), 2)
            .lines
            .is_empty()
    );
    assert_eq!(LogExcerpt::default().to_string(), "");
}
