//! netscan: agentless IPv4 discovery on one L2 segment (a host bridge), the library behind
//! `vmctl ip check|list` and `vmctl create --ip auto`.
//!
//! # Shape
//! Facts, then a pure plan, then the scan:
//! 1. [`Interface::lookup`] reads the interface (index, MAC, IPv4 networks) from the kernel.
//! 2. [`plan_scan`] validates a [`ScanRequest`] against it (link up and Ethernet, rate, CIDR
//!    scope, `/16` width guard) and returns a [`ScanPlan`]. It is pure and unit-tested.
//! 3. [`Scanner::scan`] runs the plan: raw ARP over `AF_PACKET` when the process has
//!    `CAP_NET_RAW`, else the kernel neighbour table ([`ScanMethod::Neighbour`], slower).
//!
//! The [`ScanResult`] holds the used addresses (IP, MAC, OUI vendor), conflicts (one IP, several
//! MACs), compact free ranges and their count. [`pick_free`] and [`ReservationStore`] turn it into
//! a safe static address: the store is a lock file plus a JSON file of expiring reservations, so
//! two concurrent `create --ip auto` never receive the same address.
//!
//! # Wiring `vmctl ip` (issue 6)
//! - `ip check [--interface IF|--bridge BR] [--subnet CIDR] [--rate PPS] [--timeout-ms MS]
//!   [--retries N] [--force]`: fill a [`ScanRequest`] (`subnet` via [`parse_subnet`]), call
//!   [`Scanner::scan`], print [`ScanResult`] (add the libvirt VM owning each MAC as `vm`).
//!   Exit 2 when [`Error::is_usage`] (interface without IPv4, malformed CIDR, prefix shorter
//!   than /16 without force, rate 0, out-of-scope subnet, non-Ethernet link), else 1; print
//!   [`Error::help`] as the `help:` line. When [`ScanResult::fallback`] is set, say on stderr that
//!   the neighbour table was used (no `CAP_NET_RAW`) and that it is slower and blind to duplicates.
//! - `ip check A.B.C.D`: [`Scanner::probe_one`]; exit 0 if [`ProbeResult::is_free`], else 1.
//! - `ip list` source 3: [`Scanner::neighbours`] (no packet sent); source 4: a scan of the
//!   bridge, matching VM MACs against [`ScanResult::used`].
//! - `create --ip auto`: scan, then [`ReservationStore::allocate`] (under the lock: expired
//!   reservations dropped, first free address outside the reserved ranges and other claims'
//!   reservations; pass the IPs in VM metadata as `known`, since a stopped VM is silent). Each
//!   create is its own [`Holder`] (VM name + claim), so two creates of one name never share or
//!   release each other's address. Release with [`ReservationStore::release`] if the create
//!   fails, [`ReservationStore::release_address`] when the VM is deleted, or let it expire (TTL)
//!   if the create dies.
//! - `create --ip X`: [`Scanner::probe_one`] (refuse if taken), then [`ReservationStore::reserve`]
//!   (refused if another create holds it).
//!
//! Raw ARP needs root or `CAP_NET_RAW`; the process must run in the network namespace of the
//! interface. The fallback reads `/proc/net/arp` (through the [`hostio::HostRoot`]), not netlink:
//! it has the same complete entries, and the wait is the kernel's ARP timers either way. The scanner only sends on the chosen interface, only for addresses inside one of
//! its IPv4 networks.
//!
//! # Example
//! ```no_run
//! use netscan::{Scan, Scanner, ScanRequest, ReservationStore, IpRange};
//! use hostio::HostRoot;
//! use std::time::{Duration, SystemTime};
//!
//! let scanner = Scanner::new(HostRoot::system());
//! let mut req = ScanRequest::new("br0");
//! req.subnet = Some(netscan::parse_subnet("198.18.5.0/24")?);
//! let result = scanner.scan(&req)?;
//! let store = ReservationStore::new(HostRoot::system(), "/var/lib/vmctl");
//! let reserved = [IpRange::parse("198.18.5.1-198.18.5.9")?];
//! let holder = netscan::Holder::new("vm-a");
//! let got = store.allocate(&result, &reserved, &[], &holder, Duration::from_secs(600), SystemTime::now())?;
//! println!("{}", got.ip);
//! # Ok::<(), netscan::Error>(())
//! ```

// Not forbid: `sys` keeps two small unsafe items (a `sockaddr_ll` for rustix's bind/sendto and
// setsockopt for SO_ATTACH_FILTER / PACKET_IGNORE_OUTGOING) that no safe crate wraps.
#![deny(unsafe_code)]

mod arp;
mod engine;
mod error;
mod iface;
mod mac;
mod neigh;
mod oui;
mod plan;
mod ranges;
mod reserve;
mod scan;
mod sys;

pub use arp::{ARP_FRAME_LEN, ArpOp, ArpPacket, build_request, parse_frame};
pub use error::Error;
pub use iface::{Interface, InterfaceAddr};
pub use ipnet::Ipv4Net;
pub use mac::MacAddr;
pub use neigh::{Neighbour, parse_proc_net_arp, read_table as read_neighbours};
pub use oui::OuiDb;
pub use plan::{
    DEFAULT_RATE_PPS, DEFAULT_TIMEOUT, MIN_PREFIX_WITHOUT_FORCE, ScanMethod, ScanPlan, ScanRequest,
    parse_subnet, plan_scan,
};
pub use ranges::{IpRange, free_ranges, pick_free};
pub use reserve::{Holder, LOCK_WAIT, LockNotice, Reservation, ReservationLock, ReservationStore};
pub use scan::{Conflict, Host, NoScan, ProbeResult, Scan, ScanResult, Scanner};

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
