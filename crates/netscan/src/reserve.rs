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
        let mut v = self.allocate_many(
            result,
            reserved,
            known,
            std::slice::from_ref(holder),
            ttl,
            now,
        )?;
        Ok(v.remove(0))
    }

    /// [`ReservationStore::allocate`] for several holders in one lock (the nodes of a cluster):
    /// each gets its own address, none shared, or none gets any.
    pub fn allocate_many(
        &self,
        result: &ScanResult,
        reserved: &[IpRange],
        known: &[Ipv4Addr],
        holders: &[Holder],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Vec<Reservation>, Error> {
        let lock = self.lock()?;
        let mut list = lock.active(now)?;
        let mut out = Vec::new();
        for holder in holders {
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
            out.push(upsert(&mut list, ip, holder, ttl, now));
        }
        lock.save(&list)?;
        Ok(out)
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
mod tests;
