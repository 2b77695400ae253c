//! The conventions both binaries share (issue 9): a closed stdout pipe is a clean exit, the bash
//! completion script loads and completes, `-v` logs to stderr only, and every error ends with a
//! `help:` line and exit code 2 for bad usage.

use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gpu-vm-bootstrap"))
}

/// Runs `cmd` with stdout a pipe whose reader is already closed: every write fails with EPIPE.
fn into_closed_pipe(mut cmd: Command) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    cmd.stdout(writer).stderr(Stdio::piped()).output().unwrap()
}

#[test]
fn closed_stdout_pipe_is_a_clean_exit() {
    let host = fixture_builder::build_host("amd-b550m-gt710-rtx2070s");
    let root = host.path().to_str().unwrap().to_string();
    for args in [
        vec!["detect", "--host-root", &root],
        vec!["detect", "--json", "--host-root", &root],
        vec![
            "plan",
            "--skip-vmctl",
            "--skip-bridge",
            "--host-root",
            &root,
        ],
        vec!["completions", "bash"],
        vec!["--help"],
    ] {
        let mut cmd = bin();
        cmd.args(&args);
        let out = into_closed_pipe(cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

#[test]
fn bash_completion_loads_and_completes_subcommands() {
    let script = bin().args(["completions", "bash"]).output().unwrap();
    assert!(script.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpu-vm-bootstrap");
    std::fs::write(&path, &script.stdout).unwrap();
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c"])
        .arg(format!(
            "set -e; source '{}'; complete -p gpu-vm-bootstrap; \
             COMP_WORDS=(gpu-vm-bootstrap ro); COMP_CWORD=1; \
             _gpu__vm__bootstrap gpu-vm-bootstrap ro gpu-vm-bootstrap; echo \"${{COMPREPLY[@]}}\"",
            path.display()
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("-F _gpu__vm__bootstrap gpu-vm-bootstrap"),
        "{stdout}"
    );
    assert!(
        stdout.lines().last().unwrap().contains("rollback"),
        "{stdout}"
    );
}

#[test]
fn man_pages_are_written_for_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin().arg("__man").arg(dir.path()).output().unwrap();
    assert!(out.status.success());
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "gpu-vm-bootstrap-apply.1",
            "gpu-vm-bootstrap-completions.1",
            "gpu-vm-bootstrap-detect.1",
            "gpu-vm-bootstrap-plan.1",
            "gpu-vm-bootstrap-rollback.1",
            "gpu-vm-bootstrap-verify.1",
            "gpu-vm-bootstrap.1",
        ]
    );
}

#[test]
fn verbose_logs_go_to_stderr_and_leave_json_alone() {
    let host = fixture_builder::build_host("amd-b550m-gt710-rtx2070s");
    let out = bin()
        .args(["-vv", "detect", "--json", "--host-root"])
        .arg(host.path())
        .env_remove("GVB_LOG")
        .output()
        .unwrap();
    assert!(out.status.success());
    let _: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DEBUG"), "{err}");
    assert!(
        !err.contains("\x1b["),
        "no colours when stderr is not a terminal: {err}"
    );
}

#[test]
fn errors_end_with_help_and_bad_usage_exits_2() {
    let out = bin()
        .args(["plan", "--host-root", "/nonexistent/gvb"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.trim_end().lines().last().unwrap().starts_with("help: "),
        "{err}"
    );
    // clap's own usage errors: exit 2 as well.
    let out = bin().arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
