//! The planned network config, checked by netplan itself before anything is applied: the host's
//! netplan files with the plan's changes laid over them go into a scratch root, and netplan's
//! generator reads them there (`generate --root-dir`). A config netplan rejects is a refusal,
//! with netplan's own message.
//!
//! The generator binary is run directly rather than `netplan generate`: since netplan 1.0 the
//! CLI wrapper also runs `udevadm control --reload` and `systemctl daemon-reload` on the host,
//! even with `--root-dir` (netplan_cli/cli/commands/generate.py), and a plan changes nothing.
//! These are programs of the machine running us, not host paths under `--host-root`.

use std::path::Path;

use hostio::{Cmd, CommandError, CommandRunner, HostRoot, paths};

use crate::plan::{ActionKind, Phase, Plan};
use crate::planner::{Problem, Refusal};

const GENERATORS: &[&str] = paths::NETPLAN_GENERATORS;
const NETPLAN_DIRS: &[&str] = &[paths::LIB_NETPLAN, paths::ETC_NETPLAN, paths::RUN_NETPLAN];

/// Checks the plan's netplan files with netplan's generator. Returns a warning when the check
/// could not run under `--host-root` (netplan missing on this machine); on the real host a
/// missing netplan is a refusal, since the bridge could not be applied either.
pub fn check(
    plan: &Plan,
    root: &HostRoot,
    runner: &dyn CommandRunner,
) -> Result<Option<String>, Refusal> {
    let planned: Vec<(&str, &str)> = plan
        .actions
        .iter()
        .filter_map(|a| match &a.kind {
            ActionKind::WriteFile { path, content, .. }
                if NETPLAN_DIRS.iter().any(|d| in_dir(path, d)) =>
            {
                Some((path.as_str(), content.as_str()))
            }
            _ => None,
        })
        .collect();
    if planned.is_empty() {
        return Ok(None);
    }
    let refuse = |message: String, help: String| Refusal {
        problems: vec![Problem {
            phase: Phase::Bridge,
            message,
            help,
            forceable: false,
        }],
    };
    let scratch = tempfile::Builder::new()
        .prefix("gpu-vm-bootstrap-netplan-")
        .tempdir()
        .map_err(|e| {
            refuse(
                format!("cannot create a scratch directory to check the network config: {e}"),
                "check that $TMPDIR is writable, then run again".into(),
            )
        })?;
    let sroot = HostRoot::new(scratch.path());
    let copy_err = |what: String, e: std::io::Error| {
        refuse(
            format!("cannot prepare the network config check ({what}): {e}"),
            "check that $TMPDIR is writable and has space, then run again".into(),
        )
    };
    for dir in NETPLAN_DIRS {
        let real = root.resolve(dir).unwrap_or_else(|_| dir.into());
        for name in root.read_dir_names(&real).unwrap_or_default() {
            if !name.ends_with(".yaml") {
                continue;
            }
            let host = format!("{dir}/{name}");
            let Ok(bytes) = root.resolve(&host).and_then(|r| root.read(r)) else {
                continue;
            };
            sroot
                .write_atomic(&host, &bytes, 0o600)
                .map_err(|e| copy_err(host.clone(), e))?;
        }
    }
    for (path, content) in &planned {
        sroot
            .write_atomic(path, content.as_bytes(), 0o600)
            .map_err(|e| copy_err((*path).to_string(), e))?;
    }
    let scratch_str = scratch.path().display().to_string();
    let mut missing = Vec::new();
    for generator in GENERATORS {
        let cmd = Cmd::new([*generator, "--root-dir", scratch_str.as_str()]);
        match runner.output(&cmd) {
            Ok(out) if out.status == 0 => return Ok(None),
            Ok(out) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                // Show host paths, not the scratch copy's; drop the permission notes about
                // files netplan finds too open (the copies are 0600 anyway).
                let text: Vec<String> = stderr
                    .replace(&scratch_str, "")
                    .lines()
                    .filter(|l| !l.trim().is_empty() && !l.contains("Permissions for"))
                    .map(|l| format!("      {l}"))
                    .collect();
                return Err(refuse(
                    format!(
                        "`netplan generate` rejects the planned network config:\n{}",
                        text.join("\n")
                    ),
                    "fix the value netplan names in the host's netplan files (the bridge file carries the NIC's addressing from them), then run `gpu-vm-bootstrap plan` again; or pass --skip-bridge".into(),
                ));
            }
            Err(CommandError::Spawn { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                missing.push(*generator);
            }
            Err(e) => {
                return Err(refuse(
                    format!("cannot run netplan's generator to check the network config: {e}"),
                    "check the netplan.io package (`dpkg -s netplan.io`), or pass --skip-bridge"
                        .into(),
                ));
            }
        }
    }
    if root.is_system() {
        Err(refuse(
            format!(
                "netplan is not installed (no {}): the bridge config cannot be checked or applied",
                missing.join(", ")
            ),
            "install it (`sudo apt-get install netplan.io`), or pass --skip-bridge".into(),
        ))
    } else {
        Ok(Some(
            "netplan is not installed on this machine: the bridge config was not checked with `netplan generate`".into(),
        ))
    }
}

fn in_dir(path: &str, dir: &str) -> bool {
    Path::new(path).parent() == Some(Path::new(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Action;
    use hostio::{Output, RecordingRunner};

    fn plan_writing(path: &str, content: &str) -> Plan {
        Plan {
            actions: vec![Action {
                phase: Phase::Bridge,
                kind: ActionKind::WriteFile {
                    path: path.into(),
                    mode: 0o600,
                    content: content.into(),
                    old_content: None,
                },
                reason: String::new(),
            }],
            ..Plan::default()
        }
    }

    #[test]
    fn no_netplan_change_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let runner = RecordingRunner::new();
        let plan = plan_writing("/etc/modprobe.d/vfio.conf", "x");
        assert_eq!(check(&plan, &HostRoot::new(dir.path()), &runner), Ok(None));
        assert!(runner.calls().is_empty());
    }

    #[test]
    fn rejection_quotes_netplan_with_host_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        root.write_atomic("/etc/netplan/00.yaml", b"network: {version: 2}\n", 0o600)
            .unwrap();
        let runner = RecordingRunner::new().answer(
            [GENERATORS[0]],
            Output::failed(
                1,
                "SCRATCH/etc/netplan/60-x.yaml:3:5: Error in network definition: bad",
            ),
        );
        let plan = plan_writing("/etc/netplan/60-x.yaml", "network: {version: 2}\n");
        let err = check(&plan, &root, &runner).unwrap_err();
        let calls = runner.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0][..2], [GENERATORS[0], "--root-dir"]);
        let scratch = Path::new(&calls[0][2]);
        assert!(!scratch.exists(), "the scratch root is removed afterwards");
        assert!(
            err.problems[0]
                .message
                .contains("Error in network definition: bad")
        );
        assert!(!err.problems[0].help.is_empty());
    }
}
