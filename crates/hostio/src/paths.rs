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
pub const DEV_KVM: &str = "/dev/kvm";
pub const SYSTEM_PCI_IDS: &[&str] = &[
    "/usr/share/misc/pci.ids",
    "/usr/share/hwdata/pci.ids",
    "/usr/share/pci.ids",
];
