//! HTTP forwarding helpers: hop-by-hop header removal (RFC 9110 §7.6.1, including every
//! token named in `Connection`), `Via`, and client-address headers.

use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue, CONNECTION, TE, TRANSFER_ENCODING, UPGRADE, VIA};
use http::HeaderMap;

use crate::config::ForwardedMode;

/// The pseudonym Sima uses in `Via` (RFC 9110 §7.6.3).
pub const VIA_VALUE: &str = "1.1 sima";

/// The fixed hop-by-hop set (RFC 9110 §7.6.1, plus the de-facto `Keep-Alive`,
/// `Proxy-Connection` and the proxy-auth pair, which concern only this hop). `Trailer` is
/// end to end: it declares the trailer fields, which hyper sends an HTTP/1 upstream only
/// when declared (and which are inspected like headers).
const HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    TE,
    TRANSFER_ENCODING,
    UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("proxy-authenticate"),
    HeaderName::from_static("proxy-authorization"),
];

/// The request's `Transfer-Encoding`, when it names a coding other than `chunked`
/// (`gzip, chunked`). hyper reads such a body by its final `chunked` and hands on the bytes
/// still gzip-coded, and the header goes as hop-by-hop: the body would be forwarded
/// compressed, unlabelled and uninspected. RFC 9112 §6.1: such a request gets 501.
pub fn unsupported_transfer_coding(headers: &HeaderMap) -> Option<String> {
    let mut all = headers.get_all(TRANSFER_ENCODING).iter().peekable();
    all.peek()?;
    let mut chunked = 0;
    let mut other = false;
    let mut text = Vec::new();
    for v in all {
        let v = String::from_utf8_lossy(v.as_bytes());
        for coding in v.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if coding.eq_ignore_ascii_case("chunked") {
                chunked += 1;
            } else {
                other = true;
            }
        }
        text.push(v.into_owned());
    }
    (other || chunked != 1).then(|| text.join(", "))
}

/// Removes hop-by-hop headers: the fixed set plus every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present; a removal (a hashed lookup) only for those found.
    // Most requests carry none of them, most responses only `Connection`.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 && !names_only_the_connection(headers) {
        // Tokens naming the fixed set (`keep-alive`, nearly every response's only one) are
        // removed below: matched as text, they cost no `HeaderName` (an allocation).
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| {
                !HOP_BY_HOP
                    .iter()
                    .any(|h| t.eq_ignore_ascii_case(h.as_str()))
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Whether `Connection` is the single value `keep-alive`, as on nearly every keep-alive
/// response: it names only a header of the fixed set, so it needs no token parsing
/// (splitting, trimming and matching were most of a response's hop-by-hop cost).
fn names_only_the_connection(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(CONNECTION).iter();
    matches!(
        (values.next(), values.next()),
        (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"keep-alive")
    )
}

/// The `Upgrade` value of a WebSocket handshake (RFC 6455 §4.1: a GET whose `Upgrade`
/// names `websocket` and whose `Connection` names `upgrade`), to be put back once the
/// hop-by-hop headers are stripped. `None` for anything else, whose `Upgrade` goes as
/// hop-by-hop.
pub fn websocket_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let names = |name, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    (names(UPGRADE, "websocket") && names(CONNECTION, "upgrade"))
        .then(|| HeaderValue::from_static("websocket"))
}

/// Puts a WebSocket handshake's `Upgrade` and `Connection: upgrade` back after
/// [`strip_hop_by_hop`], for the next hop.
pub fn keep_upgrade(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(UPGRADE, upgrade);
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Appends Sima to `Via`.
pub fn add_via(headers: &mut HeaderMap) {
    headers.append(VIA, HeaderValue::from_static(VIA_VALUE));
}

/// Adds `X-Forwarded-For` and/or `Forwarded` for `client`, as configured.
pub fn add_forwarded(headers: &mut HeaderMap, mode: ForwardedMode, client: IpAddr) {
    let xff = matches!(mode, ForwardedMode::XForwardedFor | ForwardedMode::Both);
    let fwd = matches!(mode, ForwardedMode::Forwarded | ForwardedMode::Both);
    if xff {
        let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {client}"),
            None => client.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert("x-forwarded-for", v);
        }
    }
    if fwd {
        let node = match client {
            IpAddr::V4(ip) => format!("for={ip}"),
            IpAddr::V6(ip) => format!("for=\"[{ip}]\""),
        };
        if let Ok(v) = HeaderValue::from_str(&node) {
            headers.append(http::header::FORWARDED, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_websocket_handshake_keeps_its_upgrade() {
        let ws = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            websocket_upgrade(&h).is_some()
        };
        assert!(ws(&[("upgrade", "websocket"), ("connection", "Upgrade")]));
        assert!(ws(&[
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, upgrade")
        ]));
        assert!(ws(&[
            ("upgrade", "websocket"),
            ("connection", "keep-alive"),
            ("connection", "Upgrade")
        ]));
        assert!(!ws(&[("upgrade", "websocket")]), "Connection must name it");
        assert!(!ws(&[("upgrade", "h2c"), ("connection", "Upgrade")]));
        assert!(!ws(&[("upgrade", "websocketx"), ("connection", "upgrade")]));
        assert!(!ws(&[("connection", "upgrade")]));

        let mut h = HeaderMap::new();
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(CONNECTION, HeaderValue::from_static("upgrade, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("hop"));
        let upgrade = websocket_upgrade(&h).unwrap();
        strip_hop_by_hop(&mut h);
        keep_upgrade(&mut h, upgrade);
        assert_eq!(h.get(UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(CONNECTION).unwrap(), "upgrade");
        assert!(
            h.get("x-secret").is_none(),
            "other tokens in Connection still go"
        );
    }

    #[test]
    fn transfer_codings_other_than_chunked_are_named() {
        let te = |vals: &[&str]| {
            let mut h = HeaderMap::new();
            for v in vals {
                h.append(TRANSFER_ENCODING, v.parse().unwrap());
            }
            unsupported_transfer_coding(&h)
        };
        assert_eq!(te(&[]), None);
        assert_eq!(te(&["chunked"]), None);
        assert_eq!(te(&["Chunked"]), None);
        assert_eq!(te(&["gzip, chunked"]).as_deref(), Some("gzip, chunked"));
        assert_eq!(te(&["gzip", "chunked"]).as_deref(), Some("gzip, chunked"));
        assert_eq!(
            te(&["chunked, chunked"]).as_deref(),
            Some("chunked, chunked")
        );
        assert_eq!(te(&["identity"]).as_deref(), Some("identity"));
    }
    #[test]
    fn strips_fixed_set_and_connection_tokens() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            "keep-alive, X-Secret-Hop, close".parse().unwrap(),
        );
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("proxy-authorization", "Basic eA==".parse().unwrap());
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("x-end-to-end", "kept".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-end-to-end"], "kept");
    }

    #[test]
    fn a_lone_keep_alive_is_removed_and_a_second_connection_value_still_parsed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Keep-Alive".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("content-length", "3".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        let mut h = HeaderMap::new();
        h.append("connection", "keep-alive".parse().unwrap());
        h.append("connection", "x-hop".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("content-length", "3".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["content-length"], "3");
    }

    #[test]
    fn end_to_end_headers_are_untouched() {
        let mut h = HeaderMap::new();
        h.insert("host", "example.in".parse().unwrap());
        h.append("x-multi", "a".parse().unwrap());
        h.append("x-multi", "b".parse().unwrap());
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
        // `Connection` naming only fixed-set headers removes exactly those.
        h.insert("connection", "Keep-Alive".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn forwarded_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        add_forwarded(&mut h, ForwardedMode::Both, "::1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, ::1");
        assert_eq!(h["forwarded"], "for=\"[::1]\"");
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, ForwardedMode::None, "10.0.0.1".parse().unwrap());
        assert!(h.is_empty());
    }
}
