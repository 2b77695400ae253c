//! Pure rendering of a [`DomainSpec`] to libvirt domain XML (format:
//! <https://libvirt.org/formatdomain.html>). Element order follows libvirt's own output so a
//! `virsh dumpxml` diff stays small.

use std::io;

use quick_xml::Writer;
use quick_xml::events::BytesText;

use super::{
    CpuMode, Disk, DiskDevice, DomainSpec, Filesystem, Firmware, Graphics, Hostdev, MemoryBacking,
    Metadata, PciAddress, VMCTL_NS, VgpuHostdev,
};
use crate::error::{Error, Result};

type W = Writer<Vec<u8>>;

fn empty(w: &mut W, name: &str, attrs: &[(&str, &str)]) -> io::Result<()> {
    w.create_element(name)
        .with_attributes(attrs.iter().copied())
        .write_empty()?;
    Ok(())
}

fn text(w: &mut W, name: &str, attrs: &[(&str, &str)], value: &str) -> io::Result<()> {
    w.create_element(name)
        .with_attributes(attrs.iter().copied())
        .write_text_content(BytesText::new(value))?;
    Ok(())
}

fn el(
    w: &mut W,
    name: &str,
    attrs: &[(&str, &str)],
    inner: impl FnOnce(&mut W) -> io::Result<()>,
) -> io::Result<()> {
    w.create_element(name)
        .with_attributes(attrs.iter().copied())
        .write_inner_content(inner)?;
    Ok(())
}

/// Renders the domain XML.
pub fn to_xml(spec: &DomainSpec) -> Result<String> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_domain(&mut w, spec).map_err(|source| Error::RenderDomainXml {
        domain: spec.name.clone(),
        source,
    })?;
    let mut out = String::from_utf8(w.into_inner()).unwrap_or_default();
    out.push('\n');
    Ok(out)
}

fn write_domain(w: &mut W, s: &DomainSpec) -> io::Result<()> {
    let dtype = s.domain_type.to_string();
    el(w, "domain", &[("type", &dtype)], |w| {
        text(w, "name", &[], &s.name)?;
        if let Some(uuid) = &s.uuid {
            text(w, "uuid", &[], uuid)?;
        }
        if let Some(md) = &s.metadata {
            el(w, "metadata", &[], |w| write_metadata(w, md, true))?;
        }
        text(w, "memory", &[("unit", "MiB")], &s.memory_mib.to_string())?;
        write_memory_backing(w, &s.memory_backing)?;
        text(w, "vcpu", &[], &s.vcpus.to_string())?;
        write_cputune(w, s)?;
        write_os(w, s)?;
        el(w, "features", &[], |w| {
            // ACPI is what makes `vmctl stop` (virDomainShutdown) reach the guest.
            empty(w, "acpi", &[])?;
            empty(w, "apic", &[])?;
            if let Firmware::Efi { secure_boot: true } = s.firmware {
                // OVMF's secure-boot builds need SMM (libvirt formatdomain "smm").
                empty(w, "smm", &[("state", "on")])?;
            }
            if s.kvm_hidden {
                el(w, "kvm", &[], |w| empty(w, "hidden", &[("state", "on")]))?;
            }
            Ok(())
        })?;
        write_cpu(w, s)?;
        empty(w, "clock", &[("offset", "utc")])?;
        text(w, "on_poweroff", &[], "destroy")?;
        text(w, "on_reboot", &[], "restart")?;
        text(w, "on_crash", &[], "destroy")?;
        el(w, "devices", &[], |w| write_devices(w, s))
    })
}

/// `<cpu>`, with the guest NUMA cells when there are any.
fn write_cpu(w: &mut W, s: &DomainSpec) -> io::Result<()> {
    let cells = &s.tuning.numa_cells;
    let numa = |w: &mut W| -> io::Result<()> {
        if cells.is_empty() {
            return Ok(());
        }
        el(w, "numa", &[], |w| {
            for c in cells {
                empty(
                    w,
                    "cell",
                    &[
                        ("id", &c.id.to_string()),
                        ("cpus", &c.cpus),
                        ("memory", &c.memory_mib.to_string()),
                        ("unit", "MiB"),
                    ],
                )?;
            }
            Ok(())
        })
    };
    match &s.cpu {
        CpuMode::HostPassthrough if cells.is_empty() => {
            empty(w, "cpu", &[("mode", "host-passthrough")])
        }
        CpuMode::HostModel if cells.is_empty() => empty(w, "cpu", &[("mode", "host-model")]),
        CpuMode::HostPassthrough => el(w, "cpu", &[("mode", "host-passthrough")], numa),
        CpuMode::HostModel => el(w, "cpu", &[("mode", "host-model")], numa),
        CpuMode::Custom(model) => el(w, "cpu", &[("mode", "custom"), ("match", "exact")], |w| {
            text(w, "model", &[("fallback", "forbid")], model)?;
            numa(w)
        }),
    }
}

/// `<cputune>` and `<numatune>` (formatdomain "CPU Tuning", "NUMA Node Tuning").
fn write_cputune(w: &mut W, s: &DomainSpec) -> io::Result<()> {
    let t = &s.tuning;
    if !t.vcpupins.is_empty() || t.emulatorpin.is_some() {
        el(w, "cputune", &[], |w| {
            for p in &t.vcpupins {
                empty(
                    w,
                    "vcpupin",
                    &[("vcpu", &p.vcpu.to_string()), ("cpuset", &p.cpuset)],
                )?;
            }
            if let Some(e) = &t.emulatorpin {
                empty(w, "emulatorpin", &[("cpuset", e)])?;
            }
            Ok(())
        })?;
    }
    if let Some(nodeset) = &t.memory_nodeset {
        el(w, "numatune", &[], |w| {
            empty(w, "memory", &[("mode", "strict"), ("nodeset", nodeset)])?;
            for m in &t.memnodes {
                empty(
                    w,
                    "memnode",
                    &[
                        ("cellid", &m.cellid.to_string()),
                        ("mode", "strict"),
                        ("nodeset", &m.nodeset),
                    ],
                )?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

fn write_os(w: &mut W, s: &DomainSpec) -> io::Result<()> {
    let attrs: &[(&str, &str)] = match s.firmware {
        Firmware::Efi { .. } => &[("firmware", "efi")],
        Firmware::Bios => &[],
    };
    el(w, "os", attrs, |w| {
        text(
            w,
            "type",
            &[("arch", "x86_64"), ("machine", &s.machine)],
            "hvm",
        )?;
        // Firmware autoselection picks any matching descriptor, and a bare `firmware='efi'` often
        // resolves to the Secure Boot build (OVMF_CODE_4M.ms.fd), which refuses unsigned loaders.
        // State the feature either way (libvirt formatdomain "BIOS bootloader", since 7.2).
        if let Firmware::Efi { secure_boot } = s.firmware {
            let enabled = if secure_boot { "yes" } else { "no" };
            el(w, "firmware", &[], |w| {
                empty(
                    w,
                    "feature",
                    &[("enabled", enabled), ("name", "secure-boot")],
                )
            })?;
            if secure_boot {
                empty(w, "loader", &[("secure", "yes")])?;
            }
        }
        match &s.direct_boot {
            Some(b) => {
                text(w, "kernel", &[], &b.kernel.to_string_lossy())?;
                if let Some(initrd) = &b.initrd {
                    text(w, "initrd", &[], &initrd.to_string_lossy())?;
                }
                if let Some(cmdline) = &b.cmdline {
                    text(w, "cmdline", &[], cmdline)?;
                }
            }
            // Per-device boot orders replace the general element (see `Disk::boot_order`).
            None if s.disks.iter().any(|d| d.boot_order.is_some()) => {}
            None => empty(w, "boot", &[("dev", "hd")])?,
        }
        Ok(())
    })
}

fn write_disk(w: &mut W, d: &Disk) -> io::Result<()> {
    let device = match d.device {
        DiskDevice::Disk => "disk",
        DiskDevice::Cdrom => "cdrom",
    };
    el(w, "disk", &[("type", "file"), ("device", device)], |w| {
        empty(w, "driver", &[("name", "qemu"), ("type", &d.format)])?;
        empty(w, "source", &[("file", &d.path.to_string_lossy())])?;
        empty(w, "target", &[("dev", &d.target), ("bus", d.bus.as_str())])?;
        if d.readonly {
            empty(w, "readonly", &[])?;
        }
        if let Some(order) = d.boot_order {
            empty(w, "boot", &[("order", &order.to_string())])?;
        }
        Ok(())
    })
}

/// One element on its own, as `virsh attach-device` and `virsh metadata` take it.
fn fragment(what: &str, write: impl FnOnce(&mut W) -> io::Result<()>) -> Result<String> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write(&mut w).map_err(|source| Error::RenderDomainXml {
        domain: what.to_string(),
        source,
    })?;
    Ok(String::from_utf8(w.into_inner()).unwrap_or_default())
}

/// Renders one disk; public so `vmctl disk add|remove` can attach and detach the same XML.
pub fn disk_xml(d: &Disk) -> Result<String> {
    fragment(&d.target, |w| write_disk(w, d))
}

/// Renders vmctl's metadata element alone, for libvirt's metadata call (`virsh metadata`),
/// which replaces it in place when a command changes what vmctl owns (a disk added).
pub fn metadata_xml(m: &Metadata) -> Result<String> {
    fragment("vmctl metadata", |w| write_metadata(w, m, false))
}

fn write_devices(w: &mut W, s: &DomainSpec) -> io::Result<()> {
    for d in &s.disks {
        write_disk(w, d)?;
    }
    for fs in &s.filesystems {
        write_filesystem(w, fs)?;
    }
    for index in &s.pcie_root_ports {
        empty(
            w,
            "controller",
            &[
                ("type", "pci"),
                ("index", &index.to_string()),
                ("model", "pcie-root-port"),
            ],
        )?;
    }
    for n in &s.nics {
        el(w, "interface", &[("type", "bridge")], |w| {
            empty(w, "mac", &[("address", &n.mac)])?;
            empty(w, "source", &[("bridge", &n.bridge)])?;
            empty(w, "model", &[("type", "virtio")])
        })?;
    }
    if let Some(serial) = &s.serial {
        el(w, "serial", &[("type", "pty")], |w| {
            if let Some(log) = &serial.log_file {
                empty(
                    w,
                    "log",
                    &[("file", &log.to_string_lossy()), ("append", "on")],
                )?;
            }
            empty(w, "target", &[("port", "0")])
        })?;
        el(w, "console", &[("type", "pty")], |w| {
            empty(w, "target", &[("type", "serial"), ("port", "0")])
        })?;
    }
    if s.guest_agent {
        el(w, "channel", &[("type", "unix")], |w| {
            empty(
                w,
                "target",
                &[("type", "virtio"), ("name", "org.qemu.guest_agent.0")],
            )
        })?;
    }
    match s.graphics {
        Some(Graphics::Vnc) => el(
            w,
            "graphics",
            &[("type", "vnc"), ("autoport", "yes")],
            |w| {
                empty(
                    w,
                    "listen",
                    &[("type", "address"), ("address", "127.0.0.1")],
                )
            },
        )?,
        Some(Graphics::Spice) => el(
            w,
            "graphics",
            &[("type", "spice"), ("autoport", "yes")],
            |w| {
                empty(
                    w,
                    "listen",
                    &[("type", "address"), ("address", "127.0.0.1")],
                )
            },
        )?,
        None => {}
    }
    for h in &s.hostdevs {
        write_hostdev(w, h)?;
    }
    for v in &s.vgpus {
        write_vgpu(w, v)?;
    }
    // Guests generate keys at first boot; under TCG an entropy-starved guest stalls for minutes.
    el(w, "rng", &[("model", "virtio")], |w| {
        text(w, "backend", &[("model", "random")], "/dev/urandom")
    })
}

fn pci_attrs(a: &PciAddress) -> [(&'static str, String); 4] {
    [
        ("domain", format!("0x{:04x}", a.domain)),
        ("bus", format!("0x{:02x}", a.bus)),
        ("slot", format!("0x{:02x}", a.slot)),
        ("function", format!("0x{:x}", a.function)),
    ]
}

/// Renders one hostdev; public so `vmctl gpu attach` can hot-plug the same XML.
pub fn hostdev_xml(h: &Hostdev) -> Result<String> {
    fragment(&h.host.to_string(), |w| write_hostdev(w, h))
}

fn write_hostdev(w: &mut W, h: &Hostdev) -> io::Result<()> {
    el(
        w,
        "hostdev",
        &[("mode", "subsystem"), ("type", "pci"), ("managed", "yes")],
        |w| {
            let host = pci_attrs(&h.host);
            let host: Vec<(&str, &str)> = host.iter().map(|(k, v)| (*k, v.as_str())).collect();
            el(w, "source", &[], |w| empty(w, "address", &host))?;
            if let Some(g) = &h.guest {
                let guest = pci_attrs(g);
                let mut attrs: Vec<(&str, &str)> = vec![("type", "pci")];
                attrs.extend(guest.iter().map(|(k, v)| (*k, v.as_str())));
                if h.multifunction {
                    attrs.push(("multifunction", "on"));
                }
                empty(w, "address", &attrs)?;
            }
            Ok(())
        },
    )
}

/// Renders one vGPU hostdev, for `vmctl gpu attach --vgpu` (config and hot-plug).
pub fn vgpu_xml(v: &VgpuHostdev) -> Result<String> {
    let what = match v {
        VgpuHostdev::Mdev { uuid } => uuid.clone(),
        VgpuHostdev::Vf { host } => host.to_string(),
    };
    fragment(&what, |w| write_vgpu(w, v))
}

/// formatdomain "Host device assignment": an mdev is named by its UUID, with the device API as
/// `model`; a VF is a PCI hostdev that libvirt leaves on its driver (`managed='no'`).
fn write_vgpu(w: &mut W, v: &VgpuHostdev) -> io::Result<()> {
    match v {
        VgpuHostdev::Mdev { uuid } => el(
            w,
            "hostdev",
            &[
                ("mode", "subsystem"),
                ("type", "mdev"),
                ("model", "vfio-pci"),
            ],
            |w| el(w, "source", &[], |w| empty(w, "address", &[("uuid", uuid)])),
        ),
        VgpuHostdev::Vf { host } => el(
            w,
            "hostdev",
            &[("mode", "subsystem"), ("type", "pci"), ("managed", "no")],
            |w| {
                let a = pci_attrs(host);
                let a: Vec<(&str, &str)> = a.iter().map(|(k, v)| (*k, v.as_str())).collect();
                el(w, "source", &[], |w| empty(w, "address", &a))
            },
        ),
    }
}

/// `<memoryBacking>`, when any of its features is on (formatdomain "Memory Backing"; children
/// in the schema's order: hugepages, source, access).
///
/// Hugepages come in one explicit size, so libvirt never falls back to the host's default
/// size, and from a memfd (`memory-backend-memfd` with `hugetlb=on`): memfd needs no hugetlbfs
/// mount, while with the default file backing libvirt refuses to start the domain ("hugetlbfs
/// filesystem is not mounted") on hosts without one, and 1G pages would need a mount with
/// `pagesize=1G`.
fn write_memory_backing(w: &mut W, m: &MemoryBacking) -> io::Result<()> {
    if m.is_empty() {
        return Ok(());
    }
    el(w, "memoryBacking", &[], |w| {
        if let Some(kib) = m.hugepage_kib {
            el(w, "hugepages", &[], |w| {
                empty(w, "page", &[("size", &kib.to_string()), ("unit", "KiB")])
            })?;
        }
        if m.shared_memfd || m.hugepage_kib.is_some() {
            empty(w, "source", &[("type", "memfd")])?;
        }
        if m.shared_memfd {
            empty(w, "access", &[("mode", "shared")])?;
        }
        Ok(())
    })
}

fn write_filesystem(w: &mut W, fs: &Filesystem) -> io::Result<()> {
    el(
        w,
        "filesystem",
        &[("type", "mount"), ("accessmode", "passthrough")],
        |w| {
            empty(w, "driver", &[("type", "virtiofs")])?;
            empty(w, "source", &[("dir", &fs.source_dir.to_string_lossy())])?;
            empty(w, "target", &[("dir", &fs.tag)])
        },
    )
}

/// One `<filesystem>` element (for a config change to an existing domain).
pub fn filesystem_xml(fs: &Filesystem) -> Result<String> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_filesystem(&mut w, fs).map_err(|source| Error::RenderDomainXml {
        domain: fs.tag.clone(),
        source,
    })?;
    Ok(String::from_utf8(w.into_inner()).unwrap_or_default())
}

/// `<memoryBacking>` with only shared memory (for a domain that has none yet).
pub fn shared_memory_backing_xml() -> Result<String> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_memory_backing(
        &mut w,
        &MemoryBacking {
            shared_memfd: true,
            hugepage_kib: None,
        },
    )
    .map_err(|source| Error::RenderDomainXml {
        domain: String::new(),
        source,
    })?;
    Ok(String::from_utf8(w.into_inner()).unwrap_or_default())
}

/// `<vmctl:share-ro>TAG</vmctl:share-ro>`, prefixed as the domain's metadata is.
pub fn readonly_share_xml(prefix: &str, tag: &str) -> Result<String> {
    let mut w = Writer::new(Vec::new());
    text(&mut w, &format!("{prefix}:share-ro"), &[], tag).map_err(|source| {
        Error::RenderDomainXml {
            domain: tag.to_string(),
            source,
        }
    })?;
    Ok(String::from_utf8(w.into_inner()).unwrap_or_default())
}

/// vmctl's metadata element: in a domain definition with its namespace declared (prefix
/// `vmctl:`); alone (`prefixed` false) without one, because libvirt's metadata call puts the
/// element and its children into the namespace itself and refuses a second declaration.
fn write_metadata(w: &mut W, m: &Metadata, prefixed: bool) -> io::Result<()> {
    let p = if prefixed { "vmctl:" } else { "" };
    let n = |local: &str| format!("{p}{local}");
    let ns: &[(&str, &str)] = if prefixed {
        &[("xmlns:vmctl", VMCTL_NS)]
    } else {
        &[]
    };
    el(w, &n("vm"), ns, |w| {
        text(w, &n("os"), &[], &m.os)?;
        let opt = |w: &mut W, name: &str, v: Option<String>| match v {
            Some(v) => text(w, &n(name), &[], &v),
            None => Ok(()),
        };
        let path =
            |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());
        opt(w, "release", m.release.clone())?;
        opt(w, "user", m.user.clone())?;
        opt(w, "ssh-key", path(&m.ssh_key))?;
        opt(w, "ip", m.ip.clone())?;
        opt(w, "base-image", path(&m.base_image))?;
        opt(w, "base-sha256", m.base_sha256.clone())?;
        text(w, &n("created"), &[], &m.created)?;
        text(w, &n("version"), &[], &m.version)?;
        for d in &m.disks {
            text(w, &n("disk"), &[], &d.to_string_lossy())?;
        }
        for f in &m.files {
            text(w, &n("file"), &[], &f.to_string_lossy())?;
        }
        opt(w, "dir", path(&m.dir))?;
        for tag in &m.readonly_shares {
            text(w, &n("share-ro"), &[], tag)?;
        }
        for v in &m.vgpus {
            match v {
                VgpuHostdev::Mdev { uuid } => text(w, &n("mdev"), &[], uuid)?,
                VgpuHostdev::Vf { host } => text(w, &n("vgpu-vf"), &[], &host.to_string())?,
            }
        }
        Ok(())
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::parse::parse_domain;
    use crate::domain::{DirectBoot, Disk, DomainType, Graphics, Nic, Serial};

    /// Validates domain XML with libvirt's schema (`virt-xml-validate`, package libvirt-clients).
    pub fn assert_valid_domain_xml(xml: &str) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("domain.xml");
        std::fs::write(&p, xml).unwrap();
        let out = std::process::Command::new("virt-xml-validate")
            .arg(&p)
            .arg("domain")
            .output()
            .expect("virt-xml-validate is installed (apt-get install libvirt-clients)");
        assert!(
            out.status.success(),
            "virt-xml-validate rejected:\n{xml}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn ubuntu_spec() -> DomainSpec {
        let mut s = DomainSpec::new(
            "e2e1",
            DomainType::Qemu,
            CpuMode::HostModel,
            Firmware::Efi { secure_boot: false },
        );
        s.memory_mib = 1024;
        s.direct_boot = Some(DirectBoot {
            kernel: "/var/cache/lab/vmlinuz".into(),
            initrd: Some("/var/cache/lab/initrd.img".into()),
            cmdline: Some("root=/dev/vda rw console=ttyS0 net.ifnames=0".into()),
        });
        s.disks = vec![
            Disk::virtio("/var/lib/vmctl/vms/e2e1/disk.qcow2", "qcow2", "vda"),
            Disk::seed("/var/lib/vmctl/vms/e2e1/seed.iso", "vdb"),
        ];
        s.nics = vec![Nic {
            bridge: "labbr0".into(),
            mac: "52:54:00:12:34:56".into(),
        }];
        s.serial = Some(Serial {
            log_file: Some("/var/lib/vmctl/vms/e2e1/console.log".into()),
        });
        s.metadata = Some(Metadata {
            os: "ubuntu".into(),
            release: Some("24.04".into()),
            user: Some("ubuntu".into()),
            ssh_key: Some("/root/.ssh/id_ed25519.pub".into()),
            ip: Some("198.18.0.10/24".into()),
            base_image: Some("/var/lib/vmctl/images/sha256/abc".into()),
            base_sha256: Some("ab".repeat(32)),
            created: "2026-11-21T23:00:00Z".into(),
            version: "0.1.0".into(),
            disks: vec![
                "/var/lib/vmctl/vms/e2e1/disk.qcow2".into(),
                "/var/lib/vmctl/vms/e2e1/seed.iso".into(),
            ],
            files: vec!["/var/lib/vmctl/vms/e2e1/console.log".into()],
            dir: Some("/var/lib/vmctl/vms/e2e1".into()),
            readonly_shares: Vec::new(),
            vgpus: Vec::new(),
        });
        s
    }

    fn turing_functions() -> Vec<PciAddress> {
        [
            "0000:01:00.0",
            "0000:01:00.1",
            "0000:01:00.2",
            "0000:01:00.3",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect()
    }

    #[test]
    fn ubuntu_direct_boot_domain() {
        let spec = ubuntu_spec();
        let xml = to_xml(&spec).unwrap();
        assert_valid_domain_xml(&xml);
        insta::assert_snapshot!("domain_ubuntu_direct_boot", xml);
        let facts = parse_domain(&xml).unwrap();
        assert_eq!(facts.metadata.as_ref(), spec.metadata.as_ref());
        assert_eq!(facts.firmware, "efi");
        assert_eq!(facts.disks.len(), 2);
        assert!(facts.disks[1].readonly);
        assert_eq!(facts.nics[0].mac.as_deref(), Some("52:54:00:12:34:56"));
        assert_eq!(facts.memory_kib, 1024 * 1024);
        assert!(facts.cpu_mode.is_some());
    }

    #[test]
    fn gpu_domain_with_four_function_turing_gpu() {
        let mut spec = DomainSpec::new(
            "gpu1",
            DomainType::Kvm,
            CpuMode::HostPassthrough,
            Firmware::Efi { secure_boot: true },
        );
        spec.disks = vec![Disk::virtio(
            "/var/lib/vmctl/vms/gpu1/disk.qcow2",
            "qcow2",
            "vda",
        )];
        spec.nics = vec![Nic {
            bridge: "br0".into(),
            mac: "52:54:00:00:00:01".into(),
        }];
        spec.add_pci_device(&turing_functions());
        spec.kvm_hidden = true;
        spec.graphics = Some(Graphics::Vnc);
        let xml = to_xml(&spec).unwrap();
        assert_valid_domain_xml(&xml);
        insta::assert_snapshot!("domain_gpu_turing", xml);
        let facts = parse_domain(&xml).unwrap();
        assert_eq!(facts.hostdevs, turing_functions());
        assert!(facts.metadata.is_none());
        insta::assert_snapshot!("hostdev_function0", hostdev_xml(&spec.hostdevs[0]).unwrap());
    }

    #[test]
    fn bios_custom_cpu_minimal() {
        let mut spec = DomainSpec::new(
            "plain",
            DomainType::Kvm,
            CpuMode::Custom("Skylake-Server".into()),
            Firmware::Bios,
        );
        spec.guest_agent = false;
        spec.serial = None;
        spec.disks = vec![Disk::virtio("/srv/a & b.qcow2", "qcow2", "vda")];
        let xml = to_xml(&spec).unwrap();
        assert_valid_domain_xml(&xml);
        insta::assert_snapshot!("domain_bios_custom_cpu", xml);
        let facts = parse_domain(&xml).unwrap();
        assert_eq!(facts.firmware, "bios");
        assert_eq!(facts.cpu_mode.as_deref(), Some("custom:Skylake-Server"));
        assert_eq!(
            facts.disks[0].path.as_deref(),
            Some(std::path::Path::new("/srv/a & b.qcow2"))
        );
    }

    /// Pinning, a two-cell guest and 1G hugepages: valid for libvirt's schema and read back.
    #[test]
    fn tuned_domain_with_pins_numa_cells_and_hugepages() {
        use crate::domain::tuning::{MemNode, NumaCell, Tuning, VcpuPin};
        let mut spec = DomainSpec::new(
            "tuned",
            DomainType::Kvm,
            CpuMode::HostPassthrough,
            Firmware::Efi { secure_boot: false },
        );
        spec.memory_mib = 8192;
        spec.vcpus = 4;
        spec.add_pci_device(&turing_functions());
        spec.tuning = Tuning {
            vcpupins: vec![
                VcpuPin {
                    vcpu: 0,
                    cpuset: "1".into(),
                },
                VcpuPin {
                    vcpu: 1,
                    cpuset: "2".into(),
                },
                VcpuPin {
                    vcpu: 2,
                    cpuset: "57".into(),
                },
                VcpuPin {
                    vcpu: 3,
                    cpuset: "58".into(),
                },
            ],
            emulatorpin: Some("0,3-55,56,59-111".into()),
            memory_nodeset: Some("0-1".into()),
            memnodes: vec![
                MemNode {
                    cellid: 0,
                    nodeset: "0".into(),
                },
                MemNode {
                    cellid: 1,
                    nodeset: "1".into(),
                },
            ],
            numa_cells: vec![
                NumaCell {
                    id: 0,
                    cpus: "0-1".into(),
                    memory_mib: 4096,
                },
                NumaCell {
                    id: 1,
                    cpus: "2-3".into(),
                    memory_mib: 4096,
                },
            ],
        };
        spec.memory_backing.hugepage_kib = Some(1048576);
        let xml = to_xml(&spec).unwrap();
        assert_valid_domain_xml(&xml);
        insta::assert_snapshot!("domain_tuned", xml);
        let facts = parse_domain(&xml).unwrap();
        assert_eq!(facts.tuning, spec.tuning);
        assert_eq!(facts.hugepage_kib, Some(1048576));

        // Each option alone, and a custom CPU model with cells, are valid too.
        let mut one = ubuntu_spec();
        one.memory_backing.hugepage_kib = Some(2048);
        assert_valid_domain_xml(&to_xml(&one).unwrap());
        // With a virtiofs share's shared memory too: one element.
        one.memory_backing.shared_memfd = true;
        let xml = to_xml(&one).unwrap();
        assert_eq!(xml.matches("<memoryBacking>").count(), 1, "{xml}");
        assert_eq!(xml.matches("<source type=\"memfd\"/>").count(), 1, "{xml}");
        assert_valid_domain_xml(&to_xml(&one).unwrap());
        let mut one = ubuntu_spec();
        one.tuning.vcpupins = spec.tuning.vcpupins[..2].to_vec();
        one.tuning.emulatorpin = Some("0".into());
        one.tuning.memory_nodeset = Some("0".into());
        assert_valid_domain_xml(&to_xml(&one).unwrap());
        let mut one = ubuntu_spec();
        one.cpu = CpuMode::Custom("Skylake-Server".into());
        one.vcpus = 4;
        one.memory_mib = 8192;
        one.tuning.numa_cells = spec.tuning.numa_cells.clone();
        let xml = to_xml(&one).unwrap();
        assert_valid_domain_xml(&xml);
        assert_eq!(parse_domain(&xml).unwrap().tuning.numa_cells.len(), 2);
    }

    #[test]
    fn generated_domains_define_on_the_test_driver() {
        use crate::{Hypervisor, Libvirt};
        let lv = Libvirt::open("test:///default").unwrap();
        let spec = ubuntu_spec();
        lv.define(&spec.name, &to_xml(&spec).unwrap()).unwrap();
        let back = lv.require("e2e1").unwrap();
        let facts = parse_domain(&back.xml).unwrap();
        assert_eq!(facts.metadata, spec.metadata);
        assert_eq!(
            facts.kernel.as_deref(),
            Some(std::path::Path::new("/var/cache/lab/vmlinuz"))
        );
        lv.undefine("e2e1", true).unwrap();

        let mut gpu = DomainSpec::new(
            "gpu-t",
            DomainType::Kvm,
            CpuMode::HostPassthrough,
            Firmware::Efi { secure_boot: false },
        );
        gpu.add_pci_device(&turing_functions());
        lv.define("gpu-t", &to_xml(&gpu).unwrap()).unwrap();
        let facts = parse_domain(&lv.require("gpu-t").unwrap().xml).unwrap();
        assert_eq!(facts.hostdevs, turing_functions());
        lv.undefine("gpu-t", true).unwrap();
    }

    /// vGPU hostdevs: an mdev by UUID and a VF left on its driver (managed='no'); both pass
    /// libvirt's schema and read back; vmctl's record of them round-trips in the metadata.
    #[test]
    fn vgpu_hostdevs_validate_and_read_back() {
        let mut spec = ubuntu_spec();
        spec.vgpus = vec![
            crate::domain::VgpuHostdev::Mdev {
                uuid: "aa618089-8b16-4d01-a136-25a0f3c73123".into(),
            },
            crate::domain::VgpuHostdev::Vf {
                host: "81:00.5".parse().unwrap(),
            },
        ];
        let mut md = spec.metadata.clone().unwrap_or_default();
        md.vgpus = spec.vgpus.clone();
        spec.metadata = Some(md);
        let xml = to_xml(&spec).unwrap();
        assert_valid_domain_xml(&xml);
        let facts = parse_domain(&xml).unwrap();
        assert_eq!(facts.mdevs, ["aa618089-8b16-4d01-a136-25a0f3c73123"]);
        assert!(facts.hostdevs.contains(&"81:00.5".parse().unwrap()));
        assert_eq!(facts.metadata.unwrap().vgpus, spec.vgpus);
        insta::assert_snapshot!("vgpu_mdev", vgpu_xml(&spec.vgpus[0]).unwrap());
        insta::assert_snapshot!("vgpu_vf", vgpu_xml(&spec.vgpus[1]).unwrap());
    }
}
