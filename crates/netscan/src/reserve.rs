//! IP reservations: a lock file plus a JSON list of expiring reservations in a state directory
//! (vmctl's), so concurrent `vmctl create --ip auto` never pick the same address.
//!
//! Why a reservation and not just the lock: a new VM does not answer ARP until it has booted,
//! so a second create that scans a few seconds later would see the address as free. The
//! reservation covers that gap and expires on its own if the first create dies.
//!
//! A reservation belongs to a [`Holder`]: the VM name it is for and the claim (one create) that
//! made it. Two creates of the same name (one of them refused a moment later, or on another
//! libvirt connection sharing the state directory) are two claims: neither gets, keeps or
//! releases the other's address.
//!
//! The lock is waited for at most [`LOCK_WAIT`] (settable): the holder writes its pid into the
//! lock file, so a waiter that gives up can name it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hostio::HostRoot;
use serde::{Deserialize, Serialize};

use crate::{Error, IpRange, ScanResult, pick_free, sys};

/// Lock file and data file names inside the state directory.
pub const LOCK_FILE: &str = "ip-reservations.lock";
pub const DATA_FILE: &str = "ip-reservations.json";
const FORMAT_VERSION: u32 = 1;
/// How long [`ReservationStore::lock`] waits for another process's lock by default: the lock is
/// held for a scan-free read-modify-write of a small file, so a holder past this is stuck.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Who holds a reservation: the VM name it is for and the claim (one create) that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub owner: String,
    pub claim: String,
}

impl Holder {
    /// A new claim for `owner`, unique on this host: pid, time and a per-process counter.
    pub fn new(owner: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Holder {
            owner: owner.to_string(),
            claim: format!(
                "{}-{nanos:x}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }
}

/// One reserved address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub ip: Ipv4Addr,
    /// Who it is for: a VM name.
    pub owner: String,
    /// The claim that made it ([`Holder::claim`]); empty in files written before claims existed,
    /// which match no claim.
    #[serde(default)]
    pub claim: String,
    pub created_unix: u64,
    pub expires_unix: u64,
}

impl Reservation {
    fn active(&self, now: u64) -> bool {
        self.expires_unix > now
    }

    fn held_by(&self, h: &Holder) -> bool {
        !self.claim.is_empty() && self.owner == h.owner && self.claim == h.claim
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Book {
    version: u32,
    reservations: Vec<Reservation>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Called once while [`ReservationStore::lock`] waits: the lock file, the holder's pid (as it
/// wrote it) and how long the wait may take.
pub type LockNotice = fn(&Path, Option<u32>, Duration);

/// The store: `<dir>/ip-reservations.lock` and `<dir>/ip-reservations.json`, `dir` being a
/// host path resolved through the [`HostRoot`].
#[derive(Debug, Clone)]
pub struct ReservationStore {
    host: HostRoot,
    dir: PathBuf,
    lock_wait: Duration,
    notice: Option<LockNotice>,
}

impl ReservationStore {
    pub fn new(host: HostRoot, dir: impl Into<PathBuf>) -> Self {
        ReservationStore {
            host,
            dir: dir.into(),
            lock_wait: LOCK_WAIT,
            notice: None,
        }
    }

    /// Waits at most `wait` for the lock, calling `notice` once when it has to wait.
    pub fn with_lock_wait(mut self, wait: Duration, notice: Option<LockNotice>) -> Self {
        self.lock_wait = wait;
        self.notice = notice;
        self
    }

    fn data_path(&self) -> PathBuf {
        self.dir.join(DATA_FILE)
    }

    /// Whether anything was ever reserved here (callers that only release can skip the lock,
    /// and the directory it would create, when not).
    pub fn exists(&self) -> bool {
        self.host.path(self.data_path()).exists()
    }

    /// Takes the exclusive lock, waiting at most the store's lock wait ([`LOCK_WAIT`] unless set)
    /// and then failing with [`Error::LockHeld`] naming the holder's pid. It is held until the
    /// returned value is dropped, and released by the kernel if the process dies.
    pub fn lock(&self) -> Result<ReservationLock<'_>, Error> {
        let path = self.host.path(self.dir.join(LOCK_FILE));
        let err = |source| Error::LockReservations {
            path: path.clone(),
            source,
        };
        // Searchable, not listable: the state directory may be the parent of VM storage that
        // the qemu user must reach (vmctl's default /var/lib/vmctl holds vms/).
        self.host
            .create_dir_all_mode(&self.dir, 0o711)
            .map_err(err)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(err)?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(10);
        let mut noticed = false;
        while !sys::try_lock_exclusive(&file).map_err(err)? {
            let holder = holder_pid(&path);
            if start.elapsed() >= self.lock_wait {
                return Err(Error::LockHeld {
                    path,
                    pid: holder,
                    waited: self.lock_wait,
                });
            }
            if !noticed {
                if let Some(n) = self.notice {
                    n(&path, holder, self.lock_wait);
                }
                noticed = true;
            }
            // flock(2) has no timed wait: poll, backing off to a tenth of a second.
            std::thread::sleep(pause.min(self.lock_wait.saturating_sub(start.elapsed())));
            pause = (pause * 2).min(Duration::from_millis(100));
        }
        // Who holds it, for a waiter that gives up. Written only under the lock.
        file.set_len(0).map_err(err)?;
        writeln!(file, "{}", std::process::id()).map_err(err)?;
        Ok(ReservationLock {
            store: self,
            _file: file,
        })
    }

    /// Under the lock: drops expired reservations, then gives `holder` the first address of the
    /// scan that is free, outside `reserved`, not in `known` (addresses VMs hold by metadata even
    /// while powered off and silent), and not reserved by any other claim (another create of the
    /// same name included), for `ttl`. A claim that already holds a still-free address keeps it
    /// (the call is idempotent).
    pub fn allocate(
        &self,
        result: &ScanResult,
        reserved: &[IpRange],
        known: &[Ipv4Addr],
        holder: &Holder,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Reservation, Error> {
        let lock = self.lock()?;
        let mut list = lock.active(now)?;
        let mine = list.iter().position(|r| {
            r.held_by(holder)
                && !known.contains(&r.ip)
                && result.free.iter().any(|f| f.contains(r.ip))
        });
        let ip = match mine {
            Some(i) => list[i].ip,
            None => {
                let taken: Vec<Ipv4Addr> = list
                    .iter()
                    .filter(|r| !r.held_by(holder))
                    .map(|r| r.ip)
                    .chain(known.iter().copied())
                    .collect();
                pick_free(result, reserved, &taken).ok_or(Error::PickFree {
                    subnet: result.subnet,
                })?
            }
        };
        let r = upsert(&mut list, ip, holder, ttl, now);
        lock.save(&list)?;
        Ok(r)
    }

    /// Under the lock: reserves a given address (`--ip X`) for `holder`; refused if any other
    /// claim holds it.
    pub fn reserve(
        &self,
        ip: Ipv4Addr,
        holder: &Holder,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Reservation, Error> {
        let lock = self.lock()?;
        let mut list = lock.active(now)?;
        if let Some(other) = list.iter().find(|r| r.ip == ip && !r.held_by(holder)) {
            return Err(Error::ReserveTaken {
                ip,
                owner: other.owner.clone(),
            });
        }
        let r = upsert(&mut list, ip, holder, ttl, now);
        lock.save(&list)?;
        Ok(r)
    }

    /// Drops the reservations `holder`'s claim made (the create failed). Returns how many.
    pub fn release(&self, holder: &Holder, now: SystemTime) -> Result<usize, Error> {
        self.release_where(now, |r| r.held_by(holder))
    }

    /// Drops the reservation of `ip` for VM `owner`, whichever claim made it (the VM was
    /// deleted: its address is free at once). Returns how many were dropped.
    pub fn release_address(
        &self,
        owner: &str,
        ip: Ipv4Addr,
        now: SystemTime,
    ) -> Result<usize, Error> {
        self.release_where(now, |r| r.owner == owner && r.ip == ip)
    }

    fn release_where(
        &self,
        now: SystemTime,
        drop: impl Fn(&Reservation) -> bool,
    ) -> Result<usize, Error> {
        let lock = self.lock()?;
        let mut list = lock.active(now)?;
        let before = list.len();
        list.retain(|r| !drop(r));
        lock.save(&list)?;
        Ok(before - list.len())
    }

    /// The active reservations.
    pub fn list(&self, now: SystemTime) -> Result<Vec<Reservation>, Error> {
        self.lock()?.active(now)
    }
}

/// The pid a lock holder wrote into the lock file, if readable.
fn holder_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn upsert(
    list: &mut Vec<Reservation>,
    ip: Ipv4Addr,
    holder: &Holder,
    ttl: Duration,
    now: SystemTime,
) -> Reservation {
    let now = unix(now);
    // Callers checked that no other claim holds `ip`.
    list.retain(|r| !(r.held_by(holder) || r.ip == ip));
    let r = Reservation {
        ip,
        owner: holder.owner.clone(),
        claim: holder.claim.clone(),
        created_unix: now,
        expires_unix: now + ttl.as_secs().max(1),
    };
    list.push(r.clone());
    list.sort_by_key(|r| r.ip);
    r
}

/// The held lock; read and write the reservations while it lives.
#[derive(Debug)]
pub struct ReservationLock<'a> {
    store: &'a ReservationStore,
    _file: File,
}

impl ReservationLock<'_> {
    /// Reservations not yet expired at `now` (a missing file is an empty list).
    pub fn active(&self, now: SystemTime) -> Result<Vec<Reservation>, Error> {
        let rel = self.store.data_path();
        let path = self.store.host.path(&rel);
        let text = match self.store.host.read_to_string(&rel) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(Error::ReadReservations { path, source }),
        };
        let book: Book = serde_json::from_str(&text)
            .map_err(|source| Error::ParseReservations { path, source })?;
        let now = unix(now);
        Ok(book
            .reservations
            .into_iter()
            .filter(|r| r.active(now))
            .collect())
    }

    /// Replaces the list (atomic rename, so a crash leaves the old or the new list).
    pub fn save(&self, list: &[Reservation]) -> Result<(), Error> {
        let rel = self.store.data_path();
        let book = Book {
            version: FORMAT_VERSION,
            reservations: list.to_vec(),
        };
        let mut text = serde_json::to_string_pretty(&book).unwrap_or_default();
        text.push('\n');
        self.store
            .host
            .write_atomic(&rel, text.as_bytes(), 0o644)
            .map_err(|source| Error::WriteReservations {
                path: self.store.host.path(&rel),
                source,
            })
    }

    pub fn dir(&self) -> &Path {
        &self.store.dir
    }
}

#[cfg(test)]
mod tests {
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
}
