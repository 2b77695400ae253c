//! The `vmctl` binary: parses arguments (clap), calls the vmctl library, renders results as text
//! or `--json`, prints errors with `help:` lines. Exit codes: 0 ok, 1 failure, 2 usage/refused,
//! 130 interrupted.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod args;
mod cli_cluster;
mod cli_day2;
mod cli_desktop;
mod cli_gpu_check;
mod cli_hosts;
mod cli_image;
mod cli_ip;
mod cli_metrics;
mod cli_share;
mod cli_snapshot;
mod cli_talos;
mod cli_top;
mod cli_tuning;
mod gpu_cli;
mod render;

use clap::{CommandFactory, FromArgMatches};
use hostio::{HostRoot, SystemRunner};
use indicatif::{ProgressBar, ProgressStyle};
use netscan::Scanner;
use vmctl::commands::create::{NetworkRequest, UbuntuRequest};
use vmctl::commands::ssh::cloud_init::Verdict;
use vmctl::commands::{Ctx, create, inspect, lifecycle, ssh};
use vmctl::config::{Config, KEYS, Source};
use vmctl::guest_media::cache::Progress;
use vmctl::hypervisor::Libvirt;
use vmctl::{Error, ExitKind};

use args::{Cli, Command, ConfigCommand, CreateKind, ImageCommand, UbuntuArgs};
use render::{esc, render_info, render_list, render_verify, table};

/// Writes to stdout; a closed pipe (`vmctl list | head`) is ignored, so the exit code stays the
/// one the command earned.
fn out(text: &str) {
    clikit::out(text);
}

fn out_json<T: serde::Serialize>(value: &T) {
    out(&format!(
        "{}\n",
        serde_json::to_string_pretty(value).unwrap_or_default()
    ));
}

/// An indicatif bar on stderr; indicatif draws nothing when stderr is not a terminal.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn begin(&self, url: &str, total: Option<u64>, resumed_from: u64) {
        // The bar may have finished a re-hash of a cached copy before this download.
        self.0.reset();
        if let Some(t) = total {
            self.0.set_length(t);
            self.0.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
        }
        self.0.set_position(resumed_from);
        let name = url.rsplit('/').next().unwrap_or(url);
        self.0.set_message(if resumed_from > 0 {
            format!("resuming {name}")
        } else {
            format!("downloading {name}")
        });
    }
    fn begin_check(&self, path: &std::path::Path, total: u64) {
        self.0.reset();
        self.0.set_length(total);
        self.0.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        self.0.set_message(format!("re-hashing {name}"));
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
    /// Always printed, even when stderr is not a terminal (where the bar draws nothing): a
    /// wait for another vmctl, or a file moved aside, is worth a line in any log.
    fn note(&self, line: &str) {
        self.0.suspend(|| clikit::errln(&clikit::escape(line)));
    }
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// The one place the binary wires the real parts into a context: the process environment, the
/// live network scanner (ARP on the bridge, whatever `--host-root` maps: the VMs land on the
/// live bridge), the system clock and the Ctrl-C flag.
fn wire<'a>(
    config: &'a Config,
    host: &'a HostRoot,
    hv: &'a dyn vmctl::hypervisor::Hypervisor,
    scanner: &'a Scanner,
) -> Ctx<'a> {
    Ctx::new(config, host, &SystemRunner, hv)
        .with_env(&env)
        .with_scanner(scanner)
        .with_cancel(vmctl::interrupt::requested)
}

fn confirm(question: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    clikit::err(&format!("{question} [y/N] "));
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).is_ok() && matches!(line.trim(), "y" | "Y" | "yes")
}

/// `--wait`: until SSH takes the VM's key and cloud-init has finished; a line per stage on
/// stderr, a spinner in between (drawn only on a terminal).
fn wait_ready(ctx: &Ctx, name: &str, timeout: Duration) -> Result<ssh::Ready, Error> {
    let spinner = ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(120));
    let result = ssh::wait_ready(ctx, name, timeout, &ssh::Policy::default(), &|p| match p {
        ssh::Progress::Stage(line) => {
            spinner.suspend(|| clikit::errln(&format!("{name}: {}", clikit::escape(&line))))
        }
        ssh::Progress::Status(msg) => spinner.set_message(msg),
    });
    spinner.finish_and_clear();
    if let Ok(ssh::Ready {
        cloud_init: Verdict::Degraded { warnings },
        ..
    }) = &result
    {
        for w in warnings.iter().take(10) {
            clikit::errln(&format!(
                "{name}: cloud-init warning: {}",
                clikit::escape(w)
            ));
        }
    }
    result
}

/// The host root and the settings: flags > environment > config file > defaults.
fn load_config(cli: &Cli) -> Result<(HostRoot, Config), Error> {
    let host = cli
        .host_root
        .clone()
        .map(HostRoot::new)
        .unwrap_or_else(HostRoot::system);
    let mut flags = Vec::new();
    if let Some(c) = &cli.connect {
        flags.push(("connect", c.clone()));
    }
    if let Command::Create(CreateKind::Ubuntu(a)) = &cli.command
        && a.allow_unsigned
    {
        flags.push(("require_signature", "false".into()));
    }
    // `hosts add` writes the file: a --config that does not exist yet is created.
    let required = !matches!(cli.command, Command::Hosts(cli_hosts::HostsCommand::Add(_)));
    let config = Config::load_file(&host, cli.config.as_deref(), required, &env, &flags)?;
    Ok((host, config))
}

/// `--host NAME` and `hosts …`: commands with their own exit codes (the remote one; `hosts
/// status` exits 1 after printing every row when a host is unreachable). `None`: neither.
/// `--host local` is this machine: the command runs here, as without `--host`.
fn run_hosts(cli: &Cli) -> Option<Result<ExitCode, Error>> {
    let remote = cli.host.as_deref().filter(|h| *h != vmctl::hosts::LOCAL);
    if remote.is_none() && !matches!(cli.command, Command::Hosts(_)) {
        return None;
    }
    Some(load_config(cli).and_then(|(host, config)| {
        if let Some(name) = remote {
            let raw: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
            cli_hosts::forward(cli, name, &config, &raw)
        } else if let Command::Hosts(h) = &cli.command {
            cli_hosts::run(h, cli, &host, &config)
        } else {
            Ok(ExitCode::SUCCESS)
        }
    }))
}

/// A libvirt URI naming another machine without `--host`: the facts vmctl reads from the host
/// (GPUs, groups, scans, reservations, images, storage) are still this machine's.
fn warn_remote_connect(config: &Config) {
    let uri = config.connect();
    if vmctl::commands::observe::is_remote(uri) {
        clikit::errln(&format!(
            "warning: libvirt {} is another machine, but host facts (GPUs, IOMMU groups, scans, reservations, image cache, storage) are this machine's",
            esc(uri)
        ));
        clikit::errln(
            "help: add the host with `vmctl hosts add NAME --ssh USER@HOST` and run `vmctl --host NAME …`: its own vmctl reads its facts",
        );
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let (host, config) = load_config(&cli)?;
    if !matches!(cli.command, Command::Config(_) | Command::Hosts(_)) {
        warn_remote_connect(&config);
    }
    // Only `create` makes things a Ctrl-C should undo; every other command keeps the default.
    if matches!(
        cli.command,
        Command::Create(_)
            | Command::Clone(_)
            | Command::Cluster(
                cli_cluster::ClusterCommand::Create(_) | cli_cluster::ClusterCommand::AddWorker(_)
            )
    ) && let Err(e) = vmctl::interrupt::install()
    {
        tracing::warn!("Ctrl-C will stop create without rolling back: {e}");
    }
    if let Command::Config(ConfigCommand::Show) = &cli.command {
        if cli.json {
            out_json(&config);
        } else {
            let mut s = format!(
                "# config file: {}\n",
                config
                    .file
                    .as_ref()
                    .map(|p| esc(&p.display().to_string()))
                    .unwrap_or_else(|| "(none)".into())
            );
            for k in KEYS {
                let st = &config.settings[k.name];
                let from = match &st.source {
                    Source::Flag => "flag".to_string(),
                    Source::Env { var } => format!("env {var}"),
                    Source::File { path } => format!("file {}", esc(&path.display().to_string())),
                    Source::Default => "default".to_string(),
                };
                s += &format!(
                    "{:<24} = {:<45} # {from}\n",
                    k.name,
                    st.value
                        .as_deref()
                        .map(|v| format!("{v:?}"))
                        .unwrap_or_else(|| "(unset)".into())
                );
            }
            for h in config.hosts.values() {
                s += &format!(
                    "[hosts.{}] ssh = {:?}  # {}\n",
                    h.name,
                    esc(&h.ssh),
                    esc(&h.uri())
                );
            }
            out(&s);
        }
        return Ok(());
    }
    if let Command::Image(ImageCommand::Fetch { url, sha256 }) = &cli.command {
        let bar = Bar(ProgressBar::new(0));
        let f = vmctl::commands::image::fetch(&host, &config, url, sha256.as_deref(), &bar)?;
        if cli.json {
            out_json(&f);
        } else {
            out(&format!("{}\n", esc(&f.path.display().to_string())));
            clikit::errln(&format!("sha256 {}: {}", f.sha256, f.verification));
        }
        return Ok(());
    }
    if let Command::Image(ImageCommand::Verify { sha256, all }) = &cli.command {
        let bar = Bar(ProgressBar::new(0));
        let which = if *all {
            vmctl::commands::image::Which::All
        } else {
            vmctl::commands::image::Which::Blobs(sha256.clone())
        };
        let report = vmctl::commands::image::verify(&host, &config, &which, &bar)?;
        if cli.json {
            out_json(&report);
        } else {
            out(&render_verify(&report));
        }
        return report.into_result();
    }
    if let Command::Ip(c) = &cli.command {
        return cli_ip::run(c, &config, &host, cli.json);
    }
    if let Command::Gpu(g) = &cli.command {
        return gpu_cli::run(g, cli.json, &host, &config);
    }
    if let Command::Talos(t) = &cli.command {
        return cli_talos::run(t, &config, &host, cli.json);
    }
    if let Command::Top(t) = &cli.command {
        return cli_top::run(t, &config, &host, cli.json);
    }
    if let Command::Metrics(m) = &cli.command {
        return cli_metrics::run(m, &config, &host, cli.json);
    }
    let hv = Libvirt::open(config.connect())?;
    let scanner = Scanner::new(host.clone());
    let ctx = wire(&config, &host, &hv, &scanner);
    match cli.command {
        Command::Talos(_)
        | Command::Config(_)
        | Command::Gpu(_)
        | Command::Ip(_)
        | Command::Top(_)
        | Command::Metrics(_)
        | Command::Hosts(_)
        | Command::Docs(_) => {}
        Command::Image(c) => cli_image::run(&c, &ctx, cli.json)?,
        Command::Share(c) => cli_share::run(&c, &ctx, cli.json)?,
        Command::List { all: _ } => {
            let list = inspect::list(&ctx)?;
            if cli.json {
                out_json(&list)
            } else {
                out(&render_list(&list))
            }
        }
        Command::Info { name } => {
            let info = inspect::info(&ctx, &name)?;
            if cli.json {
                out_json(&info)
            } else {
                out(&render_info(&info))
            }
        }
        Command::Start { name } => {
            let o = lifecycle::start(&ctx, &name)?;
            if cli.json {
                out_json(&o)
            } else {
                out(&format!("{}: {}\n", esc(&o.name), o.action))
            }
        }
        Command::Stop {
            name,
            timeout,
            force,
        } => {
            let o = lifecycle::stop(&ctx, &name, Duration::from_secs(timeout), force)?;
            if cli.json {
                out_json(&o)
            } else {
                out(&format!("{}: {}\n", esc(&o.name), o.action))
            }
        }
        Command::Cluster(c) => cli_cluster::run(c, &ctx, cli.json)?,
        Command::Reboot { name } => cli_day2::reboot(&ctx, &name, cli.json)?,
        Command::Autostart { name, state } => cli_day2::autostart(&ctx, &name, state, cli.json)?,
        Command::Console { name } => return cli_day2::console(&ctx, &name),
        Command::Resize(a) => cli_day2::resize(&ctx, &a, cli.json)?,
        Command::Disk(c) => cli_day2::disk(&ctx, c, cli.json)?,
        Command::Clone(a) => cli_day2::clone(&ctx, &a, cli.json)?,
        Command::Template(c) => cli_day2::template(&ctx, c, cli.json)?,
        Command::Snapshot(s) => cli_snapshot::run(s, &ctx, cli.json)?,
        Command::Delete {
            name,
            yes,
            keep_disks,
            force,
        } => {
            if !force && let Some(cluster) = vmctl::commands::cluster::ops::node_of(&ctx, &name) {
                return Err(vmctl::commands::cluster::ClusterError::ClusterNode {
                    vm: name,
                    cluster,
                }
                .into());
            }
            let yes = yes
                || (hv_exists(&ctx, &name)?
                    && confirm(&format!(
                        "Delete VM {} and the storage vmctl created for it?",
                        esc(&name)
                    )));
            let d = lifecycle::delete(&ctx, &name, yes, keep_disks)?;
            if cli.json {
                out_json(&d)
            } else {
                let mut s = format!("{}: undefined\n", esc(&d.name));
                for p in &d.removed {
                    s += &format!("  removed {}\n", esc(&p.display().to_string()));
                }
                for k in &d.kept {
                    s += &format!(
                        "  kept    {} ({})\n",
                        esc(&k.path.display().to_string()),
                        esc(&k.reason)
                    );
                }
                out(&s);
            }
        }
        Command::Ssh { name, args } => {
            let argv = ssh::argv(&ctx, &name, &args)?;
            tracing::debug!(?argv, "exec");
            use std::os::unix::process::CommandExt;
            let err = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
            return Err(Error::Io {
                op: "exec",
                path: PathBuf::from(&argv[0]),
                source: err,
            });
        }
        Command::Create(CreateKind::Talos(a)) if a.dry_run => {
            let d = vmctl::commands::create::talos::dry_run(&ctx, &a.request_with_config()?)?;
            if cli.json {
                out_json(&d)
            } else {
                cli_talos::render_dry_run(&d)
            }
        }
        Command::Create(CreateKind::Talos(a)) => {
            let bar = Bar(ProgressBar::new(0));
            let mut created = vmctl::commands::create::talos::create_talos(
                &ctx,
                &a.request_with_config()?,
                &bar,
            )?;
            if a.bootstrap {
                cli_cluster::bootstrap_created(&ctx, &mut created, cli.json)?;
            }
            if cli.json {
                out_json(&created)
            } else {
                cli_talos::render_created(&created, ctx.hv.uri())
            }
        }
        Command::Create(CreateKind::Ubuntu(a)) => {
            let network = a.net.request().unwrap_or(NetworkRequest::Dhcp);
            // A template's values, each overridden by its flag (packages add up).
            let t = match &a.template {
                Some(n) => vmctl::templates::load(&ctx, n)?.template,
                None => Default::default(),
            };
            let mut packages = t.packages.clone();
            packages.extend(
                a.packages
                    .iter()
                    .filter(|p| !t.packages.contains(p))
                    .cloned(),
            );
            let req = UbuntuRequest {
                name: a.name.clone().unwrap_or_default(),
                release: a.release.clone().or(t.release),
                image: a.image.clone().or(t.image),
                cpus: a.cpus.or(t.cpus).unwrap_or(2),
                memory: a
                    .memory
                    .clone()
                    .or(t.memory)
                    .unwrap_or_else(|| "2048".into()),
                disk: a.disk.clone().or(t.disk),
                bridge: a.bridge.clone(),
                network,
                mac: a.net.mac.clone(),
                ssh_key: a.ssh_key.clone(),
                user: a.user.clone().or(t.user),
                password_hash: a.password_hash.clone(),
                packages,
                firmware: a.firmware.clone().or(t.firmware),
                cpu_mode: a.cpu_mode.clone().or(t.cpu_mode),
                domain_type: a.domain_type.clone().or(t.domain_type),
                kernel: a.kernel.clone().or(t.kernel),
                initrd: a.initrd.clone().or(t.initrd),
                kernel_args: a.kernel_args.clone().or(t.kernel_args),
                kvm_hidden: a.kvm_hidden,
                gpus: a.gpu.clone(),
                gpu_force: a.gpu_force,
                no_start: a.no_start,
                no_autostart: a.no_autostart,
                data_disks: if a.data_disk.is_empty() {
                    t.data_disks
                } else {
                    a.data_disk.clone()
                },
                gpu_count: t.gpus,
                runcmd: t.runcmd,
                reset_machine_id: t.saved_from.is_some(),
                seed_only: a.seed_only,
                tuning: a.tuning.request(),
                shares: a.share.clone(),
                gpu_stack: a
                    .gpu_stack
                    .as_deref()
                    .map(|s| s.parse())
                    .transpose()
                    .map_err(|reason: String| vmctl::Error::InvalidOption {
                        option: "--gpu-stack".into(),
                        value: a.gpu_stack.clone().unwrap_or_default(),
                        reason,
                    })?,
            };
            if a.password.is_some() || a.desktop {
                return cli_desktop::run(&ctx, &a, req, cli.json);
            }
            let bar = Bar(ProgressBar::new(0));
            let created = create::create_ubuntu(&ctx, &req, &bar)?;
            if !cli.json {
                if created.defined {
                    clikit::errln(&format!(
                        "{}: {} (MAC {}, {})",
                        created.name,
                        if created.started {
                            "defined and started"
                        } else {
                            "defined"
                        },
                        created.mac,
                        created.ip.as_deref().unwrap_or("DHCP")
                    ));
                    clikit::errln(&format!("  base image: {}", created.verification));
                    if let Some(st) = &created.guest_stack {
                        clikit::errln(&format!(
                            "  guest GPU stack: {}",
                            cli_gpu_check::guest_stack_line(st)
                        ));
                    }
                    if let Some(p) = &created.placement {
                        for line in cli_tuning::placement_lines(p) {
                            clikit::errln(&line);
                        }
                    }
                } else {
                    clikit::errln(&format!(
                        "{}: seed written to {}",
                        created.name,
                        esc(&created.seed.display().to_string())
                    ));
                    if let Some(st) = &created.guest_stack {
                        clikit::errln(&format!(
                            "  guest GPU stack: {}",
                            cli_gpu_check::guest_stack_line(st)
                        ));
                    }
                }
            }
            if a.wait && created.started {
                let timeout = Duration::from_secs(a.wait_timeout.unwrap_or(600));
                clikit::errln(&format!(
                    "{}: waiting until ready: SSH answers and cloud-init has finished (up to {} s)",
                    created.name,
                    timeout.as_secs()
                ));
                let r = wait_ready(&ctx, &created.name, timeout)?;
                clikit::errln(&format!(
                    "{}: ready after {} s (SSH on {} after {} s, cloud-init {})",
                    created.name, r.secs, r.addr, r.ssh_secs, r.cloud_init
                ));
            }
            if cli.json {
                out_json(&created)
            } else if created.defined {
                out(&format!(
                    "{}\nssh:     vmctl ssh {}\nconsole: virsh -c {} console {}\n",
                    created.name,
                    created.name,
                    ctx.hv.uri(),
                    created.name
                ));
            } else {
                out(&format!("{}\n", esc(&created.seed.display().to_string())));
            }
        }
    }
    Ok(())
}

fn hv_exists(ctx: &Ctx, name: &str) -> Result<bool, Error> {
    Ok(ctx.hv.get(name)?.is_some())
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let typed = subcommand_path(&matches);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    if let Command::Docs(d) = &cli.command {
        return d.run(Cli::command());
    }
    // -v info, -vv debug, -vvv trace; VMCTL_LOG (an EnvFilter) overrides; no colours unless
    // stderr is a terminal.
    clikit::init_logging(cli.verbose, "VMCTL_LOG");
    let json = cli.json;
    if let Some(result) = run_hosts(&cli) {
        return result.unwrap_or_else(|e| error_report(&e, &typed).print("vmctl", json));
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => error_report(&e, &typed).print("vmctl", json),
    }
}

/// The subcommands as typed (`create talos`), for help lines that name their `--help`.
fn subcommand_path(m: &clap::ArgMatches) -> String {
    let mut path = Vec::new();
    let mut m = m;
    while let Some((name, sub)) = m.subcommand() {
        path.push(name);
        m = sub;
    }
    path.join(" ")
}

/// The error as both binaries report it: kind (exit code), message, causes, help lines. `typed`
/// is the subcommand path the user typed (`create talos`).
fn error_report(e: &Error, typed: &str) -> clikit::ErrorReport {
    let kind = match e.exit_kind() {
        ExitKind::Usage => clikit::ErrorKind::Refused,
        ExitKind::Failure => clikit::ErrorKind::Failed,
        ExitKind::Interrupted => clikit::ErrorKind::Interrupted,
    };
    let mut report = clikit::ErrorReport::new(kind, e.to_string());
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        report.causes.push(s.to_string());
        src = s.source();
    }
    report.help = match e.invalid_option() {
        Some(option) => vec![format!(
            "see `vmctl {typed} --help` for the format of {option}"
        )],
        None => e.help(),
    };
    report
}
