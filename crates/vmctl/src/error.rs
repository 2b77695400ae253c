//! The one error type of the vmctl library: variants are named after the operation that failed,
//! carry the name/path/URL involved and keep the cause as `#[source]`. The layers below keep
//! their own errors ([`Error::Hypervisor`], [`Error::Media`]); a command with errors of its own
//! keeps them with the command, as a [`CommandFailure`] ([`Error::Command`]), so this module
//! names no command.

use std::path::PathBuf;

use hostio::CommandError;

/// How the binary should exit for an error (documented in `vmctl --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// 1: something failed while doing the work.
    Failure,
    /// 2: bad usage or refused; nothing was changed.
    Usage,
    /// 130: stopped by Ctrl-C or SIGTERM (128 + SIGINT, the shell's convention).
    Interrupted,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid VM name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("a domain named {name:?} already exists")]
    NameTaken { name: String },
    #[error("storage for {name:?} already exists at {path}")]
    StorageExists { name: String, path: PathBuf },
    #[error("invalid {option} {value:?}: {reason}")]
    InvalidOption {
        option: String,
        value: String,
        reason: String,
    },
    #[error("bridge {bridge:?} does not exist on this host")]
    MissingBridge { bridge: String },
    #[error("SSH public key {}: {reason}", path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(none found)".into()))]
    MissingSshKey {
        path: Option<PathBuf>,
        reason: String,
    },
    /// The key file exists but is not a usable OpenSSH public key (the reason never quotes it).
    #[error("SSH public key {path}: {reason}")]
    BadSshKey { path: PathBuf, reason: String },
    #[error("{ip} is outside the subnet(s) of bridge {bridge}: {subnets}")]
    IpOutsideBridge {
        ip: String,
        bridge: String,
        subnets: String,
    },
    #[error("{ip} is already the address of VM {owner:?}")]
    IpInUse { ip: String, owner: String },
    #[error("{ip} is in use on {bridge}: it answers ARP from {by}")]
    IpAnswers {
        ip: String,
        bridge: String,
        by: String,
    },
    #[error("ARP scan on {interface}")]
    Scan {
        interface: String,
        #[source]
        source: netscan::Error,
    },
    #[error("reserve an IP address in {dir}")]
    ReserveIp {
        dir: PathBuf,
        #[source]
        source: netscan::Error,
    },
    #[error("setting {key} = {value:?}: {reason}")]
    BadSetting {
        key: String,
        value: String,
        reason: String,
    },
    #[error("read config file {path}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A config file that is not valid TOML, or a key or value vmctl does not take; the
    /// position, never the content (the file may be a symlink to a secret).
    #[error("config file {path}, line {line}, column {column}: {reason}")]
    ParseConfig {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("config file {path}: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    /// The libvirt layer: connecting, a libvirt call, domain XML.
    #[error(transparent)]
    Hypervisor(#[from] hypervisor::Error),
    /// Guest media: the image cache and downloads, releases and signatures, disks, seeds, ISOs.
    #[error(transparent)]
    Media(#[from] guest_media::Error),
    #[error("{count} cached file(s) failed their re-hash and were moved to {quarantine}")]
    CorruptInCache { count: usize, quarantine: PathBuf },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("interrupted during {during}")]
    Interrupted { during: String, next: String },
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error("run ssh to {name}")]
    RunSsh {
        name: String,
        #[source]
        source: CommandError,
    },
    #[error("{name} did not shut down within {secs} s")]
    ShutdownTimeout { name: String, secs: u64 },
    #[error("{name} is running")]
    DomainRunning { name: String },
    #[error("refusing to delete {name} without confirmation")]
    NotConfirmed { name: String },
    #[error("{name} is not running")]
    NotRunning { name: String },
    #[error("{name} is a transient domain (libvirt keeps no definition of it to change)")]
    Transient { name: String },
    #[error("no IP address known for {name}")]
    NoAddress { name: String },
    /// The error of one command, of a type that lives with it (`vmctl gpu`, `talos`, the
    /// desktop install, `create --wait`); [`Error::command`] gets it back.
    #[error(transparent)]
    Command(Failure),
}

/// An error type of one command: how the binary exits for it and the `help:` lines it prints.
pub trait CommandFailure: std::error::Error + Send + Sync + 'static {
    fn exit_kind(&self) -> ExitKind;
    fn help(&self) -> Vec<String>;
}

/// A boxed [`CommandFailure`]: displays as it, and its causes are its own.
#[derive(Debug)]
pub struct Failure(Box<dyn CommandFailure>);

impl Failure {
    pub fn new(e: impl CommandFailure) -> Self {
        Self(Box::new(e))
    }

    /// The command's error, if it is a `T`.
    pub fn downcast_ref<T: CommandFailure>(&self) -> Option<&T> {
        let e: &(dyn std::error::Error + 'static) = &*self.0;
        e.downcast_ref()
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl Error {
    /// The command's own error, if this is one of type `T`.
    pub fn command<T: CommandFailure>(&self) -> Option<&T> {
        match self {
            Self::Command(f) => f.downcast_ref(),
            _ => None,
        }
    }

    pub fn exit_kind(&self) -> ExitKind {
        use Error::*;
        match self {
            InvalidName { .. }
            | NameTaken { .. }
            | StorageExists { .. }
            | Hypervisor(hypervisor::Error::NoSuchDomain { .. })
            | InvalidOption { .. }
            | MissingBridge { .. }
            | MissingSshKey { .. }
            | BadSshKey { .. }
            | IpOutsideBridge { .. }
            | IpInUse { .. }
            | IpAnswers { .. }
            | BadSetting { .. }
            | ParseConfig { .. }
            | BadConfig { .. }
            | NotConfirmed { .. }
            | NotRunning { .. }
            | Transient { .. }
            | DomainRunning { .. } => ExitKind::Usage,
            Media(guest_media::Error::Interrupted { .. }) => ExitKind::Interrupted,
            Media(e) if e.is_usage() => ExitKind::Usage,
            Scan { source, .. } | ReserveIp { source, .. }
                if source.is_usage() || matches!(source, netscan::Error::ReserveTaken { .. }) =>
            {
                ExitKind::Usage
            }
            Command(f) => f.0.exit_kind(),
            Interrupted { .. } => ExitKind::Interrupted,
            _ => ExitKind::Failure,
        }
    }

    /// The option whose value was refused ([`Error::InvalidOption`], also from guest media):
    /// the binary, which knows the subcommand typed, names its `--help` in the help line.
    pub fn invalid_option(&self) -> Option<&str> {
        match self {
            Error::InvalidOption { option, .. }
            | Error::Media(guest_media::Error::InvalidOption { option, .. }) => {
                Some(option.as_str())
            }
            _ => None,
        }
    }

    /// Concrete next steps for the user, printed by the binary as `help:` lines.
    pub fn help(&self) -> Vec<String> {
        use Error::*;
        match self {
            Interrupted { next, .. } => vec![next.clone()],
            InvalidName { .. } => vec![
                "the name is the guest's hostname: use letters, digits and '-' only, not first or last (an RFC 1123 label, at most 63 characters)".into(),
            ],
            NameTaken { name } => vec![format!(
                "pick another name, or remove the old VM with `vmctl delete {name} --yes`"
            )],
            StorageExists { name, path } => vec![
                format!("another `vmctl create` of {name} may be running right now; pick another name"),
                format!(
                    "otherwise a VM of that name was removed without `vmctl delete`: inspect and remove {} by hand",
                    path.display()
                ),
            ],
            Hypervisor(e) => hypervisor_help(e),
            InvalidOption { option, .. } => option_help(option),
            Media(e) => media_help(e),
            MissingBridge { bridge } => vec![
                format!("create the bridge first (gpu-vm-bootstrap does), or pass an existing one with --bridge; `ip link show type bridge` lists them (asked for {bridge})"),
            ],
            MissingSshKey { .. } => vec![
                "create a key with `ssh-keygen -t ed25519`, or pass one with --ssh-key FILE.pub".into(),
            ],
            BadSshKey { .. } => vec![
                "pass the public key file ssh-keygen wrote (FILE.pub, one line: TYPE BASE64 [COMMENT]); `ssh-keygen -l -f FILE.pub` checks it".into(),
            ],
            IpOutsideBridge { .. } => vec![
                "pick an address in the bridge's subnet, or use --dhcp".into(),
            ],
            IpInUse { owner, .. } => vec![format!(
                "pick a free address, or delete the other VM first (`vmctl delete {owner}`)"
            )],
            IpAnswers { bridge, .. } => vec![format!(
                "pick a free address (`vmctl ip check --bridge {bridge}` lists them), or use --ip auto"
            )],
            ReserveIp { source: netscan::Error::ReserveTaken { .. }, .. } => vec![
                "a create running now holds it (reservations of finished creates expire after 10 minutes); pick another address or use --ip auto".into(),
            ],
            Scan { source, .. } | ReserveIp { source, .. } => source.help().into_iter().collect(),
            BadSetting { key, .. } => vec![format!(
                "fix {key} in /etc/vmctl/config.toml or its VMCTL_* variable; `vmctl config show` says where it comes from"
            )],
            ReadConfig { path, .. } | ParseConfig { path, .. } | BadConfig { path, .. } => vec![
                format!("fix {} (keys are listed in the README), or point --config elsewhere", path.display()),
            ],
            CorruptInCache { .. } => vec![
                "they are never used again; the next create or `vmctl image fetch` downloads them again (files made from them are made again)".into(),
                "a cached file that changes on its own points to a failing disk: check `dmesg` and the disk's SMART data".into(),
            ],
            Timeout { .. } => vec!["the VM may still be booting: `vmctl info NAME` shows its console log path".into()],
            RunSsh { .. } => vec!["is the OpenSSH client installed (`ssh`)?".into()],
            ShutdownTimeout { name, .. } => vec![
                format!("power it off with `vmctl stop {name} --force`"),
                "a guest shuts down on request only if it handles ACPI (systemd-logind with dbus, or acpid) or runs qemu-guest-agent with a working `shutdown`".into(),
            ],
            DomainRunning { name } => vec![format!("stop it first: `vmctl stop {name}`, or power it off with `vmctl stop {name} --force`")],
            NotConfirmed { name } => vec![format!("re-run with --yes: `vmctl delete {name} --yes`")],
            NotRunning { name } => vec![format!("start it first: `vmctl start {name}`")],
            Transient { name } => vec![format!(
                "make it persistent with `virsh dumpxml {name} > {name}.xml && virsh define {name}.xml`"
            )],
            NoAddress { .. } => vec![
                "the VM has no static IP in vmctl's metadata, no guest agent answer and no neighbour entry; is it running?".into(),
            ],
            Command(f) => f.0.help(),
            _ => Vec::new(),
        }
    }
}

fn option_help(option: &str) -> Vec<String> {
    vec![format!(
        "see the command's --help for the format of {option}"
    )]
}

/// The next steps for an error of guest media, in vmctl's words (its options and settings).
fn media_help(e: &guest_media::Error) -> Vec<String> {
    use guest_media::Error::*;
    match e {
        Interrupted { next, .. } => vec![next.clone()],
        InvalidOption { option, .. } => option_help(option),
            SeedCharacter { field, .. } => vec![format!(
                "remove the character from {}",
                match *field {
                    "ssh_authorized_keys" => "the SSH key's comment",
                    "hashed_passwd" => "--password-hash",
                    "name" => "--user",
                    "packages" => "--packages",
                    _ => "the VM name",
                }
            )],
            UnknownRelease { supported, .. } => vec![
                format!("pass a supported --release (version or codename): {supported}"),
                "or give a base image with --image PATH|URL".into(),
            ],
            FetchUnreachable { .. } | HttpStatus { .. } => vec![
                "check the URL, or set a mirror with VMCTL_UBUNTU_CLOUD_URL or ubuntu_cloud_url in /etc/vmctl/config.toml".into(),
            ],
            ChecksumMismatch { .. } => vec!["retry; if it persists the mirror serves a bad file".into()],
            BadSignature { keyring, .. } => vec![format!(
                "the SHA256SUMS signature did not verify with {}; do not use this mirror",
                keyring.display()
            )],
            SignatureMissing { .. } => vec![
                "use a mirror that publishes SHA256SUMS.gpg next to SHA256SUMS (the official ones do): a mirror that drops the signature may serve anything".into(),
                "to accept checksum-only verification anyway, opt out explicitly: pass --allow-unsigned, or set require_signature = false in /etc/vmctl/config.toml (or VMCTL_REQUIRE_SIGNATURE=false)".into(),
            ],
            CreateOverlay { .. } | ImageInfo { .. } => vec!["is qemu-utils installed (`qemu-img`)?".into()],
            WriteSeed { .. } => vec!["is genisoimage installed?".into()],
        IsoChecksum { .. } => vec![
            "the ISO is not the release's: download it again, or drop --iso to let vmctl fetch and verify it".into(),
        ],
        NoIsoListed { .. } => vec![
            "check --release, or the mirror setting ubuntu_releases_url / ubuntu_old_releases_url (`vmctl config show`)".into(),
        ],
        ExtractFromIso { .. } => vec![
            "is xorriso installed (`apt-get install xorriso`)? Is the file an Ubuntu desktop ISO (casper/vmlinuz, casper/initrd)?".into(),
        ],
        _ => Vec::new(),
    }
}

/// The next steps for an error of the libvirt layer, in vmctl's words.
fn hypervisor_help(e: &hypervisor::Error) -> Vec<String> {
    use hypervisor::Error::*;
    match e {
        NoSuchDomain { .. } => vec!["`vmctl list` shows the defined VMs".into()],
        Connect { uri, .. } => vec![format!(
            "is libvirtd running and may you use it? Try `virsh -c {uri} list`, or pass --connect URI"
        )],
        Libvirt { op, .. } if *op == "start" => vec![
            "if KVM fails here (\"emulation failure\", \"failed to set MSR\"), retry with --domain-type qemu --cpu-mode host-model".into(),
            "the serial console log in the VM's storage directory shows what the guest did".into(),
        ],
        // Only `vmctl gpu attach|detach --live` hot-plugs.
        Unsupported { .. } => vec!["use --persistent to change the config only".into()],
        _ => Vec::new(),
    }
}

/// A value of the domain spec given on the command line or in a setting.
impl From<hypervisor::InvalidValue> for Error {
    fn from(e: hypervisor::InvalidValue) -> Self {
        Error::InvalidOption {
            option: e.option,
            value: e.value,
            reason: e.reason,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_errors_keep_vmctl_help_and_exit_codes() {
        let unknown: Error = guest_media::releases::find("23.99").unwrap_err().into();
        assert_eq!(unknown.exit_kind(), ExitKind::Usage);
        let help = unknown.help().join("\n");
        for r in guest_media::releases::RELEASES {
            let listed = format!("{} ({})", r.version, r.codename);
            assert!(help.contains(&listed), "{listed} missing: {help}");
        }
        let missing = Error::from(guest_media::Error::SignatureMissing {
            sig_url: "https://m.example/SHA256SUMS.gpg".into(),
            keyring: "/k.gpg".into(),
        });
        assert_eq!(missing.exit_kind(), ExitKind::Failure);
        let help = missing.help().join("\n");
        assert!(
            help.contains("--allow-unsigned") && help.contains("require_signature = false"),
            "{help}"
        );
        let stopped = Error::from(guest_media::Error::Interrupted {
            during: "the download of u".into(),
            next: "run the same command again".into(),
        });
        assert_eq!(stopped.exit_kind(), ExitKind::Interrupted);
        assert_eq!(
            stopped.help(),
            vec!["run the same command again".to_string()]
        );
        assert_eq!(stopped.to_string(), "interrupted during the download of u");
    }

    /// A domain whose XML cannot take another device is not the user's typing: exit 1.
    #[test]
    fn domain_xml_that_cannot_take_a_device_is_a_failure_not_bad_input() {
        for e in [
            hypervisor::Error::NoFreePciController {
                domain: "vm1".into(),
            },
            hypervisor::Error::NoDevices {
                domain: "vm1".into(),
            },
        ] {
            assert_eq!(Error::from(e).exit_kind(), ExitKind::Failure);
        }
    }
}
