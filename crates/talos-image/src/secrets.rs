//! The cluster secrets bundle, in the YAML shape `talosctl gen secrets` writes and reads.
//!
//! Shape: siderolabs/talos `pkg/machinery/config/generate/secrets/bundle.go`. Key encodings follow
//! siderolabs/crypto `x509`: the Ed25519 OS CA key is PKCS#8 DER under the PEM type
//! `ED25519 PRIVATE KEY`, ECDSA keys are SEC1 `EC PRIVATE KEY`, the service-account RSA key is
//! PKCS#1 `RSA PRIVATE KEY`. In the YAML every PEM is base64-encoded again (`crt:`/`key:`).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use der::asn1::OctetStringRef;
use der::{Decode, Encode};
use pkcs8::{AlgorithmIdentifierRef, ObjectIdentifier, PrivateKeyInfo};
use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, SerialNumber,
};
use sec1::{EcParameters, EcPrivateKey};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::Error;
use crate::factory::TalosVersion;

/// Certificates live 87600h (10 years), like `talosctl gen secrets`.
pub const CERT_VALIDITY: Duration = Duration::hours(87600);
const CLOCK_SKEW: Duration = Duration::seconds(10);
/// Service-account key size (Talos ≥ 1.7 generates RSA-4096).
pub const SERVICE_ACCOUNT_RSA_BITS: usize = 4096;

/// PEM text of a certificate and its private key; base64-encoded in YAML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertAndKey {
    #[serde(with = "b64")]
    pub crt: String,
    #[serde(with = "b64")]
    pub key: String,
}

/// PEM text of a private key alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyOnly {
    #[serde(with = "b64")]
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSecrets {
    pub id: String,
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secrets {
    pub bootstraptoken: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aescbcencryptionsecret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secretboxencryptionsecret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustdInfo {
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certs {
    pub etcd: CertAndKey,
    pub k8s: CertAndKey,
    pub k8saggregator: CertAndKey,
    pub k8sserviceaccount: KeyOnly,
    pub os: CertAndKey,
}

/// `secrets.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretsBundle {
    pub cluster: ClusterSecrets,
    pub secrets: Secrets,
    pub trustdinfo: TrustdInfo,
    pub certs: Certs,
}

/// Knobs for [`SecretsBundle::generate_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretsOptions {
    /// RSA size of the service-account key; 4096 for real clusters.
    pub service_account_bits: usize,
    /// Start of validity (tests pin it).
    pub now: OffsetDateTime,
    /// Reuse this PKCS#1 PEM RSA key instead of generating one (benchmarks, fixtures).
    pub service_account_key: Option<String>,
}

impl Default for SecretsOptions {
    fn default() -> Self {
        SecretsOptions {
            service_account_bits: SERVICE_ACCOUNT_RSA_BITS,
            now: OffsetDateTime::now_utc(),
            service_account_key: None,
        }
    }
}

/// An admin client certificate for `talosconfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub crt: String,
    pub key: String,
}

impl SecretsBundle {
    /// A fresh bundle for a cluster running `version` (RSA-4096 keygen dominates: seconds).
    pub fn generate(version: &TalosVersion) -> Result<Self, Error> {
        Self::generate_with(version, SecretsOptions::default())
    }

    pub fn generate_with(_version: &TalosVersion, opts: SecretsOptions) -> Result<Self, Error> {
        // Talos ≥ 1.3 always writes secretbox (not AES-CBC) and ECDSA CAs; we target ≥ 1.7 only.
        let mut rng = rand::rng();
        Ok(SecretsBundle {
            cluster: ClusterSecrets {
                // Talos: ID URL-safe base64, secret standard base64 (generate/secrets NewCluster).
                id: URL_SAFE.encode(rng.random::<[u8; 32]>()),
                secret: STANDARD.encode(rng.random::<[u8; 32]>()),
            },
            secrets: Secrets {
                bootstraptoken: new_token(&mut rng),
                aescbcencryptionsecret: None,
                secretboxencryptionsecret: Some(STANDARD.encode(rng.random::<[u8; 32]>())),
            },
            trustdinfo: TrustdInfo {
                token: new_token(&mut rng),
            },
            certs: Certs {
                etcd: new_ca(CaKind::Etcd, opts.now)?,
                k8s: new_ca(CaKind::Kubernetes, opts.now)?,
                k8saggregator: new_ca(CaKind::Aggregator, opts.now)?,
                k8sserviceaccount: KeyOnly {
                    key: match opts.service_account_key {
                        Some(pem) => check_rsa_pem(pem)?,
                        None => new_rsa_pem(opts.service_account_bits)?,
                    },
                },
                os: new_ca(CaKind::Os, opts.now)?,
            },
        })
    }

    /// Parse `secrets.yaml` (ours or talosctl's) and check the token formats.
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        let b: SecretsBundle =
            serde_yaml::from_str(text).map_err(|source| Error::ParseSecrets { source })?;
        for (field, token) in [
            ("secrets.bootstraptoken", &b.secrets.bootstraptoken),
            ("trustdinfo.token", &b.trustdinfo.token),
        ] {
            if !is_token(token) {
                return Err(Error::InvalidSecrets {
                    field,
                    reason: format!("{token:?} is not of the form [0-9a-z]{{6}}.[0-9a-z]{{16}}"),
                });
            }
        }
        for (field, pem_text) in [
            ("certs.os.crt", &b.certs.os.crt),
            ("certs.os.key", &b.certs.os.key),
            ("certs.k8s.crt", &b.certs.k8s.crt),
            ("certs.etcd.crt", &b.certs.etcd.crt),
            ("certs.k8saggregator.crt", &b.certs.k8saggregator.crt),
            (
                "certs.k8sserviceaccount.key",
                &b.certs.k8sserviceaccount.key,
            ),
        ] {
            pem::parse(pem_text).map_err(|e| Error::InvalidSecrets {
                field,
                reason: format!("not PEM: {e}"),
            })?;
        }
        Ok(b)
    }

    pub fn to_yaml(&self) -> Result<String, Error> {
        serde_yaml::to_string(self).map_err(|source| Error::Serialize {
            what: "secrets bundle",
            source,
        })
    }

    /// An admin client certificate signed by the OS CA (Ed25519, `O=os:admin`, `CN=admin`,
    /// client auth), as `talosctl gen config` puts in `talosconfig`.
    pub fn admin_client_cert(&self, now: OffsetDateTime) -> Result<ClientCert, Error> {
        let what = "admin client";
        let gen_err = |source| Error::GenerateCert { what, source };
        let ca_key = load_ed25519(&self.certs.os.key)?;
        let issuer = Issuer::from_ca_cert_pem(&self.certs.os.crt, ca_key).map_err(gen_err)?;
        let key = KeyPair::generate_for(&PKCS_ED25519).map_err(gen_err)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "os:admin");
        dn.push(DnType::CommonName, "admin");
        params.distinguished_name = dn;
        params.serial_number = Some(random_serial());
        // Backdated a little for guests whose clock lags at first boot; the span stays 87600h.
        params.not_before = now - CLOCK_SKEW;
        params.not_after = params.not_before + CERT_VALIDITY;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
        Ok(ClientCert {
            crt: cert.pem(),
            key: ed25519_pem(&key)?,
        })
    }
}

/// `[0-9a-z]{6}.[0-9a-z]{16}` (kubeadm bootstrap-token format, also used for trustd).
pub fn is_token(t: &str) -> bool {
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    };
    matches!(t.split_once('.'), Some((a, b)) if ok(a, 6) && ok(b, 16))
}

fn new_token(rng: &mut impl Rng) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut pick = |n: usize| -> String {
        (0..n)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    };
    let a = pick(6);
    let b = pick(16);
    format!("{a}.{b}")
}

#[derive(Debug, Clone, Copy)]
enum CaKind {
    Os,
    Etcd,
    Kubernetes,
    Aggregator,
}

fn random_serial() -> SerialNumber {
    // Positive 128-bit serial (top bit clear), like Go's crypto/x509 callers in siderolabs/crypto.
    let mut b: [u8; 16] = rand::rng().random();
    b[0] &= 0x7f;
    SerialNumber::from_slice(&b)
}

/// A self-signed CA like siderolabs/crypto `NewSelfSignedCertificateAuthority`.
fn new_ca(kind: CaKind, now: OffsetDateTime) -> Result<CertAndKey, Error> {
    let (what, alg, org, cn) = match kind {
        CaKind::Os => ("OS CA", &PKCS_ED25519, Some("talos"), None),
        CaKind::Etcd => ("etcd CA", &PKCS_ECDSA_P256_SHA256, Some("etcd"), None),
        CaKind::Kubernetes => (
            "Kubernetes CA",
            &PKCS_ECDSA_P256_SHA256,
            Some("kubernetes"),
            None,
        ),
        CaKind::Aggregator => (
            "aggregator CA",
            &PKCS_ECDSA_P256_SHA256,
            None,
            Some("front-proxy"),
        ),
    };
    let gen_err = |source| Error::GenerateCert { what, source };
    let key = KeyPair::generate_for(alg).map_err(gen_err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    if let Some(c) = cn {
        dn.push(DnType::CommonName, c);
    }
    params.distinguished_name = dn;
    params.serial_number = Some(random_serial());
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Backdated a little for guests whose clock lags at first boot; the span stays 87600h.
    params.not_before = now - CLOCK_SKEW;
    params.not_after = params.not_before + CERT_VALIDITY;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.self_signed(&key).map_err(gen_err)?;
    let key_pem = match kind {
        CaKind::Os => ed25519_pem(&key)?,
        _ => ec_pem(&key, what)?,
    };
    Ok(CertAndKey {
        crt: cert.pem(),
        key: key_pem,
    })
}

fn new_rsa_pem(bits: usize) -> Result<String, Error> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rand_core06::OsRng, bits)
        .map_err(|source| Error::GenerateRsa { source })?;
    let pem = key
        .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
        .map_err(|source| Error::EncodeRsa { source })?;
    Ok(pem.to_string())
}

fn check_rsa_pem(pem: String) -> Result<String, Error> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    rsa::RsaPrivateKey::from_pkcs1_pem(&pem).map_err(|e| Error::InvalidSecrets {
        field: "certs.k8sserviceaccount.key",
        reason: format!("not a PKCS#1 RSA private key: {e}"),
    })?;
    Ok(pem)
}

/// A PKCS#1 PEM RSA key of `bits` (the slow part of [`SecretsBundle::generate`]).
pub fn generate_service_account_key(bits: usize) -> Result<String, Error> {
    new_rsa_pem(bits)
}

fn pem_text(tag: &str, der: Vec<u8>) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// id-Ed25519 (RFC 8410 §3).
const ED25519_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// PKCS#8 v1 DER (what Go's `x509.MarshalPKCS8PrivateKey` writes) under `ED25519 PRIVATE KEY`.
/// ring serialises v2 (with the public key); we re-wrap the 32-byte seed.
fn ed25519_pem(key: &KeyPair) -> Result<String, Error> {
    let bad = |reason: String| Error::InvalidSecrets {
        field: "ed25519 key",
        reason,
    };
    let seed =
        ed25519_seed(key.serialized_der()).ok_or_else(|| bad("unexpected PKCS#8 layout".into()))?;
    let der = ed25519_pkcs8_v1(&seed).map_err(|e| bad(format!("encoding PKCS#8: {e}")))?;
    Ok(pem_text("ED25519 PRIVATE KEY", der))
}

/// RFC 8410 §7: a `OneAsymmetricKey` v1 (PKCS#8 `PrivateKeyInfo`) with the bare algorithm
/// identifier and the seed as a `CurvePrivateKey`, an OCTET STRING inside `privateKey`.
fn ed25519_pkcs8_v1(seed: &[u8; 32]) -> der::Result<Vec<u8>> {
    let curve_private_key = OctetStringRef::new(seed)?.to_der()?;
    let algorithm = AlgorithmIdentifierRef {
        oid: ED25519_OID,
        parameters: None,
    };
    PrivateKeyInfo::new(algorithm, &curve_private_key).to_der()
}

/// The seed of an Ed25519 PKCS#8 key, v1 (Go, OpenSSL) or v2 (ring, with the public key).
fn ed25519_seed(pkcs8: &[u8]) -> Option<[u8; 32]> {
    let info = PrivateKeyInfo::from_der(pkcs8).ok()?;
    if info.algorithm.oid != ED25519_OID {
        return None;
    }
    let seed = OctetStringRef::from_der(info.private_key).ok()?;
    seed.as_bytes().try_into().ok()
}

/// Load an `ED25519 PRIVATE KEY` (PKCS#8 v1 or v2) for signing.
fn load_ed25519(pem_text: &str) -> Result<KeyPair, Error> {
    let bad = |reason: String| Error::InvalidSecrets {
        field: "certs.os.key",
        reason,
    };
    let p = pem::parse(pem_text).map_err(|e| bad(format!("not PEM: {e}")))?;
    let seed = ed25519_seed(p.contents()).ok_or_else(|| bad("not an Ed25519 PKCS#8 key".into()))?;
    let der = ed25519_pkcs8_v1(&seed).map_err(|e| bad(format!("encoding PKCS#8: {e}")))?;
    KeyPair::from_pkcs8_der_and_sign_algo(&der.as_slice().into(), &PKCS_ED25519)
        .map_err(|e| bad(format!("unusable Ed25519 key: {e}")))
}

/// SEC1 `EC PRIVATE KEY` with the named-curve parameters (Go's `x509.MarshalECPrivateKey`),
/// rebuilt from ring's PKCS#8, whose inner `ECPrivateKey` leaves the curve to the outer
/// algorithm identifier (RFC 5915 §3 makes `parameters` optional there; Go writes them).
/// Version, private key and the `[1]` public key (ring includes it) are kept as they are.
fn ec_pem(key: &KeyPair, what: &'static str) -> Result<String, Error> {
    let bad = |e: &dyn std::fmt::Display| Error::InvalidSecrets {
        field: what,
        reason: format!("unexpected PKCS#8 EC layout: {e}"),
    };
    let info = PrivateKeyInfo::from_der(key.serialized_der()).map_err(|e| bad(&e))?;
    // The named curve of the outer AlgorithmIdentifier (RFC 5480 §2.1.1).
    let curve = info.algorithm.parameters_oid().map_err(|e| bad(&e))?;
    let mut ec = EcPrivateKey::from_der(info.private_key).map_err(|e| bad(&e))?;
    ec.parameters = Some(EcParameters::NamedCurve(curve));
    let der = ec.to_der().map_err(|e| bad(&e))?;
    Ok(pem_text("EC PRIVATE KEY", der))
}

/// serde helper: PEM text in memory, base64(PEM) in YAML (siderolabs/crypto `PEMEncoded*` marshalling).
mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(pem: &str, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(pem.as_bytes()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(serde::de::Error::custom)?;
        String::from_utf8(bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_kubeadm_shape() {
        let mut rng = rand::rng();
        for _ in 0..50 {
            let t = new_token(&mut rng);
            assert!(is_token(&t), "{t}");
        }
        assert!(!is_token("abcdef0123456789abcdef"));
        assert!(!is_token("ABCDEF.0123456789abcdef"));
        assert!(!is_token("abcde.0123456789abcdef"));
    }

    #[test]
    fn ed25519_key_is_pkcs8_v1_under_the_siderolabs_pem_type() {
        let key = KeyPair::generate_for(&PKCS_ED25519).expect("key");
        let pem_text = ed25519_pem(&key).expect("pem");
        let p = pem::parse(&pem_text).expect("parse");
        assert_eq!(p.tag(), "ED25519 PRIVATE KEY");
        // Go's x509.MarshalPKCS8PrivateKey(ed25519) is 48 bytes with this 16-byte prefix.
        assert_eq!(p.contents().len(), 48);
        assert_eq!(
            hex::encode(&p.contents()[..16]),
            "302e020100300506032b657004220420"
        );
        let again = load_ed25519(&pem_text).expect("load");
        assert_eq!(again.public_key_raw(), key.public_key_raw());
    }

    /// ring's PKCS#8 (v2, with the public key) of one fixed Ed25519 key, and the PEM the
    /// hand-written DER re-wrapping of 684daa3 produced for it (Go's `MarshalPKCS8PrivateKey`).
    const FIXED_ED25519_RING_DER: &str = "3051020101300506032b657004220420610d2da657478718323ead2da36ea6f85d1990699816d8ffa184a4a7181125528121005b30fdd58a95e596ad1d1eeb4ba5999f386d50fb8efc3cc1ec38d13c6f4e40e8";
    const FIXED_ED25519_PEM: &str = "-----BEGIN ED25519 PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIGENLaZXR4cYMj6tLaNupvhdGZBpmBbY/6GEpKcYESVS
-----END ED25519 PRIVATE KEY-----
";
    /// ring's PKCS#8 of one fixed P-256 key, and the SEC1 PEM 684daa3 produced for it (Go's
    /// `MarshalECPrivateKey`: version 1, d, [0] prime256v1, [1] public point).
    const FIXED_P256_RING_DER: &str = "308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b020101042081b2e0ee6dcc2d41030377f49febe8846f5a0b3590daa719b7882574b64f77f3a144034200040ccac08211e670446377d2939610c1ad38edfa5a27e8be5242e79ab9b27271d01c92fab045378d783cf2449f1bac28a3846254145e58b982bf09e2ac7c569089";
    const FIXED_P256_PEM: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIIGy4O5tzC1BAwN39J/r6IRvWgs1kNqnGbeIJXS2T3fzoAoGCCqGSM49
AwEHoUQDQgAEDMrAghHmcERjd9KTlhDBrTjt+lon6L5SQueaubJycdAckvqwRTeN
eDzyRJ8brCijhGJUFF5YuYK/CeKsfFaQiQ==
-----END EC PRIVATE KEY-----
";

    fn fixed_key(der_hex: &str, alg: &'static rcgen::SignatureAlgorithm) -> KeyPair {
        let der = hex::decode(der_hex).expect("hex");
        let key = KeyPair::from_pkcs8_der_and_sign_algo(&der.as_slice().into(), alg).expect("key");
        assert_eq!(
            key.serialized_der(),
            der,
            "rcgen keeps ring's PKCS#8 as given"
        );
        key
    }

    #[test]
    fn key_pems_are_byte_identical_to_the_go_encodings_for_fixed_keys() {
        let ed = fixed_key(FIXED_ED25519_RING_DER, &PKCS_ED25519);
        assert_eq!(ed25519_pem(&ed).expect("ed25519 pem"), FIXED_ED25519_PEM);
        let ec = fixed_key(FIXED_P256_RING_DER, &PKCS_ECDSA_P256_SHA256);
        assert_eq!(ec_pem(&ec, "test").expect("ec pem"), FIXED_P256_PEM);
        // Loading the OS CA key back signs with the same key pair.
        let loaded = load_ed25519(FIXED_ED25519_PEM).expect("load");
        assert_eq!(loaded.public_key_raw(), ed.public_key_raw());
        // ...also from ring's own PKCS#8 v2 layout under the same PEM type.
        let v2 = pem_text("ED25519 PRIVATE KEY", ed.serialized_der().to_vec());
        assert_eq!(
            load_ed25519(&v2).expect("load v2").public_key_raw(),
            ed.public_key_raw()
        );
    }

    /// `openssl pkey -text` of a PEM's DER (an independent DER parser). The DER goes in as
    /// such: OpenSSL has no PEM type `ED25519 PRIVATE KEY` (siderolabs' name for PKCS#8), and
    /// with `-inform DER` it detects PKCS#8, SEC1 and PKCS#1 alike.
    fn openssl_pkey_text(pem_text: &str) -> String {
        use std::io::Write;
        let der = pem::parse(pem_text).expect("PEM").into_contents();
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(&der).expect("write");
        let out = std::process::Command::new("openssl")
            .args(["pkey", "-inform", "DER", "-noout", "-text", "-in"])
            .arg(f.path())
            .output()
            .expect("run openssl (scripts/install-deps.sh installs it)");
        assert!(
            out.status.success(),
            "openssl rejects {pem_text}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn every_generated_key_pem_parses_with_openssl() {
        let ed = KeyPair::generate_for(&PKCS_ED25519).expect("key");
        let ec = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let rsa = new_rsa_pem(1024).expect("rsa");
        let cases = [
            (ed25519_pem(&ed).expect("pem"), "ED25519 Private-Key"),
            (ec_pem(&ec, "test").expect("pem"), "ASN1 OID: prime256v1"),
            (FIXED_ED25519_PEM.to_string(), "ED25519 Private-Key"),
            (FIXED_P256_PEM.to_string(), "ASN1 OID: prime256v1"),
            (rsa, "Private-Key: (1024 bit, 2 primes)"),
        ];
        for (pem_text, needle) in cases {
            let text = openssl_pkey_text(&pem_text);
            assert!(text.contains(needle), "{needle:?} not in {text}");
        }
        // The public key openssl derives is ours.
        let text = openssl_pkey_text(FIXED_P256_PEM);
        let hexdump: String = text
            .lines()
            .skip_while(|l| !l.starts_with("pub:"))
            .skip(1)
            .take_while(|l| l.starts_with(' '))
            .flat_map(|l| l.trim().split(':'))
            .collect();
        let ec = fixed_key(FIXED_P256_RING_DER, &PKCS_ECDSA_P256_SHA256);
        assert_eq!(hexdump, hex::encode(ec.public_key_raw()));
    }

    #[test]
    fn os_key_of_another_algorithm_is_refused() {
        // An X25519 key (id-X25519, 1.3.101.110) has the same seed layout as Ed25519.
        let x25519 = "-----BEGIN ED25519 PRIVATE KEY-----
MC4CAQAwBQYDK2VuBCIEIGENLaZXR4cYMj6tLaNupvhdGZBpmBbY/6GEpKcYESVS
-----END ED25519 PRIVATE KEY-----
";
        let err = load_ed25519(x25519).expect_err("X25519 is not an Ed25519 key");
        assert!(err.to_string().contains("certs.os.key"), "{err}");
    }

    #[test]
    fn ec_key_is_sec1_with_named_curve() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let pem_text = ec_pem(&key, "test").expect("pem");
        let p = pem::parse(&pem_text).expect("parse");
        assert_eq!(p.tag(), "EC PRIVATE KEY");
        // from_der rejects trailing bytes; the version (1) is checked by the decoder.
        let ec = EcPrivateKey::from_der(p.contents()).expect("SEC1");
        assert_eq!(ec.private_key.len(), 32);
        let prime256v1 = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
        assert_eq!(ec.parameters, Some(EcParameters::NamedCurve(prime256v1)));
        // The uncompressed point (0x04 || X || Y).
        assert_eq!(ec.public_key, Some(key.public_key_raw()));
    }
}
