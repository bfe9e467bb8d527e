//! `decide(&Policy, &Facts) -> Outcome`: everything about *why* a request is allowed or
//! blocked. Pure: no tokio, hyper or sockets; unit-tested without any.

use super::compile::{CountrySet, DataCond, HostPattern, Rule};
use super::{Action, DataSeen, DataView, Decision, Facts, Mode, Outcome, Policy, Reason, Verdict};
use std::sync::Arc;

use crate::geo::Country;

/// Decides one request. With `DataView::NotInspected`, returns `NeedsInspection` as soon as
/// a rule about personal data could be the first match. A rule about data that meets
/// content Sima cannot see applies the policy's `tunnels` or `uninspectable` action.
pub fn decide(policy: &Policy, facts: &Facts<'_>) -> Outcome {
    if facts.country.is_none() && policy.unknown_country != Action::Allow {
        return Outcome::Decided(builtin(
            policy,
            policy.unknown_country,
            Reason::UnknownCountry,
            super::shared_str!("unknown_country"),
            super::shared_str!("the destination's country could not be determined, and this policy blocks unknown destinations"),
        ));
    }
    for rule in &policy.rules {
        if !destination_matches(policy, rule, facts) {
            continue;
        }
        if let Some(cond) = &rule.data {
            let unseen = match facts.data {
                DataView::NotInspected => return Outcome::NeedsInspection,
                DataView::Seen(seen) if !data_matches(cond, seen) => continue,
                DataView::Seen(_) => None,
                DataView::Tunnel => Some((policy.tunnels, super::shared_str!("tunnel"), super::shared_str!("this tunnel's content cannot be inspected, and a rule about personal data applies to this destination"))),
                DataView::Uninspectable => Some((policy.uninspectable, super::shared_str!("uninspectable"), super::shared_str!("the request body could not be inspected for personal data, and a rule about personal data applies to this destination"))),
            };
            if let Some((action, id, msg)) = unseen {
                if action == Action::Allow {
                    continue;
                }
                return Outcome::Decided(builtin(policy, action, Reason::Uninspectable, id, msg));
            }
        }
        return Outcome::Decided(Decision {
            audit: rule.audit,
            verdict: verdict(rule.action, rule.mode),
            reason: if rule.action == Action::Allow {
                Reason::Allowed
            } else {
                rule.reason
            },
            rule: rule.id.clone(),
            message: rule.message.clone(),
            citation: rule.citation.clone(),
        });
    }
    Outcome::Decided(builtin(
        policy,
        policy.default,
        if policy.default == Action::Allow {
            Reason::Allowed
        } else {
            Reason::DestinationRule
        },
        super::shared_str!("default"),
        super::shared_str!("no rule allows this destination"),
    ))
}

/// Why each rule did or did not match, in order, up to the deciding one (for `sima check`).
pub fn trace(policy: &Policy, facts: &Facts<'_>) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    if facts.country.is_none() && policy.unknown_country != Action::Allow {
        out.push((
            "unknown_country".to_owned(),
            "matched: the country is unknown",
        ));
        return out;
    }
    for rule in &policy.rules {
        let why = mismatch(policy, rule, facts);
        let data = match (&rule.data, why) {
            (_, Some(w)) => Some(w),
            (None, None) => None,
            (Some(cond), None) => match facts.data {
                DataView::Seen(seen) if !data_matches(cond, seen) => {
                    Some("no: the data classes it names were not found")
                }
                DataView::Tunnel if policy.tunnels == Action::Allow => {
                    Some("no: tunnel content is not inspected")
                }
                DataView::Uninspectable if policy.uninspectable == Action::Allow => {
                    Some("no: body could not be inspected")
                }
                _ => None,
            },
        };
        match data {
            Some(w) => out.push((rule.id.to_string(), w)),
            None => {
                out.push((rule.id.to_string(), "matched"));
                return out;
            }
        }
    }
    out.push(("default".to_owned(), "matched: no rule matched"));
    out
}

fn mismatch(policy: &Policy, rule: &Rule, f: &Facts<'_>) -> Option<&'static str> {
    if let Some(c) = &rule.clients {
        if !c.iter().any(|c| f.client_groups.contains(c)) {
            return Some("no: client group");
        }
    }
    if let Some(h) = &rule.hosts {
        if !h.iter().any(|p| host_matches(p, f.host)) {
            return Some("no: host");
        }
    }
    if let Some(h) = &rule.except_hosts {
        if h.iter().any(|p| host_matches(p, f.host)) {
            return Some("no: host is excepted");
        }
    }
    if let Some(c) = &rule.countries {
        if !country_in(policy, c, f.country) {
            return Some("no: country");
        }
    }
    if let Some(c) = &rule.except_countries {
        if country_in(policy, c, f.country) {
            return Some("no: country is excepted");
        }
    }
    if let Some(m) = &rule.methods {
        if !m.iter().any(|m| m == f.method) {
            return Some("no: method");
        }
    }
    if let Some(p) = &rule.path_prefix {
        if !p.iter().any(|p| f.path.starts_with(p.as_str())) {
            return Some("no: path");
        }
    }
    None
}

fn builtin(
    policy: &Policy,
    action: Action,
    reason: Reason,
    rule: Arc<str>,
    msg: Arc<str>,
) -> Decision {
    Decision {
        audit: false,
        verdict: verdict(action, policy.mode),
        reason: if action == Action::Allow {
            Reason::Allowed
        } else {
            reason
        },
        rule,
        message: if action == Action::Allow {
            super::shared_str!("allowed")
        } else {
            msg
        },
        citation: None,
    }
}

fn verdict(action: Action, mode: Mode) -> Verdict {
    match (action, mode) {
        (Action::Allow, _) => Verdict::Allow,
        (Action::Report, _) | (Action::Block, Mode::Report) => Verdict::Report,
        (Action::Block, Mode::Enforce) => Verdict::Deny,
    }
}

fn destination_matches(policy: &Policy, rule: &Rule, f: &Facts<'_>) -> bool {
    if let Some(c) = &rule.clients {
        if !c.iter().any(|c| f.client_groups.contains(c)) {
            return false;
        }
    }
    if let Some(h) = &rule.hosts {
        if !h.iter().any(|p| host_matches(p, f.host)) {
            return false;
        }
    }
    if let Some(h) = &rule.except_hosts {
        if h.iter().any(|p| host_matches(p, f.host)) {
            return false;
        }
    }
    if let Some(c) = &rule.countries {
        if !country_in(policy, c, f.country) {
            return false;
        }
    }
    if let Some(c) = &rule.except_countries {
        if country_in(policy, c, f.country) {
            return false;
        }
    }
    if let Some(m) = &rule.methods {
        if !m.iter().any(|m| m == f.method) {
            return false;
        }
    }
    if let Some(p) = &rule.path_prefix {
        if !p.iter().any(|p| f.path.starts_with(p.as_str())) {
            return false;
        }
    }
    true
}

pub(crate) fn host_matches(p: &HostPattern, host: &str) -> bool {
    match p {
        HostPattern::Any => true,
        HostPattern::Exact(h) => h == host,
        HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
    }
}

fn country_in(policy: &Policy, set: &CountrySet, c: Option<Country>) -> bool {
    match c {
        None => set.unknown,
        Some(c) => {
            let home = policy.home.contains(&c);
            (set.home && home) || (set.foreign && !home) || set.codes.contains(&c)
        }
    }
}

fn data_matches(cond: &DataCond, seen: &[DataSeen]) -> bool {
    let strong = |s: &&DataSeen| s.confidence >= cond.min;
    match &cond.classes {
        None => seen.iter().any(|s| strong(&s)),
        Some(classes) => {
            let has = |c: &u16| seen.iter().filter(strong).any(|s| s.class == *c);
            if cond.all {
                classes.iter().all(has)
            } else {
                classes.iter().any(has)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{compile, Confidence, PolicySource};
    use super::*;
    use std::net::IpAddr;

    const CLASSES: &[&str] = &["AADHAAR", "PAN", "CARD"];

    fn policy(yaml: &str) -> Policy {
        compile(
            &[PolicySource {
                origin: "t.yaml".into(),
                text: yaml.into(),
            }],
            CLASSES,
        )
        .unwrap()
    }

    fn facts<'a>(host: &'a str, country: Option<&str>, data: Option<&'a [DataSeen]>) -> Facts<'a> {
        let data = data.map_or(DataView::NotInspected, DataView::Seen);
        Facts {
            host,
            addr: IpAddr::from([192, 0, 2, 1]),
            country: country.and_then(Country::parse),
            method: "POST",
            path: "/v1/users",
            client_groups: &[],
            data,
        }
    }

    fn decided(o: Outcome) -> Decision {
        match o {
            Outcome::Decided(d) => d,
            Outcome::NeedsInspection => panic!("expected a decision"),
        }
    }

    const STRICT: &str = r#"
version: 1
name: strict
home: [IN]
country_lists:
  notified:
    - { country: CN, citation: "notification X", effective: 2026-01-01 }
rules:
  - id: vault-only
    when: { data: [AADHAAR], except_hosts: ["vault.example.in"] }
    action: block
    reason: Aadhaar numbers go only to the vault
  - id: notified-countries
    when: { countries: [notified] }
    action: block
    citation: DPDP Act 2023 s.16
  - id: partner-allowed
    when: { hosts: ["*.partner.example"] }
    action: allow
  - id: personal-data-stays-home
    when: { countries: [foreign], data: any }
    action: block
default: allow
"#;

    #[test]
    fn unknown_country_blocks_by_default() {
        let p = policy(STRICT);
        let d = decided(decide(&p, &facts("x.example", None, None)));
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.reason, Reason::UnknownCountry);
        assert_eq!(&*d.rule, "unknown_country");
    }

    #[test]
    fn destination_rules_decide_before_inspection() {
        let p = policy(STRICT);
        // A data rule comes first: cannot decide before the body is seen.
        assert_eq!(
            decide(&p, &facts("x.example", Some("CN"), None)),
            Outcome::NeedsInspection
        );
        let none: &[DataSeen] = &[];
        let d = decided(decide(&p, &facts("x.example", Some("CN"), Some(none))));
        assert_eq!(
            (d.verdict, d.reason, &*d.rule),
            (Verdict::Deny, Reason::DestinationRule, "notified-countries")
        );
        assert_eq!(d.citation.as_deref(), Some("DPDP Act 2023 s.16"));
    }

    #[test]
    fn personal_data_abroad_is_blocked_at_home_allowed() {
        let p = policy(STRICT);
        let pan = [DataSeen {
            class: 1,
            confidence: Confidence::High,
        }];
        let d = decided(decide(
            &p,
            &facts("api.example.com", Some("US"), Some(&pan)),
        ));
        assert_eq!(
            (d.verdict, &*d.rule),
            (Verdict::Deny, "personal-data-stays-home")
        );
        assert_eq!(d.reason, Reason::PersonalData);
        let d = decided(decide(&p, &facts("api.example.in", Some("IN"), Some(&pan))));
        assert_eq!(d.verdict, Verdict::Allow);
        let none: &[DataSeen] = &[];
        let d = decided(decide(
            &p,
            &facts("api.example.com", Some("US"), Some(none)),
        ));
        assert_eq!(d.verdict, Verdict::Allow);
    }

    #[test]
    fn vault_rule_is_about_destinations_not_countries() {
        let p = policy(STRICT);
        let aadhaar = [DataSeen {
            class: 0,
            confidence: Confidence::High,
        }];
        let d = decided(decide(
            &p,
            &facts("crm.example.in", Some("IN"), Some(&aadhaar)),
        ));
        assert_eq!(&*d.rule, "vault-only");
        let d = decided(decide(
            &p,
            &facts("vault.example.in", Some("IN"), Some(&aadhaar)),
        ));
        assert_eq!(d.verdict, Verdict::Allow);
    }

    #[test]
    fn low_confidence_findings_do_not_count_by_default() {
        let p = policy(STRICT);
        let weak = [DataSeen {
            class: 1,
            confidence: Confidence::Low,
        }];
        let d = decided(decide(
            &p,
            &facts("api.example.com", Some("US"), Some(&weak)),
        ));
        assert_eq!(d.verdict, Verdict::Allow);
    }

    #[test]
    fn wildcard_matches_subdomains_not_apex() {
        let p = policy(STRICT);
        let pan = [DataSeen {
            class: 1,
            confidence: Confidence::High,
        }];
        let d = decided(decide(
            &p,
            &facts("a.b.partner.example", Some("US"), Some(&pan)),
        ));
        assert_eq!(&*d.rule, "partner-allowed");
        let d = decided(decide(
            &p,
            &facts("partner.example", Some("US"), Some(&pan)),
        ));
        assert_eq!(&*d.rule, "personal-data-stays-home");
    }

    #[test]
    fn report_mode_turns_blocks_into_reports() {
        let p = policy(&STRICT.replace("home: [IN]", "home: [IN]\nmode: report"));
        let pan = [DataSeen {
            class: 1,
            confidence: Confidence::High,
        }];
        let d = decided(decide(
            &p,
            &facts("api.example.com", Some("US"), Some(&pan)),
        ));
        assert_eq!(d.verdict, Verdict::Report);
        let d = decided(decide(&p, &facts("x", None, None)));
        assert_eq!(d.verdict, Verdict::Report);
    }

    #[test]
    fn unseen_content_uses_the_policy_fallbacks() {
        let p = policy(STRICT);
        let mut f = facts("x.example", Some("US"), None);
        f.data = DataView::Tunnel;
        // tunnels: allow (default) -> data rules are skipped, destination rules apply.
        assert_eq!(decided(decide(&p, &f)).verdict, Verdict::Allow);
        f.data = DataView::Uninspectable;
        let d = decided(decide(&p, &f));
        assert_eq!(
            (d.verdict, d.reason, &*d.rule),
            (Verdict::Deny, Reason::Uninspectable, "uninspectable")
        );
        // Where no rule about data applies, an uninspectable body is no problem.
        let mut f = facts("vault.example.in", Some("IN"), None);
        f.data = DataView::Uninspectable;
        assert_eq!(decided(decide(&p, &f)).verdict, Verdict::Allow);
        let p = policy(&STRICT.replace("home: [IN]", "home: [IN]\ntunnels: block"));
        let mut f = facts("x.example", Some("US"), None);
        f.data = DataView::Tunnel;
        assert_eq!(decided(decide(&p, &f)).reason, Reason::Uninspectable);
    }

    #[test]
    fn data_match_all() {
        let p = policy("version: 1\nname: t\nrules:\n  - id: both\n    when: { data: [AADHAAR, PAN], data_match: all }\n    action: block\n");
        let one = [DataSeen {
            class: 0,
            confidence: Confidence::High,
        }];
        let both = [
            one[0],
            DataSeen {
                class: 1,
                confidence: Confidence::Medium,
            },
        ];
        assert_eq!(
            decided(decide(&p, &facts("h", Some("IN"), Some(&one)))).verdict,
            Verdict::Allow
        );
        assert_eq!(
            decided(decide(&p, &facts("h", Some("IN"), Some(&both)))).verdict,
            Verdict::Deny
        );
    }

    #[test]
    fn errors_name_the_rule_and_hint() {
        let err = compile(
            &[PolicySource {
                origin: "p.yaml".into(),
                text: "version: 1\nname: t\nrules:\n  - id: r1\n    when: { data: [AADHAR], countries: [XX] }\n    action: block\n".into(),
            }],
            CLASSES,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("p.yaml") && err.contains("rules[0] (r1)"),
            "{err}"
        );
        assert!(err.contains("did you mean `AADHAAR`"), "{err}");
        assert!(err.contains("`XX`"), "{err}");
        let err = compile(
            &[PolicySource {
                origin: "p.yaml".into(),
                text: "version: 2\nname: t\n".into(),
            }],
            CLASSES,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("version: 1"), "{err}");
        let err = compile(
            &[PolicySource {
                origin: "p.yaml".into(),
                text: "version: 1\nname: t\ndefualt: allow\n".into(),
            }],
            CLASSES,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("defualt") && err.contains("line 3"), "{err}");
    }
}
