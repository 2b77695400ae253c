//! The modes of the files and directories guest-media creates, under a strict (077) and a
//! permissive (000) umask: every one must be exactly its documented mode, whatever the umask of
//! the vmctl that made it. umask(2) is process-wide, so these tests are a binary of their own
//! ([`fixture_builder::umask`] makes them take turns).
#![allow(clippy::unwrap_used)]

// The download tests' server, without the `test-server` feature (a crate cannot turn on its own).
#[allow(dead_code)]
#[path = "../src/cache/testserver.rs"]
mod testserver;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use fixture_builder::umask::{self, assert_mode};
use guest_media::cache::{Expect, ImageCache, NoProgress};
use guest_media::{disk, seed};

/// Every entry below `dir`: directories 0755, lock files, seals and URL records 0644, blobs and
/// derived files 0444.
fn assert_cache_modes(dir: &Path, mask: u32) {
    assert_mode(dir, 0o755, mask);
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            assert_cache_modes(&p, mask);
        } else if rel.ends_with(".json") || rel.ends_with(".lock") || rel.ends_with(".partial") {
            assert_mode(&p, 0o644, mask);
        } else {
            assert_mode(&p, 0o444, mask);
        }
    }
}

#[test]
fn cache_files_and_directories_have_their_modes_under_any_umask() {
    umask::each(|mask| {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(tmp.path().join("lib/images"));
        let server = testserver::serve(vec![
            ("/img".into(), b"image bytes".to_vec()),
            ("/img2".into(), b"other image".to_vec()),
        ]);
        let url = format!("{}/img", server.base);
        cache
            .fetch(&url, &Expect::RecordFirst, &NoProgress)
            .unwrap();
        cache
            .derived::<guest_media::Error>("talos/x.raw", &NoProgress, &mut |w| {
                w.write_all(b"derived").unwrap();
                Ok(())
            })
            .unwrap();
        // An interrupted download leaves its partial file.
        server.behaviour.lock().unwrap().cut_after = Some(3);
        let cut = format!("{}/img2", server.base);
        assert!(
            cache
                .fetch(&cut, &Expect::RecordFirst, &NoProgress)
                .is_err()
        );
        let partials = std::fs::read_dir(cache.dir().join("partial"))
            .unwrap()
            .count();
        assert_eq!(partials, 1, "the interrupted download's partial file");
        assert_cache_modes(cache.dir(), mask);
        assert_mode(&tmp.path().join("lib"), 0o755, mask);
    });
}

#[test]
fn vm_files_are_private_under_any_umask() {
    umask::each(|mask| {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("known_hosts");
        disk::write_private(&p, b"").unwrap();
        assert_mode(&p, disk::FILE_MODE, mask);
        let kernel = tmp.path().join("vmlinuz");
        disk::produce_private(&kernel, |staged| {
            std::fs::write(staged, "kernel").unwrap();
            std::fs::set_permissions(staged, std::fs::Permissions::from_mode(0o666)).unwrap();
            Ok(())
        })
        .unwrap();
        assert_mode(&kernel, disk::FILE_MODE, mask);
        let iso = tmp.path().join("seed.iso");
        let files = vec![("user-data", "#cloud-config\n".to_string())];
        seed::write_iso(&hostio::RecordingRunner::new(), &files, &iso).unwrap();
        assert_mode(&iso, disk::FILE_MODE, mask);
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(left.len(), 3, "no staging directory left: {left:?}");
    });
}
