//! Tamper-evident audit log: audit records, hash chain, durable writer, verify and summary; no sockets.
//!
//! # File format
//!
//! The log is a directory of JSON Lines files named `audit-YYYYMMDD-NNN.jsonl` (UTC date the
//! file was opened, then a counter from `001` within that day). One line is one
//! [`AuditRecord`] followed by three chain fields, in this exact order:
//!
//! ```text
//! {"time":…,"request_id":…,…,"sima_version":…,"seq":7,"prev":"<64 hex>","hash":"<64 hex>"}
//! ```
//!
//! * `seq` counts records from 0 and continues across files and restarts.
//! * `prev` is the `hash` of the previous record, or 64 zeros for record 0.
//! * `hash` is `hex(sha256(C))` where `C` is the canonical JSON of the record *without* the
//!   `hash` field: the struct serialized by `serde_json` in compact form, fields in
//!   declaration order, `None` fields omitted, `seq` and `prev` last. The stored line is `C`
//!   with its final `}` replaced by `,"hash":"<hex>"}` and a `\n` appended, so a verifier
//!   recomputes the hash from the bytes on disk (strip the 75-byte `,"hash":"…"}` tail, append
//!   `}`) without re-serializing anything. Any byte changed in a line changes its hash; a
//!   rewritten-and-rehashed line breaks the next line's `prev`.
//!
//! No detected personal value is ever stored: findings carry only keyed fingerprints
//! ([`Fingerprinter`]), and [`strip_query_values`] drops query values from paths.
//!
//! # Writing
//!
//! [`AuditWriter::start`] spawns one task that owns the open file. [`AuditHandle::record`]
//! queues a record (bounded queue; a full queue is an error, never a wait) and returns once the
//! record is written and `fdatasync`ed. Records arriving within `fsync_delay` share one sync.
//! Only one writer may use a directory at a time.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::civil::{civil_from_days, days_from_civil};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

mod files;
mod fingerprint;
mod summary;
#[cfg(test)]
mod tests;
mod verify;
mod writer;

use files::*;
pub use {fingerprint::*, summary::*, verify::*, writer::*};

/// `prev` of the very first record of a chain (`seq` 0): 64 zeros.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Default size at which a file is rotated: 64 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Default window in which records share one fsync: 5 ms.
pub const DEFAULT_FSYNC_DELAY: Duration = Duration::from_millis(5);
/// Default capacity of the writer queue.
pub const DEFAULT_QUEUE: usize = 4096;
/// Default retention of rotated files, in days (CERT-In asks for 180).
pub const DEFAULT_RETENTION_DAYS: u32 = 180;

/// Length of the stored `,"hash":"<64 hex>"}` tail of every line.
const HASH_TAIL_LEN: usize = 75;
const HASH_TAIL_PREFIX: &[u8] = b",\"hash\":\"";
/// Print verify progress every this many bytes (only when stderr is a terminal).
const PROGRESS_EVERY: u64 = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Everything that can go wrong in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A filesystem operation failed.
    #[error("audit log: cannot {op} {}: {message} ({kind}); check that the directory exists and the sima user can write it", .path.display())]
    Io {
        /// What was being done (`open`, `write`, `fsync`, …).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The I/O error kind.
        kind: io::ErrorKind,
        /// The operating system's message.
        message: String,
    },
    /// The filesystem holding the log is full (ENOSPC or EDQUOT).
    #[error("audit log: disk full while writing {}; free space on that filesystem or lower audit retention_days", .path.display())]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },
    /// The writer queue is full; the record was not accepted.
    #[error("audit log: queue full ({capacity} records waiting for the disk), flow not recorded; check disk latency or raise the audit queue size")]
    QueueFull {
        /// Queue capacity.
        capacity: usize,
    },
    /// The writer task has stopped (after `close`, or it died).
    #[error("audit log: the writer has stopped and records are no longer written; restart sima")]
    Closed,
    /// A record could not be turned into JSON.
    #[error(
        "audit log: record could not be serialized ({detail}); this is a bug, please report it"
    )]
    Serialize {
        /// serde_json's message.
        detail: String,
    },
    /// The key file is readable or writable by group or others.
    #[error("audit key {} is accessible by group or others (mode {mode:o}); run `chmod 600 {}`", .path.display(), .path.display())]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file exists but does not hold a usable key.
    #[error("audit key {} is invalid: {detail}; it must hold exactly 32 bytes, raw or as 64 hex characters (a new key changes every fingerprint)", .path.display())]
    KeyInvalid {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The operating system's random source failed.
    #[error("audit key: cannot read random bytes ({detail}); check the operating system's random source")]
    Random {
        /// The error.
        detail: String,
    },
    /// The newest audit file ends with a record the writer cannot continue the chain from.
    #[error("audit file {} ends with a damaged record at byte {offset} ({detail}); run `sima audit verify` on the directory, then move that file aside to start a new chain", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the damaged line.
        offset: u64,
        /// What is wrong with it.
        detail: String,
    },
    /// `verify` or `summary` found no file to read.
    #[error("audit log: no audit files found in {paths}; pass the audit directory or audit-YYYYMMDD-NNN.jsonl files")]
    NoFiles {
        /// The paths that were given.
        paths: String,
    },
    /// The configuration cannot work.
    #[error("audit config: {detail}")]
    Config {
        /// What to fix.
        detail: String,
    },
}

fn io_error(op: &'static str, path: &Path, e: &io::Error) -> AuditError {
    // ENOSPC = 28, EDQUOT = 122 on Linux.
    if e.kind() == io::ErrorKind::StorageFull || matches!(e.raw_os_error(), Some(28) | Some(122)) {
        return AuditError::DiskFull {
            path: path.to_path_buf(),
        };
    }
    AuditError::Io {
        op,
        path: path.to_path_buf(),
        kind: e.kind(),
        message: e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Timestamps (hand-written RFC 3339, UTC, microseconds)
// ---------------------------------------------------------------------------------------------

/// A UTC instant with microsecond precision, serialized as RFC 3339
/// (`2025-01-31T12:34:56.123456Z`). Times before 1970 are clamped to the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    micros: u64,
}

impl Timestamp {
    /// The current time, truncated to microseconds.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// Converts a `SystemTime`, truncating to microseconds.
    pub fn from_system_time(t: SystemTime) -> Self {
        let micros = t
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self { micros }
    }

    /// Builds a timestamp from microseconds since the Unix epoch.
    pub fn from_unix_micros(micros: u64) -> Self {
        Self { micros }
    }

    /// Microseconds since the Unix epoch.
    pub fn unix_micros(self) -> u64 {
        self.micros
    }

    /// The same instant as a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.micros)
    }

    fn days(self) -> i64 {
        i64::try_from(self.micros / 86_400_000_000).unwrap_or(i64::MAX)
    }

    /// UTC date as `YYYYMMDD`, as used in file names.
    fn file_date(self) -> u32 {
        let (y, m, d) = civil_from_days(self.days());
        let y = u32::try_from(y.clamp(0, 9999)).unwrap_or(0);
        y * 10_000 + m * 100 + d
    }
}

fn days_from_file_date(date: u32) -> i64 {
    days_from_civil(i64::from(date / 10_000), (date / 100) % 100, date % 100)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d) = civil_from_days(self.days());
        let in_day = self.micros % 86_400_000_000;
        let secs = in_day / 1_000_000;
        let micros = in_day % 1_000_000;
        write!(
            f,
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            secs / 3600,
            (secs / 60) % 60,
            secs % 60
        )
    }
}

/// A string that is not an RFC 3339 UTC timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {0:?}: expected UTC RFC 3339 like 2025-01-31T12:34:56.123456Z")]
pub struct TimestampError(pub String);

impl FromStr for Timestamp {
    type Err = TimestampError;

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00)`, year 1970 or later; the fraction
    /// may have 1 to 9 digits and is truncated to microseconds.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TimestampError(s.to_string());
        let b = s.as_bytes();
        let num = |r: std::ops::Range<usize>| -> Result<u64, TimestampError> {
            let part = b.get(r).ok_or_else(bad)?;
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return Err(bad());
            }
            Ok(part
                .iter()
                .fold(0u64, |acc, c| acc * 10 + u64::from(c - b'0')))
        };
        if b.len() < 20
            || b.get(4) != Some(&b'-')
            || b.get(7) != Some(&b'-')
            || !matches!(b.get(10), Some(b'T') | Some(b't'))
            || b.get(13) != Some(&b':')
            || b.get(16) != Some(&b':')
        {
            return Err(bad());
        }
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let mut rest = b.get(19..).ok_or_else(bad)?;
        let mut micros = 0u64;
        if rest.first() == Some(&b'.') {
            let digits = rest
                .iter()
                .skip(1)
                .take_while(|c| c.is_ascii_digit())
                .count();
            if digits == 0 || digits > 9 {
                return Err(bad());
            }
            let frac = num(20..20 + digits)?;
            micros = if digits <= 6 {
                frac * 10u64.pow(u32::try_from(6 - digits).unwrap_or(0))
            } else {
                frac / 10u64.pow(u32::try_from(digits - 6).unwrap_or(0))
            };
            rest = rest.get(1 + digits..).ok_or_else(bad)?;
        }
        if !matches!(rest, b"Z" | b"z" | b"+00:00") {
            return Err(bad());
        }
        if y < 1970
            || !(1..=12).contains(&mo)
            || !(1..=31).contains(&d)
            || h > 23
            || mi > 59
            || se > 59
        {
            return Err(bad());
        }
        let (mo, d) = (
            u32::try_from(mo).map_err(|_| bad())?,
            u32::try_from(d).map_err(|_| bad())?,
        );
        let y = i64::try_from(y).map_err(|_| bad())?;
        let days = days_from_civil(y, mo, d);
        if civil_from_days(days) != (y, mo, d) {
            return Err(bad()); // e.g. February 30
        }
        let days = u64::try_from(days).map_err(|_| bad())?;
        let secs = days * 86_400 + h * 3600 + mi * 60 + se;
        Ok(Self {
            micros: secs * 1_000_000 + micros,
        })
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------

/// How the flow reached Sima.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Plain HTTP forward proxy.
    Http,
    /// `CONNECT` tunnel (not decrypted).
    Tunnel,
    /// Reverse-proxy route.
    Route,
    /// A request Sima read and inspected inside a `CONNECT` tunnel (plain HTTP there).
    Intercepted,
}

/// The policy mode the decision was taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Blocks are enforced.
    Enforce,
    /// Would-be blocks are forwarded and reported.
    Report,
}

/// What Sima did with the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Refused (451).
    Block,
    /// Forwarded, recorded as a would-be block.
    Report,
    /// Forwarded under an exception although personal data was seen.
    Allow,
}

impl Action {
    /// All actions, for metric labels.
    pub const ALL: [Action; 3] = [Action::Block, Action::Report, Action::Allow];

    /// The lower-case label (`block`, `report`, `allow`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Report => "report",
            Action::Allow => "allow",
        }
    }
}

/// Where in the request a data class was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    /// URL path or query.
    Url,
    /// A request header.
    Header,
    /// The request body.
    Body,
}

/// The client that sent the flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// Client IP address.
    pub address: IpAddr,
    /// Client group from the policy, if matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Authenticated identity (e.g. mTLS subject), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// One personal-data class found in the flow. Never holds the values themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFinding {
    /// Data class label (e.g. `aadhaar`, `pan`).
    pub class: String,
    /// Number of occurrences.
    pub count: u64,
    /// Where they were found.
    pub locations: Vec<Location>,
    /// Keyed fingerprints of the values ([`Fingerprinter::fingerprint`]); keep this bounded.
    pub fingerprints: Vec<String>,
}

/// The policy in force for the decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    /// Policy name.
    pub name: String,
    /// Policy content hash.
    pub hash: String,
}

/// One audited flow, as given to [`AuditHandle::record`]. Field order is the on-disk order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the decision was taken. Also decides the file's UTC day.
    pub time: Timestamp,
    /// Request id, as in logs and 451 bodies.
    pub request_id: String,
    /// Who sent the flow.
    pub client: Client,
    /// HTTP method (`CONNECT` for tunnels).
    pub method: String,
    /// Destination host as requested.
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// Resolved address that was (or would have been) dialled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// ISO 3166 country of `address`, or `unknown`.
    pub country: String,
    /// How the flow arrived.
    pub transport: Transport,
    /// Path with query values removed: use [`strip_query_values`].
    pub path: String,
    /// Id of the deciding rule.
    pub rule: String,
    /// Policy mode.
    pub mode: Mode,
    /// What was done.
    pub action: Action,
    /// Closed reason label from the policy.
    pub reason: String,
    /// The rule's human reason, as shown to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The rule's legal citation, as shown to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citation: Option<String>,
    /// Personal-data findings (fingerprints only).
    pub data: Vec<DataFinding>,
    /// Bytes already sent upstream before the block (0 when blocked before forwarding).
    pub bytes_released: u64,
    /// A message inside a WebSocket: its number there, from 1, counting control frames
    /// (the method and path are its handshake's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket_message: Option<u64>,
    /// Policy in force.
    pub policy: PolicyRef,
    /// Sima version that wrote the record.
    pub sima_version: String,
}

/// Canonical form that is hashed: the record, then `seq` and `prev`.
#[derive(Serialize)]
struct CanonicalLine<'a> {
    #[serde(flatten)]
    record: &'a AuditRecord,
    seq: u64,
    prev: &'a str,
}

/// A line as stored.
#[derive(Deserialize)]
struct StoredLine {
    #[serde(flatten)]
    record: AuditRecord,
    seq: u64,
    prev: String,
    hash: String,
}

/// Only the `seq` of a line, for cheap look-ahead.
#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

/// Encodes one record as a stored line (with `\n`); returns the line and its hash.
fn encode_line(
    record: &AuditRecord,
    seq: u64,
    prev: &str,
) -> Result<(Vec<u8>, String), AuditError> {
    let mut line = serde_json::to_vec(&CanonicalLine { record, seq, prev }).map_err(|e| {
        AuditError::Serialize {
            detail: e.to_string(),
        }
    })?;
    let hash = hex::encode(Sha256::digest(&line));
    if line.pop() != Some(b'}') {
        return Err(AuditError::Serialize {
            detail: "canonical json does not end with `}`".to_string(),
        });
    }
    line.extend_from_slice(HASH_TAIL_PREFIX);
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    Ok((line, hash))
}

fn is_lower_hex64(s: &[u8]) -> bool {
    s.len() == 64 && s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks one line (without `\n`): shape, JSON, and that `hash` matches the bytes.
fn check_line(bytes: &[u8]) -> Result<StoredLine, (BreakKind, String)> {
    let n = bytes.len();
    if n < HASH_TAIL_LEN + 2 {
        return Err((
            BreakKind::Malformed,
            format!("line of {n} bytes is too short to be an audit record"),
        ));
    }
    let (body, tail) = bytes.split_at(n - HASH_TAIL_LEN);
    let tail_hash = tail
        .get(HASH_TAIL_PREFIX.len()..HASH_TAIL_LEN - 2)
        .unwrap_or_default();
    if !tail.starts_with(HASH_TAIL_PREFIX) || !tail.ends_with(b"\"}") || !is_lower_hex64(tail_hash)
    {
        return Err((
            BreakKind::Malformed,
            "line does not end with a `\"hash\":\"<64 hex>\"` field".to_string(),
        ));
    }
    let stored: StoredLine = serde_json::from_slice(bytes)
        .map_err(|e| (BreakKind::Malformed, format!("not an audit record: {e}")))?;
    if stored.hash.as_bytes() != tail_hash {
        return Err((
            BreakKind::Malformed,
            "more than one `hash` field".to_string(),
        ));
    }
    if !is_lower_hex64(stored.prev.as_bytes()) {
        return Err((
            BreakKind::Malformed,
            "`prev` is not 64 lower-case hex characters".to_string(),
        ));
    }
    let mut h = Sha256::new();
    h.update(body);
    h.update(b"}");
    let actual = hex::encode(h.finalize());
    if actual != stored.hash {
        return Err((
            BreakKind::Edited,
            format!(
                "content hashes to {actual} but the line says {}: the line was changed after it was written",
                stored.hash
            ),
        ));
    }
    Ok(stored)
}

/// Removes query values from a path, keeping parameter names: `/v1/users?id=5&q=x#f` becomes
/// `/v1/users?id=&q=`. Parameters without `=` are kept as they are; the fragment is dropped.
pub fn strip_query_values(path_and_query: &str) -> String {
    let without_fragment = path_and_query
        .split_once('#')
        .map_or(path_and_query, |(p, _)| p);
    let Some((path, query)) = without_fragment.split_once('?') else {
        return without_fragment.to_string();
    };
    let mut out = String::with_capacity(without_fragment.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) => {
                out.push_str(name);
                out.push('=');
            }
            None => out.push_str(pair),
        }
    }
    out
}
