//! Every generated document validates against the official schema of its Talos version
//! (copies in tests/schemas, see SOURCES.md there): controlplane and worker, with and without
//! GPU and static IP, node labels, a VIP and inline manifests, for 1.10, 1.11, 1.12, 1.13 and
//! main (1.14+).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde::Deserialize;
use talos_image::machineconfig::{self, ConfigInput, NodePatch, Role, StaticIp};
use talos_image::secrets::{SecretsBundle, SecretsOptions};
use talos_image::{Endpoints, TalosVersion};

const VERSIONS: [(&str, &str); 5] = [
    ("v1.10.7", "v1.10"),
    ("v1.11.5", "v1.11"),
    ("v1.12.1", "v1.12"),
    ("v1.13.9", "v1.13"),
    ("v1.14.0", "main"),
];

fn secrets() -> &'static SecretsBundle {
    static B: OnceLock<SecretsBundle> = OnceLock::new();
    B.get_or_init(|| {
        // A fixture RSA-4096 key: generating one takes a minute in a debug build.
        let opts = SecretsOptions {
            service_account_key: Some(include_str!("fixtures/test-only-sa-rsa4096.pem").into()),
            ..Default::default()
        };
        SecretsBundle::generate_with(&TalosVersion::parse("v1.12.1").expect("v"), opts)
            .expect("secrets")
    })
}

fn with_validator<R>(schema: &str, f: impl FnOnce(&jsonschema::Validator) -> R) -> R {
    static CACHE: OnceLock<Mutex<HashMap<String, &'static jsonschema::Validator>>> =
        OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let v = {
        let mut guard = cache.lock().expect("lock");
        *guard.entry(schema.to_string()).or_insert_with(|| {
            let path = format!(
                "{}/tests/schemas/config.schema.{schema}.json",
                env!("CARGO_MANIFEST_DIR")
            );
            let text = std::fs::read_to_string(&path).expect("schema file");
            let json: serde_json::Value = serde_json::from_str(&text).expect("schema json");
            Box::leak(Box::new(
                jsonschema::validator_for(&json).expect("compile schema"),
            ))
        })
    };
    f(v)
}

fn docs_of(yaml: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde_json::Value::deserialize(d).expect("yaml doc"))
        .collect()
}

fn assert_valid(schema: &str, yaml: &str, what: &str) {
    let docs = docs_of(yaml);
    assert!(!docs.is_empty());
    with_validator(schema, |v| {
        for doc in &docs {
            let errors: Vec<String> = v
                .iter_errors(doc)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{what} ({schema}): document {} invalid:\n{}\n---\n{}",
                doc.get("kind")
                    .and_then(|k| k.as_str())
                    .unwrap_or("v1alpha1"),
                errors.join("\n"),
                serde_yaml::to_string(doc).unwrap_or_default()
            );
        }
    });
}

fn input(version: &str) -> ConfigInput {
    let v = TalosVersion::parse(version).expect("v");
    let mut i = ConfigInput::new("gpu-lab", "https://198.18.0.10:6443", v.clone());
    i.installer_image = Endpoints::default().installer_image(
        "nocloud",
        "d8f2337e57a0899a5a20429fdc5d52c41bbb1f8166bcfa8d6bb221104bb416fc",
        &v,
        false,
    );
    i.inline_manifests = talos_image::nvidia::inline_manifests().expect("manifests");
    i
}

fn patches() -> Vec<(&'static str, NodePatch)> {
    let ip = StaticIp {
        mac: "52:54:00:12:34:56".into(),
        address: "198.18.0.11/24".parse().expect("cidr"),
        gateway: Some("198.18.0.1".parse().expect("gw")),
        nameservers: vec![
            "198.18.0.1".parse().expect("ns"),
            "2001:db8::53".parse().expect("ns6"),
        ],
    };
    vec![
        ("plain", NodePatch::default()),
        (
            "static-ip",
            NodePatch {
                hostname: Some("cp1".into()),
                static_ip: Some(ip.clone()),
                ..Default::default()
            },
        ),
        (
            "gpu",
            NodePatch {
                gpu: true,
                ..Default::default()
            },
        ),
        (
            "gpu+static-ip",
            NodePatch {
                hostname: Some("gpu1.lab".into()),
                static_ip: Some(StaticIp {
                    gateway: None,
                    nameservers: vec![],
                    ..ip.clone()
                }),
                gpu: true,
                install_disk: Some("/dev/nvme0n1".into()),
                installer_image: None,
                labels: [(
                    talos_image::nvidia::GPU_NODE_LABEL.0.to_string(),
                    talos_image::nvidia::GPU_NODE_LABEL.1.to_string(),
                )]
                .into(),
                vip: None,
            },
        ),
        (
            "static-ip+vip",
            NodePatch {
                hostname: Some("cp2".into()),
                static_ip: Some(StaticIp {
                    address: "198.18.0.12/24".parse().expect("cidr"),
                    ..ip
                }),
                vip: Some("198.18.0.10".parse().expect("vip")),
                ..Default::default()
            },
        ),
    ]
}

#[test]
fn every_generated_document_validates_against_its_schema() {
    let secrets = secrets();
    for (version, schema) in VERSIONS {
        let input = input(version);
        for role in [Role::Controlplane, Role::Worker] {
            for (name, patch) in patches() {
                let yaml =
                    machineconfig::node_config(&input, secrets, role, &patch).expect("generate");
                assert_valid(
                    schema,
                    &yaml,
                    &format!("{version} {} {name}", role.as_str()),
                );
            }
        }
        let all = machineconfig::generate(&input, secrets).expect("generate");
        assert_valid(schema, &all.controlplane, "controlplane.yaml");
        assert_valid(schema, &all.worker, "worker.yaml");
    }
}

fn kinds(yaml: &str) -> Vec<String> {
    docs_of(yaml)
        .iter()
        .map(|d| {
            d.get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("v1alpha1")
                .to_string()
        })
        .collect()
}

fn gpu_static() -> NodePatch {
    patches()
        .into_iter()
        .find(|(n, _)| *n == "gpu+static-ip")
        .expect("patch")
        .1
}

#[test]
fn v1_10_and_v1_11_are_one_v1alpha1_document() {
    for version in ["v1.10.7", "v1.11.5"] {
        let yaml = machineconfig::node_config(
            &input(version),
            secrets(),
            Role::Controlplane,
            &gpu_static(),
        )
        .expect("gen");
        assert_eq!(kinds(&yaml), ["v1alpha1"]);
        let doc = &docs_of(&yaml)[0];
        let m = &doc["machine"];
        assert_eq!(m["network"]["hostname"], "gpu1.lab");
        assert_eq!(
            m["network"]["interfaces"][0]["deviceSelector"]["hardwareAddr"],
            "52:54:00:12:34:56"
        );
        assert_eq!(
            m["network"]["interfaces"][0]["addresses"][0],
            "198.18.0.11/24"
        );
        assert_eq!(m["install"]["disk"], "/dev/nvme0n1");
        assert!(
            m["install"]["image"]
                .as_str()
                .expect("image")
                .starts_with("factory.talos.dev/nocloud-installer/")
        );
        let modules: Vec<&str> = m["kernel"]["modules"]
            .as_array()
            .expect("modules")
            .iter()
            .map(|x| x["name"].as_str().expect("name"))
            .collect();
        assert_eq!(
            modules,
            ["nvidia", "nvidia_uvm", "nvidia_drm", "nvidia_modeset"]
        );
        assert_eq!(m["sysctls"]["net.core.bpf_jit_harden"], "1");
        assert_eq!(doc["cluster"]["clusterName"], "gpu-lab");
        assert_eq!(
            doc["cluster"]["controlPlane"]["endpoint"],
            "https://198.18.0.10:6443"
        );
    }
}

#[test]
fn static_ip_routes_and_nameservers_v1_10() {
    let p = &patches()[1].1;
    let yaml =
        machineconfig::node_config(&input("v1.10.7"), secrets(), Role::Worker, p).expect("gen");
    let doc = &docs_of(&yaml)[0];
    let net = &doc["machine"]["network"];
    assert_eq!(net["interfaces"][0]["routes"][0]["gateway"], "198.18.0.1");
    assert_eq!(net["interfaces"][0]["routes"][0]["network"], "0.0.0.0/0");
    assert_eq!(net["nameservers"][1], "2001:db8::53");
    // Worker configs carry no CA private keys.
    assert!(doc["machine"]["ca"].get("key").is_none());
    assert!(doc["cluster"]["ca"].get("key").is_none());
    assert!(doc["cluster"].get("aggregatorCA").is_none());
    assert!(doc["cluster"].get("secretboxEncryptionSecret").is_none());
}

#[test]
fn v1_12_moves_hostname_and_links_out() {
    let p = &patches()[1].1;
    let yaml = machineconfig::node_config(&input("v1.12.1"), secrets(), Role::Controlplane, p)
        .expect("gen");
    assert_eq!(
        kinds(&yaml),
        [
            "v1alpha1",
            "HostnameConfig",
            "LinkAliasConfig",
            "LinkConfig",
            "ResolverConfig"
        ]
    );
    let docs = docs_of(&yaml);
    assert!(docs[0]["machine"].get("network").is_none());
    assert_eq!(docs[1]["hostname"], "cp1");
    assert_eq!(
        docs[2]["selector"]["match"],
        "mac(link.hardware_addr) == \"52:54:00:12:34:56\""
    );
    assert_eq!(docs[3]["name"], docs[2]["name"]);
    assert_eq!(docs[3]["addresses"][0]["address"], "198.18.0.11/24");
    assert_eq!(docs[3]["routes"][0]["gateway"], "198.18.0.1");
    assert_eq!(docs[4]["nameservers"][0]["address"], "198.18.0.1");
    // GPU settings stay in v1alpha1 for 1.12.
    let yaml =
        machineconfig::node_config(&input("v1.12.1"), secrets(), Role::Worker, &patches()[2].1)
            .expect("gen");
    assert_eq!(kinds(&yaml), ["v1alpha1", "HostnameConfig"]);
    assert_eq!(
        docs_of(&yaml)[0]["machine"]["sysctls"]["net.core.bpf_jit_harden"],
        "1"
    );
}

#[test]
fn main_uses_the_multi_document_contract() {
    let yaml = machineconfig::node_config(
        &input("v1.14.0"),
        secrets(),
        Role::Controlplane,
        &gpu_static(),
    )
    .expect("gen");
    assert_eq!(
        kinds(&yaml),
        [
            "v1alpha1",
            "KubeClusterConfig",
            "KubeNetworkConfig",
            "DiscoveryIdentityConfig",
            "KubeAPIServerCAConfig",
            "KubeAggregatorCAConfig",
            "KubeServiceAccountConfig",
            "KubeEtcdEncryptionConfig",
            "UnattendedInstall",
            "KubeNodeConfig",
            "KubeInlineManifestConfig",
            "KubeInlineManifestConfig",
            "KernelModuleConfig",
            "KernelModuleConfig",
            "KernelModuleConfig",
            "KernelModuleConfig",
            "SysctlConfig",
            "HostnameConfig",
            "LinkAliasConfig",
            "LinkConfig",
        ]
    );
    let docs = docs_of(&yaml);
    assert_eq!(
        docs[8]["provisioning"]["diskSelector"]["match"],
        "disk.dev_path == \"/dev/nvme0n1\""
    );
    let worker = machineconfig::node_config(
        &input("v1.14.0"),
        secrets(),
        Role::Worker,
        &NodePatch::default(),
    )
    .expect("gen");
    assert_eq!(
        kinds(&worker),
        [
            "v1alpha1",
            "KubeClusterConfig",
            "KubeNetworkConfig",
            "DiscoveryIdentityConfig",
            "KubeAPIServerCAConfig",
            "UnattendedInstall",
            "HostnameConfig"
        ]
    );
    assert!(
        !worker.contains("PRIVATE KEY"),
        "worker config must not carry private CA keys"
    );
}

/// The validator is not vacuous: old-style fields are rejected by newer schemas.
#[test]
fn schemas_reject_the_wrong_contract() {
    let p = &patches()[1].1;
    let old = machineconfig::node_config(&input("v1.10.7"), secrets(), Role::Controlplane, p)
        .expect("gen");
    for schema in ["v1.12", "main"] {
        let doc = &docs_of(&old)[0];
        let invalid = with_validator(schema, |v| !v.is_valid(doc));
        assert!(
            invalid,
            "a 1.10-style document must not validate against {schema}"
        );
    }
}

#[test]
fn talosconfig_has_endpoints_and_base64_pem() {
    use base64::Engine;
    let t = machineconfig::talosconfig(
        &input("v1.12.1"),
        secrets(),
        time::OffsetDateTime::now_utc(),
    )
    .expect("talosconfig");
    let v: serde_json::Value = serde_yaml::from_str(&t).expect("yaml");
    assert_eq!(v["context"], "gpu-lab");
    let ctx = &v["contexts"]["gpu-lab"];
    assert_eq!(ctx["endpoints"][0], "198.18.0.10");
    for k in ["ca", "crt", "key"] {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(ctx[k].as_str().expect("str"))
            .expect("b64");
        assert!(pem.starts_with(b"-----BEGIN "), "{k}");
    }
}

#[test]
fn bad_inputs_are_refused_with_the_field_named() {
    let s = secrets();
    let mut i = input("v1.12.1");
    i.endpoint = "198.18.0.10:6443".into();
    let err = machineconfig::node_config(&i, s, Role::Controlplane, &NodePatch::default())
        .expect_err("endpoint");
    assert!(err.to_string().contains("endpoint"), "{err}");
    let mut i = input("v1.12.1");
    i.cluster_name = "Bad Name".into();
    assert!(machineconfig::node_config(&i, s, Role::Worker, &NodePatch::default()).is_err());
    let patch = NodePatch {
        hostname: Some("under_score".into()),
        ..Default::default()
    };
    let err = machineconfig::node_config(&input("v1.12.1"), s, Role::Worker, &patch)
        .expect_err("hostname");
    assert!(err.to_string().contains("hostname"), "{err}");
    let patch = NodePatch {
        static_ip: Some(StaticIp {
            mac: "zz:54:00:12:34:56".into(),
            address: "198.18.0.11/24".parse().expect("cidr"),
            gateway: None,
            nameservers: vec![],
        }),
        ..Default::default()
    };
    assert!(machineconfig::node_config(&input("v1.12.1"), s, Role::Worker, &patch).is_err());
}

/// What a cluster node needs beyond one VM: the VIP in each version's own form, the node labels,
/// and the GPU manifests on control planes only.
#[test]
fn vip_labels_and_inline_manifests_take_each_versions_form() {
    let vip_patch = patches()
        .into_iter()
        .find(|(n, _)| *n == "static-ip+vip")
        .expect("patch")
        .1;
    for (version, _) in VERSIONS {
        let input = input(version);
        let cp = machineconfig::node_config(&input, secrets(), Role::Controlplane, &vip_patch)
            .expect("cp");
        let docs = docs_of(&cp);
        let v1 = &docs[0];
        let old = version < "v1.12";
        if old {
            assert_eq!(
                v1["machine"]["network"]["interfaces"][0]["vip"]["ip"], "198.18.0.10",
                "{version}"
            );
            assert!(!kinds(&cp).contains(&"Layer2VIPConfig".to_string()));
        } else {
            let l2 = docs
                .iter()
                .find(|d| d["kind"] == "Layer2VIPConfig")
                .unwrap_or_else(|| panic!("{version}: no Layer2VIPConfig"));
            assert_eq!(l2["name"], "198.18.0.10");
            assert_eq!(l2["link"], machineconfig::LINK_ALIAS);
        }
        // Manifests: on control planes (v1alpha1 up to 1.13, their own documents after), never
        // on workers.
        let names: Vec<String> = if version < "v1.14" {
            v1["cluster"]["inlineManifests"]
                .as_array()
                .expect("inlineManifests")
                .iter()
                .map(|m| m["name"].as_str().expect("name").to_string())
                .collect()
        } else {
            docs.iter()
                .filter(|d| d["kind"] == "KubeInlineManifestConfig")
                .map(|d| d["name"].as_str().expect("name").to_string())
                .collect()
        };
        assert_eq!(
            names,
            ["nvidia-runtimeclass", "nvidia-device-plugin"],
            "{version}"
        );
        let worker = machineconfig::node_config(&input, secrets(), Role::Worker, &gpu_static())
            .expect("worker");
        assert!(!worker.contains("inlineManifests") && !worker.contains("KubeInlineManifest"));
        // The GPU label, next to nothing else on a worker.
        let wdocs = docs_of(&worker);
        let labels = if version < "v1.14" {
            wdocs[0]["machine"]["nodeLabels"].clone()
        } else {
            wdocs
                .iter()
                .find(|d| d["kind"] == "KubeNodeConfig")
                .expect("KubeNodeConfig")["labels"]
                .clone()
        };
        assert_eq!(
            labels,
            serde_json::json!({"nvidia.com/gpu.present": "true"}),
            "{version}"
        );
    }
}

#[test]
fn a_vip_without_a_static_address_or_a_bad_label_is_refused() {
    let s = secrets();
    let patch = NodePatch {
        vip: Some("198.18.0.10".parse().expect("vip")),
        ..Default::default()
    };
    let err =
        machineconfig::node_config(&input("v1.13.9"), s, Role::Controlplane, &patch).unwrap_err();
    assert!(err.to_string().contains("VIP"), "{err}");
    let patch = NodePatch {
        labels: [("bad key!".to_string(), "x".to_string())].into(),
        ..Default::default()
    };
    let err = machineconfig::node_config(&input("v1.13.9"), s, Role::Worker, &patch).unwrap_err();
    assert!(err.to_string().contains("node label"), "{err}");
    let mut i = input("v1.13.9");
    i.inline_manifests.push(i.inline_manifests[0].clone());
    let err =
        machineconfig::node_config(&i, s, Role::Controlplane, &NodePatch::default()).unwrap_err();
    assert!(err.to_string().contains("inline manifest"), "{err}");
}
