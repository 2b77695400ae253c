//! What both binaries share at the command line: the `completions` and hidden `__man`
//! subcommands, the exit-code text for `--help`, `-v`/`-vv` tracing to stderr, writing to
//! stdout and stderr so that a closed pipe (`vmctl list | head -1`, `vmctl info x 2>&1 | head
//! -c0`) never panics, and escaping the names a text view prints.
//!
//! This crate depends on clap on purpose: it is the binaries' side of the line, never a
//! library crate's.

#![forbid(unsafe_code)]

mod table;
pub use table::table;

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
pub use clap_complete::Shell;

/// The exit-code contract, appended to every `--help` (after_help) and repeated in the README.
pub const EXIT_CODES: &str =
    "Exit codes: 0 ok, 1 failure, 2 bad usage or refused (nothing changed).";

/// Subcommands every binary has; flatten them into the binary's own subcommand enum with
/// `#[command(flatten)] Docs(clikit::DocsCommand)`.
#[derive(Debug, Clone, Subcommand)]
pub enum DocsCommand {
    /// Print a shell completion script (bash: `source <(BINARY completions bash)`)
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write one man page per command (roff) into DIR (used by packaging/build-debs.sh)
    #[command(name = "__man", hide = true)]
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

impl DocsCommand {
    /// Runs the subcommand for `cmd` (the binary's `Cli::command()`); prints errors itself.
    pub fn run(&self, cmd: clap::Command) -> ExitCode {
        let result = match self {
            DocsCommand::Completions { shell } => {
                let mut buf = Vec::new();
                completions(cmd, *shell, &mut buf);
                write_stdout(&buf)
            }
            DocsCommand::Man { dir } => man_pages(cmd, dir).map(|pages| {
                for p in pages {
                    errln(&format!("wrote {}", escape(&p.display().to_string())));
                }
            }),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                errln(&format!("error: {}", escape_text(&e.to_string())));
                errln("help: check that the directory exists and is writable");
                ExitCode::from(1)
            }
        }
    }
}

/// Writes the completion script of `cmd` for `shell`. (clap_complete's bash script also offers
/// hidden subcommands such as `__man`; clap has no way to drop a subcommand from a `Command`.)
pub fn completions(mut cmd: clap::Command, shell: Shell, w: &mut dyn Write) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, w);
}

/// Writes `NAME.1` and `NAME-SUB[-SUB…].1` for every visible subcommand into `dir`, and
/// returns the paths of the pages in `dir`, sorted. The pages carry no date, so a rebuild gives identical bytes.
pub fn man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(cmd, dir)?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "1"))
        .collect();
    pages.sort();
    Ok(pages)
}

/// Prints `help:` lines to stderr after an error. Every error ends with at least one: when the
/// error has no specific next step, the generic one says how to learn more.
pub fn print_help_lines(bin: &str, help: &[String]) {
    for h in help_or_generic(bin, help) {
        errln(&format!("help: {}", escape_text(&h)));
    }
}

/// `help`, or the generic next step when it is empty.
fn help_or_generic(bin: &str, help: &[String]) -> Vec<String> {
    if help.is_empty() {
        return vec![format!(
            "run again with -vv for details; `{bin} --help` lists the options"
        )];
    }
    help.to_vec()
}

/// Prints an error to stderr: `error: MESSAGE`, one `  caused by: …` line per cause, then the
/// `help:` lines. Messages are escaped with [`escape_text`] (they name paths and domains that
/// came from outside); a closed stderr is ignored, so the caller still exits with its code.
pub fn print_error(bin: &str, message: &str, causes: &[String], help: &[String]) {
    errln(&format!("error: {}", escape_text(message)));
    for c in causes {
        errln(&format!("  caused by: {}", escape_text(c)));
    }
    print_help_lines(bin, help);
}

/// Why a command failed, which decides its exit code ([`EXIT_CODES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Bad input or an unsafe request: exit 2, nothing changed.
    Refused,
    /// Something failed that is not the user's input: exit 1.
    Failed,
    /// Stopped by Ctrl-C or SIGTERM: exit 130.
    Interrupted,
}

impl ErrorKind {
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(match self {
            ErrorKind::Refused => 2,
            ErrorKind::Failed => 1,
            ErrorKind::Interrupted => 130,
        })
    }
}

/// A failed command as both binaries report it: on stderr always ([`print_error`]), and with
/// `--json` also on stdout as `{"error": {"kind", "message", "causes", "help", "details"?}}`,
/// so a script reading stdout gets a JSON document whatever happened.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ErrorReport {
    pub kind: ErrorKind,
    pub message: String,
    pub causes: Vec<String>,
    pub help: Vec<String>,
    /// Structured detail a binary adds (gpu-vm-bootstrap: the problems a plan was refused for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

#[derive(serde::Serialize)]
struct ErrorDocument<'a> {
    error: &'a ErrorReport,
}

impl ErrorReport {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorReport {
            kind,
            message: message.into(),
            causes: Vec::new(),
            help: Vec::new(),
            details: None,
        }
    }

    /// The JSON document `--json` prints on stdout.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&ErrorDocument { error: self }).unwrap_or_default()
    }

    /// Prints the report (stderr; with `json` also stdout) and returns the exit code.
    pub fn print(&self, bin: &str, json: bool) -> ExitCode {
        print_error(bin, &self.message, &self.causes, &self.help);
        if json {
            let shown = ErrorReport {
                help: help_or_generic(bin, &self.help),
                ..self.clone()
            };
            outln(&shown.to_json());
        }
        self.kind.exit_code()
    }
}

/// Writes `text` to stderr and flushes, ignoring every error: a closed or full stderr must not
/// turn a refusal (exit 2) into a panic (exit 101) the way `eprintln!` does; there is nowhere
/// left to report it.
pub fn err(text: &str) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(text.as_bytes()).and_then(|()| e.flush());
}

/// Like [`err`] with a trailing newline; use it where `eprintln!` would be.
pub fn errln(text: &str) {
    let mut s = String::with_capacity(text.len() + 1);
    s.push_str(text);
    s.push('\n');
    err(&s);
}

/// True for characters a terminal acts on instead of showing: the C0 controls, DEL and the C1
/// controls (ECMA-48: ESC and CSI start escape sequences that move the cursor, recolour or
/// retitle the window), the Unicode bidi formatting characters (UAX #9: LRM, RLM, ALM, the
/// embeddings and overrides U+202A-U+202E and the isolates U+2066-U+2069, which reorder what
/// follows them; "Trojan Source", CVE-2021-42574) and the line and paragraph separators.
pub fn is_unsafe_for_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// `s` for a text view: every character of [`is_unsafe_for_terminal`] (newlines and tabs too)
/// as `\u{…}`, the rest as is. JSON output needs none of this: serde_json escapes the controls
/// and the rest is data.
pub fn escape(s: &str) -> Cow<'_, str> {
    escape_keeping(s, |_| false)
}

/// [`escape`] for multi-line text (error messages): newlines stay, everything else unsafe is
/// escaped.
pub fn escape_text(s: &str) -> Cow<'_, str> {
    escape_keeping(s, |c| c == '\n')
}

fn escape_keeping(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_unsafe_for_terminal(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe_for_terminal(c) && !keep(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Writes `bytes` to a locked stdout and flushes. A closed pipe (EPIPE) counts as success:
/// the reader has all it wanted (Rust ignores SIGPIPE, so the write returns the error instead
/// of killing us; we must not panic the way `println!` does).
pub fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// [`write_stdout`] for text, ignoring every other error too (stdout closed or full is not
/// something a read command can fix); use it where `print!` would be.
pub fn out(text: &str) {
    let _ = write_stdout(text.as_bytes());
}

/// Like [`out`] with a trailing newline.
pub fn outln(text: &str) {
    let mut s = String::with_capacity(text.len() + 1);
    s.push_str(text);
    s.push('\n');
    out(&s);
}

/// `tracing` to stderr: warnings by default, `-v` info, `-vv` debug, `-vvv` trace. The
/// environment variable `env_var` (an `EnvFilter` directive such as `vmctl=trace`) overrides.
pub fn init_logging(verbose: u8, env_var: &str) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env(env_var)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // log_internal_errors(false): by default a failed write is reported with `eprintln!`, which
    // panics when stderr is a closed pipe.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> clap::Command {
        clap::Command::new("demo")
            .about("a demo")
            .subcommand(
                clap::Command::new("create")
                    .about("create things")
                    .subcommand(clap::Command::new("ubuntu").about("an ubuntu thing")),
            )
            .subcommand(clap::Command::new("secret").hide(true))
    }

    #[test]
    fn man_pages_for_every_visible_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pages = man_pages(demo(), dir.path()).expect("man pages");
        let names: Vec<String> = pages
            .iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            names,
            ["demo-create-ubuntu.1", "demo-create.1", "demo.1"],
            "hidden subcommands get no page"
        );
        let page = std::fs::read_to_string(dir.path().join("demo.1")).expect("read");
        assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{page}");
        assert!(page.contains("a demo"));
    }

    #[test]
    fn escape_shows_controls_and_bidi_as_code_points() {
        assert_eq!(escape("web-01"), "web-01");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        for (raw, shown) in [
            ("a\u{1b}[2Jb", "a\\u{1b}[2Jb"),
            ("tab\tnl\n", "tab\\u{9}nl\\u{a}"),
            ("del\u{7f}", "del\\u{7f}"),
            ("csi\u{9b}31m", "csi\\u{9b}31m"),
            ("nel\u{85}", "nel\\u{85}"),
            ("evil\u{202e}gnp.exe", "evil\\u{202e}gnp.exe"),
            (
                "\u{202a}\u{202b}\u{202c}\u{202d}",
                "\\u{202a}\\u{202b}\\u{202c}\\u{202d}",
            ),
            (
                "\u{2066}\u{2067}\u{2068}\u{2069}",
                "\\u{2066}\\u{2067}\\u{2068}\\u{2069}",
            ),
            ("\u{200e}\u{200f}\u{61c}", "\\u{200e}\\u{200f}\\u{61c}"),
            ("\u{2028}\u{2029}", "\\u{2028}\\u{2029}"),
            // Printable non-ASCII stays.
            ("José ✓ 東京", "José ✓ 東京"),
        ] {
            assert_eq!(escape(raw), shown, "{raw:?}");
        }
        assert_eq!(escape_text("one\ntwo\u{1b}"), "one\ntwo\\u{1b}");
    }

    #[test]
    fn bash_completion_covers_nested_subcommands() {
        let mut buf = Vec::new();
        completions(demo(), Shell::Bash, &mut buf);
        let s = String::from_utf8(buf).expect("utf-8");
        assert!(s.contains("complete -F _demo"), "{s}");
        assert!(s.contains("demo__subcmd__create__subcmd__ubuntu"), "{s}");
    }
}
