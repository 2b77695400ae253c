//! The `vmctl` binary: parses arguments (clap), calls the vmctl library, renders results as text
//! or `--json`, prints errors with `help:` lines. Exit codes: 0 ok, 1 failure, 2 usage/refused,
//! 130 interrupted.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod gpu_cli;

use clap::{Args, Parser, Subcommand};
use hostio::{HostRoot, SystemRunner};
use indicatif::{ProgressBar, ProgressStyle};
use vmctl::commands::create::{NetworkRequest, UbuntuRequest};
use vmctl::commands::ssh::cloud_init::Verdict;
use vmctl::commands::{Ctx, create, inspect, lifecycle, ssh};
use vmctl::config::{Config, KEYS, Source};
use vmctl::guest_media::cache::Progress;
use vmctl::hypervisor::Libvirt;
use vmctl::{Error, ExitKind};

mod cli_desktop;
mod cli_ip;
mod cli_talos;

const AFTER_HELP: &str = "Exit codes: 0 ok, 1 failure, 2 bad usage or refused (nothing changed), 130 interrupted\n\
(Ctrl-C during `create` removes what it made; a second Ctrl-C quits at once).\n\
Settings: flags > environment (VMCTL_*) > /etc/vmctl/config.toml > built-in defaults; see `vmctl config show`.";

#[derive(Debug, Parser)]
#[command(name = "vmctl", version = env!("GVB_BUILD_VERSION"), args_override_self = true, about = "Manage VMs on libvirt: Ubuntu guests on a host bridge, verified images, GPU passthrough", after_help = AFTER_HELP)]
struct Cli {
    /// libvirt URI (default: VMCTL_CONNECT, then config.toml `connect`, then qemu:///system)
    #[arg(long, global = true, value_name = "URI")]
    connect: Option<String>,
    /// Print machine-readable JSON on stdout
    #[arg(long, global = true)]
    json: bool,
    /// More logging on stderr (-v, -vv)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Config file instead of /etc/vmctl/config.toml
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Treat DIR as the host's root for /sys, /proc and /etc (fixtures, tests)
    #[arg(long, global = true, value_name = "DIR", hide = true)]
    host_root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List domains: state, vCPUs, memory, GPUs, IPs, OS (vmctl's are marked)
    List {
        /// Show every domain (the default; accepted for virsh habits)
        #[arg(long)]
        all: bool,
    },
    /// Show a domain in detail: disks, NICs, firmware, vmctl metadata, console command
    Info { name: String },
    /// Start a domain
    Start { name: String },
    /// ACPI shutdown, waiting up to --timeout seconds; with --force, power off after that
    Stop {
        name: String,
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        timeout: u64,
        #[arg(long)]
        force: bool,
    },
    /// Undefine a stopped domain (with NVRAM) and remove the storage vmctl created for it
    Delete {
        name: String,
        /// Do not ask for confirmation
        #[arg(long, short)]
        yes: bool,
        /// Keep the VM's disks
        #[arg(long)]
        keep_disks: bool,
    },
    /// ssh to the VM as the user and with the key recorded at create
    Ssh {
        name: String,
        /// Arguments passed to ssh after the destination (a remote command)
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Create a VM
    #[command(subcommand)]
    Create(CreateKind),
    /// Image cache
    #[command(subcommand)]
    Image(ImageCommand),
    /// GPU passthrough: status, attach, detach
    #[command(subcommand)]
    Gpu(gpu_cli::GpuCommand),
    /// Show settings
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Agentless IP discovery on the bridge by ARP (check, list)
    #[command(subcommand)]
    Ip(cli_ip::IpCommand),
    /// Talos Linux: Image Factory schematics, versions, cluster configs
    #[command(subcommand)]
    Talos(cli_talos::TalosCommand),
    #[command(flatten)]
    Docs(clikit::DocsCommand),
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Download URL into the content-addressed cache, verified by --sha256 or the hash recorded
    /// at its first download; prints the cached path
    ///
    /// A copy already cached is checked through its seal (re-hashed if the file changed since
    /// it was sealed); one that fails is moved to the cache's quarantine/ and downloaded again.
    Fetch {
        url: String,
        /// Expected sha256 (64 hex digits)
        #[arg(long)]
        sha256: Option<String>,
    },
    /// Re-hash cached files now, whatever their seals say (exit 1 if one is corrupt)
    ///
    /// Each file is reported ok (and sealed again), or CORRUPT and moved to the cache's
    /// quarantine/: never used again, the next create or `image fetch` downloads it again.
    /// A use checks only the seal (size, mtime, inode): run this to catch what a seal cannot
    /// see, such as a change whose mtime was put back, or a failing disk.
    Verify {
        /// Blobs to check, by sha256 (64 hex digits)
        #[arg(value_name = "SHA256", required_unless_present = "all")]
        sha256: Vec<String>,
        /// Every blob in the cache, and every file made from one
        #[arg(long, conflicts_with = "sha256")]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CreateKind {
    /// An Ubuntu VM from a cloud image (or a custom image), configured by cloud-init
    Ubuntu(Box<UbuntuArgs>),
    /// A Talos Linux node from the Image Factory, booted into its generated machine config
    Talos(Box<cli_talos::TalosArgs>),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Effective settings and where each came from (flag, env, file, default)
    Show,
}

#[derive(Debug, Args)]
struct UbuntuArgs {
    /// VM name, also the guest's hostname: letters, digits and '-' (an RFC 1123 label, at most 63)
    name: String,
    /// Ubuntu release (24.04, 26.04, noble…); default 24.04
    #[arg(long)]
    release: Option<String>,
    /// Local path or URL of a base image to use instead of the release's cloud image
    #[arg(long, value_name = "PATH|URL")]
    image: Option<String>,
    /// Accept a mirror's SHA256SUMS without its signature SHA256SUMS.gpg even though the
    /// keyring exists (checksum only; the same as setting require_signature = false)
    #[arg(long)]
    allow_unsigned: bool,
    /// Virtual CPUs
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Memory: MiB, or with a unit (4G); default 2048, 4G with --desktop
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// Disk size (e.g. 20G); default: the image's size
    #[arg(long, value_name = "SIZE")]
    disk: Option<String>,
    /// Host bridge (default: setting `bridge`, br0)
    #[arg(long)]
    bridge: Option<String>,
    /// Static address A.B.C.D/NN (probed first: refused if it answers ARP), or `auto`: the
    /// first free address on the bridge outside setting `reserved_ips`
    #[arg(long, value_name = "CIDR", conflicts_with = "dhcp")]
    ip: Option<String>,
    /// Default gateway (inside the --ip subnet)
    #[arg(long, requires = "ip")]
    gateway: Option<String>,
    /// DNS servers (repeat or comma-separate)
    #[arg(long, value_delimiter = ',', requires = "ip")]
    dns: Vec<String>,
    /// Address by DHCP (the default without --ip)
    #[arg(long)]
    dhcp: bool,
    /// MAC address (default: random 52:54:00:xx:xx:xx)
    #[arg(long)]
    mac: Option<String>,
    /// SSH public key (default: setting `ssh_key`, then ~/.ssh/id_*.pub of the invoking user)
    #[arg(long, value_name = "FILE")]
    ssh_key: Option<PathBuf>,
    /// Guest user (default: setting `ssh_user`, ubuntu)
    #[arg(long)]
    user: Option<String>,
    /// crypt(3) password hash for the user (SSH key login needs none)
    #[arg(long, value_name = "HASH")]
    password_hash: Option<String>,
    /// Extra packages (comma-separated); qemu-guest-agent is always added
    #[arg(long, value_delimiter = ',')]
    packages: Vec<String>,
    /// efi | efi-secure | bios (default: setting `firmware`, efi)
    #[arg(long)]
    firmware: Option<String>,
    /// host-passthrough | host-model | custom:MODEL (default: setting `cpu_mode`)
    #[arg(long)]
    cpu_mode: Option<String>,
    /// kvm | qemu (TCG) (default: setting `domain_type`, kvm)
    #[arg(long)]
    domain_type: Option<String>,
    /// Direct kernel boot: kernel image (for images without a bootloader)
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Direct kernel boot: initrd
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Direct kernel boot: kernel command line (default "console=ttyS0")
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    kernel_args: Option<String>,
    /// Hide KVM from the guest (only old GeForce Windows drivers need it)
    #[arg(long)]
    kvm_hidden: bool,
    /// Pass GPUs through (every function), checked like `vmctl gpu attach`; implies q35 + UEFI.
    /// SELECTOR: BDF, index from `vmctl gpu status`, `all` (the default) or `group:N`; repeatable
    #[arg(long = "gpu", value_name = "SELECTOR", num_args = 0..=1, default_missing_value = "all")]
    gpu: Vec<String>,
    /// Override the GPU isolation, boot VGA and host-use refusals
    #[arg(long, requires = "gpu")]
    gpu_force: bool,
    /// Define the domain but do not start it
    #[arg(long)]
    no_start: bool,
    /// Only write the cloud-init seed into the VM's storage directory
    #[arg(long, conflicts_with_all = ["no_start", "wait"])]
    seed_only: bool,
    /// Wait until the VM is ready: SSH takes its key and cloud-init has finished (a cloud-init
    /// error fails the create; the VM is kept)
    #[arg(long, conflicts_with = "no_start")]
    wait: bool,
    /// Give up waiting after this many seconds (default 600; 5400 with --desktop)
    #[arg(long, value_name = "SECONDS")]
    wait_timeout: Option<u64>,
    /// Unattended Ubuntu Desktop install from the release ISO (autoinstall); with --wait, until
    /// the installed desktop is ready (SSH, cloud-init)
    #[arg(long)]
    desktop: bool,
    /// --desktop: the ISO to install from instead of the release's from the mirror
    #[arg(long, value_name = "PATH|URL", requires = "desktop")]
    iso: Option<String>,
    /// --desktop: install ubuntu-desktop-minimal instead of ubuntu-desktop
    #[arg(long, requires = "desktop")]
    minimal: bool,
    /// --desktop: ask for the user's password (hashed with SHA-512-crypt here, never stored in clear)
    #[arg(long, requires = "desktop", conflicts_with = "password_hash")]
    password_prompt: bool,
    /// Refused: a plaintext password on the command line (use --password-prompt)
    #[arg(long, value_name = "PASSWORD", hide = true)]
    password: Option<String>,
    /// --desktop: locale (default en_US.UTF-8)
    #[arg(long, requires = "desktop")]
    locale: Option<String>,
    /// --desktop: keyboard LAYOUT[:VARIANT] (default us)
    #[arg(long, requires = "desktop")]
    keyboard: Option<String>,
    /// --desktop: time zone (default Etc/UTC)
    #[arg(long, requires = "desktop")]
    timezone: Option<String>,
}

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

fn render_verify(r: &vmctl::commands::image::VerifyReport) -> String {
    use vmctl::commands::image::Verdict;
    let mut s = String::new();
    for b in &r.blobs {
        match &b.result {
            Verdict::Ok => s += &format!("ok       {} ({} bytes)\n", b.file, b.size),
            Verdict::Corrupt { actual, moved_to } => {
                s += &format!(
                    "CORRUPT  {}: its bytes hash to {actual}; moved to {}\n",
                    b.file,
                    moved_to.display()
                )
            }
        }
    }
    s += &format!(
        "{} ok, {} corrupt (re-hashed now, in {})\n",
        r.ok,
        r.corrupt,
        r.cache.display()
    );
    s
}

fn human_bytes_mib(mib: u64) -> String {
    if mib >= 1024 && mib.is_multiple_of(1024) {
        format!("{} GiB", mib / 1024)
    } else {
        format!("{mib} MiB")
    }
}

/// A value from outside (a domain name, a path, guest metadata) for a text view: control and bidi
/// characters shown as `\u{…}` (clikit::escape).
fn esc(s: &str) -> String {
    clikit::escape(s).into_owned()
}

/// Lays out `rows` (the first is the header) in columns two spaces apart. Cells are escaped
/// first, and widths count characters, not bytes.
fn table(rows: Vec<Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| r.iter().map(|c| esc(c)).collect())
        .collect();
    let cols = rows.first().map(Vec::len).unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut s = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        s.push_str(line.join("  ").trim_end());
        s.push('\n');
    }
    s
}

fn render_list(list: &inspect::VmList) -> String {
    let mut rows = vec![
        ["NAME", "STATE", "VCPUS", "MEMORY", "GPUS", "IPS", "OS"]
            .map(String::from)
            .to_vec(),
    ];
    for v in &list.vms {
        rows.push(vec![
            if v.vmctl {
                format!("{} *", v.name)
            } else {
                v.name.clone()
            },
            v.state.as_str().into(),
            v.vcpus.to_string(),
            human_bytes_mib(v.memory_mib),
            if v.gpus.is_empty() {
                "-".into()
            } else {
                v.gpus.join(",")
            },
            if v.ips.is_empty() {
                "-".into()
            } else {
                v.ips.join(",")
            },
            v.os.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut s = table(rows);
    if list.vms.iter().any(|v| v.vmctl) {
        s.push_str("(* created by vmctl)\n");
    }
    s
}

fn render_info(i: &inspect::VmInfo) -> String {
    let s = &i.summary;
    let path = |p: &std::path::Path| esc(&p.display().to_string());
    let list = |v: &[String], sep: &str| {
        if v.is_empty() {
            "-".into()
        } else {
            esc(&v.join(sep))
        }
    };
    let mut o = format!(
        "Name:       {}{}\nState:      {}\nType:       {} ({})\nFirmware:   {}\nvCPUs:      {}\nMemory:     {}\n",
        esc(&s.name),
        if s.vmctl { " (created by vmctl)" } else { "" },
        s.state.as_str(),
        esc(&i.domain_type.to_string()),
        esc(i.machine.as_deref().unwrap_or("-")),
        esc(&i.firmware.to_string()),
        s.vcpus,
        human_bytes_mib(s.memory_mib),
    );
    if let Some(k) = &i.kernel {
        o += &format!(
            "Kernel:     {} ({})\n",
            path(k),
            esc(i.cmdline.as_deref().unwrap_or(""))
        );
    }
    o += &format!("IPs:        {}\n", list(&s.ips, ", "));
    o += &format!("GPUs:       {}\n", list(&s.gpus, ", "));
    o += "Disks:\n";
    for d in &i.disks {
        o += &format!(
            "  {} {} {} ({}){}{}\n",
            esc(&d.target),
            esc(&d.device),
            d.path.as_deref().map(path).unwrap_or_else(|| "-".into()),
            esc(d.format.as_deref().unwrap_or("?")),
            d.backing
                .as_ref()
                .map(|b| format!(" backing {}", esc(&b.to_string())))
                .unwrap_or_default(),
            if d.readonly { " read-only" } else { "" }
        );
    }
    o += "NICs:\n";
    for n in &i.nics {
        o += &format!(
            "  {} {} {}\n",
            esc(n.mac.as_deref().unwrap_or("-")),
            esc(&n.kind),
            esc(n.source.as_deref().unwrap_or("-"))
        );
    }
    if let Some(m) = &i.metadata {
        o += &format!(
            "vmctl:      os {} {}, user {}, ip {}, created {} by vmctl {}\n",
            esc(&m.os),
            esc(m.release.as_deref().unwrap_or("")),
            esc(m.user.as_deref().unwrap_or("-")),
            esc(m.ip.as_deref().unwrap_or("dhcp")),
            esc(&m.created),
            esc(&m.version)
        );
        if let Some(b) = &m.base_image {
            o += &format!(
                "Base image: {} sha256 {}\n",
                path(b),
                esc(m.base_sha256.as_deref().unwrap_or("(not recorded)"))
            );
        }
    }
    if let Some(l) = &i.console_log {
        o += &format!("Console log: {}\n", path(l));
    }
    o += &format!("Console:    {}\n", esc(&i.console_command));
    o
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
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

fn run(cli: Cli) -> Result<(), Error> {
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
    let config = Config::load(&host, cli.config.as_deref(), &env, &flags)?;
    // Only `create` makes things a Ctrl-C should undo; every other command keeps the default.
    if matches!(cli.command, Command::Create(_))
        && let Err(e) = vmctl::interrupt::install()
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
            out(&s);
        }
        return Ok(());
    }
    if let Command::Image(ImageCommand::Fetch { url, sha256 }) = &cli.command {
        let bar = Bar(ProgressBar::new(0));
        let f = vmctl::commands::image::fetch(&config, url, sha256.as_deref(), &bar)?;
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
        let report = vmctl::commands::image::verify(&config, &which, &bar)?;
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
    let hv = Libvirt::open(config.connect())?;
    let runner = SystemRunner;
    let ctx = Ctx {
        config: &config,
        host: &host,
        runner: &runner,
        hv: &hv,
        env: &env,
    };
    match cli.command {
        Command::Talos(_)
        | Command::Config(_)
        | Command::Image(_)
        | Command::Gpu(_)
        | Command::Ip(_)
        | Command::Docs(_) => {}
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
        Command::Delete {
            name,
            yes,
            keep_disks,
        } => {
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
        Command::Create(CreateKind::Talos(a)) => {
            let bar = Bar(ProgressBar::new(0));
            let created = vmctl::commands::create::talos::create_talos(&ctx, &a.request(), &bar)?;
            if cli.json {
                out_json(&created)
            } else {
                cli_talos::render_created(&created, ctx.hv.uri())
            }
        }
        Command::Create(CreateKind::Ubuntu(a)) => {
            let network = match a.ip.clone() {
                Some(ip) => NetworkRequest::Static {
                    ip,
                    gateway: a.gateway.clone(),
                    dns: a.dns.clone(),
                },
                None => NetworkRequest::Dhcp,
            };
            let req = UbuntuRequest {
                name: a.name.clone(),
                release: a.release.clone(),
                image: a.image.clone(),
                cpus: a.cpus,
                memory: a.memory.clone().unwrap_or_else(|| "2048".into()),
                disk: a.disk.clone(),
                bridge: a.bridge.clone(),
                network,
                mac: a.mac.clone(),
                ssh_key: a.ssh_key.clone(),
                user: a.user.clone(),
                password_hash: a.password_hash.clone(),
                packages: a.packages.clone(),
                firmware: a.firmware.clone(),
                cpu_mode: a.cpu_mode.clone(),
                domain_type: a.domain_type.clone(),
                kernel: a.kernel.clone(),
                initrd: a.initrd.clone(),
                kernel_args: a.kernel_args.clone(),
                kvm_hidden: a.kvm_hidden,
                gpus: a.gpu.clone(),
                gpu_force: a.gpu_force,
                no_start: a.no_start,
                seed_only: a.seed_only,
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
                } else {
                    clikit::errln(&format!(
                        "{}: seed written to {}",
                        created.name,
                        esc(&created.seed.display().to_string())
                    ));
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
    let cli = Cli::parse();
    if let Command::Docs(d) = &cli.command {
        return d.run(<Cli as clap::CommandFactory>::command());
    }
    // -v info, -vv debug, -vvv trace; VMCTL_LOG (an EnvFilter) overrides; no colours unless
    // stderr is a terminal.
    clikit::init_logging(cli.verbose, "VMCTL_LOG");
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut causes = Vec::new();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                causes.push(s.to_string());
                src = s.source();
            }
            clikit::print_error("vmctl", &e.to_string(), &causes, &e.help());
            match e.exit_kind() {
                ExitKind::Usage => ExitCode::from(2),
                ExitKind::Failure => ExitCode::from(1),
                ExitKind::Interrupted => ExitCode::from(130),
            }
        }
    }
}
