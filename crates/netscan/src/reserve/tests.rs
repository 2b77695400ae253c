//! Unit tests of `reserve`.

use super::*;
use crate::{ScanMethod, free_ranges};
use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

fn result(used: &[&str]) -> ScanResult {
    let subnet: ipnet::Ipv4Net = "198.18.5.0/24".parse().expect("net");
    let used: BTreeSet<Ipv4Addr> = used.iter().map(|s| s.parse().expect("ip")).collect();
    let (free, free_count) = free_ranges(subnet, &used);
    ScanResult {
        interface: "br0".into(),
        subnet,
        local_ip: "198.18.5.1".parse().expect("ip"),
        method: ScanMethod::Raw,
        fallback: false,
        used: Vec::new(),
        conflicts: Vec::new(),
        free,
        free_count,
        probed: 253,
        packets_sent: 0,
        rate_pps: 2000,
        retries: 2,
        timeout_ms: 100,
        duration_ms: 0,
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

const TTL: Duration = Duration::from_secs(600);

#[test]
fn allocations_skip_reserved_ranges_and_each_other_and_expire() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = ReservationStore::new(HostRoot::new(dir.path()), "/var/lib/vmctl");
    let r = result(&["198.18.5.1", "198.18.5.10"]);
    let zone = [IpRange::parse("198.18.5.1-198.18.5.9").expect("range")];
    let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let (vm_a, vm_b, vm_c) = (
        Holder::new("vm-a"),
        Holder::new("vm-b"),
        Holder::new("vm-c"),
    );
    let a = store.allocate(&r, &zone, &[], &vm_a, TTL, t0).expect("a");
    let b = store.allocate(&r, &zone, &[], &vm_b, TTL, t0).expect("b");
    assert_eq!((a.ip, b.ip), (ip("198.18.5.11"), ip("198.18.5.12")));
    // Idempotent for the same owner.
    assert_eq!(
        store
            .allocate(&r, &zone, &[], &vm_a, TTL, t0)
            .expect("again")
            .ip,
        a.ip
    );
    // A static reservation of b's address by someone else is refused.
    let e = store.reserve(b.ip, &vm_c, TTL, t0).expect_err("taken");
    assert!(matches!(e, Error::ReserveTaken { .. }), "{e}");
    // After expiry both are free again; a silent address a stopped VM holds is skipped.
    let later = t0 + TTL + Duration::from_secs(1);
    assert_eq!(
        store
            .allocate(&r, &zone, &[ip("198.18.5.11")], &vm_c, TTL, later)
            .expect("c")
            .ip,
        ip("198.18.5.12")
    );
    assert_eq!(store.release(&vm_c, later).expect("release"), 1);
    assert!(store.list(later).expect("list").is_empty());
    assert!(dir.path().join("var/lib/vmctl").join(DATA_FILE).exists());
}

#[test]
fn full_subnet_is_an_error_with_help() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = ReservationStore::new(HostRoot::new(dir.path()), "/state");
    let r = result(&[]);
    let zone = [IpRange::parse("198.18.5.0/24").expect("range")];
    let e = store
        .allocate(&r, &zone, &[], &Holder::new("vm"), TTL, SystemTime::now())
        .expect_err("full");
    assert!(matches!(e, Error::PickFree { .. }) && e.help().is_some());
}

#[test]
fn corrupt_file_is_reported_with_its_path() {
    let dir = tempfile::tempdir().expect("tmp");
    let host = HostRoot::new(dir.path());
    host.write_atomic(format!("/state/{DATA_FILE}"), b"{not json", 0o644)
        .expect("write");
    let store = ReservationStore::new(host, "/state");
    let e = store.list(SystemTime::now()).expect_err("corrupt");
    assert!(e.to_string().contains(DATA_FILE), "{e}");
}

/// Threads each open their own lock file handle, so flock serialises them as it does
/// separate processes (locks belong to open file descriptions, flock(2)).
#[test]
fn parallel_allocations_get_distinct_addresses() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().to_path_buf();
    let r = Arc::new(result(&["198.18.5.1"]));
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (root, r, barrier) = (root.clone(), Arc::clone(&r), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let store = ReservationStore::new(HostRoot::new(root), "/state");
                barrier.wait();
                store
                    .allocate(
                        &r,
                        &[],
                        &[],
                        &Holder::new(&format!("vm-{i}")),
                        TTL,
                        SystemTime::now(),
                    )
                    .expect("allocate")
                    .ip
            })
        })
        .collect();
    let ips: BTreeSet<Ipv4Addr> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    assert_eq!(ips.len(), n, "{ips:?}");
}

/// Two creates of the same VM name at once (the second refused a moment later, or on
/// another libvirt connection sharing the state directory): each gets its own address, and
/// the one that gives up releases only its own.
#[test]
fn same_name_claims_never_share_or_steal_an_address() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = ReservationStore::new(HostRoot::new(dir.path()), "/state");
    let r = result(&["198.18.5.1"]);
    let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let (one, two) = (Holder::new("vm"), Holder::new("vm"));
    let first = store.allocate(&r, &[], &[], &one, TTL, t0).expect("first");
    let second = store.allocate(&r, &[], &[], &two, TTL, t0).expect("second");
    assert_ne!(first.ip, second.ip, "two creates share {}", first.ip);
    // The second cannot take the first's address by naming it either.
    let e = store.reserve(first.ip, &two, TTL, t0).expect_err("taken");
    assert!(matches!(e, Error::ReserveTaken { .. }), "{e}");
    // The second gives up: the first keeps its address.
    assert_eq!(store.release(&two, t0).expect("release"), 1);
    let left = store.list(t0).expect("list");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        (left[0].ip, left[0].claim.as_str()),
        (first.ip, one.claim.as_str())
    );
    // A deleted VM's address is released whichever claim made it.
    assert_eq!(store.release_address("vm", first.ip, t0).expect("rel"), 1);
    assert!(store.list(t0).expect("list").is_empty());
}

/// Another process holds the lock (a hung vmctl): the wait ends after the bounded time with
/// an error naming the holder's pid and a help line.
#[test]
fn held_lock_times_out_naming_the_holder() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "reserve::tests::hold_lock_child",
            "--ignored",
            "--nocapture",
        ])
        .env("NETSCAN_HOLD_LOCK", dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    while line.trim() != "locked" {
        line.clear();
        let n = std::io::BufRead::read_line(&mut out, &mut line).expect("read");
        assert!(n > 0, "the child ended without taking the lock");
    }
    static NOTICED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    fn notice(_: &Path, pid: Option<u32>, _: Duration) {
        NOTICED.store(pid.unwrap_or(u32::MAX), std::sync::atomic::Ordering::SeqCst);
    }
    let store = ReservationStore::new(HostRoot::new(dir.path()), "/state")
        .with_lock_wait(Duration::from_millis(500), Some(notice));
    let start = Instant::now();
    let e = store.lock().map(|_| ()).expect_err("held");
    let waited = start.elapsed();
    drop(child.stdin.take());
    child.wait().expect("child");
    assert!(
        matches!(e, Error::LockHeld { pid: Some(p), .. } if p == child.id()),
        "{e:?}"
    );
    assert!(waited >= Duration::from_millis(500) && waited < Duration::from_secs(5));
    assert!(
        e.to_string().contains(&format!("process {}", child.id())),
        "{e}"
    );
    assert!(e.help().is_some_and(|h| h.contains("ps -o")));
    assert_eq!(
        NOTICED.load(std::sync::atomic::Ordering::SeqCst),
        child.id()
    );
    // Once the holder is gone the lock is free again, and this process's pid is recorded.
    let lock = store.lock().expect("free");
    drop(lock);
    assert_eq!(
        holder_pid(&dir.path().join("state").join(LOCK_FILE)),
        Some(std::process::id())
    );
}

/// Not a test on its own: the child process of `held_lock_times_out_naming_the_holder`
/// (takes the lock, says so, holds it until its stdin closes).
#[test]
#[ignore = "the child process of held_lock_times_out_naming_the_holder"]
fn hold_lock_child() {
    let Ok(dir) = std::env::var("NETSCAN_HOLD_LOCK") else {
        return;
    };
    let store = ReservationStore::new(HostRoot::new(dir), "/state");
    let _lock = store.lock().expect("lock");
    println!("locked");
    let mut s = String::new();
    let _ = std::io::stdin().read_line(&mut s);
}
