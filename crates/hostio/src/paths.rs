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
pub const ETC_OS_RELEASE: &str = "/etc/os-release";
pub const USR_LIB_OS_RELEASE: &str = "/usr/lib/os-release";
pub const DEV_KVM: &str = "/dev/kvm";
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
pub const BOOTSTRAP_STATE_DIR: &str = "/var/lib/gpu-vm-bootstrap";
pub const BOOTSTRAP_LOG: &str = "/var/log/gpu-vm-bootstrap.log";

// netscan: neighbour table, ARP timers and OUI vendor files (first one present wins).
pub const PROC_NET_ARP: &str = "/proc/net/arp";
pub const PROC_SYS_NET_IPV4_NEIGH: &str = "/proc/sys/net/ipv4/neigh";
pub const SYSTEM_OUI_FILES: &[&str] = &[
    "/usr/share/arp-scan/ieee-oui.txt",
    "/usr/share/ieee-data/oui.txt",
];
