//! [`CommandRunner`]: the one way the project runs other programs. Argv only, never a shell.

use std::collections::VecDeque;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// A command to run: an argv vector and optional stdin.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Cmd {
    pub argv: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin: Option<Vec<u8>>,
}

impl Cmd {
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
            stdin: None,
        }
    }

    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// The argv joined for display only (never executed as a string).
    pub fn display(&self) -> String {
        self.argv.join(" ")
    }
}

/// What a finished command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn ok(stdout: impl Into<Vec<u8>>) -> Self {
        Self {
            status: 0,
            stdout: stdout.into(),
            stderr: Vec::new(),
        }
    }

    pub fn failed(status: i32, stderr: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            stdout: Vec::new(),
            stderr: stderr.into(),
        }
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// A command that could not run or did not succeed; keeps the argv, status and stderr.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("could not start `{argv}`")]
    Spawn {
        argv: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{argv}` exited with status {status}: {stderr}")]
    Failed {
        argv: String,
        status: i32,
        stderr: String,
    },
}

/// Runs commands. The real implementation is [`SystemRunner`]; tests use [`RecordingRunner`].
pub trait CommandRunner: Send + Sync {
    /// Runs the command and returns its output, whatever its exit status.
    fn output(&self, cmd: &Cmd) -> Result<Output, CommandError>;

    /// Runs the command and fails unless it exits 0.
    fn run(&self, cmd: &Cmd) -> Result<Output, CommandError> {
        let out = self.output(cmd)?;
        if out.status == 0 {
            Ok(out)
        } else {
            Err(CommandError::Failed {
                argv: cmd.display(),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }
}

/// Runs real processes.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn output(&self, cmd: &Cmd) -> Result<Output, CommandError> {
        let spawn_err = |source| CommandError::Spawn {
            argv: cmd.display(),
            source,
        };
        let (program, args) = cmd.argv.split_first().ok_or_else(|| {
            spawn_err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "empty argv",
            ))
        })?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        if let (Some(input), Some(mut stdin)) = (&cmd.stdin, child.stdin.take()) {
            stdin.write_all(input).map_err(spawn_err)?;
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        Ok(Output {
            status: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

/// A fake runner that records every argv, answers from a script, and can fail at the n-th call.
#[derive(Debug, Default)]
pub struct RecordingRunner {
    calls: Mutex<Vec<Cmd>>,
    /// (argv prefix, output) answers, used in order for a matching prefix; unmatched calls succeed
    /// with empty output.
    script: Mutex<VecDeque<(Vec<String>, Output)>>,
    fail_at: Option<usize>,
}

impl RecordingRunner {
    pub fn new() -> Self {
        Self::default()
    }

    /// The n-th call (0-based) fails with status 1.
    pub fn failing_at(n: usize) -> Self {
        Self {
            fail_at: Some(n),
            ..Self::default()
        }
    }

    /// Queues an answer for the next call whose argv starts with `prefix`.
    pub fn answer<S: Into<String>>(self, prefix: impl IntoIterator<Item = S>, out: Output) -> Self {
        self.script
            .lock()
            .expect("runner script lock")
            .push_back((prefix.into_iter().map(Into::into).collect(), out));
        self
    }

    /// Every argv run so far.
    pub fn calls(&self) -> Vec<Vec<String>> {
        self.calls
            .lock()
            .expect("runner calls lock")
            .iter()
            .map(|c| c.argv.clone())
            .collect()
    }
}

impl CommandRunner for RecordingRunner {
    fn output(&self, cmd: &Cmd) -> Result<Output, CommandError> {
        let n = {
            let mut calls = self.calls.lock().expect("runner calls lock");
            calls.push(cmd.clone());
            calls.len() - 1
        };
        if self.fail_at == Some(n) {
            return Ok(Output::failed(1, "injected failure"));
        }
        let mut script = self.script.lock().expect("runner script lock");
        if let Some(pos) = script
            .iter()
            .position(|(prefix, _)| cmd.argv.starts_with(prefix))
        {
            let (_, out) = script.remove(pos).expect("position is valid");
            return Ok(out);
        }
        Ok(Output::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_runner_runs_argv_without_a_shell() {
        let out = SystemRunner
            .run(&Cmd::new(["echo", "a;b", "$HOME"]))
            .unwrap();
        assert_eq!(out.stdout_str(), "a;b $HOME\n");
    }

    #[test]
    fn system_runner_reports_failure_with_argv_and_stderr() {
        let err = SystemRunner
            .run(&Cmd::new(["sh", "-c", "echo boom >&2; exit 3"]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`sh -c echo boom >&2; exit 3` exited with status 3: boom"
        );
    }

    #[test]
    fn recording_runner_fails_at_nth_call_and_answers_script() {
        let r = RecordingRunner::failing_at(1).answer(["nvidia-smi"], Output::ok("GPU 0"));
        assert_eq!(
            r.run(&Cmd::new(["nvidia-smi", "-L"])).unwrap().stdout_str(),
            "GPU 0"
        );
        assert!(r.run(&Cmd::new(["update-grub"])).is_err());
        assert_eq!(r.calls().len(), 2);
    }
}
