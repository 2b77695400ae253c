//! Every `help:` line names what exists: each `--flag` is one the command that failed takes (or,
//! inside a quoted `` `vmctl SUBCOMMAND …` ``, one that subcommand takes), each setting
//! (`talos_factory_url`, `VMCTL_TALOS_FACTORY_URL`) is a key `vmctl config show` knows, and a
//! URL setting named for a failed download is the one the URL came from. The failures are
//! real runs of the binary on fixture hosts, libvirt's test driver and a local stand-in for the
//! Image Factory; the flags are read from the binary's own `--help` pages.

use std::collections::BTreeMap;
use std::path::Path;

use assert_cmd::Command;

use crate::help_snapshots::help_walk;
use crate::talos_support::{LATEST, factory};

/// The long flags of every subcommand path (globals included), and the settings' values.
struct Known {
    flags: BTreeMap<Vec<String>, Vec<String>>,
    settings: BTreeMap<String, String>,
}

impl Known {
    fn read(env: &[(&str, String)]) -> Self {
        let flags = help_walk::pages("vmctl")
            .into_iter()
            .map(|(path, page)| {
                let flags = help_walk::arg_sections(&page)
                    .into_iter()
                    .flat_map(|(_, e)| e.into_iter())
                    .filter_map(|(spec, _)| help_walk::long_flag(&spec))
                    .collect();
                (path, flags)
            })
            .collect();
        let mut c = Command::cargo_bin("vmctl").unwrap();
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.args(["config", "show", "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let settings = v["settings"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, s)| {
                (
                    k.clone(),
                    s["value"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        Self { flags, settings }
    }

    /// The subcommand path that `words` (after `vmctl`) start with: the longest one known.
    fn path_of(&self, words: &[&str]) -> Vec<String> {
        let mut path = Vec::new();
        for w in words {
            let mut next = path.clone();
            next.push(w.to_string());
            if self.flags.contains_key(&next) {
                path = next;
            } else {
                break;
            }
        }
        path
    }

    /// What is wrong with the `help:` lines of `stderr`, from a run of `vmctl RUN…`.
    fn problems(&self, run: &[&str], stderr: &str) -> Vec<String> {
        let run_path = self.path_of(run);
        let urls: Vec<&str> = stderr
            .split(|c: char| c.is_whitespace() || c == '"' || c == '`' || c == ';')
            .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
            .collect();
        let mut out = Vec::new();
        let helps: Vec<&str> = stderr
            .lines()
            .filter_map(|l| l.strip_prefix("help: "))
            .collect();
        assert!(
            !helps.is_empty(),
            "no help line after `vmctl {}`: {stderr}",
            run.join(" ")
        );
        for help in helps {
            for (i, segment) in help.split('`').enumerate() {
                let words: Vec<&str> = segment.split_whitespace().collect();
                // Quoted code: a vmctl command's flags are its own; other programs are not ours.
                let path = if i % 2 == 1 {
                    match words.first() {
                        Some(&"vmctl") => self.path_of(&words[1..]),
                        Some(w) if w.starts_with("--") => run_path.clone(),
                        _ => continue,
                    }
                } else {
                    run_path.clone()
                };
                let takes = &self.flags[&path];
                for w in &words {
                    let flag: String = w
                        .trim_start_matches(['(', '"'])
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                        .collect();
                    if flag.starts_with("--") && flag.len() > 2 && !takes.contains(&flag) {
                        out.push(format!(
                            "`vmctl {}` takes no {flag}: help: {help}",
                            path.join(" ")
                        ));
                    }
                }
                for w in &words {
                    let w = w.trim_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
                    let key = if let Some(var) = w.strip_prefix("VMCTL_") {
                        var.to_ascii_lowercase()
                    } else if w.contains('_')
                        && w.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    {
                        w.to_string()
                    } else {
                        continue;
                    };
                    match self.settings.get(&key) {
                        None => out.push(format!("no setting {key}: help: {help}")),
                        Some(value)
                            if key.ends_with("_url")
                                && !urls.iter().any(|u| u.starts_with(value.as_str())) =>
                        {
                            out.push(format!(
                                "{key} ({value}) is not where {urls:?} came from: help: {help}"
                            ))
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        out
    }
}

/// A fixture host with a bridge `br0`.
fn host(name: &str) -> tempfile::TempDir {
    let tree = fixture_builder::build_host(name);
    std::fs::create_dir_all(tree.path().join("sys/class/net/br0/bridge")).unwrap();
    tree
}

/// A test-driver node with `vm1`, shut off.
fn node(dir: &Path) -> String {
    let p = dir.join("node.xml");
    std::fs::write(
        &p,
        "<node><domain type='test'><name>vm1</name><memory>1048576</memory>\
         <os><type arch='x86_64' machine='q35'>hvm</type></os><devices/></domain></node>\n",
    )
    .unwrap();
    format!("test://{}", p.display())
}

/// `vmctl` with `env` and nothing else of the caller's VMCTL_*; returns stderr after checking
/// the exit code is not 0.
fn fails(env: &[(&str, String)], args: &[&str]) -> String {
    let mut c = Command::cargo_bin("vmctl").unwrap();
    for (k, _) in std::env::vars() {
        if k.starts_with("VMCTL_") {
            c.env_remove(k);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(out.status.code(), Some(0), "{args:?} succeeded: {stderr}");
    stderr
}

#[test]
fn help_lines_name_flags_and_settings_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    let server = factory(None);
    let env = vec![
        ("VMCTL_TALOS_FACTORY_URL", server.base_url()),
        // GitHub does not answer: only "latest" needs it.
        ("VMCTL_GITHUB_API_URL", "http://127.0.0.1:9".to_string()),
        (
            "VMCTL_STORAGE_DIR",
            dir.path().join("vms").display().to_string(),
        ),
        (
            "VMCTL_IMAGE_CACHE",
            dir.path().join("cache").display().to_string(),
        ),
        (
            "VMCTL_STATE_DIR",
            dir.path().join("state").display().to_string(),
        ),
        ("VMCTL_DOMAIN_TYPE", "qemu".to_string()),
    ];
    let known = Known::read(&env);
    let boot_vga = host("synthetic-nvidia-boot-vga-only");
    let intel = host("intel-z370-no-nvidia");
    let n = tempfile::tempdir().unwrap();
    let uri = node(n.path());
    let out_dir = dir.path().join("lab").display().to_string();
    let hr = |h: &tempfile::TempDir| h.path().display().to_string();
    let cases: Vec<(Vec<String>, usize)> = vec![
        // The boot VGA refusal, from `gpu attach` (--force) and from `create` (--gpu-force).
        (
            vec![
                "--connect",
                &uri,
                "--host-root",
                &hr(&boot_vga),
                "gpu",
                "attach",
                "vm1",
                "--gpu",
                "01:00.0",
            ],
            4,
        ),
        (
            vec![
                "--connect",
                &uri,
                "--host-root",
                &hr(&boot_vga),
                "create",
                "ubuntu",
                "g1",
                "--bridge",
                "br0",
                "--gpu",
                "01:00.0",
            ],
            4,
        ),
        (
            vec![
                "--connect",
                &uri,
                "--host-root",
                &hr(&boot_vga),
                "create",
                "talos",
                "g2",
                "--bridge",
                "br0",
                "--ip",
                "198.18.9.12/24",
                "--gpu",
                "01:00.0",
            ],
            4,
        ),
        // The Image Factory has no image: a 404 of the factory's URL.
        (
            vec![
                "--connect",
                &uri,
                "--host-root",
                &hr(&intel),
                "create",
                "talos",
                "t1",
                "--bridge",
                "br0",
                "--no-start",
                "--disk",
                "1G",
                "--ip",
                "198.18.9.10/24",
                "--version",
                LATEST,
            ],
            4,
        ),
        // "Latest" without GitHub.
        (
            vec![
                "--connect",
                &uri,
                "--host-root",
                &hr(&intel),
                "create",
                "talos",
                "t2",
                "--bridge",
                "br0",
                "--no-start",
                "--ip",
                "198.18.9.11/24",
            ],
            4,
        ),
        (
            vec![
                "talos",
                "config",
                "--cluster",
                "lab",
                "--endpoint",
                "https://198.18.0.10:6443",
                "--out",
                &out_dir,
            ],
            0,
        ),
        // Deleting a running domain.
        (
            vec!["--connect", "test:///default", "delete", "test", "--yes"],
            2,
        ),
    ]
    .into_iter()
    .map(|(a, skip)| (a.into_iter().map(String::from).collect(), skip))
    .collect();
    let mut problems = Vec::new();
    for (args, skip) in &cases {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let stderr = fails(&env, &argv);
        problems.extend(known.problems(&argv[*skip..], &stderr));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
