//! `vmctl create ubuntu --gpu` goes through the same checks and hostdev layout as `gpu attach`:
//! every function in one guest slot, UEFI implied, refusals before anything is made.

use std::path::PathBuf;

use crate::support::{TestHost, no_env, test_host};

use guest_media::cache::NoProgress;
use hostio::{Cmd, CommandRunner, HostRoot, SystemRunner};
use hypervisor::domain::parse::parse_domain;
use hypervisor::{Hypervisor, Libvirt};
use vmctl::ExitKind;
use vmctl::commands::Ctx;
use vmctl::commands::create::{UbuntuRequest, create_ubuntu};
use vmctl::config::Config;

struct Fixture {
    /// Holds the key and the base image (kept alive, never read).
    _dir: tempfile::TempDir,
    _tree: tempfile::TempDir,
    host: HostRoot,
    config: Config,
    key: PathBuf,
    base: PathBuf,
    lv: Libvirt,
}

/// A fixture host with bridge br0, a private test-driver node, a key and a tiny base image.
fn fixture(host_name: &str) -> Fixture {
    let TestHost {
        dir,
        tree,
        host,
        mut config,
        lv,
    } = test_host(host_name);
    config.set("firmware", "bios");
    let key = dir.path().join("id_ed25519.pub");
    std::fs::write(
        &key,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6 t@h\n",
    )
    .unwrap();
    let base = dir.path().join("base.qcow2");
    SystemRunner
        .run(&Cmd::new([
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            &base.display().to_string(),
            "64M",
        ]))
        .unwrap();
    Fixture {
        _dir: dir,
        _tree: tree,
        host,
        config,
        key,
        base,
        lv,
    }
}

fn request(f: &Fixture, name: &str, gpus: &[&str]) -> UbuntuRequest {
    let mut r = UbuntuRequest::new(name);
    r.image = Some(f.base.display().to_string());
    r.ssh_key = Some(f.key.clone());
    r.bridge = Some("br0".into());
    r.mac = Some("52:54:00:00:50:01".into());
    r.no_start = true;
    r.gpus = gpus.iter().map(|s| s.to_string()).collect();
    // Passthrough only: the guest driver stack has its own tests (it fetches keys).
    r.gpu_stack = Some(vmctl::commands::create::GpuStack::None);
    r
}

fn create(f: &Fixture, r: &UbuntuRequest) -> vmctl::Result<()> {
    let ctx = Ctx::new(&f.config, &f.host, &SystemRunner, &f.lv).with_env(&no_env);
    create_ubuntu(&ctx, r, &NoProgress).map(|_| ())
}

fn nothing_left(f: &Fixture, name: &str) {
    assert!(f.lv.get(name).unwrap().is_none());
    assert!(!f.host.path("/vms").join(name).exists());
}

#[test]
fn create_with_a_gpu_gets_all_functions_in_one_slot_and_uefi() {
    let f = fixture("synthetic-vfio-bound");
    create(&f, &request(&f, "g1", &["01:00.0"])).unwrap();
    let xml = f.lv.inactive_xml("g1").unwrap();
    let facts = parse_domain(&xml).unwrap();
    assert_eq!(facts.firmware, "efi", "the bios default gives way to UEFI");
    assert_eq!(facts.machine.as_deref(), Some("q35"));
    let hostdevs: Vec<String> = facts.hostdevs.iter().map(ToString::to_string).collect();
    assert_eq!(hostdevs, ["0000:01:00.0", "0000:01:00.1"]);
    assert_eq!(xml.matches("multifunction='on'").count(), 1, "{xml}");
    assert!(
        !xml.contains("<hidden state='on'/>"),
        "kvm hidden is opt-in"
    );
    // gpu status sees the new VM holding the GPU.
    let atts = vmctl::commands::gpu::attachments(&f.lv).unwrap();
    assert_eq!(atts.len(), 2);
    assert!(atts.iter().all(|a| a.vm == "g1" && a.config));

    // A second VM cannot have it.
    let err = create(&f, &request(&f, "g2", &["0"])).unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    assert!(
        err.to_string()
            .contains("GPU 0000:01:00.0 is already attached to VM `g1`"),
        "{err}"
    );
    nothing_left(&f, "g2");
}

#[test]
fn create_refusals_leave_nothing_behind() {
    let f = fixture("synthetic-nvidia-boot-vga-only");
    let err = create(&f, &request(&f, "bootvga", &["all"])).unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    assert_eq!(
        err.to_string(),
        "refusing to pass GPU 0000:01:00.0 to VM `bootvga`:\n  - GPU 0000:01:00.0 is the boot \
         VGA device: the firmware and the host console use it, and detaching it blanks the host \
         display"
    );
    nothing_left(&f, "bootvga");

    let mut bios = request(&f, "bios", &["all"]);
    bios.firmware = Some("bios".into());
    bios.gpu_force = true;
    let err = create(&f, &bios).unwrap_err();
    assert!(
        err.command::<vmctl::commands::gpu::GpuError>().is_some(),
        "{err:?}"
    );
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    assert_eq!(
        err.help(),
        ["drop --firmware bios: --gpu uses q35 with OVMF"]
    );
    nothing_left(&f, "bios");

    // --gpu-force passes the boot VGA refusal; --kvm-hidden is there when asked.
    let mut forced = request(&f, "forced", &["0"]);
    forced.gpu_force = true;
    forced.kvm_hidden = true;
    create(&f, &forced).unwrap();
    let xml = f.lv.inactive_xml("forced").unwrap();
    assert_eq!(parse_domain(&xml).unwrap().hostdevs.len(), 4);
    assert!(xml.contains("<hidden state='on'/>"), "{xml}");
}

fn validate(f: &Fixture, xml: &str) {
    let p = f.host.path("/domain-under-test.xml");
    std::fs::write(&p, xml).unwrap();
    let out = std::process::Command::new("virt-xml-validate")
        .arg(&p)
        .arg("domain")
        .output()
        .expect("virt-xml-validate (libvirt-clients)");
    assert!(
        out.status.success(),
        "{xml}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hgx_gpu_all_passes_eight_gpus_and_four_nvswitches_and_the_xml_validates() {
    let f = fixture("hgx-h200x8-nvswitch");
    create(&f, &request(&f, "hgx-full", &["all"])).unwrap();
    let xml = f.lv.inactive_xml("hgx-full").unwrap();
    validate(&f, &xml);
    let d = parse_domain(&xml).unwrap();
    let hostdevs: Vec<String> = d.hostdevs.iter().map(ToString::to_string).collect();
    assert_eq!(
        hostdevs,
        [
            "0000:18:00.0",
            "0000:2a:00.0",
            "0000:3a:00.0",
            "0000:5d:00.0",
            "0000:9a:00.0",
            "0000:ab:00.0",
            "0000:ba:00.0",
            "0000:db:00.0",
            "0000:05:00.0",
            "0000:06:00.0",
            "0000:07:00.0",
            "0000:08:00.0",
        ]
    );
    assert_eq!(xml.matches("managed='yes'").count(), 12, "{xml}");
    assert_eq!(d.firmware, "efi");
    // `--gpu` alone on this host is the same full passthrough (every GPU is isolated).
    let f = fixture("hgx-h200x8-nvswitch");
    create(&f, &request(&f, "hgx-default", &[""])).unwrap();
    let d = parse_domain(&f.lv.inactive_xml("hgx-default").unwrap()).unwrap();
    assert_eq!(d.hostdevs.len(), 12);
}

#[test]
fn hgx_fewer_gpus_are_refused_with_the_fabric_reason_unless_forced_or_shared() {
    let f = fixture("hgx-h200x8-nvswitch");
    let err = create(&f, &request(&f, "hgx-two", &["0", "1"])).unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    assert!(
        err.to_string()
            .contains("the NVLink/NVSwitch fabric will not work in the guest, and CUDA may fail on multi-GPU jobs"),
        "{err}"
    );
    let help = err.help().join("\n");
    assert!(
        help.contains("`--gpu all`") && help.contains("use --gpu-force"),
        "{help}"
    );
    nothing_left(&f, "hgx-two");

    let mut forced = request(&f, "hgx-forced", &["0", "1"]);
    forced.gpu_force = true;
    create(&f, &forced).unwrap();
    let d = parse_domain(&f.lv.inactive_xml("hgx-forced").unwrap()).unwrap();
    let hostdevs: Vec<String> = d.hostdevs.iter().map(ToString::to_string).collect();
    assert_eq!(hostdevs, ["0000:18:00.0", "0000:2a:00.0"], "no switches");

    let f = fixture("synthetic-hgx-shared-nvswitch");
    create(&f, &request(&f, "hgx-one", &["5"])).unwrap();
    let d = parse_domain(&f.lv.inactive_xml("hgx-one").unwrap()).unwrap();
    let hostdevs: Vec<String> = d.hostdevs.iter().map(ToString::to_string).collect();
    assert_eq!(hostdevs, ["0000:ab:00.0"]);
}
