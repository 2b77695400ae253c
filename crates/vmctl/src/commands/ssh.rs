//! `vmctl ssh NAME [-- ARGS]`: the ssh argv for the user and key recorded at create, to the VM's
//! address (static IP in the metadata, else the guest agent, else the neighbour table). The
//! binary execs it.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::Ctx;
use crate::domain::parse::parse_domain;
use crate::error::{Error, Result};
use crate::net;

/// The VM's IPv4 address.
pub fn address(ctx: &Ctx, name: &str) -> Result<Ipv4Addr> {
    let rec = ctx.hv.require(name)?;
    let f = parse_domain(&rec.xml)?;
    if let Some(ip) = f.metadata.as_ref().and_then(|m| m.ip.as_deref())
        && let Ok(a) = ip.split('/').next().unwrap_or_default().parse()
    {
        return Ok(a);
    }
    let macs: Vec<String> = f.nics.iter().filter_map(|n| n.mac.clone()).collect();
    // libvirt's test driver answers with made-up addresses (192.168.0.1…): never probe those.
    if rec.state.is_active()
        && !ctx.hv.uri().starts_with("test:")
        && let Ok(addrs) = ctx.hv.agent_addresses(name)
    {
        let found = addrs.iter().find_map(|a| {
            let mac_ok = a
                .mac
                .as_ref()
                .is_none_or(|m| macs.iter().any(|x| x.eq_ignore_ascii_case(m)));
            let ip: Option<Ipv4Addr> = a.ip.parse().ok();
            ip.filter(|ip| mac_ok && !ip.is_loopback() && !ip.is_link_local())
        });
        if let Some(ip) = found {
            return Ok(ip);
        }
    }
    macs.iter()
        .find_map(|m| net::neighbour_ip(ctx.host, m))
        .ok_or_else(|| Error::NoAddress { name: name.into() })
}

/// The full ssh argv (`ssh -i KEY … user@ip ARGS…`).
pub fn argv(ctx: &Ctx, name: &str, args: &[String]) -> Result<Vec<String>> {
    let rec = ctx.hv.require(name)?;
    let f = parse_domain(&rec.xml)?;
    let md = f.metadata.unwrap_or_default();
    let ip = address(ctx, name)?;
    let mut out = vec!["ssh".to_string()];
    if let Some(public) = &md.ssh_key {
        let private = public.with_extension("");
        let key = if public.extension().is_some_and(|e| e == "pub") && private.is_file() {
            private
        } else {
            public.clone()
        };
        out.extend([
            "-i".into(),
            key.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
        ]);
    }
    // Each VM gets its own known_hosts: a recreated VM with the same IP has new host keys.
    if let Some(dir) = &md.dir {
        let kh: PathBuf = dir.join("known_hosts");
        out.extend(["-o".into(), format!("UserKnownHostsFile={}", kh.display())]);
    }
    out.extend([
        "-o".into(),
        "StrictHostKeyChecking=accept-new".into(),
        "-o".into(),
        "ConnectTimeout=10".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
    ]);
    let user = md.user.unwrap_or_else(|| "root".into());
    out.push(format!("{user}@{ip}"));
    out.extend(args.iter().cloned());
    Ok(out)
}

/// Waits until SSH (TCP 22) answers on the VM's address, from the VM's own MAC: a stale guest
/// or another host holding the same address must not count. `tick` gets a status line.
pub fn wait_for_ssh(
    ctx: &Ctx,
    name: &str,
    timeout: Duration,
    tick: &dyn Fn(&str),
) -> Result<SocketAddr> {
    let rec = ctx.hv.require(name)?;
    let macs: Vec<String> = parse_domain(&rec.xml)?
        .nics
        .iter()
        .filter_map(|n| n.mac.as_ref().map(|m| m.to_ascii_lowercase()))
        .collect();
    let start = Instant::now();
    loop {
        crate::interrupt::check(
            || format!("the wait for SSH on {name}"),
            || {
                format!(
                    "{name} is created and keeps running: `vmctl ssh {name}` once it is up, or `vmctl delete {name} --yes`"
                )
            },
        )?;
        let secs = start.elapsed().as_secs();
        match address(ctx, name) {
            Ok(ip) => {
                let addr = SocketAddr::from((ip, 22));
                if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok() {
                    match net::neighbour_mac(ctx.host, ip) {
                        Some(mac) if !macs.contains(&mac) => tick(&format!(
                            "{addr} answers from {mac}, not from {name}: another host uses this address ({secs} s)"
                        )),
                        _ => return Ok(addr),
                    }
                } else {
                    tick(&format!("waiting for SSH on {addr} ({secs} s)"));
                }
            }
            Err(Error::NoAddress { .. }) => {
                tick(&format!("waiting for {name} to get an address ({secs} s)"))
            }
            Err(e) => return Err(e),
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: format!("SSH on {name}"),
                secs: timeout.as_secs(),
            });
        }
        if !ctx.hv.state(name)?.is_active() {
            return Err(Error::Timeout {
                what: format!("SSH on {name}, which stopped running"),
                secs: start.elapsed().as_secs(),
            });
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
