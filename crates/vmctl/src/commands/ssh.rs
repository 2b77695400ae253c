//! `vmctl ssh NAME [-- ARGS]`: the ssh argv for the user and key recorded at create, to the VM's
//! address ([`super::ip::known_addresses`]: the static IP in the metadata, else the guest agent,
//! else the neighbour table; what `list`, `info` and `ip list` show). The
//! binary execs it. [`ready`] is `create --wait`: SSH answers and cloud-init has finished.

pub mod cloud_init;
pub mod gpu_check;
pub mod ready;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use hypervisor::domain::Metadata;
use hypervisor::domain::parse::parse_domain;

use super::Ctx;
use super::ip::{self, IpSource};
use crate::error::{Error, Result};
use crate::talos::{ClusterDir, TalosError};
pub use ready::{Policy, Progress, Ready, wait_ready};

/// The VM's IPv4 address and where it was learnt: the first of
/// [`crate::commands::ip::known_addresses`], the answer `list`, `info` and `ip list` give.
pub fn address(ctx: &Ctx, name: &str) -> Result<(Ipv4Addr, IpSource)> {
    let rec = ctx.hv.require(name)?;
    let f = parse_domain(&rec.xml)?;
    let (neighbours, _) = ip::neighbours(ctx.host);
    ip::known_addresses(ctx.hv, &neighbours, &rec, &f)
        .first()
        .map(|a| (a.ip, a.source))
        .ok_or_else(|| Error::NoAddress { name: name.into() })
}

/// The full ssh argv (`ssh -i KEY … user@ip ARGS…`). A Talos node has no SSH: the error says
/// so and carries the `talosctl` command for it instead.
pub fn argv(ctx: &Ctx, name: &str, args: &[String]) -> Result<Vec<String>> {
    let rec = ctx.hv.require(name)?;
    let f = parse_domain(&rec.xml)?;
    let md = f.metadata.unwrap_or_default();
    if md.os == "talos" {
        return Err(TalosError::NoSsh {
            vm: name.to_string(),
            talosctl: talosctl_argv(ctx, name),
        }
        .into());
    }
    let (ip, _) = address(ctx, name)?;
    Ok(ssh_argv(&md, ip, false, args))
}

/// `talosctl --talosconfig PATH -n IP dashboard` for the Talos node `name`. The cluster is the
/// one named after the VM or, for an automatic `<cluster>-cp-N` / `<cluster>-w-N` name, that
/// prefix; a `--cluster` with another name shows as `<CLUSTER>` in the path.
fn talosctl_argv(ctx: &Ctx, name: &str) -> Vec<String> {
    let mut candidates = vec![name.to_string()];
    for role in ["-cp-", "-w-"] {
        if let Some((cluster, n)) = name.rsplit_once(role)
            && n.chars().all(|c| c.is_ascii_digit())
        {
            candidates.push(cluster.to_string());
        }
    }
    let talosconfig = candidates
        .iter()
        .map(|c| ClusterDir::new(ctx.host, ctx.config, c))
        .find(ClusterDir::exists)
        .unwrap_or_else(|| ClusterDir::new(ctx.host, ctx.config, "<CLUSTER>"))
        .talosconfig();
    let node =
        address(ctx, name).map_or_else(|_| "<NODE-IP>".to_string(), |(ip, _)| ip.to_string());
    [
        "talosctl",
        "--talosconfig",
        &talosconfig.display().to_string(),
        "-n",
        &node,
        "dashboard",
    ]
    .map(String::from)
    .to_vec()
}

/// Seconds ssh may take to connect and exchange banners.
pub const SSH_CONNECT_TIMEOUT_SECS: u32 = 30;

/// The ssh argv to `ip` with the user and key in `md`. `batch`: for vmctl's own logins, which
/// must never prompt (BatchMode) and must notice a dead peer (ServerAlive*, ssh_config(5)).
pub fn ssh_argv(md: &Metadata, ip: Ipv4Addr, batch: bool, args: &[String]) -> Vec<String> {
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
        // ConnectTimeout also bounds the banner exchange (ssh_config(5)). A TCG guest on a busy
        // host took over 10 s to send its banner right after cloud-init finished (CI, under a
        // CPU hog), so allow 30 s: still a quick failure for an address nobody answers on.
        format!("ConnectTimeout={SSH_CONNECT_TIMEOUT_SECS}"),
        "-o".into(),
        "LogLevel=ERROR".into(),
    ]);
    if batch {
        out.extend(
            [
                "-o",
                "BatchMode=yes",
                "-o",
                "ServerAliveInterval=5",
                "-o",
                "ServerAliveCountMax=6",
            ]
            .map(String::from),
        );
    }
    let user = md.user.clone().unwrap_or_else(|| "root".into());
    out.push(format!("{user}@{ip}"));
    out.extend(args.iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slow guest's banner (TCG on a loaded host) must not fail a login that would succeed:
    /// the connect timeout, which also covers the banner exchange, is 30 s for every login.
    #[test]
    fn ssh_waits_thirty_seconds_for_a_slow_guest_banner() {
        let md = Metadata::default();
        for batch in [false, true] {
            let argv = ssh_argv(&md, Ipv4Addr::new(198, 18, 0, 9), batch, &[]);
            assert!(argv.iter().any(|a| a == "ConnectTimeout=30"), "{argv:?}");
        }
    }
}
