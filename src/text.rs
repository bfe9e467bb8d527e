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

/// The decimal text of every octet value, padded to three bytes, and its length.
const OCTET_TEXT: [([u8; 3], u8); 256] = {
    let mut t = [([0u8; 3], 0u8); 256];
    let mut v = 0;
    while v < 256 {
        let o = v as u8;
        t[v] = if o >= 100 {
            ([b'0' + o / 100, b'0' + o / 10 % 10, b'0' + o % 10], 3)
        } else if o >= 10 {
            ([b'0' + o / 10, b'0' + o % 10, 0], 2)
        } else {
            ([b'0' + o, 0, 0], 1)
        };
        v += 1;
    }
    t
};

/// Dotted-quad text of `ip`, written into `buf`. Two addresses go into every access line:
/// a table lookup and a fixed three-byte copy per octet, not a division per digit.
pub fn ipv4_text(ip: Ipv4Addr, buf: &mut [u8; 15]) -> &[u8] {
    let mut n = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        let (digits, len) = OCTET_TEXT[usize::from(octet)];
        // At most 12 bytes precede the last octet, so the three bytes always fit; only
        // `len` of them are kept.
        buf[n..n + 3].copy_from_slice(&digits);
        n += usize::from(len);
        if i < 3 {
            buf[n] = b'.';
            n += 1;
        }
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
