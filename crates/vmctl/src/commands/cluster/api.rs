//! What vmctl asks a running cluster: the Talos API of its nodes (bootstrap, kubeconfig, etcd
//! membership; the `talos-api` crate, mutual TLS with the cluster's talosconfig) and the
//! Kubernetes API (`/readyz`, `/api/v1/nodes`, with the admin certificate of the kubeconfig).
//! The calls sit behind [`TalosApi`] so that the steps built on them are tested without nodes.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use serde::Deserialize;
use talos_api::{Client, Credentials, EtcdMember};

use super::ClusterError;
use crate::ctx::Ctx;
use crate::error::Result;
use crate::talos::{ClusterDir, TalosError};

/// How long one Talos API call may take to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a stage that waits asks again.
pub const POLL: Duration = Duration::from_secs(2);

/// The Talos API calls the cluster commands make, one node each.
pub trait TalosApi {
    fn bootstrap(&self, node: Ipv4Addr) -> std::result::Result<(), talos_api::Error>;
    /// The admin kubeconfig (the file, extracted from the stream).
    fn kubeconfig(&self, node: Ipv4Addr) -> std::result::Result<Vec<u8>, talos_api::Error>;
    fn etcd_members(
        &self,
        node: Ipv4Addr,
    ) -> std::result::Result<Vec<EtcdMember>, talos_api::Error>;
    fn etcd_leave(&self, node: Ipv4Addr) -> std::result::Result<(), talos_api::Error>;
    fn etcd_remove(&self, node: Ipv4Addr, id: u64) -> std::result::Result<(), talos_api::Error>;
}

/// The real thing: apid on each node's port 50000, with the cluster's client certificate.
#[derive(Debug)]
pub struct NativeApi {
    creds: Credentials,
}

impl NativeApi {
    /// With the client certificate of the cluster's `talosconfig`.
    pub fn for_cluster(dir: &ClusterDir) -> Result<Self> {
        let text =
            std::fs::read_to_string(dir.talosconfig()).map_err(|source| TalosError::ReadFile {
                path: dir.talosconfig(),
                source,
            })?;
        let (creds, _) =
            Credentials::from_talosconfig(&text).map_err(|source| ClusterError::Api {
                node: dir.name.clone(),
                ip: "-".into(),
                what: format!("reading {}", dir.talosconfig().display()),
                source,
            })?;
        Ok(NativeApi { creds })
    }

    fn client(&self, node: Ipv4Addr) -> std::result::Result<Client, talos_api::Error> {
        Client::connect(
            IpAddr::V4(node),
            talos_api::APID_PORT,
            &self.creds,
            CONNECT_TIMEOUT,
        )
    }
}

impl TalosApi for NativeApi {
    fn bootstrap(&self, node: Ipv4Addr) -> std::result::Result<(), talos_api::Error> {
        self.client(node)?.bootstrap().map(|_| ())
    }
    fn kubeconfig(&self, node: Ipv4Addr) -> std::result::Result<Vec<u8>, talos_api::Error> {
        self.client(node)?.kubeconfig()
    }
    fn etcd_members(
        &self,
        node: Ipv4Addr,
    ) -> std::result::Result<Vec<EtcdMember>, talos_api::Error> {
        self.client(node)?.etcd_member_list()
    }
    fn etcd_leave(&self, node: Ipv4Addr) -> std::result::Result<(), talos_api::Error> {
        self.client(node)?.etcd_leave_cluster()
    }
    fn etcd_remove(&self, node: Ipv4Addr, id: u64) -> std::result::Result<(), talos_api::Error> {
        self.client(node)?.etcd_remove_member_by_id(id)
    }
}

/// A progress line per stage, and the latest status while one waits.
pub trait Report {
    fn stage(&self, line: &str);
    fn status(&self, line: &str) {
        let _ = line;
    }
}

/// Reports nothing (`--json`, tests).
#[derive(Debug)]
pub struct Quiet;

impl Report for Quiet {
    fn stage(&self, _: &str) {}
}

/// Calls `f` until it succeeds, it fails with an error that is not "not up yet", the deadline
/// passes ([`ClusterError::Timeout`] naming the stage and the last error) or Ctrl-C.
pub fn retry<T>(
    ctx: &Ctx,
    stage: &str,
    deadline: Instant,
    started: Instant,
    report: &dyn Report,
    mut f: impl FnMut() -> std::result::Result<T, Waiting>,
) -> Result<T> {
    loop {
        ctx.check_cancelled(
            || stage.to_string(),
            || {
                "the cluster is kept; `vmctl cluster bootstrap NAME --wait` goes on from here"
                    .into()
            },
        )?;
        match f() {
            Ok(v) => return Ok(v),
            Err(Waiting::Fatal(e)) => return Err(e),
            Err(Waiting::NotYet(why)) => {
                if Instant::now() >= deadline {
                    return Err(ClusterError::Timeout {
                        stage: stage.into(),
                        secs: deadline.saturating_duration_since(started).as_secs(),
                        last: why,
                    }
                    .into());
                }
                report.status(&format!("{stage}: {why}"));
                std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
            }
        }
    }
}

/// Why a stage is not done: not yet (ask again), or never (stop).
#[derive(Debug)]
pub enum Waiting {
    NotYet(String),
    Fatal(crate::Error),
}

/// A Talos API error: one that means "not up yet" is waited on, any other ends the stage.
pub fn api_waiting(node: &str, ip: Ipv4Addr, what: &str, e: talos_api::Error) -> Waiting {
    if e.is_retryable() {
        Waiting::NotYet(e.to_string())
    } else {
        Waiting::Fatal(
            ClusterError::Api {
                node: node.into(),
                ip: ip.to_string(),
                what: what.into(),
                source: e,
            }
            .into(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The Kubernetes API

/// The parts of a kubeconfig vmctl uses: the server and the admin credentials.
#[derive(Debug, Clone)]
pub struct KubeAccess {
    pub server: String,
    ca_pem: Vec<u8>,
    identity_pem: Vec<u8>,
}

#[derive(Deserialize)]
struct KubeConfigFile {
    clusters: Vec<NamedCluster>,
    users: Vec<NamedUser>,
}

#[derive(Deserialize)]
struct NamedCluster {
    cluster: KubeCluster,
}

#[derive(Deserialize)]
struct NamedUser {
    user: KubeUser,
}

#[derive(Deserialize)]
struct KubeCluster {
    server: String,
    #[serde(rename = "certificate-authority-data")]
    ca: String,
}

#[derive(Deserialize)]
struct KubeUser {
    #[serde(rename = "client-certificate-data")]
    crt: String,
    #[serde(rename = "client-key-data")]
    key: String,
}

impl KubeAccess {
    /// From the kubeconfig Talos serves: its first cluster and user, certificates inline.
    pub fn from_kubeconfig(text: &str) -> std::result::Result<Self, String> {
        use base64::Engine;
        let f: KubeConfigFile =
            serde_yaml::from_str(text).map_err(|e| format!("not a kubeconfig: {e}"))?;
        let (Some(c), Some(u)) = (f.clusters.first(), f.users.first()) else {
            return Err("the kubeconfig has no cluster or no user".into());
        };
        let b64 = |what: &str, s: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|_| format!("the kubeconfig's {what} is not base64"))
        };
        let mut identity_pem = b64("client-certificate-data", &u.user.crt)?;
        identity_pem.push(b'\n');
        identity_pem.extend(b64("client-key-data", &u.user.key)?);
        Ok(KubeAccess {
            server: c.cluster.server.trim_end_matches('/').to_string(),
            ca_pem: b64("certificate-authority-data", &c.cluster.ca)?,
            identity_pem,
        })
    }

    fn client(&self) -> std::result::Result<reqwest::blocking::Client, String> {
        let ca = reqwest::Certificate::from_pem(&self.ca_pem)
            .map_err(|e| format!("the kubeconfig's CA: {e}"))?;
        let id = reqwest::Identity::from_pem(&self.identity_pem)
            .map_err(|e| format!("the kubeconfig's client certificate: {e}"))?;
        reqwest::blocking::Client::builder()
            .tls_certs_only([ca])
            .identity(id)
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())
    }

    fn get(&self, path: &str) -> std::result::Result<String, String> {
        let resp = self
            .client()?
            .get(format!("{}{path}", self.server))
            .send()
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp.text().map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!(
                "{path} answered {status}: {}",
                body.chars().take(200).collect::<String>()
            ));
        }
        Ok(body)
    }

    /// `/readyz` answers `ok`.
    pub fn ready(&self) -> std::result::Result<(), String> {
        self.get("/readyz").map(|_| ())
    }

    /// Every node's name and whether its `Ready` condition is `True`.
    pub fn nodes(&self) -> std::result::Result<Vec<(String, bool)>, String> {
        nodes_ready(&self.get("/api/v1/nodes")?)
    }
}

/// Each node of a `NodeList` and whether it is Ready.
pub fn nodes_ready(json: &str) -> std::result::Result<Vec<(String, bool)>, String> {
    #[derive(Deserialize)]
    struct List {
        items: Vec<Node>,
    }
    #[derive(Deserialize)]
    struct Node {
        metadata: Meta,
        #[serde(default)]
        status: Status,
    }
    #[derive(Deserialize)]
    struct Meta {
        name: String,
    }
    #[derive(Deserialize, Default)]
    struct Status {
        #[serde(default)]
        conditions: Vec<Condition>,
    }
    #[derive(Deserialize)]
    struct Condition {
        #[serde(rename = "type")]
        kind: String,
        status: String,
    }
    let list: List =
        serde_json::from_str(json).map_err(|e| format!("not a Kubernetes NodeList: {e}"))?;
    Ok(list
        .items
        .into_iter()
        .map(|n| {
            let ready = n
                .status
                .conditions
                .iter()
                .any(|c| c.kind == "Ready" && c.status == "True");
            (n.metadata.name, ready)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_readiness_is_read_from_the_ready_condition() {
        let json = r#"{"kind":"NodeList","items":[
            {"metadata":{"name":"c-cp-1"},"status":{"conditions":[
                {"type":"MemoryPressure","status":"False"},{"type":"Ready","status":"True"}]}},
            {"metadata":{"name":"c-gpu-1"},"status":{"conditions":[{"type":"Ready","status":"False"}]}},
            {"metadata":{"name":"c-w-1"}}]}"#;
        assert_eq!(
            nodes_ready(json).unwrap(),
            [
                ("c-cp-1".to_string(), true),
                ("c-gpu-1".to_string(), false),
                ("c-w-1".to_string(), false)
            ]
        );
        assert!(nodes_ready("{}").is_err());
    }

    #[test]
    fn kubeconfig_gives_the_server_and_inline_credentials() {
        use base64::Engine;
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://198.18.0.10:6443/\n    certificate-authority-data: {}\nusers:\n- name: admin@c\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts: []\n",
            b("CA"),
            b("CRT"),
            b("KEY")
        );
        let k = KubeAccess::from_kubeconfig(&text).unwrap();
        assert_eq!(k.server, "https://198.18.0.10:6443");
        assert_eq!(k.ca_pem, b"CA");
        assert_eq!(k.identity_pem, b"CRT\nKEY");
        assert!(KubeAccess::from_kubeconfig("clusters: []\nusers: []\n").is_err());
    }
}
