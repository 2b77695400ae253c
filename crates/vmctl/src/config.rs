//! vmctl's settings: built-in defaults < `/etc/vmctl/config.toml` < environment < flags, and
//! where each effective value came from (for `vmctl config show`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hostio::{HostRoot, paths};
use serde::Serialize;
use toml::Spanned;

use crate::error::{Error, Result};
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
        let (path, required) = match explicit {
            Some(path) => (path.to_path_buf(), true),
            None => (host.path(SYSTEM_CONFIG), false),
        };
        let (file, table) = match read_config(&path) {
            Ok(text) => {
                let table = parse_file(&path, &text)?;
                (Some(path), table)
            }
            Err(None) if !required => (None, BTreeMap::new()),
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
        Ok(Self { file, settings })
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

/// Parses config.toml: every key one of [`KEYS`], every value a TOML string. Errors give the
/// line and column but never the file's content: a key or value is not repeated back.
fn parse_file(path: &Path, text: &str) -> Result<BTreeMap<String, String>> {
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
    for (k, v) in table {
        let name = k.get_ref();
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
    Ok(out)
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
        let ok = parse_file(Path::new("/c.toml"), "bridge = \"br1\"\n").unwrap();
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
}
