//! The raw ARP engine: a paced sender with retries for silent addresses and a concurrent
//! receiver thread, sharing one `AF_PACKET` socket bound to the plan's interface.
//!
//! Timing model: every request (first try or retry) takes one slot of the rate. A retry becomes
//! due `timeout` after the address's previous request and goes out once every address has had
//! its first request, so the sender never idles while there is work. The scan ends when the
//! reply window of the last request closes. Total time is about
//! `(targets + retries x silent) / rate + timeout`: at a fixed polite rate the packet count
//! bounds a scan, not the network.

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::arp::{ArpOp, build_request, parse_frame};
use crate::sys::PacketSocket;
use crate::{Error, MacAddr, ScanPlan};

/// How often the receiver wakes up to look at the stop flag.
const RECV_POLL: Duration = Duration::from_millis(2);
/// How far the sender may fall behind its schedule and catch up in a burst: sleep overshoot
/// and a descheduled thread on a busy host are absorbed (at most 50 back-to-back frames, 3 KiB,
/// at the default rate); a longer stall is not made up for, so the rate holds over any 25 ms.
const MAX_LAG: Duration = Duration::from_millis(25);

#[derive(Debug)]
pub(crate) struct Outcome {
    /// Every distinct (sender IP, sender MAC) pair that answered.
    pub replies: BTreeSet<(Ipv4Addr, MacAddr)>,
    pub packets_sent: u64,
}

/// Spaces packets `1/rate` apart on an absolute schedule, so sleep overshoot is caught up on
/// instead of accumulating (the average rate stays exact; a late slot is sent at once).
struct Pacer {
    start: Instant,
    rate: u64,
    sent: u64,
}

impl Pacer {
    fn new(rate_pps: u32) -> Self {
        Pacer {
            start: Instant::now(),
            rate: u64::from(rate_pps),
            sent: 0,
        }
    }

    fn slot(&self, n: u64) -> Instant {
        let nanos = u128::from(n) * 1_000_000_000 / u128::from(self.rate);
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Sleeps until the next slot is due and takes it.
    fn wait_turn(&mut self) {
        let now = Instant::now();
        let due = self.slot(self.sent);
        if due + MAX_LAG < now {
            // Stalled: shift the schedule so we are exactly MAX_LAG behind.
            self.start += now - due - MAX_LAG;
        }
        if due > now {
            thread::sleep(due - now);
        }
        self.sent += 1;
    }

    /// When the next slot is due (used to decide whether a retry will be due by then).
    fn next_slot(&self) -> Instant {
        self.slot(self.sent).max(Instant::now())
    }

    /// After waiting idle (nothing to send), restart the schedule at now: idle time is not
    /// credit for a burst.
    fn idle(&mut self) {
        let now = Instant::now();
        if self.slot(self.sent) < now {
            self.start += now - self.slot(self.sent);
        }
    }
}

/// Index of `ip` in the plan's subnet (offset from the network address).
fn offset(plan: &ScanPlan, ip: Ipv4Addr) -> Option<usize> {
    plan.subnet
        .contains(&ip)
        .then(|| (u32::from(ip) - u32::from(plan.subnet.network())) as usize)
}

/// Opens the sockets; `Err(OpenSocket)` with `EPERM` means no `CAP_NET_RAW` (the caller may fall
/// back to the neighbour table).
pub(crate) fn run(plan: &ScanPlan) -> Result<Outcome, Error> {
    let open_err = |source| Error::OpenSocket {
        interface: plan.interface.clone(),
        source,
    };
    // One socket sends and receives: it exists before the first request, so no early reply is
    // missed, and closing an AF_PACKET socket costs an RCU grace period (synchronize_net() in
    // packet_release, net/packet/af_packet.c), about 10 ms here, so one is cheaper than two.
    let sock = PacketSocket::open(plan.ifindex, plan.local_ip, RECV_POLL).map_err(open_err)?;
    let (rx, tx) = (&sock, &sock);

    let size = 1usize << (32 - u32::from(plan.subnet.prefix_len()));
    let answered: Vec<AtomicBool> = (0..size).map(|_| AtomicBool::new(false)).collect();
    let stop = AtomicBool::new(false);

    thread::scope(|s| {
        let receiver = s.spawn(|| receive(plan, rx, &answered, &stop));
        let sent = send(plan, &answered, |ip, frame| {
            send_one(tx, frame).map_err(|source| Error::SendArp {
                interface: plan.interface.clone(),
                ip,
                source,
            })
        });
        // The window of the last request stays open in full even if everything answered: a
        // second MAC for the same address (a conflict) may still be on its way.
        if let Ok((last, _)) = &sent {
            let deadline = *last + plan.timeout;
            thread::sleep(deadline.saturating_duration_since(Instant::now()));
        }
        // Whatever happened to the sender, the receiver must stop before the scope ends.
        stop.store(true, Ordering::Relaxed);
        let replies = receiver
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("receiver thread panicked")))
            .map_err(|source| Error::ReceiveArp {
                interface: plan.interface.clone(),
                source,
            })?;
        let (_, packets_sent) = sent?;
        Ok(Outcome {
            replies,
            packets_sent,
        })
    })
}

/// Sends first tries and due retries at the plan's rate through `transmit`; returns the time of
/// the last request and the number of packets sent.
fn send(
    plan: &ScanPlan,
    answered: &[AtomicBool],
    mut transmit: impl FnMut(Ipv4Addr, &[u8]) -> Result<(), Error>,
) -> Result<(Instant, u64), Error> {
    let mut pacer = Pacer::new(plan.rate_pps);
    let mut fresh = plan.targets();
    // (due, ip, retries left); due times grow in send order, so a FIFO is a priority queue.
    let mut retry: VecDeque<(Instant, Ipv4Addr, u32)> = VecDeque::new();
    let mut last = Instant::now();
    let is_answered =
        |ip: Ipv4Addr| offset(plan, ip).is_some_and(|i| answered[i].load(Ordering::Relaxed));
    loop {
        // First requests before retries. The other order (due retries first) stalls: after one
        // reply window every slot goes to retries of the addresses sent a window earlier, and
        // when those run out the remaining new addresses start a second, idle-padded chain.
        let (ip, left) = match fresh.next() {
            Some(ip) => (ip, plan.retries),
            None => match retry.front() {
                Some(&(due, ip, left)) if due <= pacer.next_slot() => {
                    retry.pop_front();
                    if is_answered(ip) {
                        continue;
                    }
                    (ip, left)
                }
                // Nothing is due yet: wait for the next retry.
                Some(&(due, _, _)) => {
                    thread::sleep(due.saturating_duration_since(Instant::now()).min(RECV_POLL));
                    pacer.idle();
                    continue;
                }
                None => break,
            },
        };
        // Scope guard: requests only ever go to the planned subnet.
        if !plan.subnet.contains(&ip) || ip == plan.local_ip {
            continue;
        }
        pacer.wait_turn();
        let frame = build_request(plan.local_mac, plan.local_ip, ip);
        transmit(ip, &frame)?;
        last = Instant::now();
        if left > 0 {
            retry.push_back((last + plan.timeout, ip, left - 1));
        }
    }
    Ok((last, pacer.sent))
}

/// Sends a frame, waiting briefly when the device queue is full (`ENOBUFS`) instead of failing.
fn send_one(tx: &PacketSocket, frame: &[u8]) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match tx.send(frame, MacAddr::BROADCAST) {
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) && tries < 200 => {
                tries += 1;
                thread::sleep(Duration::from_millis(1));
            }
            r => return r,
        }
    }
}

/// Collects replies addressed to our IP from senders inside the subnet until told to stop.
fn receive(
    plan: &ScanPlan,
    rx: &PacketSocket,
    answered: &[AtomicBool],
    stop: &AtomicBool,
) -> io::Result<BTreeSet<(Ipv4Addr, MacAddr)>> {
    let mut replies = BTreeSet::new();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let Some(n) = rx.recv(&mut buf)? else {
            continue;
        };
        let Some(p) = parse_frame(&buf[..n]) else {
            continue;
        };
        if p.op != ArpOp::Reply || p.target_ip != plan.local_ip || p.sender_ip == plan.local_ip {
            continue;
        }
        let Some(i) = offset(plan, p.sender_ip) else {
            continue;
        };
        answered[i].store(true, Ordering::Relaxed);
        replies.insert((p.sender_ip, p.sender_mac));
    }
    Ok(replies)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::{ScanMethod, parse_frame};
    use std::cell::RefCell;

    fn plan(subnet: &str, retries: u32) -> ScanPlan {
        ScanPlan {
            interface: "br0".into(),
            ifindex: 1,
            local_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            local_ip: Ipv4Addr::new(198, 18, 5, 1),
            subnet: subnet.parse().expect("net"),
            rate_pps: 1_000_000,
            timeout: Duration::from_millis(1),
            retries,
            method: ScanMethod::Raw,
        }
    }

    /// Records what would go on the wire; `.10` and `.20` "answer" their first request.
    fn record(plan: &ScanPlan) -> (Vec<Ipv4Addr>, u64) {
        let size = 1usize << (32 - u32::from(plan.subnet.prefix_len()));
        let answered: Vec<AtomicBool> = (0..size).map(|_| AtomicBool::new(false)).collect();
        let wire = RefCell::new(Vec::new());
        let (_, n) = send(plan, &answered, |ip, frame| {
            let p = parse_frame(frame).expect("an ARP frame");
            assert_eq!(
                (p.op, p.target_ip, p.sender_ip),
                (ArpOp::Request, ip, plan.local_ip)
            );
            if [10, 20].contains(&ip.octets()[3]) {
                answered[offset(plan, ip).expect("in subnet")].store(true, Ordering::Relaxed);
            }
            wire.borrow_mut().push(ip);
            Ok(())
        })
        .expect("send");
        (wire.into_inner(), n)
    }

    #[test]
    fn first_requests_go_out_in_order_then_retries_for_silent_addresses_only() {
        let p = plan("198.18.5.0/24", 2);
        let (wire, n) = record(&p);
        // 253 targets (not .0, .255 or our .1); 251 silent ones twice more.
        assert_eq!(n, 253 + 2 * 251);
        assert_eq!(wire.len() as u64, n);
        let first: Vec<Ipv4Addr> = p.targets().collect();
        assert_eq!(&wire[..253], &first[..]);
        let retried = &wire[253..];
        assert!(!retried.iter().any(|ip| [10, 20].contains(&ip.octets()[3])));
        assert!(
            wire.iter()
                .all(|ip| p.subnet.contains(ip) && *ip != p.local_ip)
        );
        assert_eq!(retried.iter().filter(|ip| ip.octets()[3] == 11).count(), 2);
    }

    #[test]
    fn a_single_address_probe_sends_retries_until_it_answers() {
        let (wire, n) = record(&plan("198.18.5.20/32", 2));
        assert_eq!((wire.len(), n), (1, 1), "answered at once: no retry");
        let (wire, _) = record(&plan("198.18.5.21/32", 2));
        assert_eq!(wire.len(), 3);
        let (wire, _) = record(&plan("198.18.5.1/32", 2));
        assert!(wire.is_empty(), "never our own address");
    }

    /// Lower bounds only: sleeping can make the pacer slower, never faster.
    #[test]
    fn pacer_keeps_the_rate_and_does_not_burst_after_an_idle_gap() {
        let mut p = Pacer::new(10_000);
        let t = Instant::now();
        for _ in 0..101 {
            p.wait_turn();
        }
        assert!(
            t.elapsed() >= Duration::from_millis(10),
            "{:?}",
            t.elapsed()
        );
        thread::sleep(Duration::from_millis(30));
        p.idle();
        let t = Instant::now();
        for _ in 0..51 {
            p.wait_turn();
        }
        // Without the rebase, 300 overdue slots would let all 51 go out at once.
        assert!(t.elapsed() >= Duration::from_millis(5), "{:?}", t.elapsed());
    }
}
