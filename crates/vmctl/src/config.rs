//! vmctl's settings: built-in defaults < `/etc/vmctl/config.toml` < environment < flags, and
//! where each effective value came from (for `vmctl config show`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hostio::HostRoot;
use serde::Serialize;

use crate::error::{Error, Result};

/// The system config file.
pub const SYSTEM_CONFIG: &str = "/etc/vmctl/config.toml";

/// One setting: its key in config.toml, its environment variable, its built-in default.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    pub env: &'static str,
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

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
        default: Some("/var/lib/vmctl/vms"),
        doc: "per-VM disks, seeds and console logs",
    },
    Key {
        name: "image_cache",
        env: "VMCTL_IMAGE_CACHE",
        default: Some("/var/lib/vmctl/images"),
        doc: "content-addressed image cache",
    },
    Key {
        name: "state_dir",
        env: "VMCTL_STATE_DIR",
        default: Some("/var/lib/vmctl"),
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
        default: Some("/usr/share/keyrings/ubuntu-cloudimage-keyring.gpg"),
        doc: "keyring for SHA256SUMS.gpg",
    },
    Key {
        name: "ubuntu_iso_keyring",
        env: "VMCTL_UBUNTU_ISO_KEYRING",
        // ubuntu-keyring: holds the "Ubuntu CD Image Automatic Signing Key" of release ISOs.
        default: Some("/usr/share/keyrings/ubuntu-archive-keyring.gpg"),
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
        let (file, table) = match explicit {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
                    path: path.to_path_buf(),
                    source,
                })?;
                (Some(path.to_path_buf()), parse_file(path, &text)?)
            }
            None => match host.read_to_string(SYSTEM_CONFIG) {
                Ok(text) => {
                    let path = host.path(SYSTEM_CONFIG);
                    let table = parse_file(&path, &text)?;
                    (Some(path), table)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, BTreeMap::new()),
                Err(source) => {
                    return Err(Error::ReadConfig {
                        path: host.path(SYSTEM_CONFIG),
                        source,
                    });
                }
            },
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

    pub fn storage_dir(&self) -> PathBuf {
        PathBuf::from(self.value("storage_dir"))
    }

    pub fn image_cache(&self) -> PathBuf {
        PathBuf::from(self.value("image_cache"))
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

fn parse_file(path: &Path, text: &str) -> Result<BTreeMap<String, String>> {
    let table: toml::Table = toml::from_str(text).map_err(|e| Error::ParseConfig {
        path: path.to_path_buf(),
        source: Box::new(e),
    })?;
    let mut out = BTreeMap::new();
    for (k, v) in table {
        if !KEYS.iter().any(|key| key.name == k) {
            let known: Vec<_> = KEYS.iter().map(|k| k.name).collect();
            return Err(Error::BadConfig {
                path: path.to_path_buf(),
                reason: format!("unknown key {k:?} (known: {})", known.join(", ")),
            });
        }
        let value = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(Error::BadConfig {
                    path: path.to_path_buf(),
                    reason: format!("{k} must be a string, not {}", other.type_str()),
                });
            }
        };
        out.insert(k, value);
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
        assert!(err.to_string().contains("unknown key \"brige\""), "{err}");
        assert_eq!(err.exit_kind(), crate::error::ExitKind::Usage);
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
