//! The blocking apid client: one node, one mutual-TLS HTTP/2 connection, one current-thread
//! runtime that runs each call to completion.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use http::uri::PathAndQuery;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

use crate::proto::{self, HasMetadata, path};
use crate::{Credentials, Error, MAX_ARCHIVE_BYTES, archive};

/// Outcome of [`Client::bootstrap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrapped {
    /// This call started etcd on the node.
    Done,
    /// etcd was bootstrapped before (its data directory is not empty).
    AlreadyBootstrapped,
}

/// One etcd cluster member, as a control-plane node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdMember {
    pub id: u64,
    pub hostname: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// A connection to apid on one node.
#[derive(Debug)]
pub struct Client {
    rt: tokio::runtime::Runtime,
    channel: Channel,
    node: SocketAddr,
    tls_failure: TlsSlot,
}

/// The first TLS error the connection read or wrote, shared by the connector and the client.
type TlsSlot = Arc<Mutex<Option<rustls::Error>>>;

impl Client {
    /// Connect and complete the TLS handshake with apid at `node:port`, verifying its
    /// certificate against the talosconfig CA with `node` as the server name (Talos puts the
    /// node's addresses in apid's certificate). `timeout` bounds the connect and each call.
    ///
    /// With TLS 1.3 a server that refuses the client certificate says so after the handshake,
    /// so that error shows on the first call, as [`Error::Tls`].
    pub fn connect(
        node: IpAddr,
        port: u16,
        creds: &Credentials,
        timeout: Duration,
    ) -> Result<Client, Error> {
        let addr = SocketAddr::new(node, port);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|source| Error::Runtime { source })?;
        let tls_failure = TlsSlot::default();
        let connector = tls_connector(addr, creds, tls_failure.clone());
        // The connector below does the TLS, so the endpoint is `http` to tonic (whose own TLS is
        // not compiled in); requests still carry `:scheme https` and the node as `:authority`.
        let origin: Uri = format!("https://{addr}")
            .parse()
            .map_err(|e| Error::Connect {
                node: addr,
                source: Box::new(e),
            })?;
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Error::from_connect(addr, e, None))?
            .origin(origin)
            .connect_timeout(timeout)
            .timeout(timeout);
        let channel = rt
            .block_on(endpoint.connect_with_connector(connector))
            .map_err(|e| Error::from_connect(addr, e, take(&tls_failure)))?;
        Ok(Client {
            rt,
            channel,
            node: addr,
            tls_failure,
        })
    }

    /// The address this client talks to.
    pub fn node(&self) -> SocketAddr {
        self.node
    }

    /// Bootstrap etcd on this control-plane node. Idempotent: a node whose etcd already has
    /// data answers `AlreadyExists`, which is [`Bootstrapped::AlreadyBootstrapped`].
    pub fn bootstrap(&self) -> Result<Bootstrapped, Error> {
        const RPC: &str = "Bootstrap";
        let req = proto::BootstrapRequest {
            recover_etcd: false,
            recover_skip_hash_check: false,
        };
        match self.unary::<_, proto::BootstrapResponse>(RPC, path::BOOTSTRAP, req) {
            Ok(resp) => {
                self.check_metadata(RPC, &resp.messages)?;
                Ok(Bootstrapped::Done)
            }
            // Talos v1.13.9, internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go,
            // (*Server).Bootstrap: when the etcd data directory has entries it returns
            // `status.Error(codes.AlreadyExists, "etcd data directory is not empty")`.
            Err(Error::Status {
                code: tonic::Code::AlreadyExists,
                ..
            }) => Ok(Bootstrapped::AlreadyBootstrapped),
            Err(e) => Err(e),
        }
    }

    /// The admin kubeconfig: the `kubeconfig` file of the tar.gz archive the node streams.
    pub fn kubeconfig(&self) -> Result<Vec<u8>, Error> {
        const RPC: &str = "Kubeconfig";
        let node = self.node;
        let status = |s| Error::from_status(node, RPC, s, take(&self.tls_failure));
        let archive = self.rt.block_on(async {
            let mut grpc = self.grpc().await?;
            let codec = ProstCodec::<(), proto::Data>::default();
            let mut stream = grpc
                .server_streaming(
                    tonic::Request::new(()),
                    PathAndQuery::from_static(path::KUBECONFIG),
                    codec,
                )
                .await
                .map_err(status)?
                .into_inner();
            let mut archive = Vec::new();
            while let Some(chunk) = stream.message().await.map_err(status)? {
                self.check_metadata(RPC, std::slice::from_ref(&chunk))?;
                if archive.len() + chunk.bytes.len() > MAX_ARCHIVE_BYTES {
                    return Err(Error::Archive {
                        node,
                        reason: format!("the archive is larger than {MAX_ARCHIVE_BYTES} bytes"),
                        source: None,
                    });
                }
                archive.extend_from_slice(&chunk.bytes);
            }
            Ok(archive)
        })?;
        archive::extract_kubeconfig(&archive).map_err(|(reason, source)| Error::Archive {
            node,
            reason,
            source,
        })
    }

    /// The etcd members as this node sees them.
    pub fn etcd_member_list(&self) -> Result<Vec<EtcdMember>, Error> {
        const RPC: &str = "EtcdMemberList";
        let req = proto::EtcdMemberListRequest { query_local: false };
        let resp: proto::EtcdMemberListResponse = self.unary(RPC, path::ETCD_MEMBER_LIST, req)?;
        self.check_metadata(RPC, &resp.messages)?;
        Ok(resp
            .messages
            .into_iter()
            .flat_map(|m| m.members)
            .map(|m| EtcdMember {
                id: m.id,
                hostname: m.hostname,
                peer_urls: m.peer_urls,
                client_urls: m.client_urls,
                is_learner: m.is_learner,
            })
            .collect())
    }

    /// Make this node leave the etcd cluster (before it is removed or reset).
    pub fn etcd_leave_cluster(&self) -> Result<(), Error> {
        const RPC: &str = "EtcdLeaveCluster";
        let resp: proto::EtcdLeaveClusterResponse = self.unary(
            RPC,
            path::ETCD_LEAVE_CLUSTER,
            proto::EtcdLeaveClusterRequest {},
        )?;
        self.check_metadata(RPC, &resp.messages)
    }

    /// Remove the member `id` (a node that is gone) from the etcd cluster, through this node.
    pub fn etcd_remove_member_by_id(&self, id: u64) -> Result<(), Error> {
        const RPC: &str = "EtcdRemoveMemberByID";
        let req = proto::EtcdRemoveMemberByIdRequest { member_id: id };
        let resp: proto::EtcdRemoveMemberByIdResponse =
            self.unary(RPC, path::ETCD_REMOVE_MEMBER_BY_ID, req)?;
        self.check_metadata(RPC, &resp.messages)
    }

    async fn grpc(&self) -> Result<tonic::client::Grpc<Channel>, Error> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Error::from_connect(self.node, e, take(&self.tls_failure)))?;
        Ok(grpc)
    }

    fn unary<Req, Resp>(
        &self,
        rpc: &'static str,
        path: &'static str,
        req: Req,
    ) -> Result<Resp, Error>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.block_on(async {
            let mut grpc = self.grpc().await?;
            let codec = ProstCodec::<Req, Resp>::default();
            grpc.unary(
                tonic::Request::new(req),
                PathAndQuery::from_static(path),
                codec,
            )
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Error::from_status(self.node, rpc, s, take(&self.tls_failure)))
        })
    }

    fn block_on<T>(&self, f: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        self.rt.block_on(f)
    }

    /// apid answers for each node it reached; a node that failed has `metadata.error` set.
    fn check_metadata<M: HasMetadata>(
        &self,
        rpc: &'static str,
        messages: &[M],
    ) -> Result<(), Error> {
        for m in messages {
            if let Some(md) = m.metadata()
                && !md.error.is_empty()
            {
                return Err(Error::NodeError {
                    node: self.node,
                    rpc,
                    hostname: md.hostname.clone(),
                    error: md.error.clone(),
                });
            }
        }
        Ok(())
    }
}

/// TCP to `addr`, then TLS with `addr`'s IP as the server name, whatever URI tonic passes.
fn tls_connector(
    addr: SocketAddr,
    creds: &Credentials,
    slot: TlsSlot,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<Watched<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>,
    Error = std::io::Error,
    Future: Send,
> + Send
+ 'static {
    let connector = tokio_rustls::TlsConnector::from(creds.config.clone());
    tower::service_fn(move |_: Uri| {
        let connector = connector.clone();
        let slot = slot.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let mut tls = connector
                .connect(ServerName::IpAddress(addr.ip().into()), tcp)
                .await
                .inspect_err(|e| record(&slot, e))?;
            // With TLS 1.3 a server that refuses our certificate says so only after the
            // handshake, in an alert. Read the server's first bytes here (an HTTP/2 server sends
            // its SETTINGS at once), so that the alert is seen before any write can fail with a
            // bare "broken pipe"; the bytes read are handed to hyper first.
            let mut first = vec![0u8; 16 * 1024];
            let n = match tokio::time::timeout(FIRST_READ, tls.read(&mut first)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    record(&slot, &e);
                    return Err(e);
                }
                Err(_) => 0,
            };
            first.truncate(n);
            Ok(TokioIo::new(Watched {
                inner: tls,
                slot,
                first,
                at: 0,
            }))
        }
    })
}

fn take(slot: &TlsSlot) -> Option<rustls::Error> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn record(slot: &TlsSlot, e: &std::io::Error) {
    if let Some(tls) = crate::error::find_tls_error(e) {
        let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
        s.get_or_insert(tls);
    }
}

/// How long the connector waits for the server's first bytes after the handshake.
const FIRST_READ: Duration = Duration::from_secs(1);

/// A stream that records the TLS errors passing through it into the slot, and reads the bytes
/// the connector read ahead (`first`, from `at` on) before its own.
struct Watched<S> {
    inner: S,
    slot: TlsSlot,
    first: Vec<u8>,
    at: usize,
}

impl<S> Watched<S> {
    fn check<T>(&self, r: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if let Poll::Ready(Err(e)) = &r {
            record(&self.slot, e);
        }
        r
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.at < self.first.len() {
            let n = buf.remaining().min(self.first.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.first[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.check(r)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(r)
    }
}
