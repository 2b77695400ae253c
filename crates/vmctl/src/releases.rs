//! Ubuntu release data (version ↔ codename, support) and resolution of a release's cloud image
//! through the cache, verified against the publisher's `SHA256SUMS` and, where the keyring is
//! available, its detached signature `SHA256SUMS.gpg` (checked with `gpgv`).

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

/// What was checked about a publisher's file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provenance {
    pub sums_url: String,
    /// True when `SHA256SUMS.gpg` verified with the keyring.
    pub signature_verified: bool,
    /// Human-readable statement, e.g. "checksum only: keyring … not found".
    pub note: String,
}

/// Fetches a file listed in a publisher's `SHA256SUMS` (cloud image or ISO) into the cache.
pub fn fetch_with_sums(
    cache: &ImageCache,
    runner: &dyn CommandRunner,
    keyring: Option<&Path>,
    dir_url: &str,
    file: &str,
    progress: &dyn Progress,
) -> Result<(Fetched, Provenance)> {
    let sums_url = format!("{dir_url}/SHA256SUMS");
    let sums = cache.get_bytes(&sums_url)?;
    let provenance = verify_sums_signature(cache, runner, keyring, &sums_url, &sums)?;
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
    keyring: Option<&Path>,
    sums_url: &str,
    sums: &[u8],
) -> Result<Provenance> {
    let only = |note: String| Provenance {
        sums_url: sums_url.to_string(),
        signature_verified: false,
        note,
    };
    let Some(keyring) = keyring.filter(|k| k.is_file()) else {
        return Ok(only(format!(
            "checksum only: no keyring at {} to check SHA256SUMS.gpg (install ubuntu-keyring or set gpg_keyring)",
            keyring
                .map(|k| k.display().to_string())
                .unwrap_or_else(|| "(none)".into())
        )));
    };
    let sig = match cache.get_bytes(&format!("{sums_url}.gpg")) {
        Ok(sig) => sig,
        Err(Error::HttpStatus { status: 404, .. }) => {
            return Ok(only(
                "checksum only: the mirror has no SHA256SUMS.gpg".into(),
            ));
        }
        Err(e) => return Err(e),
    };
    let tmp = tempdir_in(cache.dir())?;
    let (sums_path, sig_path) = (tmp.join("SHA256SUMS"), tmp.join("SHA256SUMS.gpg"));
    let write = |p: &PathBuf, b: &[u8]| {
        std::fs::write(p, b).map_err(|source| Error::Io {
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
    let _ = std::fs::remove_dir_all(&tmp);
    result.map_err(|source| Error::BadSignature {
        sums_url: sums_url.to_string(),
        keyring: keyring.to_path_buf(),
        source,
    })?;
    Ok(Provenance {
        sums_url: sums_url.to_string(),
        signature_verified: true,
        note: format!("SHA256SUMS signature verified with {}", keyring.display()),
    })
}

fn tempdir_in(dir: &Path) -> Result<PathBuf> {
    let p = dir.join(format!(
        "tmp-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&p).map_err(|source| Error::Io {
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
        let help = err.help().join("\n");
        for r in RELEASES {
            let listed = format!("{} ({})", r.version, r.codename);
            assert!(help.contains(&listed), "{listed} missing: {help}");
        }
        assert_eq!(err.exit_kind(), crate::ExitKind::Usage);
    }

    #[test]
    fn cloud_image_url() {
        let (d, f) = cloud_image_location("https://m.example/", find("noble").unwrap());
        assert_eq!(d, "https://m.example/noble/current");
        assert_eq!(f, "noble-server-cloudimg-amd64.img");
    }

    fn mirror(img: &[u8]) -> (crate::cache::testserver::Server, String) {
        let h = hex::encode(sha2::Sha256::digest(img));
        let sums = format!("{h} *noble-server-cloudimg-amd64.img\n");
        let srv = serve(vec![
            (
                "/noble/current/noble-server-cloudimg-amd64.img".into(),
                img.to_vec(),
            ),
            ("/noble/current/SHA256SUMS".into(), sums.into_bytes()),
            ("/noble/current/SHA256SUMS.gpg".into(), b"sig".to_vec()),
        ]);
        let dir = format!("{}/noble/current", srv.base);
        (srv, dir)
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
            Some(Path::new("/nonexistent.gpg")),
            &dir,
            "noble-server-cloudimg-amd64.img",
            &NoProgress,
        )
        .unwrap();
        assert!(f.downloaded);
        assert!(!p.signature_verified);
        assert!(p.note.starts_with("checksum only"), "{}", p.note);
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
            Some(&keyring),
            &dir,
            "noble-server-cloudimg-amd64.img",
            &NoProgress,
        )
        .unwrap();
        assert!(p.signature_verified);
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
            Some(&keyring),
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
            None,
            &dir,
            "other.img",
            &NoProgress,
        )
        .unwrap_err();
        assert!(matches!(err, Error::NotInChecksums { .. }));
    }
}
