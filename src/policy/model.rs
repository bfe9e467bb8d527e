//! Serde types of `policies/*.yaml` (format `version: 1`), exactly as written by authors.
//! Validation and meaning live in `compile.rs`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Format version; only `1` exists.
    pub version: u32,
    /// Policy name, shown at start, on `/policy` and in audit records.
    pub name: String,
    /// What the policy is for.
    #[serde(default)]
    pub description: Option<String>,
    /// `enforce` (default) or `report`.
    #[serde(default)]
    pub mode: Option<RawMode>,
    /// Home countries (ISO codes); default `[IN]`.
    #[serde(default)]
    pub home: Option<Vec<String>>,
    /// Named country lists, usable in `countries:` conditions.
    #[serde(default)]
    pub country_lists: BTreeMap<String, Vec<RawCountryEntry>>,
    /// What to do when an address's country is unknown: `block` (default), `report`, `allow`.
    #[serde(default)]
    pub unknown_country: Option<RawAction>,
    /// Rules about data meeting a CONNECT tunnel (content unseen): `allow` (default: the
    /// tunnel gets destination rules only), `report` or `block`.
    #[serde(default)]
    pub tunnels: Option<RawAction>,
    /// Rules about data meeting a body that cannot be inspected: `block` (default),
    /// `report` or `allow`.
    #[serde(default)]
    pub uninspectable: Option<RawAction>,
    /// Rules, first match wins.
    #[serde(default)]
    pub rules: Vec<RawRule>,
    /// Action when no rule matches.
    #[serde(default)]
    pub default: Option<RawAction>,
}

/// Policy-wide or per-rule mode.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawMode {
    /// Blocks block.
    Enforce,
    /// Blocks pass and are reported.
    Report,
}

/// A rule's action.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawAction {
    /// Forward.
    Allow,
    /// Refuse with 451.
    Block,
    /// Forward and record.
    Report,
}

/// A country list entry: a bare code, or a code with its citation and effective date.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawCountryEntry {
    /// `CN`
    Code(String),
    /// `{ country: CN, citation: "...", effective: 2026-01-01 }`
    Cited {
        /// ISO code.
        country: String,
        /// Where the listing comes from.
        #[serde(default)]
        citation: Option<String>,
        /// From when it applies (YYYY-MM-DD).
        #[serde(default)]
        effective: Option<String>,
    },
}

/// One rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Unique id, shown in 451 bodies, logs and audit records.
    pub id: String,
    /// Longer description for reviewers.
    #[serde(default)]
    pub description: Option<String>,
    /// Conditions; all given ones must hold. Empty matches everything.
    #[serde(default)]
    pub when: RawWhen,
    /// What happens on a match.
    pub action: RawAction,
    /// Per-rule mode (overrides the policy's).
    #[serde(default)]
    pub mode: Option<RawMode>,
    /// Human reason shown to a blocked client.
    #[serde(default)]
    pub reason: Option<String>,
    /// Legal citation shown with the reason.
    #[serde(default)]
    pub citation: Option<String>,
}

/// Rule conditions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWhen {
    /// Destination host patterns (`api.example.com`, `*.example.com`, `*`).
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// Host patterns that make the rule not match.
    #[serde(default)]
    pub except_hosts: Option<Vec<String>>,
    /// Countries: ISO codes, `home`, `foreign`, `unknown`, or names of `country_lists`.
    #[serde(default)]
    pub countries: Option<Vec<String>>,
    /// Countries that make the rule not match.
    #[serde(default)]
    pub except_countries: Option<Vec<String>>,
    /// Data classes present: `any`, or a list of class names.
    #[serde(default)]
    pub data: Option<RawData>,
    /// With a list in `data`: `any` (default) or `all` of them.
    #[serde(default)]
    pub data_match: Option<RawDataMatch>,
    /// Minimum confidence of a finding to count: `low`, `medium` (default), `high`.
    #[serde(default)]
    pub min_confidence: Option<RawConfidence>,
    /// HTTP methods (upper case).
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Path prefixes.
    #[serde(default)]
    pub path_prefix: Option<Vec<String>>,
}

/// `data:` — `any` or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawData {
    /// `any`
    Keyword(String),
    /// `[AADHAAR, PAN]`
    Classes(Vec<String>),
}

/// `data_match:`
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawDataMatch {
    /// At least one listed class.
    Any,
    /// Every listed class.
    All,
}

/// `min_confidence:`
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawConfidence {
    /// Shape only.
    Low,
    /// Default.
    Medium,
    /// Validated.
    High,
}
