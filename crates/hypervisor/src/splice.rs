//! Config changes to an existing domain's XML, as `virsh edit` would make them: remove the
//! `<hostdev>` elements of given host functions, add root ports and hostdevs before
//! `</devices>`. Everything else is kept byte for byte, so redefining changes nothing else.
//! Which devices to add or remove is the caller's policy (vmctl's GPU checks).

use std::collections::BTreeSet;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::domain::render::hostdev_xml;
use crate::domain::{Hostdev, PciAddress};
use crate::error::{Error, Result};

fn attr(e: &BytesStart, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name.as_bytes())
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

fn num_attr(e: &BytesStart, name: &str) -> Option<u32> {
    let v = attr(e, name)?;
    match v.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

fn pci_address(e: &BytesStart) -> PciAddress {
    PciAddress {
        domain: num_attr(e, "domain").unwrap_or(0) as u16,
        bus: num_attr(e, "bus").unwrap_or(0) as u8,
        slot: num_attr(e, "slot").unwrap_or(0) as u8,
        function: num_attr(e, "function").unwrap_or(0) as u8,
    }
}

pub(crate) fn parse_err(name: &str) -> impl FnOnce(quick_xml::Error) -> Error {
    let domain = name.to_string();
    move |source| Error::ParseDomainXml { domain, source }
}

/// The start of the line `pos` is on when only blanks precede it there, else `pos`.
pub(crate) fn line_start(xml: &str, pos: usize) -> usize {
    let head = &xml.as_bytes()[..pos];
    let blanks = head
        .iter()
        .rev()
        .take_while(|b| **b == b' ' || **b == b'\t')
        .count();
    let start = pos - blanks;
    if start == 0 || head[start - 1] == b'\n' {
        start
    } else {
        pos
    }
}

/// The next free PCI controller index: a new `pcie-root-port` for a GPU's guest slot.
pub fn next_controller_index(vm: &str, xml: &str) -> Result<u8> {
    let mut reader = Reader::from_str(xml);
    let mut max: Option<u32> = None;
    loop {
        match reader.read_event().map_err(parse_err(vm))? {
            Event::Start(e) | Event::Empty(e)
                if e.name().as_ref() == b"controller"
                    && attr(&e, "type").as_deref() == Some("pci") =>
            {
                if let Some(i) = num_attr(&e, "index") {
                    max = Some(max.map_or(i, |m| m.max(i)));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let next = max.map_or(1, |m| m + 1);
    u8::try_from(next).map_err(|_| Error::NoFreePciController { domain: vm.into() })
}

/// Removes the PCI hostdevs whose host address is in `remove`, then adds a `pcie-root-port`
/// for each index in `ports` and the hostdevs in `add`, just before `</devices>`.
pub fn splice(
    vm: &str,
    xml: &str,
    remove: &BTreeSet<PciAddress>,
    ports: &[u8],
    add: &[Hostdev],
) -> Result<String> {
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    let mut insert_at: Option<usize> = None;
    // (start offset, matched) of the PCI hostdev being read.
    let mut hostdev: Option<(usize, bool)> = None;
    loop {
        let before = reader.buffer_position() as usize;
        let ev = reader.read_event().map_err(parse_err(vm))?;
        let after = reader.buffer_position() as usize;
        let parent = stack.last().map(Vec::as_slice).unwrap_or(b"");
        match ev {
            Event::Start(e) => {
                if e.name().as_ref() == b"hostdev"
                    && parent == b"devices"
                    && attr(&e, "type").as_deref() == Some("pci")
                {
                    hostdev = Some((before, false));
                }
                stack.push(e.name().as_ref().to_vec());
            }
            Event::Empty(e) => {
                if e.name().as_ref() == b"address"
                    && parent == b"source"
                    && stack.len() >= 2
                    && stack[stack.len() - 2] == b"hostdev"
                    && let Some((_, matched)) = hostdev.as_mut()
                {
                    *matched |= remove.contains(&pci_address(&e));
                }
            }
            Event::End(e) => {
                stack.pop();
                let parent = stack.last().map(Vec::as_slice).unwrap_or(b"");
                match e.name().as_ref() {
                    b"hostdev" if parent == b"devices" => {
                        if let Some((start, true)) = hostdev.take() {
                            let end = if xml.as_bytes().get(after) == Some(&b'\n') {
                                after + 1
                            } else {
                                after
                            };
                            cuts.push((line_start(xml, start), end));
                        }
                    }
                    b"devices" if parent == b"domain" => {
                        insert_at = Some(line_start(xml, before));
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let insert_at = insert_at.ok_or_else(|| Error::NoDevices { domain: vm.into() })?;
    let mut added = String::new();
    for index in ports {
        added.push_str(&format!(
            "    <controller type=\"pci\" index=\"{index}\" model=\"pcie-root-port\"/>\n"
        ));
    }
    for h in add {
        push_device(&mut added, &hostdev_xml(h)?);
    }
    Ok(rebuild(xml, &cuts, insert_at, &added))
}

/// Appends a device's XML to `added`, each line indented to sit inside `<devices>`.
pub(crate) fn push_device(added: &mut String, device_xml: &str) {
    for line in device_xml.lines() {
        added.push_str("    ");
        added.push_str(line);
        added.push('\n');
    }
}

/// `xml` without the byte ranges in `cuts` (in order), with `added` inserted at `insert_at`.
pub(crate) fn rebuild(xml: &str, cuts: &[(usize, usize)], insert_at: usize, added: &str) -> String {
    let mut out = String::with_capacity(xml.len() + added.len());
    let mut pos = 0;
    for &(start, end) in cuts {
        out.push_str(&xml[pos..start]);
        pos = end;
    }
    out.push_str(&xml[pos..insert_at]);
    out.push_str(added);
    out.push_str(&xml[insert_at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::device_hostdevs;

    const XML: &str = "<domain type='kvm'>
  <name>vm1</name>
  <devices>
    <controller type='pci' index='0' model='pcie-root'/>
    <controller type='pci' index='1' model='pcie-root-port'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
    </controller>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source>
        <address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
      </source>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </hostdev>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source>
        <address domain='0x0000' bus='0x41' slot='0x00' function='0x0'/>
      </source>
    </hostdev>
  </devices>
</domain>
";

    fn a(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    #[test]
    fn removes_only_the_named_functions_and_adds_before_devices_end() {
        assert_eq!(next_controller_index("vm1", XML).unwrap(), 2);
        let remove: BTreeSet<PciAddress> = [a("01:00.0")].into();
        let add = device_hostdevs(&[a("2b:00.0"), a("2b:00.1")], 2);
        let out = splice("vm1", XML, &remove, &[2], &add).unwrap();
        assert!(!out.contains("bus='0x01' slot='0x00' function='0x0'/>\n      </source>"));
        assert!(out.contains("bus='0x41'"));
        insta::assert_snapshot!(out);
        let facts = crate::domain::parse::parse_domain(&out).unwrap();
        assert_eq!(
            facts.hostdevs,
            vec![a("41:00.0"), a("2b:00.0"), a("2b:00.1")]
        );
    }

    #[test]
    fn nothing_to_do_keeps_the_xml_byte_for_byte() {
        assert_eq!(splice("vm1", XML, &BTreeSet::new(), &[], &[]).unwrap(), XML);
        assert!(matches!(
            splice("vm1", "<domain/>", &BTreeSet::new(), &[], &[]),
            Err(Error::NoDevices { .. })
        ));
    }
}
