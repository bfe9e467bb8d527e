//! `sima policy lint`: errors (with file:line:column and a hint) and warnings a reviewer
//! wants before a policy blocks production traffic. Pure: works on texts.

use super::compile::{self, PolicySource};
use super::model::{RawData, RawPolicy};
use super::PolicyError;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth a look.
    Warning,
    /// The policy cannot be used.
    Error,
}

/// One lint finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Severity.
    pub severity: Severity,
    /// File.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What and how to fix it.
    pub message: String,
}

/// Days before expiry from which an exception is flagged.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// Lints each file alone and then all together (composition can clash, e.g. duplicate ids).
pub fn lint(sources: &[PolicySource], today: &str) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for src in sources {
        let raw = match compile::parse(src) {
            Ok(r) => r,
            Err(e) => {
                out.push(error(src, &e));
                continue;
            }
        };
        if let Err(e) = compile::load(std::slice::from_ref(src), today) {
            out.push(error(src, &e));
            continue;
        }
        warnings(src, &raw, today, &mut out);
    }
    if sources.len() > 1 && out.iter().all(|d| d.severity == Severity::Warning) {
        if let Err(e) = compile::load(sources, today) {
            out.push(Diagnostic {
                severity: Severity::Error,
                file: "(all files together)".into(),
                line: None,
                message: e.to_string(),
            });
        }
    }
    out
}

fn error(src: &PolicySource, e: &PolicyError) -> Diagnostic {
    let msg = e.to_string();
    // serde_yaml_ng messages end in "at line L column C".
    let line = msg
        .rsplit_once("at line ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    Diagnostic {
        severity: Severity::Error,
        file: src.origin.clone(),
        line,
        message: msg
            .strip_prefix(&format!("{}: ", src.origin))
            .unwrap_or(&msg)
            .to_owned(),
    }
}

fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

fn warnings(src: &PolicySource, raw: &RawPolicy, today: &str, out: &mut Vec<Diagnostic>) {
    let warn = |line: Option<usize>, message: String| Diagnostic {
        severity: Severity::Warning,
        file: src.origin.clone(),
        line,
        message,
    };
    // Shadowing: a rule after one whose conditions are empty, or identical to its own.
    for (i, r) in raw.rules.iter().enumerate() {
        let key = format!("{:?}", r.when);
        for earlier in &raw.rules[..i] {
            let ek = format!("{:?}", earlier.when);
            let catch_all = ek == format!("{:?}", super::model::RawWhen::default());
            if (catch_all || ek == key) && earlier.expires.is_none() {
                out.push(warn(
                    line_of(&src.text, &format!("id: {}", r.id)),
                    format!(
                        "rule {} can never match: rule {} before it matches everything it does",
                        r.id, earlier.id
                    ),
                ));
                break;
            }
        }
    }
    // Classes defined and never used.
    for name in raw.classes.keys() {
        let used = raw.rules.iter().any(|r| match &r.when.data {
            Some(RawData::Classes(c)) => c.contains(name),
            Some(RawData::Keyword(_)) => true,
            None => false,
        });
        if !used {
            out.push(warn(
                line_of(&src.text, &format!("{name}:")),
                format!("class {name} is defined but no rule uses it"),
            ));
        }
    }
    // Exceptions expired or expiring soon.
    for r in &raw.rules {
        let Some(e) = &r.expires else { continue };
        let line = line_of(&src.text, &format!("expires: {e}"));
        if e.as_str() < today {
            out.push(warn(
                line,
                format!(
                    "exception {} expired on {e} and no longer applies; remove it or renew it",
                    r.id
                ),
            ));
        } else if days_between(today, e).is_some_and(|d| d <= EXPIRY_WARNING_DAYS) {
            out.push(warn(
                line,
                format!(
                    "exception {} expires on {e}, within {EXPIRY_WARNING_DAYS} days",
                    r.id
                ),
            ));
        }
        if r.owner.is_none() || r.justification.is_none() {
            out.push(warn(
                line,
                format!(
                    "exception {} has no owner or justification; auditors will ask",
                    r.id
                ),
            ));
        }
    }
    if raw.rules.is_empty() {
        out.push(warn(
            None,
            "the policy has no rules: only unknown_country and default apply".into(),
        ));
    }
}

/// Days from `a` to `b` (YYYY-MM-DD).
fn days_between(a: &str, b: &str) -> Option<i64> {
    Some(days(b)? - days(a)?)
}

fn days(d: &str) -> Option<i64> {
    let mut it = d.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, dd) = (it.next()??, it.next()??, it.next()??);
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> PolicySource {
        PolicySource {
            origin: "p.yaml".into(),
            text: text.into(),
        }
    }

    #[test]
    fn errors_carry_the_line_and_a_hint() {
        let d = lint(&[src("version: 1\nname: p\nrules:\n  - id: r\n    when: { countrys: [US] }\n    action: block\n")], "2026-11-26");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].severity, Severity::Error);
        assert_eq!(d[0].line, Some(5));
        assert!(
            d[0].message.contains("countrys") && d[0].message.contains("countries"),
            "{}",
            d[0].message
        );
    }

    #[test]
    fn warnings_for_shadowing_unused_classes_and_expiry() {
        let text = "version: 1\nname: p\nclasses:\n  EMP_ID: { pattern: 'EMP[0-9]{6}' }\nrules:\n  - id: all\n    action: block\n  - id: later\n    when: { countries: [US] }\n    action: allow\n  - id: old-exception\n    when: { hosts: [a.example] }\n    action: allow\n    expires: 2026-01-01\n  - id: soon\n    when: { hosts: [b.example] }\n    action: allow\n    expires: 2026-12-10\n    owner: x\n    justification: y\n";
        let d = lint(&[src(text)], "2026-11-26");
        let msgs: Vec<&str> = d.iter().map(|d| d.message.as_str()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("rule later can never match")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("EMP_ID is defined but no rule uses it")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("old-exception expired on 2026-01-01")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("soon expires on 2026-12-10")),
            "{msgs:?}"
        );
        assert!(d.iter().all(|d| d.severity == Severity::Warning));
    }

    #[test]
    fn date_arithmetic() {
        assert_eq!(days_between("2026-11-26", "2026-12-26"), Some(30));
        assert_eq!(days_between("2024-02-28", "2024-03-01"), Some(2));
    }
}
