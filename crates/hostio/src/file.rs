//! Writes at real paths: files and directories created with an explicit, exact mode, atomic
//! replacement, and the rename that makes a finished file visible. For paths that are already
//! mapped (through [`crate::HostRoot::path`]) or that a user named (a VM's storage, the image
//! cache, `--out`), and for callers that stream large files (downloads, qcow2, ISOs) and so
//! need the open [`File`] rather than a byte slice.
//!
//! Modes. open(2) and mkdir(2) narrow the mode they are given by the process umask, so a mode
//! passed to them alone is only an upper bound (0644 becomes 0600 under umask 077, and 0666
//! stays 0666 under umask 0). Every function here that creates takes the final mode and sets
//! it exactly: a file is created with `mode` (or narrower, never wider) and then fchmod(2)-ed
//! to `mode` on its descriptor before a byte is written, so a secret's file (0600) is never
//! readable by others at any moment. A directory is created owner-only and then set to `mode`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::temp_prefix;

/// open(2) flags every create here adds: never follow a symlink at the last component
/// (`O_NOFOLLOW`; with `O_EXCL` the kernel already refuses one). std adds `O_CLOEXEC` itself.
const NOFOLLOW: i32 = libc::O_NOFOLLOW;

/// Creates `path`, which must not exist (`O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC`: never an
/// existing file, never a symlink's target), open for reading and writing, with exactly `mode`.
/// Fails with `AlreadyExists` when the name is taken, so a caller can claim a fresh name.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(NOFOLLOW)
        .open(path)?;
    // The umask may have narrowed open()'s mode; it can only have narrowed it.
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(f)
}

/// Opens `path` for reading and writing, creating it with exactly `mode` if it does not exist
/// (an existing file keeps its content and mode; a symlink is refused, `O_NOFOLLOW`). For files
/// that are resumed or shared: a partial download, a lock file.
pub fn open_or_create(path: &Path, mode: u32) -> io::Result<File> {
    loop {
        match create_new(path, mode) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            other => return other,
        }
        match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(NOFOLLOW)
            .open(path)
        {
            // Removed between the two opens: create it again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            other => return other,
        }
    }
}

/// Writes `content` to a new file `path` ([`create_new`]: it must not exist) with exactly
/// `mode`, and syncs it.
pub fn write_new(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let mut f = create_new(path, mode)?;
    f.write_all(content)?;
    f.sync_all()
}

/// Replaces `path` with `content` atomically: a temp file in the same directory
/// ([`temp_prefix`]`NAME` + this process's id), fsync, rename, fsync of the directory. A reader
/// (or a crash) sees either the old or the new content, never a mix. The new file has exactly
/// `mode` and belongs to this process's user. The directory must exist.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    replace(path, content, mode, None)
}

/// [`write_atomic`], keeping an existing file's owner and group (root rewriting a host's
/// config file leaves it as it was owned: [`crate::HostRoot::write_atomic`]).
pub(crate) fn write_atomic_keeping_owner(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let owner = fs::metadata(path).ok().map(|m| (m.uid(), m.gid()));
    replace(path, content, mode, owner)
}

fn replace(path: &Path, content: &[u8], mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    let dir = parent(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!("{}{}", temp_prefix(&name), std::process::id()));
    let result = (|| {
        // Owner-only until it is complete: a writer killed mid-write leaves a partial file
        // nobody else can read or run (a 0755 binary would be runnable). The final mode is
        // set before the rename; a 0600 file is created with its final mode.
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode & 0o600)
            .custom_flags(NOFOLLOW)
            .open(&tmp)?;
        f.write_all(content)?;
        // The umask may have narrowed the mode given to open().
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        f.sync_all()?;
        persist(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes a finished file visible under its name: rename(2) of `tmp` to `dest` (same file
/// system), then fsync(2) of `dest`'s directory so the rename survives a crash.
pub fn persist(tmp: &Path, dest: &Path) -> io::Result<()> {
    fs::rename(tmp, dest)?;
    sync_dir(parent(dest)?)
}

/// [`persist`] for a file the caller has open (`file` is `tmp`, already written and synced):
/// sets its final `mode` through the descriptor first, so it is never visible under `dest`
/// with another mode.
pub fn persist_with_mode(file: &File, tmp: &Path, dest: &Path, mode: u32) -> io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    persist(tmp, dest)
}

/// fsync(2) of a directory, so a rename or create in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates the directory `path`, which must not exist (mkdir(2) fails with `AlreadyExists`, so
/// of two callers exactly one gets it), with exactly `mode`: owner-only (`mode & 0o700`) until
/// it is set to `mode` (setgid and sticky bits included), never wider in between.
pub fn make_dir(path: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new().mode(mode & 0o700).create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Creates `dir` and its missing parents, each with exactly `mode` ([`make_dir`]).
/// Directories that already exist keep their mode.
pub fn create_dir_all_mode(dir: &Path, mode: u32) -> io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && fs::symlink_metadata(p).is_err())
        .collect();
    for p in missing.into_iter().rev() {
        match make_dir(p, mode) {
            Ok(()) => {}
            // Made by a concurrent process in the meantime: theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && p.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes a file (or a symlink, not its target). `Ok(false)` when there was nothing to
/// remove, so callers can tell what they removed.
pub fn remove_file(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes an empty directory; `Ok(false)` when it did not exist. A directory that is not
/// empty is an error (`DirectoryNotEmpty`).
pub fn remove_dir(path: &Path) -> io::Result<bool> {
    match fs::remove_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes a directory and everything in it (symlinks inside are removed, not followed);
/// `Ok(false)` when it did not exist. For private staging directories a caller made itself.
pub fn remove_tree(path: &Path) -> io::Result<bool> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn parent(path: &Path) -> io::Result<&Path> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Ok(Path::new(".")),
        Some(p) => Ok(p),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path has no parent",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn create_new_refuses_existing_names_and_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("secret");
        write_new(&p, b"one", 0o600).unwrap();
        assert_eq!(mode(&p), 0o600);
        let e = create_new(&p, 0o600).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        let outside = tmp.path().join("outside");
        fs::write(&outside, "keep").unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        assert!(create_new(&link, 0o600).is_err());
        assert!(open_or_create(&link, 0o600).is_err(), "O_NOFOLLOW");
        // A link planted at write_atomic's temp name is not written through.
        let tmp_name = format!("{}{}", temp_prefix("conf"), std::process::id());
        std::os::unix::fs::symlink(&outside, tmp.path().join(tmp_name)).unwrap();
        assert!(write_atomic(&tmp.path().join("conf"), b"new", 0o644).is_err());
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
    }

    #[test]
    fn open_or_create_keeps_an_existing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("partial");
        {
            let mut f = open_or_create(&p, 0o644).unwrap();
            f.write_all(b"abc").unwrap();
        }
        assert_eq!(mode(&p), 0o644);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        drop(open_or_create(&p, 0o644).unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"abc", "not truncated");
        assert_eq!(mode(&p), 0o640, "an existing file keeps its mode");
    }

    #[test]
    fn make_dir_claims_once_and_persist_renames() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("vm");
        make_dir(&d, 0o2711).unwrap();
        assert_eq!(mode(&d), 0o2711);
        assert_eq!(
            make_dir(&d, 0o700).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        let t = d.join(".x.part");
        let f = create_new(&t, 0o644).unwrap();
        persist_with_mode(&f, &t, &d.join("x"), 0o444).unwrap();
        assert_eq!(mode(&d.join("x")), 0o444);
        assert!(remove_file(&d.join("x")).unwrap());
        assert!(!remove_file(&d.join("x")).unwrap());
        assert!(remove_dir(&d).unwrap());
        assert!(!remove_tree(&d).unwrap());
    }
}
