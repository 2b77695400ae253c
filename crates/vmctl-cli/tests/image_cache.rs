//! The image cache through the binary, against a local mirror: concurrent fetches of one URL,
//! blobs that changed in the cache, the signature policy for `SHA256SUMS.gpg`, and
//! `vmctl image verify`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::Digest;

const IMG: &str = "noble-server-cloudimg-amd64.img";
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/signed-mirror");

/// The test image of `tests/fixtures/signed-mirror` (its SHA256SUMS lists it): 1 MiB of bytes
/// (i * 7) mod 251.
fn image() -> Vec<u8> {
    (0..1usize << 20).map(|i| (i * 7 % 251) as u8).collect()
}

fn sha256(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// An HTTP/1.1 mirror on 127.0.0.1: serves `files`, honours `Range: bytes=N-`, sends bodies in
/// 64 KiB blocks with `pause` after each (a slow mirror), and logs each request's path.
struct Mirror {
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Mirror {
    fn start(files: Vec<(String, Vec<u8>)>, pause: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let files: Arc<HashMap<String, Vec<u8>>> = Arc::new(files.into_iter().collect());
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let (files, log) = (files.clone(), l.clone());
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut line = String::new();
                    if r.read_line(&mut line).is_err() {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let mut from = 0usize;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                            from = v.trim().trim_end_matches('-').parse().unwrap_or(0);
                        }
                    }
                    log.lock().unwrap().push(path.clone());
                    let Some(body) = files.get(&path) else {
                        let _ = s.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                        return;
                    };
                    let status = if from > 0 {
                        "206 Partial Content"
                    } else {
                        "200 OK"
                    };
                    let part = &body[from.min(body.len())..];
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        part.len()
                    );
                    if s.write_all(head.as_bytes()).is_err() {
                        return;
                    }
                    for block in part.chunks(64 << 10) {
                        if s.write_all(block).is_err() {
                            return;
                        }
                        if !pause.is_zero() {
                            std::thread::sleep(pause);
                        }
                    }
                });
            }
        });
        Mirror { base, log }
    }

    /// A release mirror (`<base>/noble/current/…`) with the signed fixture's SHA256SUMS, and its
    /// SHA256SUMS.gpg unless `signed` is false (a mirror that strips the signature).
    fn release(signed: bool) -> Self {
        let fixture = |f: &str| std::fs::read(Path::new(FIXTURE).join(f)).unwrap();
        let mut files = vec![
            (format!("/noble/current/{IMG}"), image()),
            ("/noble/current/SHA256SUMS".into(), fixture("SHA256SUMS")),
        ];
        if signed {
            files.push((
                "/noble/current/SHA256SUMS.gpg".into(),
                fixture("SHA256SUMS.gpg"),
            ));
        }
        Self::start(files, Duration::ZERO)
    }

    fn requests_for(&self, suffix: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|p| p.ends_with(suffix)).count()
    }
}

/// A scratch host: the bridge br0 in a fixture root, an SSH key, storage and cache directories.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("root/sys/class/net/br0/bridge")).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        std::fs::write(
            dir.path().join("id.pub"),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6 t@h\n",
        )
        .unwrap();
        Host { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `vmctl` with this host's settings; the keyring is the signed fixture's.
    fn vmctl(&self, mirror: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vmctl"));
        for (k, _) in std::env::vars() {
            if k.starts_with("VMCTL_") {
                c.env_remove(k);
            }
        }
        c.env("VMCTL_STORAGE_DIR", "/vms")
            .env("VMCTL_IMAGE_CACHE", "/cache")
            .env("VMCTL_UBUNTU_CLOUD_URL", mirror)
            .env("VMCTL_GPG_KEYRING", Path::new(FIXTURE).join("keyring.gpg"))
            .env("HOME", self.path("home"))
            .env_remove("SUDO_USER")
            .arg("--host-root")
            .arg(self.path("root"))
            .args(["--connect", "test:///default"])
            .stdin(Stdio::null());
        c
    }

    fn create(&self, mirror: &str, name: &str, extra: &[&str]) -> Output {
        self.vmctl(mirror)
            .args(["create", "ubuntu", name, "--release", "noble", "--no-start"])
            .args(["--domain-type", "qemu", "--bridge", "br0", "--ssh-key"])
            .arg(self.path("id.pub"))
            .args(extra)
            .output()
            .unwrap()
    }

    fn blob(&self, sha: &str) -> PathBuf {
        self.path("root/cache/sha256").join(sha)
    }

    fn vms_left(&self) -> usize {
        files_in(&self.path("root/vms")).len()
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Flips one bit of the byte at `at`, keeping the size (the mtime moves, as any write moves it).
fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x01;
    f.write_all_at(&b, at).unwrap();
}

/// Every blob's bytes hash to its name; nothing is left in partial/.
fn assert_cache_sound(cache: &Path) {
    for blob in files_in(&cache.join("sha256")) {
        let name = blob.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            sha256(&std::fs::read(&blob).unwrap()),
            name,
            "the blob {} does not hash to its name",
            blob.display()
        );
    }
    assert_eq!(files_in(&cache.join("partial")), Vec::<PathBuf>::new());
}

fn concurrent_fetches(n: usize) {
    let data: Vec<u8> = (0..4usize << 20).map(|i| (i * 13 % 241) as u8).collect();
    // 64 blocks of 64 KiB, 5 ms apart: a third of a second, so the processes overlap.
    let m = Mirror::start(
        vec![("/img.qcow2".into(), data.clone())],
        Duration::from_millis(5),
    );
    let h = Host::new();
    let url = format!("{}/img.qcow2", m.base);
    let children: Vec<_> = (0..n)
        .map(|_| {
            h.vmctl(&m.base)
                .args(["image", "fetch", &url])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    assert_cache_sound(&h.path("root/cache"));
    for o in &outs {
        assert!(
            o.status.success(),
            "a concurrent fetch failed: {}",
            text(&o.stderr)
        );
        assert_eq!(
            text(&o.stdout).trim(),
            h.blob(&sha256(&data)).display().to_string()
        );
    }
    assert_eq!(files_in(&h.path("root/cache/sha256")).len(), 1);
    assert_eq!(
        sha256(&std::fs::read(h.blob(&sha256(&data))).unwrap()),
        sha256(&data)
    );
    assert_eq!(
        m.requests_for("/img.qcow2"),
        1,
        "one download, reused by the others"
    );
    assert!(
        outs.iter()
            .any(|o| text(&o.stderr).contains("waiting for another vmctl")),
        "no fetch waited for the lock"
    );
}

#[test]
fn two_concurrent_fetches_of_one_url_store_one_sound_blob() {
    concurrent_fetches(2);
}

#[test]
fn eight_concurrent_fetches_of_one_url_store_one_sound_blob() {
    concurrent_fetches(8);
}

#[test]
fn a_flipped_byte_in_a_cached_blob_is_moved_aside_and_fetched_again() {
    let data = image();
    let sha = sha256(&data);
    let m = Mirror::start(vec![("/img".into(), data.clone())], Duration::ZERO);
    let h = Host::new();
    let url = format!("{}/img", m.base);
    let fetch = || {
        h.vmctl(&m.base)
            .args(["image", "fetch", &url, "--sha256", &sha])
            .output()
            .unwrap()
    };
    let first = fetch();
    assert!(first.status.success(), "{}", text(&first.stderr));
    flip_byte(&h.blob(&sha), 4096);

    let again = fetch();
    let err = text(&again.stderr);
    assert!(again.status.success(), "{err}");
    assert_eq!(
        text(&again.stdout).trim(),
        h.blob(&sha).display().to_string()
    );
    assert_eq!(
        sha256(&std::fs::read(h.blob(&sha)).unwrap()),
        sha,
        "the corrupt blob was used"
    );
    let aside = files_in(&h.path("root/cache/quarantine"));
    assert_eq!(aside.len(), 1, "{err}");
    assert_ne!(sha256(&std::fs::read(&aside[0]).unwrap()), sha);
    assert!(err.contains(&aside[0].display().to_string()), "{err}");
    assert!(!err.contains("already cached"), "{err}");
    assert_eq!(m.requests_for("/img"), 2);
    assert_cache_sound(&h.path("root/cache"));

    // Used again with its seal intact: not downloaded, and the output says the bytes were not
    // re-read now.
    let third = fetch();
    assert!(third.status.success());
    assert!(
        text(&third.stderr).contains("seal intact"),
        "{}",
        text(&third.stderr)
    );
    assert_eq!(m.requests_for("/img"), 2);
}

#[test]
fn create_never_uses_a_changed_base_image_and_says_what_was_checked() {
    let m = Mirror::release(true);
    let h = Host::new();
    let sha = sha256(&image());
    let first = h.create(&m.base, "ic-flip1", &["--json"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let v: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(v["base_sha256"], sha.as_str());
    let said = v["verification"].to_string();
    assert!(said.contains("signature"), "{said}");

    flip_byte(&h.blob(&sha), 1000);
    let second = h.create(&m.base, "ic-flip2", &[]);
    let err = text(&second.stderr);
    assert!(second.status.success(), "{err}");
    assert_eq!(
        sha256(&std::fs::read(h.blob(&sha)).unwrap()),
        sha,
        "the changed blob was used: {err}"
    );
    assert_eq!(files_in(&h.path("root/cache/quarantine")).len(), 1, "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("base image:"))
        .unwrap_or_default();
    assert!(
        line.contains("moved") && line.contains("quarantine") && line.contains("downloaded now"),
        "{err}"
    );
    assert!(!line.contains("seal intact"), "{err}");
    assert_eq!(m.requests_for(IMG), 2);

    // A third create: the seal is intact, the blob is not re-read, and the output says so.
    let third = h.create(&m.base, "ic-flip3", &[]);
    let err = text(&third.stderr);
    assert!(third.status.success(), "{err}");
    assert!(
        err.contains("seal intact") && err.contains("signature verified now"),
        "{err}"
    );
    assert_eq!(m.requests_for(IMG), 2);
}

#[test]
fn a_stripped_signature_is_refused_when_a_keyring_is_configured() {
    let m = Mirror::release(false);
    let h = Host::new();
    let out = h.create(&m.base, "ic-unsigned", &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("SHA256SUMS.gpg"), "{err}");
    let help: Vec<_> = err.lines().filter(|l| l.starts_with("help:")).collect();
    assert!(
        help.iter()
            .any(|l| l.contains("--allow-unsigned") && l.contains("require_signature = false")),
        "{err}"
    );
    assert_eq!(h.vms_left(), 0);
    assert_eq!(m.requests_for(IMG), 0, "nothing downloaded");

    // The explicit opt-outs: the flag, and the setting (here through its environment variable).
    let out = h.create(&m.base, "ic-unsigned", &["--allow-unsigned"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("signature NOT checked"), "{err}");
    let out = h
        .vmctl(&m.base)
        .env("VMCTL_REQUIRE_SIGNATURE", "false")
        .args([
            "create",
            "ubuntu",
            "ic-unsigned2",
            "--release",
            "noble",
            "--no-start",
        ])
        .args(["--domain-type", "qemu", "--bridge", "br0", "--ssh-key"])
        .arg(h.path("id.pub"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_stripped_signature_is_refused_for_the_desktop_iso_too() {
    // The policy only needs SHA256SUMS without its .gpg: no ISO is ever served.
    let listed = format!("{} *ubuntu-24.04.3-desktop-amd64.iso\n", "a".repeat(64));
    let m = Mirror::start(
        vec![("/24.04/SHA256SUMS".into(), listed.into_bytes())],
        Duration::ZERO,
    );
    let h = Host::new();
    let out = h
        .vmctl(&m.base)
        .env("VMCTL_UBUNTU_RELEASES_URL", &m.base)
        .env("VMCTL_UBUNTU_OLD_RELEASES_URL", &m.base)
        .env(
            "VMCTL_UBUNTU_ISO_KEYRING",
            Path::new(FIXTURE).join("keyring.gpg"),
        )
        .args([
            "create",
            "ubuntu",
            "ic-desk",
            "--desktop",
            "--release",
            "24.04",
        ])
        .args([
            "--domain-type",
            "qemu",
            "--bridge",
            "br0",
            "--firmware",
            "bios",
        ])
        .args(["--password-prompt", "--ssh-key"])
        .arg(h.path("id.pub"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"s3cret horse\n")?;
            c.wait_with_output()
        })
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("SHA256SUMS.gpg"), "{err}");
    assert!(
        err.lines().any(|l| l.starts_with("help:")
            && l.contains("--allow-unsigned")
            && l.contains("require_signature = false")),
        "{err}"
    );
    assert_eq!(h.vms_left(), 0);
}

#[test]
fn image_verify_rehashes_and_moves_corrupt_blobs_aside() {
    let data = image();
    let sha = sha256(&data);
    let m = Mirror::start(vec![("/img".into(), data.clone())], Duration::ZERO);
    let h = Host::new();
    let url = format!("{}/img", m.base);
    let ok = h
        .vmctl(&m.base)
        .args(["image", "fetch", &url])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", text(&ok.stderr));

    // Nothing named: bad usage.
    let out = h.vmctl(&m.base).args(["image", "verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    let out = h
        .vmctl(&m.base)
        .args(["image", "verify", "--all", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["blobs"][0]["sha256"], sha.as_str());
    assert_eq!(v["blobs"][0]["result"]["kind"], "ok");
    assert_eq!(v["corrupt"], 0);

    // A flip whose mtime is put back: the seal cannot see it (a use would not re-hash it), but
    // `image verify` re-hashes every blob.
    let blob = h.blob(&sha);
    let mtime = std::fs::metadata(&blob).unwrap().modified().unwrap();
    flip_byte(&blob, 77);
    std::fs::File::options()
        .write(true)
        .open(&blob)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let out = h
        .vmctl(&m.base)
        .args(["image", "verify", &sha])
        .output()
        .unwrap();
    let (stdout, err) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{err}");
    assert!(
        stdout.contains("CORRUPT") && stdout.contains("quarantine"),
        "{stdout}"
    );
    assert!(!blob.exists());
    assert_eq!(files_in(&h.path("root/cache/quarantine")).len(), 1);

    // The next fetch downloads it again.
    let again = h
        .vmctl(&m.base)
        .args(["image", "fetch", &url])
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(sha256(&std::fs::read(&blob).unwrap()), sha);
    let out = h
        .vmctl(&m.base)
        .args(["image", "verify", "--all"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stdout));
}
