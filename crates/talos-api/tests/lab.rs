//! Root only, `GVB_LAB=1`: the test apid listens inside a network namespace on its node
//! address (198.18.40.10), and the client reaches it from the LAN's other namespace, the way
//! vmctl reaches a Talos VM on a bridge.
#![allow(clippy::unwrap_used)]

#[path = "support/apid.rs"]
mod apid;
#[allow(dead_code)] // shared helper; not every function is used here
#[path = "../../../tests/lab/netns_lan.rs"]
mod netns_lan;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const NODE: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 40, 10));

fn lab() -> bool {
    if std::env::var("GVB_LAB").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("skipped: network-namespace test; run as root with GVB_LAB=1");
    false
}

/// An example binary built next to this test (`cargo test` builds the examples).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo test -p talos-api`",
        path.display()
    );
    path
}

/// Kills the test apid when the test ends, panics included.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn client_reaches_apid_in_another_namespace() {
    if !lab() {
        return;
    }
    let lan = netns_lan::Lan::up("talosapi", "198.18.40.1/24", &["198.18.40.10"]);
    let host_ns = format!("{}-h1", lan.name);
    let certs = tempfile::tempdir().unwrap();
    apid::Pki::generate(&rcgen::PKCS_ED25519, &[NODE]).write(certs.path());

    let mut server = Killed(
        Command::new("ip")
            .args(["netns", "exec", &host_ns])
            .arg(example("test-apid"))
            .args(["--listen", &format!("{NODE}:{}", talos_api::APID_PORT)])
            .arg("--certs")
            .arg(certs.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Wait until it listens: its first line.
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), format!("listening {NODE}:50000"));

    let out = lan
        .exec(&example("apid-call"))
        .args(["--node", &NODE.to_string(), "--certs"])
        .arg(certs.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "apid-call failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "bootstrap Done",
            "bootstrap AlreadyBootstrapped",
            "member 1111 cp-1",
            "member 2222 cp-2",
            "member 3333 cp-3",
            &format!(
                "kubeconfig {} bytes",
                apid::State::default().kubeconfig.len()
            ),
        ]
    );
    drop(server);
}
