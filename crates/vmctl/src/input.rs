//! Reading the small text files a user names (`--config`, `--ssh-key`, the system config):
//! regular files only, capped in size, UTF-8, with problems described by position and never by
//! content (a symlink to /etc/shadow must not print its first line).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The largest config file vmctl reads (the real one is a few hundred bytes).
pub const CONFIG_MAX: u64 = 1 << 20;

/// The largest SSH public key file vmctl reads (an RSA-16384 key line is about 2.8 KiB).
pub const SSH_KEY_MAX: u64 = 16 << 10;

/// Why a file could not be used as text input.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("no such file")]
    NotFound,
    #[error("not a regular file ({kind})")]
    NotRegular { kind: &'static str },
    #[error("larger than {max} bytes")]
    TooLarge { max: u64 },
    #[error("line {line}, column {column}: not UTF-8 text")]
    NotUtf8 { line: usize, column: usize },
    #[error(transparent)]
    Io(std::io::Error),
}

impl InputError {
    /// A problem with what the user pointed at (exit 2), rather than the I/O failing.
    pub fn is_usage(&self) -> bool {
        !matches!(self, InputError::Io(_))
    }
}

fn kind(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a plain file"
    }
}

/// Reads `path` (symlinks followed) as UTF-8 text of at most `max` bytes. The file is opened
/// with O_NONBLOCK, so a FIFO without a writer cannot block the open, and checked with fstat(2)
/// on the open descriptor before anything is read: a device such as /dev/zero, a FIFO or a
/// directory is refused, and the read stops after `max + 1` bytes.
pub fn read_text(path: &Path, max: u64) -> Result<String, InputError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => InputError::NotFound,
            _ => InputError::Io(e),
        })?;
    let meta = file.metadata().map_err(InputError::Io)?;
    if is_null_device(&meta) {
        return Ok(String::new());
    }
    if !meta.file_type().is_file() {
        return Err(InputError::NotRegular {
            kind: kind(meta.file_type()),
        });
    }
    if meta.len() > max {
        return Err(InputError::TooLarge { max });
    }
    let mut buf = Vec::new();
    // The size may change between fstat and read (a growing file): the read has its own cap.
    Read::take(&file as &File, max + 1)
        .read_to_end(&mut buf)
        .map_err(InputError::Io)?;
    if buf.len() as u64 > max {
        return Err(InputError::TooLarge { max });
    }
    String::from_utf8(buf).map_err(|e| {
        let bytes = e.as_bytes();
        let good = e.utf8_error().valid_up_to();
        let (line, column) = line_column(
            // The valid prefix is UTF-8 by definition.
            std::str::from_utf8(&bytes[..good]).unwrap_or_default(),
            good,
        );
        InputError::NotUtf8 { line, column }
    })
}

/// A parser's message without what it quotes from the file: a part in backticks or double
/// quotes that is not just punctuation (an expected token such as `=`) becomes `…`. Parsers'
/// `Display` often adds the offending line too; callers give only the position and this.
pub fn scrub(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(i) = rest.find(['`', '"']) {
        let quote = &rest[i..=i];
        out.push_str(&rest[..=i]);
        let after = &rest[i + 1..];
        match after.find(quote) {
            Some(j) => {
                let inner = &after[..j];
                if inner.chars().all(|c| c.is_ascii_punctuation()) {
                    out.push_str(inner);
                } else {
                    out.push('…');
                }
                out.push_str(quote);
                rest = &after[j + 1..];
            }
            None => {
                out.push('…');
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out.trim().to_string()
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

/// The null device (`--config /dev/null`, the usual "no config file"): empty, and it can neither
/// hang nor grow, so it is read as an empty file.
fn is_null_device(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device()
        && std::fs::metadata(hostio::paths::DEV_NULL).is_ok_and(|null| null.rdev() == meta.rdev())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_null_device_reads_as_an_empty_file_and_other_devices_are_refused() {
        assert_eq!(read_text(Path::new("/dev/null"), 16).unwrap(), "");
        assert!(matches!(
            read_text(Path::new("/dev/zero"), 16),
            Err(InputError::NotRegular { .. })
        ));
    }

    #[test]
    fn regular_small_utf8_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok");
        std::fs::write(&ok, "bridge = \"br0\"\n").unwrap();
        assert_eq!(read_text(&ok, 100).unwrap(), "bridge = \"br0\"\n");
        assert!(matches!(
            read_text(&ok, 5),
            Err(InputError::TooLarge { max: 5 })
        ));
        assert!(matches!(
            read_text(&dir.path().join("nope"), 5),
            Err(InputError::NotFound)
        ));
        assert!(matches!(
            read_text(dir.path(), 5),
            Err(InputError::NotRegular {
                kind: "a directory"
            })
        ));
        assert!(matches!(
            read_text(Path::new("/dev/zero"), 5),
            Err(InputError::NotRegular {
                kind: "a character device"
            })
        ));
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        assert!(matches!(
            read_text(&fifo, 5),
            Err(InputError::NotRegular { kind: "a FIFO" })
        ));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&ok, &link).unwrap();
        read_text(&link, 100).unwrap();
        let latin1 = dir.path().join("latin1");
        std::fs::write(&latin1, b"a\n\xc3\xa9t\xe9\n").unwrap();
        let err = read_text(&latin1, 100).unwrap_err();
        assert_eq!(err.to_string(), "line 2, column 3: not UTF-8 text");
    }

    #[test]
    fn scrub_keeps_tokens_and_drops_quoted_content() {
        assert_eq!(scrub("expected `.`, `=`"), "expected `.`, `=`");
        assert_eq!(scrub("duplicate key `SECRET`"), "duplicate key `…`");
        assert_eq!(scrub("invalid \"SECRET\" here"), "invalid \"…\" here");
        assert_eq!(scrub("unclosed `SECRET"), "unclosed `…");
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_column("abc", 0), (1, 1));
        assert_eq!(line_column("abc\ndef", 5), (2, 2));
        assert_eq!(line_column("é=1", 2), (1, 2));
        assert_eq!(line_column("ab\n", 99), (2, 1));
    }
}
