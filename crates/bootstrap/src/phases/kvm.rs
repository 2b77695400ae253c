//! KVM phase: QEMU/libvirt packages, libvirtd enabled, the invoking user in `libvirt` and `kvm`.

use hostio::paths;

use crate::plan::{ActionKind, Phase};
use crate::planner::Planner;

/// host-setup.md: qemu-system-x86 (what `qemu-kvm` points at on 24.04), libvirt, virtinst, OVMF.
pub const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "libvirt-daemon-system",
    "libvirt-clients",
    "virtinst",
    "ovmf",
];

pub fn plan(p: &mut Planner<'_>) {
    let ph = Phase::Kvm;
    p.install_packages(
        ph,
        PACKAGES,
        "QEMU/KVM, libvirt, virt-install and UEFI firmware for VMs",
    );
    if !p.state.existing.contains(paths::LIBVIRTD_WANTS) {
        p.push(
            ph,
            ActionKind::EnableService {
                service: "libvirtd".into(),
                argv: ["systemctl", "enable", "--now", "libvirtd"]
                    .map(String::from)
                    .to_vec(),
            },
            "start libvirtd now and at boot",
        );
    }
    match p.opts.invoking_user.clone() {
        Some(user) if user != "root" => {
            for group in ["libvirt", "kvm"] {
                if !p.state.in_group(&user, group) {
                    p.push(
                        ph,
                        ActionKind::AddUserToGroup {
                            user: user.clone(),
                            group: group.into(),
                            argv: vec!["gpasswd".into(), "-a".into(), user.clone(), group.into()],
                        },
                        format!("let {user} manage VMs without sudo (takes effect at next login)"),
                    );
                }
            }
        }
        _ => p.warn(
            "no invoking user (SUDO_USER unset): nobody is added to the libvirt and kvm groups",
        ),
    }
    if !p.facts.kvm.available {
        p.warn("/dev/kvm is missing: the kvm module is not loaded or virtualisation is off in the firmware");
    }
}
