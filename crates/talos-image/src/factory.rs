//! Image Factory and GitHub endpoints: versions, online schematic IDs, extension lists, image URLs.
//!
//! API paths are from siderolabs/image-factory `internal/frontend/http` (see reference talos.md).
//! Every base URL is a parameter so tests and mirrors can point elsewhere.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::schematic::{Schematic, SchematicId};

pub const DEFAULT_GITHUB_API: &str = "https://api.github.com";
pub const DEFAULT_FACTORY: &str = "https://factory.talos.dev";
pub const ENV_GITHUB_API: &str = "VMCTL_GITHUB_API_URL";
pub const ENV_FACTORY: &str = "VMCTL_TALOS_FACTORY_URL";
const GITHUB_PAGE_SIZE: usize = 100;
/// Older releases sit on later pages; stop after this many (1000 releases).
const GITHUB_MAX_PAGES: u32 = 10;

/// Base URLs (no trailing slash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    pub github_api: String,
    pub factory: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints::new(DEFAULT_GITHUB_API, DEFAULT_FACTORY)
    }
}

impl Endpoints {
    pub fn new(github_api: &str, factory: &str) -> Self {
        Endpoints {
            github_api: github_api.trim_end_matches('/').to_string(),
            factory: factory.trim_end_matches('/').to_string(),
        }
    }

    /// Defaults overridden by `VMCTL_GITHUB_API_URL` / `VMCTL_TALOS_FACTORY_URL` when set and non-empty.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// [`Self::from_env`] with an injectable lookup (config files, tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str, d: &str| {
            lookup(k)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| d.to_string())
        };
        Endpoints::new(
            &get(ENV_GITHUB_API, DEFAULT_GITHUB_API),
            &get(ENV_FACTORY, DEFAULT_FACTORY),
        )
    }

    /// `<factory>/image/<id>/<version>/<file>`.
    pub fn image_url(&self, schematic_id: &str, version: &TalosVersion, kind: ImageKind) -> String {
        format!(
            "{}/image/{schematic_id}/{version}/{}",
            self.factory,
            kind.file_name()
        )
    }

    /// [`Self::image_url`] plus the names vmctl needs to cache it.
    pub fn image(&self, schematic_id: &str, version: &TalosVersion, kind: ImageKind) -> ImageRef {
        ImageRef {
            url: self.image_url(schematic_id, version, kind),
            schematic_id: schematic_id.to_string(),
            version: version.clone(),
            kind,
        }
    }

    /// Host (and port) of the factory, as used in installer image references.
    pub fn factory_host(&self) -> &str {
        let rest = self
            .factory
            .split_once("://")
            .map_or(self.factory.as_str(), |(_, r)| r);
        rest.split('/').next().unwrap_or(rest)
    }

    /// The installer image for `machine.install.image`:
    /// `<host>/<platform>-installer[-secureboot]/<id>:<version>` from Talos 1.10 on,
    /// `<host>/installer[-secureboot]/<id>:<version>` before.
    pub fn installer_image(
        &self,
        platform: &str,
        schematic_id: &str,
        version: &TalosVersion,
        secureboot: bool,
    ) -> String {
        let sb = if secureboot { "-secureboot" } else { "" };
        let repo = if version.at_least(1, 10) {
            format!("{platform}-installer{sb}")
        } else {
            format!("installer{sb}")
        };
        format!("{}/{repo}/{schematic_id}:{version}", self.factory_host())
    }
}

/// Volume label Talos' metal platform reads its machine config from (`config.yaml` at the root)
/// when booted with [`METAL_ISO_KERNEL_ARG`] (siderolabs/talos `constants.MetalConfigISOLabel`;
/// also what `talosctl cluster create --config-injection-method metal-iso` attaches).
pub const METAL_ISO_LABEL: &str = "metal-iso";
/// The file on the [`METAL_ISO_LABEL`] volume.
pub const METAL_ISO_CONFIG_FILE: &str = "config.yaml";
/// Kernel argument that points the metal platform at the [`METAL_ISO_LABEL`] volume. A factory
/// ISO takes no boot-time arguments, so it goes into the schematic's `extraKernelArgs`.
pub const METAL_ISO_KERNEL_ARG: &str = "talos.config=metal-iso";

/// Disk and boot images the factory builds for a schematic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageKind {
    NocloudQcow2,
    NocloudRawXz,
    MetalIso,
    MetalRawXz,
}

impl ImageKind {
    pub fn file_name(self) -> &'static str {
        match self {
            ImageKind::NocloudQcow2 => "nocloud-amd64.qcow2",
            ImageKind::NocloudRawXz => "nocloud-amd64.raw.xz",
            ImageKind::MetalIso => "metal-amd64.iso",
            ImageKind::MetalRawXz => "metal-amd64.raw.xz",
        }
    }

    /// The platform the image boots as, which also names its installer image
    /// ([`Endpoints::installer_image`]): the installed system keeps the image's platform.
    pub fn platform(self) -> &'static str {
        match self {
            ImageKind::NocloudQcow2 | ImageKind::NocloudRawXz => "nocloud",
            ImageKind::MetalIso | ImageKind::MetalRawXz => "metal",
        }
    }

    /// Whether the download must go through [`crate::xz::decompress`].
    pub fn is_xz(self) -> bool {
        matches!(self, ImageKind::NocloudRawXz | ImageKind::MetalRawXz)
    }
}

/// One factory image: where to get it and what to call it in a cache.
///
/// The factory publishes no checksums: the downloader records the sha256 at first download
/// (keyed by [`ImageRef::url`]) and verifies re-downloads against it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    pub url: String,
    pub schematic_id: String,
    pub version: TalosVersion,
    pub kind: ImageKind,
}

impl ImageRef {
    /// `talos-v1.12.1-<first 12 hex of the schematic>-nocloud-amd64.qcow2`.
    pub fn file_name(&self) -> String {
        let short: String = self.schematic_id.chars().take(12).collect();
        format!("talos-{}-{short}-{}", self.version, self.kind.file_name())
    }

    /// The name after [`crate::xz::decompress`] (`….raw`), or [`Self::file_name`] if not compressed.
    pub fn decompressed_file_name(&self) -> String {
        let name = self.file_name();
        match name.strip_suffix(".xz") {
            Some(stem) if self.kind.is_xz() => stem.to_string(),
            _ => name,
        }
    }
}

/// A Talos release, displayed as its tag (`v1.12.1`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TalosVersion(pub semver::Version);

impl TalosVersion {
    /// Accepts `v1.12.1` or `1.12.1`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let t = text.trim();
        let bare = t.strip_prefix('v').unwrap_or(t);
        semver::Version::parse(bare)
            .map(TalosVersion)
            .map_err(|source| Error::ParseVersion {
                text: text.to_string(),
                source,
            })
    }

    pub fn is_prerelease(&self) -> bool {
        !self.0.pre.is_empty()
    }

    /// `major.minor >= (major, minor)`.
    pub fn at_least(&self, major: u64, minor: u64) -> bool {
        (self.0.major, self.0.minor) >= (major, minor)
    }
}

impl fmt::Display for TalosVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl Serialize for TalosVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TalosVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TalosVersion::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Where to look up releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VersionSource {
    /// `<github_api>/repos/siderolabs/talos/releases` (draft/prerelease flags are explicit).
    #[default]
    Github,
    /// `<factory>/versions` (prerelease = semver pre-release part).
    Factory,
}

/// One entry of the GitHub releases list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub tag_name: String,
    #[serde(default)]
    pub draft: bool,
    #[serde(default)]
    pub prerelease: bool,
}

/// One entry of `/version/<v>/extensions/official`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfficialExtension {
    pub name: String,
    #[serde(default, rename = "ref")]
    pub reference: String,
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub author: String,
    #[serde(default)]
    pub description: String,
}

/// A known release and whether it is a pre-release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KnownVersion {
    pub version: TalosVersion,
    pub prerelease: bool,
}

/// The answer of `POST /schematics`, checked against the offline computation when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnlineSchematic {
    pub id: String,
    /// Canonical YAML: the factory's `schematic` field, else our offline bytes, else what was posted.
    pub yaml: String,
    /// True when the offline ID was computed and matched.
    pub verified_offline: bool,
}

#[derive(Deserialize)]
struct SchematicAnswer {
    id: String,
    #[serde(default)]
    schematic: Option<String>,
}

/// Blocking HTTP client for the factory and the GitHub API.
#[derive(Debug, Clone)]
pub struct FactoryClient {
    pub endpoints: Endpoints,
    http: reqwest::blocking::Client,
}

impl FactoryClient {
    pub fn new(endpoints: Endpoints) -> Result<Self, Error> {
        let http = reqwest::blocking::Client::builder()
            .user_agent(concat!("vmctl-talos-image/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| Error::HttpClient { source })?;
        Ok(FactoryClient { endpoints, http })
    }

    /// The reqwest client, so vmctl can download images with the same settings.
    pub fn http(&self) -> &reqwest::blocking::Client {
        &self.http
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, Error> {
        let resp = self
            .http
            .get(url)
            .header("Accept", "application/json")
            .send()
            .map_err(|source| Error::Http {
                url: url.to_string(),
                source,
            })?;
        decode(url, resp)
    }

    /// One page (100 entries, newest first) of the GitHub releases list; pages start at 1.
    pub fn github_releases_page(&self, page: u32) -> Result<Vec<Release>, Error> {
        let url = format!(
            "{}/repos/siderolabs/talos/releases?per_page={GITHUB_PAGE_SIZE}&page={page}",
            self.endpoints.github_api
        );
        self.get_json(&url)
    }

    /// The first page of releases: enough for "latest".
    pub fn github_releases(&self) -> Result<Vec<Release>, Error> {
        self.github_releases_page(1)
    }

    /// The factory's `/versions` list (tags).
    pub fn factory_versions(&self) -> Result<Vec<String>, Error> {
        let url = format!("{}/versions", self.endpoints.factory);
        self.get_json(&url)
    }

    /// Published versions, newest first, drafts and unparsable tags dropped.
    pub fn versions(&self, source: VersionSource) -> Result<Vec<KnownVersion>, Error> {
        let mut out: Vec<KnownVersion> = match source {
            VersionSource::Github => releases_to_known(self.github_releases()?),
            VersionSource::Factory => self
                .factory_versions()?
                .iter()
                .filter_map(|t| TalosVersion::parse(t).ok())
                .map(|v| KnownVersion {
                    prerelease: v.is_prerelease(),
                    version: v,
                })
                .collect(),
        };
        out.sort_by(|a, b| b.version.cmp(&a.version));
        out.dedup_by(|a, b| a.version == b.version);
        Ok(out)
    }

    /// `requested = None`: the highest stable release. `Some(v)`: check that `v` is published and,
    /// unless `allow_prerelease`, not a pre-release.
    pub fn resolve_version(
        &self,
        source: VersionSource,
        requested: Option<&str>,
        allow_prerelease: bool,
    ) -> Result<TalosVersion, Error> {
        let mut known = self.versions(source)?;
        // A requested version older than the first GitHub page: walk further pages.
        if source == VersionSource::Github
            && let Some(text) = requested
        {
            let want = TalosVersion::parse(text)?;
            let mut page = 1;
            let mut last_len = known.len();
            while !known.iter().any(|k| k.version == want)
                && last_len >= GITHUB_PAGE_SIZE
                && page < GITHUB_MAX_PAGES
            {
                page += 1;
                let more = self.github_releases_page(page)?;
                last_len = more.len();
                known.extend(releases_to_known(more));
            }
        }
        pick_version(&known, requested, allow_prerelease).map_err(|e| match e {
            Error::NoStableRelease { .. } => Error::NoStableRelease {
                url: match source {
                    VersionSource::Github => self.endpoints.github_api.clone(),
                    VersionSource::Factory => self.endpoints.factory.clone(),
                },
            },
            other => other,
        })
    }

    /// `POST <factory>/schematics`. When the offline ID can be computed, the canonical YAML is posted
    /// and the answer must match it; otherwise the schematic is posted as JSON and the factory's ID is taken.
    pub fn create_schematic(&self, schematic: &Schematic) -> Result<OnlineSchematic, Error> {
        let offline: Option<SchematicId> = match schematic.id() {
            Ok(id) => Some(id),
            Err(Error::SchematicNotPlainSafe { .. }) => None,
            Err(e) => return Err(e),
        };
        let body = match &offline {
            Some(o) => o.yaml.clone(),
            None => serde_json::to_string(schematic).map_err(|source| Error::Decode {
                url: "schematic".into(),
                source,
            })?,
        };
        let url = format!("{}/schematics", self.endpoints.factory);
        let resp = self
            .http
            .post(&url)
            .header("Content-Type", "application/yaml")
            .body(body.clone())
            .send()
            .map_err(|source| Error::Http {
                url: url.clone(),
                source,
            })?;
        let answer: SchematicAnswer = decode(&url, resp)?;
        match offline {
            Some(o) if o.id != answer.id => Err(Error::SchematicIdMismatch {
                online: answer.id,
                offline: o.id,
            }),
            Some(o) => Ok(OnlineSchematic {
                id: answer.id,
                yaml: answer.schematic.unwrap_or(o.yaml),
                verified_offline: true,
            }),
            None => Ok(OnlineSchematic {
                id: answer.id,
                yaml: answer.schematic.unwrap_or(body),
                verified_offline: false,
            }),
        }
    }

    /// `GET <factory>/version/<v>/extensions/official`.
    pub fn official_extensions(
        &self,
        version: &TalosVersion,
    ) -> Result<Vec<OfficialExtension>, Error> {
        let url = format!(
            "{}/version/{version}/extensions/official",
            self.endpoints.factory
        );
        self.get_json(&url)
    }

    /// Error naming every extension the factory does not offer for `version`.
    pub fn check_extensions(&self, version: &TalosVersion, names: &[String]) -> Result<(), Error> {
        let known = self.official_extensions(version)?;
        let unknown: Vec<String> = names
            .iter()
            .filter(|n| !known.iter().any(|k| &k.name == *n))
            .cloned()
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(Error::UnknownExtensions {
                version: version.to_string(),
                names: unknown,
            })
        }
    }
}

fn releases_to_known(releases: Vec<Release>) -> Vec<KnownVersion> {
    releases
        .into_iter()
        .filter(|r| !r.draft)
        .filter_map(|r| {
            let v = TalosVersion::parse(&r.tag_name).ok()?;
            let prerelease = r.prerelease || v.is_prerelease();
            Some(KnownVersion {
                version: v,
                prerelease,
            })
        })
        .collect()
}

fn decode<T: serde::de::DeserializeOwned>(
    url: &str,
    resp: reqwest::blocking::Response,
) -> Result<T, Error> {
    let status = resp.status();
    let text = resp.text().map_err(|source| Error::Http {
        url: url.to_string(),
        source,
    })?;
    if !status.is_success() {
        let mut body: String = text.chars().take(300).collect();
        body = body.trim().to_string();
        return Err(Error::HttpStatus {
            url: url.to_string(),
            status: status.as_u16(),
            body,
        });
    }
    serde_json::from_str(&text).map_err(|source| Error::Decode {
        url: url.to_string(),
        source,
    })
}

/// The pure part of [`FactoryClient::resolve_version`]; `known` is newest first.
pub fn pick_version(
    known: &[KnownVersion],
    requested: Option<&str>,
    allow_prerelease: bool,
) -> Result<TalosVersion, Error> {
    match requested {
        None => known
            .iter()
            .filter(|k| allow_prerelease || !k.prerelease)
            .map(|k| k.version.clone())
            .max()
            .ok_or(Error::NoStableRelease { url: String::new() }),
        Some(text) => {
            let want = TalosVersion::parse(text)?;
            let found =
                known
                    .iter()
                    .find(|k| k.version == want)
                    .ok_or_else(|| Error::VersionNotFound {
                        version: want.to_string(),
                    })?;
            if found.prerelease && !allow_prerelease {
                return Err(Error::VersionIsPrerelease {
                    version: want.to_string(),
                });
            }
            Ok(want)
        }
    }
}

#[cfg(test)]
mod tests;
