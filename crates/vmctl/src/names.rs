//! Validation of user-supplied names, sizes, MAC addresses, guest users, password hashes and SSH
//! public keys (pure; no host access: callers pass in what they read through the host root).

use base64::Engine;

use crate::error::{Error, Result};

/// Checks a VM name. The name becomes the guest's hostname (cloud-init `hostname` and
/// `local-hostname`), a directory in the storage dir and an argument of virsh commands, so it must
/// be a host name label (RFC 1123 2.1, RFC 952): 1 to 63 letters, digits and '-', neither
/// first nor last a '-'. No '.' (a name is one label, not a domain) and no '_' (not a host name
/// character).
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
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return bad(&format!(
            "it contains {c:?}; the name is the guest's host name, an RFC 1123 label"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("a host name label neither starts nor ends with '-' (RFC 1123)");
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
    if parts.iter().all(|p| *p == "00") {
        return Err(Error::InvalidOption {
            option: "--mac".into(),
            value: text.into(),
            reason: "all zeros is not a NIC address".into(),
        });
    }
    let first = u8::from_str_radix(parts[0], 16).unwrap_or(1);
    // IEEE 802: the I/G bit (bit 0 of the first octet) set is a group (multicast) address.
    if first & 1 == 1 {
        return Err(Error::InvalidOption {
            option: "--mac".into(),
            value: text.into(),
            reason: "a multicast address cannot be a NIC address".into(),
        });
    }
    Ok(text.to_ascii_lowercase())
}

/// The longest user name vmctl accepts: useradd(8) allows 32 characters (LOGIN_NAME_MAX is
/// larger, but utmp's ut_user holds 32).
pub const USER_MAX: usize = 32;

/// Accounts and groups of a Debian/Ubuntu guest that a guest user must never be: cloud-init
/// would give it `NOPASSWD:ALL` sudo (or fail because the group exists). From base-passwd's
/// `passwd.master`/`group.master` and the system users of an Ubuntu 24.04 cloud image.
pub const SYSTEM_ACCOUNTS: &[&str] = &[
    // base-passwd users
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    // base-passwd groups
    "adm",
    "tty",
    "disk",
    "kmem",
    "dialout",
    "fax",
    "voice",
    "cdrom",
    "floppy",
    "tape",
    "sudo",
    "audio",
    "dip",
    "operator",
    "src",
    "shadow",
    "utmp",
    "video",
    "sasl",
    "plugdev",
    "staff",
    "users",
    "nogroup",
    // system users and groups of an Ubuntu cloud image
    "messagebus",
    "syslog",
    "sshd",
    "uuidd",
    "tcpdump",
    "tss",
    "landscape",
    "pollinate",
    "fwupd-refresh",
    "usbmux",
    "dnsmasq",
    "lxd",
    "polkitd",
    "netdev",
    "input",
    "kvm",
    "render",
    "crontab",
    "sgx",
    "ssl-cert",
    "admin",
    "wheel",
];

/// The system accounts (uid below 1000, the `FIRST_UID` of adduser.conf(5)) of a passwd(5)
/// text: `(name, uid)`.
pub fn system_accounts(passwd: &str) -> Vec<(String, u32)> {
    passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let uid: u32 = f.get(2)?.parse().ok()?;
            (uid < 1000 && !f[0].is_empty()).then(|| (f[0].to_string(), uid))
        })
        .collect()
}

/// Checks `--user`: adduser's default `NAME_REGEX` `^[a-z][-a-z0-9_]*\$?$` (adduser.conf(5)),
/// at most [`USER_MAX`] characters, without the trailing `$` (that marks Samba machine accounts),
/// and not a system account: not in [`SYSTEM_ACCOUNTS`], not `systemd-*`, not one of
/// `host_system` (this host's accounts below uid 1000, from [`system_accounts`]).
pub fn validate_user(user: &str, host_system: &[(String, u32)]) -> Result<()> {
    let bad = |reason: String| {
        Err(Error::InvalidOption {
            option: "--user".into(),
            value: user.into(),
            reason,
        })
    };
    if user.is_empty() {
        return bad("it is empty".into());
    }
    if user.chars().count() > USER_MAX {
        return bad(format!("longer than {USER_MAX} characters"));
    }
    if let Some(stem) = user.strip_suffix('$')
        && is_debian_user_name(stem)
    {
        return bad("a name ending in '$' is a Samba machine account, not a login".into());
    }
    if !is_debian_user_name(user) {
        return bad(
            "not a user name by adduser's NAME_REGEX ^[a-z][-a-z0-9_]*$ (adduser.conf(5)): a \
             lowercase letter, then lowercase letters, digits, '-' or '_'"
                .into(),
        );
    }
    let why = "the guest user gets password-less sudo";
    if SYSTEM_ACCOUNTS.contains(&user) || user.starts_with("systemd-") {
        return bad(format!(
            "a system account or group of Debian/Ubuntu guests; {why}"
        ));
    }
    if let Some((_, uid)) = host_system.iter().find(|(n, _)| n == user) {
        return bad(format!(
            "a system account on this host (uid {uid}) and likely in the guest; {why}"
        ));
    }
    Ok(())
}

fn is_debian_user_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// The characters of crypt(3) salts and hashes ("hash64", crypt(5)).
fn is_hash64(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
}

/// Checks `--password-hash` against the formats of crypt(5) (libxcrypt): yescrypt `$y$`,
/// gost-yescrypt `$gy$`, scrypt `$7$`, bcrypt `$2b$`/`$2y$`/`$2a$`, sha512crypt `$6$` and
/// sha256crypt `$5$` (each with optional `rounds=N$`). md5crypt `$1$` is refused as too weak, and
/// the legacy methods (DES, bigcrypt, `$3$` NT, `$md5`, `$sha1`) are not accepted. The error
/// never repeats the hash.
pub fn validate_password_hash(hash: &str) -> Result<()> {
    let bad = |reason: String| {
        Err(Error::InvalidOption {
            option: "--password-hash".into(),
            value: "(hidden)".into(),
            reason,
        })
    };
    let fmt = |detail: &str| {
        format!(
            "not a crypt(3) hash ($y$…, $6$…; crypt(5) lists the formats): {detail}; plaintext \
             passwords are refused"
        )
    };
    if hash.starts_with("$1$") {
        return bad(
            "MD5-crypt ($1$) is too weak to use; make a yescrypt or SHA-512 hash with \
             `mkpasswd -m yescrypt` or `openssl passwd -6`"
                .into(),
        );
    }
    let Some(rest) = hash.strip_prefix('$') else {
        return bad(fmt("it does not start with '$'"));
    };
    let fields: Vec<&str> = rest.split('$').collect();
    let ok = match fields.as_slice() {
        // $y$PARAMS$SALT$HASH: [./A-Za-z0-9]+ / {0,86} / {43}
        ["y" | "gy", params, salt, h] => {
            !params.is_empty()
                && is_hash64(params)
                && salt.len() <= 86
                && is_hash64(salt)
                && h.len() == 43
                && is_hash64(h)
        }
        // $7$SALT$HASH: {11,97} / {43}
        ["7", salt, h] => {
            (11..=97).contains(&salt.len()) && is_hash64(salt) && h.len() == 43 && is_hash64(h)
        }
        // $2b$CC$SALTHASH: two-digit cost 04..31, then 53 characters
        ["2a" | "2b" | "2y", cost, h] => {
            cost.len() == 2
                && cost.parse::<u8>().is_ok_and(|c| (4..=31).contains(&c))
                && h.len() == 53
                && is_hash64(h)
        }
        ["5" | "6", more @ ..] => {
            let len = if fields[0] == "6" { 86 } else { 43 };
            let more = match more {
                [r, tail @ ..] if r.starts_with("rounds=") => {
                    let n = &r["rounds=".len()..];
                    if !(n.len() >= 2
                        && !n.starts_with('0')
                        && n.bytes().all(|b| b.is_ascii_digit()))
                    {
                        return bad(fmt("the rounds= field is not a number of rounds"));
                    }
                    tail
                }
                other => other,
            };
            // Salt: 1 to 16 characters other than '$', ':' and newline (crypt(5)); vmctl
            // also keeps to printable ASCII, which is all that salt generators produce.
            matches!(more, [salt, h]
                if (1..=16).contains(&salt.len())
                    && salt.bytes().all(|b| b.is_ascii_graphic() && b != b':')
                    && h.len() == len
                    && is_hash64(h))
        }
        _ => return bad(fmt("an unknown or unsupported method")),
    };
    if ok {
        Ok(())
    } else {
        bad(fmt("its fields have the wrong length or characters"))
    }
}

/// The SSH public key types vmctl accepts (sshd(8) AUTHORIZED_KEYS FILE FORMAT). `ssh-dss` is
/// refused: OpenSSH disabled DSA by default in 7.0 and removed it in 10.0.
pub const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "sk-ssh-ed25519@openssh.com",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa",
];

/// The characters vmctl never writes into a guest's files or shows raw: the one rule the
/// seeds apply too.
pub use guest_media::text::is_unsafe_text_char;

/// Checks one line of an OpenSSH public key file (`TYPE BASE64 [COMMENT]`, sshd(8)) and returns
/// it normalised (single spaces). The type must be one of [`SSH_KEY_TYPES`], the blob valid
/// base64 whose first length-prefixed string (RFC 4253 6.6) is that same type and has key
/// material after it, and the comment free of [`is_unsafe_text_char`]. authorized_keys options
/// before the type are refused: the file vmctl wants is what `ssh-keygen` wrote. The reason
/// never quotes the line (the file may be something else entirely).
pub fn parse_ssh_public_key(line: &str) -> std::result::Result<String, String> {
    let line = line.trim();
    let mut parts = line.splitn(3, [' ', '\t']);
    let ty = parts.next().unwrap_or_default();
    let blob = parts.next().unwrap_or_default().trim();
    let comment = parts.next().unwrap_or_default().trim();
    if !SSH_KEY_TYPES.contains(&ty) {
        if ty == "ssh-dss" {
            return Err("DSA keys (ssh-dss) are refused: OpenSSH no longer accepts them".into());
        }
        let later = line
            .split([' ', '\t'])
            .skip(1)
            .any(|w| SSH_KEY_TYPES.contains(&w) || w == "ssh-dss");
        if later {
            return Err(
                "authorized_keys options before the key type are not accepted; pass the .pub \
                 file ssh-keygen wrote"
                    .into(),
            );
        }
        return Err(format!(
            "the first field is not a known key type ({})",
            SSH_KEY_TYPES.join(", ")
        ));
    }
    if blob.is_empty() {
        return Err("no key blob after the key type".into());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|_| "the key blob is not base64".to_string())?;
    let embedded = bytes
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| bytes.get(4..4 + n));
    let Some(embedded) = embedded else {
        return Err("the key blob is too short to hold a key".into());
    };
    if embedded != ty.as_bytes() {
        let inner = std::str::from_utf8(embedded)
            .ok()
            .filter(|t| SSH_KEY_TYPES.contains(t) || *t == "ssh-dss");
        return Err(match inner {
            Some(t) => format!("the line says {ty} but the key blob holds an {t} key"),
            None => format!("the line says {ty} but the key blob holds another type"),
        });
    }
    if bytes.len() <= 4 + embedded.len() {
        return Err("the key blob has no key after its type".into());
    }
    if let Some(c) = comment.chars().find(|c| is_unsafe_text_char(*c)) {
        return Err(format!(
            "the comment holds U+{:04X}, a control, bidi or non-printable character; remove it \
             (the key goes into cloud-init's YAML and authorized_keys)",
            u32::from(c)
        ));
    }
    Ok(if comment.is_empty() {
        format!("{ty} {blob}")
    } else {
        format!("{ty} {blob} {comment}")
    })
}

#[cfg(test)]
mod tests;
