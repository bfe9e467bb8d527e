//! Address guard: classifies destination addresses (loopback, private, metadata, …) so the
//! proxy never dials a network it must not reach. Pure; must not import socket code.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address may not be dialled (unless `geo.overrides` declares its network).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    /// 0.0.0.0/8, `::`.
    Unspecified,
    /// 127.0.0.0/8, `::1`.
    Loopback,
    /// RFC 1918 and IPv6 unique-local (fc00::/7).
    Private,
    /// 100.64.0.0/10 (RFC 6598).
    SharedCgnat,
    /// 169.254.0.0/16 (cloud metadata lives here) and fe80::/10.
    LinkLocal,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// TEST-NETs, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// 198.18.0.0/15, 2001:2::/48.
    Benchmarking,
    /// 240.0.0.0/4, 192.0.0.0/24, 100::/64, fec0::/10, ORCHID, local-use NAT64, 6to4 relay.
    Reserved,
    /// Teredo (2001::/32): the packets go to a relay and on to an address the name hides.
    Tunnel,
}

// === impl Forbidden ===

impl Forbidden {
    /// Stable label for logs, metrics and the 403 body.
    pub fn as_str(&self) -> &'static str {
        match self {
            Forbidden::Unspecified => "unspecified",
            Forbidden::Loopback => "loopback",
            Forbidden::Private => "private",
            Forbidden::SharedCgnat => "shared_cgnat",
            Forbidden::LinkLocal => "link_local",
            Forbidden::Multicast => "multicast",
            Forbidden::Broadcast => "broadcast",
            Forbidden::Documentation => "documentation",
            Forbidden::Benchmarking => "benchmarking",
            Forbidden::Reserved => "reserved",
            Forbidden::Tunnel => "tunnel",
        }
    }
}

/// The IPv4 address that packets to `ip` really reach, for IPv6 forms that embed one:
/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`)
/// and 6to4 (`2002:AABB:CCDD::/48`).
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if s[..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff {
        return Some(tail);
    }
    // IPv4-compatible (deprecated); `::` and `::1` are themselves, not 0.0.0.0/0.0.0.1.
    if s[..6] == [0; 6] && u32::from(tail) > 1 {
        return Some(tail);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// `ip` with any embedded IPv4 address unwrapped, so checks and lookups see what is dialled.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Classifies `ip`: `None` for an ordinary public address.
pub fn classify(ip: IpAddr) -> Option<Forbidden> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn in_v4(ip: u32, net: [u8; 4], len: u32) -> bool {
    let net = u32::from_be_bytes(net);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    ip & mask == net
}

/// The guarded IPv4 ranges: network, prefix length, class.
const V4_RANGES: [([u8; 4], u32, Forbidden); 17] = {
    use Forbidden::*;
    [
        ([0, 0, 0, 0], 8, Unspecified),
        ([10, 0, 0, 0], 8, Private),
        ([100, 64, 0, 0], 10, SharedCgnat),
        ([127, 0, 0, 0], 8, Loopback),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([172, 16, 0, 0], 12, Private),
        ([192, 0, 0, 0], 24, Reserved),
        ([192, 0, 2, 0], 24, Documentation),
        ([192, 88, 99, 0], 24, Reserved),
        ([192, 168, 0, 0], 16, Private),
        ([198, 18, 0, 0], 15, Benchmarking),
        ([198, 51, 100, 0], 24, Documentation),
        ([203, 0, 113, 0], 24, Documentation),
        ([224, 0, 0, 0], 4, Multicast),
        ([255, 255, 255, 255], 32, Broadcast),
        ([240, 0, 0, 0], 4, Reserved),
        ([233, 252, 0, 0], 24, Documentation),
    ]
};

/// First octets that begin some guarded IPv4 range, derived from [`V4_RANGES`]: most
/// public addresses are told apart by one load (this runs on every request).
const V4_FIRST_OCTETS: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < V4_RANGES.len() {
        let (net, len, _) = V4_RANGES[i];
        let first = net[0] as usize;
        let last = if len >= 8 {
            first
        } else {
            first | (0xff >> len)
        };
        let mut o = first;
        while o <= last {
            t[o] = true;
            o += 1;
        }
        i += 1;
    }
    t
};

fn classify_v4(ip: Ipv4Addr) -> Option<Forbidden> {
    if !V4_FIRST_OCTETS[usize::from(ip.octets()[0])] {
        return None;
    }
    scan_v4(ip)
}

/// The most specific guarded range holding `ip`, by a scan of every range. Order matters
/// only for the broadcast address inside 240/4.
fn scan_v4(ip: Ipv4Addr) -> Option<Forbidden> {
    let n = u32::from(ip);
    V4_RANGES
        .iter()
        .filter(|(net, len, _)| in_v4(n, *net, *len))
        .max_by_key(|(_, len, _)| *len)
        .map(|(_, _, class)| *class)
}

fn in_v6(ip: u128, net: u128, len: u32) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    ip & mask == net
}

fn classify_v6(ip: Ipv6Addr) -> Option<Forbidden> {
    use Forbidden::*;
    let n = u128::from(ip);
    let table: [(u128, u32, Forbidden); 14] = [
        (0, 128, Unspecified),
        (1, 128, Loopback),
        (0x0064_ff9b_0001 << 80, 48, Reserved),
        (0x0100 << 112, 64, Reserved),
        (0x2001_0000 << 96, 32, Tunnel),
        (0x2001_0002 << 96, 48, Benchmarking),
        (0x2001_0010 << 96, 28, Reserved),
        (0x2001_0020 << 96, 28, Reserved),
        (0x2001_0db8 << 96, 32, Documentation),
        (0x3fff << 112, 20, Documentation),
        (0xfc00 << 112, 7, Private),
        (0xfe80 << 112, 10, LinkLocal),
        (0xfec0 << 112, 10, Reserved),
        (0xff00 << 112, 8, Multicast),
    ];
    table
        .iter()
        .filter(|(net, len, _)| in_v6(n, *net, *len))
        .max_by_key(|(_, len, _)| *len)
        .map(|(_, _, class)| *class)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use Forbidden::*;

    fn c(s: &str) -> Option<Forbidden> {
        classify(s.parse().unwrap())
    }

    #[test]
    fn the_first_octet_filter_changes_no_answer() {
        // Every first octet, and the first and last address of every range.
        let mut ips: Vec<Ipv4Addr> = (0..=255u8).map(|o| Ipv4Addr::new(o, 0, 0, 1)).collect();
        for (net, len, _) in V4_RANGES {
            let first = u32::from_be_bytes(net);
            ips.push(first.into());
            ips.push((first | (u32::MAX >> len.min(31) >> u32::from(len == 32))).into());
        }
        for ip in ips {
            assert_eq!(classify_v4(ip), scan_v4(ip), "{ip}");
            if V4_RANGES
                .iter()
                .any(|(net, len, _)| in_v4(u32::from(ip), *net, *len))
            {
                assert!(classify_v4(ip).is_some(), "{ip}");
            }
        }
    }

    #[test]
    fn v4_ranges_and_their_boundaries() {
        let cases: &[(&str, Option<Forbidden>)] = &[
            ("0.0.0.0", Some(Unspecified)),
            ("0.255.255.255", Some(Unspecified)),
            ("1.0.0.0", None),
            ("9.255.255.255", None),
            ("10.0.0.0", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("11.0.0.0", None),
            ("100.63.255.255", None),
            ("100.64.0.0", Some(SharedCgnat)),
            ("100.127.255.255", Some(SharedCgnat)),
            ("100.128.0.0", None),
            ("126.255.255.255", None),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.255", Some(Loopback)),
            ("128.0.0.0", None),
            ("169.253.255.255", None),
            ("169.254.0.0", Some(LinkLocal)),
            ("169.254.169.254", Some(LinkLocal)),
            ("169.254.255.255", Some(LinkLocal)),
            ("169.255.0.0", None),
            ("172.15.255.255", None),
            ("172.16.0.0", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.0", None),
            ("192.0.0.0", Some(Reserved)),
            ("192.0.0.255", Some(Reserved)),
            ("192.0.1.0", None),
            ("192.0.2.0", Some(Documentation)),
            ("192.0.2.255", Some(Documentation)),
            ("192.0.3.0", None),
            ("192.88.99.1", Some(Reserved)),
            ("192.167.255.255", None),
            ("192.168.0.0", Some(Private)),
            ("192.168.255.255", Some(Private)),
            ("192.169.0.0", None),
            ("198.17.255.255", None),
            ("198.18.0.0", Some(Benchmarking)),
            ("198.19.255.255", Some(Benchmarking)),
            ("198.20.0.0", None),
            ("198.51.100.0", Some(Documentation)),
            ("198.51.100.255", Some(Documentation)),
            ("203.0.113.0", Some(Documentation)),
            ("203.0.113.255", Some(Documentation)),
            ("203.0.114.0", None),
            ("223.255.255.255", None),
            ("224.0.0.0", Some(Multicast)),
            ("239.255.255.255", Some(Multicast)),
            ("240.0.0.0", Some(Reserved)),
            ("255.255.255.254", Some(Reserved)),
            ("255.255.255.255", Some(Broadcast)),
            ("8.8.8.8", None),
            ("14.139.1.1", None),
        ];
        for (ip, want) in cases {
            assert_eq!(c(ip), *want, "{ip}");
        }
    }

    #[test]
    fn v6_ranges_and_their_boundaries() {
        let cases: &[(&str, Option<Forbidden>)] = &[
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("::2", Some(Unspecified)), // IPv4-compatible 0.0.0.2: in 0.0.0.0/8
            ("fc00::", Some(Private)),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Private)),
            ("fe00::", None),
            ("fe7f:ffff::", None),
            ("fe80::", Some(LinkLocal)),
            ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(LinkLocal)),
            ("fec0::1", Some(Reserved)),
            ("ff02::1", Some(Multicast)),
            ("2001:db8::1", Some(Documentation)),
            ("2001:db9::1", None),
            ("3fff::1", Some(Documentation)),
            ("3fff:1000::", None),
            ("2001::1", Some(Tunnel)),
            ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", Some(Tunnel)),
            ("2001:1::", None),
            ("2001:2::1", Some(Benchmarking)),
            ("100::1", Some(Reserved)),
            ("64:ff9b:1::1", Some(Reserved)),
            ("2404:6800:4009::200e", None),
        ];
        for (ip, want) in cases {
            assert_eq!(c(ip), *want, "{ip}");
        }
    }

    #[test]
    fn embedded_ipv4_forms_are_unwrapped() {
        for (ip, want) in [
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(Loopback)),
            ("::10.0.0.1", Some(Private)),
            ("64:ff9b::7f00:1", Some(Loopback)),
            ("64:ff9b::a9fe:a9fe", Some(LinkLocal)),
            ("64:ff9b::c0a8:0101", Some(Private)),
            ("64:ff9b::808:808", None),
            ("2002:7f00:0001::", Some(Loopback)),
            ("2002:a9fe:a9fe::1", Some(LinkLocal)),
            ("2002:0a00:0001::", Some(Private)),
            ("2002:6440:0001::", Some(SharedCgnat)),
            ("2002:0808:0808::", None),
        ] {
            assert_eq!(c(ip), want, "{ip}");
        }
    }

    #[test]
    fn canonical_unwraps_only_embedding_forms() {
        let ip: IpAddr = "::ffff:1.2.3.4".parse().unwrap();
        assert_eq!(canonical(ip), "1.2.3.4".parse::<IpAddr>().unwrap());
        let ip: IpAddr = "2404:6800::1".parse().unwrap();
        assert_eq!(canonical(ip), ip);
        let ip: IpAddr = "::1".parse().unwrap();
        assert_eq!(canonical(ip), ip);
    }

    proptest! {
        // Every IPv4 address is judged the same in all the IPv6 forms that embed it.
        #[test]
        fn embedding_never_changes_the_verdict(n in any::<u32>()) {
            let v4 = Ipv4Addr::from(n);
            let want = classify_v4(v4);
            prop_assume!(n > 1); // `::` and `::1` are themselves
            let mapped = v4.to_ipv6_mapped();
            let compat = v4.to_ipv6_compatible();
            let o = v4.octets();
            let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, u16::from_be_bytes([o[0], o[1]]), u16::from_be_bytes([o[2], o[3]]));
            let six2four = Ipv6Addr::new(0x2002, u16::from_be_bytes([o[0], o[1]]), u16::from_be_bytes([o[2], o[3]]), 0, 0, 0, 0, 1);
            for v6 in [mapped, compat, nat64, six2four] {
                prop_assert_eq!(classify(IpAddr::V6(v6)), want, "{}", v6);
            }
        }

        // Agrees with the standard library where it has a stable answer.
        #[test]
        fn agrees_with_std(n in any::<u32>()) {
            let v4 = Ipv4Addr::from(n);
            let got = classify_v4(v4);
            if v4.is_private() { prop_assert_eq!(got, Some(Private)); }
            if v4.is_loopback() { prop_assert_eq!(got, Some(Loopback)); }
            if v4.is_link_local() { prop_assert_eq!(got, Some(LinkLocal)); }
            if v4.is_multicast() { prop_assert_eq!(got, Some(Multicast)); }
            if v4.is_documentation() { prop_assert_eq!(got, Some(Documentation)); }
        }
    }
}
