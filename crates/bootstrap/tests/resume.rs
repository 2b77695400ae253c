//! Interrupted applies: a command that fails stops the run with its argv and stderr; the files
//! already written stay, and the next run first re-runs the commands the failed run never
//! finished (their files are in place, so the new plan alone would no longer contain them).

use crate::common;

use common::*;
use gpu_vm_bootstrap::{Applier, Error, GpuMode, NullLog, Options, Skips};
use hostio::RecordingRunner;

fn iommu_only() -> Options {
    Options {
        skip: Skips {
            nvidia: true,
            kvm: true,
            iommu: false,
            bridge: true,
            vmctl: true,
        },
        ..opts(GpuMode::Passthrough)
    }
}

#[test]
fn failed_command_is_resumed_by_the_next_run() {
    let h = host("intel-z170-gtx960", Net::Dhcp);
    let root = h.root();
    let plan = h.plan(&iommu_only()).unwrap();
    let commands: Vec<Vec<String>> = plan
        .actions
        .iter()
        .filter_map(|a| a.kind.argv().map(<[String]>::to_vec))
        .collect();
    assert_eq!(
        commands,
        vec![
            vec!["update-grub".to_string()],
            vec![
                "update-initramfs".into(),
                "-u".into(),
                "-k".into(),
                "all".into()
            ]
        ]
    );
    // update-grub fails.
    let runner = RecordingRunner::failing_at(0);
    let mut a = Applier::new(&root, &runner, &NullLog);
    a.run_commands = true;
    let err = a.apply(&plan).unwrap_err();
    assert!(matches!(err, Error::Command { .. }));
    assert!(
        format!("{:?}", std::error::Error::source(&err)).contains("update-grub"),
        "{err:?}"
    );
    assert!(
        root.read_to_string("/etc/default/grub")
            .unwrap()
            .contains("intel_iommu=on iommu=pt")
    );
    // The next plan has nothing left to write, hence no command either...
    let next = h.plan(&iommu_only()).unwrap();
    assert!(next.actions.is_empty(), "{next:#?}");
    // ...but a run still finishes the interrupted one's commands, in order.
    let runner = RecordingRunner::new();
    let mut a = Applier::new(&root, &runner, &NullLog);
    a.run_commands = true;
    let report = a.apply(&next).unwrap();
    assert_eq!(runner.calls(), commands);
    assert_eq!(report.commands_run, commands);
    // And only once.
    let runner = RecordingRunner::new();
    let mut a = Applier::new(&root, &runner, &NullLog);
    a.run_commands = true;
    a.apply(&next).unwrap();
    assert!(runner.calls().is_empty());
}

#[test]
fn rollback_undoes_an_interrupted_run_together_with_the_run_that_finished_it() {
    let h = host("amd-b550m-gt710-rtx2070s", Net::Dhcp);
    let root = h.root();
    let before = snapshot_tree(h.path(), &["var"]);
    let full = opts(GpuMode::Passthrough);
    // Run 1 (the IOMMU phase: its files come before its commands) dies at update-grub.
    let plan = h.plan(&iommu_only()).unwrap();
    let runner = RecordingRunner::failing_at(0);
    let mut a = Applier::new(&root, &runner, &NullLog);
    a.run_commands = true;
    assert!(a.apply(&plan).is_err());
    // Run 2 (everything else) finishes the job, under the host root.
    let rest = h.plan(&full).unwrap();
    assert!(rest.file_actions().count() > 0);
    Applier::new(&root, &RecordingRunner::new(), &NullLog)
        .apply(&rest)
        .unwrap();
    assert_eq!(h.plan(&full).unwrap().file_actions().count(), 0);
    let report = Applier::new(&root, &RecordingRunner::new(), &NullLog)
        .rollback()
        .unwrap();
    assert!(report.run_id.contains(", "), "two runs: {}", report.run_id);
    assert_eq!(
        tree_diff(&before, &snapshot_tree(h.path(), &["var"])),
        Vec::<String>::new()
    );
}
