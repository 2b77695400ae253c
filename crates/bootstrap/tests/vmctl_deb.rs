//! The vmctl phase with a `vmctl_*.deb` next to the binary: one typed `InstallDeb` action
//! (apt-get, so the package's dependencies come too), run through the runner by apply, an
//! upgrade of an older installed package, nothing once it is current, and the packaged
//! config.toml left to dpkg.

use crate::common;

use common::*;
use gpu_vm_bootstrap::{ActionKind, Applier, GpuMode, NullLog, Options, Phase, Skips, VmctlSource};
use hostio::RecordingRunner;

const DEB: &str = "/opt/gvb/vmctl_0.1.0_amd64.deb";

fn vmctl_only(bridge: &str) -> Options {
    Options {
        skip: Skips {
            nvidia: true,
            kvm: true,
            iommu: true,
            bridge: true,
            vmctl: false,
        },
        bridge_name: bridge.into(),
        vmctl_source: VmctlSource::Deb(DEB.into()),
        ..opts(GpuMode::Passthrough)
    }
}

fn expected_argv() -> Vec<String> {
    [
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "install",
        "-y",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        DEB,
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn deb_next_to_the_binary_is_installed_with_apt_and_its_config_left_to_dpkg() {
    let h = host("intel-z170-gtx960", Net::Dhcp);
    let plan = h.plan(&vmctl_only("br0")).unwrap();
    assert_eq!(plan.actions.len(), 1, "{}", plan.render());
    let a = &plan.actions[0];
    assert_eq!(a.phase, Phase::Vmctl);
    assert_eq!(
        a.kind,
        ActionKind::InstallDeb {
            package: "vmctl".into(),
            deb: DEB.into(),
            argv: expected_argv(),
        }
    );
    assert!(
        plan.render().contains(&format!(
            "install package file: {}",
            expected_argv().join(" ")
        )),
        "{}",
        plan.render()
    );
    let json: serde_json::Value = serde_json::from_str(&plan.to_json()).unwrap();
    assert_eq!(json["actions"][0]["kind"], "install_deb");
    assert_eq!(json["actions"][0]["package"], "vmctl");

    let runner = RecordingRunner::new();
    let root = h.root();
    let mut applier = Applier::new(&root, &runner, &NullLog);
    applier.run_commands = true;
    applier.apply(&plan).unwrap();
    assert_eq!(runner.calls(), vec![expected_argv()]);
}

#[test]
fn another_bridge_still_gets_its_config_after_the_package() {
    let h = host("intel-z170-gtx960", Net::Dhcp);
    let plan = h.plan(&vmctl_only("br-vms")).unwrap();
    let kinds: Vec<&ActionKind> = plan.actions.iter().map(|a| &a.kind).collect();
    assert!(
        matches!(kinds[0], ActionKind::InstallDeb { .. }),
        "{kinds:?}"
    );
    assert!(
        matches!(kinds[1], ActionKind::WriteFile { path, content, .. }
            if path == "/etc/vmctl/config.toml" && content.contains("bridge = \"br-vms\"")),
        "{kinds:?}"
    );
}

#[test]
fn installed_package_plans_nothing_and_a_stray_binary_is_named() {
    let h = host("intel-z170-gtx960", Net::Dhcp);
    write(
        h.path(),
        "/var/lib/dpkg/status",
        "Package: vmctl\nStatus: install ok installed\nVersion: 0.1.0\n\n",
        0o644,
    );
    write(h.path(), "/usr/local/bin/vmctl", "old", 0o755);
    let plan = h.plan(&vmctl_only("br0")).unwrap();
    assert!(plan.is_empty(), "{}", plan.render());
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("/usr/local/bin/vmctl") && w.contains("hides")),
        "{:?}",
        plan.warnings
    );
}

/// An installed vmctl older than the shipped .deb is upgraded (by dpkg's version order, so
/// 0.0.9 < 0.1.0~rc1 < 0.1.0); the same version plans nothing; a newer one is left with a warning.
#[test]
fn installed_package_is_upgraded_never_downgraded() {
    for (installed, upgrade, warned) in [
        ("0.0.9", true, false),
        ("0.1.0~rc1", true, false),
        ("0.1.0", false, false),
        ("0.1.0-1", false, true),
        ("1:0.0.1", false, true),
    ] {
        let h = host("intel-z170-gtx960", Net::Dhcp);
        write(
            h.path(),
            "/var/lib/dpkg/status",
            &format!("Package: vmctl\nStatus: install ok installed\nVersion: {installed}\n\n"),
            0o644,
        );
        let plan = h.plan(&vmctl_only("br0")).unwrap();
        assert_eq!(
            plan.actions.len(),
            usize::from(upgrade),
            "{installed}: {}",
            plan.render()
        );
        if upgrade {
            let a = &plan.actions[0];
            assert!(matches!(a.kind, ActionKind::InstallDeb { .. }));
            assert_eq!(
                a.reason,
                format!(
                    "upgrade vmctl {installed} to 0.1.0, the package shipped next to gpu-vm-bootstrap"
                )
            );
        }
        assert_eq!(
            plan.warnings
                .iter()
                .any(|w| w.contains("newer than the shipped 0.1.0")),
            warned,
            "{installed}: {:?}",
            plan.warnings
        );
    }
}

#[test]
fn relative_deb_path_is_given_to_apt_as_a_path() {
    let ActionKind::InstallDeb { deb, argv, .. } =
        gpu_vm_bootstrap::phases::vmctl::install_deb("vmctl", "vmctl_0.1.0_amd64.deb")
    else {
        panic!("not an InstallDeb")
    };
    assert_eq!(deb, "./vmctl_0.1.0_amd64.deb");
    assert_eq!(argv.last().unwrap(), "./vmctl_0.1.0_amd64.deb");
}

#[test]
fn verify_finds_the_packaged_vmctl_in_usr_bin() {
    let h = host("intel-z170-gtx960", Net::Dhcp);
    write(
        h.path(),
        "/var/lib/dpkg/status",
        "Package: vmctl\nStatus: install ok installed\nVersion: 0.1.0\n\n",
        0o644,
    );
    let opts = vmctl_only("br0");
    let state = gpu_vm_bootstrap::HostState::read(&h.root(), &opts);
    let runner = RecordingRunner::new();
    let report = gpu_vm_bootstrap::verify(&h.facts, &opts, &state, Some(&runner));
    let text = report.render();
    assert!(text.contains("/usr/bin/vmctl is installed"), "{text}");
    assert!(
        runner
            .calls()
            .contains(&vec!["/usr/bin/vmctl".to_string(), "--version".into()]),
        "{:?}",
        runner.calls()
    );
}
