//! Talos clusters as vmctl keeps them, shared by `vmctl talos …` and `create talos`: the
//! errors of the Talos commands, the Image Factory and GitHub endpoints from the settings, the
//! schematic ([`schematic`]), the Kubernetes API endpoint check, and the cluster state.
//!
//! Cluster state: `<state_dir>/talos/<cluster>/` holds `secrets.yaml` (the `talosctl gen secrets`
//! bundle), `cluster.json` (endpoint, version), `talosconfig` and, for GPU clusters, the
//! `nvidia` RuntimeClass manifest; every file mode 0600 since most hold private keys.

pub mod schematic;

use std::path::{Path, PathBuf};

use hostio::HostRoot;
use serde::{Deserialize, Serialize};
use talos_image::{Endpoints, FactoryClient, SecretsBundle, TalosVersion};

use crate::config::Config;
use crate::error::{CommandFailure, Error, ExitKind, Failure, Result};
pub use schematic::{
    GpuChip, SchematicRequest, build_schematic, chips_of, host_gpus, pick_driver, schematic_id,
};

/// Errors of the Talos commands; the library's own errors pass through [`TalosError::Library`].
#[derive(Debug, thiserror::Error)]
pub enum TalosError {
    #[error(transparent)]
    Library(#[from] talos_image::Error),
    #[error("Talos cluster {cluster:?} already exists ({dir})")]
    ClusterExists { cluster: String, dir: PathBuf },
    #[error("no Talos cluster {cluster:?} in {dir}")]
    NoSuchCluster { cluster: String, dir: PathBuf },
    #[error("new cluster {cluster:?} needs a Kubernetes API endpoint")]
    NoEndpoint { cluster: String },
    #[error(
        "VM `{vm}` runs Talos Linux, which has no SSH: it is managed through its API with talosctl"
    )]
    NoSsh {
        vm: String,
        /// The talosctl argv for this node.
        talosctl: Vec<String>,
    },
    #[error(
        "no GPU to pass is supported by current NVIDIA drivers: {} (Kepler and older ended \
         with the 470 branch, which Talos does not ship)",
        gpus.join(", ")
    )]
    NoSupportedGpu {
        /// `BDF (CHIP)` of each GPU being passed.
        gpus: Vec<String>,
    },
    #[error("{path} already exists")]
    OutputExists { path: PathBuf },
    #[error("read {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `--file` is not a small regular file or not a schematic; never quotes the file.
    #[error("schematic file {path}: {reason}")]
    SchematicFile { path: PathBuf, reason: String },
    #[error("parse cluster record {path}")]
    ParseRecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("write {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("decompress {url} into {path}")]
    Decompress {
        url: String,
        path: PathBuf,
        #[source]
        source: talos_image::Error,
    },
    /// A download from the Image Factory that failed (404, unreachable): its help names the
    /// factory's setting, not the Ubuntu mirrors'.
    #[error(transparent)]
    FactoryDownload(guest_media::Error),
    /// "Latest" asked for (no --version) and the releases could not be listed.
    #[error("cannot find the latest Talos release")]
    ResolveLatest {
        #[source]
        source: talos_image::Error,
    },
    #[error("--bootstrap needs {what}")]
    BootstrapUnsupported { what: &'static str },
    #[error("the --machine-config given for {node} {why}")]
    GivenConfig { node: String, why: String },
}

impl CommandFailure for TalosError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            TalosError::Library(e) if e.is_bad_input() => ExitKind::Usage,
            TalosError::Library(talos_image::Error::HttpStatus { status, .. })
                if (400..500).contains(status) =>
            {
                ExitKind::Usage
            }
            TalosError::FactoryDownload(e) if e.is_usage() => ExitKind::Usage,
            TalosError::ClusterExists { .. }
            | TalosError::NoSuchCluster { .. }
            | TalosError::NoEndpoint { .. }
            | TalosError::NoSupportedGpu { .. }
            | TalosError::NoSsh { .. }
            | TalosError::OutputExists { .. }
            | TalosError::SchematicFile { .. }
            | TalosError::BootstrapUnsupported { .. }
            | TalosError::GivenConfig { .. } => ExitKind::Usage,
            _ => ExitKind::Failure,
        }
    }

    fn help(&self) -> Vec<String> {
        match self {
            TalosError::Library(e) => library_help(e),
            TalosError::ClusterExists { cluster, .. } => vec![
                format!("to add this VM to it, pass `--cluster {cluster}`"),
                "to start a new cluster, pick another name with --cluster NAME".into(),
            ],
            TalosError::NoSuchCluster { cluster, .. } => vec![format!(
                "create its control plane first: `vmctl create talos NAME --cluster {cluster} --ip A.B.C.D/NN`"
            )],
            TalosError::NoEndpoint { .. } => vec![
                "drop --dhcp (a node gets a static address by default, `--ip auto`), or pass --endpoint https://IP:6443".into(),
            ],
            TalosError::NoSsh { talosctl, .. } => vec![format!(
                "talk to the node with talosctl (https://www.talos.dev/latest/talos-guides/install/talosctl/): `{}`",
                talosctl.join(" ")
            )],
            TalosError::NoSupportedGpu { .. } => vec![
                "pass a Maxwell or newer GPU with --gpu SELECTOR (`vmctl gpu status` lists them), \
                 or name the kernel modules yourself with --driver open|proprietary"
                    .into(),
            ],
            TalosError::SchematicFile { .. } => vec![
                "pass an Image Factory schematic (YAML with customization.systemExtensions.officialExtensions, customization.extraKernelArgs), or leave out --file".into(),
            ],
            TalosError::OutputExists { .. } => {
                vec!["choose an empty --out directory; vmctl never overwrites secrets".into()]
            }
            TalosError::FactoryDownload(guest_media::Error::HttpStatus { status: 404, .. }) => vec![
                "the Image Factory has no such image: check --version (`vmctl talos versions` lists them) and --extension".into(),
                "or point setting talos_factory_url (VMCTL_TALOS_FACTORY_URL) at a factory that has it".into(),
            ],
            TalosError::FactoryDownload(_) => vec![
                "check that the Image Factory is reachable, or point setting talos_factory_url (VMCTL_TALOS_FACTORY_URL) at a mirror".into(),
            ],
            TalosError::ResolveLatest { .. } => vec![
                "pass the version with --version vX.Y.Z: an explicit version needs no release list (`vmctl talos versions` prints it where GitHub answers)".into(),
                "or check that GitHub's API answers here; its base URL is setting github_api_url (VMCTL_GITHUB_API_URL)".into(),
            ],
            TalosError::BootstrapUnsupported { .. } => {
                vec!["drop --bootstrap and run the printed steps once the node is up".into()]
            }
            TalosError::GivenConfig { .. } => vec![
                "make the node with `vmctl cluster create NAME --hosts …` on the machine that holds the cluster's secrets: it asks this host for its installer image first (`create talos --dry-run`)".into(),
            ],
            _ => Vec::new(),
        }
    }
}

/// The next steps for an error of the Talos library, in vmctl's words.
fn library_help(e: &talos_image::Error) -> Vec<String> {
    use talos_image::Error as L;
    match e {
        L::VersionNotFound { .. } => {
            vec!["list the published versions with `vmctl talos versions`".into()]
        }
        L::VersionIsPrerelease { .. } => {
            vec!["add --allow-prerelease to use a pre-release".into()]
        }
        L::UnknownExtensions { version, .. } => vec![format!(
            "the factory's list for {version} is at /version/{version}/extensions/official; names look like siderolabs/qemu-guest-agent"
        )],
        L::SchematicNotPlainSafe { .. } => {
            vec!["add --online to let the Image Factory compute the ID".into()]
        }
        L::InvalidConfigInput { field, .. } if *field == "endpoint" => vec![format!(
            "give the Kubernetes API endpoint as {ENDPOINT_FORMS}"
        )],
        L::InvalidConfigInput { field, .. } if *field == "cluster name" => {
            vec!["cluster names are DNS labels: lowercase letters, digits and '-'".into()]
        }
        L::Http { url, .. } | L::HttpStatus { url, .. } | L::Decode { url, .. } => vec![format!(
            "check that {url} is reachable; base URLs: settings talos_factory_url / github_api_url (VMCTL_TALOS_FACTORY_URL / VMCTL_GITHUB_API_URL)"
        )],
        _ => Vec::new(),
    }
}

impl From<TalosError> for Error {
    fn from(e: TalosError) -> Self {
        Error::Command(Failure::new(e))
    }
}

/// The version given with `--version`, never looked up on GitHub: a tag vX.Y.Z, a pre-release
/// only with `allow_prerelease` (told from the tag), and one the Image Factory lists (its
/// `/versions`, the images it can build). When the factory's list cannot be had (offline, with
/// the image already cached) the version is taken as given: the image download tells.
pub fn requested_version(
    config: &Config,
    text: &str,
    allow_prerelease: bool,
) -> Result<TalosVersion> {
    let v = TalosVersion::parse(text)?;
    if v.is_prerelease() && !allow_prerelease {
        return Err(talos_image::Error::VersionIsPrerelease {
            version: v.to_string(),
        }
        .into());
    }
    match client(config)?.versions(talos_image::VersionSource::Factory) {
        Ok(known) if !known.iter().any(|k| k.version == v) => {
            Err(talos_image::Error::VersionNotFound {
                version: v.to_string(),
            }
            .into())
        }
        Ok(_) => Ok(v),
        Err(e) => {
            tracing::info!("the Image Factory's version list: {e}; taking {v} as given");
            Ok(v)
        }
    }
}

/// The latest stable release, from GitHub's release list (setting `github_api_url`); when that
/// list cannot be had, a [`TalosError::ResolveLatest`] whose help suggests --version.
pub fn latest_version(config: &Config) -> Result<TalosVersion> {
    client(config)?
        .resolve_version(talos_image::VersionSource::Github, None, false)
        .map_err(|source| TalosError::ResolveLatest { source }.into())
}

/// A download of a factory image: its HTTP errors become [`TalosError::FactoryDownload`]; the
/// rest (an interrupt, a checksum, the cache) keep their own help and exit code.
pub fn factory_download(e: guest_media::Error) -> Error {
    match e {
        guest_media::Error::HttpStatus { .. } | guest_media::Error::FetchUnreachable { .. } => {
            TalosError::FactoryDownload(e).into()
        }
        other => other.into(),
    }
}

impl From<talos_image::Error> for Error {
    fn from(e: talos_image::Error) -> Self {
        TalosError::Library(e).into()
    }
}

/// The factory and GitHub base URLs from vmctl's settings (flags > VMCTL_* > config.toml).
pub fn endpoints(config: &Config) -> Endpoints {
    Endpoints::new(
        config.value("github_api_url"),
        config.value("talos_factory_url"),
    )
}

/// A client for [`endpoints`].
pub fn client(config: &Config) -> Result<FactoryClient> {
    Ok(FactoryClient::new(endpoints(config))?)
}

// ---------------------------------------------------------------------------------------------
// The Kubernetes API endpoint

/// What `--endpoint` takes, in the words of both `--help` texts (`talos config`, `create
/// talos`); [`check_endpoint`] accepts exactly this, and a test holds the two together.
pub const ENDPOINT_FORMS: &str = "https://HOST:PORT with HOST an IPv4 address, an [IPv6] \
    address or a DNS name, e.g. https://198.18.0.10:6443, https://[fd00::10]:6443 or \
    https://k8s.example:6443";

/// Checks `--endpoint`: `https://HOST:PORT` and nothing after the port, HOST an IPv4 address
/// (dotted quad, no leading zeros), a bracketed IPv6 address or a DNS name (RFC 1123 labels of
/// letters, digits and '-', at most 253 characters), PORT 1-65535. The port is required: the
/// API server listens on 6443, and a URL without one means 443.
pub fn check_endpoint(endpoint: &str) -> Result<()> {
    let bad = |why: &str| -> Error {
        TalosError::Library(talos_image::Error::InvalidConfigInput {
            field: "endpoint",
            reason: format!("{endpoint:?} {why}"),
        })
        .into()
    };
    let rest = endpoint
        .strip_prefix("https://")
        .ok_or_else(|| bad("is not an https:// URL"))?;
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("has an unclosed '['"))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("has no IPv6 address inside [ ]"));
        }
        (h, after.strip_prefix(':'))
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest.trim_end_matches('/'), None),
        }
    };
    let Some(port) = port else {
        return Err(bad("has no port (the API server listens on 6443)"));
    };
    if port.contains(['/', '?', '#']) {
        return Err(bad("has something after the port"));
    }
    if !(!port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|n| n > 0))
    {
        return Err(bad("has a bad port"));
    }
    if rest.starts_with('[') {
        return Ok(());
    }
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        // All digits and dots: only a dotted quad (Rust's parser refuses leading zeros).
        return host
            .parse::<std::net::Ipv4Addr>()
            .map(|_| ())
            .map_err(|_| bad("has a host that is not an IPv4 address"));
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(bad(
            "has a host that is neither an IP address nor a DNS name (letters, digits, '-' and '.')",
        ));
    }
    Ok(())
}

/// Writes `content` to a new file with mode 0600; an existing file is never overwritten.
pub fn write_private(path: &Path, content: &[u8]) -> Result<()> {
    let err = |source| TalosError::WriteFile {
        path: path.to_path_buf(),
        source,
    };
    hostio::file::write_new(path, content, 0o600).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            TalosError::OutputExists {
                path: path.to_path_buf(),
            }
        } else {
            err(e)
        }
    })?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Cluster state

/// `cluster.json`: what later nodes of the cluster need, and its nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub name: String,
    pub endpoint: String,
    pub version: TalosVersion,
    pub created: String,
    /// The control planes' shared address (clusters of more than one control plane).
    #[serde(default)]
    pub vip: Option<std::net::Ipv4Addr>,
    /// The control planes carry the NVIDIA RuntimeClass and device plugin as inline manifests.
    #[serde(default)]
    pub gpu: bool,
    /// The cluster's VMs, control planes first.
    #[serde(default)]
    pub nodes: Vec<NodeRecord>,
}

/// One VM of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub role: talos_image::machineconfig::Role,
    /// Its static address (none for a DHCP node).
    pub ip: Option<std::net::Ipv4Addr>,
    /// The BDFs of the GPUs passed to it.
    #[serde(default)]
    pub gpus: Vec<String>,
    /// The `[hosts.NAME]` it runs on (`cluster create --hosts`); none: this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl ClusterRecord {
    /// The control planes, in creation order.
    pub fn control_planes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes
            .iter()
            .filter(|n| n.role == talos_image::machineconfig::Role::Controlplane)
    }
}

/// Every cluster vmctl made (a `talos/NAME/cluster.json` in the state directory), by name.
pub fn cluster_dirs(host: &HostRoot, config: &Config) -> Vec<ClusterDir> {
    let root = config.state_dir(host).join("talos");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join("cluster.json").is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .map(|n| ClusterDir::new(host, config, n))
        .collect()
}

/// A cluster's directory in vmctl's state directory.
#[derive(Debug, Clone)]
pub struct ClusterDir {
    pub name: String,
    pub dir: PathBuf,
}

impl ClusterDir {
    pub fn new(host: &HostRoot, config: &Config, name: &str) -> Self {
        ClusterDir {
            name: name.to_string(),
            dir: config.state_dir(host).join("talos").join(name),
        }
    }

    pub fn secrets(&self) -> PathBuf {
        self.dir.join("secrets.yaml")
    }
    pub fn record(&self) -> PathBuf {
        self.dir.join("cluster.json")
    }
    pub fn talosconfig(&self) -> PathBuf {
        self.dir.join("talosconfig")
    }
    pub fn runtime_class(&self) -> PathBuf {
        self.dir.join("runtimeclass-nvidia.yaml")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Makes the cluster's directory (0700: the secrets are written into it next), recorded in
    /// `rb`. `create_dir`, not `create_dir_all`: of two creates starting the same cluster at
    /// once, the second is refused here and must not remove the first one's directory.
    pub(crate) fn create(&self, rb: &mut crate::transaction::Transaction) -> Result<()> {
        let dir = &self.dir;
        let werr = |source| TalosError::WriteFile {
            path: dir.clone(),
            source,
        };
        // The state directory may hold VM storage too (/var/lib/vmctl/vms): searchable for the
        // qemu user ([`guest_media::disk::DIR_MODE`]); the clusters below it are root's alone.
        if let Some(clusters) = dir.parent() {
            let mut mode = 0o700;
            if let Some(state) = clusters.parent() {
                hostio::create_dir_all_mode(state, guest_media::disk::DIR_MODE).map_err(werr)?;
                mode = guest_media::disk::dir_mode_in(state, mode);
            }
            hostio::create_dir_all_mode(clusters, mode).map_err(werr)?;
        }
        match hostio::file::make_dir(dir, 0o700) {
            Ok(()) => {
                rb.record(crate::transaction::Undo::Dir(dir.clone()));
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(TalosError::ClusterExists {
                    cluster: self.name.clone(),
                    dir: dir.clone(),
                }
                .into())
            }
            Err(e) => Err(werr(e).into()),
        }
    }

    /// A cluster exists once its directory does (secrets are written first).
    pub fn exists(&self) -> bool {
        self.dir.exists()
    }

    fn read(&self, path: &Path) -> Result<String> {
        std::fs::read_to_string(path).map_err(|source| {
            TalosError::ReadFile {
                path: path.to_path_buf(),
                source,
            }
            .into()
        })
    }

    /// The stored record and secrets.
    pub fn load(&self) -> Result<(ClusterRecord, SecretsBundle)> {
        let record = self.load_record()?;
        let secrets = SecretsBundle::from_yaml(&self.read(&self.secrets())?)?;
        Ok((record, secrets))
    }

    /// The stored record alone.
    pub fn load_record(&self) -> Result<ClusterRecord> {
        let text = self.read(&self.record())?;
        Ok(
            serde_json::from_str(&text).map_err(|source| TalosError::ParseRecord {
                path: self.record(),
                source,
            })?,
        )
    }

    /// Writes the record: a new file (`new`, refused if one exists) or an atomic replace.
    pub fn save_record(&self, record: &ClusterRecord, new: bool) -> Result<()> {
        let json =
            serde_json::to_string_pretty(record).map_err(|source| TalosError::ParseRecord {
                path: self.record(),
                source,
            })?;
        let bytes = format!("{json}\n");
        if new {
            write_private(&self.record(), bytes.as_bytes())
        } else {
            hostio::file::write_atomic(&self.record(), bytes.as_bytes(), 0o600).map_err(|source| {
                TalosError::WriteFile {
                    path: self.record(),
                    source,
                }
                .into()
            })
        }
    }
}

#[cfg(test)]
mod endpoint_tests {
    use super::*;

    /// The URLs [`ENDPOINT_FORMS`] gives as examples.
    fn examples() -> Vec<&'static str> {
        ENDPOINT_FORMS
            .split_whitespace()
            .filter(|w| w.contains("://") && !w.contains("HOST"))
            .map(|w| w.trim_end_matches(','))
            .collect()
    }

    #[test]
    fn the_help_and_the_check_agree() {
        assert_eq!(
            examples(),
            [
                "https://198.18.0.10:6443",
                "https://[fd00::10]:6443",
                "https://k8s.example:6443"
            ]
        );
        for ok in examples().into_iter().chain([
            "https://10.0.0.1:443",
            "https://k8s:6443",
            "https://api.cluster-1.example.com:65535",
            "https://[::1]:6443",
        ]) {
            check_endpoint(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, why) in [
            ("198.18.0.10:6443", "not an https:// URL"),
            ("http://198.18.0.10:6443", "not an https:// URL"),
            ("https://198.18.0.10", "no port"),
            ("https://198.18.0.10/", "no port"),
            ("https://k8s.example", "no port"),
            ("https://[fd00::10]", "no port"),
            ("https://198.18.0.10:port", "bad port"),
            ("https://198.18.0.10:0", "bad port"),
            ("https://198.18.0.10:65536", "bad port"),
            ("https://198.18.0.10:", "bad port"),
            ("https://198.18.0.10:6443/", "after the port"),
            ("https://198.18.0.10:6443/api", "after the port"),
            ("https://198.18.0.10:6443?x", "after the port"),
            ("https://:6443", "no host"),
            ("https://198.18.0.300:6443", "not an IPv4"),
            ("https://198.018.0.10:6443", "not an IPv4"),
            ("https://k8s_api.example:6443", "neither"),
            ("https://-k8s.example:6443", "neither"),
            ("https://k8s..example:6443", "neither"),
            ("https://user@k8s:6443", "neither"),
            ("https://fd00::10:6443", "bad port"),
            ("https://[fd00::zz]:6443", "IPv6"),
            ("https://[fd00::10:6443", "unclosed"),
        ] {
            let err = check_endpoint(bad).unwrap_err();
            assert_eq!(err.exit_kind(), ExitKind::Usage);
            let msg = err.to_string();
            assert!(msg.contains(why), "{bad}: {msg}");
            let help = err.help().join("\n");
            assert!(help.contains(ENDPOINT_FORMS), "{help}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_0600_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secrets.yaml");
        write_private(&p, b"a").unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let err = write_private(&p, b"b").unwrap_err();
        assert_eq!(err.exit_kind(), ExitKind::Usage, "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), b"a");
    }
}
