//! Config changes for vGPUs to an existing domain's XML, as `virsh edit` would make them:
//! remove the `<hostdev>` of given mdevs (by UUID) or VFs (by host address), add vGPU hostdevs
//! before `</devices>`. Everything else is kept byte for byte ([`crate::splice`] does the same
//! for whole GPUs).

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::domain::render::vgpu_xml;
use crate::domain::{PciAddress, VgpuHostdev};
use crate::error::{Error, Result};
use crate::splice::{line_start, push_device, rebuild};

fn attr(e: &BytesStart, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name.as_bytes())
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

fn num(e: &BytesStart, name: &str) -> u32 {
    attr(e, name)
        .and_then(|v| match v.strip_prefix("0x") {
            Some(h) => u32::from_str_radix(h, 16).ok(),
            None => v.parse().ok(),
        })
        .unwrap_or(0)
}

/// Removes the hostdevs of the vGPUs in `remove`, then adds those in `add` before `</devices>`.
pub fn splice_vgpus(
    vm: &str,
    xml: &str,
    remove: &[VgpuHostdev],
    add: &[VgpuHostdev],
) -> Result<String> {
    let perr = |source| Error::ParseDomainXml {
        domain: vm.to_string(),
        source,
    };
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    let mut insert_at = None;
    // (start offset, type, matched) of the hostdev being read.
    let mut hostdev: Option<(usize, String, bool)> = None;
    loop {
        let before = reader.buffer_position() as usize;
        let ev = reader.read_event().map_err(perr)?;
        let after = reader.buffer_position() as usize;
        let parent = stack.last().map(Vec::as_slice).unwrap_or(b"");
        match ev {
            Event::Start(e) => {
                if e.name().as_ref() == b"hostdev" && parent == b"devices" {
                    hostdev = Some((before, attr(&e, "type").unwrap_or_default(), false));
                }
                stack.push(e.name().as_ref().to_vec());
            }
            Event::Empty(e) => {
                if e.name().as_ref() == b"address"
                    && parent == b"source"
                    && stack.len() >= 2
                    && stack[stack.len() - 2] == b"hostdev"
                    && let Some((_, kind, matched)) = hostdev.as_mut()
                {
                    let this = match kind.as_str() {
                        "mdev" => attr(&e, "uuid").map(|uuid| VgpuHostdev::Mdev { uuid }),
                        "pci" => Some(VgpuHostdev::Vf {
                            host: PciAddress {
                                domain: num(&e, "domain") as u16,
                                bus: num(&e, "bus") as u8,
                                slot: num(&e, "slot") as u8,
                                function: num(&e, "function") as u8,
                            },
                        }),
                        _ => None,
                    };
                    *matched |= this.is_some_and(|t| {
                        remove.iter().any(|r| match (r, &t) {
                            (VgpuHostdev::Mdev { uuid: a }, VgpuHostdev::Mdev { uuid: b }) => {
                                a.eq_ignore_ascii_case(b)
                            }
                            (a, b) => a == b,
                        })
                    });
                }
            }
            Event::End(e) => {
                stack.pop();
                let parent = stack.last().map(Vec::as_slice).unwrap_or(b"");
                match e.name().as_ref() {
                    b"hostdev" if parent == b"devices" => {
                        if let Some((start, _, true)) = hostdev.take() {
                            let end = if xml.as_bytes().get(after) == Some(&b'\n') {
                                after + 1
                            } else {
                                after
                            };
                            cuts.push((line_start(xml, start), end));
                        }
                    }
                    b"devices" if parent == b"domain" => insert_at = Some(line_start(xml, before)),
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let insert_at = insert_at.ok_or_else(|| Error::NoDevices { domain: vm.into() })?;
    let mut added = String::new();
    for v in add {
        push_device(&mut added, &vgpu_xml(v)?);
    }
    Ok(rebuild(xml, &cuts, insert_at, &added))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse::parse_domain;

    const XML: &str = "<domain type='kvm'>
  <name>vm1</name>
  <devices>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source>
        <address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
      </source>
    </hostdev>
  </devices>
</domain>
";

    #[test]
    fn adds_and_removes_mdev_and_vf_hostdevs_keeping_the_rest() {
        let m = VgpuHostdev::Mdev {
            uuid: "aa618089-8b16-4d01-a136-25a0f3c73123".into(),
        };
        let v = VgpuHostdev::Vf {
            host: "81:00.5".parse().unwrap(),
        };
        let added = splice_vgpus("vm1", XML, &[], &[m.clone(), v.clone()]).unwrap();
        let f = parse_domain(&added).unwrap();
        assert_eq!(f.mdevs, ["aa618089-8b16-4d01-a136-25a0f3c73123"]);
        assert_eq!(
            f.hostdevs,
            ["01:00.0".parse().unwrap(), "81:00.5".parse().unwrap()]
        );
        assert!(added.contains("managed=\"no\""), "{added}");
        let back = splice_vgpus("vm1", &added, &[m, v], &[]).unwrap();
        assert_eq!(back, XML);
        assert_eq!(splice_vgpus("vm1", XML, &[], &[]).unwrap(), XML);
    }
}
