//! `vmctl talos schematic|versions|config` (issue 7): thin layers over the `talos-image`
//! library, with base URLs from vmctl's settings (`talos_factory_url`, `github_api_url`); what
//! `create talos` shares with them (errors, schematics, the endpoint check, cluster state) is
//! [`crate::talos`].

use std::path::PathBuf;

use hostio::HostRoot;
use serde::Serialize;
use talos_image::factory::{KnownVersion, VersionSource};
use talos_image::{ConfigInput, SecretsBundle, TalosVersion};

use crate::config::Config;
use crate::error::Result;
use crate::talos::{
    TalosError, build_schematic, check_endpoint, client, host_gpus, schematic_id, write_private,
};
// The commands' inputs, as the binary names them.
pub use crate::talos::{ENDPOINT_FORMS, SchematicRequest};

// ---------------------------------------------------------------------------------------------
// vmctl talos versions

/// `vmctl talos versions --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    /// Where the list came from (the GitHub releases API URL).
    pub source: String,
    /// The highest stable release.
    pub latest: Option<TalosVersion>,
    /// Newest first.
    pub versions: Vec<KnownVersion>,
}

/// Published releases from the GitHub releases API (drafts dropped), or the factory's `/versions`.
pub fn versions(config: &Config, source: VersionSource) -> Result<Versions> {
    let c = client(config)?;
    let versions = c.versions(source)?;
    let latest = versions
        .iter()
        .find(|k| !k.prerelease)
        .map(|k| k.version.clone());
    Ok(Versions {
        source: match source {
            VersionSource::Github => {
                format!("{}/repos/siderolabs/talos/releases", c.endpoints.github_api)
            }
            VersionSource::Factory => format!("{}/versions", c.endpoints.factory),
        },
        latest,
        versions,
    })
}

// ---------------------------------------------------------------------------------------------
// vmctl talos schematic

/// `vmctl talos schematic --json`.
#[derive(Debug, Clone, Serialize)]
pub struct SchematicOut {
    pub id: String,
    /// The canonical YAML the ID is the sha256 of.
    pub yaml: String,
    pub extensions: Vec<String>,
    /// `offline`, `online-verified` (the factory agreed with the offline ID) or `online`.
    pub computed: &'static str,
    /// Why the NVIDIA driver was chosen, when it was chosen automatically.
    pub driver_note: Option<String>,
    /// Why the fabric manager was added without `--fabric-manager`: this host has NVSwitches
    /// (the preview assumes the full passthrough a node gets with `--gpu all`).
    pub fabric_manager_note: Option<String>,
}

/// `vmctl talos schematic`.
pub fn schematic(config: &Config, host: &HostRoot, req: &SchematicRequest) -> Result<SchematicOut> {
    let (gpus, nvswitch) = if req.nvidia.is_some() {
        host_gpus(&hwdetect::detect(host))
    } else {
        (Vec::new(), false)
    };
    let (s, driver_note) = build_schematic(req, &gpus, nvswitch)?;
    let fabric_manager_note = (nvswitch && !req.fabric_manager).then(|| {
        "nvidia-fabricmanager added because this host has NVSwitches: the preview assumes full \
         passthrough (`vmctl create talos --gpu all` passes every GPU and NVSwitch to the node); \
         a node given fewer GPUs gets no switches and no fabric manager"
            .to_string()
    });
    let version = match (&req.version, req.online) {
        (Some(v), true) => {
            Some(client(config)?.resolve_version(VersionSource::Github, Some(v), true)?)
        }
        _ => None,
    };
    let (id, yaml, computed) = schematic_id(config, &s, req.online, version.as_ref())?;
    Ok(SchematicOut {
        id,
        yaml,
        extensions: s
            .customization
            .system_extensions
            .official_extensions
            .clone(),
        computed,
        driver_note,
        fabric_manager_note,
    })
}

// ---------------------------------------------------------------------------------------------
// vmctl talos config

/// `vmctl talos config` options.
#[derive(Debug, Clone)]
pub struct ConfigRequest {
    pub cluster: String,
    pub endpoint: String,
    pub version: Option<String>,
    pub out: PathBuf,
}

/// `vmctl talos config --json`: what was written.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigOut {
    pub cluster: String,
    pub endpoint: String,
    pub version: TalosVersion,
    /// The config contract the documents follow (`v1_10`, `v1_12`, …).
    pub contract: talos_image::Contract,
    pub files: Vec<PathBuf>,
}

/// `secrets.yaml`, `controlplane.yaml`, `worker.yaml` and `talosconfig` in `req.out` (mode 0600),
/// like `talosctl gen secrets` + `talosctl gen config`.
pub fn config(config: &Config, req: &ConfigRequest) -> Result<ConfigOut> {
    check_endpoint(&req.endpoint)?;
    let version = match &req.version {
        Some(v) => TalosVersion::parse(v)?,
        None => crate::talos::latest_version(config)?,
    };
    let input = ConfigInput::new(&req.cluster, &req.endpoint, version.clone());
    input.validate()?;
    let names = [
        "secrets.yaml",
        "controlplane.yaml",
        "worker.yaml",
        "talosconfig",
    ];
    for n in names {
        let p = req.out.join(n);
        if p.exists() {
            return Err(TalosError::OutputExists { path: p }.into());
        }
    }
    let secrets = SecretsBundle::generate(&version)?;
    let generated = talos_image::machineconfig::generate(&input, &secrets)?;
    // The directory is the user's to list (as `talosctl gen config --output-dir` makes it);
    // the files in it are 0600.
    hostio::create_dir_all_mode(&req.out, 0o755).map_err(|source| TalosError::WriteFile {
        path: req.out.clone(),
        source,
    })?;
    let contents = [
        secrets.to_yaml()?,
        generated.controlplane,
        generated.worker,
        generated.talosconfig,
    ];
    let mut files = Vec::new();
    for (n, c) in names.iter().zip(contents) {
        let p = req.out.join(n);
        write_private(&p, c.as_bytes())?;
        files.push(p);
    }
    Ok(ConfigOut {
        cluster: req.cluster.clone(),
        endpoint: req.endpoint.clone(),
        version,
        contract: generated.contract,
        files,
    })
}
