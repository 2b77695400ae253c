//! `vmctl share add|remove|list` on the binary side: arguments, and the rendering of
//! [`vmctl::commands::share`] results as text or JSON.

use clap::Subcommand;
use vmctl::Error;
use vmctl::commands::Ctx;
use vmctl::commands::share::{self, ShareChange};

use crate::{esc, out, out_json, table};

#[derive(Debug, Subcommand)]
pub(crate) enum ShareCommand {
    /// Share a host directory with a VM (virtiofs); takes effect at the VM's next start
    ///
    /// Changes the persistent definition only (adding the shared memory virtiofs needs): a
    /// running VM gets the share after it is shut down and started again. Prints the command
    /// that mounts it in the guest at /mnt/TAG (`create --share` mounts it by cloud-init).
    Add {
        /// VM name (`vmctl list` shows them)
        vm: String,
        /// HOST_DIR:TAG or HOST_DIR:TAG,ro (ro: mounted read-only in the guest)
        #[arg(value_name = "HOST_DIR:TAG[,ro]")]
        share: String,
    },
    /// Remove a VM's share by tag; takes effect at the VM's next start
    Remove {
        /// VM name (`vmctl list` shows them)
        vm: String,
        /// The share's tag (`vmctl share list VM`)
        tag: String,
    },
    /// A VM's shares: tag, host directory, read-only, and whether a change waits for a restart
    List {
        /// VM name (`vmctl list` shows them)
        vm: String,
    },
}

fn render_change(c: &ShareChange) -> String {
    let what = match (&c.host_dir, c.action) {
        (Some(d), _) => format!(
            "{}: share {} ({}{}) added",
            esc(&c.vm),
            esc(&c.tag),
            esc(&d.display().to_string()),
            if c.readonly { ", read-only" } else { "" }
        ),
        (None, _) => format!("{}: share {} removed", esc(&c.vm), esc(&c.tag)),
    };
    let mut s = format!("{what}; takes effect {}\n", c.takes_effect);
    if let Some(cmd) = &c.guest_command {
        s += &format!("  in the guest: {}\n", esc(cmd));
    }
    s
}

pub(crate) fn run(c: &ShareCommand, ctx: &Ctx, json: bool) -> Result<(), Error> {
    match c {
        ShareCommand::Add { vm, share: value } => {
            let r = share::add(ctx, vm, value)?;
            if json {
                out_json(&r)
            } else {
                out(&render_change(&r))
            }
        }
        ShareCommand::Remove { vm, tag } => {
            let r = share::remove(ctx, vm, tag)?;
            if json {
                out_json(&r)
            } else {
                out(&render_change(&r))
            }
        }
        ShareCommand::List { vm } => {
            let l = share::list(ctx, vm)?;
            if json {
                out_json(&l)
            } else if l.is_empty() {
                out(&format!("{}: no shares\n", esc(vm)))
            } else {
                let mut rows = vec![vec![
                    "TAG".to_string(),
                    "HOST DIR".into(),
                    "GUEST".into(),
                    "MODE".into(),
                    "STATUS".into(),
                ]];
                for s in &l {
                    rows.push(vec![
                        esc(&s.tag),
                        s.host_dir
                            .as_ref()
                            .map(|d| esc(&d.display().to_string()))
                            .unwrap_or_else(|| "-".into()),
                        s.guest_path.clone(),
                        if s.readonly { "ro" } else { "rw" }.into(),
                        s.status.into(),
                    ]);
                }
                out(&table(rows))
            }
        }
    }
    Ok(())
}
