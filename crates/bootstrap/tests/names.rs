//! Interface names reach netplan YAML and vmctl's TOML: they are checked by the kernel's rules
//! (net/core/dev.c, `dev_valid_name`) before anything is planned, and the files are written by
//! serializers, so no name can add a line or a key.

use crate::common;

use common::*;
use gpu_vm_bootstrap::{GpuMode, Options};

fn bin() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("gpu-vm-bootstrap").unwrap();
    c.env_remove("SUDO_USER");
    c
}

#[test]
fn bridge_name_cannot_inject_keys_into_the_vmctl_config() {
    let h = host("intel-z170-gtx960", Net::Dhcp);
    let before = snapshot_tree(h.path(), &[]);
    let vmctl = tempfile::NamedTempFile::new().unwrap();
    let out = bin()
        .args([
            "apply",
            "--yes",
            "--skip-bridge",
            "--skip-nvidia",
            "--skip-kvm",
            "--skip-iommu",
        ])
        .args([
            "--bridge-name",
            "br0\"\nubuntu_cloud_url = \"http://198.18.0.66/evil",
        ])
        .arg("--vmctl-from")
        .arg(vmctl.path())
        .arg("--host-root")
        .arg(h.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let config =
        std::fs::read_to_string(h.path().join("etc/vmctl/config.toml")).unwrap_or_default();
    assert!(!config.contains("ubuntu_cloud_url"), "injected:\n{config}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--bridge-name") && stderr.contains("help:"),
        "{stderr}"
    );
    assert_eq!(
        tree_diff(&before, &snapshot_tree(h.path(), &[])),
        Vec::<String>::new()
    );
}

#[test]
fn interface_names_follow_the_kernel_rules() {
    let h = host("intel-z170-gtx960", Net::Dhcp);
    let bad = [
        "",
        "sixteen-bytes-xx",
        ".",
        "..",
        "br/0",
        "br:0",
        "br 0",
        "br\t0",
        "br0\n",
        "br\u{a0}0",
    ];
    for name in bad {
        for (bridge_name, bridge_iface) in [(name, None), ("br0", Some(name))] {
            let o = Options {
                bridge_name: bridge_name.to_string(),
                bridge_iface: bridge_iface.map(str::to_string),
                ..opts(GpuMode::Passthrough)
            };
            let r = h.plan(&o).expect_err(&format!("{name:?} accepted"));
            assert!(
                r.problems
                    .iter()
                    .any(|p| p.message.contains("interface name")),
                "{name:?}: {r:?}"
            );
        }
    }
}

#[test]
fn unusual_but_valid_bridge_names_are_serialized_not_formatted() {
    // The kernel allows quotes, `#`, `=` and backslashes in a name; TOML and YAML must carry
    // them as data.
    let h = host("intel-z170-gtx960", Net::Static);
    let name = "v#\"m=\\x'";
    assert_eq!(name.len(), 8);
    let o = Options {
        bridge_name: name.into(),
        vmctl_source: gpu_vm_bootstrap::VmctlSource::Binary("/nonexistent/vmctl".into()),
        ..opts(GpuMode::Passthrough)
    };
    let plan = h.plan(&o).unwrap();
    for a in plan.file_actions() {
        let gpu_vm_bootstrap::ActionKind::WriteFile { path, content, .. } = &a.kind else {
            continue;
        };
        if path.ends_with(".toml") {
            let v: toml::Table =
                toml::from_str(content).unwrap_or_else(|e| panic!("{path}: {e}\n{content}"));
            assert_eq!(v["bridge"].as_str(), Some(name), "{content}");
        }
        if path.ends_with(".yaml") {
            let v: serde_yaml::Value =
                serde_yaml::from_str(content).unwrap_or_else(|e| panic!("{path}: {e}\n{content}"));
            if path.contains("gpu-vm-bootstrap-bridge") {
                assert!(v["network"]["bridges"].get(name).is_some(), "{content}");
            }
        }
    }
}
