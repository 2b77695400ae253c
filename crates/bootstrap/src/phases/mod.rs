//! One module per bootstrap phase. Each one adds its preflight problems and its actions to the
//! shared [`crate::planner::Planner`]; the matching checks live in [`crate::verify`].

pub mod bridge;
pub mod iommu;
pub mod kvm;
pub mod nvidia;
pub mod preflight;
pub mod vmctl;
