//! The bridge actions under the watchdog: `netplan apply`, then checks that the bridge has the
//! host's address and reaches the gateway; when it does not in time, the old files come back and
//! the link is removed.

use super::*;

impl Applier<'_> {
    /// `netplan generate` + `netplan apply`, then wait for the bridge to hold the host's IP and
    /// reach the gateway. On failure restore `files` from this run's backups and apply again:
    /// `netplan try` does not revert bridges reliably (netplan-try(8)); neither does `netplan
    /// apply`, which leaves a bridge it no longer defines in place, so a bridge this run created
    /// is deleted after the old config is back.
    pub(super) fn apply_bridge(
        &self,
        j: &mut Journal,
        bridge: &str,
        gateway: Option<&str>,
        expect_ip: Option<&str>,
        files: &[String],
    ) -> Result<(), Error> {
        let run = |argv: &[&str]| self.runner.run(&Cmd::new(argv.iter().copied()));
        let link = format!("{}/{bridge}", paths::SYS_CLASS_NET);
        let existed = self.root.exists(&link);
        let outcome: Result<(), String> = (|| {
            run(&["netplan", "generate"]).map_err(|e| e.to_string())?;
            self.log.log(
                Level::Info,
                &format!("applying network config for {bridge}"),
            );
            run(&["netplan", "apply"]).map_err(|e| e.to_string())?;
            let mut last = String::from("no check ran");
            for attempt in 0..self.watchdog.tries.max(1) {
                if attempt > 0 {
                    std::thread::sleep(self.watchdog.interval);
                }
                match self.bridge_ok(bridge, gateway, expect_ip) {
                    Ok(()) => return Ok(()),
                    Err(e) => last = e,
                }
            }
            Err(last)
        })();
        let Err(reason) = outcome else {
            self.log.log(
                Level::Info,
                &format!("{bridge} is up with the host's address and reaches the gateway"),
            );
            if !existed && !j.created_links.iter().any(|l| l == bridge) {
                j.created_links.push(bridge.to_string());
            }
            return Ok(());
        };
        self.log.log(
            Level::Error,
            &format!("{bridge} check failed: {reason}; restoring the old network config"),
        );
        // The files come from this run, or from an earlier run that wrote them but was
        // interrupted before applying them: restore each from the newest record of it.
        let earlier = load_journals(self.root);
        for path in files {
            let found = std::iter::once(&*j)
                .chain(
                    earlier
                        .iter()
                        .rev()
                        .filter(|e| !e.rolled_back && e.id != j.id),
                )
                .find_map(|jr| jr.files.iter().find(|f| &f.path == path).map(|f| (jr, f)));
            match found {
                Some((jr, f)) => {
                    self.restore(&jr.id, f)?;
                }
                None => self.log.log(
                    Level::Warn,
                    &format!("no backup of {path} in the journal; left as it is"),
                ),
            }
        }
        let reapplied = run(&["netplan", "apply"]);
        self.log.log(
            Level::Warn,
            &match &reapplied {
                Ok(_) => "old network config restored and applied again".to_string(),
                Err(e) => format!("old network config restored, but `netplan apply` failed: {e}"),
            },
        );
        if !existed && self.root.exists(&link) {
            self.delete_link(bridge);
        }
        Err(Error::BridgeReverted {
            bridge: bridge.to_string(),
            reason,
        })
    }

    /// `ip link delete dev NAME` for a bridge this tool created; a failure is only logged (the
    /// host's address is already back on the NIC).
    pub(super) fn delete_link(&self, name: &str) -> bool {
        match self
            .runner
            .run(&Cmd::new(["ip", "link", "delete", "dev", name]))
        {
            Ok(_) => {
                self.log.log(
                    Level::Info,
                    &format!(
                        "deleted {name}: `netplan apply` leaves a bridge it no longer defines"
                    ),
                );
                true
            }
            Err(e) => {
                self.log.log(
                    Level::Warn,
                    &format!(
                        "{name} is left over (delete it with `sudo ip link delete dev {name}`): {e}"
                    ),
                );
                false
            }
        }
    }

    pub(super) fn bridge_ok(
        &self,
        bridge: &str,
        gateway: Option<&str>,
        expect_ip: Option<&str>,
    ) -> Result<(), String> {
        let out = self
            .runner
            .output(&Cmd::new(["ip", "-j", "addr", "show", "dev", bridge]))
            .map_err(|e| e.to_string())?;
        let ips = parse_ip_addr_json(&out.stdout_str());
        let has_ip = match expect_ip {
            Some(ip) => ips.iter().any(|a| a == ip),
            None => ips.iter().any(|a| !a.contains(':')),
        };
        if !has_ip {
            return Err(format!(
                "{bridge} does not hold {} (has: {})",
                expect_ip.unwrap_or("an IPv4 address"),
                if ips.is_empty() {
                    "nothing".to_string()
                } else {
                    ips.join(", ")
                }
            ));
        }
        if let Some(gw) = gateway {
            let out = self
                .runner
                .output(&Cmd::new(["ping", "-c1", "-W2", gw]))
                .map_err(|e| e.to_string())?;
            if out.status != 0 {
                return Err(format!("gateway {gw} does not answer ping"));
            }
        }
        Ok(())
    }
}

/// IP addresses (without prefix) from `ip -j addr show` output.
pub fn parse_ip_addr_json(s: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(s) else {
        return Vec::new();
    };
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|link| link["addr_info"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["local"].as_str().map(str::to_string))
        .collect()
}
