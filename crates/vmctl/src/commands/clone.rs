//! `vmctl clone SRC NEW [--linked]`: a new VM from a stopped one of vmctl's, with an identity
//! of its own: a new MAC, a new address (scanned and reserved like `create --ip auto`, when the
//! source has a static one), a new cloud-init instance-id and hostname (so the guest
//! re-initialises: new SSH host keys, the new network), and a new machine-id at its first boot.
//!
//! - Full (the default): the source's disk chain is copied with `qemu-img convert` on top of
//!   the same cached base image, so the clone shares only the read-only base, like every VM.
//! - `--linked`: the clone's disk is a thin overlay on the source's disk as it is now. That file
//!   is then frozen: the source moves onto a new overlay of its own (its definition changed in
//!   the same transaction), so neither VM ever writes to what the other reads. The clone records
//!   the frozen file as its base image, so `vmctl delete` of the source keeps it while the clone
//!   needs it.
//!
//! Data disks are copied in full either way. GPUs, vCPU pins and the NVRAM are not cloned.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use guest_media::disk;
use guest_media::seed::{self, GuestNetwork, SeedSpec};
use hostio::Cmd;
use hypervisor::clone::{CloneEdits, clone_xml, retarget_files};
use hypervisor::domain::Metadata;
use hypervisor::domain::parse::parse_domain;
use hypervisor::domain::render::metadata_xml;
use serde::Serialize;

use super::Ctx;
use crate::build::{bridge_and_address, now_rfc3339};
use crate::error::{CommandFailure, Error, ExitKind, Failure, Result};
use crate::names;
use crate::net::NetworkRequest;
use crate::transaction::{Transaction, Undo};

/// What `vmctl clone` refuses.
#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    #[error(
        "{vm} was not created by vmctl (no vmctl metadata): its user, key and files are unknown"
    )]
    NotVmctl { vm: String },
    #[error(
        "{vm} is a Talos node: its identity is its machine config, which a disk copy would duplicate"
    )]
    Talos { vm: String },
    #[error("{vm} has no system disk of vmctl's to copy")]
    NoSystemDisk { vm: String },
    #[error("{vm}'s disk {path} is not vmctl's: a clone would share it")]
    ForeignDisk { vm: String, path: PathBuf },
    #[error("copy {from} to {to}")]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: hostio::CommandError,
    },
    #[error("read the public key {path} recorded for {vm}")]
    Key {
        vm: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CommandFailure for CloneError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            CloneError::Copy { .. } | CloneError::Key { .. } => ExitKind::Failure,
            _ => ExitKind::Usage,
        }
    }

    fn help(&self) -> Vec<String> {
        match self {
            CloneError::NotVmctl { vm } => vec![format!(
                "`virt-clone --original {vm} --auto-clone` copies any libvirt domain (without vmctl's re-initialisation)"
            )],
            CloneError::Talos { .. } => vec![
                "add a node to its cluster instead: `vmctl cluster add-worker CLUSTER`".into(),
            ],
            CloneError::NoSystemDisk { vm } | CloneError::ForeignDisk { vm, .. } => {
                vec![format!("`vmctl disk list {vm}` shows its disks and which are vmctl's")]
            }
            CloneError::Copy { .. } => vec![
                "is there room in the storage directory? `df -h` shows it; nothing of the clone was kept".into(),
            ],
            CloneError::Key { .. } => vec![
                "the key recorded at create was moved or removed; put it back, or create the VM anew".into(),
            ],
        }
    }
}

impl From<CloneError> for Error {
    fn from(e: CloneError) -> Self {
        Error::Command(Failure::new(e))
    }
}

/// `vmctl clone` options, as given.
#[derive(Debug, Clone)]
pub struct CloneRequest {
    pub source: String,
    pub name: String,
    pub linked: bool,
    /// `None`: a source with a static address gets `--ip auto` (with the source's gateway and
    /// DNS), one on DHCP stays on DHCP.
    pub network: Option<NetworkRequest>,
    pub mac: Option<String>,
    pub no_start: bool,
    pub no_autostart: bool,
}

impl CloneRequest {
    pub fn new(source: &str, name: &str) -> Self {
        Self {
            source: source.into(),
            name: name.into(),
            linked: false,
            network: None,
            mac: None,
            no_start: false,
            no_autostart: false,
        }
    }
}

/// What `clone` made.
#[derive(Debug, Clone, Serialize)]
pub struct Cloned {
    pub name: String,
    pub source: String,
    pub linked: bool,
    pub disk: PathBuf,
    /// The file the clone's disk is a thin overlay on.
    pub backing: Option<PathBuf>,
    /// The source's new disk (`--linked`: it moved onto an overlay).
    pub source_disk: Option<PathBuf>,
    pub mac: String,
    pub ip: Option<String>,
    pub started: bool,
    /// What was not cloned, in words.
    pub left_out: Vec<String>,
    pub seconds: f64,
}

/// The gateway and DNS of the source's static network, from its seed's `network-config`
/// (`isoinfo -R -x`, of genisoimage, which writes the seeds). Unreadable: none, and the clone
/// gets them only from `--gateway`/`--dns`.
fn source_gateway_dns(ctx: &Ctx, seed_iso: &Path) -> (Option<String>, Vec<String>) {
    let argv = [
        "isoinfo".to_string(),
        "-R".into(),
        "-i".into(),
        seed_iso.display().to_string(),
        "-x".into(),
        "/network-config".into(),
    ];
    let Some(v) = ctx
        .runner
        .run(&Cmd::new(argv))
        .ok()
        .and_then(|o| serde_yaml::from_slice::<serde_yaml::Value>(&o.stdout).ok())
    else {
        return (None, Vec::new());
    };
    let nic = v["ethernets"]
        .as_mapping()
        .and_then(|m| m.values().next().cloned())
        .unwrap_or_default();
    let gateway = nic["routes"]
        .as_sequence()
        .and_then(|r| r.first())
        .and_then(|r| r["via"].as_str())
        .map(str::to_string);
    let dns = nic["nameservers"]["addresses"]
        .as_sequence()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (gateway, dns)
}

fn convert(ctx: &Ctx, from: &Path, base: Option<(&Path, &str)>, to: &Path) -> Result<()> {
    let mut argv = vec![
        "qemu-img".to_string(),
        "convert".into(),
        "-q".into(),
        "-O".into(),
        "qcow2".into(),
    ];
    // -B: the output is an overlay on the same base, holding only what differs from it
    // (qemu-img(1), "convert").
    if let Some((b, fmt)) = base {
        argv.extend([
            "-B".into(),
            b.display().to_string(),
            "-F".into(),
            fmt.into(),
        ]);
    }
    argv.extend([from.display().to_string(), to.display().to_string()]);
    disk::create_private(to)?;
    ctx.runner
        .run(&Cmd::new(argv))
        .map(|_| ())
        .map_err(|source| {
            CloneError::Copy {
                from: from.to_path_buf(),
                to: to.to_path_buf(),
                source,
            }
            .into()
        })
}

/// Clones a stopped VM of vmctl's; everything made is removed again on failure, and a
/// `--linked` source is put back as it was.
pub fn clone(ctx: &Ctx, req: &CloneRequest) -> Result<Cloned> {
    let started_at = Instant::now();
    names::validate_vm_name(&req.name)?;
    if ctx.hv.get(&req.name)?.is_some() {
        return Err(Error::NameTaken {
            name: req.name.clone(),
        });
    }
    let src = &req.source;
    let rec = ctx.hv.require(src)?;
    if rec.state.is_active() {
        return Err(Error::DomainRunning { name: src.clone() });
    }
    let src_xml = ctx.hv.inactive_xml(src)?;
    let facts = parse_domain(&src_xml)?;
    let md = facts
        .metadata
        .clone()
        .ok_or_else(|| CloneError::NotVmctl { vm: src.clone() })?;
    if md.os == "talos" {
        return Err(CloneError::Talos { vm: src.clone() }.into());
    }
    let system = facts
        .disks
        .iter()
        .find(|d| d.device == "disk" && !d.readonly)
        .and_then(|d| d.path.clone())
        .ok_or_else(|| CloneError::NoSystemDisk { vm: src.clone() })?;
    if !md.disks.contains(&system) {
        return Err(CloneError::ForeignDisk {
            vm: src.clone(),
            path: system,
        }
        .into());
    }
    let seed_src = facts
        .disks
        .iter()
        .filter(|d| d.readonly)
        .find_map(|d| d.path.clone().filter(|p| md.disks.contains(p)));
    let data: Vec<PathBuf> = facts
        .disks
        .iter()
        .filter_map(|d| d.path.clone())
        .filter(|p| {
            *p != system
                && Some(p) != seed_src.as_ref()
                && md.disks.contains(p)
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("data-"))
        })
        .collect();
    let bridge = facts
        .nics
        .iter()
        .find(|n| n.kind == "bridge")
        .and_then(|n| n.source.clone())
        .unwrap_or_else(|| ctx.config.value("bridge").to_string());
    // A static clone without --gateway/--dns takes the source's (from its seed), when the
    // gateway is inside the clone's subnet.
    let from_source = || {
        seed_src
            .as_deref()
            .map(|s| source_gateway_dns(ctx, s))
            .unwrap_or_default()
    };
    let network = match &req.network {
        Some(NetworkRequest::Static {
            ip,
            gateway: None,
            dns,
        }) if dns.is_empty() => {
            let (gateway, dns) = from_source();
            let fits = crate::address::is_auto(ip)
                || crate::net::parse_static(ip, gateway.as_deref(), &dns).is_ok();
            NetworkRequest::Static {
                ip: ip.clone(),
                gateway: if fits { gateway } else { None },
                dns,
            }
        }
        Some(n) => n.clone(),
        None if md.ip.is_some() => {
            let (gateway, dns) = from_source();
            NetworkRequest::Static {
                ip: crate::address::AUTO.into(),
                gateway,
                dns,
            }
        }
        None => NetworkRequest::Dhcp,
    };
    let mac = match &req.mac {
        Some(m) => names::parse_mac(m)?,
        None => names::random_mac(),
    };
    let (bridge, mut static_ip) = bridge_and_address(ctx, Some(&bridge), &network)?;
    let user = md.user.clone().unwrap_or_else(|| "ubuntu".into());
    let key_path = md
        .ssh_key
        .clone()
        .ok_or_else(|| CloneError::NotVmctl { vm: src.clone() })?;
    let key_text = std::fs::read_to_string(&key_path).map_err(|source| CloneError::Key {
        vm: src.clone(),
        path: key_path.clone(),
        source,
    })?;
    let public_key = names::parse_ssh_public_key(key_text.lines().next().unwrap_or_default())
        .map_err(|reason| Error::BadSshKey {
            path: key_path.clone(),
            reason,
        })?;

    let mut tx = Transaction::new(ctx.hv);
    let storage = ctx.config.storage_dir(ctx.host);
    let dir = crate::storage::vm_dir(&storage, &req.name);
    tx.claim_dir(&dir, &req.name)?;
    let claim = crate::address::claim_address(ctx, &req.name, &network, &bridge, &mut static_ip)?;
    let result = (|| -> Result<Cloned> {
        let new_disk = dir.join("disk.qcow2");
        let mut files: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
        let (backing, source_disk, base_image, base_sha) = if req.linked {
            // Freeze the source's disk: the source moves onto a new overlay, the clone gets one.
            let src_dir = md
                .dir
                .clone()
                .unwrap_or_else(|| crate::storage::vm_dir(&storage, src));
            let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
            let src_top = src_dir.join(format!("disk.{stamp}.qcow2"));
            let fmt = facts
                .disks
                .iter()
                .find(|d| d.path.as_ref() == Some(&system))
                .and_then(|d| d.format.clone())
                .unwrap_or_else(|| "qcow2".into());
            tx.record_file(&src_top);
            disk::create_overlay(ctx.runner, &system, &fmt, &src_top, None)?;
            tx.record_file(&new_disk);
            disk::create_overlay(ctx.runner, &system, &fmt, &new_disk, None)?;
            let moved = retarget_files(src, &src_xml, &[(system.clone(), src_top.clone())].into())?;
            tx.record(Undo::Redefine {
                vm: src.clone(),
                xml: src_xml.clone(),
            });
            ctx.hv.define(src, &moved)?;
            // The frozen file moves from the source's disks to its files: `delete` removes it
            // with the source unless a clone still has it as its base image.
            let mut src_md = md.clone();
            src_md.disks.retain(|d| *d != system);
            src_md.disks.insert(0, src_top.clone());
            src_md.files.push(system.clone());
            ctx.hv
                .set_vmctl_metadata(src, &metadata_xml(&src_md)?, false)?;
            (
                Some(system.clone()),
                Some(src_top),
                Some(system.clone()),
                None,
            )
        } else {
            let base = md
                .base_image
                .as_ref()
                .filter(|b| b.is_file())
                .map(|b| disk::image_info(ctx.runner, b).map(|i| (b.clone(), i.format)))
                .transpose()?;
            tx.record_file(&new_disk);
            convert(
                ctx,
                &system,
                base.as_ref().map(|(b, f)| (b.as_path(), f.as_str())),
                &new_disk,
            )?;
            let backing = base.map(|(b, _)| b);
            (backing.clone(), None, backing, md.base_sha256.clone())
        };
        files.insert(system.clone(), new_disk.clone());
        let mut vmctl_disks = vec![new_disk.clone()];
        for d in &data {
            let to = dir.join(d.file_name().unwrap_or_default());
            tx.record_file(&to);
            convert(ctx, d, None, &to)?;
            files.insert(d.clone(), to.clone());
            vmctl_disks.push(to);
        }
        let seed_path = dir.join("seed.iso");
        let console_log = dir.join("console.log");
        let known_hosts = dir.join("known_hosts");
        if let Some(s) = &seed_src {
            files.insert(s.clone(), seed_path.clone());
        }
        if let Some(log) = &facts.console_log {
            files.insert(log.clone(), console_log.clone());
        }
        let seed_spec = SeedSpec {
            hostname: req.name.clone(),
            instance_id: format!("{}-{:08x}", req.name, rand::random::<u32>()),
            user: user.clone(),
            ssh_authorized_keys: vec![public_key],
            password_hash: None,
            packages: Vec::new(),
            network: match &static_ip {
                Some(s) => GuestNetwork::Static {
                    mac: mac.clone(),
                    address: s.address.to_string(),
                    gateway: s.gateway.map(|g| g.to_string()),
                    dns: s.dns.iter().map(ToString::to_string).collect(),
                },
                None => GuestNetwork::Dhcp { mac: mac.clone() },
            },
            reset_machine_id: true,
            // The shares come with the definition, and their fstab lines with the disk.
            mounts: Vec::new(),
            driver: None,
            runcmd: Vec::new(),
        };
        tx.record_file(&seed_path);
        seed::write_iso(ctx.runner, &seed::render(&seed_spec)?, &seed_path)?;
        vmctl_disks.insert(1, seed_path.clone());
        tx.record_file(&known_hosts);
        disk::write_private(&known_hosts, b"")?;

        let (xml, report) = clone_xml(
            src,
            &src_xml,
            &CloneEdits {
                name: req.name.clone(),
                macs: vec![mac.clone()],
                files,
            },
        )?;
        if let Some(p) = report.unmapped_disks.first() {
            return Err(CloneError::ForeignDisk {
                vm: src.clone(),
                path: p.clone(),
            }
            .into());
        }
        let mut left_out = Vec::new();
        if report.hostdevs_dropped > 0 {
            left_out.push(format!(
                "{} PCI device(s) (GPUs): attach with `vmctl gpu attach {}`",
                report.hostdevs_dropped, req.name
            ));
        }
        if report.pinning_dropped {
            left_out.push("vCPU pinning and NUMA placement".into());
        }
        let ip = static_ip.as_ref().map(|s| s.address.to_string());
        tx.define_and_start(ctx.cancelled, &req.name, &xml, false, !req.no_autostart)?;
        let new_md = Metadata {
            ip: ip.clone(),
            base_image,
            base_sha256: base_sha,
            created: now_rfc3339(),
            version: crate::VERSION.into(),
            disks: vmctl_disks,
            files: vec![console_log, known_hosts],
            dir: Some(dir.clone()),
            ..md.clone()
        };
        ctx.hv
            .set_vmctl_metadata(&req.name, &metadata_xml(&new_md)?, false)?;
        if !req.no_start {
            ctx.hv.start(&req.name)?;
        }
        tx.commit();
        Ok(Cloned {
            name: req.name.clone(),
            source: src.clone(),
            linked: req.linked,
            disk: new_disk,
            backing,
            source_disk,
            mac: mac.clone(),
            ip,
            started: !req.no_start,
            left_out,
            seconds: started_at.elapsed().as_secs_f64(),
        })
    })();
    claim.settle(result.is_ok());
    result
}
