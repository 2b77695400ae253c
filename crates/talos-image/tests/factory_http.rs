//! Factory and GitHub API calls against a local mock server (no internet).

use httpmock::prelude::*;
use serde_json::json;
use talos_image::factory::{Endpoints, FactoryClient, VersionSource};
use talos_image::schematic::{Customization, Schematic};
use talos_image::{Error, TalosVersion};

fn client(server: &MockServer) -> FactoryClient {
    FactoryClient::new(Endpoints::new(&server.base_url(), &server.base_url())).expect("client")
}

fn releases(server: &MockServer) {
    server.mock(|when, then| {
        when.method(GET).path("/repos/siderolabs/talos/releases");
        then.status(200).json_body(json!([
            {"tag_name": "v1.13.0-beta.0", "draft": false, "prerelease": true},
            {"tag_name": "v1.14.0", "draft": true, "prerelease": false},
            {"tag_name": "v1.12.10", "draft": false, "prerelease": false},
            {"tag_name": "v1.12.9", "draft": false, "prerelease": false},
            {"tag_name": "v1.11.6", "draft": false, "prerelease": false}
        ]));
    });
}

#[test]
fn latest_stable_from_github_drops_drafts_and_prereleases() {
    let server = MockServer::start();
    releases(&server);
    let c = client(&server);
    let v = c
        .resolve_version(VersionSource::Github, None, false)
        .expect("latest");
    assert_eq!(v.to_string(), "v1.12.10");
    let v = c
        .resolve_version(VersionSource::Github, None, true)
        .expect("latest");
    assert_eq!(v.to_string(), "v1.13.0-beta.0");
}

#[test]
fn requested_version_must_exist_and_be_stable() {
    let server = MockServer::start();
    releases(&server);
    let c = client(&server);
    assert_eq!(
        c.resolve_version(VersionSource::Github, Some("1.11.6"), false)
            .expect("exists")
            .to_string(),
        "v1.11.6"
    );
    let err = c
        .resolve_version(VersionSource::Github, Some("v1.9.99"), false)
        .expect_err("missing");
    assert!(matches!(err, Error::VersionNotFound { .. }), "{err}");
    let err = c
        .resolve_version(VersionSource::Github, Some("v1.13.0-beta.0"), false)
        .expect_err("prerelease");
    assert!(matches!(err, Error::VersionIsPrerelease { .. }), "{err}");
    // A draft is not published.
    let err = c
        .resolve_version(VersionSource::Github, Some("v1.14.0"), false)
        .expect_err("draft");
    assert!(matches!(err, Error::VersionNotFound { .. }), "{err}");
}

#[test]
fn factory_versions_alternative() {
    let server = MockServer::start();
    server.mock(|when, then| {
        when.method(GET).path("/versions");
        then.status(200)
            .json_body(json!(["v1.10.0", "v1.12.0-alpha.1", "v1.11.2", "junk"]));
    });
    let c = client(&server);
    let v = c
        .resolve_version(VersionSource::Factory, None, false)
        .expect("latest");
    assert_eq!(v.to_string(), "v1.11.2");
    assert!(matches!(
        c.resolve_version(VersionSource::Factory, Some("v1.12.0-alpha.1"), false),
        Err(Error::VersionIsPrerelease { .. })
    ));
}

#[test]
fn http_errors_carry_url_and_status() {
    let server = MockServer::start();
    server.mock(|when, then| {
        when.method(GET).path("/versions");
        then.status(503).body("maintenance");
    });
    let err = client(&server).factory_versions().expect_err("503");
    let msg = err.to_string();
    assert!(
        msg.contains("503") && msg.contains("/versions") && msg.contains("maintenance"),
        "{msg}"
    );
}

const EMPTY_ID: &str = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";

#[test]
fn online_schematic_matches_offline() {
    let server = MockServer::start();
    let m = server.mock(|when, then| {
        when.method(POST)
            .path("/schematics")
            .body("customization: {}\n");
        then.status(201)
            .json_body(json!({"id": EMPTY_ID, "schematic": "customization: {}\n"}));
    });
    let got = client(&server)
        .create_schematic(&Schematic::default())
        .expect("online");
    m.assert();
    assert_eq!(got.id, EMPTY_ID);
    assert!(got.verified_offline);
}

#[test]
fn online_schematic_mismatch_names_both_ids() {
    let server = MockServer::start();
    server.mock(|when, then| {
        when.method(POST).path("/schematics");
        then.status(201).json_body(json!({"id": "abc123"}));
    });
    let err = client(&server)
        .create_schematic(&Schematic::default())
        .expect_err("mismatch");
    let msg = err.to_string();
    assert!(msg.contains("abc123") && msg.contains(EMPTY_ID), "{msg}");
}

#[test]
fn not_plain_safe_schematic_takes_the_factory_id() {
    let server = MockServer::start();
    let m = server.mock(|when, then| {
        when.method(POST)
            .path("/schematics")
            .body_includes("\"extraKernelArgs\":[\"yes\"]");
        then.status(201).json_body(json!({"id": "f00d"}));
    });
    let s = Schematic {
        customization: Customization {
            extra_kernel_args: vec!["yes".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let got = client(&server).create_schematic(&s).expect("online");
    m.assert();
    assert_eq!(got.id, "f00d");
    assert!(!got.verified_offline);
}

#[test]
fn unknown_extensions_are_named() {
    let server = MockServer::start();
    server.mock(|when, then| {
        when.method(GET).path("/version/v1.12.1/extensions/official");
        then.status(200).json_body(json!([
            {"name": "siderolabs/qemu-guest-agent", "ref": "ghcr.io/siderolabs/qemu-guest-agent:9.2.0", "digest": "sha256:00", "author": "Sidero Labs", "description": "guest agent"},
            {"name": "siderolabs/nvidia-container-toolkit-production", "ref": "r", "digest": "d", "author": "a", "description": "d"}
        ]));
    });
    let c = client(&server);
    let v = TalosVersion::parse("v1.12.1").expect("v");
    c.check_extensions(&v, &["siderolabs/qemu-guest-agent".into()])
        .expect("known");
    let err = c
        .check_extensions(
            &v,
            &[
                "siderolabs/qemu-guest-agent".into(),
                "siderolabs/does-not-exist".into(),
            ],
        )
        .expect_err("unknown");
    match err {
        Error::UnknownExtensions { names, version } => {
            assert_eq!(names, ["siderolabs/does-not-exist"]);
            assert_eq!(version, "v1.12.1");
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn old_requested_version_is_found_on_a_later_page() {
    let server = MockServer::start();
    let page1: Vec<serde_json::Value> = (0..100)
        .map(|i| json!({"tag_name": format!("v1.12.{}", 100 - i), "draft": false, "prerelease": false}))
        .collect();
    server.mock(|when, then| {
        when.method(GET)
            .path("/repos/siderolabs/talos/releases")
            .query_param("page", "1");
        then.status(200).json_body(serde_json::Value::Array(page1));
    });
    let page2 = server.mock(|when, then| {
        when.method(GET)
            .path("/repos/siderolabs/talos/releases")
            .query_param("page", "2");
        then.status(200)
            .json_body(json!([{"tag_name": "v1.7.6", "draft": false, "prerelease": false}]));
    });
    let c = client(&server);
    assert_eq!(
        c.resolve_version(VersionSource::Github, None, false)
            .expect("latest")
            .to_string(),
        "v1.12.100"
    );
    page2.assert_calls(0);
    assert_eq!(
        c.resolve_version(VersionSource::Github, Some("v1.7.6"), false)
            .expect("page 2")
            .to_string(),
        "v1.7.6"
    );
    page2.assert_calls(1);
    assert!(matches!(
        c.resolve_version(VersionSource::Github, Some("v1.6.0"), false),
        Err(Error::VersionNotFound { .. })
    ));
}
