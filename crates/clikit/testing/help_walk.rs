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

/// The sections of a help page that list arguments (`Arguments:`, `Options:`, `Global options:`
/// and any other `… options:` heading): (heading, entries), each entry its spec (`--timeout
/// <SECONDS>`, `<NAME>`) and its help text with clap's own `[default: …]`, `[possible values: …]`
/// and `[env: …]` notes removed. Works for both layouts clap uses: the help on the spec's line
/// (short help), or on the lines under it (long help, once any argument has a long help).
pub fn arg_sections(page: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut inside = false;
    for line in page.lines() {
        if !line.starts_with(' ') && line.ends_with(':') && !line.is_empty() {
            let heading = line.trim_end_matches(':');
            inside = heading == "Arguments" || heading.to_ascii_lowercase().ends_with("options");
            if inside {
                sections.push((heading.to_string(), Vec::new()));
            }
            continue;
        }
        if !inside {
            continue;
        }
        if !line.is_empty() && !line.starts_with(' ') {
            inside = false;
            continue;
        }
        let Some((_, entries)) = sections.last_mut() else {
            continue;
        };
        // Entries are indented by 2 (`-v, --verbose`, `<NAME>`) or 6 (`      --json`); help
        // text under or after them by more.
        let rest = line.trim_start();
        let indent = line.len() - rest.len();
        let entry = Some(rest).filter(|r| {
            (2..=6).contains(&indent)
                && (r.starts_with('-') || r.starts_with('<') || r.starts_with('['))
        });
        match entry {
            Some(rest) => {
                let (spec, text) = match rest.find("  ") {
                    Some(i) => (&rest[..i], rest[i..].trim()),
                    None => (rest.trim_end(), ""),
                };
                entries.push((spec.to_string(), text.to_string()));
            }
            None => {
                if let Some((_, text)) = entries.last_mut() {
                    text.push(' ');
                    text.push_str(line.trim());
                }
            }
        }
    }
    for (_, entries) in &mut sections {
        for (_, text) in entries.iter_mut() {
            *text = strip_clap_notes(text);
        }
    }
    sections
}

/// `text` without clap's bracketed notes (`[default: 60]`, `[possible values: a, b]`, `[env: X=]`).
fn strip_clap_notes(text: &str) -> String {
    let mut out = text.to_string();
    for note in ["[default: ", "[possible values: ", "[env: ", "[aliases: "] {
        while let Some(start) = out.find(note) {
            let end = out[start..].find(']').map_or(out.len(), |e| start + e + 1);
            out.replace_range(start..end, "");
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The long flags (`--json`) of a spec such as `-v, --verbose...` or `--gpu [<SELECTOR>]`.
pub fn long_flag(spec: &str) -> Option<String> {
    spec.split([' ', ',', '='])
        .find(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches("...").to_string())
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
        fn every_argument_and_option_has_help() {
            let mut missing = Vec::new();
            for (path, page) in help_walk::pages($bin) {
                for (_, entries) in help_walk::arg_sections(&page) {
                    for (spec, text) in entries {
                        if text.is_empty() {
                            missing.push(format!("{} {}: {spec}", $bin, path.join(" ")));
                        }
                    }
                }
            }
            assert!(missing.is_empty(), "arguments without help:\n{}", missing.join("\n"));
        }

        #[test]
        fn global_options_sit_under_their_own_heading() {
            let pages = help_walk::pages($bin);
            // A global option is one every page lists (clap's -h/--help aside).
            let flags_of = |page: &str| -> Vec<(String, String)> {
                help_walk::arg_sections(page)
                    .into_iter()
                    .flat_map(|(h, e)| e.into_iter().filter_map(move |(s, _)| help_walk::long_flag(&s).map(|f| (h.clone(), f))))
                    .filter(|(_, f)| f != "--help" && f != "--version")
                    .collect()
            };
            let mut global: Vec<String> = flags_of(&pages[0].1).into_iter().map(|(_, f)| f).collect();
            for (_, page) in &pages[1..] {
                let here: Vec<String> = flags_of(page).into_iter().map(|(_, f)| f).collect();
                global.retain(|f| here.contains(f));
            }
            assert!(!global.is_empty(), "no global options found");
            let mut misplaced = Vec::new();
            for (path, page) in &pages {
                for (heading, flag) in flags_of(page) {
                    let is_global = global.contains(&flag);
                    if is_global != (heading == "Global options") {
                        misplaced.push(format!("{} {}: {flag} under {heading:?}", $bin, path.join(" ")));
                    }
                }
            }
            assert!(misplaced.is_empty(), "{}", misplaced.join("\n"));
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
