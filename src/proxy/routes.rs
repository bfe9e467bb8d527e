//! Reverse-proxy routes: `Host` and/or path prefix -> upstream base URL. Matching and path
//! rewriting are pure; TLS configs are built once at start.

use std::sync::Arc;

use rustls::pki_types::ServerName;

use super::target::{parse_host, Host};
use super::upstream::TlsDial;
use crate::config::{ForwardedMode, RouteConfig};
use crate::tls;

/// A route ready to serve.
pub struct Route {
    /// Name from config.
    pub name: String,
    host: Option<String>,
    prefix: Option<String>,
    /// Upstream host (name or IP).
    pub upstream: Host,
    /// Upstream port.
    pub port: u16,
    base_path: String,
    /// `Host`/`:authority` to send.
    pub authority: http::HeaderValue,
    /// TLS to originate, for https upstreams.
    pub tls: Option<TlsDial>,
    /// Client-address headers.
    pub forwarded: ForwardedMode,
}

/// Building a route failed at start.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// Upstream host invalid.
    #[error("route {route}: upstream host: {detail}")]
    Host {
        /// Route name.
        route: String,
        /// Why.
        detail: String,
    },
    /// TLS setup failed (bad CA bundle).
    #[error("route {route}: {source}")]
    Tls {
        /// Route name.
        route: String,
        /// Cause.
        #[source]
        source: tls::TlsError,
    },
}

/// All routes, in match order.
pub struct Routes {
    routes: Vec<Route>,
}

// === impl Routes ===

impl Routes {
    /// Builds routes from config (reads CA bundles).
    pub fn new(configs: &[RouteConfig]) -> Result<Routes, RouteError> {
        let mut routes = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let upstream = parse_host(&c.upstream_host).map_err(|e| RouteError::Host {
                route: c.name.clone(),
                detail: e.to_string(),
            })?;
            let default_port = if c.upstream_tls { 443 } else { 80 };
            let authority = c.host_header.clone().unwrap_or_else(|| {
                if c.upstream_port == default_port {
                    upstream.to_string()
                } else {
                    format!("{upstream}:{}", c.upstream_port)
                }
            });
            let authority =
                http::HeaderValue::from_str(&authority).map_err(|_| RouteError::Host {
                    route: c.name.clone(),
                    detail: format!("`{authority}` is not a valid Host header value"),
                })?;
            let tls = if c.upstream_tls {
                let config = tls::client_config(c.ca_bundle.as_deref()).map_err(|source| {
                    RouteError::Tls {
                        route: c.name.clone(),
                        source,
                    }
                })?;
                let name = c.sni.clone().unwrap_or_else(|| c.upstream_host.clone());
                let server_name =
                    ServerName::try_from(name.clone()).map_err(|_| RouteError::Host {
                        route: c.name.clone(),
                        detail: format!("`{name}` is not a valid TLS server name"),
                    })?;
                Some(TlsDial {
                    config,
                    server_name,
                    config_id: i,
                })
            } else {
                None
            };
            routes.push(Route {
                name: c.name.clone(),
                host: c.host.clone(),
                prefix: c.prefix.clone(),
                upstream,
                port: c.upstream_port,
                base_path: c.upstream_base_path.clone(),
                authority,
                tls,
                forwarded: c.forwarded,
            });
        }
        Ok(Routes { routes })
    }

    /// Whether any route is configured.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The first route matching `host` (lower-case, no port) and `path`, with the rewritten
    /// origin-form target (`base + rest-of-path + ?query`).
    pub fn find(
        &self,
        host: Option<&str>,
        path: &str,
        query: Option<&str>,
    ) -> Option<(&Route, String)> {
        self.routes.iter().find_map(|r| {
            if let Some(h) = &r.host {
                if host != Some(h.as_str()) {
                    return None;
                }
            }
            let rest = match &r.prefix {
                Some(p) => strip_prefix(path, p)?,
                None => path,
            };
            Some((r, rewrite(&r.base_path, rest, query)))
        })
    }
}

/// `/partner` matches `/partner`, `/partner/x`, not `/partnership`; `/partner/` matches
/// `/partner/x` and `/partner`.
fn strip_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let p = prefix.trim_end_matches('/');
    let rest = path.strip_prefix(p)?;
    if rest.is_empty() || rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

fn rewrite(base: &str, rest: &str, query: Option<&str>) -> String {
    let mut out =
        String::with_capacity(base.len() + rest.len() + query.map_or(0, |q| q.len() + 1) + 1);
    out.push_str(base);
    if rest.is_empty() {
        out.push('/');
    } else {
        out.push_str(rest);
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Shared for the proxy state.
pub type SharedRoutes = Arc<Routes>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn routes(yaml: &str) -> Routes {
        let c = Config::from_yaml(yaml, "t", Path::new("/")).unwrap();
        Routes::new(&c.routes).unwrap()
    }

    #[test]
    fn prefix_and_host_matching_and_rewrite() {
        let r = routes(
            "routes:\n  - { name: a, prefix: /partner/, upstream: 'https://api.partner.example/v2' }\n  - { name: b, host: pay.internal, upstream: 'http://10.0.0.1:8080' }\n",
        );
        let (route, path) = r.find(None, "/partner/users/1", Some("x=1")).unwrap();
        assert_eq!(
            (route.name.as_str(), path.as_str()),
            ("a", "/v2/users/1?x=1")
        );
        assert_eq!(route.authority, "api.partner.example");
        let (_, path) = r.find(None, "/partner", None).unwrap();
        assert_eq!(path, "/v2/");
        assert!(r.find(None, "/partnership", None).is_none());
        let (route, path) = r.find(Some("pay.internal"), "/a", None).unwrap();
        assert_eq!((route.name.as_str(), path.as_str()), ("b", "/a"));
        assert_eq!(route.authority, "10.0.0.1:8080");
        assert!(r.find(Some("other"), "/a", None).is_none());
    }

    #[test]
    fn missing_ca_bundle_is_an_error() {
        let c = Config::from_yaml(
            "routes:\n  - { name: a, prefix: /p, upstream: 'https://x.example', ca_bundle: /nonexistent/ca.pem }\n",
            "t",
            Path::new("/"),
        )
        .unwrap();
        let err = Routes::new(&c.routes).err().unwrap().to_string();
        assert!(
            err.contains("route a") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
    }
}
