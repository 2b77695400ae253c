//! The client against the test apid over real mutual TLS on loopback.
#![allow(clippy::unwrap_used)]

#[path = "support/apid.rs"]
mod apid;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use apid::{Pki, Running, State};
use talos_api::{Bootstrapped, Client, Error, TlsFailure, retry_until};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const TIMEOUT: Duration = Duration::from_secs(10);

fn any_port() -> SocketAddr {
    SocketAddr::new(LOCALHOST, 0)
}

fn start(pki: &Pki, state: State) -> Running {
    Running::start(any_port(), pki.server_config(), state)
}

fn connect(pki: &Pki, server: &Running) -> Client {
    Client::connect(LOCALHOST, server.addr.port(), &pki.credentials(), TIMEOUT).unwrap()
}

#[test]
fn bootstrap_twice_succeeds_both_times() {
    let pki = Pki::generate(&rcgen::PKCS_ED25519, &[LOCALHOST]);
    let server = start(&pki, State::default());
    let client = connect(&pki, &server);
    assert_eq!(client.bootstrap().unwrap(), Bootstrapped::Done);
    assert_eq!(
        client.bootstrap().unwrap(),
        Bootstrapped::AlreadyBootstrapped
    );
    let st = server.state();
    assert!(st.bootstrapped);
    assert_eq!(st.bootstrap_calls, 2);
}

#[test]
fn kubeconfig_stream_is_reassembled_into_the_file() {
    let pki = Pki::generate(&rcgen::PKCS_ECDSA_P256_SHA256, &[LOCALHOST]);
    let state = State {
        chunk: 37, // several small chunks
        ..State::default()
    };
    let want = state.kubeconfig.clone();
    assert!(apid::kubeconfig_archive(&want).len() > 3 * 37);
    let server = start(&pki, state);
    let got = connect(&pki, &server).kubeconfig().unwrap();
    assert_eq!(got, want);
}

#[test]
fn etcd_member_list_reports_every_member() {
    let pki = Pki::generate(&rcgen::PKCS_ED25519, &[LOCALHOST]);
    let server = start(&pki, State::default());
    let members = connect(&pki, &server).etcd_member_list().unwrap();
    let names: Vec<_> = members
        .iter()
        .map(|m| (m.id, m.hostname.as_str()))
        .collect();
    assert_eq!(
        names,
        [(0x1111, "cp-1"), (0x2222, "cp-2"), (0x3333, "cp-3")]
    );
    assert_eq!(members[1].peer_urls, ["https://198.18.0.11:2380"]);
    assert_eq!(members[1].client_urls, ["https://198.18.0.11:2379"]);
    assert!(!members[1].is_learner);
}

#[test]
fn etcd_leave_cluster_removes_the_node_itself() {
    let pki = Pki::generate(&rcgen::PKCS_ED25519, &[LOCALHOST]);
    let server = start(&pki, State::default());
    let client = connect(&pki, &server);
    client.etcd_leave_cluster().unwrap();
    let left: Vec<_> = client
        .etcd_member_list()
        .unwrap()
        .into_iter()
        .map(|m| m.hostname)
        .collect();
    assert_eq!(left, ["cp-2", "cp-3"]);
}

#[test]
fn etcd_remove_member_by_id_removes_that_member() {
    let pki = Pki::generate(&rcgen::PKCS_ED25519, &[LOCALHOST]);
    let server = start(&pki, State::default());
    let client = connect(&pki, &server);
    client.etcd_remove_member_by_id(0x2222).unwrap();
    let ids: Vec<_> = client
        .etcd_member_list()
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, [0x1111, 0x3333]);
}

#[test]
fn metadata_error_is_a_node_error() {
    let pki = Pki::generate(&rcgen::PKCS_ED25519, &[LOCALHOST]);
    let server = start(&pki, State::default());
    let e = connect(&pki, &server)
        .etcd_remove_member_by_id(0x9999)
        .unwrap_err();
    match &e {
        Error::NodeError {
            rpc,
            hostname,
            error,
            ..
        } => {
            assert_eq!((*rpc, hostname.as_str()), ("EtcdRemoveMemberByID", "cp-1"));
            assert!(error.contains("not found"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!e.is_retryable());
}

#[test]
fn client_cert_from_another_ca_is_refused_and_not_retryable() {
    let cluster = Pki::generate(&rcgen::PKCS_ED25519, &[LOCALHOST]);
    let other = Pki::generate(&rcgen::PKCS_ED25519, &[LOCALHOST]);
    let server = start(&cluster, State::default());
    // Trusts the right CA, presents another cluster's admin certificate.
    let creds = talos_api::Credentials::from_pem(
        &cluster.ca_pem,
        &other.client_crt_pem,
        &other.client_key_pem,
    )
    .unwrap();
    // TLS 1.3: the refusal arrives after the handshake, on the connect or on the first call.
    let e = Client::connect(LOCALHOST, server.addr.port(), &creds, TIMEOUT)
        .and_then(|c| c.etcd_member_list())
        .unwrap_err();
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
    let msg = e.to_string();
    assert!(
        msg.contains("refused the talosconfig client certificate"),
        "{msg}"
    );
    assert!(msg.contains(&server.addr.to_string()), "{msg}");
}

#[test]
fn server_cert_for_another_ip_is_refused() {
    let pki = Pki::generate(
        &rcgen::PKCS_ED25519,
        &[IpAddr::V4(Ipv4Addr::new(198, 18, 0, 99))],
    );
    let server = start(&pki, State::default());
    let e = Client::connect(LOCALHOST, server.addr.port(), &pki.credentials(), TIMEOUT)
        .and_then(|c| c.etcd_member_list())
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Tls {
                failure: TlsFailure::ServerCertificateRejected,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.is_retryable());
}

#[test]
fn server_cert_from_another_ca_is_refused() {
    let cluster = Pki::generate(&rcgen::PKCS_ECDSA_P256_SHA256, &[LOCALHOST]);
    let impostor = Pki::generate(&rcgen::PKCS_ECDSA_P256_SHA256, &[LOCALHOST]);
    let server = start(&impostor, State::default());
    let e = Client::connect(
        LOCALHOST,
        server.addr.port(),
        &cluster.credentials(),
        TIMEOUT,
    )
    .and_then(|c| c.etcd_member_list())
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Tls {
                failure: TlsFailure::ServerCertificateRejected,
                ..
            }
        ),
        "{e:?}"
    );
}

/// A port nothing listens on: bind one, then close it.
fn closed_port() -> u16 {
    std::net::TcpListener::bind(any_port())
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn refused_connection_is_a_fast_retryable_connect_error() {
    let pki = Pki::generate(&rcgen::PKCS_ED25519, &[LOCALHOST]);
    let started = Instant::now();
    let e = Client::connect(LOCALHOST, closed_port(), &pki.credentials(), TIMEOUT).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    assert!(e.is_retryable());
}

#[test]
fn slow_start_is_waited_for_with_retry_until() {
    let pki = Pki::generate(&rcgen::PKCS_ED25519, &[LOCALHOST]);
    let port = closed_port();
    let addr = SocketAddr::new(LOCALHOST, port);
    // The node comes up about a second later.
    let server = Running::start_later(
        addr,
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            std::net::TcpListener::bind(addr).unwrap()
        },
        pki.server_config(),
        State::default(),
    );
    let creds = pki.credentials();
    let mut retries = Vec::new();
    let members = retry_until(
        Instant::now() + Duration::from_secs(30),
        Duration::from_millis(100),
        &|| false,
        &mut |e| retries.push(e.to_string()),
        || Client::connect(LOCALHOST, port, &creds, TIMEOUT)?.etcd_member_list(),
    )
    .unwrap();
    assert_eq!(members.len(), 3);
    assert!(
        !retries.is_empty(),
        "the first attempts should have been refused"
    );
    assert!(retries[0].contains(&addr.to_string()), "{retries:?}");
    drop(server);
}
