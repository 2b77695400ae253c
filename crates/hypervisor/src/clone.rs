//! The definition of a clone, made from the source domain's persistent XML: a new name, no
//! UUID (libvirt makes one), a new MAC per NIC, every file renamed through a map (disks, the
//! console log), and what must not be shared left out: the NVRAM file (libvirt makes a fresh
//! one from the firmware's template), PCI hostdevs (a GPU belongs to one VM), vCPU pins and
//! NUMA memory placement (two pinned VMs would share CPUs), and vmctl's metadata (the caller
//! sets the clone's own). Everything else is copied event by event through quick-xml.

use std::collections::BTreeMap;
use std::path::PathBuf;

use quick_xml::events::{BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer};

use crate::error::{Error, Result};

/// What changes between the source and the clone.
#[derive(Debug, Clone, Default)]
pub struct CloneEdits {
    pub name: String,
    /// The clone's MACs, one per `<interface>` in order; NICs past the end keep none (libvirt
    /// generates one).
    pub macs: Vec<String>,
    /// Source file → the clone's file, for disks and logs.
    pub files: BTreeMap<PathBuf, PathBuf>,
}

/// What the rewrite left out or could not map, for the caller to refuse or report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloneReport {
    /// Writable disk files with no entry in [`CloneEdits::files`]: the clone would share them.
    pub unmapped_disks: Vec<PathBuf>,
    /// PCI hostdevs left out.
    pub hostdevs_dropped: usize,
    /// `<cputune>`/`<numatune>` left out.
    pub pinning_dropped: bool,
}

/// Elements dropped whole, by (parent, name).
fn dropped(parent: &str, name: &str) -> bool {
    matches!(
        (parent, name),
        ("domain", "uuid")
            | ("domain", "metadata")
            | ("domain", "cputune")
            | ("domain", "numatune")
            | ("os", "nvram")
            | ("devices", "hostdev")
            | ("disk", "backingStore")
    )
}

fn set_attr(e: &BytesStart, key: &str, value: &str) -> BytesStart<'static> {
    let mut out = BytesStart::new(String::from_utf8_lossy(e.name().as_ref()).into_owned());
    for a in e.attributes().flatten() {
        if a.key.as_ref() == key.as_bytes() {
            out.push_attribute((key, value));
        } else {
            out.push_attribute(a);
        }
    }
    out
}

fn attr(e: &BytesStart, key: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == key.as_bytes())
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

/// The clone's domain XML from the source's persistent XML.
pub fn clone_xml(source: &str, xml: &str, edits: &CloneEdits) -> Result<(String, CloneReport)> {
    rewrite(source, xml, edits, true)
}

/// The same domain with some files renamed (`files`), everything else as it was: a linked
/// clone moves its source onto a new overlay this way.
pub fn retarget_files(name: &str, xml: &str, files: &BTreeMap<PathBuf, PathBuf>) -> Result<String> {
    let edits = CloneEdits {
        name: name.into(),
        macs: Vec::new(),
        files: files.clone(),
    };
    Ok(rewrite(name, xml, &edits, false)?.0)
}

fn rewrite(
    source: &str,
    xml: &str,
    edits: &CloneEdits,
    clone: bool,
) -> Result<(String, CloneReport)> {
    let parse = |e: quick_xml::Error| Error::ParseDomainXml {
        domain: source.to_string(),
        source: e,
    };
    let write = |e: std::io::Error| Error::RenderDomainXml {
        domain: edits.name.clone(),
        source: e,
    };
    let mut reader = Reader::from_str(xml);
    let mut w = Writer::new(Vec::new());
    let mut stack: Vec<String> = Vec::new();
    let mut skip = 0usize;
    let mut report = CloneReport::default();
    let mut nic = 0usize;
    // Per disk: whether it is read-only, and its unmapped file (known only at `</disk>`).
    let mut disk_readonly = false;
    let mut disk_unmapped: Option<PathBuf> = None;
    loop {
        let ev = reader.read_event().map_err(parse)?;
        if let Event::Eof = ev {
            break;
        }
        let parent = stack.last().cloned().unwrap_or_default();
        if skip > 0 {
            match &ev {
                Event::Start(_) => skip += 1,
                Event::End(_) => skip -= 1,
                _ => {}
            }
            if let Event::End(_) = ev {
                stack.pop();
            } else if let Event::Start(e) = &ev {
                stack.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
            }
            continue;
        }
        let out: Option<Event> = match &ev {
            Event::Start(e) | Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                let is_start = matches!(ev, Event::Start(_));
                if clone && dropped(&parent, &name) {
                    match name.as_str() {
                        "hostdev" if attr(e, "type").as_deref() == Some("pci") => {
                            report.hostdevs_dropped += 1
                        }
                        "cputune" | "numatune" => report.pinning_dropped = true,
                        _ => {}
                    }
                    if is_start {
                        skip = 1;
                        stack.push(name);
                    }
                    continue;
                }
                if name == "disk" && parent == "devices" {
                    disk_readonly = false;
                    disk_unmapped = None;
                }
                let edited = match (parent.as_str(), name.as_str()) {
                    ("interface", "mac") => match edits.macs.get(nic) {
                        Some(mac) => {
                            nic += 1;
                            Some(set_attr(e, "address", mac))
                        }
                        None => None,
                    },
                    ("disk", "source") | ("serial", "log") | ("console", "log") => {
                        match attr(e, "file").map(PathBuf::from) {
                            Some(p) => match edits.files.get(&p) {
                                Some(new) => Some(set_attr(e, "file", &new.to_string_lossy())),
                                None => {
                                    if parent == "disk" {
                                        disk_unmapped = Some(p);
                                    }
                                    None
                                }
                            },
                            None => None,
                        }
                    }
                    ("disk", "readonly") => {
                        disk_readonly = true;
                        None
                    }
                    _ => None,
                };
                if is_start {
                    stack.push(name);
                }
                match edited {
                    Some(s) if is_start => Some(Event::Start(s)),
                    Some(s) => Some(Event::Empty(s)),
                    None => Some(ev.clone()),
                }
            }
            Event::End(_) => {
                let name = stack.pop().unwrap_or_default();
                if name == "disk"
                    && !disk_readonly
                    && let Some(p) = disk_unmapped.take()
                {
                    report.unmapped_disks.push(p);
                }
                Some(ev.clone())
            }
            Event::Text(_) if clone && parent == "name" && stack.len() == 2 => {
                Some(Event::Text(BytesText::new(&edits.name).into_owned()))
            }
            _ => Some(ev.clone()),
        };
        if let Some(e) = out {
            w.write_event(e).map_err(write)?;
        }
    }
    Ok((
        String::from_utf8(w.into_inner()).unwrap_or_default(),
        report,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse::parse_domain;

    const SRC: &str = r#"<domain type='kvm'>
  <name>src</name>
  <uuid>6c9e0b54-1111-2222-3333-444455556666</uuid>
  <metadata>
    <vmctl:vm xmlns:vmctl="https://github.com/gpu-vm-bootstrap/gpu-vm-bootstrap/vmctl/1">
      <vmctl:os>ubuntu</vmctl:os>
    </vmctl:vm>
  </metadata>
  <memory unit='KiB'>2097152</memory>
  <vcpu placement='static'>2</vcpu>
  <cputune>
    <vcpupin vcpu='0' cpuset='2'/>
  </cputune>
  <os firmware='efi'>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/src_VARS.fd</nvram>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/v/src/disk.qcow2'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/v/src/seed.iso'/>
      <target dev='vdb' bus='virtio'/>
      <readonly/>
    </disk>
    <interface type='bridge'>
      <mac address='52:54:00:aa:bb:cc'/>
      <source bridge='br0'/>
    </interface>
    <serial type='pty'>
      <log file='/v/src/console.log' append='on'/>
      <target port='0'/>
    </serial>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source>
        <address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
      </source>
    </hostdev>
  </devices>
</domain>
"#;

    #[test]
    fn a_clone_gets_its_own_identity_and_files_and_shares_nothing_exclusive() {
        let edits = CloneEdits {
            name: "dst".into(),
            macs: vec!["52:54:00:11:22:33".into()],
            files: [
                ("/v/src/disk.qcow2", "/v/dst/disk.qcow2"),
                ("/v/src/seed.iso", "/v/dst/seed.iso"),
                ("/v/src/console.log", "/v/dst/console.log"),
            ]
            .into_iter()
            .map(|(a, b)| (PathBuf::from(a), PathBuf::from(b)))
            .collect(),
        };
        let (xml, report) = clone_xml("src", SRC, &edits).unwrap();
        let f = parse_domain(&xml).unwrap();
        assert_eq!(f.name, "dst");
        assert_eq!(f.uuid, None);
        assert!(f.metadata.is_none());
        assert!(f.hostdevs.is_empty());
        assert_eq!(f.nics[0].mac.as_deref(), Some("52:54:00:11:22:33"));
        let paths: Vec<_> = f.disks.iter().filter_map(|d| d.path.clone()).collect();
        assert_eq!(
            paths,
            [
                PathBuf::from("/v/dst/disk.qcow2"),
                PathBuf::from("/v/dst/seed.iso")
            ]
        );
        assert_eq!(f.console_log, Some(PathBuf::from("/v/dst/console.log")));
        assert!(
            !xml.contains("nvram") && !xml.contains("cputune") && !xml.contains("backingStore")
        );
        assert!(xml.contains("<os firmware='efi'>"), "{xml}");
        assert_eq!(
            report,
            CloneReport {
                unmapped_disks: vec![],
                hostdevs_dropped: 1,
                pinning_dropped: true,
            }
        );
    }

    /// A clone of a domain vmctl renders is one libvirt's schema accepts.
    #[test]
    fn the_clone_of_a_vmctl_domain_is_valid_domain_xml() {
        let spec = crate::domain::render::tests::ubuntu_spec();
        let xml = crate::domain::render::to_xml(&spec).unwrap();
        let files = spec
            .disks
            .iter()
            .map(|d| {
                (
                    d.path.clone(),
                    PathBuf::from("/v/clone").join(d.path.file_name().unwrap()),
                )
            })
            .collect();
        let edits = CloneEdits {
            name: "clone1".into(),
            macs: vec!["52:54:00:00:00:01".into()],
            files,
        };
        let (out, report) = clone_xml(&spec.name, &xml, &edits).unwrap();
        assert!(report.unmapped_disks.is_empty());
        crate::domain::render::tests::assert_valid_domain_xml(&out);
    }

    #[test]
    fn retargeting_renames_files_and_keeps_the_rest() {
        let files = [("/v/src/disk.qcow2", "/v/src/disk.1.qcow2")]
            .into_iter()
            .map(|(a, b)| (PathBuf::from(a), PathBuf::from(b)))
            .collect();
        let xml = retarget_files("src", SRC, &files).unwrap();
        // Only the edited attribute is written anew (double-quoted); the rest is byte for byte.
        assert_eq!(
            xml,
            SRC.replace(
                "<source file='/v/src/disk.qcow2'/>",
                "<source file=\"/v/src/disk.1.qcow2\"/>"
            )
        );
    }

    #[test]
    fn a_writable_disk_without_a_new_file_is_reported() {
        let edits = CloneEdits {
            name: "dst".into(),
            ..Default::default()
        };
        let (_, report) = clone_xml("src", SRC, &edits).unwrap();
        // The read-only seed may be shared; the system disk may not.
        assert_eq!(
            report.unmapped_disks,
            vec![PathBuf::from("/v/src/disk.qcow2")]
        );
    }
}
