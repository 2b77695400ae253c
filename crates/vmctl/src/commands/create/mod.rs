//! `vmctl create`, one module per guest OS, each Request → Plan → create: validate everything
//! first (nothing is created on bad input), claim the VM's directory and its address, then
//! make the disks and the seed and define the domain; a failure rolls back what was made. The
//! steps they share are `crate::build`'s.
//! - [`ubuntu`]: an Ubuntu cloud image with a NoCloud seed (`create ubuntu`);
//! - [`desktop`]: an unattended Ubuntu Desktop install from the release ISO (`create ubuntu
//!   --desktop`), built on the Ubuntu plan;
//! - [`talos`]: a Talos Linux node from the Image Factory (`create talos`).

pub mod desktop;
pub mod talos;
pub mod ubuntu;

pub use ubuntu::{
    BaseVerification, Created, GpuStack, ImageSource, NetworkRequest, UbuntuPlan, UbuntuRequest,
    create_ubuntu, plan,
};
