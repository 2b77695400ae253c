//! Debian package versions: dpkg's ordering, so the vmctl phase can tell an upgrade from a
//! downgrade, and the version in a `.deb` file name.
//!
//! The ordering is deb-version(7): `[epoch:]upstream[-revision]`; epochs compare as numbers,
//! then upstream and revision each compare as alternating runs of non-digits (letters sort
//! before other characters, `~` before everything, even the end of the string) and digits
//! (as numbers). `dpkg --compare-versions` is the oracle in the tests.

use std::cmp::Ordering;

/// Compares two version strings the way dpkg does.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| compare_part(ua, ub))
        .then_with(|| compare_part(ra, rb))
}

/// `(epoch, upstream, revision)`; a missing or unparsable epoch is 0, a missing revision "".
fn split(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) => (e.parse().unwrap_or(0), rest),
        None => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((up, rev)) => (epoch, up, rev),
        None => (epoch, rest, ""),
    }
}

/// The weight of a non-digit position; `None` is the end of the string.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn compare_part(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        // The non-digit run, character by character.
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (wa, wb) = (weight(a.get(i).copied()), weight(b.get(j).copied()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            i += 1;
            j += 1;
        }
        // The digit run, as a number of any length: skip leading zeros, then the longer run is
        // larger, else the first differing digit decides.
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// The version in a `.deb` file name `<package>_<version>_<arch>.deb` (dpkg-name(1)'s
/// convention, which `packaging/build-debs.sh` follows), if the name has that shape and
/// belongs to `package`.
pub fn from_file_name<'a>(name: &'a str, package: &str) -> Option<&'a str> {
    let rest = name.strip_suffix(".deb")?.strip_prefix(package)?;
    let rest = rest.strip_prefix('_')?;
    let (version, arch) = rest.rsplit_once('_')?;
    (!version.is_empty() && !arch.is_empty()).then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs in ascending order, including the corner cases of deb-version(7).
    const ASCENDING: &[&str] = &[
        "0.0.9",
        "0.1.0~rc1",
        "0.1.0",
        "0.1.0-1",
        "0.1.0-1ubuntu1",
        "0.1.0-2",
        "0.1.0+git20261122",
        "0.1.0+git20261122.1",
        "0.1.1",
        "0.9.0",
        "0.10.0",
        "0.10.0a",
        "0.10.0.0",
        "1.0",
        "1.0.0",
        "1:0.0.1",
        "2:0.0.1",
    ];

    #[test]
    fn ascending_list_is_strictly_ascending() {
        for w in ASCENDING.windows(2) {
            assert_eq!(compare(w[0], w[1]), Ordering::Less, "{} < {}", w[0], w[1]);
            assert_eq!(
                compare(w[1], w[0]),
                Ordering::Greater,
                "{} > {}",
                w[1],
                w[0]
            );
        }
    }

    #[test]
    fn equal_forms() {
        for (a, b) in [
            ("1.0", "1.00"),
            ("0:1.0", "1.0"),
            ("1.0-0", "1.0-0"),
            ("01", "1"),
        ] {
            assert_eq!(compare(a, b), Ordering::Equal, "{a} = {b}");
        }
    }

    /// dpkg itself agrees on every pair (it is on every Debian/Ubuntu machine).
    #[test]
    fn agrees_with_dpkg_compare_versions() {
        if std::process::Command::new("dpkg")
            .arg("--version")
            .output()
            .is_err()
        {
            // Under GVB_LAB=1 every tool a test uses must be there: a skip would hide a gap.
            assert_ne!(
                std::env::var("GVB_LAB").as_deref(),
                Ok("1"),
                "GVB_LAB=1 but dpkg is not installed"
            );
            eprintln!("skipped: dpkg not found");
            return;
        }
        let extra = [
            "1.0~",
            "1.0~~",
            "1.0~a",
            "1.0-1~bpo1",
            "1.0a~",
            "1.0+",
            "1.0.",
        ];
        let all: Vec<&str> = ASCENDING.iter().copied().chain(extra).collect();
        for a in &all {
            for b in &all {
                let ours = compare(a, b);
                let op = match ours {
                    Ordering::Less => "lt",
                    Ordering::Equal => "eq",
                    Ordering::Greater => "gt",
                };
                let ok = std::process::Command::new("dpkg")
                    .args(["--compare-versions", a, op, b])
                    .status()
                    .expect("run dpkg")
                    .success();
                assert!(ok, "dpkg disagrees: {a} {op} {b}");
            }
        }
    }

    #[test]
    fn version_from_file_name() {
        assert_eq!(
            from_file_name("vmctl_0.1.0_amd64.deb", "vmctl"),
            Some("0.1.0")
        );
        assert_eq!(
            from_file_name("vmctl_0.2.0-1+git.ab12_amd64.deb", "vmctl"),
            Some("0.2.0-1+git.ab12")
        );
        assert_eq!(from_file_name("vmctl.deb", "vmctl"), None);
        assert_eq!(from_file_name("vmctl_amd64.deb", "vmctl"), None);
        assert_eq!(from_file_name("vmctlx_1_amd64.deb", "vmctl"), None);
    }
}
