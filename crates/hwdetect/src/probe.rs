//! [`Probe`]: the read side of [`HostRoot`] as detection uses it, optionally recording every
//! path it touched (and the bytes it read) so `capture` can archive exactly that subset.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use hostio::HostRoot;

/// How detection used a host path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Touch {
    /// Its content was read (the bytes detection saw); symlinks on the way are followed.
    Content(Vec<u8>),
    /// It exists but reading it failed (not "not found"): the capture keeps it unreadable.
    Unreadable,
    /// Only its existence or kind mattered. `follow`: whether a final symlink was followed.
    Node { follow: bool },
}

/// Reads host files through a [`HostRoot`]; when recording, remembers each host path touched.
#[derive(Debug)]
pub(crate) struct Probe<'a> {
    root: &'a HostRoot,
    log: Option<RefCell<BTreeMap<PathBuf, Touch>>>,
}

impl<'a> Probe<'a> {
    pub fn new(root: &'a HostRoot) -> Self {
        Self { root, log: None }
    }

    pub fn recording(root: &'a HostRoot) -> Self {
        Self {
            root,
            log: Some(RefCell::new(BTreeMap::new())),
        }
    }

    /// The touched paths, when recording.
    pub fn into_log(self) -> BTreeMap<PathBuf, Touch> {
        self.log.map(RefCell::into_inner).unwrap_or_default()
    }

    fn note(&self, path: &Path, touch: Touch) {
        if let Some(log) = &self.log {
            let mut log = log.borrow_mut();
            // Content is the strongest record; a later existence check must not erase it.
            match (log.get(path), &touch) {
                (Some(Touch::Content(_)), _) => {}
                (Some(Touch::Unreadable), Touch::Node { .. }) => {}
                (Some(Touch::Node { follow: true }), Touch::Node { follow: false }) => {}
                _ => {
                    log.insert(path.to_path_buf(), touch);
                }
            }
        }
    }

    /// Reads a text file (lossily: sysfs and procfs are ASCII, a stray byte must not fail it).
    pub fn read(&self, host_path: impl AsRef<Path>) -> io::Result<String> {
        let host_path = host_path.as_ref();
        let bytes = match self.root.read(host_path) {
            Ok(b) => b,
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    self.note(host_path, Touch::Unreadable);
                }
                return Err(e);
            }
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        self.note(host_path, Touch::Content(bytes));
        Ok(text)
    }

    /// Reads a binary file (efivarfs variables) as bytes; a missing file is `Ok(None)`.
    pub fn read_bytes(&self, host_path: impl AsRef<Path>) -> io::Result<Option<Vec<u8>>> {
        let host_path = host_path.as_ref();
        match self.root.read(host_path) {
            Ok(b) => {
                self.note(host_path, Touch::Content(b.clone()));
                Ok(Some(b))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                self.note(host_path, Touch::Unreadable);
                Err(e)
            }
        }
    }

    /// Reads a large text file line by line and keeps only what `keep` returns for it (a
    /// filtered copy of the file). Only that copy is recorded for a capture, so a capture
    /// holds the few stanzas of dpkg's status or apt's lists that detection uses, not all of
    /// them; detection on the copy gives the same result because `keep` gives the same
    /// output for its own output.
    pub fn read_filtered(
        &self,
        host_path: impl AsRef<Path>,
        keep: impl FnOnce(&mut dyn io::BufRead) -> io::Result<String>,
    ) -> io::Result<Option<String>> {
        let host_path = host_path.as_ref();
        let file = match std::fs::File::open(self.root.path(host_path)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                self.note(host_path, Touch::Unreadable);
                return Err(e);
            }
        };
        let kept = match keep(&mut io::BufReader::new(file)) {
            Ok(k) => k,
            Err(e) => {
                self.note(host_path, Touch::Unreadable);
                return Err(e);
            }
        };
        self.note(host_path, Touch::Content(kept.clone().into_bytes()));
        Ok(Some(kept))
    }

    /// Like [`Probe::read`] but a missing file is `Ok(None)`.
    pub fn read_optional(&self, host_path: impl AsRef<Path>) -> io::Result<Option<String>> {
        match self.read(host_path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The last component of a symlink's target (`driver` → `nvidia`); `Ok(None)` if absent.
    pub fn link_name(&self, host_path: impl AsRef<Path>) -> io::Result<Option<String>> {
        let host_path = host_path.as_ref();
        match self.root.link_name(host_path) {
            Ok(name) => {
                self.note(host_path, Touch::Node { follow: false });
                Ok(Some(name))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A symlink's target as stored (sysfs links are relative); `Ok(None)` if absent.
    pub fn link_target(&self, host_path: impl AsRef<Path>) -> io::Result<Option<PathBuf>> {
        let host_path = host_path.as_ref();
        match self.root.read_link(host_path) {
            Ok(t) => {
                self.note(host_path, Touch::Node { follow: false });
                Ok(Some(t))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sorted entry names of a directory. Each entry is recorded as a node (symlinks kept).
    pub fn list(&self, host_path: impl AsRef<Path>) -> io::Result<Vec<String>> {
        let host_path = host_path.as_ref();
        let names = self.root.read_dir_names(host_path)?;
        self.note(host_path, Touch::Node { follow: true });
        for n in &names {
            self.note(&host_path.join(n), Touch::Node { follow: false });
        }
        Ok(names)
    }

    /// Sorted entry names of a directory, not recorded: for scans (every `/proc/<pid>`) whose
    /// hits are then read with [`Probe::read`], so a capture keeps only those.
    pub fn peek_list(&self, host_path: impl AsRef<Path>) -> io::Result<Vec<String>> {
        self.root.read_dir_names(host_path.as_ref())
    }

    /// A file's text, not recorded (see [`Probe::peek_list`]).
    pub fn peek(&self, host_path: impl AsRef<Path>) -> io::Result<String> {
        let bytes = self.root.read(host_path.as_ref())?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Whether the path exists, following symlinks.
    pub fn exists(&self, host_path: impl AsRef<Path>) -> bool {
        let host_path = host_path.as_ref();
        let found = self.root.path(host_path).exists();
        if found {
            self.note(host_path, Touch::Node { follow: true });
        }
        found
    }

    /// Whether the path itself exists (a dangling symlink counts), not following it.
    pub fn lexists(&self, host_path: impl AsRef<Path>) -> bool {
        let host_path = host_path.as_ref();
        let found = self.root.path(host_path).symlink_metadata().is_ok();
        if found {
            self.note(host_path, Touch::Node { follow: false });
        }
        found
    }

    /// Whether the path is a directory (following symlinks).
    pub fn is_dir(&self, host_path: impl AsRef<Path>) -> bool {
        let host_path = host_path.as_ref();
        let dir = self.root.path(host_path).is_dir();
        if dir {
            self.note(host_path, Touch::Node { follow: true });
        }
        dir
    }
}
