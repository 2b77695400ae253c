// Shared by the namespace-LAN tests of netscan and vmctl (pulled in with `#[path]`): a LAN built
// by `tests/lab/netns-lan.sh` (a scanner namespace with a bridge, one namespace per host) that
// deletes its namespaces when dropped, panics included. Only 198.18.0.0/15, only namespaces
// named `gvbscan-<pid>-<tag>`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/lab/netns-lan.sh")
}

pub struct Lan {
    pub name: String,
    /// (IP, MAC) of every live host, as the script reports them.
    pub truth: BTreeSet<(String, String)>,
}

impl Lan {
    /// Tags must be unique per test: tests run in parallel threads of one process.
    pub fn up(tag: &str, bridge_cidr: &str, hosts: &[&str]) -> Lan {
        let name = format!("gvbscan-{}-{tag}", std::process::id());
        // Leftovers of an earlier run with the same pid would make `up` refuse.
        let _ = Command::new(script()).args(["down", &name]).output();
        let out = Command::new(script())
            .args(["up", &name, bridge_cidr])
            .args(hosts)
            .output()
            .expect("run netns-lan.sh (needs root and iproute2)");
        let mut lan = Lan {
            name,
            truth: BTreeSet::new(),
        };
        assert!(
            out.status.success(),
            "netns-lan.sh up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lan.truth = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                l.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect();
        lan
    }

    #[allow(dead_code)] // not every includer needs it
    pub fn mac_of(&self, ip: &str) -> String {
        self.truth
            .iter()
            .find(|(i, _)| i == ip)
            .map(|(_, m)| m.clone())
            .expect("address in the ground truth")
    }

    /// `ip -n <scanner namespace> ARGS`.
    pub fn ip(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("ip")
    }

    /// `ip netns exec <scanner namespace> BIN`, arguments to be added.
    pub fn exec(&self, bin: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(bin);
        c
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = Command::new(script()).args(["down", &self.name]).output();
    }
}
