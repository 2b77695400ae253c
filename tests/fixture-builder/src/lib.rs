//! Builds real-shaped host trees (sysfs symlinks included) from compact host descriptions.
//!
//! A description is TOML (see `tests/fixtures/hosts/*.toml` for the committed hosts and
//! [`HostDesc`] for every field). The tree follows the kernel's layout, with relative symlinks
//! as the kernel makes them:
//!
//! - `sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/{vendor,device,class,...}`
//! - `sys/bus/pci/devices/<BDF>` → `../../../devices/pci0000:00/.../<BDF>`
//! - `<device>/iommu_group` → `../../../../kernel/iommu_groups/N`,
//!   `<device>/driver` → `../../../../bus/pci/drivers/<driver>`
//! - `sys/kernel/iommu_groups/N/devices/<BDF>` → the device
//! - `sys/class/net/<if>` → `../../devices/.../net/<if>` (with `device`, `bridge/`, `brport/`,
//!   `master`), `proc/net` → `self/net` like the real procfs
//! - `proc/{cpuinfo,cmdline}`, `proc/net/{route,fib_trie,if_inet6}`, `etc/os-release` →
//!   `../usr/lib/os-release`, `dev/kvm`, `sys/module/nvidia/`
//! - `sys/firmware/efi/efivars/{SecureBoot,LoaderInfo}-<guid>` in efivarfs's layout (4 bytes of
//!   attributes, then the data), `sys/kernel/security/lockdown`, `proc/sys/kernel/osrelease`
//! - literal `[files]` (the boot loader's config, dpkg's status, apt's lists, modules, …)
//!
//! A description may start from a committed host: `base = "<name>"` takes that host's
//! description and lays this one over it (tables merge key by key, everything else replaces).
//!
//! ```no_run
//! let host = fixture_builder::build_host("intel-z170-gtx960"); // a committed host
//! let root = host.path(); // use as --host-root; deleted when `host` drops
//! let custom = fixture_builder::build_from_str(r#"
//!     [cpu]
//!     vendor = "amd"
//!     [[device]]
//!     bdf = "01:00.0"
//!     class = "0300"
//!     id = "10de:2204"
//!     group = 1
//! "#).unwrap();
//! # let _ = (root, custom);
//! ```

#![forbid(unsafe_code)]

pub mod umask;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use tempfile::TempDir;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("parsing host description")]
    ParseDescription(#[source] toml::de::Error),
    #[error("reading host description or capture {path}")]
    ReadDescription {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid host description: {0}")]
    Invalid(String),
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A host: CPU, OS, kernel cmdline, PCI devices with IOMMU groups, NICs.
/// Every section is optional; what is left out is simply absent from the tree.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostDesc {
    /// Free text: where the host comes from.
    #[serde(default)]
    pub source: Option<String>,
    /// A committed host this description extends (already merged in by [`parse`]).
    #[serde(default)]
    pub base: Option<String>,
    /// `/proc/sys/kernel/osrelease` (`uname -r`).
    pub kernel_release: Option<String>,
    /// UEFI boot: creates `/sys/firmware/efi`. `None` → a BIOS boot.
    pub efi: Option<EfiDesc>,
    /// The active lockdown mode (`none`, `integrity`, `confidentiality`):
    /// `/sys/kernel/security/lockdown`.
    pub lockdown: Option<String>,
    /// `/sys/module/nvidia/version` (the loaded module's version; implies `nvidia_module`).
    pub nvidia_version: Option<String>,
    /// Literal files: host path → content (e.g. `"/etc/kernel/cmdline" = "root=… ro quiet"`).
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// `None` → no `/proc/cpuinfo`.
    pub cpu: Option<CpuDesc>,
    /// `None` → no `/etc/os-release`.
    pub os: Option<OsDesc>,
    /// `None` → no `/proc/cmdline`.
    pub cmdline: Option<String>,
    /// `/dev/kvm` exists.
    #[serde(default)]
    pub kvm: bool,
    /// `/sys/module/nvidia` exists (the module is loaded).
    #[serde(default)]
    pub nvidia_module: bool,
    /// `/sys/kernel/iommu_groups` exists. Default: when any device has a group.
    pub iommu: Option<bool>,
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceDesc>,
    #[serde(default, rename = "nic")]
    pub nics: Vec<NicDesc>,
    /// NUMA nodes by id (`[numa.0]`): `sys/devices/system/node/nodeN/{cpulist,cpumap,
    /// hugepages/}` and the host-wide `sys/kernel/mm/hugepages/` (each pool the sum of the
    /// nodes'), `sys/devices/system/{cpu,node}/online`; every device then gets `numa_node`.
    /// Keyed tables, so a description with `base` can change one node's pools.
    #[serde(default)]
    pub numa: BTreeMap<String, NumaDesc>,
    /// `MemTotal` of `/proc/meminfo`, in KiB. `None` → no `/proc/meminfo`.
    pub mem_total_kib: Option<u64>,
}

/// A NUMA node.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumaDesc {
    /// Its CPUs in the kernel's cpulist form (`0-55,112-167`).
    #[serde(default)]
    pub cpus: String,
    /// Hugepage pools by page size in KiB (`2048`, `1048576`). The kernel lists both x86-64
    /// sizes on every node (with `pdpe1gb`), so both are written, empty unless given.
    #[serde(default)]
    pub hugepages: BTreeMap<String, PoolDesc>,
}

/// One hugepage pool: `nr_hugepages` and `free_hugepages`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolDesc {
    pub total: u64,
    pub free: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfiDesc {
    /// The `SecureBoot` variable's data byte (1 or 0). `None` → no variable (setup mode).
    pub secure_boot: Option<bool>,
    /// The `LoaderInfo` variable systemd-boot sets, e.g. `systemd-boot 255.4-1ubuntu8`.
    pub loader_info: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuDesc {
    /// `intel` or `amd` (written as GenuineIntel / AuthenticAMD), anything else verbatim.
    pub vendor: String,
    pub model_name: Option<String>,
    /// CPU flags. Default: the usual x86 set plus `vmx` (intel) or `svm` (amd).
    pub flags: Option<Vec<String>>,
    /// Logical CPUs (processor blocks). Default 2.
    pub cpus: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsDesc {
    pub id: Option<String>,
    pub version_id: Option<String>,
    pub codename: Option<String>,
    pub pretty_name: Option<String>,
    /// Literal file content, instead of the fields above.
    pub raw: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceDesc {
    /// `BB:DD.F` (domain 0000) or `DDDD:BB:DD.F`.
    pub bdf: String,
    /// Class as 4 (`0300`) or 6 (`030000`) hex digits.
    pub class: String,
    /// `vendor:device`, e.g. `10de:2204`.
    pub id: String,
    /// `subvendor:subdevice`.
    pub subsystem: Option<String>,
    pub driver: Option<String>,
    pub group: Option<u32>,
    /// The upstream bridge's BDF (itself a `[[device]]`). Without one, the device sits on its
    /// root bus: `sys/devices/pci<domain>:<bus>/<BDF>`.
    pub parent: Option<String>,
    /// Written for VGA-class (0300) devices only, as the kernel does. Default false.
    pub boot_vga: Option<bool>,
    /// Content of `reset_method`, e.g. `flr bus`; also creates `reset`.
    pub reset_method: Option<String>,
    pub driver_override: Option<String>,
    /// Creates `mdev_supported_types/`.
    #[serde(default)]
    pub mdev: bool,
    /// For an SR-IOV virtual function: its physical function's BDF (creates `physfn` here and
    /// `virtfnN` in the PF). Give the VF the same `parent` as its PF, as the kernel places it.
    pub physfn: Option<String>,
    /// Attribute files not to create (e.g. `["vendor"]`).
    #[serde(default)]
    pub omit: Vec<String>,
    /// Attribute files to make unreadable: a directory stands in for the file, which fails to
    /// read even as root (permissions would not).
    #[serde(default)]
    pub unreadable: Vec<String>,
    /// `numa_node`: the node the device is attached to. Written (as -1 when unset, as the
    /// kernel does) only on hosts with `[numa]` nodes.
    pub numa_node: Option<i32>,
    /// Literal attribute contents overriding the generated ones (e.g. `{ class = "0xZZ" }`).
    #[serde(default)]
    pub raw: BTreeMap<String, String>,
    /// `mdev_supported_types/<id>/` entries (imply `mdev`).
    #[serde(default, rename = "mdev_type")]
    pub mdev_types: Vec<MdevTypeDesc>,
    /// Mediated devices that exist on this parent: `<dir>/<uuid>/` with `mdev_type` and
    /// `remove`, linked from `sys/bus/mdev/devices/<uuid>` and the type's `devices/`.
    #[serde(default, rename = "mdev_device")]
    pub mdev_devices: Vec<MdevDeviceDesc>,
    /// NVIDIA vGPU 17+ on a VF: `nvidia/creatable_vgpu_types` and `nvidia/current_vgpu_type`.
    pub nvidia_vgpu: Option<NvidiaVgpuDesc>,
}

/// One mediated-device type (Documentation/ABI/testing/sysfs-bus-vfio-mdev).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MdevTypeDesc {
    /// The directory name, e.g. `nvidia-559`.
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// `available_instances`.
    pub available: u32,
    /// `device_api`; default `vfio-pci`.
    pub device_api: Option<String>,
}

/// A mediated device of a type of this parent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MdevDeviceDesc {
    pub uuid: String,
    /// The type's id (an `mdev_type` of this device).
    #[serde(rename = "type")]
    pub type_id: String,
}

/// A VF's `nvidia/` directory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvidiaVgpuDesc {
    /// Lines of `creatable_vgpu_types`, e.g. `"1155 : NVIDIA L40S-24Q"`.
    #[serde(default)]
    pub creatable: Vec<String>,
    /// `current_vgpu_type`; default 0.
    #[serde(default)]
    pub current: u32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicDesc {
    pub name: String,
    pub mac: Option<String>,
    /// `operstate`. Default `up`.
    pub state: Option<String>,
    /// The PCI function (a `[[device]]`) of a physical NIC. Without it the NIC is virtual.
    pub pci: Option<String>,
    /// `a.b.c.d/len` or IPv6 `addr/len`.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The default route goes through this NIC via this gateway.
    pub gateway: Option<String>,
    /// This NIC is a Linux bridge.
    #[serde(default)]
    pub bridge: bool,
    /// The bridge this NIC is a port of.
    pub master: Option<String>,
}

/// The directory holding the committed host descriptions (`tests/fixtures/hosts`).
pub fn hosts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/hosts")
}

/// Names of the committed hosts (file stems in [`hosts_dir`]), sorted.
pub fn host_names() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(hosts_dir())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".toml").map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The description of a committed host.
pub fn host_desc(name: &str) -> Result<HostDesc, Error> {
    let path = hosts_dir().join(format!("{name}.toml"));
    let text = fs::read_to_string(&path).map_err(|source| Error::ReadDescription {
        path: path.clone(),
        source,
    })?;
    parse(&text)
}

/// Builds a committed host (`tests/fixtures/hosts/<name>.toml`) into a fresh temp dir.
///
/// # Panics
/// When the host is unknown or the tree cannot be written: it is a test helper.
pub fn build_host(name: &str) -> TempDir {
    match host_desc(name).and_then(|d| build(&d)) {
        Ok(t) => t,
        Err(e) => panic!(
            "fixture host {name}: {e} ({:?})",
            std::error::Error::source(&e)
        ),
    }
}

/// Extracts a `gpu-vm-bootstrap detect --capture` archive (a real host's tree, e.g. from a bug
/// report kept under `tests/fixtures/captures/`) into a fresh temp dir, symlinks kept.
pub fn unpack_capture(archive: &Path) -> Result<TempDir, Error> {
    let rerr = |source| Error::ReadDescription {
        path: archive.to_path_buf(),
        source,
    };
    let dir = tempfile::Builder::new()
        .prefix("gvb-capture-")
        .tempdir()
        .map_err(rerr)?;
    let file = fs::File::open(archive).map_err(rerr)?;
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(dir.path())
        .map_err(rerr)?;
    Ok(dir)
}

/// Builds a host from TOML text into a fresh temp dir.
pub fn build_from_str(toml_text: &str) -> Result<TempDir, Error> {
    build(&parse(toml_text)?)
}

pub fn parse(toml_text: &str) -> Result<HostDesc, Error> {
    let table = merged_table(toml_text, 0)?;
    HostDesc::deserialize(toml::Value::Table(table))
        .map_err(|e| Error::Invalid(format!("host description: {e}")))
}

/// The description as a TOML table with its `base` chain laid under it.
fn merged_table(toml_text: &str, depth: usize) -> Result<toml::Table, Error> {
    let table: toml::Table = toml::from_str(toml_text).map_err(Error::ParseDescription)?;
    let Some(base) = table
        .get("base")
        .and_then(|b| b.as_str())
        .map(str::to_string)
    else {
        return Ok(table);
    };
    if depth > 8 {
        return Err(Error::Invalid(format!("base chain too deep at {base:?}")));
    }
    let path = hosts_dir().join(format!("{base}.toml"));
    let text = fs::read_to_string(&path).map_err(|source| Error::ReadDescription {
        path: path.clone(),
        source,
    })?;
    let mut merged = merged_table(&text, depth + 1)?;
    merge(&mut merged, table);
    Ok(merged)
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Builds a description into a fresh temp dir.
pub fn build(desc: &HostDesc) -> Result<TempDir, Error> {
    let dir = tempfile::Builder::new()
        .prefix("gvb-host-")
        .tempdir()
        .map_err(|source| Error::Write {
            path: std::env::temp_dir(),
            source,
        })?;
    build_into(desc, dir.path())?;
    Ok(dir)
}

/// Writes the tree for `desc` under `root` (which should be empty).
pub fn build_into(desc: &HostDesc, root: &Path) -> Result<(), Error> {
    let t = Tree { root };
    if let Some(cpu) = &desc.cpu {
        t.file("proc/cpuinfo", &cpuinfo(cpu))?;
    }
    if let Some(cmdline) = &desc.cmdline {
        t.file("proc/cmdline", &format!("{}\n", cmdline.trim()))?;
    }
    if let Some(os) = &desc.os {
        // Ubuntu ships /etc/os-release as a link to /usr/lib/os-release (os-release(5)).
        t.file("usr/lib/os-release", &os_release(os))?;
        t.link("etc/os-release", "usr/lib/os-release")?;
    }
    if desc.kvm {
        // A character device on a real host; existence is what detection looks at.
        t.file("dev/kvm", "")?;
    }
    if desc.nvidia_module || desc.nvidia_version.is_some() {
        t.dir("sys/module/nvidia")?;
    }
    if let Some(v) = &desc.nvidia_version {
        t.file("sys/module/nvidia/version", &format!("{v}\n"))?;
    }
    if let Some(r) = &desc.kernel_release {
        t.file("proc/sys/kernel/osrelease", &format!("{r}\n"))?;
    }
    if let Some(efi) = &desc.efi {
        build_efi(&t, efi)?;
    }
    if let Some(mode) = &desc.lockdown {
        t.file("sys/kernel/security/lockdown", &lockdown(mode)?)?;
    }
    for (path, content) in &desc.files {
        let rel = path.trim_start_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c == "..") {
            return Err(Error::Invalid(format!("bad file path {path:?}")));
        }
        t.file(rel, content)?;
    }
    t.dir("sys/bus/pci/devices")?;
    t.dir("sys/class/net")?;
    build_devices(&t, desc)?;
    build_nics(&t, desc)?;
    build_numa(&t, desc)?;
    Ok(())
}

/// The x86-64 hugepage sizes in KiB (2M, 1G), each a `hugepages-<size>kB` directory.
const HUGEPAGE_SIZES_KIB: [u64; 2] = [2048, 1048576];

/// A cpulist (`0-3,8`) as CPU numbers.
fn cpus_of(list: &str) -> Result<Vec<u32>, Error> {
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || Error::Invalid(format!("bad cpulist {list:?}"));
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u32, u32) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if a > b {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    Ok(out)
}

/// `cpumap`: the CPUs as a hex mask in comma-separated 32-bit words, most significant first
/// (lib/bitmap-str.c, `bitmap_print_to_buf` without list).
fn cpumap(cpus: &[u32], nr_cpus: u32) -> String {
    let words = nr_cpus.div_ceil(32).max(1);
    (0..words)
        .rev()
        .map(|w| {
            let v: u32 = cpus
                .iter()
                .filter(|c| **c / 32 == w)
                .fold(0, |acc, c| acc | (1 << (c % 32)));
            format!("{v:08x}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn build_numa(t: &Tree, desc: &HostDesc) -> Result<(), Error> {
    if let Some(kib) = desc.mem_total_kib {
        // The lines a reader of MemTotal and the hugepage counters needs (proc(5)).
        let pool = |size: u64| -> (u64, u64) {
            desc.numa.values().fold((0, 0), |(t, f), n| {
                let p = n
                    .hugepages
                    .get(&size.to_string())
                    .copied()
                    .unwrap_or_default();
                (t + p.total, f + p.free)
            })
        };
        let (total, free) = pool(2048);
        t.file(
            "proc/meminfo",
            &format!(
                "MemTotal:       {kib} kB\nMemFree:        {} kB\nMemAvailable:   {} kB\n\
                 HugePages_Total:   {total}\nHugePages_Free:    {free}\nHugePages_Rsvd:        0\n\
                 HugePages_Surp:        0\nHugepagesize:       2048 kB\n",
                kib / 2,
                kib / 2
            ),
        )?;
    }
    if desc.numa.is_empty() {
        return Ok(());
    }
    let mut nodes: Vec<(u32, &NumaDesc)> = Vec::new();
    for (k, n) in &desc.numa {
        let id = k
            .parse()
            .map_err(|_| Error::Invalid(format!("NUMA node id {k:?} is not a number")))?;
        nodes.push((id, n));
    }
    nodes.sort_by_key(|(id, _)| *id);
    let mut all: Vec<u32> = Vec::new();
    for (_, n) in &nodes {
        all.extend(cpus_of(&n.cpus)?);
    }
    all.sort_unstable();
    let nr_cpus = all.last().map_or(1, |c| c + 1);
    let online = render_cpulist(&all);
    t.file("sys/devices/system/cpu/online", &format!("{online}\n"))?;
    t.file("sys/devices/system/cpu/possible", &format!("{online}\n"))?;
    let ids: Vec<u32> = nodes.iter().map(|(id, _)| *id).collect();
    let node_list = render_cpulist(&ids);
    for f in [
        "online",
        "possible",
        "has_cpu",
        "has_memory",
        "has_normal_memory",
    ] {
        t.file(
            &format!("sys/devices/system/node/{f}"),
            &format!("{node_list}\n"),
        )?;
    }
    let mut host: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for (id, n) in &nodes {
        let dir = format!("sys/devices/system/node/node{id}");
        let cpus = cpus_of(&n.cpus)?;
        t.file(
            &format!("{dir}/cpulist"),
            &format!("{}\n", render_cpulist(&cpus)),
        )?;
        t.file(
            &format!("{dir}/cpumap"),
            &format!("{}\n", cpumap(&cpus, nr_cpus)),
        )?;
        for c in &cpus {
            t.link(
                &format!("{dir}/cpu{c}"),
                &format!("sys/devices/system/cpu/cpu{c}"),
            )?;
            t.dir(&format!("sys/devices/system/cpu/cpu{c}"))?;
        }
        for key in n.hugepages.keys() {
            if !HUGEPAGE_SIZES_KIB.iter().any(|s| s.to_string() == *key) {
                return Err(Error::Invalid(format!(
                    "hugepage size {key:?} kB: x86-64 has {HUGEPAGE_SIZES_KIB:?}"
                )));
            }
        }
        for size in HUGEPAGE_SIZES_KIB {
            let p = n
                .hugepages
                .get(&size.to_string())
                .copied()
                .unwrap_or_default();
            if p.free > p.total {
                return Err(Error::Invalid(format!(
                    "node {id}: {} free hugepages of {size} kB, more than the {} reserved",
                    p.free, p.total
                )));
            }
            let pd = format!("{dir}/hugepages/hugepages-{size}kB");
            t.file(&format!("{pd}/nr_hugepages"), &format!("{}\n", p.total))?;
            t.file(&format!("{pd}/free_hugepages"), &format!("{}\n", p.free))?;
            t.file(&format!("{pd}/surplus_hugepages"), "0\n")?;
            let e = host.entry(size).or_default();
            e.0 += p.total;
            e.1 += p.free;
        }
    }
    for (size, (total, free)) in host {
        let pd = format!("sys/kernel/mm/hugepages/hugepages-{size}kB");
        t.file(&format!("{pd}/nr_hugepages"), &format!("{total}\n"))?;
        t.file(
            &format!("{pd}/nr_hugepages_mempolicy"),
            &format!("{total}\n"),
        )?;
        t.file(&format!("{pd}/free_hugepages"), &format!("{free}\n"))?;
        t.file(&format!("{pd}/resv_hugepages"), "0\n")?;
        t.file(&format!("{pd}/surplus_hugepages"), "0\n")?;
        t.file(&format!("{pd}/nr_overcommit_hugepages"), "0\n")?;
    }
    Ok(())
}

/// CPUs (or node ids) in the kernel's list form, `0-3,8`.
fn render_cpulist(sorted: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        parts.push(if sorted[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", sorted[i])
        });
        i += 1;
    }
    parts.join(",")
}

/// EFI variable attributes NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS (UEFI spec 2.10,
/// 8.2), as SecureBoot carries them (read-only variables drop NON_VOLATILE; 0x06 then).
const EFI_ATTR_BS_RT: u32 = 0x06;
const EFIVARS: &str = "sys/firmware/efi/efivars";

/// efivarfs's file layout: 4 bytes of attributes (little-endian), then the variable's data
/// (Documentation/filesystems/efivarfs.rst).
pub fn efivar_bytes(attributes: u32, data: &[u8]) -> Vec<u8> {
    let mut v = attributes.to_le_bytes().to_vec();
    v.extend_from_slice(data);
    v
}

fn build_efi(t: &Tree, efi: &EfiDesc) -> Result<(), Error> {
    t.dir(EFIVARS)?;
    if let Some(on) = efi.secure_boot {
        let rel = format!("{EFIVARS}/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c");
        let bytes = efivar_bytes(EFI_ATTR_BS_RT, &[u8::from(on)]);
        fs::write(t.root.join(&rel), bytes).map_err(t.werr(&rel))?;
    }
    if let Some(info) = &efi.loader_info {
        // systemd's Boot Loader Interface: a NUL-terminated UTF-16LE string.
        let data: Vec<u8> = info
            .encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect();
        let rel = format!("{EFIVARS}/LoaderInfo-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f");
        fs::write(t.root.join(&rel), efivar_bytes(EFI_ATTR_BS_RT, &data)).map_err(t.werr(&rel))?;
    }
    Ok(())
}

/// `/sys/kernel/security/lockdown` with `mode` in brackets (security/lockdown/lockdown.c).
fn lockdown(mode: &str) -> Result<String, Error> {
    const MODES: [&str; 3] = ["none", "integrity", "confidentiality"];
    if !MODES.contains(&mode) {
        return Err(Error::Invalid(format!(
            "lockdown {mode:?} is not one of {MODES:?}"
        )));
    }
    let words: Vec<String> = MODES
        .iter()
        .map(|m| {
            if *m == mode {
                format!("[{m}]")
            } else {
                m.to_string()
            }
        })
        .collect();
    Ok(format!("{}\n", words.join(" ")))
}

struct Tree<'a> {
    root: &'a Path,
}

impl Tree<'_> {
    fn werr(&self, rel: &str) -> impl FnOnce(std::io::Error) -> Error {
        let path = self.root.join(rel);
        move |source| Error::Write { path, source }
    }

    fn dir(&self, rel: &str) -> Result<(), Error> {
        fs::create_dir_all(self.root.join(rel)).map_err(self.werr(rel))
    }

    fn file(&self, rel: &str, content: &str) -> Result<(), Error> {
        if let Some(parent) = Path::new(rel).parent() {
            self.dir(&parent.to_string_lossy())?;
        }
        fs::write(self.root.join(rel), content).map_err(self.werr(rel))
    }

    /// A symlink at `rel` pointing at `to` (both relative to the root), stored relative.
    fn link(&self, rel: &str, to: &str) -> Result<(), Error> {
        let parent = Path::new(rel).parent().unwrap_or(Path::new(""));
        self.dir(&parent.to_string_lossy())?;
        symlink(relative(parent, Path::new(to)), self.root.join(rel)).map_err(self.werr(rel))
    }
}

/// The relative path from directory `from` to `to` (both relative to the same root). Like the
/// kernel's links (fs/kernfs/symlink.c), the target's own name is always spelled out, so a link
/// to an ancestor reads `../../../0000:2a:00.0`, not `../..`.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f
        .iter()
        .zip(&t)
        .take_while(|(a, b)| a == b)
        .count()
        .min(t.len().saturating_sub(1));
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

fn cpuinfo(cpu: &CpuDesc) -> String {
    let vendor = match cpu.vendor.as_str() {
        "intel" => "GenuineIntel",
        "amd" => "AuthenticAMD",
        other => other,
    };
    let flags = cpu.flags.clone().unwrap_or_else(|| {
        let mut f: Vec<String> = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov \
            pat pse36 clflush mmx fxsr sse sse2 ht syscall nx lm constant_tsc nopl pni ssse3 \
            sse4_1 sse4_2 popcnt aes xsave avx"
            .split(' ')
            .map(str::to_string)
            .collect();
        match cpu.vendor.as_str() {
            "intel" => f.push("vmx".into()),
            "amd" => f.push("svm".into()),
            _ => {}
        }
        f
    });
    let model = cpu
        .model_name
        .clone()
        .unwrap_or_else(|| "Unknown CPU".into());
    let mut s = String::new();
    for n in 0..cpu.cpus.unwrap_or(2) {
        let _ = write!(
            s,
            "processor\t: {n}\nvendor_id\t: {vendor}\ncpu family\t: 6\nmodel name\t: {model}\n\
             flags\t\t: {}\n\n",
            flags.join(" ")
        );
    }
    s
}

fn os_release(os: &OsDesc) -> String {
    if let Some(raw) = &os.raw {
        return raw.clone();
    }
    let mut s = String::new();
    if let Some(p) = &os.pretty_name {
        let _ = writeln!(s, "PRETTY_NAME=\"{p}\"");
    }
    if let Some(v) = &os.version_id {
        let _ = writeln!(s, "VERSION_ID=\"{v}\"");
    }
    if let Some(c) = &os.codename {
        let _ = writeln!(s, "VERSION_CODENAME={c}");
    }
    if let Some(i) = &os.id {
        let _ = writeln!(s, "ID={i}");
    }
    s
}

fn full_bdf(bdf: &str) -> Result<String, Error> {
    let full = if bdf.len() == 7 {
        format!("0000:{bdf}")
    } else {
        bdf.to_string()
    };
    let b = full.as_bytes();
    let ok = b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && full
            .chars()
            .enumerate()
            .all(|(i, c)| [4, 7, 10].contains(&i) || c.is_ascii_hexdigit());
    if ok {
        Ok(full.to_ascii_lowercase())
    } else {
        Err(Error::Invalid(format!(
            "bad BDF {bdf:?} (want BB:DD.F or DDDD:BB:DD.F)"
        )))
    }
}

fn id_pair(s: &str, what: &str) -> Result<(String, String), Error> {
    let bad = || Error::Invalid(format!("bad {what} {s:?} (want vvvv:dddd)"));
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let hex4 = |x: &str| x.len() == 4 && x.chars().all(|c| c.is_ascii_hexdigit());
    if !hex4(a) || !hex4(b) {
        return Err(bad());
    }
    Ok((a.to_ascii_lowercase(), b.to_ascii_lowercase()))
}

/// Path of each device's directory relative to the root, e.g.
/// `sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0`.
fn device_dirs(desc: &HostDesc) -> Result<BTreeMap<String, String>, Error> {
    let mut parents = BTreeMap::new();
    for d in &desc.devices {
        let bdf = full_bdf(&d.bdf)?;
        let parent = d.parent.as_deref().map(full_bdf).transpose()?;
        if parents.insert(bdf.clone(), parent).is_some() {
            return Err(Error::Invalid(format!("device {bdf} listed twice")));
        }
    }
    let mut dirs = BTreeMap::new();
    for bdf in parents.keys() {
        let mut chain = vec![bdf.clone()];
        let mut cur = bdf.clone();
        while let Some(Some(p)) = parents.get(&cur) {
            if !parents.contains_key(p) {
                return Err(Error::Invalid(format!(
                    "parent {p} of {cur} is not a [[device]]"
                )));
            }
            if chain.contains(p) {
                return Err(Error::Invalid(format!("parent cycle through {p}")));
            }
            chain.push(p.clone());
            cur = p.clone();
        }
        // The root bus of the topmost device names the host bridge directory.
        let top = chain.last().map_or(bdf.as_str(), String::as_str);
        let mut path = format!("sys/devices/pci{}", &top[..7]);
        for b in chain.iter().rev() {
            path.push('/');
            path.push_str(b);
        }
        dirs.insert(bdf.clone(), path);
    }
    Ok(dirs)
}

fn build_devices(t: &Tree, desc: &HostDesc) -> Result<(), Error> {
    let dirs = device_dirs(desc)?;
    let iommu = desc
        .iommu
        .unwrap_or_else(|| desc.devices.iter().any(|d| d.group.is_some()));
    if iommu {
        t.dir("sys/kernel/iommu_groups")?;
    }
    for d in &desc.devices {
        let bdf = full_bdf(&d.bdf)?;
        let dir = &dirs[&bdf];
        let (vendor, device) = id_pair(&d.id, "id")?;
        let class = match d.class.len() {
            4 => format!("{}00", d.class),
            _ => d.class.clone(),
        }
        .to_ascii_lowercase();
        let mut attrs: BTreeMap<&str, String> = BTreeMap::new();
        attrs.insert("vendor", format!("0x{vendor}\n"));
        attrs.insert("device", format!("0x{device}\n"));
        attrs.insert("class", format!("0x{class}\n"));
        if let Some(s) = &d.subsystem {
            let (sv, sd) = id_pair(s, "subsystem")?;
            attrs.insert("subsystem_vendor", format!("0x{sv}\n"));
            attrs.insert("subsystem_device", format!("0x{sd}\n"));
        }
        if class.starts_with("0300") {
            let v = if d.boot_vga == Some(true) { "1" } else { "0" };
            attrs.insert("boot_vga", format!("{v}\n"));
        }
        if let Some(m) = &d.reset_method {
            attrs.insert("reset_method", format!("{m}\n"));
            attrs.insert("reset", String::new());
        }
        attrs.insert(
            "driver_override",
            format!("{}\n", d.driver_override.as_deref().unwrap_or("(null)")),
        );
        if !desc.numa.is_empty() {
            attrs.insert("numa_node", format!("{}\n", d.numa_node.unwrap_or(-1)));
        }
        for (k, v) in &d.raw {
            attrs.insert(k.as_str(), v.clone());
        }
        t.dir(dir)?;
        for (name, content) in attrs {
            if d.omit.iter().any(|o| o == name) || d.unreadable.iter().any(|o| o == name) {
                continue;
            }
            t.file(&format!("{dir}/{name}"), &content)?;
        }
        for name in &d.unreadable {
            t.dir(&format!("{dir}/{name}"))?;
        }
        if d.mdev || !d.mdev_types.is_empty() {
            t.dir(&format!("{dir}/mdev_supported_types"))?;
        }
        build_vgpu(t, d, dir)?;
        t.link(&format!("sys/bus/pci/devices/{bdf}"), dir)?;
        if let Some(pf) = &d.physfn {
            let pf = full_bdf(pf)?;
            let pf_dir = dirs.get(&pf).ok_or_else(|| {
                Error::Invalid(format!("physfn {pf} of {bdf} is not a [[device]]"))
            })?;
            t.link(&format!("{dir}/physfn"), pf_dir)?;
            let n = vf_index(t, pf_dir);
            t.link(&format!("{pf_dir}/virtfn{n}"), dir)?;
        }
        if let Some(drv) = &d.driver {
            let drv_dir = format!("sys/bus/pci/drivers/{drv}");
            t.link(&format!("{dir}/driver"), &drv_dir)?;
            t.link(&format!("{drv_dir}/{bdf}"), dir)?;
        }
        if let (Some(g), true) = (d.group, iommu) {
            let gdir = format!("sys/kernel/iommu_groups/{g}");
            t.link(&format!("{dir}/iommu_group"), &gdir)?;
            t.link(&format!("{gdir}/devices/{bdf}"), dir)?;
        }
    }
    Ok(())
}

/// A device's mdev types and mdevs, and its `nvidia/` vGPU files.
fn build_vgpu(t: &Tree, d: &DeviceDesc, dir: &str) -> Result<(), Error> {
    for m in &d.mdev_types {
        let td = format!("{dir}/mdev_supported_types/{}", m.id);
        t.dir(&format!("{td}/devices"))?;
        // Write-only in the kernel; a plain file here, so tests can read what was written.
        t.file(&format!("{td}/create"), "")?;
        t.file(
            &format!("{td}/available_instances"),
            &format!("{}\n", m.available),
        )?;
        t.file(
            &format!("{td}/device_api"),
            &format!("{}\n", m.device_api.as_deref().unwrap_or("vfio-pci")),
        )?;
        if let Some(n) = &m.name {
            t.file(&format!("{td}/name"), &format!("{n}\n"))?;
        }
        if let Some(n) = &m.description {
            t.file(&format!("{td}/description"), &format!("{n}\n"))?;
        }
    }
    for m in &d.mdev_devices {
        if !d.mdev_types.iter().any(|t| t.id == m.type_id) {
            return Err(Error::Invalid(format!(
                "mdev {}: type {} is not an mdev_type of {}",
                m.uuid, m.type_id, d.bdf
            )));
        }
        let md = format!("{dir}/{}", m.uuid);
        let td = format!("{dir}/mdev_supported_types/{}", m.type_id);
        t.file(&format!("{md}/remove"), "")?;
        t.link(&format!("{md}/mdev_type"), &td)?;
        t.link(&format!("{td}/devices/{}", m.uuid), &md)?;
        t.link(&format!("sys/bus/mdev/devices/{}", m.uuid), &md)?;
    }
    if let Some(v) = &d.nvidia_vgpu {
        let mut lines = v.creatable.join("\n");
        if !lines.is_empty() {
            lines.push('\n');
        }
        t.file(&format!("{dir}/nvidia/creatable_vgpu_types"), &lines)?;
        t.file(
            &format!("{dir}/nvidia/current_vgpu_type"),
            &format!("{}\n", v.current),
        )?;
    }
    Ok(())
}

/// The next free `virtfnN` index in a PF directory.
fn vf_index(t: &Tree, pf_dir: &str) -> usize {
    (0..)
        .find(|n| {
            t.root
                .join(format!("{pf_dir}/virtfn{n}"))
                .symlink_metadata()
                .is_err()
        })
        .unwrap_or(0)
}

struct V4 {
    iface: String,
    addr: Ipv4Addr,
    prefix: u32,
}

fn build_nics(t: &Tree, desc: &HostDesc) -> Result<(), Error> {
    if desc.nics.is_empty() {
        return Ok(());
    }
    let dirs = device_dirs(desc)?;
    let mut nics = desc.nics.clone();
    if !nics.iter().any(|n| n.name == "lo") {
        nics.insert(
            0,
            NicDesc {
                name: "lo".into(),
                mac: Some("00:00:00:00:00:00".into()),
                state: Some("unknown".into()),
                addresses: vec!["127.0.0.1/8".into(), "::1/128".into()],
                ..NicDesc::default()
            },
        );
    }
    let names: BTreeSet<&str> = nics.iter().map(|n| n.name.as_str()).collect();
    let mut net_dirs = BTreeMap::new();
    for n in &nics {
        let dir = match &n.pci {
            Some(p) => {
                let bdf = full_bdf(p)?;
                let dev = dirs.get(&bdf).ok_or_else(|| {
                    Error::Invalid(format!("nic {}: pci {bdf} is not a [[device]]", n.name))
                })?;
                format!("{dev}/net/{}", n.name)
            }
            None => format!("sys/devices/virtual/net/{}", n.name),
        };
        net_dirs.insert(n.name.clone(), dir);
    }

    let mut v4 = Vec::new();
    let mut v6 = String::new();
    let mut default_route = None;
    for (ifindex, n) in nics.iter().enumerate() {
        let dir = &net_dirs[&n.name];
        t.dir(dir)?;
        t.file(
            &format!("{dir}/address"),
            &format!("{}\n", n.mac.as_deref().unwrap_or("52:54:00:00:00:01")),
        )?;
        t.file(
            &format!("{dir}/operstate"),
            &format!("{}\n", n.state.as_deref().unwrap_or("up")),
        )?;
        t.link(&format!("sys/class/net/{}", n.name), dir)?;
        if let Some(p) = &n.pci {
            let bdf = full_bdf(p)?;
            t.link(&format!("{dir}/device"), &dirs[&bdf])?;
        }
        if n.bridge {
            t.dir(&format!("{dir}/bridge"))?;
            t.dir(&format!("{dir}/brif"))?;
        }
        if let Some(m) = &n.master {
            if !names.contains(m.as_str()) {
                return Err(Error::Invalid(format!(
                    "nic {}: master {m} is not a [[nic]]",
                    n.name
                )));
            }
            let mdir = &net_dirs[m];
            t.link(&format!("{dir}/master"), mdir)?;
            t.dir(&format!("{dir}/brport"))?;
            t.link(&format!("{mdir}/brif/{}", n.name), &format!("{dir}/brport"))?;
        }
        for a in &n.addresses {
            let bad = || Error::Invalid(format!("nic {}: bad address {a:?}", n.name));
            let (ip, len) = a.split_once('/').ok_or_else(bad)?;
            let len: u32 = len.parse().map_err(|_| bad())?;
            match ip.parse::<IpAddr>().map_err(|_| bad())? {
                IpAddr::V4(addr) if len <= 32 => v4.push(V4 {
                    iface: n.name.clone(),
                    addr,
                    prefix: len,
                }),
                IpAddr::V6(addr) if len <= 128 => {
                    let scope = if addr.is_loopback() {
                        0x10
                    } else if addr.segments()[0] & 0xffc0 == 0xfe80 {
                        0x20
                    } else {
                        0
                    };
                    let _ = writeln!(
                        v6,
                        "{:032x} {:02x} {len:02x} {scope:02x} 80 {:>8}",
                        u128::from(addr),
                        ifindex + 1,
                        n.name
                    );
                }
                _ => return Err(bad()),
            }
        }
        if let Some(gw) = &n.gateway {
            let gw: Ipv4Addr = gw
                .parse()
                .map_err(|_| Error::Invalid(format!("nic {}: bad gateway {gw:?}", n.name)))?;
            default_route = Some((n.name.clone(), gw));
        }
    }

    // /proc/net is a link to self/net, and /proc/self to the reading process (proc(5)).
    t.link("proc/net", "proc/self/net")?;
    t.link("proc/self", "proc/1")?;
    t.file("proc/1/net/route", &route_file(&v4, default_route.as_ref()))?;
    t.file("proc/1/net/fib_trie", &fib_trie(&v4))?;
    t.file("proc/1/net/if_inet6", &v6)?;
    Ok(())
}

/// `/proc/net/route` stores addresses as the in-memory u32 printed in hex, i.e. little-endian
/// on x86 (net/ipv4/fib_trie.c, `fib_route_seq_show`).
fn le_hex(a: Ipv4Addr) -> String {
    format!("{:08X}", u32::from_le_bytes(a.octets()))
}

fn mask(prefix: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix).unwrap_or(0))
}

fn network(a: &V4) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(a.addr) & u32::from(mask(a.prefix)))
}

fn route_file(v4: &[V4], default: Option<&(String, Ipv4Addr)>) -> String {
    let mut s = String::from(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n",
    );
    if let Some((iface, gw)) = default {
        let _ = writeln!(
            s,
            "{iface}\t00000000\t{}\t0003\t0\t0\t100\t00000000\t0\t0\t0",
            le_hex(*gw)
        );
    }
    for a in v4.iter().filter(|a| !a.addr.is_loopback()) {
        let _ = writeln!(
            s,
            "{}\t{}\t00000000\t0001\t0\t0\t100\t{}\t0\t0\t0",
            a.iface,
            le_hex(network(a)),
            le_hex(mask(a.prefix))
        );
    }
    s
}

fn fib_trie(v4: &[V4]) -> String {
    let mut body = String::from("  +-- 0.0.0.0/0 3 0 5\n");
    for a in v4 {
        let _ = write!(
            body,
            "     |-- {}\n        /{} {}\n     |-- {}\n        /32 host LOCAL\n",
            network(a),
            a.prefix,
            // As the kernel shows them: 127.0.0.0/8 is itself a local route.
            if a.addr.is_loopback() {
                "host LOCAL"
            } else {
                "link UNICAST"
            },
            a.addr
        );
    }
    format!("Main:\n{body}Local:\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_match_the_kernels() {
        assert_eq!(
            relative(
                Path::new("sys/bus/pci/devices"),
                Path::new("sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0")
            ),
            Path::new("../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0")
        );
        assert_eq!(
            relative(
                Path::new("sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0"),
                Path::new("sys/kernel/iommu_groups/14")
            ),
            Path::new("../../../../kernel/iommu_groups/14")
        );
        assert_eq!(
            relative(
                Path::new("sys/devices/pci0000:00/0000:00:1f.6/net/eno1"),
                Path::new("sys/devices/pci0000:00/0000:00:1f.6")
            ),
            Path::new("../../../0000:00:1f.6")
        );
    }

    #[test]
    fn every_committed_host_builds() {
        let names = host_names();
        assert!(names.len() >= 10, "{names:?}");
        for n in names {
            let t = build_host(&n);
            assert!(t.path().join("sys/bus/pci/devices").is_dir(), "{n}");
        }
    }

    #[test]
    fn device_tree_shape() {
        let t = build_from_str(
            r#"
            [[device]]
            bdf = "00:01.0"
            class = "0604"
            id = "8086:1901"
            group = 1
            [[device]]
            bdf = "01:00.0"
            class = "0300"
            id = "10de:1401"
            parent = "00:01.0"
            driver = "nvidia"
            group = 1
            [[nic]]
            name = "br0"
            bridge = true
            addresses = ["198.18.0.10/24"]
            gateway = "198.18.0.1"
            "#,
        )
        .unwrap();
        let p = t.path();
        let link = fs::read_link(p.join("sys/bus/pci/devices/0000:01:00.0")).unwrap();
        assert_eq!(
            link,
            Path::new("../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0")
        );
        let dev = p.join("sys/bus/pci/devices/0000:01:00.0");
        assert_eq!(fs::read_to_string(dev.join("class")).unwrap(), "0x030000\n");
        assert_eq!(
            fs::read_link(dev.join("driver")).unwrap(),
            Path::new("../../../../bus/pci/drivers/nvidia")
        );
        assert!(
            p.join("sys/kernel/iommu_groups/1/devices/0000:00:01.0/vendor")
                .exists()
        );
        let route = fs::read_to_string(p.join("proc/net/route")).unwrap();
        assert!(route.contains("br0\t00000000\t010012C6\t0003"), "{route}");
        assert!(route.contains("br0\t000012C6\t00000000\t0001"), "{route}");
    }

    #[test]
    fn bad_descriptions_are_errors() {
        assert!(
            build_from_str("[[device]]\nbdf = \"1:0.0\"\nclass=\"0300\"\nid=\"10de:1\"").is_err()
        );
        assert!(build_from_str("bogus = 1").is_err());
        assert!(
            build_from_str(
                "[[device]]\nbdf = \"01:00.0\"\nclass=\"0300\"\nid=\"10de:2204\"\nparent=\"00:01.0\""
            )
            .is_err()
        );
    }
}
