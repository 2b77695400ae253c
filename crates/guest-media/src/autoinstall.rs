//! The NoCloud seed that drives an unattended Ubuntu Desktop install: `#cloud-config` user-data
//! whose top-level `autoinstall:` key (version 1) is read by subiquity, plus `meta-data`.
//! Rendered purely from an [`AutoinstallSpec`]. Reference: Ubuntu autoinstall reference
//! (<https://canonical-subiquity.readthedocs-hosted.com/en/latest/reference/autoinstall-reference.html>);
//! desktop installs (23.04+) take the same document, with the desktop source ids.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::seed::{self, SeedSpec};

/// Written to the serial console by the last late-command: the install finished.
pub const DONE_MARKER: &str = "VMCTL_DESKTOP_INSTALL_DONE";
/// Written to the serial console by `error-commands`: the installer failed.
pub const FAILED_MARKER: &str = "VMCTL_DESKTOP_INSTALL_FAILED";

/// Which desktop to install: the ids of the sources on the desktop ISO (`install-sources.yaml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Flavour {
    #[serde(rename = "ubuntu-desktop")]
    Full,
    #[serde(rename = "ubuntu-desktop-minimal")]
    Minimal,
}

impl Flavour {
    pub fn source_id(self) -> &'static str {
        match self {
            Self::Full => "ubuntu-desktop",
            Self::Minimal => "ubuntu-desktop-minimal",
        }
    }
}

/// `--keyboard LAYOUT[:VARIANT]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Keyboard {
    pub layout: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Keyboard {
    /// Parses `us`, `de:nodeadkeys`. XKB names are lowercase letters, digits, `_` and `-`.
    pub fn parse(s: &str) -> Result<Self> {
        let ok = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c))
        };
        let (layout, variant) = match s.split_once(':') {
            Some((l, v)) => (l, Some(v)),
            None => (s, None),
        };
        if !ok(layout) || !variant.is_none_or(ok) {
            return Err(Error::InvalidOption {
                option: "--keyboard".into(),
                value: s.into(),
                reason: "expected an XKB layout, optionally with a variant: us, de:nodeadkeys"
                    .into(),
            });
        }
        Ok(Self {
            layout: layout.into(),
            variant: variant.map(Into::into),
        })
    }
}

/// Everything the seed says. Identity, keys and network come from the same [`SeedSpec`] the
/// cloud-image path uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AutoinstallSpec {
    pub seed: SeedSpec,
    pub flavour: Flavour,
    /// Install the NVIDIA driver (`--gpu`) with `ubuntu-drivers install`.
    pub nvidia: bool,
    pub locale: String,
    pub keyboard: Keyboard,
    pub timezone: String,
}

#[derive(Serialize)]
struct CloudConfig<'a> {
    autoinstall: Autoinstall<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Autoinstall<'a> {
    version: u8,
    /// Progress events on tty1 and the serial console (what `--wait` reads).
    reporting: BTreeMap<&'a str, Reporter<'a>>,
    locale: &'a str,
    keyboard: &'a Keyboard,
    timezone: &'a str,
    source: Source<'a>,
    network: Value,
    storage: Storage<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<Identity<'a>>,
    ssh: Ssh<'a>,
    late_commands: Vec<Vec<String>>,
    error_commands: Vec<Vec<String>>,
    /// Powering off (not rebooting) makes the end of the install observable from the host: the
    /// domain shuts off, and vmctl switches it to boot from disk.
    shutdown: &'a str,
    /// cloud-init config for the installed system's first boot.
    user_data: InstalledUserData<'a>,
}

#[derive(Serialize)]
struct Reporter<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
}

#[derive(Serialize)]
struct Source<'a> {
    id: &'a str,
}

#[derive(Serialize)]
struct Storage<'a> {
    layout: Layout<'a>,
}

#[derive(Serialize)]
struct Layout<'a> {
    name: &'a str,
    /// The seed is a small read-only virtio disk too; the target is the largest disk.
    #[serde(rename = "match")]
    matches: BTreeMap<&'a str, &'a str>,
}

#[derive(Serialize)]
struct Identity<'a> {
    hostname: &'a str,
    username: &'a str,
    realname: &'a str,
    password: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Ssh<'a> {
    install_server: bool,
    authorized_keys: &'a [String],
    allow_pw: bool,
}

#[derive(Serialize)]
struct InstalledUserData<'a> {
    hostname: &'a str,
    disable_root: bool,
    ssh_pwauth: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    users: Vec<InstalledUser<'a>>,
}

/// The user when no password hash was given: identity needs a password, so the account comes
/// from cloud-init on first boot instead, SSH key only.
#[derive(Serialize)]
struct InstalledUser<'a> {
    name: &'a str,
    groups: Vec<&'a str>,
    shell: &'a str,
    sudo: &'a str,
    lock_passwd: bool,
    ssh_authorized_keys: &'a [String],
}

fn in_target(args: &[&str]) -> Vec<String> {
    ["curtin", "in-target", "--target=/target", "--"]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .collect()
}

/// Prints a marker on the serial console. The marker is assembled by printf at run time, so
/// its literal text is nowhere in the config: should the installer echo its configuration or a
/// command line to the console, the marker still appears only when the command runs.
fn to_console(marker: &str) -> Vec<String> {
    let (head, tail) = marker.rsplit_once('_').unwrap_or((marker, ""));
    vec![
        "sh".into(),
        "-c".into(),
        format!("printf '%s_%s\\n' {head} {tail} > /dev/ttyS0"),
    ]
}

/// The late-commands, in order: guest agent, NVIDIA driver (with `--gpu`), then the marker.
pub fn late_commands(spec: &AutoinstallSpec) -> Vec<Vec<String>> {
    let mut cmds = vec![
        in_target(&["apt-get", "update"]),
        in_target(&["apt-get", "install", "-y", "qemu-guest-agent"]),
    ];
    if spec.nvidia {
        // ubuntu-drivers picks the recommended driver for the GPU it sees: the passed-through GPU
        // is attached during the install for that reason.
        cmds.push(in_target(&["ubuntu-drivers", "install"]));
    }
    cmds.push(to_console(DONE_MARKER));
    cmds
}

/// The `autoinstall` document as JSON (what subiquity validates against its schema).
pub fn autoinstall_value(spec: &AutoinstallSpec) -> Result<Value> {
    let doc = document(spec)?;
    serde_json::to_value(&doc.autoinstall).map_err(|source| Error::RenderSeed {
        file: "user-data",
        source,
    })
}

fn document(spec: &AutoinstallSpec) -> Result<CloudConfig<'_>> {
    let s = &spec.seed;
    // The same netplan v2 document the cloud-image seed writes, matched by MAC.
    let network_yaml = seed::network_config(s)?;
    let mut network: Value =
        serde_yaml::from_str(&network_yaml).map_err(|e| Error::RenderSeed {
            file: "user-data",
            source: serde_json::Error::io(std::io::Error::other(e.to_string())),
        })?;
    // On a desktop NetworkManager owns the NIC (the panel shows and edits it), not networkd.
    if let Some(m) = network.as_object_mut() {
        m.insert("renderer".into(), "NetworkManager".into());
    }
    let identity = s.password_hash.as_deref().map(|password| Identity {
        hostname: &s.hostname,
        username: &s.user,
        realname: &s.user,
        password,
    });
    let users = if identity.is_some() {
        Vec::new()
    } else {
        vec![InstalledUser {
            name: &s.user,
            // What subiquity gives the identity user on a desktop.
            groups: vec!["adm", "sudo", "cdrom", "dip", "plugdev", "lpadmin"],
            shell: "/bin/bash",
            sudo: "ALL=(ALL) NOPASSWD:ALL",
            lock_passwd: true,
            ssh_authorized_keys: &s.ssh_authorized_keys,
        }]
    };
    Ok(CloudConfig {
        autoinstall: Autoinstall {
            version: 1,
            reporting: [("builtin", Reporter { kind: "print" })].into(),
            locale: &spec.locale,
            keyboard: &spec.keyboard,
            timezone: &spec.timezone,
            source: Source {
                id: spec.flavour.source_id(),
            },
            network,
            storage: Storage {
                layout: Layout {
                    name: "direct",
                    matches: [("size", "largest")].into(),
                },
            },
            identity,
            ssh: Ssh {
                install_server: true,
                authorized_keys: &s.ssh_authorized_keys,
                allow_pw: false,
            },
            late_commands: late_commands(spec),
            error_commands: vec![to_console(FAILED_MARKER)],
            shutdown: "poweroff",
            user_data: InstalledUserData {
                hostname: &s.hostname,
                disable_root: true,
                ssh_pwauth: false,
                users,
            },
        },
    })
}

/// `user-data`: `#cloud-config` with everything under `autoinstall:`.
pub fn user_data(spec: &AutoinstallSpec) -> Result<String> {
    let body = crate::yaml::to_string(&document(spec)?).map_err(|source| Error::RenderSeed {
        file: "user-data",
        source,
    })?;
    Ok(format!("#cloud-config\n{body}"))
}

/// The seed files: `user-data` and `meta-data` (network comes from `autoinstall.network`, which
/// subiquity applies to the installer and writes to the installed system).
pub fn render(spec: &AutoinstallSpec) -> Result<Vec<(&'static str, String)>> {
    Ok(vec![
        ("user-data", user_data(spec)?),
        ("meta-data", seed::meta_data(&spec.seed)?),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::GuestNetwork;

    pub(crate) fn sample(password: bool, nvidia: bool) -> AutoinstallSpec {
        AutoinstallSpec {
            seed: SeedSpec {
                hostname: "desk1".into(),
                instance_id: "desk1-0001".into(),
                user: "alice".into(),
                ssh_authorized_keys: vec![
                    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6 t@h"
                        .into(),
                ],
                password_hash: password.then(|| "$6$salt$hash".into()),
                packages: Vec::new(),
                network: GuestNetwork::Dhcp {
                    mac: "52:54:00:12:34:56".into(),
                },
                reset_machine_id: false,
                runcmd: Vec::new(),
                mounts: Vec::new(),
                driver: None,
            },
            flavour: Flavour::Full,
            nvidia,
            locale: "en_US.UTF-8".into(),
            keyboard: Keyboard::parse("de:nodeadkeys").unwrap(),
            timezone: "Europe/Berlin".into(),
        }
    }

    #[test]
    fn keyboard_parse() {
        assert_eq!(Keyboard::parse("us").unwrap().variant, None);
        assert!(Keyboard::parse("US").is_err());
        assert!(Keyboard::parse("de:").is_err());
    }

    #[test]
    fn late_commands_end_with_the_marker_and_add_nvidia_only_with_gpu() {
        let without = late_commands(&sample(true, false));
        let with = late_commands(&sample(true, true));
        let last = &without.last().unwrap()[2];
        assert_eq!(
            last,
            "printf '%s_%s\\n' VMCTL_DESKTOP_INSTALL DONE > /dev/ttyS0"
        );
        // The markers' literal text is nowhere in the seed.
        let ud = user_data(&sample(true, true)).unwrap();
        assert!(
            !ud.contains(DONE_MARKER) && !ud.contains(FAILED_MARKER),
            "{ud}"
        );
        assert!(
            !without
                .iter()
                .any(|c| c.contains(&"ubuntu-drivers".to_string()))
        );
        assert!(
            with.iter()
                .any(|c| c.contains(&"ubuntu-drivers".to_string()))
        );
        assert!(
            with.iter()
                .any(|c| c.contains(&"qemu-guest-agent".to_string()))
        );
    }

    #[test]
    fn identity_only_with_a_password_hash() {
        let v = autoinstall_value(&sample(true, false)).unwrap();
        assert_eq!(v["identity"]["password"], "$6$salt$hash");
        assert!(v["user-data"].get("users").is_none());
        let v = autoinstall_value(&sample(false, false)).unwrap();
        assert!(v.get("identity").is_none());
        assert_eq!(v["user-data"]["users"][0]["name"], "alice");
        assert_eq!(v["shutdown"], "poweroff");
        assert_eq!(v["source"]["id"], "ubuntu-desktop");
    }
}
