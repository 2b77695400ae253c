//! Config changes for virtiofs shares to an existing domain's XML, as `virsh edit` would make
//! them: add a `<filesystem>` (and the shared `<memoryBacking>` virtiofs needs) or remove the
//! one with a given tag; record or drop the tag's read-only mark in vmctl's metadata.
//! Everything else is kept byte for byte, so redefining changes nothing else.
//!
//! Config only, never live: on libvirt 9.0 + qemu 7.2 a live attach of a virtiofs
//! `<filesystem>` (`virsh attach-device --live`) crashed libvirtd (segfault in libvirt.so,
//! measured in the lab), and virtiofs needs shared guest RAM, which only a restart gives a
//! domain that did not have it.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::domain::render::{filesystem_xml, readonly_share_xml, shared_memory_backing_xml};
use crate::domain::{Filesystem, VMCTL_NS};
use crate::error::{Error, Result};
use crate::splice::{line_start, parse_err};

fn attr(e: &BytesStart, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name.as_bytes())
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

/// `after`, plus the newline that ends its line.
fn line_end(xml: &str, after: usize) -> usize {
    if xml.as_bytes().get(after) == Some(&b'\n') {
        after + 1
    } else {
        after
    }
}

/// Where things are in a domain's XML.
#[derive(Default)]
struct Layout {
    /// Start of the line of `</devices>`.
    devices_end: Option<usize>,
    /// Start of the line of `<devices>` (a new `<memoryBacking>` goes before it).
    devices_start: Option<usize>,
    /// `<memoryBacking>` is there: (has `<access mode='shared'/>`, start of its closing tag's
    /// line, or `None` when it is an empty element `<memoryBacking/>` spanning (start, end)).
    memory_backing: Option<(bool, Option<usize>, (usize, usize))>,
    /// The `<filesystem>` elements: (tag, line start, line end).
    filesystems: Vec<(String, usize, usize)>,
    /// vmctl's metadata element: (prefix, start of its closing tag's line).
    vmctl_md: Option<(String, usize)>,
    /// `<PREFIX:share-ro>` elements: (tag, line start, line end).
    readonly: Vec<(String, usize, usize)>,
}

fn layout(vm: &str, xml: &str) -> Result<Layout> {
    let mut reader = Reader::from_str(xml);
    let mut l = Layout::default();
    let mut stack: Vec<String> = Vec::new();
    // (start, tag) of the filesystem being read.
    let mut fs: Option<(usize, String)> = None;
    let mut ro: Option<(usize, String)> = None;
    let mut mb_shared = false;
    let mut mb_start = 0;
    loop {
        let before = reader.buffer_position() as usize;
        let ev = reader.read_event().map_err(parse_err(vm))?;
        let after = reader.buffer_position() as usize;
        let parent = stack.last().cloned().unwrap_or_default();
        let md_prefix = l.vmctl_md.as_ref().map(|(p, _)| p.clone());
        match &ev {
            Event::Start(e) | Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                let is_empty = matches!(ev, Event::Empty(_));
                match (parent.as_str(), name.as_str()) {
                    ("domain", "devices") if !is_empty => {
                        l.devices_start = Some(line_start(xml, before))
                    }
                    ("domain", "memoryBacking") => {
                        mb_shared = false;
                        mb_start = before;
                        if is_empty {
                            l.memory_backing =
                                Some((false, None, (line_start(xml, before), after)));
                        }
                    }
                    ("memoryBacking", "access") => {
                        mb_shared = attr(e, "mode").as_deref() == Some("shared");
                    }
                    ("devices", "filesystem") if !is_empty => {
                        fs = Some((before, String::new()));
                    }
                    ("filesystem", "target") => {
                        if let Some((_, tag)) = fs.as_mut() {
                            *tag = attr(e, "dir").unwrap_or_default();
                        }
                    }
                    ("metadata", n) => {
                        if let Some((prefix, "vm")) = n.split_once(':')
                            && !is_empty
                            && attr(e, &format!("xmlns:{prefix}")).as_deref() == Some(VMCTL_NS)
                        {
                            l.vmctl_md = Some((prefix.to_string(), 0));
                        }
                    }
                    (p, n)
                        if md_prefix.as_ref().is_some_and(|m| {
                            p == format!("{m}:vm") && n == format!("{m}:share-ro")
                        }) && !is_empty =>
                    {
                        ro = Some((before, String::new()));
                    }
                    _ => {}
                }
                if !is_empty {
                    stack.push(name);
                }
            }
            Event::Text(t) => {
                if let Some((_, tag)) = ro.as_mut() {
                    tag.push_str(&t.decode().unwrap_or_default());
                }
            }
            Event::End(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                stack.pop();
                let parent = stack.last().cloned().unwrap_or_default();
                match (parent.as_str(), name.as_str()) {
                    ("domain", "devices") => l.devices_end = Some(line_start(xml, before)),
                    ("domain", "memoryBacking") => {
                        l.memory_backing = Some((
                            mb_shared,
                            Some(line_start(xml, before)),
                            (line_start(xml, mb_start), after),
                        ));
                    }
                    ("devices", "filesystem") => {
                        if let Some((start, tag)) = fs.take() {
                            l.filesystems
                                .push((tag, line_start(xml, start), line_end(xml, after)));
                        }
                    }
                    ("metadata", n)
                        if l.vmctl_md
                            .as_ref()
                            .is_some_and(|(p, _)| n == format!("{p}:vm")) =>
                    {
                        if let Some((_, at)) = l.vmctl_md.as_mut() {
                            *at = line_start(xml, before);
                        }
                    }
                    _ => {
                        if let Some((start, tag)) = ro.take() {
                            l.readonly.push((
                                tag.trim().to_string(),
                                line_start(xml, start),
                                line_end(xml, after),
                            ));
                        }
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(l)
}

fn indent(block: &str, by: &str) -> String {
    block.lines().map(|line| format!("{by}{line}\n")).collect()
}

/// The tags of the domain's `<filesystem>` elements.
pub fn filesystem_tags(vm: &str, xml: &str) -> Result<Vec<String>> {
    Ok(layout(vm, xml)?
        .filesystems
        .into_iter()
        .map(|(t, _, _)| t)
        .collect())
}

/// Adds `fs` before `</devices>`, shared memory if the domain has none (a `<memoryBacking>`
/// before `<devices>`, or `<access mode='shared'/>` into an existing one, e.g. one with
/// hugepages), and, for a read-only share, the tag's mark in vmctl's metadata (when the
/// domain has it). The caller checked that the tag is new.
pub fn add_filesystem(vm: &str, xml: &str, fs: &Filesystem, readonly: bool) -> Result<String> {
    let l = layout(vm, xml)?;
    let devices_end = l
        .devices_end
        .ok_or_else(|| Error::NoDevices { domain: vm.into() })?;
    // (start, end, text): the bytes start..end are replaced by text (an insertion when equal).
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    match l.memory_backing {
        Some((true, _, _)) => {}
        Some((false, Some(close), _)) => {
            edits.push((close, close, "    <access mode=\"shared\"/>\n".to_string()));
        }
        // `<memoryBacking/>`: replaced by a full one.
        Some((false, None, (start, end))) => {
            edits.push((
                start,
                line_end(xml, end),
                indent(&shared_memory_backing_xml()?, "  "),
            ));
        }
        None => {
            let at = l.devices_start.unwrap_or(devices_end);
            edits.push((at, at, indent(&shared_memory_backing_xml()?, "  ")));
        }
    }
    if readonly && let Some((prefix, close)) = &l.vmctl_md {
        let text = indent(&readonly_share_xml(prefix, &fs.tag)?, "      ");
        edits.push((*close, *close, text));
    }
    edits.push((
        devices_end,
        devices_end,
        indent(&filesystem_xml(fs)?, "    "),
    ));
    Ok(apply(xml, edits))
}

/// Applies non-overlapping edits (start, end, replacement).
fn apply(xml: &str, mut edits: Vec<(usize, usize, String)>) -> String {
    edits.sort_by_key(|(start, end, _)| (*start, *end));
    let mut out = String::with_capacity(xml.len() + 512);
    let mut pos = 0;
    for (start, end, text) in edits {
        out.push_str(&xml[pos..start.max(pos)]);
        out.push_str(&text);
        pos = end.max(start).max(pos);
    }
    out.push_str(&xml[pos..]);
    out
}

/// Removes the `<filesystem>` with target `tag` and the tag's read-only mark. `Ok(None)`: no
/// such filesystem. Shared memory stays (harmless, and another share may need it).
pub fn remove_filesystem(vm: &str, xml: &str, tag: &str) -> Result<Option<String>> {
    let l = layout(vm, xml)?;
    let mut cuts: Vec<(usize, usize)> = l
        .filesystems
        .iter()
        .filter(|(t, _, _)| t == tag)
        .map(|(_, s, e)| (*s, *e))
        .collect();
    if cuts.is_empty() {
        return Ok(None);
    }
    cuts.extend(
        l.readonly
            .iter()
            .filter(|(t, _, _)| t == tag)
            .map(|(_, s, e)| (*s, *e)),
    );
    let edits = cuts
        .into_iter()
        .map(|(s, e)| (s, e, String::new()))
        .collect();
    Ok(Some(apply(xml, edits)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse::parse_domain;
    use crate::domain::render::tests::{assert_valid_domain_xml, ubuntu_spec};
    use crate::domain::render::to_xml;

    fn share(tag: &str) -> Filesystem {
        Filesystem {
            source_dir: "/srv/models".into(),
            tag: tag.into(),
        }
    }

    #[test]
    fn a_spec_with_a_share_renders_shared_memory_and_a_virtiofs_filesystem() {
        let mut spec = ubuntu_spec();
        spec.add_filesystem(share("models"));
        if let Some(md) = spec.metadata.as_mut() {
            md.readonly_shares = vec!["models".into()];
        }
        let xml = to_xml(&spec).unwrap();
        assert_valid_domain_xml(&xml);
        assert!(xml.contains(
            "<memoryBacking>\n    <source type=\"memfd\"/>\n    <access mode=\"shared\"/>\n  </memoryBacking>"
        ));
        assert!(xml.contains("<filesystem type=\"mount\" accessmode=\"passthrough\">\n      <driver type=\"virtiofs\"/>\n      <source dir=\"/srv/models\"/>\n      <target dir=\"models\"/>\n    </filesystem>"));
        assert!(!xml.contains("readonly/>\n    </filesystem"));
        let f = parse_domain(&xml).unwrap();
        assert!(f.shared_memory);
        assert_eq!(f.filesystems.len(), 1);
        assert_eq!(f.filesystems[0].tag, "models");
        assert_eq!(f.filesystems[0].driver.as_deref(), Some("virtiofs"));
        assert_eq!(
            f.metadata.unwrap().readonly_shares,
            vec!["models".to_string()]
        );
        // Without shares, no memoryBacking at all.
        assert!(!to_xml(&ubuntu_spec()).unwrap().contains("memoryBacking"));
    }

    #[test]
    fn add_then_remove_round_trips_byte_for_byte_except_memory() {
        let xml = to_xml(&ubuntu_spec()).unwrap();
        let added = add_filesystem("e2e1", &xml, &share("models"), true).unwrap();
        assert_valid_domain_xml(&added);
        let f = parse_domain(&added).unwrap();
        assert!(f.shared_memory);
        assert_eq!(filesystem_tags("e2e1", &added).unwrap(), ["models"]);
        assert_eq!(f.metadata.unwrap().readonly_shares, ["models"]);
        // A second share: memory already shared, not added twice.
        let two = add_filesystem("e2e1", &added, &share("data"), false).unwrap();
        assert_valid_domain_xml(&two);
        assert_eq!(two.matches("<memoryBacking>").count(), 1);
        assert_eq!(filesystem_tags("e2e1", &two).unwrap(), ["models", "data"]);
        let one = remove_filesystem("e2e1", &two, "models").unwrap().unwrap();
        assert_valid_domain_xml(&one);
        let f = parse_domain(&one).unwrap();
        assert_eq!(filesystem_tags("e2e1", &one).unwrap(), ["data"]);
        assert!(f.metadata.unwrap().readonly_shares.is_empty());
        assert!(remove_filesystem("e2e1", &one, "nope").unwrap().is_none());
        let none = remove_filesystem("e2e1", &one, "data").unwrap().unwrap();
        // Only the memory backing differs from the original.
        let mb = shared_memory_backing_xml().unwrap();
        assert_eq!(none.replace(&indent(&mb, "  "), ""), xml);
    }

    #[test]
    fn shared_access_goes_into_an_existing_memory_backing() {
        let xml = "<domain type='kvm'>\n  <name>h</name>\n  <memory unit='MiB'>1024</memory>\n  <memoryBacking>\n    <hugepages/>\n  </memoryBacking>\n  <os><type arch='x86_64' machine='q35'>hvm</type></os>\n  <devices>\n  </devices>\n</domain>\n";
        let out = add_filesystem("h", xml, &share("m"), false).unwrap();
        assert_valid_domain_xml(&out);
        assert!(out.contains(
            "<memoryBacking>\n    <hugepages/>\n    <access mode=\"shared\"/>\n  </memoryBacking>"
        ));
        assert!(parse_domain(&out).unwrap().shared_memory);
        // An empty element is replaced.
        let empty = xml.replace(
            "<memoryBacking>\n    <hugepages/>\n  </memoryBacking>",
            "<memoryBacking/>",
        );
        let out = add_filesystem("h", &empty, &share("m"), false).unwrap();
        assert_valid_domain_xml(&out);
        assert_eq!(out.matches("memoryBacking").count(), 2, "{out}");
        assert!(parse_domain(&out).unwrap().shared_memory);
    }

    #[cfg(feature = "libvirt")]
    #[test]
    fn a_shared_domain_defines_on_the_test_driver() {
        use crate::{Hypervisor, Libvirt};
        let hv = Libvirt::open("test:///default").unwrap();
        let mut spec = ubuntu_spec();
        spec.name = "share-render".into();
        let dir = tempfile::tempdir().unwrap();
        spec.add_filesystem(Filesystem {
            source_dir: dir.path().to_path_buf(),
            tag: "models".into(),
        });
        let xml = to_xml(&spec).unwrap();
        hv.define(&spec.name, &xml).unwrap();
        let back = parse_domain(&hv.inactive_xml(&spec.name).unwrap()).unwrap();
        assert_eq!(back.filesystems.len(), 1);
        assert!(back.shared_memory);
        hv.undefine(&spec.name, false).unwrap();
    }
}
