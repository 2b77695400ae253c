//! `--hugepages SIZE:N`: the kernel arguments join the IOMMU ones in the same phase, plan, diff,
//! apply and rollback; other hugepage values on the command line give way; the 90 % limit.

use crate::common;

use common::*;
use gpu_vm_bootstrap::{Applier, GpuMode, Hugepages, NullLog, Options, Phase};
use hostio::RecordingRunner;

/// 64 GiB, as /proc/meminfo shows it on such a host.
const MEMINFO_64G: &str = "MemTotal:       65536000 kB\nMemFree:        60000000 kB\n";

fn huge(mode: GpuMode, spec: &str) -> Options {
    Options {
        hugepages: Some(Hugepages::parse(spec).unwrap()),
        ..opts(mode)
    }
}

fn grub_line(h: &Host) -> String {
    h.root()
        .read_to_string("/etc/default/grub")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("GRUB_CMDLINE_LINUX_DEFAULT="))
        .unwrap()
        .to_string()
}

#[test]
fn hugepages_join_the_iommu_args_in_one_edit() {
    let h = host("intel-z170-gtx960", Net::Static);
    write(h.path(), "/proc/meminfo", MEMINFO_64G, 0o444);
    let plan = h.plan(&huge(GpuMode::Passthrough, "1G:8")).unwrap();
    let grub: Vec<_> = plan
        .file_actions()
        .filter(|a| a.kind.path() == Some("/etc/default/grub"))
        .collect();
    assert_eq!(grub.len(), 1);
    assert_eq!(grub[0].phase, Phase::Iommu);
    assert!(
        grub[0].reason.contains(
            "enable the IOMMU in passthrough mode and reserve 8 1G hugepages at boot: add `intel_iommu=on iommu=pt default_hugepagesz=1G hugepagesz=1G hugepages=8`"
        ),
        "{}",
        grub[0].reason
    );
    insta::assert_snapshot!(plan.render());
    let root = h.root();
    let runner = RecordingRunner::new();
    let applier = Applier::new(&root, &runner, &NullLog);
    applier.apply(&plan).unwrap();
    assert_eq!(
        grub_line(&h),
        "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash intel_iommu=on iommu=pt default_hugepagesz=1G hugepagesz=1G hugepages=8\""
    );
    // Applied: nothing left to write.
    let again = h.plan(&huge(GpuMode::Passthrough, "1G:8")).unwrap();
    assert_eq!(again.file_actions().count(), 0, "{}", again.render());
}

#[test]
fn hugepages_alone_and_rollback_restores_the_tree() {
    let h = host("amd-b550m-gt710-rtx2070s", Net::Dhcp);
    write(h.path(), "/proc/meminfo", MEMINFO_64G, 0o444);
    let skip = ["var"];
    let before = snapshot_tree(h.path(), &skip);
    let plan = h.plan(&huge(GpuMode::None, "2M:1024")).unwrap();
    let iommu: Vec<_> = plan
        .actions
        .iter()
        .filter(|a| a.phase == Phase::Iommu)
        .collect();
    // Only the command line and update-grub: no VFIO files without a GPU mode.
    assert_eq!(iommu.len(), 2, "{}", plan.render());
    assert!(
        plan.reboot_reasons
            .iter()
            .any(|r| r.contains("hugepages=1024"))
    );
    let root = h.root();
    let runner = RecordingRunner::new();
    let applier = Applier::new(&root, &runner, &NullLog);
    applier.apply(&plan).unwrap();
    assert!(grub_line(&h).ends_with(" default_hugepagesz=2M hugepagesz=2M hugepages=1024\""));
    applier.rollback().unwrap();
    assert_eq!(
        tree_diff(&before, &snapshot_tree(h.path(), &skip)),
        Vec::<String>::new()
    );
}

#[test]
fn other_hugepage_values_give_way() {
    let h = host("intel-z170-gtx960", Net::Static);
    write(h.path(), "/proc/meminfo", MEMINFO_64G, 0o444);
    let grub = h
        .root()
        .read_to_string("/etc/default/grub")
        .unwrap()
        .replace(
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"",
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash hugepagesz=2M hugepages=512\"",
        );
    write(h.path(), "/etc/default/grub", &grub, 0o644);
    let plan = h.plan(&huge(GpuMode::None, "1G:4")).unwrap();
    let a = plan
        .file_actions()
        .find(|a| a.kind.path() == Some("/etc/default/grub"))
        .unwrap();
    assert!(
        a.reason.contains("`hugepages=512` becomes `hugepages=4`"),
        "{}",
        a.reason
    );
    Applier::new(&h.root(), &RecordingRunner::new(), &NullLog)
        .apply(&plan)
        .unwrap();
    assert_eq!(
        grub_line(&h),
        "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash hugepagesz=1G hugepages=4 default_hugepagesz=1G\""
    );
}

#[test]
fn more_than_90_percent_of_memory_is_refused_unless_forced() {
    let h = host("intel-z170-gtx960", Net::Static);
    write(h.path(), "/proc/meminfo", MEMINFO_64G, 0o444);
    let refusal = h.plan(&huge(GpuMode::None, "1G:60")).unwrap_err();
    let text = refusal.to_string();
    assert!(
        text.contains("--hugepages 1G:60 reserves 60.0 GiB, 96% of this host's 62.5 GiB (MemTotal): more than 90%"),
        "{text}"
    );
    assert!(
        refusal.problems[0].help.contains("--hugepages 1G:56"),
        "{:?}",
        refusal.problems
    );
    let forced = Options {
        force: true,
        ..huge(GpuMode::None, "1G:60")
    };
    let plan = h.plan(&forced).unwrap();
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.starts_with("forced: --hugepages"))
    );
    // Without /proc/meminfo it is a warning, not a guess.
    std::fs::remove_file(h.path().join("proc/meminfo")).unwrap();
    let plan = h.plan(&huge(GpuMode::None, "1G:60")).unwrap();
    assert!(plan.warnings.iter().any(|w| w.contains("no MemTotal")));
}

#[test]
fn systemd_boot_gets_them_in_etc_kernel_cmdline() {
    let h = host("systemd-boot", Net::Dhcp);
    write(h.path(), "/proc/meminfo", MEMINFO_64G, 0o444);
    let plan = h.plan(&huge(GpuMode::None, "1G:2")).unwrap();
    Applier::new(&h.root(), &RecordingRunner::new(), &NullLog)
        .apply(&plan)
        .unwrap();
    let line = h.root().read_to_string("/etc/kernel/cmdline").unwrap();
    assert!(
        line.trim_end()
            .ends_with("default_hugepagesz=1G hugepagesz=1G hugepages=2"),
        "{line}"
    );
}

#[test]
fn hugepages_values() {
    assert!(Hugepages::parse("1G:0").is_err());
    assert!(Hugepages::parse("4K:8").is_err());
    assert!(Hugepages::parse("1G").is_err());
    assert!(Hugepages::parse("1G:x").is_err());
    assert_eq!(Hugepages::parse("2m:16").unwrap().total_kib(), 32768);
}

/// The flag through the binary: bad values are usage errors; a good one is in `plan --json`.
#[test]
fn cli_flag() {
    let h = host("intel-z170-gtx960", Net::Dhcp);
    write(h.path(), "/proc/meminfo", MEMINFO_64G, 0o444);
    for bad in ["1G:0", "4K:8", "8"] {
        let out = assert_cmd::Command::cargo_bin("gpu-vm-bootstrap")
            .unwrap()
            .args(["plan", "--hugepages", bad, "--host-root"])
            .arg(h.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
    let out = assert_cmd::Command::cargo_bin("gpu-vm-bootstrap")
        .unwrap()
        .env_remove("SUDO_USER")
        .args([
            "plan",
            "--json",
            "--skip-vmctl",
            "--hugepages",
            "1G:8",
            "--host-root",
        ])
        .arg(h.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("hugepages=8"), "{text}");
    let out = assert_cmd::Command::cargo_bin("gpu-vm-bootstrap")
        .unwrap()
        .args(["plan", "--hugepages", "1G:60", "--host-root"])
        .arg(h.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("help: reserve at most 56 pages"), "{err}");
}

/// After the reboot: `verify --hugepages 1G:4` checks the command line and the pool.
#[test]
fn verify_checks_the_command_line_and_the_pool() {
    let toml = |pages: u32| {
        format!(
            "base = \"synthetic-vfio-bound\"\n\
             cmdline = \"BOOT_IMAGE=/boot/vmlinuz root=UUID=0 ro quiet default_hugepagesz=1G hugepagesz=1G hugepages=4\"\n\
             mem_total_kib = 65536000\n\
             [numa.0]\ncpus = \"0-1\"\n\
             [numa.0.hugepages]\n1048576 = {{ total = {pages}, free = {pages} }}\n"
        )
    };
    let o = huge(GpuMode::None, "1G:4");
    for (pages, ok) in [(4, true), (2, false)] {
        let h = host_from_toml(&toml(pages), Net::None);
        let state = gpu_vm_bootstrap::HostState::read(&h.root(), &o);
        let report = gpu_vm_bootstrap::verify(&h.facts, &o, &state, None);
        let huge: Vec<_> = report
            .checks
            .iter()
            .filter(|c| c.detail.contains("hugepages"))
            .collect();
        assert_eq!(huge.len(), 2, "{}", report.render());
        assert_eq!(
            huge[1].detail,
            format!("{pages} of 4 1G hugepages reserved"),
            "{}",
            report.render()
        );
        assert_eq!(
            huge.iter()
                .all(|c| c.status == gpu_vm_bootstrap::verify::CheckStatus::Ok),
            ok,
            "{}",
            report.render()
        );
    }
}
