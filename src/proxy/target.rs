//! Request target parsing: absolute-form, authority-form (CONNECT) and origin-form ->
//! `Target`, with host names normalised and ambiguous spellings rejected. Pure.

use std::fmt;
use std::net::IpAddr;

use http::uri::PathAndQuery;
use http::{Method, Uri};

/// A destination host: a normalised name or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// Lower-case ASCII (punycode), no trailing dot.
    Name(String),
    /// An IP literal.
    Ip(IpAddr),
}

/// Host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// Host.
    pub host: Host,
    /// Port.
    pub port: u16,
}

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `GET http://host/path` — forward proxying.
    Forward {
        /// Destination.
        authority: Authority,
        /// Path and query to send (origin-form); shares the request's buffer.
        path_and_query: PathAndQuery,
    },
    /// `CONNECT host:port` — a tunnel.
    Connect(Authority),
    /// `GET /path` — only valid when a route matches.
    Origin,
}

/// Why a target was refused; each message says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// `user:pass@host`.
    #[error("credentials in the request target are not allowed; send them in a header instead")]
    UserInfo,
    /// CONNECT without a port.
    #[error("CONNECT needs host:port, got `{0}`")]
    MissingPort(String),
    /// `https://` in absolute form.
    #[error(
        "absolute-form https:// requests are not supported; use CONNECT (HTTPS_PROXY) or a route"
    )]
    HttpsAbsoluteForm,
    /// Any scheme but http.
    #[error("scheme `{0}` is not supported; only http:// can be forward-proxied")]
    UnsupportedScheme(String),
    /// Not a valid host name.
    #[error("`{0}` is not a valid host name")]
    BadHost(String),
    /// `2130706433`, `0x7f.1`, `127.1`, `017700000001`.
    #[error(
        "`{0}` is an ambiguous IPv4 spelling; write the address as four decimal numbers (a.b.c.d)"
    )]
    AmbiguousIpv4(String),
    /// No host at all.
    #[error("the request target has no host")]
    NoHost,
    /// A port that is not a number from 1 to 65535.
    #[error("`{0}` has an invalid port; write a number from 1 to 65535")]
    BadPort(String),
    /// `CONNECT` sent inside a tunnel.
    #[error("CONNECT inside a CONNECT tunnel is not supported; open the tunnel to the final destination")]
    ConnectInTunnel,
}

// === impl Host ===

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl Host {
    /// The host as policy rules see it (IPv6 without brackets).
    pub fn policy_name(&self) -> std::sync::Arc<str> {
        match self {
            Host::Name(n) => n.as_str().into(),
            Host::Ip(ip) => crate::text::ip_string(*ip).into(),
        }
    }
}

impl Authority {
    /// Whether `given` (a request's `Host` value) is exactly the text `host_header` would
    /// build. Then the request's own value is forwarded as it is: allocating and validating
    /// a new value were a third of a forwarded request's target handling. The comparison is
    /// against the canonical text itself, so what goes upstream is the same.
    pub fn is_host_header(&self, given: &[u8], default_port: u16) -> bool {
        let mut buf = [0u8; 15];
        let host: &[u8] = match &self.host {
            Host::Name(n) => n.as_bytes(),
            Host::Ip(IpAddr::V4(ip)) => crate::text::ipv4_text(*ip, &mut buf),
            // Rare, and its text has more than one spelling: always rebuilt.
            Host::Ip(IpAddr::V6(_)) => return false,
        };
        let Some(rest) = given.strip_prefix(host) else {
            return false;
        };
        if self.port == default_port {
            return rest.is_empty();
        }
        rest.strip_prefix(b":")
            .is_some_and(|p| p == itoa::Buffer::new().format(self.port).as_bytes())
    }

    /// The `Host` header value for this authority: the port is left out when it is
    /// `default_port`. Built without `fmt`, as it is on every forwarded request.
    pub fn host_header(&self, default_port: u16) -> String {
        let mut out = Vec::with_capacity(32);
        match &self.host {
            Host::Name(n) => out.extend_from_slice(n.as_bytes()),
            Host::Ip(ip @ IpAddr::V6(_)) => {
                out.push(b'[');
                crate::text::push_ip(&mut out, *ip);
                out.push(b']');
            }
            Host::Ip(ip) => crate::text::push_ip(&mut out, *ip),
        }
        if self.port != default_port {
            out.push(b':');
            out.extend_from_slice(itoa::Buffer::new().format(self.port).as_bytes());
        }
        // Only ASCII was written (names are IDNA-normalised); unreachable fallback.
        String::from_utf8(out).unwrap_or_else(|_| self.to_string())
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Classifies the request target. HTTP/2 requests always carry a scheme and authority
/// (RFC 9113 §8.3.1), and h2 clients reach a forward proxy through CONNECT, so a non-CONNECT
/// h2 request is treated as origin-form: it is for a route.
pub fn parse(method: &Method, uri: &Uri, version: http::Version) -> Result<Target, TargetError> {
    if method == Method::CONNECT {
        let auth = uri.authority().ok_or(TargetError::NoHost)?.as_str();
        let (host, port) = split_authority(auth)?;
        let port = port.ok_or_else(|| TargetError::MissingPort(auth.to_owned()))?;
        return Ok(Target::Connect(Authority {
            host: parse_host(host)?,
            port,
        }));
    }
    if version == http::Version::HTTP_2 {
        return Ok(Target::Origin);
    }
    match uri.scheme_str() {
        None => Ok(Target::Origin),
        Some(s) if s.eq_ignore_ascii_case("http") => {
            let auth = uri.authority().ok_or(TargetError::NoHost)?.as_str();
            let (host, port) = split_authority(auth)?;
            Ok(Target::Forward {
                authority: Authority {
                    host: parse_host(host)?,
                    port: port.unwrap_or(80),
                },
                path_and_query: uri
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/")),
            })
        }
        Some(s) if s.eq_ignore_ascii_case("https") => Err(TargetError::HttpsAbsoluteForm),
        Some(s) => Err(TargetError::UnsupportedScheme(s.to_owned())),
    }
}

/// The target of a plain HTTP request read inside a `CONNECT` tunnel to `tunnel`. Its bytes
/// were bound for the tunnel's destination, so that is where it goes, whatever host an
/// absolute-form target or `Host` names: only the path and query are the request's own.
pub fn in_tunnel(tunnel: &Authority, method: &Method, uri: &Uri) -> Result<Target, TargetError> {
    if method == Method::CONNECT {
        return Err(TargetError::ConnectInTunnel);
    }
    Ok(Target::Forward {
        authority: tunnel.clone(),
        path_and_query: uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    })
}

/// Splits an authority (`host`, `host:port`, `[v6]:port`) into its host text and port,
/// refusing user info and ports that are not 1 to 65535. One pass, where `http`'s
/// accessors took three (and read an unparsable port as none, i.e. the default).
fn split_authority(auth: &str) -> Result<(&str, Option<u16>), TargetError> {
    if auth.contains('@') {
        return Err(TargetError::UserInfo);
    }
    let (host, port) = if auth.starts_with('[') {
        let end = auth
            .find(']')
            .ok_or_else(|| TargetError::BadHost(auth.to_owned()))?;
        let (host, rest) = auth.split_at(end + 1);
        match rest.strip_prefix(':') {
            Some(port) => (host, port),
            None if rest.is_empty() => (host, ""),
            None => return Err(TargetError::BadHost(auth.to_owned())),
        }
    } else {
        auth.rsplit_once(':').unwrap_or((auth, ""))
    };
    if port.is_empty() {
        // `host:` is allowed by RFC 3986 and means the default port.
        return Ok((host, None));
    }
    let bad = || TargetError::BadPort(auth.to_owned());
    if port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok((host, Some(p))),
        _ => Err(bad()),
    }
}

/// Normalises a host: IP literals (IPv6 bracketed or not), names lower-cased, trailing dot
/// removed, IDNA to punycode. Numeric spellings other than dotted-quad are refused.
pub fn parse_host(raw: &str) -> Result<Host, TargetError> {
    let bad = || TargetError::BadHost(raw.to_owned());
    if raw.is_empty() {
        return Err(TargetError::NoHost);
    }
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(bad)?;
        // Zone ids (`%eth0`) name a local interface: never a valid remote destination.
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|ip| Host::Ip(IpAddr::V6(ip)))
            .map_err(|_| bad());
    }
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    let trimmed = raw.strip_suffix('.').unwrap_or(raw);
    if let Ok(ip) = trimmed.parse::<std::net::Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    // WHATWG URL: a host whose last label is numeric is an IPv4 address. Anything that is
    // not canonical dotted-quad is one of the spellings resolvers disagree on.
    let last = trimmed.rsplit('.').next().unwrap_or(trimmed);
    let numeric = !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit())
            || ((last.starts_with("0x") || last.starts_with("0X"))
                && last[2..].bytes().all(|b| b.is_ascii_hexdigit())));
    if numeric {
        return Err(TargetError::AmbiguousIpv4(raw.to_owned()));
    }
    let ascii = idna::domain_to_ascii(trimmed).map_err(|_| bad())?;
    if ascii.is_empty()
        || ascii.len() > 253
        || ascii.starts_with('.')
        || ascii.contains("..")
        || !ascii
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        || ascii.split('.').any(|l| l.is_empty() || l.len() > 63)
    {
        return Err(bad());
    }
    Ok(Host::Name(ascii))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(method: &str, uri: &str) -> Result<Target, TargetError> {
        parse(
            &method.parse().unwrap(),
            &uri.parse().unwrap(),
            http::Version::HTTP_11,
        )
    }

    #[test]
    fn absolute_form() {
        let got = t("GET", "http://API.Example.COM./a?b=c").unwrap();
        assert_eq!(
            got,
            Target::Forward {
                authority: Authority {
                    host: Host::Name("api.example.com".into()),
                    port: 80
                },
                path_and_query: PathAndQuery::from_static("/a?b=c")
            }
        );
        let got = t("GET", "http://[::1]:8080").unwrap();
        let Target::Forward {
            authority,
            path_and_query,
        } = got
        else {
            panic!()
        };
        assert_eq!(authority.host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(authority.port, 8080);
        assert_eq!(path_and_query, "/");
    }

    #[test]
    fn requests_inside_a_tunnel_go_to_the_tunnel_whatever_they_name() {
        let tunnel = Authority {
            host: Host::Name("api.example.in".into()),
            port: 8080,
        };
        for (uri, path) in [
            ("/v1/users?id=7", "/v1/users?id=7"),
            ("http://elsewhere.example.com/x", "/x"),
            ("http://elsewhere.example.com", "/"),
        ] {
            let got = in_tunnel(&tunnel, &Method::POST, &uri.parse().unwrap()).unwrap();
            assert_eq!(
                got,
                Target::Forward {
                    authority: tunnel.clone(),
                    path_and_query: PathAndQuery::from_static(path),
                },
                "{uri}"
            );
        }
        assert_eq!(
            in_tunnel(
                &tunnel,
                &Method::CONNECT,
                &"other.example:443".parse().unwrap()
            ),
            Err(TargetError::ConnectInTunnel)
        );
    }

    #[test]
    fn connect_form() {
        assert_eq!(
            t("CONNECT", "example.com:443").unwrap(),
            Target::Connect(Authority {
                host: Host::Name("example.com".into()),
                port: 443
            })
        );
        assert_eq!(
            t("CONNECT", "[2001:db8::1]:443").unwrap(),
            Target::Connect(Authority {
                host: Host::Ip("2001:db8::1".parse().unwrap()),
                port: 443
            })
        );
    }

    #[test]
    fn origin_form_needs_a_route() {
        assert_eq!(t("GET", "/partner/x").unwrap(), Target::Origin);
        let h2 = parse(
            &Method::GET,
            &"http://sima:3128/partner/x".parse().unwrap(),
            http::Version::HTTP_2,
        );
        assert_eq!(h2.unwrap(), Target::Origin);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            t("GET", "http://user:pw@example.com/").unwrap_err(),
            TargetError::UserInfo
        );
        assert_eq!(
            t("CONNECT", "user@example.com:443").unwrap_err(),
            TargetError::UserInfo
        );
        assert_eq!(
            t("GET", "https://example.com/").unwrap_err(),
            TargetError::HttpsAbsoluteForm
        );
        assert!(matches!(
            t("GET", "ftp://example.com/").unwrap_err(),
            TargetError::UnsupportedScheme(_)
        ));
    }

    #[test]
    fn odd_ipv4_spellings_are_refused() {
        for host in [
            "2130706433",
            "0x7f.1",
            "017700000001",
            "127.1",
            "0x7f000001",
            "127.0.0.01",
            "1.2.3.0x4",
            "0177.0.0.1",
        ] {
            assert!(
                matches!(parse_host(host), Err(TargetError::AmbiguousIpv4(_))),
                "{host} -> {:?}",
                parse_host(host)
            );
        }
        assert_eq!(
            parse_host("127.0.0.1").unwrap(),
            Host::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_host("127.0.0.1.").unwrap(),
            Host::Ip("127.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn host_header_omits_the_default_port_and_brackets_ipv6() {
        let a = |host: &str, port| Authority {
            host: parse_host(host).unwrap(),
            port,
        };
        assert_eq!(a("Example.COM", 80).host_header(80), "example.com");
        assert_eq!(a("example.com", 8080).host_header(80), "example.com:8080");
        assert_eq!(a("127.0.0.1", 18080).host_header(80), "127.0.0.1:18080");
        assert_eq!(a("10.0.0.255", 80).host_header(80), "10.0.0.255");
        assert_eq!(a("[2001:db8::1]", 443).host_header(80), "[2001:db8::1]:443");
        assert_eq!(a("[::1]", 80).host_header(80), "[::1]");
        // The same text `Display` gives, wherever the port is shown.
        let v6 = a("[2001:db8::1]", 443);
        assert_eq!(v6.host_header(80), v6.to_string());
    }

    #[test]
    fn ports_out_of_range_or_malformed_are_refused_not_defaulted() {
        for uri in [
            "http://127.0.0.2:99999/",
            "http://127.0.0.2:0/",
            "http://example.com:65536/",
        ] {
            assert!(
                matches!(t("GET", uri), Err(TargetError::BadPort(_))),
                "{uri}: {:?}",
                t("GET", uri)
            );
        }
        // An empty port is the default (RFC 3986).
        let Ok(Target::Forward { authority, .. }) = t("GET", "http://example.com:/x") else {
            panic!("not forward");
        };
        assert_eq!(authority.port, 80);
        assert_eq!(
            t("CONNECT", "example.com:"),
            Err(TargetError::MissingPort("example.com:".into()))
        );
        let Ok(Target::Connect(a)) = t("CONNECT", "[2001:db8::1]:443") else {
            panic!("not connect");
        };
        assert_eq!(a.port, 443);
        assert_eq!(
            t("CONNECT", "user@example.com:443"),
            Err(TargetError::UserInfo)
        );
    }

    #[test]
    fn a_host_header_matches_only_the_canonical_text() {
        let a = |host: &str, port| Authority {
            host: parse_host(host).unwrap(),
            port,
        };
        let v4 = a("127.0.0.1", 18080);
        assert!(v4.is_host_header(b"127.0.0.1:18080", 80));
        for other in [
            &b"127.0.0.1"[..],
            b"127.0.0.1:018080",
            b"127.0.0.01:18080",
            b"127.1:18080",
            b"127.0.0.2:18080",
            b"127.0.0.1:18081",
            b"127.0.0.1:+18080",
            b" 127.0.0.1:18080",
        ] {
            assert!(
                !v4.is_host_header(other, 80),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        let name = a("Example.COM", 80);
        assert!(name.is_host_header(b"example.com", 80));
        assert!(!name.is_host_header(b"Example.COM", 80));
        assert!(!name.is_host_header(b"example.com:80", 80));
        assert!(!name.is_host_header(b"example.com.", 80));
        // IPv6 is always rebuilt.
        assert!(!a("[::1]", 80).is_host_header(b"[::1]", 80));
    }

    proptest! {
        #[test]
        fn a_matching_host_header_is_what_host_header_builds(
            ip: u32, port in 1u16.., given in "[0-9.:]{0,24}"
        ) {
            let a = Authority { host: Host::Ip(IpAddr::V4(ip.into())), port };
            let built = a.host_header(80);
            prop_assert!(a.is_host_header(built.as_bytes(), 80));
            if a.is_host_header(given.as_bytes(), 80) {
                prop_assert_eq!(given, built);
            }
        }
    }

    #[test]
    fn idna_and_case() {
        assert_eq!(
            parse_host("Bücher.Example").unwrap(),
            Host::Name("xn--bcher-kva.example".into())
        );
        assert_eq!(
            parse_host("EXAMPLE.com.").unwrap(),
            Host::Name("example.com".into())
        );
        assert!(parse_host("exa mple.com").is_err());
        assert!(parse_host("a..b").is_err());
        assert!(parse_host("[fe80::1%25eth0]").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_host(&s);
        }

        // Whatever the spelling, a host that parses as a name never parses back as an IP.
        #[test]
        fn names_are_never_numeric(s in "[0-9a-fA-Fx.]{1,20}") {
            if let Ok(Host::Name(n)) = parse_host(&s) {
                let last = n.rsplit('.').next().unwrap_or("");
                prop_assert!(!last.bytes().all(|b| b.is_ascii_digit()));
            }
        }
    }
}
