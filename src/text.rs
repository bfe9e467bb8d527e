//! Text for addresses written on every request, without `core::fmt`.
//!
//! `Display` for an `Ipv4Addr` goes through the formatter's padding machinery and cost
//! more per request than parsing the request line; these write the same bytes directly.

use std::net::{IpAddr, Ipv4Addr};

/// Appends `ip` as `Display` would (IPv6 without brackets).
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => push_ipv4(out, v4),
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            // Rare on the hot path, and its compression rules (RFC 5952) are std's job.
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends dotted-quad text.
pub fn push_ipv4(out: &mut Vec<u8>, ip: Ipv4Addr) {
    // Written into a stack buffer and appended once: a push per digit re-checks capacity.
    let mut buf = [0u8; 15];
    out.extend_from_slice(ipv4_text(ip, &mut buf));
}

/// Dotted-quad text of `ip`, written into `buf`.
pub fn ipv4_text(ip: Ipv4Addr, buf: &mut [u8; 15]) -> &[u8] {
    let mut n = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    &buf[..n]
}

/// `ip` as a `String`, as `to_string` would give it.
pub fn ip_string(ip: IpAddr) -> String {
    let mut out = Vec::with_capacity(15);
    push_ip(&mut out, ip);
    // Only ASCII was written; the fallback is unreachable but must not panic.
    String::from_utf8(out).unwrap_or_else(|_| ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ipv4_matches_display(a: u32) {
            let ip = IpAddr::V4(Ipv4Addr::from(a));
            prop_assert_eq!(ip_string(ip), ip.to_string());
        }

        #[test]
        fn ipv6_matches_display(a: u128) {
            let ip = IpAddr::V6(std::net::Ipv6Addr::from(a));
            prop_assert_eq!(ip_string(ip), ip.to_string());
        }
    }

    #[test]
    fn boundary_octets() {
        for s in ["0.0.0.0", "9.10.99.100", "255.255.255.255", "127.0.0.1"] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(ip_string(ip), s);
        }
    }
}
