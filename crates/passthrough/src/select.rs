//! GPU selectors: a BDF (`0000:01:00.0` or `01:00.0`), an index from `gpu status`, `all`, or `group:N`.

use std::fmt;
use std::str::FromStr;

use hwdetect::{Gpu, HostFacts};

use crate::Error;

/// One way of naming GPUs on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A full BDF (`0000:01:00.0`); a short one (`01:00.0`) is completed with domain 0000.
    Bdf(String),
    /// The position in `gpu status` (GPUs sorted by BDF, from 0).
    Index(usize),
    All,
    Group(u32),
}

impl FromStr for Selector {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::ParseSelector {
            selector: s.to_string(),
        };
        let s_trim = s.trim();
        if s_trim.eq_ignore_ascii_case("all") {
            return Ok(Self::All);
        }
        if let Some(n) = s_trim.strip_prefix("group:") {
            return n.parse().map(Self::Group).map_err(|_| bad());
        }
        if s_trim.chars().all(|c| c.is_ascii_digit()) && !s_trim.is_empty() {
            return s_trim.parse().map(Self::Index).map_err(|_| bad());
        }
        normalize_bdf(s_trim).map(Self::Bdf).ok_or_else(bad)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bdf(b) => f.write_str(b),
            Self::Index(i) => write!(f, "{i}"),
            Self::All => f.write_str("all"),
            Self::Group(g) => write!(f, "group:{g}"),
        }
    }
}

/// `01:00.0` → `0000:01:00.0`; validates hex fields and the function digit (0-7).
fn normalize_bdf(s: &str) -> Option<String> {
    let s = s.to_ascii_lowercase();
    let full = if s.matches(':').count() == 1 {
        format!("0000:{s}")
    } else {
        s
    };
    let (domain, rest) = full.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (dev, func) = rest.split_once('.')?;
    let hex = |v: &str, len: usize| v.len() == len && v.chars().all(|c| c.is_ascii_hexdigit());
    let func_ok = func.len() == 1 && matches!(func.as_bytes()[0], b'0'..=b'7');
    (hex(domain, 4) && hex(bus, 2) && hex(dev, 2) && func_ok).then_some(full)
}

/// The GPUs the selectors name, sorted by BDF and without duplicates. A BDF of any function of a
/// GPU (e.g. its audio function) selects that GPU.
pub fn resolve<'a>(facts: &'a HostFacts, selectors: &[Selector]) -> Result<Vec<&'a Gpu>, Error> {
    let mut out: Vec<&Gpu> = Vec::new();
    for sel in selectors {
        let hits: Vec<&Gpu> = match sel {
            Selector::All => facts.gpus.iter().collect(),
            Selector::Index(i) => facts.gpus.get(*i).into_iter().collect(),
            Selector::Group(g) => facts
                .gpus
                .iter()
                .filter(|gpu| gpu.iommu_group == Some(*g))
                .collect(),
            Selector::Bdf(b) => facts
                .gpus
                .iter()
                .filter(|gpu| gpu.bdf == *b || gpu.functions.contains(b))
                .collect(),
        };
        if hits.is_empty() {
            return Err(Error::UnknownSelector {
                selector: sel.to_string(),
                available: facts
                    .gpus
                    .iter()
                    .enumerate()
                    .map(|(i, g)| format!("{i}: {} {}", g.bdf, g.name))
                    .collect(),
            });
        }
        out.extend(hits);
    }
    out.sort_by(|a, b| a.bdf.cmp(&b.bdf));
    out.dedup_by(|a, b| a.bdf == b.bdf);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_selector_form() {
        assert_eq!(
            "01:00.0".parse::<Selector>().unwrap(),
            Selector::Bdf("0000:01:00.0".into())
        );
        assert_eq!(
            "0000:2B:00.0".parse::<Selector>().unwrap(),
            Selector::Bdf("0000:2b:00.0".into())
        );
        assert_eq!("2".parse::<Selector>().unwrap(), Selector::Index(2));
        assert_eq!("ALL".parse::<Selector>().unwrap(), Selector::All);
        assert_eq!("group:14".parse::<Selector>().unwrap(), Selector::Group(14));
        for bad in [
            "",
            "group:x",
            "01:00",
            "01:00.8",
            "zz:00.0",
            "0000:01:00.0.1",
            "gpu0",
        ] {
            assert!(bad.parse::<Selector>().is_err(), "{bad} should not parse");
        }
    }
}
