//! The IOMMU phase's grub edit against a corpus of real-world grub files (`tests/data/grub`):
//! `sh` sources each file before and after the edit, and `GRUB_CMDLINE_LINUX_DEFAULT` must hold
//! the old words plus the IOMMU arguments. Files that cannot be edited safely are refused with a
//! reason. Also: a symlinked `/etc/default/grub`, and `intel_iommu=off` / `amd_iommu=off` already
//! on the command line.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use gpu_vm_bootstrap::{ActionKind, Applier, GpuMode, NullLog, Options, Plan, Skips};
use hostio::RecordingRunner;

const INTEL_ARGS: &str = "intel_iommu=on iommu=pt";

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/grub")
}

fn corpus(prefix: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .map(|n| {
            let text = std::fs::read_to_string(corpus_dir().join(&n)).unwrap();
            (n, text)
        })
        .collect();
    out.sort();
    out
}

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

/// `GRUB_CMDLINE_LINUX_DEFAULT` after `sh` sources `files` in order (as update-grub does).
fn sourced_value(files: &[&Path]) -> String {
    let mut script = String::new();
    for i in 1..=files.len() {
        script.push_str(&format!(". \"${i}\"; "));
    }
    script.push_str("printf %s \"$GRUB_CMDLINE_LINUX_DEFAULT\"");
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .arg("sh")
        .args(files)
        .env_remove("GRUB_CMDLINE_LINUX_DEFAULT")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sh failed on {files:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn written(plan: &Plan, path: &str) -> Option<String> {
    plan.actions.iter().find_map(|a| match &a.kind {
        ActionKind::WriteFile {
            path: p, content, ..
        } if p == path => Some(content.clone()),
        _ => None,
    })
}

fn expected(old: &str, args: &str) -> String {
    if old.is_empty() {
        args.to_string()
    } else {
        format!("{old} {args}")
    }
}

#[test]
fn every_corpus_file_keeps_its_words_and_gains_the_iommu_args() {
    let files = corpus("ok-");
    assert!(files.len() >= 14, "corpus: {files:?}");
    let scratch = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let h = host("intel-z170-gtx960", Net::Dhcp);
        // A cloud image's grub.d file is sourced after Ubuntu's /etc/default/grub.
        let (path, chain): (&str, Vec<(&str, String)>) = if name.ends_with(".cfg") {
            let cfg = "/etc/default/grub.d/50-cloudimg-settings.cfg";
            write(h.path(), cfg, &text, 0o644);
            (
                cfg,
                vec![("/etc/default/grub", UBUNTU_GRUB.to_string()), (cfg, text)],
            )
        } else {
            write(h.path(), "/etc/default/grub", &text, 0o644);
            ("/etc/default/grub", vec![("/etc/default/grub", text)])
        };
        let before: Vec<PathBuf> = chain
            .iter()
            .enumerate()
            .map(|(i, (_, t))| {
                let p = scratch.path().join(format!("{name}.before.{i}"));
                std::fs::write(&p, t).unwrap();
                p
            })
            .collect();
        let plan = h
            .plan(&iommu_only())
            .unwrap_or_else(|r| panic!("{name}: refused: {r:?}"));
        let new = written(&plan, path).unwrap_or_else(|| panic!("{name}: no edit of {path}"));
        let after: Vec<PathBuf> = chain
            .iter()
            .enumerate()
            .map(|(i, (p, t))| {
                let f = scratch.path().join(format!("{name}.after.{i}"));
                std::fs::write(&f, if *p == path { &new } else { t }).unwrap();
                f
            })
            .collect();
        let old_value = sourced_value(&before.iter().map(PathBuf::as_path).collect::<Vec<_>>());
        let new_value = sourced_value(&after.iter().map(PathBuf::as_path).collect::<Vec<_>>());
        assert_eq!(
            new_value,
            expected(&old_value, INTEL_ARGS),
            "{name}: sh sees a different value after the edit:\n{new}"
        );
        // Every other line of the file is kept as it was.
        let old_text = &chain.iter().find(|(p, _)| *p == path).unwrap().1;
        for line in old_text.lines() {
            let other = line.starts_with("GRUB_") || line.starts_with("export GRUB_");
            if line.starts_with('#') || (other && !line.contains("GRUB_CMDLINE_LINUX_DEFAULT")) {
                assert!(new.contains(line), "{name}: lost the line {line:?}");
            }
        }
        // Idempotent: the edited file needs no second edit.
        write(h.path(), path, &new, 0o644);
        let again = h.plan(&iommu_only()).unwrap();
        assert_eq!(written(&again, path), None, "{name}: edited twice");
    }
}

#[test]
fn grub_files_that_cannot_be_edited_safely_are_refused() {
    let files = corpus("refuse-");
    assert!(files.len() >= 6);
    for (name, text) in files {
        let h = host("intel-z170-gtx960", Net::Dhcp);
        write(h.path(), "/etc/default/grub", &text, 0o644);
        let r = match h.plan(&iommu_only()) {
            Err(r) => r,
            Ok(p) => panic!(
                "{name}: planned an edit instead of refusing:\n{}",
                written(&p, "/etc/default/grub").unwrap_or_default()
            ),
        };
        let p = r
            .problems
            .iter()
            .find(|p| p.message.contains("/etc/default/grub"))
            .unwrap_or_else(|| panic!("{name}: {r:?}"));
        assert!(!p.help.is_empty() && !p.forceable, "{name}: {p:?}");
    }
}

#[test]
fn unsafe_grub_file_exits_2_with_a_help_line_and_changes_nothing() {
    let h = host("intel-z170-gtx960", Net::Dhcp);
    let text =
        std::fs::read_to_string(corpus_dir().join("refuse-command-substitution.grub")).unwrap();
    write(h.path(), "/etc/default/grub", &text, 0o644);
    let before = snapshot_tree(h.path(), &[]);
    let out = assert_cmd::Command::cargo_bin("gpu-vm-bootstrap")
        .unwrap()
        .args([
            "apply",
            "--yes",
            "--skip-bridge",
            "--skip-vmctl",
            "--host-root",
        ])
        .arg(h.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("command substitution"), "{stderr}");
    assert!(stderr.contains("help:"), "{stderr}");
    assert_eq!(
        tree_diff(&before, &snapshot_tree(h.path(), &[])),
        Vec::<String>::new()
    );
}

#[test]
fn symlinked_grub_is_resolved_inside_the_root_and_stays_a_link() {
    // An absolute link (re-rooted under --host-root) and a relative one that climbs past `/`
    // (clamped at the root, as the kernel clamps `..` at `/`).
    for target in [
        "/etc/grub-managed/grub",
        "../../../../../../../etc/grub-managed/grub",
    ] {
        let h = host("intel-z170-gtx960", Net::Dhcp);
        let link = h.path().join("etc/default/grub");
        std::fs::remove_file(&link).unwrap();
        write(h.path(), "/etc/grub-managed/grub", UBUNTU_GRUB, 0o644);
        std::os::unix::fs::symlink(target, &link).unwrap();
        let before = snapshot_tree(h.path(), &["var"]);
        let plan = h.plan(&iommu_only()).unwrap();
        let old = plan.actions.iter().find_map(|a| match &a.kind {
            ActionKind::WriteFile {
                path, old_content, ..
            } if path == "/etc/default/grub" => Some(old_content.clone()),
            _ => None,
        });
        assert_eq!(
            old,
            Some(Some(UBUNTU_GRUB.to_string())),
            "{target}: the link's target inside the root is read"
        );
        let root = h.root();
        let runner = RecordingRunner::new();
        let applier = Applier::new(&root, &runner, &NullLog);
        applier.apply(&plan).unwrap();
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new(target),
            "{target}: still the same link after apply"
        );
        let managed = std::fs::read_to_string(h.path().join("etc/grub-managed/grub")).unwrap();
        assert!(
            managed.contains("\"quiet splash intel_iommu=on iommu=pt\""),
            "{managed}"
        );
        applier.rollback().unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(target));
        assert_eq!(
            tree_diff(&before, &snapshot_tree(h.path(), &["var"])),
            Vec::<String>::new(),
            "{target}"
        );
    }
}

#[test]
fn intel_iommu_off_is_replaced_for_passthrough() {
    let h = host("intel-z170-gtx960", Net::Dhcp);
    write(
        h.path(),
        "/etc/default/grub",
        &UBUNTU_GRUB.replace("\"quiet splash\"", "\"quiet intel_iommu=off splash\""),
        0o644,
    );
    let plan = h.plan(&iommu_only()).unwrap();
    let new = written(&plan, "/etc/default/grub").unwrap();
    assert!(
        new.contains("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on splash iommu=pt\""),
        "{new}"
    );
    let shown = plan.render();
    assert!(shown.contains("-GRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=off splash\""));
    assert!(shown.contains("+GRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on splash iommu=pt\""));
}

#[test]
fn amd_iommu_off_is_removed_for_passthrough() {
    let h = host("amd-b550m-gt710-rtx2070s", Net::Dhcp);
    write(
        h.path(),
        "/etc/default/grub",
        &UBUNTU_GRUB.replace("\"quiet splash\"", "\"quiet splash amd_iommu=off\""),
        0o644,
    );
    let plan = h.plan(&iommu_only()).unwrap();
    let new = written(&plan, "/etc/default/grub").unwrap();
    assert!(
        new.contains("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash iommu=pt\""),
        "{new}"
    );
}

#[test]
fn iommu_off_that_cannot_be_replaced_is_refused_not_promised_away() {
    // In GRUB_CMDLINE_LINUX (which the edit does not touch): a reboot would keep the IOMMU off.
    let h = host("intel-z170-gtx960", Net::Dhcp);
    write(
        h.path(),
        "/etc/default/grub",
        &UBUNTU_GRUB.replace(
            "GRUB_CMDLINE_LINUX=\"\"",
            "GRUB_CMDLINE_LINUX=\"intel_iommu=off\"",
        ),
        0o644,
    );
    let r = h.plan(&iommu_only()).unwrap_err();
    assert!(
        r.problems
            .iter()
            .any(|p| p.message.contains("intel_iommu=off")
                && p.message.contains("GRUB_CMDLINE_LINUX")),
        "{r:?}"
    );
}
