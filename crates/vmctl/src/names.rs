//! Validation of user-supplied names, sizes and MAC addresses (pure; no host access).

use crate::error::{Error, Result};

/// Checks a VM name. libvirt accepts almost anything, but the name becomes a directory in the
/// storage dir, a hostname and a file name in virsh commands, so vmctl keeps to a safe subset:
/// an RFC 1123 hostname label plus `.` and `_` inside.
pub fn validate_vm_name(name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(Error::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 63 {
        return bad("it is longer than 63 characters");
    }
    if name.contains('/') {
        return bad("it contains '/'");
    }
    if name.contains("..") {
        return bad("it contains '..'");
    }
    if name.chars().any(char::is_whitespace) {
        return bad("it contains whitespace");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return bad(&format!("it contains {c:?}"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("it must start with a letter or digit");
    }
    Ok(())
}

/// Parses a size such as `20G`, `20GiB`, `512M`, `1T` or a plain number of bytes into bytes.
/// Suffixes are binary (as `qemu-img` and virt-install read them).
pub fn parse_size(option: &str, text: &str) -> Result<u64> {
    let bad = |reason: &str| Error::InvalidOption {
        option: option.to_string(),
        value: text.to_string(),
        reason: reason.to_string(),
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| bad("expected a number with an optional K, M, G or T suffix"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad("unknown unit; use K, M, G or T")),
    };
    let bytes = n.checked_mul(mult).ok_or_else(|| bad("too large"))?;
    if bytes == 0 {
        return Err(bad("must be more than zero"));
    }
    Ok(bytes)
}

/// Parses `--memory`: a plain number means MiB (as in virt-install), otherwise a size.
pub fn parse_memory_mib(text: &str) -> Result<u64> {
    let bytes = if text.chars().all(|c| c.is_ascii_digit()) && !text.is_empty() {
        parse_size("--memory", &format!("{text}M"))?
    } else {
        parse_size("--memory", text)?
    };
    if bytes < 64 << 20 {
        return Err(Error::InvalidOption {
            option: "--memory".into(),
            value: text.into(),
            reason: "less than 64 MiB".into(),
        });
    }
    Ok(bytes >> 20)
}

/// A random locally administered MAC in QEMU's OUI 52:54:00 (the prefix libvirt itself uses).
pub fn random_mac() -> String {
    let b: [u8; 3] = rand::random();
    format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

/// Checks a MAC address given by the user and lower-cases it.
pub fn parse_mac(text: &str) -> Result<String> {
    let parts: Vec<_> = text.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok());
    if !ok {
        return Err(Error::InvalidOption {
            option: "--mac".into(),
            value: text.into(),
            reason: "expected six hex bytes like 52:54:00:12:34:56".into(),
        });
    }
    let first = u8::from_str_radix(parts[0], 16).unwrap_or(1);
    if first & 1 == 1 {
        return Err(Error::InvalidOption {
            option: "--mac".into(),
            value: text.into(),
            reason: "a multicast address cannot be a NIC address".into(),
        });
    }
    Ok(text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["e2e1", "web-01", "a.b_c", "1vm"] {
            validate_vm_name(ok).unwrap();
        }
        for bad in [
            "",
            "a/b",
            "..",
            "a..b",
            "my vm",
            "-x",
            ".hidden",
            "x\ty",
            "é",
            &"a".repeat(64),
        ] {
            assert!(validate_vm_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("--disk", "20G").unwrap(), 20 << 30);
        assert_eq!(parse_size("--disk", "512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("--disk", "1024").unwrap(), 1024);
        assert!(parse_size("--disk", "20X").is_err());
        assert!(parse_size("--disk", "G").is_err());
        assert!(parse_size("--disk", "0").is_err());
        assert_eq!(parse_memory_mib("2048").unwrap(), 2048);
        assert_eq!(parse_memory_mib("4G").unwrap(), 4096);
        assert!(parse_memory_mib("1M").is_err());
    }

    #[test]
    fn macs() {
        let m = random_mac();
        assert!(m.starts_with("52:54:00:"));
        assert_eq!(parse_mac(&m).unwrap(), m);
        assert_eq!(parse_mac("52:54:00:AA:bb:01").unwrap(), "52:54:00:aa:bb:01");
        assert!(parse_mac("01:00:5e:00:00:01").is_err());
        assert!(parse_mac("52:54:00:aa:bb").is_err());
    }
}
