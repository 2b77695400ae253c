//! The test apid as a program, for tests that run it somewhere else (inside a network
//! namespace): `test-apid --listen IP:PORT --certs DIR` serves with `DIR/{ca,server,server-key}.pem`
//! and prints `listening IP:PORT` once it accepts connections. Runs until killed.
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/apid.rs"]
mod apid;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        let i = args
            .iter()
            .position(|a| a == name)
            .unwrap_or_else(|| usage());
        args.get(i + 1).cloned().unwrap_or_else(|| usage())
    };
    let listen: SocketAddr = arg("--listen").parse().unwrap_or_else(|_| usage());
    let pki = apid::Pki::read(&PathBuf::from(arg("--certs"))).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        println!("listening {}", listener.local_addr().unwrap());
        std::io::stdout().flush().unwrap();
        let state = std::sync::Arc::new(std::sync::Mutex::new(apid::State::default()));
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        apid::serve(listener, pki.server_config(), state, stop).await;
    });
}

fn usage() -> ! {
    eprintln!("usage: test-apid --listen IP:PORT --certs DIR");
    std::process::exit(2)
}
