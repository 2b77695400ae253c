//! `vmctl top`: the terminal UI ([`vmctl_tui`]), or with `--once` one refresh printed as text
//! or JSON, without a terminal (scripts, the benchmark).

use std::io::IsTerminal;

use clap::Args;
use hostio::HostRoot;
use netscan::Scanner;
use vmctl::Error;
use vmctl::config::Config;
use vmctl::hypervisor::Libvirt;

use crate::{out, out_json};

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Seconds between refreshes, 0.2 to 3600 (decimals allowed)
    #[arg(
        long,
        value_name = "SECS",
        default_value = "2",
        allow_negative_numbers = true
    )]
    interval: String,
    /// Print one refresh and exit (text, or JSON with --json): no terminal needed. The JSON
    /// has `refresh_ms`, vmctl's own time for a steady-state refresh
    #[arg(long)]
    pub(crate) once: bool,
}

pub fn run(a: &TopArgs, config: &Config, host: &HostRoot, json: bool) -> Result<(), Error> {
    // Bad input is refused before libvirt is even asked.
    let interval = vmctl_tui::parse_interval(&a.interval)?;
    if !a.once && !std::io::stdout().is_terminal() {
        return Err(vmctl_tui::TopError::NotATerminal.into());
    }
    let hv = Libvirt::open(config.connect())?;
    let scanner = Scanner::new(host.clone());
    let ctx = crate::wire(config, host, &hv, &scanner);
    if a.once {
        let o = vmctl_tui::once(&ctx)?;
        if json {
            out_json(&o);
        } else {
            let width = vmctl_tui::terminal_width()
                .filter(|_| std::io::stdout().is_terminal())
                .unwrap_or(120);
            out(&vmctl_tui::render_text(&o.view, width, Some(o.refresh_ms)));
        }
        return Ok(());
    }
    vmctl_tui::run(
        &ctx,
        &vmctl_tui::Options {
            interval,
            no_color: vmctl_tui::no_color(&crate::env),
        },
    )
}
