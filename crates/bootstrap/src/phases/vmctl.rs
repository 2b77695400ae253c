//! vmctl phase: install the `vmctl` binary from this build (or its .deb) to /usr/local/bin and
//! write a default `/etc/vmctl/config.toml` when there is none.

use hostio::paths;

use crate::options::VmctlSource;
use crate::plan::{ActionKind, Phase};
use crate::planner::Planner;

/// vmctl's default configuration: the libvirt URI, the bridge VMs attach to, and where disks
/// and downloaded images live.
pub fn default_config(bridge: &str) -> String {
    format!(
        "# Written by gpu-vm-bootstrap: defaults for vmctl. Edit freely; bootstrap never overwrites it.\n\
         # Keys as in vmctl's config (`vmctl config show`).\n\
         connect = \"qemu:///system\"\n\
         bridge = \"{bridge}\"\n\
         state_dir = \"/var/lib/vmctl\"\n\
         storage_dir = \"/var/lib/vmctl/vms\"\n\
         image_cache = \"/var/lib/vmctl/images\"\n"
    )
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
            if !p.state.has_package("vmctl") {
                let deb = deb.display().to_string();
                p.run(
                    ph,
                    &["apt-get", "install", "-y", &deb],
                    "install the vmctl package shipped next to gpu-vm-bootstrap",
                );
            }
        }
        VmctlSource::Missing => {
            if !p.state.existing.contains(paths::USR_LOCAL_BIN_VMCTL) {
                p.warn("no vmctl binary or vmctl_*.deb next to gpu-vm-bootstrap: vmctl is not installed");
            }
        }
    }
    let bridge = p.opts.bridge_name.clone();
    match p.state.content(paths::ETC_VMCTL_CONFIG) {
        None => {
            p.write_file(
                ph,
                paths::ETC_VMCTL_CONFIG,
                0o644,
                default_config(&bridge),
                format!("vmctl defaults: bridge {bridge}, state /var/lib/vmctl, disks /var/lib/vmctl/vms, image cache /var/lib/vmctl/images"),
            );
        }
        Some(c) if !c.contains(&format!("\"{bridge}\"")) => p.warn(format!(
            "{} exists and does not mention bridge {bridge}; left unchanged",
            paths::ETC_VMCTL_CONFIG
        )),
        Some(_) => {}
    }
}
