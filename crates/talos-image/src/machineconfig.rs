//! Version-aware Talos machine configs (`controlplane.yaml`, `worker.yaml`, `talosconfig`) and
//! per-node patches (hostname, static IP by MAC, install disk/image, GPU modules and sysctl).
//!
//! The document shapes follow each version's official JSON schema (strict, `additionalProperties:
//! false`), which the tests validate against (`tests/schema_validation.rs`):
//! - ≤ 1.11: one `v1alpha1` document holds everything (`machine.network.interfaces[].deviceSelector`).
//! - 1.12–1.13: hostname, links and resolvers moved out of `v1alpha1` into `HostnameConfig`,
//!   `LinkAliasConfig` + `LinkConfig` and `ResolverConfig` documents.
//! - ≥ 1.14 (main): Kubernetes, discovery identity, install, kernel modules and sysctls moved too
//!   (`KubeClusterConfig`, `KubeNetworkConfig`, `KubeAPIServerCAConfig`, …, `UnattendedInstall`,
//!   `KernelModuleConfig`, `SysctlConfig`); `v1alpha1` keeps machine identity, tokens and etcd.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};
use time::OffsetDateTime;

use crate::Error;
use crate::factory::TalosVersion;
use crate::nvidia::{GPU_KERNEL_MODULES, GPU_SYSCTL};
use crate::secrets::SecretsBundle;

pub(crate) mod blocks;
mod validate;

pub use blocks::LINK_ALIAS;
use blocks::*;
pub use validate::{endpoint_host, validate_cluster_name};
use validate::{is_dns_label, is_label_key, is_label_value, is_mac};

/// Which document layout a Talos version expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Contract {
    /// Talos ≤ 1.11: single `v1alpha1` document.
    V1_10,
    /// Talos 1.12 and 1.13: network settings in their own documents.
    V1_12,
    /// Talos ≥ 1.14: Kubernetes, install, kernel and sysctl settings in their own documents.
    V1_14,
}

impl Contract {
    pub fn for_version(v: &TalosVersion) -> Contract {
        if v.at_least(1, 14) {
            Contract::V1_14
        } else if v.at_least(1, 12) {
            Contract::V1_12
        } else {
            Contract::V1_10
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Controlplane,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Controlplane => "controlplane",
            Role::Worker => "worker",
        }
    }
}

/// Cluster-wide settings (`talosctl gen config NAME ENDPOINT`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigInput {
    pub cluster_name: String,
    /// Kubernetes API endpoint, `https://IP:6443`.
    pub endpoint: String,
    pub version: TalosVersion,
    /// Default install disk (`/dev/vda` for virtio VMs).
    pub install_disk: String,
    /// Factory installer image (`Endpoints::installer_image`); empty = Talos default installer.
    pub installer_image: String,
    pub dns_domain: String,
    pub pod_subnets: Vec<String>,
    pub service_subnets: Vec<String>,
    /// Talos API endpoints for `talosconfig` (IPs/hosts); empty = the endpoint's host.
    pub talos_endpoints: Vec<String>,
    /// Kubernetes manifests the control planes apply at bootstrap (`cluster.inlineManifests`).
    #[serde(default)]
    pub inline_manifests: Vec<InlineManifest>,
}

/// One `cluster.inlineManifests` entry (`KubeInlineManifestConfig` from 1.14 on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineManifest {
    /// Unique within the cluster.
    pub name: String,
    /// The manifest's YAML.
    pub contents: String,
}

impl ConfigInput {
    /// Talos defaults (pod 10.244.0.0/16, service 10.96.0.0/12, cluster.local, /dev/vda).
    pub fn new(cluster_name: &str, endpoint: &str, version: TalosVersion) -> Self {
        ConfigInput {
            cluster_name: cluster_name.to_string(),
            endpoint: endpoint.to_string(),
            version,
            install_disk: "/dev/vda".into(),
            installer_image: String::new(),
            dns_domain: "cluster.local".into(),
            pod_subnets: vec!["10.244.0.0/16".into()],
            service_subnets: vec!["10.96.0.0/12".into()],
            talos_endpoints: Vec::new(),
            inline_manifests: Vec::new(),
        }
    }

    /// Check names and the endpoint before anything is generated.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field, reason: String| Err(Error::InvalidConfigInput { field, reason });
        validate_cluster_name(&self.cluster_name)?;
        endpoint_host(&self.endpoint)?;
        if !self.install_disk.starts_with("/dev/") {
            return bad(
                "install disk",
                format!("{:?} is not a /dev path", self.install_disk),
            );
        }
        for s in self.pod_subnets.iter().chain(&self.service_subnets) {
            if s.parse::<ipnet::IpNet>().is_err() {
                return bad("subnet", format!("{s:?} is not a CIDR"));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for m in &self.inline_manifests {
            if m.name.is_empty() || !names.insert(m.name.as_str()) {
                return bad(
                    "inline manifest",
                    format!("name {:?} is empty or given twice", m.name),
                );
            }
        }
        Ok(())
    }
}

/// A static IPv4 address on the NIC with this MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticIp {
    /// `52:54:00:12:34:56`.
    pub mac: String,
    pub address: ipnet::Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub nameservers: Vec<IpAddr>,
}

/// Per-node settings layered over the role's base config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePatch {
    pub hostname: Option<String>,
    pub static_ip: Option<StaticIp>,
    /// Load the NVIDIA modules and set `net.core.bpf_jit_harden=1`.
    pub gpu: bool,
    /// Overrides [`ConfigInput::install_disk`].
    pub install_disk: Option<String>,
    /// Overrides [`ConfigInput::installer_image`].
    pub installer_image: Option<String>,
    /// Kubernetes node labels (`machine.nodeLabels`; `KubeNodeConfig` from 1.14 on).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A shared layer-2 address the control planes hold in turn (the API endpoint of a cluster
    /// with more than one): `interfaces[].vip` up to 1.11, a `Layer2VIPConfig` from 1.12 on.
    /// Needs `static_ip` (the VIP goes on that link).
    #[serde(default)]
    pub vip: Option<Ipv4Addr>,
}

impl NodePatch {
    fn validate(&self) -> Result<(), Error> {
        if let Some(h) = &self.hostname
            && !(h.len() <= 253 && !h.is_empty() && h.split('.').all(is_dns_label))
        {
            return Err(Error::InvalidConfigInput {
                field: "hostname",
                reason: format!("{h:?} is not a valid hostname"),
            });
        }
        if let Some(ip) = &self.static_ip
            && !is_mac(&ip.mac)
        {
            return Err(Error::InvalidConfigInput {
                field: "MAC address",
                reason: format!("{:?} is not of the form 52:54:00:12:34:56", ip.mac),
            });
        }
        if let Some(d) = &self.install_disk
            && !d.starts_with("/dev/")
        {
            return Err(Error::InvalidConfigInput {
                field: "install disk",
                reason: format!("{d:?} is not a /dev path"),
            });
        }
        for (k, v) in &self.labels {
            if !is_label_key(k) || !is_label_value(v) {
                return Err(Error::InvalidConfigInput {
                    field: "node label",
                    reason: format!(
                        "{k:?}={v:?} is not a Kubernetes label ([PREFIX/]NAME=VALUE, NAME and \
                         VALUE at most 63 letters, digits, '-', '_' or '.')"
                    ),
                });
            }
        }
        if self.vip.is_some() && self.static_ip.is_none() {
            return Err(Error::InvalidConfigInput {
                field: "VIP",
                reason: "a VIP needs the node's static address (it is held on that link)".into(),
            });
        }
        Ok(())
    }
}

/// The three files `talosctl gen config` writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GeneratedConfigs {
    pub contract: Contract,
    pub controlplane: String,
    pub worker: String,
    pub talosconfig: String,
}

/// `controlplane.yaml`, `worker.yaml` (no per-node patch) and `talosconfig`.
/// Write them with mode 0600: they hold private keys.
pub fn generate(input: &ConfigInput, secrets: &SecretsBundle) -> Result<GeneratedConfigs, Error> {
    Ok(GeneratedConfigs {
        contract: Contract::for_version(&input.version),
        controlplane: node_config(input, secrets, Role::Controlplane, &NodePatch::default())?,
        worker: node_config(input, secrets, Role::Worker, &NodePatch::default())?,
        talosconfig: talosconfig(input, secrets, OffsetDateTime::now_utc())?,
    })
}

/// One node's machine config (multi-document YAML), e.g. the NoCloud `user-data`.
pub fn node_config(
    input: &ConfigInput,
    secrets: &SecretsBundle,
    role: Role,
    patch: &NodePatch,
) -> Result<String, Error> {
    let docs = documents(input, secrets, role, patch)?;
    let mut out = String::new();
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(
            &serde_yaml::to_string(doc).map_err(|source| Error::Serialize {
                what: "machine config",
                source,
            })?,
        );
    }
    Ok(out)
}

/// The documents of one node's config, `v1alpha1` first.
pub fn documents(
    input: &ConfigInput,
    secrets: &SecretsBundle,
    role: Role,
    patch: &NodePatch,
) -> Result<Vec<Value>, Error> {
    input.validate()?;
    patch.validate()?;
    let contract = Contract::for_version(&input.version);
    let cp = role == Role::Controlplane;
    let c = &secrets.certs;
    let disk = patch.install_disk.as_deref().unwrap_or(&input.install_disk);
    let image = patch
        .installer_image
        .as_deref()
        .unwrap_or(&input.installer_image);

    // machine:
    let mut machine = Mapping::new();
    put(&mut machine, "type", role.as_str());
    put(&mut machine, "token", secrets.trustdinfo.token.as_str());
    put(
        &mut machine,
        "ca",
        crt_key(&c.os.crt, cp.then_some(c.os.key.as_str())),
    );
    put(&mut machine, "certSANs", Value::Sequence(Vec::new()));
    if contract < Contract::V1_14 {
        let mut network = Mapping::new();
        if contract == Contract::V1_10 {
            if let Some(h) = &patch.hostname {
                put(&mut network, "hostname", h.as_str());
            }
            if let Some(ip) = &patch.static_ip {
                let mut dev = Mapping::new();
                put(
                    &mut dev,
                    "deviceSelector",
                    map([("hardwareAddr", ip.mac.to_ascii_lowercase().into())]),
                );
                put(&mut dev, "addresses", seq([ip.address.to_string()]));
                if let Some(gw) = ip.gateway {
                    put(
                        &mut dev,
                        "routes",
                        Value::Sequence(vec![map([
                            ("network", "0.0.0.0/0".into()),
                            ("gateway", gw.to_string().into()),
                        ])]),
                    );
                }
                put(&mut dev, "dhcp", false);
                if let Some(vip) = patch.vip {
                    put(&mut dev, "vip", map([("ip", vip.to_string().into())]));
                }
                put(
                    &mut network,
                    "interfaces",
                    Value::Sequence(vec![Value::Mapping(dev)]),
                );
                if !ip.nameservers.is_empty() {
                    put(
                        &mut network,
                        "nameservers",
                        seq(ip.nameservers.iter().map(|n| n.to_string())),
                    );
                }
            }
        }
        if !network.is_empty() {
            put(&mut machine, "network", network);
        }
        let mut install = Mapping::new();
        put(&mut install, "disk", disk);
        if !image.is_empty() {
            put(&mut install, "image", image);
        }
        put(&mut install, "wipe", false);
        put(&mut machine, "install", install);
        if patch.gpu {
            put(
                &mut machine,
                "kernel",
                map([(
                    "modules",
                    Value::Sequence(
                        GPU_KERNEL_MODULES
                            .iter()
                            .map(|m| map([("name", (*m).into())]))
                            .collect(),
                    ),
                )]),
            );
            put(
                &mut machine,
                "sysctls",
                map([(GPU_SYSCTL.0, GPU_SYSCTL.1.into())]),
            );
        }
    }
    put(&mut machine, "features", features(contract));
    let labels = node_labels(cp, patch);
    if !labels.is_empty() && contract < Contract::V1_14 {
        put(&mut machine, "nodeLabels", Value::Mapping(labels.clone()));
    }

    // cluster:
    let mut cluster = Mapping::new();
    if contract < Contract::V1_14 {
        put(&mut cluster, "id", secrets.cluster.id.as_str());
        put(&mut cluster, "secret", secrets.cluster.secret.as_str());
        put(
            &mut cluster,
            "controlPlane",
            map([("endpoint", input.endpoint.as_str().into())]),
        );
        put(&mut cluster, "clusterName", input.cluster_name.as_str());
        put(
            &mut cluster,
            "network",
            map([
                ("dnsDomain", input.dns_domain.as_str().into()),
                ("podSubnets", seq(input.pod_subnets.iter().cloned())),
                ("serviceSubnets", seq(input.service_subnets.iter().cloned())),
            ]),
        );
    }
    put(
        &mut cluster,
        "token",
        secrets.secrets.bootstraptoken.as_str(),
    );
    if contract < Contract::V1_14 {
        if cp && let Some(sb) = &secrets.secrets.secretboxencryptionsecret {
            put(&mut cluster, "secretboxEncryptionSecret", sb.as_str());
        }
        put(
            &mut cluster,
            "ca",
            crt_key(&c.k8s.crt, cp.then_some(c.k8s.key.as_str())),
        );
        if cp {
            put(
                &mut cluster,
                "aggregatorCA",
                crt_key(&c.k8saggregator.crt, Some(&c.k8saggregator.key)),
            );
            put(
                &mut cluster,
                "serviceAccount",
                map([("key", b64(&c.k8sserviceaccount.key).into())]),
            );
        }
    }
    if cp {
        put(
            &mut cluster,
            "etcd",
            map([("ca", crt_key(&c.etcd.crt, Some(&c.etcd.key)))]),
        );
    }
    if cp && contract < Contract::V1_14 && !input.inline_manifests.is_empty() {
        put(
            &mut cluster,
            "inlineManifests",
            Value::Sequence(
                input
                    .inline_manifests
                    .iter()
                    .map(|m| {
                        map([
                            ("name", m.name.as_str().into()),
                            ("contents", m.contents.as_str().into()),
                        ])
                    })
                    .collect(),
            ),
        );
    }

    let mut v1 = Mapping::new();
    put(&mut v1, "version", "v1alpha1");
    put(&mut v1, "debug", false);
    put(&mut v1, "machine", machine);
    put(&mut v1, "cluster", cluster);
    let mut docs = vec![Value::Mapping(v1)];

    if contract >= Contract::V1_14 {
        docs.push(doc(
            "KubeClusterConfig",
            [
                ("clusterName", input.cluster_name.as_str().into()),
                ("endpoint", input.endpoint.as_str().into()),
            ],
        ));
        docs.push(doc(
            "KubeNetworkConfig",
            [
                ("dnsDomain", input.dns_domain.as_str().into()),
                ("podSubnets", seq(input.pod_subnets.iter().cloned())),
                ("serviceSubnets", seq(input.service_subnets.iter().cloned())),
            ],
        ));
        docs.push(doc(
            "DiscoveryIdentityConfig",
            [
                ("clusterID", secrets.cluster.id.as_str().into()),
                ("clusterSecret", secrets.cluster.secret.as_str().into()),
            ],
        ));
        if cp {
            docs.push(doc(
                "KubeAPIServerCAConfig",
                [(
                    "issuingCA",
                    map([
                        ("cert", c.k8s.crt.as_str().into()),
                        ("key", c.k8s.key.as_str().into()),
                    ]),
                )],
            ));
            docs.push(doc(
                "KubeAggregatorCAConfig",
                [(
                    "issuingCA",
                    map([
                        ("cert", c.k8saggregator.crt.as_str().into()),
                        ("key", c.k8saggregator.key.as_str().into()),
                    ]),
                )],
            ));
            docs.push(doc(
                "KubeServiceAccountConfig",
                [(
                    "issuer",
                    map([
                        ("privateKey", c.k8sserviceaccount.key.as_str().into()),
                        ("issuerURL", input.endpoint.as_str().into()),
                    ]),
                )],
            ));
            if let Some(sb) = &secrets.secrets.secretboxencryptionsecret {
                docs.push(doc(
                    "KubeEtcdEncryptionConfig",
                    [("config", secretbox_encryption(sb))],
                ));
            }
        } else {
            docs.push(doc(
                "KubeAPIServerCAConfig",
                [("acceptedCAs", seq([c.k8s.crt.clone()]))],
            ));
        }
        let mut unattended = vec![];
        if !image.is_empty() {
            unattended.push(("installer", map([("image", image.into())])));
        }
        unattended.push((
            "provisioning",
            map([(
                "diskSelector",
                map([("match", format!("disk.dev_path == {disk:?}").into())]),
            )]),
        ));
        docs.push(doc("UnattendedInstall", unattended));
        if !labels.is_empty() {
            docs.push(doc("KubeNodeConfig", [("labels", Value::Mapping(labels))]));
        }
        if cp {
            for m in &input.inline_manifests {
                docs.push(doc(
                    "KubeInlineManifestConfig",
                    [
                        ("name", m.name.as_str().into()),
                        ("manifest", m.contents.as_str().into()),
                    ],
                ));
            }
        }
        if patch.gpu {
            for m in GPU_KERNEL_MODULES {
                docs.push(doc("KernelModuleConfig", [("name", m.into())]));
            }
            docs.push(doc(
                "SysctlConfig",
                [("params", map([(GPU_SYSCTL.0, GPU_SYSCTL.1.into())]))],
            ));
        }
    }
    if contract >= Contract::V1_12 {
        // talosctl 1.12+ always writes a HostnameConfig; `auto` and `hostname` are exclusive.
        docs.push(match &patch.hostname {
            Some(h) => doc("HostnameConfig", [("hostname", h.as_str().into())]),
            None => doc("HostnameConfig", [("auto", "stable".into())]),
        });
        if let Some(ip) = &patch.static_ip {
            docs.extend(link_documents(ip));
        }
        if let Some(vip) = patch.vip {
            docs.push(doc(
                "Layer2VIPConfig",
                [
                    ("name", vip.to_string().into()),
                    ("link", LINK_ALIAS.into()),
                ],
            ));
        }
    }
    Ok(docs)
}

/// A node's Kubernetes labels: a control plane's exclusion from external load balancers (as
/// `talosctl gen config` sets it), then the patch's own.
fn node_labels(cp: bool, patch: &NodePatch) -> Mapping {
    let mut m = Mapping::new();
    if cp {
        put(
            &mut m,
            "node.kubernetes.io/exclude-from-external-load-balancers",
            "",
        );
    }
    for (k, v) in &patch.labels {
        put(&mut m, k, v.as_str());
    }
    m
}

/// `talosconfig` with an admin client certificate signed by the OS CA.
pub fn talosconfig(
    input: &ConfigInput,
    secrets: &SecretsBundle,
    now: OffsetDateTime,
) -> Result<String, Error> {
    input.validate()?;
    let endpoints = if input.talos_endpoints.is_empty() {
        vec![endpoint_host(&input.endpoint)?.to_string()]
    } else {
        input.talos_endpoints.clone()
    };
    let client = secrets.admin_client_cert(now)?;
    let ctx = map([
        ("endpoints", seq(endpoints)),
        ("ca", b64(&secrets.certs.os.crt).into()),
        ("crt", b64(&client.crt).into()),
        ("key", b64(&client.key).into()),
    ]);
    let mut contexts = Mapping::new();
    put(&mut contexts, &input.cluster_name, ctx);
    let root = map([
        ("context", input.cluster_name.as_str().into()),
        ("contexts", Value::Mapping(contexts)),
    ]);
    serde_yaml::to_string(&root).map_err(|source| Error::Serialize {
        what: "talosconfig",
        source,
    })
}

#[cfg(test)]
mod tests;
