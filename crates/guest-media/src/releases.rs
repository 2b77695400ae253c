//! Ubuntu release data (version ↔ codename, support) and resolution of a release's cloud image
//! through the cache, verified against the publisher's `SHA256SUMS` and, where the keyring is
//! available, its detached signature `SHA256SUMS.gpg` (checked with `gpgv`; a keyring with no
//! signature to check is an error unless explicitly allowed).

use std::path::{Path, PathBuf};

use hostio::{Cmd, CommandRunner};
use serde::Serialize;

use crate::cache::{self, Expect, Fetched, ImageCache, Progress};
use crate::error::{Error, Result};

/// One Ubuntu release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Release {
    pub version: &'static str,
    pub codename: &'static str,
    pub lts: bool,
    /// End of standard support, `YYYY-MM` (https://ubuntu.com/about/release-cycle).
    pub end_of_support: &'static str,
}

/// Releases vmctl knows, oldest first. Data, not scattered constants: add a line per release.
pub const RELEASES: &[Release] = &[
    Release {
        version: "22.04",
        codename: "jammy",
        lts: true,
        end_of_support: "2027-06",
    },
    Release {
        version: "24.04",
        codename: "noble",
        lts: true,
        end_of_support: "2029-05",
    },
    Release {
        version: "25.04",
        codename: "plucky",
        lts: false,
        end_of_support: "2026-01",
    },
    Release {
        version: "25.10",
        codename: "questing",
        lts: false,
        end_of_support: "2026-07",
    },
    Release {
        version: "26.04",
        codename: "resolute",
        lts: true,
        end_of_support: "2031-05",
    },
];

/// The default release for cloud images.
pub const DEFAULT_RELEASE: &str = "24.04";

/// Finds a release by version (`24.04`, `24.04.1`) or codename (`noble`).
pub fn find(release: &str) -> Result<&'static Release> {
    let wanted = release.trim().to_ascii_lowercase();
    let short: String = wanted.split('.').take(2).collect::<Vec<_>>().join(".");
    RELEASES
        .iter()
        .find(|r| r.version == short || r.codename == wanted)
        .ok_or_else(|| Error::UnknownRelease {
            release: release.to_string(),
            supported: RELEASES
                .iter()
                .map(|r| format!("{} ({})", r.version, r.codename))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The directory and file name of a release's amd64 cloud image under `base`
/// (`https://cloud-images.ubuntu.com/<codename>/current/<codename>-server-cloudimg-amd64.img`).
pub fn cloud_image_location(base: &str, release: &Release) -> (String, String) {
    let dir = format!(
        "{}/{}/current",
        base.trim_end_matches('/'),
        release.codename
    );
    let file = format!("{}-server-cloudimg-amd64.img", release.codename);
    (dir, file)
}

/// How a publisher's `SHA256SUMS` must be authenticated.
#[derive(Debug, Clone, Copy)]
pub struct SignaturePolicy<'a> {
    /// The keyring that checks `SHA256SUMS.gpg` (with `gpgv`). None, or no file there: the
    /// checksums are used unauthenticated, and the output says so.
    pub keyring: Option<&'a Path>,
    /// The setting that names the keyring (`gpg_keyring`, `ubuntu_iso_keyring`), for messages.
    pub keyring_setting: &'static str,
    /// The keyring exists but the mirror has no `SHA256SUMS.gpg`: refuse (true, the default),
    /// or go on checksum-only (`require_signature = false`, `--allow-unsigned`). A mirror that
    /// drops the signature must not turn off its check.
    pub require: bool,
}

/// What was done in this run about the signature of `SHA256SUMS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Signature {
    /// `gpgv` verified `SHA256SUMS.gpg` with the keyring, now.
    VerifiedNow { keyring: PathBuf },
    /// Not checked: there is no keyring file.
    NoKeyring {
        keyring: Option<PathBuf>,
        setting: String,
    },
    /// Not checked: the mirror has no `SHA256SUMS.gpg`, and the policy allowed that.
    MissingAllowed,
}

/// What was checked about a publisher's `SHA256SUMS` in this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provenance {
    pub sums_url: String,
    pub signature: Signature,
}

impl Provenance {
    pub fn signature_verified(&self) -> bool {
        matches!(self.signature, Signature::VerifiedNow { .. })
    }
}

impl std::fmt::Display for Provenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} fetched now; ", self.sums_url)?;
        match &self.signature {
            Signature::VerifiedNow { keyring } => write!(
                f,
                "its signature verified now by gpgv with {}",
                keyring.display()
            ),
            Signature::NoKeyring { keyring, setting } => write!(
                f,
                "checksum only: signature NOT checked, no keyring at {} (install ubuntu-keyring or set {setting})",
                keyring
                    .as_deref()
                    .map(|k| k.display().to_string())
                    .unwrap_or_else(|| "(none)".into())
            ),
            Signature::MissingAllowed => write!(
                f,
                "checksum only: signature NOT checked, the mirror has no SHA256SUMS.gpg (allowed by --allow-unsigned / require_signature = false)"
            ),
        }
    }
}

/// Fetches a file listed in a publisher's `SHA256SUMS` (cloud image or ISO) into the cache.
/// The checksums are authenticated as `policy` says before anything is downloaded.
pub fn fetch_with_sums(
    cache: &ImageCache,
    runner: &dyn CommandRunner,
    policy: &SignaturePolicy,
    dir_url: &str,
    file: &str,
    progress: &dyn Progress,
) -> Result<(Fetched, Provenance)> {
    let sums_url = format!("{dir_url}/SHA256SUMS");
    let sums = cache.get_bytes(&sums_url)?;
    let provenance = verify_sums_signature(cache, runner, policy, &sums_url, &sums)?;
    let text = String::from_utf8_lossy(&sums);
    let sha = cache::sha256_from_sums(&text, file).ok_or_else(|| Error::NotInChecksums {
        file: file.to_string(),
        sums_url: sums_url.clone(),
    })?;
    let fetched = cache.fetch(&format!("{dir_url}/{file}"), &Expect::Sha256(sha), progress)?;
    Ok((fetched, provenance))
}

fn verify_sums_signature(
    cache: &ImageCache,
    runner: &dyn CommandRunner,
    policy: &SignaturePolicy,
    sums_url: &str,
    sums: &[u8],
) -> Result<Provenance> {
    let provenance = |signature| Provenance {
        sums_url: sums_url.to_string(),
        signature,
    };
    let Some(keyring) = policy.keyring.filter(|k| k.is_file()) else {
        return Ok(provenance(Signature::NoKeyring {
            keyring: policy.keyring.map(Path::to_path_buf),
            setting: policy.keyring_setting.to_string(),
        }));
    };
    let sig_url = format!("{sums_url}.gpg");
    let sig = match cache.get_bytes(&sig_url) {
        Ok(sig) => sig,
        Err(Error::HttpStatus { status: 404, .. }) if !policy.require => {
            tracing::warn!("{sig_url} is missing; going on checksum-only as configured");
            return Ok(provenance(Signature::MissingAllowed));
        }
        Err(Error::HttpStatus { status: 404, .. }) => {
            return Err(Error::SignatureMissing {
                sig_url,
                keyring: keyring.to_path_buf(),
            });
        }
        Err(e) => return Err(e),
    };
    let tmp = tempdir_in(cache.dir())?;
    let (sums_path, sig_path) = (tmp.join("SHA256SUMS"), tmp.join("SHA256SUMS.gpg"));
    let write = |p: &PathBuf, b: &[u8]| {
        hostio::file::write_new(p, b, TEMP_FILE_MODE).map_err(|source| Error::Io {
            op: "write",
            path: p.clone(),
            source,
        })
    };
    write(&sums_path, sums)?;
    write(&sig_path, &sig)?;
    let result = runner.run(&Cmd::new([
        "gpgv".to_string(),
        "--keyring".to_string(),
        keyring.display().to_string(),
        sig_path.display().to_string(),
        sums_path.display().to_string(),
    ]));
    let _ = hostio::file::remove_tree(&tmp);
    result.map_err(|source| Error::BadSignature {
        sums_url: sums_url.to_string(),
        keyring: keyring.to_path_buf(),
        source,
    })?;
    Ok(provenance(Signature::VerifiedNow {
        keyring: keyring.to_path_buf(),
    }))
}

/// The modes of the directory `SHA256SUMS` and its signature are checked in, and of the two
/// files: readable by all, as the cache around them.
const TEMP_DIR_MODE: u32 = 0o755;
const TEMP_FILE_MODE: u32 = 0o644;

fn tempdir_in(dir: &Path) -> Result<PathBuf> {
    let p = dir.join(format!(
        "tmp-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    hostio::create_dir_all_mode(&p, TEMP_DIR_MODE).map_err(|source| Error::Io {
        op: "create temporary directory",
        path: p.clone(),
        source,
    })?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::NoProgress;
    use crate::cache::testserver::serve;
    use hostio::{Output, RecordingRunner};
    use sha2::Digest;

    #[test]
    fn finds_by_version_or_codename() {
        assert_eq!(find("24.04").unwrap().codename, "noble");
        assert_eq!(find("24.04.2").unwrap().codename, "noble");
        assert_eq!(find("resolute").unwrap().version, "26.04");
        assert_eq!(find("25.10").unwrap().codename, "questing");
        let err = find("23.99").unwrap_err();
        assert!(err.to_string().contains("\"23.99\""), "{err}");
        let Error::UnknownRelease { supported, .. } = &err else {
            panic!("{err}");
        };
        for r in RELEASES {
            let listed = format!("{} ({})", r.version, r.codename);
            assert!(supported.contains(&listed), "{listed} missing: {supported}");
        }
        assert!(err.is_usage(), "{err}");
    }

    #[test]
    fn cloud_image_url() {
        let (d, f) = cloud_image_location("https://m.example/", find("noble").unwrap());
        assert_eq!(d, "https://m.example/noble/current");
        assert_eq!(f, "noble-server-cloudimg-amd64.img");
    }

    fn mirror(img: &[u8]) -> (crate::cache::testserver::Server, String) {
        mirror_signed(img, true)
    }

    /// A release mirror; without `SHA256SUMS.gpg` unless `signed`.
    fn mirror_signed(img: &[u8], signed: bool) -> (crate::cache::testserver::Server, String) {
        let h = hex::encode(sha2::Sha256::digest(img));
        let sums = format!("{h} *noble-server-cloudimg-amd64.img\n");
        let mut files = vec![
            (
                "/noble/current/noble-server-cloudimg-amd64.img".into(),
                img.to_vec(),
            ),
            ("/noble/current/SHA256SUMS".into(), sums.into_bytes()),
        ];
        if signed {
            files.push(("/noble/current/SHA256SUMS.gpg".into(), b"sig".to_vec()));
        }
        let srv = serve(files);
        let dir = format!("{}/noble/current", srv.base);
        (srv, dir)
    }

    fn policy(keyring: Option<&Path>, require: bool) -> SignaturePolicy<'_> {
        SignaturePolicy {
            keyring,
            keyring_setting: "gpg_keyring",
            require,
        }
    }

    #[test]
    fn checksum_only_without_keyring_says_so() {
        let (_srv, dir) = mirror(b"image bytes");
        let tmp = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(tmp.path());
        let runner = RecordingRunner::new();
        let (f, p) = fetch_with_sums(
            &cache,
            &runner,
            &policy(Some(Path::new("/nonexistent.gpg")), true),
            &dir,
            "noble-server-cloudimg-amd64.img",
            &NoProgress,
        )
        .unwrap();
        assert!(f.downloaded);
        assert!(!p.signature_verified());
        let said = p.to_string();
        assert!(
            said.contains("checksum only: signature NOT checked, no keyring at /nonexistent.gpg"),
            "{said}"
        );
        assert!(runner.calls().is_empty());
    }

    #[test]
    fn signature_checked_with_gpgv_when_keyring_exists() {
        let (_srv, dir) = mirror(b"image bytes");
        let tmp = tempfile::tempdir().unwrap();
        let keyring = tmp.path().join("k.gpg");
        std::fs::write(&keyring, b"k").unwrap();
        let cache = ImageCache::new(tmp.path().join("c"));
        std::fs::create_dir_all(cache.dir()).unwrap();
        let runner = RecordingRunner::new();
        let (_, p) = fetch_with_sums(
            &cache,
            &runner,
            &policy(Some(&keyring), true),
            &dir,
            "noble-server-cloudimg-amd64.img",
            &NoProgress,
        )
        .unwrap();
        assert!(p.signature_verified());
        assert!(p.to_string().contains("signature verified now by gpgv"));
        assert_eq!(
            runner.calls()[0][0..3],
            ["gpgv", "--keyring", &keyring.display().to_string()]
        );

        let bad = RecordingRunner::new().answer(["gpgv"], Output::failed(1, "BAD signature"));
        let cache2 = ImageCache::new(tmp.path().join("c2"));
        std::fs::create_dir_all(cache2.dir()).unwrap();
        let err = fetch_with_sums(
            &cache2,
            &bad,
            &policy(Some(&keyring), true),
            &dir,
            "noble-server-cloudimg-amd64.img",
            &NoProgress,
        )
        .unwrap_err();
        assert!(matches!(err, Error::BadSignature { .. }));
        assert!(
            !cache2.dir().join("sha256").exists(),
            "nothing downloaded after a bad signature"
        );
    }

    #[test]
    fn file_missing_from_sums() {
        let (_srv, dir) = mirror(b"x");
        let tmp = tempfile::tempdir().unwrap();
        let err = fetch_with_sums(
            &ImageCache::new(tmp.path()),
            &RecordingRunner::new(),
            &policy(None, true),
            &dir,
            "other.img",
            &NoProgress,
        )
        .unwrap_err();
        assert!(matches!(err, Error::NotInChecksums { .. }));
    }

    #[test]
    fn a_missing_signature_is_refused_when_the_keyring_exists() {
        let (srv, dir) = mirror_signed(b"image bytes", false);
        let tmp = tempfile::tempdir().unwrap();
        let keyring = tmp.path().join("k.gpg");
        std::fs::write(&keyring, b"k").unwrap();
        let cache = ImageCache::new(tmp.path().join("c"));
        let runner = RecordingRunner::new();
        let err = fetch_with_sums(
            &cache,
            &runner,
            &policy(Some(&keyring), true),
            &dir,
            "noble-server-cloudimg-amd64.img",
            &NoProgress,
        )
        .unwrap_err();
        assert!(matches!(err, Error::SignatureMissing { .. }), "{err}");
        assert!(!err.is_usage(), "{err}");
        assert!(runner.calls().is_empty());
        assert!(!cache.dir().join("sha256").exists(), "nothing downloaded");
        assert_eq!(
            srv.ranges.lock().unwrap().len(),
            2,
            "SHA256SUMS and .gpg only"
        );

        // The explicit opt-out: checksum only, and said so.
        let (f, p) = fetch_with_sums(
            &cache,
            &runner,
            &policy(Some(&keyring), false),
            &dir,
            "noble-server-cloudimg-amd64.img",
            &NoProgress,
        )
        .unwrap();
        assert!(f.downloaded);
        assert_eq!(p.signature, Signature::MissingAllowed);
        assert!(p.to_string().contains("signature NOT checked"), "{p}");
    }
}
