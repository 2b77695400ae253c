//! The steps every create shares (`create ubuntu`, `create desktop`, `create talos`): the checks
//! it starts with (name, size, bridge, address), the part of the domain built the same way for
//! every guest ([`BridgedVm`]); what a failed create made is removed by its
//! [`crate::transaction::Transaction`].

use std::path::Path;

use hypervisor::domain::{
    CpuMode, Disk, DomainSpec, DomainType, Firmware, Nic, PciAddress, Serial,
};

use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::names;
use crate::net::{self, NetworkRequest, StaticIp};
use crate::tuning::{PinLock, Placement, TuningRequest};

fn invalid(option: &str, value: &str, reason: &str) -> Error {
    Error::InvalidOption {
        option: option.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// Refuses an address another domain already has in vmctl's metadata.
pub(crate) fn check_ip_unused(ctx: &Ctx, ip: &StaticIp) -> Result<()> {
    let want = ip.address.addr().to_string();
    for rec in ctx.hv.list()? {
        let Ok(f) = hypervisor::domain::parse::parse_domain(&rec.xml) else {
            continue;
        };
        let theirs = f.metadata.and_then(|m| m.ip);
        if theirs.as_deref().and_then(|t| t.split('/').next()) == Some(want.as_str()) {
            return Err(Error::IpInUse {
                ip: want,
                owner: rec.name,
            });
        }
    }
    Ok(())
}

/// The checks every create starts with: a valid VM name that no domain has yet (`libvirt`:
/// whether to ask; a seed-only run defines nothing) and 1 to 1024 vCPUs. Returns the memory in MiB.
pub(crate) fn check_name_and_size(
    ctx: &Ctx,
    name: &str,
    libvirt: bool,
    cpus: u32,
    memory: &str,
) -> Result<u64> {
    names::validate_vm_name(name)?;
    if libvirt && ctx.hv.get(name)?.is_some() {
        return Err(Error::NameTaken { name: name.into() });
    }
    if cpus == 0 || cpus > 1024 {
        return Err(invalid("--cpus", &cpus.to_string(), "expected 1 to 1024"));
    }
    names::parse_memory_mib(memory)
}

/// The bridge (`--bridge`, else the `bridge` setting), which must exist, and for a static
/// `--ip` the address, checked to be on the bridge's subnet and unused. `--ip auto` gives
/// `None` here: [`crate::address::claim_address`] picks it after validation.
pub(crate) fn bridge_and_address(
    ctx: &Ctx,
    bridge: Option<&str>,
    network: &NetworkRequest,
) -> Result<(String, Option<StaticIp>)> {
    let bridge = bridge.map_or_else(|| ctx.config.value("bridge").to_string(), str::to_string);
    if !net::bridge_exists(ctx.host, &bridge) {
        return Err(Error::MissingBridge { bridge });
    }
    let static_ip = match network {
        NetworkRequest::Dhcp => None,
        NetworkRequest::Static { ip, .. } if crate::address::is_auto(ip) => None,
        NetworkRequest::Static { ip, gateway, dns } => {
            let s = net::parse_static(ip, gateway.as_deref(), dns)?;
            let subnets = net::bridge_subnets(ctx.runner, &bridge);
            net::check_on_bridge(&s, &bridge, &subnets)?;
            check_ip_unused(ctx, &s)?;
            Some(s)
        }
    };
    Ok((bridge, static_ip))
}

/// The first `<prefix>-N` that is no libvirt domain and has no storage directory, without
/// claiming it: for a plan shown before anything is made (`create ubuntu --desktop`). The
/// create then claims that name like a given one, and refuses if another create took it since.
pub(crate) fn next_free_name(ctx: &Ctx, prefix: &str) -> Result<String> {
    let storage = ctx.config.storage_dir(ctx.host);
    for n in 1..=crate::transaction::MAX_AUTO_NAMES {
        let name = format!("{prefix}-{n}");
        if ctx.hv.get(&name)?.is_none() && !crate::storage::vm_dir(&storage, &name).exists() {
            return Ok(name);
        }
    }
    Err(crate::transaction::all_taken(prefix))
}

/// The part of the domain every create builds the same way (`create ubuntu`, `create talos`,
/// `create desktop`): CPU, firmware, memory, vCPUs, passed-through GPUs, one NIC on the bridge,
/// and the serial console logged to a file. Callers add disks, metadata and the rest.
pub(crate) struct BridgedVm<'a> {
    pub(crate) name: &'a str,
    pub(crate) domain_type: DomainType,
    pub(crate) cpu: &'a CpuMode,
    pub(crate) firmware: Firmware,
    pub(crate) memory_mib: u64,
    pub(crate) vcpus: u32,
    pub(crate) gpus: &'a [Vec<PciAddress>],
    pub(crate) bridge: &'a str,
    pub(crate) mac: &'a str,
    pub(crate) console_log: &'a Path,
    /// `--cpu-pinning`/`--hugepages` ([`crate::tuning`]): pins, NUMA cells, hugepage backing.
    pub(crate) placement: Option<&'a Placement>,
}

impl<'a> BridgedVm<'a> {
    /// The domain so far; the caller sets disks, metadata and any extras.
    pub(crate) fn spec(&self) -> DomainSpec {
        let mut spec =
            DomainSpec::new(self.name, self.domain_type, self.cpu.clone(), self.firmware);
        spec.memory_mib = self.memory_mib;
        spec.vcpus = self.vcpus;
        for functions in self.gpus {
            spec.add_pci_device(functions);
        }
        spec.nics = vec![Nic {
            bridge: self.bridge.to_string(),
            mac: self.mac.to_string(),
        }];
        spec.serial = Some(Serial {
            log_file: Some(self.console_log.to_path_buf()),
        });
        if let Some(p) = self.placement {
            p.apply_to(&mut spec);
        }
        spec
    }
}

/// The placement again under the [`PinLock`], against the domains as they are at the define
/// (another create may have pinned CPUs since the plan), and the lock to hold until the define
/// is done. Without pinning: the plan's placement and no lock.
pub(crate) fn final_placement(
    ctx: &Ctx,
    vm: &str,
    req: TuningRequest,
    planned: Option<&Placement>,
    gpus: &[Vec<PciAddress>],
    vcpus: u32,
    memory_mib: u64,
) -> Result<(PinLock, Option<Placement>)> {
    let lock = PinLock::take(ctx, planned)?;
    if planned.and_then(|p| p.cpu.as_ref()).is_none() {
        return Ok((lock, planned.cloned()));
    }
    let placement = crate::tuning::place(ctx, vm, req, gpus, vcpus, memory_mib)?;
    Ok((lock, placement))
}

/// The qcow2 system disk as `vda` and the seed ISO as `vdb`.
pub(crate) fn overlay_and_seed(disk: &Path, seed: &Path) -> Vec<Disk> {
    vec![Disk::virtio(disk, "qcow2", "vda"), Disk::seed(seed, "vdb")]
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
