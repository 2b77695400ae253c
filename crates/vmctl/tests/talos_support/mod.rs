//! Shared by the Talos tests: a local stand-in for the Image Factory and the GitHub releases API
//! (httpmock, no internet), a tiny fake nocloud qcow2 and metal ISO, seed/XML readers, and the
//! official machine-config schemas.
#![allow(dead_code)] // each test crate uses a part

use std::path::{Path, PathBuf};
use std::process::Command;

use httpmock::prelude::*;
use serde_json::json;
use talos_image::Schematic;

/// The release the mock calls latest stable.
pub const LATEST: &str = "v1.12.1";

/// Extensions the mock factory offers for every version.
pub const OFFICIAL: [&str; 6] = [
    "siderolabs/qemu-guest-agent",
    "siderolabs/nvidia-open-gpu-kernel-modules-production",
    "siderolabs/nonfree-kmod-nvidia-production",
    "siderolabs/nvidia-container-toolkit-production",
    "siderolabs/nvidia-fabricmanager-production",
    "siderolabs/iscsi-tools",
];

/// A qcow2 of `size` made by qemu-img (a few hundred KiB on disk).
pub fn fake_qcow2(dir: &Path, size: &str) -> Vec<u8> {
    let p = dir.join("fake-talos.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&p)
        .arg(size)
        .status()
        .expect("qemu-img");
    assert!(st.success());
    std::fs::read(&p).expect("read fake qcow2")
}

/// A small ISO 9660 image standing in for `metal-amd64.iso` (not bootable).
pub fn fake_iso(dir: &Path) -> Vec<u8> {
    let stage = dir.join("fake-talos-iso.d");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::write(stage.join("README"), "not Talos\n").unwrap();
    let p = dir.join("fake-metal-amd64.iso");
    let st = Command::new("genisoimage")
        .args(["-quiet", "-volid", "TALOS", "-rock", "-output"])
        .arg(&p)
        .arg(&stage)
        .status()
        .expect("genisoimage");
    assert!(st.success());
    std::fs::read(&p).expect("read fake iso")
}

/// Serves `metal-amd64.iso` for any schematic and version; the mock that counts its hits.
pub fn serve_metal_iso<'a>(server: &'a MockServer, bytes: Vec<u8>) -> httpmock::Mock<'a> {
    server.mock(|when, then| {
        when.method(GET)
            .path_matches(r"^/image/[0-9a-f]{64}/v[^/]+/metal-amd64\.iso$");
        then.status(200)
            .header("content-type", "application/octet-stream")
            .body(bytes);
    })
}

/// The filesystem label blkid(8) reads, as Talos' volume discovery would see it.
pub fn blkid_label(path: &Path) -> String {
    let out = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "LABEL"])
        .arg(path)
        .output()
        .expect("blkid (util-linux)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Checks every document of `yaml` against the official machine-config schema `schema`
/// (`v1.12`, …; copies in crates/talos-image/tests/schemas).
pub fn assert_valid_machine_config(schema: &str, yaml: &str) {
    let path = format!(
        "{}/../talos-image/tests/schemas/config.schema.{schema}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("schema file");
    let json: serde_json::Value = serde_json::from_str(&text).expect("schema json");
    let v = jsonschema::validator_for(&json).expect("compile schema");
    for doc in yaml_docs(yaml) {
        let doc = serde_json::to_value(doc).expect("yaml as json");
        let errors: Vec<String> = v
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{schema}: {}\n---\n{yaml}",
            errors.join("\n")
        );
    }
}

/// The `<boot order=…/>` of each disk in a domain XML: (target dev, order), in XML order.
pub fn boot_orders(xml: &str) -> Vec<(String, Option<u32>)> {
    xml.split("<disk ")
        .skip(1)
        .map(|d| {
            let d = &d[..d.find("</disk>").unwrap()];
            let attr = |el: &str, a: &str| {
                let at = d.find(&format!("<{el} "))?;
                let rest = &d[at..];
                let rest = &rest[rest.find(&format!("{a}="))? + a.len() + 2..];
                Some(rest[..rest.find(['\'', '"'])?].to_string())
            };
            (
                attr("target", "dev").unwrap_or_default(),
                attr("boot", "order").map(|o| o.parse().unwrap()),
            )
        })
        .collect()
}

/// Releases (one pre-release, one draft), factory versions, the extension list, and
/// `nocloud-amd64.qcow2` for any schematic and version when `image` is given.
pub fn factory(image: Option<Vec<u8>>) -> MockServer {
    let server = MockServer::start();
    server.mock(|when, then| {
        when.method(GET).path("/repos/siderolabs/talos/releases");
        then.status(200).json_body(json!([
            {"tag_name": "v1.13.0-beta.0", "draft": false, "prerelease": true},
            {"tag_name": "v1.14.0", "draft": true, "prerelease": false},
            {"tag_name": LATEST, "draft": false, "prerelease": false},
            {"tag_name": "v1.11.5", "draft": false, "prerelease": false},
            {"tag_name": "v1.10.7", "draft": false, "prerelease": false}
        ]));
    });
    server.mock(|when, then| {
        when.method(GET).path("/versions");
        then.status(200)
            .json_body(json!(["v1.10.7", "v1.11.5", LATEST, "v1.13.0-beta.0"]));
    });
    let exts: Vec<_> = OFFICIAL
        .iter()
        .map(|n| json!({"name": n, "ref": format!("ghcr.io/{n}:1"), "digest": "sha256:00", "author": "Sidero Labs", "description": "test"}))
        .collect();
    server.mock(|when, then| {
        when.method(GET)
            .path_matches(r"^/version/v[0-9.]+[^/]*/extensions/official$");
        then.status(200).json_body(json!(exts));
    });
    if let Some(bytes) = image {
        server.mock(|when, then| {
            when.method(GET)
                .path_matches(r"^/image/[0-9a-f]{64}/v[^/]+/nocloud-amd64\.qcow2$");
            then.status(200)
                .header("content-type", "application/octet-stream")
                .body(bytes);
        });
    }
    server
}

/// Answers `POST /schematics` for exactly this schematic with its offline ID.
pub fn accept_schematic(server: &MockServer, s: &Schematic) -> String {
    let id = s.id().expect("plain-safe schematic");
    let (yaml, sid) = (id.yaml.clone(), id.id.clone());
    server.mock(|when, then| {
        when.method(POST).path("/schematics").body(yaml.clone());
        then.status(201)
            .json_body(json!({"id": sid, "schematic": yaml}));
    });
    id.id
}

/// A file of an ISO 9660 seed, by its Rock Ridge name (`user-data`).
pub fn iso_file(iso: &Path, name: &str) -> String {
    let out = Command::new("isoinfo")
        .args(["-R", "-i"])
        .arg(iso)
        .args(["-x", &format!("/{name}")])
        .output()
        .expect("isoinfo (genisoimage package)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The ISO's volume label.
pub fn iso_label(iso: &Path) -> String {
    let out = Command::new("isoinfo")
        .args(["-d", "-i"])
        .arg(iso)
        .output()
        .expect("isoinfo");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Volume id: "))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Runs `virt-xml-validate FILE domain` on `xml`; panics with its output on failure.
pub fn validate_domain_xml(dir: &Path, xml: &str) {
    let p: PathBuf = dir.join("domain-under-test.xml");
    std::fs::write(&p, xml).expect("write xml");
    let out = Command::new("virt-xml-validate")
        .arg(&p)
        .arg("domain")
        .output()
        .expect("virt-xml-validate (libvirt-clients)");
    assert!(
        out.status.success(),
        "virt-xml-validate: {}{}\n{xml}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every document of a multi-document YAML.
pub fn yaml_docs(text: &str) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("yaml document"))
        .collect()
}

/// The machine config `create talos` must have written for the node described by its `--json`
/// output, rendered again from the cluster's stored secrets (`cluster_dir/secrets.yaml`).
pub fn rerender_user_data(
    created: &serde_json::Value,
    factory_base: &str,
    gateway: Option<&str>,
) -> String {
    use talos_image::machineconfig::{self, NodePatch, Role};
    use talos_image::{ConfigInput, Endpoints, SecretsBundle, TalosVersion};
    let s = |k: &str| created[k].as_str().unwrap_or_default().to_string();
    let dir = std::path::PathBuf::from(s("cluster_dir"));
    let secrets =
        SecretsBundle::from_yaml(&std::fs::read_to_string(dir.join("secrets.yaml")).unwrap())
            .unwrap();
    let version = TalosVersion::parse(&s("version")).unwrap();
    let ep = Endpoints::new(factory_base, factory_base);
    let mut input = ConfigInput::new(&s("cluster"), &s("endpoint"), version.clone());
    let platform = if s("media") == "metal-iso" {
        "metal"
    } else {
        "nocloud"
    };
    input.installer_image = ep.installer_image(platform, &s("schematic_id"), &version, false);
    let role = if s("role") == "worker" {
        Role::Worker
    } else {
        Role::Controlplane
    };
    let gpu = created["gpus"].as_array().is_some_and(|g| !g.is_empty());
    let patch = NodePatch {
        hostname: Some(s("name")),
        static_ip: created["ip"].as_str().map(|ip| machineconfig::StaticIp {
            mac: s("mac"),
            address: ip.parse().unwrap(),
            gateway: gateway.map(|g| g.parse().unwrap()),
            nameservers: gateway.iter().map(|g| g.parse().unwrap()).collect(),
        }),
        gpu,
        labels: if gpu {
            let (k, v) = talos_image::nvidia::GPU_NODE_LABEL;
            [(k.to_string(), v.to_string())].into()
        } else {
            Default::default()
        },
        ..Default::default()
    };
    if created["inline_manifests"]
        .as_array()
        .is_some_and(|m| !m.is_empty())
    {
        input.inline_manifests = talos_image::nvidia::inline_manifests().unwrap();
    }
    machineconfig::node_config(&input, &secrets, role, &patch).unwrap()
}

/// The HGX H200 fixture host without its NVSwitches: eight GPUs, each alone in its group
/// (giving single GPUs of an NVSwitch host to separate VMs is a question of its own).
pub fn hgx_without_nvswitch() -> tempfile::TempDir {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/hosts/hgx-h200x8-nvswitch-truncated.toml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let kept: Vec<&str> = text
        .split("\n[[device]]")
        .filter(|block| !block.contains("class = \"0680\""))
        .collect();
    fixture_builder::build_from_str(&kept.join("\n[[device]]")).unwrap()
}
