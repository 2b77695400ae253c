//! The POSIX sh lexer and command reader behind [`super`]: words with their quoting (XCU 2.2),
//! operators, and commands with the compound constructs that make an assignment conditional
//! (`if`, `case`, loops, `{ }`, functions). Only what grub's files hold; anything else is an
//! error that makes the value unknown.

use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Part {
    Lit(String),
    Param(String),
    /// Something only running the shell can tell, and why.
    Unsupported(&'static str),
}

#[derive(Debug, Clone)]
pub(super) struct Word {
    pub(super) span: Range<usize>,
    pub(super) parts: Vec<Part>,
    /// Has a quote or an escape, so it is never a reserved word.
    pub(super) quoted: bool,
    /// Offset of the closing quote the word ends with, if it ends with one.
    pub(super) closing_quote: Option<usize>,
}

impl Word {
    /// The word as an unquoted literal (reserved words, command names).
    pub(super) fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Lit(s)] if !self.quoted => Some(s),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Newline,
    Semi,
    DSemi,
    Amp,
    AndIf,
    Pipe,
    OrIf,
    LParen,
    RParen,
    Redir,
}

#[derive(Debug)]
pub(super) enum Token {
    Word(Word),
    Op(Op),
}

/// A file the reader cannot follow at all (sh would fail on it too, or it uses a here-document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LexError {
    pub(super) pos: usize,
    pub(super) why: &'static str,
}

pub(super) struct Lexer<'a> {
    pub(super) s: &'a str,
    pub(super) b: &'a [u8],
    pub(super) i: usize,
}

pub(super) fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

pub(super) fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

impl<'a> Lexer<'a> {
    pub(super) fn new(s: &'a str) -> Self {
        Self {
            s,
            b: s.as_bytes(),
            i: 0,
        }
    }

    pub(super) fn err(&self, why: &'static str) -> LexError {
        LexError { pos: self.i, why }
    }

    /// The whole character at byte `i` (grub files may hold UTF-8 in comments and values).
    pub(super) fn char_len(&self, i: usize) -> usize {
        self.s[i..].chars().next().map_or(1, char::len_utf8)
    }

    pub(super) fn tokens(mut self) -> Result<Vec<Token>, LexError> {
        let mut out = Vec::new();
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b' ' | b'\t' => self.i += 1,
                b'\\' if self.b.get(self.i + 1) == Some(&b'\n') => self.i += 2,
                b'#' => {
                    while self.b.get(self.i).is_some_and(|&c| c != b'\n') {
                        self.i += 1;
                    }
                }
                b'\n' => {
                    out.push(Token::Op(Op::Newline));
                    self.i += 1;
                }
                b';' => {
                    let double = self.b.get(self.i + 1) == Some(&b';');
                    out.push(Token::Op(if double { Op::DSemi } else { Op::Semi }));
                    self.i += if double { 2 } else { 1 };
                }
                b'&' | b'|' => {
                    let double = self.b.get(self.i + 1) == Some(&c);
                    out.push(Token::Op(match (c, double) {
                        (b'&', true) => Op::AndIf,
                        (b'&', false) => Op::Amp,
                        (_, true) => Op::OrIf,
                        (_, false) => Op::Pipe,
                    }));
                    self.i += if double { 2 } else { 1 };
                }
                b'(' => {
                    out.push(Token::Op(Op::LParen));
                    self.i += 1;
                }
                b')' => {
                    out.push(Token::Op(Op::RParen));
                    self.i += 1;
                }
                b'<' | b'>' => {
                    if c == b'<' && self.b.get(self.i + 1) == Some(&b'<') {
                        return Err(self.err("a here-document (`<<`)"));
                    }
                    self.i += 1;
                    if matches!(self.b.get(self.i), Some(b'>' | b'&' | b'|')) {
                        self.i += 1;
                    }
                    out.push(Token::Op(Op::Redir));
                }
                _ => out.push(Token::Word(self.word()?)),
            }
        }
        Ok(out)
    }

    pub(super) fn word(&mut self) -> Result<Word, LexError> {
        let start = self.i;
        let mut parts: Vec<Part> = Vec::new();
        let mut lit = String::new();
        let mut quoted = false;
        let mut last_close = None;
        let flush = |lit: &mut String, parts: &mut Vec<Part>| {
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(lit)));
            }
        };
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'(' | b')' | b'<' | b'>' => break,
                b'\\' => {
                    quoted = true;
                    match self.b.get(self.i + 1) {
                        // Line continuation: both characters vanish (XCU 2.2.1).
                        Some(b'\n') => self.i += 2,
                        Some(_) => {
                            let n = self.char_len(self.i + 1);
                            lit.push_str(&self.s[self.i + 1..self.i + 1 + n]);
                            self.i += 1 + n;
                        }
                        None => self.i += 1,
                    }
                }
                b'\'' => {
                    quoted = true;
                    let end = self.b[self.i + 1..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .map(|p| self.i + 1 + p)
                        .ok_or_else(|| self.err("an unterminated single quote"))?;
                    lit.push_str(&self.s[self.i + 1..end]);
                    last_close = Some(end);
                    self.i = end + 1;
                }
                b'"' => {
                    quoted = true;
                    self.i += 1;
                    loop {
                        let Some(&c) = self.b.get(self.i) else {
                            return Err(LexError {
                                pos: start,
                                why: "an unterminated double quote",
                            });
                        };
                        match c {
                            b'"' => {
                                last_close = Some(self.i);
                                self.i += 1;
                                break;
                            }
                            // Inside double quotes a backslash escapes only these (XCU 2.2.3).
                            b'\\' => match self.b.get(self.i + 1) {
                                Some(b'\n') => self.i += 2,
                                Some(&n @ (b'$' | b'`' | b'"' | b'\\')) => {
                                    lit.push(n as char);
                                    self.i += 2;
                                }
                                _ => {
                                    lit.push('\\');
                                    self.i += 1;
                                }
                            },
                            b'$' => self.dollar(&mut lit, &mut parts)?,
                            b'`' => {
                                self.backticks()?;
                                flush(&mut lit, &mut parts);
                                parts.push(Part::Unsupported("command substitution"));
                            }
                            _ => {
                                let n = self.char_len(self.i);
                                lit.push_str(&self.s[self.i..self.i + n]);
                                self.i += n;
                            }
                        }
                    }
                }
                b'$' => self.dollar(&mut lit, &mut parts)?,
                b'`' => {
                    self.backticks()?;
                    flush(&mut lit, &mut parts);
                    parts.push(Part::Unsupported("command substitution"));
                }
                // Tilde expansion: at the start of a word, and after `=` or `:` in an
                // assignment (XCU 2.6.1).
                b'~' if self.i == start || lit.ends_with('=') || lit.ends_with(':') => {
                    flush(&mut lit, &mut parts);
                    parts.push(Part::Unsupported("tilde expansion"));
                    self.i += 1;
                }
                _ => {
                    let n = self.char_len(self.i);
                    lit.push_str(&self.s[self.i..self.i + n]);
                    self.i += n;
                }
            }
        }
        flush(&mut lit, &mut parts);
        Ok(Word {
            span: start..self.i,
            parts,
            quoted,
            closing_quote: last_close.filter(|&q| q + 1 == self.i),
        })
    }

    /// At a `$`: a parameter, an expansion only the shell can do, or a literal `$`.
    pub(super) fn dollar(
        &mut self,
        lit: &mut String,
        parts: &mut Vec<Part>,
    ) -> Result<(), LexError> {
        let next = self.b.get(self.i + 1).copied();
        let mut push = |lit: &mut String, p: Part| {
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(lit)));
            }
            parts.push(p);
        };
        match next {
            Some(b'{') => {
                let open = self.i + 2;
                self.i = open;
                self.balanced(b'{', b'}')?;
                let inner = &self.s[open..self.i - 1];
                let b = inner.as_bytes();
                if !b.is_empty() && is_name_start(b[0]) && b.iter().all(|&c| is_name_char(c)) {
                    push(lit, Part::Param(inner.to_string()));
                } else {
                    push(
                        lit,
                        Part::Unsupported("a `${...}` expansion with an operator"),
                    );
                }
            }
            Some(b'(') => {
                let arith = self.b.get(self.i + 2) == Some(&b'(');
                self.i += 2;
                self.balanced(b'(', b')')?;
                push(
                    lit,
                    Part::Unsupported(if arith {
                        "arithmetic expansion"
                    } else {
                        "command substitution"
                    }),
                );
            }
            Some(c) if is_name_start(c) => {
                let s = self.i + 1;
                let mut e = s;
                while self.b.get(e).is_some_and(|&c| is_name_char(c)) {
                    e += 1;
                }
                push(lit, Part::Param(self.s[s..e].to_string()));
                self.i = e;
            }
            Some(c) if c.is_ascii_digit() || b"@*#?$!-".contains(&c) => {
                push(
                    lit,
                    Part::Unsupported("a special parameter (`$1`, `$@`, ...)"),
                );
                self.i += 2;
            }
            _ => {
                lit.push('$');
                self.i += 1;
            }
        }
        Ok(())
    }

    /// Skips to after the `close` that balances an already consumed `open`, stepping over
    /// quotes and escapes.
    pub(super) fn balanced(&mut self, open: u8, close: u8) -> Result<(), LexError> {
        let start = self.i;
        let mut depth = 1;
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b'\\' => self.i += 2,
                b'\'' => {
                    self.i = self.b[self.i + 1..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .map(|p| self.i + 2 + p)
                        .ok_or(LexError {
                            pos: start,
                            why: "an unterminated single quote",
                        })?;
                }
                b'"' => {
                    self.i += 1;
                    while let Some(&c) = self.b.get(self.i) {
                        match c {
                            b'\\' => self.i += 2,
                            b'"' => break,
                            _ => self.i += 1,
                        }
                    }
                    self.i += 1;
                }
                c if c == open => {
                    depth += 1;
                    self.i += 1;
                }
                c if c == close => {
                    depth -= 1;
                    self.i += 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                _ => self.i += 1,
            }
        }
        Err(LexError {
            pos: start,
            why: "an unterminated `$(` or `${`",
        })
    }

    pub(super) fn backticks(&mut self) -> Result<(), LexError> {
        let start = self.i;
        self.i += 1;
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b'\\' => self.i += 2,
                b'`' => {
                    self.i += 1;
                    return Ok(());
                }
                _ => self.i += 1,
            }
        }
        Err(LexError {
            pos: start,
            why: "an unterminated backtick",
        })
    }
}

/// One simple command, with where it runs.
#[derive(Debug)]
pub(super) struct Command {
    pub(super) words: Vec<Word>,
    /// Inside `if`/`case`/a loop/`{ }`/`( )`/a function body, or a compound's own header.
    pub(super) nested: bool,
    /// Part of an `&&`/`||` list or a pipeline, or run in the background.
    pub(super) conditional: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Frame {
    If,
    Loop,
    Case,
    Brace,
    Subshell,
}

pub(super) fn commands(tokens: Vec<Token>, text: &str) -> Result<Vec<Command>, LexError> {
    let mut out = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut words: Vec<Word> = Vec::new();
    let mut before = Op::Newline;
    let unbalanced = |w: Option<&Word>| LexError {
        pos: w.map_or(text.len(), |w| w.span.start),
        why: "an unbalanced `fi`, `done`, `esac`, `}` or `)`",
    };
    let mut finish = |words: &mut Vec<Word>,
                      stack: &mut Vec<Frame>,
                      before: Op,
                      after: Op|
     -> Result<(), LexError> {
        let mut ws = std::mem::take(words);
        // Reserved words are recognised first in a command (XCU 2.4).
        while let Some(w0) = ws.first().and_then(Word::literal) {
            let frame = match w0 {
                "then" | "do" | "else" | "elif" | "!" => None,
                "if" => Some(Some(Frame::If)),
                "while" | "until" | "for" | "select" => Some(Some(Frame::Loop)),
                "case" => Some(Some(Frame::Case)),
                "{" => Some(Some(Frame::Brace)),
                "fi" | "done" | "esac" | "}" => {
                    let want = match w0 {
                        "fi" => Frame::If,
                        "done" => Frame::Loop,
                        "esac" => Frame::Case,
                        _ => Frame::Brace,
                    };
                    if stack.pop() != Some(want) {
                        return Err(unbalanced(ws.first()));
                    }
                    Some(None)
                }
                _ => break,
            };
            match frame {
                // A compound's header (`if COND`, `for x in ...`): its words run inside it.
                Some(Some(f)) if f != Frame::Brace => {
                    stack.push(f);
                    ws.remove(0);
                    out.push(Command {
                        words: std::mem::take(&mut ws),
                        nested: true,
                        conditional: true,
                    });
                    return Ok(());
                }
                Some(Some(f)) => stack.push(f),
                _ => {}
            }
            ws.remove(0);
        }
        if !ws.is_empty() {
            let conditional = matches!(before, Op::AndIf | Op::OrIf | Op::Pipe)
                || matches!(after, Op::AndIf | Op::OrIf | Op::Pipe | Op::Amp);
            out.push(Command {
                words: ws,
                nested: !stack.is_empty(),
                conditional,
            });
        }
        Ok(())
    };
    for t in tokens {
        match t {
            Token::Word(w) => words.push(w),
            Token::Op(Op::Redir) => {}
            Token::Op(op) => {
                finish(&mut words, &mut stack, before, op)?;
                match op {
                    Op::LParen if stack.last() != Some(&Frame::Case) => stack.push(Frame::Subshell),
                    Op::RParen if stack.last() == Some(&Frame::Subshell) => {
                        stack.pop();
                    }
                    // `)` ends a case pattern.
                    Op::RParen if stack.last() == Some(&Frame::Case) => {}
                    Op::RParen => return Err(unbalanced(None)),
                    _ => {}
                }
                before = op;
            }
        }
    }
    finish(&mut words, &mut stack, before, Op::Newline)?;
    if !stack.is_empty() {
        return Err(LexError {
            pos: text.len(),
            why: "an `if`, loop, `case` or `{` that is never closed",
        });
    }
    Ok(out)
}

/// `NAME=` at the start of a word (unquoted), and the value's parts.
pub(super) fn assignment(w: &Word, text: &str) -> Option<(String, Vec<Part>, usize)> {
    let src = text[w.span.clone()].as_bytes();
    if src.is_empty() || !is_name_start(src[0]) {
        return None;
    }
    let n = src.iter().position(|&c| !is_name_char(c))?;
    if src[n] != b'=' {
        return None;
    }
    let name = &text[w.span.start..w.span.start + n];
    let mut parts = w.parts.clone();
    if let Some(Part::Lit(first)) = parts.first_mut() {
        let rest = first.strip_prefix(&format!("{name}="))?.to_string();
        if rest.is_empty() {
            parts.remove(0);
        } else {
            *first = rest;
        }
    } else {
        return None;
    }
    Some((name.to_string(), parts, w.span.start + n + 1))
}

pub(super) fn line_of(text: &str, pos: usize) -> usize {
    text[..pos.min(text.len())].matches('\n').count() + 1
}
