//! Making a planned Talos node: the factory image fetched into the cache (qcow2, or `.raw.xz`
//! decompressed and sealed), the cluster's secrets and records for a new cluster, the node's
//! machine config on its seed (NoCloud `cidata` or `metal-iso`), the disks and the domain, all
//! rolled back on failure.

use std::path::{Path, PathBuf};

use guest_media::cache::{Expect, Progress, Verification};
use guest_media::disk;
use guest_media::seed::{self, GuestNetwork, SeedSpec};
use hypervisor::domain::render::to_xml;
use hypervisor::domain::{Disk, Firmware, Metadata, PciAddress};
use talos_image::factory::{ImageKind, METAL_ISO_CONFIG_FILE};
use talos_image::machineconfig::{self, NodePatch};
use talos_image::nvidia::{self};
use talos_image::{ConfigInput, SecretsBundle};

use super::*;
use crate::build::{BridgedVm, now_rfc3339, overlay_and_seed};
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::net::StaticIp;
use crate::talos::{ClusterRecord, TalosError, write_private};
use crate::transaction::Transaction;

/// A factory image in the cache.
pub(super) struct FactoryImage {
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
            let f = crate::media::image_cache(ctx)
                .fetch(&iso.url, &Expect::RecordFirst, progress)
                .map_err(crate::talos::factory_download)?;
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
    let cache = crate::media::image_cache(ctx);
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
        Err(e) => return Err(crate::talos::factory_download(e)),
    }
    let xz = ep.image(&plan.schematic_id, &plan.version, ImageKind::NocloudRawXz);
    let f = cache
        .fetch(&xz.url, &Expect::RecordFirst, progress)
        .map_err(crate::talos::factory_download)?;
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
        reset_machine_id: false,
        runcmd: Vec::new(),
        mounts: Vec::new(),
        driver: None,
    };
    Ok(vec![
        ("user-data", user_data),
        ("meta-data", seed::meta_data(&spec)?),
        ("network-config", seed::network_config(&spec)?),
    ])
}

fn endpoint_for(req: &TalosRequest, plan: &TalosPlan) -> Result<String> {
    match (&plan.cluster_state, &req.endpoint, &plan.static_ip) {
        (ClusterState::Given(yaml), _, _) => Ok(super::given_endpoint(yaml)),
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
    let mut rb = Transaction::new(ctx.hv);
    rb.claim_dir(&plan.vm_dir, &plan.name)?;
    let created = apply_claimed(ctx, req, plan, &mut rb, progress)?;
    rb.commit();
    Ok(created)
}

/// [`apply`] in the VM directory `rb` has claimed; the caller commits `rb` (a cluster create
/// holds one transaction for all its nodes).
pub(crate) fn apply_claimed(
    ctx: &Ctx,
    req: &TalosRequest,
    plan: &TalosPlan,
    rb: &mut Transaction,
    progress: &dyn Progress,
) -> Result<TalosCreated> {
    let endpoint = endpoint_for(req, plan)?;
    let new_cluster = matches!(plan.cluster_state, ClusterState::New);

    // No `vmctl image remove|prune` between the fetch and the define that uses the image.
    let _cache_lease = crate::media::image_cache(ctx).use_lease(progress)?;
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
    let gpu = !plan.gpus.is_empty();
    // A cluster whose control planes carry the NVIDIA manifests: one made by `cluster create`
    // with GPU workers, or a new one whose first node has a GPU.
    let gpu_cluster = match &plan.cluster_state {
        ClusterState::Existing { record, .. } => record.gpu,
        ClusterState::New => gpu,
        // Its control planes' configs were made with the manifests where the secrets are.
        ClusterState::Given(_) => false,
    };
    let mut input = ConfigInput::new(&plan.cluster.name, &endpoint, plan.version.clone());
    input.installer_image = installer_image.clone();
    if gpu_cluster {
        input.inline_manifests = nvidia::inline_manifests()?;
    }
    input.validate()?;

    let (user_data, runtime_class, mut config_time) = match &plan.cluster_state {
        ClusterState::Given(yaml) => {
            super::check_given_config(yaml, plan.role, &plan.name, &installer_image)?;
            (yaml.clone(), None, std::time::Duration::ZERO)
        }
        _ => node_config(req, plan, &input, &endpoint, gpu, gpu_cluster, rb)?,
    };

    let dir = &plan.vm_dir;
    let seed_path = dir.join(match plan.media {
        Media::Nocloud => "seed.iso",
        Media::MetalIso => "config.iso",
    });
    let domain_started = std::time::Instant::now();
    let disk_path = dir.join("disk.qcow2");
    let console_log = dir.join("console.log");
    rb.record_file(&disk_path);
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
    let files_started = std::time::Instant::now();
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
    config_time += files_started.elapsed();
    rb.record_file(&seed_path);
    seed::write_iso_labelled(ctx.runner, plan.media.config_label(), &files, &seed_path)?;
    let (disks, boot_order) = disks_and_boot_order(plan.media, &disk_path, &image.path, &seed_path);

    // The GPUs, then each NVSwitch of a full passthrough as a device of its own.
    let hostdevs: Vec<Vec<PciAddress>> = plan
        .gpus
        .iter()
        .cloned()
        .chain(plan.nvswitches.iter().map(|s| vec![*s]))
        .collect();
    let mut spec = BridgedVm {
        name: &plan.name,
        domain_type: plan.domain_type,
        cpu: &plan.cpu,
        firmware: Firmware::Efi { secure_boot: false },
        memory_mib: plan.memory_mib,
        vcpus: plan.vcpus,
        gpus: &hostdevs,
        bridge: &plan.bridge,
        mac: &plan.mac,
        console_log: &console_log,
        placement: None,
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
        readonly_shares: Vec::new(),
        vgpus: Vec::new(),
    });
    // Held until the domain is defined: its pins are then what the next create sees.
    let (_pin_lock, placement) = crate::build::final_placement(
        ctx,
        &plan.name,
        req.tuning,
        plan.placement.as_ref(),
        &plan.gpus,
        plan.vcpus,
        plan.memory_mib,
    )?;
    if let Some(p) = &placement {
        p.apply_to(&mut spec);
    }
    let started = rb.define_and_start(
        ctx.cancelled,
        &plan.name,
        &to_xml(&spec)?,
        !req.no_start,
        !req.no_autostart,
    )?;
    let timings = NodeTimings {
        config: config_time,
        domain: domain_started.elapsed().saturating_sub(config_time),
    };

    let next_steps = next_steps(plan, runtime_class.as_deref());
    Ok(TalosCreated {
        placement,
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
        gpus: node_record(plan).gpus,
        inline_manifests: if plan.role == machineconfig::Role::Controlplane {
            input
                .inline_manifests
                .iter()
                .map(|m| m.name.clone())
                .collect()
        } else {
            Vec::new()
        },
        runtime_class,
        driver_note: plan.driver_note.clone(),
        next_steps,
        timings,
    })
}

/// The node's machine config, from the cluster's secrets here (generated and stored first for a
/// new cluster), with the GPU manifests as a file for a GPU node joining a cluster without them.
#[allow(clippy::too_many_arguments)]
fn node_config(
    req: &TalosRequest,
    plan: &TalosPlan,
    input: &ConfigInput,
    endpoint: &str,
    gpu: bool,
    gpu_cluster: bool,
    rb: &mut Transaction,
) -> Result<(String, Option<PathBuf>, std::time::Duration)> {
    // Secrets: generated and stored first for a new cluster (RSA-4096 takes a moment).
    let secrets = match &plan.cluster_state {
        ClusterState::Existing { secrets, .. } => (**secrets).clone(),
        ClusterState::New => {
            let s = SecretsBundle::generate(&plan.version)?;
            plan.cluster.create(rb)?;
            write_private(&plan.cluster.secrets(), s.to_yaml()?.as_bytes())?;
            let record = ClusterRecord {
                name: plan.cluster.name.clone(),
                endpoint: endpoint.to_string(),
                version: plan.version.clone(),
                created: now_rfc3339(),
                vip: None,
                gpu: gpu_cluster,
                nodes: vec![node_record(plan)],
            };
            plan.cluster.save_record(&record, true)?;
            let mut tinput = input.clone();
            if let Some(s) = &plan.static_ip {
                tinput.talos_endpoints = vec![s.address.addr().to_string()];
            }
            let tc = machineconfig::talosconfig(&tinput, &s, time::OffsetDateTime::now_utc())?;
            write_private(&plan.cluster.talosconfig(), tc.as_bytes())?;
            s
        }
        ClusterState::Given(_) => unreachable!("a --machine-config node's config is not made here"),
    };
    // A GPU node joining a cluster without the manifests: they are a file to apply.
    let runtime_class = if gpu && !gpu_cluster {
        let p = plan.cluster.runtime_class();
        if !p.exists() {
            write_private(&p, nvidia::manifests_yaml()?.as_bytes())?;
        }
        Some(p)
    } else {
        None
    };

    let patch = node_patch(
        &plan.name,
        &plan.mac,
        plan.static_ip.as_ref(),
        gpu,
        &req.labels,
        req.vip,
    );
    let config_started = std::time::Instant::now();
    let user_data = machineconfig::node_config(input, &secrets, plan.role, &patch)?;
    Ok((user_data, runtime_class, config_started.elapsed()))
}

/// The node's part of its machine config: hostname, static address on its MAC, the GPU
/// settings and label, and the VIP of a control plane.
pub(crate) fn node_patch(
    name: &str,
    mac: &str,
    static_ip: Option<&StaticIp>,
    gpu: bool,
    labels: &std::collections::BTreeMap<String, String>,
    vip: Option<std::net::Ipv4Addr>,
) -> NodePatch {
    let mut labels = labels.clone();
    if gpu {
        let (k, v) = nvidia::GPU_NODE_LABEL;
        labels.insert(k.into(), v.into());
    }
    NodePatch {
        hostname: Some(name.to_string()),
        static_ip: static_ip.map(|s| machineconfig::StaticIp {
            mac: mac.to_string(),
            address: s.address,
            gateway: s.gateway,
            nameservers: s.dns.clone(),
        }),
        gpu,
        labels,
        vip,
        ..Default::default()
    }
}

/// The node as its cluster's record lists it.
pub(crate) fn node_record(plan: &TalosPlan) -> crate::talos::NodeRecord {
    crate::talos::NodeRecord {
        host: None,
        name: plan.name.clone(),
        role: plan.role,
        ip: plan.static_ip.as_ref().map(|s| s.address.addr()),
        gpus: plan
            .gpus
            .iter()
            .filter_map(|fs| fs.first().map(ToString::to_string))
            .collect(),
    }
}

/// The domain's disks and the order the firmware tries them. Nocloud: the overlay (`<os><boot
/// dev='hd'/>`) and the seed. Metal ISO: the blank disk first (no bootloader until Talos has
/// installed itself, so UEFI falls through to the next entry), then the Talos ISO; the config
/// volume is a second cdrom, not bootable.
pub(super) fn disks_and_boot_order(
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
