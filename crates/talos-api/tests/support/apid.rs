//! A test apid: a gRPC server speaking the few `machine.MachineService` calls the client uses,
//! behind mutual TLS that admits only client certificates of the cluster CA, plus the
//! certificates for it (rcgen). Shared by the integration tests and `examples/test-apid.rs`.
#![allow(dead_code)] // each includer uses part of it

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SignatureAlgorithm,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use talos_api::proto::{self, path};
use tonic::Status;
use tonic::server::Grpc;
use tonic_prost::ProstCodec;

/// PEM files of one cluster: its CA, apid's certificate for some IPs, an admin client cert.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_pem: String,
    pub server_crt_pem: String,
    pub server_key_pem: String,
    pub client_crt_pem: String,
    pub client_key_pem: String,
}

fn key_pem(key: &KeyPair, alg: &'static SignatureAlgorithm) -> String {
    let pem = key.serialize_pem();
    // Talos writes its Ed25519 keys (PKCS#8) under its own label; the client must read that.
    if alg == &rcgen::PKCS_ED25519 {
        pem.replace("PRIVATE KEY", "ED25519 PRIVATE KEY")
    } else {
        pem
    }
}

impl Pki {
    /// A CA and certificates with keys of `alg`; apid's certificate names `server_ips`.
    pub fn generate(alg: &'static SignatureAlgorithm, server_ips: &[IpAddr]) -> Pki {
        let ca_key = KeyPair::generate_for(alg).expect("CA key");
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::OrganizationName, "talos");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate_for(alg).expect("server key");
        let mut server = CertificateParams::default();
        server.subject_alt_names = server_ips
            .iter()
            .map(|ip| SanType::IpAddress(*ip))
            .collect();
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &issuer).expect("server cert");

        let client_key = KeyPair::generate_for(alg).expect("client key");
        let mut client = CertificateParams::default();
        client
            .distinguished_name
            .push(DnType::OrganizationName, "os:admin");
        client.distinguished_name.push(DnType::CommonName, "admin");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &issuer).expect("client cert");

        Pki {
            ca_pem: ca_cert.pem(),
            server_crt_pem: server_cert.pem(),
            server_key_pem: key_pem(&server_key, alg),
            client_crt_pem: client_cert.pem(),
            client_key_pem: key_pem(&client_key, alg),
        }
    }

    pub fn credentials(&self) -> talos_api::Credentials {
        talos_api::Credentials::from_pem(&self.ca_pem, &self.client_crt_pem, &self.client_key_pem)
            .expect("client credentials")
    }

    /// Write the PEM files to `dir` (for the example binaries).
    pub fn write(&self, dir: &std::path::Path) {
        for (name, text) in self.files() {
            std::fs::write(dir.join(name), text).expect("write PEM");
        }
    }

    pub fn read(dir: &std::path::Path) -> std::io::Result<Pki> {
        let r = |n: &str| std::fs::read_to_string(dir.join(n));
        Ok(Pki {
            ca_pem: r("ca.pem")?,
            server_crt_pem: r("server.pem")?,
            server_key_pem: r("server-key.pem")?,
            client_crt_pem: r("client.pem")?,
            client_key_pem: r("client-key.pem")?,
        })
    }

    fn files(&self) -> [(&'static str, &String); 5] {
        [
            ("ca.pem", &self.ca_pem),
            ("server.pem", &self.server_crt_pem),
            ("server-key.pem", &self.server_key_pem),
            ("client.pem", &self.client_crt_pem),
            ("client-key.pem", &self.client_key_pem),
        ]
    }

    /// apid's TLS: its certificate, and only clients whose certificate chains to our CA.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(&self.ca_pem) {
            roots.add(c).expect("CA into the root store");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        let der = pem::parse(self.server_key_pem.as_bytes()).expect("server key PEM");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.into_contents()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&self.server_crt_pem), key)
            .expect("server certificate and key");
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }
}

fn certs(text: &str) -> Vec<CertificateDer<'static>> {
    pem::parse_many(text)
        .expect("PEM")
        .into_iter()
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect()
}

/// What the test apid answers, and what the calls changed.
#[derive(Debug, Clone)]
pub struct State {
    pub hostname: String,
    pub bootstrapped: bool,
    pub bootstrap_calls: u32,
    pub members: Vec<proto::EtcdMember>,
    /// The file served inside the Kubeconfig archive.
    pub kubeconfig: Vec<u8>,
    /// Bytes per `common.Data` chunk of the Kubeconfig stream.
    pub chunk: usize,
}

pub fn member(id: u64, hostname: &str, ip: &str) -> proto::EtcdMember {
    proto::EtcdMember {
        id,
        hostname: hostname.into(),
        peer_urls: vec![format!("https://{ip}:2380")],
        client_urls: vec![format!("https://{ip}:2379")],
        is_learner: false,
    }
}

impl Default for State {
    fn default() -> State {
        State {
            hostname: "cp-1".into(),
            bootstrapped: false,
            bootstrap_calls: 0,
            members: vec![
                member(0x1111, "cp-1", "198.18.0.10"),
                member(0x2222, "cp-2", "198.18.0.11"),
                member(0x3333, "cp-3", "198.18.0.12"),
            ],
            kubeconfig: b"apiVersion: v1\nkind: Config\nclusters: []\n".repeat(40),
            chunk: 100,
        }
    }
}

/// The archive apid streams: a tar.gz holding `kubeconfig`.
pub fn kubeconfig_archive(kubeconfig: &[u8]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_size(kubeconfig.len() as u64);
    header.set_mode(0o600);
    header.set_cksum();
    tar.append_data(&mut header, "kubeconfig", kubeconfig)
        .expect("tar entry");
    tar.into_inner().expect("tar").finish().expect("gzip")
}

fn ok_metadata(state: &State) -> Option<proto::Metadata> {
    Some(proto::Metadata {
        hostname: state.hostname.clone(),
        error: String::new(),
    })
}

/// The gRPC service: dispatch on the method path, each handler a closure over the state.
#[derive(Clone)]
pub struct Apid {
    pub state: Arc<Mutex<State>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<B> tower::Service<http::Request<B>> for Apid
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move { Ok(route(state, req).await) })
    }
}

async fn route<B>(
    state: Arc<Mutex<State>>,
    req: http::Request<B>,
) -> http::Response<tonic::body::Body>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let lock = |s: &Arc<Mutex<State>>| s.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let st = state.clone();
    match req.uri().path() {
        path::BOOTSTRAP => {
            let handler = tower::service_fn(move |_: tonic::Request<proto::BootstrapRequest>| {
                let st = st.clone();
                async move {
                    let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
                    s.bootstrap_calls += 1;
                    if s.bootstrapped {
                        // What Talos answers on a node whose etcd has data.
                        return Err(Status::already_exists("etcd data directory is not empty"));
                    }
                    s.bootstrapped = true;
                    Ok(tonic::Response::new(proto::BootstrapResponse {
                        messages: vec![proto::Bootstrap {
                            metadata: ok_metadata(&s),
                        }],
                    }))
                }
            });
            Grpc::new(ProstCodec::default()).unary(handler, req).await
        }
        path::ETCD_MEMBER_LIST => {
            let handler =
                tower::service_fn(move |_: tonic::Request<proto::EtcdMemberListRequest>| {
                    let s = lock(&st);
                    async move {
                        Ok::<_, Status>(tonic::Response::new(proto::EtcdMemberListResponse {
                            messages: vec![proto::EtcdMembers {
                                metadata: ok_metadata(&s),
                                members: s.members.clone(),
                            }],
                        }))
                    }
                });
            Grpc::new(ProstCodec::default()).unary(handler, req).await
        }
        path::ETCD_LEAVE_CLUSTER => {
            let handler =
                tower::service_fn(move |_: tonic::Request<proto::EtcdLeaveClusterRequest>| {
                    let st = st.clone();
                    async move {
                        let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
                        let me = s.hostname.clone();
                        s.members.retain(|m| m.hostname != me);
                        Ok::<_, Status>(tonic::Response::new(proto::EtcdLeaveClusterResponse {
                            messages: vec![proto::EtcdLeaveCluster {
                                metadata: ok_metadata(&s),
                            }],
                        }))
                    }
                });
            Grpc::new(ProstCodec::default()).unary(handler, req).await
        }
        path::ETCD_REMOVE_MEMBER_BY_ID => {
            let handler = tower::service_fn(
                move |r: tonic::Request<proto::EtcdRemoveMemberByIdRequest>| {
                    let st = st.clone();
                    async move {
                        let id = r.into_inner().member_id;
                        let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
                        let before = s.members.len();
                        s.members.retain(|m| m.id != id);
                        let mut metadata = ok_metadata(&s);
                        if s.members.len() == before
                            && let Some(m) = metadata.as_mut()
                        {
                            // apid's proxy reports a node's failure in the message metadata.
                            m.error = format!("etcd member {id:x} not found");
                        }
                        Ok::<_, Status>(tonic::Response::new(proto::EtcdRemoveMemberByIdResponse {
                            messages: vec![proto::EtcdRemoveMemberById { metadata }],
                        }))
                    }
                },
            );
            Grpc::new(ProstCodec::default()).unary(handler, req).await
        }
        path::KUBECONFIG => {
            let handler = tower::service_fn(move |_: tonic::Request<()>| {
                let s = lock(&st);
                async move {
                    let archive = kubeconfig_archive(&s.kubeconfig);
                    let chunks: Vec<Result<proto::Data, Status>> = archive
                        .chunks(s.chunk.max(1))
                        .map(|c| {
                            Ok(proto::Data {
                                metadata: ok_metadata(&s),
                                bytes: c.to_vec(),
                            })
                        })
                        .collect();
                    Ok::<_, Status>(tonic::Response::new(tokio_stream::iter(chunks)))
                }
            });
            Grpc::new(ProstCodec::default())
                .server_streaming(handler, req)
                .await
        }
        _ => Status::unimplemented("not served by the test apid").into_http(),
    }
}

/// Serve apid on `listener` until the future `stop` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<Mutex<State>>,
    stop: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let apid = Apid { state };
    tokio::pin!(stop);
    loop {
        let tcp = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
        };
        let acceptor = acceptor.clone();
        let apid = apid.clone();
        tokio::spawn(async move {
            // A refused client certificate ends here; rustls has sent the alert.
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(apid))
                .await;
        });
    }
}

/// A test apid on its own thread and runtime, stopped on drop.
pub struct Running {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Listen on `addr` (port 0: any) now and serve.
    pub fn start(addr: SocketAddr, tls: Arc<rustls::ServerConfig>, state: State) -> Running {
        let listener = std::net::TcpListener::bind(addr).expect("bind test apid");
        Running::start_on(listener, tls, state)
    }

    pub fn start_on(
        listener: std::net::TcpListener,
        tls: Arc<rustls::ServerConfig>,
        state: State,
    ) -> Running {
        let addr = listener.local_addr().expect("local address");
        Running::start_later(addr, async move { listener }, tls, state)
    }

    /// Serve on the listener `bind` yields, whenever it does (a node still booting).
    pub fn start_later(
        addr: SocketAddr,
        bind: impl Future<Output = std::net::TcpListener> + Send + 'static,
        tls: Arc<rustls::ServerConfig>,
        state: State,
    ) -> Running {
        let state = Arc::new(Mutex::new(state));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                let stop = async move {
                    let _ = rx.await;
                };
                tokio::pin!(stop);
                let listener = tokio::select! {
                    _ = &mut stop => return,
                    l = bind => l,
                };
                listener
                    .set_nonblocking(true)
                    .expect("nonblocking listener");
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                serve(listener, tls, st, stop).await;
            });
        });
        Running {
            addr,
            state,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn state(&self) -> State {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
