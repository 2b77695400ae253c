//! `vmctl create talos NAME`: validate everything first (nothing is made on bad input), claim
//! the name's storage directory and the address, then fetch the factory image for the schematic, write the cluster's secrets (new
//! cluster) and the node's machine config as the NoCloud `user-data` on a `cidata` seed, and
//! define (and start) a q35 UEFI domain on the bridge with the GPUs passed through.
//!
//! With `--iso` the node boots like bare metal instead: the factory's `metal-amd64.iso` for a
//! schematic carrying `talos.config=metal-iso`, a blank system disk first in the boot order (no
//! bootloader yet, so UEFI falls through to the ISO), and the machine config as `config.yaml` on a
//! second ISO labelled `metal-iso`. Talos installs itself to the disk from the ISO and reboots
//! into it (siderolabs/talos metal platform; `talosctl cluster create
//! --config-injection-method metal-iso` uses the same volume).
//!
//! The building blocks are `create ubuntu`'s: overlay disk, seed ISO, domain spec, rollback, GPU
//! checks (`commands::gpu`) and address claims (`commands::ip`).

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hostio::Cmd;
use serde::Serialize;
use talos_image::factory::{
    ImageKind, METAL_ISO_CONFIG_FILE, METAL_ISO_KERNEL_ARG, METAL_ISO_LABEL, VersionSource,
};
use talos_image::machineconfig::{self, NodePatch, Role};
use talos_image::nvidia::{self, Driver, Flavour};
use talos_image::{ConfigInput, SecretsBundle, TalosVersion};

use crate::build::{
    BridgedVm, Rollback, bridge_and_address, check_name_and_size, now_rfc3339, overlay_and_seed,
};
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::names;
use crate::net::NetworkRequest;
use crate::net::StaticIp;
use crate::talos::{ClusterDir, ClusterRecord, SchematicRequest, TalosError, write_private};
use guest_media::cache::{Expect, Progress, Verification};
use guest_media::disk;
use guest_media::seed::{self, GuestNetwork, SeedSpec};
use hypervisor::domain::render::to_xml;
use hypervisor::domain::{CpuMode, Disk, DomainType, Firmware, Metadata, PciAddress};

/// Default disk: Talos wants room for its EPHEMERAL partition (container images, etcd).
pub const DEFAULT_DISK: &str = "20G";
/// Default memory: the Talos minimum for a control plane is 2 GiB; 4 GiB leaves room for pods.
pub const DEFAULT_MEMORY: &str = "4096";
/// How long `--bootstrap` waits for the node's API.
pub const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(600);

/// `vmctl create talos` options, as given (unvalidated).
#[derive(Debug, Clone)]
pub struct TalosRequest {
    pub name: String,
    pub role: Role,
    /// Join (or start) this cluster; default: a new cluster named after the VM.
    pub cluster: Option<String>,
    /// Kubernetes API endpoint of a new cluster (default `https://<--ip>:6443`).
    pub endpoint: Option<String>,
    pub version: Option<String>,
    pub allow_prerelease: bool,
    pub gpus: Vec<String>,
    pub gpu_force: bool,
    pub nvidia: Flavour,
    pub driver: Option<Driver>,
    pub extensions: Vec<String>,
    /// Check extensions against the factory and let it confirm the schematic ID.
    pub online: bool,
    pub network: NetworkRequest,
    pub mac: Option<String>,
    pub cpus: u32,
    pub memory: String,
    pub disk: Option<String>,
    pub bridge: Option<String>,
    pub no_start: bool,
    /// Run `talosctl bootstrap` + `kubeconfig` (+ the RuntimeClass) once the node answers.
    pub bootstrap: bool,
    /// Boot the factory's metal ISO and install to a blank disk (instead of the nocloud image).
    pub iso: bool,
}

impl TalosRequest {
    pub fn new(name: &str) -> Self {
        TalosRequest {
            name: name.into(),
            role: Role::Controlplane,
            cluster: None,
            endpoint: None,
            version: None,
            allow_prerelease: false,
            gpus: Vec::new(),
            gpu_force: false,
            nvidia: Flavour::Production,
            driver: None,
            extensions: Vec::new(),
            online: false,
            network: NetworkRequest::Dhcp,
            mac: None,
            cpus: 2,
            memory: DEFAULT_MEMORY.into(),
            disk: None,
            bridge: None,
            no_start: false,
            bootstrap: false,
            iso: false,
        }
    }
}

/// Where the cluster's secrets come from.
#[derive(Debug, Clone)]
enum ClusterState {
    New,
    Existing {
        record: ClusterRecord,
        secrets: Box<SecretsBundle>,
    },
}

/// The validated request: everything checked, nothing created yet.
#[derive(Debug, Clone)]
pub struct TalosPlan {
    pub name: String,
    pub role: Role,
    pub cluster: ClusterDir,
    cluster_state: ClusterState,
    pub version: TalosVersion,
    pub schematic_id: String,
    pub schematic_yaml: String,
    pub extensions: Vec<String>,
    /// The schematic's `extraKernelArgs` (`talos.config=metal-iso` with `--iso`).
    pub kernel_args: Vec<String>,
    /// What the node boots: the nocloud image (qcow2, `.raw.xz` as fallback) or the metal ISO.
    pub media: Media,
    pub driver_note: Option<String>,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_bytes: u64,
    pub bridge: String,
    pub mac: String,
    pub static_ip: Option<StaticIp>,
    pub domain_type: DomainType,
    pub cpu: CpuMode,
    pub vm_dir: PathBuf,
    pub gpus: Vec<Vec<PciAddress>>,
    talosctl: Option<PathBuf>,
    kubectl: Option<PathBuf>,
}

/// How the node gets Talos and its machine config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Media {
    /// An overlay of the factory's nocloud disk image; the config is NoCloud `user-data` on a
    /// `cidata` volume.
    Nocloud,
    /// The factory's metal ISO installing to a blank disk; the config is `config.yaml` on a
    /// `metal-iso` volume.
    MetalIso,
}

impl Media {
    /// The platform the node runs as, which names its installer image.
    pub fn platform(self) -> &'static str {
        match self {
            Media::Nocloud => ImageKind::NocloudQcow2.platform(),
            Media::MetalIso => ImageKind::MetalIso.platform(),
        }
    }

    /// The label of the volume the config is on.
    pub fn config_label(self) -> &'static str {
        match self {
            Media::Nocloud => "cidata",
            Media::MetalIso => METAL_ISO_LABEL,
        }
    }
}

/// One entry of the domain's boot order.
#[derive(Debug, Clone, Serialize)]
pub struct BootEntry {
    pub order: u32,
    /// Guest target (`vda`, `sda`).
    pub target: String,
    pub path: PathBuf,
    pub what: String,
}

/// One next step, as a command line to show (and, with `--bootstrap`, to run).
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub what: String,
    pub argv: Vec<String>,
    /// Run by `--bootstrap`.
    pub done: bool,
}

/// What `create talos` made.
#[derive(Debug, Clone, Serialize)]
pub struct TalosCreated {
    pub name: String,
    pub role: Role,
    pub cluster: String,
    /// True when this create generated the cluster's secrets.
    pub new_cluster: bool,
    pub endpoint: String,
    pub version: TalosVersion,
    pub schematic_id: String,
    pub extensions: Vec<String>,
    /// The schematic's extra kernel arguments (part of its ID).
    pub kernel_args: Vec<String>,
    pub media: Media,
    /// The factory file that was fetched (`nocloud-amd64.qcow2`, `metal-amd64.iso`, …).
    pub image_kind: ImageKind,
    pub installer_image: String,
    pub image_url: String,
    pub base_image: PathBuf,
    pub base_sha256: String,
    pub verification: Verification,
    pub defined: bool,
    pub started: bool,
    pub mac: String,
    pub ip: Option<String>,
    pub disk: PathBuf,
    /// The config volume: the NoCloud seed, or the `metal-iso` volume with `--iso`.
    pub seed: PathBuf,
    /// Its volume label (`cidata` or `metal-iso`).
    pub seed_label: String,
    /// Devices in the order the firmware tries them.
    pub boot_order: Vec<BootEntry>,
    pub console_log: PathBuf,
    pub cluster_dir: PathBuf,
    pub talosconfig: PathBuf,
    /// `runtimeclass-nvidia.yaml` for GPU nodes.
    pub runtime_class: Option<PathBuf>,
    pub driver_note: Option<String>,
    pub next_steps: Vec<Step>,
}

fn invalid(option: &str, value: &str, reason: &str) -> Error {
    Error::InvalidOption {
        option: option.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// `program` in `$PATH` (as the runner would find it).
pub fn which(env: &dyn Fn(&str) -> Option<String>, program: &str) -> Option<PathBuf> {
    let path = env("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The chip code of the GPU whose functions include `first`, from the host's facts.
fn chip_of(facts: &hwdetect::HostFacts, first: Option<&PciAddress>) -> Option<String> {
    let first = first?;
    facts
        .gpus
        .iter()
        .find(|g| {
            g.functions
                .iter()
                .any(|f| f.parse::<PciAddress>().ok().as_ref() == Some(first))
        })
        .and_then(|g| g.chip.clone())
}

/// Validates the request against the host, libvirt and the factory. Creates nothing.
pub fn plan(ctx: &Ctx, req: &TalosRequest) -> Result<TalosPlan> {
    let memory_mib = check_name_and_size(ctx, &req.name, true, req.cpus, &req.memory)?;
    let disk_bytes = names::parse_size("--disk", req.disk.as_deref().unwrap_or(DEFAULT_DISK))?;
    let domain_type: DomainType = ctx.config.value("domain_type").parse()?;
    let cpu: CpuMode = ctx.config.value("cpu_mode").parse()?;

    // The cluster: a new one named after the VM, or the one --cluster names (new or existing).
    let cluster_name = req.cluster.clone().unwrap_or_else(|| req.name.clone());
    machineconfig::validate_cluster_name(&cluster_name)?;
    let cluster = ClusterDir::new(ctx.host, ctx.config, &cluster_name);
    let cluster_state = if cluster.exists() {
        if req.cluster.is_none() {
            return Err(TalosError::ClusterExists {
                cluster: cluster_name,
                dir: cluster.dir,
            }
            .into());
        }
        let (record, secrets) = cluster.load()?;
        ClusterState::Existing {
            record,
            secrets: Box::new(secrets),
        }
    } else {
        if req.role == Role::Worker {
            return Err(TalosError::NoSuchCluster {
                cluster: cluster_name,
                dir: cluster.dir,
            }
            .into());
        }
        ClusterState::New
    };
    if let Some(e) = &req.endpoint {
        crate::talos::check_endpoint(e)?;
    }

    let (bridge, static_ip) = bridge_and_address(ctx, req.bridge.as_deref(), &req.network)?;
    if matches!(cluster_state, ClusterState::New)
        && req.endpoint.is_none()
        && matches!(req.network, NetworkRequest::Dhcp)
    {
        return Err(TalosError::NoEndpoint {
            cluster: cluster_name,
        }
        .into());
    }
    let mac = match &req.mac {
        Some(m) => names::parse_mac(m)?,
        None => names::random_mac(),
    };

    // --bootstrap runs talosctl (and kubectl for the RuntimeClass): check before making anything.
    let (talosctl, kubectl) = if req.bootstrap {
        if req.role != Role::Controlplane || !matches!(cluster_state, ClusterState::New) {
            return Err(TalosError::BootstrapUnsupported {
                what: "the first control plane of a new cluster",
            }
            .into());
        }
        if req.no_start {
            return Err(TalosError::BootstrapUnsupported {
                what: "a started VM (drop --no-start)",
            }
            .into());
        }
        let t = which(ctx.env, "talosctl").ok_or(TalosError::MissingProgram {
            program: "talosctl",
        })?;
        (Some(t), which(ctx.env, "kubectl"))
    } else {
        (None, None)
    };

    let gpus = if req.gpus.is_empty() {
        Vec::new()
    } else {
        let selectors = crate::gpu::parse_selectors(&req.gpus)?;
        crate::gpu::hostdevs_for_create(
            ctx,
            &req.name,
            &selectors,
            Firmware::Efi { secure_boot: false },
            req.gpu_force,
        )?
    };

    let vm_dir = crate::storage::vm_dir(&ctx.config.storage_dir(), &req.name);
    // An early refusal only: the claim at the start of the create is what holds the name.
    if vm_dir.exists() {
        return Err(Error::StorageExists {
            name: req.name.clone(),
            path: vm_dir,
        });
    }

    // Version: the flag (checked against the published releases), else the cluster's, else the
    // latest stable release.
    let version = match (&req.version, &cluster_state) {
        (None, ClusterState::Existing { record, .. }) => record.version.clone(),
        (v, _) => crate::talos::client(ctx.config)?.resolve_version(
            VersionSource::Github,
            v.as_deref(),
            req.allow_prerelease,
        )?,
    };

    // Schematic: the NVIDIA preset for GPU nodes, always the guest agent, then --extension.
    let (chip, nvswitch) = if gpus.is_empty() {
        (None, false)
    } else {
        let facts = hwdetect::detect(ctx.host);
        (
            chip_of(&facts, gpus.first().and_then(|f| f.first())),
            !facts.nvswitches.is_empty(),
        )
    };
    let mut extensions = Vec::new();
    extensions.push(nvidia::QEMU_GUEST_AGENT.to_string());
    extensions.extend(req.extensions.iter().cloned());
    let sreq = SchematicRequest {
        nvidia: (!gpus.is_empty()).then_some(req.nvidia),
        driver: req.driver,
        fabric_manager: false,
        extensions,
        // A factory ISO takes no boot-time arguments: the schematic carries the one that points
        // Talos at the config volume (it changes the ID; the installer keeps it).
        kernel_args: if req.iso {
            vec![METAL_ISO_KERNEL_ARG.to_string()]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    let (schematic, driver_note) = crate::talos::build_schematic(&sreq, chip.as_deref(), nvswitch)?;
    let (schematic_id, schematic_yaml, _) =
        crate::talos::schematic_id(ctx.config, &schematic, req.online, Some(&version))?;

    Ok(TalosPlan {
        name: req.name.clone(),
        role: req.role,
        cluster,
        cluster_state,
        version,
        schematic_id,
        schematic_yaml,
        extensions: schematic
            .customization
            .system_extensions
            .official_extensions
            .clone(),
        kernel_args: schematic.customization.extra_kernel_args.clone(),
        media: if req.iso {
            Media::MetalIso
        } else {
            Media::Nocloud
        },
        driver_note,
        vcpus: req.cpus,
        memory_mib,
        disk_bytes,
        bridge,
        mac,
        static_ip,
        domain_type,
        cpu,
        vm_dir,
        gpus,
        talosctl,
        kubectl,
    })
}

/// A factory image in the cache.
struct FactoryImage {
    path: PathBuf,
    sha256: String,
    verification: Verification,
    url: String,
    kind: ImageKind,
}

/// Fetches what the node boots into the cache. No published checksums: the sha256 of the first
/// download is recorded and later downloads must match it.
fn fetch_image(ctx: &Ctx, plan: &TalosPlan, progress: &dyn Progress) -> Result<FactoryImage> {
    match plan.media {
        Media::Nocloud => fetch_nocloud(ctx, plan, progress),
        Media::MetalIso => {
            let iso = crate::talos::endpoints(ctx.config).image(
                &plan.schematic_id,
                &plan.version,
                ImageKind::MetalIso,
            );
            let f = crate::media::image_cache(ctx.config).fetch(
                &iso.url,
                &Expect::RecordFirst,
                progress,
            )?;
            Ok(FactoryImage {
                path: f.path,
                sha256: f.sha256,
                verification: f.verification,
                url: iso.url,
                kind: ImageKind::MetalIso,
            })
        }
    }
}

/// The nocloud disk image: qcow2, or `.raw.xz` decompressed next to the cache's blobs when the
/// factory has no qcow2.
fn fetch_nocloud(ctx: &Ctx, plan: &TalosPlan, progress: &dyn Progress) -> Result<FactoryImage> {
    let ep = crate::talos::endpoints(ctx.config);
    let cache = crate::media::image_cache(ctx.config);
    let qcow = ep.image(&plan.schematic_id, &plan.version, ImageKind::NocloudQcow2);
    match cache.fetch(&qcow.url, &Expect::RecordFirst, progress) {
        Ok(f) => {
            return Ok(FactoryImage {
                path: f.path,
                sha256: f.sha256,
                verification: f.verification,
                url: qcow.url,
                kind: ImageKind::NocloudQcow2,
            });
        }
        Err(guest_media::Error::HttpStatus { status: 404, .. }) => {
            tracing::info!("{} not found; trying the .raw.xz image", qcow.url);
        }
        Err(e) => return Err(e.into()),
    }
    let xz = ep.image(&plan.schematic_id, &plan.version, ImageKind::NocloudRawXz);
    let f = cache.fetch(&xz.url, &Expect::RecordFirst, progress)?;
    // The decompressed image is kept next to the blobs, sealed like them: every use checks it,
    // and one that changed is moved aside and decompressed again from the verified blob.
    let rel = format!("talos/{}-{}", &f.sha256[..12], xz.decompressed_file_name());
    let raw_path = cache.dir().join(&rel);
    let derived = cache.derived::<Error>(&rel, progress, &mut |out| {
        let input = std::fs::File::open(&f.path).map_err(|source| Error::Io {
            op: "open cached image",
            path: f.path.clone(),
            source,
        })?;
        talos_image::xz::decompress(std::io::BufReader::new(input), out).map_err(|source| {
            TalosError::Decompress {
                url: xz.url.clone(),
                path: raw_path.clone(),
                source,
            }
        })?;
        Ok(())
    })?;
    tracing::info!(path = %derived.path.display(), check = %derived.check, "decompressed image");
    let raw = derived.path;
    Ok(FactoryImage {
        path: raw,
        sha256: f.sha256,
        verification: f.verification,
        url: xz.url,
        kind: ImageKind::NocloudRawXz,
    })
}

/// The NoCloud seed: the machine config as `user-data`, plus `meta-data` and a `network-config`
/// (v2) that Talos' nocloud platform reads too (siderolabs/talos
/// internal/app/machined/pkg/runtime/v1alpha1/platform/nocloud).
pub fn seed_files(
    name: &str,
    instance_id: &str,
    mac: &str,
    ip: Option<&StaticIp>,
    user_data: String,
) -> Result<Vec<(&'static str, String)>> {
    let spec = SeedSpec {
        hostname: name.into(),
        instance_id: instance_id.into(),
        user: String::new(),
        ssh_authorized_keys: Vec::new(),
        password_hash: None,
        packages: Vec::new(),
        network: match ip {
            Some(s) => GuestNetwork::Static {
                mac: mac.into(),
                address: s.address.to_string(),
                gateway: s.gateway.map(|g| g.to_string()),
                dns: s.dns.iter().map(ToString::to_string).collect(),
            },
            None => GuestNetwork::Dhcp { mac: mac.into() },
        },
    };
    Ok(vec![
        ("user-data", user_data),
        ("meta-data", seed::meta_data(&spec)?),
        ("network-config", seed::network_config(&spec)?),
    ])
}

fn endpoint_for(req: &TalosRequest, plan: &TalosPlan) -> Result<String> {
    match (&plan.cluster_state, &req.endpoint, &plan.static_ip) {
        (ClusterState::Existing { record, .. }, _, _) => Ok(record.endpoint.clone()),
        (ClusterState::New, Some(e), _) => Ok(e.clone()),
        (ClusterState::New, None, Some(s)) => Ok(format!("https://{}:6443", s.address.addr())),
        (ClusterState::New, None, None) => Err(TalosError::NoEndpoint {
            cluster: plan.cluster.name.clone(),
        }
        .into()),
    }
}

/// Runs the plan without an address claim: claims the VM's directory, then makes everything.
/// On failure everything made so far is removed again (the new cluster's directory too).
pub fn apply(
    ctx: &Ctx,
    req: &TalosRequest,
    plan: &TalosPlan,
    progress: &dyn Progress,
) -> Result<TalosCreated> {
    let mut rb = Rollback::new(ctx.hv);
    rb.claim_dir(&plan.vm_dir, &plan.name)?;
    apply_claimed(ctx, req, plan, &mut rb, progress)
}

/// [`apply`] in the VM directory `rb` has claimed.
fn apply_claimed(
    ctx: &Ctx,
    req: &TalosRequest,
    plan: &TalosPlan,
    rb: &mut Rollback,
    progress: &dyn Progress,
) -> Result<TalosCreated> {
    let endpoint = endpoint_for(req, plan)?;
    let new_cluster = matches!(plan.cluster_state, ClusterState::New);
    let mut cluster_rb = ClusterRollback { dir: None };

    let image = fetch_image(ctx, plan, progress)?;
    // The nocloud image is the system disk's backing file: --disk cannot be smaller. The ISO
    // installs to a blank disk instead.
    let base_format = match plan.media {
        Media::MetalIso => None,
        Media::Nocloud => {
            let info = disk::image_info(ctx.runner, &image.path)?;
            if plan.disk_bytes < info.virtual_size {
                return Err(invalid(
                    "--disk",
                    req.disk.as_deref().unwrap_or(DEFAULT_DISK),
                    &format!(
                        "smaller than the image's virtual size of {} bytes",
                        info.virtual_size
                    ),
                ));
            }
            Some(info.format)
        }
    };

    let ep = crate::talos::endpoints(ctx.config);
    // The installed system keeps the booted image's platform and schematic.
    let installer_image = ep.installer_image(
        plan.media.platform(),
        &plan.schematic_id,
        &plan.version,
        false,
    );
    let mut input = ConfigInput::new(&plan.cluster.name, &endpoint, plan.version.clone());
    input.installer_image = installer_image.clone();
    input.validate()?;

    // Secrets: generated and stored first for a new cluster (RSA-4096 takes a moment).
    let secrets = match &plan.cluster_state {
        ClusterState::Existing { secrets, .. } => (**secrets).clone(),
        ClusterState::New => {
            let s = SecretsBundle::generate(&plan.version)?;
            // create_dir, not create_dir_all: of two creates starting the same cluster at once,
            // the second is refused here and must not remove the first one's directory.
            let dir = &plan.cluster.dir;
            let werr = |source| TalosError::WriteFile {
                path: dir.clone(),
                source,
            };
            // The state directory may hold VM storage too (/var/lib/vmctl/vms): searchable for
            // the qemu user ([`disk::DIR_MODE`]); the clusters below it are root's alone.
            if let Some(clusters) = dir.parent() {
                let mut mode = 0o700;
                if let Some(state) = clusters.parent() {
                    hostio::create_dir_all_mode(state, disk::DIR_MODE).map_err(werr)?;
                    mode = disk::dir_mode_in(state, mode);
                }
                hostio::create_dir_all_mode(clusters, mode).map_err(werr)?;
            }
            // 0700 from the start: the secrets are written into it next.
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => cluster_rb.dir = Some(dir.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(TalosError::ClusterExists {
                        cluster: plan.cluster.name.clone(),
                        dir: dir.clone(),
                    }
                    .into());
                }
                Err(e) => return Err(werr(e).into()),
            }
            write_private(&plan.cluster.secrets(), s.to_yaml()?.as_bytes())?;
            let record = ClusterRecord {
                name: plan.cluster.name.clone(),
                endpoint: endpoint.clone(),
                version: plan.version.clone(),
                created: now_rfc3339(),
            };
            let json = serde_json::to_string_pretty(&record).map_err(|source| {
                TalosError::ParseRecord {
                    path: plan.cluster.record(),
                    source,
                }
            })?;
            write_private(&plan.cluster.record(), format!("{json}\n").as_bytes())?;
            let mut tinput = input.clone();
            if let Some(s) = &plan.static_ip {
                tinput.talos_endpoints = vec![s.address.addr().to_string()];
            }
            let tc = machineconfig::talosconfig(&tinput, &s, time::OffsetDateTime::now_utc())?;
            write_private(&plan.cluster.talosconfig(), tc.as_bytes())?;
            s
        }
    };
    let gpu = !plan.gpus.is_empty();
    let runtime_class = if gpu {
        let p = plan.cluster.runtime_class();
        if !p.exists() {
            write_private(&p, nvidia::RUNTIME_CLASS_MANIFEST.as_bytes())?;
        }
        Some(p)
    } else {
        None
    };

    let patch = NodePatch {
        hostname: Some(plan.name.clone()),
        static_ip: plan.static_ip.as_ref().map(|s| machineconfig::StaticIp {
            mac: plan.mac.clone(),
            address: s.address,
            gateway: s.gateway,
            nameservers: s.dns.clone(),
        }),
        gpu,
        ..Default::default()
    };
    let user_data = machineconfig::node_config(&input, &secrets, plan.role, &patch)?;

    let dir = &plan.vm_dir;
    let seed_path = dir.join(match plan.media {
        Media::Nocloud => "seed.iso",
        Media::MetalIso => "config.iso",
    });
    let disk_path = dir.join("disk.qcow2");
    let console_log = dir.join("console.log");
    rb.files.push(disk_path.clone());
    match &base_format {
        Some(format) => disk::create_overlay(
            ctx.runner,
            &image.path,
            format,
            &disk_path,
            Some(plan.disk_bytes),
        )?,
        None => disk::create_blank(ctx.runner, &disk_path, plan.disk_bytes)?,
    }
    let files = match plan.media {
        Media::Nocloud => {
            let instance_id = format!("{}-{:08x}", plan.name, rand::random::<u32>());
            seed_files(
                &plan.name,
                &instance_id,
                &plan.mac,
                plan.static_ip.as_ref(),
                user_data,
            )?
        }
        Media::MetalIso => vec![(METAL_ISO_CONFIG_FILE, user_data)],
    };
    rb.files.push(seed_path.clone());
    seed::write_iso_labelled(ctx.runner, plan.media.config_label(), &files, &seed_path)?;
    let (disks, boot_order) = disks_and_boot_order(plan.media, &disk_path, &image.path, &seed_path);

    let mut spec = BridgedVm {
        name: &plan.name,
        domain_type: plan.domain_type,
        cpu: &plan.cpu,
        firmware: Firmware::Efi { secure_boot: false },
        memory_mib: plan.memory_mib,
        vcpus: plan.vcpus,
        gpus: &plan.gpus,
        bridge: &plan.bridge,
        mac: &plan.mac,
        console_log: &console_log,
    }
    .spec();
    spec.disks = disks;
    let ip = plan.static_ip.as_ref().map(|s| s.address.to_string());
    spec.metadata = Some(Metadata {
        os: "talos".into(),
        release: Some(plan.version.to_string()),
        user: None,
        ssh_key: None,
        ip: ip.clone(),
        // The cached image, never removed by `vmctl delete`.
        base_image: Some(image.path.clone()),
        base_sha256: Some(image.sha256.clone()),
        created: now_rfc3339(),
        version: crate::VERSION.into(),
        disks: vec![disk_path.clone(), seed_path.clone()],
        files: vec![console_log.clone()],
        dir: Some(dir.clone()),
    });
    let started = rb.define_and_start(&plan.name, &to_xml(&spec)?, !req.no_start)?;
    rb.committed = true;
    cluster_rb.dir = None;

    let node_ip = plan.static_ip.as_ref().map(|s| s.address.addr());
    let next_steps = next_steps(plan, node_ip, &endpoint, runtime_class.as_deref());
    Ok(TalosCreated {
        name: plan.name.clone(),
        role: plan.role,
        cluster: plan.cluster.name.clone(),
        new_cluster,
        endpoint,
        version: plan.version.clone(),
        schematic_id: plan.schematic_id.clone(),
        extensions: plan.extensions.clone(),
        kernel_args: plan.kernel_args.clone(),
        media: plan.media,
        image_kind: image.kind,
        installer_image,
        image_url: image.url,
        base_image: image.path,
        base_sha256: image.sha256,
        verification: image.verification,
        defined: true,
        started,
        mac: plan.mac.clone(),
        ip,
        disk: disk_path,
        seed: seed_path,
        seed_label: plan.media.config_label().to_string(),
        boot_order,
        console_log,
        cluster_dir: plan.cluster.dir.clone(),
        talosconfig: plan.cluster.talosconfig(),
        runtime_class,
        driver_note: plan.driver_note.clone(),
        next_steps,
    })
}

/// The domain's disks and the order the firmware tries them. Nocloud: the overlay (`<os><boot
/// dev='hd'/>`) and the seed. Metal ISO: the blank disk first (no bootloader until Talos has
/// installed itself, so UEFI falls through to the next entry), then the Talos ISO; the config
/// volume is a second cdrom, not bootable.
fn disks_and_boot_order(
    media: Media,
    disk: &Path,
    image: &Path,
    config: &Path,
) -> (Vec<Disk>, Vec<BootEntry>) {
    // The boot entries are read off the disks (index, description), so the two cannot disagree.
    let (disks, described): (Vec<Disk>, &[(usize, &str)]) = match media {
        Media::Nocloud => (
            overlay_and_seed(disk, config),
            &[(0, "system disk, an overlay of the nocloud image")],
        ),
        Media::MetalIso => (
            vec![
                Disk::virtio(disk, "qcow2", "vda").boot(1),
                Disk::cdrom(image, "sda").boot(2),
                Disk::cdrom(config, "sdb"),
            ],
            &[
                (0, "system disk, blank until Talos installs to it"),
                (1, "Talos metal ISO, installs to the disk on first boot"),
            ],
        ),
    };
    let order = described
        .iter()
        .map(|&(i, what)| BootEntry {
            // Without per-device orders the domain boots its first disk (`<boot dev='hd'/>`).
            order: disks[i].boot_order.unwrap_or(1),
            target: disks[i].target.clone(),
            path: disks[i].path.clone(),
            what: what.into(),
        })
        .collect();
    (disks, order)
}

/// Removes a new cluster's directory when the create that started it fails.
struct ClusterRollback {
    dir: Option<PathBuf>,
}

impl Drop for ClusterRollback {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// `talosctl bootstrap` (first control plane only), `talosctl kubeconfig`, the RuntimeClass.
fn next_steps(
    plan: &TalosPlan,
    ip: Option<Ipv4Addr>,
    endpoint: &str,
    runtime_class: Option<&Path>,
) -> Vec<Step> {
    let tc = plan.cluster.talosconfig().display().to_string();
    let first = plan.role == Role::Controlplane && matches!(plan.cluster_state, ClusterState::New);
    // The first control plane is talked to directly; a joining node's cluster through its
    // control plane (the endpoint's host), which serves the kubeconfig.
    let node = match (first, ip) {
        (true, Some(i)) => i.to_string(),
        _ => machineconfig::endpoint_host(endpoint)
            .map(|h| h.trim_matches(['[', ']']).to_string())
            .unwrap_or_else(|_| "CONTROL_PLANE_IP".into()),
    };
    let talosctl = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec![
            "talosctl".into(),
            "--talosconfig".into(),
            tc.clone(),
            "--nodes".into(),
            node.clone(),
            "--endpoints".into(),
            node.clone(),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    let kubeconfig = plan.cluster.kubeconfig().display().to_string();
    let mut steps = Vec::new();
    if first {
        steps.push(Step {
            what: "bootstrap etcd on the first control plane (once)".into(),
            argv: talosctl(&["bootstrap"]),
            done: false,
        });
    }
    steps.push(Step {
        what: "fetch the admin kubeconfig".into(),
        argv: talosctl(&["kubeconfig", "--force", &kubeconfig]),
        done: false,
    });
    if let Some(rc) = runtime_class {
        steps.push(Step {
            what: "create the RuntimeClass `nvidia` (pods use runtimeClassName: nvidia)".into(),
            argv: vec![
                "kubectl".into(),
                "--kubeconfig".into(),
                kubeconfig.clone(),
                "apply".into(),
                "-f".into(),
                rc.display().to_string(),
            ],
            done: false,
        });
    }
    steps
}

/// `--bootstrap`: runs the next steps through the runner, retrying each until the node's API
/// (or the Kubernetes API) answers.
fn bootstrap(ctx: &Ctx, plan: &TalosPlan, created: &mut TalosCreated) -> Result<()> {
    let deadline = Instant::now() + BOOTSTRAP_TIMEOUT;
    for step in &mut created.next_steps {
        let mut argv = step.argv.clone();
        match argv[0].as_str() {
            "talosctl" => {
                if let Some(t) = &plan.talosctl {
                    argv[0] = t.display().to_string();
                }
            }
            _ => match &plan.kubectl {
                Some(k) => argv[0] = k.display().to_string(),
                None => {
                    tracing::warn!("kubectl is not on PATH: {} left to do", step.what);
                    continue;
                }
            },
        }
        loop {
            // Ctrl-C also kills the running talosctl/kubectl: stop instead of retrying.
            crate::interrupt::check(
                || format!("--bootstrap ({})", step.what),
                || {
                    format!(
                        "{} is created and keeps running; run the printed steps by hand from `{}`",
                        plan.name,
                        step.argv.join(" ")
                    )
                },
            )?;
            match ctx.runner.run(&Cmd::new(argv.clone())) {
                Ok(_) => break,
                Err(source) if Instant::now() >= deadline => {
                    return Err(TalosError::Bootstrap {
                        step: step.argv.join(" "),
                        secs: BOOTSTRAP_TIMEOUT.as_secs(),
                        source,
                    }
                    .into());
                }
                Err(e) => {
                    tracing::info!("{}: {e}; retrying", step.what);
                    std::thread::sleep(Duration::from_secs(10));
                }
            }
        }
        step.done = true;
    }
    Ok(())
}

/// Validates, claims the name's storage and the address, creates; with `--bootstrap` runs the
/// next steps. The kubeconfig `--bootstrap` fetches is written by talosctl into the cluster's
/// directory, which is root's alone (0700) whatever mode talosctl gives the file.
pub fn create_talos(
    ctx: &Ctx,
    req: &TalosRequest,
    progress: &dyn Progress,
) -> Result<TalosCreated> {
    let mut plan = plan(ctx, req)?;
    // The name first: a concurrent create of the same name stops here, before its download.
    let mut rb = Rollback::new(ctx.hv);
    rb.claim_dir(&plan.vm_dir, &plan.name)?;
    let claim = crate::address::claim_address(
        ctx,
        &req.name,
        &req.network,
        &plan.bridge,
        &mut plan.static_ip,
    )?;
    let created = apply_claimed(ctx, req, &plan, &mut rb, progress);
    claim.settle(created.is_ok());
    let mut created = created?;
    if req.bootstrap {
        bootstrap(ctx, &plan, &mut created)?;
    }
    Ok(created)
}

/// The node's address for messages (`--ip`, else unknown until DHCP).
pub fn node_address(c: &TalosCreated) -> Option<IpAddr> {
    c.ip.as_deref()
        .and_then(|i| i.split('/').next())
        .and_then(|i| i.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypervisor::domain::DomainSpec;

    #[test]
    fn metal_iso_domain_boots_the_disk_then_the_iso() {
        let (disk, iso, config) = (
            Path::new("/v/n/disk.qcow2"),
            Path::new("/c/metal-amd64.iso"),
            Path::new("/v/n/config.iso"),
        );
        let (disks, order) = disks_and_boot_order(Media::MetalIso, disk, iso, config);
        let mut spec = DomainSpec::new(
            "n",
            DomainType::Qemu,
            CpuMode::HostModel,
            Firmware::Efi { secure_boot: false },
        );
        spec.disks = disks;
        let targets: Vec<&str> = order.iter().map(|b| b.target.as_str()).collect();
        assert_eq!(targets, ["vda", "sda"]);
        let xml = to_xml(&spec).unwrap();
        assert!(!xml.contains("<boot dev="), "{xml}");
        let disk_el = |path: &Path| {
            let at = xml.find(&path.display().to_string()).unwrap();
            let start = xml[..at].rfind("<disk ").unwrap();
            let end = start + xml[start..].find("</disk>").unwrap();
            xml[start..end].to_string()
        };
        let d = disk_el(disk);
        assert!(
            d.contains("device=\"disk\"") && d.contains("<boot order=\"1\"/>"),
            "{d}"
        );
        let i = disk_el(iso);
        assert!(
            i.contains("device=\"cdrom\"") && i.contains("<readonly/>"),
            "{i}"
        );
        assert!(i.contains("<boot order=\"2\"/>"), "{i}");
        let c = disk_el(config);
        assert!(
            c.contains("device=\"cdrom\"") && !c.contains("<boot"),
            "{c}"
        );
    }

    #[test]
    fn media_platform_and_label() {
        assert_eq!(Media::MetalIso.platform(), "metal");
        assert_eq!(Media::MetalIso.config_label(), "metal-iso");
        assert_eq!(Media::Nocloud.platform(), "nocloud");
        assert_eq!(Media::Nocloud.config_label(), "cidata");
    }
}
