//! Every `--help` of the binary, as a snapshot: the command tree is walked through the binary
//! itself (each page's `Commands:` list names the next level), so a new subcommand gets its own
//! snapshot without touching this file. After a deliberate change to the CLI, regenerate with
//! `INSTA_UPDATE=always cargo test -p vmctl --test help_snapshots` and review the diff.
#![allow(clippy::unwrap_used)]

use assert_cmd::Command;

const BIN: &str = "vmctl";

/// `--help` of `path` (a subcommand chain) at a fixed width, so snapshots do not depend on the
/// terminal the tests run in.
fn help(path: &[String]) -> String {
    let out = Command::cargo_bin(BIN)
        .unwrap()
        .args(path)
        .arg("--help")
        .env("COLUMNS", "100")
        .env_remove("TERM")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).unwrap()
}

/// The subcommand names in a help page's `Commands:` section (clap's `help` pseudo-command
/// left out).
fn subcommands(page: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut inside = false;
    for line in page.lines() {
        if line == "Commands:" {
            inside = true;
            continue;
        }
        if inside {
            // Entries are indented by two; continuation lines of a wrapped about by more.
            match line.strip_prefix("  ") {
                Some(rest) if !rest.starts_with(' ') => {
                    let name = rest.split_whitespace().next().unwrap_or_default();
                    if name != "help" {
                        names.push(name.to_string());
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
    }
    names
}

#[test]
fn every_help_page() {
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    let mut seen = 0;
    while let Some(path) = todo.pop() {
        let page = help(&path);
        for sub in subcommands(&page).into_iter().rev() {
            let mut next = path.clone();
            next.push(sub);
            todo.push(next);
        }
        let name = if path.is_empty() {
            "root".to_string()
        } else {
            path.join("-")
        };
        insta::with_settings!({ snapshot_suffix => name, description => [BIN].into_iter().chain(path.iter().map(String::as_str)).chain(["--help"]).collect::<Vec<_>>().join(" "), omit_expression => true }, {
            insta::assert_snapshot!("help", page);
        });
        seen += 1;
    }
    assert!(seen > 1, "the walk found no subcommands");
}

#[test]
fn help_ends_with_exit_codes_and_version_names_the_commit() {
    let page = help(&[]);
    assert!(
        page.contains("Exit codes: 0 ok, 1 failure, 2 bad usage or refused"),
        "{page}"
    );
    let out = Command::cargo_bin(BIN)
        .unwrap()
        .arg("--version")
        .output()
        .unwrap();
    let v = String::from_utf8(out.stdout).unwrap();
    // "vmctl 0.1.0 (1a2b3c4)", "(1a2b3c4-dirty)" or "(unknown)" outside git.
    let re_ok = v.trim_end().ends_with(')') && v.contains(" (");
    assert!(re_ok, "{v}");
}
