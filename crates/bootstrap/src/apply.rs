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

    /// Puts one journalled file back as it was. A file changed since the run wrote it (its hash
    /// differs from the recorded one) is first kept as a copy next to it; the copy is returned.
    fn restore(&self, run_id: &str, f: &JournalFile) -> Result<Option<KeptFile>, Error> {
        let wrap = |source| Error::Restore {
            path: f.path.clone(),
            source,
        };
        let real = self.root.resolve(&f.path).map_err(wrap)?;
        self.root.remove_stale_temps(&real).map_err(wrap)?;
        let original = match (&f.backup, f.existed) {
            (Some(b), true) => Some(
                self.root
                    .read(format!("{}/files/{b}", run_dir(run_id)))
                    .map_err(wrap)?,
            ),
            _ => None,
        };
        let current = match self.root.read(&real) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(wrap(e)),
        };
        // Changed since the run wrote it, and not simply the original (a run killed between
        // its journal entry and the write never changed the file). A journal from before the
        // hash was recorded cannot tell the run's content from an edit: keep a copy then too.
        let kept = match &current {
            Some(cur)
                if Some(cur) != original.as_ref()
                    && f.written_sha256.as_deref() != Some(sha256_hex(cur).as_str()) =>
            {
                Some(self.keep_copy(&f.path, cur).map_err(wrap)?)
            }
            _ => None,
        };
        match original {
            Some(bytes) => {
                self.root
                    .write_atomic(&real, &bytes, f.mode.unwrap_or(0o644))
                    .map_err(wrap)?;
            }
            None => {
                self.root.remove_file(&real).map_err(wrap)?;
                for d in f.created_dirs.iter().rev() {
                    self.root.remove_dir_if_empty(d).map_err(wrap)?;
                }
            }
        }
        Ok(kept)
    }

    /// Saves `content` as `PATH.gpu-vm-bootstrap-user-edit-TIME` (mode 0600: the file may hold
    /// secrets, such as Wi-Fi passwords in netplan files, and must not run as a hook or script
    /// from a directory of them). The name is claimed with `O_EXCL`.
    fn keep_copy(&self, path: &str, content: &[u8]) -> std::io::Result<KeptFile> {
        let stamp = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_else(|_| new_run_id());
        let base = format!("{path}{USER_EDIT_SUFFIX}{stamp}");
        let mut n = 1;
        loop {
            let copy = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            match self.root.write_new(&copy, content, 0o600) {
                Ok(()) => {
                    self.log.log(
                        Level::Warn,
                        &format!(
                            "{path} was changed after apply wrote it: kept that version as {copy}"
                        ),
                    );
                    return Ok(KeptFile {
                        path: path.to_string(),
                        copy,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// `netplan generate` + `netplan apply`, then wait for the bridge to hold the host's IP and
    /// reach the gateway. On failure restore `files` from this run's backups and apply again:
    /// `netplan try` does not revert bridges reliably (netplan-try(8)); neither does `netplan
    /// apply`, which leaves a bridge it no longer defines in place, so a bridge this run created
    /// is deleted after the old config is back.
    fn apply_bridge(
        &self,
        j: &mut Journal,
        bridge: &str,
        gateway: Option<&str>,
        expect_ip: Option<&str>,
        files: &[String],
    ) -> Result<(), Error> {
        let run = |argv: &[&str]| self.runner.run(&Cmd::new(argv.iter().copied()));
        let link = format!("{}/{bridge}", paths::SYS_CLASS_NET);
        let existed = self.root.exists(&link);
        let outcome: Result<(), String> = (|| {
            run(&["netplan", "generate"]).map_err(|e| e.to_string())?;
            self.log.log(
                Level::Info,
                &format!("applying network config for {bridge}"),
            );
            run(&["netplan", "apply"]).map_err(|e| e.to_string())?;
            let mut last = String::from("no check ran");
            for attempt in 0..self.watchdog.tries.max(1) {
                if attempt > 0 {
                    std::thread::sleep(self.watchdog.interval);
                }
                match self.bridge_ok(bridge, gateway, expect_ip) {
                    Ok(()) => return Ok(()),
                    Err(e) => last = e,
                }
            }
            Err(last)
        })();
        let Err(reason) = outcome else {
            self.log.log(
                Level::Info,
                &format!("{bridge} is up with the host's address and reaches the gateway"),
            );
            if !existed && !j.created_links.iter().any(|l| l == bridge) {
                j.created_links.push(bridge.to_string());
            }
            return Ok(());
        };
        self.log.log(
            Level::Error,
            &format!("{bridge} check failed: {reason}; restoring the old network config"),
        );
        // The files come from this run, or from an earlier run that wrote them but was
        // interrupted before applying them: restore each from the newest record of it.
        let earlier = load_journals(self.root);
        for path in files {
            let found = std::iter::once(&*j)
                .chain(
                    earlier
                        .iter()
                        .rev()
                        .filter(|e| !e.rolled_back && e.id != j.id),
                )
                .find_map(|jr| jr.files.iter().find(|f| &f.path == path).map(|f| (jr, f)));
            match found {
                Some((jr, f)) => {
                    self.restore(&jr.id, f)?;
                }
                None => self.log.log(
                    Level::Warn,
                    &format!("no backup of {path} in the journal; left as it is"),
                ),
            }
        }
        let reapplied = run(&["netplan", "apply"]);
        self.log.log(
            Level::Warn,
            &match &reapplied {
                Ok(_) => "old network config restored and applied again".to_string(),
                Err(e) => format!("old network config restored, but `netplan apply` failed: {e}"),
            },
        );
        if !existed && self.root.exists(&link) {
            self.delete_link(bridge);
        }
        Err(Error::BridgeReverted {
            bridge: bridge.to_string(),
            reason,
        })
    }

    /// `ip link delete dev NAME` for a bridge this tool created; a failure is only logged (the
    /// host's address is already back on the NIC).
    fn delete_link(&self, name: &str) -> bool {
        match self
            .runner
            .run(&Cmd::new(["ip", "link", "delete", "dev", name]))
        {
            Ok(_) => {
                self.log.log(
                    Level::Info,
                    &format!(
                        "deleted {name}: `netplan apply` leaves a bridge it no longer defines"
                    ),
                );
                true
            }
            Err(e) => {
                self.log.log(
                    Level::Warn,
                    &format!(
                        "{name} is left over (delete it with `sudo ip link delete dev {name}`): {e}"
                    ),
                );
                false
            }
        }
    }

    fn bridge_ok(
        &self,
        bridge: &str,
        gateway: Option<&str>,
        expect_ip: Option<&str>,
    ) -> Result<(), String> {
        let out = self
            .runner
            .output(&Cmd::new(["ip", "-j", "addr", "show", "dev", bridge]))
            .map_err(|e| e.to_string())?;
        let ips = parse_ip_addr_json(&out.stdout_str());
        let has_ip = match expect_ip {
            Some(ip) => ips.iter().any(|a| a == ip),
            None => ips.iter().any(|a| !a.contains(':')),
        };
        if !has_ip {
            return Err(format!(
                "{bridge} does not hold {} (has: {})",
                expect_ip.unwrap_or("an IPv4 address"),
                if ips.is_empty() {
                    "nothing".to_string()
                } else {
                    ips.join(", ")
                }
            ));
        }
        if let Some(gw) = gateway {
            let out = self
                .runner
                .output(&Cmd::new(["ping", "-c1", "-W2", gw]))
                .map_err(|e| e.to_string())?;
            if out.status != 0 {
                return Err(format!("gateway {gw} does not answer ping"));
            }
        }
        Ok(())
    }

    /// Restores the files of the last apply that changed files and was not rolled back yet, then
    /// runs (or lists) the commands that make the restored files effective.
    pub fn rollback(&self) -> Result<RollbackReport, Error> {
        let mut journals = load_journals(self.root);
        let Some(last) = journals
            .iter()
            .rposition(|j| !j.rolled_back && !j.files.is_empty())
        else {
            return Err(Error::NothingToRollBack {
                dir: self
                    .root
                    .path(paths::BOOTSTRAP_STATE_DIR)
                    .display()
                    .to_string(),
            });
        };
        // Runs that were interrupted and finished by the run after them belong to this apply:
        // undo newest first, so the oldest backup (the true original) is written last.
        let mut group = vec![last];
        let mut k = last;
        while k > 0 {
            k -= 1;
            if journals[k].rolled_back || !journals[k].interrupted {
                break;
            }
            group.push(k);
        }
        let mut report = RollbackReport {
            run_id: group
                .iter()
                .map(|&i| journals[i].id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            ..RollbackReport::default()
        };
        let mut touched: Vec<String> = Vec::new();
        // Bridges brought up by this apply; a re-run that only applied files an interrupted run
        // wrote comes after `last` and has no files of its own.
        let oldest = group.iter().copied().min().unwrap_or(last);
        let mut links: Vec<String> = Vec::new();
        for j in journals[oldest..].iter().filter(|j| !j.rolled_back) {
            for l in &j.created_links {
                if !links.contains(l) {
                    links.push(l.clone());
                }
            }
        }
        self.clear_stale_temps(&journals[oldest..])?;
        for &i in &group {
            let j = &mut journals[i];
            for f in j.files.iter().rev() {
                if let Some(kept) = self.restore(&j.id, f)? {
                    report.files_kept.push(kept);
                }
                let list = if f.existed {
                    &mut report.files_restored
                } else {
                    &mut report.files_removed
                };
                if !list.contains(&f.path) {
                    list.push(f.path.clone());
                }
                touched.push(f.path.clone());
                self.log.log(Level::Info, &format!("restored {}", f.path));
            }
            j.rolled_back = true;
            self.save(j)?;
        }
        // A file created by one run and edited by the next is removed, not "restored".
        report
            .files_restored
            .retain(|p| !report.files_removed.contains(p));
        let mut follow_ups = follow_up_commands(touched.iter().map(String::as_str));
        let touched_refs: Vec<&str> = touched.iter().map(String::as_str).collect();
        follow_ups.extend(crate::bootloader::follow_ups(self.root, &touched_refs));
        for argv in follow_ups {
            if self.run_commands {
                self.log
                    .log(Level::Info, &format!("running: {}", argv.join(" ")));
                self.runner
                    .run(&Cmd::new(argv.clone()))
                    .map_err(|source| Error::Command { source })?;
                report.commands_run.push(argv);
            } else {
                self.log.log(
                    Level::Info,
                    &format!("skipped (host root): {}", argv.join(" ")),
                );
                report.commands_skipped.push(argv);
            }
        }
        for name in links {
            if !self.root.exists(format!("{}/{name}", paths::SYS_CLASS_NET)) {
                continue;
            }
            let argv: Vec<String> = ["ip", "link", "delete", "dev", name.as_str()]
                .iter()
                .map(|s| s.to_string())
                .collect();
            if !self.run_commands {
                self.log.log(
                    Level::Info,
                    &format!("skipped (host root): {}", argv.join(" ")),
                );
                report.commands_skipped.push(argv);
            } else if self.delete_link(&name) {
                report.commands_run.push(argv);
            }
        }
        Ok(report)
    }
}

/// The commands that make restored files take effect.
pub fn follow_up_commands<'p>(paths_changed: impl Iterator<Item = &'p str>) -> Vec<Vec<String>> {
    let changed: Vec<&str> = paths_changed.collect();
    let any = |f: &dyn Fn(&str) -> bool| changed.iter().any(|p| f(p));
    let mut out: Vec<Vec<String>> = Vec::new();
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    if any(&|p| p.starts_with(paths::ETC_DEFAULT_GRUB)) {
        out.push(v(&["update-grub"]));
    }
    if any(&|p| {
        [
            paths::ETC_MODPROBE_VFIO,
            paths::ETC_MODULES_LOAD_VFIO,
            paths::VFIO_OVERRIDE_SCRIPT,
            paths::INITRAMFS_HOOK_VFIO,
        ]
        .contains(&p)
    }) {
        out.push(v(&["update-initramfs", "-u", "-k", "all"]));
    }
    if any(&|p| p == paths::APT_CONTAINER_TOOLKIT_LIST) {
        out.push(v(&["apt-get", "update"]));
    }
    if any(&|p| p.starts_with(paths::ETC_NETPLAN)) {
        out.push(v(&["netplan", "apply"]));
    }
    out
}

/// IP addresses (without prefix) from `ip -j addr show` output.
pub fn parse_ip_addr_json(s: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(s) else {
        return Vec::new();
    };
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|link| link["addr_info"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["local"].as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests;
