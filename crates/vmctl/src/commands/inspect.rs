//! `vmctl list` and `vmctl info`: what libvirt and vmctl's metadata know about domains.

use std::path::PathBuf;

use guest_media::disk;
use hypervisor::domain::Metadata;
use hypervisor::domain::parse::{DomainFacts, parse_domain};
use hypervisor::{DomainRecord, State};

use super::ip::{self, KnownAddress};
use serde::Serialize;

use super::Ctx;
use crate::error::Result;

/// One row of `vmctl list`.
#[derive(Debug, Clone, Serialize)]
pub struct VmSummary {
    pub name: String,
    pub state: State,
    pub persistent: bool,
    /// Started with the host (libvirt autostart).
    pub autostart: bool,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Host PCI addresses passed through.
    pub gpus: Vec<String>,
    /// The addresses, as text (the same as `addresses`).
    pub ips: Vec<String>,
    /// The addresses and where each was learnt ([`crate::commands::ip::known_addresses`], the
    /// answer `ssh` and `ip list` give too).
    pub addresses: Vec<KnownAddress>,
    pub os: Option<String>,
    /// True when vmctl created the domain (it carries vmctl's metadata).
    pub vmctl: bool,
}

/// `vmctl list --json`.
#[derive(Debug, Clone, Serialize)]
pub struct VmList {
    pub uri: String,
    pub vms: Vec<VmSummary>,
}

fn facts(rec: &DomainRecord) -> Result<DomainFacts> {
    parse_domain(&rec.xml).map_err(|e| match e {
        hypervisor::Error::ParseDomainXml { source, .. } => hypervisor::Error::ParseDomainXml {
            domain: rec.name.clone(),
            source,
        }
        .into(),
        other => other.into(),
    })
}

fn summary(addresses: Vec<KnownAddress>, rec: &DomainRecord, f: &DomainFacts) -> VmSummary {
    VmSummary {
        name: rec.name.clone(),
        state: rec.state,
        persistent: rec.persistent,
        autostart: rec.autostart,
        vcpus: f.vcpus,
        memory_mib: f.memory_kib / 1024,
        gpus: f.hostdevs.iter().map(ToString::to_string).collect(),
        ips: addresses.iter().map(|a| a.ip.to_string()).collect(),
        addresses,
        os: f.metadata.as_ref().map(|m| m.os.clone()),
        vmctl: f.metadata.is_some(),
    }
}

/// Every domain on the connection, vmctl's or not.
pub fn list(ctx: &Ctx) -> Result<VmList> {
    let (neighbours, _) = ip::neighbours(ctx.host);
    let mut vms = Vec::new();
    for rec in ctx.hv.list()? {
        let f = facts(&rec)?;
        let addresses = ip::known_addresses(ctx.hv, &neighbours, &rec, &f);
        vms.push(summary(addresses, &rec, &f));
    }
    Ok(VmList {
        uri: ctx.hv.uri().to_string(),
        vms,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskInfo {
    pub target: String,
    pub device: String,
    pub path: Option<PathBuf>,
    pub format: Option<String>,
    pub backing: Option<String>,
    pub readonly: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct NicInfo {
    pub mac: Option<String>,
    pub kind: String,
    pub source: Option<String>,
}

/// `vmctl info NAME`.
#[derive(Debug, Clone, Serialize)]
pub struct VmInfo {
    #[serde(flatten)]
    pub summary: VmSummary,
    pub uuid: Option<String>,
    pub domain_type: String,
    pub machine: Option<String>,
    pub firmware: String,
    pub kernel: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub disks: Vec<DiskInfo>,
    pub nics: Vec<NicInfo>,
    pub console_log: Option<PathBuf>,
    pub console_command: String,
    pub metadata: Option<Metadata>,
}

pub fn info(ctx: &Ctx, name: &str) -> Result<VmInfo> {
    let rec = ctx.hv.require(name)?;
    let f = facts(&rec)?;
    let (neighbours, _) = ip::neighbours(ctx.host);
    let s = summary(ip::known_addresses(ctx.hv, &neighbours, &rec, &f), &rec, &f);
    let disks = f
        .disks
        .iter()
        .map(|d| DiskInfo {
            target: d.target.clone(),
            device: d.device.clone(),
            backing: d
                .path
                .as_ref()
                .filter(|p| p.is_file() && d.format.as_deref() == Some("qcow2"))
                .and_then(|p| disk::image_info(ctx.runner, p).ok())
                .and_then(|i| i.backing_file),
            path: d.path.clone(),
            format: d.format.clone(),
            readonly: d.readonly,
        })
        .collect();
    Ok(VmInfo {
        summary: s,
        uuid: f.uuid.clone(),
        domain_type: f.domain_type.clone(),
        machine: f.machine.clone(),
        firmware: f.firmware.clone(),
        kernel: f.kernel.clone(),
        cmdline: f.cmdline.clone(),
        disks,
        nics: f
            .nics
            .iter()
            .map(|n| NicInfo {
                mac: n.mac.clone(),
                kind: n.kind.clone(),
                source: n.source.clone(),
            })
            .collect(),
        console_log: f.console_log.clone(),
        console_command: format!("virsh -c {} console {}", ctx.hv.uri(), name),
        metadata: f.metadata.clone(),
    })
}
