//! The day-2 commands of one VM: `reboot`, `autostart`, `console`, `resize`, `disk` and
//! `clone`.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use vmctl::Error;
use vmctl::commands::clone::CloneRequest;
use vmctl::commands::{Ctx, clone, disk, lifecycle, resize, template};

use crate::render::{esc, human_bytes, table};
use crate::{confirm, out, out_json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OnOff {
    On,
    Off,
}

#[derive(Debug, Args)]
pub(crate) struct ResizeArgs {
    /// Domain name (`vmctl list` shows them)
    pub(crate) name: String,
    /// New vCPU count (the next start has it)
    #[arg(long)]
    pub(crate) cpus: Option<u32>,
    /// New memory: MiB, or with a unit (8G); the next start has it
    #[arg(long, value_name = "SIZE")]
    pub(crate) memory: Option<String>,
    /// Grow the disk: +SIZE adds (+10G), SIZE sets the new size; never shrinks. Live when the
    /// VM runs; the guest's root file system grows at its next boot
    #[arg(long, value_name = "[+]SIZE", allow_hyphen_values = true)]
    pub(crate) disk: Option<String>,
    /// The disk --disk grows (default vda, the system disk)
    #[arg(long, value_name = "TARGET", requires = "disk")]
    pub(crate) target: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct CloneArgs {
    /// The VM to copy (stopped, one vmctl created)
    pub(crate) source: String,
    /// The clone's name, also its hostname
    pub(crate) name: String,
    /// A thin overlay on the source's disk as it is now; the source moves onto an overlay of
    /// its own, so neither writes to what the other reads (default: a full copy on the cached
    /// base image)
    #[arg(long)]
    pub(crate) linked: bool,
    #[command(flatten)]
    pub(crate) net: crate::args::NetworkArgs,
    /// Define the clone but do not start it
    #[arg(long)]
    pub(crate) no_start: bool,
    /// Do not start the clone with the host
    #[arg(long)]
    pub(crate) no_autostart: bool,
    /// Wait until the clone is ready: SSH takes the key and cloud-init has finished
    #[arg(long, conflicts_with = "no_start")]
    pub(crate) wait: bool,
    /// Give up waiting after this many seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub(crate) wait_timeout: u64,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TemplateCommand {
    /// Turn a stopped Ubuntu VM's disk into a read-only base image in the image cache, with
    /// its settings (STATE_DIR/templates/NAME.toml)
    Save {
        /// The VM (stopped, made by `vmctl create ubuntu`)
        vm: String,
        /// The template's name
        name: String,
        /// A line saying what it is for
        #[arg(long)]
        description: Option<String>,
    },
    /// Every template: the admin's (/etc/vmctl/templates) and the saved ones, with the VMs
    /// made from each
    List,
    /// One template's values and where it lives
    Show {
        /// Template name
        name: String,
    },
    /// Remove a saved template and its image (refused while a VM is based on it)
    Delete {
        /// Template name
        name: String,
        /// Do not ask for confirmation
        #[arg(long, short)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DiskCommand {
    /// The VM's disks: target, role (system, seed, data), size, file, whether vmctl made it
    List {
        /// Domain name (`vmctl list` shows them)
        name: String,
    },
    /// Create a blank qcow2 data disk in the VM's directory and attach it (hot-plugged when
    /// the VM runs and has a free PCIe slot, else from its next start)
    Add {
        /// VM name (one vmctl created)
        name: String,
        /// Size, e.g. 100G
        size: String,
        /// Name of the disk (file data-NAME.qcow2; default data1, data2…)
        #[arg(long = "name", value_name = "NAME")]
        disk_name: Option<String>,
    },
    /// Detach a data disk and delete its file if vmctl created it (asks first). The system
    /// disk and the seed are refused
    Remove {
        /// VM name
        name: String,
        /// The disk: its target (vdc) or its data disk name
        disk: String,
        /// Do not ask for confirmation
        #[arg(long, short)]
        yes: bool,
        /// Seconds to wait for a running guest to release the disk
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        timeout: u64,
    },
}

fn outcome(o: &lifecycle::Outcome, json: bool) {
    if json {
        out_json(o)
    } else {
        out(&format!("{}: {}\n", esc(&o.name), o.action))
    }
}

pub(crate) fn reboot(ctx: &Ctx, name: &str, json: bool) -> Result<(), Error> {
    outcome(&lifecycle::reboot(ctx, name)?, json);
    Ok(())
}

pub(crate) fn autostart(ctx: &Ctx, name: &str, state: OnOff, json: bool) -> Result<(), Error> {
    let a = lifecycle::set_autostart(ctx, name, state == OnOff::On)?;
    if json {
        out_json(&a)
    } else {
        out(&format!(
            "{}: autostart {}{}\n",
            esc(&a.name),
            if a.autostart { "on" } else { "off" },
            if a.changed { "" } else { " (unchanged)" }
        ))
    }
    Ok(())
}

/// Prints the escape key, then becomes `virsh console` (like `vmctl ssh`, an interactive
/// terminal the runner cannot stand in for).
pub(crate) fn console(ctx: &Ctx, name: &str) -> Result<(), Error> {
    let argv = lifecycle::console_argv(ctx, name)?;
    clikit::errln(&format!(
        "Serial console of {}: press {} to leave (Enter first if nothing shows).",
        esc(name),
        lifecycle::CONSOLE_ESCAPE
    ));
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
    Err(Error::Io {
        op: "exec",
        path: argv[0].clone().into(),
        source: err,
    })
}

pub(crate) fn resize(ctx: &Ctx, a: &ResizeArgs, json: bool) -> Result<(), Error> {
    let r = resize::resize(
        ctx,
        &a.name,
        &resize::ResizeRequest {
            cpus: a.cpus,
            memory: a.memory.clone(),
            disk: a.disk.clone(),
            target: a.target.clone(),
        },
    )?;
    if json {
        out_json(&r);
        return Ok(());
    }
    if r.changes.is_empty() {
        out(&format!(
            "{}: already that size, nothing changed\n",
            esc(&r.name)
        ));
        return Ok(());
    }
    let mut s = String::new();
    for c in &r.changes {
        let (from, to) = match c.what.as_str() {
            "vcpus" => (c.from.to_string(), c.to.to_string()),
            "memory_mib" => (human_bytes(c.from << 20), human_bytes(c.to << 20)),
            _ => (human_bytes(c.from), human_bytes(c.to)),
        };
        s += &format!(
            "{}: {} {from} -> {to}: {}\n",
            esc(&r.name),
            c.what,
            c.effective
        );
    }
    out(&s);
    Ok(())
}

pub(crate) fn disk(ctx: &Ctx, c: DiskCommand, json: bool) -> Result<(), Error> {
    match c {
        DiskCommand::List { name } => {
            let l = disk::list(ctx, &name)?;
            if json {
                out_json(&l);
                return Ok(());
            }
            let mut rows = vec![
                ["TARGET", "ROLE", "SIZE", "FORMAT", "VMCTL", "FILE"]
                    .map(String::from)
                    .to_vec(),
            ];
            for d in &l.disks {
                rows.push(vec![
                    d.target.clone(),
                    if d.readonly {
                        format!("{} (ro)", d.role)
                    } else {
                        d.role.into()
                    },
                    d.bytes.map(human_bytes).unwrap_or_else(|| "-".into()),
                    d.format.clone().unwrap_or_else(|| "-".into()),
                    if d.vmctl { "yes" } else { "no" }.into(),
                    d.path
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "-".into()),
                ]);
            }
            out(&table(rows));
        }
        DiskCommand::Add {
            name,
            size,
            disk_name,
        } => {
            let a = disk::add(ctx, &name, &size, disk_name.as_deref())?;
            if json {
                out_json(&a);
                return Ok(());
            }
            out(&format!(
                "{}: added {} ({}, {}) as {}{}\n",
                esc(&a.name),
                esc(&a.disk),
                human_bytes(a.bytes),
                esc(&a.path.display().to_string()),
                a.target,
                if a.live { ", hot-plugged" } else { "" }
            ));
            if let Some(n) = &a.note {
                clikit::errln(&format!("{}: {}", esc(&a.name), esc(n)));
            }
        }
        DiskCommand::Remove {
            name,
            disk: which,
            yes,
            timeout,
        } => {
            let yes = yes
                || (ctx.hv.get(&name)?.is_some()
                    && confirm(&format!(
                        "Detach disk {} from {} and delete its file if vmctl created it?",
                        esc(&which),
                        esc(&name)
                    )));
            let r = disk::remove(ctx, &name, &which, yes, Duration::from_secs(timeout))?;
            if json {
                out_json(&r);
                return Ok(());
            }
            let mut s = format!("{}: detached {}\n", esc(&r.name), r.target);
            if let Some(p) = &r.path {
                let p = esc(&p.display().to_string());
                if r.deleted {
                    s += &format!("  removed {p}\n");
                } else if let Some(k) = &r.kept {
                    s += &format!("  kept    {p} ({})\n", esc(k));
                }
            }
            out(&s);
        }
    }
    Ok(())
}

pub(crate) fn clone(ctx: &Ctx, a: &CloneArgs, json: bool) -> Result<(), Error> {
    let c = clone::clone(
        ctx,
        &CloneRequest {
            linked: a.linked,
            network: a.net.request(),
            mac: a.net.mac.clone(),
            no_start: a.no_start,
            no_autostart: a.no_autostart,
            ..CloneRequest::new(&a.source, &a.name)
        },
    )?;
    clikit::errln(&format!(
        "{}: cloned from {} in {:.1} s{}",
        esc(&c.name),
        esc(&c.source),
        c.seconds,
        if c.linked { " (linked)" } else { "" }
    ));
    for l in &c.left_out {
        clikit::errln(&format!("{}: not cloned: {}", esc(&c.name), esc(l)));
    }
    if a.wait {
        crate::wait_ready(ctx, &c.name, Duration::from_secs(a.wait_timeout))?;
    }
    if json {
        out_json(&c);
        return Ok(());
    }
    let mut s = format!(
        "{}: {} {}, MAC {}, {}\n",
        esc(&c.name),
        if c.started { "started" } else { "defined" },
        esc(&c.disk.display().to_string()),
        c.mac,
        c.ip.as_deref()
            .map_or("DHCP".to_string(), |ip| format!("IP {ip}"))
    );
    if let Some(b) = &c.backing {
        s += &format!("  backing file: {}\n", esc(&b.display().to_string()));
    }
    if let Some(d) = &c.source_disk {
        s += &format!(
            "  {} now writes to {}\n",
            esc(&c.source),
            esc(&d.display().to_string())
        );
    }
    out(&s);
    Ok(())
}

pub(crate) fn template(ctx: &Ctx, c: TemplateCommand, json: bool) -> Result<(), Error> {
    match c {
        TemplateCommand::Save {
            vm,
            name,
            description,
        } => {
            let s = template::save(ctx, &vm, &name, description.as_deref())?;
            if json {
                out_json(&s);
            } else {
                out(&format!(
                    "template {}: {} ({}, read-only) in {:.1} s\n  settings: {}\n  create a VM from it: vmctl create ubuntu NAME --template {}\n",
                    esc(&s.name),
                    esc(&s.image.display().to_string()),
                    human_bytes(s.bytes),
                    s.seconds,
                    esc(&s.path.display().to_string()),
                    esc(&s.name)
                ));
            }
        }
        TemplateCommand::List => {
            let l = template::list(ctx)?;
            if json {
                out_json(&l);
                return Ok(());
            }
            let mut rows = vec![
                [
                    "NAME",
                    "ORIGIN",
                    "CPUS",
                    "MEMORY",
                    "DISK",
                    "GPUS",
                    "USED BY",
                    "DESCRIPTION",
                ]
                .map(String::from)
                .to_vec(),
            ];
            let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            for t in &l {
                let v = &t.found.template;
                rows.push(vec![
                    t.found.name.clone(),
                    match t.found.origin {
                        vmctl::templates::Origin::System => "/etc".into(),
                        vmctl::templates::Origin::Saved => "saved".into(),
                    },
                    dash(v.cpus.map(|c| c.to_string())),
                    dash(v.memory.clone()),
                    dash(v.disk.clone()),
                    dash(v.gpus.map(|g| g.to_string())),
                    if t.used_by.is_empty() {
                        "-".into()
                    } else {
                        t.used_by.join(",")
                    },
                    dash(v.description.clone()),
                ]);
            }
            out(&table(rows));
        }
        TemplateCommand::Show { name } => {
            let t = template::show(ctx, &name)?;
            if json {
                out_json(&t);
            } else {
                out(&format!(
                    "# {} ({})\n{}",
                    esc(&t.found.path.display().to_string()),
                    if t.used_by.is_empty() {
                        "no VM uses its image".to_string()
                    } else {
                        format!("image used by {}", esc(&t.used_by.join(", ")))
                    },
                    esc(&vmctl::templates::to_toml(&t.found.template))
                ));
            }
        }
        TemplateCommand::Delete { name, yes } => {
            let yes = yes || confirm(&format!("Delete template {} and its image?", esc(&name)));
            let d = template::delete(ctx, &name, yes)?;
            if json {
                out_json(&d);
            } else {
                let mut s = format!("template {}: deleted\n", esc(&d.name));
                for p in &d.removed {
                    s += &format!("  removed {}\n", esc(&p.display().to_string()));
                }
                out(&s);
            }
        }
    }
    Ok(())
}
