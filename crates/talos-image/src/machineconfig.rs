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

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};
use time::OffsetDateTime;

use crate::Error;
use crate::factory::TalosVersion;
use crate::nvidia::{GPU_KERNEL_MODULES, GPU_SYSCTL};
use crate::secrets::SecretsBundle;

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
    if cp && contract < Contract::V1_14 {
        put(
            &mut machine,
            "nodeLabels",
            map([(
                "node.kubernetes.io/exclude-from-external-load-balancers",
                "".into(),
            )]),
        );
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
    }
    Ok(docs)
}

/// Name given to the NIC selected by MAC in 1.12+ configs.
pub const LINK_ALIAS: &str = "net0";

fn link_documents(ip: &StaticIp) -> Vec<Value> {
    let mut out = vec![doc(
        "LinkAliasConfig",
        [
            ("name", LINK_ALIAS.into()),
            (
                "selector",
                // CEL over the link resource; `mac()` formats the address as aa:bb:...
                map([(
                    "match",
                    format!(
                        "mac(link.hardware_addr) == {:?}",
                        ip.mac.to_ascii_lowercase()
                    )
                    .into(),
                )]),
            ),
        ],
    )];
    let mut link = vec![
        ("name", LINK_ALIAS.into()),
        ("up", true.into()),
        (
            "addresses",
            Value::Sequence(vec![map([("address", ip.address.to_string().into())])]),
        ),
    ];
    if let Some(gw) = ip.gateway {
        link.push((
            "routes",
            Value::Sequence(vec![map([("gateway", gw.to_string().into())])]),
        ));
    }
    out.push(doc("LinkConfig", link));
    if !ip.nameservers.is_empty() {
        out.push(doc(
            "ResolverConfig",
            [(
                "nameservers",
                Value::Sequence(
                    ip.nameservers
                        .iter()
                        .map(|n| map([("address", n.to_string().into())]))
                        .collect(),
                ),
            )],
        ));
    }
    out
}

/// The EncryptionConfiguration body Talos derives from `secretboxEncryptionSecret`.
fn secretbox_encryption(secret: &str) -> Value {
    map([(
        "resources",
        Value::Sequence(vec![map([
            ("resources", seq(["secrets".to_string()])),
            (
                "providers",
                Value::Sequence(vec![
                    map([(
                        "secretbox",
                        map([(
                            "keys",
                            Value::Sequence(vec![map([
                                ("name", "key2".into()),
                                ("secret", secret.into()),
                            ])]),
                        )]),
                    )]),
                    map([("identity", Value::Mapping(Mapping::new()))]),
                ]),
            ),
        ])]),
    )])
}

/// `machine.features` that `talosctl gen config` enables by default, limited to what each schema knows.
fn features(contract: Contract) -> Value {
    let kube_prism = || map([("enabled", true.into()), ("port", 7445.into())]);
    let host_dns = || {
        map([
            ("enabled", true.into()),
            ("forwardKubeDNSToHost", true.into()),
        ])
    };
    match contract {
        Contract::V1_10 => map([
            ("rbac", true.into()),
            ("stableHostname", true.into()),
            ("apidCheckExtKeyUsage", true.into()),
            ("diskQuotaSupport", true.into()),
            ("kubePrism", kube_prism()),
            ("hostDNS", host_dns()),
        ]),
        Contract::V1_12 => map([
            ("diskQuotaSupport", true.into()),
            ("kubePrism", kube_prism()),
            ("hostDNS", host_dns()),
        ]),
        Contract::V1_14 => map([("diskQuotaSupport", true.into())]),
    }
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

/// The host of `https://HOST:PORT[/]`; anything else is refused.
pub fn endpoint_host(endpoint: &str) -> Result<&str, Error> {
    let bad = |why: &str| Error::InvalidConfigInput {
        field: "endpoint",
        reason: format!("{endpoint:?} {why}; expected https://IP:6443"),
    };
    let rest = endpoint
        .strip_prefix("https://")
        .ok_or_else(|| bad("is not an https:// URL"))?;
    let hostport = rest.strip_suffix('/').unwrap_or(rest);
    if hostport.is_empty() || hostport.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad("is not of the form https://HOST[:PORT]"));
    }
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("has an unclosed '['"))?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return Err(bad("has a bad port"));
        }
        h
    } else {
        match hostport.split_once(':') {
            Some((h, port)) if is_port(port) => h,
            Some(_) => return Err(bad("has a bad port")),
            None => hostport,
        }
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    Ok(host)
}

fn is_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u16>().is_ok_and(|n| n > 0)
}

/// A cluster name is a DNS label (it names the kubeconfig context and the talosconfig context).
pub fn validate_cluster_name(name: &str) -> Result<(), Error> {
    if is_dns_label(name) {
        Ok(())
    } else {
        Err(Error::InvalidConfigInput {
            field: "cluster name",
            reason: format!(
                "{name:?} must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'"
            ),
        })
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn b64(pem: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(pem.as_bytes())
}

fn crt_key(crt: &str, key: Option<&str>) -> Value {
    let mut m = Mapping::new();
    put(&mut m, "crt", b64(crt));
    if let Some(k) = key {
        put(&mut m, "key", b64(k));
    }
    Value::Mapping(m)
}

fn put(m: &mut Mapping, key: &str, value: impl Into<Value>) {
    m.insert(Value::String(key.to_string()), value.into());
}

fn map<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    let mut m = Mapping::new();
    for (k, v) in entries {
        put(&mut m, k, v);
    }
    Value::Mapping(m)
}

fn seq(items: impl IntoIterator<Item = String>) -> Value {
    Value::Sequence(items.into_iter().map(Value::String).collect())
}

fn doc<'a>(kind: &str, fields: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    let mut m = Mapping::new();
    put(&mut m, "apiVersion", "v1alpha1");
    put(&mut m, "kind", kind);
    for (k, v) in fields {
        put(&mut m, k, v);
    }
    Value::Mapping(m)
}

#[cfg(test)]
mod tests;
