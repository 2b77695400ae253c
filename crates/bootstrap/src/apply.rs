//! The applier: the only code that changes the host. Files are written atomically after their
//! old content is saved in a backup store with a journal (`/var/lib/gpu-vm-bootstrap/runs/<id>/`),
//! commands run through the [`CommandRunner`] (or are listed as skipped under a host root), the
//! bridge is activated under a watchdog, and `rollback` restores the last run byte for byte.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hostio::{Cmd, CommandRunner, HostRoot, paths};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::plan::{ActionKind, Plan};

/// Log levels for [`Log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// Where the applier reports progress. The binary writes it, timestamped, to stderr and a file.
pub trait Log {
    fn log(&self, level: Level, msg: &str);
}

/// Discards every message.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullLog;

impl Log for NullLog {
    fn log(&self, _: Level, _: &str) {}
}

/// How long the bridge watchdog waits for the bridge to carry the host's IP and reach the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watchdog {
    pub tries: u32,
    pub interval: Duration,
}

impl Default for Watchdog {
    fn default() -> Self {
        // DHCP on a fresh bridge typically takes a few seconds; 15 × 2 s leaves room for that.
        Self {
            tries: 15,
            interval: Duration::from_secs(2),
        }
    }
}

/// One file the run changed: enough to put it back exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalFile {
    pub path: String,
    pub existed: bool,
    pub mode: Option<u32>,
    /// File name of the old content in the run's `files/` directory.
    pub backup: Option<String>,
    /// Directories the write created, outermost first (removed again on rollback when empty).
    #[serde(default)]
    pub created_dirs: Vec<String>,
    /// SHA-256 of what the run wrote, so `rollback` can tell a file the user changed since.
    /// Journals written before this field existed load with `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_sha256: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandStatus {
    Pending,
    Done,
    Skipped,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalCommand {
    pub argv: Vec<String>,
    /// Plain commands can be re-run when an interrupted run is resumed; the bridge apply and a
    /// reboot cannot.
    pub resumable: bool,
    pub status: CommandStatus,
}

/// The record of one apply, rewritten atomically after every step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub id: String,
    pub finished: bool,
    /// The run was cut short and a later run finished its job; the two are one apply for
    /// `rollback`.
    #[serde(default)]
    pub interrupted: bool,
    pub rolled_back: bool,
    pub files: Vec<JournalFile>,
    pub commands: Vec<JournalCommand>,
    /// Bridges this run brought up that did not exist before it. `netplan apply` with a config
    /// that no longer defines a bridge leaves the device behind (seen with netplan 0.106 and
    /// systemd-networkd: br0 stays, down, with the NIC's MAC), so `rollback` deletes them.
    #[serde(default)]
    pub created_links: Vec<String>,
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    pub run_id: String,
    pub files_written: Vec<String>,
    pub commands_run: Vec<Vec<String>>,
    /// Commands listed but not run (under `--host-root`).
    pub commands_skipped: Vec<Vec<String>>,
    pub reboot_required: bool,
}

/// A file the user changed after apply wrote it: rollback put the original back and kept the
/// user's version as `copy`, next to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptFile {
    pub path: String,
    pub copy: String,
}

/// What a rollback did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RollbackReport {
    pub run_id: String,
    pub files_restored: Vec<String>,
    pub files_removed: Vec<String>,
    /// Files changed since apply wrote them, kept as copies before the restore.
    pub files_kept: Vec<KeptFile>,
    pub commands_run: Vec<Vec<String>>,
    pub commands_skipped: Vec<Vec<String>>,
}

fn runs_dir() -> String {
    format!("{}/runs", paths::BOOTSTRAP_STATE_DIR)
}

fn run_dir(id: &str) -> String {
    format!("{}/{id}", runs_dir())
}

/// The suffix of the copy rollback keeps of a file the user changed after apply.
pub const USER_EDIT_SUFFIX: &str = ".gpu-vm-bootstrap-user-edit-";

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn new_run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Zero-padded nanoseconds sort in time order as plain strings.
    format!("{nanos:020}")
}

/// Every journal in the store, oldest first. Unreadable journals are skipped.
pub fn load_journals(root: &HostRoot) -> Vec<Journal> {
    let mut out = Vec::new();
    for id in root.read_dir_names(runs_dir()).unwrap_or_default() {
        let p = format!("{}/journal.json", run_dir(&id));
        if let Ok(text) = root.read_to_string(&p)
            && let Ok(j) = serde_json::from_str::<Journal>(&text)
        {
            out.push(j);
        }
    }
    out
}

/// Commands an interrupted apply never finished; the next apply runs them first.
pub fn pending_commands(root: &HostRoot) -> Vec<Vec<String>> {
    match load_journals(root).pop() {
        Some(j) if !j.finished && !j.rolled_back => j
            .commands
            .into_iter()
            .filter(|c| {
                c.resumable && matches!(c.status, CommandStatus::Pending | CommandStatus::Failed)
            })
            .map(|c| c.argv)
            .collect(),
        _ => Vec::new(),
    }
}

/// Applies plans and rolls them back.
pub struct Applier<'a> {
    pub root: &'a HostRoot,
    pub runner: &'a dyn CommandRunner,
    /// False under `--host-root`: commands are listed as skipped.
    pub run_commands: bool,
    pub log: &'a dyn Log,
    pub watchdog: Watchdog,
}

impl std::fmt::Debug for Applier<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("root", &self.root)
            .field("run_commands", &self.run_commands)
            .field("watchdog", &self.watchdog)
            .finish()
    }
}

impl<'a> Applier<'a> {
    pub fn new(root: &'a HostRoot, runner: &'a dyn CommandRunner, log: &'a dyn Log) -> Self {
        Self {
            root,
            runner,
            run_commands: root.is_system(),
            log,
            watchdog: Watchdog::default(),
        }
    }

    fn save(&self, j: &Journal) -> Result<(), Error> {
        let path = format!("{}/journal.json", run_dir(&j.id));
        let text = serde_json::to_string_pretty(j).unwrap_or_default();
        self.root
            .write_atomic(&path, text.as_bytes(), 0o600)
            .map_err(|source| Error::Journal { path, source })
    }

    /// Applies `plan` in order. Stops at the first failure; the journal then shows how far it got,
    /// and a re-run (which plans only what is still missing) finishes the job.
    pub fn apply(&self, plan: &Plan) -> Result<ApplyReport, Error> {
        let mut j = Journal {
            id: new_run_id(),
            finished: false,
            interrupted: false,
            rolled_back: false,
            files: Vec::new(),
            commands: Vec::new(),
            created_links: Vec::new(),
        };
        let mut report = ApplyReport {
            run_id: j.id.clone(),
            reboot_required: plan.reboot_required,
            ..ApplyReport::default()
        };
        // Commands an interrupted run never finished (its files are in place, so this plan no
        // longer contains them): run them first.
        let resumed = pending_commands(self.root);
        let journals = load_journals(self.root);
        let unfinished: Vec<Journal> = journals
            .iter()
            .filter(|p| !p.finished && !p.rolled_back)
            .cloned()
            .collect();
        self.clear_stale_temps(&unfinished)?;
        let mut previous = journals
            .into_iter()
            .last()
            .filter(|p| !p.finished && !p.rolled_back);
        for argv in &resumed {
            j.commands.push(JournalCommand {
                argv: argv.clone(),
                resumable: true,
                status: CommandStatus::Pending,
            });
        }
        for a in &plan.actions {
            if let Some(argv) = a.kind.argv() {
                j.commands.push(JournalCommand {
                    argv: argv.to_vec(),
                    resumable: !matches!(
                        a.kind,
                        ActionKind::ApplyBridge { .. } | ActionKind::Reboot { .. }
                    ),
                    status: CommandStatus::Pending,
                });
            }
        }
        self.save(&j)?;
        self.log
            .log(Level::Info, &format!("apply run {} started", j.id));
        if let Some(prev) = previous.as_mut() {
            if !resumed.is_empty() {
                self.log.log(
                    Level::Warn,
                    &format!(
                        "run {} was interrupted: running its {} unfinished command(s) first",
                        prev.id,
                        resumed.len()
                    ),
                );
            }
            prev.finished = true;
            prev.interrupted = true;
            self.save(prev)?;
        }
        let mut cmd_idx = 0;
        for argv in &resumed {
            self.command(&mut j, cmd_idx, argv, &mut report)?;
            cmd_idx += 1;
        }
        for a in &plan.actions {
            match &a.kind {
                ActionKind::WriteFile {
                    path,
                    mode,
                    content,
                    ..
                } => {
                    self.write_file(&mut j, path, content.as_bytes(), *mode)?;
                    self.log
                        .log(Level::Info, &format!("[{}] wrote {path}", a.phase.name()));
                    report.files_written.push(path.clone());
                }
                ActionKind::InstallFile { path, mode, source } => {
                    let bytes = std::fs::read(source).map_err(|e| Error::ReadFile {
                        path: source.clone(),
                        source: e,
                    })?;
                    self.write_file(&mut j, path, &bytes, *mode)?;
                    self.log.log(
                        Level::Info,
                        &format!("[{}] installed {source} as {path}", a.phase.name()),
                    );
                    report.files_written.push(path.clone());
                }
                ActionKind::ApplyBridge {
                    bridge,
                    gateway,
                    expect_ip,
                    files,
                    argv,
                } => {
                    if self.run_commands {
                        let res = self.apply_bridge(
                            &mut j,
                            bridge,
                            gateway.as_deref(),
                            expect_ip.as_deref(),
                            files,
                        );
                        if res.is_err() {
                            j.commands[cmd_idx].status = CommandStatus::Failed;
                            let _ = self.save(&j);
                        }
                        res?;
                        j.commands[cmd_idx].status = CommandStatus::Done;
                        report.commands_run.push(argv.clone());
                    } else {
                        self.skip(&mut j, cmd_idx, argv, &mut report);
                    }
                    self.save(&j)?;
                    cmd_idx += 1;
                }
                ActionKind::Reboot { argv } => {
                    // The journal must be complete before the machine goes down.
                    j.finished = true;
                    if self.run_commands {
                        j.commands[cmd_idx].status = CommandStatus::Done;
                        self.save(&j)?;
                        self.log.log(Level::Warn, "rebooting now (--reboot)");
                        self.runner
                            .run(&Cmd::new(argv.clone()))
                            .map_err(|source| Error::Command { source })?;
                        report.commands_run.push(argv.clone());
                    } else {
                        self.skip(&mut j, cmd_idx, argv, &mut report);
                        self.save(&j)?;
                    }
                    cmd_idx += 1;
                }
                kind => {
                    let argv = kind.argv().unwrap_or_default().to_vec();
                    self.command(&mut j, cmd_idx, &argv, &mut report)?;
                    cmd_idx += 1;
                }
            }
        }
        j.finished = true;
        self.save(&j)?;
        self.log
            .log(Level::Info, &format!("apply run {} finished", j.id));
        Ok(report)
    }

    fn skip(&self, j: &mut Journal, idx: usize, argv: &[String], report: &mut ApplyReport) {
        j.commands[idx].status = CommandStatus::Skipped;
        self.log.log(
            Level::Info,
            &format!("skipped (host root): {}", argv.join(" ")),
        );
        report.commands_skipped.push(argv.to_vec());
    }

    fn command(
        &self,
        j: &mut Journal,
        idx: usize,
        argv: &[String],
        report: &mut ApplyReport,
    ) -> Result<(), Error> {
        if !self.run_commands {
            self.skip(j, idx, argv, report);
            return self.save(j);
        }
        self.log
            .log(Level::Info, &format!("running: {}", argv.join(" ")));
        match self.runner.run(&Cmd::new(argv.to_vec())) {
            Ok(_) => {
                j.commands[idx].status = CommandStatus::Done;
                report.commands_run.push(argv.to_vec());
                self.save(j)
            }
            Err(source) => {
                j.commands[idx].status = CommandStatus::Failed;
                let _ = self.save(j);
                Err(Error::Command { source })
            }
        }
    }

    /// Backs up the old file, records it in the journal, then writes the new one atomically.
    fn write_file(
        &self,
        j: &mut Journal,
        path: &str,
        bytes: &[u8],
        mode: u32,
    ) -> Result<(), Error> {
        let wrap = |source| Error::WriteFile {
            path: path.to_string(),
            source,
        };
        // Through a symlink, inside the root: the link stays a link and its target is written.
        let real = self.root.resolve(path).map_err(wrap)?;
        // A run killed inside write_atomic leaves its temp file behind; clear those first.
        self.root.remove_stale_temps(&real).map_err(wrap)?;
        let old = match self.root.read(&real) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(wrap(e)),
        };
        let old_mode = self
            .root
            .stat(&real)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777);
        let mut created_dirs = Vec::new();
        let mut dir = real.parent();
        while let Some(d) = dir {
            if d == Path::new("/") || self.root.exists(d) {
                break;
            }
            created_dirs.push(d.display().to_string());
            dir = d.parent();
        }
        created_dirs.reverse();
        let backup = match &old {
            Some(b) => {
                let name = format!("{}", j.files.len());
                let bpath = format!("{}/files/{name}", run_dir(&j.id));
                self.root
                    .write_atomic(&bpath, b, 0o600)
                    .map_err(|source| Error::Backup {
                        path: path.to_string(),
                        source,
                    })?;
                Some(name)
            }
            None => None,
        };
        j.files.push(JournalFile {
            path: path.to_string(),
            existed: old.is_some(),
            mode: old_mode,
            backup,
            created_dirs,
            written_sha256: Some(sha256_hex(bytes)),
        });
        self.save(j)?;
        self.root.write_atomic(&real, bytes, mode).map_err(wrap)
    }

    /// Clears the temp files a killed run left: next to every file `journals` record, and in
    /// the whole journal store (a run can be killed while it writes its journal or a backup,
    /// before the journal names that backup). Only `.NAME.tmp-PID` names of files this tool
    /// writes are touched.
    fn clear_stale_temps(&self, journals: &[Journal]) -> Result<(), Error> {
        let mut ours: Vec<String> = Vec::new();
        for id in self.root.read_dir_names(runs_dir()).unwrap_or_default() {
            let dir = run_dir(&id);
            ours.push(format!("{dir}/journal.json"));
            let files = format!("{dir}/files");
            for n in self.root.read_dir_names(&files).unwrap_or_default() {
                // `.N.tmp-PID` belongs to the backup `N`.
                if let Some(backup) = n
                    .strip_prefix('.')
                    .and_then(|r| r.split_once(".tmp-"))
                    .map(|(b, _)| b)
                    .filter(|b| !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()))
                {
                    ours.push(format!("{files}/{backup}"));
                }
            }
        }
        for f in journals.iter().flat_map(|j| &j.files) {
            if let Ok(real) = self.root.resolve(&f.path) {
                ours.push(real.display().to_string());
            }
        }
        ours.dedup();
        for p in ours {
            let removed = self
                .root
                .remove_stale_temps(&p)
                .map_err(|source| Error::WriteFile {
                    path: p.clone(),
                    source,
                })?;
            for r in removed {
                self.log.log(
                    Level::Info,
                    &format!("removed {}, left by an interrupted run", r.display()),
                );
            }
        }
        Ok(())
    }
}

mod bridge;
mod rollback;

pub use bridge::parse_ip_addr_json;
pub use rollback::follow_up_commands;

#[cfg(test)]
mod tests;
