//! Output to a closed pipe is never a crash: with stdout and/or stderr a pipe whose reader is
//! gone (`vmctl info nope 2>&1 | head -c0`), every write returns EPIPE (Rust ignores SIGPIPE)
//! and vmctl still exits with the code it would have had, never 101 (a panic).

use std::process::{Command, Stdio};

/// Which of stdout/stderr is a pipe with no reader; the other is captured.
#[derive(Debug, Clone, Copy)]
enum Closed {
    Stdout,
    Stderr,
    Both,
}

/// Runs vmctl with `args` and the chosen stream(s) closed; returns the exit code and what the
/// open stream got. The pipe's read end is dropped before the child starts, so its first write
/// fails.
fn run_closed(args: &[&str], closed: Closed) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("vmctl"));
    c.args(args).stdin(Stdio::null());
    for k in ["VMCTL_CONNECT", "VMCTL_LOG", "VMCTL_SSH_KEY"] {
        c.env_remove(k);
    }
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
    let cases: &[(&[&str], i32)] = &[
        // Refused (exit 2): the error and its help lines go to stderr.
        (&["--connect", "test:///default", "info", "nope"], 2),
        // A failure (exit 1): libvirt cannot open the test driver's file.
        (&["--connect", "test:///nonexistent/node.xml", "list"], 1),
        // Results on stdout, tracing (-vv) on stderr.
        (&["-vv", "--connect", "test:///default", "list"], 0),
        (&["--connect", "test:///default", "info", "test"], 0),
        (&["--connect", "test:///default", "list", "--json"], 0),
        (&["config", "show"], 0),
        (&["completions", "bash"], 0),
        (&["--help"], 0),
    ];
    for (args, code) in cases {
        for closed in [Closed::Stdout, Closed::Stderr, Closed::Both] {
            let (got, open) = run_closed(args, closed);
            assert_eq!(got, Some(*code), "{args:?} with {closed:?} closed: {open}");
            assert!(!open.contains("panicked"), "{args:?} {closed:?}: {open}");
        }
    }
}
