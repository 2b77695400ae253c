//! Unit tests of `factory`.

use super::*;

fn v(s: &str) -> TalosVersion {
    TalosVersion::parse(s).expect("version")
}

#[test]
fn endpoints_from_lookup_and_trailing_slash() {
    let ep = Endpoints::from_lookup(|k| match k {
        ENV_FACTORY => Some("http://198.18.0.1:8080/".into()),
        ENV_GITHUB_API => Some(String::new()),
        _ => None,
    });
    assert_eq!(ep.factory, "http://198.18.0.1:8080");
    assert_eq!(ep.github_api, DEFAULT_GITHUB_API);
    assert_eq!(ep.factory_host(), "198.18.0.1:8080");
    assert_eq!(Endpoints::default().factory_host(), "factory.talos.dev");
}

#[test]
fn image_urls_and_installer_refs() {
    let ep = Endpoints::default();
    let id = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
    assert_eq!(
        ep.image_url(id, &v("v1.12.1"), ImageKind::NocloudQcow2),
        format!("https://factory.talos.dev/image/{id}/v1.12.1/nocloud-amd64.qcow2")
    );
    assert!(
        ep.image_url(id, &v("1.11.0"), ImageKind::NocloudRawXz)
            .ends_with("/v1.11.0/nocloud-amd64.raw.xz")
    );
    assert!(
        ep.image_url(id, &v("1.11.0"), ImageKind::MetalIso)
            .ends_with("/metal-amd64.iso")
    );
    assert_eq!(
        ep.installer_image("nocloud", id, &v("v1.10.0"), false),
        format!("factory.talos.dev/nocloud-installer/{id}:v1.10.0")
    );
    assert_eq!(
        ep.installer_image("metal", id, &v("v1.9.5"), false),
        format!("factory.talos.dev/installer/{id}:v1.9.5")
    );
    assert_eq!(
        ep.installer_image("metal", id, &v("v1.12.0"), true),
        format!("factory.talos.dev/metal-installer-secureboot/{id}:v1.12.0")
    );
    let mirror = Endpoints::new(DEFAULT_GITHUB_API, "https://mirror.example:5000/");
    assert!(
        mirror
            .installer_image("nocloud", id, &v("v1.12.0"), false)
            .starts_with("mirror.example:5000/nocloud-installer/")
    );
}

#[test]
fn image_ref_names() {
    let id = "d8f2337e57a0899a5a20429fdc5d52c41bbb1f8166bcfa8d6bb221104bb416fc";
    let r = Endpoints::default().image(id, &v("v1.12.1"), ImageKind::NocloudRawXz);
    assert_eq!(
        r.file_name(),
        "talos-v1.12.1-d8f2337e57a0-nocloud-amd64.raw.xz"
    );
    assert_eq!(
        r.decompressed_file_name(),
        "talos-v1.12.1-d8f2337e57a0-nocloud-amd64.raw"
    );
    assert!(r.url.ends_with("/image/d8f2337e57a0899a5a20429fdc5d52c41bbb1f8166bcfa8d6bb221104bb416fc/v1.12.1/nocloud-amd64.raw.xz"));
    let q = Endpoints::default().image(id, &v("v1.12.1"), ImageKind::NocloudQcow2);
    assert_eq!(q.decompressed_file_name(), q.file_name());
}

#[test]
fn metal_iso_kind_and_kernel_arg() {
    let id = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
    assert_eq!(ImageKind::MetalIso.platform(), "metal");
    assert_eq!(ImageKind::NocloudQcow2.platform(), "nocloud");
    assert_eq!(
        Endpoints::default().installer_image(
            ImageKind::MetalIso.platform(),
            id,
            &v("v1.12.1"),
            false
        ),
        format!("factory.talos.dev/metal-installer/{id}:v1.12.1")
    );
    // The kernel argument is plain-safe, so the ID stays offline-computable, and it is
    // part of the canonical YAML: the ISO's schematic is a different one.
    let plain = Schematic::with_extensions(["siderolabs/qemu-guest-agent"]);
    let mut iso = plain.clone();
    iso.customization
        .extra_kernel_args
        .push(METAL_ISO_KERNEL_ARG.into());
    let (a, b) = (plain.id().unwrap(), iso.id().unwrap());
    assert_ne!(a.id, b.id);
    assert_eq!(
        b.yaml,
        "customization:\n    extraKernelArgs:\n        - talos.config=metal-iso\n    systemExtensions:\n        officialExtensions:\n            - siderolabs/qemu-guest-agent\n"
    );
}

#[test]
fn version_display_and_order() {
    assert_eq!(v("1.12.0").to_string(), "v1.12.0");
    assert!(v("v1.10.10") > v("v1.10.9"));
    assert!(v("v1.12.0-beta.1") < v("v1.12.0"));
    assert!(v("v1.12.0-beta.1").is_prerelease());
    assert!(TalosVersion::parse("latest").is_err());
}

#[test]
fn pick_version_rules() {
    let known = vec![
        KnownVersion {
            version: v("v1.13.0-alpha.1"),
            prerelease: true,
        },
        KnownVersion {
            version: v("v1.12.2"),
            prerelease: false,
        },
        KnownVersion {
            version: v("v1.12.10"),
            prerelease: false,
        },
    ];
    assert_eq!(
        pick_version(&known, None, false).expect("latest"),
        v("v1.12.10")
    );
    assert_eq!(
        pick_version(&known, None, true).expect("latest pre"),
        v("v1.13.0-alpha.1")
    );
    assert_eq!(
        pick_version(&known, Some("1.12.2"), false).expect("exists"),
        v("v1.12.2")
    );
    assert!(matches!(
        pick_version(&known, Some("v1.13.0-alpha.1"), false),
        Err(Error::VersionIsPrerelease { .. })
    ));
    assert!(pick_version(&known, Some("v1.13.0-alpha.1"), true).is_ok());
    assert!(matches!(
        pick_version(&known, Some("v9.9.9"), false),
        Err(Error::VersionNotFound { .. })
    ));
    assert!(matches!(
        pick_version(&[], None, false),
        Err(Error::NoStableRelease { .. })
    ));
}
