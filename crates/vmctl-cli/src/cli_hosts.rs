//! `vmctl hosts add|remove|list|status` and `vmctl --host NAME CMD…` on the binary side: the
//! arguments, the forwarding over SSH (inherited stdio, the remote exit code), and the
//! rendering of [`vmctl::hosts`] / [`vmctl::commands::hosts`] results as text or JSON.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use hostio::{Cmd, CommandRunner, HostRoot, SystemRunner};
use serde::Serialize;
use vmctl::Error;
use vmctl::commands::hosts::{self as status, HostRow, Status};
use vmctl::config::{Config, SYSTEM_CONFIG};
use vmctl::hosts::{self, HostEntry, HostsError};
use vmctl::hypervisor::Libvirt;

use crate::args::{Cli, Command};
use crate::render::human_bytes;
use crate::{esc, out, out_json, table};

#[derive(Debug, Subcommand)]
pub(crate) enum HostsCommand {
    /// Add a remote host ([hosts.NAME] in the config file), after checking over SSH that its
    /// vmctl answers (`vmctl --version`; skip with --no-check)
    ///
    /// The check runs `ssh -o BatchMode=yes [USER@]HOST VMCTL --version`: the key must already
    /// be accepted and the host key known. When it fails, nothing is written (exit 2); add the
    /// host anyway with --no-check.
    Add(AddArgs),
    /// Remove a remote host from the config file
    Remove {
        /// The host's name (`vmctl hosts list`)
        name: String,
    },
    /// The configured hosts: ssh destination, port, identity, sudo, vmctl program and the
    /// libvirt URI (qemu+ssh://) of each
    List,
    /// One inventory of this machine (`local`) and every configured host, asked all at once
    ///
    /// CPUs and memory, GPUs free and used (with the VMs holding them), VMs, the bridge's last
    /// scan (`vmctl ip check`; nothing scans here) and the vmctl and gpu-vm-bootstrap versions.
    /// Each remote host runs its own `vmctl --json hosts status --local` over SSH; a host that
    /// does not answer within the connect timeout shows as unreachable (exit 1) without
    /// holding up the others.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// The host's name: 1-63 lowercase letters, digits and '-' (`local` is this machine)
    name: String,
    /// Where ssh connects: [USER@]HOST
    #[arg(long, value_name = "USER@HOST")]
    ssh: String,
    /// SSH port (default: ssh's, 22)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Private key for ssh (absolute path; ssh uses only this key)
    #[arg(long, value_name = "PATH")]
    identity: Option<PathBuf>,
    /// Run the remote vmctl as root with `sudo -n` (the remote user needs passwordless sudo)
    #[arg(long)]
    sudo: bool,
    /// The vmctl program on that host
    #[arg(long, value_name = "PROG", default_value = "vmctl")]
    vmctl: String,
    /// Do not check over SSH that the host's vmctl answers before adding it
    #[arg(long)]
    no_check: bool,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Seconds ssh may take to connect to each host (default: setting ssh_connect_timeout, 5)
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: Option<u64>,
    /// Only this machine's row (what a remote host answers)
    #[arg(long)]
    local: bool,
}

/// `hosts list --json`: one host.
#[derive(Debug, Serialize)]
struct ListedHost<'a> {
    name: &'a str,
    ssh: &'a str,
    port: Option<u16>,
    identity: Option<String>,
    sudo: bool,
    vmctl: &'a str,
    uri: String,
}

#[derive(Debug, Serialize)]
struct HostList<'a> {
    hosts: Vec<ListedHost<'a>>,
}

/// The config file `hosts add|remove` edit: `--config PATH`, else the system one.
fn config_path(cli: &Cli, host: &HostRoot) -> PathBuf {
    cli.config
        .clone()
        .unwrap_or_else(|| host.path(SYSTEM_CONFIG))
}

/// The connect timeout: `--timeout`, else setting `ssh_connect_timeout`.
fn connect_timeout(config: &Config, flag: Option<u64>) -> Result<u64, Error> {
    match flag {
        Some(t) => Ok(t),
        None => config.ssh_connect_timeout(),
    }
}

/// Runs a `hosts` subcommand; its own exit code (`status` exits 1 when a host is unreachable,
/// after printing every row).
pub(crate) fn run(
    c: &HostsCommand,
    cli: &Cli,
    host: &HostRoot,
    config: &Config,
) -> Result<ExitCode, Error> {
    match c {
        HostsCommand::Add(a) => add(a, cli, host, config).map(|()| ExitCode::SUCCESS),
        HostsCommand::Remove { name } => {
            let path = config_path(cli, host);
            hosts::find(&config.hosts, name)?;
            hosts::edit_config_file(&path, |text| hosts::remove_from_text(text, &path, name))?;
            if cli.json {
                out_json(&serde_json::json!({ "removed": name }));
            } else {
                clikit::errln(&format!(
                    "host {} removed from {}",
                    esc(name),
                    esc(&path.display().to_string())
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        HostsCommand::List => {
            let list = HostList {
                hosts: config
                    .hosts
                    .values()
                    .map(|h| ListedHost {
                        name: &h.name,
                        ssh: &h.ssh,
                        port: h.port,
                        identity: h.identity.as_ref().map(|p| p.display().to_string()),
                        sudo: h.sudo,
                        vmctl: &h.vmctl,
                        uri: h.uri(),
                    })
                    .collect(),
            };
            if cli.json {
                out_json(&list);
            } else if list.hosts.is_empty() {
                clikit::errln(
                    "no hosts configured; add one with `vmctl hosts add NAME --ssh USER@HOST`",
                );
            } else {
                let mut rows = vec![
                    ["NAME", "SSH", "PORT", "IDENTITY", "SUDO", "VMCTL", "URI"]
                        .map(String::from)
                        .to_vec(),
                ];
                for h in &list.hosts {
                    rows.push(vec![
                        esc(h.name),
                        esc(h.ssh),
                        h.port.map_or("-".into(), |p| p.to_string()),
                        h.identity.as_deref().map_or("-".into(), esc),
                        if h.sudo { "yes" } else { "no" }.into(),
                        esc(h.vmctl),
                        esc(&h.uri),
                    ]);
                }
                out(&table(rows));
            }
            Ok(ExitCode::SUCCESS)
        }
        HostsCommand::Status(a) => {
            let timeout = connect_timeout(config, a.timeout)?;
            let st = if a.local {
                Status::new(vec![local_row(config, host)])
            } else {
                status::collect(&SystemRunner, &config.hosts, timeout, || {
                    local_row(config, host)
                })
            };
            if cli.json {
                out_json(&st);
            } else {
                out(&render_status(&st));
            }
            Ok(if st.unreachable == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn local_row(config: &Config, host: &HostRoot) -> HostRow {
    match Libvirt::open(config.connect()) {
        Ok(hv) => {
            let scanner = netscan::Scanner::new(host.clone());
            let ctx = crate::wire(config, host, &hv, &scanner);
            status::local_row(config, host, &SystemRunner, Ok(&ctx))
        }
        Err(e) => status::local_row(config, host, &SystemRunner, Err(e.to_string())),
    }
}

fn add(a: &AddArgs, cli: &Cli, host: &HostRoot, config: &Config) -> Result<(), Error> {
    let entry = HostEntry {
        name: a.name.clone(),
        ssh: a.ssh.clone(),
        port: a.port,
        identity: a.identity.clone(),
        sudo: a.sudo,
        vmctl: a.vmctl.clone(),
    };
    entry.validate()?;
    let path = config_path(cli, host);
    if config.hosts.contains_key(&entry.name) {
        return Err(HostsError::Exists {
            name: entry.name,
            path,
        }
        .into());
    }
    let mut remote_version = None;
    if !a.no_check {
        let timeout = config.ssh_connect_timeout()?;
        let remote = entry.remote_command(&["--version"]);
        let mut argv = vec![
            "timeout".to_string(),
            "-k".into(),
            "2".into(),
            (timeout + status::COMMAND_GRACE).to_string(),
        ];
        argv.extend(entry.ssh_argv(timeout, false, &remote));
        let o = SystemRunner
            .output(&Cmd::new(argv))
            .map_err(|e| HostsError::Unreachable {
                dest: entry.ssh.clone(),
                vmctl: entry.vmctl.clone(),
                reason: e.to_string(),
                check: true,
            })?;
        let version = (o.status == 0)
            .then(|| hosts::bare_version(&o.stdout_str()))
            .flatten();
        match version {
            Some(v) => remote_version = Some(v),
            None => {
                let reason = if o.status == 0 {
                    format!("`{} --version` printed no version", entry.vmctl)
                } else {
                    format!(
                        "`{} --version` failed (exit {}): {}",
                        entry.vmctl,
                        o.status,
                        hosts::ssh_reason(&o.stderr)
                    )
                };
                return Err(HostsError::Unreachable {
                    dest: entry.ssh.clone(),
                    vmctl: entry.vmctl.clone(),
                    reason,
                    check: true,
                }
                .into());
            }
        }
    }
    hosts::edit_config_file(&path, |text| hosts::add_to_text(text, &path, &entry))?;
    if cli.json {
        out_json(&serde_json::json!({
            "added": entry.name,
            "uri": entry.uri(),
            "vmctl_version": remote_version,
        }));
    } else {
        clikit::errln(&format!(
            "host {} added to {} (ssh {}{})",
            esc(&entry.name),
            esc(&path.display().to_string()),
            esc(&entry.ssh),
            remote_version
                .as_deref()
                .map(|v| format!(", vmctl {}", esc(v)))
                .unwrap_or_default()
        ));
    }
    if let Some(v) = &remote_version
        && v != hosts::this_version()
    {
        version_note(&entry, v);
    }
    Ok(())
}

fn version_note(entry: &HostEntry, theirs: &str) {
    let ours = hosts::this_version();
    clikit::errln(&format!(
        "note: host {} runs vmctl {}, this machine runs {ours}",
        esc(&entry.name),
        esc(theirs)
    ));
    clikit::errln(&format!(
        "help: {}",
        esc(&hosts::upgrade_help(&entry.name, entry, ours))
    ));
}

fn dash(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The `hosts status` table, then a line per host with an error.
pub(crate) fn render_status(st: &Status) -> String {
    let mut rows = vec![
        [
            "HOST",
            "STATUS",
            "CPUS",
            "MEMORY",
            "AVAILABLE",
            "GPUS FREE/USED/ALL",
            "VMS",
            "BRIDGE",
            "FREE IPS",
            "VMCTL",
            "BOOTSTRAP",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for h in &st.hosts {
        let running = h.vms.iter().filter(|v| v.state == "running").count();
        rows.push(vec![
            esc(&h.name),
            if !h.reachable {
                "unreachable".into()
            } else if h.version_mismatch {
                "ok (version differs)".into()
            } else {
                "ok".into()
            },
            dash(h.cpus),
            dash(h.memory_bytes.map(human_bytes)),
            dash(h.memory_available_bytes.map(human_bytes)),
            if h.reachable {
                format!("{}/{}/{}", h.gpus_free, h.gpus_used, h.gpus.len())
            } else {
                "-".into()
            },
            if h.reachable {
                format!("{} ({running} running)", h.vms.len())
            } else {
                "-".into()
            },
            dash(
                h.bridge
                    .as_ref()
                    .map(|b| esc(&format!("{} {}", b.name, b.subnet))),
            ),
            dash(h.bridge.as_ref().map(|b| b.free)),
            dash(h.vmctl_version.as_deref().map(esc)),
            dash(h.bootstrap_version.as_deref().map(esc)),
        ]);
    }
    let mut s = table(rows);
    for h in &st.hosts {
        let held: Vec<String> = h
            .gpus
            .iter()
            .filter_map(|g| {
                g.vm.as_ref()
                    .map(|vm| format!("{} → {}", esc(&g.bdf), esc(vm)))
            })
            .collect();
        if !held.is_empty() {
            s += &format!("{}: GPUs in use: {}\n", esc(&h.name), held.join(", "));
        }
    }
    for h in &st.hosts {
        if let Some(e) = &h.error {
            s += &format!("{}: {}\n", esc(&h.name), esc(&e.message));
            for line in &e.help {
                s += &format!("  help: {}\n", esc(line));
            }
        }
    }
    s
}

/// The typed arguments minus the ones that name this machine's things: `--host NAME`,
/// `--config PATH`, `--host-root DIR` (either spelling, `--opt V` or `--opt=V`). Nothing after
/// a `--` is touched.
pub(crate) fn remote_args(raw: &[OsString]) -> Vec<String> {
    const LOCAL_ONLY: [&str; 3] = ["--host", "--config", "--host-root"];
    let mut out = Vec::new();
    let mut it = raw.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        if a == "--" {
            out.push(a);
            out.extend(it.by_ref());
            break;
        }
        if LOCAL_ONLY.contains(&a.as_str()) {
            it.next();
            continue;
        }
        if LOCAL_ONLY
            .iter()
            .any(|o| a.strip_prefix(o).is_some_and(|r| r.starts_with('=')))
        {
            continue;
        }
        out.push(a);
    }
    out
}

/// Interactive commands get a terminal on the remote side (`ssh -t`) when stdin is one.
fn interactive(cmd: &Command) -> bool {
    match cmd {
        Command::Console { .. } | Command::Ssh { .. } => true,
        Command::Top(t) => !t.once,
        _ => false,
    }
}

/// `vmctl --host NAME CMD…`: runs CMD with the vmctl on that host over ssh, stdio inherited,
/// and exits with its code (a signal death as 128+N). After exit 2 the remote version is
/// asked: a different one is noted with the upgrade command.
pub(crate) fn forward(
    cli: &Cli,
    name: &str,
    config: &Config,
    raw: &[OsString],
) -> Result<ExitCode, Error> {
    if matches!(cli.command, Command::Hosts(_) | Command::Config(_)) {
        let command = if matches!(cli.command, Command::Hosts(_)) {
            "hosts"
        } else {
            "config"
        };
        return Err(HostsError::NotWithHost {
            command: command.into(),
        }
        .into());
    }
    let entry = hosts::find(&config.hosts, name)?;
    let timeout = config.ssh_connect_timeout()?;
    let args = remote_args(raw);
    let tty = interactive(&cli.command) && std::io::stdin().is_terminal();
    let argv = entry.ssh_argv(timeout, tty, &entry.remote_command(&args));
    tracing::debug!(?argv, "forwarding to host {name}");
    let status = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .status()
        .map_err(|source| Error::Io {
            op: "run",
            path: PathBuf::from(&argv[0]),
            source,
        })?;
    let code = match status.code() {
        Some(c) => c,
        None => {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        }
    };
    if code == 2
        && let Some(v) = status::remote_version(&SystemRunner, entry, timeout)
        && v != hosts::this_version()
    {
        version_note(entry, &v);
    }
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn only_console_ssh_and_a_live_top_want_a_remote_terminal() {
        use clap::Parser;
        let wants = |args: &[&str]| {
            let cli =
                Cli::try_parse_from(std::iter::once("vmctl").chain(args.iter().copied())).unwrap();
            interactive(&cli.command)
        };
        assert!(wants(&["console", "vm1"]));
        assert!(wants(&["ssh", "vm1"]));
        assert!(wants(&["top"]));
        assert!(!wants(&["top", "--once"]));
        assert!(!wants(&["list"]));
        assert!(!wants(&["create", "ubuntu", "vm1", "--no-start"]));
    }

    #[test]
    fn remote_args_drop_the_local_only_options_but_nothing_after_double_dash() {
        assert_eq!(
            remote_args(&os(&[
                "--host",
                "gpu2",
                "--config=/x.toml",
                "list",
                "--json",
                "--host-root",
                "/r"
            ])),
            ["list", "--json"]
        );
        assert_eq!(
            remote_args(&os(&["ssh", "vm1", "--host=gpu2", "--", "--host", "x"])),
            ["ssh", "vm1", "--", "--host", "x"]
        );
        assert_eq!(remote_args(&os(&["--hostname", "x"])), ["--hostname", "x"]);
    }
}
