//! The release ISO of a desktop install: which release (by default the newest one still
//! supported), where its ISO lives (the releases mirror, or old-releases once past end of life:
//! [`IsoSources`]), fetching it into the content-addressed cache verified against the release's
//! `SHA256SUMS` (+ `SHA256SUMS.gpg`), and taking the installer's kernel and initrd out of it
//! with `xorriso -osirrox` through the runner (no mounting).

use std::io::Read;
use std::path::{Path, PathBuf};

use hostio::{Cmd, CommandRunner};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cache::{Expect, ImageCache, Progress};
use crate::error::{Error, Result};
use crate::releases::{self, RELEASES, Release, SignaturePolicy};

/// Where release ISOs are published, and how their `SHA256SUMS` is authenticated.
pub struct IsoSources<'a, E> {
    /// The releases mirror (`…/releases`): `<url>/<version>/` holds the ISOs and `SHA256SUMS`.
    pub releases_url: &'a str,
    /// Where releases past end of life move (`old-releases.ubuntu.com/releases`).
    pub old_releases_url: &'a str,
    /// The signature policy, asked only when a `SHA256SUMS` is to be used (a local ISO never
    /// needs it, so a bad policy setting does not stop one); `E` is the caller's error.
    pub policy: &'a dyn Fn() -> Result<SignaturePolicy<'a>, E>,
}

impl<E> std::fmt::Debug for IsoSources<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsoSources")
            .field("releases_url", &self.releases_url)
            .field("old_releases_url", &self.old_releases_url)
            .finish_non_exhaustive()
    }
}

/// Where the ISO comes from (`--iso`, or the release).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum IsoRequest {
    Release,
    Path { path: PathBuf },
    Url { url: String },
}

impl IsoRequest {
    pub fn parse(given: Option<&str>) -> Result<Self> {
        Ok(match given {
            None => Self::Release,
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                Self::Url { url: u.into() }
            }
            Some(p) => {
                let path = PathBuf::from(p);
                if !path.is_file() {
                    return Err(Error::InvalidOption {
                        option: "--iso".into(),
                        value: p.into(),
                        reason: "no such file".into(),
                    });
                }
                Self::Path {
                    path: std::fs::canonicalize(&path).unwrap_or(path),
                }
            }
        })
    }
}

/// The ISO to boot, and what was checked about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedIso {
    pub path: PathBuf,
    pub sha256: String,
    /// The URL it came from, or the local path.
    pub origin: String,
    pub checksum_verified: bool,
    pub signature_verified: bool,
    /// In words, e.g. "sha256 matches …/SHA256SUMS; checksum only: …".
    pub verification: String,
}

/// Today as `YYYY-MM` (UTC), the unit of [`Release::end_of_support`].
pub fn this_month() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!("{:04}-{:02}", now.year(), u8::from(now.month()))
}

/// Past end of standard support in `month` (`YYYY-MM`): its ISO is on old-releases.
pub fn is_eol(release: &Release, month: &str) -> bool {
    release.end_of_support < month
}

/// The newest release in the release data that is still supported in `month`.
pub fn default_release(month: &str) -> &'static Release {
    RELEASES
        .iter()
        .rev()
        .find(|r| !is_eol(r, month))
        .unwrap_or(&RELEASES[RELEASES.len() - 1])
}

/// The directory holding the release's ISOs and `SHA256SUMS`:
/// `<ubuntu_releases_url>/<version>` or, past end of life, `<ubuntu_old_releases_url>/<version>`.
pub fn release_dir_url<E>(sources: &IsoSources<'_, E>, release: &Release, month: &str) -> String {
    let base = if is_eol(release, month) {
        sources.old_releases_url
    } else {
        sources.releases_url
    };
    format!("{}/{}", base.trim_end_matches('/'), release.version)
}

/// The desktop ISO listed in `SHA256SUMS` for `version`: `ubuntu-<version>[.<point>]-desktop-amd64.iso`,
/// the highest point release when several are listed. Returns (file name, sha256).
pub fn pick_iso(sums: &str, version: &str) -> Option<(String, String)> {
    let prefix = format!("ubuntu-{version}");
    let mut best: Option<(u32, String, String)> = None;
    for line in sums.lines() {
        let Some((hash, name)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let name = name.trim_start().trim_start_matches('*');
        let Some(rest) = name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix("-desktop-amd64.iso"))
        else {
            continue;
        };
        let point = match rest.strip_prefix('.') {
            None if rest.is_empty() => 0,
            Some(p) => match p.parse::<u32>() {
                Ok(n) => n,
                Err(_) => continue,
            },
            None => continue,
        };
        if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        if best.as_ref().is_none_or(|(b, _, _)| point > *b) {
            best = Some((point, name.to_string(), hash.to_ascii_lowercase()));
        }
    }
    best.map(|(_, n, h)| (n, h))
}

/// A checksum mismatch is bad input here (exit 2): the ISO is not the release's.
fn mismatch_is_usage(e: Error) -> Error {
    match e {
        Error::ChecksumMismatch {
            url,
            expected,
            actual,
        } => Error::IsoChecksum {
            origin: url,
            expected,
            actual,
        },
        other => other,
    }
}

/// Fetches (or checks) the ISO.
pub fn resolve<E: From<Error>>(
    cache: &ImageCache,
    runner: &dyn CommandRunner,
    sources: &IsoSources<'_, E>,
    release: &Release,
    month: &str,
    request: &IsoRequest,
    progress: &dyn Progress,
) -> Result<ResolvedIso, E> {
    match request {
        IsoRequest::Release => {
            let dir = release_dir_url(sources, release, month);
            let sums_url = format!("{dir}/SHA256SUMS");
            let sums = cache.get_bytes(&sums_url)?;
            let (file, _) =
                pick_iso(&String::from_utf8_lossy(&sums), release.version).ok_or_else(|| {
                    Error::NoIsoListed {
                        sums_url: sums_url.clone(),
                        version: release.version.into(),
                    }
                })?;
            from_sums(cache, runner, sources, &dir, &file, progress)
        }
        IsoRequest::Url { url } => {
            let (dir, file) = url.rsplit_once('/').unwrap_or(("", url));
            let sums = cache.get_bytes(&format!("{dir}/SHA256SUMS")).ok();
            let listed = sums
                .as_deref()
                .map(String::from_utf8_lossy)
                .and_then(|s| crate::cache::sha256_from_sums(&s, file));
            if listed.is_some() {
                return from_sums(cache, runner, sources, dir, file, progress);
            }
            let f = cache
                .fetch(url, &Expect::RecordFirst, progress)
                .map_err(mismatch_is_usage)?;
            Ok(ResolvedIso {
                path: f.path,
                sha256: f.sha256,
                origin: url.clone(),
                checksum_verified: false,
                signature_verified: false,
                verification: format!(
                    "NOT verified against a publisher: no SHA256SUMS listing it next to the URL; {}",
                    f.verification
                ),
            })
        }
        IsoRequest::Path { path } => {
            let sha256 = sha256_file(path)?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let sums_url = format!("{}/SHA256SUMS", release_dir_url(sources, release, month));
            let listed = cache
                .get_bytes(&sums_url)
                .ok()
                .and_then(|s| crate::cache::sha256_from_sums(&String::from_utf8_lossy(&s), &name));
            let (checksum_verified, verification) = match listed {
                Some(expected) if expected != sha256 => {
                    return Err(Error::IsoChecksum {
                        origin: path.display().to_string(),
                        expected,
                        actual: sha256,
                    }
                    .into());
                }
                Some(_) => (
                    true,
                    format!(
                        "sha256 matches {sums_url} (checksum only: signature not checked for a local ISO)"
                    ),
                ),
                None => (
                    false,
                    format!("NOT verified: local ISO, {name} not found in {sums_url}"),
                ),
            };
            Ok(ResolvedIso {
                path: path.clone(),
                sha256,
                origin: path.display().to_string(),
                checksum_verified,
                signature_verified: false,
                verification,
            })
        }
    }
}

fn from_sums<E: From<Error>>(
    cache: &ImageCache,
    runner: &dyn CommandRunner,
    sources: &IsoSources<'_, E>,
    dir: &str,
    file: &str,
    progress: &dyn Progress,
) -> Result<ResolvedIso, E> {
    // The same policy as the cloud images: with the keyring present, a mirror without
    // SHA256SUMS.gpg is refused unless explicitly allowed.
    let policy = (sources.policy)()?;
    let (f, prov) = releases::fetch_with_sums(cache, runner, &policy, dir, file, progress)
        .map_err(mismatch_is_usage)?;
    Ok(ResolvedIso {
        path: f.path,
        sha256: f.sha256,
        origin: f.url,
        checksum_verified: true,
        signature_verified: prov.signature_verified(),
        verification: format!(
            "{prov}; the expected sha256 is the one it lists; {}",
            f.verification
        ),
    })
}

fn sha256_file(path: &Path) -> Result<String> {
    let io = |source| Error::Io {
        op: "read ISO",
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Copies `inside` (e.g. `/casper/vmlinuz`) out of the ISO to `out`:
/// `xorriso -osirrox on -indev ISO -extract INSIDE OUT` (xorriso(1), "-osirrox").
pub fn extract(runner: &dyn CommandRunner, iso: &Path, inside: &str, out: &Path) -> Result<()> {
    let argv = [
        "xorriso".to_string(),
        "-osirrox".into(),
        "on".into(),
        "-indev".into(),
        iso.display().to_string(),
        "-extract".into(),
        inside.into(),
        out.display().to_string(),
    ];
    runner
        .run(&Cmd::new(argv))
        .map_err(|source| Error::ExtractFromIso {
            iso: iso.to_path_buf(),
            file: inside.into(),
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn picks_the_highest_point_release_desktop_iso() {
        let sums = format!(
            "{A} *ubuntu-24.04.2-desktop-amd64.iso\n{B} *ubuntu-24.04.3-desktop-amd64.iso\n{A} *ubuntu-24.04.3-live-server-amd64.iso\n{A} *ubuntu-24.04.10x-desktop-amd64.iso\n"
        );
        assert_eq!(
            pick_iso(&sums, "24.04"),
            Some(("ubuntu-24.04.3-desktop-amd64.iso".into(), B.into()))
        );
        let plain = format!("{A}  ubuntu-26.04-desktop-amd64.iso\n");
        assert_eq!(
            pick_iso(&plain, "26.04").unwrap().0,
            "ubuntu-26.04-desktop-amd64.iso"
        );
        assert_eq!(pick_iso(&plain, "24.04"), None);
    }

    #[test]
    fn default_release_is_the_newest_supported_and_eol_goes_to_old_releases() {
        assert_eq!(default_release("2026-11").version, "26.04");
        let questing = releases::find("25.10").unwrap();
        assert!(is_eol(questing, "2026-08"));
        assert!(!is_eol(questing, "2026-07"));
        assert!(!is_eol(releases::find("24.04").unwrap(), "2026-11"));
    }
}
