//! Checks of the inputs a machine config is made from: the Kubernetes API endpoint, the cluster
//! name, MAC addresses.

use crate::Error;

/// The host of `https://HOST:PORT[/]`; anything else is refused.
pub fn endpoint_host(endpoint: &str) -> Result<&str, Error> {
    let bad = |why: &str| Error::InvalidConfigInput {
        field: "endpoint",
        reason: format!("{endpoint:?} {why}; expected https://IP:6443"),
    };
    let rest = endpoint
        .strip_prefix("https://")
        .ok_or_else(|| bad("is not an https:// URL"))?;
    let hostport = rest.strip_suffix('/').unwrap_or(rest);
    if hostport.is_empty() || hostport.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad("is not of the form https://HOST[:PORT]"));
    }
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("has an unclosed '['"))?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return Err(bad("has a bad port"));
        }
        h
    } else {
        match hostport.split_once(':') {
            Some((h, port)) if is_port(port) => h,
            Some(_) => return Err(bad("has a bad port")),
            None => hostport,
        }
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    Ok(host)
}

fn is_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u16>().is_ok_and(|n| n > 0)
}

/// A cluster name is a DNS label (it names the kubeconfig context and the talosconfig context).
pub fn validate_cluster_name(name: &str) -> Result<(), Error> {
    if is_dns_label(name) {
        Ok(())
    } else {
        Err(Error::InvalidConfigInput {
            field: "cluster name",
            reason: format!(
                "{name:?} must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'"
            ),
        })
    }
}

pub(super) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

pub(super) fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A Kubernetes label value: empty, or at most 63 letters, digits, '-', '_' and '.', starting
/// and ending with a letter or digit.
pub(super) fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
}

/// A Kubernetes label key: `[PREFIX/]NAME`, PREFIX a DNS subdomain (at most 253 characters),
/// NAME a non-empty label value.
pub(super) fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    !name.is_empty()
        && is_label_value(name)
        && prefix.is_none_or(|p| p.len() <= 253 && p.split('.').all(is_dns_label))
}

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn label_keys_and_values_follow_kubernetes_syntax() {
        for ok in ["nvidia.com/gpu.present", "role", "a_b.c-d", "k8s.io/x"] {
            assert!(is_label_key(ok), "{ok}");
        }
        for bad in [
            "",
            "/x",
            "Nvidia.com/x",
            "a/b/c",
            "-x",
            "x-",
            "a b",
            &"x".repeat(64),
        ] {
            assert!(!is_label_key(bad), "{bad}");
        }
        for ok in ["", "true", "A-1.b_c"] {
            assert!(is_label_value(ok), "{ok}");
        }
        for bad in ["-a", "a-", "a/b", &"v".repeat(64)] {
            assert!(!is_label_value(bad), "{bad}");
        }
    }
}
