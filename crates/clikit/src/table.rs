//! The one table layout of both binaries: columns two spaces apart, each as wide as its widest
//! cell in terminal columns (Unicode East Asian Width via `unicode-width`, so "名前" takes four
//! columns and a combining accent none), trailing blanks trimmed. Callers escape cells first
//! (`escape`): a control character has no width to measure.

use unicode_width::UnicodeWidthStr;

/// Lays out `rows` (the first is usually the header) in columns. Rows shorter than the
/// widest row leave the missing cells empty.
pub fn table<S: AsRef<str>>(rows: &[Vec<S>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.as_ref().width());
        }
    }
    let mut s = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            let c = c.as_ref();
            line.push_str(c);
            if i + 1 < r.len() {
                let pad = widths[i] - c.width() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(r: &[&[&str]]) -> Vec<Vec<String>> {
        r.iter()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect()
    }

    #[test]
    fn columns_line_up_in_terminal_columns_not_bytes_or_chars() {
        let t = table(&rows(&[
            &["NAME", "STATE"],
            &["名前", "running"],
            &["cafe\u{301}", "shut off"],
            &["web1", "paused"],
        ]));
        // Every STATE starts in the same terminal column: 4 + 2.
        for line in t.lines() {
            let name = line.split("  ").next().unwrap();
            let rest = &line[name.len()..];
            assert_eq!(
                name.width() + rest.len() - rest.trim_start().len(),
                6,
                "{line:?}"
            );
        }
        assert_eq!(t.lines().nth(1), Some("名前  running"));
    }

    #[test]
    fn trailing_blanks_are_trimmed_and_short_rows_are_allowed() {
        let t = table(&rows(&[&["A", "B", "C"], &["long cell", ""], &["x"]]));
        assert_eq!(t, "A          B  C\nlong cell\nx\n");
    }
}
