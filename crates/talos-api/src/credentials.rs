//! Client credentials for apid: the talosconfig CA (to verify the node), and the client
//! certificate and key (to be admitted), turned into one rustls client configuration.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use serde::Deserialize;

use crate::Error;

/// A rustls client configuration with the talosconfig CA as the only trust root and the
/// talosconfig client certificate. The same for every node of a cluster.
#[derive(Clone)]
pub struct Credentials {
    pub(crate) config: Arc<ClientConfig>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configuration holds the private key: print nothing of it.
        f.write_str("Credentials { .. }")
    }
}

#[derive(Deserialize)]
struct Talosconfig {
    context: Option<String>,
    #[serde(default)]
    contexts: BTreeMap<String, Context>,
}

#[derive(Deserialize)]
struct Context {
    #[serde(default)]
    endpoints: Vec<String>,
    ca: Option<String>,
    crt: Option<String>,
    key: Option<String>,
}

/// Talos's own cipher-suite choice does not matter here: rustls's defaults (TLS 1.3 and
/// 1.2 AEAD suites, Ed25519/ECDSA/RSA signatures) cover what Talos's Go TLS stack offers.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Credentials {
    /// From PEM text: the CA certificate(s) that sign apid's certificate, the client
    /// certificate (chain) and its private key. Keys may be PKCS#8 (`PRIVATE KEY`, or Talos's
    /// `ED25519 PRIVATE KEY` label for the same encoding), SEC1 (`EC PRIVATE KEY`) or PKCS#1.
    pub fn from_pem(ca_pem: &str, crt_pem: &str, key_pem: &str) -> Result<Credentials, Error> {
        let bad = |what: &'static str| {
            move |e: Box<dyn std::error::Error + Send + Sync>| Error::Credentials {
                what,
                source: e,
            }
        };
        let mut roots = rustls::RootCertStore::empty();
        let ca = certificates(ca_pem).map_err(bad("ca"))?;
        for c in ca {
            roots.add(c).map_err(|e| bad("ca")(Box::new(e)))?;
        }
        let chain = certificates(crt_pem).map_err(bad("crt"))?;
        let key = private_key(key_pem).map_err(bad("key"))?;

        let provider = provider();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| bad("ca")(Box::new(e)))?;
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("crt")(Box::new(e)))?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(chain, key)
            .map_err(|e| bad("key")(Box::new(e)))?;
        // gRPC runs over HTTP/2, and grpc-go servers refuse TLS connections without ALPN h2.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Credentials {
            config: Arc::new(config),
        })
    }

    /// From a `talosconfig` (as `talosctl gen config` writes it): the current context's
    /// base64-encoded `ca`, `crt` and `key`, and its `endpoints`.
    pub fn from_talosconfig(yaml: &str) -> Result<(Credentials, Vec<String>), Error> {
        let cfg: Talosconfig = serde_yaml::from_str(yaml).map_err(|e| Error::Talosconfig {
            reason: format!("not a talosconfig: {e}"),
        })?;
        let name = match cfg.context {
            Some(n) if !n.is_empty() => n,
            _ => {
                return Err(Error::Talosconfig {
                    reason: "no current context".into(),
                });
            }
        };
        let ctx = cfg.contexts.get(&name).ok_or_else(|| Error::Talosconfig {
            reason: format!("context {name:?} is not in contexts"),
        })?;
        let field = |what: &'static str, v: &Option<String>| -> Result<String, Error> {
            let b64 = v.as_deref().ok_or_else(|| Error::Talosconfig {
                reason: format!("context {name:?} has no {what}"),
            })?;
            let bytes = STANDARD
                .decode(b64.trim())
                .map_err(|e| Error::Credentials {
                    what,
                    source: Box::new(e),
                })?;
            String::from_utf8(bytes).map_err(|e| Error::Credentials {
                what,
                source: Box::new(e),
            })
        };
        let creds = Credentials::from_pem(
            &field("ca", &ctx.ca)?,
            &field("crt", &ctx.crt)?,
            &field("key", &ctx.key)?,
        )?;
        Ok((creds, ctx.endpoints.clone()))
    }
}

fn certificates(
    text: &str,
) -> Result<Vec<CertificateDer<'static>>, Box<dyn std::error::Error + Send + Sync>> {
    let certs: Vec<_> = pem::parse_many(text)?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    Ok(certs)
}

fn private_key(
    text: &str,
) -> Result<PrivateKeyDer<'static>, Box<dyn std::error::Error + Send + Sync>> {
    for p in pem::parse_many(text)? {
        let key = match p.tag() {
            // Go's x509.MarshalPKCS8PrivateKey output; Talos labels Ed25519 keys its own way.
            "PRIVATE KEY" | "ED25519 PRIVATE KEY" => {
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(p.into_contents()))
            }
            "EC PRIVATE KEY" => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(p.into_contents())),
            "RSA PRIVATE KEY" => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(p.into_contents())),
            _ => continue,
        };
        return Ok(key);
    }
    Err("no private key block".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn talosconfig_without_context_is_refused_with_the_reason() {
        let e = Credentials::from_talosconfig("contexts: {}\n").unwrap_err();
        assert!(e.to_string().contains("no current context"), "{e}");
    }

    #[test]
    fn talosconfig_naming_a_missing_context_is_refused() {
        let e = Credentials::from_talosconfig("context: a\ncontexts: {b: {}}\n").unwrap_err();
        assert!(e.to_string().contains("\"a\" is not in contexts"), "{e}");
    }

    #[test]
    fn key_that_is_not_pem_is_refused() {
        let e = private_key("hello").unwrap_err();
        assert!(e.to_string().contains("no private key"), "{e}");
    }
}
