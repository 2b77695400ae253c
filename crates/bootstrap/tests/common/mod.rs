//! Shared helpers for the bootstrap integration tests: fixture hosts (from `fixture-builder`)
//! completed with the `/etc` files a fresh Ubuntu 24.04 install has.
// Test helpers panic on a broken fixture, like the tests that call them.
#![allow(dead_code, clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use gpu_vm_bootstrap::{GpuMode, HostState, Options};
use hostio::HostRoot;
use tempfile::TempDir;

/// Ubuntu 24.04's `/etc/default/grub` (trimmed of comments).
pub const UBUNTU_GRUB: &str = "\
# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.
GRUB_DEFAULT=0
GRUB_TIMEOUT_STYLE=hidden
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=`( . /etc/os-release; echo ${NAME:-Ubuntu} ) 2>/dev/null || echo Ubuntu`
GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"
GRUB_CMDLINE_LINUX=\"\"
";

/// How the fixture's default-route NIC is configured in netplan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// cloud-init's `50-cloud-init.yaml` with `dhcp4: true` and a MAC match.
    Dhcp,
    /// `00-installer-config.yaml` with static addresses, routes and DNS (the server installer).
    Static,
    /// No netplan file at all.
    None,
}

/// A fixture host tree plus the detected facts.
pub struct Host {
    pub dir: TempDir,
    pub facts: hwdetect::HostFacts,
}

impl Host {
    pub fn root(&self) -> HostRoot {
        HostRoot::new(self.dir.path())
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Plans with `opts` against the tree's current files.
    pub fn plan(
        &self,
        opts: &Options,
    ) -> Result<gpu_vm_bootstrap::Plan, gpu_vm_bootstrap::Refusal> {
        let facts = hwdetect::detect(&self.root());
        let state = HostState::read(&self.root(), opts);
        gpu_vm_bootstrap::plan(&facts, opts, &state)
    }
}

pub fn write(root: &Path, host_path: &str, content: &str, mode: u32) {
    let p = root.join(host_path.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Builds a committed fixture host and adds the `/etc` files of a fresh install.
pub fn host(name: &str, net: Net) -> Host {
    let dir = fixture_builder::build_host(name);
    let facts = hwdetect::detect(&HostRoot::new(dir.path()));
    add_etc(dir.path(), &facts, net);
    Host { dir, facts }
}

/// Builds a host from a fixture-builder TOML description and adds the `/etc` files.
pub fn host_from_toml(toml: &str, net: Net) -> Host {
    let dir = fixture_builder::build_from_str(toml).unwrap();
    let facts = hwdetect::detect(&HostRoot::new(dir.path()));
    add_etc(dir.path(), &facts, net);
    Host { dir, facts }
}

pub fn add_etc(root: &Path, facts: &hwdetect::HostFacts, net: Net) {
    write(root, "/etc/default/grub", UBUNTU_GRUB, 0o644);
    write(
        root,
        "/etc/group",
        "root:x:0:\nkvm:x:993:\nlibvirt:x:120:\nalice:x:1000:\n",
        0o644,
    );
    let Some(route) = &facts.default_route else {
        return;
    };
    let nic = facts
        .nics
        .iter()
        .find(|n| n.name == route.interface)
        .unwrap();
    if nic.is_bridge {
        return; // already bridged (synthetic-vfio-bound): no NIC stanza to write
    }
    let mac = nic
        .mac
        .clone()
        .unwrap_or_else(|| "52:54:00:00:00:01".into());
    match net {
        Net::Dhcp => write(
            root,
            "/etc/netplan/50-cloud-init.yaml",
            &format!(
                "# This file is generated from information provided by the datasource.\n\
                 network:\n  version: 2\n  ethernets:\n    {n}:\n      match:\n        macaddress: \"{mac}\"\n      dhcp4: true\n      set-name: \"{n}\"\n",
                n = route.interface
            ),
            0o600,
        ),
        Net::Static => {
            let addr = nic
                .addresses
                .iter()
                .find(|a| !a.contains(':'))
                .cloned()
                .unwrap_or_else(|| "198.18.0.10/24".into());
            write(
                root,
                "/etc/netplan/00-installer-config.yaml",
                &format!(
                    "# This is the network config written by 'subiquity'\n\
                     network:\n  ethernets:\n    {n}:\n      addresses:\n      - {addr}\n      nameservers:\n        addresses:\n        - 198.18.0.53\n        search: [lab.example]\n      routes:\n      - to: default\n        via: {gw}\n  version: 2\n",
                    n = route.interface,
                    gw = route.gateway
                ),
                0o600,
            );
        }
        Net::None => {}
    }
}

/// Options as a test user would pass them (vmctl from a fake binary so plans are stable).
pub fn opts(mode: GpuMode) -> Options {
    Options {
        gpu_mode: mode,
        invoking_user: Some("alice".into()),
        ..Options::default()
    }
}

/// Every file under `root` (relative path → bytes and mode), for byte-for-byte comparisons.
pub fn snapshot_tree(root: &Path, skip: &[&str]) -> Vec<(PathBuf, Vec<u8>, u32)> {
    let mut out = Vec::new();
    walk(root, root, skip, &mut out);
    out.sort();
    out
}

fn walk(root: &Path, dir: &Path, skip: &[&str], out: &mut Vec<(PathBuf, Vec<u8>, u32)>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        if skip.iter().any(|s| rel.starts_with(s)) {
            continue;
        }
        let meta = fs::symlink_metadata(&p).unwrap();
        if meta.file_type().is_symlink() {
            out.push((
                rel,
                fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes(),
                0,
            ));
        } else if meta.is_dir() {
            out.push((rel, Vec::new(), meta.permissions().mode()));
            walk(root, &p, skip, out);
        } else {
            out.push((
                rel,
                fs::read(&p).unwrap_or_default(),
                meta.permissions().mode(),
            ));
        }
    }
}

/// Paths whose bytes or mode differ between two tree snapshots (for readable failures).
pub fn tree_diff(a: &[(PathBuf, Vec<u8>, u32)], b: &[(PathBuf, Vec<u8>, u32)]) -> Vec<String> {
    let mut out = Vec::new();
    for x in a {
        match b.iter().find(|y| y.0 == x.0) {
            None => out.push(format!("only before: {}", x.0.display())),
            Some(y) if y != x => out.push(format!("changed: {}", x.0.display())),
            _ => {}
        }
    }
    for y in b {
        if !a.iter().any(|x| x.0 == y.0) {
            out.push(format!("only after: {}", y.0.display()));
        }
    }
    out
}
