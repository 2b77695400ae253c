//! A small apid client: `apid-call --node IP --certs DIR` waits for apid on IP:50000 (up to
//! 30 s), bootstraps, lists etcd members and fetches the kubeconfig, using
//! `DIR/{ca,client,client-key}.pem`. One line per result on stdout.

use std::path::PathBuf;
use std::time::{Duration, Instant};

fn main() {
    if let Err(e) = run() {
        eprint!("error: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            eprint!(": {s}");
            source = s.source();
        }
        eprintln!();
        std::process::exit(1);
    }
}

fn run() -> Result<(), talos_api::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| usage())
    };
    let node = arg("--node").parse().unwrap_or_else(|_| usage());
    let dir = PathBuf::from(arg("--certs"));
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_default();
    let creds = talos_api::Credentials::from_pem(
        &read("ca.pem"),
        &read("client.pem"),
        &read("client-key.pem"),
    )?;
    let timeout = Duration::from_secs(5);
    let client = talos_api::retry_until(
        Instant::now() + Duration::from_secs(30),
        Duration::from_millis(200),
        &|| false,
        &mut |e| eprintln!("waiting for apid: {e}"),
        || {
            let c = talos_api::Client::connect(node, talos_api::APID_PORT, &creds, timeout)?;
            c.etcd_member_list()?;
            Ok(c)
        },
    )?;
    println!("bootstrap {:?}", client.bootstrap()?);
    println!("bootstrap {:?}", client.bootstrap()?);
    for m in client.etcd_member_list()? {
        println!("member {:x} {}", m.id, m.hostname);
    }
    println!("kubeconfig {} bytes", client.kubeconfig()?.len());
    Ok(())
}

fn usage() -> ! {
    eprintln!("usage: apid-call --node IP --certs DIR");
    std::process::exit(2)
}
