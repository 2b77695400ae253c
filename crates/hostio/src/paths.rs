//! Every literal absolute host path the project uses lives here, so they can be audited at once.
//! Paths are written as they are on the host; [`crate::HostRoot`] maps them under a root.

pub const SYS_BUS_PCI_DEVICES: &str = "/sys/bus/pci/devices";
pub const SYS_BUS_PCI_DRIVERS: &str = "/sys/bus/pci/drivers";
pub const SYS_BUS_PCI_DRIVERS_PROBE: &str = "/sys/bus/pci/drivers_probe";
pub const SYS_KERNEL_IOMMU_GROUPS: &str = "/sys/kernel/iommu_groups";
pub const SYS_CLASS_IOMMU: &str = "/sys/class/iommu";
pub const SYS_CLASS_NET: &str = "/sys/class/net";
pub const SYS_MODULE: &str = "/sys/module";
pub const PROC_CPUINFO: &str = "/proc/cpuinfo";
pub const PROC_CMDLINE: &str = "/proc/cmdline";
pub const PROC_NET_ROUTE: &str = "/proc/net/route";
pub const PROC_NET_FIB_TRIE: &str = "/proc/net/fib_trie";
pub const PROC_NET_IF_INET6: &str = "/proc/net/if_inet6";
pub const SYS_MODULE_NVIDIA: &str = "/sys/module/nvidia";
pub const PROC: &str = "/proc";
/// Owned by the effective uid of the process that looks at it (proc(5)).
pub const PROC_SELF: &str = "/proc/self";
pub const ETC_OS_RELEASE: &str = "/etc/os-release";
pub const USR_LIB_OS_RELEASE: &str = "/usr/lib/os-release";
pub const DEV_KVM: &str = "/dev/kvm";
/// `uname -r` of the running kernel (proc(5): /proc/sys/kernel/osrelease).
pub const PROC_KERNEL_OSRELEASE: &str = "/proc/sys/kernel/osrelease";

// Firmware and boot: Secure Boot, lockdown, boot loaders.
/// Exists only when the kernel was booted by UEFI firmware (Documentation/arch/x86/boot.rst).
pub const SYS_FIRMWARE_EFI: &str = "/sys/firmware/efi";
/// The EFI global variable `SecureBoot` (UEFI spec 2.10, 3.3 "Globally Defined Variables"),
/// as efivarfs shows it: 4 bytes of attributes, then the one data byte (1 = enabled)
/// (Documentation/filesystems/efivarfs.rst).
pub const EFIVAR_SECURE_BOOT: &str =
    "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// `LoaderInfo`, set by the boot loader that started this boot (systemd's Boot Loader
/// Interface: systemd-boot writes it, in UTF-16LE, e.g. `systemd-boot 255.4-1ubuntu8`).
pub const EFIVAR_LOADER_INFO: &str =
    "/sys/firmware/efi/efivars/LoaderInfo-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
/// `[none] integrity confidentiality`, the active mode in brackets (kernel-lockdown(7)).
pub const SYS_KERNEL_SECURITY_LOCKDOWN: &str = "/sys/kernel/security/lockdown";
/// GRUB's generated config; its presence says GRUB is installed.
pub const BOOT_GRUB_CFG: &str = "/boot/grub/grub.cfg";
/// The kernel command line kernel-install writes into each loader entry (kernel-install(8)).
pub const ETC_KERNEL_CMDLINE: &str = "/etc/kernel/cmdline";
/// Where Ubuntu mounts the ESP; systemd-boot reads `loader/entries/*.conf` from it (Boot
/// Loader Specification, type #1 entries).
pub const BOOT_EFI: &str = "/boot/efi";
pub const BOOT_EFI_LOADER_ENTRIES: &str = "/boot/efi/loader/entries";
pub const BOOT_EFI_SYSTEMD_BOOT: &str = "/boot/efi/EFI/systemd/systemd-bootx64.efi";
/// The installed kernels (`vmlinuz-<release>`), as Ubuntu's kernel packages place them.
pub const BOOT: &str = "/boot";
/// kernelstub's JSON configuration (Pop!_OS; kernelstub/config.py): `user.kernel_options`.
pub const ETC_KERNELSTUB_CONFIG: &str = "/etc/kernelstub/configuration";

// NVIDIA drivers already on the host.
/// Installed by NVIDIA's `.run` installer (and only by it).
pub const USR_BIN_NVIDIA_UNINSTALL: &str = "/usr/bin/nvidia-uninstall";
/// The loaded nvidia module's version (e.g. `550.120`).
pub const SYS_MODULE_NVIDIA_VERSION: &str = "/sys/module/nvidia/version";
/// `/lib/modules/<release>/`: the running kernel's modules.
pub const LIB_MODULES: &str = "/lib/modules";
/// Per-package file lists (`<package>[:<arch>].list`): what dpkg knows it installed.
pub const DPKG_INFO: &str = "/var/lib/dpkg/info";
/// apt's downloaded package indexes (`*_Packages`), named after their source URL.
pub const APT_LISTS: &str = "/var/lib/apt/lists";
/// The Machine Owner Key Ubuntu's shim-signed creates and DKMS signs modules with
/// (`update-secureboot-policy`, shim-signed).
pub const SHIM_MOK_DER: &str = "/var/lib/shim-signed/mok/MOK.der";
/// `--config /dev/null` means "no settings from a file": the one device an input file may be.
pub const DEV_NULL: &str = "/dev/null";
pub const SYSTEM_PCI_IDS: &[&str] = &[
    "/usr/share/misc/pci.ids",
    "/usr/share/hwdata/pci.ids",
    "/usr/share/pci.ids",
];

// gpu-vm-bootstrap: files it plans, checks or keeps its state in.
pub const ETC_DEFAULT_GRUB: &str = "/etc/default/grub";
/// Sourced after /etc/default/grub by update-grub; cloud images set the cmdline here.
pub const ETC_DEFAULT_GRUB_D: &str = "/etc/default/grub.d";
pub const ETC_MODULES_LOAD_VFIO: &str = "/etc/modules-load.d/vfio.conf";
pub const ETC_MODPROBE_VFIO: &str = "/etc/modprobe.d/vfio.conf";
pub const VFIO_OVERRIDE_SCRIPT: &str = "/usr/local/sbin/gpu-vm-bootstrap-vfio-override";
pub const INITRAMFS_HOOK_VFIO: &str = "/etc/initramfs-tools/hooks/gpu-vm-bootstrap-vfio";
pub const ETC_NETPLAN: &str = "/etc/netplan";
/// netplan's search path besides /etc/netplan, lowest precedence first: a file in a later
/// directory shadows one of the same name in an earlier one (netplan(5), "General structure").
pub const LIB_NETPLAN: &str = "/lib/netplan";
pub const RUN_NETPLAN: &str = "/run/netplan";
/// Where netplan installs its generator: /usr/libexec since 0.106 (Debian 12, Ubuntu 24.04),
/// /lib before that (netplan's meson.build keeps a /lib link for compatibility).
pub const NETPLAN_GENERATORS: &[&str] = &["/usr/libexec/netplan/generate", "/lib/netplan/generate"];
pub const NETPLAN_BRIDGE_FILE: &str = "/etc/netplan/60-gpu-vm-bootstrap-bridge.yaml";
pub const CLOUD_INIT_NETWORK_OFF: &str = "/etc/cloud/cloud.cfg.d/99-disable-network-config.cfg";
pub const PROFILE_CUDA: &str = "/etc/profile.d/cuda.sh";
pub const APT_CONTAINER_TOOLKIT_LIST: &str =
    "/etc/apt/sources.list.d/nvidia-container-toolkit.list";
pub const CONTAINER_TOOLKIT_KEYRING: &str =
    "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg";
pub const CUDA_KEYRING: &str = "/usr/share/keyrings/cuda-archive-keyring.gpg";
pub const DPKG_STATUS: &str = "/var/lib/dpkg/status";
pub const ETC_GROUP: &str = "/etc/group";
pub const LIBVIRTD_WANTS: &str = "/etc/systemd/system/multi-user.target.wants/libvirtd.service";
pub const USR_LOCAL_BIN_VMCTL: &str = "/usr/local/bin/vmctl";
/// vmctl as installed by its .deb (packaging/build-debs.sh).
pub const USR_BIN_VMCTL: &str = "/usr/bin/vmctl";
pub const ETC_VMCTL_CONFIG: &str = "/etc/vmctl/config.toml";
/// The admin's VM templates (`NAME.toml`), read by `vmctl create --template`.
pub const ETC_VMCTL_TEMPLATES: &str = "/etc/vmctl/templates";
pub const BOOTSTRAP_STATE_DIR: &str = "/var/lib/gpu-vm-bootstrap";
pub const BOOTSTRAP_LOG: &str = "/var/log/gpu-vm-bootstrap.log";

// netscan: neighbour table, ARP timers and OUI vendor files (first one present wins).
pub const PROC_NET_ARP: &str = "/proc/net/arp";
pub const PROC_SYS_NET_IPV4_NEIGH: &str = "/proc/sys/net/ipv4/neigh";
pub const SYSTEM_OUI_FILES: &[&str] = &[
    "/usr/share/arp-scan/ieee-oui.txt",
    "/usr/share/ieee-data/oui.txt",
];

// vmctl: its settings' defaults and the host files it reads.
/// The host's accounts: a guest user may not shadow a system account of the host.
pub const ETC_PASSWD: &str = "/etc/passwd";
/// vmctl's state (reservations, Talos clusters, locks): the `state_dir` default.
pub const VMCTL_STATE_DIR: &str = "/var/lib/vmctl";
/// VM disks and seeds: the `storage_dir` default.
pub const VMCTL_STORAGE_DIR: &str = "/var/lib/vmctl/vms";
/// Downloaded base images: the `image_cache` default.
pub const VMCTL_IMAGE_CACHE: &str = "/var/lib/vmctl/images";
/// The key that signs cloud-images.ubuntu.com's SHA256SUMS (package ubuntu-keyring).
pub const UBUNTU_CLOUDIMAGE_KEYRING: &str = "/usr/share/keyrings/ubuntu-cloudimage-keyring.gpg";
/// The key that signs releases.ubuntu.com's SHA256SUMS (package ubuntu-keyring).
pub const UBUNTU_ARCHIVE_KEYRING: &str = "/usr/share/keyrings/ubuntu-archive-keyring.gpg";
/// One directory per GPU the loaded nvidia driver drives (`information` inside).
pub const PROC_DRIVER_NVIDIA_GPUS: &str = "/proc/driver/nvidia/gpus";

// NUMA topology and hugepages (Documentation/ABI/stable/sysfs-devices-node,
// Documentation/admin-guide/mm/hugetlbpage.rst).
/// `nodeN/` per NUMA node, each with `cpulist` and `hugepages/hugepages-<size>kB/`.
pub const SYS_DEVICES_SYSTEM_NODE: &str = "/sys/devices/system/node";
/// The online CPUs, in the kernel's cpulist format (`0-15,32-47`).
pub const SYS_DEVICES_SYSTEM_CPU_ONLINE: &str = "/sys/devices/system/cpu/online";
/// One `hugepages-<size>kB/` per supported page size: the host-wide pools.
pub const SYS_KERNEL_MM_HUGEPAGES: &str = "/sys/kernel/mm/hugepages";
/// `MemTotal:` and the other memory counters (proc(5)).
pub const PROC_MEMINFO: &str = "/proc/meminfo";
/// The default-size hugepage pool as a sysctl (Documentation/admin-guide/sysctl/vm.rst).
pub const PROC_SYS_VM_NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";
/// qemu's vhost-user backend descriptors (qemu docs/interop/vhost-user.json, "Search paths"),
/// in the order libvirt searches them: the first `"type": "fs"` entry names virtiofsd.
pub const QEMU_VHOST_USER_DIRS: &[&str] = &["/etc/qemu/vhost-user", "/usr/share/qemu/vhost-user"];
/// Where the distributions install virtiofsd: the Rust daemon of package `virtiofsd` (Ubuntu
/// 24.04, Debian 13) and qemu's C daemon of package `qemu-system-common` (Debian 12, qemu 7.2).
pub const VIRTIOFSD_PATHS: &[&str] = &["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"];

// vGPU and MIG (vmctl `gpu status`, `gpu attach --vgpu`).
/// Mediated devices by UUID, each a link to `<parent device>/<UUID>` with `mdev_type` and
/// `remove` (Documentation/driver-api/vfio-mediated-device.rst, "sysfs files of mediated
/// devices"; Documentation/ABI/testing/sysfs-bus-vfio-mdev).
pub const SYS_BUS_MDEV_DEVICES: &str = "/sys/bus/mdev/devices";
/// NVIDIA's capability files: `gpu<minor>/mig/gi<ID>/access` and `gi<ID>/ci<ID>/access` exist
/// for each MIG GPU and compute instance (MIG User Guide, "Device Nodes and Capabilities").
pub const PROC_DRIVER_NVIDIA_CAPABILITIES: &str = "/proc/driver/nvidia/capabilities";
// NVSwitch hosts (HGX): NVIDIA Fabric Manager (docs.nvidia.com/datacenter/tesla/
// fabric-manager-user-guide, "Fabric Manager Startup Options").
/// Fabric Manager's default config file; `FABRIC_MODE=` in it picks bare metal / full
/// passthrough (0), Shared NVSwitch multitenancy (1) or vGPU multitenancy (2).
pub const FABRICMANAGER_CFG: &str = "/usr/share/nvidia/nvswitch/fabricmanager.cfg";
