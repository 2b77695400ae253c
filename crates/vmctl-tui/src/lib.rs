//! `vmctl top`: a terminal UI over [`vmctl::commands::observe`].
//!
//! [`App`] is the state (the current view, selection, filter, dialog), [`handle_key`] what a
//! key does to it (pure, returns an [`Action`]), [`render`] what it looks like (pure), and
//! [`run`] the loop that owns the terminal, refreshes every interval and performs the actions
//! through the vmctl library. [`once`] is one refresh without a terminal (`--once`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossterm::event::{self, Event, KeyEventKind};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde::Serialize;
use vmctl::commands::observe::{Observer, View};
use vmctl::commands::{Ctx, gpu, ip, lifecycle};
use vmctl::{Error, Result};

mod app;
pub mod fmt;
mod ui;

pub use app::{Action, App, GpuChoice, Mode, handle_key};
pub use ui::{KEYS, render};

/// Why `vmctl top` cannot run interactively.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error("vmctl top needs a terminal: stdout is not one")]
    NotATerminal,
    #[error("the terminal failed while {during}")]
    Terminal {
        during: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl vmctl::error::CommandFailure for TopError {
    fn exit_kind(&self) -> vmctl::ExitKind {
        match self {
            Self::NotATerminal => vmctl::ExitKind::Usage,
            Self::Terminal { .. } => vmctl::ExitKind::Failure,
        }
    }
    fn help(&self) -> Vec<String> {
        match self {
            Self::NotATerminal => vec![
                "for one refresh as text in a script or a pipe: `vmctl top --once` (JSON: `vmctl top --once --json`)".into(),
            ],
            Self::Terminal { .. } => vec![
                "if the terminal is left odd, `reset` restores it".into(),
            ],
        }
    }
}

impl From<TopError> for Error {
    fn from(e: TopError) -> Self {
        Error::Command(vmctl::error::Failure::new(e))
    }
}

/// The refresh interval's bounds.
pub const MIN_INTERVAL: Duration = Duration::from_millis(200);
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// `--interval SECS` (decimals allowed), within [`MIN_INTERVAL`]..=[`MAX_INTERVAL`].
pub fn parse_interval(raw: &str) -> Result<Duration> {
    let bad = |reason: &str| Error::InvalidOption {
        option: "--interval".into(),
        value: raw.into(),
        reason: reason.into(),
    };
    let secs: f64 = raw
        .trim()
        .parse()
        .map_err(|_| bad("not a number of seconds (e.g. 2 or 0.5)"))?;
    if !secs.is_finite() || secs < MIN_INTERVAL.as_secs_f64() {
        return Err(bad("below 0.2 s: refreshing faster only loads libvirt"));
    }
    if secs > MAX_INTERVAL.as_secs_f64() {
        return Err(bad("above 1 hour"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `NO_COLOR` set to anything non-empty (<https://no-color.org>).
pub fn no_color(env: &dyn Fn(&str) -> Option<String>) -> bool {
    env("NO_COLOR").is_some_and(|v| !v.is_empty())
}

fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One timed refresh into `app` (a failure goes to the footer; the last view stays).
pub fn refresh(app: &mut App, observer: &mut Observer, ctx: &Ctx) {
    let t0 = Instant::now();
    match observer.refresh(ctx, t0) {
        Ok(v) => {
            app.refresh_ms = Some(t0.elapsed().as_secs_f64() * 1000.0);
            app.set_view(v);
            if app
                .status
                .as_deref()
                .is_some_and(|s| s.starts_with("refresh failed"))
            {
                app.status = None;
            }
        }
        Err(e) => app.status = Some(format!("refresh failed: {e}")),
    }
    app.now_secs = epoch_secs();
}

/// An error as message lines: the error, then its `help:` lines.
fn error_lines(e: &Error) -> Vec<String> {
    let mut lines = vec![e.to_string()];
    lines.extend(e.help().into_iter().map(|h| format!("help: {h}")));
    lines
}

/// Performs `action` through the vmctl library; the result goes to the footer (success) or a
/// message box (an error and its help). The observer re-reads the XML next time. `Scan` must
/// be drawn as "scanning" by the caller first: it takes seconds.
pub fn perform(app: &mut App, observer: &mut Observer, ctx: &Ctx, action: &Action) {
    let (what, result): (&str, Result<String>) = match action {
        Action::None | Action::Quit => return,
        Action::Start(vm) => ("start", lifecycle::start(ctx, vm).map(|o| o.action)),
        Action::Stop(vm) => ("stop", lifecycle::request_stop(ctx, vm).map(|o| o.action)),
        Action::Reboot(vm) => ("reboot", lifecycle::reboot(ctx, vm).map(|o| o.action)),
        Action::Delete(vm) => ("delete", delete(ctx, vm)),
        Action::GpuAttach { vm, bdf } => ("gpu attach", gpu_attach(ctx, vm, bdf)),
        Action::GpuDetach { vm, bdf } => ("gpu detach", gpu_detach(ctx, vm, bdf)),
        Action::Scan => ("scan", scan(ctx)),
    };
    let vm = match action {
        Action::Start(v) | Action::Stop(v) | Action::Reboot(v) | Action::Delete(v) => {
            Some(v.as_str())
        }
        Action::GpuAttach { vm, .. } | Action::GpuDetach { vm, .. } => Some(vm.as_str()),
        _ => None,
    };
    match result {
        Ok(done) => {
            app.status = Some(match vm {
                Some(vm) => format!("{vm}: {done}"),
                None => done,
            })
        }
        Err(e) => {
            let title = match vm {
                Some(vm) => format!("{what} {vm} failed"),
                None => format!("{what} failed"),
            };
            app.message(&title, error_lines(&e), true);
        }
    }
    observer.invalidate();
}

fn delete(ctx: &Ctx, vm: &str) -> Result<String> {
    // As `vmctl delete` without --force: a cluster node goes through `cluster remove-node`.
    if let Some(cluster) = vmctl::commands::cluster::ops::node_of(ctx, vm) {
        return Err(vmctl::commands::cluster::ClusterError::ClusterNode {
            vm: vm.into(),
            cluster,
        }
        .into());
    }
    let d = lifecycle::delete(ctx, vm, true, false)?;
    Ok(format!(
        "deleted ({} path(s) removed, {} kept)",
        d.removed.len(),
        d.kept.len()
    ))
}

fn gpu_attach(ctx: &Ctx, vm: &str, bdf: &str) -> Result<String> {
    let req = gpu::AttachRequest {
        vm: vm.into(),
        selectors: vmctl::gpu::parse_selectors(&[bdf.to_string()])?,
        scope: gpu::Scope::default(),
        force: false,
    };
    let o = gpu::attach(ctx, &req)?;
    let mut s = format!("attached {}", o.gpus.join(", "));
    for n in o.notes {
        s += &format!("; {n}");
    }
    Ok(s)
}

fn gpu_detach(ctx: &Ctx, vm: &str, bdf: &str) -> Result<String> {
    let req = gpu::DetachRequest {
        vm: vm.into(),
        selectors: vmctl::gpu::parse_selectors(&[bdf.to_string()])?,
        scope: gpu::Scope::default(),
        rebind: gpu::Rebind::None,
    };
    let o = gpu::detach(ctx, ctx.host, &req)?;
    let mut s = format!("detached {}", o.gpus.join(", "));
    for w in o.warnings {
        s += &format!("; {w}");
    }
    Ok(s)
}

/// `vmctl ip check` of the configured bridge, kept for the bridge line.
fn scan(ctx: &Ctx) -> Result<String> {
    let bridge = ctx.config.value("bridge").to_string();
    let req = netscan::ScanRequest::new(&bridge);
    ip::validate(ctx.scanner, &req)?;
    let owners = ip::mac_owners(ctx.hv).ok();
    let c = ip::check(ctx.scanner, &req, owners.as_ref())?;
    vmctl::commands::observe::record_scan(ctx.config, ctx.host, &c, SystemTime::now());
    Ok(format!(
        "scanned {} ({}): {} used, {} free, {} conflict(s)",
        c.interface,
        c.subnet,
        c.used.len(),
        c.free_count,
        c.conflicts.len()
    ))
}

/// What `--once --json` prints.
#[derive(Debug, Serialize)]
pub struct Once {
    /// vmctl's own time for a steady-state refresh (one bulk-statistics round trip), in ms.
    pub refresh_ms: f64,
    /// The first refresh, which also reads every domain's XML (one call per domain).
    pub first_refresh_ms: f64,
    pub round_trips: u64,
    pub first_round_trips: u64,
    pub view: View,
}

/// `--once`: a first refresh (every domain's XML) and a steady-state one (the bulk statistics
/// only), both timed. Rates need an interval, so they are left out (null).
pub fn once(ctx: &Ctx) -> Result<Once> {
    let mut observer = Observer::new();
    let t0 = Instant::now();
    let first = observer.refresh(ctx, t0)?;
    let first_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let t1 = Instant::now();
    let mut view = observer.refresh(ctx, t1)?;
    let ms = t1.elapsed().as_secs_f64() * 1000.0;
    for v in &mut view.vms {
        v.cpu_percent = None;
        v.disk_read_bps = None;
        v.disk_write_bps = None;
        v.net_rx_bps = None;
        v.net_tx_bps = None;
    }
    Ok(Once {
        refresh_ms: ms,
        first_refresh_ms: first_ms,
        round_trips: view.round_trips,
        first_round_trips: first.round_trips,
        view,
    })
}

/// The screen for `view` as plain text, `width` columns, as high as the rows need (`--once`).
pub fn render_text(view: &View, width: u16, refresh_ms: Option<f64>) -> String {
    let extra_gpu = if view.gpus.is_empty() {
        1
    } else {
        view.gpus.len().min(5) as u16 + 1
    };
    let height = view.vms.len() as u16 + 2 + extra_gpu + 1 + 3;
    let mut app = App::new(view.clone(), true);
    app.refresh_ms = refresh_ms;
    app.now_secs = epoch_secs();
    app.interactive = false;
    text_of(&app, width, height.max(8))
}

/// `app` drawn on a `width`×`height` screen, as text lines with trailing spaces removed.
pub fn text_of(app: &App, width: u16, height: u16) -> String {
    let mut term = match Terminal::new(TestBackend::new(width, height)) {
        Ok(t) => t,
        Err(_) => return String::new(),
    };
    if term.draw(|f| render(app, f)).is_err() {
        return String::new();
    }
    let buf = term.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let mut line = String::new();
        for x in 0..buf.area.width {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The terminal's width, if there is one.
pub fn terminal_width() -> Option<u16> {
    crossterm::terminal::size().ok().map(|(w, _)| w)
}

/// Settings of the interactive loop.
#[derive(Debug, Clone)]
pub struct Options {
    pub interval: Duration,
    pub no_color: bool,
}

/// The interactive UI: owns the terminal (alternate screen, raw mode), restored on return, on
/// a panic, on Ctrl-C (a key in raw mode) and on SIGTERM/SIGHUP (polled between keys).
pub fn run(ctx: &Ctx, opts: &Options) -> Result<()> {
    let term_signal = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        // Without the handler the default action ends the process with the terminal raw.
        let _ = signal_hook::flag::register(sig, Arc::clone(&term_signal));
    }
    let mut observer = Observer::new();
    let mut app = App::new(empty_view(ctx), opts.no_color);
    refresh(&mut app, &mut observer, ctx);
    // ratatui::init: alternate screen, raw mode, and a panic hook that restores both.
    let mut terminal = ratatui::try_init().map_err(|source| TopError::Terminal {
        during: "being set up",
        source,
    })?;
    // Ok(true): stopped by a signal.
    let result = (|| -> std::io::Result<bool> {
        let mut next = Instant::now() + opts.interval;
        loop {
            terminal.draw(|f| render(&app, f))?;
            if term_signal.load(Ordering::Relaxed) {
                return Ok(true);
            }
            let wait = next
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(250));
            if event::poll(wait)? {
                match event::read()? {
                    Event::Key(k) if k.kind != KeyEventKind::Release => {
                        let action = handle_key(&mut app, k);
                        match action {
                            Action::Quit => return Ok(false),
                            Action::None => {}
                            other => {
                                if other == Action::Scan {
                                    app.status =
                                        Some(format!("scanning {}…", app.view.bridge_name));
                                    terminal.draw(|f| render(&app, f))?;
                                }
                                perform(&mut app, &mut observer, ctx, &other);
                                refresh(&mut app, &mut observer, ctx);
                                next = Instant::now() + opts.interval;
                            }
                        }
                    }
                    _ => {}
                }
            }
            if Instant::now() >= next {
                refresh(&mut app, &mut observer, ctx);
                next = Instant::now() + opts.interval;
            }
        }
    })();
    ratatui::restore();
    let signalled = result.map_err(|source| TopError::Terminal {
        during: "drawing",
        source,
    })?;
    if signalled {
        return Err(Error::Interrupted {
            during: "vmctl top".into(),
            next: "nothing was left half done: an action runs to its end before a signal is seen"
                .into(),
        });
    }
    Ok(())
}

fn empty_view(ctx: &Ctx) -> View {
    View {
        uri: ctx.hv.uri().to_string(),
        vms: Vec::new(),
        gpus: Vec::new(),
        gpus_note: None,
        bridge: None,
        bridge_name: ctx.config.value("bridge").to_string(),
        round_trips: 0,
    }
}

#[cfg(test)]
mod tests;
