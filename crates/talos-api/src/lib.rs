//! A native client for the Talos machine API (apid, TCP 50000, mutual TLS): bootstrap etcd, fetch
//! the admin kubeconfig, and manage etcd membership, without `talosctl`.
//!
//! The API is blocking: a [`Client`] owns a current-thread tokio runtime and talks to one node.
//! Do not call it from inside another tokio runtime.
//!
//! ```no_run
//! # fn main() -> Result<(), talos_api::Error> {
//! use std::time::Duration;
//! let yaml = std::fs::read_to_string("talosconfig").unwrap_or_default();
//! let (creds, endpoints) = talos_api::Credentials::from_talosconfig(&yaml)?;
//! let node = "198.18.0.10".parse().expect("an IP");
//! let client = talos_api::Client::connect(node, talos_api::APID_PORT, &creds, Duration::from_secs(10))?;
//! client.bootstrap()?;
//! let kubeconfig = client.kubeconfig()?;
//! # let _ = (endpoints, kubeconfig); Ok(()) }
//! ```

mod archive;
mod client;
mod credentials;
mod error;
pub mod proto;
mod retry;

pub use archive::{MAX_ARCHIVE_BYTES, MAX_KUBECONFIG_BYTES};
pub use client::{Bootstrapped, Client, EtcdMember};
pub use credentials::Credentials;
pub use error::{Error, TlsFailure};
pub use retry::retry_until;

/// The port apid listens on.
pub const APID_PORT: u16 = 50000;
