//! `vmctl metrics` on libvirt's test driver: the textfile and the exporter's answers pass
//! `promtool check metrics`, the exporter speaks enough HTTP/1.1 (404, 405, HEAD, a too-big
//! request, a silent client that holds nothing up), answers `vmctl_libvirt_up 0` when libvirt
//! is unreachable, and stops cleanly on SIGTERM. The lab's real libvirtd and a real Prometheus
//! server: metrics_lab.rs.

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use assert_cmd::Command as AssertCommand;
use predicates::prelude::*;

use crate::metrics_support::{Exporter, get, promtool_check, raw};

fn vmctl() -> AssertCommand {
    let mut c = AssertCommand::cargo_bin("vmctl").unwrap();
    c.env("VMCTL_CONNECT", "test:///default")
        .env("VMCTL_BRIDGE", "br0")
        .env_remove("VMCTL_LOG");
    c
}

fn serve(connect: &str, state: &std::path::Path) -> Exporter {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmctl"));
    c.args([
        "--connect",
        connect,
        "metrics",
        "serve",
        "--listen",
        "127.0.0.1:0",
    ])
    .env("VMCTL_STATE_DIR", state)
    .env("VMCTL_BRIDGE", "br0")
    .env_remove("VMCTL_LOG");
    Exporter::spawn(c)
}

#[test]
fn metrics_textfile_writes_a_prom_file_promtool_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("vmctl.prom");
    let out = vmctl()
        .args(["--json", "metrics", "textfile"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["libvirt_up"], true);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(v["bytes"], text.len());
    assert!(
        text.contains("vmctl_vm_state{vm=\"test\",state=\"running\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("vmctl_libvirt_up 1\n"));
    promtool_check(&text);
}

#[test]
fn metrics_textfile_refuses_a_name_node_exporter_ignores_and_a_missing_directory() {
    let tmp = tempfile::tempdir().unwrap();
    vmctl()
        .args(["metrics", "textfile"])
        .arg(tmp.path().join("vmctl.txt"))
        .assert()
        .code(2)
        .stdout("")
        .stderr(
            predicate::str::contains("must end in .prom").and(predicate::str::contains("help: ")),
        );
    vmctl()
        .args(["metrics", "textfile"])
        .arg(tmp.path().join("missing/vmctl.prom"))
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("does not exist")
                .and(predicate::str::contains("help: create it")),
        );
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn metrics_textfile_with_libvirt_unreachable_writes_libvirt_up_0_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("vmctl.prom");
    vmctl()
        .args([
            "--connect",
            "gvb-no-such-driver:///x",
            "metrics",
            "textfile",
        ])
        .arg(&path)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("connect to libvirt"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("vmctl_libvirt_up 0\n"), "{text}");
    promtool_check(&text);
}

#[test]
fn metrics_serve_answers_scrapes_promtool_accepts_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let mut e = serve("test:///default", tmp.path());
    assert!(
        !e.banner.contains("warning"),
        "loopback: no warning: {}",
        e.banner
    );

    let r = get(e.addr, "GET", "/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert!(
        r.body
            .contains("vmctl_vm_state{vm=\"test\",state=\"running\"} 1\n")
    );
    promtool_check(&r.body);

    // A query string is not part of the path.
    assert_eq!(get(e.addr, "GET", "/metrics?x=1").status, 200);
    let index = get(e.addr, "GET", "/");
    assert_eq!(index.status, 200);
    assert!(index.body.contains("href=\"/metrics\""), "{index:?}");
    assert_eq!(get(e.addr, "GET", "/nope").status, 404);
    let post = get(e.addr, "POST", "/metrics");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    let head = get(e.addr, "HEAD", "/metrics");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20_000));
    assert_eq!(raw(e.addr, &big).status, 431);

    // A client that connects and says nothing does not hold up the next scrape.
    let mut silent = TcpStream::connect(e.addr).unwrap();
    silent.write_all(b"GET /met").unwrap();
    let t = Instant::now();
    assert_eq!(get(e.addr, "GET", "/metrics").status, 200);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    let status = e.terminate();
    assert_eq!(status.code(), Some(0), "a clean exit on SIGTERM");
}

#[test]
fn metrics_serve_with_libvirt_unreachable_answers_200_with_libvirt_up_0() {
    let tmp = tempfile::tempdir().unwrap();
    let e = serve("gvb-no-such-driver:///x", tmp.path());
    let r = get(e.addr, "GET", "/metrics");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("vmctl_libvirt_up 0\n"), "{}", r.body);
    assert!(r.body.contains("vmctl_build_info{"));
    assert!(!r.body.contains("vmctl_vm_"));
    promtool_check(&r.body);
}

#[test]
fn metrics_serve_on_a_port_in_use_says_so_with_help() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    vmctl()
        .args(["metrics", "serve", "--listen", &addr])
        .timeout(Duration::from_secs(20))
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("Address already in use").and(predicate::str::contains(
                "help: pick another port with --listen",
            )),
        );
}

#[test]
fn metrics_serve_refuses_json_and_a_bad_address() {
    vmctl()
        .args(["--json", "metrics", "serve"])
        .assert()
        .code(2)
        .stdout(predicate::str::contains("\"kind\": \"refused\""));
    vmctl()
        .args(["metrics", "serve", "--listen", "localhost"])
        .assert()
        .code(2);
}

#[test]
fn metrics_serve_answers_503_beyond_8_connections_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let e = serve("test:///default", tmp.path());
    // Eight clients that say nothing hold the eight slots (up to the 5 s request deadline).
    let silent: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(e.addr).unwrap())
        .collect();
    assert_eq!(get(e.addr, "GET", "/metrics").status, 503);
    drop(silent);
    // Their handlers see the closed connections and free the slots.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(e.addr, "GET", "/metrics").status != 200 {
        assert!(Instant::now() < deadline, "the slots were not freed");
        std::thread::sleep(Duration::from_millis(50));
    }
}
