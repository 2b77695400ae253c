//! `gpu-vm-bootstrap`: parses arguments, calls the library, renders the result.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hostio::HostRoot;

/// Prepare an Ubuntu 24.04 host with NVIDIA GPUs as a GPU VM host.
///
/// Phases: preflight, NVIDIA driver/CUDA/container toolkit, KVM/libvirt, IOMMU/VFIO, br0 bridge,
/// vmctl. Every change is planned first and shown as a diff; nothing is changed by `plan`.
///
/// Exit codes: 0 ok, 1 failure, 2 bad usage or refused as unsafe.
#[derive(Debug, Parser)]
#[command(name = "gpu-vm-bootstrap", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Treat DIR as the host's `/`: every /sys, /proc, /etc path is read (and written) under it,
    /// and commands are listed as skipped instead of run.
    #[arg(long, global = true, value_name = "DIR")]
    host_root: Option<PathBuf>,

    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GpuMode {
    Passthrough,
    Host,
    None,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the host facts: OS, CPU, KVM, IOMMU groups, GPUs and their isolation, NICs.
    Detect {
        /// Write exactly the files detection reads to FILE.tar.gz (for bug reports and fixtures).
        #[arg(long, value_name = "FILE.tar.gz")]
        capture: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = cli.host_root.clone().map(HostRoot::new).unwrap_or_default();
    match cli.command {
        Some(Command::Detect { capture }) => {
            if let Some(out) = capture {
                match hwdetect::capture(&root, &out) {
                    Ok(n) => {
                        eprintln!("wrote {n} entries to {}", out.display());
                        return ExitCode::SUCCESS;
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(1);
                    }
                }
            }
            let facts = hwdetect::detect(&root);
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&facts).expect("facts serialise")
                );
            } else {
                print!("{}", hwdetect::render_table(&facts));
            }
            for w in &facts.warnings {
                eprintln!("warning: {w}");
            }
            ExitCode::SUCCESS
        }
        None => {
            let _ = GpuMode::Passthrough;
            eprintln!("error: not implemented yet");
            ExitCode::from(1)
        }
    }
}
