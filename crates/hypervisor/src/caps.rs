//! The host's libvirt capabilities (`virsh capabilities`, formatcaps.html): which guest
//! architectures and domain types (`kvm`, `qemu`…) the driver offers. gpu-vm-bootstrap's
//! `verify` checks that a KVM domain type is offered.

use quick_xml::Reader;
use quick_xml::events::Event;

use crate::error::{Error, Result};

/// One `<guest>` entry: an OS type on an architecture, and the domain types that run it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestCaps {
    /// `hvm` for full virtualisation.
    pub os_type: String,
    /// `x86_64`, `aarch64`…
    pub arch: String,
    /// `<domain type=…>` under the arch: `qemu` (TCG), `kvm`, `test`…
    pub domain_types: Vec<String>,
}

/// What the driver offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub guests: Vec<GuestCaps>,
}

impl Capabilities {
    /// Reads the capabilities XML of the connection `uri`.
    pub fn from_xml(uri: &str, xml: &str) -> Result<Self> {
        parse(xml).map_err(|source| Error::ParseDomainXml {
            domain: format!("the capabilities of {uri}"),
            source,
        })
    }

    /// Every domain type offered, for any guest.
    pub fn domain_types(&self) -> impl Iterator<Item = &str> {
        self.guests
            .iter()
            .flat_map(|g| g.domain_types.iter().map(String::as_str))
    }

    /// A KVM domain type is offered: hardware virtualisation works for libvirt.
    pub fn kvm(&self) -> bool {
        self.domain_types().any(|t| t == "kvm")
    }
}

fn parse(xml: &str) -> Result<Capabilities, quick_xml::Error> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut caps = Capabilities::default();
    let mut stack: Vec<Vec<u8>> = Vec::new();
    loop {
        let ev = reader.read_event()?;
        let (e, empty) = match ev {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::Text(t) => {
                if stack.last().map(Vec::as_slice) == Some(b"os_type")
                    && stack.len() >= 2
                    && stack[stack.len() - 2] == b"guest"
                    && let Some(g) = caps.guests.last_mut()
                {
                    g.os_type = t.decode().unwrap_or_default().into_owned();
                }
                continue;
            }
            Event::End(_) => {
                stack.pop();
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let parent = stack.last().map(Vec::as_slice).unwrap_or(b"");
        let type_attr = |name: &[u8]| {
            e.attributes()
                .flatten()
                .find(|a| a.key.as_ref() == name)
                .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
        };
        match (parent, e.name().as_ref()) {
            (b"capabilities", b"guest") => caps.guests.push(GuestCaps::default()),
            (b"guest", b"arch") => {
                if let Some(g) = caps.guests.last_mut() {
                    g.arch = type_attr(b"name").unwrap_or_default();
                }
            }
            (b"arch", b"domain") if stack.len() >= 2 && stack[stack.len() - 2] == b"guest" => {
                if let (Some(g), Some(t)) = (caps.guests.last_mut(), type_attr(b"type")) {
                    g.domain_types.push(t);
                }
            }
            _ => {}
        }
        if !empty {
            stack.push(e.name().as_ref().to_vec());
        }
    }
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_is_offered_when_an_arch_lists_the_kvm_domain_type() {
        let xml = "<capabilities>
  <host><cpu><arch>x86_64</arch></cpu></host>
  <guest>
    <os_type>hvm</os_type>
    <arch name='x86_64'>
      <wordsize>64</wordsize>
      <domain type='qemu'/>
      <domain type='kvm'>
        <emulator>/usr/bin/qemu-system-x86_64</emulator>
      </domain>
    </arch>
  </guest>
</capabilities>";
        let caps = Capabilities::from_xml("qemu:///system", xml).unwrap();
        assert_eq!(
            caps.guests,
            vec![GuestCaps {
                os_type: "hvm".into(),
                arch: "x86_64".into(),
                domain_types: vec!["qemu".into(), "kvm".into()],
            }]
        );
        assert!(caps.kvm());
        let tcg = xml.replace("<domain type='kvm'>", "<domain type='qemu2'>");
        assert!(
            !Capabilities::from_xml("qemu:///system", &tcg)
                .unwrap()
                .kvm()
        );
        assert!(Capabilities::from_xml("qemu:///system", "<capabilities><guest></arch>").is_err());
    }
}
