//! The only door to libvirt (through the `virt` crate 0.5): a small [`Hypervisor`] trait with
//! the operations the tools need, implemented by [`Libvirt`] for any URI (`qemu:///system`,
//! `test:///default`, `test:///path/node.xml`). Tests wrap it to inject failures.

use serde::Serialize;
use virt::connect::Connect;
use virt::domain::{Domain, DomainState};
use virt::error::ErrorNumber;

use crate::caps::Capabilities;
use crate::error::{Error, LibvirtError, Result};
use crate::snapshot::{CreateFlags, SnapshotInfo};
use crate::stats::DomainStats;

/// A domain's run state, as `virsh domstate` names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Running,
    Blocked,
    Paused,
    ShuttingDown,
    ShutOff,
    Crashed,
    Suspended,
    #[default]
    Unknown,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Blocked => "blocked",
            Self::Paused => "paused",
            Self::ShuttingDown => "in shutdown",
            Self::ShutOff => "shut off",
            Self::Crashed => "crashed",
            Self::Suspended => "pmsuspended",
            Self::Unknown => "unknown",
        }
    }

    pub fn is_active(self) -> bool {
        !matches!(self, Self::ShutOff | Self::Crashed | Self::Unknown)
    }
}

/// One domain: its state and its current XML.
#[derive(Debug, Clone)]
pub struct DomainRecord {
    pub name: String,
    pub id: Option<u32>,
    pub state: State,
    pub persistent: bool,
    /// Started when the host (libvirtd) starts (`virsh autostart`).
    pub autostart: bool,
    pub xml: String,
}

/// An address the guest agent reported for one NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestAddress {
    pub mac: Option<String>,
    pub ip: String,
    pub prefix: u64,
}

/// What the tools ask of libvirt.
pub trait Hypervisor {
    fn uri(&self) -> &str;
    /// What the host's libvirt offers (`virsh capabilities`).
    fn capabilities(&self) -> Result<Capabilities>;
    fn list(&self) -> Result<Vec<DomainRecord>>;
    fn get(&self, name: &str) -> Result<Option<DomainRecord>>;
    fn define(&self, name: &str, xml: &str) -> Result<()>;
    /// Undefines a persistent domain, removing its NVRAM when `nvram` is set.
    fn undefine(&self, name: &str, nvram: bool) -> Result<()>;
    fn start(&self, name: &str) -> Result<()>;
    /// ACPI shutdown request; returns at once.
    fn shutdown(&self, name: &str) -> Result<()>;
    /// Immediate power-off.
    fn destroy(&self, name: &str) -> Result<()>;
    fn state(&self, name: &str) -> Result<State>;
    /// IPv4/IPv6 addresses from qemu-guest-agent (`virsh domifaddr --source agent`).
    fn agent_addresses(&self, name: &str) -> Result<Vec<GuestAddress>>;

    /// The persistent definition with secrets kept (`virsh dumpxml --inactive --security-info`):
    /// what a config change starts from, so redefining loses nothing. The default returns the
    /// current XML, which is the persistent one for a stopped domain.
    fn inactive_xml(&self, name: &str) -> Result<String> {
        Ok(self.require(name)?.xml)
    }

    /// Hot-plugs one device into the running domain (`virsh attach-device --live`).
    fn attach_device_live(&self, name: &str, _xml: &str) -> Result<()> {
        Err(Error::Unsupported {
            op: "hot-plug a device into",
            domain: name.to_string(),
        })
    }

    /// Hot-unplugs one device from the running domain (`virsh detach-device --live`).
    fn detach_device_live(&self, name: &str, _xml: &str) -> Result<()> {
        Err(Error::Unsupported {
            op: "hot-unplug a device from",
            domain: name.to_string(),
        })
    }

    /// Whether the domain starts with the host (`virsh autostart [--disable]`).
    fn set_autostart(&self, name: &str, _on: bool) -> Result<()> {
        Err(Error::Unsupported {
            op: "set autostart of",
            domain: name.to_string(),
        })
    }

    /// ACPI reboot request (`virsh reboot`); returns at once.
    fn reboot(&self, name: &str) -> Result<()> {
        Err(Error::Unsupported {
            op: "reboot",
            domain: name.to_string(),
        })
    }

    /// The size the guest sees of the disk at `target` (`vda`), in bytes (`virsh domblkinfo`).
    fn disk_capacity(&self, name: &str, _target: &str) -> Result<u64> {
        Err(Error::Unsupported {
            op: "read the disk size of",
            domain: name.to_string(),
        })
    }

    /// Grows the disk at `target` of the running domain to `bytes` (`virsh blockresize`).
    fn resize_disk_live(&self, name: &str, _target: &str, _bytes: u64) -> Result<()> {
        Err(Error::Unsupported {
            op: "resize a disk of",
            domain: name.to_string(),
        })
    }

    /// Sets the vCPU count of the persistent definition (`virsh setvcpus --config --maximum`,
    /// then `--config`): the next boot has `vcpus`.
    fn set_vcpus_config(&self, name: &str, _vcpus: u32) -> Result<()> {
        Err(Error::Unsupported {
            op: "set the vCPUs of",
            domain: name.to_string(),
        })
    }

    /// Sets the memory of the persistent definition (`virsh setmaxmem --config`, then
    /// `setmem --config`): the next boot has `kib`.
    fn set_memory_config(&self, name: &str, _kib: u64) -> Result<()> {
        Err(Error::Unsupported {
            op: "set the memory of",
            domain: name.to_string(),
        })
    }

    /// Adds one device to the persistent definition, and to the running domain when `live`
    /// (`virsh attach-device --config [--live]`).
    fn attach_device(&self, name: &str, _xml: &str, _live: bool) -> Result<()> {
        Err(Error::Unsupported {
            op: "add a device to",
            domain: name.to_string(),
        })
    }

    /// Removes one device from the persistent definition, and from the running domain when
    /// `live` (`virsh detach-device --config [--live]`).
    fn detach_device(&self, name: &str, _xml: &str, _live: bool) -> Result<()> {
        Err(Error::Unsupported {
            op: "remove a device from",
            domain: name.to_string(),
        })
    }

    /// Replaces vmctl's `<metadata>` element (`xml`, in [`crate::domain::VMCTL_NS`]) in the
    /// persistent definition, and in the running domain when `live` (`virsh metadata`).
    fn set_vmctl_metadata(&self, name: &str, _xml: &str, _live: bool) -> Result<()> {
        Err(Error::Unsupported {
            op: "update the metadata of",
            domain: name.to_string(),
        })
    }

    /// libvirt's version (`virConnectGetLibVersion`: the daemon's, for a remote URI) as
    /// major * 1,000,000 + minor * 1,000 + micro.
    fn lib_version(&self) -> Result<u32> {
        Err(Error::Unsupported {
            op: "read the libvirt version for",
            domain: self.uri().to_string(),
        })
    }

    /// Takes a snapshot (`virDomainSnapshotCreateXML`) from [`crate::snapshot::to_xml`].
    fn snapshot_create(&self, name: &str, _xml: &str, _flags: CreateFlags) -> Result<()> {
        Err(Error::Unsupported {
            op: "snapshot",
            domain: name.to_string(),
        })
    }

    /// The domain's snapshots, oldest first. A driver without snapshots has none.
    fn snapshots(&self, _name: &str) -> Result<Vec<SnapshotInfo>> {
        Ok(Vec::new())
    }

    /// Reverts the domain to a snapshot (`virDomainSnapshotRevert`, no flags).
    fn snapshot_revert(&self, name: &str, _snapshot: &str) -> Result<()> {
        Err(Error::Unsupported {
            op: "revert a snapshot of",
            domain: name.to_string(),
        })
    }

    /// Deletes a snapshot (`virDomainSnapshotDelete`, no flags): for an external one libvirt
    /// (9.0 and later) merges its overlay into the chain and removes it.
    fn snapshot_delete(&self, name: &str, _snapshot: &str) -> Result<()> {
        Err(Error::Unsupported {
            op: "delete a snapshot of",
            domain: name.to_string(),
        })
    }

    /// Redefines a snapshot's metadata from its XML (`VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE`, with
    /// `_CURRENT` when `current`): nothing on disk changes.
    fn snapshot_redefine(&self, name: &str, _xml: &str, _current: bool) -> Result<()> {
        Err(Error::Unsupported {
            op: "redefine a snapshot of",
            domain: name.to_string(),
        })
    }

    /// Every domain's counters in one round trip (`virConnectGetAllDomainStats`). The default
    /// (test doubles) has each domain's state only.
    fn all_domain_stats(&self) -> Result<Vec<DomainStats>> {
        Ok(self
            .list()?
            .into_iter()
            .map(|d| DomainStats {
                name: d.name,
                state: d.state,
                ..Default::default()
            })
            .collect())
    }

    /// The domain, or [`Error::NoSuchDomain`].
    fn require(&self, name: &str) -> Result<DomainRecord> {
        self.get(name)?.ok_or_else(|| Error::NoSuchDomain {
            name: name.to_string(),
        })
    }
}

/// A libvirt connection.
#[derive(Debug)]
pub struct Libvirt {
    conn: Connect,
    uri: String,
}

fn map_state(s: virt::domain::DomainStateEnum) -> State {
    match s.unwrap_or(DomainState::NoState) {
        DomainState::Running => State::Running,
        DomainState::Blocked => State::Blocked,
        DomainState::Paused => State::Paused,
        DomainState::Shutdown => State::ShuttingDown,
        DomainState::Shutoff => State::ShutOff,
        DomainState::Crashed => State::Crashed,
        DomainState::PMSuspended => State::Suspended,
        DomainState::NoState => State::Unknown,
    }
}

impl Libvirt {
    pub fn open(uri: &str) -> Result<Self> {
        // libvirt's default error handler prints every error to stderr; vmctl reports its own.
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(uri)).map_err(|source| Error::Connect {
            uri: uri.to_string(),
            source: source.into(),
        })?;
        Ok(Self {
            conn,
            uri: uri.to_string(),
        })
    }

    fn err(op: &'static str, name: &str) -> impl FnOnce(virt::error::Error) -> Error {
        let domain = name.to_string();
        move |source| Error::Libvirt {
            op,
            domain,
            source: LibvirtError::from(source),
        }
    }

    fn lookup(&self, name: &str) -> Result<Option<Domain>> {
        match self.conn.lookup_domain_by_name(name) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.code().is_known_and(|c| c == ErrorNumber::NoDomain) => Ok(None),
            Err(source) => Err(Self::err("look up", name)(source)),
        }
    }

    fn lookup_required(&self, name: &str) -> Result<Domain> {
        self.lookup(name)?.ok_or_else(|| Error::NoSuchDomain {
            name: name.to_string(),
        })
    }

    fn record(&self, d: &Domain) -> Result<DomainRecord> {
        let name = d
            .name()
            .map_err(Self::err("read the name of", "a domain"))?;
        let (state, _) = d.state().map_err(Self::err("read the state of", &name))?;
        let xml = d.xml_desc(0).map_err(Self::err("read the XML of", &name))?;
        let persistent = d
            .is_persistent()
            .map_err(Self::err("read the persistence of", &name))?;
        let autostart = d
            .autostart()
            .map_err(Self::err("read the autostart of", &name))?;
        Ok(DomainRecord {
            id: d.id(),
            state: map_state(state),
            persistent,
            autostart,
            xml,
            name,
        })
    }
}

impl Hypervisor for Libvirt {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn capabilities(&self) -> Result<Capabilities> {
        let xml = self
            .conn
            .capabilities()
            .map_err(Self::err("read the capabilities of", &self.uri))?;
        Capabilities::from_xml(&self.uri, &xml)
    }

    /// Every domain. State, persistence and autostart come in bulk, from one filtered listing
    /// each (`virConnectListAllDomains` with RUNNING, PAUSED, SHUTOFF, PERSISTENT, AUTOSTART),
    /// so a remote libvirtd answers N + 6 calls instead of 4N + 1: only the XML is asked per domain (libvirt
    /// has no bulk call for it). A domain in none of the three state listings (blocked, in
    /// shutdown, crashed, suspended, or one that changed state between the listings) is asked
    /// its state on its own.
    fn list(&self) -> Result<Vec<DomainRecord>> {
        let listing = |flags| {
            self.conn
                .list_all_domains(flags)
                .map_err(Self::err("list domains on", &self.uri))
        };
        let names = |flags| -> Result<std::collections::HashSet<String>> {
            Ok(listing(flags)?
                .iter()
                .filter_map(|d| d.name().ok())
                .collect())
        };
        let domains = listing(0)?;
        let running = names(virt::sys::VIR_CONNECT_LIST_DOMAINS_RUNNING)?;
        let paused = names(virt::sys::VIR_CONNECT_LIST_DOMAINS_PAUSED)?;
        let shutoff = names(virt::sys::VIR_CONNECT_LIST_DOMAINS_SHUTOFF)?;
        let persistent = names(virt::sys::VIR_CONNECT_LIST_DOMAINS_PERSISTENT)?;
        let autostart = names(virt::sys::VIR_CONNECT_LIST_DOMAINS_AUTOSTART)?;
        let mut out = Vec::with_capacity(domains.len());
        for d in &domains {
            let name = d
                .name()
                .map_err(Self::err("read the name of", "a domain"))?;
            let state = if running.contains(&name) {
                State::Running
            } else if paused.contains(&name) {
                State::Paused
            } else if shutoff.contains(&name) {
                State::ShutOff
            } else {
                map_state(d.state().map_err(Self::err("read the state of", &name))?.0)
            };
            let xml = d.xml_desc(0).map_err(Self::err("read the XML of", &name))?;
            out.push(DomainRecord {
                id: d.id(),
                state,
                persistent: persistent.contains(&name),
                autostart: autostart.contains(&name),
                xml,
                name,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn all_domain_stats(&self) -> Result<Vec<DomainStats>> {
        let mut out: Vec<DomainStats> = crate::stats::fetch(&self.conn)
            .map_err(Self::err(
                "read the statistics of the domains on",
                &self.uri,
            ))?
            .iter()
            .map(|(name, params)| DomainStats::from_params(name, params))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn get(&self, name: &str) -> Result<Option<DomainRecord>> {
        self.lookup(name)?.map(|d| self.record(&d)).transpose()
    }

    fn define(&self, name: &str, xml: &str) -> Result<()> {
        self.conn
            .define_domain_xml(xml)
            .map(|_| ())
            .map_err(Self::err("define", name))
    }

    fn undefine(&self, name: &str, nvram: bool) -> Result<()> {
        let d = self.lookup_required(name)?;
        let mut flags = virt::sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | virt::sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA;
        if nvram {
            flags |= virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM;
        }
        match d.undefine_flags(flags) {
            Ok(()) => Ok(()),
            // Drivers without NVRAM support (the test driver) refuse the flag itself.
            Err(e)
                if nvram
                    && e.code().is_known_and(|c| {
                        matches!(c, ErrorNumber::InvalidArg | ErrorNumber::NoSupport)
                    }) =>
            {
                d.undefine_flags(flags & !virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM)
                    .map_err(Self::err("undefine", name))
            }
            Err(source) => Err(Self::err("undefine", name)(source)),
        }
    }

    fn start(&self, name: &str) -> Result<()> {
        self.lookup_required(name)?
            .create()
            .map(|_| ())
            .map_err(Self::err("start", name))
    }

    fn shutdown(&self, name: &str) -> Result<()> {
        self.lookup_required(name)?
            .shutdown()
            .map(|_| ())
            .map_err(Self::err("shut down", name))
    }

    fn destroy(&self, name: &str) -> Result<()> {
        self.lookup_required(name)?
            .destroy()
            .map(|_| ())
            .map_err(Self::err("destroy", name))
    }

    fn state(&self, name: &str) -> Result<State> {
        let (s, _) = self
            .lookup_required(name)?
            .state()
            .map_err(Self::err("read the state of", name))?;
        Ok(map_state(s))
    }

    fn inactive_xml(&self, name: &str) -> Result<String> {
        self.lookup_required(name)?
            .xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE | virt::sys::VIR_DOMAIN_XML_SECURE)
            .map_err(Self::err("read the persistent XML of", name))
    }

    fn attach_device_live(&self, name: &str, xml: &str) -> Result<()> {
        self.lookup_required(name)?
            .attach_device_flags(xml, virt::sys::VIR_DOMAIN_AFFECT_LIVE)
            .map_err(Self::err("hot-plug a device into", name))
    }

    fn detach_device_live(&self, name: &str, xml: &str) -> Result<()> {
        self.lookup_required(name)?
            .detach_device_flags(xml, virt::sys::VIR_DOMAIN_AFFECT_LIVE)
            .map_err(Self::err("hot-unplug a device from", name))
    }

    fn set_autostart(&self, name: &str, on: bool) -> Result<()> {
        self.lookup_required(name)?
            .set_autostart(on)
            .map_err(Self::err("set autostart of", name))
    }

    fn reboot(&self, name: &str) -> Result<()> {
        self.lookup_required(name)?
            .reboot(0)
            .map_err(Self::err("reboot", name))
    }

    fn disk_capacity(&self, name: &str, target: &str) -> Result<u64> {
        self.lookup_required(name)?
            .block_info(target, 0)
            .map(|i| i.capacity)
            .map_err(Self::err("read the disk size of", name))
    }

    fn resize_disk_live(&self, name: &str, target: &str, bytes: u64) -> Result<()> {
        self.lookup_required(name)?
            .block_resize(target, bytes, virt::sys::VIR_DOMAIN_BLOCK_RESIZE_BYTES)
            .map_err(Self::err("resize a disk of", name))
    }

    fn set_vcpus_config(&self, name: &str, vcpus: u32) -> Result<()> {
        let d = self.lookup_required(name)?;
        let config = virt::sys::VIR_DOMAIN_AFFECT_CONFIG;
        // The maximum first when growing, the current count first when shrinking: libvirt
        // refuses a current count above the maximum.
        let current = d
            .vcpus_flags(config)
            .map_err(Self::err("read the vCPUs of", name))?;
        let max = config | virt::sys::VIR_DOMAIN_VCPU_MAXIMUM;
        let order = if vcpus >= current {
            [max, config]
        } else {
            [config, max]
        };
        for flags in order {
            d.set_vcpus_flags(vcpus, flags)
                .map_err(Self::err("set the vCPUs of", name))?;
        }
        Ok(())
    }

    fn set_memory_config(&self, name: &str, kib: u64) -> Result<()> {
        let d = self.lookup_required(name)?;
        let config = virt::sys::VIR_DOMAIN_AFFECT_CONFIG;
        // Setting the maximum below the current size lowers the current size with it; the
        // current size is then set to match (both are the same for vmctl's VMs).
        d.set_memory_flags(kib, config | virt::sys::VIR_DOMAIN_MEM_MAXIMUM)
            .map_err(Self::err("set the memory of", name))?;
        d.set_memory_flags(kib, config)
            .map_err(Self::err("set the memory of", name))
    }

    fn attach_device(&self, name: &str, xml: &str, live: bool) -> Result<()> {
        let mut flags = virt::sys::VIR_DOMAIN_AFFECT_CONFIG;
        if live {
            flags |= virt::sys::VIR_DOMAIN_AFFECT_LIVE;
        }
        self.lookup_required(name)?
            .attach_device_flags(xml, flags)
            .map_err(Self::err("add a device to", name))
    }

    fn detach_device(&self, name: &str, xml: &str, live: bool) -> Result<()> {
        let mut flags = virt::sys::VIR_DOMAIN_AFFECT_CONFIG;
        if live {
            flags |= virt::sys::VIR_DOMAIN_AFFECT_LIVE;
        }
        self.lookup_required(name)?
            .detach_device_flags(xml, flags)
            .map_err(Self::err("remove a device from", name))
    }

    fn set_vmctl_metadata(&self, name: &str, xml: &str, live: bool) -> Result<()> {
        let mut flags = virt::sys::VIR_DOMAIN_AFFECT_CONFIG;
        if live {
            flags |= virt::sys::VIR_DOMAIN_AFFECT_LIVE;
        }
        self.lookup_required(name)?
            .set_metadata(
                virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
                Some(xml),
                Some("vmctl"),
                Some(crate::domain::VMCTL_NS),
                flags,
            )
            .map_err(Self::err("update the metadata of", name))
    }

    fn lib_version(&self) -> Result<u32> {
        self.conn
            .lib_version()
            .map_err(Self::err("read the libvirt version of", &self.uri))
    }

    fn snapshot_create(&self, name: &str, xml: &str, flags: CreateFlags) -> Result<()> {
        let mut f = 0;
        if flags.disk_only {
            f |= virt::sys::VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY;
        }
        if flags.quiesce {
            f |= virt::sys::VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE;
        }
        if flags.atomic {
            f |= virt::sys::VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC;
        }
        self.lookup_required(name)?
            .create_snapshot_xml(xml, f)
            .map(|_| ())
            .map_err(Self::err("snapshot", name))
    }

    fn snapshots(&self, name: &str) -> Result<Vec<SnapshotInfo>> {
        let d = self.lookup_required(name)?;
        let mut out = Vec::new();
        for s in d
            .list_all_snapshots(0)
            .map_err(Self::err("list the snapshots of", name))?
        {
            let xml = s
                .xml_desc(virt::sys::VIR_DOMAIN_SNAPSHOT_XML_SECURE)
                .map_err(Self::err("read a snapshot of", name))?;
            let current = s
                .is_current(0)
                .map_err(Self::err("read a snapshot of", name))?;
            out.push(crate::snapshot::parse_snapshot(&xml, current)?);
        }
        // Oldest first; snapshots taken within one second by their depth in the tree.
        let depth = |s: &SnapshotInfo| {
            let mut d = 0;
            let mut p = s.parent.as_deref();
            while let Some(name) = p
                && d < out.len()
            {
                d += 1;
                p = out
                    .iter()
                    .find(|x| x.name == name)
                    .and_then(|x| x.parent.as_deref());
            }
            d
        };
        let keys: Vec<_> = out
            .iter()
            .map(|s| (s.created, depth(s), s.name.clone()))
            .collect();
        let mut keyed: Vec<_> = keys.into_iter().zip(out).collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(keyed.into_iter().map(|(_, s)| s).collect())
    }

    fn snapshot_revert(&self, name: &str, snapshot: &str) -> Result<()> {
        let d = self.lookup_required(name)?;
        virt::domain::Domain::lookup_snapshot_by_name(&d, snapshot, 0)
            .and_then(|s| s.revert(0))
            .map_err(Self::err("revert a snapshot of", name))
    }

    fn snapshot_delete(&self, name: &str, snapshot: &str) -> Result<()> {
        let d = self.lookup_required(name)?;
        virt::domain::Domain::lookup_snapshot_by_name(&d, snapshot, 0)
            .and_then(|s| s.delete(0))
            .map_err(Self::err("delete a snapshot of", name))
    }

    fn snapshot_redefine(&self, name: &str, xml: &str, current: bool) -> Result<()> {
        let mut f = virt::sys::VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE;
        if current {
            f |= virt::sys::VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT;
        }
        self.lookup_required(name)?
            .create_snapshot_xml(xml, f)
            .map(|_| ())
            .map_err(Self::err("redefine a snapshot of", name))
    }

    fn agent_addresses(&self, name: &str) -> Result<Vec<GuestAddress>> {
        let ifaces = self
            .lookup_required(name)?
            .interface_addresses(virt::sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0)
            .map_err(Self::err("ask the guest agent of", name))?;
        let mut out = Vec::new();
        for i in ifaces {
            for a in i.addrs {
                out.push(GuestAddress {
                    mac: i.hwaddr.clone(),
                    ip: a.addr,
                    prefix: a.prefix,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_driver_lists_its_test_domain() {
        let lv = Libvirt::open("test:///default").unwrap();
        let all = lv.list().unwrap();
        let t = all.iter().find(|d| d.name == "test").expect("test domain");
        assert_eq!(t.state, State::Running);
        assert!(lv.get("nope").unwrap().is_none());
        assert!(matches!(
            lv.require("nope"),
            Err(Error::NoSuchDomain { .. })
        ));
    }

    #[test]
    fn test_driver_define_start_stop_undefine() {
        let lv = Libvirt::open("test:///default").unwrap();
        let xml = "<domain type='test'><name>t1</name><memory>1024</memory><os><type>hvm</type></os></domain>";
        lv.define("t1", xml).unwrap();
        assert_eq!(lv.state("t1").unwrap(), State::ShutOff);
        lv.start("t1").unwrap();
        assert_eq!(lv.state("t1").unwrap(), State::Running);
        lv.destroy("t1").unwrap();
        lv.undefine("t1", true).unwrap();
        assert!(lv.get("t1").unwrap().is_none());
    }

    /// The bulk listing (state and persistence from filtered listings) says what asking each
    /// domain says: running, paused, shut off, transient. (The test driver can't put a domain in a
    /// state outside the three; that branch asks the domain itself, as before.)
    #[test]
    fn bulk_listing_agrees_with_each_domains_own_state() {
        let lv = Libvirt::open("test:///default").unwrap();
        let xml = |n: &str| {
            format!(
                "<domain type='test'><name>{n}</name><memory>1024</memory><os><type>hvm</type></os></domain>"
            )
        };
        for n in ["b-off", "b-run", "b-paused"] {
            lv.define(n, &xml(n)).unwrap();
        }
        lv.start("b-run").unwrap();
        lv.start("b-paused").unwrap();
        let conn = &lv.conn;
        conn.lookup_domain_by_name("b-paused")
            .unwrap()
            .suspend()
            .unwrap();
        conn.create_domain_xml(&xml("b-transient"), 0).unwrap();
        let all = lv.list().unwrap();
        assert!(all.len() >= 5, "{all:?}");
        for rec in &all {
            let d = conn.lookup_domain_by_name(&rec.name).unwrap();
            assert_eq!(rec.state, map_state(d.state().unwrap().0), "{}", rec.name);
            assert_eq!(rec.persistent, d.is_persistent().unwrap(), "{}", rec.name);
        }
        let state = |n: &str| all.iter().find(|r| r.name == n).unwrap().state;
        assert_eq!(state("b-off"), State::ShutOff);
        assert_eq!(state("b-run"), State::Running);
        assert_eq!(state("b-paused"), State::Paused);
        assert!(
            !all.iter()
                .find(|r| r.name == "b-transient")
                .unwrap()
                .persistent
        );
    }

    /// Autostart is read in bulk by `list` and per domain by `get`, and both agree with what
    /// was set; vmctl's metadata element is replaced in place.
    #[test]
    fn autostart_and_metadata_on_the_test_driver() {
        let lv = Libvirt::open("test:///default").unwrap();
        let xml = "<domain type='test'><name>auto1</name><memory>1024</memory><os><type>hvm</type></os></domain>";
        lv.define("auto1", xml).unwrap();
        assert!(!lv.require("auto1").unwrap().autostart);
        lv.set_autostart("auto1", true).unwrap();
        assert!(lv.require("auto1").unwrap().autostart);
        let listed = lv.list().unwrap();
        assert!(listed.iter().find(|d| d.name == "auto1").unwrap().autostart);
        assert!(!listed.iter().find(|d| d.name == "test").unwrap().autostart);
        lv.set_autostart("auto1", false).unwrap();
        assert!(!lv.require("auto1").unwrap().autostart);

        let md = crate::domain::Metadata {
            os: "ubuntu".into(),
            created: "2026-12-05T00:00:00Z".into(),
            disks: vec!["/v/auto1/data-a.qcow2".into()],
            ..Default::default()
        };
        let el = crate::domain::render::metadata_xml(&md).unwrap();
        lv.set_vmctl_metadata("auto1", &el, false).unwrap();
        let facts = crate::domain::parse::parse_domain(&lv.require("auto1").unwrap().xml).unwrap();
        assert_eq!(facts.metadata.as_ref(), Some(&md));
        lv.undefine("auto1", false).unwrap();
    }

    #[test]
    fn bulk_statistics_name_every_domain_with_its_state_in_one_call() {
        let lv = Libvirt::open("test:///default").unwrap();
        let stats = lv.all_domain_stats().unwrap();
        let test = stats
            .iter()
            .find(|s| s.name == "test")
            .expect("the test domain");
        assert_eq!(test.state, State::Running);
        assert_eq!(stats.len(), lv.list().unwrap().len());
    }

    #[test]
    fn test_driver_capabilities_offer_the_test_domain_type_not_kvm() {
        let lv = Libvirt::open("test:///default").unwrap();
        let caps = lv.capabilities().unwrap();
        assert!(caps.domain_types().any(|t| t == "test"), "{caps:?}");
        assert!(!caps.kvm());
    }
}
