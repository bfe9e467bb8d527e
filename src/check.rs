//! `sima check`: evaluates one request the way the proxy would, without sending it, and
//! explains each step (addresses, countries, findings, the rule that decided).

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use serde::Serialize;

use crate::geo::Locator;
use crate::guard;
use crate::inspect::{Inspector, Report};
use crate::policy::{self, DataView, Facts, Outcome, Policy, Verdict};
use crate::proxy::target::{self, Host, Target};
use crate::resolve::Resolver;

/// The request to evaluate.
pub struct CheckRequest {
    /// Method.
    pub method: http::Method,
    /// Absolute URL (`http://host/path`) or `host:port` for a CONNECT.
    pub url: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Addresses to use instead of resolving the host (`--resolve host:ip`).
    pub resolve: Vec<IpAddr>,
    /// Client address (for client groups).
    pub client: IpAddr,
    /// Proxy-auth user and password.
    pub creds: Option<(String, String)>,
    /// Take this as every address's country instead of the guard and geolocation
    /// (`sima policy test`, where the test states the destination's country).
    pub assume_country: Option<Option<crate::geo::Country>>,
}

/// One address and what the policy made of it.
#[derive(Debug, Serialize)]
pub struct AddressStep {
    /// The address.
    pub address: String,
    /// Country or `unknown`.
    pub country: String,
    /// `override` or `database`, or the guard's range.
    pub source: String,
    /// allow / deny / report / needs-inspection / forbidden.
    pub outcome: String,
    /// Deciding rule, if any.
    pub rule: Option<String>,
}

/// One finding (class and place, never the value).
#[derive(Debug, Serialize)]
pub struct FindingStep {
    /// Data class.
    pub class: String,
    /// Confidence.
    pub confidence: String,
    /// url / header / body.
    pub location: String,
    /// Offset in that location's decoded text.
    pub offset: u64,
    /// Length.
    pub length: u32,
}

/// The whole explanation.
#[derive(Debug, Serialize)]
pub struct Explanation {
    /// Policy name and hash.
    pub policy: String,
    /// Client groups and user.
    pub client: String,
    /// Destination host.
    pub host: String,
    /// Per address.
    pub addresses: Vec<AddressStep>,
    /// The address the proxy would dial.
    pub chosen: Option<String>,
    /// Findings.
    pub findings: Vec<FindingStep>,
    /// Whether the body could be inspected.
    pub inspectable: bool,
    /// Final verdict.
    pub verdict: String,
    /// Reason label.
    pub reason: String,
    /// Deciding rule.
    pub rule: String,
    /// Rules tried for the chosen address, with why each did or did not match.
    pub rules_tried: Vec<(String, String)>,
    /// Human message.
    pub message: String,
    /// Citation.
    pub citation: Option<String>,
}

/// Why a check could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// URL unusable.
    #[error("{0}")]
    Target(String),
    /// Proxy credentials rejected.
    #[error(transparent)]
    Auth(#[from] crate::policy::AuthError),
    /// DNS failed.
    #[error(transparent)]
    Resolve(#[from] crate::resolve::ResolveError),
}

/// Evaluates `req` against the policy, geo data and detectors.
pub async fn explain(
    policy: &Policy,
    geo: &Locator,
    inspector: &Arc<Inspector>,
    resolver: &Resolver,
    req: &CheckRequest,
) -> Result<Explanation, CheckError> {
    let (host, path, query, tunnel) = if req.method == http::Method::CONNECT {
        let uri: http::Uri = req
            .url
            .parse()
            .map_err(|e| CheckError::Target(format!("{e}")))?;
        match target::parse(&req.method, &uri, http::Version::HTTP_11) {
            Ok(Target::Connect(a)) => (a.host, "/".to_owned(), None, true),
            Ok(_) => return Err(CheckError::Target("CONNECT needs host:port".into())),
            Err(e) => return Err(CheckError::Target(e.to_string())),
        }
    } else {
        let uri: http::Uri = req
            .url
            .parse()
            .map_err(|e| CheckError::Target(format!("`{}`: {e}", req.url)))?;
        match target::parse(&req.method, &uri, http::Version::HTTP_11) {
            Ok(Target::Forward { authority, .. }) => (
                authority.host,
                uri.path().to_owned(),
                uri.query().map(str::to_owned),
                false,
            ),
            Ok(_) => return Err(CheckError::Target("give an absolute http:// URL".into())),
            Err(e) => return Err(CheckError::Target(e.to_string())),
        }
    };
    let host_name = host.policy_name();
    let identity = policy.identify(
        req.client,
        req.creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
    )?;
    let ips = if !req.resolve.is_empty() {
        req.resolve.clone()
    } else {
        match &host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(n) => resolver.resolve(n).await?,
        }
    };
    let method = req.method.as_str();
    let mut report = Report::default();
    inspector.inspect_head(&path, query.as_deref(), &req.headers, &mut report);
    let mut inspectable = true;
    if !tunnel && !req.body.is_empty() {
        match inspector.body(&req.headers) {
            Ok(mut scan) => {
                if scan
                    .feed(&req.body, &mut report)
                    .and_then(|()| scan.finish(&mut report))
                    .is_err()
                {
                    inspectable = false;
                }
            }
            Err(_) => inspectable = false,
        }
    }
    let data = if tunnel {
        DataView::Tunnel
    } else if inspectable {
        DataView::Seen(report.seen())
    } else {
        DataView::Uninspectable
    };
    let mut addresses = Vec::new();
    let mut best: Option<(u8, IpAddr, policy::Decision)> = None;
    let mut traces: Vec<(IpAddr, Vec<(String, String)>)> = Vec::new();
    for ip in ips {
        let (country, source) = match req.assume_country {
            // The test states the country: no guard, no geolocation.
            Some(assumed) => (assumed, "assumed".to_owned()),
            None => {
                if let Some(class) = guard::classify(ip) {
                    if geo.override_for(ip).is_none() {
                        addresses.push(AddressStep {
                            address: ip.to_string(),
                            country: "-".into(),
                            source: format!("guard: {}", class.as_str()),
                            outcome: "forbidden".into(),
                            rule: None,
                        });
                        continue;
                    }
                }
                match policy.declared_country(&host_name) {
                    Some(c) => (Some(c), "declared".to_owned()),
                    None => match geo.locate(ip) {
                        Ok(l) => (l.country, l.source.as_str().to_owned()),
                        Err(e) => (None, format!("error: {e}")),
                    },
                }
            }
        };
        let facts = Facts {
            host: &host_name,
            addr: ip,
            country,
            method,
            path: &path,
            client_groups: &identity.groups,
            data,
        };
        let trace = policy::trace(policy, &facts)
            .into_iter()
            .map(|(r, w)| (r, w.to_owned()))
            .collect();
        traces.push((ip, trace));
        let d = match policy::decide(policy, &facts) {
            Outcome::Decided(d) => d,
            Outcome::NeedsInspection => continue,
        };
        let rank = match d.verdict {
            Verdict::Allow => 0,
            Verdict::Report => 1,
            Verdict::Deny => 2,
        };
        addresses.push(AddressStep {
            address: ip.to_string(),
            country: country.map_or("unknown".into(), |c| c.to_string()),
            source,
            outcome: d.verdict.as_str().into(),
            rule: Some(d.rule.to_string()),
        });
        if best.as_ref().is_none_or(|(r, _, _)| rank < *r) {
            best = Some((rank, ip, d));
        }
    }
    let det = inspector.detector();
    let findings = report
        .items()
        .iter()
        .map(|i| FindingStep {
            class: det.class_name(i.class).to_owned(),
            confidence: i.confidence.as_str().to_owned(),
            location: i.location.as_str().to_owned(),
            offset: i.offset,
            length: i.len,
        })
        .collect();
    let rules_tried = best
        .as_ref()
        .and_then(|(_, ip, _)| traces.iter().find(|(t, _)| t == ip))
        .map(|(_, t)| t.clone())
        .unwrap_or_default();
    let (chosen, verdict, reason, rule, message, citation) = match best {
        Some((_, ip, d)) => (
            Some(ip.to_string()),
            d.verdict.as_str().to_owned(),
            d.reason.as_str().to_owned(),
            d.rule.to_string(),
            d.message.to_string(),
            d.citation.map(|c| c.to_string()),
        ),
        None => (
            None,
            "deny".into(),
            "forbidden_address".into(),
            "-".into(),
            format!("{host_name} has no address Sima may dial"),
            None,
        ),
    };
    let client = match (&identity.user, identity.groups.is_empty()) {
        (Some(u), _) => format!(
            "{} user {u} groups [{}]",
            req.client,
            identity.groups.join(", ")
        ),
        (None, false) => format!("{} groups [{}]", req.client, identity.groups.join(", ")),
        (None, true) => format!("{} (no group)", req.client),
    };
    Ok(Explanation {
        client,
        policy: format!("{} ({})", policy.name, policy.hash),
        host: host_name.to_string(),
        addresses,
        chosen,
        findings,
        inspectable,
        verdict,
        reason,
        rule,
        rules_tried,
        message,
        citation,
    })
}

impl Explanation {
    /// Human-readable, step by step.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "policy       {}", self.policy);
        let _ = writeln!(s, "client       {}", self.client);
        let _ = writeln!(s, "destination  {}", self.host);
        for a in &self.addresses {
            let _ = writeln!(
                s,
                "  address    {:<40} {:<8} {:<18} {}{}",
                a.address,
                a.country,
                a.source,
                a.outcome,
                a.rule
                    .as_deref()
                    .map(|r| format!(" (rule {r})"))
                    .unwrap_or_default()
            );
        }
        if let Some(c) = &self.chosen {
            let _ = writeln!(s, "dial         {c}");
        }
        if self.findings.is_empty() {
            let _ = writeln!(s, "findings     none");
        }
        for f in &self.findings {
            let _ = writeln!(
                s,
                "  finding    {:<16} {:<6} in {:<6} at {} (+{})",
                f.class, f.confidence, f.location, f.offset, f.length
            );
        }
        if !self.inspectable {
            let _ = writeln!(s, "body         could not be inspected");
        }
        for (r, why) in &self.rules_tried {
            let _ = writeln!(s, "  rule       {r:<32} {why}");
        }
        let _ = writeln!(
            s,
            "verdict      {} ({}) by rule {}",
            self.verdict, self.reason, self.rule
        );
        let _ = writeln!(s, "message      {}", self.message);
        if let Some(c) = &self.citation {
            let _ = writeln!(s, "citation     {c}");
        }
        s
    }
}

/// One `tests:` entry's result.
#[derive(Debug, Clone, Serialize)]
pub struct TestOutcome {
    /// File.
    pub file: String,
    /// Test name.
    pub name: String,
    /// Passed?
    pub passed: bool,
    /// Expected `verdict (rule)`.
    pub expected: String,
    /// Got `verdict (rule)`, or the error.
    pub got: String,
}

/// Runs the `tests:` of each file against that file's policy (a pack's tests are about the
/// pack). A file that does not compile fails all its tests with the reason.
pub async fn run_policy_tests(
    sources: &[crate::policy::PolicySource],
    today: &str,
) -> Vec<TestOutcome> {
    let mut out = Vec::new();
    let resolver = match Resolver::new(&crate::config::ResolverConfig {
        nameservers: Some(Vec::new()),
        static_hosts: Default::default(),
        timeout: std::time::Duration::from_secs(1),
    }) {
        Ok(r) => r,
        Err(_) => return out,
    };
    for src in sources {
        let raw = match crate::policy::compile::parse(src) {
            Ok(r) => r,
            Err(e) => {
                out.push(TestOutcome {
                    file: src.origin.clone(),
                    name: "(parse)".into(),
                    passed: false,
                    expected: "a valid policy".into(),
                    got: e.to_string(),
                });
                continue;
            }
        };
        let (policy, detector) = match crate::policy::load(std::slice::from_ref(src), today) {
            Ok(x) => x,
            Err(e) => {
                out.push(TestOutcome {
                    file: src.origin.clone(),
                    name: "(compile)".into(),
                    passed: false,
                    expected: "a valid policy".into(),
                    got: e.to_string(),
                });
                continue;
            }
        };
        let inspector = Arc::new(Inspector::new(Arc::new(detector)));
        let geo = match crate::geo::GeoDb::embedded() {
            Ok(db) => Locator::new(Vec::new(), db),
            Err(_) => continue,
        };
        for t in &raw.tests {
            let expected = format!(
                "{} ({})",
                t.expect.verdict,
                t.expect.rule.as_deref().unwrap_or("any rule")
            );
            let result = one_test(&policy, &geo, &inspector, &resolver, t).await;
            let (passed, got) = match result {
                Ok(ex) => {
                    let ok = ex.verdict == t.expect.verdict
                        && t.expect.rule.as_ref().is_none_or(|r| *r == ex.rule);
                    let classes: Vec<&str> = ex.findings.iter().map(|f| f.class.as_str()).collect();
                    (
                        ok,
                        format!(
                            "{} ({}); findings: [{}]",
                            ex.verdict,
                            ex.rule,
                            classes.join(", ")
                        ),
                    )
                }
                Err(e) => (false, e),
            };
            out.push(TestOutcome {
                file: src.origin.clone(),
                name: t.name.clone(),
                passed,
                expected,
                got,
            });
        }
    }
    out
}

async fn one_test(
    policy: &Policy,
    geo: &Locator,
    inspector: &Arc<Inspector>,
    resolver: &Resolver,
    t: &crate::policy::model::RawTest,
) -> Result<Explanation, String> {
    let r = &t.request;
    let method = r
        .method
        .as_deref()
        .unwrap_or("GET")
        .to_ascii_uppercase()
        .parse::<http::Method>()
        .map_err(|e| e.to_string())?;
    let mut headers = HeaderMap::new();
    for (k, v) in &r.headers {
        let name = http::header::HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
        let value = http::HeaderValue::from_str(v).map_err(|e| e.to_string())?;
        headers.append(name, value);
    }
    let client = r
        .client
        .as_deref()
        .unwrap_or("10.0.0.1")
        .parse::<IpAddr>()
        .map_err(|e| format!("client: {e}"))?;
    let address = t
        .destination
        .address
        .parse::<IpAddr>()
        .map_err(|e| format!("destination.address: {e}"))?;
    let country = match t.destination.country.as_str() {
        "unknown" => None,
        c => Some(
            crate::geo::Country::parse(c)
                .ok_or_else(|| format!("destination.country: `{c}` is not a country code"))?,
        ),
    };
    let req = CheckRequest {
        method,
        url: r.url.clone(),
        headers,
        body: r.body.clone().unwrap_or_default().into_bytes(),
        resolve: vec![address],
        client,
        creds: r.user.as_ref().map(|u| match u.split_once(':') {
            Some((u, p)) => (u.to_owned(), p.to_owned()),
            None => (u.clone(), String::new()),
        }),
        assume_country: Some(country),
    };
    explain(policy, geo, inspector, resolver, &req)
        .await
        .map_err(|e| e.to_string())
}
