//! The unsafe edge: `getifaddrs(3)`, `AF_PACKET` sockets (packet(7)) and `flock(2)`.
//! Everything above this module is safe Rust.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::mem;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::MacAddr;
use crate::arp::ETHERTYPE_ARP;

// From <linux/if_packet.h> and <asm-generic/socket.h>; defined here because the libc version the
// workspace pins (0.2.183, through `virt`) does not export all of them.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const SO_RCVBUFFORCE: libc::c_int = 33;
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
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a heap-allocated list head into `head`; we free it below with
    // freeifaddrs and never keep pointers into it past that call.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a non-null node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated C string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ifa_addr is non-null and points to at least a sockaddr header.
        let family = libc::c_int::from(unsafe { (*ifa.ifa_addr).sa_family });
        match family {
            libc::AF_INET => {
                // SAFETY: family AF_INET means the storage is a sockaddr_in; same for the
                // netmask, which getifaddrs fills for every AF_INET entry (checked for null).
                let addr = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                let netmask = if ifa.ifa_netmask.is_null() {
                    Ipv4Addr::BROADCAST
                } else {
                    let m = unsafe { &*(ifa.ifa_netmask as *const libc::sockaddr_in) };
                    Ipv4Addr::from(u32::from_be(m.sin_addr.s_addr))
                };
                out.push(IfEntry::V4 {
                    name,
                    addr: Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
                    netmask,
                });
            }
            libc::AF_PACKET => {
                // SAFETY: family AF_PACKET means the storage is a sockaddr_ll (packet(7)).
                let ll = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_ll) };
                let mac = (ll.sll_halen == 6).then(|| {
                    let mut m = [0u8; 6];
                    m.copy_from_slice(&ll.sll_addr[..6]);
                    MacAddr(m)
                });
                out.push(IfEntry::Link {
                    name,
                    index: u32::try_from(ll.sll_ifindex).unwrap_or(0),
                    hw_type: ll.sll_hatype,
                    up: ifa.ifa_flags & libc::IFF_UP as libc::c_uint != 0,
                    mac,
                });
            }
            _ => {}
        }
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn setsockopt_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a valid fd and a pointer to a live c_int with its exact size.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn sockaddr_ll(ifindex: u32, protocol: u16, dst: Option<MacAddr>) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as libc::c_ushort;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex as libc::c_int;
    if let Some(mac) = dst {
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&mac.0);
    }
    sll
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
        // SAFETY: plain socket(2) call; the returned fd is owned right away.
        let raw =
            cvt(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: `raw` is a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Room for a burst of replies while the receiver thread is descheduled; FORCE needs
        // CAP_NET_ADMIN and ignores rmem_max, plain SO_RCVBUF is capped by it (socket(7)).
        let want = 4 << 20;
        if setsockopt_int(&fd, libc::SOL_SOCKET, SO_RCVBUFFORCE, want).is_err() {
            let _ = setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, want);
        }
        // Attached before bind, so not one unfiltered frame is queued.
        let prog = arp_reply_filter(reply_to);
        let fprog = libc::sock_fprog {
            len: prog.len() as libc::c_ushort,
            filter: prog.as_ptr().cast_mut(),
        };
        // SAFETY: valid fd; fprog points at `prog`, alive for the call (the kernel copies it).
        cvt(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_ATTACH_FILTER,
                (&fprog as *const libc::sock_fprog).cast(),
                mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        })?;
        // Linux >= 4.20; older kernels just hand us our requests, which the filter drops.
        let _ = setsockopt_int(&fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1);
        let tv = libc::timeval {
            tv_sec: read_timeout.as_secs() as libc::time_t,
            tv_usec: read_timeout.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: valid fd, pointer to a live timeval with its exact size.
        cvt(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        })?;
        let sll = sockaddr_ll(ifindex, proto, None);
        // SAFETY: valid fd and a sockaddr_ll of the size we pass.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(PacketSocket { fd, ifindex })
    }

    /// Sends one complete Ethernet frame to `dst` on the bound interface.
    pub(crate) fn send(&self, frame: &[u8], dst: MacAddr) -> io::Result<()> {
        let sll = sockaddr_ll(self.ifindex, ETHERTYPE_ARP, Some(dst));
        // SAFETY: valid fd, `frame` is a live buffer of the given length, sll is sized correctly.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one frame; `Ok(None)` when the read timeout expired or a signal interrupted.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: valid fd and a writable buffer of the given length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(n as usize))
    }
}

/// Takes an exclusive `flock(2)` on the file, blocking until it is free. The lock belongs to the
/// open file description, so it is released when `file` is closed, also if the process dies.
pub(crate) fn lock_exclusive(file: &File) -> io::Result<()> {
    loop {
        // SAFETY: flock on a valid fd owned by `file`.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
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
