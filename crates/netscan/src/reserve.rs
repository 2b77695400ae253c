//! IP reservations: a lock file plus a JSON list of expiring reservations in a state directory
//! (vmctl's), so concurrent `vmctl create --ip auto` never pick the same address.
//!
//! Why a reservation and not just the lock: a new VM does not answer ARP until it has booted,
//! so a second create that scans a few seconds later would see the address as free. The
//! reservation covers that gap and expires on its own if the first create dies.

use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hostio::HostRoot;
use serde::{Deserialize, Serialize};

use crate::{Error, IpRange, ScanResult, pick_free, sys};

/// Lock file and data file names inside the state directory.
pub const LOCK_FILE: &str = "ip-reservations.lock";
pub const DATA_FILE: &str = "ip-reservations.json";
const FORMAT_VERSION: u32 = 1;

/// One reserved address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub ip: Ipv4Addr,
    /// Who holds it: a VM name.
    pub owner: String,
    pub created_unix: u64,
    pub expires_unix: u64,
}

impl Reservation {
    fn active(&self, now: u64) -> bool {
        self.expires_unix > now
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

/// The store: `<dir>/ip-reservations.lock` and `<dir>/ip-reservations.json`, `dir` being a
/// host path resolved through the [`HostRoot`].
#[derive(Debug, Clone)]
pub struct ReservationStore {
    host: HostRoot,
    dir: PathBuf,
}

impl ReservationStore {
    pub fn new(host: HostRoot, dir: impl Into<PathBuf>) -> Self {
        ReservationStore {
            host,
            dir: dir.into(),
        }
    }

    fn data_path(&self) -> PathBuf {
        self.dir.join(DATA_FILE)
    }

    /// Whether anything was ever reserved here (callers that only release can skip the lock,
    /// and the directory it would create, when not).
    pub fn exists(&self) -> bool {
        self.host.path(self.data_path()).exists()
    }

    /// Takes the exclusive lock (blocking). It is held until the returned value is dropped, and
    /// released by the kernel if the process dies.
    pub fn lock(&self) -> Result<ReservationLock<'_>, Error> {
        let path = self.host.path(self.dir.join(LOCK_FILE));
        let err = |source| Error::LockReservations {
            path: path.clone(),
            source,
        };
        self.host.create_dir_all(&self.dir).map_err(err)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(err)?;
        sys::lock_exclusive(&file).map_err(err)?;
        Ok(ReservationLock {
            store: self,
            _file: file,
        })
    }

    /// Under the lock: drops expired reservations, then gives `owner` the first address of the
    /// scan that is free, outside `reserved`, not in `known` (addresses VMs hold by metadata even
    /// while powered off and silent), and not reserved by anyone else, for `ttl`.
    /// An owner that already holds a still-free address keeps it (the call is idempotent).
    pub fn allocate(
        &self,
        result: &ScanResult,
        reserved: &[IpRange],
        known: &[Ipv4Addr],
        owner: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Reservation, Error> {
        let lock = self.lock()?;
        let mut list = lock.active(now)?;
        let mine = list.iter().position(|r| {
            r.owner == owner
                && !known.contains(&r.ip)
                && result.free.iter().any(|f| f.contains(r.ip))
        });
        let ip = match mine {
            Some(i) => list[i].ip,
            None => {
                let taken: Vec<Ipv4Addr> = list
                    .iter()
                    .filter(|r| r.owner != owner)
                    .map(|r| r.ip)
                    .chain(known.iter().copied())
                    .collect();
                pick_free(result, reserved, &taken).ok_or(Error::PickFree {
                    subnet: result.subnet,
                })?
            }
        };
        let r = upsert(&mut list, ip, owner, ttl, now);
        lock.save(&list)?;
        Ok(r)
    }

    /// Under the lock: reserves a given address (`--ip X`) for `owner`; refused if another
    /// owner holds it.
    pub fn reserve(
        &self,
        ip: Ipv4Addr,
        owner: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Reservation, Error> {
        let lock = self.lock()?;
        let mut list = lock.active(now)?;
        if let Some(other) = list.iter().find(|r| r.ip == ip && r.owner != owner) {
            return Err(Error::ReserveTaken {
                ip,
                owner: other.owner.clone(),
            });
        }
        let r = upsert(&mut list, ip, owner, ttl, now);
        lock.save(&list)?;
        Ok(r)
    }

    /// Drops every reservation of `owner` (the VM was created and its address is now in its
    /// metadata, or the create failed). Returns how many were dropped.
    pub fn release(&self, owner: &str, now: SystemTime) -> Result<usize, Error> {
        let lock = self.lock()?;
        let mut list = lock.active(now)?;
        let before = list.len();
        list.retain(|r| r.owner != owner);
        lock.save(&list)?;
        Ok(before - list.len())
    }

    /// The active reservations.
    pub fn list(&self, now: SystemTime) -> Result<Vec<Reservation>, Error> {
        self.lock()?.active(now)
    }
}

fn upsert(
    list: &mut Vec<Reservation>,
    ip: Ipv4Addr,
    owner: &str,
    ttl: Duration,
    now: SystemTime,
) -> Reservation {
    let now = unix(now);
    list.retain(|r| !(r.owner == owner || r.ip == ip));
    let r = Reservation {
        ip,
        owner: owner.to_string(),
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
        let a = store.allocate(&r, &zone, &[], "vm-a", TTL, t0).expect("a");
        let b = store.allocate(&r, &zone, &[], "vm-b", TTL, t0).expect("b");
        assert_eq!((a.ip, b.ip), (ip("198.18.5.11"), ip("198.18.5.12")));
        // Idempotent for the same owner.
        assert_eq!(
            store
                .allocate(&r, &zone, &[], "vm-a", TTL, t0)
                .expect("again")
                .ip,
            a.ip
        );
        // A static reservation of b's address by someone else is refused.
        let e = store.reserve(b.ip, "vm-c", TTL, t0).expect_err("taken");
        assert!(matches!(e, Error::ReserveTaken { .. }), "{e}");
        // After expiry both are free again; a silent address a stopped VM holds is skipped.
        let later = t0 + TTL + Duration::from_secs(1);
        assert_eq!(
            store
                .allocate(&r, &zone, &[ip("198.18.5.11")], "vm-c", TTL, later)
                .expect("c")
                .ip,
            ip("198.18.5.12")
        );
        assert_eq!(store.release("vm-c", later).expect("release"), 1);
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
            .allocate(&r, &zone, &[], "vm", TTL, SystemTime::now())
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
                        .allocate(&r, &[], &[], &format!("vm-{i}"), TTL, SystemTime::now())
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
}
