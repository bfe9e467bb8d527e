//! Every metric Sima exports: names, help, labels and buckets are declared here once.
//! Metrics register on an explicit `Registry` so each test gets its own.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::policy::{Reason, Verdict, ALL_REASONS};

/// `sima_requests_total`
pub const REQUESTS_TOTAL: &str = "sima_requests_total";
/// `sima_request_duration_seconds`
pub const REQUEST_DURATION: &str = "sima_request_duration_seconds";
/// `sima_destination_requests_total`
pub const DESTINATION_REQUESTS: &str = "sima_destination_requests_total";
/// `sima_inspected_bytes_total`
pub const INSPECTED_BYTES: &str = "sima_inspected_bytes_total";
/// `sima_proxy_overhead_seconds`
pub const PROXY_OVERHEAD: &str = "sima_proxy_overhead_seconds";
/// `sima_geo_database_info`
pub const GEO_INFO: &str = "sima_geo_database_info";
/// `sima_geo_lookup_duration_seconds`
pub const GEO_LOOKUP_DURATION: &str = "sima_geo_lookup_duration_seconds";
/// `sima_dns_lookup_duration_seconds`
pub const DNS_LOOKUP_DURATION: &str = "sima_dns_lookup_duration_seconds";
/// `sima_detections_total`
pub const DETECTIONS: &str = "sima_detections_total";
/// `sima_upstream_errors_total`
pub const UPSTREAM_ERRORS: &str = "sima_upstream_errors_total";
/// `sima_active_connections`
pub const ACTIVE_CONNECTIONS: &str = "sima_active_connections";
/// `sima_active_tunnels`
pub const ACTIVE_TUNNELS: &str = "sima_active_tunnels";
/// `sima_connections_rejected_total`
pub const CONNECTIONS_REJECTED: &str = "sima_connections_rejected_total";
/// `sima_policy_reloads_total`
pub const POLICY_RELOADS: &str = "sima_policy_reloads_total";
/// `sima_policy_last_reload_success_timestamp_seconds`
pub const POLICY_LAST_RELOAD: &str = "sima_policy_last_reload_success_timestamp_seconds";
/// `sima_policy_expired_exceptions`
pub const EXPIRED_EXCEPTIONS: &str = "sima_policy_expired_exceptions";
/// `sima_audit_records_total`
pub const AUDIT_RECORDS: &str = "sima_audit_records_total";
/// `sima_audit_write_failures_total`
pub const AUDIT_FAILURES: &str = "sima_audit_write_failures_total";
/// `sima_build_info`
pub const BUILD_INFO: &str = "sima_build_info";
/// `sima_policy_info`
pub const POLICY_INFO: &str = "sima_policy_info";
/// `sima_geo_database_build_timestamp_seconds`
pub const GEO_BUILD_TIMESTAMP: &str = "sima_geo_database_build_timestamp_seconds";

/// Label values of the `mode` label: how the request arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Absolute-form plain HTTP.
    Forward,
    /// CONNECT tunnel.
    Connect,
    /// Reverse-proxy route.
    Reverse,
    /// A plain HTTP request read inside a CONNECT tunnel.
    Tunnelled,
}

impl Transport {
    /// Label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Transport::Forward => "forward",
            Transport::Connect => "connect",
            Transport::Reverse => "reverse",
            Transport::Tunnelled => "tunnel_http",
        }
    }
    const ALL: [Transport; 4] = [
        Transport::Forward,
        Transport::Connect,
        Transport::Reverse,
        Transport::Tunnelled,
    ];
    fn index(self) -> usize {
        self as usize
    }
}

const VERDICTS: [Verdict; 3] = [Verdict::Allow, Verdict::Deny, Verdict::Report];

/// Request-scale seconds: 100 µs .. 60 s.
const REQUEST_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];
/// Geo lookups are a tree walk in memory: microseconds.
const GEO_BUCKETS: &[f64] = &[
    0.000_000_5,
    0.000_001,
    0.000_002,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.0001,
    0.001,
];
/// DNS: cache hits are microseconds, misses milliseconds to the timeout.
const DNS_BUCKETS: &[f64] = &[
    0.000_01, 0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0,
];

/// Upstream error kinds (label `kind`).
pub const UPSTREAM_ERROR_KINDS: [&str; 6] =
    ["resolve", "connect", "tls", "timeout", "reset", "protocol"];

/// Cached destination series: two-letter codes A–Z, plus `unknown`, times the decisions.
const DESTINATION_SLOTS: usize = (26 * 26 + 1) * VERDICTS.len();

/// The cache slot of a destination country label, if it has one.
fn destination_slot(country: &str) -> Option<usize> {
    match country.as_bytes() {
        [a @ b'A'..=b'Z', b @ b'A'..=b'Z'] => {
            Some(usize::from(a - b'A') * 26 + usize::from(b - b'A'))
        }
        b"unknown" => Some(26 * 26),
        _ => None,
    }
}

/// How a geo lookup ended (the `result` label of the lookup histogram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeoResult {
    /// A country was found.
    Hit = 0,
    /// The database has no country for the address.
    Miss = 1,
    /// The lookup failed.
    Error = 2,
}

impl GeoResult {
    const ALL: [GeoResult; 3] = [GeoResult::Hit, GeoResult::Miss, GeoResult::Error];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            GeoResult::Hit => "hit",
            GeoResult::Miss => "miss",
            GeoResult::Error => "error",
        }
    }
}

/// The metrics, registered on one registry.
pub struct Metrics {
    registry: Registry,
    requests: Vec<IntCounter>,
    duration: Vec<Histogram>,
    destination: IntCounterVec,
    /// `destination` series by (country, decision), filled on first use: the hot path
    /// indexes by the two letters instead of hashing labels under a lock.
    destination_cache: Box<[std::sync::OnceLock<IntCounter>]>,
    detections: IntCounterVec,
    /// Time Sima added to a request: its duration minus the wait for the upstream's
    /// response head (resolve, checks, inspection, connection setup).
    pub overhead: Histogram,
    geo_info: IntGaugeVec,
    /// Body bytes fed to the inspector (label `direction`; requests only today).
    pub inspected_bytes: IntCounter,
    /// Geo lookup latency, one cached series per result (hit, miss, error).
    geo_lookup: [Histogram; 3],
    /// DNS lookup latency.
    pub dns_lookup: Histogram,
    /// Upstream errors by kind.
    pub upstream_errors: IntCounterVec,
    /// Open client connections.
    pub active_connections: IntGauge,
    /// Open tunnels.
    pub active_tunnels: IntGauge,
    /// Connections refused at the limit.
    pub connections_rejected: IntCounter,
    policy_info: IntGaugeVec,
    geo_build: IntGauge,
    /// Reloads of policy + geo database by result.
    pub reloads: IntCounterVec,
    /// Unix time of the last successful load or reload.
    pub last_reload_success: IntGauge,
    expired_exceptions: IntGauge,
    /// Audit records on disk, by action.
    pub audit_records: IntCounterVec,
    /// Audit write failures, by kind.
    pub audit_failures: IntCounterVec,
}

// === impl Metrics ===

impl Metrics {
    /// Creates and registers every metric; pre-creates each known series at zero.
    pub fn new(git_sha: &str) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(None, None)?;
        let requests_vec = IntCounterVec::new(
            Opts::new(
                REQUESTS_TOTAL,
                "Requests handled, by decision, reason and transport.",
            ),
            &["decision", "reason", "mode"],
        )?;
        let duration_vec = HistogramVec::new(
            HistogramOpts::new(
                REQUEST_DURATION,
                "Time from request head to response head, by decision.",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["decision"],
        )?;
        let destination = IntCounterVec::new(
            Opts::new(
                DESTINATION_REQUESTS,
                "Requests by destination country (ISO code or unknown) and decision.",
            ),
            &["country", "decision"],
        )?;
        let overhead = Histogram::with_opts(
            HistogramOpts::new(PROXY_OVERHEAD, "Latency Sima adds to a request: total time minus the wait for the upstream response head.")
                .buckets(REQUEST_BUCKETS.to_vec()),
        )?;
        let geo_info = IntGaugeVec::new(
            Opts::new(
                GEO_INFO,
                "The loaded geo database; 1 for its type and origin.",
            ),
            &["type", "origin"],
        )?;
        let inspected_vec = IntCounterVec::new(
            Opts::new(
                INSPECTED_BYTES,
                "Body bytes read by the inspector, by direction.",
            ),
            &["direction"],
        )?;
        registry.register(Box::new(inspected_vec.clone()))?;
        let inspected_bytes = inspected_vec.with_label_values(&["request"]);
        registry.register(Box::new(overhead.clone()))?;
        registry.register(Box::new(geo_info.clone()))?;
        let detections = IntCounterVec::new(
            Opts::new(
                DETECTIONS,
                "Requests in which a data class was found, by class and decision.",
            ),
            &["data_class", "decision"],
        )?;
        let geo_lookup = HistogramVec::new(
            HistogramOpts::new(
                GEO_LOOKUP_DURATION,
                "Geolocation time of addresses outside the guarded ranges, by result.",
            )
            .buckets(GEO_BUCKETS.to_vec()),
            &["result"],
        )?;
        let dns_lookup = Histogram::with_opts(
            HistogramOpts::new(
                DNS_LOOKUP_DURATION,
                "DNS resolution time (static hosts included).",
            )
            .buckets(DNS_BUCKETS.to_vec()),
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                UPSTREAM_ERRORS,
                "Failures reaching or talking to upstreams, by kind.",
            ),
            &["kind"],
        )?;
        let active_connections = IntGauge::new(ACTIVE_CONNECTIONS, "Open client connections.")?;
        let active_tunnels = IntGauge::new(ACTIVE_TUNNELS, "Open CONNECT tunnels and WebSockets.")?;
        let connections_rejected = IntCounter::new(
            CONNECTIONS_REJECTED,
            "Client connections refused because limits.max_connections was reached.",
        )?;
        let build = IntGaugeVec::new(
            Opts::new(BUILD_INFO, "Build information; always 1."),
            &["version", "git_sha"],
        )?;
        let policy_info = IntGaugeVec::new(
            Opts::new(
                POLICY_INFO,
                "The active policy; 1 for the loaded name and hash.",
            ),
            &["name", "hash"],
        )?;
        let geo_build = IntGauge::new(
            GEO_BUILD_TIMESTAMP,
            "Build time of the loaded geo database, Unix seconds.",
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                POLICY_RELOADS,
                "Reloads of policies and geo database, by result (success/failure).",
            ),
            &["result"],
        )?;
        let last_reload_success = IntGauge::new(
            POLICY_LAST_RELOAD,
            "Unix time of the last successful policy load or reload.",
        )?;
        let audit_records = IntCounterVec::new(
            Opts::new(
                AUDIT_RECORDS,
                "Audit records written and fsynced, by action (block/report/allow).",
            ),
            &["action"],
        )?;
        let audit_failures = IntCounterVec::new(
            Opts::new(AUDIT_FAILURES, "Audit records that could not be written, by kind (io/disk_full/queue_full/serialize)."),
            &["kind"],
        )?;
        registry.register(Box::new(audit_records.clone()))?;
        registry.register(Box::new(audit_failures.clone()))?;
        for a in ["block", "report", "allow"] {
            audit_records.with_label_values(&[a]);
        }
        for k in ["io", "disk_full", "queue_full", "serialize"] {
            audit_failures.with_label_values(&[k]);
        }
        let expired_exceptions = IntGauge::new(
            EXPIRED_EXCEPTIONS,
            "Exception rules in the loaded policy whose expiry date has passed (they no longer apply).",
        )?;

        registry.register(Box::new(requests_vec.clone()))?;
        registry.register(Box::new(duration_vec.clone()))?;
        registry.register(Box::new(destination.clone()))?;
        registry.register(Box::new(detections.clone()))?;
        registry.register(Box::new(geo_lookup.clone()))?;
        registry.register(Box::new(dns_lookup.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(active_connections.clone()))?;
        registry.register(Box::new(active_tunnels.clone()))?;
        registry.register(Box::new(connections_rejected.clone()))?;
        registry.register(Box::new(build.clone()))?;
        registry.register(Box::new(policy_info.clone()))?;
        registry.register(Box::new(geo_build.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(last_reload_success.clone()))?;
        registry.register(Box::new(expired_exceptions.clone()))?;
        for r in ["success", "failure"] {
            reloads.with_label_values(&[r]);
        }
        last_reload_success.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0)),
        );
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        build.with_label_values(&[crate::VERSION, git_sha]).set(1);
        // Handles cached per series: the hot path indexes an array instead of hashing labels.
        let mut requests =
            Vec::with_capacity(VERDICTS.len() * ALL_REASONS.len() * Transport::ALL.len());
        for v in VERDICTS {
            for r in ALL_REASONS {
                for t in Transport::ALL {
                    requests.push(requests_vec.with_label_values(&[
                        v.as_str(),
                        r.as_str(),
                        t.as_str(),
                    ]));
                }
            }
        }
        let duration = VERDICTS
            .iter()
            .map(|v| duration_vec.with_label_values(&[v.as_str()]))
            .collect();
        for k in UPSTREAM_ERROR_KINDS {
            upstream_errors.with_label_values(&[k]);
        }
        let geo_lookup = GeoResult::ALL.map(|r| geo_lookup.with_label_values(&[r.as_str()]));
        Ok(Metrics {
            registry,
            requests,
            duration,
            destination,
            destination_cache: (0..DESTINATION_SLOTS)
                .map(|_| std::sync::OnceLock::new())
                .collect(),
            detections,
            overhead,
            geo_info,
            inspected_bytes,
            geo_lookup,
            dns_lookup,
            upstream_errors,
            active_connections,
            active_tunnels,
            connections_rejected,
            policy_info,
            geo_build,
            reloads,
            last_reload_success,
            expired_exceptions,
            audit_records,
            audit_failures,
        })
    }

    /// Counts one finished request.
    pub fn request(
        &self,
        verdict: Verdict,
        reason: Reason,
        mode: Transport,
        seconds: f64,
        country: Option<&str>,
    ) {
        let vi = VERDICTS.iter().position(|v| *v == verdict).unwrap_or(0);
        let ri = ALL_REASONS.iter().position(|r| *r == reason).unwrap_or(0);
        let idx = (vi * ALL_REASONS.len() + ri) * Transport::ALL.len() + mode.index();
        if let Some(c) = self.requests.get(idx) {
            c.inc();
        }
        if let Some(h) = self.duration.get(vi) {
            h.observe(seconds);
        }
        if let Some(country) = country {
            let slot = destination_slot(country).map(|c| c * VERDICTS.len() + vi);
            match slot.and_then(|i| self.destination_cache.get(i)) {
                Some(cell) => cell
                    .get_or_init(|| {
                        self.destination
                            .with_label_values(&[country, verdict.as_str()])
                    })
                    .inc(),
                None => self
                    .destination
                    .with_label_values(&[country, verdict.as_str()])
                    .inc(),
            }
        }
    }

    /// Times one geo lookup.
    pub fn geo_lookup(&self, result: GeoResult, seconds: f64) {
        self.geo_lookup[result as usize].observe(seconds);
    }

    /// Pre-creates the detection series of these classes at zero.
    pub fn precreate_classes(&self, classes: &[&str]) {
        for c in classes {
            for v in VERDICTS {
                self.detections.with_label_values(&[c, v.as_str()]);
            }
        }
    }

    /// Counts one request carrying `class`. Class names come from the detector's table
    /// (built-ins plus configured classes), so the label set stays bounded.
    pub fn detection(&self, class: &str, verdict: Verdict) {
        self.detections
            .with_label_values(&[class, verdict.as_str()])
            .inc();
    }

    /// Publishes what a loaded configuration holds: policy info, geo build time, detection
    /// series.
    pub fn set_loaded(
        &self,
        policy: &crate::policy::Policy,
        geo: &crate::geo::Locator,
        inspector: &crate::inspect::Inspector,
    ) {
        self.set_policy(&policy.name, &policy.hash);
        self.set_geo_build(geo.info().build_epoch);
        self.geo_info.reset();
        let origin = if geo.info().origin == "embedded" {
            "embedded"
        } else {
            "file"
        };
        self.geo_info
            .with_label_values(&[&geo.info().database_type, origin])
            .set(1);
        let classes: Vec<&str> = inspector.detector().classes().map(|(_, n)| n).collect();
        self.precreate_classes(&classes);
        self.expired_exceptions
            .set(i64::try_from(policy.expired.len()).unwrap_or(i64::MAX));
    }

    /// Sets the active policy info series (and drops the previous one).
    pub fn set_policy(&self, name: &str, hash: &str) {
        self.policy_info.reset();
        self.policy_info.with_label_values(&[name, hash]).set(1);
    }

    /// Sets the geo database build time.
    pub fn set_geo_build(&self, epoch: u64) {
        self.geo_build.set(i64::try_from(epoch).unwrap_or(i64::MAX));
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_exist_from_the_start_and_count() {
        let m = Metrics::new("test").unwrap();
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains(
                r#"sima_requests_total{decision="deny",mode="forward",reason="personal_data"} 0"#
            ),
            "{text}"
        );
        m.request(
            Verdict::Deny,
            Reason::PersonalData,
            Transport::Forward,
            0.01,
            Some("US"),
        );
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains(
            r#"sima_requests_total{decision="deny",mode="forward",reason="personal_data"} 1"#
        ));
        assert!(text.contains(r#"sima_destination_requests_total{country="US",decision="deny"} 1"#));
        assert!(text.contains(r#"sima_build_info{git_sha="test","#));
    }

    #[test]
    fn destination_counts_add_up_through_the_cache_and_without_it() {
        let m = Metrics::new("test").unwrap();
        for country in ["IN", "IN", "unknown", "ZZ", "A1", "IN"] {
            m.request(
                Verdict::Allow,
                Reason::Allowed,
                Transport::Forward,
                0.01,
                Some(country),
            );
        }
        m.request(
            Verdict::Deny,
            Reason::DestinationRule,
            Transport::Forward,
            0.01,
            Some("IN"),
        );
        let text = String::from_utf8(m.render()).unwrap();
        for want in [
            r#"sima_destination_requests_total{country="IN",decision="allow"} 3"#,
            r#"sima_destination_requests_total{country="IN",decision="deny"} 1"#,
            r#"sima_destination_requests_total{country="unknown",decision="allow"} 1"#,
            r#"sima_destination_requests_total{country="ZZ",decision="allow"} 1"#,
            r#"sima_destination_requests_total{country="A1",decision="allow"} 1"#,
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }
}
