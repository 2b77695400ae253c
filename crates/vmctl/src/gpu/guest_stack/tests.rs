use super::*;

/// A throwaway key made with `gpg --quick-gen-key` for these tests: its armoured export and
/// `gpg --export` (binary) of the same key.
const ARMOURED: &[u8] = include_bytes!("test-key.asc");
const BINARY: &[u8] = include_bytes!("test-key.gpg");

fn settings() -> StackSettings {
    StackSettings {
        branch: 580,
        cuda_repo: "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64"
            .into(),
        cuda_key: "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/3bf863cc.pub".into(),
        container_repo: "https://nvidia.github.io/libnvidia-container/stable/deb".into(),
        container_key: "https://nvidia.github.io/libnvidia-container/gpgkey".into(),
    }
}

/// The NVIDIA GPUs of a committed fixture host, as hwdetect reads them.
fn host_gpus(name: &str) -> Vec<Gpu> {
    let tree = fixture_builder::build_host(name);
    hwdetect::detect(&hostio::HostRoot::new(tree.path())).gpus
}

fn gpu_with_chip(gpus: &[Gpu], prefix: &str) -> Gpu {
    gpus.iter()
        .find(|g| g.chip.as_deref().is_some_and(|c| c.starts_with(prefix)))
        .unwrap_or_else(|| panic!("no {prefix} GPU in {gpus:#?}"))
        .clone()
}

/// user-data through `cloud-init schema --config-file` (Debian's cloud-init).
fn assert_schema_valid(ud: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("user-data");
    std::fs::write(&p, ud).unwrap();
    let out = std::process::Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(&p)
        .output()
        .expect("cloud-init is installed (apt-get install cloud-init)");
    assert!(
        out.status.success(),
        "cloud-init schema rejected:\n{ud}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn user_data_for(stack: &GuestStack) -> String {
    let driver = seed_part(stack, &|_| Ok(ARMOURED.to_vec())).unwrap();
    let spec = guest_media::seed::SeedSpec {
        hostname: "gpu1".into(),
        instance_id: "gpu1-0001".into(),
        user: "ubuntu".into(),
        ssh_authorized_keys: vec![
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6 t@h"
                .into(),
        ],
        password_hash: None,
        packages: Vec::new(),
        network: guest_media::seed::GuestNetwork::Dhcp {
            mac: "52:54:00:18:00:01".into(),
        },
        reset_machine_id: false,
        runcmd: Vec::new(),
        mounts: Vec::new(),
        driver,
    };
    guest_media::seed::user_data(&spec).unwrap()
}

#[test]
fn dearmor_matches_gpg_export_and_checks_the_crc() {
    assert_eq!(dearmor(ARMOURED).unwrap(), BINARY);
    assert_eq!(dearmor(BINARY).unwrap(), BINARY, "binary passes through");
    // One body character changed: the CRC-24 line catches it.
    let text = String::from_utf8(ARMOURED.to_vec()).unwrap();
    let body_line = text.lines().nth(2).unwrap();
    let flipped = if body_line.starts_with('m') { "n" } else { "m" };
    let broken = text.replacen(body_line, &format!("{flipped}{}", &body_line[1..]), 1);
    let err = dearmor(broken.as_bytes()).unwrap_err();
    assert!(err.contains("CRC-24"), "{err}");
    assert!(dearmor(b"<html>Not Found</html>").is_err());
    assert!(dearmor(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDME\n").is_err());
}

#[test]
fn every_architecture_on_the_fixture_hosts_gets_its_flavour_and_valid_user_data() {
    let s = settings();
    let pascal = gpu_with_chip(&host_gpus("amd-ryzen-gtx1080ti-nogroups"), "GP");
    let b550 = host_gpus("amd-b550m-gt710-rtx2070s");
    let turing = gpu_with_chip(&b550, "TU");
    let kepler = gpu_with_chip(&b550, "GK");
    let hopper = gpu_with_chip(&host_gpus("hgx-h200x8-nvswitch-truncated"), "GH");
    let ampere = Gpu {
        bdf: "0000:41:00.0".into(),
        name: "GA100 [A100 PCIe 40GB]".into(),
        chip: Some("GA100".into()),
        ..Default::default()
    };
    let maxwell = gpu_with_chip(&host_gpus("intel-z170-gtx960"), "GM");
    let cases: [(&Gpu, Flavour, &str); 5] = [
        (&pascal, Flavour::Proprietary, "cuda-drivers-580"),
        (&maxwell, Flavour::Proprietary, "cuda-drivers-580"),
        (&turing, Flavour::Open, "nvidia-open-580"),
        (&ampere, Flavour::Open, "nvidia-open-580"),
        (&hopper, Flavour::Open, "nvidia-open-580"),
    ];
    for (g, flavour, pkg) in cases {
        for (stack, extra) in [
            (GpuStack::Driver, None),
            (GpuStack::Container, Some("nvidia-container-toolkit")),
        ] {
            let p = plan(&[g], Some(stack), false, &s).unwrap().unwrap();
            assert_eq!(p.flavour, Some(flavour), "{}", g.name);
            let mut want = vec![pkg.to_string()];
            want.extend(extra.map(String::from));
            assert_eq!(p.packages, want, "{}", g.name);
            assert_eq!(p.repos.len(), 1 + usize::from(extra.is_some()));
            let ud = user_data_for(&p);
            assert_schema_valid(&ud);
            assert!(ud.contains("encoding: \"b64\""), "{ud}");
            assert!(
                ud.contains("deb [signed-by=/etc/apt/keyrings/cuda-archive-keyring.gpg] https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64 /"),
                "{ud}"
            );
        }
    }
    // The default with GPUs is the driver.
    let p = plan(&[&turing], None, false, &s).unwrap().unwrap();
    assert_eq!(p.stack, GpuStack::Driver);
    // One pre-Turing GPU among Turing ones: proprietary for all, and the reason names it.
    let p = plan(&[&turing, &pascal], None, false, &s).unwrap().unwrap();
    assert_eq!(p.flavour, Some(Flavour::Proprietary));
    assert!(
        p.reason.contains(&pascal.bdf) && p.reason.contains("Pascal"),
        "{}",
        p.reason
    );
    // Kepler is refused for a driver install, passed through with `none`.
    let err = plan(&[&kepler], None, false, &s).unwrap_err();
    assert!(
        matches!(err, GuestStackError::LegacyGpu { last: 470, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("Kepler"), "{err}");
    assert!(err.help()[0].contains("--gpu-stack none"));
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    let none = plan(&[&kepler], Some(GpuStack::None), false, &s)
        .unwrap()
        .unwrap();
    assert!(none.packages.is_empty());
    assert_eq!(
        seed_part(&none, &|_| panic!("no key fetched")).unwrap(),
        None
    );
}

#[test]
fn without_gpus_only_none_or_nothing_is_accepted() {
    let s = settings();
    assert_eq!(plan(&[], None, false, &s).unwrap(), None);
    for st in [GpuStack::Driver, GpuStack::Container] {
        let err = plan(&[], Some(st), false, &s).unwrap_err();
        assert!(matches!(err, GuestStackError::NeedsGpu { .. }), "{err}");
        assert!(err.help()[0].contains("--gpu"));
    }
    assert!(
        plan(&[], Some(GpuStack::None), false, &s)
            .unwrap()
            .is_some()
    );
}

#[test]
fn fabric_manager_and_later_branches_pick_their_packages() {
    let hopper = Gpu {
        bdf: "0000:18:00.0".into(),
        name: "GH100 [H200 SXM 141GB]".into(),
        chip: Some("GH100".into()),
        ..Default::default()
    };
    let p = plan(&[&hopper], None, true, &settings()).unwrap().unwrap();
    assert_eq!(p.packages, ["nvidia-open-580", "nvidia-fabricmanager-580"]);
    assert_eq!(p.services, ["nvidia-fabricmanager"]);
    assert_schema_valid(&user_data_for(&p));
    let mut s = settings();
    s.branch = 595;
    let p = plan(&[&hopper], None, true, &s).unwrap().unwrap();
    assert_eq!(
        p.packages,
        [
            "nvidia-driver-pinning-595",
            "nvidia-open",
            "nvidia-fabricmanager"
        ]
    );
    // Past 580 a Pascal GPU has no driver: refused with the branch to set.
    let pascal = Gpu {
        bdf: "0000:0a:00.0".into(),
        name: "GP102 [GeForce GTX 1080 Ti]".into(),
        chip: Some("GP102".into()),
        ..Default::default()
    };
    let err = plan(&[&pascal], None, false, &s).unwrap_err();
    assert!(
        matches!(err, GuestStackError::BranchTooNew { last: 580, .. }),
        "{err}"
    );
}

#[test]
fn a_key_url_that_fails_says_which() {
    let p = plan(
        &[&Gpu {
            chip: Some("TU104".into()),
            ..Default::default()
        }],
        None,
        false,
        &settings(),
    )
    .unwrap()
    .unwrap();
    let err = seed_part(&p, &|url| {
        Err(guest_media::Error::HttpStatus {
            url: url.into(),
            status: 404,
        })
    })
    .unwrap_err();
    assert!(err.to_string().contains("3bf863cc.pub"), "{err}");
    assert_eq!(err.exit_kind(), ExitKind::Failure);
    let err = seed_part(&p, &|_| Ok(b"<html>404</html>".to_vec())).unwrap_err();
    assert!(matches!(err, GuestStackError::BadKey { .. }), "{err}");
}
