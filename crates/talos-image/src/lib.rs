//! Talos Linux support: Image Factory schematics, versions, images and machine-config generation.
//!
//! This crate is a library only (no CLI, no printing). `vmctl talos …` and `vmctl create talos`
//! are thin layers over it. The intended flow for `vmctl create talos NAME --gpu`:
//!
//! ```no_run
//! use talos_image::factory::{Endpoints, FactoryClient, ImageKind, VersionSource};
//! use talos_image::machineconfig::{self, ConfigInput, NodePatch, Role, StaticIp};
//! use talos_image::nvidia::{Driver, DriverChoice, NvidiaPreset};
//! use talos_image::secrets::SecretsBundle;
//!
//! # fn main() -> Result<(), talos_image::Error> {
//! // Base URLs: defaults, VMCTL_GITHUB_API_URL / VMCTL_TALOS_FACTORY_URL, or config.toml values
//! // through Endpoints::new / Endpoints::from_lookup.
//! let ep = Endpoints::from_env();
//! let client = FactoryClient::new(ep.clone())?;
//! // --version vX.Y.Z [--allow-prerelease] → Some("vX.Y.Z"); nothing → highest stable release.
//! let version = client.resolve_version(VersionSource::Github, None, false)?;
//!
//! // --gpu: driver from the detected chip code; DriverChoice::Unknown → print a warning.
//! let (driver, choice) = Driver::for_chip("AD102");
//! let preset = NvidiaPreset::for_vm(driver); // production, + siderolabs/qemu-guest-agent
//! let schematic = preset.schematic();
//! // --online: check extensions, POST, compare IDs (a mismatch is an error naming both).
//! client.check_extensions(&version, &preset.extensions())?;
//! let id = match schematic.id() {
//!     Ok(offline) => offline.id,
//!     // Not plain-safe: tell the user to use --online (or just go online).
//!     Err(_) => client.create_schematic(&schematic)?.id,
//! };
//!
//! // vmctl downloads + caches (progress, resume, sha256 recorded at first download).
//! let image = ep.image(&id, &version, ImageKind::NocloudQcow2);
//! let (_url, _cache_name) = (image.url.clone(), image.file_name());
//!
//! // New cluster: generate and store secrets.yaml (0600); existing: SecretsBundle::from_yaml.
//! let secrets = SecretsBundle::generate(&version)?;
//! let mut input = ConfigInput::new("lab", "https://198.18.0.10:6443", version.clone());
//! input.installer_image = ep.installer_image("nocloud", &id, &version, false);
//! let patch = NodePatch {
//!     hostname: Some("cp1".into()),
//!     static_ip: Some(StaticIp {
//!         mac: "52:54:00:12:34:56".into(),
//!         address: "198.18.0.10/24".parse().expect("cidr"),
//!         gateway: Some("198.18.0.1".parse().expect("ip")),
//!         nameservers: vec!["198.18.0.1".parse().expect("ip")],
//!     }),
//!     gpu: true,
//!     ..Default::default()
//! };
//! // NoCloud user-data for this node (multi-document YAML shaped for `version`).
//! let user_data = machineconfig::node_config(&input, &secrets, Role::Controlplane, &patch)?;
//! // `vmctl talos config`: controlplane.yaml, worker.yaml, talosconfig (write with mode 0600).
//! let files = machineconfig::generate(&input, &secrets)?;
//! // GPU clusters: input.inline_manifests = talos_image::nvidia::inline_manifests()?.
//! # let _ = (choice, user_data, files);
//! # Ok(()) }
//! ```
//!
//! * [`schematic`]: typed schematic, canonical YAML, offline ID, plain-safe refusal.
//! * [`factory`]: endpoints (base URLs), version resolution, online schematic ID, extension list,
//!   image URLs and installer image references.
//! * [`nvidia`]: extension presets for GPU nodes, GPU kernel modules/sysctl, RuntimeClass manifest.
//! * [`xz`]: streaming `.raw.xz` decompression via the system liblzma.
//! * [`secrets`]: the `talosctl gen secrets` bundle (generate, load, save, admin client cert).
//! * [`machineconfig`]: version-aware `controlplane.yaml`/`worker.yaml`/`talosconfig` and per-node patches.
//!
//! Errors: one [`Error`] enum; `VersionNotFound`, `VersionIsPrerelease`, `UnknownExtensions`,
//! `SchematicNotPlainSafe`, `InvalidConfigInput` are bad input (exit 2 in the CLI), the rest failures.

#![forbid(unsafe_code)]

pub mod factory;
pub mod machineconfig;
pub mod nvidia;
pub mod schematic;
pub mod secrets;
pub mod xz;

pub use factory::{Endpoints, FactoryClient, ImageKind, ImageRef, TalosVersion, VersionSource};

pub use machineconfig::{ConfigInput, Contract, GeneratedConfigs, NodePatch, Role, StaticIp};
pub use nvidia::{Driver, Flavour, NvidiaPreset};
pub use schematic::{Schematic, SchematicId};
pub use secrets::SecretsBundle;

/// Everything that can fail in this crate; variants are named after the failed operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("parsing the schematic file")]
    ParseSchematic {
        #[source]
        source: serde_yaml::Error,
    },
    #[error(
        "{field} value {value:?} cannot be given an ID offline ({reason}); use the online mode, which asks the Image Factory for the ID"
    )]
    SchematicNotPlainSafe {
        field: String,
        value: String,
        reason: &'static str,
    },
    #[error("building the HTTP client")]
    HttpClient {
        #[source]
        source: reqwest::Error,
    },
    #[error("requesting {url}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered HTTP {status}: {body}")]
    HttpStatus {
        url: String,
        status: u16,
        body: String,
    },
    #[error("decoding the answer of {url}")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the Image Factory returned schematic ID {online} but the offline computation gave {offline}"
    )]
    SchematicIdMismatch { online: String, offline: String },
    #[error("unknown system extension(s) for Talos {version}: {names:?}")]
    UnknownExtensions { version: String, names: Vec<String> },
    #[error("parsing Talos version {text:?}")]
    ParseVersion {
        text: String,
        #[source]
        source: semver::Error,
    },
    #[error("Talos version {version} is not a published release")]
    VersionNotFound { version: String },
    #[error("Talos version {version} is a pre-release; allow pre-releases to use it")]
    VersionIsPrerelease { version: String },
    #[error("no stable Talos release found at {url}")]
    NoStableRelease { url: String },
    #[error("decompressing xz data")]
    Xz {
        #[source]
        source: std::io::Error,
    },
    #[error("generating the {what} key or certificate")]
    GenerateCert {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("generating the RSA service-account key")]
    GenerateRsa {
        #[source]
        source: rsa::Error,
    },
    #[error("encoding the RSA service-account key")]
    EncodeRsa {
        #[source]
        source: rsa::pkcs1::Error,
    },
    #[error("parsing the secrets bundle")]
    ParseSecrets {
        #[source]
        source: serde_yaml::Error,
    },
    #[error("secrets bundle field {field} is invalid: {reason}")]
    InvalidSecrets { field: &'static str, reason: String },
    #[error("serialising the {what}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("invalid machine-config input {field}: {reason}")]
    InvalidConfigInput { field: &'static str, reason: String },
}

impl Error {
    /// Errors caused by what the user asked for (the CLI exits 2 and prints a `help:` line);
    /// everything else is a failure (exit 1).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::ParseSchematic { .. }
                | Error::SchematicNotPlainSafe { .. }
                | Error::UnknownExtensions { .. }
                | Error::ParseVersion { .. }
                | Error::VersionNotFound { .. }
                | Error::VersionIsPrerelease { .. }
                | Error::ParseSecrets { .. }
                | Error::InvalidSecrets { .. }
                | Error::InvalidConfigInput { .. }
        )
    }
}
