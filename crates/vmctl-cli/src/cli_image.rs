//! `vmctl image list|remove|prune` on the binary side: the confirmation question, and the
//! rendering of [`vmctl::commands::image::manage`] results as text or JSON.

use vmctl::Error;
use vmctl::commands::Ctx;
use vmctl::commands::image::manage::{self, ImageList, Removal, Via};
use vmctl::guest_media::cache::EntryKind;

use crate::{Bar, confirm, esc, out, out_json, table};

/// Bytes in binary units (as `ls -lh`, `du -h`).
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn render_list(l: &ImageList) -> String {
    let mut rows = vec![vec![
        "SHA256".to_string(),
        "SIZE".into(),
        "FILE".into(),
        "HASHED".into(),
        "USED BY".into(),
        "SOURCE".into(),
    ]];
    for f in &l.files {
        let e = &f.entry;
        let used: Vec<String> = f
            .used_by
            .iter()
            .map(|u| {
                let via = match &u.via {
                    Via::Metadata => "base".to_string(),
                    Via::Disk { .. } => "disk".to_string(),
                    Via::BackingChain { .. } => "backing".to_string(),
                };
                format!("{} ({via}, {})", esc(&u.vm), u.state)
            })
            .collect();
        let source = match e.kind {
            EntryKind::Derived => "derived".to_string(),
            EntryKind::Blob if e.urls.is_empty() => "-".into(),
            EntryKind::Blob => esc(&e.urls.join(" ")),
        };
        rows.push(vec![
            e.sha256.get(..12).unwrap_or(&e.sha256).to_string(),
            human(e.size),
            esc(&e.file),
            e.hashed_at.clone().unwrap_or_else(|| "-".into()),
            if used.is_empty() {
                "-".into()
            } else {
                used.join(", ")
            },
            source,
        ]);
    }
    let mut s = if l.files.is_empty() {
        format!(
            "no cached files in {}\n",
            esc(&l.cache.display().to_string())
        )
    } else {
        table(rows)
    };
    for x in &l.leftovers {
        s += &format!(
            "{:<11} {} ({})\n",
            format!("{:?}", x.kind).to_lowercase(),
            esc(&x.path.display().to_string()),
            human(x.size)
        );
    }
    for u in &l.unreadable {
        s += &format!(
            "UNKNOWN: the backing chain of {}'s disk {} is unreadable ({}): remove and prune refuse until it is readable\n",
            esc(&u.vm),
            esc(&u.disk.display().to_string()),
            esc(&u.reason)
        );
    }
    s += &format!(
        "{} file(s), {} in {}\n",
        l.files.len() + l.leftovers.len(),
        human(l.total_bytes),
        esc(&l.cache.display().to_string())
    );
    s
}

fn render_removal(r: &Removal) -> String {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    let mut s = String::new();
    for f in &r.removed {
        s += &format!(
            "{verb} {} ({})\n",
            esc(&f.path.display().to_string()),
            human(f.size)
        );
    }
    for f in &r.in_use {
        let vms: Vec<String> = f.used_by.iter().map(|u| esc(&u.vm)).collect();
        s += &format!(
            "kept {} (in use by {})\n",
            esc(&f.entry.file),
            vms.join(", ")
        );
    }
    for p in &r.busy {
        s += &format!(
            "kept {} (a download is writing it)\n",
            esc(&p.display().to_string())
        );
    }
    s += &format!(
        "{} {} file(s), {} ({} bytes) {}\n",
        if r.dry_run { "would free:" } else { "freed:" },
        r.removed.len(),
        human(r.bytes_freed),
        r.bytes_freed,
        if r.dry_run {
            "(dry run: nothing removed)"
        } else {
            ""
        }
    )
    .replace(" \n", "\n");
    s
}

/// `image list|remove|prune`; `fetch` and `verify` run before libvirt is opened (main.rs).
pub(crate) fn run(c: &crate::args::ImageCommand, ctx: &Ctx, json: bool) -> Result<(), Error> {
    use crate::args::ImageCommand;
    let bar = Bar(indicatif::ProgressBar::new(0));
    match c {
        ImageCommand::Fetch { .. } | ImageCommand::Verify { .. } => Ok(()),
        ImageCommand::List => {
            let l = manage::list(ctx)?;
            if json {
                out_json(&l)
            } else {
                out(&render_list(&l))
            }
            Ok(())
        }
        ImageCommand::Remove { sha256, yes } => {
            let yes = *yes || {
                let chosen = manage::resolve_for_removal(ctx, sha256)?;
                let names: Vec<String> = chosen.iter().map(|e| esc(&e.file)).collect();
                confirm(&format!(
                    "Remove {} from the image cache?",
                    names.join(", ")
                ))
            };
            let r = manage::remove(ctx, sha256, yes, &bar)?;
            if json {
                out_json(&r)
            } else {
                out(&render_removal(&r))
            }
            Ok(())
        }
        ImageCommand::Prune { yes, dry_run } => {
            let yes = *yes
                || *dry_run
                || confirm(
                    "Remove every cached file no VM uses, the quarantine and partial downloads?",
                );
            let r = manage::prune(ctx, *dry_run, yes, &bar)?;
            if json {
                out_json(&r)
            } else {
                out(&render_removal(&r))
            }
            Ok(())
        }
    }
}
