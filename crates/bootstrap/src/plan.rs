//! The typed [`Plan`]: phases, actions, warnings, and its two views (human diff and JSON).

use std::fmt::Write as _;

use serde::{Serialize, Serializer};
use similar::TextDiff;

/// The bootstrap phases, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Preflight,
    Nvidia,
    Kvm,
    Iommu,
    Bridge,
    Vmctl,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Preflight,
        Phase::Nvidia,
        Phase::Kvm,
        Phase::Iommu,
        Phase::Bridge,
        Phase::Vmctl,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Preflight => "preflight",
            Phase::Nvidia => "nvidia",
            Phase::Kvm => "kvm",
            Phase::Iommu => "iommu",
            Phase::Bridge => "bridge",
            Phase::Vmctl => "vmctl",
        }
    }
}

fn octal_mode<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

/// One change. File actions carry the whole new content; everything else carries an argv.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActionKind {
    /// Write `content` to `path` atomically with `mode`. `old_content` is `None` for a new file.
    WriteFile {
        path: String,
        #[serde(serialize_with = "octal_mode")]
        mode: u32,
        content: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        old_content: Option<String>,
    },
    /// Copy a (binary) file from `source` (a path on the machine running us) to `path`.
    InstallFile {
        path: String,
        #[serde(serialize_with = "octal_mode")]
        mode: u32,
        source: String,
    },
    RunCommand {
        argv: Vec<String>,
    },
    InstallPackages {
        packages: Vec<String>,
        argv: Vec<String>,
    },
    /// Install the local package file `deb` (providing `package`) with apt, which also installs
    /// the dependencies it declares (`dpkg -i` would leave them unmet).
    InstallDeb {
        package: String,
        deb: String,
        argv: Vec<String>,
    },
    AddUserToGroup {
        user: String,
        group: String,
        argv: Vec<String>,
    },
    EnableService {
        service: String,
        argv: Vec<String>,
    },
    /// `netplan apply` under a watchdog: afterwards `bridge` must hold `expect_ip` (any IPv4
    /// address when `None`) and `gateway` must answer; otherwise `files` are restored and the old
    /// config is applied again.
    ApplyBridge {
        bridge: String,
        argv: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        gateway: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        expect_ip: Option<String>,
        files: Vec<String>,
    },
    Reboot {
        argv: Vec<String>,
    },
}

impl ActionKind {
    /// The host path of a file action.
    pub fn path(&self) -> Option<&str> {
        match self {
            ActionKind::WriteFile { path, .. } | ActionKind::InstallFile { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The argv of a command action.
    pub fn argv(&self) -> Option<&[String]> {
        match self {
            ActionKind::RunCommand { argv }
            | ActionKind::InstallPackages { argv, .. }
            | ActionKind::InstallDeb { argv, .. }
            | ActionKind::AddUserToGroup { argv, .. }
            | ActionKind::EnableService { argv, .. }
            | ActionKind::ApplyBridge { argv, .. }
            | ActionKind::Reboot { argv } => Some(argv),
            ActionKind::WriteFile { .. } | ActionKind::InstallFile { .. } => None,
        }
    }

    pub fn is_file(&self) -> bool {
        self.path().is_some()
    }
}

/// An action with its phase and the human reason for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    pub phase: Phase,
    #[serde(flatten)]
    pub kind: ActionKind,
    pub reason: String,
}

/// Everything `apply` would do, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub reboot_required: bool,
    /// Why a reboot is needed (empty when it is not).
    pub reboot_reasons: Vec<String>,
    pub warnings: Vec<String>,
    /// What the user must do by hand (a key to enrol at the next boot), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manual_steps: Vec<String>,
    /// Facts the plan relied on that change nothing (a driver kept, Secure Boot not in the way).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Plan {
    pub fn file_actions(&self) -> impl Iterator<Item = &Action> {
        self.actions.iter().filter(|a| a.kind.is_file())
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The human view: actions grouped by phase, file changes as unified diffs.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.actions.is_empty() {
            out.push_str("Nothing to do: the host already matches the plan.\n");
        }
        for phase in Phase::ALL {
            let actions: Vec<&Action> = self.actions.iter().filter(|a| a.phase == phase).collect();
            if actions.is_empty() {
                continue;
            }
            let _ = writeln!(out, "== {} ==", phase.name());
            for a in actions {
                render_action(&mut out, a);
            }
            out.push('\n');
        }
        if self.reboot_required {
            let _ = writeln!(out, "Reboot required:");
            for r in &self.reboot_reasons {
                let _ = writeln!(out, "  - {r}");
            }
        }
        if !self.manual_steps.is_empty() {
            let _ = writeln!(out, "Manual steps:");
            for (i, m) in self.manual_steps.iter().enumerate() {
                let _ = writeln!(out, "  {}. {m}", i + 1);
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        out
    }
}

fn render_action(out: &mut String, a: &Action) {
    match &a.kind {
        ActionKind::WriteFile {
            path,
            mode,
            content,
            old_content,
        } => {
            let verb = if old_content.is_some() {
                "edit"
            } else {
                "create"
            };
            let _ = writeln!(out, "  {verb} {path} (mode {mode:04o})");
            let _ = writeln!(out, "    # {}", a.reason);
            let old = old_content.as_deref().unwrap_or("");
            let diff = TextDiff::from_lines(old, content.as_str());
            let old_name = if old_content.is_some() {
                path.as_str()
            } else {
                "/dev/null"
            };
            let text = diff
                .unified_diff()
                .context_radius(3)
                .header(old_name, path)
                .to_string();
            if text.is_empty() {
                let _ = writeln!(out, "    (content unchanged; mode only)");
            }
            for line in text.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
        ActionKind::InstallFile { path, mode, source } => {
            let _ = writeln!(out, "  install {source} -> {path} (mode {mode:04o})");
            let _ = writeln!(out, "    # {}", a.reason);
        }
        kind => {
            let label = match kind {
                ActionKind::InstallPackages { .. } => "install packages",
                ActionKind::InstallDeb { .. } => "install package file",
                ActionKind::AddUserToGroup { .. } => "add user to group",
                ActionKind::EnableService { .. } => "enable service",
                ActionKind::ApplyBridge { .. } => "apply network (with watchdog)",
                ActionKind::Reboot { .. } => "reboot",
                _ => "run",
            };
            let argv = kind.argv().map(|a| a.join(" ")).unwrap_or_default();
            let _ = writeln!(out, "  {label}: {argv}");
            let _ = writeln!(out, "    # {}", a.reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_phase_kind_and_path_or_argv() {
        let plan = Plan {
            actions: vec![
                Action {
                    phase: Phase::Iommu,
                    kind: ActionKind::WriteFile {
                        path: "/etc/modules-load.d/vfio.conf".into(),
                        mode: 0o644,
                        content: "vfio\n".into(),
                        old_content: None,
                    },
                    reason: "load vfio".into(),
                },
                Action {
                    phase: Phase::Iommu,
                    kind: ActionKind::RunCommand {
                        argv: vec!["update-grub".into()],
                    },
                    reason: "regenerate grub.cfg".into(),
                },
            ],
            reboot_required: true,
            reboot_reasons: vec![],
            warnings: vec![],
            manual_steps: vec![],
            notes: vec![],
        };
        let v: serde_json::Value = serde_json::from_str(&plan.to_json()).unwrap();
        assert_eq!(v["actions"][0]["phase"], "iommu");
        assert_eq!(v["actions"][0]["kind"], "write_file");
        assert_eq!(v["actions"][0]["path"], "/etc/modules-load.d/vfio.conf");
        assert_eq!(v["actions"][0]["mode"], "0644");
        assert_eq!(v["actions"][1]["argv"][0], "update-grub");
        assert_eq!(v["reboot_required"], true);
        assert!(plan.render().contains("+vfio"));
    }
}
