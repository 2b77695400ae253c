//! vmctl phase: install vmctl — its .deb with apt when one ships next to us (also upgrading an
//! older installed package, never downgrading a newer one), else the bare
//! binary to /usr/local/bin — and write a default `/etc/vmctl/config.toml` when there is none.

use std::cmp::Ordering;

use hostio::paths;
use serde::Serialize;

use crate::debversion;
use crate::options::VmctlSource;
use crate::plan::{ActionKind, Phase};
use crate::planner::Planner;

/// The keys of vmctl's config this phase writes, in the order a reader expects them (keys as in
/// vmctl's config, `vmctl config show`).
#[derive(Debug, Serialize)]
struct VmctlConfig<'a> {
    connect: &'a str,
    bridge: &'a str,
    state_dir: &'a str,
    storage_dir: &'a str,
    image_cache: &'a str,
}

const CONFIG_HEADER: &str = "\
# Written by gpu-vm-bootstrap: defaults for vmctl. Edit freely; bootstrap never overwrites it.
# Keys as in vmctl's config (`vmctl config show`).
";

/// vmctl's default configuration: the libvirt URI, the bridge VMs attach to, and where disks
/// and downloaded images live. Serialized by `toml`, so any bridge name stays one string value.
pub fn default_config(bridge: &str) -> String {
    let config = VmctlConfig {
        connect: "qemu:///system",
        bridge,
        state_dir: paths::VMCTL_STATE_DIR,
        storage_dir: paths::VMCTL_STORAGE_DIR,
        image_cache: paths::VMCTL_IMAGE_CACHE,
    };
    // A struct of strings always serializes; the empty fallback is never written (the planner
    // would show an empty file in the diff).
    let body = toml::to_string(&config).unwrap_or_default();
    format!("{CONFIG_HEADER}{body}")
}

/// The bridge the packaged `/etc/vmctl/config.toml` (a conffile) assumes.
const PACKAGE_DEFAULT_BRIDGE: &str = "br0";

/// `apt-get install` of a local .deb: apt needs a path with a `/` to take it as a file
/// (apt-get(8)), and installs what the package `Depends` on, which `dpkg -i` would not.
/// `--force-confold` keeps an `/etc/vmctl/config.toml` an earlier run wrote, without the
/// conffile prompt that would stall an unattended run (dpkg(1)).
pub fn install_deb(package: &str, deb: &str) -> ActionKind {
    let deb = if deb.contains('/') {
        deb.to_string()
    } else {
        format!("./{deb}")
    };
    let argv = [
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "install",
        "-y",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        &deb,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    ActionKind::InstallDeb {
        package: package.to_string(),
        deb,
        argv,
    }
}

pub fn plan(p: &mut Planner<'_>) {
    let ph = Phase::Vmctl;
    match p.opts.vmctl_source.clone() {
        VmctlSource::Binary(src) => {
            if !p.state.vmctl_up_to_date {
                p.push(
                    ph,
                    ActionKind::InstallFile {
                        path: paths::USR_LOCAL_BIN_VMCTL.into(),
                        mode: 0o755,
                        source: src.display().to_string(),
                    },
                    "install vmctl from this build",
                );
            }
        }
        VmctlSource::Deb(deb) => {
            let shipped = deb
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| debversion::from_file_name(n, "vmctl"));
            let reason = match (p.state.package_version("vmctl"), shipped) {
                (None, _) => Some(
                    "install the vmctl package shipped next to gpu-vm-bootstrap (with its dependencies)"
                        .to_string(),
                ),
                (Some(have), Some(new)) => match debversion::compare(have, new) {
                    Ordering::Less => Some(format!(
                        "upgrade vmctl {have} to {new}, the package shipped next to gpu-vm-bootstrap"
                    )),
                    Ordering::Greater => {
                        p.warn(format!(
                            "vmctl {have} is installed, newer than the shipped {new}; left as it is"
                        ));
                        None
                    }
                    Ordering::Equal => None,
                },
                (Some(_), None) => None,
            };
            if let Some(reason) = reason {
                p.push(ph, install_deb("vmctl", &deb.display().to_string()), reason);
            }
            if p.state.existing.contains(paths::USR_LOCAL_BIN_VMCTL) {
                p.warn(format!(
                    "{} (an earlier unpackaged install) comes first in PATH and hides the packaged /usr/bin/vmctl; remove it",
                    paths::USR_LOCAL_BIN_VMCTL
                ));
            }
        }
        VmctlSource::Missing => {
            if !p.state.existing.contains(paths::USR_LOCAL_BIN_VMCTL) {
                p.warn("no vmctl binary or vmctl_*.deb next to gpu-vm-bootstrap: vmctl is not installed");
            }
        }
    }
    let bridge = p.opts.bridge_name.clone();
    // The package ships a documented config.toml for br0; leave it to dpkg so it stays an
    // unmodified conffile that upgrades may replace.
    let packaged = matches!(p.opts.vmctl_source, VmctlSource::Deb(_));
    match p.state.content(paths::ETC_VMCTL_CONFIG) {
        None if packaged && bridge == PACKAGE_DEFAULT_BRIDGE => {}
        None => {
            p.write_file(
                ph,
                paths::ETC_VMCTL_CONFIG,
                0o644,
                default_config(&bridge),
                format!("vmctl defaults: bridge {bridge}, state /var/lib/vmctl, disks /var/lib/vmctl/vms, image cache /var/lib/vmctl/images"),
            );
        }
        Some(c) => match toml::from_str::<toml::Table>(c) {
            Ok(t) if t.get("bridge").and_then(toml::Value::as_str) == Some(bridge.as_str()) => {}
            Ok(t) => p.warn(format!(
                "{} sets bridge {}, not {bridge}; left unchanged",
                paths::ETC_VMCTL_CONFIG,
                t.get("bridge")
                    .map_or_else(|| "(none)".to_string(), |v| v.to_string())
            )),
            Err(e) => p.warn(format!(
                "{} is not valid TOML ({}); left unchanged",
                paths::ETC_VMCTL_CONFIG,
                e.message()
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_round_trips_any_valid_bridge_name() {
        for name in ["br0", "br\"x", "v#m=\\", "a'b"] {
            let text = default_config(name);
            assert!(text.starts_with(CONFIG_HEADER));
            let t: toml::Table = toml::from_str(&text).unwrap();
            assert_eq!(t["bridge"].as_str(), Some(name), "{text}");
            assert_eq!(t["connect"].as_str(), Some("qemu:///system"));
            assert_eq!(t.len(), 5, "{text}");
        }
    }
}
