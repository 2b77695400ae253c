//! `detect --capture`: archives exactly what detection touched (recorded by [`Probe`]) as a
//! `.tar.gz`, with every symlink on the way kept as a symlink, so extracting it and running
//! `detect --host-root` on the result gives the same facts.
//!
//! [`Probe`]: crate::probe::Probe

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Component, Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use hostio::HostRoot;

use crate::Error;
use crate::probe::Touch;

/// Linux's own limit on symlinks followed in one lookup (MAXSYMLINKS, fs/namei.c).
const MAX_SYMLINK_HOPS: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
}

pub(crate) fn write(
    root: &HostRoot,
    log: BTreeMap<PathBuf, Touch>,
    out: &Path,
) -> Result<usize, Error> {
    let entries = collect(root, log)?;
    let written = write_archive(&entries, out);
    if written.is_err() {
        // No half-written archive left behind to be mistaken for a capture.
        let _ = fs::remove_file(out);
    }
    written.map(|()| entries.len())
}

fn write_archive(entries: &BTreeMap<PathBuf, Entry>, out: &Path) -> Result<(), Error> {
    let werr = |source| Error::WriteCapture {
        path: out.to_path_buf(),
        source,
    };
    let file = File::create(out).map_err(werr)?;
    let mut tar = tar::Builder::new(GzEncoder::new(file, Compression::default()));
    for (path, entry) in entries {
        let rel = path.strip_prefix("/").unwrap_or(path);
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        match entry {
            Entry::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                tar.append_data(&mut h, rel, io::empty()).map_err(werr)?;
            }
            Entry::File(bytes) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(bytes.len() as u64);
                tar.append_data(&mut h, rel, bytes.as_slice())
                    .map_err(werr)?;
            }
            Entry::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                tar.append_link(&mut h, rel, relative_target(path, target))
                    .map_err(werr)?;
            }
        }
    }
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .and_then(|f| f.sync_all())
        .map_err(werr)
}

/// Turns the touched host paths into archive entries: symlinks met while resolving each path,
/// the resolved file or node itself, and every parent directory.
fn collect(
    root: &HostRoot,
    log: BTreeMap<PathBuf, Touch>,
) -> Result<BTreeMap<PathBuf, Entry>, Error> {
    let mut entries: BTreeMap<PathBuf, Entry> = BTreeMap::new();
    for (path, touch) in log {
        let follow = !matches!(touch, Touch::Node { follow: false });
        let rerr = |source| Error::ReadForCapture {
            path: path.clone(),
            source,
        };
        let (real, links) = resolve(root, &path, follow).map_err(rerr)?;
        for (link, target) in links {
            entries.insert(link, Entry::Symlink(target));
        }
        let entry = match touch {
            // The bytes detection saw, not a second read.
            Touch::Content(bytes) => Entry::File(bytes),
            // Reading failed on the host: a directory in its place fails to read for anyone,
            // root included, so the warning comes back (its error text may differ).
            Touch::Unreadable => Entry::Dir,
            Touch::Node { .. } => {
                let meta = fs::symlink_metadata(root.path(&real)).map_err(rerr)?;
                if meta.is_dir() {
                    Entry::Dir
                } else if meta.file_type().is_symlink() {
                    Entry::Symlink(fs::read_link(root.path(&real)).map_err(rerr)?)
                } else {
                    // Only existence mattered (`reset`, `/dev/kvm`): no content is copied, and
                    // device nodes become plain files so a non-root user can extract them.
                    Entry::File(Vec::new())
                }
            }
        };
        match (entries.get(&real), &entry) {
            // Content read elsewhere beats a bare existence record of the same file.
            (Some(Entry::File(old)), Entry::File(new)) if new.is_empty() && !old.is_empty() => {}
            _ => {
                entries.insert(real, entry);
            }
        }
    }
    let parents: Vec<PathBuf> = entries
        .keys()
        .flat_map(|p| p.ancestors().skip(1).map(Path::to_path_buf))
        .filter(|p| p != Path::new("/") && !p.as_os_str().is_empty())
        .collect();
    for p in parents {
        entries.entry(p).or_insert(Entry::Dir);
    }
    Ok(entries)
}

/// Resolves a host path under the root component by component, as the kernel would, returning
/// the symlink-free host path and the symlinks crossed (with their stored targets). A final
/// symlink is followed only when `follow`. Absolute targets are taken as host paths.
fn resolve(
    root: &HostRoot,
    host_path: &Path,
    follow: bool,
) -> io::Result<(PathBuf, Vec<(PathBuf, PathBuf)>)> {
    let mut parts: VecDeque<OsString> = normal_parts(host_path).collect();
    let mut cur = PathBuf::from("/");
    let mut links = Vec::new();
    let mut hops = 0;
    while let Some(part) = parts.pop_front() {
        let next = cur.join(&part);
        let meta = fs::symlink_metadata(root.path(&next))?;
        if meta.file_type().is_symlink() && (follow || !parts.is_empty()) {
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return Err(io::Error::other(format!(
                    "too many symlinks resolving {}",
                    host_path.display()
                )));
            }
            let target = fs::read_link(root.path(&next))?;
            let mut stack: Vec<OsString> = if target.is_absolute() {
                Vec::new()
            } else {
                normal_parts(&cur).collect()
            };
            for c in target.components() {
                match c {
                    Component::Normal(p) => stack.push(p.to_os_string()),
                    Component::ParentDir => {
                        stack.pop();
                    }
                    _ => {}
                }
            }
            links.push((next, target));
            stack.extend(parts);
            parts = stack.into();
            cur = PathBuf::from("/");
        } else {
            cur = next;
        }
    }
    Ok((cur, links))
}

fn normal_parts(p: &Path) -> impl Iterator<Item = OsString> + '_ {
    p.components().filter_map(|c| match c {
        Component::Normal(s) => Some(s.to_os_string()),
        _ => None,
    })
}

/// Absolute symlink targets would point into the extracting machine's own `/`; rewrite them
/// relative to the link so the extracted tree is self-contained. Relative ones are kept as is.
fn relative_target(link: &Path, target: &Path) -> PathBuf {
    if !target.is_absolute() {
        return target.to_path_buf();
    }
    let depth = link.parent().map_or(0, |p| normal_parts(p).count());
    let mut rel = PathBuf::new();
    for _ in 0..depth {
        rel.push("..");
    }
    rel.extend(normal_parts(target));
    rel
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolve_follows_relative_and_absolute_links() {
        let dir = tempfile::tempdir().unwrap();
        let r = HostRoot::new(dir.path());
        r.create_dir_all("/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0")
            .unwrap();
        r.create_dir_all("/sys/bus/pci/devices").unwrap();
        symlink(
            "../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0",
            r.path("/sys/bus/pci/devices/0000:01:00.0"),
        )
        .unwrap();
        std::fs::write(
            r.path("/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/vendor"),
            "0x10de\n",
        )
        .unwrap();
        r.create_dir_all("/etc").unwrap();
        symlink("/sys/bus", r.path("/etc/bus")).unwrap();

        let (real, links) = resolve(
            &r,
            Path::new("/etc/bus/pci/devices/0000:01:00.0/vendor"),
            true,
        )
        .unwrap();
        assert_eq!(
            real,
            Path::new("/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/vendor")
        );
        assert_eq!(links.len(), 2);
        let (real, links) =
            resolve(&r, Path::new("/sys/bus/pci/devices/0000:01:00.0"), false).unwrap();
        assert_eq!(real, Path::new("/sys/bus/pci/devices/0000:01:00.0"));
        assert!(links.is_empty());
    }

    #[test]
    fn absolute_targets_become_relative() {
        assert_eq!(
            relative_target(
                Path::new("/etc/os-release"),
                Path::new("/usr/lib/os-release")
            ),
            Path::new("../usr/lib/os-release")
        );
        assert_eq!(
            relative_target(Path::new("/proc/net"), Path::new("self/net")),
            Path::new("self/net")
        );
    }
}
