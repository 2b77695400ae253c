//! `vmctl gpu check VM` rendering, and the guest GPU stack line of `create ubuntu --gpu`.

use vmctl::Error;
use vmctl::commands::Ctx;
use vmctl::commands::ssh::gpu_check::{self, GpuCheck, GpuCheckError};
use vmctl::gpu::guest_stack::{GpuStack, GuestStack};

use super::{esc, out, out_json};

/// `nvidia-open-580 (open kernel modules: every passed GPU is Turing or newer)`.
pub(crate) fn guest_stack_line(st: &GuestStack) -> String {
    if st.stack == GpuStack::None || st.packages.is_empty() {
        return esc(&st.reason);
    }
    let flavour = match st.flavour {
        Some(hwdetect::nvidia_arch::Flavour::Open) => "open kernel modules",
        _ => "proprietary kernel modules",
    };
    format!(
        "{} from {} ({flavour}; {}); one reboot if the module does not load",
        esc(&st.packages.join(" ")),
        esc(st.repos.first().map(|r| r.uri.as_str()).unwrap_or_default()),
        esc(&st.reason)
    )
}

pub(crate) fn run(ctx: &Ctx, vm: &str, json: bool) -> Result<(), Error> {
    let r = gpu_check::check(ctx, vm)?;
    if json {
        out_json(&r);
    } else {
        out(&render(&r));
    }
    if !r.ok {
        return Err(GpuCheckError::Missing {
            vm: r.vm.clone(),
            passed: r.passed.len(),
            missing: r
                .missing
                .iter()
                .map(|m| format!("{} ({})", m.bdf, m.name))
                .collect(),
        }
        .into());
    }
    Ok(())
}

fn render(r: &GpuCheck) -> String {
    let mut o = format!(
        "{}: {} GPU(s) driven, {} passed through\n",
        esc(&r.vm),
        r.gpus.len(),
        r.passed.len()
    );
    for g in &r.gpus {
        o += &format!(
            "  [{}] {}  {}  driver {}  {}  ECC {}\n",
            g.index,
            esc(&g.bus_id),
            esc(&g.name),
            esc(&g.driver_version),
            g.memory_mib
                .map_or_else(|| "memory ?".to_string(), |m| format!("{m} MiB")),
            esc(&g.ecc)
        );
    }
    for m in &r.missing {
        o += &format!(
            "  missing: {} {} ({}) is passed through but the guest's driver does not see it\n",
            esc(&m.bdf),
            esc(&m.name),
            esc(&m.pci_id)
        );
    }
    o
}
