//! `create --wait`: waits until a new VM is ready, the state a user would check by hand. Three
//! stages, each announced: (1) TCP 22 answers on the VM's address from the VM's own MAC;
//! (2) an SSH login with the VM's user and key runs `true`; (3) `cloud-init status --wait` in
//! the guest says cloud-init has finished. An sshd restart by cloud-init (set_passwords does
//! one after sshd first answered) only costs a retry until the deadline. A cloud-init error is
//! a failed wait carrying an excerpt of the guest's log. Nothing sleeps to let time pass: the
//! only pause is the poll interval between two looks at a state.

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hostio::{Cmd, CommandRunner, Output};
use hypervisor::domain::parse::parse_domain;

use super::cloud_init::{self, Format, Verdict};
use crate::commands::Ctx;
use crate::error::{CommandFailure, Error, ExitKind, Failure, Result};
use crate::net;

/// A wait that ended without a ready VM (the VM is kept).
#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    /// The VM was not ready (SSH with its key, cloud-init finished) in time.
    #[error("{name} was not ready within {secs} s: {what}{log}")]
    NotReady {
        name: String,
        secs: u64,
        what: String,
        log: LogExcerpt,
    },
    /// cloud-init in the guest reported an error (`cloud-init status`: error).
    #[error("cloud-init failed in {name} after {secs} s:{}{log}", bullets(.errors))]
    CloudInitFailed {
        name: String,
        secs: u64,
        errors: Vec<String>,
        log: LogExcerpt,
    },
}

impl CommandFailure for ReadyError {
    fn exit_kind(&self) -> ExitKind {
        ExitKind::Failure
    }

    fn help(&self) -> Vec<String> {
        match self {
            Self::NotReady { name, what, .. } => {
                let mut h = vec![
                    format!(
                        "{name} is kept: `vmctl ssh {name}` once it answers, `vmctl info {name}` for its console log; `vmctl stop {name} --force` then `vmctl delete {name} --yes` removes it"
                    ),
                    "a slow host (TCG, a busy machine) may need a longer --wait-timeout SECONDS"
                        .into(),
                ];
                if what.contains("Permission denied") {
                    h.push("vmctl logs in with the key given at create and never prompts: the private key must sit next to the .pub without a passphrase, or be loaded in ssh-agent".into());
                }
                h
            }
            Self::CloudInitFailed { name, .. } => vec![format!(
                "{name} is kept and keeps running: `vmctl ssh {name} -- sudo cloud-init status --long` and /var/log/cloud-init.log in the guest say more; `vmctl stop {name} --force` then `vmctl delete {name} --yes` removes it"
            )],
        }
    }
}

impl From<ReadyError> for Error {
    fn from(e: ReadyError) -> Self {
        Error::Command(Failure::new(e))
    }
}

/// What the wait tells the user while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A new stage began, or something worth a line of its own happened.
    Stage(String),
    /// How the current stage goes (a spinner's message).
    Status(String),
}

/// A VM that is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub addr: SocketAddr,
    /// Seconds from the start of the wait until the first SSH login.
    pub ssh_secs: u64,
    /// Seconds from the start of the wait until ready.
    pub secs: u64,
    /// cloud-init's verdict: done, done with warnings, disabled, or not installed.
    pub cloud_init: Verdict,
}

/// The pace of the wait. `Default` is what the binary uses; tests shorten it.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Between two looks at a state that did not change (SSH refused, no address yet).
    pub poll: Duration,
    /// The longest single `cloud-init status --wait` over one SSH session; the deadline and
    /// Ctrl-C are checked between slices.
    pub slice: Duration,
    /// Lines of the guest's log (or the console log) shown with a failure.
    pub log_lines: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            // A look costs a TCP connect, or one `ssh true` once the port answers: cheap next to
            // a boot. A longer pause only adds to the wait (half of it on average) after the
            // guest is already up; make bench (70-create-ready) compares with a 0.2 s loop.
            poll: Duration::from_millis(500),
            slice: Duration::from_secs(30),
            log_lines: 25,
        }
    }
}

/// The last lines of a log, shown under a failed wait.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogExcerpt {
    /// Where the lines come from, for the reader ("/var/log/cloud-init-output.log in vm1").
    pub source: String,
    pub lines: Vec<String>,
}

impl fmt::Display for LogExcerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lines.is_empty() {
            return Ok(());
        }
        write!(f, "\n  last {} lines of {}:", self.lines.len(), self.source)?;
        for l in &self.lines {
            write!(f, "\n  | {l}")?;
        }
        Ok(())
    }
}

/// cloud-init's errors as an indented list (each cut to a readable length).
pub fn bullets(errors: &[String]) -> String {
    errors
        .iter()
        .map(|e| {
            let e = e.trim();
            if e.chars().count() > 400 {
                format!("\n  - {}…", e.chars().take(400).collect::<String>())
            } else {
                format!("\n  - {e}")
            }
        })
        .collect()
}

/// A started VM reached over SSH.
#[derive(Debug, Clone)]
pub struct Guest {
    pub name: String,
    pub addr: SocketAddr,
    /// `ssh [options] user@ip`: each remote argv is appended to it.
    pub ssh: Vec<String>,
    /// The serial console log on this host, for an excerpt when SSH can't give one.
    pub console_log: Option<PathBuf>,
}

/// Waits until `name` is ready (see the module doc), within `timeout` from now.
pub fn wait_ready(
    ctx: &Ctx,
    name: &str,
    timeout: Duration,
    policy: &Policy,
    report: &dyn Fn(Progress),
) -> Result<Ready> {
    let start = Instant::now();
    let rec = ctx.hv.require(name)?;
    let facts = parse_domain(&rec.xml)?;
    let md = facts.metadata.clone().unwrap_or_default();
    let console_log = facts
        .console_log
        .clone()
        .or_else(|| md.dir.as_ref().map(|d| d.join("console.log")));
    let macs: Vec<String> = facts
        .nics
        .iter()
        .filter_map(|n| n.mac.as_ref().map(|m| m.to_ascii_lowercase()))
        .collect();
    let addr = wait_for_port(
        ctx,
        name,
        &macs,
        (start, timeout),
        policy,
        console_log.as_deref(),
        report,
    )?;
    let std::net::IpAddr::V4(ip) = addr.ip() else {
        return Err(Error::NoAddress { name: name.into() });
    };
    let guest = Guest {
        name: name.into(),
        addr,
        ssh: super::ssh_argv(&md, ip, true, &[]),
        console_log,
    };
    let running = || Ok(ctx.hv.state(name)?.is_active());
    let (ssh_secs, cloud_init) = wait_in_guest(
        ctx.runner,
        &guest,
        (start, timeout),
        policy,
        &running,
        ctx.cancelled,
        report,
    )?;
    Ok(Ready {
        addr,
        ssh_secs,
        secs: start.elapsed().as_secs(),
        cloud_init,
    })
}

/// Stage 1: TCP 22 answers on the VM's address, from one of the VM's MACs: a stale guest or
/// another host holding the same address must not count.
fn wait_for_port(
    ctx: &Ctx,
    name: &str,
    macs: &[String],
    (start, timeout): (Instant, Duration),
    policy: &Policy,
    console_log: Option<&Path>,
    report: &dyn Fn(Progress),
) -> Result<SocketAddr> {
    let mut announced: Option<Option<SocketAddr>> = None;
    let mut what;
    loop {
        check_interrupt(ctx.cancelled, name, "SSH")?;
        let secs = start.elapsed().as_secs();
        // libvirt's test driver's guest agent answers with made-up addresses: never probe those.
        let address = super::address(ctx, name).and_then(|(ip, source)| {
            if source == super::IpSource::Agent && ctx.hv.uri().starts_with("test:") {
                Err(Error::NoAddress { name: name.into() })
            } else {
                Ok(ip)
            }
        });
        match address {
            Ok(ip) => {
                let addr = SocketAddr::from((ip, 22));
                if announced != Some(Some(addr)) {
                    report(Progress::Stage(format!("waiting for SSH on {addr}")));
                    announced = Some(Some(addr));
                }
                if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok() {
                    match net::neighbour_mac(ctx.host, ip) {
                        Some(mac) if !macs.contains(&mac) => {
                            what = format!(
                                "{addr} answers from {mac}, not from {name}: another host uses this address"
                            );
                            report(Progress::Status(format!("{what} ({secs} s)")));
                        }
                        _ => return Ok(addr),
                    }
                } else {
                    what = format!("SSH on {addr} does not answer");
                    report(Progress::Status(format!(
                        "waiting for SSH on {addr} ({secs} s)"
                    )));
                }
            }
            Err(Error::NoAddress { .. }) => {
                if announced != Some(None) {
                    report(Progress::Stage("waiting for an address".into()));
                    announced = Some(None);
                }
                what = "no address known (no static IP, no guest agent answer, no neighbour entry)"
                    .into();
                report(Progress::Status(format!(
                    "waiting for {name} to get an address ({secs} s)"
                )));
            }
            Err(e) => return Err(e),
        }
        if start.elapsed() >= timeout {
            return Err(not_ready(
                name,
                timeout.as_secs(),
                what,
                console_excerpt(console_log, policy.log_lines),
            ));
        }
        if !ctx.hv.state(name)?.is_active() {
            return Err(not_ready(
                name,
                start.elapsed().as_secs(),
                "it stopped running".into(),
                console_excerpt(console_log, policy.log_lines),
            ));
        }
        std::thread::sleep(policy.poll);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Login,
    CloudInit,
}

/// Stages 2 and 3, over SSH through `runner`: a login with the VM's key, then cloud-init's
/// verdict. Returns the seconds until the first login and the verdict. `running` says whether
/// the VM still runs (checked between retries), `cancelled` whether the user asked to stop.
pub fn wait_in_guest(
    runner: &dyn CommandRunner,
    guest: &Guest,
    (start, timeout): (Instant, Duration),
    policy: &Policy,
    running: &dyn Fn() -> Result<bool>,
    cancelled: fn() -> bool,
    report: &dyn Fn(Progress),
) -> Result<(u64, Verdict)> {
    let name = guest.name.as_str();
    let addr = guest.addr;
    let mut phase = Phase::Login;
    let mut format = Format::Json;
    let mut ssh_secs = 0;
    let mut last = String::new();
    let mut dropped = false;
    loop {
        check_interrupt(
            cancelled,
            name,
            match phase {
                Phase::Login => "SSH",
                Phase::CloudInit => "cloud-init",
            },
        )?;
        let secs = start.elapsed().as_secs();
        match phase {
            Phase::Login => {
                let out = ssh(runner, guest, &["true".to_string()])?;
                if out.status == 0 {
                    ssh_secs = secs;
                    report(Progress::Stage(format!(
                        "SSH up after {secs} s; waiting for cloud-init"
                    )));
                    phase = Phase::CloudInit;
                    continue;
                }
                last = complaint(&out);
                report(Progress::Status(format!(
                    "waiting for the SSH login on {addr}: {last} ({secs} s)"
                )));
            }
            Phase::CloudInit => {
                let left = timeout.saturating_sub(start.elapsed());
                let slice = ceil_secs(policy.slice.min(left)).max(1);
                let out = ssh(runner, guest, &cloud_init::status_argv(slice, format))?;
                let secs = start.elapsed().as_secs();
                if out.status == SSH_FAILED {
                    last = complaint(&out);
                    if !dropped {
                        report(Progress::Stage(format!(
                            "SSH dropped after {secs} s ({last}); retrying until the deadline"
                        )));
                        dropped = true;
                    } else {
                        report(Progress::Status(format!(
                            "waiting for SSH on {addr} again: {last} ({secs} s)"
                        )));
                    }
                } else {
                    if dropped {
                        report(Progress::Stage(format!("SSH back after {secs} s")));
                        dropped = false;
                    }
                    let v = cloud_init::verdict(
                        format,
                        out.status,
                        &out.stdout_str(),
                        &String::from_utf8_lossy(&out.stderr),
                    );
                    match v {
                        Verdict::Running => {
                            report(Progress::Status(format!(
                                "cloud-init still running ({secs} s)"
                            )));
                        }
                        Verdict::NoJson => {
                            format = Format::Tabular;
                            continue;
                        }
                        Verdict::Error { errors } => {
                            return Err(ReadyError::CloudInitFailed {
                                name: name.into(),
                                secs,
                                errors,
                                log: guest_log(runner, guest, policy),
                            }
                            .into());
                        }
                        done => return Ok((ssh_secs, done)),
                    }
                    // The slice itself waited (timeout(1) fired): look again at once, unless
                    // the deadline passed.
                    if out.status == 124 && start.elapsed() < timeout {
                        continue;
                    }
                }
            }
        }
        if start.elapsed() >= timeout {
            return Err(match phase {
                Phase::Login => not_ready(
                    name,
                    timeout.as_secs(),
                    format!("SSH on {addr} does not let {} in: {last}", user(guest)),
                    console_excerpt(guest.console_log.as_deref(), policy.log_lines),
                ),
                Phase::CloudInit => not_ready(
                    name,
                    timeout.as_secs(),
                    "cloud-init is still running".into(),
                    guest_log(runner, guest, policy),
                ),
            });
        }
        if !running()? {
            return Err(not_ready(
                name,
                start.elapsed().as_secs(),
                "it stopped running".into(),
                console_excerpt(guest.console_log.as_deref(), policy.log_lines),
            ));
        }
        std::thread::sleep(policy.poll);
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// ssh(1) exits 255 when it fails itself (connection refused or reset, authentication), any
/// other status is the remote command's.
const SSH_FAILED: i32 = 255;

fn ssh(runner: &dyn CommandRunner, guest: &Guest, remote: &[String]) -> Result<Output> {
    let mut argv = guest.ssh.clone();
    argv.extend(remote.iter().cloned());
    runner
        .output(&Cmd::new(argv))
        .map_err(|source| Error::RunSsh {
            name: guest.name.clone(),
            source,
        })
}

/// The user part of the destination (`user@ip`, the last word of the ssh argv).
fn user(guest: &Guest) -> &str {
    guest
        .ssh
        .last()
        .and_then(|d| d.split_once('@'))
        .map_or("root", |(u, _)| u)
}

/// What ssh said last (its stderr, `LogLevel=ERROR`: only errors).
fn complaint(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(String::from)
        .unwrap_or_else(|| format!("ssh exited {}", out.status))
}

fn check_interrupt(cancelled: fn() -> bool, name: &str, what: &str) -> Result<()> {
    if !cancelled() {
        return Ok(());
    }
    Err(Error::Interrupted {
        during: format!("the wait for {what} on {name}"),
        next: format!(
            "{name} is created and keeps running: `vmctl ssh {name}` once it is up, or `vmctl delete {name} --yes`"
        ),
    })
}

fn not_ready(name: &str, secs: u64, what: String, log: LogExcerpt) -> Error {
    ReadyError::NotReady {
        name: name.into(),
        secs,
        what,
        log,
    }
    .into()
}

/// The tail of the guest's cloud-init output log over SSH (through sudo, then without), or of
/// the console log when SSH can't give it.
fn guest_log(runner: &dyn CommandRunner, guest: &Guest, policy: &Policy) -> LogExcerpt {
    for sudo in [true, false] {
        let argv = cloud_init::output_log_argv(policy.log_lines, sudo);
        if let Ok(out) = ssh(runner, guest, &argv)
            && out.status == 0
        {
            let lines = clean_lines(&out.stdout_str(), policy.log_lines);
            if !lines.is_empty() {
                return LogExcerpt {
                    source: format!("{} in {}", cloud_init::OUTPUT_LOG, guest.name),
                    lines,
                };
            }
        }
    }
    console_excerpt(guest.console_log.as_deref(), policy.log_lines)
}

/// The last `n` lines of the serial console log (only its last 64 KiB are read).
pub fn console_excerpt(path: Option<&Path>, n: usize) -> LogExcerpt {
    let Some(path) = path else {
        return LogExcerpt::default();
    };
    let read = || -> std::io::Result<Vec<u8>> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(buf)
    };
    match read() {
        Ok(bytes) => LogExcerpt {
            source: format!("the console log {}", path.display()),
            lines: clean_lines(&String::from_utf8_lossy(&bytes), n),
        },
        Err(_) => LogExcerpt::default(),
    }
}

/// The last `n` non-empty lines, without terminal escapes (a serial console is full of
/// them: systemd's colours, cursor moves) or other control characters.
fn clean_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<String> = text
        .split(['\n', '\r'])
        .map(strip_escapes)
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// Drops ECMA-48 CSI sequences (`ESC [ … final byte 0x40–0x7e`), other `ESC x` pairs and
/// control characters except tab.
fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests;
