//! The bridge watchdog, driven by the recording command runner: a failed connectivity check
//! restores the old netplan files and applies them again; a good check keeps the new ones.

use crate::common;

use std::time::Duration;

use common::*;
use gpu_vm_bootstrap::{ActionKind, Applier, Error, GpuMode, NullLog, Options, Skips, Watchdog};
use hostio::{Output, RecordingRunner};

fn bridge_only() -> Options {
    Options {
        skip: Skips {
            nvidia: true,
            kvm: true,
            iommu: true,
            vmctl: true,
            bridge: false,
        },
        ..opts(GpuMode::Passthrough)
    }
}

fn applier<'a>(root: &'a hostio::HostRoot, runner: &'a RecordingRunner) -> Applier<'a> {
    let mut a = Applier::new(root, runner, &NullLog);
    // Commands "run" through the fake, as on a real host.
    a.run_commands = true;
    a.watchdog = Watchdog {
        tries: 3,
        interval: Duration::ZERO,
    };
    a
}

#[test]
fn failed_check_restores_and_reapplies_the_old_config() {
    let h = host("intel-z170-gtx960", Net::Static);
    let before = snapshot_tree(h.path(), &["var"]);
    let plan = h.plan(&bridge_only()).unwrap();
    let Some(ActionKind::ApplyBridge {
        gateway, expect_ip, ..
    }) = plan.actions.last().map(|a| &a.kind)
    else {
        panic!("no bridge apply in {plan:#?}")
    };
    assert!(gateway.is_some(), "a static host has a gateway to check");
    let ip = expect_ip.clone().unwrap();
    // br0 comes up without the host's address; the gateway never answers.
    let runner = RecordingRunner::new();
    let root = h.root();
    let err = applier(&root, &runner).apply(&plan).unwrap_err();
    assert!(matches!(err, Error::BridgeReverted { .. }), "{err}");
    assert!(err.to_string().contains(&ip), "{err}");
    let calls = runner.calls();
    let apply = vec!["netplan".to_string(), "apply".to_string()];
    assert_eq!(calls.first().unwrap(), &["netplan", "generate"]);
    assert_eq!(
        calls.iter().filter(|c| **c == apply).count(),
        2,
        "apply, then re-apply of the old config: {calls:?}"
    );
    assert_eq!(
        calls.last().unwrap(),
        &apply,
        "the old config is applied last"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.first().map(String::as_str) == Some("ip"))
            .count(),
        3
    );
    assert_eq!(
        tree_diff(&before, &snapshot_tree(h.path(), &["var"])),
        Vec::<String>::new(),
        "netplan files are back byte for byte"
    );
}

#[test]
fn unreachable_gateway_also_reverts() {
    let h = host("amd-b550m-gt710-rtx2070s", Net::Dhcp);
    let plan = h.plan(&bridge_only()).unwrap();
    let Some(ActionKind::ApplyBridge { expect_ip, .. }) = plan.actions.last().map(|a| &a.kind)
    else {
        panic!()
    };
    let ip = expect_ip.clone().unwrap();
    let json = format!(
        r#"[{{"ifname":"br0","addr_info":[{{"family":"inet","local":"{ip}","prefixlen":24}}]}}]"#
    );
    let mut runner = RecordingRunner::new();
    for _ in 0..3 {
        runner = runner
            .answer(["ip"], Output::ok(json.clone()))
            .answer(["ping"], Output::failed(1, "100% packet loss"));
    }
    let root = h.root();
    let err = applier(&root, &runner).apply(&plan).unwrap_err();
    assert!(err.to_string().contains("does not answer"), "{err}");
    assert!(
        root.read_to_string("/etc/netplan/50-cloud-init.yaml")
            .unwrap()
            .contains("dhcp4: true"),
        "the NIC's stanza is back"
    );
    assert!(!root.exists("/etc/netplan/60-gpu-vm-bootstrap-bridge.yaml"));
}

#[test]
fn good_check_keeps_the_bridge() {
    let h = host("intel-z170-gtx960", Net::Static);
    let plan = h.plan(&bridge_only()).unwrap();
    let Some(ActionKind::ApplyBridge { expect_ip, .. }) = plan.actions.last().map(|a| &a.kind)
    else {
        panic!()
    };
    let ip = expect_ip.clone().unwrap();
    let json = format!(
        r#"[{{"ifname":"br0","addr_info":[{{"family":"inet","local":"{ip}","prefixlen":24}}]}}]"#
    );
    let runner = RecordingRunner::new()
        .answer(["ip"], Output::failed(1, "Device \"br0\" does not exist."))
        .answer(["ip"], Output::ok(json));
    let root = h.root();
    let report = applier(&root, &runner).apply(&plan).unwrap();
    assert!(report.commands_run.iter().any(|c| c[0] == "netplan"));
    assert!(root.exists("/etc/netplan/60-gpu-vm-bootstrap-bridge.yaml"));
    let calls = runner.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c[0] == "netplan" && c[1] == "apply")
            .count(),
        1,
        "{calls:?}"
    );
}

#[test]
fn bridge_written_but_never_applied_is_applied_on_rerun_and_reverts_to_the_earlier_backup() {
    let h = host("amd-b550m-gt710-rtx2070s", Net::Dhcp);
    let before = snapshot_tree(h.path(), &["var"]);
    let root = h.root();
    // First run writes the files but runs no command (as if killed before `netplan apply`).
    let plan = h.plan(&bridge_only()).unwrap();
    Applier::new(&root, &RecordingRunner::new(), &NullLog)
        .apply(&plan)
        .unwrap();
    // The re-plan has no file to write, but still the bridge to bring up.
    let again = h.plan(&bridge_only()).unwrap();
    assert_eq!(again.file_actions().count(), 0);
    let Some(ActionKind::ApplyBridge { files, .. }) = again.actions.last().map(|a| &a.kind) else {
        panic!("{again:#?}")
    };
    assert_eq!(
        files,
        &[
            "/etc/netplan/60-gpu-vm-bootstrap-bridge.yaml",
            "/etc/netplan/50-cloud-init.yaml"
        ]
    );
    let runner = RecordingRunner::new();
    let err = applier(&root, &runner).apply(&again).unwrap_err();
    assert!(matches!(err, Error::BridgeReverted { .. }));
    let after = snapshot_tree(h.path(), &["var"]);
    // Only the cloud-init switch (not a netplan file) stays from the first run.
    assert_eq!(
        tree_diff(&before, &after),
        vec![
            "only after: etc/cloud".to_string(),
            "only after: etc/cloud/cloud.cfg.d".into(),
            "only after: etc/cloud/cloud.cfg.d/99-disable-network-config.cfg".into()
        ]
    );
}

/// The recording runner, plus what `netplan apply` does to `/sys/class/net` on a real host: the
/// first apply creates the bridge device; re-applying a config without it does NOT delete it
/// (netplan 0.106 + systemd-networkd in tests/e2e/50-bootstrap-bridge-vm.sh).
struct NetplanCreatesBridge<'a> {
    inner: RecordingRunner,
    sys_br0: &'a std::path::Path,
}

impl hostio::CommandRunner for NetplanCreatesBridge<'_> {
    fn output(&self, cmd: &hostio::Cmd) -> Result<Output, hostio::CommandError> {
        if cmd.argv == ["netplan", "apply"] {
            std::fs::create_dir_all(self.sys_br0).unwrap();
        }
        if cmd.argv == ["ip", "link", "delete", "dev", "br0"] {
            std::fs::remove_dir(self.sys_br0).unwrap();
        }
        self.inner.output(cmd)
    }
}

fn ip_json(ip: &str) -> String {
    format!(
        r#"[{{"ifname":"br0","addr_info":[{{"family":"inet","local":"{ip}","prefixlen":24}}]}}]"#
    )
}

#[test]
fn failed_check_deletes_the_bridge_it_created_after_the_restore() {
    let h = host("intel-z170-gtx960", Net::Static);
    let plan = h.plan(&bridge_only()).unwrap();
    let sys_br0 = h.path().join("sys/class/net/br0");
    assert!(!sys_br0.exists());
    let runner = NetplanCreatesBridge {
        inner: RecordingRunner::new(),
        sys_br0: &sys_br0,
    };
    let root = h.root();
    let mut a = Applier::new(&root, &runner, &NullLog);
    a.run_commands = true;
    a.watchdog = Watchdog {
        tries: 2,
        interval: Duration::ZERO,
    };
    let err = a.apply(&plan).unwrap_err();
    assert!(matches!(err, Error::BridgeReverted { .. }), "{err}");
    let calls = runner.inner.calls();
    let n = calls.len();
    assert_eq!(calls[n - 2], ["netplan", "apply"], "{calls:?}");
    assert_eq!(
        calls[n - 1],
        ["ip", "link", "delete", "dev", "br0"],
        "the old config first, then the bridge it no longer defines goes: {calls:?}"
    );
    assert!(!sys_br0.exists());
}

#[test]
fn failed_check_keeps_a_bridge_that_existed_before() {
    let h = host("intel-z170-gtx960", Net::Static);
    let plan = h.plan(&bridge_only()).unwrap();
    let sys_br0 = h.path().join("sys/class/net/br0");
    std::fs::create_dir_all(&sys_br0).unwrap();
    let runner = RecordingRunner::new();
    let root = h.root();
    applier(&root, &runner).apply(&plan).unwrap_err();
    let calls = runner.calls();
    assert!(!calls.iter().any(|c| c[..2] == ["ip", "link"]), "{calls:?}");
    assert_eq!(calls.last().unwrap(), &["netplan", "apply"]);
}

#[test]
fn rollback_deletes_the_bridge_the_apply_created() {
    let h = host("intel-z170-gtx960", Net::Static);
    let before = snapshot_tree(h.path(), &["var"]);
    let plan = h.plan(&bridge_only()).unwrap();
    let Some(ActionKind::ApplyBridge { expect_ip, .. }) = plan.actions.last().map(|a| &a.kind)
    else {
        panic!("{plan:#?}")
    };
    let sys_br0 = h.path().join("sys/class/net/br0");
    let runner = NetplanCreatesBridge {
        inner: RecordingRunner::new()
            .answer(["ip"], Output::ok(ip_json(expect_ip.as_ref().unwrap()))),
        sys_br0: &sys_br0,
    };
    let root = h.root();
    let mut a = Applier::new(&root, &runner, &NullLog);
    a.run_commands = true;
    a.apply(&plan).unwrap();
    assert!(sys_br0.exists());
    let report = a.rollback().unwrap();
    assert_eq!(
        report.commands_run,
        vec![
            vec!["netplan".to_string(), "apply".into()],
            vec![
                "ip".into(),
                "link".into(),
                "delete".into(),
                "dev".into(),
                "br0".into()
            ],
        ]
    );
    assert!(!sys_br0.exists());
    std::fs::remove_dir_all(h.path().join("sys/class/net/br0")).ok();
    let diff = tree_diff(&before, &snapshot_tree(h.path(), &["var"]));
    assert!(diff.iter().all(|d| !d.contains("netplan")), "{diff:?}");
}
