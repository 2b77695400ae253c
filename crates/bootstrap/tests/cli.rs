//! CLI tests: bad input exits 2 with a clear message and `help:` lines and changes nothing;
//! `plan --json` has the documented shape; apply → plan → rollback round trip.

use crate::common;

use assert_cmd::Command;
use common::*;
use predicates::str::contains;

fn bin() -> Command {
    let mut c = Command::cargo_bin("gpu-vm-bootstrap").unwrap();
    c.env_remove("SUDO_USER");
    c
}

const SKIP: &[&str] = &["var"];

/// Runs the binary with `args` on a fresh fixture host; asserts exit 2 and an unchanged tree.
/// Returns stderr.
fn refused(name: &str, args: &[&str]) -> String {
    let h = host(name, Net::Dhcp);
    let before = snapshot_tree(h.path(), &[]);
    let out = bin()
        .args(args)
        .arg("--host-root")
        .arg(h.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains("error:"), "{stderr}");
    // Our refusals end with `help:` lines; clap's usage errors point at `--help`.
    assert!(stderr.contains("help"), "{stderr}");
    assert_eq!(
        tree_diff(&before, &snapshot_tree(h.path(), &[])),
        Vec::<String>::new(),
        "{args:?} changed the tree"
    );
    stderr
}

#[test]
fn unknown_gpu_is_refused() {
    let e = refused(
        "intel-z170-gtx960",
        &["apply", "--yes", "--gpu", "0000:99:00.0"],
    );
    assert!(
        e.contains("--gpu 0000:99:00.0: no NVIDIA GPU at that address"),
        "{e}"
    );
    assert!(e.contains("0000:01:00.0"), "lists the GPUs that exist: {e}");
    insta::assert_snapshot!(e);
}

#[test]
fn missing_bridge_iface_is_refused() {
    let e = refused("intel-z170-gtx960", &["--yes", "--bridge-iface", "eth9"]);
    assert!(e.contains("bridge interface `eth9` does not exist"), "{e}");
}

#[test]
fn non_ubuntu_os_release_is_refused() {
    let e = refused("intel-z370-no-nvidia", &["apply", "--yes"]);
    assert!(e.contains("debian 12"), "{e}");
    assert!(e.contains("--force"), "{e}");
}

#[test]
fn unsafe_gpu_choice_is_refused_with_reasons() {
    let e = refused(
        "amd-b550m-gt710-rtx2070s",
        &["apply", "--yes", "--gpu", "04:00.0"],
    );
    assert!(e.contains("boot VGA"), "{e}");
    assert!(e.contains("shares IOMMU group 13 with"), "{e}");
}

#[test]
fn conflicting_flags_are_refused() {
    for args in [
        &["apply", "--yes", "--skip-bridge", "--bridge-iface", "eno1"][..],
        &["apply", "--dry-run", "--reboot"],
        &["apply", "--yes", "--gpu-mode", "none", "--gpu", "01:00.0"],
        &["apply", "--yes", "--gpu-mode", "host", "--gpu", "01:00.0"],
        &["apply", "--yes", "--host-driver", "--skip-nvidia"],
        &["apply", "--yes", "--gpu-mode", "none", "--host-driver"],
        &["apply", "--yes", "--gpu-mode", "sideways"],
    ] {
        refused("intel-z170-gtx960", args);
    }
}

#[test]
fn apply_without_confirmation_is_refused_off_a_terminal() {
    let e = refused("intel-z170-gtx960", &["apply"]);
    assert!(e.contains("pass --yes"), "{e}");
}

#[test]
fn plan_json_has_the_documented_shape() {
    let h = host("amd-b550m-gt710-rtx2070s", Net::Dhcp);
    let out = bin()
        .args(["plan", "--json", "--skip-vmctl", "--host-root"])
        .arg(h.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reboot_required"], true);
    assert!(v["warnings"].is_array());
    let actions = v["actions"].as_array().unwrap();
    assert!(actions.len() > 10);
    for a in actions {
        assert!(a["phase"].is_string() && a["kind"].is_string() && a["reason"].is_string());
        assert!(a["path"].is_string() ^ a["argv"].is_array(), "{a}");
    }
    // --dry-run is the same as plan.
    let dry = bin()
        .args(["--dry-run", "--json", "--skip-vmctl", "--host-root"])
        .arg(h.path())
        .output()
        .unwrap();
    assert_eq!(dry.stdout, out.stdout);
}

#[test]
fn apply_plan_rollback_round_trip() {
    let h = host("intel-z170-gtx960", Net::Static);
    let before = snapshot_tree(h.path(), SKIP);
    bin()
        .args(["apply", "--yes", "--host-root"])
        .arg(h.path())
        .assert()
        .success()
        .stderr(contains("skipped (host root): update-grub"))
        .stdout(contains("reboot required"));
    assert!(
        h.path().join("var/log/gpu-vm-bootstrap.log").is_file(),
        "log inside the root"
    );
    let out = bin()
        .args(["plan", "--json", "--host-root"])
        .arg(h.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files: Vec<&serde_json::Value> = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["path"].is_string())
        .collect();
    assert!(files.is_empty(), "{files:#?}");
    bin()
        .args(["rollback", "--yes", "--host-root"])
        .arg(h.path())
        .assert()
        .success()
        .stdout(contains("rolled back run"));
    assert_eq!(
        tree_diff(&before, &snapshot_tree(h.path(), SKIP)),
        Vec::<String>::new()
    );
    bin()
        .args(["rollback", "--yes", "--host-root"])
        .arg(h.path())
        .assert()
        .code(1)
        .stderr(contains("nothing to roll back"));
}

#[test]
fn verify_reports_checks_as_json() {
    let h = host("synthetic-vfio-bound", Net::None);
    let out = bin()
        .args(["verify", "--json", "--host-root"])
        .arg(h.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["checks"].as_array().unwrap().len() >= 5);
    assert_eq!(out.status.code(), Some(if v["ok"] == true { 0 } else { 1 }));
}

#[test]
fn help_lists_every_documented_option() {
    let out = bin().env("COLUMNS", "100").arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for opt in [
        "--gpu-mode",
        "--gpu <SELECTOR>",
        "--host-driver",
        "--skip-nvidia",
        "--skip-kvm",
        "--skip-iommu",
        "--skip-bridge",
        "--skip-vmctl",
        "--bridge-name",
        "--bridge-iface",
        "--dry-run",
        "--yes",
        "--reboot",
        "--force",
        "--json",
        "--log-file",
        "--host-root",
    ] {
        assert!(help.contains(opt), "{opt} missing from --help");
    }
    insta::assert_snapshot!(help);
}

/// With `--json`, a refusal is also one JSON document on stdout (the same shape vmctl uses):
/// `{"error": {"kind", "message", "causes", "help", "details": {"problems"}}}`, exit 2.
#[test]
fn json_refusal_is_an_error_document_on_stdout() {
    let h = host("intel-z170-gtx960", Net::Dhcp);
    let out = bin()
        .args(["plan", "--json", "--gpu", "0000:99:00.0", "--host-root"])
        .arg(h.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = &v["error"];
    assert_eq!(e["kind"], "refused", "{v:#}");
    assert!(
        e["message"].as_str().unwrap().contains("0000:99:00.0"),
        "{v:#}"
    );
    assert!(e["help"][0].as_str().unwrap().contains("detect"), "{v:#}");
    assert_eq!(e["details"]["problems"][0]["phase"], "preflight", "{v:#}");
}

/// `--gpu` takes `vmctl`'s selectors: an index from `gpu status` and `all` as well as BDFs.
#[test]
fn gpu_selectors_share_vmctls_grammar() {
    for sel in ["1", "all", "group:14", "2b:00.0", "0000:2b:00.0"] {
        let h = host("amd-b550m-gt710-rtx2070s", Net::Dhcp);
        let out = bin()
            .args([
                "plan",
                "--json",
                "--skip-vmctl",
                "--gpu",
                sel,
                "--host-root",
            ])
            .arg(h.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // `all` includes the boot VGA GT 710: refused for that reason, not for the selector.
        if sel == "all" {
            assert_eq!(out.status.code(), Some(2), "{stderr}");
            assert!(stderr.contains("boot VGA"), "{sel}: {stderr}");
            assert!(!stderr.contains("no NVIDIA GPU"), "{sel}: {stderr}");
        } else {
            assert!(out.status.success(), "--gpu {sel}: {stderr}");
        }
    }
}
#[test]
fn apply_only_flags_are_refused_outside_apply() {
    for args in [
        &["detect", "--yes", "--reboot"][..],
        &["detect", "--yes"],
        &["verify", "--reboot"],
        &["plan", "--dry-run"],
        &["rollback", "--reboot"],
        &["--yes", "detect"],
    ] {
        let e = refused("intel-z170-gtx960", args);
        assert!(
            e.contains("--yes") || e.contains("--reboot") || e.contains("--dry-run"),
            "{args:?}: {e}"
        );
    }
    // They stay on `apply` (and on no subcommand, which runs apply), and `--yes` on rollback.
    let h = host("intel-z170-gtx960", Net::Dhcp);
    for args in [
        &["apply", "--dry-run"][..],
        &["--dry-run"],
        &["--dry-run", "apply"],
    ] {
        bin()
            .args(args)
            .arg("--host-root")
            .arg(h.path())
            .assert()
            .success();
    }
    let help =
        String::from_utf8(bin().args(["detect", "--help"]).output().unwrap().stdout).unwrap();
    for flag in ["--yes", "--reboot", "--dry-run"] {
        assert!(!help.contains(flag), "detect --help shows {flag}:\n{help}");
    }
}

/// The planning flags belong to `plan`, `apply` (also without a subcommand) and `verify`: given
/// to `detect` or `rollback`, before or after the subcommand, they are a usage error (they were
/// accepted and ignored), and those subcommands' help does not list them.
#[test]
fn planning_flags_are_refused_where_nothing_is_planned() {
    for args in [
        &["detect", "--gpu-mode", "host"][..],
        &["--skip-kvm", "detect"],
        &["rollback", "--bridge-name", "br9"],
        &["--gpu", "0", "rollback"],
    ] {
        let e = refused("intel-z170-gtx960", args);
        assert!(e.contains("--"), "{args:?}: {e}");
    }
    let h = host("intel-z170-gtx960", Net::Dhcp);
    for args in [
        &["plan", "--skip-kvm"][..],
        &["--skip-kvm", "plan"],
        &["--gpu-mode", "none", "--dry-run"],
        &["apply", "--dry-run", "--skip-bridge"],
        &["--skip-bridge", "apply", "--dry-run"],
    ] {
        bin()
            .args(args)
            .arg("--host-root")
            .arg(h.path())
            .assert()
            .success();
    }
    for sub in ["detect", "rollback"] {
        let help = String::from_utf8(bin().args([sub, "--help"]).output().unwrap().stdout).unwrap();
        for flag in ["--gpu-mode", "--skip-kvm", "--bridge-name", "--force"] {
            assert!(!help.contains(flag), "{sub} --help shows {flag}:\n{help}");
        }
    }
}

#[test]
fn help_lines_name_flags_the_subcommand_takes() {
    use crate::help_snapshots::help_walk;
    // Each subcommand's long flags (globals included), from its own --help.
    let flags: std::collections::BTreeMap<Vec<String>, Vec<String>> =
        help_walk::pages("gpu-vm-bootstrap")
            .into_iter()
            .map(|(path, page)| {
                let f = help_walk::arg_sections(&page)
                    .into_iter()
                    .flat_map(|(_, e)| e.into_iter())
                    .filter_map(|(spec, _)| help_walk::long_flag(&spec))
                    .collect();
                (path, f)
            })
            .collect();
    let cases: [(&str, &[&str]); 6] = [
        ("intel-z370-no-nvidia", &["apply", "--yes"]),
        (
            "amd-b550m-gt710-rtx2070s",
            &["apply", "--yes", "--gpu", "04:00.0"],
        ),
        (
            "intel-z170-gtx960",
            &["apply", "--yes", "--gpu", "0000:99:00.0"],
        ),
        ("intel-z170-gtx960", &["apply"]),
        ("intel-z170-gtx960", &["--yes", "--bridge-iface", "eth9"]),
        ("intel-z170-gtx960", &["detect", "--yes"]),
    ];
    let mut problems = Vec::new();
    for (host, args) in cases {
        let e = refused(host, args);
        let sub: Vec<String> = args
            .first()
            .filter(|a| !a.starts_with('-'))
            .map(|a| vec![a.to_string()])
            .unwrap_or_default();
        for help in e.lines().filter_map(|l| l.strip_prefix("help: ")) {
            for (i, segment) in help.split('`').enumerate() {
                let words: Vec<&str> = segment.split_whitespace().collect();
                // Quoted commands of other programs are not ours to check.
                let path = if i % 2 == 1 {
                    let w: Vec<&str> = words.iter().copied().filter(|w| *w != "sudo").collect();
                    match w.first() {
                        Some(&"gpu-vm-bootstrap") => w
                            .get(1)
                            .filter(|s| !s.starts_with('-'))
                            .map(|s| vec![s.to_string()])
                            .unwrap_or_default(),
                        Some(f) if f.starts_with("--") => sub.clone(),
                        _ => continue,
                    }
                } else {
                    sub.clone()
                };
                let takes = &flags[&path];
                for w in &words {
                    let flag: String = w
                        .trim_start_matches('(')
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                        .collect();
                    if flag.starts_with("--") && flag.len() > 2 && !takes.contains(&flag) {
                        problems.push(format!(
                            "{args:?}: `{}` takes no {flag}: {help}",
                            path.join(" ")
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
