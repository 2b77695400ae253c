//! Real hosts' boot and driver situations on fixture trees (`tests/fixtures/hosts/`, named
//! after the case): Secure Boot on and off, BIOS, lockdown, systemd-boot, kernelstub, an unknown
//! boot loader, and each source of an NVIDIA driver already installed. Each test asserts the
//! plan's exact actions (with their reasons), notes, manual steps and refusals.

use crate::common;

use common::*;
use gpu_vm_bootstrap::{ActionKind, Applier, GpuMode, NullLog, Options, Plan, Refusal, Skips};
use hostio::RecordingRunner;

/// One line per action: `phase kind target # reason`.
fn summary(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .map(|a| {
            let target = match &a.kind {
                ActionKind::WriteFile { path, .. } | ActionKind::InstallFile { path, .. } => {
                    path.clone()
                }
                k => k.argv().unwrap_or_default().join(" "),
            };
            let kind = serde_json::to_value(&a.kind).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string();
            format!("{} {kind} {target} # {}", a.phase.name(), a.reason)
        })
        .collect()
}

fn only(nvidia: bool, iommu: bool) -> Skips {
    Skips {
        nvidia: !nvidia,
        kvm: true,
        iommu: !iommu,
        bridge: true,
        vmctl: true,
    }
}

fn host_mode_nvidia_only() -> Options {
    Options {
        skip: only(true, false),
        ..opts(GpuMode::Host)
    }
}

fn iommu_only() -> Options {
    Options {
        skip: only(false, true),
        ..opts(GpuMode::Passthrough)
    }
}

fn refusal(r: Refusal) -> Vec<String> {
    r.problems
        .iter()
        .map(|p| format!("[{}] {} | help: {}", p.phase.name(), p.message, p.help))
        .collect()
}

#[test]
fn secure_boot_on_installs_ubuntus_signed_prebuilt_modules() {
    let h = host("secure-boot-on", Net::Dhcp);
    let plan = h
        .plan(&Options {
            force: false,
            ..host_mode_nvidia_only()
        })
        .unwrap();
    assert_eq!(
        summary(&plan),
        [
            "preflight run_command apt-get update # refresh the package lists (also checks that the repositories are reachable)",
            "nvidia install_packages env DEBIAN_FRONTEND=noninteractive apt-get install -y linux-modules-nvidia-570-open-generic nvidia-headless-no-dkms-570-open nvidia-utils-570 # NVIDIA driver 570-open for 0000:01:00.0 from Ubuntu's archive: Secure Boot is on (kernel lockdown: integrity), and these prebuilt modules for kernel 6.8.0-48-generic are signed by Canonical's key, which the kernel trusts, so no key enrolment is needed (the newest branch with signed modules for this kernel in apt's lists)",
            "nvidia run_command curl -fsSL -o /var/lib/gpu-vm-bootstrap/cuda-keyring.deb https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/cuda-keyring_1.1-1_all.deb # download NVIDIA's CUDA repository keyring package",
            "nvidia run_command dpkg -i /var/lib/gpu-vm-bootstrap/cuda-keyring.deb # add the CUDA apt repository and its signing key",
            "nvidia run_command apt-get update # read the CUDA repository",
            "nvidia install_packages env DEBIAN_FRONTEND=noninteractive apt-get install -y cuda-toolkit # the CUDA toolkit",
            "nvidia write_file /etc/profile.d/cuda.sh # put /usr/local/cuda/bin on PATH and /usr/local/cuda/lib64 on LD_LIBRARY_PATH for login shells",
            "nvidia run_command curl -fsSL -o /var/lib/gpu-vm-bootstrap/nvidia-container-toolkit.asc https://nvidia.github.io/libnvidia-container/gpgkey # download the libnvidia-container signing key",
            "nvidia run_command gpg --batch --yes --dearmor -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg /var/lib/gpu-vm-bootstrap/nvidia-container-toolkit.asc # store the key dearmored where the apt source's signed-by points",
            "nvidia write_file /etc/apt/sources.list.d/nvidia-container-toolkit.list # the nvidia-container-toolkit apt repository",
            "nvidia run_command apt-get update # read the nvidia-container-toolkit repository",
            "nvidia install_packages env DEBIAN_FRONTEND=noninteractive apt-get install -y nvidia-container-toolkit # GPU access for containers (`nvidia-ctk runtime configure`, CDI)",
        ]
    );
    assert_eq!(plan.notes, Vec::<String>::new());
    assert_eq!(plan.manual_steps, Vec::<String>::new());
    assert_eq!(
        plan.reboot_reasons,
        vec!["the nvidia kernel module is not loaded: the driver is active after a reboot"]
    );
}

#[test]
fn secure_boot_off_keeps_the_cuda_repository_driver() {
    let h = host("secure-boot-off", Net::Dhcp);
    let plan = h
        .plan(&Options {
            force: false,
            ..host_mode_nvidia_only()
        })
        .unwrap();
    assert_eq!(
        summary(&plan),
        [
            "preflight run_command apt-get update # refresh the package lists (also checks that the repositories are reachable)",
            "nvidia run_command curl -fsSL -o /var/lib/gpu-vm-bootstrap/cuda-keyring.deb https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/cuda-keyring_1.1-1_all.deb # download NVIDIA's CUDA repository keyring package",
            "nvidia run_command dpkg -i /var/lib/gpu-vm-bootstrap/cuda-keyring.deb # add the CUDA apt repository and its signing key",
            "nvidia run_command apt-get update # read the CUDA repository",
            "nvidia install_packages env DEBIAN_FRONTEND=noninteractive apt-get install -y nvidia-open # NVIDIA driver for 0000:01:00.0 (open kernel modules: every host GPU is Turing or newer)",
            "nvidia install_packages env DEBIAN_FRONTEND=noninteractive apt-get install -y cuda-toolkit # the CUDA toolkit",
            "nvidia write_file /etc/profile.d/cuda.sh # put /usr/local/cuda/bin on PATH and /usr/local/cuda/lib64 on LD_LIBRARY_PATH for login shells",
            "nvidia run_command curl -fsSL -o /var/lib/gpu-vm-bootstrap/nvidia-container-toolkit.asc https://nvidia.github.io/libnvidia-container/gpgkey # download the libnvidia-container signing key",
            "nvidia run_command gpg --batch --yes --dearmor -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg /var/lib/gpu-vm-bootstrap/nvidia-container-toolkit.asc # store the key dearmored where the apt source's signed-by points",
            "nvidia write_file /etc/apt/sources.list.d/nvidia-container-toolkit.list # the nvidia-container-toolkit apt repository",
            "nvidia run_command apt-get update # read the nvidia-container-toolkit repository",
            "nvidia install_packages env DEBIAN_FRONTEND=noninteractive apt-get install -y nvidia-container-toolkit # GPU access for containers (`nvidia-ctk runtime configure`, CDI)",
        ]
    );
    assert_eq!(plan.notes, Vec::<String>::new());
    assert_eq!(plan.manual_steps, Vec::<String>::new());
    assert_eq!(
        plan.reboot_reasons,
        vec!["the nvidia kernel module is not loaded: the driver is active after a reboot"]
    );
}

#[test]
fn lockdown_without_secure_boot_also_takes_signed_modules() {
    let h = host("lockdown-confidentiality", Net::Dhcp);
    let plan = h
        .plan(&Options {
            force: false,
            ..host_mode_nvidia_only()
        })
        .unwrap();
    assert_eq!(
        summary(&plan),
        [
            "preflight run_command apt-get update # refresh the package lists (also checks that the repositories are reachable)",
            "nvidia install_packages env DEBIAN_FRONTEND=noninteractive apt-get install -y linux-modules-nvidia-570-open-generic nvidia-headless-no-dkms-570-open nvidia-utils-570 # NVIDIA driver 570-open for 0000:01:00.0 from Ubuntu's archive: the kernel is locked down (confidentiality), and these prebuilt modules for kernel 6.8.0-48-generic are signed by Canonical's key, which the kernel trusts, so no key enrolment is needed (the newest branch with signed modules for this kernel in apt's lists)",
            "nvidia run_command curl -fsSL -o /var/lib/gpu-vm-bootstrap/cuda-keyring.deb https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/cuda-keyring_1.1-1_all.deb # download NVIDIA's CUDA repository keyring package",
            "nvidia run_command dpkg -i /var/lib/gpu-vm-bootstrap/cuda-keyring.deb # add the CUDA apt repository and its signing key",
            "nvidia run_command apt-get update # read the CUDA repository",
            "nvidia install_packages env DEBIAN_FRONTEND=noninteractive apt-get install -y cuda-toolkit # the CUDA toolkit",
            "nvidia write_file /etc/profile.d/cuda.sh # put /usr/local/cuda/bin on PATH and /usr/local/cuda/lib64 on LD_LIBRARY_PATH for login shells",
            "nvidia run_command curl -fsSL -o /var/lib/gpu-vm-bootstrap/nvidia-container-toolkit.asc https://nvidia.github.io/libnvidia-container/gpgkey # download the libnvidia-container signing key",
            "nvidia run_command gpg --batch --yes --dearmor -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg /var/lib/gpu-vm-bootstrap/nvidia-container-toolkit.asc # store the key dearmored where the apt source's signed-by points",
            "nvidia write_file /etc/apt/sources.list.d/nvidia-container-toolkit.list # the nvidia-container-toolkit apt repository",
            "nvidia run_command apt-get update # read the nvidia-container-toolkit repository",
            "nvidia install_packages env DEBIAN_FRONTEND=noninteractive apt-get install -y nvidia-container-toolkit # GPU access for containers (`nvidia-ctk runtime configure`, CDI)",
        ]
    );
    assert_eq!(plan.notes, Vec::<String>::new());
    assert_eq!(plan.manual_steps, Vec::<String>::new());
    assert_eq!(
        plan.reboot_reasons,
        vec!["the nvidia kernel module is not loaded: the driver is active after a reboot"]
    );
}

#[test]
fn secure_boot_without_signed_modules_plans_dkms_and_mok_enrolment() {
    let h = host("secure-boot-on-dkms-only", Net::Dhcp);
    let plan = h
        .plan(&Options {
            force: false,
            ..host_mode_nvidia_only()
        })
        .unwrap();
    assert_eq!(
        summary(&plan),
        [
            "preflight run_command apt-get update # refresh the package lists (also checks that the repositories are reachable)",
            "nvidia run_command update-secureboot-policy --new-key # create the machine owner key DKMS signs modules with (/var/lib/shim-signed/mok/MOK.der)",
            "nvidia run_command curl -fsSL -o /var/lib/gpu-vm-bootstrap/cuda-keyring.deb https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/cuda-keyring_1.1-1_all.deb # download NVIDIA's CUDA repository keyring package",
            "nvidia run_command dpkg -i /var/lib/gpu-vm-bootstrap/cuda-keyring.deb # add the CUDA apt repository and its signing key",
            "nvidia run_command apt-get update # read the CUDA repository",
            "nvidia install_packages env DEBIAN_FRONTEND=noninteractive apt-get install -y nvidia-open # NVIDIA driver for 0000:01:00.0 (open kernel modules: every host GPU is Turing or newer)",
            "nvidia install_packages env DEBIAN_FRONTEND=noninteractive apt-get install -y cuda-toolkit # the CUDA toolkit",
            "nvidia write_file /etc/profile.d/cuda.sh # put /usr/local/cuda/bin on PATH and /usr/local/cuda/lib64 on LD_LIBRARY_PATH for login shells",
            "nvidia run_command curl -fsSL -o /var/lib/gpu-vm-bootstrap/nvidia-container-toolkit.asc https://nvidia.github.io/libnvidia-container/gpgkey # download the libnvidia-container signing key",
            "nvidia run_command gpg --batch --yes --dearmor -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg /var/lib/gpu-vm-bootstrap/nvidia-container-toolkit.asc # store the key dearmored where the apt source's signed-by points",
            "nvidia write_file /etc/apt/sources.list.d/nvidia-container-toolkit.list # the nvidia-container-toolkit apt repository",
            "nvidia run_command apt-get update # read the nvidia-container-toolkit repository",
            "nvidia install_packages env DEBIAN_FRONTEND=noninteractive apt-get install -y nvidia-container-toolkit # GPU access for containers (`nvidia-ctk runtime configure`, CDI)",
        ]
    );
    assert_eq!(plan.notes, Vec::<String>::new());
    assert_eq!(
        plan.manual_steps,
        vec![
            "enrol the key DKMS signs the NVIDIA module with: `sudo mokutil --import /var/lib/shim-signed/mok/MOK.der` (choose a one-time password)",
            "reboot; before Ubuntu starts, MokManager (blue screen) asks: Enroll MOK → Continue → Yes → the password → Reboot",
            "after the reboot, `gpu-vm-bootstrap verify` checks that the nvidia module loaded"
        ]
    );
    assert_eq!(
        plan.reboot_reasons,
        vec!["the nvidia kernel module is not loaded: the driver is active after a reboot"]
    );
}

#[test]
fn passthrough_under_secure_boot_needs_no_key() {
    let h = host("secure-boot-on", Net::Dhcp);
    let plan = h
        .plan(&Options {
            force: false,
            ..iommu_only()
        })
        .unwrap();
    assert_eq!(
        summary(&plan),
        [
            "iommu write_file /etc/default/grub # enable the IOMMU in passthrough mode: add `intel_iommu=on iommu=pt` to the kernel command line",
            "iommu write_file /etc/modules-load.d/vfio.conf # load vfio, vfio_iommu_type1 and vfio_pci at boot",
            "iommu write_file /etc/modprobe.d/vfio.conf # vfio-pci claims every function of 0000:01:00.0 (ids 10de:2204,10de:1aef); the NVIDIA, nouveau and HDA audio drivers load after it",
            "iommu run_command update-grub # regenerate /boot/grub/grub.cfg with the new kernel command line",
            "iommu run_command update-initramfs -u -k all # rebuild the initramfs so vfio-pci claims the GPUs before any other driver",
        ]
    );
    assert_eq!(
        plan.notes,
        vec![
            "Secure Boot is on (kernel lockdown: integrity): passthrough is not affected, because vfio-pci, the only driver it needs, is part of Ubuntu's signed kernel; no key enrolment is needed for 0000:01:00.0"
        ]
    );
    assert_eq!(plan.manual_steps, Vec::<String>::new());
    assert_eq!(
        plan.reboot_reasons,
        vec![
            "0000:01:00.0 not bound to vfio-pci yet",
            "the running kernel lacks `intel_iommu=on iommu=pt`"
        ]
    );
}

#[test]
fn bios_boot_edits_grub() {
    let h = host("bios-grub", Net::Dhcp);
    let plan = h
        .plan(&Options {
            force: false,
            ..iommu_only()
        })
        .unwrap();
    assert_eq!(
        summary(&plan),
        [
            "iommu write_file /etc/default/grub # enable the IOMMU in passthrough mode: add `intel_iommu=on iommu=pt` to the kernel command line",
            "iommu write_file /etc/modules-load.d/vfio.conf # load vfio, vfio_iommu_type1 and vfio_pci at boot",
            "iommu write_file /etc/modprobe.d/vfio.conf # vfio-pci claims every function of 0000:01:00.0 (ids 10de:2204,10de:1aef); the NVIDIA, nouveau and HDA audio drivers load after it",
            "iommu run_command update-grub # regenerate /boot/grub/grub.cfg with the new kernel command line",
            "iommu run_command update-initramfs -u -k all # rebuild the initramfs so vfio-pci claims the GPUs before any other driver",
        ]
    );
    assert_eq!(plan.notes, Vec::<String>::new());
    assert_eq!(plan.manual_steps, Vec::<String>::new());
    assert_eq!(
        plan.reboot_reasons,
        vec![
            "0000:01:00.0 not bound to vfio-pci yet",
            "the running kernel lacks `intel_iommu=on iommu=pt`"
        ]
    );
}

#[test]
fn systemd_boot_edits_etc_kernel_cmdline_never_grub() {
    let h = host("systemd-boot", Net::Dhcp);
    let plan = h
        .plan(&Options {
            force: false,
            ..iommu_only()
        })
        .unwrap();
    assert_eq!(
        summary(&plan),
        [
            "iommu write_file /etc/kernel/cmdline # enable the IOMMU in passthrough mode: add `intel_iommu=on iommu=pt` to the kernel command line (boot loader: systemd-boot (LoaderInfo EFI variable: \"systemd-boot 255.4-1ubuntu8\"); kernel-install copies /etc/kernel/cmdline into each loader entry)",
            "iommu write_file /etc/modules-load.d/vfio.conf # load vfio, vfio_iommu_type1 and vfio_pci at boot",
            "iommu write_file /etc/modprobe.d/vfio.conf # vfio-pci claims every function of 0000:01:00.0 (ids 10de:2204,10de:1aef); the NVIDIA, nouveau and HDA audio drivers load after it",
            "iommu run_command kernel-install add 6.8.0-45-generic /boot/vmlinuz-6.8.0-45-generic /boot/initrd.img-6.8.0-45-generic # systemd-boot: rewrite the loader entry of kernel 6.8.0-45-generic with the new /etc/kernel/cmdline",
            "iommu run_command kernel-install add 6.8.0-48-generic /boot/vmlinuz-6.8.0-48-generic /boot/initrd.img-6.8.0-48-generic # systemd-boot: rewrite the loader entry of kernel 6.8.0-48-generic with the new /etc/kernel/cmdline",
            "iommu run_command update-initramfs -u -k all # rebuild the initramfs so vfio-pci claims the GPUs before any other driver",
        ]
    );
    assert_eq!(plan.notes, Vec::<String>::new());
    assert_eq!(plan.manual_steps, Vec::<String>::new());
    assert_eq!(
        plan.reboot_reasons,
        vec![
            "0000:01:00.0 not bound to vfio-pci yet",
            "the running kernel lacks `intel_iommu=on iommu=pt`"
        ]
    );
}

#[test]
fn kernelstub_edits_its_configuration() {
    let h = host("kernelstub", Net::Dhcp);
    let plan = h
        .plan(&Options {
            force: true,
            ..iommu_only()
        })
        .unwrap();
    assert_eq!(
        summary(&plan),
        [
            "iommu write_file /etc/kernelstub/configuration # enable the IOMMU in passthrough mode: add `intel_iommu=on iommu=pt` to the kernel command line (boot loader: kernelstub (LoaderInfo EFI variable: \"systemd-boot 255.4-1pop1~1711000000~24.04~1a2b3c4\"); kernelstub writes `user.kernel_options` into the loader entry)",
            "iommu write_file /etc/modules-load.d/vfio.conf # load vfio, vfio_iommu_type1 and vfio_pci at boot",
            "iommu write_file /etc/modprobe.d/vfio.conf # vfio-pci claims every function of 0000:01:00.0 (ids 10de:2204,10de:1aef); the NVIDIA, nouveau and HDA audio drivers load after it",
            "iommu run_command kernelstub --verbose --preserve-live-mode # kernelstub: rewrite the loader entry from /etc/kernelstub/configuration",
            "iommu run_command update-initramfs -u -k all # rebuild the initramfs so vfio-pci claims the GPUs before any other driver",
        ]
    );
    assert_eq!(plan.notes, Vec::<String>::new());
    assert_eq!(plan.manual_steps, Vec::<String>::new());
    assert_eq!(
        plan.reboot_reasons,
        vec![
            "0000:01:00.0 not bound to vfio-pci yet",
            "the running kernel lacks `intel_iommu=on iommu=pt`"
        ]
    );
}

#[test]
fn installed_driver_from_ubuntus_archive_is_kept() {
    let h = host("driver-ubuntu-archive", Net::Dhcp);
    let plan = h
        .plan(&Options {
            force: false,
            ..host_mode_nvidia_only()
        })
        .unwrap();
    assert_eq!(
        summary(&plan),
        [
            "preflight run_command apt-get update # refresh the package lists (also checks that the repositories are reachable)",
            "nvidia run_command curl -fsSL -o /var/lib/gpu-vm-bootstrap/cuda-keyring.deb https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/cuda-keyring_1.1-1_all.deb # download NVIDIA's CUDA repository keyring package",
            "nvidia run_command dpkg -i /var/lib/gpu-vm-bootstrap/cuda-keyring.deb # add the CUDA apt repository and its signing key",
            "nvidia run_command apt-get update # read the CUDA repository",
            "nvidia install_packages env DEBIAN_FRONTEND=noninteractive apt-get install -y cuda-toolkit # the CUDA toolkit",
            "nvidia write_file /etc/profile.d/cuda.sh # put /usr/local/cuda/bin on PATH and /usr/local/cuda/lib64 on LD_LIBRARY_PATH for login shells",
            "nvidia run_command curl -fsSL -o /var/lib/gpu-vm-bootstrap/nvidia-container-toolkit.asc https://nvidia.github.io/libnvidia-container/gpgkey # download the libnvidia-container signing key",
            "nvidia run_command gpg --batch --yes --dearmor -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg /var/lib/gpu-vm-bootstrap/nvidia-container-toolkit.asc # store the key dearmored where the apt source's signed-by points",
            "nvidia write_file /etc/apt/sources.list.d/nvidia-container-toolkit.list # the nvidia-container-toolkit apt repository",
            "nvidia run_command apt-get update # read the nvidia-container-toolkit repository",
            "nvidia install_packages env DEBIAN_FRONTEND=noninteractive apt-get install -y nvidia-container-toolkit # GPU access for containers (`nvidia-ctk runtime configure`, CDI)",
        ]
    );
    assert_eq!(
        plan.notes,
        vec![
            "keeping the NVIDIA driver 550 already installed from Ubuntu's archive (nvidia-dkms-550-open 550.120-0ubuntu0.24.04.1, nvidia-driver-550-open 550.120-0ubuntu0.24.04.1, nvidia-utils-550 550.120-0ubuntu0.24.04.1): no second driver is installed on top"
        ]
    );
    assert_eq!(plan.manual_steps, Vec::<String>::new());
    assert_eq!(plan.reboot_reasons, Vec::<String>::new());
}

#[test]
fn installed_driver_from_the_cuda_repository_is_kept() {
    let h = host("driver-cuda-repo", Net::Dhcp);
    let plan = h
        .plan(&Options {
            force: false,
            ..host_mode_nvidia_only()
        })
        .unwrap();
    assert_eq!(
        summary(&plan),
        [
            "preflight run_command apt-get update # refresh the package lists (also checks that the repositories are reachable)",
            "nvidia install_packages env DEBIAN_FRONTEND=noninteractive apt-get install -y cuda-toolkit # the CUDA toolkit",
            "nvidia write_file /etc/profile.d/cuda.sh # put /usr/local/cuda/bin on PATH and /usr/local/cuda/lib64 on LD_LIBRARY_PATH for login shells",
            "nvidia run_command curl -fsSL -o /var/lib/gpu-vm-bootstrap/nvidia-container-toolkit.asc https://nvidia.github.io/libnvidia-container/gpgkey # download the libnvidia-container signing key",
            "nvidia run_command gpg --batch --yes --dearmor -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg /var/lib/gpu-vm-bootstrap/nvidia-container-toolkit.asc # store the key dearmored where the apt source's signed-by points",
            "nvidia write_file /etc/apt/sources.list.d/nvidia-container-toolkit.list # the nvidia-container-toolkit apt repository",
            "nvidia run_command apt-get update # read the nvidia-container-toolkit repository",
            "nvidia install_packages env DEBIAN_FRONTEND=noninteractive apt-get install -y nvidia-container-toolkit # GPU access for containers (`nvidia-ctk runtime configure`, CDI)",
        ]
    );
    assert_eq!(
        plan.notes,
        vec![
            "keeping the NVIDIA driver 560 already installed from NVIDIA's CUDA repository (cuda-drivers 560.35.03-1, cuda-drivers-560 560.35.03-1, nvidia-dkms-560 560.35.03-0ubuntu1, nvidia-driver-560 560.35.03-0ubuntu1): no second driver is installed on top"
        ]
    );
    assert_eq!(plan.manual_steps, Vec::<String>::new());
    assert_eq!(plan.reboot_reasons, Vec::<String>::new());
}

#[test]
fn installed_driver_from_the_graphics_drivers_ppa_is_kept() {
    let h = host("driver-graphics-drivers-ppa", Net::Dhcp);
    let plan = h
        .plan(&Options {
            force: false,
            ..host_mode_nvidia_only()
        })
        .unwrap();
    assert_eq!(
        summary(&plan),
        [
            "preflight run_command apt-get update # refresh the package lists (also checks that the repositories are reachable)",
            "nvidia run_command curl -fsSL -o /var/lib/gpu-vm-bootstrap/cuda-keyring.deb https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/cuda-keyring_1.1-1_all.deb # download NVIDIA's CUDA repository keyring package",
            "nvidia run_command dpkg -i /var/lib/gpu-vm-bootstrap/cuda-keyring.deb # add the CUDA apt repository and its signing key",
            "nvidia run_command apt-get update # read the CUDA repository",
            "nvidia install_packages env DEBIAN_FRONTEND=noninteractive apt-get install -y cuda-toolkit # the CUDA toolkit",
            "nvidia write_file /etc/profile.d/cuda.sh # put /usr/local/cuda/bin on PATH and /usr/local/cuda/lib64 on LD_LIBRARY_PATH for login shells",
            "nvidia run_command curl -fsSL -o /var/lib/gpu-vm-bootstrap/nvidia-container-toolkit.asc https://nvidia.github.io/libnvidia-container/gpgkey # download the libnvidia-container signing key",
            "nvidia run_command gpg --batch --yes --dearmor -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg /var/lib/gpu-vm-bootstrap/nvidia-container-toolkit.asc # store the key dearmored where the apt source's signed-by points",
            "nvidia write_file /etc/apt/sources.list.d/nvidia-container-toolkit.list # the nvidia-container-toolkit apt repository",
            "nvidia run_command apt-get update # read the nvidia-container-toolkit repository",
            "nvidia install_packages env DEBIAN_FRONTEND=noninteractive apt-get install -y nvidia-container-toolkit # GPU access for containers (`nvidia-ctk runtime configure`, CDI)",
        ]
    );
    assert_eq!(
        plan.notes,
        vec![
            "keeping the NVIDIA driver 560 already installed from the graphics-drivers PPA (nvidia-dkms-560 560.35.03-0ubuntu0~gpu24.04.4, nvidia-driver-560 560.35.03-0ubuntu0~gpu24.04.4): no second driver is installed on top"
        ]
    );
    assert_eq!(plan.manual_steps, Vec::<String>::new());
    assert_eq!(plan.reboot_reasons, Vec::<String>::new());
}

#[test]
fn installed_driver_from_the_run_installer_is_kept() {
    let h = host("driver-run-installer", Net::Dhcp);
    let plan = h
        .plan(&Options {
            force: false,
            ..host_mode_nvidia_only()
        })
        .unwrap();
    assert_eq!(
        summary(&plan),
        [
            "preflight run_command apt-get update # refresh the package lists (also checks that the repositories are reachable)",
            "nvidia run_command curl -fsSL -o /var/lib/gpu-vm-bootstrap/cuda-keyring.deb https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/cuda-keyring_1.1-1_all.deb # download NVIDIA's CUDA repository keyring package",
            "nvidia run_command dpkg -i /var/lib/gpu-vm-bootstrap/cuda-keyring.deb # add the CUDA apt repository and its signing key",
            "nvidia run_command apt-get update # read the CUDA repository",
            "nvidia install_packages env DEBIAN_FRONTEND=noninteractive apt-get install -y cuda-toolkit # the CUDA toolkit",
            "nvidia write_file /etc/profile.d/cuda.sh # put /usr/local/cuda/bin on PATH and /usr/local/cuda/lib64 on LD_LIBRARY_PATH for login shells",
            "nvidia run_command curl -fsSL -o /var/lib/gpu-vm-bootstrap/nvidia-container-toolkit.asc https://nvidia.github.io/libnvidia-container/gpgkey # download the libnvidia-container signing key",
            "nvidia run_command gpg --batch --yes --dearmor -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg /var/lib/gpu-vm-bootstrap/nvidia-container-toolkit.asc # store the key dearmored where the apt source's signed-by points",
            "nvidia write_file /etc/apt/sources.list.d/nvidia-container-toolkit.list # the nvidia-container-toolkit apt repository",
            "nvidia run_command apt-get update # read the nvidia-container-toolkit repository",
            "nvidia install_packages env DEBIAN_FRONTEND=noninteractive apt-get install -y nvidia-container-toolkit # GPU access for containers (`nvidia-ctk runtime configure`, CDI)",
        ]
    );
    assert_eq!(
        plan.notes,
        vec![
            "keeping the NVIDIA driver 550 already installed from NVIDIA's .run installer (/usr/bin/nvidia-uninstall, /lib/modules/6.8.0-48-generic/kernel/drivers/video/nvidia-drm.ko, /lib/modules/6.8.0-48-generic/kernel/drivers/video/nvidia-modeset.ko, /lib/modules/6.8.0-48-generic/kernel/drivers/video/nvidia-uvm.ko, /lib/modules/6.8.0-48-generic/kernel/drivers/video/nvidia.ko): no second driver is installed on top"
        ]
    );
    assert_eq!(plan.manual_steps, Vec::<String>::new());
    assert_eq!(plan.reboot_reasons, Vec::<String>::new());
}

#[test]
fn two_driver_sources_are_refused_with_the_command_that_removes_each() {
    let h = host("driver-archive-and-run-installer", Net::Dhcp);
    let before = snapshot_tree(h.path(), &[]);
    let r = h.plan(&host_mode_nvidia_only()).unwrap_err();
    assert_eq!(
        refusal(r),
        vec![
            "[nvidia] NVIDIA drivers from 2 sources are installed: Ubuntu's archive (nvidia-dkms-550 550.120-0ubuntu0.24.04.1, nvidia-driver-550 550.120-0ubuntu0.24.04.1, nvidia-utils-550 550.120-0ubuntu0.24.04.1) and NVIDIA's .run installer (/usr/bin/nvidia-uninstall, /lib/modules/6.8.0-48-generic/kernel/drivers/video/nvidia.ko); they overwrite each other's libraries and kernel modules, and a second driver is never installed on top | help: keep one of them: remove Ubuntu's archive with `sudo apt-get purge nvidia-dkms-550 nvidia-driver-550 nvidia-utils-550`, or remove NVIDIA's .run installer with `sudo /usr/bin/nvidia-uninstall`; then run again"
        ]
    );
    assert_eq!(
        tree_diff(&before, &snapshot_tree(h.path(), &[])),
        Vec::<String>::new()
    );
}

/// An entry written by the real `kernel-install` (systemd's 90-loaderentry.install) from the
/// tree's `/etc/kernel/cmdline`, read back by the real `bootctl list` in a private mount
/// namespace (bootctl wants the ESP to be a mount point). Returns the entry's `options`.
fn real_loader_entry_options(root: &std::path::Path) -> String {
    for tool in ["kernel-install", "bootctl", "unshare"] {
        assert!(
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap()
                .status
                .success(),
            "{tool} is missing: run scripts/install-deps.sh (systemd-boot, util-linux)"
        );
    }
    let esp = root.join("boot/efi");
    // kernel-install reads its configuration from KERNEL_INSTALL_CONF_ROOT instead of
    // /etc/kernel: the tree's cmdline, the tree's machine id as the entry token, BLS layout.
    let conf = root.join("mnt-kernel-install");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::copy(root.join("etc/kernel/cmdline"), conf.join("cmdline")).unwrap();
    std::fs::write(
        conf.join("entry-token"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    std::fs::write(conf.join("install.conf"), "layout=bls\n").unwrap();
    let out = std::process::Command::new("kernel-install")
        .args(["add", "6.8.0-48-generic"])
        .arg(root.join("boot/vmlinuz-6.8.0-48-generic"))
        .env("KERNEL_INSTALL_CONF_ROOT", &conf)
        .env("BOOT_ROOT", &esp)
        .env(
            "KERNEL_INSTALL_MACHINE_ID",
            "0123456789abcdef0123456789abcdef",
        )
        .env("KERNEL_INSTALL_LAYOUT", "bls")
        .env(
            "KERNEL_INSTALL_PLUGINS",
            "/usr/lib/kernel/install.d/90-loaderentry.install",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kernel-install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = format!(
        "mount -t tmpfs tmpfs {m} && cp -r {e}/. {m}/ && bootctl --esp-path={m} --boot-path={m} list --no-pager --json=short",
        m = root.join("mnt-esp").display(),
        e = esp.display()
    );
    std::fs::create_dir_all(root.join("mnt-esp")).unwrap();
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .env("SYSTEMD_RELAX_ESP_CHECKS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bootctl (needs root for the mount namespace): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .flat_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            match v {
                serde_json::Value::Array(a) => a,
                o => vec![o],
            }
        })
        .find(|e| {
            e["version"] == "6.8.0-48-generic"
                && e["id"].as_str().is_some_and(|i| i.starts_with("0123"))
        })
        .map(|e| e["options"].as_str().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("no entry for 6.8.0-48-generic in {text}"))
}

#[test]
fn systemd_boot_apply_and_rollback_on_the_tree() {
    let h = host("systemd-boot", Net::Dhcp);
    let skip = ["var", "mnt-esp", "mnt-kernel-install"];
    let before = snapshot_tree(h.path(), &skip);
    let plan = h.plan(&iommu_only()).unwrap();
    let root = h.root();
    let runner = RecordingRunner::new();
    let applier = Applier::new(&root, &runner, &NullLog);
    let report = applier.apply(&plan).unwrap();
    assert!(
        !report
            .files_written
            .iter()
            .any(|f| f == "/etc/default/grub")
    );
    assert_eq!(
        std::fs::read_to_string(h.path().join("etc/kernel/cmdline")).unwrap(),
        "root=UUID=5e1c3f0a-0000-4000-8000-000000000002 ro quiet splash intel_iommu=on iommu=pt\n"
    );
    assert_eq!(
        std::fs::read_to_string(h.path().join("etc/default/grub")).unwrap(),
        UBUNTU_GRUB,
        "GRUB's leftover file is not touched on a systemd-boot host"
    );
    // The real kernel-install writes the entry from the new file; bootctl reads it back.
    assert_eq!(
        real_loader_entry_options(h.path()),
        "root=UUID=5e1c3f0a-0000-4000-8000-000000000002 ro quiet splash intel_iommu=on iommu=pt"
    );
    let again = h.plan(&iommu_only()).unwrap();
    assert_eq!(again.file_actions().count(), 0, "{:#?}", again.actions);

    let report = applier.rollback().unwrap();
    assert!(report.commands_skipped.contains(&vec![
        "kernel-install".to_string(),
        "add".into(),
        "6.8.0-48-generic".into(),
        "/boot/vmlinuz-6.8.0-48-generic".into(),
        "/boot/initrd.img-6.8.0-48-generic".into(),
    ]));
    // The entry kernel-install wrote is not ours to restore; everything we wrote is back.
    let after = snapshot_tree(
        h.path(),
        &[
            "var",
            "mnt-esp",
            "boot/efi/0123456789abcdef0123456789abcdef",
        ],
    );
    let before: Vec<_> = before
        .into_iter()
        .filter(|e| !e.0.starts_with("boot/efi/0123456789abcdef0123456789abcdef"))
        .collect();
    let diff: Vec<String> = tree_diff(&before, &after)
        .into_iter()
        .filter(|d| {
            !d.contains("loader/entries/0123456789abcdef0123456789abcdef-6.8.0-48-generic.conf")
                && !d.contains("mnt-")
        })
        .collect();
    assert_eq!(diff, Vec::<String>::new());
    assert_eq!(
        real_loader_entry_options(h.path()),
        "root=UUID=5e1c3f0a-0000-4000-8000-000000000002 ro quiet splash"
    );
}

#[test]
fn kernelstub_apply_and_rollback_on_the_tree() {
    let h = host("kernelstub", Net::Dhcp);
    let before = snapshot_tree(h.path(), &["var"]);
    let o = Options {
        force: true,
        ..iommu_only()
    };
    let plan = h.plan(&o).unwrap();
    assert_eq!(
        plan.warnings,
        ["forced: this host runs pop 24.04; gpu-vm-bootstrap supports Ubuntu 24.04"]
    );
    let root = h.root();
    let runner = RecordingRunner::new();
    let applier = Applier::new(&root, &runner, &NullLog);
    applier.apply(&plan).unwrap();
    let conf = std::fs::read_to_string(h.path().join("etc/kernelstub/configuration")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&conf).unwrap();
    assert_eq!(
        v["user"]["kernel_options"],
        serde_json::json!([
            "quiet",
            "loglevel=0",
            "systemd.show_status=false",
            "splash",
            "intel_iommu=on",
            "iommu=pt"
        ])
    );
    assert_eq!(
        v["default"]["kernel_options"],
        serde_json::json!(["quiet", "splash"])
    );
    assert_eq!(h.plan(&o).unwrap().file_actions().count(), 0);
    let report = applier.rollback().unwrap();
    assert!(report.commands_skipped.contains(&vec![
        "kernelstub".to_string(),
        "--verbose".into(),
        "--preserve-live-mode".into()
    ]));
    assert_eq!(
        tree_diff(&before, &snapshot_tree(h.path(), &["var"])),
        Vec::<String>::new()
    );
}

/// UEFI, GRUB's files and systemd-boot's entries both present, and no LoaderInfo variable.
const AMBIGUOUS_LOADER: &str = r#"
base = "bios-grub"
[efi]
secure_boot = false
[files]
"/boot/efi/loader/entries/x-6.8.0-48-generic.conf" = "title Ubuntu\n"
"#;

#[test]
fn unknown_boot_loader_is_refused_and_grub_is_not_written() {
    let h = host_from_toml(AMBIGUOUS_LOADER, Net::Dhcp);
    let before = snapshot_tree(h.path(), &[]);
    let r = h.plan(&iommu_only()).unwrap_err();
    assert_eq!(
        refusal(r),
        vec![
            "[iommu] cannot tell which boot loader starts this host (/etc/default/grub exists; /boot/grub/grub.cfg exists; 1 loader entries in /boot/efi/loader/entries; no LoaderInfo EFI variable says which one booted), so the kernel command line cannot be edited safely; /etc/default/grub is never written on a host that does not boot through GRUB | help: add `intel_iommu=on iommu=pt` to the kernel command line with your boot loader's own tool, reboot, and run again (a running kernel that has them needs no edit)"
        ]
    );
    assert_eq!(
        tree_diff(&before, &snapshot_tree(h.path(), &[])),
        Vec::<String>::new()
    );
}

#[test]
fn too_old_installed_driver_is_refused() {
    let h = host_from_toml(
        r#"
        base = "driver-ubuntu-archive"
        [files]
        "/var/lib/dpkg/status" = "Package: nvidia-driver-418\nStatus: install ok installed\nVersion: 418.226.00-0ubuntu0.24.04.1\n"
        "#,
        Net::Dhcp,
    );
    assert_eq!(
        refusal(h.plan(&host_mode_nvidia_only()).unwrap_err()),
        vec![
            "[nvidia] the installed NVIDIA driver 418 from Ubuntu's archive (nvidia-driver-418 418.226.00-0ubuntu0.24.04.1) is too old for 0000:01:00.0 (needs branch 455 or newer) | help: remove it with `sudo apt-get purge nvidia-driver-418`, then run again to install a current driver"
        ]
    );
}

/// Secure Boot on, a DKMS-built module present, and the module not loaded.
const REFUSED_DKMS_MODULE: &str = r#"
base = "secure-boot-on"
[files]
"/lib/modules/6.8.0-48-generic/updates/dkms/nvidia.ko.zst" = ""
"/var/lib/dpkg/status" = "Package: nvidia-open\nStatus: install ok installed\nVersion: 570.86.15-0ubuntu1\n"
"#;

#[test]
fn verify_explains_a_module_secure_boot_refused() {
    use gpu_vm_bootstrap::HostState;
    let h = host_from_toml(REFUSED_DKMS_MODULE, Net::Dhcp);
    let facts = hwdetect::detect(&h.root());
    let o = host_mode_nvidia_only();
    let state = HostState::read(&h.root(), &o);
    let runner = RecordingRunner::new()
        .answer(
            ["mokutil"],
            hostio::Output::ok("/var/lib/shim-signed/mok/MOK.der is not enrolled\n"),
        )
        .answer(
            ["nvidia-smi"],
            hostio::Output::failed(9, "NVIDIA-SMI has failed"),
        );
    let r = gpu_vm_bootstrap::verify(&facts, &o, &state, Some(&runner));
    let text = r.render();
    assert!(
        text.contains("✗ [nvidia] the nvidia kernel module is not loaded: Secure Boot is on (kernel lockdown: integrity), and the kernel refuses a module not signed by an enrolled key; this one was built by DKMS (/lib/modules/6.8.0-48-generic/updates/dkms/nvidia.ko.zst); mokutil says its key /var/lib/shim-signed/mok/MOK.der is not enrolled\n    fix: enrol the key DKMS signs with: `sudo mokutil --import /var/lib/shim-signed/mok/MOK.der`, reboot and choose Enroll MOK in MokManager"),
        "{text}"
    );
    assert!(
        text.contains(
            "✓ [preflight] boot: UEFI, Secure Boot on, lockdown integrity; boot loader GRUB"
        ),
        "{text}"
    );
    assert!(
        runner
            .calls()
            .iter()
            .any(|c| c == &["mokutil", "--test-key", "/var/lib/shim-signed/mok/MOK.der"])
    );

    // The real mokutil: on this machine (no EFI variables) it cannot tell, and verify says so.
    if std::process::Command::new("sh")
        .args(["-c", "command -v mokutil"])
        .output()
        .unwrap()
        .status
        .success()
    {
        let r = gpu_vm_bootstrap::verify(&facts, &o, &state, Some(&hostio::SystemRunner));
        let text = r.render();
        assert!(
            text.contains("mokutil could not tell whether its key /var/lib/shim-signed/mok/MOK.der is enrolled")
                || text.contains("mokutil says its key"),
            "{text}"
        );
    } else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have mokutil (scripts/install-deps.sh)"
        );
    }
}
