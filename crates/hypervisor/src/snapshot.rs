//! Domain snapshots as vmctl makes them: the typed request rendered to libvirt's
//! `<domainsnapshot>` XML (format: <https://libvirt.org/formatsnapshot.html>), the reading back of
//! any snapshot's XML into a [`SnapshotInfo`], the one domain XML edit a revert by hand needs
//! ([`set_disk_source`]), and which libvirt versions revert external snapshots themselves.
//!
//! What libvirt's qemu driver can do with snapshots, by release (libvirt's NEWS.rst, and
//! src/qemu/qemu_snapshot.c):
//! - 9.0.0 (2023-01-16, Debian 12): "QEMU: implement external snapshot deletion"
//!   (`virDomainSnapshotDelete` of an external snapshot, running or shut off; no CHILDREN flags).
//! - 9.9.0 (2023-11-01): "QEMU: implement reverting external snapshots" (Pavel Hrdina's
//!   "qemu_snapshot: allow snapshot revert for external snapshots", written in August 2023 but
//!   first released in 9.9.0, not 9.7.0; hosts that have it also list `<externalSnapshot/>` in
//!   the guest features of `virsh capabilities`). Before it, libvirt answers "revert to external
//!   snapshot not supported yet" (seen on the lab's 9.0). Ubuntu 24.04's 10.0 has it.
//! - Internal snapshots and UEFI: "internal snapshots of a VM with pflash based firmware are not
//!   supported" is older than 9.x (libvirt 6.0 and 8.0 already refuse a running UEFI VM); 9.2.0's
//!   persistent firmware selection made it refuse shut-off VMs too, 9.3.0 ("Fix inactive internal
//!   snapshots of VM with UEFI firmware") allows those again, and only 10.9.0/10.10.0 snapshot
//!   and revert NVRAM internally. So vmctl makes only external snapshots, which work for BIOS and
//!   UEFI VMs alike, and reverts them by hand where libvirt is older than 9.9.0.

use std::io;
use std::path::{Path, PathBuf};

use quick_xml::Reader;
use quick_xml::Writer;
use quick_xml::events::{BytesStart, BytesText, Event};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::splice::line_start;

/// The first libvirt (`virConnectGetLibVersion`, major * 1,000,000 + minor * 1,000 + micro)
/// whose qemu driver reverts external snapshots: 9.9.0 (NEWS.rst, see the module comment).
pub const EXTERNAL_REVERT_SINCE: u32 = 9_009_000;

/// `9009000` as `9.9.0`.
pub fn version_string(v: u32) -> String {
    format!("{}.{}.{}", v / 1_000_000, (v / 1_000) % 1_000, v % 1_000)
}

/// Whether libvirt `lib_version` reverts external snapshots itself.
pub fn reverts_external(lib_version: u32) -> bool {
    lib_version >= EXTERNAL_REVERT_SINCE
}

/// One disk of a snapshot request: an external overlay at `overlay`, or none (`snapshot='no'`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskRequest {
    /// `vda`.
    pub target: String,
    pub overlay: Option<PathBuf>,
}

/// An external snapshot: overlays for the disks that have one, and the memory state in
/// `memory` when set (disk-only otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotRequest {
    pub name: String,
    pub description: Option<String>,
    pub memory: Option<PathBuf>,
    pub disks: Vec<DiskRequest>,
}

/// What `virDomainSnapshotCreateXML` is asked besides the XML.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreateFlags {
    /// `VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY`.
    pub disk_only: bool,
    /// `VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE`: freeze the guest's filesystems through its agent.
    pub quiesce: bool,
    /// `VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC`: all disks or none.
    pub atomic: bool,
}

type W = Writer<Vec<u8>>;

fn empty(w: &mut W, name: &str, attrs: &[(&str, &str)]) -> io::Result<()> {
    w.create_element(name)
        .with_attributes(attrs.iter().copied())
        .write_empty()?;
    Ok(())
}

/// Renders the `<domainsnapshot>` XML of a request.
pub fn to_xml(r: &SnapshotRequest) -> Result<String> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_snapshot(&mut w, r).map_err(|source| Error::RenderDomainXml {
        domain: format!("snapshot {}", r.name),
        source,
    })?;
    let mut out = String::from_utf8(w.into_inner()).unwrap_or_default();
    out.push('\n');
    Ok(out)
}

fn write_snapshot(w: &mut W, r: &SnapshotRequest) -> io::Result<()> {
    w.create_element("domainsnapshot")
        .write_inner_content(|w| {
            w.create_element("name")
                .write_text_content(BytesText::new(&r.name))?;
            if let Some(d) = &r.description {
                w.create_element("description")
                    .write_text_content(BytesText::new(d))?;
            }
            match &r.memory {
                Some(file) => empty(
                    w,
                    "memory",
                    &[("snapshot", "external"), ("file", &file.to_string_lossy())],
                )?,
                None => empty(w, "memory", &[("snapshot", "no")])?,
            }
            w.create_element("disks").write_inner_content(|w| {
                for d in &r.disks {
                    match &d.overlay {
                        Some(file) => {
                            w.create_element("disk")
                                .with_attributes([
                                    ("name", d.target.as_str()),
                                    ("snapshot", "external"),
                                ])
                                .write_inner_content(|w| {
                                    empty(w, "driver", &[("type", "qcow2")])?;
                                    empty(w, "source", &[("file", &file.to_string_lossy())])
                                })?;
                        }
                        None => empty(w, "disk", &[("name", &d.target), ("snapshot", "no")])?,
                    }
                }
                Ok(())
            })?;
            Ok(())
        })?;
    Ok(())
}

/// One disk of an existing snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotDisk {
    pub target: String,
    /// `external`, `internal`, `no`, `manual`.
    pub kind: String,
    /// The overlay made for it (external only): the disk's top from the snapshot on.
    pub file: Option<PathBuf>,
    /// The file that was the disk's top when the snapshot was taken, from the domain XML the
    /// snapshot keeps: what the snapshot's state is (the overlay's backing file).
    pub backing: Option<PathBuf>,
}

/// An existing snapshot, as `virsh snapshot-list` and `snapshot-dumpxml` show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    pub name: String,
    pub description: Option<String>,
    /// Seconds since the epoch.
    pub created: i64,
    /// The domain's state when it was taken (`running`, `shutoff`, `disk-snapshot`…).
    pub state: String,
    pub parent: Option<String>,
    pub current: bool,
    /// The memory state file (external memory snapshots).
    pub memory: Option<PathBuf>,
    pub disks: Vec<SnapshotDisk>,
    /// The snapshot's XML as libvirt keeps it: what a redefine gives back.
    #[serde(skip)]
    pub xml: String,
}

impl SnapshotInfo {
    /// Every disk is external (or not snapshotted) and there is at least one overlay.
    pub fn is_external(&self) -> bool {
        self.disks.iter().any(|d| d.kind == "external")
            && self
                .disks
                .iter()
                .all(|d| d.kind == "external" || d.kind == "no")
    }

    /// The files this snapshot needs kept: the disks' tops when it was taken (its state), and
    /// its memory file.
    pub fn needs(&self) -> impl Iterator<Item = &Path> {
        self.disks
            .iter()
            .filter_map(|d| d.backing.as_deref())
            .chain(self.memory.as_deref())
    }
}

fn attr(e: &BytesStart, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name.as_bytes())
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

/// Reads a snapshot's XML (`virDomainSnapshotGetXMLDesc`); `current` comes from libvirt's
/// separate answer (`virDomainSnapshotIsCurrent`), since the XML does not say it.
pub fn parse_snapshot(xml: &str, current: bool) -> Result<SnapshotInfo> {
    parse_inner(xml, current).map_err(|source| Error::ParseDomainXml {
        domain: "a snapshot".into(),
        source,
    })
}

fn parse_inner(xml: &str, current: bool) -> Result<SnapshotInfo, quick_xml::Error> {
    let mut reader = Reader::from_str(xml);
    let mut s = SnapshotInfo {
        current,
        xml: xml.to_string(),
        ..Default::default()
    };
    let mut stack: Vec<String> = Vec::new();
    let mut text = String::new();
    // The kept domain's disks: (target, source file).
    let mut domain_disks: Vec<(String, Option<PathBuf>)> = Vec::new();
    loop {
        let ev = reader.read_event()?;
        let (start, is_empty) = match &ev {
            Event::Start(e) => (Some(e.clone()), false),
            Event::Empty(e) => (Some(e.clone()), true),
            _ => (None, false),
        };
        if let Some(e) = start {
            let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
            let path: Vec<&str> = stack.iter().map(String::as_str).collect();
            text.clear();
            match (path.as_slice(), name.as_str()) {
                (["domainsnapshot"], "memory")
                    if attr(&e, "snapshot").as_deref() == Some("external") =>
                {
                    s.memory = attr(&e, "file").map(PathBuf::from);
                }
                (["domainsnapshot", "disks"], "disk") => s.disks.push(SnapshotDisk {
                    target: attr(&e, "name").unwrap_or_default(),
                    kind: attr(&e, "snapshot").unwrap_or_default(),
                    ..Default::default()
                }),
                (["domainsnapshot", "disks", "disk"], "source") => {
                    if let Some(d) = s.disks.last_mut() {
                        d.file = attr(&e, "file").map(PathBuf::from);
                    }
                }
                (["domainsnapshot", "domain", "devices"], "disk") => {
                    domain_disks.push((String::new(), None))
                }
                (["domainsnapshot", "domain", "devices", "disk"], "source") => {
                    if let Some(d) = domain_disks.last_mut() {
                        d.1 = attr(&e, "file").map(PathBuf::from);
                    }
                }
                (["domainsnapshot", "domain", "devices", "disk"], "target") => {
                    if let Some(d) = domain_disks.last_mut() {
                        d.0 = attr(&e, "dev").unwrap_or_default();
                    }
                }
                _ => {}
            }
            if !is_empty {
                stack.push(name);
            }
            continue;
        }
        match ev {
            Event::Text(t) => text.push_str(&t.decode().unwrap_or_default()),
            Event::GeneralRef(r) => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    text.push(c);
                } else {
                    text.push_str(match r.decode().unwrap_or_default().as_ref() {
                        "amp" => "&",
                        "lt" => "<",
                        "gt" => ">",
                        "quot" => "\"",
                        "apos" => "'",
                        _ => "",
                    });
                }
            }
            Event::End(_) => {
                let name = stack.pop().unwrap_or_default();
                let value = std::mem::take(&mut text);
                let path: Vec<&str> = stack.iter().map(String::as_str).collect();
                match (path.as_slice(), name.as_str()) {
                    (["domainsnapshot"], "name") => s.name = value.trim().to_string(),
                    (["domainsnapshot"], "description") => s.description = Some(value),
                    (["domainsnapshot"], "state") => s.state = value.trim().to_string(),
                    (["domainsnapshot"], "creationTime") => {
                        s.created = value.trim().parse().unwrap_or(0)
                    }
                    (["domainsnapshot", "parent"], "name") => {
                        s.parent = Some(value.trim().to_string())
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    for d in &mut s.disks {
        d.backing = domain_disks
            .iter()
            .find(|(t, _)| *t == d.target)
            .and_then(|(_, p)| p.clone());
    }
    Ok(s)
}

/// The domain XML with the disk `target`'s source file set to `file`, and its `<backingStore>`
/// dropped: libvirt reads the new file's chain itself, while a stale element naming the old
/// chain would be kept (and may name the new file as its own backing). Everything else is kept
/// byte for byte.
pub fn set_disk_source(vm: &str, xml: &str, target: &str, file: &Path) -> Result<String> {
    let parse_err = |source| Error::ParseDomainXml {
        domain: vm.to_string(),
        source,
    };
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<Vec<u8>> = Vec::new();
    // Of the disk being read: its source tag (span, tag, empty?), backingStore span, target.
    let mut source: Option<(usize, usize, BytesStart<'static>, bool)> = None;
    let mut backing: Option<(usize, usize)> = None;
    let mut is_target = false;
    // The target disk's new source tag (its span, its text) and its backingStore's span.
    type NewTag = (usize, usize, String);
    type Span = (usize, usize);
    let mut edit: Option<(Option<NewTag>, Option<Span>)> = None;
    loop {
        let before = reader.buffer_position() as usize;
        let ev = reader.read_event().map_err(parse_err)?;
        let after = reader.buffer_position() as usize;
        let in_disk = stack.len() >= 2
            && stack[stack.len() - 1] == b"disk"
            && stack[stack.len() - 2] == b"devices";
        let is_empty = matches!(ev, Event::Empty(_));
        match ev {
            Event::Start(e) | Event::Empty(e) if in_disk => match e.name().as_ref() {
                b"source" => {
                    source = Some((before, after, e.into_owned(), is_empty));
                    if !is_empty {
                        stack.push(b"source".to_vec());
                    }
                }
                b"backingStore" if is_empty => backing = Some((before, after)),
                b"backingStore" => {
                    // Its children are the old chain's, not the disk's: skip to its end.
                    reader.read_to_end(e.name()).map_err(parse_err)?;
                    backing = Some((before, reader.buffer_position() as usize));
                }
                name => {
                    if name == b"target" {
                        is_target = attr(&e, "dev").as_deref() == Some(target);
                    }
                    if !is_empty {
                        stack.push(name.to_vec());
                    }
                }
            },
            Event::Start(e) => stack.push(e.name().as_ref().to_vec()),
            Event::End(_) => {
                let name = stack.pop().unwrap_or_default();
                if name == b"disk" && stack.last().map(Vec::as_slice) == Some(b"devices") {
                    if is_target && edit.is_none() {
                        let src = source.take().map(|(from, to, tag, empty_tag)| {
                            let mut new = BytesStart::new("source");
                            for a in tag.attributes().flatten() {
                                if a.key.as_ref() != b"file" {
                                    new.push_attribute(a);
                                }
                            }
                            let file = file.to_string_lossy();
                            new.push_attribute(("file", file.as_ref()));
                            let mut w = Writer::new(Vec::new());
                            let _ = if empty_tag {
                                w.write_event(Event::Empty(new))
                            } else {
                                w.write_event(Event::Start(new))
                            };
                            (
                                from,
                                to,
                                String::from_utf8(w.into_inner()).unwrap_or_default(),
                            )
                        });
                        edit = Some((src, backing.take()));
                    }
                    source = None;
                    backing = None;
                    is_target = false;
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let Some((Some((from, to, tag)), backing)) = edit else {
        return Err(Error::NoDisk {
            domain: vm.to_string(),
            target: target.to_string(),
        });
    };
    let mut out = String::with_capacity(xml.len());
    out.push_str(&xml[..from]);
    out.push_str(&tag);
    match backing {
        Some((bfrom, bto)) if bfrom >= to => {
            let end = if xml.as_bytes().get(bto) == Some(&b'\n') {
                bto + 1
            } else {
                bto
            };
            // Drop the element and its own line.
            let line = line_start(xml, bfrom);
            out.push_str(&xml[to..line]);
            out.push_str(&xml[end..]);
        }
        _ => out.push_str(&xml[to..]),
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
