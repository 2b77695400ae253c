//! Unit tests of `iommu`.

use super::*;

#[test]
fn passthrough_turns_only_the_vendors_off_switch_around() {
    let intel = |w| passthrough_fix(CpuVendor::Intel, w);
    let amd = |w| passthrough_fix(CpuVendor::Amd, w);
    assert_eq!(
        intel("intel_iommu=off"),
        Some(Fix::Replace("intel_iommu=on".into()))
    );
    assert_eq!(
        intel("intel_iommu=sm_on,off"),
        Some(Fix::Replace("intel_iommu=on".into()))
    );
    assert_eq!(intel("intel_iommu=on"), None);
    assert_eq!(intel("amd_iommu=off"), None);
    assert_eq!(amd("amd_iommu=off"), Some(Fix::Remove));
    assert_eq!(amd("iommu=off"), Some(Fix::Replace("iommu=pt".into())));
    assert_eq!(amd("quiet"), None);
}
