//! The conventions both binaries share (issue 9), for vmctl: a closed stdout pipe is a clean
//! exit, the bash completion script loads and completes, man pages cover the subcommands,
//! `config show --json` names each value's source, and errors end with a `help:` line.
//! None of these needs libvirt: they use `config`, `completions` and `__man`.

use std::process::{Command, Stdio};

/// vmctl with no VMCTL_* from the caller's environment and an empty config file.
fn vmctl(cfg: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmctl"));
    for (k, _) in std::env::vars() {
        if k.starts_with("VMCTL_") {
            c.env_remove(k);
        }
    }
    c.arg("--config").arg(cfg);
    c
}

fn empty_config() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.toml");
    std::fs::write(&p, "").unwrap();
    (dir, p)
}

#[test]
fn closed_stdout_pipe_is_a_clean_exit() {
    let (_d, cfg) = empty_config();
    for args in [
        vec!["config", "show"],
        vec!["config", "show", "--json"],
        vec!["completions", "bash"],
        vec!["--help"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = vmctl(&cfg)
            .args(&args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

#[test]
fn bash_completion_loads_and_completes_subcommands() {
    let (dir, cfg) = empty_config();
    let script = vmctl(&cfg).args(["completions", "bash"]).output().unwrap();
    assert!(script.status.success());
    let path = dir.path().join("vmctl");
    std::fs::write(&path, &script.stdout).unwrap();
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c"])
        .arg(format!(
            "set -e; source '{}'; complete -p vmctl; \
             COMP_WORDS=(vmctl create ubuntu --cpu-m); COMP_CWORD=3; \
             _vmctl vmctl --cpu-m ubuntu; echo \"${{COMPREPLY[@]}}\"",
            path.display()
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("-F _vmctl vmctl"), "{stdout}");
    assert_eq!(stdout.lines().last().unwrap(), "--cpu-mode", "{stdout}");
}

#[test]
fn man_pages_cover_nested_subcommands() {
    let (dir, cfg) = empty_config();
    let man = dir.path().join("man");
    let out = vmctl(&cfg).arg("__man").arg(&man).output().unwrap();
    assert!(out.status.success());
    for page in ["vmctl.1", "vmctl-create-ubuntu.1", "vmctl-config-show.1"] {
        let text = std::fs::read_to_string(man.join(page)).unwrap();
        assert!(text.contains(".SH NAME"), "{page}");
    }
    assert!(
        !man.join("vmctl-__man.1").exists(),
        "hidden subcommands get no page"
    );
}

#[test]
fn config_show_json_names_each_source() {
    let (_d, cfg) = empty_config();
    std::fs::write(&cfg, "storage_dir = \"/srv/vms\"\n").unwrap();
    let out = vmctl(&cfg)
        .args(["--connect", "test:///default", "config", "show", "--json"])
        .env("VMCTL_BRIDGE", "br9")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["settings"];
    assert_eq!(s["connect"]["source"]["kind"], "flag");
    assert_eq!(s["bridge"]["value"], "br9");
    assert_eq!(s["bridge"]["source"]["kind"], "env");
    assert_eq!(s["bridge"]["source"]["var"], "VMCTL_BRIDGE");
    assert_eq!(s["storage_dir"]["source"]["kind"], "file");
    assert_eq!(s["storage_dir"]["source"]["path"], cfg.to_str().unwrap());
    assert_eq!(s["image_cache"]["source"]["kind"], "default");
}

#[test]
fn errors_end_with_help_and_bad_config_exits_2() {
    let (_d, cfg) = empty_config();
    std::fs::write(&cfg, "brige = \"br0\"\n").unwrap();
    let out = vmctl(&cfg).args(["config", "show"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.trim_end().lines().last().unwrap().starts_with("help: "),
        "{err}"
    );
}

/// With `--json`, an error is also one JSON document on stdout, in the shape gpu-vm-bootstrap
/// uses too: `{"error": {"kind", "message", "causes", "help"}}`, with the exit code of its kind.
#[test]
fn json_error_is_an_error_document_on_stdout() {
    let (_d, cfg) = empty_config();
    let out = vmctl(&cfg)
        .args([
            "--connect",
            "test:///default",
            "--json",
            "info",
            "no-such-vm",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = &v["error"];
    assert_eq!(e["kind"], "refused", "{v:#}");
    assert!(
        e["message"].as_str().unwrap().contains("no-such-vm"),
        "{v:#}"
    );
    assert!(
        e["help"][0].as_str().unwrap().contains("vmctl list"),
        "{v:#}"
    );
    // stderr keeps the text form.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("\nhelp: "),
        "{err}"
    );
}
