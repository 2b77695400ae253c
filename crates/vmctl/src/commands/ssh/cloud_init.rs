//! cloud-init's own verdict on a guest's first boot, as `cloud-init status` tells it over SSH:
//! the fixed remote argv vmctl runs, and the reading of its answer. Shapes and exit codes of
//! cloud-init 22.4 (Debian 12) through 24.x (Ubuntu 24.04) are covered; see
//! `cloudinit/cmd/status.py` upstream and doc/rtd/explanation/return_codes.rst.

use std::fmt;

/// How `cloud-init status` is asked to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `--format json` (cloud-init 22.4 and later).
    Json,
    /// The default text (`status: done`), for cloud-init older than 22.4, which has no
    /// `--format`.
    Tabular,
}

/// The remote argv of one wait slice: `timeout SECS cloud-init status --wait …`. `--wait`
/// polls cloud-init's own state files inside the guest (one SSH session instead of one per
/// poll); coreutils' timeout(1) bounds the slice and exits 124 when it fires, so a guest that
/// never finishes can't hold the connection past vmctl's deadline.
pub fn status_argv(slice_secs: u64, format: Format) -> Vec<String> {
    let mut argv: Vec<String> = [
        "timeout",
        &slice_secs.max(1).to_string(),
        "cloud-init",
        "status",
        "--wait",
    ]
    .map(String::from)
    .to_vec();
    match format {
        Format::Json => argv.extend(["--format".into(), "json".into()]),
        Format::Tabular => argv.push("--long".into()),
    }
    argv
}

/// Where cloud-init writes the output of its stages and modules (cc_* messages, apt, runcmd).
pub const OUTPUT_LOG: &str = "/var/log/cloud-init-output.log";

/// The remote argv for the last `lines` lines of [`OUTPUT_LOG`]. The log is `root:adm 0640`
/// (Debian 12, Ubuntu 24.04), so vmctl's user (in group sudo, `NOPASSWD`) reads it through
/// `sudo -n`: never a prompt.
pub fn output_log_argv(lines: usize, sudo: bool) -> Vec<String> {
    let mut argv: Vec<String> = Vec::new();
    if sudo {
        argv.extend(["sudo".into(), "-n".into()]);
    }
    argv.extend([
        "tail".into(),
        "-n".into(),
        lines.to_string(),
        OUTPUT_LOG.into(),
    ]);
    argv
}

/// What one `cloud-init status --wait` slice said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not finished: the slice's timeout fired (124), or the status is still `running` /
    /// `not run` (22.4) / `not started` (24.x).
    Running,
    /// Finished without errors.
    Done,
    /// Finished with recoverable errors: `extended_status: degraded done`, exit 2 (23.4 and
    /// later). The instance is up; the messages are worth showing.
    Degraded { warnings: Vec<String> },
    /// cloud-init is disabled in the guest (marker file, kernel command line, generator):
    /// nothing runs, so nothing to wait for.
    Disabled,
    /// A stage or module failed: `status: error`, exit 1.
    Error { errors: Vec<String> },
    /// The guest has no `cloud-init` command (exit 127 from timeout(1)).
    Missing,
    /// cloud-init older than 22.4 rejected `--format`: ask again in [`Format::Tabular`].
    NoJson,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Running => write!(f, "still running"),
            Verdict::Done => write!(f, "done"),
            Verdict::Degraded { warnings } => {
                write!(f, "done with {} warning(s)", warnings.len())
            }
            Verdict::Disabled => write!(f, "disabled in the guest"),
            Verdict::Error { errors } => write!(f, "error ({} error(s))", errors.len()),
            Verdict::Missing => write!(f, "not installed in the guest"),
            Verdict::NoJson => write!(f, "older than 22.4"),
        }
    }
}

/// timeout(1): the command timed out.
const TIMED_OUT: i32 = 124;
/// timeout(1) / the shell: the command was not found.
const NOT_FOUND: i32 = 127;

/// Reads one slice's answer. `status` is the exit status of the remote command (never ssh's
/// own 255: the caller retries those).
pub fn verdict(format: Format, status: i32, stdout: &str, stderr: &str) -> Verdict {
    match status {
        TIMED_OUT => return Verdict::Running,
        NOT_FOUND => return Verdict::Missing,
        _ => {}
    }
    match format {
        Format::Json => match json_status(stdout) {
            Some(s) => from_fields(status, &s),
            // argparse's usage error (exit 2): "unrecognized arguments: --format json".
            None if status == 2 && (stderr.contains("usage:") || stderr.contains("arguments")) => {
                Verdict::NoJson
            }
            None => by_exit_code(status, stdout, stderr),
        },
        Format::Tabular => match tabular_status(stdout) {
            Some(s) => from_fields(status, &s),
            None => by_exit_code(status, stdout, stderr),
        },
    }
}

/// The fields vmctl reads, from either format.
struct Fields {
    status: String,
    errors: Vec<String>,
    recoverable: Vec<String>,
}

fn from_fields(exit: i32, s: &Fields) -> Verdict {
    match s.status.as_str() {
        "done" if exit == 2 || !s.recoverable.is_empty() => Verdict::Degraded {
            warnings: s.recoverable.clone(),
        },
        "done" => Verdict::Done,
        "disabled" => Verdict::Disabled,
        "running" | "not run" | "not started" => Verdict::Running,
        "error" => Verdict::Error {
            errors: if s.errors.is_empty() {
                vec!["cloud-init reports status: error".into()]
            } else {
                s.errors.clone()
            },
        },
        other => match exit {
            0 => Verdict::Done,
            2 => Verdict::Degraded {
                warnings: s.recoverable.clone(),
            },
            _ => Verdict::Error {
                errors: vec![format!("cloud-init reports status: {other}")],
            },
        },
    }
}

fn by_exit_code(status: i32, stdout: &str, stderr: &str) -> Verdict {
    let said: Vec<String> = stderr
        .lines()
        .chain(stdout.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(10)
        .map(String::from)
        .collect();
    match status {
        0 => Verdict::Done,
        2 => Verdict::Degraded { warnings: said },
        _ => Verdict::Error {
            errors: if said.is_empty() {
                vec![format!("`cloud-init status` exited {status}")]
            } else {
                said
            },
        },
    }
}

/// `--format json`: 22.4 prints `status`, `errors` and a `schemas` copy; 23.4+ adds
/// `extended_status` and `recoverable_errors` (level → messages) and the per-stage objects.
/// Anything before the first `{` (a stray line on stdout) is skipped.
fn json_status(stdout: &str) -> Option<Fields> {
    let start = stdout.find('{')?;
    let v: serde_json::Value = serde_json::from_str(stdout[start..].trim_end()).ok()?;
    let status = v.get("status")?.as_str()?.to_string();
    let text = |x: &serde_json::Value| {
        x.as_str()
            .map(String::from)
            .unwrap_or_else(|| x.to_string())
    };
    let errors = v
        .get("errors")
        .and_then(|e| e.as_array())
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    let mut recoverable = Vec::new();
    if let Some(levels) = v.get("recoverable_errors").and_then(|r| r.as_object()) {
        for (level, msgs) in levels {
            for m in msgs.as_array().into_iter().flatten() {
                recoverable.push(format!("{level}: {}", text(m)));
            }
        }
    }
    Some(Fields {
        status,
        errors,
        recoverable,
    })
}

/// The text format: `--wait` prints a dot per poll, then `status: X` on its own line (22.4
/// starts it with a newline, 24.x does not); `--long` adds `detail:` and, in 23.4+, `errors:`
/// lines.
fn tabular_status(stdout: &str) -> Option<Fields> {
    let mut lines = stdout.lines().map(|l| l.trim_start_matches('.').trim());
    let status = lines
        .by_ref()
        .find_map(|l| l.strip_prefix("status:"))?
        .trim()
        .to_string();
    let rest: Vec<String> = lines
        .filter(|l| !l.is_empty())
        .take(10)
        .map(String::from)
        .collect();
    Some(Fields {
        errors: if status == "error" { rest } else { Vec::new() },
        status,
        recoverable: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real answers of `cloud-init status --format json` (see the fixtures' README).
    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/cloud-init-status/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn status_argv_is_a_fixed_bounded_argv() {
        assert_eq!(
            status_argv(30, Format::Json).join(" "),
            "timeout 30 cloud-init status --wait --format json"
        );
        assert_eq!(
            status_argv(0, Format::Tabular).join(" "),
            "timeout 1 cloud-init status --wait --long"
        );
        assert_eq!(
            output_log_argv(20, true).join(" "),
            "sudo -n tail -n 20 /var/log/cloud-init-output.log"
        );
    }

    #[test]
    fn cloud_init_22_4_done_is_done() {
        let out = fixture("22.4-done.json");
        assert_eq!(verdict(Format::Json, 0, &out, ""), Verdict::Done);
    }

    #[test]
    fn cloud_init_22_4_error_lists_the_failed_module() {
        let out = fixture("22.4-error.json");
        let Verdict::Error { errors } = verdict(Format::Json, 1, &out, "") else {
            panic!("not an error");
        };
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("('package-update-upgrade-install', ")),
            "{errors:?}"
        );
    }

    #[test]
    fn cloud_init_24_done_degraded_and_error() {
        assert_eq!(
            verdict(Format::Json, 0, &fixture("24.4-done.json"), ""),
            Verdict::Done
        );
        let Verdict::Degraded { warnings } =
            verdict(Format::Json, 2, &fixture("24.4-degraded.json"), "")
        else {
            panic!("exit 2 + degraded done is done with warnings");
        };
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("DEPRECATED: "), "{warnings:?}");
        let Verdict::Error { errors } = verdict(Format::Json, 1, &fixture("24.4-error.json"), "")
        else {
            panic!("exit 1 + status error is an error");
        };
        assert_eq!(
            errors,
            vec![
                "('scripts_user', RuntimeError('Runparts: 1 failures (runcmd) in /var/lib/cloud/instance/scripts'))"
            ]
        );
    }

    #[test]
    fn running_timed_out_missing_and_disabled() {
        assert_eq!(
            verdict(Format::Json, 0, &fixture("24.4-running.json"), ""),
            Verdict::Running
        );
        assert_eq!(verdict(Format::Json, 124, "", ""), Verdict::Running);
        assert_eq!(
            verdict(
                Format::Json,
                127,
                "",
                "timeout: failed to run command 'cloud-init': No such file or directory"
            ),
            Verdict::Missing
        );
        let disabled = r#"{"boot_status_code": "disabled-by-marker-file", "status": "disabled", "errors": []}"#;
        assert_eq!(verdict(Format::Json, 0, disabled, ""), Verdict::Disabled);
        let not_run = r#"{"status": "not run", "errors": []}"#;
        assert_eq!(verdict(Format::Json, 0, not_run, ""), Verdict::Running);
    }

    #[test]
    fn old_cloud_init_without_format_falls_back_to_text() {
        let usage = "usage: /usr/bin/cloud-init [-h] [--version] [--file FILES] [--debug] [--force]\n\
                     cloud-init: error: unrecognized arguments: --format json\n";
        assert_eq!(verdict(Format::Json, 2, "", usage), Verdict::NoJson);
        // 21.4 with --wait --long: dots, a newline, then the status.
        let done = "....\nstatus: done\ntime: Fri, 04 Dec 2026 18:31:43 +0000\ndetail:\nDataSourceNoCloud [seed=/dev/vdb][dsmode=net]\n";
        assert_eq!(verdict(Format::Tabular, 0, done, ""), Verdict::Done);
        let error = "..\nstatus: error\ntime: Fri, 04 Dec 2026 18:31:43 +0000\ndetail:\n('scripts-user', RuntimeError('Runparts: 1 failures in 1 attempted commands'))\n";
        let Verdict::Error { errors } = verdict(Format::Tabular, 1, error, "") else {
            panic!("status: error");
        };
        assert!(
            errors.iter().any(|e| e.contains("scripts-user")),
            "{errors:?}"
        );
    }

    #[test]
    fn unparsable_answers_follow_the_exit_code() {
        assert_eq!(verdict(Format::Json, 0, "garbage", ""), Verdict::Done);
        let Verdict::Error { errors } = verdict(Format::Json, 1, "", "Traceback …\nKeyError: 'v1'")
        else {
            panic!("exit 1");
        };
        assert_eq!(errors, vec!["Traceback …", "KeyError: 'v1'"]);
    }
}
