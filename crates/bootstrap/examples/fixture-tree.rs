//! Writes a fixture host tree (a `tests/fixtures/hosts/NAME.toml` host plus the `/etc` files of a
//! fresh Ubuntu install) to DIR, for benchmarks and manual `--host-root` runs:
//! `fixture-tree NAME DIR [dhcp|static|none]`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(name), Some(dir)) = (args.first(), args.get(1)) else {
        eprintln!("usage: fixture-tree NAME DIR [dhcp|static|none]");
        eprintln!("hosts: {}", fixture_builder::host_names().join(", "));
        return ExitCode::from(2);
    };
    let net = match args.get(2).map(String::as_str) {
        None | Some("dhcp") => common::Net::Dhcp,
        Some("static") => common::Net::Static,
        Some("none") => common::Net::None,
        Some(other) => {
            eprintln!("error: unknown network kind {other}; use dhcp, static or none");
            return ExitCode::from(2);
        }
    };
    let dir = std::path::Path::new(dir);
    let desc = match fixture_builder::host_desc(name) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(dir)
        .map_err(|e| e.to_string())
        .and_then(|()| fixture_builder::build_into(&desc, dir).map_err(|e| e.to_string()))
    {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    let facts = hwdetect::detect(&hostio::HostRoot::new(dir));
    common::add_etc(dir, &facts, net);
    ExitCode::SUCCESS
}
