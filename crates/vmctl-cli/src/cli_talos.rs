//! The `vmctl talos` subcommands and `vmctl create talos` on the binary side: their arguments,
//! and the rendering of [`vmctl::commands::talos`] results as text or JSON.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use hostio::HostRoot;
use talos_image::factory::VersionSource;
use talos_image::machineconfig::Role;
use talos_image::nvidia::{Driver, Flavour};
use vmctl::Error;
use vmctl::commands::create::NetworkRequest;
use vmctl::commands::create::talos::{TalosCreated, TalosDryRun, TalosRequest};
use vmctl::commands::talos::{self, ConfigRequest, ENDPOINT_FORMS, SchematicRequest};
use vmctl::config::Config;

use crate::{esc, out, out_json};

#[derive(Debug, Subcommand)]
pub enum TalosCommand {
    /// Build an Image Factory schematic and print its canonical YAML and ID (computed offline,
    /// byte-exact with the factory; --online asks the factory and checks it agrees)
    Schematic(SchematicArgs),
    /// Published Talos releases (GitHub releases API), newest first; the latest stable marked
    Versions {
        /// Where to list them: `github` (drafts and pre-releases flagged) or the factory's `/versions`
        #[arg(long, value_enum, default_value = "github")]
        source: SourceArg,
    },
    /// Generate cluster secrets, controlplane.yaml, worker.yaml and talosconfig (mode 0600),
    /// as `talosctl gen secrets` + `talosctl gen config` would
    Config(ConfigArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FlavourArg {
    Production,
    Lts,
}

impl From<FlavourArg> for Flavour {
    fn from(f: FlavourArg) -> Self {
        match f {
            FlavourArg::Production => Flavour::Production,
            FlavourArg::Lts => Flavour::Lts,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DriverArg {
    /// nvidia-open-gpu-kernel-modules (Turing and newer)
    Open,
    /// nonfree-kmod-nvidia (every generation; required before Turing)
    Proprietary,
}

impl From<DriverArg> for Driver {
    fn from(d: DriverArg) -> Self {
        match d {
            DriverArg::Open => Driver::Open,
            DriverArg::Proprietary => Driver::Proprietary,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SourceArg {
    Github,
    Factory,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Controlplane,
    Worker,
}

#[derive(Debug, Args)]
pub struct SchematicArgs {
    /// Add the NVIDIA preset: kernel modules and container toolkit of this flavour
    #[arg(long, value_enum, value_name = "FLAVOUR")]
    nvidia: Option<FlavourArg>,
    /// NVIDIA kernel modules (default: from the detected GPU's architecture)
    #[arg(long, value_enum, requires = "nvidia")]
    driver: Option<DriverArg>,
    /// Add nvidia-fabricmanager (NVSwitch systems; added by itself when this host has NVSwitches
    /// and no Shared NVSwitch setup, as `create talos --gpu all` would pass them)
    #[arg(long, requires = "nvidia")]
    fabric_manager: bool,
    /// A system extension (`qemu-guest-agent` or `siderolabs/qemu-guest-agent`); repeatable
    #[arg(long = "extension", value_name = "NAME")]
    extensions: Vec<String>,
    /// An extra kernel argument; repeatable
    #[arg(long = "kernel-arg", value_name = "ARG", allow_hyphen_values = true)]
    kernel_args: Vec<String>,
    /// Start from this schematic YAML
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Check extensions against the factory's list and let the factory compute the ID
    #[arg(long)]
    online: bool,
    /// Version whose extension list --online checks (default: latest stable)
    #[arg(long, value_name = "vX.Y.Z", requires = "online")]
    version: Option<String>,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Cluster name (a DNS label)
    #[arg(long)]
    cluster: String,
    // The forms are vmctl::commands::talos::ENDPOINT_FORMS, which check_endpoint accepts.
    #[arg(long, value_name = "URL", help = format!("Kubernetes API endpoint: {ENDPOINT_FORMS}"))]
    endpoint: String,
    /// Talos version whose config contract to follow (default: latest stable)
    #[arg(long, value_name = "vX.Y.Z")]
    version: Option<String>,
    /// Directory for the four files (created; existing files are never overwritten)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub struct TalosArgs {
    /// VM name, also the node's hostname: letters, digits and '-' (an RFC 1123 label, at most
    /// 63); default: the next free `talos-N`, or `<cluster>-cp-N` / `<cluster>-w-N` with
    /// --cluster, printed
    name: Option<String>,
    /// controlplane: runs the Kubernetes API (the first node of a cluster); worker: runs workloads
    #[arg(long, value_enum, default_value = "controlplane")]
    role: RoleArg,
    /// Join this cluster (its secrets are in vmctl's state directory), or start it under this
    /// name; default: a new cluster named after the VM
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
    // The forms are ENDPOINT_FORMS, which check_endpoint accepts.
    #[arg(long, value_name = "URL", help = format!(
        "Kubernetes API endpoint of a new cluster (default https://<the node's address>:6443): {ENDPOINT_FORMS}"
    ))]
    endpoint: Option<String>,
    /// Talos version (default: the cluster's, else the latest stable release)
    #[arg(long, value_name = "vX.Y.Z")]
    version: Option<String>,
    /// Accept a pre-release for --version
    #[arg(long)]
    allow_prerelease: bool,
    /// Pass GPUs through (every function) and add the NVIDIA extensions; checked like
    /// `vmctl gpu attach`. SELECTOR: BDF, index, `all` or `group:N`; repeatable. Alone: every
    /// isolated NVIDIA GPU that is not the boot VGA device nor attached to another VM. On an
    /// NVSwitch (HGX) host every GPU takes the NVSwitches along, and the node the fabric manager
    #[arg(long = "gpu", value_name = "SELECTOR", num_args = 0..=1, default_missing_value = "")]
    gpu: Vec<String>,
    /// Override the GPU isolation, boot VGA, host-use and NVLink fabric (fewer GPUs than all of
    /// an NVSwitch host, without Shared NVSwitch multitenancy) refusals
    #[arg(long, requires = "gpu")]
    gpu_force: bool,
    #[command(flatten)]
    tuning: crate::cli_tuning::TuningArgs,
    /// NVIDIA extension flavour for --gpu
    #[arg(long, value_enum, default_value = "production", value_name = "FLAVOUR")]
    nvidia: FlavourArg,
    /// NVIDIA kernel modules for --gpu (default: from the GPU's architecture)
    #[arg(long, value_enum)]
    driver: Option<DriverArg>,
    /// Further system extensions (qemu-guest-agent is always included); repeatable
    #[arg(long = "extension", value_name = "NAME")]
    extensions: Vec<String>,
    /// Check extensions against the factory's list and let the factory confirm the schematic ID
    #[arg(long)]
    online: bool,
    /// Static address A.B.C.D/NN (probed first: refused if it answers ARP), or `auto` (the
    /// default: the first free address on the bridge outside setting `reserved_ips`)
    #[arg(long, value_name = "CIDR", conflicts_with = "dhcp")]
    ip: Option<String>,
    /// Address by DHCP instead of a static one (a new cluster then needs --endpoint)
    #[arg(long)]
    dhcp: bool,
    /// Default gateway (inside the --ip subnet)
    #[arg(long, conflicts_with = "dhcp")]
    gateway: Option<String>,
    /// DNS servers (repeat or comma-separate)
    #[arg(long, value_delimiter = ',', conflicts_with = "dhcp")]
    dns: Vec<String>,
    /// MAC address (default: random 52:54:00:xx:xx:xx)
    #[arg(long)]
    mac: Option<String>,
    /// Virtual CPUs
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Memory: MiB, or with a unit (4G)
    #[arg(long, default_value = "4096")]
    memory: String,
    /// Disk size (default 20G)
    #[arg(long, value_name = "SIZE")]
    disk: Option<String>,
    /// Install like bare metal: boot the factory's metal-amd64.iso (its schematic gets
    /// talos.config=metal-iso) with the config on a `metal-iso` volume, and let Talos install
    /// itself to a blank disk. Use it to test the bare-metal install path; the default nocloud
    /// disk image boots faster (no install step)
    #[arg(long)]
    iso: bool,
    /// Host bridge (default: setting `bridge`, br0)
    #[arg(long)]
    bridge: Option<String>,
    /// Define the domain but do not start it
    #[arg(long)]
    no_start: bool,
    /// Do not start the node with the host (by default libvirt's autostart is on)
    #[arg(long)]
    no_autostart: bool,
    /// Bootstrap etcd and fetch the kubeconfig through the Talos API once the node answers (no
    /// talosctl needed; the first control plane of a new cluster)
    #[arg(long, conflicts_with = "no_start")]
    pub(crate) bootstrap: bool,
    /// Boot the node with this whole machine config (`-` reads standard input) instead of one
    /// made here; needs --cluster and --version. This host keeps no secrets of that cluster:
    /// `vmctl cluster create --hosts` sends each remote node's config this way over SSH. The
    /// config must name the node's role, hostname and installer image (--dry-run prints it)
    #[arg(long, value_name = "FILE|-", requires_all = ["cluster", "version"])]
    pub(crate) machine_config: Option<PathBuf>,
    /// Check everything a create checks and print what it would make (the installer image
    /// included); make nothing. A --machine-config is not read
    #[arg(long, conflicts_with = "bootstrap")]
    pub(crate) dry_run: bool,
}

impl TalosArgs {
    pub fn request(&self) -> TalosRequest {
        let mut r = TalosRequest::new(self.name.as_deref().unwrap_or_default());
        r.role = match self.role {
            RoleArg::Controlplane => Role::Controlplane,
            RoleArg::Worker => Role::Worker,
        };
        r.cluster = self.cluster.clone();
        r.endpoint = self.endpoint.clone();
        r.version = self.version.clone();
        r.allow_prerelease = self.allow_prerelease;
        r.gpus = self.gpu.clone();
        r.gpu_force = self.gpu_force;
        r.tuning = self.tuning.request();
        r.nvidia = self.nvidia.into();
        r.driver = self.driver.map(Into::into);
        r.extensions = self.extensions.clone();
        r.online = self.online;
        // A node's address is its identity in the cluster (endpoint, talosconfig), so it is
        // static by default: `auto` picks a free one as `create ubuntu --ip auto` does.
        r.network = if self.dhcp {
            NetworkRequest::Dhcp
        } else {
            NetworkRequest::Static {
                ip: self.ip.clone().unwrap_or_else(|| "auto".into()),
                gateway: self.gateway.clone(),
                dns: self.dns.clone(),
            }
        };
        r.mac = self.mac.clone();
        r.cpus = self.cpus;
        r.memory = self.memory.clone();
        r.disk = self.disk.clone();
        r.bridge = self.bridge.clone();
        r.no_start = self.no_start;
        r.no_autostart = self.no_autostart;
        r.bootstrap = self.bootstrap;
        r.iso = self.iso;
        r
    }

    /// The request with the --machine-config read (not with --dry-run: it is checked before
    /// the config is made).
    pub fn request_with_config(&self) -> Result<TalosRequest, Error> {
        let mut r = self.request();
        if let Some(path) = &self.machine_config {
            r.machine_config = Some(if self.dry_run {
                String::new()
            } else {
                read_config(path)?
            });
        }
        Ok(r)
    }
}

/// A --machine-config: the file, or standard input for `-`.
fn read_config(path: &Path) -> Result<String, Error> {
    let io = |source| Error::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    };
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(io)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).map_err(io)
    }
}

/// `create talos --dry-run` as text.
pub fn render_dry_run(d: &TalosDryRun) {
    let mut s = format!(
        "would create {} ({} of cluster {}, Talos {}):\n",
        esc(&d.name),
        d.role.as_str(),
        esc(&d.cluster),
        d.version
    );
    let row = |k: &str, v: &str| format!("  {k:<16}{}\n", esc(v));
    s += &row("schematic", &d.schematic_id);
    s += &row("installer", &d.installer_image);
    s += &row("bridge", &d.bridge);
    s += &row("mac", &d.mac);
    s += &row("ip", d.ip.as_deref().unwrap_or("auto (picked at create)"));
    if !d.gpus.is_empty() {
        s += &row("gpus", &d.gpus.join(", "));
    }
    s += &row(
        "size",
        &format!(
            "{} vCPU, {} MiB, disk {} bytes",
            d.vcpus, d.memory_mib, d.disk_bytes
        ),
    );
    s += "nothing was made\n";
    out(&s);
}

/// Runs a `talos` subcommand (none needs libvirt).
pub fn run(cmd: &TalosCommand, config: &Config, host: &HostRoot, json: bool) -> Result<(), Error> {
    match cmd {
        TalosCommand::Schematic(a) => {
            let req = SchematicRequest {
                nvidia: a.nvidia.map(Into::into),
                driver: a.driver.map(Into::into),
                fabric_manager: a.fabric_manager,
                extensions: a.extensions.clone(),
                kernel_args: a.kernel_args.clone(),
                file: a.file.clone(),
                online: a.online,
                version: a.version.clone(),
            };
            let s = talos::schematic(config, host, &req)?;
            if let Some(n) = &s.driver_note {
                clikit::errln(&clikit::escape_text(n));
            }
            if let Some(n) = &s.fabric_manager_note {
                clikit::errln(&format!("note: {}", clikit::escape_text(n)));
            }
            if json {
                out_json(&s);
            } else {
                out(&format!("{}---\nid: {}\n", s.yaml, s.id));
            }
        }
        TalosCommand::Versions { source } => {
            let v = talos::versions(
                config,
                match source {
                    SourceArg::Github => VersionSource::Github,
                    SourceArg::Factory => VersionSource::Factory,
                },
            )?;
            if json {
                out_json(&v);
            } else {
                let mut s = String::new();
                for k in &v.versions {
                    let mark = if Some(&k.version) == v.latest.as_ref() {
                        "  (latest)"
                    } else if k.prerelease {
                        "  (pre-release)"
                    } else {
                        ""
                    };
                    s += &format!("{}{mark}\n", k.version);
                }
                out(&s);
            }
        }
        TalosCommand::Config(a) => {
            let req = ConfigRequest {
                cluster: a.cluster.clone(),
                endpoint: a.endpoint.clone(),
                version: a.version.clone(),
                out: a.out.clone(),
            };
            let c = talos::config(config, &req)?;
            if json {
                out_json(&c);
            } else {
                let mut s = String::new();
                for f in &c.files {
                    s += &format!("{}\n", esc(&f.display().to_string()));
                }
                out(&s);
                clikit::errln(&format!(
                    "cluster {} (Talos {}, endpoint {}): files written with mode 0600",
                    c.cluster, c.version, c.endpoint
                ));
            }
        }
    }
    Ok(())
}

/// The human view of `create talos`: a summary on stderr, the next steps on stdout.
pub fn render_created(c: &TalosCreated, uri: &str) {
    if let Some(n) = &c.driver_note {
        clikit::errln(&clikit::escape_text(n));
    }
    clikit::errln(&format!(
        "{}: {} (Talos {}, {} of cluster {}{}, MAC {}, {})",
        c.name,
        if c.started {
            "defined and started"
        } else {
            "defined"
        },
        c.version,
        match c.role {
            Role::Controlplane => "control plane",
            Role::Worker => "worker",
        },
        c.cluster,
        if c.new_cluster { ", new" } else { "" },
        c.mac,
        c.ip.as_deref().unwrap_or("DHCP")
    ));
    if let Some(p) = &c.placement {
        for line in crate::cli_tuning::placement_lines(p) {
            clikit::errln(&line);
        }
    }
    clikit::errln(&format!(
        "  schematic {} ({}{})",
        c.schematic_id,
        c.extensions.join(", "),
        if c.kernel_args.is_empty() {
            String::new()
        } else {
            format!("; kernel args {}", c.kernel_args.join(" "))
        }
    ));
    clikit::errln(&format!("  installer {}", c.installer_image));
    clikit::errln(&format!(
        "  config on the {} volume {}",
        c.seed_label,
        esc(&c.seed.display().to_string())
    ));
    for b in &c.boot_order {
        clikit::errln(&format!(
            "  boot {}: {} {} ({})",
            b.order,
            b.target,
            esc(&b.path.display().to_string()),
            b.what
        ));
    }
    clikit::errln(&format!(
        "  image {} sha256 {} ({})",
        esc(&c.image_url),
        c.base_sha256,
        c.verification
    ));
    let mut s = format!(
        "{}\ntalosconfig: {}\nconsole:     virsh -c {uri} console {}\n",
        c.name,
        esc(&c.talosconfig.display().to_string()),
        c.name
    );
    if let Some(rc) = &c.runtime_class {
        s += &format!(
            "GPU manifests (the RuntimeClass `nvidia` and the NVIDIA device plugin; pods ask for \
             nvidia.com/gpu with runtimeClassName: nvidia): {}\n",
            esc(&rc.display().to_string()),
        );
    }
    if !c.next_steps.is_empty() {
        s += "next steps:\n";
        for step in &c.next_steps {
            s += &format!(
                "  # {}{}\n  {}\n",
                step.what,
                if step.done { " (done)" } else { "" },
                esc(&crate::render::shell_line(&step.argv))
            );
        }
    }
    out(&s);
}
