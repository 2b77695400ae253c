//! The desktop install after its create (`create ubuntu --desktop --wait`): watches the serial
//! console for the installer's phases until it powers off, then switches the VM to boot from
//! its disk ([`crate::desktop`]).

use std::time::{Duration, Instant};

use crate::ctx::Ctx;
use crate::desktop::{
    DesktopError, InstallPhase, InstallStatus, install_layout, install_status, phase_of,
    switch_to_final,
};
use crate::error::{Error, Result};
// What the binary and the tests name beside the wait.
pub use crate::desktop::{DEFAULT_MEMORY, Switched};

/// Progress while waiting for the install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitEvent {
    /// A new phase, with the time since the wait began.
    Phase(InstallPhase, Duration),
    /// The last line of console output (for a spinner).
    Line(String),
}

/// Waits until the installer powers off, reporting phases from the console log, then switches
/// to the final phase and starts it.
pub fn wait_install(
    ctx: &Ctx,
    name: &str,
    timeout: Duration,
    report: &dyn Fn(&WaitEvent),
) -> Result<Switched> {
    let (layout, _) = install_layout(ctx, name)?;
    let began = Instant::now();
    let mut shown: Option<InstallPhase> = None;
    loop {
        ctx.check_cancelled(
            || format!("the wait for the desktop install of {name}"),
            || {
                format!(
                    "the install goes on unwatched; once {name} powers off, `vmctl start {name}` boots the installed system (or `vmctl delete {name} --yes`)"
                )
            },
        )?;
        let active = ctx.hv.state(name)?.is_active();
        let bytes = std::fs::read(&layout.console_log).unwrap_or_default();
        let console = String::from_utf8_lossy(&bytes);
        let phase = phase_of(&console);
        if phase > shown
            && let Some(p) = phase
        {
            report(&WaitEvent::Phase(p, began.elapsed()));
            shown = phase;
        }
        if let Some(last) = console.lines().rev().map(str::trim).find(|l| !l.is_empty()) {
            report(&WaitEvent::Line(last.chars().take(100).collect()));
        }
        match install_status(&console, active) {
            InstallStatus::Running { .. } => {}
            InstallStatus::Finished => return switch_to_final(ctx, name, true),
            InstallStatus::Failed => {
                return Err(DesktopError::InstallFailed {
                    name: name.into(),
                    log: layout.console_log,
                }
                .into());
            }
            InstallStatus::StoppedEarly => {
                return Err(DesktopError::StoppedEarly {
                    name: name.into(),
                    log: layout.console_log,
                }
                .into());
            }
        }
        if began.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: format!("the desktop install of {name}"),
                secs: timeout.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}
