//! The binary's side of `vmctl create ubuntu NAME --desktop`: turns the shared `create ubuntu`
//! arguments into a desktop request, asks for the password (`--password-prompt`), draws the
//! install progress for `--wait` and renders the result. The work is in
//! `vmctl::commands::create::desktop` and `vmctl::commands::desktop`.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use vmctl::Error;
use vmctl::commands::Ctx;
use vmctl::commands::create::UbuntuRequest;
use vmctl::commands::create::desktop::{self, DesktopRequest};
use vmctl::commands::desktop::{WaitEvent, wait_install};
use vmctl::desktop::{DEFAULT_MEMORY, DesktopError};
use vmctl::guest_media::iso;

use super::{Bar, UbuntuArgs, esc, out, out_json};

/// `create ubuntu --desktop --json`: what was created and, with `--wait`, the switch to the
/// installed system (`null` without it).
#[derive(serde::Serialize)]
struct DesktopOutput<'a> {
    created: &'a desktop::DesktopCreated,
    switched: Option<&'a vmctl::desktop::Switched>,
}

/// Default `--wait-timeout` of a desktop install: download excluded, the install itself takes
/// 10-30 min on a real host; 90 min leaves room for slow disks and the NVIDIA driver build.
const INSTALL_TIMEOUT_SECS: u64 = 5400;

pub(crate) fn run(ctx: &Ctx, a: &UbuntuArgs, base: UbuntuRequest, json: bool) -> Result<(), Error> {
    if a.password.is_some() {
        return Err(DesktopError::PlaintextPassword.into());
    }
    let mut base = base;
    base.memory = a.memory.clone().unwrap_or_else(|| DEFAULT_MEMORY.into());
    let req = DesktopRequest {
        base,
        iso: a.iso.clone(),
        minimal: a.minimal,
        locale: a.locale.clone(),
        keyboard: a.keyboard.clone(),
        timezone: a.timezone.clone(),
    };
    let mut plan = desktop::plan(ctx, &req, &iso::this_month())?;
    if a.password_prompt {
        let password = prompt_password(&format!(
            "Password for {} on {}: ",
            plan.base.user, plan.base.name
        ))?;
        plan.set_password_hash(desktop::hash_password(&password)?);
    }
    if !json {
        clikit::errln(&format!(
            "{}: Ubuntu {} {} desktop, {} vCPUs, {} MiB, {} GiB disk{}",
            plan.base.name,
            plan.release.version,
            plan.release.codename,
            plan.base.vcpus,
            plan.base.memory_mib,
            plan.disk_bytes >> 30,
            if plan.base.gpus.is_empty() {
                String::new()
            } else {
                format!(", {} GPU(s) + NVIDIA driver", plan.base.gpus.len())
            }
        ));
    }
    let bar = Bar(ProgressBar::new(0));
    let created = desktop::create_planned(ctx, plan, &bar)?;
    if !json {
        clikit::errln(&format!(
            "{}: ISO {} ({})",
            created.name,
            esc(&created.iso.path.display().to_string()),
            created.iso.verification
        ));
        if !created.iso.signature_verified {
            clikit::errln("  note: only the checksum was verified, not the SHA256SUMS signature");
        }
        clikit::errln(&format!(
            "{}: install phase {} (MAC {}, {}); console log {}",
            created.name,
            if created.started {
                "defined and started"
            } else {
                "defined"
            },
            created.mac,
            created.ip.as_deref().unwrap_or("DHCP"),
            esc(&created.console_log.display().to_string())
        ));
    }
    let mut switched = None;
    if a.wait && created.started {
        let timeout = Duration::from_secs(a.wait_timeout.unwrap_or(INSTALL_TIMEOUT_SECS));
        let began = Instant::now();
        let spinner = ProgressBar::new_spinner();
        spinner.enable_steady_tick(Duration::from_millis(200));
        let name = created.name.clone();
        let s = wait_install(ctx, &created.name, timeout, &|ev| match ev {
            WaitEvent::Phase(p, t) => spinner.suspend(|| {
                clikit::errln(&format!(
                    "{name}: [{:>3}:{:02}] {}",
                    t.as_secs() / 60,
                    t.as_secs() % 60,
                    p.describe()
                ))
            }),
            WaitEvent::Line(l) => spinner.set_message(l.clone()),
        });
        spinner.finish_and_clear();
        let s = s?;
        let t = began.elapsed().as_secs();
        clikit::errln(&format!(
            "{}: [{:>3}:{:02}] switched to boot from disk (ISO, seed and installer kernel detached); started",
            created.name,
            t / 60,
            t % 60
        ));
        let rest = timeout
            .saturating_sub(began.elapsed())
            .max(Duration::from_secs(600));
        let r = super::wait_ready(ctx, &created.name, rest)?;
        let t = began.elapsed().as_secs();
        clikit::errln(&format!(
            "{}: [{:>3}:{:02}] the installed desktop is ready: SSH on {}, cloud-init {}",
            created.name,
            t / 60,
            t % 60,
            r.addr,
            r.cloud_init
        ));
        switched = Some(s);
    }
    if json {
        out_json(&DesktopOutput {
            created: &created,
            switched: switched.as_ref(),
        });
    } else {
        let mut s = format!(
            "{}\nssh:     vmctl ssh {}\nconsole: virsh -c {} console {}\nscreen:  virt-viewer -c {} {}\n",
            created.name,
            created.name,
            ctx.hv.uri(),
            created.name,
            ctx.hv.uri(),
            created.name
        );
        if switched.is_none() {
            s += &format!(
                "the installer powers the VM off when done; then `vmctl start {}` boots the installed desktop\n",
                created.name
            );
        }
        out(&s);
    }
    Ok(())
}

/// Reads a password: twice without echo from a terminal, or one line from stdin otherwise
/// (scripts: `printf '%s\n' "$pw" | vmctl create … --password-prompt`).
fn prompt_password(question: &str) -> Result<String, Error> {
    let stdin = std::io::stdin();
    let refuse = |reason: &str| Error::InvalidOption {
        option: "--password-prompt".into(),
        value: String::new(),
        reason: reason.into(),
    };
    let password = if stdin.is_terminal() {
        let first = read_hidden(question)?;
        let second = read_hidden("Again: ")?;
        if first != second {
            return Err(refuse("the two passwords differ"));
        }
        first
    } else {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|source| Error::Io {
                op: "read password from",
                path: "stdin".into(),
                source,
            })?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    if password.is_empty() {
        return Err(refuse("empty password"));
    }
    Ok(password)
}

/// One line from the terminal on stdin with echo off (termios(3)), echo restored after.
fn read_hidden(question: &str) -> Result<String, Error> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    clikit::err(question);
    let _ = std::io::stderr().flush();
    let stdin = std::io::stdin();
    // stdin is a terminal (checked by the caller); without its settings we read with echo on.
    let saved = tcgetattr(&stdin).ok();
    if let Some(saved) = &saved {
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        quiet.local_modes.insert(LocalModes::ECHONL);
        let _ = tcsetattr(&stdin, OptionalActions::Now, &quiet);
    }
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    if let Some(saved) = &saved {
        let _ = tcsetattr(&stdin, OptionalActions::Now, saved);
    }
    r.map_err(|source| Error::Io {
        op: "read password from",
        path: "the terminal".into(),
        source,
    })?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
