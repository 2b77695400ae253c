//! The `vmctl ip` subcommands on the binary side: their arguments, and the rendering of
//! [`vmctl::commands::ip`] results as text or JSON. Libvirt is optional for `ip check` (the VM
//! column stays empty, said once on stderr) and asked while the scan runs.

use std::net::Ipv4Addr;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use hostio::HostRoot;
use netscan::{ScanMethod, ScanRequest, Scanner};
use vmctl::Error;
use vmctl::commands::ip::{self, IpCheck, IpListing, IpProbe, MacOwners};
use vmctl::config::Config;
use vmctl::hypervisor::Libvirt;

use crate::{esc, out, out_json, table};

#[derive(Debug, Subcommand)]
pub enum IpCommand {
    /// Who is on the bridge's subnet (ARP): used addresses with MAC, vendor and VM, free ranges.
    /// With ADDRESS, check that one address: exit 0 if free, 1 if taken
    Check(CheckArgs),
    /// The IPs of all VMs, matched by MAC, from vmctl metadata, the guest agent, the neighbour
    /// table, then an ARP scan of the bridge; each IP shows its source
    List {
        /// Bridge to scan for VMs still without an address (default: setting `bridge`)
        #[arg(long, value_name = "BR")]
        bridge: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Method {
    /// Raw ARP; the neighbour table when CAP_NET_RAW is missing
    Auto,
    /// Raw ARP only (root or CAP_NET_RAW)
    Raw,
    /// Kernel resolution and the neighbour table (unprivileged, slower, blind to duplicates)
    Neighbour,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// One address to check instead of the whole subnet
    #[arg(value_name = "A.B.C.D")]
    address: Option<Ipv4Addr>,
    /// Interface to scan (default: setting `bridge`)
    #[arg(long, short = 'i', value_name = "IF", conflicts_with = "bridge")]
    interface: Option<String>,
    /// Bridge to scan (same as --interface)
    #[arg(long, value_name = "BR")]
    bridge: Option<String>,
    /// Subnet to scan, inside the interface's (default: the interface's own IPv4 subnet)
    #[arg(long, value_name = "CIDR", conflicts_with = "address")]
    subnet: Option<String>,
    /// ARP requests per second
    #[arg(long, value_name = "PPS", default_value_t = netscan::DEFAULT_RATE_PPS)]
    rate: u32,
    /// Reply window after each request, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 100)]
    timeout_ms: u64,
    /// Extra requests to silent addresses (default: 1 if it fits in 10 s, else 0)
    #[arg(long, value_name = "N")]
    retries: Option<u32>,
    #[arg(long, value_enum, default_value_t = Method::Auto)]
    method: Method,
    /// Allow a prefix shorter than /16
    #[arg(long)]
    force: bool,
}

/// Runs an `ip` subcommand. `ip check ADDRESS` exits 1 (after printing) when the address is
/// taken.
pub fn run(cmd: &IpCommand, config: &Config, host: &HostRoot, json: bool) -> Result<(), Error> {
    match cmd {
        IpCommand::Check(a) => check(a, config, host, json),
        IpCommand::List { bridge } => {
            let hv = Libvirt::open(config.connect())?;
            let l = ip::list(
                config,
                host,
                &hv,
                &Scanner::new(host.clone()),
                bridge.as_deref(),
            )?;
            for n in &l.notes {
                clikit::errln(&format!("note: {}", clikit::escape_text(n)));
            }
            if json {
                out_json(&l);
            } else {
                out(&render_list(&l));
            }
            Ok(())
        }
    }
}

fn request(a: &CheckArgs, config: &Config) -> Result<ScanRequest, Error> {
    let interface = a
        .interface
        .clone()
        .or_else(|| a.bridge.clone())
        .unwrap_or_else(|| config.value("bridge").to_string());
    let bad = |source| Error::Scan {
        interface: interface.clone(),
        source,
    };
    let mut req = ScanRequest::new(&interface);
    if let Some(s) = &a.subnet {
        let subnet = netscan::parse_subnet(s).map_err(bad)?;
        // Pure checks first, so bad input fails before the interface is even looked up.
        let prefix = subnet.prefix_len();
        if prefix < netscan::MIN_PREFIX_WITHOUT_FORCE && !a.force {
            return Err(bad(netscan::Error::CheckWidth {
                subnet,
                addresses: (1u64 << (32 - u32::from(prefix))) - 2,
                min_prefix: netscan::MIN_PREFIX_WITHOUT_FORCE,
            }));
        }
        req.subnet = Some(subnet);
    }
    if a.rate == 0 {
        return Err(bad(netscan::Error::CheckRate { rate: 0 }));
    }
    req.rate_pps = a.rate;
    req.timeout = Duration::from_millis(a.timeout_ms);
    req.retries = a.retries;
    req.force = a.force;
    req.method = match a.method {
        Method::Auto => ScanMethod::Auto,
        Method::Raw => ScanMethod::Raw,
        Method::Neighbour => ScanMethod::Neighbour,
    };
    Ok(req)
}

/// The MAC owners, or `None` with one note on stderr when libvirt cannot be asked.
fn owners(config: &Config) -> Option<MacOwners> {
    let uri = config.connect();
    match Libvirt::open(uri)
        .map_err(vmctl::Error::from)
        .and_then(|hv| ip::mac_owners(&hv))
    {
        Ok(o) => Some(o),
        Err(e) => {
            clikit::errln(&format!(
                "note: libvirt at {} unreachable ({}); the vm column is empty",
                esc(uri),
                esc(&e.to_string())
            ));
            None
        }
    }
}

/// What `ip check` found: one address or the whole subnet.
enum Found {
    One(IpProbe),
    All(IpCheck),
}

fn check(a: &CheckArgs, config: &Config, host: &HostRoot, json: bool) -> Result<(), Error> {
    let req = request(a, config)?;
    let scanner = Scanner::new(host.clone());
    let planned = match a.address {
        Some(addr) => ip::probe_request(&req, addr),
        None => req.clone(),
    };
    ip::validate(&scanner, &planned)?;
    // Libvirt is asked in parallel: connecting can take as long as scanning a /24.
    let (found, owners) = std::thread::scope(|s| {
        let owners = s.spawn(|| owners(config));
        let found = match a.address {
            Some(addr) => ip::probe(&scanner, &req, addr, None).map(Found::One),
            None => ip::check(&scanner, &req, None).map(Found::All),
        };
        (found, owners.join().unwrap_or(None))
    });
    match found? {
        Found::One(p) => {
            let p = attach_probe(p, owners.as_ref());
            if p.fallback {
                clikit::errln(&format!("note: {}", ip::fallback_note()));
            }
            if json {
                out_json(&p);
            } else {
                out(&render_probe(&p));
            }
            if !p.free {
                std::process::exit(1);
            }
        }
        Found::All(c) => {
            let c = attach_check(c, owners.as_ref());
            // What `vmctl top` and `vmctl metrics` show as the bridge's last scan.
            vmctl::commands::observe::record_scan(config, host, &c, std::time::SystemTime::now());
            if c.fallback {
                clikit::errln(&format!("note: {}", ip::fallback_note()));
            }
            if json {
                out_json(&c);
            } else {
                out(&render_check(&c));
            }
        }
    }
    Ok(())
}

fn attach_check(mut c: IpCheck, owners: Option<&MacOwners>) -> IpCheck {
    c.vms_known = owners.is_some();
    for u in &mut c.used {
        u.vm = owners.and_then(|o| o.get(&u.mac).cloned());
    }
    c
}

fn attach_probe(mut p: IpProbe, owners: Option<&MacOwners>) -> IpProbe {
    p.vms_known = owners.is_some();
    for h in &mut p.taken_by {
        h.vm = owners.and_then(|o| o.get(&h.mac).cloned());
    }
    p
}

fn method_text(method: ScanMethod) -> &'static str {
    match method {
        ScanMethod::Raw => "raw ARP",
        ScanMethod::Neighbour => "neighbour table",
        ScanMethod::Auto => "auto",
    }
}

fn render_check(c: &IpCheck) -> String {
    let mut rows = vec![["IP", "MAC", "VENDOR", "VM"].map(String::from).to_vec()];
    for u in &c.used {
        rows.push(vec![
            u.ip.to_string(),
            u.mac.to_string(),
            u.vendor.clone().unwrap_or_else(|| "-".into()),
            if u.local {
                "(this host)".into()
            } else {
                u.vm.clone().unwrap_or_else(|| "-".into())
            },
        ]);
    }
    let in_use: std::collections::BTreeSet<Ipv4Addr> = c.used.iter().map(|u| u.ip).collect();
    let mut s = format!(
        "{} {}: {} {} in use, {} free ({}, {} ms)\n",
        esc(&c.interface),
        c.subnet,
        in_use.len(),
        if in_use.len() == 1 {
            "address"
        } else {
            "addresses"
        },
        c.free_count,
        method_text(c.method),
        c.duration_ms
    );
    s += &table(rows);
    for k in &c.conflicts {
        let macs: Vec<String> = k.macs.iter().map(ToString::to_string).collect();
        s += &format!("CONFLICT {} answered by {}\n", k.ip, macs.join(", "));
    }
    let free: Vec<String> = c.free.iter().map(ToString::to_string).collect();
    s += &format!(
        "free ({}): {}\n",
        c.free_count,
        if free.is_empty() {
            "-".into()
        } else {
            free.join(", ")
        }
    );
    s
}

fn render_probe(p: &IpProbe) -> String {
    if p.free {
        format!(
            "{} is free on {} ({}, {} ms)\n",
            p.ip,
            esc(&p.interface),
            method_text(p.method),
            p.duration_ms
        )
    } else {
        format!(
            "{} is taken on {} by {}\n",
            p.ip,
            esc(&p.interface),
            esc(&p.holders())
        )
    }
}

fn render_list(l: &IpListing) -> String {
    let mut rows = vec![
        ["VM", "STATE", "MAC", "IP", "SOURCE"]
            .map(String::from)
            .to_vec(),
    ];
    for a in &l.addresses {
        rows.push(vec![
            a.vm.clone(),
            a.state.as_str().into(),
            a.mac.clone().unwrap_or_else(|| "-".into()),
            a.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            a.source.map(|s| s.as_str()).unwrap_or("-").into(),
        ]);
    }
    table(rows)
}
