//! `vmctl start`, `stop`, `reboot`, `autostart`, `console` and `delete`. Delete removes only files vmctl recorded as its own for
//! that VM that really lie inside the VM's storage directory (symlinks resolved), never base
//! images or disks another domain uses; whatever it leaves is reported with the reason.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hypervisor::State;
use hypervisor::domain::parse::parse_domain;
use serde::Serialize;

use super::Ctx;
use crate::error::{Error, Result};

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
    } else if crate::desktop::switch_if_installed(ctx, name)?.is_some() {
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

/// One ACPI shutdown request, without waiting (`vmctl top`: the refreshes show the state
/// change). A guest still booting may ignore it; [`stop`] repeats the request while it waits.
pub fn request_stop(ctx: &Ctx, name: &str) -> Result<Outcome> {
    let state = ctx.hv.state(name)?;
    if !state.is_active() {
        return Ok(Outcome {
            name: name.into(),
            state,
            action: "already shut off".into(),
        });
    }
    ctx.hv.shutdown(name)?;
    Ok(Outcome {
        name: name.into(),
        state: ctx.hv.state(name)?,
        action: "shutdown requested (ACPI)".into(),
    })
}

/// ACPI reboot request: the guest restarts in the same qemu process, so a config change made
/// since the start (`vmctl resize`) waits for a stop and a start.
pub fn reboot(ctx: &Ctx, name: &str) -> Result<Outcome> {
    let state = ctx.hv.state(name)?;
    if !state.is_active() {
        return Err(Error::NotRunning { name: name.into() });
    }
    ctx.hv.reboot(name)?;
    Ok(Outcome {
        name: name.into(),
        state: ctx.hv.state(name)?,
        action: "reboot requested (ACPI)".into(),
    })
}

/// `vmctl autostart VM on|off`.
#[derive(Debug, Clone, Serialize)]
pub struct Autostart {
    pub name: String,
    pub autostart: bool,
    /// False when it already was so.
    pub changed: bool,
}

/// Whether the VM starts with the host (libvirtd's start at boot): after the reboot the
/// bootstrap asks for, VMs come back only with it on.
pub fn set_autostart(ctx: &Ctx, name: &str, on: bool) -> Result<Autostart> {
    let rec = ctx.hv.require(name)?;
    if !rec.persistent {
        return Err(Error::Transient { name: name.into() });
    }
    let changed = rec.autostart != on;
    if changed {
        ctx.hv.set_autostart(name, on)?;
    }
    Ok(Autostart {
        name: name.into(),
        autostart: on,
        changed,
    })
}

/// `virsh console` of the VM's serial console, as argv; the binary prints the escape key and
/// runs it in its place (an interactive terminal, like `vmctl ssh`).
pub fn console_argv(ctx: &Ctx, name: &str) -> Result<Vec<String>> {
    let state = ctx.hv.state(name)?;
    if !state.is_active() {
        return Err(Error::NotRunning { name: name.into() });
    }
    Ok(vec![
        "virsh".into(),
        "-c".into(),
        ctx.hv.uri().into(),
        "console".into(),
        name.into(),
    ])
}

/// virsh's console escape (its default `--escape ^]`), printed before attaching.
pub const CONSOLE_ESCAPE: &str = "Ctrl+]";

#[derive(Debug, Clone, Serialize)]
pub struct Deleted {
    pub name: String,
    pub removed: Vec<PathBuf>,
    pub kept: Vec<Kept>,
}

/// A path `delete` left in place, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    pub path: PathBuf,
    pub reason: String,
}

/// The VM's own storage directory, symlinks resolved: the metadata's `dir`, accepted only when it
/// is `storage_dir/NAME`. Anything else is the reason nothing there is removed.
pub(crate) fn own_dir(
    storage_dir: &Path,
    name: &str,
    recorded: Option<&Path>,
) -> Result<PathBuf, String> {
    let recorded =
        recorded.ok_or_else(|| "the VM's metadata names no storage directory".to_string())?;
    let expected = crate::storage::vm_dir(storage_dir, name);
    let resolve = |p: &Path| {
        std::fs::canonicalize(p).map_err(|e| format!("cannot resolve {}: {e}", p.display()))
    };
    let (real, want) = (resolve(recorded)?, resolve(&expected)?);
    if real != want {
        return Err(format!(
            "the metadata's directory {} is not this VM's storage directory {}",
            recorded.display(),
            expected.display()
        ));
    }
    Ok(real)
}

/// Where `path` really is, if that is strictly inside `own` once every symlink (the last
/// component's too) is resolved; otherwise why it stays. `Ok(None)`: nothing there to remove.
pub(crate) fn inside(
    own: &Result<PathBuf, String>,
    path: &Path,
) -> Result<Option<PathBuf>, String> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(None);
    }
    let own = own.as_ref().map_err(Clone::clone)?;
    let real = std::fs::canonicalize(path)
        .map_err(|e| format!("cannot resolve it (a dangling symlink?): {e}"))?;
    if real.starts_with(own) && real != *own {
        Ok(Some(real))
    } else {
        Err(format!(
            "resolves to {}, outside the VM's directory {}",
            real.display(),
            own.display()
        ))
    }
}

/// Undefines a stopped domain and removes the files vmctl recorded for it: only those that lie
/// inside the VM's own storage directory after resolving symlinks, never one another domain
/// uses or the base image. Everything else is reported as kept, with the reason.
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
    let mut attached: Vec<PathBuf> = facts.disks.iter().filter_map(|d| d.path.clone()).collect();
    // A snapshot moves a disk onto an overlay: the files its snapshots hold are still attached.
    for s in ctx.hv.snapshots(name).unwrap_or_default() {
        attached.extend(s.needs().map(Path::to_path_buf));
        attached.extend(s.disks.iter().filter_map(|d| d.file.clone()));
    }
    ctx.hv.undefine(name, facts.firmware == "efi")?;
    crate::address::release_deleted(ctx, name, md.ip.as_deref());

    let own = own_dir(&ctx.config.storage_dir(ctx.host), name, md.dir.as_deref());
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    let mut keep = |path: &Path, reason: String| {
        kept.push(Kept {
            path: path.to_path_buf(),
            reason,
        })
    };
    let mut remove = |p: &PathBuf, keep: &mut dyn FnMut(&Path, String)| {
        if foreign.contains(p) {
            return keep(p, "another domain uses it".into());
        }
        if Some(p) == md.base_image.as_ref() {
            return keep(p, "the base image".into());
        }
        match inside(&own, p) {
            Ok(None) => {}
            Ok(Some(real)) => match hostio::file::remove_file(&real) {
                Ok(true) => removed.push(p.clone()),
                Ok(false) => {}
                Err(e) => keep(p, format!("cannot remove it: {e}")),
            },
            Err(reason) => keep(p, reason),
        }
    };
    for d in &md.disks {
        if keep_disks {
            keep(d, "--keep-disks".into());
        } else if !attached.contains(d) {
            // A recorded disk no longer attached was replaced by the user: leave it.
            keep(d, "no longer attached to the domain".into());
        } else {
            remove(d, &mut keep);
        }
    }
    for f in &md.files {
        remove(f, &mut keep);
    }
    match (&own, &md.dir) {
        (Ok(real), Some(dir)) => match hostio::file::remove_dir(real) {
            Ok(true) => removed.push(dir.clone()),
            Ok(false) => {}
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                keep(dir, "not empty: files vmctl did not record remain".into())
            }
            Err(e) => keep(dir, format!("cannot remove it: {e}")),
        },
        (Err(reason), Some(dir)) if std::fs::symlink_metadata(dir).is_ok() => {
            keep(dir, reason.clone())
        }
        _ => {}
    }
    // The vGPUs vmctl made for it: the mdevs removed, the VFs' vGPU types back to 0.
    for (path, r) in crate::gpu::vgpu::release_for_delete(ctx.host, &md) {
        match r {
            Ok(()) => removed.push(path),
            Err(reason) => kept.push(Kept { path, reason }),
        }
    }
    Ok(Deleted {
        name: name.into(),
        removed,
        kept,
    })
}
