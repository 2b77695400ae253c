//! VM templates: profiles in TOML (`/etc/vmctl/templates/NAME.toml`, written by the admin, or
//! `STATE_DIR/templates/NAME.toml`, written by `vmctl template save`) with the settings of a
//! `create ubuntu` — CPUs, memory, disk, GPU count, packages, data disks, cloud-init commands —
//! and, for a saved one, a read-only base image in the image cache (`IMAGE_CACHE/templates/`).
//! `create ubuntu --template NAME` starts from a template; its flags override the values.
//! /etc wins over the state directory for the same name.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CommandFailure, Error, ExitKind, Failure, Result};

/// What the template commands and `create --template` refuse.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("no template {name:?} (looked in {})", looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and "))]
    NotFound { name: String, looked: Vec<PathBuf> },
    #[error("template {path} is not valid")]
    Invalid {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("template {name:?} already exists ({path})")]
    Exists { name: String, path: PathBuf },
    #[error("template {name:?} is the admin's ({path}): vmctl changes only the ones it saved")]
    System { name: String, path: PathBuf },
    #[error("template {name:?}'s image {image} is the base of {}", vms.join(", "))]
    InUse {
        name: String,
        image: PathBuf,
        vms: Vec<String>,
    },
    #[error("refusing to delete template {name:?} without confirmation")]
    NotConfirmed { name: String },
    #[error(
        "{vm} is not an Ubuntu VM of vmctl's (os {os:?}): a template needs its user, key and cloud-init"
    )]
    NotUbuntu { vm: String, os: String },
    #[error("flatten {from} into {to}")]
    Flatten {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: hostio::CommandError,
    },
}

impl CommandFailure for TemplateError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            TemplateError::Flatten { .. } => ExitKind::Failure,
            _ => ExitKind::Usage,
        }
    }

    fn help(&self) -> Vec<String> {
        match self {
            TemplateError::NotFound { .. } => vec![
                "`vmctl template list` shows them; `vmctl template save VM NAME` makes one from a stopped VM".into(),
            ],
            TemplateError::Invalid { path, .. } => vec![format!(
                "fix {}; its keys: description, cpus, memory, disk, gpus, packages, data_disks, runcmd, image, release, firmware, cpu_mode, domain_type, user, kernel, initrd, kernel_args",
                path.display()
            )],
            TemplateError::Exists { name, .. } => vec![format!(
                "pick another name, or remove the old one: `vmctl template delete {name} --yes`"
            )],
            TemplateError::System { path, .. } => {
                vec![format!("edit or remove {} yourself", path.display())]
            }
            TemplateError::InUse { vms, .. } => vec![format!(
                "delete those VMs first (`vmctl delete {} --yes`)",
                vms.first().map(String::as_str).unwrap_or("VM")
            )],
            TemplateError::NotConfirmed { name } => {
                vec![format!("re-run with --yes: `vmctl template delete {name} --yes`")]
            }
            TemplateError::NotUbuntu { .. } => vec![
                "save a VM made by `vmctl create ubuntu`; write a profile in /etc/vmctl/templates/NAME.toml for anything else".into(),
            ],
            TemplateError::Flatten { .. } => vec![
                "is there room in the image cache? `df -h` shows it; nothing was kept".into(),
            ],
        }
    }
}

impl From<TemplateError> for Error {
    fn from(e: TemplateError) -> Self {
        Error::Command(Failure::new(e))
    }
}

/// A template's settings; every field is optional, and a `create` flag overrides it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// MiB, or with a unit (`32G`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// Whole GPUs to pass through, picked like `create --gpu` alone picks them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// `SIZE[,name=NAME]`, as `--data-disk`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_disks: Vec<String>,
    /// cloud-init `runcmd` additions, each an argv list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runcmd: Vec<Vec<String>>,
    /// Base image (local path or URL), as `--image`; a saved template's own image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_args: Option<String>,
    /// The VM `template save` made it from (its image has that VM's machine-id: a VM created
    /// from it gets a new one at its first boot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_at: Option<String>,
}

/// Where a template lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `/etc/vmctl/templates`: the admin's.
    System,
    /// `STATE_DIR/templates`: saved by vmctl.
    Saved,
}

/// A template found on disk.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    pub name: String,
    pub origin: Origin,
    pub path: PathBuf,
    pub template: Template,
}

/// The two template directories, /etc first.
pub fn dirs(ctx: &crate::ctx::Ctx) -> [(Origin, PathBuf); 2] {
    [
        (
            Origin::System,
            ctx.host.path(hostio::paths::ETC_VMCTL_TEMPLATES),
        ),
        (
            Origin::Saved,
            ctx.config.state_dir(ctx.host).join("templates"),
        ),
    ]
}

/// A template name: like a VM name (letters, digits, '-').
pub fn validate_name(name: &str) -> Result<()> {
    crate::names::validate_vm_name(name).map_err(|_| Error::InvalidOption {
        option: "NAME".into(),
        value: name.into(),
        reason: "a template name is 1 to 63 letters, digits and '-' (an RFC 1123 label)".into(),
    })
}

fn read(path: &Path) -> Result<Template> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| {
        TemplateError::Invalid {
            path: path.to_path_buf(),
            source,
        }
        .into()
    })
}

/// The template `name`, /etc first.
pub fn load(ctx: &crate::ctx::Ctx, name: &str) -> Result<Found> {
    validate_name(name)?;
    let mut looked = Vec::new();
    for (origin, dir) in dirs(ctx) {
        let path = dir.join(format!("{name}.toml"));
        if path.is_file() {
            return Ok(Found {
                name: name.into(),
                origin,
                template: read(&path)?,
                path,
            });
        }
        looked.push(dir);
    }
    Err(TemplateError::NotFound {
        name: name.into(),
        looked,
    }
    .into())
}

/// Every template, by name; one in /etc hides a saved one of the same name.
pub fn list(ctx: &crate::ctx::Ctx) -> Result<Vec<Found>> {
    let mut out: Vec<Found> = Vec::new();
    for (origin, dir) in dirs(ctx) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".toml"))
                    .map(str::to_string)
            })
            .filter(|n| validate_name(n).is_ok())
            .collect();
        names.sort();
        for name in names {
            if out.iter().any(|f| f.name == name) {
                continue;
            }
            let path = dir.join(format!("{name}.toml"));
            out.push(Found {
                name,
                origin,
                template: read(&path)?,
                path,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The TOML of a template (the serializer's, never formatted by hand).
pub fn to_toml(t: &Template) -> String {
    toml::to_string_pretty(t).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_reads_and_writes_back_the_same() {
        let t: Template = toml::from_str(
            r#"
description = "GPU worker"
cpus = 8
memory = "32G"
disk = "100G"
gpus = 1
packages = ["nvtop"]
data_disks = ["200G,name=models"]
runcmd = [["nvidia-smi", "-L"]]
"#,
        )
        .unwrap();
        assert_eq!(t.cpus, Some(8));
        assert_eq!(t.gpus, Some(1));
        assert_eq!(t.runcmd, vec![vec!["nvidia-smi".to_string(), "-L".into()]]);
        assert_eq!(toml::from_str::<Template>(&to_toml(&t)).unwrap(), t);
    }

    #[test]
    fn an_unknown_key_is_an_error_not_ignored() {
        assert!(toml::from_str::<Template>("cpu = 4").is_err());
    }
}
