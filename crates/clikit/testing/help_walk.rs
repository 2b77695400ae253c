// Shared by both binaries' `tests/help_snapshots.rs` (pulled in with `#[path]`): walks every
// `--help` page of a binary through the binary itself. Each page's `Commands:` list names the
// next level, so a new subcommand gets its own snapshot without touching the tests.

use assert_cmd::Command;

/// `--help` of `path` (a subcommand chain) at a fixed width, so pages do not depend on the
/// terminal the tests run in.
pub fn help(bin: &str, path: &[String]) -> String {
    let out = Command::cargo_bin(bin)
        .expect("binary under test")
        .args(path)
        .arg("--help")
        .env("COLUMNS", "100")
        .env_remove("TERM")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).expect("help is UTF-8")
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

/// Every help page of `bin`, depth first in `Commands:` order: (subcommand path, page).
pub fn pages(bin: &str) -> Vec<(Vec<String>, String)> {
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    let mut out = Vec::new();
    while let Some(path) = todo.pop() {
        let page = help(bin, &path);
        for sub in subcommands(&page).into_iter().rev() {
            let mut next = path.clone();
            next.push(sub);
            todo.push(next);
        }
        out.push((path, page));
    }
    out
}

/// The two help tests of a binary: every page as an insta snapshot (named `help@<path>`, stored
/// next to the calling test file, since insta's macros expand there), and the common footer and
/// `--version` format. Call as `help_walk::help_tests!("vmctl");` in the including test file.
macro_rules! help_tests {
    ($bin:literal) => {
        #[test]
        fn every_help_page() {
            let pages = help_walk::pages($bin);
            assert!(pages.len() > 1, "the walk found no subcommands");
            for (path, page) in pages {
                let name = if path.is_empty() {
                    "root".to_string()
                } else {
                    path.join("-")
                };
                let command = [$bin]
                    .into_iter()
                    .chain(path.iter().map(String::as_str))
                    .chain(["--help"])
                    .collect::<Vec<_>>()
                    .join(" ");
                insta::with_settings!({ snapshot_suffix => name, description => command, omit_expression => true }, {
                    insta::assert_snapshot!("help", page);
                });
            }
        }

        #[test]
        fn help_ends_with_exit_codes_and_version_names_the_commit() {
            let page = help_walk::help($bin, &[]);
            assert!(
                page.contains("Exit codes: 0 ok, 1 failure, 2 bad usage or refused"),
                "{page}"
            );
            let out = assert_cmd::Command::cargo_bin($bin)
                .expect("binary under test")
                .arg("--version")
                .output()
                .expect("run --version");
            let v = String::from_utf8(out.stdout).expect("UTF-8");
            // "<bin> 0.1.0 (1a2b3c4)", "(1a2b3c4-dirty)" or "(unknown)" outside git.
            assert!(v.trim_end().ends_with(')') && v.contains(" ("), "{v}");
        }
    };
}
pub(crate) use help_tests;
