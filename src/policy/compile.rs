//! `RawPolicy` -> `Policy`: checks every name, country and class, and reports each problem
//! with its file and rule path. Pure.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::model::{
    RawAction, RawConfidence, RawCountryEntry, RawData, RawDataMatch, RawMode, RawPolicy, RawRule,
};
use super::{Action, ClientGroup, Confidence, Declared, Expired, Mode, Policy, Reason};
use crate::geo::Country;
use crate::inspect::detect::{ClassSpec, Detector, Validator};

/// One policy file's text and where it came from.
#[derive(Debug, Clone)]
pub struct PolicySource {
    /// Path, or `embedded:<name>`.
    pub origin: String,
    /// YAML text.
    pub text: String,
}

/// A policy that cannot be used; the message says where and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// IO error.
        #[source]
        source: std::io::Error,
    },
    /// YAML syntax or unknown keys.
    #[error("{origin}: {message}")]
    Syntax {
        /// File.
        origin: String,
        /// serde's message with line and column.
        message: String,
    },
    /// Semantic problems, one per line.
    #[error("{origin}: invalid policy:\n  - {}", .problems.join("\n  - "))]
    Invalid {
        /// File.
        origin: String,
        /// Each names the rule and key.
        problems: Vec<String>,
    },
    /// No policy file given.
    #[error("no policy given")]
    Empty,
}

#[derive(Debug, Clone)]
pub(crate) enum HostPattern {
    Any,
    Exact(String),
    /// `*.example.com` stored as `.example.com`: any subdomain, not the apex.
    Suffix(String),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct CountrySet {
    pub(crate) codes: Vec<Country>,
    pub(crate) home: bool,
    pub(crate) foreign: bool,
    pub(crate) unknown: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct DataCond {
    /// `None` = any class.
    pub(crate) classes: Option<Vec<u16>>,
    pub(crate) all: bool,
    pub(crate) min: Confidence,
}

#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) id: Arc<str>,
    pub(crate) clients: Option<Vec<Arc<str>>>,
    pub(crate) audit: bool,
    pub(crate) hosts: Option<Vec<HostPattern>>,
    pub(crate) except_hosts: Option<Vec<HostPattern>>,
    pub(crate) countries: Option<CountrySet>,
    pub(crate) except_countries: Option<CountrySet>,
    pub(crate) data: Option<DataCond>,
    pub(crate) methods: Option<Vec<String>>,
    pub(crate) path_prefix: Option<Vec<String>>,
    pub(crate) action: Action,
    pub(crate) mode: Mode,
    pub(crate) reason: Reason,
    pub(crate) message: Arc<str>,
    pub(crate) citation: Option<Arc<str>>,
}

/// Compiles policy files, in precedence order, against the detector's class names.
///
/// Precedence: the first file gives the name, home countries, mode, `unknown_country` and
/// `default`; the rules of all files are tried in file order, then rule order, and the
/// first match wins.
pub fn compile(sources: &[PolicySource], classes: &[&str]) -> Result<Policy, PolicyError> {
    compile_at(sources, classes, &today())
}

/// Today's date (UTC) as `YYYY-MM-DD`, for exception expiry and effective dates.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    crate::civil::ymd(secs)
}

/// Parses one file.
pub fn parse(src: &PolicySource) -> Result<RawPolicy, PolicyError> {
    serde_yaml_ng::from_str(&src.text).map_err(|e| PolicyError::Syntax {
        origin: src.origin.clone(),
        message: e.to_string(),
    })
}

/// Parses the files, builds the detector with their custom classes, and compiles the
/// policy against it: what a load or reload does.
pub fn load(sources: &[PolicySource], today: &str) -> Result<(Policy, Detector), PolicyError> {
    let mut specs = Vec::new();
    for src in sources {
        let raw = parse(src)?;
        let mut problems = Vec::new();
        for (name, c) in &raw.classes {
            let validator = match c.validator.as_deref() {
                None => Validator::None,
                Some(v) => match v.parse::<Validator>() {
                    Ok(v) => v,
                    Err(_) => {
                        problems.push(format!(
                            "classes.{name}.validator: `{v}` — use verhoeff, luhn, gstin-mod36 or none"
                        ));
                        Validator::None
                    }
                },
            };
            let fields = c
                .fields
                .iter()
                .map(|f| {
                    f.rsplit('.')
                        .next()
                        .unwrap_or(f)
                        .trim_start_matches('*')
                        .to_owned()
                })
                .filter(|f| !f.is_empty())
                .collect();
            specs.push(ClassSpec {
                name: name.clone(),
                pattern: c.pattern.clone(),
                validator,
                context_keywords: c.keywords.clone(),
                needs_context: c.needs_context,
                field_names: fields,
            });
        }
        if !problems.is_empty() {
            return Err(PolicyError::Invalid {
                origin: src.origin.clone(),
                problems,
            });
        }
    }
    let detector = Detector::new(&specs).map_err(|e| PolicyError::Invalid {
        origin: sources
            .first()
            .map_or_else(String::new, |s| s.origin.clone()),
        problems: vec![format!("classes: {e}")],
    })?;
    let names: Vec<&str> = detector.classes().map(|(_, n)| n).collect();
    let policy = compile_at(sources, &names, today)?;
    Ok((policy, detector))
}

/// `compile` with an explicit date (tests and `sima policy test`).
pub fn compile_at(
    sources: &[PolicySource],
    classes: &[&str],
    today: &str,
) -> Result<Policy, PolicyError> {
    let first = sources.first().ok_or(PolicyError::Empty)?;
    let mut hasher = Sha256::new();
    let mut raws = Vec::with_capacity(sources.len());
    for src in sources {
        hasher.update(src.text.as_bytes());
        raws.push((src, parse(src)?));
    }
    let hash = hex::encode(hasher.finalize())[..12].to_owned();

    let mut policy = Policy {
        name: "".into(),
        hash,
        home: vec![Country::IN],
        mode: Mode::Enforce,
        unknown_country: Action::Block,
        tunnels: Action::Allow,
        uninspectable: Action::Block,
        rules: Vec::new(),
        default: Action::Allow,
        classes: classes.iter().map(|c| (*c).to_owned()).collect(),
        clients: Vec::new(),
        destinations: Vec::new(),
        expired: Vec::new(),
        loaded_on: today.to_owned(),
    };
    let mut ids = std::collections::HashSet::new();
    for (i, (src, raw)) in raws.into_iter().enumerate() {
        let mut problems = Vec::new();
        if raw.version != 1 {
            problems.push(format!(
                "version: {} is not supported (this Sima reads version: 1)",
                raw.version
            ));
        }
        let mut home = policy.home.clone();
        if let Some(h) = &raw.home {
            home = h
                .iter()
                .filter_map(|c| country("home", c, &mut problems))
                .collect();
            if home.is_empty() {
                problems.push("home: list at least one country".into());
            }
        }
        let lists: Vec<(String, Vec<Country>)> = raw
            .country_lists
            .iter()
            .map(|(name, entries)| {
                let at = format!("country_lists.{name}");
                let codes = entries
                    .iter()
                    .filter_map(|e| match e {
                        RawCountryEntry::Code(c) => country(&at, c, &mut problems),
                        RawCountryEntry::Cited {
                            country: c,
                            effective,
                            ..
                        } => {
                            if let Some(d) = effective {
                                if !is_date(d) {
                                    problems.push(format!(
                                        "{at}: effective `{d}` is not a date (YYYY-MM-DD)"
                                    ));
                                }
                            }
                            country(&at, c, &mut problems)
                        }
                    })
                    .collect();
                (name.clone(), codes)
            })
            .collect();
        if i == 0 {
            policy.name = raw.name.as_str().into();
            policy.home = home;
            policy.mode = mode(raw.mode);
            policy.unknown_country = raw.unknown_country.map(action).unwrap_or(Action::Block);
            policy.tunnels = raw.tunnels.map(action).unwrap_or(Action::Allow);
            policy.uninspectable = raw.uninspectable.map(action).unwrap_or(Action::Block);
            policy.default = raw.default.map(action).unwrap_or(Action::Allow);
        }
        for (name, g) in &raw.clients {
            let at = format!("clients.{name}");
            let mut group = ClientGroup {
                name: name.as_str().into(),
                nets: Vec::new(),
                users: Vec::new(),
            };
            for c in &g.cidrs {
                match c
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                {
                    Ok(n) => group.nets.push(n.trunc()),
                    Err(_) => problems.push(format!("{at}.cidrs: `{c}` is not a network")),
                }
            }
            for u in &g.users {
                let hash = match &u.password_sha256 {
                    None => None,
                    Some(h) => match hex::decode(h)
                        .ok()
                        .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    {
                        Some(b) => Some(b),
                        None => {
                            problems.push(format!("{at}.users.{}: password_sha256 must be 64 hex digits (sha256sum of the password)", u.name));
                            None
                        }
                    },
                };
                group.users.push((u.name.clone(), hash));
            }
            policy.clients.push(group);
        }
        for (pattern, d) in &raw.destinations {
            let at = format!("destinations.{pattern}");
            let pats = host_patterns(&at, std::slice::from_ref(pattern), &mut problems);
            if let (Some(p), Some(c)) = (
                pats.into_iter().next(),
                country(&format!("{at}.country"), &d.country, &mut problems),
            ) {
                policy.destinations.push(Declared {
                    pattern: p,
                    country: c,
                });
            }
        }
        let file_clients: Option<Vec<Arc<str>>> = raw
            .for_clients
            .as_ref()
            .map(|v| v.iter().map(|c| Arc::from(c.as_str())).collect());
        let file_mode = mode(raw.mode).max_with(policy.mode);
        for (j, r) in raw.rules.iter().enumerate() {
            let at = format!("rules[{j}] ({})", r.id);
            if !ids.insert(r.id.clone()) {
                problems.push(format!(
                    "{at}: id `{}` is used twice; ids name rules in 451 bodies and audit records",
                    r.id
                ));
            }
            if let Some(e) = &r.expires {
                if !is_date(e) {
                    problems.push(format!("{at}.expires: `{e}` is not a date (YYYY-MM-DD)"));
                } else if e.as_str() < today {
                    // An expired exception stops applying; it is reported, not silently kept.
                    policy.expired.push(Expired {
                        id: r.id.clone(),
                        expires: e.clone(),
                        owner: r.owner.clone(),
                    });
                    continue;
                }
            }
            if let Some(mut rule) = compile_rule(&at, r, file_mode, &lists, classes, &mut problems)
            {
                if let Some(fc) = &file_clients {
                    rule.clients = Some(match rule.clients.take() {
                        // Both must hold: intersect.
                        Some(rc) => rc.into_iter().filter(|c| fc.contains(c)).collect(),
                        None => fc.clone(),
                    });
                }
                policy.rules.push(rule);
            }
        }
        if !problems.is_empty() {
            return Err(PolicyError::Invalid {
                origin: src.origin.clone(),
                problems,
            });
        }
    }
    let known: Vec<&str> = policy.clients.iter().map(|g| &*g.name).collect();
    let mut unknown = Vec::new();
    for r in &policy.rules {
        for c in r.clients.iter().flatten() {
            if !known.contains(&&**c) {
                unknown.push(format!(
                    "rule {}: client group `{c}` is not defined under clients:{}",
                    r.id,
                    did_you_mean(c, &known)
                ));
            }
        }
    }
    if !unknown.is_empty() {
        return Err(PolicyError::Invalid {
            origin: first.origin.clone(),
            problems: unknown,
        });
    }
    if policy.name.is_empty() {
        return Err(PolicyError::Invalid {
            origin: first.origin.clone(),
            problems: vec!["name: give the policy a name".into()],
        });
    }
    Ok(policy)
}

impl Mode {
    /// Report anywhere up the chain wins: a policy rolled out in report mode reports.
    fn max_with(self, other: Mode) -> Mode {
        if self == Mode::Report || other == Mode::Report {
            Mode::Report
        } else {
            Mode::Enforce
        }
    }
}

fn compile_rule(
    at: &str,
    r: &RawRule,
    file_mode: Mode,
    lists: &[(String, Vec<Country>)],
    classes: &[&str],
    problems: &mut Vec<String>,
) -> Option<Rule> {
    let w = &r.when;
    let hosts = w
        .hosts
        .as_ref()
        .map(|h| host_patterns(&format!("{at}.when.hosts"), h, problems));
    let except_hosts = w
        .except_hosts
        .as_ref()
        .map(|h| host_patterns(&format!("{at}.when.except_hosts"), h, problems));
    let countries = w
        .countries
        .as_ref()
        .map(|c| country_set(&format!("{at}.when.countries"), c, lists, problems));
    let except_countries = w
        .except_countries
        .as_ref()
        .map(|c| country_set(&format!("{at}.when.except_countries"), c, lists, problems));
    let data = w.data.as_ref().map(|d| {
        let classes = match d {
            RawData::Keyword(k) if k == "any" => None,
            RawData::Keyword(k) => {
                problems.push(format!(
                    "{at}.when.data: `{k}` — write `any` or a list of classes"
                ));
                None
            }
            RawData::Classes(list) => Some(
                list.iter()
                    .filter_map(|name| match classes.iter().position(|c| c == name) {
                        Some(i) => u16::try_from(i).ok(),
                        None => {
                            problems.push(format!(
                                "{at}.when.data: unknown data class `{name}`{}; known: {}",
                                did_you_mean(name, classes),
                                classes.join(", ")
                            ));
                            None
                        }
                    })
                    .collect(),
            ),
        };
        DataCond {
            classes,
            all: matches!(w.data_match, Some(RawDataMatch::All)),
            min: match w.min_confidence {
                Some(RawConfidence::Low) => Confidence::Low,
                Some(RawConfidence::High) => Confidence::High,
                _ => Confidence::Medium,
            },
        }
    });
    if w.data.is_none() && (w.data_match.is_some() || w.min_confidence.is_some()) {
        problems.push(format!(
            "{at}.when: data_match/min_confidence need a `data:` condition"
        ));
    }
    let methods = w
        .methods
        .as_ref()
        .map(|m| m.iter().map(|s| s.to_ascii_uppercase()).collect());
    if let Some(p) = &w.path_prefix {
        for prefix in p {
            if !prefix.starts_with('/') {
                problems.push(format!(
                    "{at}.when.path_prefix: `{prefix}` must start with /"
                ));
            }
        }
    }
    let action = action(r.action);
    let rule_mode = r.mode.map(|m| mode(Some(m))).unwrap_or(file_mode);
    let reason = if data.is_some() {
        Reason::PersonalData
    } else {
        Reason::DestinationRule
    };
    let message = r
        .reason
        .clone()
        .unwrap_or_else(|| match (action, data.is_some()) {
            (Action::Allow, _) => format!("allowed by rule {}", r.id),
            (_, true) => {
                "this request carries personal data that may not go to this destination".into()
            }
            (_, false) => "this destination is not allowed".into(),
        });
    Some(Rule {
        id: r.id.as_str().into(),
        clients: w
            .clients
            .as_ref()
            .map(|v| v.iter().map(|c| Arc::from(c.as_str())).collect()),
        audit: r.audit.unwrap_or(false),
        hosts,
        except_hosts,
        countries,
        except_countries,
        data,
        methods,
        path_prefix: w.path_prefix.clone(),
        action,
        mode: rule_mode,
        reason,
        message: message.into(),
        citation: r.citation.as_deref().map(Arc::from),
    })
}

fn host_patterns(at: &str, list: &[String], problems: &mut Vec<String>) -> Vec<HostPattern> {
    list.iter()
        .filter_map(|h| {
            let h = h.trim_end_matches('.').to_ascii_lowercase();
            if h == "*" {
                Some(HostPattern::Any)
            } else if let Some(rest) = h.strip_prefix("*.") {
                if rest.is_empty() || rest.contains('*') {
                    problems.push(format!(
                        "{at}: `{h}` — only a leading `*.` wildcard is supported"
                    ));
                    None
                } else {
                    Some(HostPattern::Suffix(format!(".{rest}")))
                }
            } else if h.contains('*') || h.is_empty() {
                problems.push(format!(
                    "{at}: `{h}` — only a leading `*.` wildcard is supported"
                ));
                None
            } else {
                Some(HostPattern::Exact(h))
            }
        })
        .collect()
}

fn country_set(
    at: &str,
    list: &[String],
    lists: &[(String, Vec<Country>)],
    problems: &mut Vec<String>,
) -> CountrySet {
    let mut set = CountrySet::default();
    for item in list {
        match item.as_str() {
            "home" => set.home = true,
            "foreign" => set.foreign = true,
            "unknown" => set.unknown = true,
            name => {
                if let Some((_, codes)) = lists.iter().find(|(n, _)| n == name) {
                    set.codes.extend(codes);
                } else if let Some(c) = Country::parse(name) {
                    set.codes.push(c);
                } else {
                    problems.push(format!(
                        "{at}: `{name}` is not a country code, `home`, `foreign`, `unknown`, or a name in country_lists"
                    ));
                }
            }
        }
    }
    set
}

fn country(at: &str, code: &str, problems: &mut Vec<String>) -> Option<Country> {
    let c = Country::parse(code);
    if c.is_none() {
        problems.push(format!(
            "{at}: `{code}` is not an ISO 3166-1 alpha-2 country code"
        ));
    }
    c
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

fn mode(m: Option<RawMode>) -> Mode {
    match m {
        Some(RawMode::Report) => Mode::Report,
        _ => Mode::Enforce,
    }
}

fn action(a: RawAction) -> Action {
    match a {
        RawAction::Allow => Action::Allow,
        RawAction::Block => Action::Block,
        RawAction::Report => Action::Report,
    }
}

/// ` (did you mean `X`?)` when a known name is one or two edits away.
pub(crate) fn did_you_mean(name: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| {
            (
                edit_distance(&name.to_ascii_uppercase(), &k.to_ascii_uppercase()),
                *k,
            )
        })
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
