//! Rollback: puts every file of the last run back from the backup store (a file changed since
//! the run wrote it is first kept as a copy next to it), then runs what makes the restored files
//! take effect.

use hostio::paths;

use super::*;

impl Applier<'_> {
    /// Puts one journalled file back as it was. A file changed since the run wrote it (its hash
    /// differs from the recorded one) is first kept as a copy next to it; the copy is returned.
    pub(super) fn restore(&self, run_id: &str, f: &JournalFile) -> Result<Option<KeptFile>, Error> {
        let wrap = |source| Error::Restore {
            path: f.path.clone(),
            source,
        };
        let real = self.root.resolve(&f.path).map_err(wrap)?;
        self.root.remove_stale_temps(&real).map_err(wrap)?;
        let original = match (&f.backup, f.existed) {
            (Some(b), true) => Some(
                self.root
                    .read(format!("{}/files/{b}", run_dir(run_id)))
                    .map_err(wrap)?,
            ),
            _ => None,
        };
        let current = match self.root.read(&real) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(wrap(e)),
        };
        // Changed since the run wrote it, and not simply the original (a run killed between
        // its journal entry and the write never changed the file). A journal from before the
        // hash was recorded cannot tell the run's content from an edit: keep a copy then too.
        let kept = match &current {
            Some(cur)
                if Some(cur) != original.as_ref()
                    && f.written_sha256.as_deref() != Some(sha256_hex(cur).as_str()) =>
            {
                Some(self.keep_copy(&f.path, cur).map_err(wrap)?)
            }
            _ => None,
        };
        match original {
            Some(bytes) => {
                self.root
                    .write_atomic(&real, &bytes, f.mode.unwrap_or(0o644))
                    .map_err(wrap)?;
            }
            None => {
                self.root.remove_file(&real).map_err(wrap)?;
                for d in f.created_dirs.iter().rev() {
                    self.root.remove_dir_if_empty(d).map_err(wrap)?;
                }
            }
        }
        Ok(kept)
    }

    /// Saves `content` as `PATH.gpu-vm-bootstrap-user-edit-TIME` (mode 0600: the file may hold
    /// secrets, such as Wi-Fi passwords in netplan files, and must not run as a hook or script
    /// from a directory of them). The name is claimed with `O_EXCL`.
    pub(super) fn keep_copy(&self, path: &str, content: &[u8]) -> std::io::Result<KeptFile> {
        let stamp = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_else(|_| new_run_id());
        let base = format!("{path}{USER_EDIT_SUFFIX}{stamp}");
        let mut n = 1;
        loop {
            let copy = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            match self.root.write_new(&copy, content, 0o600) {
                Ok(()) => {
                    self.log.log(
                        Level::Warn,
                        &format!(
                            "{path} was changed after apply wrote it: kept that version as {copy}"
                        ),
                    );
                    return Ok(KeptFile {
                        path: path.to_string(),
                        copy,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Restores the files of the last apply that changed files and was not rolled back yet, then
    /// runs (or lists) the commands that make the restored files effective.
    pub fn rollback(&self) -> Result<RollbackReport, Error> {
        let mut journals = load_journals(self.root);
        let Some(last) = journals
            .iter()
            .rposition(|j| !j.rolled_back && !j.files.is_empty())
        else {
            return Err(Error::NothingToRollBack {
                dir: self
                    .root
                    .path(paths::BOOTSTRAP_STATE_DIR)
                    .display()
                    .to_string(),
            });
        };
        // Runs that were interrupted and finished by the run after them belong to this apply:
        // undo newest first, so the oldest backup (the true original) is written last.
        let mut group = vec![last];
        let mut k = last;
        while k > 0 {
            k -= 1;
            if journals[k].rolled_back || !journals[k].interrupted {
                break;
            }
            group.push(k);
        }
        let mut report = RollbackReport {
            run_id: group
                .iter()
                .map(|&i| journals[i].id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            ..RollbackReport::default()
        };
        let mut touched: Vec<String> = Vec::new();
        // Bridges brought up by this apply; a re-run that only applied files an interrupted run
        // wrote comes after `last` and has no files of its own.
        let oldest = group.iter().copied().min().unwrap_or(last);
        let mut links: Vec<String> = Vec::new();
        for j in journals[oldest..].iter().filter(|j| !j.rolled_back) {
            for l in &j.created_links {
                if !links.contains(l) {
                    links.push(l.clone());
                }
            }
        }
        self.clear_stale_temps(&journals[oldest..])?;
        for &i in &group {
            let j = &mut journals[i];
            for f in j.files.iter().rev() {
                if let Some(kept) = self.restore(&j.id, f)? {
                    report.files_kept.push(kept);
                }
                let list = if f.existed {
                    &mut report.files_restored
                } else {
                    &mut report.files_removed
                };
                if !list.contains(&f.path) {
                    list.push(f.path.clone());
                }
                touched.push(f.path.clone());
                self.log.log(Level::Info, &format!("restored {}", f.path));
            }
            j.rolled_back = true;
            self.save(j)?;
        }
        // A file created by one run and edited by the next is removed, not "restored".
        report
            .files_restored
            .retain(|p| !report.files_removed.contains(p));
        let mut follow_ups = follow_up_commands(touched.iter().map(String::as_str));
        let touched_refs: Vec<&str> = touched.iter().map(String::as_str).collect();
        follow_ups.extend(crate::bootloader::follow_ups(self.root, &touched_refs));
        for argv in follow_ups {
            if self.run_commands {
                self.log
                    .log(Level::Info, &format!("running: {}", argv.join(" ")));
                self.runner
                    .run(&Cmd::new(argv.clone()))
                    .map_err(|source| Error::Command { source })?;
                report.commands_run.push(argv);
            } else {
                self.log.log(
                    Level::Info,
                    &format!("skipped (host root): {}", argv.join(" ")),
                );
                report.commands_skipped.push(argv);
            }
        }
        for name in links {
            if !self.root.exists(format!("{}/{name}", paths::SYS_CLASS_NET)) {
                continue;
            }
            let argv: Vec<String> = ["ip", "link", "delete", "dev", name.as_str()]
                .iter()
                .map(|s| s.to_string())
                .collect();
            if !self.run_commands {
                self.log.log(
                    Level::Info,
                    &format!("skipped (host root): {}", argv.join(" ")),
                );
                report.commands_skipped.push(argv);
            } else if self.delete_link(&name) {
                report.commands_run.push(argv);
            }
        }
        Ok(report)
    }
}

/// The commands that make restored files take effect.
pub fn follow_up_commands<'p>(paths_changed: impl Iterator<Item = &'p str>) -> Vec<Vec<String>> {
    let changed: Vec<&str> = paths_changed.collect();
    let any = |f: &dyn Fn(&str) -> bool| changed.iter().any(|p| f(p));
    let mut out: Vec<Vec<String>> = Vec::new();
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    if any(&|p| p.starts_with(paths::ETC_DEFAULT_GRUB)) {
        out.push(v(&["update-grub"]));
    }
    if any(&|p| {
        [
            paths::ETC_MODPROBE_VFIO,
            paths::ETC_MODULES_LOAD_VFIO,
            paths::VFIO_OVERRIDE_SCRIPT,
            paths::INITRAMFS_HOOK_VFIO,
        ]
        .contains(&p)
    }) {
        out.push(v(&["update-initramfs", "-u", "-k", "all"]));
    }
    if any(&|p| p == paths::APT_CONTAINER_TOOLKIT_LIST) {
        out.push(v(&["apt-get", "update"]));
    }
    if any(&|p| p.starts_with(paths::ETC_NETPLAN)) {
        out.push(v(&["netplan", "apply"]));
    }
    out
}
