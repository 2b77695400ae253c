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
//! The building blocks are shared with `create ubuntu` (`crate::build`: rollback, domain spec,
//! checks), GPU checks (`crate::gpu`) and address claims (`crate::address`); making the node is
//! [`apply`]'s, the steps after it `bootstrap`'s.

mod apply;
mod bootstrap;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use guest_media::cache::{Progress, Verification};
use hypervisor::domain::{CpuMode, DomainType, Firmware, PciAddress};
use serde::{Deserialize, Serialize};
use talos_image::factory::{ImageKind, METAL_ISO_KERNEL_ARG, METAL_ISO_LABEL};
use talos_image::machineconfig::{self, Role};
use talos_image::nvidia::{self, Driver, Flavour};
use talos_image::{SecretsBundle, TalosVersion};

use crate::build::{bridge_and_address, check_name_and_size};
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::names;
use crate::net::NetworkRequest;
use crate::net::StaticIp;
use crate::talos::{ClusterDir, ClusterRecord, GpuChip, SchematicRequest, TalosError};
use crate::transaction::Transaction;
pub use apply::{apply, seed_files};
pub(crate) use apply::{apply_claimed, node_patch};
use bootstrap::next_steps;

/// Default disk: Talos wants room for its EPHEMERAL partition (container images, etcd).
pub const DEFAULT_DISK: &str = "20G";
/// Default memory: the Talos minimum for a control plane is 2 GiB; 4 GiB leaves room for pods.
pub const DEFAULT_MEMORY: &str = "4096";
/// How long `--bootstrap` waits for the node's API.
pub const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(600);

/// `vmctl create talos` options, as given (unvalidated).
#[derive(Debug, Clone)]
pub struct TalosRequest {
    /// Empty: the next free `talos-N` (`<cluster>-cp-N` / `<cluster>-w-N` with `cluster`).
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
    /// Leave libvirt's autostart off (by default the node starts with the host).
    pub no_autostart: bool,
    /// Bootstrap etcd and fetch the kubeconfig through the Talos API once the node answers (the
    /// binary runs `cluster::create::bootstrap` after the create; checked here).
    pub bootstrap: bool,
    /// Boot the factory's metal ISO and install to a blank disk (instead of the nocloud image).
    pub iso: bool,
    /// Kubernetes node labels besides the GPU label a GPU node always gets.
    pub labels: std::collections::BTreeMap<String, String>,
    /// The cluster's VIP, held by this control plane in turn with the others.
    pub vip: Option<std::net::Ipv4Addr>,
    /// `--cpu-pinning`, `--hugepages`.
    pub tuning: crate::tuning::TuningRequest,
    /// `--machine-config`: the node's whole machine config, made elsewhere (`cluster create
    /// --hosts` makes every node's on the machine that holds the cluster's secrets and sends it
    /// here over SSH). This host then keeps no cluster directory and no secrets: the config goes
    /// on the node's 0600 seed as given, after [`check_given_config`]. Empty with `--dry-run`.
    pub machine_config: Option<String>,
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
            machine_config: None,
            no_autostart: false,
            bootstrap: false,
            iso: false,
            labels: Default::default(),
            vip: None,
            tuning: Default::default(),
        }
    }
}

/// Where the cluster's secrets come from.
#[derive(Debug, Clone)]
enum ClusterState {
    New,
    /// `--machine-config`: the cluster's secrets are on another machine.
    Given(String),
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
    /// The NVSwitches passed with every GPU of an HGX host (`gpu::nvswitch`); the node then
    /// gets the fabric manager extension.
    pub nvswitches: Vec<PciAddress>,
    /// CPU pinning and hugepages (`--cpu-pinning`, `--hugepages`), as planned.
    pub placement: Option<crate::tuning::Placement>,
}

/// How the node gets Talos and its machine config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The BDFs of the GPUs passed (first function of each).
    pub gpus: Vec<String>,
    /// The manifests this control plane applies at bootstrap (`nvidia-runtimeclass`,
    /// `nvidia-device-plugin` in a GPU cluster).
    pub inline_manifests: Vec<String>,
    /// The GPU manifests as a file to apply, for a GPU node joining a cluster whose control
    /// planes do not carry them.
    pub runtime_class: Option<PathBuf>,
    pub driver_note: Option<String>,
    pub next_steps: Vec<Step>,
    /// Where the vCPUs, emulator threads and memory went (`--cpu-pinning`, `--hugepages`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<crate::tuning::Placement>,
    /// Where the time went (for `cluster create`'s split); not part of the JSON.
    #[serde(skip)]
    pub timings: NodeTimings,
}

/// The time a node's create spent on its machine config (and seed files), and on its disks,
/// seed volume and domain definition.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeTimings {
    pub config: Duration,
    pub domain: Duration,
}

fn invalid(option: &str, value: &str, reason: &str) -> Error {
    Error::InvalidOption {
        option: option.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// The chips of the GPUs whose functions are in `gpus` (the hostdevs being passed).
fn chips_passed(facts: &hwdetect::HostFacts, gpus: &[Vec<PciAddress>]) -> Vec<GpuChip> {
    let passed: Vec<&hwdetect::Gpu> = facts
        .gpus
        .iter()
        .filter(|g| {
            g.functions.iter().any(|f| {
                f.parse::<PciAddress>()
                    .is_ok_and(|a| gpus.iter().flatten().any(|p| *p == a))
            })
        })
        .collect();
    crate::talos::chips_of(&passed)
}

/// Validates the request against the host, libvirt and the factory. Creates nothing.
pub fn plan(ctx: &Ctx, req: &TalosRequest) -> Result<TalosPlan> {
    plan_claimed(ctx, req, false)
}

/// The name a create without one starts from: `talos`, or `<cluster>-cp` / `<cluster>-w`.
fn name_prefix(req: &TalosRequest) -> String {
    match &req.cluster {
        None => "talos".into(),
        Some(c) => format!(
            "{c}-{}",
            match req.role {
                Role::Controlplane => "cp",
                Role::Worker => "w",
            }
        ),
    }
}

/// [`plan`]; `claimed`: this create already holds the VM directory (an automatic name).
pub(crate) fn plan_claimed(ctx: &Ctx, req: &TalosRequest, claimed: bool) -> Result<TalosPlan> {
    let memory_mib = check_name_and_size(ctx, &req.name, true, req.cpus, &req.memory)?;
    let disk_bytes = names::parse_size("--disk", req.disk.as_deref().unwrap_or(DEFAULT_DISK))?;
    let domain_type: DomainType = ctx.config.value("domain_type").parse()?;
    let cpu: CpuMode = ctx.config.value("cpu_mode").parse()?;

    // The cluster: a new one named after the VM, or the one --cluster names (new or existing).
    let cluster_name = req.cluster.clone().unwrap_or_else(|| req.name.clone());
    machineconfig::validate_cluster_name(&cluster_name)?;
    let cluster = ClusterDir::new(ctx.host, ctx.config, &cluster_name);
    let cluster_state = if let Some(yaml) = &req.machine_config {
        if req.cluster.is_none() || req.version.is_none() {
            return Err(invalid(
                "--machine-config",
                "",
                "needs the --cluster and --version the config was made for",
            ));
        }
        if req.bootstrap {
            return Err(TalosError::BootstrapUnsupported {
                what: "a node whose config is made here (not --machine-config)",
            }
            .into());
        }
        ClusterState::Given(yaml.clone())
    } else if cluster.exists() {
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

    // --bootstrap: the first control plane of a new cluster, started; checked before anything
    // is made.
    if req.bootstrap {
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
    }

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
    let nvswitches =
        crate::gpu::nvswitch::switches_for_create(ctx, &req.name, &gpus, req.gpu_force)?;

    let vm_dir = crate::storage::vm_dir(&ctx.config.storage_dir(ctx.host), &req.name);
    // An early refusal only: the claim at the start of the create is what holds the name.
    if !claimed && vm_dir.exists() {
        return Err(Error::StorageExists {
            name: req.name.clone(),
            path: vm_dir,
        });
    }
    let placement = crate::tuning::place(ctx, &req.name, req.tuning, &gpus, req.cpus, memory_mib)?;

    // Version: the flag (checked against the Image Factory's list, never GitHub's), else the
    // cluster's, else the latest stable release (the only case that asks GitHub).
    let version = match (&req.version, &cluster_state) {
        (Some(v), _) => crate::talos::requested_version(ctx.config, v, req.allow_prerelease)?,
        (None, ClusterState::Existing { record, .. }) => record.version.clone(),
        (None, _) => crate::talos::latest_version(ctx.config)?,
    };

    // Schematic: the NVIDIA preset for GPU nodes, always the guest agent, then --extension.
    // The fabric manager only when the node gets NVSwitches: never for a guest without them.
    let (chips, nvswitch) = if gpus.is_empty() {
        (Vec::new(), false)
    } else {
        let facts = hwdetect::detect(ctx.host);
        (chips_passed(&facts, &gpus), !nvswitches.is_empty())
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
    let (schematic, driver_note) = crate::talos::build_schematic(&sreq, &chips, nvswitch)?;
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
        nvswitches,
        placement,
    })
}

/// Validates, claims the name's storage and the address, creates. `--bootstrap` is the caller's
/// next call: `cluster::create::bootstrap` through the Talos API.
pub fn create_talos(
    ctx: &Ctx,
    req: &TalosRequest,
    progress: &dyn Progress,
) -> Result<TalosCreated> {
    // The name first: a concurrent create of the same name stops here, before its download.
    // Without a name, the claim picks one (and a failed plan gives it back).
    let mut rb = Transaction::new(ctx.hv);
    let named;
    let req = if req.name.is_empty() {
        let mut r = req.clone();
        let own_cluster = req.cluster.is_none();
        r.name = rb.claim_next_name(ctx, &name_prefix(req), &|n| {
            own_cluster && ClusterDir::new(ctx.host, ctx.config, n).exists()
        })?;
        tracing::info!("no name given: {}", r.name);
        named = r;
        &named
    } else {
        req
    };
    let mut plan = plan_claimed(ctx, req, rb.has_dir())?;
    if !rb.has_dir() {
        rb.claim_dir(&plan.vm_dir, &plan.name)?;
    }
    let claim = crate::address::claim_address(
        ctx,
        &req.name,
        &req.network,
        &plan.bridge,
        &mut plan.static_ip,
    )?;
    let created = apply_claimed(ctx, req, &plan, &mut rb, progress);
    claim.settle(created.is_ok());
    let created = created?;
    rb.commit();
    if matches!(plan.cluster_state, ClusterState::Existing { .. }) {
        // A node joining: the record lists it from now on (the first node is in it already).
        let mut record = plan.cluster.load_record()?;
        record.nodes.retain(|n| n.name != plan.name);
        record.nodes.push(apply::node_record(&plan));
        plan.cluster.save_record(&record, false)?;
    }
    Ok(created)
}

/// The v1alpha1 document of a machine config (the first document with `machine`).
fn v1alpha1(yaml: &str) -> Option<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|d| serde_yaml::Value::deserialize(d).ok())
        .find(|v| v.get("machine").is_some())
}

/// The Kubernetes API endpoint a given machine config names (empty when it names none).
pub(crate) fn given_endpoint(yaml: &str) -> String {
    v1alpha1(yaml)
        .and_then(|v| {
            v.get("cluster")?
                .get("controlPlane")?
                .get("endpoint")?
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// A `--machine-config` must be a Talos machine config for this node: its `machine.type` the
/// node's role, its hostname the node's name, and its installer the image this host boots the
/// node from (the schematic follows this host's GPUs; `--dry-run` prints it).
pub fn check_given_config(yaml: &str, role: Role, node: &str, installer: &str) -> Result<()> {
    let bad = |why: String| -> Error {
        TalosError::GivenConfig {
            node: node.into(),
            why,
        }
        .into()
    };
    let doc = v1alpha1(yaml).ok_or_else(|| bad("is not a Talos machine config".into()))?;
    let text = |path: &[&str]| -> String {
        path.iter()
            .try_fold(&doc, |v, k| v.get(k))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let kind = text(&["machine", "type"]);
    if kind != role.as_str() {
        return Err(bad(format!(
            "is for a {kind:?} node, and {node} is a {}",
            role.as_str()
        )));
    }
    let image = text(&["machine", "install", "image"]);
    if image != installer {
        return Err(bad(format!(
            "installs {image:?}, and this host boots {node} from {installer:?}"
        )));
    }
    let hostname = serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|d| serde_yaml::Value::deserialize(d).ok())
        .find_map(|v| {
            let h = if v.get("kind").and_then(|k| k.as_str()) == Some("HostnameConfig") {
                v.get("hostname")
            } else {
                v.get("machine")?.get("network")?.get("hostname")
            };
            h?.as_str().map(str::to_string)
        });
    if hostname.as_deref() != Some(node) {
        return Err(bad(format!(
            "names the host {:?}",
            hostname.unwrap_or_default()
        )));
    }
    Ok(())
}

/// `create talos --dry-run`: what would be made, nothing made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TalosDryRun {
    pub name: String,
    pub role: Role,
    pub cluster: String,
    pub version: TalosVersion,
    pub schematic_id: String,
    pub extensions: Vec<String>,
    /// The image the node installs: its machine config must name it.
    pub installer_image: String,
    pub media: Media,
    pub bridge: String,
    pub mac: String,
    /// The static address given (`auto` picks one only when the create runs).
    pub ip: Option<String>,
    pub gpus: Vec<String>,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_bytes: u64,
}

/// Checks the request against the host, libvirt and the factory like a create, and says what it
/// would make.
pub fn dry_run(ctx: &Ctx, req: &TalosRequest) -> Result<TalosDryRun> {
    let p = plan(ctx, req)?;
    let installer_image = crate::talos::endpoints(ctx.config).installer_image(
        p.media.platform(),
        &p.schematic_id,
        &p.version,
        false,
    );
    Ok(TalosDryRun {
        name: p.name.clone(),
        role: p.role,
        cluster: p.cluster.name.clone(),
        version: p.version.clone(),
        schematic_id: p.schematic_id.clone(),
        extensions: p.extensions.clone(),
        installer_image,
        media: p.media,
        bridge: p.bridge.clone(),
        mac: p.mac.clone(),
        ip: p.static_ip.as_ref().map(|s| s.address.to_string()),
        gpus: apply::node_record(&p).gpus,
        vcpus: p.vcpus,
        memory_mib: p.memory_mib,
        disk_bytes: p.disk_bytes,
    })
}

/// The node's address for messages (`--ip`, else unknown until DHCP).
pub fn node_address(c: &TalosCreated) -> Option<IpAddr> {
    c.ip.as_deref()
        .and_then(|i| i.split('/').next())
        .and_then(|i| i.parse().ok())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use hypervisor::domain::render::to_xml;

    use super::apply::disks_and_boot_order;
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

    /// A node's config as `cluster create --hosts` makes it (fixture service-account key: a
    /// fresh RSA-4096 key takes a minute in a debug build).
    fn made_config(version: &str, role: Role, host: &str, installer: &str) -> String {
        let v = TalosVersion::parse(version).unwrap();
        let opts = talos_image::secrets::SecretsOptions {
            service_account_key: Some(
                include_str!("../../../../talos-image/tests/fixtures/test-only-sa-rsa4096.pem")
                    .into(),
            ),
            ..Default::default()
        };
        let secrets = SecretsBundle::generate_with(&v, opts).unwrap();
        let mut input = talos_image::ConfigInput::new("c1", "https://198.18.2.10:6443", v);
        input.installer_image = installer.into();
        let st = crate::net::parse_static("198.18.2.11/24", None, &[]).unwrap();
        let patch = apply::node_patch(
            host,
            "52:54:00:aa:bb:cc",
            Some(&st),
            false,
            &Default::default(),
            None,
        );
        machineconfig::node_config(&input, &secrets, role, &patch).unwrap()
    }

    #[test]
    fn a_given_machine_config_must_name_the_nodes_role_hostname_and_installer() {
        let img = "factory.talos.dev/nocloud-installer/abc:v1.12.1";
        for version in ["v1.11.5", "v1.12.1"] {
            let yaml = made_config(version, Role::Worker, "c1-w-1", img);
            check_given_config(&yaml, Role::Worker, "c1-w-1", img).unwrap();
            assert_eq!(given_endpoint(&yaml), "https://198.18.2.10:6443");
            let refused = |role, node: &str, image: &str| {
                let e = check_given_config(&yaml, role, node, image).unwrap_err();
                assert_eq!(e.exit_kind(), crate::error::ExitKind::Usage);
                e.to_string()
            };
            let r = refused(Role::Controlplane, "c1-w-1", img);
            assert!(r.contains("is for a \"worker\" node"), "{r}");
            let r = refused(Role::Worker, "c1-w-2", img);
            assert!(r.contains("names the host \"c1-w-1\""), "{version}: {r}");
            let r = refused(
                Role::Worker,
                "c1-w-1",
                "factory.talos.dev/nocloud-installer/def:v1.12.1",
            );
            assert!(r.contains("this host boots c1-w-1 from"), "{r}");
        }
        let e = check_given_config("just: text\n", Role::Worker, "n", img).unwrap_err();
        assert!(
            e.to_string().contains("is not a Talos machine config"),
            "{e}"
        );
    }
}
