//! The secrets bundle: key types, issuer/subject chain, validity, YAML round trip.

use std::sync::OnceLock;

use ::time::OffsetDateTime;
use base64::Engine;
use talos_image::TalosVersion;
use talos_image::secrets::{SecretsBundle, SecretsOptions, is_token};
use x509_parser::oid_registry::{OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ED25519};
use x509_parser::prelude::{FromDer, X509Certificate};

/// One bundle per test binary, with a fixture RSA-4096 key because generating one takes a minute
/// in a debug build; `service_account_key_is_rsa_4096_pkcs1` covers real generation.
fn bundle() -> &'static SecretsBundle {
    static B: OnceLock<SecretsBundle> = OnceLock::new();
    B.get_or_init(|| {
        let opts = SecretsOptions {
            service_account_key: Some(include_str!("fixtures/test-only-sa-rsa4096.pem").into()),
            ..Default::default()
        };
        SecretsBundle::generate_with(&TalosVersion::parse("v1.12.1").expect("v"), opts)
            .expect("generate")
    })
}

fn der_of(pem_text: &str, tag: &str) -> Vec<u8> {
    let p = ::pem::parse(pem_text).expect("pem");
    assert_eq!(p.tag(), tag);
    p.contents().to_vec()
}

fn check_ca(pem_text: &str, key_oid: &x509_parser::der_parser::oid::Oid<'_>, subject: &str) {
    let der = der_of(pem_text, "CERTIFICATE");
    let (_, cert) = X509Certificate::from_der(&der).expect("x509");
    assert_eq!(cert.public_key().algorithm.algorithm, *key_oid);
    assert_eq!(cert.subject().to_string(), subject);
    assert_eq!(cert.issuer(), cert.subject(), "self-signed");
    assert!(cert.is_ca());
    let bc = cert.basic_constraints().expect("bc").expect("present");
    assert!(bc.critical && bc.value.ca);
    let ku = cert.key_usage().expect("ku").expect("present");
    assert!(ku.value.key_cert_sign());
    // 87600h = 3650 days.
    let v = cert.validity();
    let span = v.not_after.timestamp() - v.not_before.timestamp();
    assert_eq!(span, 87600 * 3600);
    let now = OffsetDateTime::now_utc().unix_timestamp();
    assert!(v.not_before.timestamp() <= now && now < v.not_after.timestamp());
    cert.verify_signature(None)
        .expect("self-signature verifies");
}

#[test]
fn ca_key_types_subjects_and_validity() {
    let b = bundle();
    check_ca(&b.certs.os.crt, &OID_SIG_ED25519, "O=talos");
    check_ca(&b.certs.etcd.crt, &OID_KEY_TYPE_EC_PUBLIC_KEY, "O=etcd");
    check_ca(
        &b.certs.k8s.crt,
        &OID_KEY_TYPE_EC_PUBLIC_KEY,
        "O=kubernetes",
    );
    check_ca(
        &b.certs.k8saggregator.crt,
        &OID_KEY_TYPE_EC_PUBLIC_KEY,
        "CN=front-proxy",
    );
    der_of(&b.certs.os.key, "ED25519 PRIVATE KEY");
    der_of(&b.certs.etcd.key, "EC PRIVATE KEY");
    der_of(&b.certs.k8s.key, "EC PRIVATE KEY");
    der_of(&b.certs.k8saggregator.key, "EC PRIVATE KEY");
}

#[test]
fn service_account_key_is_rsa_4096_pkcs1() {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    let b = SecretsBundle::generate(&TalosVersion::parse("v1.12.1").expect("v")).expect("generate");
    der_of(&b.certs.k8sserviceaccount.key, "RSA PRIVATE KEY");
    let key = rsa::RsaPrivateKey::from_pkcs1_pem(&b.certs.k8sserviceaccount.key).expect("pkcs1");
    assert_eq!(key.size() * 8, 4096);
}

#[test]
fn tokens_and_random_secrets() {
    let b = bundle();
    assert!(is_token(&b.secrets.bootstraptoken));
    assert!(is_token(&b.trustdinfo.token));
    let sb = b
        .secrets
        .secretboxencryptionsecret
        .as_deref()
        .expect("secretbox");
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(sb)
            .expect("b64")
            .len(),
        32
    );
    let id = base64::engine::general_purpose::URL_SAFE.decode(&b.cluster.id);
    assert_eq!(id.expect("b64").len(), 32);
    let secret = base64::engine::general_purpose::STANDARD.decode(&b.cluster.secret);
    assert_eq!(secret.expect("b64").len(), 32);
}

#[test]
fn yaml_round_trip_in_talosctl_shape() {
    let b = bundle();
    let yaml = b.to_yaml().expect("yaml");
    for key in [
        "cluster:",
        "secrets:",
        "bootstraptoken:",
        "secretboxencryptionsecret:",
        "trustdinfo:",
        "certs:",
        "etcd:",
        "k8s:",
        "k8saggregator:",
        "k8sserviceaccount:",
        "os:",
        "crt:",
        "key:",
    ] {
        assert!(yaml.contains(key), "{key} missing in\n{yaml}");
    }
    // crt/key are base64(PEM) in the file.
    let v: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("yaml");
    let crt = v["certs"]["os"]["crt"].as_str().expect("crt");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(crt)
        .expect("b64");
    assert!(decoded.starts_with(b"-----BEGIN CERTIFICATE-----"));
    let again = SecretsBundle::from_yaml(&yaml).expect("load");
    assert_eq!(&again, b);
}

#[test]
fn bad_bundles_are_refused() {
    let b = bundle();
    let mut bad = b.clone();
    bad.trustdinfo.token = "nope".into();
    let err = SecretsBundle::from_yaml(&bad.to_yaml().expect("yaml")).expect_err("token");
    assert!(err.to_string().contains("trustdinfo.token"), "{err}");
    assert!(SecretsBundle::from_yaml("cluster: {}\n").is_err());
}

#[test]
fn admin_client_cert_chains_to_the_os_ca() {
    let b = bundle();
    let client = b
        .admin_client_cert(OffsetDateTime::now_utc())
        .expect("client");
    der_of(&client.key, "ED25519 PRIVATE KEY");
    let ca_der = der_of(&b.certs.os.crt, "CERTIFICATE");
    let (_, ca) = X509Certificate::from_der(&ca_der).expect("ca");
    let der = der_of(&client.crt, "CERTIFICATE");
    let (_, cert) = X509Certificate::from_der(&der).expect("x509");
    assert_eq!(cert.issuer(), ca.subject());
    assert_eq!(cert.subject().to_string(), "O=os:admin, CN=admin");
    assert!(!cert.is_ca());
    assert_eq!(cert.public_key().algorithm.algorithm, OID_SIG_ED25519);
    let eku = cert.extended_key_usage().expect("eku").expect("present");
    assert!(eku.value.client_auth && !eku.value.server_auth);
    cert.verify_signature(Some(ca.public_key()))
        .expect("signed by the OS CA");
}

#[test]
fn supplied_service_account_key_must_be_pkcs1_rsa() {
    let opts = SecretsOptions {
        service_account_key: Some(
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n".into(),
        ),
        ..Default::default()
    };
    let err = SecretsBundle::generate_with(&TalosVersion::parse("v1.12.1").expect("v"), opts)
        .expect_err("bad key");
    assert!(err.to_string().contains("k8sserviceaccount"), "{err}");
}
