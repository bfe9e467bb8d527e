//! Name resolution: static hosts from config, then DNS through hickory (TTL-respecting
//! cache), always under a timeout. Returns every address so the policy can judge each.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolverConfig as HickoryConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;

use crate::config::ResolverConfig;

/// DNS answers cached (hickory honours each record's TTL).
pub const DEFAULT_DNS_CACHE_SIZE: usize = 4096;

/// Why a name gave no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No answer in time.
    #[error("DNS lookup of {name} timed out after {after:?}")]
    Timeout {
        /// The name.
        name: String,
        /// The timeout.
        after: Duration,
    },
    /// The name does not exist or has no A/AAAA records.
    #[error("{name} has no address (NXDOMAIN or no A/AAAA records)")]
    NoAddresses {
        /// The name.
        name: String,
    },
    /// The resolver failed (server failure, unreachable nameserver).
    #[error("DNS lookup of {name} failed: {detail}")]
    Failed {
        /// The name.
        name: String,
        /// Resolver's message.
        detail: String,
    },
    /// The system resolver configuration could not be read at start.
    #[error(
        "cannot read the system DNS configuration ({0}); set resolver.nameservers in the config"
    )]
    SystemConfig(String),
}

/// Static hosts plus an optional DNS resolver.
pub struct Resolver {
    static_hosts: HashMap<String, Vec<IpAddr>>,
    dns: Option<TokioResolver>,
    timeout: Duration,
    /// Answers by name until hickory's `valid_until` (the records' smallest TTL). A hit in
    /// hickory's own cache still parses the name, builds an A and an AAAA query and merges
    /// two cached answers: about 26,000 instructions, more than half the rest of a
    /// forwarded request. This lookup is one hash.
    answers: Mutex<HashMap<String, Answer, foldhash::fast::RandomState>>,
}

/// A remembered DNS answer.
struct Answer {
    ips: Vec<IpAddr>,
    until: Instant,
}

// === impl Resolver ===

impl Resolver {
    /// Builds the resolver. `nameservers: []` means static hosts only.
    pub fn new(cfg: &ResolverConfig) -> Result<Resolver, ResolveError> {
        let mut opts = ResolverOpts::default();
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.cache_size = DEFAULT_DNS_CACHE_SIZE;
        opts.timeout = cfg.timeout;
        opts.attempts = 1;
        let dns = match &cfg.nameservers {
            Some(list) if list.is_empty() => None,
            Some(list) => {
                let mut hc = HickoryConfig::new();
                for addr in list {
                    hc.add_name_server(NameServerConfig::new(*addr, Protocol::Udp));
                    hc.add_name_server(NameServerConfig::new(*addr, Protocol::Tcp));
                }
                Some(
                    TokioResolver::builder_with_config(hc, TokioConnectionProvider::default())
                        .with_options(opts)
                        .build(),
                )
            }
            None => {
                let mut b = TokioResolver::builder_tokio()
                    .map_err(|e| ResolveError::SystemConfig(e.to_string()))?;
                let sys = b.options_mut();
                sys.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
                sys.cache_size = DEFAULT_DNS_CACHE_SIZE;
                sys.timeout = cfg.timeout;
                Some(b.build())
            }
        };
        Ok(Resolver {
            static_hosts: cfg.static_hosts.clone(),
            dns,
            timeout: cfg.timeout,
            answers: Mutex::new(HashMap::default()),
        })
    }

    /// Every address of `name` (already normalised: lower case, no trailing dot).
    pub async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        if let Some(ips) = self.static_hosts.get(name) {
            return Ok(ips.clone());
        }
        let Some(dns) = &self.dns else {
            return Err(ResolveError::NoAddresses {
                name: name.to_owned(),
            });
        };
        if let Some(ips) = self.remembered(name) {
            return Ok(ips);
        }
        // An absolute name: never let search domains turn `api.partner.example` into
        // `api.partner.example.corp.internal`.
        let fqdn = format!("{name}.");
        // Boxed: hickory's lookup future is over a kilobyte, and inline it would enlarge
        // every request's future, most of which are answered from memory above.
        let lookup = Box::pin(dns.lookup_ip(fqdn.as_str()));
        match tokio::time::timeout(self.timeout, lookup).await {
            Err(_) => Err(ResolveError::Timeout {
                name: name.to_owned(),
                after: self.timeout,
            }),
            Ok(Ok(lookup)) => {
                let ips: Vec<IpAddr> = lookup.iter().collect();
                if ips.is_empty() {
                    Err(ResolveError::NoAddresses {
                        name: name.to_owned(),
                    })
                } else {
                    self.remember(name, &ips, lookup.valid_until());
                    Ok(ips)
                }
            }
            Ok(Err(e)) if e.is_no_records_found() || e.is_nx_domain() => {
                Err(ResolveError::NoAddresses {
                    name: name.to_owned(),
                })
            }
            Ok(Err(e)) => {
                let detail = e.to_string();
                if detail.contains("timed out") || detail.contains("timeout") {
                    Err(ResolveError::Timeout {
                        name: name.to_owned(),
                        after: self.timeout,
                    })
                } else {
                    Err(ResolveError::Failed {
                        name: name.to_owned(),
                        detail,
                    })
                }
            }
        }
    }

    fn remembered(&self, name: &str) -> Option<Vec<IpAddr>> {
        let answers = self.answers.lock().ok()?;
        let a = answers.get(name)?;
        (Instant::now() < a.until).then(|| a.ips.clone())
    }

    fn remember(&self, name: &str, ips: &[IpAddr], until: Instant) {
        let Ok(mut answers) = self.answers.lock() else {
            return;
        };
        // Bounded like hickory's cache: drop expired answers first, then any one.
        if answers.len() >= DEFAULT_DNS_CACHE_SIZE && !answers.contains_key(name) {
            let now = Instant::now();
            answers.retain(|_, a| a.until > now);
            if answers.len() >= DEFAULT_DNS_CACHE_SIZE {
                if let Some(k) = answers.keys().next().cloned() {
                    answers.remove(&k);
                }
            }
        }
        answers.insert(
            name.to_owned(),
            Answer {
                ips: ips.to_vec(),
                until,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn static_only() -> Resolver {
        Resolver::new(&ResolverConfig {
            nameservers: Some(Vec::new()),
            static_hosts: HashMap::new(),
            timeout: Duration::from_secs(1),
        })
        .unwrap()
    }

    #[test]
    fn remembered_answers_expire_and_stay_bounded() {
        let r = static_only();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let now = Instant::now();
        r.remember("live.test", &[ip], now + Duration::from_secs(60));
        r.remember("gone.test", &[ip], now);
        assert_eq!(r.remembered("live.test"), Some(vec![ip]));
        assert_eq!(
            r.remembered("gone.test"),
            None,
            "an expired answer is not used"
        );
        for i in 0..DEFAULT_DNS_CACHE_SIZE + 50 {
            r.remember(&format!("n{i}.test"), &[ip], now + Duration::from_secs(60));
        }
        assert!(r.answers.lock().unwrap().len() <= DEFAULT_DNS_CACHE_SIZE);
        // The newest answer is always kept.
        let last = format!("n{}.test", DEFAULT_DNS_CACHE_SIZE + 49);
        assert_eq!(r.remembered(&last), Some(vec![ip]));
    }
}
