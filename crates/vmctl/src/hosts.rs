//! Remote hosts (`[hosts.NAME]` in config.toml): the entry and its validation, the ssh argv
//! that runs the vmctl installed there, and the edit of the config file `vmctl hosts add` and
//! `remove` make (toml_edit: comments and the other keys kept).
//!
//! `vmctl --host NAME CMD…` runs `ssh [-p PORT] [-i KEY -o IdentitiesOnly=yes] -o BatchMode=yes
//! -o ConnectTimeout=SECS -T|-t -- DEST REMOTE`. sshd hands REMOTE to the remote user's shell,
//! so it is one string: `[sudo -n --] VMCTL ARG…` with every word POSIX-single-quoted
//! ([`quote`]); nothing the user typed is ever interpreted by that shell.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{CommandFailure, Error, ExitKind, Failure};

/// The name `hosts status` gives this machine; no configured host may take it.
pub const LOCAL: &str = "local";

/// The default of setting `ssh_connect_timeout`, seconds.
pub const DEFAULT_CONNECT_TIMEOUT: u64 = 5;

/// The keys a `[hosts.NAME]` table may have.
pub const HOST_KEYS: &[&str] = &["ssh", "port", "identity", "sudo", "vmctl"];

/// One `[hosts.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostEntry {
    pub name: String,
    /// `[user@]host`.
    pub ssh: String,
    pub port: Option<u16>,
    /// Absolute path of the private key.
    pub identity: Option<PathBuf>,
    /// Run the remote vmctl as `sudo -n -- vmctl …`.
    pub sudo: bool,
    /// The vmctl program on that host (default `vmctl`).
    pub vmctl: String,
}

/// Errors of remote hosts.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error("invalid host name {name:?}: {reason}")]
    BadName { name: String, reason: String },
    #[error("invalid {field} for host {name:?}: {reason}")]
    BadField {
        name: String,
        field: &'static str,
        reason: String,
    },
    #[error("host {name:?} is already configured in {}", path.display())]
    Exists { name: String, path: PathBuf },
    #[error("no host named {name:?} is configured{}", known_list(known))]
    Unknown { name: String, known: Vec<String> },
    #[error("`vmctl {command}` cannot run with --host: it works on this machine's config")]
    NotWithHost { command: String },
    #[error("ssh {dest}: {reason}")]
    Unreachable {
        dest: String,
        vmctl: String,
        reason: String,
        check: bool,
    },
    #[error("config file {}: {reason}", path.display())]
    Edit { path: PathBuf, reason: String },
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        " (none are)".into()
    } else {
        format!(" (configured: {})", known.join(", "))
    }
}

impl CommandFailure for HostsError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            Self::Unreachable { check: false, .. } | Self::Edit { .. } => ExitKind::Failure,
            _ => ExitKind::Usage,
        }
    }

    fn help(&self) -> Vec<String> {
        match self {
            Self::BadName { .. } => vec![format!(
                "a host name is 1-63 lowercase letters, digits and '-', starting with a letter or digit; `{LOCAL}` means this machine"
            )],
            Self::BadField { field, .. } => vec![match *field {
                "ssh" => "give --ssh [USER@]HOST: a host name or IPv4 address, no spaces, not starting with '-'".into(),
                "port" => "give a port from 1 to 65535".into(),
                "identity" => "give the absolute path of the private key (e.g. /root/.ssh/id_ed25519)".into(),
                "vmctl" => "give the vmctl program on that host: a command name or an absolute path".into(),
                _ => "see `vmctl hosts add --help`".into(),
            }],
            Self::Exists { name, .. } => vec![format!(
                "remove it first with `vmctl hosts remove {name}`, or pick another name"
            )],
            Self::Unknown { .. } => vec![
                "add it with `vmctl hosts add NAME --ssh USER@HOST`; `vmctl hosts list` shows the configured hosts".into(),
            ],
            Self::NotWithHost { .. } => vec![
                "run it without --host: hosts are configured on this machine".into(),
            ],
            Self::Unreachable {
                dest, vmctl, check, ..
            } => {
                let mut help = vec![format!(
                    "check that `ssh -o BatchMode=yes {dest} {vmctl} --version` works from this machine (key, known_hosts, vmctl installed there)"
                )];
                if *check {
                    help.push(
                        "or add the host without the check: `vmctl hosts add … --no-check`".into(),
                    );
                }
                help
            }
            Self::Edit { .. } => vec!["fix the file by hand, or run `vmctl config show`".into()],
        }
    }
}

impl From<HostsError> for Error {
    fn from(e: HostsError) -> Self {
        Error::Command(Failure::new(e))
    }
}

/// `[a-z0-9][a-z0-9-]{0,62}`, not [`LOCAL`].
pub fn validate_name(name: &str) -> Result<(), HostsError> {
    let bad = |reason: &str| HostsError::BadName {
        name: name.into(),
        reason: reason.into(),
    };
    if name == LOCAL {
        return Err(bad("`local` is reserved: it means this machine"));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if name.is_empty() || name.len() > 63 {
        return Err(bad("must be 1-63 characters"));
    }
    if !name.chars().all(ok_char) || name.starts_with('-') {
        return Err(bad(
            "only lowercase letters, digits and '-' (not first) are allowed",
        ));
    }
    Ok(())
}

fn word_ok(s: &str, extra: &[char]) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || extra.contains(&c))
}

impl HostEntry {
    /// A host reached as `ssh` with the defaults: port and key from ssh's own config, no sudo,
    /// `vmctl` on its PATH.
    pub fn new(name: &str, ssh: &str) -> Self {
        HostEntry {
            name: name.into(),
            ssh: ssh.into(),
            port: None,
            identity: None,
            sudo: false,
            vmctl: "vmctl".into(),
        }
    }

    /// Checks every field (what config.toml and `hosts add` accept).
    pub fn validate(&self) -> Result<(), HostsError> {
        validate_name(&self.name)?;
        let bad = |field: &'static str, reason: &str| HostsError::BadField {
            name: self.name.clone(),
            field,
            reason: reason.into(),
        };
        let (user, host) = match self.ssh.split_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, self.ssh.as_str()),
        };
        if self.ssh.starts_with('-') {
            return Err(bad("ssh", "must not start with '-'"));
        }
        if let Some(u) = user
            && !word_ok(u, &['_'])
        {
            return Err(bad(
                "ssh",
                "the user must be letters, digits, '.', '_' or '-' (not first)",
            ));
        }
        if !word_ok(host, &[]) {
            return Err(bad(
                "ssh",
                "expected [USER@]HOST: HOST a host name or IPv4 address (letters, digits, '.', '-'; no spaces)",
            ));
        }
        if self.port == Some(0) {
            return Err(bad("port", "must be 1 to 65535"));
        }
        if let Some(id) = &self.identity {
            let s = id.to_string_lossy();
            if !id.is_absolute() || s.chars().any(char::is_control) {
                return Err(bad("identity", "must be an absolute path"));
            }
        }
        if self.vmctl.is_empty()
            || self.vmctl.starts_with('-')
            || self
                .vmctl
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(bad(
                "vmctl",
                "must be a program name or path without spaces, not starting with '-'",
            ));
        }
        Ok(())
    }

    /// `qemu+ssh://USER@HOST[:PORT]/system[?keyfile=PATH]`: libvirt on that host.
    pub fn uri(&self) -> String {
        let mut s = format!("qemu+ssh://{}", self.ssh);
        if let Some(p) = self.port {
            s += &format!(":{p}");
        }
        s += "/system";
        if let Some(id) = &self.identity {
            s += "?keyfile=";
            s += &percent_encode(&id.to_string_lossy());
        }
        s
    }

    /// The ssh options before the destination: port, identity, BatchMode, ConnectTimeout, and
    /// `-t` (a terminal) or `-T`.
    pub fn ssh_argv(&self, connect_timeout: u64, tty: bool, remote: &str) -> Vec<String> {
        let mut argv = vec!["ssh".to_string()];
        if let Some(p) = self.port {
            argv.extend(["-p".into(), p.to_string()]);
        }
        if let Some(id) = &self.identity {
            argv.extend([
                "-i".into(),
                id.display().to_string(),
                "-o".into(),
                "IdentitiesOnly=yes".into(),
            ]);
        }
        argv.extend([
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            format!("ConnectTimeout={connect_timeout}"),
            if tty { "-t" } else { "-T" }.into(),
            "--".into(),
            self.ssh.clone(),
            remote.into(),
        ]);
        argv
    }

    /// The remote command string: `[sudo -n --] VMCTL ARG…`, every word single-quoted.
    pub fn remote_command<S: AsRef<str>>(&self, args: &[S]) -> String {
        let mut words: Vec<&str> = Vec::new();
        if self.sudo {
            words.extend(["sudo", "-n", "--"]);
        }
        words.push(&self.vmctl);
        words.extend(args.iter().map(AsRef::as_ref));
        words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
    }
}

/// POSIX single-quoting: `'…'`, a `'` inside written as `'\''`. Every shell reads it back as
/// exactly the one word, whatever it holds (spaces, `$()`, newlines, quotes).
pub fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Percent-encodes everything but unreserved characters and '/' (a path in a URI query).
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

/// The bare package version from `vmctl --version` output (`vmctl 0.1.0 (1a2b3c4)` → `0.1.0`).
pub fn bare_version(version_output: &str) -> Option<String> {
    let line = version_output.lines().next()?.trim();
    let mut words = line.split_whitespace();
    let first = words.next()?;
    let v = if first.chars().next()?.is_ascii_digit() {
        first
    } else {
        words.next()?
    };
    v.chars()
        .next()
        .filter(char::is_ascii_digit)
        .map(|_| v.to_string())
}

/// This build's bare version.
pub fn this_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The `help:` line of a version mismatch: the upgrade on that host.
pub fn upgrade_help(name: &str, entry: &HostEntry, ours: &str) -> String {
    format!(
        "upgrade vmctl on {name}: copy vmctl_{ours}_amd64.deb there (`scp vmctl_{ours}_amd64.deb {}:`) and run `sudo apt-get install ./vmctl_{ours}_amd64.deb` on it",
        entry.ssh
    )
}

/// The config file's text as a `toml_edit` document (comments and layout kept).
fn parse_document(text: &str, path: &Path) -> Result<toml_edit::DocumentMut, HostsError> {
    text.parse()
        .map_err(|e: toml_edit::TomlError| HostsError::Edit {
            path: path.into(),
            reason: format!("not valid TOML: {}", crate::input::scrub(e.message())),
        })
}

/// Adds `[hosts.NAME]` to the config file's text (a new file: `text` empty). Comments and every
/// other key are kept. Refused when the name exists.
pub fn add_to_text(text: &str, path: &Path, entry: &HostEntry) -> Result<String, HostsError> {
    use toml_edit::DocumentMut;
    let mut doc = parse_document(text, path)?;
    if doc.get("hosts").is_none() {
        // No hosts yet: the new table goes at the end, after whatever the file ends with (a
        // comment introducing it stays above it), the rest byte for byte.
        let mut fresh = DocumentMut::new();
        add_table(&mut fresh, path, entry)?;
        let mut out = text.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        if !out.is_empty() && !out.ends_with("\n\n") {
            out.push('\n');
        }
        out += &fresh.to_string();
        return Ok(out);
    }
    add_table(&mut doc, path, entry)?;
    Ok(doc.to_string())
}

fn add_table(
    doc: &mut toml_edit::DocumentMut,
    path: &Path,
    entry: &HostEntry,
) -> Result<(), HostsError> {
    use toml_edit::{Item, Table, value};
    let hosts = doc
        .entry("hosts")
        .or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        })
        .as_table_mut()
        .ok_or_else(|| HostsError::Edit {
            path: path.into(),
            reason: "`hosts` is not a table".into(),
        })?;
    if hosts.contains_key(&entry.name) {
        return Err(HostsError::Exists {
            name: entry.name.clone(),
            path: path.into(),
        });
    }
    let mut t = Table::new();
    t.insert("ssh", value(entry.ssh.clone()));
    if let Some(p) = entry.port {
        t.insert("port", value(i64::from(p)));
    }
    if let Some(id) = &entry.identity {
        t.insert("identity", value(id.display().to_string()));
    }
    if entry.sudo {
        t.insert("sudo", value(true));
    }
    if entry.vmctl != "vmctl" {
        t.insert("vmctl", value(entry.vmctl.clone()));
    }
    hosts.insert(&entry.name, Item::Table(t));
    Ok(())
}

/// Removes `[hosts.NAME]` from the config file's text (the `hosts` table too when it was the
/// last). Unknown names are refused with the known ones.
pub fn remove_from_text(text: &str, path: &Path, name: &str) -> Result<String, HostsError> {
    use toml_edit::DocumentMut;
    let mut doc = parse_document(text, path)?;
    let known = |doc: &DocumentMut| -> Vec<String> {
        doc.get("hosts")
            .and_then(|h| h.as_table_like())
            .map(|t| t.iter().map(|(k, _)| k.to_string()).collect())
            .unwrap_or_default()
    };
    let names = known(&doc);
    let Some(hosts) = doc.get_mut("hosts").and_then(|h| h.as_table_like_mut()) else {
        return Err(HostsError::Unknown {
            name: name.into(),
            known: names,
        });
    };
    let Some(removed) = hosts.remove(name) else {
        return Err(HostsError::Unknown {
            name: name.into(),
            known: names,
        });
    };
    // Comment lines right above `[hosts.NAME]` go with it; those a blank line separates from
    // it (a section's introduction) stay: moved above the next host table, or to the end.
    let (position, kept) = match removed.as_table() {
        Some(t) => (
            t.position(),
            t.decor()
                .prefix()
                .and_then(|p| p.as_str())
                .and_then(|p| p.rfind("\n\n").map(|i| p[..i + 2].to_string()))
                .filter(|k| k.contains('#'))
                .unwrap_or_default(),
        ),
        None => (None, String::new()),
    };
    let next = position.and_then(|pos| {
        hosts
            .iter_mut()
            .filter_map(|(_, item)| item.as_table_mut())
            .filter(|t| t.position().is_some_and(|p| p > pos))
            .min_by_key(|t| t.position())
    });
    match next {
        Some(t) if !kept.is_empty() => {
            let old = t
                .decor()
                .prefix()
                .and_then(|p| p.as_str())
                .unwrap_or_default()
                .to_string();
            t.decor_mut().set_prefix(format!("{kept}{old}"));
        }
        Some(_) => {}
        None => {
            let empty = hosts.is_empty();
            if empty {
                doc.remove("hosts");
            }
            if !kept.is_empty() {
                let trailing = doc.trailing().as_str().unwrap_or_default().to_string();
                doc.set_trailing(format!("{}{trailing}", kept.trim_end_matches('\n')));
                if !empty || !doc.to_string().ends_with('\n') {
                    let t = doc.trailing().as_str().unwrap_or_default().to_string();
                    doc.set_trailing(format!("{t}\n"));
                }
            }
        }
    }
    if doc
        .get("hosts")
        .and_then(|h| h.as_table_like())
        .is_some_and(|h| h.is_empty())
    {
        doc.remove("hosts");
    }
    Ok(doc.to_string())
}

/// Reads `path` (empty when missing), edits it with `edit`, writes it back atomically keeping
/// its mode (0644 for a new file).
pub fn edit_config_file(
    path: &Path,
    edit: impl FnOnce(&str) -> Result<String, HostsError>,
) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let (text, mode) = match std::fs::metadata(path) {
        Ok(m) => {
            let text = crate::input::read_text(path, crate::input::CONFIG_MAX).map_err(|e| {
                HostsError::Edit {
                    path: path.into(),
                    reason: e.to_string(),
                }
            })?;
            (text, m.permissions().mode() & 0o7777)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), 0o644),
        Err(source) => {
            return Err(Error::Io {
                op: "read",
                path: path.into(),
                source,
            });
        }
    };
    let new = edit(&text)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        hostio::create_dir_all_mode(dir, 0o755).map_err(|source| Error::Io {
            op: "create directory",
            path: dir.into(),
            source,
        })?;
    }
    hostio::file::write_atomic(path, new.as_bytes(), mode).map_err(|source| Error::Io {
        op: "write",
        path: path.into(),
        source,
    })?;
    Ok(())
}

/// Looks up a configured host; unknown → [`HostsError::Unknown`] with the known names.
pub fn find<'a>(
    hosts: &'a BTreeMap<String, HostEntry>,
    name: &str,
) -> Result<&'a HostEntry, HostsError> {
    hosts.get(name).ok_or_else(|| HostsError::Unknown {
        name: name.into(),
        known: hosts.keys().cloned().collect(),
    })
}

/// The last non-empty line of ssh's stderr (its reason: "Connection timed out",
/// "Permission denied (publickey)"), escaped of nothing: callers escape for the terminal.
pub fn ssh_reason(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no output")
        .to_string()
}

#[cfg(test)]
mod tests;
