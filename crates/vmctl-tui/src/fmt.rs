//! Human-formatted values: binary units (KiB, MiB, GiB) and rates in B/s.

const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/// `bytes` as `512 B`, `1.5 KiB`, `12.3 GiB`.
pub fn bytes(bytes: f64) -> String {
    let mut v = bytes.max(0.0);
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} B")
    } else if v < 10.0 {
        format!("{v:.1} {}", UNITS[i])
    } else {
        format!("{v:.0} {}", UNITS[i])
    }
}

pub fn kib(kib: u64) -> String {
    bytes(kib as f64 * 1024.0)
}

/// A rate, or `-` when there is none (first refresh, a stopped VM, the test driver).
pub fn rate(bps: Option<f64>) -> String {
    bps.map_or_else(|| "-".into(), |b| format!("{}/s", bytes(b)))
}

/// A rate in few characters for a table cell: `512B`, `1.5K`, `12M` (bytes per second, binary
/// units).
pub fn compact(bps: f64) -> String {
    let units = ["B", "K", "M", "G", "T"];
    let mut v = bps.max(0.0);
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 || v >= 10.0 {
        format!("{v:.0}{}", units[i])
    } else {
        format!("{v:.1}{}", units[i])
    }
}

/// Two rates as `read/write` (`12M/340K`), or `-` without them.
pub fn rate_pair(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (None, None) => "-".into(),
        (a, b) => format!(
            "{}/{}",
            a.map_or_else(|| "-".into(), compact),
            b.map_or_else(|| "-".into(), compact)
        ),
    }
}

/// Memory as `used/assigned`, or the assigned amount alone.
pub fn memory(used_kib: Option<u64>, kib_total: u64) -> String {
    match used_kib {
        Some(u) => format!("{}/{}", kib(u), kib(kib_total)),
        None => kib(kib_total),
    }
}

pub fn percent(p: Option<f64>) -> String {
    p.map_or_else(|| "-".into(), |p| format!("{p:.1}"))
}

/// An age in words: `12 s`, `5 min`, `3 h`, `2 d`.
pub fn age(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86399 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(0.0), "0 B");
        assert_eq!(bytes(1023.0), "1023 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(kib(4 * 1024 * 1024), "4.0 GiB");
        assert_eq!(kib(20 * 1024 * 1024), "20 GiB");
        assert_eq!(rate(Some(2048.0)), "2.0 KiB/s");
        assert_eq!(rate(None), "-");
        assert_eq!(memory(Some(1024), 2048), "1.0 MiB/2.0 MiB");
        assert_eq!(age(125), "2 min");
        assert_eq!(
            rate_pair(Some(12.5 * 1048576.0), Some(340.0 * 1024.0)),
            "12M/340K"
        );
        assert_eq!(rate_pair(Some(0.0), Some(1536.0)), "0B/1.5K");
        assert_eq!(rate_pair(None, None), "-");
    }
}
