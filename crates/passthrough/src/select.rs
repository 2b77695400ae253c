//! GPU selectors, one grammar for `vmctl` and `gpu-vm-bootstrap`: a BDF (`0000:01:00.0` or
//! `01:00.0`), an index from `gpu status`, `all`, or `group:N`; and the default set when none is
//! given.

use std::fmt;
use std::str::FromStr;

use hwdetect::{Gpu, HostFacts};

use crate::{Attachment, Error, Refusal, check};

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

/// Parses `--gpu` values as both binaries take them: each value one selector or a
/// comma-separated list of them.
pub fn parse_selectors(raw: &[String]) -> Result<Vec<Selector>, Error> {
    raw.iter()
        .flat_map(|s| s.split(','))
        .map(str::parse)
        .collect()
}

/// The GPUs a VM gets when no selector is given (`vmctl create --gpu`, `vmctl gpu attach`,
/// `gpu-vm-bootstrap --gpu-mode passthrough`), and why each other GPU was left out: every NVIDIA
/// GPU that is not the boot VGA device, is not attached to a VM other than `target_vm`, and
/// whose IOMMU group holds nothing but the functions of GPUs in the set. GPUs whose groups are
/// not known yet (IOMMU off, before the reboot that enables it) stay in: the checks report them.
pub fn default_set<'a>(
    facts: &'a HostFacts,
    target_vm: Option<&str>,
    attachments: &[Attachment],
) -> (Vec<&'a Gpu>, Vec<Refusal>) {
    let mut excluded = Vec::new();
    let mut kept: Vec<&Gpu> = Vec::new();
    for gpu in &facts.gpus {
        let why: Vec<Refusal> = check(facts, &[gpu], target_vm, attachments, &[])
            .into_iter()
            .filter(|r| {
                matches!(
                    r,
                    Refusal::BootVga { .. } | Refusal::AttachedElsewhere { .. }
                )
            })
            .collect();
        if why.is_empty() {
            kept.push(gpu);
        } else {
            excluded.extend(why);
        }
    }
    // Isolation is judged against the set: GPUs sharing a group may go together, but not with
    // a device (or an excluded GPU) that stays on the host. Dropping one GPU can strand another
    // of its group, so repeat until nothing changes.
    loop {
        let refusals = check(facts, &kept, target_vm, attachments, &[]);
        let shared: Vec<Refusal> = refusals
            .into_iter()
            .filter(|r| matches!(r, Refusal::NotIsolated { .. }))
            .collect();
        if shared.is_empty() {
            break;
        }
        kept.retain(|g| !shared.iter().any(|r| r.gpu() == g.bdf));
        excluded.extend(shared);
    }
    excluded.sort_by(|a, b| a.gpu().cmp(b.gpu()));
    (kept, excluded)
}

/// The GPUs `selectors` name ([`resolve`]), or with no selector the [`default_set`]; an empty
/// default set is [`Error::NothingQualifies`] with every GPU's reason. The selected GPUs are not
/// checked here: [`check`] does that, so that `--force` can override what it may.
pub fn select<'a>(
    facts: &'a HostFacts,
    selectors: &[Selector],
    target_vm: Option<&str>,
    attachments: &[Attachment],
) -> Result<Vec<&'a Gpu>, Error> {
    if !selectors.is_empty() {
        return resolve(facts, selectors);
    }
    let (kept, excluded) = default_set(facts, target_vm, attachments);
    if kept.is_empty() {
        return Err(Error::NothingQualifies { excluded });
    }
    Ok(kept)
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

    fn host(name: &str) -> HostFacts {
        let tree = fixture_builder::build_host(name);
        hwdetect::detect(&hostio::HostRoot::new(tree.path()))
    }

    fn bdfs(gpus: &[&Gpu]) -> Vec<String> {
        gpus.iter().map(|g| g.bdf.clone()).collect()
    }

    #[test]
    fn no_selector_means_isolated_gpus_that_are_not_boot_vga_nor_held_by_another_vm() {
        // GT 710 (04:00.0): boot VGA in a shared group; RTX 2070 SUPER (2b:00.0): isolated.
        let facts = host("amd-b550m-gt710-rtx2070s");
        assert_eq!(
            bdfs(&select(&facts, &[], Some("vm1"), &[]).unwrap()),
            ["0000:2b:00.0"]
        );
        // `all` still means every GPU: the checks then refuse the boot VGA.
        assert_eq!(
            select(&facts, &[Selector::All], None, &[]).unwrap().len(),
            2
        );
        let held = Attachment {
            bdf: "0000:2b:00.0".into(),
            vm: "vm2".into(),
            live: true,
            config: true,
        };
        // Held by vm2: nothing is left for vm1, but vm2 itself may have it.
        assert!(select(&facts, &[], Some("vm1"), std::slice::from_ref(&held)).is_err());
        assert_eq!(
            bdfs(&select(&facts, &[], Some("vm2"), std::slice::from_ref(&held)).unwrap()),
            ["0000:2b:00.0"]
        );
    }

    #[test]
    fn an_empty_default_set_names_each_excluded_gpu_and_why() {
        let facts = host("amd-b550m-gt710-rtx2070s");
        let held = Attachment {
            bdf: "0000:2b:00.1".into(),
            vm: "vm2".into(),
            live: true,
            config: true,
        };
        let err = select(&facts, &[], Some("vm1"), &[held]).unwrap_err();
        let Error::NothingQualifies { excluded } = &err else {
            panic!("{err}");
        };
        let kinds: Vec<(&str, bool)> = excluded
            .iter()
            .map(|r| (r.gpu(), matches!(r, Refusal::BootVga { .. })))
            .collect();
        assert!(kinds.contains(&("0000:04:00.0", true)), "{kinds:?}");
        assert!(
            excluded
                .iter()
                .any(|r| matches!(r, Refusal::AttachedElsewhere { gpu, vm } if gpu == "0000:2b:00.0" && vm == "vm2")),
            "{excluded:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("boot VGA") && msg.contains("vm2"), "{msg}");
        let none = select(&HostFacts::default(), &[], None, &[]).unwrap_err();
        assert_eq!(
            none.to_string(),
            "this host has no NVIDIA GPU to pass through"
        );
    }

    #[test]
    fn parse_selectors_splits_commas_and_rejects_a_bad_one() {
        let raw = vec!["01:00.0,1".to_string(), "group:3".to_string()];
        assert_eq!(
            parse_selectors(&raw).unwrap(),
            [
                Selector::Bdf("0000:01:00.0".into()),
                Selector::Index(1),
                Selector::Group(3)
            ]
        );
        assert!(parse_selectors(&["gpu0".to_string()]).is_err());
    }
}
