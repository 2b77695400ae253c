//! Output to a closed pipe is never a crash: with stdout and/or stderr a pipe whose reader is
//! gone (`gpu-vm-bootstrap plan 2>&1 | head -c0`), every write returns EPIPE (Rust ignores
//! SIGPIPE) and the binary still exits with the code it would have had, never 101 (a panic).

use std::process::{Command, Stdio};

use crate::common::{Net, host};

/// Which of stdout/stderr is a pipe with no reader; the other is captured.
#[derive(Debug, Clone, Copy)]
enum Closed {
    Stdout,
    Stderr,
    Both,
}

/// Runs `args` with the chosen stream(s) closed; returns the exit code and what the open stream
/// got. The pipe's read end is dropped before the child starts, so its first write fails.
fn run_closed(args: &[&str], closed: Closed) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("gpu-vm-bootstrap"));
    c.args(args).env_remove("SUDO_USER").stdin(Stdio::null());
    match closed {
        Closed::Stdout => c.stdout(writer).stderr(Stdio::piped()),
        Closed::Stderr => c.stdout(Stdio::piped()).stderr(writer),
        Closed::Both => c.stdout(writer.try_clone().unwrap()).stderr(writer),
    };
    let out = c.output().unwrap();
    let open = match closed {
        Closed::Stdout => out.stderr,
        Closed::Stderr | Closed::Both => out.stdout,
    };
    (
        out.status.code(),
        String::from_utf8_lossy(&open).into_owned(),
    )
}

#[test]
fn closed_stdout_or_stderr_keeps_the_exit_code() {
    let h = host("intel-z170-gtx960", Net::Dhcp);
    let root = h.path().to_str().unwrap();
    let cases: &[(&[&str], i32)] = &[
        // Refused (exit 2): the error and help lines go to stderr.
        (&["--host-root", "/nonexistent/gvb", "plan"], 2),
        // Output on stdout, tracing (-vv) on stderr.
        (&["-vv", "--host-root", root, "detect"], 0),
        (&["--host-root", root, "plan", "--skip-vmctl"], 0),
        (&["--host-root", root, "plan", "--json", "--skip-vmctl"], 0),
        // Completions print on stdout.
        (&["completions", "bash"], 0),
    ];
    for (args, code) in cases {
        for closed in [Closed::Stdout, Closed::Stderr, Closed::Both] {
            let (got, open) = run_closed(args, closed);
            assert_eq!(got, Some(*code), "{args:?} with {closed:?} closed: {open}");
            assert!(!open.contains("panicked"), "{args:?} {closed:?}: {open}");
        }
    }
}
