//! Rollback and the user's later edits: a file changed since apply wrote it is not silently
//! replaced; its current content is kept as a copy next to it, named in the report and output.

use crate::common;

use common::*;
use gpu_vm_bootstrap::{Applier, GpuMode, NullLog};
use hostio::RecordingRunner;

#[test]
fn rollback_keeps_a_copy_of_a_file_edited_after_apply() {
    let h = host("intel-z170-gtx960", Net::Static);
    let root = h.root();
    let plan = h.plan(&opts(GpuMode::Passthrough)).unwrap();
    let runner = RecordingRunner::new();
    let applier = Applier::new(&root, &runner, &NullLog);
    applier.apply(&plan).unwrap();
    // The user tunes the grub file and the vfio modprobe file apply wrote.
    let grub = root.read_to_string("/etc/default/grub").unwrap();
    let edited_grub = format!("{grub}GRUB_TIMEOUT=7\n");
    write(h.path(), "/etc/default/grub", &edited_grub, 0o644);
    let modprobe = "# my own\noptions vfio-pci ids=10de:1401,10de:0fba disable_vga=1\n";
    write(h.path(), "/etc/modprobe.d/vfio.conf", modprobe, 0o644);

    let report = applier.rollback().unwrap();
    // The originals are back...
    assert_eq!(
        root.read_to_string("/etc/default/grub").unwrap(),
        UBUNTU_GRUB
    );
    assert!(!root.exists("/etc/modprobe.d/vfio.conf"));
    // ...and the edits are kept next to them, named in the report.
    let v = serde_json::to_value(&report).unwrap();
    let kept = v["files_kept"]
        .as_array()
        .unwrap_or_else(|| panic!("no files_kept in {v}"));
    assert_eq!(kept.len(), 2, "{v}");
    for (path, content) in [
        ("/etc/default/grub", edited_grub.as_str()),
        ("/etc/modprobe.d/vfio.conf", modprobe),
    ] {
        let k = kept
            .iter()
            .find(|k| k["path"] == path)
            .unwrap_or_else(|| panic!("{path} not kept: {v}"));
        let copy = k["copy"].as_str().unwrap();
        assert!(
            copy.starts_with(&format!("{path}.gpu-vm-bootstrap-")),
            "{copy}"
        );
        assert_eq!(root.read_to_string(copy).unwrap(), content);
    }
}

#[test]
fn rollback_output_names_the_kept_copy() {
    let h = host("intel-z170-gtx960", Net::Static);
    let bin = || {
        let mut c = assert_cmd::Command::cargo_bin("gpu-vm-bootstrap").unwrap();
        c.env_remove("SUDO_USER");
        c
    };
    bin()
        .args(["apply", "--yes", "--skip-vmctl", "--host-root"])
        .arg(h.path())
        .assert()
        .success();
    let grub = std::fs::read_to_string(h.path().join("etc/default/grub")).unwrap();
    write(
        h.path(),
        "/etc/default/grub",
        &format!("{grub}GRUB_TIMEOUT=7\n"),
        0o644,
    );
    let out = bin()
        .args(["rollback", "--yes", "--host-root"])
        .arg(h.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("/etc/default/grub.gpu-vm-bootstrap-"),
        "the copy is named: {stdout}"
    );
}

#[test]
fn rollback_of_unchanged_files_keeps_no_copies() {
    let h = host("amd-b550m-gt710-rtx2070s", Net::Dhcp);
    let before = snapshot_tree(h.path(), &["var"]);
    let root = h.root();
    let plan = h.plan(&opts(GpuMode::Passthrough)).unwrap();
    let runner = RecordingRunner::new();
    let applier = Applier::new(&root, &runner, &NullLog);
    applier.apply(&plan).unwrap();
    applier.rollback().unwrap();
    assert_eq!(
        tree_diff(&before, &snapshot_tree(h.path(), &["var"])),
        Vec::<String>::new()
    );
}
