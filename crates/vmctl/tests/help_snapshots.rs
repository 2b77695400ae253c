//! Every `--help` of the binary, as a snapshot (the walk is shared: clikit/testing/help_walk.rs).
//! After a deliberate change to the CLI, regenerate with
//! `INSTA_UPDATE=always cargo test -p vmctl --test integration help_snapshots` and review the diff.

#[path = "../../clikit/testing/help_walk.rs"]
mod help_walk;

use assert_cmd::Command;

const BIN: &str = "vmctl";

#[test]
fn every_help_page() {
    let pages = help_walk::pages(BIN);
    assert!(pages.len() > 1, "the walk found no subcommands");
    for (path, page) in pages {
        let name = if path.is_empty() {
            "root".to_string()
        } else {
            path.join("-")
        };
        insta::with_settings!({ snapshot_suffix => name, description => [BIN].into_iter().chain(path.iter().map(String::as_str)).chain(["--help"]).collect::<Vec<_>>().join(" "), omit_expression => true }, {
            insta::assert_snapshot!("help", page);
        });
    }
}

#[test]
fn help_ends_with_exit_codes_and_version_names_the_commit() {
    let page = help_walk::help(BIN, &[]);
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
