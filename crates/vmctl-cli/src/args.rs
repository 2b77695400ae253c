//! The command line of `vmctl` (clap derive): every subcommand, option and help text. `main.rs`
//! turns the parsed arguments into library requests.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::{
    cli_cluster, cli_day2, cli_hosts, cli_ip, cli_metrics, cli_share, cli_snapshot, cli_talos,
    cli_top, gpu_cli,
};

pub(crate) const AFTER_HELP: &str = "Exit codes: 0 ok, 1 failure, 2 bad usage or refused (nothing changed), 130 interrupted\n\
(Ctrl-C during `create` removes what it made; a second Ctrl-C quits at once).\n\
Settings: flags > environment (VMCTL_*) > /etc/vmctl/config.toml > built-in defaults; see `vmctl config show`.";

#[derive(Debug, Parser)]
#[command(name = "vmctl", version = env!("GVB_BUILD_VERSION"), args_override_self = true, about = "Manage VMs on libvirt: Ubuntu guests on a host bridge, verified images, GPU passthrough", after_help = AFTER_HELP)]
pub(crate) struct Cli {
    /// libvirt URI (default: VMCTL_CONNECT, then config.toml `connect`, then qemu:///system)
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "URI"
    )]
    pub(crate) connect: Option<String>,
    /// Print machine-readable JSON on stdout
    #[arg(long, global = true, help_heading = "Global options")]
    pub(crate) json: bool,
    /// More logging on stderr (-v, -vv)
    #[arg(short, long, global = true, help_heading = "Global options", action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// Config file instead of /etc/vmctl/config.toml
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "PATH"
    )]
    pub(crate) config: Option<PathBuf>,
    /// Treat DIR as the host's root for /sys, /proc, /etc and vmctl's own directories
    /// (storage_dir, image_cache, state_dir): fixtures, tests (also VMCTL_HOST_ROOT)
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "DIR",
        env = "VMCTL_HOST_ROOT",
        hide = true
    )]
    pub(crate) host_root: Option<PathBuf>,
    /// Run the command on a remote host over SSH, with its vmctl (`vmctl hosts list`)
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "NAME"
    )]
    pub(crate) host: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List domains: state, vCPUs, memory, GPUs, IPs, OS (vmctl's are marked)
    List {
        /// Show every domain (the default; accepted for virsh habits)
        #[arg(long)]
        all: bool,
    },
    /// Show a domain in detail: disks, NICs, firmware, vmctl metadata, console command
    Info {
        /// Domain name (`vmctl list` shows them)
        name: String,
    },
    /// Start a domain
    Start {
        /// Domain name (`vmctl list` shows them)
        name: String,
    },
    /// ACPI shutdown, waiting up to --timeout seconds; with --force, power off after that
    Stop {
        /// Domain name (`vmctl list` shows them)
        name: String,
        /// Seconds to wait for the guest to shut down
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        timeout: u64,
        /// Power the domain off (virsh destroy) if it has not shut down after --timeout
        #[arg(long)]
        force: bool,
    },
    /// Undefine a stopped domain (with NVRAM) and remove the storage vmctl created for it
    Delete {
        /// Domain name (`vmctl list` shows them)
        name: String,
        /// Do not ask for confirmation
        #[arg(long, short)]
        yes: bool,
        /// Keep the VM's disks
        #[arg(long)]
        keep_disks: bool,
        /// Delete a cluster node without `vmctl cluster remove-node` (its etcd member stays)
        #[arg(long)]
        force: bool,
    },
    /// ACPI reboot (the guest restarts in the same qemu process: a `resize` waits for stop + start)
    Reboot {
        /// Domain name (`vmctl list` shows them)
        name: String,
    },
    /// Start the VM with the host, or not (libvirt autostart; `vmctl list` shows it)
    Autostart {
        /// Domain name (`vmctl list` shows them)
        name: String,
        /// on or off
        #[arg(value_enum)]
        state: cli_day2::OnOff,
    },
    /// Attach to the VM's serial console (`virsh console`; the escape key is printed first)
    Console {
        /// Domain name (`vmctl list` shows them)
        name: String,
    },
    /// Change vCPUs and memory (from the next start) and grow a disk (live when running)
    Resize(cli_day2::ResizeArgs),
    /// Data disks: list, add, remove
    #[command(subcommand)]
    Disk(cli_day2::DiskCommand),
    /// VM templates: save a stopped VM as one, list, show, delete (`create ubuntu --template`)
    #[command(subcommand)]
    Template(cli_day2::TemplateCommand),
    /// Copy a stopped VM into a new one with its own MAC, address, hostname, cloud-init
    /// instance and machine-id (full, or --linked on the source's disk)
    ///
    /// Without --ip or --dhcp, the clone of a VM with a static address gets `--ip auto`, and a
    /// static clone without --gateway/--dns takes the source's (from its seed); the clone of a
    /// VM on DHCP stays on DHCP. Data disks are copied; GPUs, vCPU pins and the NVRAM are not.
    Clone(cli_day2::CloneArgs),
    /// ssh to the VM as the user and with the key recorded at create
    Ssh {
        /// VM name (a domain vmctl created: its user and key are in vmctl's metadata)
        name: String,
        /// Arguments passed to ssh after the destination (a remote command)
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Create a VM
    #[command(subcommand)]
    Create(CreateKind),
    /// Full-screen view of VMs, GPUs and the bridge, refreshed every 2 s; keys act on a VM
    ///
    /// VMs with CPU, memory, disk and network rates, IPs, GPUs, autostart and cluster role; GPUs
    /// and who holds them; the bridge's last scan. Keys start, stop (ACPI), reboot, delete
    /// (after you type the VM's name), attach or detach a GPU (? lists them all). Statistics come from one libvirt bulk call per refresh. The bridge is scanned only when
    /// you press n. NO_COLOR turns colours off. Without a terminal, use --once (one refresh as
    /// text, or JSON with --json).
    Top(cli_top::TopArgs),
    /// Snapshots of a VM's disks (external qcow2 overlays): create, list, revert, delete
    #[command(subcommand)]
    Snapshot(cli_snapshot::SnapshotCommand),
    /// Image cache
    #[command(subcommand)]
    Image(ImageCommand),
    /// Shared folders (virtiofs): add, remove, list a VM's host directories
    #[command(subcommand)]
    Share(cli_share::ShareCommand),
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
    /// Talos Kubernetes clusters with GPU workers: create, list, show, credentials, add and
    /// remove nodes, destroy
    #[command(subcommand)]
    Cluster(cli_cluster::ClusterCommand),
    /// Prometheus metrics: an exporter (serve) or a node_exporter textfile (textfile)
    #[command(subcommand)]
    Metrics(cli_metrics::MetricsCommand),
    /// Remote hosts run with `vmctl --host NAME …`: add, remove, list, and the status of all
    #[command(subcommand)]
    Hosts(cli_hosts::HostsCommand),
    #[command(flatten)]
    Docs(clikit::DocsCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// Download URL into the content-addressed cache, verified by --sha256 or the hash recorded
    /// at its first download; prints the cached path
    ///
    /// A copy already cached is checked through its seal (re-hashed if the file changed since
    /// it was sealed); one that fails is moved to the cache's quarantine/ and downloaded again.
    Fetch {
        /// The file to download (https:// or http://)
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
    /// Cached files: sha256, size, source URL, when hashed, and the VMs using each
    ///
    /// A VM uses a file when its vmctl metadata names it as the base image, or one of its
    /// disks is the file or has it in its backing chain (qemu-img), in any state. Also lists
    /// the quarantine and partial downloads.
    List,
    /// Remove cached files by sha256 (or a unique prefix); one a VM uses is refused (exit 2)
    Remove {
        /// sha256 or a prefix of it naming exactly one cached file (`vmctl image list`)
        #[arg(value_name = "SHA256|PREFIX", required = true)]
        sha256: Vec<String>,
        /// Do not ask for confirmation
        #[arg(long, short)]
        yes: bool,
    },
    /// Remove every cached file no VM uses, the quarantine and partial downloads; prints what
    /// was removed and the bytes freed
    Prune {
        /// Do not ask for confirmation
        #[arg(long, short)]
        yes: bool,
        /// Only list what would be removed
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CreateKind {
    /// An Ubuntu VM from a cloud image (or a custom image), configured by cloud-init
    Ubuntu(Box<UbuntuArgs>),
    /// A Talos Linux node from the Image Factory, booted into its generated machine config
    Talos(Box<cli_talos::TalosArgs>),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Effective settings and where each came from (flag, env, file, default)
    Show,
}

#[derive(Debug, Args)]
pub(crate) struct UbuntuArgs {
    /// VM name, also the guest's hostname: letters, digits and '-' (an RFC 1123 label, at most
    /// 63); default: the next free `ubuntu-N`, printed
    pub(crate) name: Option<String>,
    /// Ubuntu release (24.04, 26.04, noble…); default 24.04, and with --desktop the newest
    /// release still supported (26.04)
    #[arg(long)]
    pub(crate) release: Option<String>,
    /// Local path or URL of a base image to use instead of the release's cloud image
    #[arg(long, value_name = "PATH|URL")]
    pub(crate) image: Option<String>,
    /// Accept a mirror's SHA256SUMS without its signature SHA256SUMS.gpg even though the
    /// keyring exists (checksum only; the same as setting require_signature = false)
    #[arg(long)]
    pub(crate) allow_unsigned: bool,
    /// Start from a template (`vmctl template list`): its values, each overridden by the flag
    /// given here (packages add up)
    #[arg(long, value_name = "NAME", conflicts_with = "desktop")]
    pub(crate) template: Option<String>,
    /// Virtual CPUs (default 2)
    #[arg(long)]
    pub(crate) cpus: Option<u32>,
    /// Memory: MiB, or with a unit (4G); default 2048, 4G with --desktop
    #[arg(long, value_name = "SIZE")]
    pub(crate) memory: Option<String>,
    /// Disk size (e.g. 20G); default: the image's size
    #[arg(long, value_name = "SIZE")]
    pub(crate) disk: Option<String>,
    /// Host bridge (default: setting `bridge`, br0)
    #[arg(long)]
    pub(crate) bridge: Option<String>,
    #[command(flatten)]
    pub(crate) net: NetworkArgs,
    /// SSH public key (default: setting `ssh_key`, then ~/.ssh/id_*.pub of the invoking user)
    #[arg(long, value_name = "FILE")]
    pub(crate) ssh_key: Option<PathBuf>,
    /// Guest user (default: setting `ssh_user`, ubuntu)
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// crypt(3) password hash for the user (SSH key login needs none)
    #[arg(long, value_name = "HASH")]
    pub(crate) password_hash: Option<String>,
    /// Extra packages (comma-separated); qemu-guest-agent is always added
    #[arg(long, value_delimiter = ',')]
    pub(crate) packages: Vec<String>,
    /// efi | efi-secure | bios (default: setting `firmware`, efi)
    #[arg(long)]
    pub(crate) firmware: Option<String>,
    /// host-passthrough | host-model | custom:MODEL (default: setting `cpu_mode`)
    #[arg(long)]
    pub(crate) cpu_mode: Option<String>,
    /// kvm | qemu (TCG) (default: setting `domain_type`, kvm)
    #[arg(long)]
    pub(crate) domain_type: Option<String>,
    /// Direct kernel boot: kernel image (for images without a bootloader)
    #[arg(long, value_name = "PATH")]
    pub(crate) kernel: Option<PathBuf>,
    /// Direct kernel boot: initrd
    #[arg(long, value_name = "PATH")]
    pub(crate) initrd: Option<PathBuf>,
    /// Direct kernel boot: kernel command line (default "console=ttyS0")
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub(crate) kernel_args: Option<String>,
    /// Hide KVM from the guest (only old GeForce Windows drivers need it)
    #[arg(long)]
    pub(crate) kvm_hidden: bool,
    /// Pass GPUs through (every function), checked like `vmctl gpu attach`; implies q35 + UEFI.
    /// SELECTOR: BDF, index from `vmctl gpu status`, `all` or `group:N`; repeatable. Alone:
    /// every isolated NVIDIA GPU that is not the boot VGA device nor attached to another VM. On an
    /// NVSwitch (HGX) host every GPU takes the NVSwitches along (full passthrough)
    #[arg(long = "gpu", value_name = "SELECTOR", num_args = 0..=1, default_missing_value = "")]
    pub(crate) gpu: Vec<String>,
    /// Override the GPU isolation, boot VGA, host-use and NVLink fabric (fewer GPUs than all of
    /// an NVSwitch host, without Shared NVSwitch multitenancy) refusals
    #[arg(long, requires = "gpu")]
    pub(crate) gpu_force: bool,
    /// What the guest installs for its GPUs at the first boot, from NVIDIA's CUDA repository
    /// (branch: setting guest_driver_branch, 580): `driver` (the default with --gpu; open kernel
    /// modules when every GPU is Turing or newer, else the proprietary ones; one reboot if the
    /// module does not load), `container` (the driver and the NVIDIA container toolkit) or `none`
    /// (pass the GPUs only; Kepler and Fermi GPUs need this)
    #[arg(long, value_name = "STACK", value_parser = ["driver", "container", "none"], conflicts_with = "desktop")]
    pub(crate) gpu_stack: Option<String>,
    #[command(flatten)]
    pub(crate) tuning: crate::cli_tuning::TuningArgs,
    /// Share a host directory with the guest (virtiofs), mounted at /mnt/TAG by cloud-init;
    /// `,ro` mounts it read-only in the guest. Repeatable. Needs virtiofsd on the host
    #[arg(long, value_name = "HOST_DIR:TAG[,ro]", conflicts_with = "desktop")]
    pub(crate) share: Vec<String>,
    /// Define the domain but do not start it
    #[arg(long)]
    pub(crate) no_start: bool,
    /// Do not start the VM with the host (by default libvirt's autostart is on, so VMs come
    /// back after a host reboot)
    #[arg(long)]
    pub(crate) no_autostart: bool,
    /// A blank qcow2 data disk, SIZE[,name=NAME] (repeatable): data-NAME.qcow2 in the VM's
    /// directory, attached as vdc, vdd… (unformatted; `vmctl disk` manages them later)
    #[arg(
        long = "data-disk",
        value_name = "SIZE[,name=NAME]",
        conflicts_with = "desktop"
    )]
    pub(crate) data_disk: Vec<String>,
    /// Only write the cloud-init seed into the VM's storage directory
    #[arg(long, conflicts_with_all = ["no_start", "wait"])]
    pub(crate) seed_only: bool,
    /// Wait until the VM is ready: SSH takes its key and cloud-init has finished (a cloud-init
    /// error fails the create; the VM is kept)
    #[arg(long, conflicts_with = "no_start")]
    pub(crate) wait: bool,
    /// Give up waiting after this many seconds (default 600; 5400 with --desktop)
    #[arg(long, value_name = "SECONDS")]
    pub(crate) wait_timeout: Option<u64>,
    /// Unattended Ubuntu Desktop install from the release ISO (autoinstall); with --wait, until
    /// the installed desktop is ready (SSH, cloud-init)
    #[arg(long)]
    pub(crate) desktop: bool,
    /// --desktop: the ISO to install from instead of the release's from the mirror
    #[arg(long, value_name = "PATH|URL", requires = "desktop")]
    pub(crate) iso: Option<String>,
    /// --desktop: install ubuntu-desktop-minimal instead of ubuntu-desktop
    #[arg(long, requires = "desktop")]
    pub(crate) minimal: bool,
    /// --desktop: ask for the user's password (hashed with SHA-512-crypt here, never stored in clear)
    #[arg(long, requires = "desktop", conflicts_with = "password_hash")]
    pub(crate) password_prompt: bool,
    /// Refused: a plaintext password on the command line (use --password-prompt)
    #[arg(long, value_name = "PASSWORD", hide = true)]
    pub(crate) password: Option<String>,
    /// --desktop: locale (default en_US.UTF-8)
    #[arg(long, requires = "desktop")]
    pub(crate) locale: Option<String>,
    /// --desktop: keyboard LAYOUT[:VARIANT] (default us)
    #[arg(long, requires = "desktop")]
    pub(crate) keyboard: Option<String>,
    /// --desktop: time zone (default Etc/UTC)
    #[arg(long, requires = "desktop")]
    pub(crate) timezone: Option<String>,
}

/// The address options `create ubuntu` and `clone` share.
#[derive(Debug, Args)]
pub(crate) struct NetworkArgs {
    /// Static address A.B.C.D/NN (probed first: refused if it answers ARP), or `auto`: the
    /// first free address on the bridge outside setting `reserved_ips`
    #[arg(long, value_name = "CIDR", conflicts_with = "dhcp")]
    pub(crate) ip: Option<String>,
    /// Default gateway (inside the --ip subnet)
    #[arg(long, requires = "ip")]
    pub(crate) gateway: Option<String>,
    /// DNS servers (repeat or comma-separate)
    #[arg(long, value_delimiter = ',', requires = "ip")]
    pub(crate) dns: Vec<String>,
    /// Address by DHCP (a new VM's default without --ip)
    #[arg(long)]
    pub(crate) dhcp: bool,
    /// MAC address (default: random 52:54:00:xx:xx:xx)
    #[arg(long)]
    pub(crate) mac: Option<String>,
}

impl NetworkArgs {
    /// `--ip` or `--dhcp`, if either was given.
    pub(crate) fn request(&self) -> Option<vmctl::commands::create::NetworkRequest> {
        use vmctl::commands::create::NetworkRequest;
        match (&self.ip, self.dhcp) {
            (Some(ip), _) => Some(NetworkRequest::Static {
                ip: ip.clone(),
                gateway: self.gateway.clone(),
                dns: self.dns.clone(),
            }),
            (None, true) => Some(NetworkRequest::Dhcp),
            (None, false) => None,
        }
    }
}
