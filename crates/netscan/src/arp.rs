//! ARP over Ethernet frames, built and parsed by hand (RFC 826): a 14-byte Ethernet header plus
//! a 28-byte ARP body for IPv4, 42 bytes in all. Replies arrive padded to the 60-byte minimum.

use std::net::Ipv4Addr;

use crate::MacAddr;

/// Length of an ARP request for IPv4 over Ethernet, without the FCS or padding.
pub const ARP_FRAME_LEN: usize = 42;
/// EtherType of ARP (IEEE 802 numbers; `ETH_P_ARP` in `<linux/if_ether.h>`).
pub const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV4: u16 = 0x0800;
const HTYPE_ETHERNET: u16 = 1;

/// The ARP operation field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpOp {
    Request,
    Reply,
}

impl ArpOp {
    fn code(self) -> u16 {
        match self {
            ArpOp::Request => 1,
            ArpOp::Reply => 2,
        }
    }
}

/// The fields of an IPv4-over-Ethernet ARP packet that matter to a scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket {
    pub op: ArpOp,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

/// A broadcast "who has `target_ip`? tell `src_ip`" frame.
///
/// The target hardware address is zero, as Linux itself sends it (`arp_send` in
/// net/ipv4/arp.c); some stacks ignore requests whose target MAC is the broadcast address.
pub fn build_request(
    src_mac: MacAddr,
    src_ip: Ipv4Addr,
    target_ip: Ipv4Addr,
) -> [u8; ARP_FRAME_LEN] {
    let mut f = [0u8; ARP_FRAME_LEN];
    f[0..6].copy_from_slice(&MacAddr::BROADCAST.0);
    f[6..12].copy_from_slice(&src_mac.0);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
    f[16..18].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&ArpOp::Request.code().to_be_bytes());
    f[22..28].copy_from_slice(&src_mac.0);
    f[28..32].copy_from_slice(&src_ip.octets());
    // 32..38 target MAC stays zero.
    f[38..42].copy_from_slice(&target_ip.octets());
    f
}

/// Parses an Ethernet frame; `None` unless it is an IPv4-over-Ethernet ARP request or reply.
pub fn parse_frame(frame: &[u8]) -> Option<ArpPacket> {
    if frame.len() < ARP_FRAME_LEN {
        return None;
    }
    let be16 = |i: usize| u16::from_be_bytes([frame[i], frame[i + 1]]);
    if be16(12) != ETHERTYPE_ARP
        || be16(14) != HTYPE_ETHERNET
        || be16(16) != ETHERTYPE_IPV4
        || frame[18] != 6
        || frame[19] != 4
    {
        return None;
    }
    let op = match be16(20) {
        1 => ArpOp::Request,
        2 => ArpOp::Reply,
        _ => return None,
    };
    let mac = |i: usize| {
        let mut m = [0u8; 6];
        m.copy_from_slice(&frame[i..i + 6]);
        MacAddr(m)
    };
    let ip = |i: usize| Ipv4Addr::new(frame[i], frame[i + 1], frame[i + 2], frame[i + 3]);
    Some(ArpPacket {
        op,
        sender_mac: mac(22),
        sender_ip: ip(28),
        target_mac: mac(32),
        target_ip: ip(38),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x00, 0x00, 0x01]);

    #[test]
    fn request_has_the_rfc826_layout() {
        let f = build_request(
            ME,
            Ipv4Addr::new(198, 18, 5, 1),
            Ipv4Addr::new(198, 18, 5, 7),
        );
        let expected: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x00, 0x00, 0x01, 0x08,
            0x06, // eth
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, // htype ptype hlen plen op
            0x52, 0x54, 0x00, 0x00, 0x00, 0x01, 198, 18, 5, 1, // sha spa
            0, 0, 0, 0, 0, 0, 198, 18, 5, 7, // tha tpa
        ];
        assert_eq!(f, expected);
        let p = parse_frame(&f).expect("own request parses");
        assert_eq!(p.op, ArpOp::Request);
        assert_eq!(p.target_ip, Ipv4Addr::new(198, 18, 5, 7));
    }

    #[test]
    fn parses_a_padded_reply() {
        let peer = MacAddr([0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc]);
        let mut f = vec![0u8; 60];
        f[0..6].copy_from_slice(&ME.0);
        f[6..12].copy_from_slice(&peer.0);
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
        f[22..28].copy_from_slice(&peer.0);
        f[28..32].copy_from_slice(&[198, 18, 5, 7]);
        f[32..38].copy_from_slice(&ME.0);
        f[38..42].copy_from_slice(&[198, 18, 5, 1]);
        let p = parse_frame(&f).expect("reply");
        assert_eq!(
            p,
            ArpPacket {
                op: ArpOp::Reply,
                sender_mac: peer,
                sender_ip: Ipv4Addr::new(198, 18, 5, 7),
                target_mac: ME,
                target_ip: Ipv4Addr::new(198, 18, 5, 1),
            }
        );
    }

    #[test]
    fn rejects_short_non_arp_and_non_ipv4_frames() {
        let f = build_request(ME, Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(1, 2, 3, 5));
        assert!(parse_frame(&f[..41]).is_none());
        let mut ip = f;
        ip[12..14].copy_from_slice(&[0x08, 0x00]);
        assert!(parse_frame(&ip).is_none());
        let mut op3 = f;
        op3[21] = 3; // RARP request
        assert!(parse_frame(&op3).is_none());
        let mut v6 = f;
        v6[19] = 16;
        assert!(parse_frame(&v6).is_none());
    }
}
