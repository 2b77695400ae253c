//! The crate's one error enum: variants are named after the operation that failed.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Everything netscan can fail at. [`Error::is_usage`] tells a CLI which ones are bad input
/// (exit 2) and [`Error::help`] gives the concrete next step for a `help:` line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("parse subnet {input:?}: expected IPv4 CIDR like 198.18.5.0/24")]
    ParseSubnet {
        input: String,
        #[source]
        source: ipnet::AddrParseError,
    },
    #[error("parse address range {input:?}: expected A.B.C.D or A.B.C.D-E.F.G.H")]
    ParseRange { input: String },
    #[error("parse MAC address {input:?}: expected six hex octets like 52:54:00:12:34:56")]
    ParseMac { input: String },
    #[error("check rate: {rate} packets per second; the rate must be at least 1")]
    CheckRate { rate: u32 },
    #[error("check timeout: the reply window must be at least 1 ms")]
    CheckTimeout,
    #[error("list network interfaces")]
    ListInterfaces {
        #[source]
        source: io::Error,
    },
    #[error("find interface {interface:?}: no such interface")]
    FindInterface { interface: String },
    #[error("find IPv4 address of interface {interface:?}: it has none")]
    FindInterfaceIpv4 { interface: String },
    #[error(
        "check link type of {interface}: ARP needs an Ethernet interface, this one is ARPHRD {hw_type}"
    )]
    CheckLinkType { interface: String, hw_type: u16 },
    #[error("check link state of {interface}: it is down")]
    CheckLinkUp { interface: String },
    #[error("check scope: {subnet} is not inside a subnet of {interface} ({networks})")]
    CheckScope {
        subnet: ipnet::Ipv4Net,
        interface: String,
        networks: String,
    },
    #[error(
        "check width: {subnet} has {addresses} addresses; a prefix shorter than /{min_prefix} needs force"
    )]
    CheckWidth {
        subnet: ipnet::Ipv4Net,
        addresses: u64,
        min_prefix: u8,
    },
    #[error("open raw ARP socket on {interface}")]
    OpenSocket {
        interface: String,
        #[source]
        source: io::Error,
    },
    #[error("send ARP request for {ip} on {interface}")]
    SendArp {
        interface: String,
        ip: Ipv4Addr,
        #[source]
        source: io::Error,
    },
    #[error("receive ARP replies on {interface}")]
    ReceiveArp {
        interface: String,
        #[source]
        source: io::Error,
    },
    #[error("trigger neighbour resolution for {ip}")]
    TriggerResolution {
        ip: Ipv4Addr,
        #[source]
        source: io::Error,
    },
    #[error("read neighbour table {path}")]
    ReadNeighbours {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("lock IP reservations {path}")]
    LockReservations {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "lock IP reservations {path}: held by {} for more than {} s",
        pid.map_or_else(|| "another process".to_string(), |p| format!("process {p}")),
        waited.as_secs_f64()
    )]
    LockHeld {
        path: PathBuf,
        /// As the holder wrote it into the lock file.
        pid: Option<u32>,
        waited: std::time::Duration,
    },
    #[error("read IP reservations {path}")]
    ReadReservations {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parse IP reservations {path}")]
    ParseReservations {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("write IP reservations {path}")]
    WriteReservations {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reserve {ip}: already reserved by {owner:?}")]
    ReserveTaken { ip: Ipv4Addr, owner: String },
    #[error("reserve {ip}: outside subnet {subnet}")]
    ReserveOutside {
        ip: Ipv4Addr,
        subnet: ipnet::Ipv4Net,
    },
    #[error(
        "pick free address in {subnet}: none left outside the reserved ranges and reservations"
    )]
    PickFree { subnet: ipnet::Ipv4Net },
    #[error("scan {interface}: no network scanner in this context")]
    NoScanner { interface: String },
}

impl Error {
    /// True when the caller gave bad input (a CLI exits 2), false for runtime failures (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::ParseSubnet { .. }
                | Error::ParseRange { .. }
                | Error::ParseMac { .. }
                | Error::CheckRate { .. }
                | Error::CheckTimeout
                | Error::FindInterface { .. }
                | Error::FindInterfaceIpv4 { .. }
                | Error::CheckScope { .. }
                | Error::CheckLinkType { .. }
                | Error::CheckWidth { .. }
                | Error::ReserveOutside { .. }
        )
    }

    /// A concrete next step for the user, if there is one.
    pub fn help(&self) -> Option<String> {
        Some(match self {
            Error::ParseSubnet { .. } => {
                "give the subnet in CIDR form, for example --subnet 198.18.5.0/24".into()
            }
            Error::CheckRate { .. } => "use --rate 2000 (the default) or any value >= 1".into(),
            Error::FindInterface { interface } => format!(
                "list interfaces with `ip -br link`; {interface:?} does not exist in this network namespace"
            ),
            Error::FindInterfaceIpv4 { interface } => format!(
                "give the interface an address (`ip addr add 198.18.5.1/24 dev {interface}`) or pass --subnet with an interface that has one"
            ),
            Error::CheckLinkUp { interface } => {
                format!("bring it up: `ip link set {interface} up`")
            }
            Error::CheckLinkType { .. } => {
                "scan the bridge the VMs are on (--bridge BR), not loopback or a tunnel".into()
            }
            Error::CheckScope { interface, .. } => format!(
                "scan only a subnet of {interface}: omit --subnet, or see `ip -4 addr show dev {interface}`"
            ),
            Error::CheckWidth { subnet, .. } => format!(
                "a wide scan sends one packet per address; narrow it (--subnet {}/24) or pass --force",
                subnet.network()
            ),
            Error::OpenSocket { .. } => {
                "run as root or grant CAP_NET_RAW (`setcap cap_net_raw+ep $(command -v vmctl)`)"
                    .into()
            }
            Error::LockReservations { path, .. } | Error::WriteReservations { path, .. } => {
                format!("check that {} is writable", path.display())
            }
            Error::LockHeld { pid: Some(pid), .. } => format!(
                "`ps -o pid,etime,args -p {pid}` shows the holder; let it finish, or stop it if it hangs (the kernel drops the lock when it exits), then retry"
            ),
            Error::LockHeld { path, .. } => format!(
                "`fuser -v {}` shows the holder; let it finish, or stop it if it hangs, then retry",
                path.display()
            ),
            Error::ParseReservations { path, .. } => format!(
                "the file is corrupt; move {} aside, it is rebuilt on the next allocation",
                path.display()
            ),
            Error::PickFree { .. } => {
                "free an address, shrink the reserved range, or pass --ip A.B.C.D".into()
            }
            _ => return None,
        })
    }
}
