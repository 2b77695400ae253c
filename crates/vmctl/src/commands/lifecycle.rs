//! `vmctl start`, `stop` and `delete`. Delete removes only files vmctl recorded as its own for
//! that VM, never base images or disks another domain uses.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Ctx;
use crate::domain::parse::parse_domain;
use crate::error::{Error, Result};
use crate::libvirt::State;

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub name: String,
    pub state: State,
    /// What was done, in words.
    pub action: String,
}

pub fn start(ctx: &Ctx, name: &str) -> Result<Outcome> {
    let state = ctx.hv.state(name)?;
    let action = if state.is_active() {
        "already running".to_string()
    } else if super::desktop::switch_if_installed(ctx, name)?.is_some() {
        // `create --desktop` without --wait: the installer finished and powered off.
        ctx.hv.start(name)?;
        "install finished: switched to boot from disk, started".to_string()
    } else {
        ctx.hv.start(name)?;
        "started".to_string()
    };
    Ok(Outcome {
        name: name.into(),
        state: ctx.hv.state(name)?,
        action,
    })
}

/// ACPI shutdown, waiting up to `timeout`; then, only with `force`, power off.
pub fn stop(ctx: &Ctx, name: &str, timeout: Duration, force: bool) -> Result<Outcome> {
    let state = ctx.hv.state(name)?;
    if !state.is_active() {
        return Ok(Outcome {
            name: name.into(),
            state,
            action: "already shut off".into(),
        });
    }
    // A shutdown request to a guest that is still booting may be lost; repeat it while waiting.
    let start = Instant::now();
    let mut last_request = None::<Instant>;
    loop {
        let state = ctx.hv.state(name)?;
        if !state.is_active() {
            return Ok(Outcome {
                name: name.into(),
                state,
                action: format!("shut down in {:.1} s", start.elapsed().as_secs_f64()),
            });
        }
        if start.elapsed() >= timeout {
            break;
        }
        if last_request.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::info!(name, elapsed = ?start.elapsed(), "requesting shutdown");
            ctx.hv.shutdown(name)?;
            last_request = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    if !force {
        return Err(Error::ShutdownTimeout {
            name: name.into(),
            secs: timeout.as_secs(),
        });
    }
    ctx.hv.destroy(name)?;
    Ok(Outcome {
        name: name.into(),
        state: ctx.hv.state(name)?,
        action: format!(
            "powered off after {} s without ACPI shutdown",
            timeout.as_secs()
        ),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Deleted {
    pub name: String,
    pub removed: Vec<PathBuf>,
    pub kept: Vec<PathBuf>,
}

pub fn delete(ctx: &Ctx, name: &str, yes: bool, keep_disks: bool) -> Result<Deleted> {
    let rec = ctx.hv.require(name)?;
    if rec.state.is_active() {
        return Err(Error::DomainRunning { name: name.into() });
    }
    if !yes {
        return Err(Error::NotConfirmed { name: name.into() });
    }
    let facts = parse_domain(&rec.xml)?;
    // Paths any other domain uses as a disk are never removed, whatever the metadata says.
    let mut foreign = Vec::new();
    for other in ctx.hv.list()?.into_iter().filter(|d| d.name != name) {
        if let Ok(f) = parse_domain(&other.xml) {
            foreign.extend(f.disks.into_iter().filter_map(|d| d.path));
            if let Some(m) = f.metadata {
                foreign.extend(m.base_image);
            }
        }
    }
    let md = facts.metadata.clone().unwrap_or_default();
    let attached: Vec<PathBuf> = facts.disks.iter().filter_map(|d| d.path.clone()).collect();
    ctx.hv.undefine(name, facts.firmware == "efi")?;
    super::ip::release_deleted(ctx, name, md.ip.as_deref());

    let mut removed = Vec::new();
    let mut kept = Vec::new();
    let remove = |p: &PathBuf, removed: &mut Vec<PathBuf>, kept: &mut Vec<PathBuf>| {
        if foreign.contains(p) || Some(p) == md.base_image.as_ref() {
            kept.push(p.clone());
            return;
        }
        match std::fs::remove_file(p) {
            Ok(()) => removed.push(p.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => kept.push(p.clone()),
        }
    };
    for d in &md.disks {
        if keep_disks || !attached.contains(d) {
            // A recorded disk no longer attached was replaced by the user: leave it.
            kept.push(d.clone());
        } else {
            remove(d, &mut removed, &mut kept);
        }
    }
    for f in &md.files {
        remove(f, &mut removed, &mut kept);
    }
    if let Some(dir) = &md.dir
        && std::fs::remove_dir(dir).is_ok()
    {
        removed.push(dir.clone());
    }
    Ok(Deleted {
        name: name.into(),
        removed,
        kept,
    })
}
