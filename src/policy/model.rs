//! Serde types of `policies/*.yaml` (format `version: 1`), exactly as written by authors.
//! Validation and meaning live in `compile.rs`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// One policy file.
#[derive(Debug, Deserialize, JsonSchema)]
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
    /// Rules about data meeting content Sima cannot read: a CONNECT tunnel's (TLS; plain
    /// HTTP inside a tunnel is read per request, and a WebSocket's messages where a data
    /// rule applies): `allow` (default: destination rules only), `report` or `block`.
    #[serde(default)]
    pub tunnels: Option<RawAction>,
    /// Rules about data meeting a body that cannot be inspected: `block` (default),
    /// `report` or `allow`.
    #[serde(default)]
    pub uninspectable: Option<RawAction>,
    /// Sectors the pack applies to (payments, lending, securities, insurance, health,
    /// government, telecom, all); informational, shown by `sima policy lint`.
    #[serde(default)]
    pub applies_to: Option<Vec<String>>,
    /// Named client groups, usable in `when.clients` and `for_clients`.
    #[serde(default)]
    pub clients: BTreeMap<String, RawClientGroup>,
    /// This file's rules apply only to these client groups (a policy per client group).
    #[serde(default)]
    pub for_clients: Option<Vec<String>>,
    /// Declared residency per destination host pattern; overrides geolocation.
    #[serde(default)]
    pub destinations: BTreeMap<String, RawDestination>,
    /// Custom data classes.
    #[serde(default)]
    pub classes: BTreeMap<String, RawClass>,
    /// Rules, first match wins.
    #[serde(default)]
    pub rules: Vec<RawRule>,
    /// Action when no rule matches.
    #[serde(default)]
    pub default: Option<RawAction>,
    /// Tests run by `sima policy test`.
    #[serde(default)]
    pub tests: Vec<RawTest>,
}

/// A client group: source networks and/or proxy-auth users.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawClientGroup {
    /// Source networks (`10.20.0.0/16`).
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// Proxy-auth users (`Proxy-Authorization: Basic`).
    #[serde(default)]
    pub users: Vec<RawUser>,
}

/// A proxy-auth user.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    /// User name.
    pub name: String,
    /// Hex SHA-256 of the password. Without it the name alone identifies the client and the
    /// password is not checked (for identification behind an authenticating hop).
    #[serde(default)]
    pub password_sha256: Option<String>,
}

/// Declared residency of a destination.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    /// Where the destination stores data (ISO code).
    pub country: String,
    /// Why this is known (contract, DPA, vendor statement).
    #[serde(default)]
    pub source: Option<String>,
}

/// A custom data class.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawClass {
    /// Regex (Rust `regex` syntax). Without it the class is a field-name class: any
    /// non-empty value under one of `fields` counts.
    #[serde(default)]
    pub pattern: Option<String>,
    /// `verhoeff`, `luhn`, `gstin-mod36` or `none`.
    #[serde(default)]
    pub validator: Option<String>,
    /// Words shortly before a match that count as context.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Report only with context.
    #[serde(default)]
    pub needs_context: bool,
    /// Field names or JSON paths (`user.dob`, `*.aadhaar`); matched on the last path
    /// component, case-insensitively.
    #[serde(default)]
    pub fields: Vec<String>,
}

/// One policy test.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTest {
    /// Test name.
    pub name: String,
    /// The request.
    pub request: RawTestRequest,
    /// What the destination resolves to.
    pub destination: RawTestDestination,
    /// Expected outcome.
    pub expect: RawExpect,
}

/// A test request.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTestRequest {
    /// Client address (default 10.0.0.1).
    #[serde(default)]
    pub client: Option<String>,
    /// Proxy-auth user.
    #[serde(default)]
    pub user: Option<String>,
    /// Method (default GET).
    #[serde(default)]
    pub method: Option<String>,
    /// Absolute URL.
    pub url: String,
    /// Headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body text.
    #[serde(default)]
    pub body: Option<String>,
}

/// A test destination.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTestDestination {
    /// Address.
    pub address: String,
    /// Its country (ISO) or `unknown`.
    pub country: String,
}

/// Expected test outcome.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawExpect {
    /// allow, deny or report.
    pub verdict: String,
    /// Deciding rule id.
    #[serde(default)]
    pub rule: Option<String>,
}

/// Policy-wide or per-rule mode.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawMode {
    /// Blocks block.
    Enforce,
    /// Blocks pass and are reported.
    Report,
}

/// A rule's action.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
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
#[derive(Debug, Deserialize, JsonSchema)]
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
#[derive(Debug, Deserialize, JsonSchema)]
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
    /// For exceptions: the rule stops applying after this date (YYYY-MM-DD).
    #[serde(default)]
    pub expires: Option<String>,
    /// For exceptions: who answers for it.
    #[serde(default)]
    pub owner: Option<String>,
    /// For exceptions: why it exists.
    #[serde(default)]
    pub justification: Option<String>,
    /// Audit matching flows even when allowed (exceptions that carry personal data).
    #[serde(default)]
    pub audit: Option<bool>,
}

/// Rule conditions.
#[derive(Debug, Default, Deserialize, JsonSchema)]
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
    /// Client groups (any of).
    #[serde(default)]
    pub clients: Option<Vec<String>>,
    /// HTTP methods (upper case).
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Path prefixes.
    #[serde(default)]
    pub path_prefix: Option<Vec<String>>,
}

/// `data:` — `any` or a list.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawData {
    /// `any`
    Keyword(String),
    /// `[AADHAAR, PAN]`
    Classes(Vec<String>),
}

/// `data_match:`
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawDataMatch {
    /// At least one listed class.
    Any,
    /// Every listed class.
    All,
}

/// `min_confidence:`
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawConfidence {
    /// Shape only.
    Low,
    /// Default.
    Medium,
    /// Validated.
    High,
}

/// The JSON Schema of a policy file, generated from these types (`sima policy schema`).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(RawPolicy);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}
