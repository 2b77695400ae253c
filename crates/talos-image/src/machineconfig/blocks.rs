//! Building blocks of the machine config documents: the NIC's link documents (by MAC, 1.12+),
//! secretbox encryption, feature flags per config contract, and small `serde_yaml` builders.

use serde_yaml::{Mapping, Value};

use super::{Contract, StaticIp};

/// Name given to the NIC selected by MAC in 1.12+ configs.
pub const LINK_ALIAS: &str = "net0";

pub(super) fn link_documents(ip: &StaticIp) -> Vec<Value> {
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
pub(super) fn secretbox_encryption(secret: &str) -> Value {
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
pub(super) fn features(contract: Contract) -> Value {
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

pub(super) fn b64(pem: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(pem.as_bytes())
}

pub(super) fn crt_key(crt: &str, key: Option<&str>) -> Value {
    let mut m = Mapping::new();
    put(&mut m, "crt", b64(crt));
    if let Some(k) = key {
        put(&mut m, "key", b64(k));
    }
    Value::Mapping(m)
}

pub(super) fn put(m: &mut Mapping, key: &str, value: impl Into<Value>) {
    m.insert(Value::String(key.to_string()), value.into());
}

pub(crate) fn map<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    let mut m = Mapping::new();
    for (k, v) in entries {
        put(&mut m, k, v);
    }
    Value::Mapping(m)
}

pub(super) fn seq(items: impl IntoIterator<Item = String>) -> Value {
    Value::Sequence(items.into_iter().map(Value::String).collect())
}

pub(super) fn doc<'a>(kind: &str, fields: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    let mut m = Mapping::new();
    put(&mut m, "apiVersion", "v1alpha1");
    put(&mut m, "kind", kind);
    for (k, v) in fields {
        put(&mut m, k, v);
    }
    Value::Mapping(m)
}
