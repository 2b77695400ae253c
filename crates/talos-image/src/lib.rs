//! Talos Linux support: Image Factory schematics, versions, images and machine-config generation.
//!
//! This crate is a library only (no CLI, no printing). `vmctl talos …` and `vmctl create talos`
//! are thin layers over it. The intended flow for `vmctl create talos NAME --gpu`:
//!
//! ```text
//! let ep = Endpoints::from_env();                      // or Endpoints::default() / from config.toml
//! let client = FactoryClient::new(ep.clone())?;
//! let version = client.resolve_version(None, false)?;  // latest stable, or check --version
//! let preset = NvidiaPreset { flavour, driver: Driver::for_chip(chip).0, fabric_manager, extras };
//! let schematic = preset.schematic();
//! let offline = schematic.id();                        // Err(SchematicNotPlainSafe) → use online:
//! let id = client.create_schematic(&schematic)?;       // POST /schematics, compares with offline
//! let url = ep.image_url(&id.id, &version, ImageKind::NocloudQcow2);   // vmctl downloads + caches
//! let installer = ep.installer_image("nocloud", &id.id, &version, false);
//! let secrets = SecretsBundle::generate(&version)?;    // or SecretsBundle::from_yaml(saved)
//! let out = generate(&ConfigInput { .. }, &secrets)?;  // controlplane / worker / talosconfig
//! let user_data = out.node_config(&NodePatch { .. })?; // the NoCloud user-data for this node
//! ```
//!
//! * [`schematic`]: typed schematic, canonical YAML, offline ID, plain-safe refusal.
//! * [`factory`]: endpoints (base URLs), version resolution, online schematic ID, extension list, URLs.
//! * [`nvidia`]: extension presets for GPU nodes.
//! * [`xz`]: streaming `.raw.xz` decompression via the system liblzma.
//! * [`secrets`]: the `talosctl gen secrets` bundle (generate, load, save).
//! * [`machineconfig`]: version-aware `controlplane.yaml`/`worker.yaml`/`talosconfig` and per-node patches.
//!
//! Downloading and caching images (with the record-at-first-download sha256) belong to vmctl;
//! this crate only builds the URLs and offers [`xz::decompress`].

pub mod factory;
pub mod machineconfig;
pub mod nvidia;
pub mod schematic;
pub mod secrets;
pub mod xz;

pub use factory::{Endpoints, FactoryClient, ImageKind, TalosVersion};

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
