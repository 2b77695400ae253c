//! Unit tests of `schematic`.

use super::*;

fn meta(key: u8, value: &str) -> MetaValue {
    MetaValue {
        key,
        value: value.into(),
    }
}

/// siderolabs/image-factory pkg/schematic/schematic_test.go vectors (reference talos.md).
#[test]
fn upstream_vectors() {
    let empty = Schematic::default();
    let kargs = Schematic {
        customization: Customization {
            extra_kernel_args: vec!["noapic".into(), "nolapic".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let meta10 = Schematic {
        customization: Customization {
            meta: vec![meta(10, "foo")],
            ..Default::default()
        },
        ..Default::default()
    };
    let rpi = Schematic {
        overlay: Overlay {
            image: "siderolabs/sbc-raspberrypi".into(),
            name: "rpi_generic".into(),
            options: BTreeMap::new(),
        },
        ..Default::default()
    };
    let sb = Schematic {
        customization: Customization {
            secureboot: SecureBoot {
                enroll_keys: None,
                include_well_known_certificates: true,
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let disk = Schematic {
        customization: Customization {
            disk_image: DiskImage {
                sector_size: Some(4096),
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let cases = [
        (
            empty,
            "customization: {}\n",
            "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba",
        ),
        (
            kargs,
            "customization:\n    extraKernelArgs:\n        - noapic\n        - nolapic\n",
            "9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c",
        ),
        (
            meta10,
            "customization:\n    meta:\n        - key: 10\n          value: foo\n",
            "d308a2a5ee2277bed5fbaa104fcbc8d59122abfa737df987a95b4ca763459a7f",
        ),
        (
            rpi,
            "overlay:\n    image: siderolabs/sbc-raspberrypi\n    name: rpi_generic\ncustomization: {}\n",
            "ee21ef4a5ef808a9b7484cc0dda0f25075021691c8c09a276591eedb638ea1f9",
        ),
        (
            sb,
            "customization:\n    secureboot:\n        includeWellKnownCertificates: true\n",
            "fa8e05f142a851d3ee568eb0a8e5841eaf6b0ebc8df9a63df16ac5ed2c04f3e6",
        ),
        (
            disk,
            "customization:\n    diskImage:\n        sectorSize: 4096\n",
            "92833e9ddd9bb9e11b2464fa5525429f01866306d52ebd882ee08d7918f6d1ea",
        ),
    ];
    for (schematic, yaml, id) in cases {
        let got = schematic.id().expect("plain-safe");
        assert_eq!(got.yaml, yaml);
        assert_eq!(got.id, id, "{yaml}");
    }
}

#[test]
fn vectors_parse_back_from_their_canonical_yaml() {
    let yaml = "overlay:\n    image: siderolabs/sbc-raspberrypi\n    name: rpi_generic\ncustomization: {}\n";
    let s = Schematic::from_yaml(yaml).expect("parse");
    assert_eq!(s.canonical_yaml().expect("emit"), yaml);
    let yaml = "customization:\n    meta:\n        - key: 10\n          value: foo\n";
    assert_eq!(
        Schematic::from_yaml(yaml)
            .expect("parse")
            .canonical_yaml()
            .expect("emit"),
        yaml
    );
}

#[test]
fn nvidia_schematic_yaml_is_go_yaml_shaped() {
    let s = Schematic::with_extensions([
        "siderolabs/nvidia-open-gpu-kernel-modules-production",
        "siderolabs/nvidia-container-toolkit-production",
        "siderolabs/qemu-guest-agent",
    ]);
    let got = s.id().expect("plain-safe");
    let want = "customization:\n    systemExtensions:\n        officialExtensions:\n            - siderolabs/nvidia-open-gpu-kernel-modules-production\n            - siderolabs/nvidia-container-toolkit-production\n            - siderolabs/qemu-guest-agent\n";
    assert_eq!(got.yaml, want);
    // `printf '%s' "$want" | sha256sum`
    assert_eq!(
        got.id,
        "d8f2337e57a0899a5a20429fdc5d52c41bbb1f8166bcfa8d6bb221104bb416fc"
    );
}

#[test]
fn full_customization_keeps_struct_order() {
    let s = Schematic {
        owner: None,
        overlay: Overlay::default(),
        customization: Customization {
            embedded_machine_configuration: None,
            extra_kernel_args: vec!["console=ttyS0,115200".into(), "net.ifnames=0".into()],
            meta: vec![meta(10, "foo"), meta(12, "bar")],
            system_extensions: SystemExtensions {
                official_extensions: vec!["siderolabs/qemu-guest-agent".into()],
            },
            bootloader: Some("sd-boot".into()),
            secureboot: SecureBoot {
                enroll_keys: None,
                include_well_known_certificates: true,
            },
            disk_image: DiskImage {
                sector_size: Some(512),
            },
        },
    };
    assert_eq!(
        s.canonical_yaml().expect("emit"),
        "customization:\n    extraKernelArgs:\n        - console=ttyS0,115200\n        - net.ifnames=0\n    meta:\n        - key: 10\n          value: foo\n        - key: 12\n          value: bar\n    systemExtensions:\n        officialExtensions:\n            - siderolabs/qemu-guest-agent\n    bootloader: sd-boot\n    secureboot:\n        includeWellKnownCertificates: true\n    diskImage:\n        sectorSize: 512\n"
    );
}

/// IDs cross-checked offline against gopkg.in/yaml.v3 3.0.1 (`Encoder.SetIndent(4)` over the
/// factory's struct layout): no factory involved, but the same marshaller and struct order.
#[test]
fn go_yaml_cross_checked_ids() {
    let full = Schematic {
        customization: Customization {
            extra_kernel_args: vec!["console=ttyS0,115200".into(), "net.ifnames=0".into()],
            meta: vec![meta(10, "foo"), meta(12, "bar")],
            system_extensions: SystemExtensions {
                official_extensions: vec!["siderolabs/qemu-guest-agent".into()],
            },
            bootloader: Some("sd-boot".into()),
            secureboot: SecureBoot {
                enroll_keys: None,
                include_well_known_certificates: true,
            },
            disk_image: DiskImage {
                sector_size: Some(512),
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let lts = Schematic::with_extensions([
        "siderolabs/nonfree-kmod-nvidia-lts",
        "siderolabs/nvidia-container-toolkit-lts",
        "siderolabs/nvidia-fabricmanager-lts",
        "siderolabs/qemu-guest-agent",
    ]);
    let overlay = Schematic {
        overlay: Overlay {
            image: "siderolabs/sbc-rockchip".into(),
            name: "turingrk1".into(),
            options: [("configTxt", "foo"), ("baud", "x115200")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
        customization: Customization {
            extra_kernel_args: vec![
                "-talos.halt_if_installed".into(),
                "console=ttyS0,115200".into(),
            ],
            meta: vec![meta(10, "a b")],
            ..Default::default()
        },
        ..Default::default()
    };
    for (s, id) in [
        (
            full,
            "5a06924944bc93c9fa61b868e16db8d23fd8f4f85a236746a759aa82567cece1",
        ),
        (
            lts,
            "b34b21b7037b163c8751eb38eb5e6b263470cecb7898ee08c04549cf8e01a92d",
        ),
        (
            overlay,
            "f320f2d81362f298c6a0bb1cdd59b8185c290ade39a36fd1ab7448a945acd827",
        ),
    ] {
        assert_eq!(s.id().expect("plain-safe").id, id);
    }
}

#[test]
fn order_changes_the_id() {
    let a = Schematic::with_extensions(["siderolabs/a", "siderolabs/b"]);
    let b = Schematic::with_extensions(["siderolabs/b", "siderolabs/a"]);
    assert_ne!(a.id().expect("a").id, b.id().expect("b").id);
}

#[test]
fn plain_safe_accepts_ordinary_values() {
    for s in [
        "siderolabs/nvidia-open-gpu-kernel-modules-lts",
        "console=ttyS0,115200",
        "8250.nr_uarts=5",
        "ip=198.18.0.10::198.18.0.1:255.255.254.0",
        "talos.platform=metal",
        "-talos.halt_if_installed",
        "-console",
        "a b",
        "foo",
    ] {
        assert_eq!(check_plain_safe(s), Ok(()), "{s}");
    }
}

#[test]
fn plain_safe_refuses_anything_go_yaml_might_quote() {
    for s in [
        "",
        " x",
        "x ",
        "true",
        "True",
        "NO",
        "y",
        "off",
        "null",
        "~",
        "123",
        "0x1f",
        "1.5",
        "-1",
        "+1",
        "1e3",
        "1:20",
        "2001-12-14",
        ".inf",
        ".NaN",
        "- x",
        "--x",
        "-.5",
        "-_1",
        "a: b",
        "a #b",
        "x:",
        "#c",
        "&a",
        "*a",
        "!t",
        "|",
        ">",
        "'q'",
        "\"q\"",
        "%x",
        "@x",
        "`x",
        "[a]",
        "{a}",
        "?x",
        ":x",
        "a\nb",
        "a\tb",
        "é",
        "<<",
        "=",
        "...",
        // Found by cross-checking 44k random strings against go-yaml v3 (gopkg.in/yaml.v3 3.0.1).
        "...bx9Y",
        "+_0",
        "._5",
        "+x",
        "a'b",
    ] {
        assert!(check_plain_safe(s).is_err(), "{s:?} must be refused");
    }
}

#[test]
fn refused_string_names_the_field_and_online_mode() {
    let s = Schematic {
        customization: Customization {
            extra_kernel_args: vec!["yes".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let err = s.id().expect_err("refused").to_string();
    assert!(err.contains("extraKernelArgs"), "{err}");
    assert!(err.contains("online"), "{err}");
}

#[test]
fn unknown_fields_are_rejected_like_the_factory() {
    assert!(Schematic::from_yaml("customization:\n    bogus: 1\n").is_err());
}
