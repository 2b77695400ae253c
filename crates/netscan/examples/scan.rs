//! A thin driver over the netscan library, for the namespace lab tests and the benchmark until
//! `vmctl ip check` is wired. Not the product CLI: arguments are parsed by hand.
//!
//! ```text
//! scan --interface IF [--subnet CIDR] [--rate PPS] [--timeout-ms MS] [--retries N] [--force]
//!      [--method auto|raw|neighbour] [--json]
//!      [--probe A.B.C.D]                          exit 0 free, 1 taken
//!      [--allocate STATE_DIR --owner NAME [--reserved RANGE]]   prints the reserved IP
//! ```
//! Exit codes: 0 ok, 1 failure (or taken), 2 bad usage.

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use hostio::HostRoot;
use netscan::{Error, IpRange, ReservationStore, Scan, ScanMethod, ScanRequest, Scanner};

#[derive(Debug, Default)]
struct Args {
    req: Option<ScanRequest>,
    json: bool,
    probe: Option<Ipv4Addr>,
    allocate: Option<String>,
    owner: Option<String>,
    reserved: Vec<IpRange>,
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    eprintln!(
        "help: scan --interface IF [--subnet CIDR] [--rate PPS] [--timeout-ms MS] [--retries N] [--force] [--method auto|raw|neighbour] [--json] [--probe IP] [--allocate DIR --owner NAME [--reserved RANGE]]"
    );
    ExitCode::from(2)
}

fn fail(e: &Error) -> ExitCode {
    eprintln!("error: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        eprintln!("  caused by: {s}");
        src = s.source();
    }
    if let Some(h) = e.help() {
        eprintln!("help: {h}");
    }
    ExitCode::from(if e.is_usage() { 2 } else { 1 })
}

fn parse(argv: &[String]) -> Result<Args, Result<String, Error>> {
    let mut a = Args::default();
    let mut req = ScanRequest::new("");
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| Ok(format!("{flag} needs a value")))
        };
        let num = |s: String| {
            s.parse::<u64>()
                .map_err(|_| Ok(format!("{flag}: not a number: {s}")))
        };
        match flag.as_str() {
            "--interface" | "-i" => req.interface = val()?,
            "--subnet" => req.subnet = Some(netscan::parse_subnet(&val()?).map_err(Err)?),
            "--rate" => req.rate_pps = u32::try_from(num(val()?)?).unwrap_or(u32::MAX),
            "--timeout-ms" => req.timeout = Duration::from_millis(num(val()?)?),
            "--retries" => req.retries = Some(u32::try_from(num(val()?)?).unwrap_or(u32::MAX)),
            "--force" => req.force = true,
            "--json" => a.json = true,
            "--method" => {
                req.method = match val()?.as_str() {
                    "auto" => ScanMethod::Auto,
                    "raw" => ScanMethod::Raw,
                    "neighbour" => ScanMethod::Neighbour,
                    m => return Err(Ok(format!("unknown method {m}"))),
                }
            }
            "--probe" => {
                let v = val()?;
                a.probe = Some(
                    v.parse()
                        .map_err(|_| Ok(format!("--probe: not an IPv4 address: {v}")))?,
                );
            }
            "--allocate" => a.allocate = Some(val()?),
            "--owner" => a.owner = Some(val()?),
            "--reserved" => a.reserved.push(IpRange::parse(&val()?).map_err(Err)?),
            other => return Err(Ok(format!("unknown argument {other}"))),
        }
    }
    if req.interface.is_empty() {
        return Err(Ok("--interface is required".into()));
    }
    a.req = Some(req);
    Ok(a)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse(&argv) {
        Ok(a) => a,
        Err(Ok(msg)) => return usage(&msg),
        Err(Err(e)) => return fail(&e),
    };
    let Some(req) = args.req else {
        return usage("--interface is required");
    };
    let scanner = Scanner::new(HostRoot::system());

    if let Some(ip) = args.probe {
        return match scanner.probe_one(&req.interface, ip) {
            Ok(p) => {
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&p).unwrap_or_default());
                } else if p.is_free() {
                    println!("{ip} free");
                } else {
                    let macs: Vec<String> = p.macs.iter().map(ToString::to_string).collect();
                    println!(
                        "{ip} taken by {}",
                        if p.local {
                            "this host".into()
                        } else {
                            macs.join(", ")
                        }
                    );
                }
                if p.is_free() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => fail(&e),
        };
    }

    let result = match scanner.scan(&req) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if result.fallback {
        eprintln!(
            "note: no CAP_NET_RAW; used the kernel neighbour table (slower, cannot see duplicate IPs)"
        );
    }

    if let Some(dir) = args.allocate {
        let owner = args
            .owner
            .unwrap_or_else(|| format!("pid-{}", std::process::id()));
        let store = ReservationStore::new(HostRoot::system(), dir);
        let ttl = Duration::from_secs(600);
        let holder = netscan::Holder::new(&owner);
        return match store.allocate(
            &result,
            &args.reserved,
            &[],
            &holder,
            ttl,
            SystemTime::now(),
        ) {
            Ok(r) => {
                println!("{}", r.ip);
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        };
    }

    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    for h in &result.used {
        let vendor = h.vendor.as_deref().unwrap_or("(unknown)");
        let tag = if h.local { "  (this host)" } else { "" };
        println!("{}\t{}\t{vendor}{tag}", h.ip, h.mac);
    }
    for c in &result.conflicts {
        let macs: Vec<String> = c.macs.iter().map(ToString::to_string).collect();
        println!("CONFLICT {} claimed by {}", c.ip, macs.join(", "));
    }
    let free: Vec<String> = result.free.iter().map(ToString::to_string).collect();
    println!("free: {}", free.join(", "));
    println!(
        "{} used, {} free in {}; {} addresses probed, {} packets in {} ms ({:?}, {} pps, {} retries)",
        result.used.len(),
        result.free_count,
        result.subnet,
        result.probed,
        result.packets_sent,
        result.duration_ms,
        result.method,
        result.rate_pps,
        result.retries
    );
    ExitCode::SUCCESS
}
