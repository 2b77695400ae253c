//! Per-VM storage: what a create writes (disk, seed, the VM's directory and the directories vmctl
//! makes above it) is readable by root and the qemu user libvirt hands it to, never by other
//! local users. (That two creates of one name never share a directory is a test of the binary:
//! crates/vmctl-cli/tests/storage.rs.)
//!
//! The "as another user" checks run `cat`/`ls` as `nobody:nogroup` without supplementary groups
//! (setpriv(1), util-linux), so they need root: they are `#[ignore = "lab: …"]` and run with
//! `--include-ignored` (`make test` as root passes it under GVB_LAB=1).

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use guest_media::cache::NoProgress;
use hostio::SystemRunner;
use vmctl::commands::Ctx;
use vmctl::commands::create::{NetworkRequest, UbuntuRequest, create_ubuntu};

use crate::support::{TestHost, no_env, test_host};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6 t@h\n";

/// Runs `program args…` as nobody:nogroup with no supplementary groups.
fn as_nobody<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--",
            program,
        ])
        .args(args)
        .output()
        .expect("setpriv (util-linux)")
}

/// Makes `dir` and its ancestors up to `/` traversable and listable, so a check as `nobody` can
/// only fail because of the modes vmctl gave to what it made below.
pub fn open_up(dir: &Path) {
    let mut p = Some(dir);
    while let Some(d) = p {
        if d == Path::new("/") || d == Path::new("/tmp") {
            break;
        }
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        p = d.parent();
    }
}

/// Every file and directory below `top` (and `top` itself), as root sees them.
fn walk(top: &Path) -> Vec<PathBuf> {
    let mut out = vec![top.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() && !out[i].is_symlink() {
            let mut children: Vec<PathBuf> = std::fs::read_dir(&out[i])
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            children.sort();
            out.extend(children);
        }
        i += 1;
    }
    out
}

/// As nobody: reading each file and listing each directory below `top` fails, while `top`'s
/// parent is searchable (the check is not blocked above). With `searchable`, each directory
/// stays searchable: qemu, running as its own user, must reach its files by path.
pub fn assert_private_to_others(top: &Path, searchable: bool) {
    let parent = top.parent().unwrap();
    let search = as_nobody("test", &[OsStr::new("-x"), parent.as_os_str()]);
    assert!(
        search.status.success(),
        "{} must be searchable by others for this check",
        parent.display()
    );
    let all = walk(top);
    assert!(all.len() > 1, "nothing below {}", top.display());
    for p in all {
        let mode = std::fs::symlink_metadata(&p).unwrap().permissions().mode() & 0o7777;
        if p.is_dir() {
            let ls = as_nobody("ls", &[&p]);
            assert!(
                !ls.status.success(),
                "nobody lists {} (mode {mode:o}): {}",
                p.display(),
                String::from_utf8_lossy(&ls.stdout)
            );
            if searchable {
                let search = as_nobody("test", &[OsStr::new("-x"), p.as_os_str()]);
                assert!(
                    search.status.success(),
                    "{} (mode {mode:o}) must stay searchable for the qemu user",
                    p.display()
                );
            }
        } else {
            let cat = as_nobody("cat", &[&p]);
            assert!(
                !cat.status.success(),
                "nobody reads {} (mode {mode:o}, {} bytes)",
                p.display(),
                cat.stdout.len()
            );
        }
    }
}

fn ubuntu_request(dir: &Path, name: &str, ip: &str) -> UbuntuRequest {
    let key = dir.join("id.pub");
    std::fs::write(&key, KEY).unwrap();
    let base = dir.join("base.qcow2");
    if !base.exists() {
        let st = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&base)
            .arg("64M")
            .status()
            .unwrap();
        assert!(st.success());
    }
    let mut r = UbuntuRequest::new(name);
    r.image = Some(base.display().to_string());
    r.ssh_key = Some(key);
    r.bridge = Some("br0".into());
    r.no_start = true;
    r.password_hash = Some("$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1".into());
    r.network = NetworkRequest::Static {
        ip: ip.into(),
        gateway: Some("198.18.0.1".into()),
        dns: vec![],
    };
    r
}

#[test]
#[ignore = "lab: needs root (reads the files as user nobody); run with GVB_LAB=1 and --include-ignored"]
fn ubuntu_vm_storage_is_unreadable_by_other_users() {
    let TestHost {
        dir,
        tree,
        host,
        config,
        lv,
    } = test_host("intel-z370-no-nvidia");
    // The base image and key stay in `dir`; the VM's storage is under the fixture root.
    open_up(dir.path());
    open_up(tree.path());
    let ctx = Ctx::new(&config, &host, &SystemRunner, &lv).with_env(&no_env);
    let r = ubuntu_request(dir.path(), "sec-modes", "198.18.0.120/24");
    let c = create_ubuntu(&ctx, &r, &NoProgress).unwrap();
    assert!(c.seed.is_file() && c.disk.as_ref().unwrap().is_file());
    // The seed carries the password hash: root and (after libvirt's DAC labelling) qemu only.
    assert_private_to_others(&host.path("/vms"), true);
    for f in [&c.seed, c.disk.as_ref().unwrap()] {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(format!("{mode:o}"), "600", "{}", f.display());
    }
}
