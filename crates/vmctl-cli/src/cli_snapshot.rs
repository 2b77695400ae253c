//! The `vmctl snapshot` subcommands on the binary side: their arguments, and the rendering of
//! [`vmctl::commands::snapshot`] results as text or JSON. Timings go to stderr with the result
//! line, so `--json` stays the typed result.

use clap::Subcommand;
use vmctl::Error;
use vmctl::commands::Ctx;
use vmctl::commands::snapshot::{self, CreateRequest, Listing, RevertBy};

use crate::{esc, out, out_json, table};

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take an external snapshot of the VM's writable qcow2 disks (disk-only unless --memory);
    /// overlays go to the VM's storage directory as DISK.NAME.qcow2
    Create {
        /// VM name (`vmctl list` shows them)
        vm: String,
        /// Snapshot name: letters, digits, '-', '_', '.', at most 64 (default:
        /// snap-YYYYMMDD-HHMMSS, UTC)
        name: Option<String>,
        /// Save the running VM's memory state too (memory.NAME.save); refused for a VM with a
        /// VFIO device (a GPU passed through)
        #[arg(long)]
        memory: bool,
        /// Freeze the guest's filesystems through qemu-guest-agent while the snapshot is taken
        /// (the VM must run and its agent answer; disk-only snapshots only)
        #[arg(long, conflicts_with = "memory")]
        quiesce: bool,
    },
    /// List the VM's snapshots: name, time, state, parent, current, disk overlays
    List {
        /// VM name (`vmctl list` shows them)
        vm: String,
    },
    /// Revert a stopped VM to a snapshot: its disks go back to the snapshot's state; what was
    /// written since is discarded
    ///
    /// libvirt 9.9.0 and later revert external snapshots themselves; on older libvirt (Debian
    /// 12's 9.0) vmctl does it: a new empty overlay on the snapshot's state, disks only (a
    /// memory state is not loaded).
    Revert {
        /// VM name (`vmctl list` shows them)
        vm: String,
        /// Snapshot name (`vmctl snapshot list VM` shows them)
        name: String,
    },
    /// Delete a snapshot: libvirt merges its overlay into the chain and removes it (the VM's
    /// current state is kept)
    Delete {
        /// VM name (`vmctl list` shows them)
        vm: String,
        /// Snapshot name (`vmctl snapshot list VM` shows them)
        name: String,
    },
}

/// Runs a `snapshot` subcommand.
pub fn run(cmd: SnapshotCommand, ctx: &Ctx, json: bool) -> Result<(), Error> {
    match cmd {
        SnapshotCommand::Create {
            vm,
            name,
            memory,
            quiesce,
        } => {
            let c = snapshot::create(
                ctx,
                &CreateRequest {
                    vm,
                    name,
                    memory,
                    quiesce,
                },
            )?;
            clikit::errln(&format!(
                "{}: snapshot {} created in {:.2} s",
                esc(&c.vm),
                esc(&c.name),
                c.secs
            ));
            if json {
                out_json(&c);
            } else {
                let mut s = format!(
                    "{} {} ({}{})\n",
                    esc(&c.vm),
                    esc(&c.name),
                    c.kind,
                    if c.quiesced { ", quiesced" } else { "" }
                );
                for o in &c.overlays {
                    s += &format!(
                        "  {}: {}\n",
                        esc(&o.target),
                        esc(&o.file.display().to_string())
                    );
                }
                if let Some(m) = &c.memory {
                    s += &format!("  memory: {}\n", esc(&m.display().to_string()));
                }
                for k in &c.skipped {
                    s += &format!(
                        "  {}: not snapshotted ({})\n",
                        esc(&k.target),
                        esc(&k.reason)
                    );
                }
                out(&s);
            }
        }
        SnapshotCommand::List { vm } => {
            let l = snapshot::list(ctx, &vm)?;
            if json {
                out_json(&l);
            } else {
                out(&render_list(&l));
            }
        }
        SnapshotCommand::Revert { vm, name } => {
            let r = snapshot::revert(ctx, &vm, &name)?;
            clikit::errln(&format!(
                "{}: reverted to {} in {:.2} s (by {}, libvirt {})",
                esc(&r.vm),
                esc(&r.name),
                r.secs,
                match r.by {
                    RevertBy::Libvirt => "libvirt",
                    RevertBy::Vmctl => "vmctl",
                },
                r.libvirt_version.as_deref().unwrap_or("?")
            ));
            if json {
                out_json(&r);
            } else {
                let mut s = format!("{} {}: reverted\n", esc(&r.vm), esc(&r.name));
                for o in &r.overlays {
                    s += &format!(
                        "  {}: {}\n",
                        esc(&o.target),
                        esc(&o.file.display().to_string())
                    );
                }
                for p in &r.removed {
                    s += &format!("  removed {}\n", esc(&p.display().to_string()));
                }
                for k in &r.kept {
                    s += &format!("  kept    {} ({})\n", esc(&k.target), esc(&k.reason));
                }
                if let Some(n) = &r.note {
                    s += &format!("  note: {}\n", esc(n));
                }
                out(&s);
            }
        }
        SnapshotCommand::Delete { vm, name } => {
            let d = snapshot::delete(ctx, &vm, &name)?;
            clikit::errln(&format!(
                "{}: snapshot {} deleted in {:.2} s",
                esc(&d.vm),
                esc(&d.name),
                d.secs
            ));
            if json {
                out_json(&d);
            } else {
                let mut s = format!("{} {}: deleted\n", esc(&d.vm), esc(&d.name));
                for p in &d.merged {
                    s += &format!("  merged  {}\n", esc(&p.display().to_string()));
                }
                for p in &d.removed {
                    s += &format!("  removed {}\n", esc(&p.display().to_string()));
                }
                out(&s);
            }
        }
    }
    Ok(())
}

fn render_list(l: &Listing) -> String {
    let mut rows = vec![
        ["NAME", "CREATED", "STATE", "PARENT", "CURRENT", "DISKS"]
            .map(String::from)
            .to_vec(),
    ];
    for s in &l.snapshots {
        let created = snapshot::utc(s.created);
        let disks = s
            .disks
            .iter()
            .filter_map(|d| {
                d.file
                    .as_ref()
                    .map(|f| format!("{}={}", d.target, f.display()))
            })
            .collect::<Vec<_>>()
            .join(",");
        let mut state = s.state.clone();
        if s.memory.is_some() {
            state += "+memory";
        }
        rows.push(vec![
            s.name.clone(),
            created,
            state,
            s.parent.clone().unwrap_or_else(|| "-".into()),
            if s.current { "yes" } else { "" }.into(),
            disks,
        ]);
    }
    let mut out = table(rows);
    if l.snapshots.is_empty() {
        out = format!("{}: no snapshots\n", esc(&l.vm));
    }
    out
}
