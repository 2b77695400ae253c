//! The system edge: `getifaddrs(3)` (nix), `AF_PACKET` sockets (packet(7), rustix) and
//! `flock(2)` (rustix). Everything above this module is safe Rust.
//!
//! Two small unsafe items remain, because no safe wrapper exists for them in the versions the
//! workspace can take (rustix 1.1; nix 0.30, the newest that accepts the libc `virt` pins):
//! [`LinkLayerAddr`], a `sockaddr_ll` handed to rustix's `bind`/`sendto` (rustix has no
//! link-layer address type and nix's `LinkAddr` cannot be built), and [`setsockopt`] for
//! `SO_ATTACH_FILTER` and `PACKET_IGNORE_OUTGOING`, which neither crate wraps.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;
use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;
use rustix::net::addr::{SocketAddrArg, SocketAddrLen, SocketAddrOpaque};
use rustix::net::sockopt::{
    Timeout, set_socket_recv_buffer_size, set_socket_recv_buffer_size_force, set_socket_timeout,
};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use crate::MacAddr;
use crate::arp::ETHERTYPE_ARP;

// From <linux/if_packet.h> and <asm-generic/socket.h>; defined here because the libc version the
// workspace pins (0.2.183, through `virt`) does not export all of them.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const SO_ATTACH_FILTER: libc::c_int = 26;
// Classic BPF opcodes (<linux/bpf_common.h>): BPF_LD|BPF_H|BPF_ABS, BPF_LD|BPF_W|BPF_ABS,
// BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K.
const BPF_LDH_ABS: u16 = 0x28;
const BPF_LDW_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;

/// A classic BPF program keeping only ARP replies whose target protocol address is `to`
/// (op at byte 20, target IP at byte 38 of the Ethernet frame; the socket already only gets
/// the ARP EtherType). Everything else, such as other hosts' requests on a busy bridge, is
/// dropped in the kernel instead of waking the receiver.
pub(crate) fn arp_reply_filter(to: Ipv4Addr) -> [libc::sock_filter; 6] {
    let ins = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    [
        ins(BPF_LDH_ABS, 0, 0, 20),
        ins(BPF_JEQ_K, 0, 3, 2),
        ins(BPF_LDW_ABS, 0, 0, 38),
        ins(BPF_JEQ_K, 0, 1, u32::from(to)),
        ins(BPF_RET_K, 0, 0, 0xffff),
        ins(BPF_RET_K, 0, 0, 0),
    ]
}

/// One `getifaddrs` entry of interest: an IPv4 address or the link-layer (`AF_PACKET`) entry.
#[derive(Debug, Clone)]
pub(crate) enum IfEntry {
    V4 {
        name: String,
        addr: Ipv4Addr,
        netmask: Ipv4Addr,
    },
    Link {
        name: String,
        index: u32,
        hw_type: u16,
        up: bool,
        mac: Option<MacAddr>,
    },
}

/// Lists IPv4 and link-layer entries of every interface in the caller's network namespace.
pub(crate) fn interface_entries() -> io::Result<Vec<IfEntry>> {
    let mut out = Vec::new();
    for ifa in getifaddrs()? {
        let Some(addr) = ifa.address else {
            continue;
        };
        let name = ifa.interface_name;
        if let Some(v4) = addr.as_sockaddr_in() {
            // getifaddrs fills the netmask of every AF_INET entry; all-ones if it did not.
            let netmask = ifa
                .netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in())
                .map_or(Ipv4Addr::BROADCAST, |m| m.ip());
            out.push(IfEntry::V4 {
                name,
                addr: v4.ip(),
                netmask,
            });
        } else if let Some(ll) = addr.as_link_addr() {
            // The AF_PACKET entry carries a sockaddr_ll (packet(7)).
            out.push(IfEntry::Link {
                name,
                index: u32::try_from(ll.ifindex()).unwrap_or(0),
                hw_type: ll.hatype(),
                up: ifa.flags.contains(InterfaceFlags::IFF_UP),
                mac: ll.addr().filter(|_| ll.halen() == 6).map(MacAddr),
            });
        }
    }
    Ok(out)
}

fn sockaddr_ll(ifindex: u32, protocol: u16, dst: Option<MacAddr>) -> libc::sockaddr_ll {
    let mut sll_addr = [0u8; 8];
    if let Some(mac) = dst {
        sll_addr[..6].copy_from_slice(&mac.0);
    }
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as libc::c_ushort,
        sll_protocol: protocol.to_be(),
        sll_ifindex: ifindex as libc::c_int,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: if dst.is_some() { 6 } else { 0 },
        sll_addr,
    }
}

/// A `sockaddr_ll` as a socket address rustix can pass to `bind(2)` and `sendto(2)`.
struct LinkLayerAddr(libc::sockaddr_ll);

// SAFETY: `f` gets a pointer to an initialised `sockaddr_ll` that lives for the whole call,
// with its exact size: what bind(2) and sendto(2) read for AF_PACKET (packet(7)).
#[allow(unsafe_code)]
unsafe impl SocketAddrArg for LinkLayerAddr {
    unsafe fn with_sockaddr<R>(
        &self,
        f: impl FnOnce(*const SocketAddrOpaque, SocketAddrLen) -> R,
    ) -> R {
        let len = std::mem::size_of::<libc::sockaddr_ll>() as SocketAddrLen;
        f((&raw const self.0).cast(), len)
    }
}

/// `setsockopt(2)` with `value`'s bytes, for the options rustix has no wrapper for.
#[allow(unsafe_code)]
fn setsockopt<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    let len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: a valid fd, and a pointer to `value` with its exact size, alive for the call.
    // setsockopt only reads that memory; the kernel copies it in (and checks any user pointer
    // inside it, as in `sock_fprog`, when it copies the program).
    let r =
        unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (&raw const *value).cast(), len) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A raw `AF_PACKET`/`SOCK_RAW` socket bound to one interface and to the ARP EtherType.
/// Frames sent include the Ethernet header; frames received are ARP frames on that interface only.
#[derive(Debug)]
pub(crate) struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl PacketSocket {
    /// Opens the socket for the ARP EtherType (the kernel queues only ARP frames of this
    /// interface for us), without our own outgoing frames, with a read timeout.
    /// Fails with `EPERM` without `CAP_NET_RAW`.
    pub(crate) fn open(
        ifindex: u32,
        reply_to: Ipv4Addr,
        read_timeout: Duration,
    ) -> io::Result<Self> {
        let proto: u16 = ETHERTYPE_ARP;
        // Created with protocol 0 (no packet hook yet) and given the protocol at bind: a socket
        // created with a protocol is hooked at once, and re-binding it to an interface unhooks it
        // with synchronize_net() (packet_do_bind, net/packet/af_packet.c), ~10 ms for nothing.
        let fd = rustix::net::socket_with(
            AddressFamily::PACKET,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            None,
        )?;
        // Room for a burst of replies while the receiver thread is descheduled; FORCE needs
        // CAP_NET_ADMIN and ignores rmem_max, plain SO_RCVBUF is capped by it (socket(7)).
        let want = 4 << 20;
        if set_socket_recv_buffer_size_force(&fd, want).is_err() {
            let _ = set_socket_recv_buffer_size(&fd, want);
        }
        // Attached before bind, so not one unfiltered frame is queued.
        let prog = arp_reply_filter(reply_to);
        let fprog = libc::sock_fprog {
            len: prog.len() as libc::c_ushort,
            filter: prog.as_ptr().cast_mut(),
        };
        setsockopt(fd.as_fd(), libc::SOL_SOCKET, SO_ATTACH_FILTER, &fprog)?;
        // Linux >= 4.20; older kernels just hand us our requests, which the filter drops.
        let _ = setsockopt(
            fd.as_fd(),
            libc::SOL_PACKET,
            PACKET_IGNORE_OUTGOING,
            &(1 as libc::c_int),
        );
        set_socket_timeout(&fd, Timeout::Recv, Some(read_timeout))?;
        rustix::net::bind(&fd, &LinkLayerAddr(sockaddr_ll(ifindex, proto, None)))?;
        Ok(PacketSocket { fd, ifindex })
    }

    /// Sends one complete Ethernet frame to `dst` on the bound interface.
    pub(crate) fn send(&self, frame: &[u8], dst: MacAddr) -> io::Result<()> {
        let to = LinkLayerAddr(sockaddr_ll(self.ifindex, ETHERTYPE_ARP, Some(dst)));
        rustix::net::sendto(&self.fd, frame, SendFlags::empty(), &to)?;
        Ok(())
    }

    /// Receives one frame; `Ok(None)` when the read timeout expired or a signal interrupted.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match rustix::net::recv(&self.fd, buf, RecvFlags::empty()) {
            Ok((n, _)) => Ok(Some(n)),
            // SO_RCVTIMEO expiry is EAGAIN (socket(7)).
            Err(Errno::AGAIN | Errno::TIMEDOUT | Errno::INTR) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Tries to take an exclusive `flock(2)` without blocking (`LOCK_NB`): `Ok(false)` when another
/// open file description holds it. The lock belongs to the open file description, so it is
/// released when `file` is closed, also if the process dies.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    loop {
        match flock(file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(true),
            Err(Errno::WOULDBLOCK) => return Ok(false),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arp::build_request;

    /// Runs the four opcodes the filter uses, as the kernel would (sk_run_filter semantics).
    fn run(prog: &[libc::sock_filter], pkt: &[u8]) -> u32 {
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = &prog[pc];
            let k = i.k as usize;
            match i.code {
                BPF_LDH_ABS => acc = u32::from(u16::from_be_bytes([pkt[k], pkt[k + 1]])),
                BPF_LDW_ABS => {
                    acc = u32::from_be_bytes([pkt[k], pkt[k + 1], pkt[k + 2], pkt[k + 3]])
                }
                BPF_JEQ_K => {
                    pc += usize::from(if acc == i.k { i.jt } else { i.jf });
                }
                BPF_RET_K => return i.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn interface_entries_list_loopback_with_address_netmask_and_link() {
        let entries = interface_entries().expect("getifaddrs");
        let v4 = entries.iter().find_map(|e| match e {
            IfEntry::V4 {
                name,
                addr,
                netmask,
            } if name == "lo" => Some((*addr, *netmask)),
            _ => None,
        });
        assert_eq!(
            v4,
            Some((Ipv4Addr::LOCALHOST, Ipv4Addr::new(255, 0, 0, 0))),
            "{entries:?}"
        );
        let link = entries.iter().find_map(|e| match e {
            IfEntry::Link {
                name,
                index,
                hw_type,
                up,
                mac,
            } if name == "lo" => Some((*index, *hw_type, *up, *mac)),
            _ => None,
        });
        // ARPHRD_LOOPBACK (772, <linux/if_arp.h>); lo has an all-zero 6-byte address.
        let (index, hw_type, up, mac) = link.expect("lo link entry");
        assert!(index > 0);
        assert_eq!((hw_type, up, mac), (772, true, Some(MacAddr([0; 6]))));
    }

    #[test]
    fn link_layer_address_names_interface_protocol_and_destination() {
        let mac = MacAddr([0x52, 0x54, 0, 0xab, 0xcd, 0xef]);
        let sll = sockaddr_ll(7, ETHERTYPE_ARP, Some(mac));
        assert_eq!(
            (sll.sll_family, sll.sll_protocol, sll.sll_ifindex),
            (17, 0x0806u16.to_be(), 7)
        );
        assert_eq!((sll.sll_hatype, sll.sll_pkttype, sll.sll_halen), (0, 0, 6));
        assert_eq!(sll.sll_addr, [0x52, 0x54, 0, 0xab, 0xcd, 0xef, 0, 0]);
        let bind = sockaddr_ll(3, ETHERTYPE_ARP, None);
        assert_eq!((bind.sll_ifindex, bind.sll_halen), (3, 0));
        assert_eq!(bind.sll_addr, [0; 8]);
    }

    #[test]
    fn filter_keeps_replies_to_us_only() {
        let me = Ipv4Addr::new(198, 18, 5, 1);
        let prog = arp_reply_filter(me);
        let peer = MacAddr([0x52, 0x54, 0, 0, 0, 7]);
        let mut reply = build_request(peer, Ipv4Addr::new(198, 18, 5, 7), me);
        reply[21] = 2;
        assert_ne!(run(&prog, &reply), 0);
        let request = build_request(peer, Ipv4Addr::new(198, 18, 5, 7), me);
        assert_eq!(run(&prog, &request), 0);
        let mut to_other = build_request(
            peer,
            Ipv4Addr::new(198, 18, 5, 7),
            Ipv4Addr::new(198, 18, 5, 9),
        );
        to_other[21] = 2;
        assert_eq!(run(&prog, &to_other), 0);
    }
}
