//! Reading and editing the kernel command line in `/etc/default/grub` and
//! `/etc/default/grub.d/*.cfg`. update-grub (grub-mkconfig) *sources* these files with `sh`, in
//! that order, so they are read here by POSIX sh rules (XCU 2.2 "Quoting", 2.6 "Word
//! Expansions", 2.9.1 "Simple Commands"), not line by line.
//!
//! The reader understands what grub files hold: assignments (`export` too), single and double
//! quotes with their escapes, backslash-newline continuations, `$NAME` / `${NAME}` references,
//! comments, and enough of the compound commands (`if`, `case`, loops, `{ }`, functions) to know
//! when an assignment is conditional. Anything whose value cannot be known without running it
//! (command substitution, `${NAME:-...}`, a variable the files never set, `. FILE`, `eval`) makes
//! the value unknown, and an unknown value is never edited: the caller refuses instead.
//!
//! An edit keeps the user's text: our arguments go in front of the closing quote of the last
//! assignment (or after it, quoted), and a conflicting argument is replaced where it is written.
//! Every edit is checked by reading the edited files again: the new value must be exactly the old
//! one with the change, or the edit is refused.

mod lex;

use std::collections::BTreeMap;
use std::ops::Range;

use lex::{Command, Lexer, Part, Word, assignment, commands, is_name_char, is_name_start, line_of};

/// The variable the IOMMU arguments go into: grub adds it to the normal boot entries only
/// (GRUB_CMDLINE_LINUX goes to the recovery entries too; grub's "Simple configuration" manual).
pub const CMDLINE_DEFAULT: &str = "GRUB_CMDLINE_LINUX_DEFAULT";
/// Kernel arguments for every entry; it comes before the default ones on the command line.
pub const CMDLINE_LINUX: &str = "GRUB_CMDLINE_LINUX";

/// A variable's value after the files ran: known exactly, or not (and why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Known(String),
    Unknown(String),
}

/// Where the effective assignment of a variable is written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Site {
    file: usize,
    /// The value's source text (after `NAME=`).
    span: Range<usize>,
    closing_quote: Option<usize>,
}

#[derive(Debug, Default)]
struct Env {
    vars: BTreeMap<String, Value>,
    /// Set by `.`, `source` or `eval`: a variable not assigned since may hold anything.
    taint: Option<String>,
    /// The last assignment of each variable, when it was a plain one we can edit.
    sites: BTreeMap<String, Option<Site>>,
}

impl Env {
    fn get(&self, name: &str) -> Value {
        match (self.vars.get(name), &self.taint) {
            (Some(v), _) => v.clone(),
            (None, Some(t)) => Value::Unknown(t.clone()),
            (None, None) => Value::Unknown(format!(
                "references ${name}, which the grub files do not set (its value would come from the environment update-grub runs in)"
            )),
        }
    }

    /// The value after all files; a variable never set and never tainted is empty.
    fn final_value(&self, name: &str) -> Value {
        match (self.vars.get(name), &self.taint) {
            (Some(v), _) => v.clone(),
            (None, Some(t)) => Value::Unknown(t.clone()),
            (None, None) => Value::Known(String::new()),
        }
    }

    fn unknown(&mut self, name: &str, why: String) {
        self.vars.insert(name.to_string(), Value::Unknown(why));
        self.sites.insert(name.to_string(), None);
    }

    fn eval(&self, parts: &[Part]) -> Value {
        let mut out = String::new();
        for p in parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Param(n) => match self.get(n) {
                    Value::Known(v) => out.push_str(&v),
                    u => return u,
                },
                Part::Unsupported(what) => return Value::Unknown(format!("uses {what}")),
            }
        }
        Value::Known(out)
    }
}

/// A file the evaluation could not follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub file: usize,
    pub line: usize,
    pub why: String,
}

/// Runs the files in order, as update-grub sources them, tracking every variable.
fn run(files: &[&str]) -> Result<Env, Unreadable> {
    let mut env = Env::default();
    for (fi, text) in files.iter().enumerate() {
        let cmds = Lexer::new(text)
            .tokens()
            .and_then(|t| commands(t, text))
            .map_err(|e| Unreadable {
                file: fi,
                line: line_of(text, e.pos),
                why: format!("the file uses {}, which this reader does not follow", e.why),
            })?;
        for c in cmds {
            step(&mut env, &c, fi, text);
        }
    }
    Ok(env)
}

/// The effect of one simple command on the variables.
fn step(env: &mut Env, c: &Command, file: usize, text: &str) {
    let line = c.words.first().map_or(0, |w| line_of(text, w.span.start));
    let n_assign = c
        .words
        .iter()
        .take_while(|w| assignment(w, text).is_some())
        .count();
    let (assigns, rest) = c.words.split_at(n_assign);
    let name = rest.first().and_then(Word::literal);
    if matches!(name, Some("." | "source" | "eval")) {
        // The sourced file or evaluated string may set anything.
        env.vars.clear();
        env.sites.clear();
        env.taint = Some(format!(
            "may be changed by `{}` at line {line}, which this reader does not follow",
            name.unwrap_or_default()
        ));
        return;
    }
    let unsafe_why = if c.nested {
        Some(format!(
            "is assigned inside an `if`, `case`, loop, `{{ }}` or function at line {line}"
        ))
    } else if c.conditional {
        Some(format!(
            "is assigned in an `&&`/`||` list, a pipeline or the background at line {line}"
        ))
    } else if !rest.is_empty() && !assigns.is_empty() {
        Some(format!(
            "is assigned as the environment of a command at line {line}"
        ))
    } else {
        None
    };
    // Words after `export`/`readonly`/... that assign.
    let builtin = matches!(
        name,
        Some("export" | "readonly" | "local" | "declare" | "typeset")
    );
    let mut all: Vec<&Word> = assigns.iter().collect();
    if builtin {
        all.extend(rest[1..].iter().filter(|w| assignment(w, text).is_some()));
    }
    for w in all {
        let Some((var, parts, value_start)) = assignment(w, text) else {
            continue;
        };
        if let Some(why) = &unsafe_why {
            env.unknown(&var, why.clone());
            continue;
        }
        if matches!(name, Some("readonly" | "local" | "declare" | "typeset")) {
            env.unknown(
                &var,
                format!("is set with `{}` at line {line}", name.unwrap_or_default()),
            );
            continue;
        }
        let v = match env.eval(&parts) {
            Value::Unknown(why) => Value::Unknown(format!("{why} (line {line})")),
            k => k,
        };
        env.vars.insert(var.clone(), v);
        env.sites.insert(
            var,
            Some(Site {
                file,
                span: value_start..w.span.end,
                closing_quote: w.closing_quote,
            }),
        );
    }
    // Any other mention of a variable name as a word (`unset X`, `read X`, `export -n X`) may
    // change it; `export X` alone does not.
    let args = if name == Some("export") && !rest.iter().any(|w| w.literal() == Some("-n")) {
        &[][..]
    } else {
        rest
    };
    for w in args {
        if let Some(n) = w.literal()
            && !n.is_empty()
            && is_name_start(n.as_bytes()[0])
            && n.bytes().all(is_name_char)
            && env.vars.contains_key(n)
            && Some(n) != name
        {
            env.unknown(
                n,
                format!(
                    "may be changed by `{}` at line {line}",
                    name.unwrap_or_default()
                ),
            );
        }
    }
}

/// Kernel command-line words: split at spaces outside double quotes, as the kernel's
/// `next_arg()` does (lib/cmdline.c); the quotes stay part of the word.
pub fn kernel_words(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        }
        if c.is_ascii_whitespace() && !quoted {
            if let Some(st) = start.take() {
                out.push(&s[st..i]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(st) = start {
        out.push(&s[st..]);
    }
    out
}

/// What to do with a kernel argument already on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    Replace(String),
    Remove,
}

/// A change the edit made to an existing argument, for the plan's warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed {
    pub old: String,
    pub new: Option<String>,
}

/// The outcome of [`edit_cmdline`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edit {
    /// Index (into the files given) of the file to write and its new text; `None` when the
    /// command line already has every argument.
    pub write: Option<(usize, String)>,
    pub added: Vec<String>,
    pub fixed: Vec<Fixed>,
    /// Arguments left out because the command line already sets their key to another value.
    pub kept: Vec<(String, String)>,
}

/// Why an edit is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub file: usize,
    pub line: Option<usize>,
    pub why: String,
    /// The argument that must go but cannot be edited out (`intel_iommu=off`), if that is why.
    pub conflict: Option<String>,
}

/// Adds `args` to `GRUB_CMDLINE_LINUX_DEFAULT` as the sh run of `files` (update-grub's order;
/// the first is `/etc/default/grub`) ends up with it. `fix` says which existing arguments must
/// go (`intel_iommu=off` for passthrough); they are replaced where they are written. An
/// argument whose key is already set to another value (and that `fix` keeps) is not added.
pub fn edit_cmdline(
    files: &[&str],
    args: &[&str],
    fix: &dyn Fn(&str) -> Option<Fix>,
) -> Result<Edit, Refused> {
    let refused_at = |file: usize, line: Option<usize>, why: String| Refused {
        file,
        line,
        why,
        conflict: None,
    };
    let env = run(files).map_err(|u| refused_at(u.file, Some(u.line), u.why))?;
    let last_file = files.len().saturating_sub(1);
    let value = match env.final_value(CMDLINE_DEFAULT) {
        Value::Known(v) => v,
        Value::Unknown(why) => {
            let file = match env.sites.get(CMDLINE_DEFAULT) {
                Some(Some(s)) => s.file,
                _ => last_file,
            };
            return Err(refused_at(file, None, format!("{CMDLINE_DEFAULT} {why}")));
        }
    };
    let site = env.sites.get(CMDLINE_DEFAULT).cloned().flatten();
    let site_file = site.as_ref().map_or(0, |s| s.file);
    if value.matches('"').count() % 2 == 1 {
        return Err(refused_at(
            site_file,
            None,
            format!(
                "{CMDLINE_DEFAULT} has an unbalanced `\"`: the kernel would read the arguments added after it as part of a quoted value"
            ),
        ));
    }
    // GRUB_CMDLINE_LINUX comes first on the command line; it is not edited, but an argument it
    // already has need not be added, and one that must go cannot stay there.
    let linux = match env.final_value(CMDLINE_LINUX) {
        Value::Known(v) => v,
        Value::Unknown(_) => String::new(),
    };
    for w in kernel_words(&linux) {
        if fix(w).is_some() {
            let file = match env.sites.get(CMDLINE_LINUX) {
                Some(Some(s)) => s.file,
                _ => 0,
            };
            return Err(Refused {
                conflict: Some(w.to_string()),
                ..refused_at(
                    file,
                    None,
                    format!(
                        "{CMDLINE_LINUX} has `{w}`, which keeps the IOMMU off; this tool edits only {CMDLINE_DEFAULT}"
                    ),
                )
            });
        }
    }

    let mut edit = Edit::default();
    let mut new_value = value.clone();
    let mut texts: Vec<String> = files.iter().map(|s| s.to_string()).collect();
    // 1. Replace or remove the arguments that must go, where the last assignment writes them.
    for w in kernel_words(&value) {
        let Some(f) = fix(w) else { continue };
        let Some(site) = &site else {
            return Err(Refused {
                conflict: Some(w.to_string()),
                ..refused_at(
                    site_file,
                    None,
                    format!(
                        "{CMDLINE_DEFAULT} has `{w}`, but not in an assignment this tool can edit"
                    ),
                )
            });
        };
        let (expected, replaced) = fix_value(&new_value, w, &f);
        let done = splice_candidates(&texts[site.file], site, w, &f)
            .into_iter()
            .find(|cand| {
                let mut t = texts.clone();
                t[site.file] = cand.clone();
                let refs: Vec<&str> = t.iter().map(String::as_str).collect();
                run(&refs)
                    .is_ok_and(|e| e.final_value(CMDLINE_DEFAULT) == Value::Known(expected.clone()))
            });
        match done {
            Some(text) if replaced => {
                texts[site.file] = text;
                new_value = expected;
                edit.fixed.push(Fixed {
                    old: w.to_string(),
                    new: match &f {
                        Fix::Replace(n) => Some(n.clone()),
                        Fix::Remove => None,
                    },
                });
            }
            _ => {
                return Err(Refused {
                    conflict: Some(w.to_string()),
                    ..refused_at(
                        site.file,
                        Some(line_of(&texts[site.file], site.span.start)),
                        format!(
                            "{CMDLINE_DEFAULT} gets `{w}` from a part of its value this tool cannot rewrite safely (a `$VAR` reference or an earlier file)"
                        ),
                    )
                });
            }
        }
    }
    // The fixes moved the text after them: find the assignment again.
    let site = if edit.fixed.is_empty() {
        site
    } else {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        run(&refs)
            .map_err(|u| refused_at(u.file, Some(u.line), u.why))?
            .sites
            .get(CMDLINE_DEFAULT)
            .cloned()
            .flatten()
    };
    // 2. The arguments still missing.
    let have: Vec<&str> = kernel_words(&new_value)
        .into_iter()
        .chain(kernel_words(&linux))
        .collect();
    let mut missing: Vec<&str> = Vec::new();
    for a in args {
        if have.contains(a) {
            continue;
        }
        let key = a.split('=').next().unwrap_or(a);
        if let Some(other) = have
            .iter()
            .rev()
            .find(|t| t.contains('=') && t.split('=').next() == Some(key))
        {
            edit.kept.push((other.to_string(), a.to_string()));
            continue;
        }
        missing.push(a);
    }
    if !missing.is_empty() {
        let add = missing.join(" ");
        let sep = if new_value.is_empty() || new_value.ends_with(|c: char| c.is_ascii_whitespace())
        {
            ""
        } else {
            " "
        };
        let expected = format!("{new_value}{sep}{add}");
        let (file, text) = match &site {
            Some(site) => (
                site.file,
                append_to_site(&texts[site.file], site, &format!("{sep}{add}")),
            ),
            // Never assigned: a new assignment at the end of /etc/default/grub.
            None => {
                let mut t = texts[0].clone();
                if !t.is_empty() && !t.ends_with('\n') {
                    t.push('\n');
                }
                t.push_str(&format!("{CMDLINE_DEFAULT}=\"{add}\"\n"));
                (0, t)
            }
        };
        let mut t = texts.clone();
        t[file] = text.clone();
        let refs: Vec<&str> = t.iter().map(String::as_str).collect();
        let check = run(&refs).map(|e| e.final_value(CMDLINE_DEFAULT));
        if check != Ok(Value::Known(expected.clone())) {
            return Err(refused_at(
                file,
                site.as_ref().map(|s| line_of(&texts[file], s.span.start)),
                format!(
                    "adding `{add}` to {CMDLINE_DEFAULT} would not give {expected:?} when the file is sourced"
                ),
            ));
        }
        texts[file] = text;
        edit.added = missing.iter().map(|s| s.to_string()).collect();
    }
    let changed: Vec<usize> = (0..files.len()).filter(|&i| texts[i] != files[i]).collect();
    match changed.as_slice() {
        [] => {}
        [i] => edit.write = Some((*i, texts[*i].clone())),
        // Every change is made in the one file of the last assignment.
        _ => {
            return Err(refused_at(
                site_file,
                None,
                format!("editing {CMDLINE_DEFAULT} would change more than one file"),
            ));
        }
    }
    Ok(edit)
}

/// `value` with the kernel word `w` replaced or removed (the first time it is a whole word).
fn fix_value(value: &str, w: &str, f: &Fix) -> (String, bool) {
    let words = kernel_words(value);
    let Some(idx) = words.iter().position(|x| *x == w) else {
        return (value.to_string(), false);
    };
    // Byte range of that occurrence.
    let start = words[idx].as_ptr() as usize - value.as_ptr() as usize;
    let end = start + w.len();
    let out = match f {
        Fix::Replace(n) => format!("{}{n}{}", &value[..start], &value[end..]),
        Fix::Remove => {
            // Take one separating blank with it: the one before, else the one after.
            let (s, e) = if start > 0 {
                (start - 1, end)
            } else if end < value.len() {
                (start, end + 1)
            } else {
                (start, end)
            };
            format!("{}{}", &value[..s], &value[e..])
        }
    };
    (out, true)
}

/// Texts with `w` replaced or removed inside the assignment's source, at each place it is
/// written; the caller keeps the one that evaluates to the expected value.
fn splice_candidates(text: &str, site: &Site, w: &str, f: &Fix) -> Vec<String> {
    let src = &text[site.span.clone()];
    let mut out = Vec::new();
    for (off, _) in src.match_indices(w) {
        let start = site.span.start + off;
        let end = start + w.len();
        let ranges: Vec<(usize, usize)> = match f {
            Fix::Replace(_) => vec![(start, end)],
            Fix::Remove => {
                let mut r = Vec::new();
                if text[..start].ends_with(' ') {
                    r.push((start - 1, end));
                }
                if text[end..].starts_with(' ') {
                    r.push((start, end + 1));
                }
                r.push((start, end));
                r
            }
        };
        for (s, e) in ranges {
            let with = match f {
                Fix::Replace(n) => n.as_str(),
                Fix::Remove => "",
            };
            out.push(format!("{}{with}{}", &text[..s], &text[e..]));
        }
    }
    out
}

/// Appends `add` (plain characters: no quotes, `$`, backslashes or backticks) to the value of
/// the assignment at `site`: inside its closing quote when it ends with one, else as a quoted
/// word joined to it. A value that is a plain unquoted word is quoted as a whole.
fn append_to_site(text: &str, site: &Site, add: &str) -> String {
    let src = &text[site.span.clone()];
    let plain = |s: &str| {
        s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_-.,:/=+@%".contains(&c))
    };
    if let Some(q) = site.closing_quote {
        return format!("{}{add}{}", &text[..q], &text[q..]);
    }
    if plain(src) {
        return format!(
            "{}\"{src}{add}\"{}",
            &text[..site.span.start],
            &text[site.span.end..]
        );
    }
    format!(
        "{}\"{add}\"{}",
        &text[..site.span.end],
        &text[site.span.end..]
    )
}

#[cfg(test)]
mod tests;
