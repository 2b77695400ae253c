//! vmctl's settings: built-in defaults < `/etc/vmctl/config.toml` < environment < flags, and
//! where each effective value came from (for `vmctl config show`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hostio::{HostRoot, paths};
use serde::Serialize;
use toml::Spanned;

use crate::error::{Error, Result};
use crate::hosts::{HOST_KEYS, HostEntry};
use crate::input::{self, InputError};

/// The system config file.
pub const SYSTEM_CONFIG: &str = paths::ETC_VMCTL_CONFIG;

/// One setting: its key in config.toml, its environment variable, its built-in default.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    pub env: &'static str,
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

/// The settings that are switches: config.toml may give them as TOML booleans (`require_signature
/// = false`) as well as strings; every other setting must be a string.
const BOOLEAN_KEYS: &[&str] = &["require_signature"];

/// The settings that are numbers: config.toml may give them as TOML integers
/// (`ssh_connect_timeout = 5`) as well as strings.
const INTEGER_KEYS: &[&str] = &["ssh_connect_timeout"];

/// Every setting vmctl knows. Later commands add theirs here so `config show` lists them.
pub const KEYS: &[Key] = &[
    Key {
        name: "connect",
        env: "VMCTL_CONNECT",
        default: Some("qemu:///system"),
        doc: "libvirt connection URI",
    },
    Key {
        name: "bridge",
        env: "VMCTL_BRIDGE",
        default: Some("br0"),
        doc: "host bridge for VM NICs",
    },
    Key {
        name: "storage_dir",
        env: "VMCTL_STORAGE_DIR",
        default: Some(paths::VMCTL_STORAGE_DIR),
        doc: "per-VM disks, seeds and console logs",
    },
    Key {
        name: "image_cache",
        env: "VMCTL_IMAGE_CACHE",
        default: Some(paths::VMCTL_IMAGE_CACHE),
        doc: "content-addressed image cache",
    },
    Key {
        name: "state_dir",
        env: "VMCTL_STATE_DIR",
        default: Some(paths::VMCTL_STATE_DIR),
        doc: "vmctl state (clusters, records)",
    },
    Key {
        name: "ubuntu_cloud_url",
        env: "VMCTL_UBUNTU_CLOUD_URL",
        default: Some("https://cloud-images.ubuntu.com"),
        doc: "Ubuntu cloud image mirror",
    },
    Key {
        name: "ubuntu_releases_url",
        env: "VMCTL_UBUNTU_RELEASES_URL",
        default: Some("https://releases.ubuntu.com"),
        doc: "Ubuntu release ISO mirror",
    },
    Key {
        name: "ubuntu_old_releases_url",
        env: "VMCTL_UBUNTU_OLD_RELEASES_URL",
        default: Some("https://old-releases.ubuntu.com/releases"),
        doc: "mirror for releases past end of life",
    },
    Key {
        name: "talos_factory_url",
        env: "VMCTL_TALOS_FACTORY_URL",
        default: Some("https://factory.talos.dev"),
        doc: "Talos Image Factory",
    },
    Key {
        name: "github_api_url",
        env: "VMCTL_GITHUB_API_URL",
        default: Some("https://api.github.com"),
        doc: "GitHub API (Talos releases)",
    },
    Key {
        name: "gpg_keyring",
        env: "VMCTL_GPG_KEYRING",
        default: Some(paths::UBUNTU_CLOUDIMAGE_KEYRING),
        doc: "keyring for SHA256SUMS.gpg",
    },
    Key {
        name: "ubuntu_iso_keyring",
        env: "VMCTL_UBUNTU_ISO_KEYRING",
        // ubuntu-keyring: holds the "Ubuntu CD Image Automatic Signing Key" of release ISOs.
        default: Some(paths::UBUNTU_ARCHIVE_KEYRING),
        doc: "keyring for the release ISOs' SHA256SUMS.gpg (create --desktop)",
    },
    Key {
        name: "require_signature",
        env: "VMCTL_REQUIRE_SIGNATURE",
        default: Some("true"),
        doc: "refuse a mirror's SHA256SUMS without SHA256SUMS.gpg when the keyring exists (false: checksum only; also --allow-unsigned)",
    },
    Key {
        name: "cpu_mode",
        env: "VMCTL_CPU_MODE",
        default: Some("host-passthrough"),
        doc: "host-passthrough | host-model | custom:MODEL",
    },
    Key {
        name: "domain_type",
        env: "VMCTL_DOMAIN_TYPE",
        default: Some("kvm"),
        doc: "kvm | qemu (TCG)",
    },
    Key {
        name: "firmware",
        env: "VMCTL_FIRMWARE",
        default: Some("efi"),
        doc: "efi | bios",
    },
    Key {
        name: "reserved_ip_range",
        env: "VMCTL_RESERVED_IP_RANGE",
        default: None,
        doc: "addresses vmctl may hand out, e.g. 192.0.2.100-192.0.2.199",
    },
    Key {
        name: "reserved_ips",
        env: "VMCTL_RESERVED_IPS",
        default: None,
        doc: "addresses `create --ip auto` never picks (A, A-B or CIDR, comma-separated), e.g. the gateway and a DHCP pool",
    },
    Key {
        name: "ssh_user",
        env: "VMCTL_SSH_USER",
        default: Some("ubuntu"),
        doc: "guest user created by cloud-init",
    },
    Key {
        name: "guest_driver_branch",
        env: "VMCTL_GUEST_DRIVER_BRANCH",
        // R580: the last branch for Maxwell, Pascal and Volta (NVIDIA's Unix Graphics Feature
        // Deprecation Schedule), so one default drives every GPU vmctl installs a driver for.
        default: Some("580"),
        doc: "NVIDIA driver branch `create ubuntu --gpu` installs in the guest",
    },
    Key {
        name: "guest_cuda_repo",
        env: "VMCTL_GUEST_CUDA_REPO",
        default: Some("https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64"),
        doc: "NVIDIA's CUDA apt repository the guest driver comes from",
    },
    Key {
        name: "guest_cuda_key",
        env: "VMCTL_GUEST_CUDA_KEY",
        // The repository's signing key (the one cuda-keyring_1.1-1 installs).
        default: Some(
            "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/3bf863cc.pub",
        ),
        doc: "its signing key (ASCII armoured), fetched by vmctl and written into the guest",
    },
    Key {
        name: "guest_container_repo",
        env: "VMCTL_GUEST_CONTAINER_REPO",
        default: Some("https://nvidia.github.io/libnvidia-container/stable/deb"),
        doc: "the NVIDIA container toolkit's apt repository (--gpu-stack container)",
    },
    Key {
        name: "guest_container_key",
        env: "VMCTL_GUEST_CONTAINER_KEY",
        default: Some("https://nvidia.github.io/libnvidia-container/gpgkey"),
        doc: "its signing key (ASCII armoured)",
    },
    Key {
        name: "ssh_connect_timeout",
        env: "VMCTL_SSH_CONNECT_TIMEOUT",
        default: Some("5"),
        doc: "seconds ssh may take to connect to a remote host (`--host`, `hosts status`; [hosts.NAME] tables)",
    },
    Key {
        name: "ssh_key",
        env: "VMCTL_SSH_KEY",
        default: None,
        doc: "public key for the guest user (default ~/.ssh/id_*.pub)",
    },
];

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    Flag,
    Env { var: String },
    File { path: PathBuf },
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub value: Option<String>,
    pub source: Source,
}

/// The effective settings.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The config file that was read, if any.
    pub file: Option<PathBuf>,
    pub settings: BTreeMap<&'static str, Setting>,
    /// The remote hosts: `[hosts.NAME]` tables of the config file.
    pub hosts: BTreeMap<String, HostEntry>,
}

impl Config {
    /// Loads the settings. `explicit` is `--config PATH` (must exist); otherwise
    /// [`SYSTEM_CONFIG`] under `host` is read if present. `env` looks up environment variables;
    /// `flags` are (key, value) pairs from the command line.
    pub fn load(
        host: &HostRoot,
        explicit: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        flags: &[(&str, String)],
    ) -> Result<Self> {
        Self::load_file(host, explicit, explicit.is_some(), env, flags)
    }

    /// [`Config::load`], where a missing `explicit` file is accepted unless `required`
    /// (`vmctl hosts add --config NEW` creates it).
    pub fn load_file(
        host: &HostRoot,
        explicit: Option<&Path>,
        required: bool,
        env: &dyn Fn(&str) -> Option<String>,
        flags: &[(&str, String)],
    ) -> Result<Self> {
        let path = match explicit {
            Some(path) => path.to_path_buf(),
            None => host.path(SYSTEM_CONFIG),
        };
        let required = required && explicit.is_some();
        let (file, (table, hosts)) = match read_config(&path) {
            Ok(text) => {
                let parsed = parse_file(&path, &text)?;
                (Some(path), parsed)
            }
            Err(None) if !required => (None, Default::default()),
            Err(None) => {
                return Err(Error::ReadConfig {
                    path,
                    source: std::io::ErrorKind::NotFound.into(),
                });
            }
            Err(Some(e)) => return Err(e),
        };
        let mut settings = BTreeMap::new();
        for key in KEYS {
            let flag = flags.iter().rev().find(|(k, _)| *k == key.name);
            let setting = if let Some((_, v)) = flag {
                Setting {
                    value: Some(v.clone()),
                    source: Source::Flag,
                }
            } else if let Some(v) = env(key.env).filter(|v| !v.is_empty()) {
                Setting {
                    value: Some(v),
                    source: Source::Env {
                        var: key.env.to_string(),
                    },
                }
            } else if let (Some(v), Some(path)) = (table.get(key.name), &file) {
                Setting {
                    value: Some(v.clone()),
                    source: Source::File { path: path.clone() },
                }
            } else {
                Setting {
                    value: key.default.map(str::to_string),
                    source: Source::Default,
                }
            };
            settings.insert(key.name, setting);
        }
        Ok(Self {
            file,
            settings,
            hosts,
        })
    }

    /// Built-in defaults only (tests, and callers that have no host).
    pub fn defaults() -> Self {
        let settings = KEYS
            .iter()
            .map(|k| {
                (
                    k.name,
                    Setting {
                        value: k.default.map(str::to_string),
                        source: Source::Default,
                    },
                )
            })
            .collect();
        Self {
            file: None,
            settings,
            hosts: BTreeMap::new(),
        }
    }

    /// Overrides one value as if given by flag (used by tests and by commands with own flags).
    pub fn set(&mut self, key: &'static str, value: impl Into<String>) {
        self.settings.insert(
            key,
            Setting {
                value: Some(value.into()),
                source: Source::Flag,
            },
        );
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings.get(key).and_then(|s| s.value.as_deref())
    }

    /// A setting that has a built-in default.
    pub fn value(&self, key: &str) -> &str {
        self.get(key).unwrap_or_default()
    }

    pub fn source(&self, key: &str) -> Option<&Source> {
        self.settings.get(key).map(|s| &s.source)
    }

    pub fn connect(&self) -> &str {
        self.value("connect")
    }

    // vmctl's own directories are host paths like /sys and /etc: under `--host-root DIR` they
    // are DIR/var/lib/vmctl/…, so a create against a scratch root never writes to the real ones.

    /// `storage_dir` (VM disks, seeds and private files), mapped under `host`.
    pub fn storage_dir(&self, host: &HostRoot) -> PathBuf {
        host.path(self.value("storage_dir"))
    }

    /// `image_cache` (verified base images), mapped under `host`.
    pub fn image_cache(&self, host: &HostRoot) -> PathBuf {
        host.path(self.value("image_cache"))
    }

    /// `state_dir` (reservations, cluster secrets), mapped under `host`.
    pub fn state_dir(&self, host: &HostRoot) -> PathBuf {
        host.path(self.value("state_dir"))
    }

    /// `ssh_connect_timeout`: whole seconds, 1 to 3600.
    pub fn ssh_connect_timeout(&self) -> Result<u64> {
        let v = self.value("ssh_connect_timeout");
        match v.trim().parse::<u64>() {
            Ok(n) if (1..=3600).contains(&n) => Ok(n),
            _ => Err(Error::BadSetting {
                key: "ssh_connect_timeout".into(),
                value: v.into(),
                reason: "expected whole seconds from 1 to 3600".into(),
            }),
        }
    }

    /// `require_signature`: true, false (also yes/no, 1/0, on/off).
    pub fn require_signature(&self) -> Result<bool> {
        let v = self.value("require_signature");
        match v.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Ok(true),
            "false" | "no" | "0" | "off" => Ok(false),
            _ => Err(Error::BadSetting {
                key: "require_signature".into(),
                value: v.into(),
                reason: "expected true or false".into(),
            }),
        }
    }
}

/// The config file's text; `Err(None)` when it does not exist. Only a small regular file is
/// read ([`input::read_text`]).
fn read_config(path: &Path) -> std::result::Result<String, Option<Error>> {
    input::read_text(path, input::CONFIG_MAX).map_err(|e| match e {
        InputError::NotFound => None,
        InputError::Io(source) => Some(Error::ReadConfig {
            path: path.to_path_buf(),
            source,
        }),
        InputError::NotUtf8 { line, column } => Some(Error::ParseConfig {
            path: path.to_path_buf(),
            line,
            column,
            reason: "not UTF-8 text".into(),
        }),
        other => Some(Error::BadConfig {
            path: path.to_path_buf(),
            reason: other.to_string(),
        }),
    })
}

/// The key of [`KEYS`] closest to `key` (edit distance 2 or less), for "did you mean".
fn closest_key(key: &str) -> Option<&'static str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    KEYS.iter()
        .map(|k| (distance(key, k.name), k.name))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, n)| n)
}

/// A TOML table with the spans of its keys and values.
type SpannedTable = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

/// The `hosts` part of config.toml, read a second time with the spans of the inner keys.
#[derive(serde::Deserialize)]
struct HostsDoc {
    #[serde(default)]
    hosts: BTreeMap<Spanned<String>, Spanned<SpannedTable>>,
}

/// The settings and the hosts of config.toml.
type Parsed = (BTreeMap<String, String>, BTreeMap<String, HostEntry>);

/// Parses config.toml: every key one of [`KEYS`], every value a TOML string, and the
/// `[hosts.NAME]` tables ([`HOST_KEYS`]). Errors give the line and column but never the file's
/// content: a key or value is not repeated back.
fn parse_file(path: &Path, text: &str) -> Result<Parsed> {
    let at = |offset: usize, reason: String| {
        let (line, column) = input::line_column(text, offset);
        Error::ParseConfig {
            path: path.to_path_buf(),
            line,
            column,
            reason,
        }
    };
    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
        toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            at(
                offset,
                format!("not valid TOML: {}", input::scrub(e.message())),
            )
        })?;
    let mut out = BTreeMap::new();
    let mut hosts = BTreeMap::new();
    for (k, v) in table {
        let name = k.get_ref();
        if name == "hosts" {
            if !v.get_ref().is_table() {
                return Err(at(
                    v.span().start,
                    format!(
                        "hosts must be tables [hosts.NAME] with keys {}, not {}",
                        HOST_KEYS.join(", "),
                        v.get_ref().type_str()
                    ),
                ));
            }
            hosts = parse_hosts(text, &at)?;
            continue;
        }
        let Some(key) = KEYS.iter().find(|key| key.name == name) else {
            let hint = closest_key(name)
                .map(|n| format!("; did you mean `{n}`?"))
                .unwrap_or_default();
            let known: Vec<_> = KEYS.iter().map(|k| k.name).collect();
            return Err(at(
                k.span().start,
                format!("unknown key{hint} (known: {})", known.join(", ")),
            ));
        };
        let span = v.span();
        match v.into_inner() {
            toml::Value::String(s) => {
                out.insert(key.name.to_string(), s);
            }
            toml::Value::Boolean(b) if BOOLEAN_KEYS.contains(&key.name) => {
                out.insert(key.name.to_string(), b.to_string());
            }
            toml::Value::Integer(n) if INTEGER_KEYS.contains(&key.name) => {
                out.insert(key.name.to_string(), n.to_string());
            }
            other => {
                return Err(at(
                    span.start,
                    format!(
                        "{} must be a string, not {}; write it in quotes: {} = \"…\"",
                        key.name,
                        other.type_str(),
                        key.name
                    ),
                ));
            }
        }
    }
    Ok((out, hosts))
}

/// The `[hosts.NAME]` tables: each name valid, each key one of [`HOST_KEYS`] of its type,
/// the entry valid ([`HostEntry::validate`]).
fn parse_hosts(
    text: &str,
    at: &dyn Fn(usize, String) -> Error,
) -> Result<BTreeMap<String, HostEntry>> {
    let doc: HostsDoc = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        at(
            offset,
            format!(
                "hosts: each must be a table [hosts.NAME]: {}",
                input::scrub(e.message())
            ),
        )
    })?;
    let mut hosts = BTreeMap::new();
    for (name, table) in doc.hosts {
        let name_at = name.span().start;
        let name = name.into_inner();
        if let Err(e) = crate::hosts::validate_name(&name) {
            return Err(at(name_at, format!("hosts: {e}")));
        }
        let table_at = table.span().start;
        let mut entry = HostEntry::new(&name, "");
        let mut has_ssh = false;
        for (k, v) in table.into_inner() {
            let key_at = k.span().start;
            let key = k.into_inner();
            let v_at = v.span().start;
            let wrong = |what: &str, got: &toml::Value| {
                at(
                    v_at,
                    format!("hosts.{name}.{key} must be {what}, not {}", got.type_str()),
                )
            };
            match (key.as_str(), v.into_inner()) {
                ("ssh", toml::Value::String(s)) => {
                    entry.ssh = s;
                    has_ssh = true;
                }
                ("port", toml::Value::Integer(p)) => {
                    entry.port =
                        Some(u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                            at(v_at, format!("hosts.{name}.port must be 1 to 65535"))
                        })?);
                }
                ("identity", toml::Value::String(s)) => entry.identity = Some(PathBuf::from(s)),
                ("sudo", toml::Value::Boolean(b)) => entry.sudo = b,
                ("vmctl", toml::Value::String(s)) => entry.vmctl = s,
                ("ssh" | "identity" | "vmctl", other) => return Err(wrong("a string", &other)),
                ("port", other) => return Err(wrong("an integer", &other)),
                ("sudo", other) => return Err(wrong("true or false", &other)),
                _ => {
                    return Err(at(
                        key_at,
                        format!(
                            "hosts.{name}: unknown key (known: {})",
                            HOST_KEYS.join(", ")
                        ),
                    ));
                }
            }
        }
        if !has_ssh {
            return Err(at(
                table_at,
                format!("hosts.{name}: ssh = \"[USER@]HOST\" is required"),
            ));
        }
        if let Err(e) = entry.validate() {
            return Err(at(table_at, format!("hosts.{name}: {e}")));
        }
        hosts.insert(name, entry);
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_flag_env_file_default() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        host.write_atomic(
            SYSTEM_CONFIG,
            b"connect = \"qemu:///file\"\nbridge = \"brfile\"\nstorage_dir = \"/srv/vms\"\n",
            0o644,
        )
        .unwrap();
        let env = |k: &str| match k {
            "VMCTL_CONNECT" => Some("qemu:///env".to_string()),
            "VMCTL_BRIDGE" => Some("brenv".to_string()),
            _ => None,
        };
        let cfg =
            Config::load(&host, None, &env, &[("connect", "test:///default".into())]).unwrap();
        assert_eq!(cfg.connect(), "test:///default");
        assert_eq!(cfg.source("connect"), Some(&Source::Flag));
        assert_eq!(cfg.value("bridge"), "brenv");
        assert_eq!(
            cfg.source("bridge"),
            Some(&Source::Env {
                var: "VMCTL_BRIDGE".into()
            })
        );
        assert_eq!(cfg.value("storage_dir"), "/srv/vms");
        assert!(matches!(
            cfg.source("storage_dir"),
            Some(Source::File { .. })
        ));
        assert_eq!(cfg.value("image_cache"), "/var/lib/vmctl/images");
        assert_eq!(cfg.source("image_cache"), Some(&Source::Default));
    }

    #[test]
    fn unknown_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "brige = \"br0\"\n").unwrap();
        let err =
            Config::load(&HostRoot::new(dir.path()), Some(&path), &|_| None, &[]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("line 1, column 1: unknown key; did you mean `bridge`?"),
            "{msg}"
        );
        assert!(!msg.contains("brige"), "{msg}");
        assert_eq!(err.exit_kind(), crate::error::ExitKind::Usage);
    }

    fn parse_err(text: &str) -> String {
        let err = parse_file(Path::new("/c.toml"), text).unwrap_err();
        assert_eq!(err.exit_kind(), crate::error::ExitKind::Usage, "{err}");
        err.to_string()
    }

    #[test]
    fn values_must_be_strings() {
        for (text, at, ty) in [
            ("bridge = 5\n", "line 1, column 10", "integer"),
            ("\nbridge = true\n", "line 2, column 10", "boolean"),
            ("bridge = 1.5\n", "line 1, column 10", "float"),
            ("bridge = [\"br0\"]\n", "line 1, column 10", "array"),
            ("[bridge]\nx = 1\n", "line 1, column 1", "table"),
            ("ssh_user = 1979-05-27\n", "line 1, column 12", "datetime"),
        ] {
            let msg = parse_err(text);
            assert!(msg.contains(at), "{text:?}: {msg}");
            assert!(
                msg.contains(&format!("must be a string, not {ty}")),
                "{msg}"
            );
        }
        let (ok, _) = parse_file(Path::new("/c.toml"), "bridge = \"br1\"\n").unwrap();
        assert_eq!(ok["bridge"], "br1");
    }

    #[test]
    fn errors_never_quote_the_file() {
        for (text, at) in [
            (
                "root:$y$j9T$SECRET$HASH:19700:0:99999:7:::\n",
                "line 1, column ",
            ),
            (
                "bridge = \"SECRET\"\nbridge = \"SECRET2\"\n",
                "line 2, column 1",
            ),
            ("# x\nSECRET_token = \"SECRET\"\n", "line 2, column 1"),
            ("bridge = \"SECRET\n", "line 1, column "),
        ] {
            let msg = parse_err(text);
            assert!(msg.contains(at), "{text:?}: {msg}");
            for needle in ["SECRET", "root", "19700", "HASH"] {
                assert!(!msg.contains(needle), "{text:?}: {msg}");
            }
        }
    }

    #[test]
    fn require_signature_defaults_to_true_and_parses_booleans() {
        let mut cfg = Config::defaults();
        assert!(cfg.require_signature().unwrap());
        cfg.set("require_signature", "false");
        assert!(!cfg.require_signature().unwrap());
        cfg.set("require_signature", "maybe");
        let err = cfg.require_signature().unwrap_err();
        assert_eq!(err.exit_kind(), crate::error::ExitKind::Usage);
        // A TOML boolean in config.toml is read as its string.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "require_signature = false\n").unwrap();
        let cfg = Config::load(&HostRoot::new(dir.path()), Some(&path), &|_| None, &[]).unwrap();
        assert!(!cfg.require_signature().unwrap());
    }

    #[test]
    fn host_tables_are_read_next_to_the_flat_keys() {
        let (flat, hosts) = parse_file(
            Path::new("/c.toml"),
            "bridge = \"br1\"\n\n[hosts.gpu2]\nssh = \"admin@gpu2.lan\"\nport = 2222\nidentity = \"/root/.ssh/id_gpu2\"\nsudo = true\nvmctl = \"/usr/local/bin/vmctl\"\n\n[hosts.lab]\nssh = \"198.18.0.9\"\n",
        )
        .unwrap();
        assert_eq!(flat["bridge"], "br1");
        let g = &hosts["gpu2"];
        assert_eq!(g.ssh, "admin@gpu2.lan");
        assert_eq!(g.port, Some(2222));
        assert_eq!(g.identity.as_deref(), Some(Path::new("/root/.ssh/id_gpu2")));
        assert!(g.sudo);
        assert_eq!(g.vmctl, "/usr/local/bin/vmctl");
        let l = &hosts["lab"];
        assert_eq!((l.port, l.sudo, l.vmctl.as_str()), (None, false, "vmctl"));
    }

    #[test]
    fn host_tables_refuse_unknown_keys_and_bad_values_with_line_and_column() {
        for (text, at, what) in [
            (
                "[hosts.gpu2]\nssh = \"h\"\nprot = 22\n",
                "line 3, column 1",
                "hosts.gpu2: unknown key (known: ssh, port, identity, sudo, vmctl)",
            ),
            (
                "[hosts.gpu2]\nssh = \"h\"\nport = \"22\"\n",
                "line 3, column 8",
                "hosts.gpu2.port must be an integer, not string",
            ),
            (
                "[hosts.gpu2]\nssh = \"h\"\nport = 70000\n",
                "line 3, column 8",
                "port must be 1 to 65535",
            ),
            (
                "[hosts.gpu2]\nssh = \"h\"\nsudo = \"yes\"\n",
                "line 3, column 8",
                "must be true or false",
            ),
            (
                "[hosts.gpu2]\nport = 22\n",
                "line 1, column 1",
                "is required",
            ),
            (
                "\n[hosts.local]\nssh = \"h\"\n",
                "line 2, column 8",
                "`local` is reserved",
            ),
            (
                "[hosts.gpu2]\nssh = \"-oProxyCommand=x\"\n",
                "line 1, column 1",
                "invalid ssh",
            ),
            ("hosts = 5\n", "line 1, column 9", "hosts must be tables"),
            ("[hosts]\ngpu2 = 5\n", "line 2, column 8", "hosts:"),
        ] {
            let msg = parse_err(text);
            assert!(msg.contains(at), "{text:?}: {msg}");
            assert!(msg.contains(what), "{text:?}: {msg}");
        }
    }

    #[test]
    fn ssh_connect_timeout_defaults_to_five_and_refuses_nonsense() {
        let mut cfg = Config::defaults();
        assert_eq!(cfg.ssh_connect_timeout().unwrap(), 5);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "ssh_connect_timeout = 9\n").unwrap();
        let from_file =
            Config::load(&HostRoot::new(dir.path()), Some(&path), &|_| None, &[]).unwrap();
        assert_eq!(from_file.ssh_connect_timeout().unwrap(), 9);
        cfg.set("ssh_connect_timeout", "12");
        assert_eq!(cfg.ssh_connect_timeout().unwrap(), 12);
        for bad in ["0", "-1", "5s", "1.5", ""] {
            cfg.set("ssh_connect_timeout", bad);
            assert!(cfg.ssh_connect_timeout().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_packaged_config_parses_with_every_example_uncommented() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/vmctl/config.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest)
                    if rest.starts_with("[hosts.")
                        || rest.split_once(" = ").is_some_and(|(k, _)| {
                            !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        }) =>
                {
                    rest
                }
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let (flat, hosts) = parse_file(&path, &uncommented).unwrap();
        assert_eq!(flat["ssh_connect_timeout"], "5");
        let g = &hosts["gpu2"];
        assert_eq!((g.port, g.sudo), (Some(2222), true));
    }
}
