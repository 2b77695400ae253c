//! The one undo mechanism of every change vmctl makes in steps: each create (ubuntu, desktop,
//! talos), `gpu attach`, and the cluster operations to come. A [`Transaction`] records what each
//! step made, as typed [`Undo`] entries; unless [`Transaction::commit`] is called, dropping it
//! (an error returned with `?`, a Ctrl-C that ends a wait) undoes them newest first. An undo
//! that fails is logged and the others still run.
//!
//! It removes only what it recorded making: a directory is recorded by the exclusive mkdir that
//! claimed it ([`Transaction::claim_dir`]), never one that was there before.

use std::path::{Path, PathBuf};

use hypervisor::Hypervisor;

use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::names;

/// How many `<prefix>-N` names [`Transaction::claim_next_name`] tries.
pub(crate) const MAX_AUTO_NAMES: u32 = 10_000;

/// One thing a step made, and so one thing a rollback takes away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Undo {
    /// A directory this transaction created (exclusively): removed with its contents.
    Dir(PathBuf),
    /// A file this transaction created.
    File(PathBuf),
    /// A domain this transaction defined: destroyed if running, then undefined.
    Domain(String),
    /// A device hot-plugged into a running domain (its device XML): detached again.
    LiveDevice { vm: String, xml: String },
    /// A device added to a domain's definition (and to the running domain when `live`):
    /// detached again from both.
    Device { vm: String, xml: String, live: bool },
    /// A domain's definition replaced (`xml`: the one before): defined again.
    Redefine { vm: String, xml: String },
    /// A file this transaction moved from `from` to `to`: moved back.
    Renamed { from: PathBuf, to: PathBuf },
    /// vmctl's metadata record replaced (`xml`: the one before, from
    /// `hypervisor::domain::render::metadata_xml`): set again, in the running domain too when
    /// `live`.
    Metadata { vm: String, xml: String, live: bool },
    /// A sysfs write that made something (an mdev, a VF's vGPU type): `value` written to `path`
    /// (the real path, under the host root) takes it away again.
    SysfsWrite { path: PathBuf, value: String },
}

/// Undoes what a failed change made, newest first, unless committed.
pub(crate) struct Transaction<'a> {
    hv: &'a dyn Hypervisor,
    steps: Vec<Undo>,
    committed: bool,
}

impl<'a> Transaction<'a> {
    pub(crate) fn new(hv: &'a dyn Hypervisor) -> Self {
        Transaction {
            hv,
            steps: Vec::new(),
            committed: false,
        }
    }

    /// Records something a step made.
    pub(crate) fn record(&mut self, undo: Undo) {
        self.steps.push(undo);
    }

    /// Records a file a step created.
    pub(crate) fn record_file(&mut self, path: &Path) {
        self.record(Undo::File(path.to_path_buf()));
    }

    /// Claims the VM's directory ([`crate::storage::claim_vm_dir`]: exclusive, so a second create
    /// of the same name fails here with exit 2) and records it. Every create (ubuntu, desktop,
    /// talos) calls this first, before it downloads or reserves anything.
    pub(crate) fn claim_dir(&mut self, dir: &Path, name: &str) -> Result<()> {
        crate::storage::claim_vm_dir(dir, name)?;
        self.record(Undo::Dir(dir.to_path_buf()));
        Ok(())
    }

    /// Picks and claims a name for a create without one: the first `<prefix>-N` (N = 1, 2, …)
    /// that is no libvirt domain and whose storage directory this create made itself. The
    /// directory's exclusive mkdir(2) is the claim, so two concurrent creates never get the same
    /// name: the loser of a race moves on to the next number. `taken`: names the caller rules out
    /// besides (a Talos cluster directory of that name).
    pub(crate) fn claim_next_name(
        &mut self,
        ctx: &Ctx,
        prefix: &str,
        taken: &dyn Fn(&str) -> bool,
    ) -> Result<String> {
        let storage = ctx.config.storage_dir(ctx.host);
        for n in 1..=MAX_AUTO_NAMES {
            let name = format!("{prefix}-{n}");
            names::validate_vm_name(&name)?;
            if taken(&name) || ctx.hv.get(&name)?.is_some() {
                continue;
            }
            match self.claim_dir(&crate::storage::vm_dir(&storage, &name), &name) {
                Ok(()) => return Ok(name),
                Err(Error::StorageExists { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(all_taken(prefix))
    }

    /// Whether this transaction holds a directory it claimed.
    pub(crate) fn has_dir(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Undo::Dir(_)))
    }

    /// Defines the domain (recorded, so undefined again on failure), marks it to start with the
    /// host when `autostart` (libvirt's flag goes with the definition, so an undefine drops it),
    /// and starts it if asked; whether it was started. `cancelled` is checked first: the last point before the VM exists,
    /// so a Ctrl-C during the quick steps since the download rolls back here.
    pub(crate) fn define_and_start(
        &mut self,
        cancelled: fn() -> bool,
        name: &str,
        xml: &str,
        start: bool,
        autostart: bool,
    ) -> Result<bool> {
        if cancelled() {
            return Err(Error::Interrupted {
                during: format!("the create of {name}"),
                next: "nothing was kept but the image cache; run the same command again".into(),
            });
        }
        self.hv.define(name, xml)?;
        self.record(Undo::Domain(name.to_string()));
        if autostart {
            self.hv.set_autostart(name, true)?;
        }
        if start {
            self.hv.start(name)?;
        }
        Ok(start)
    }

    /// Keeps everything: nothing is undone when the transaction is dropped.
    pub(crate) fn commit(&mut self) {
        self.committed = true;
    }

    /// Undoes every recorded step, newest first; a failure is logged and the rest still run.
    /// What could not be undone is returned (also logged).
    pub(crate) fn rollback(&mut self) -> Vec<Undo> {
        self.committed = true;
        let mut left = Vec::new();
        while let Some(step) = self.steps.pop() {
            if let Err(e) = self.undo(&step) {
                tracing::warn!("could not undo {step:?}: {e}");
                left.push(step);
            }
        }
        left
    }

    fn undo(&self, step: &Undo) -> std::result::Result<(), String> {
        match step {
            Undo::Dir(d) => hostio::file::remove_tree(d)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Undo::File(f) => hostio::file::remove_file(f)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Undo::Domain(name) => {
                if self.hv.state(name).map(|s| s.is_active()).unwrap_or(false) {
                    let _ = self.hv.destroy(name);
                }
                self.hv.undefine(name, true).map_err(|e| e.to_string())
            }
            Undo::LiveDevice { vm, xml } => self
                .hv
                .detach_device_live(vm, xml)
                .map_err(|e| e.to_string()),
            Undo::Redefine { vm, xml } => self.hv.define(vm, xml).map_err(|e| e.to_string()),
            Undo::Device { vm, xml, live } => self
                .hv
                .detach_device(vm, xml, *live)
                .map_err(|e| e.to_string()),
            Undo::Renamed { from, to } => std::fs::rename(to, from).map_err(|e| e.to_string()),
            Undo::SysfsWrite { path, value } => {
                crate::gpu::vgpu::write_real(path, value).map_err(|e| e.to_string())
            }
            Undo::Metadata { vm, xml, live } => self
                .hv
                .set_vmctl_metadata(vm, xml, *live)
                .map_err(|e| e.to_string()),
        }
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.rollback();
        }
    }
}

pub(crate) fn all_taken(prefix: &str) -> Error {
    Error::InvalidOption {
        option: "NAME".into(),
        value: String::new(),
        reason: format!("{prefix}-1 to {prefix}-{MAX_AUTO_NAMES} are all taken"),
    }
}

#[cfg(test)]
mod tests;
