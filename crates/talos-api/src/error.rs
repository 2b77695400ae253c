//! The crate's error type, and how transport failures are sorted into "not up yet" (retry) and
//! "will never work" (bad certificate, refused client certificate, node error).

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::Duration;

use tonic::Code;

type BoxError = Box<dyn StdError + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("talosconfig: {reason}")]
    Talosconfig { reason: String },

    #[error("talosconfig {what} is not usable")]
    Credentials {
        what: &'static str,
        #[source]
        source: BoxError,
    },

    #[error("start the I/O runtime for the apid client")]
    Runtime {
        #[source]
        source: std::io::Error,
    },

    /// TCP connection (or the connect timeout) failed: the node is not listening yet.
    #[error("connect to apid at {node}")]
    Connect {
        node: SocketAddr,
        #[source]
        source: BoxError,
    },

    /// The TLS handshake failed or the server refused us: certificates do not match.
    #[error("{rpc} on apid at {node}: {failure}")]
    Tls {
        node: SocketAddr,
        rpc: &'static str,
        failure: TlsFailure,
        #[source]
        source: rustls::Error,
    },

    /// The call itself failed with a gRPC status.
    #[error("{rpc} on apid at {node}: {code:?}: {message}")]
    Status {
        node: SocketAddr,
        rpc: &'static str,
        code: Code,
        message: String,
    },

    /// The call went through but the node reported an error in the response metadata.
    #[error("{rpc} on apid at {node}: node {hostname:?} reported: {error}")]
    NodeError {
        node: SocketAddr,
        rpc: &'static str,
        hostname: String,
        error: String,
    },

    #[error("Kubeconfig on apid at {node}: {reason}")]
    Archive {
        node: SocketAddr,
        reason: String,
        #[source]
        source: Option<std::io::Error>,
    },

    #[error("gave up after {waited:?}")]
    Timeout {
        waited: Duration,
        #[source]
        last: Box<Error>,
    },

    #[error("cancelled")]
    Cancelled,
}

/// Which side of mutual TLS rejected the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// apid's certificate does not chain to the talosconfig CA or is not for the node's IP.
    ServerCertificateRejected,
    /// apid refused our client certificate (another cluster's talosconfig?).
    ClientCertificateRefused,
    /// Any other TLS failure (protocol, ALPN, ...).
    Handshake,
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsFailure::ServerCertificateRejected => {
                "apid's certificate did not verify against the talosconfig CA for this address"
            }
            TlsFailure::ClientCertificateRefused => {
                "apid refused the talosconfig client certificate"
            }
            TlsFailure::Handshake => "TLS handshake failed",
        })
    }
}

impl Error {
    /// True for errors that mean "apid is not up yet": connection refused or timed out, gRPC
    /// `Unavailable`, `DeadlineExceeded` or `Canceled`, and for Bootstrap `FailedPrecondition`
    /// ("bootstrap is not available yet", "time is not in sync yet"). The same set Talos's own
    /// bootstrap retries (pkg/cluster/bootstrap.go at v1.13.9). Certificate errors, node errors
    /// and everything else are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { .. } => true,
            Error::Status { code, rpc, .. } => match code {
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => true,
                Code::FailedPrecondition => *rpc == "Bootstrap",
                _ => false,
            },
            _ => false,
        }
    }

    /// Sort a failed call's status: a TLS failure underneath (in the status's chain, or
    /// `seen_tls`, what the connection saw: hyper reports a connection that died of a TLS alert
    /// only as a broken pipe) becomes [`Error::Tls`], a connection that could not be made
    /// [`Error::Connect`], the rest [`Error::Status`].
    pub(crate) fn from_status(
        node: SocketAddr,
        rpc: &'static str,
        status: tonic::Status,
        seen_tls: Option<rustls::Error>,
    ) -> Error {
        if let Some(tls) = find_tls_error(&status).or(seen_tls) {
            return Error::Tls {
                node,
                rpc,
                failure: classify_tls(&tls),
                source: tls,
            };
        }
        if let Some(io) = find_io_error(&status) {
            return Error::Connect {
                node,
                source: Box::new(std::io::Error::new(io.kind(), io.to_string())),
            };
        }
        Error::Status {
            node,
            rpc,
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    /// Sort a failed connect: TLS or TCP.
    pub(crate) fn from_connect(
        node: SocketAddr,
        err: tonic::transport::Error,
        seen_tls: Option<rustls::Error>,
    ) -> Error {
        match find_tls_error(&err).or(seen_tls) {
            Some(tls) => Error::Tls {
                node,
                rpc: "connect",
                failure: classify_tls(&tls),
                source: tls,
            },
            None => Error::Connect {
                node,
                source: Box::new(err),
            },
        }
    }
}

/// Walk an error's source chain for a rustls error. tokio-rustls reports them inside an
/// `io::Error`, whose `source()` skips the wrapped error, so look inside every `io::Error` too.
pub(crate) fn find_tls_error(err: &(dyn StdError + 'static)) -> Option<rustls::Error> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t.clone());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            if let Some(t) = inner.downcast_ref::<rustls::Error>() {
                return Some(t.clone());
            }
            if let Some(t) = find_tls_error(inner) {
                return Some(t);
            }
        }
        cur = e.source();
    }
    None
}

/// The socket-level error under a failed call, if the connection could not be (re)made.
fn find_io_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a std::io::Error> {
    let mut cur: Option<&'a (dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | TimedOut | HostUnreachable | NetworkUnreachable
            ) {
                return Some(io);
            }
        }
        cur = e.source();
    }
    None
}

fn classify_tls(err: &rustls::Error) -> TlsFailure {
    use rustls::AlertDescription as A;
    match err {
        rustls::Error::InvalidCertificate(_) => TlsFailure::ServerCertificateRejected,
        rustls::Error::AlertReceived(
            A::BadCertificate
            | A::UnknownCA
            | A::CertificateRequired
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::AccessDenied
            | A::DecryptError,
        ) => TlsFailure::ClientCertificateRefused,
        _ => TlsFailure::Handshake,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn node() -> SocketAddr {
        SocketAddr::from(([198, 18, 0, 10], 50000))
    }

    #[test]
    fn unavailable_is_retryable_and_permission_denied_is_not() {
        let s = |code| Error::Status {
            node: node(),
            rpc: "EtcdMemberList",
            code,
            message: String::new(),
        };
        assert!(s(Code::Unavailable).is_retryable());
        assert!(!s(Code::PermissionDenied).is_retryable());
        assert!(!s(Code::FailedPrecondition).is_retryable());
    }

    #[test]
    fn bootstrap_failed_precondition_means_not_ready_yet() {
        let e = Error::Status {
            node: node(),
            rpc: "Bootstrap",
            code: Code::FailedPrecondition,
            message: "time is not in sync yet".into(),
        };
        assert!(e.is_retryable());
    }

    #[test]
    fn tls_error_inside_io_error_is_found_and_final() {
        let tls = rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let status = tonic::Status::from_error(Box::new(io));
        let e = Error::from_status(node(), "EtcdMemberList", status, None);
        assert!(
            matches!(
                e,
                Error::Tls {
                    failure: TlsFailure::ClientCertificateRefused,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(!e.is_retryable());
        assert!(
            e.to_string()
                .contains("refused the talosconfig client certificate")
        );
    }
}
