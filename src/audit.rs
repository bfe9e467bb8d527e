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
    /// `CONNECT` tunnel that Sima decrypted and inspected.
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

// ---------------------------------------------------------------------------------------------
// Fingerprints
// ---------------------------------------------------------------------------------------------

/// Keyed fingerprints of detected values: `HMAC-SHA256(key, class || 0x00 || value)`, first 8
/// bytes as 16 hex characters. The same value gives the same fingerprint under the same key, so
/// records can be correlated without storing the value.
#[derive(Clone)]
pub struct Fingerprinter {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fingerprinter { key: <redacted> }")
    }
}

impl Fingerprinter {
    /// Loads the 32-byte key at `path`, or creates it (random, mode 0600, `create_new`) when
    /// it does not exist. The file holds the key as 64 hex characters; an operator-provided
    /// file may also hold 32 raw bytes. A key file accessible by group or others is refused.
    pub fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        match opts.open(path) {
            Ok(file) => Self::create(path, file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(io_error("create key file", path, &e)),
        }
    }

    fn create(path: &Path, mut file: File) -> Result<Self, AuditError> {
        let mut key = [0u8; 32];
        let written = getrandom::fill(&mut key)
            .map_err(|e| AuditError::Random {
                detail: e.to_string(),
            })
            .and_then(|()| {
                set_owner_only(&file, path)?;
                let text = format!("{}\n", hex::encode(key));
                file.write_all(text.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| io_error("write key file", path, &e))
            });
        if let Err(e) = written {
            drop(file);
            let _ = fs::remove_file(path);
            return Err(e);
        }
        if let Some(parent) = path.parent() {
            let _ = sync_dir(parent);
        }
        Self::from_key(&key)
    }

    fn load(path: &Path) -> Result<Self, AuditError> {
        let meta = fs::metadata(path).map_err(|e| io_error("read key file", path, &e))?;
        if !meta.is_file() {
            return Err(AuditError::KeyInvalid {
                path: path.to_path_buf(),
                detail: "not a regular file".to_string(),
            });
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(AuditError::KeyPermissions {
                    path: path.to_path_buf(),
                    mode,
                });
            }
        }
        let bytes = fs::read(path).map_err(|e| io_error("read key file", path, &e))?;
        let invalid = |detail: String| AuditError::KeyInvalid {
            path: path.to_path_buf(),
            detail,
        };
        let key = if bytes.len() == 32 {
            bytes
        } else {
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| invalid(format!("{} bytes that are not hex text", bytes.len())))?;
            let key = hex::decode(text.trim()).map_err(|e| invalid(format!("not hex: {e}")))?;
            if key.len() != 32 {
                return Err(invalid(format!("{} bytes of key", key.len())));
            }
            key
        };
        Self::from_key(&key).map_err(|_| invalid("unusable key".to_string()))
    }

    /// Builds a fingerprinter from key bytes (at least 32 bytes).
    pub fn from_key(key: &[u8]) -> Result<Self, AuditError> {
        let invalid = |detail: &str| AuditError::KeyInvalid {
            path: PathBuf::from("<memory>"),
            detail: detail.to_string(),
        };
        if key.len() < 32 {
            return Err(invalid("shorter than 32 bytes"));
        }
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| invalid("rejected"))?;
        Ok(Self { mac })
    }

    /// Fingerprint of `value` found as data class `class`: 16 lower-case hex characters.
    pub fn fingerprint(&self, class: &str, value: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(class.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        let out = mac.finalize().into_bytes();
        hex::encode(out.get(..8).unwrap_or_default())
    }
}

#[cfg(unix)]
fn set_owner_only(file: &File, path: &Path) -> Result<(), AuditError> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(|e| io_error("chmod key file", path, &e))
}

#[cfg(not(unix))]
fn set_owner_only(_file: &File, _path: &Path) -> Result<(), AuditError> {
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

// ---------------------------------------------------------------------------------------------
// File naming
// ---------------------------------------------------------------------------------------------

/// Parses `audit-YYYYMMDD-NNN.jsonl` into (date, index).
fn parse_file_name(name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    let (date, index) = rest.split_once('-')?;
    if date.len() != 8
        || index.len() < 3
        || !date.bytes().all(|c| c.is_ascii_digit())
        || !index.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    Some((date.parse().ok()?, index.parse().ok()?))
}

fn file_name(date: u32, index: u32) -> String {
    format!("audit-{date:08}-{index:03}.jsonl")
}

/// Sort key: audit names by (date, index) numerically, after any other names.
fn sort_key(path: &Path) -> (Option<(u32, u32)>, std::ffi::OsString) {
    let name = path.file_name().unwrap_or_default();
    (name.to_str().and_then(parse_file_name), name.to_os_string())
}

/// Audit files directly inside `dir`, oldest first.
fn list_audit_files(dir: &Path) -> Result<Vec<(PathBuf, u32, u32)>, AuditError> {
    let entries = fs::read_dir(dir).map_err(|e| io_error("list directory", dir, &e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list directory", dir, &e))?;
        let name = entry.file_name();
        if let Some((date, index)) = name.to_str().and_then(parse_file_name) {
            out.push((entry.path(), date, index));
        }
    }
    out.sort_by_key(|(_, d, i)| (*d, *i));
    Ok(out)
}

fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, AuditError> {
    let mut files = Vec::new();
    for p in paths {
        let meta = fs::metadata(p).map_err(|e| io_error("open", p, &e))?;
        if meta.is_dir() {
            files.extend(list_audit_files(p)?.into_iter().map(|(f, _, _)| f));
        } else {
            files.push(p.clone());
        }
    }
    files.sort_by_cached_key(|p| (sort_key(p), p.clone()));
    files.dedup();
    if files.is_empty() {
        let paths = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(AuditError::NoFiles { paths });
    }
    Ok(files)
}

// ---------------------------------------------------------------------------------------------
// Verify
// ---------------------------------------------------------------------------------------------

/// How the chain is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BreakKind {
    /// The line's content does not match its hash, or its `prev` does not match the previous
    /// record's hash (that record was rewritten and rehashed).
    Edited,
    /// `seq` jumps forward and the missing records appear nowhere later.
    Deleted,
    /// `seq` goes backward or repeats, or jumps forward to records that appear later.
    Reordered,
    /// A file ends without a newline: the last record is incomplete.
    Truncated,
    /// The line is not an audit record (bad JSON, missing fields, no hash field).
    Malformed,
}

impl fmt::Display for BreakKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BreakKind::Edited => "edited",
            BreakKind::Deleted => "deleted",
            BreakKind::Reordered => "reordered",
            BreakKind::Truncated => "truncated",
            BreakKind::Malformed => "malformed",
        })
    }
}

/// The first broken link found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// The file holding the offending line.
    pub file: PathBuf,
    /// 1-based line number in that file.
    pub line: u64,
    /// What is wrong.
    pub kind: BreakKind,
    /// Human-readable explanation.
    pub detail: String,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.kind,
            self.detail
        )
    }
}

/// Result of [`verify`]. The chain is intact only when `broken` is `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Number of files read.
    pub files: usize,
    /// Records that verified before the first break (all of them when intact).
    pub records: u64,
    /// `seq` of the first record, if any.
    pub first_seq: Option<u64>,
    /// `seq` of the last verified record, if any.
    pub last_seq: Option<u64>,
    /// `hash` of the last verified record: compare it with a copy kept elsewhere to detect
    /// records removed from the end.
    pub last_hash: Option<String>,
    /// Whether the first record is the chain's start (`seq` 0, zero `prev`); false when older
    /// files were removed by retention or not passed in.
    pub starts_at_genesis: bool,
    /// The first broken link, if any.
    pub broken: Option<Broken>,
}

impl VerifyReport {
    /// True when every line verified.
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
    }
}

struct Progress {
    total: u64,
    done: u64,
    next: u64,
    enabled: bool,
}

impl Progress {
    fn new(files: &[PathBuf]) -> Self {
        let total = files
            .iter()
            .filter_map(|f| fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        Self {
            total,
            done: 0,
            next: PROGRESS_EVERY,
            enabled: total >= PROGRESS_EVERY && io::stderr().is_terminal(),
        }
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        if self.enabled && self.done >= self.next {
            self.next += PROGRESS_EVERY;
            eprint!("\r{}", progress_bar(self.done, self.total));
            if self.done >= self.total {
                eprintln!();
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // Leave the terminal on a fresh line if the bar was drawn and not finished.
        if self.enabled && self.done < self.total && self.next > PROGRESS_EVERY {
            eprintln!();
        }
    }
}

/// `verify [#########.............]  45% 1234/2740 MiB`, redrawn in place on a terminal.
fn progress_bar(done: u64, total: u64) -> String {
    const WIDTH: u64 = 30;
    let total = total.max(1);
    let filled = (done.min(total) * WIDTH / total) as usize;
    format!(
        "verify [{}{}] {:>3}% {}/{} MiB",
        "#".repeat(filled),
        ".".repeat(WIDTH as usize - filled),
        done.min(total) * 100 / total,
        done / (1024 * 1024),
        total / (1024 * 1024)
    )
}

/// Whether any line from `reader` onwards, then in `later`, has `seq` in `lo..hi`.
fn seq_appears_later(reader: &mut impl BufRead, later: &[PathBuf], lo: u64, hi: u64) -> bool {
    fn scan(r: &mut impl BufRead, lo: u64, hi: u64) -> bool {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(_) => {
                    if let Ok(s) = serde_json::from_slice::<SeqOnly>(buf.trim_ascii_end()) {
                        if (lo..hi).contains(&s.seq) {
                            return true;
                        }
                    }
                }
            }
        }
    }
    if scan(reader, lo, hi) {
        return true;
    }
    later.iter().any(|p| {
        File::open(p)
            .map(|f| scan(&mut BufReader::new(f), lo, hi))
            .unwrap_or(false)
    })
}

/// Verifies the chain over `paths` (files, or directories whose `audit-*.jsonl` files are
/// taken), read in name order (audit names by date then number). Every line must parse, match
/// its hash, and follow the previous one (`seq` + 1, `prev` = previous `hash`); the first
/// record read may start anywhere (retention removes old files) but a `seq` 0 record must
/// have a zero `prev`. Stops at the first broken link and reports it in
/// [`VerifyReport::broken`]. Errors only when files cannot be read. Prints progress to stderr
/// every 64 MiB when stderr is a terminal and the log is larger than that.
pub fn verify(paths: &[PathBuf]) -> Result<VerifyReport, AuditError> {
    let files = collect_files(paths)?;
    let mut report = VerifyReport {
        files: files.len(),
        records: 0,
        first_seq: None,
        last_seq: None,
        last_hash: None,
        starts_at_genesis: false,
        broken: None,
    };
    let mut progress = Progress::new(&files);
    // (seq, hash) of the last good record.
    let mut last: Option<(u64, String)> = None;
    let mut buf = Vec::new();
    for (fi, path) in files.iter().enumerate() {
        let file = File::open(path).map_err(|e| io_error("open", path, &e))?;
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let mut line_no = 0u64;
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| io_error("read", path, &e))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            progress.add(n as u64);
            let broken = |kind, detail| {
                Some(Broken {
                    file: path.clone(),
                    line: line_no,
                    kind,
                    detail,
                })
            };
            if buf.pop() != Some(b'\n') {
                report.broken = broken(
                    BreakKind::Truncated,
                    format!(
                        "file ends without a newline: the last record is incomplete ({n} bytes)"
                    ),
                );
                return Ok(report);
            }
            let stored = match check_line(&buf) {
                Ok(s) => s,
                Err((kind, detail)) => {
                    report.broken = broken(kind, detail);
                    return Ok(report);
                }
            };
            let problem = match &last {
                None if stored.seq == 0 && stored.prev != GENESIS_PREV => Some((
                    BreakKind::Edited,
                    "the first record (seq 0) must have a zero `prev`".to_string(),
                )),
                None => None,
                Some((last_seq, last_hash)) => {
                    let expected = last_seq.saturating_add(1);
                    if stored.seq == expected {
                        (stored.prev != *last_hash).then(|| {
                            (
                                BreakKind::Edited,
                                format!(
                                    "`prev` {} is not the hash of record {last_seq} ({last_hash}): that record was rewritten or this one was forged",
                                    stored.prev
                                ),
                            )
                        })
                    } else if stored.seq > expected {
                        let later = files.get(fi + 1..).unwrap_or_default();
                        if seq_appears_later(&mut reader, later, expected, stored.seq) {
                            Some((
                                BreakKind::Reordered,
                                format!(
                                    "seq {} follows {last_seq}: records were moved",
                                    stored.seq
                                ),
                            ))
                        } else {
                            Some((
                                BreakKind::Deleted,
                                format!(
                                    "seq {} follows {last_seq}: records {expected}..={} are missing",
                                    stored.seq,
                                    stored.seq - 1
                                ),
                            ))
                        }
                    } else {
                        Some((
                            BreakKind::Reordered,
                            format!(
                                "seq {} follows {last_seq}: records are out of order or repeated",
                                stored.seq
                            ),
                        ))
                    }
                }
            };
            if let Some((kind, detail)) = problem {
                report.broken = broken(kind, detail);
                return Ok(report);
            }
            if last.is_none() {
                report.first_seq = Some(stored.seq);
                report.starts_at_genesis = stored.seq == 0;
            }
            report.records += 1;
            report.last_seq = Some(stored.seq);
            report.last_hash = Some(stored.hash.clone());
            last = Some((stored.seq, stored.hash));
        }
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------------------------

/// One row of a summary table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CountRow {
    /// The rule, class, country, group or host.
    pub key: String,
    /// Flows blocked.
    pub blocked: u64,
    /// Flows reported (report mode).
    pub reported: u64,
}

/// Counts over an audit log, from [`summary`]. Serializes for `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Files read.
    pub files: usize,
    /// Start of the window (`None`: everything).
    pub since: Option<Timestamp>,
    /// Records in the window.
    pub records: u64,
    /// Records with action `block`.
    pub blocked: u64,
    /// Records with action `report`.
    pub reported: u64,
    /// Records with action `allow`.
    pub allowed: u64,
    /// Lines that were not audit records and were skipped (run `verify`).
    pub skipped_lines: u64,
    /// Blocked/reported flows by rule, most first.
    pub by_rule: Vec<CountRow>,
    /// Blocked/reported flows by data class (a flow counts once per class).
    pub by_class: Vec<CountRow>,
    /// Blocked/reported flows by destination country.
    pub by_country: Vec<CountRow>,
    /// Blocked/reported flows by client group (`-` when none).
    pub by_group: Vec<CountRow>,
    /// The 10 destination hosts with the most blocked/reported flows.
    pub top_hosts: Vec<CountRow>,
}

#[derive(Default)]
struct Counter(HashMap<String, (u64, u64)>);

impl Counter {
    fn add(&mut self, key: &str, action: Action) {
        let entry = self.0.entry(key.to_string()).or_default();
        match action {
            Action::Block => entry.0 += 1,
            Action::Report => entry.1 += 1,
            Action::Allow => {}
        }
    }

    fn rows(self, limit: usize) -> Vec<CountRow> {
        let mut rows: Vec<CountRow> = self
            .0
            .into_iter()
            .map(|(key, (blocked, reported))| CountRow {
                key,
                blocked,
                reported,
            })
            .collect();
        rows.sort_by(|a, b| {
            (b.blocked + b.reported)
                .cmp(&(a.blocked + a.reported))
                .then_with(|| a.key.cmp(&b.key))
        });
        rows.truncate(limit);
        rows
    }
}

/// Counts blocked and reported flows in `paths` (files or directories, as for [`verify`]),
/// only records newer than `since` ago when given. Lines that do not parse are skipped and
/// counted; the chain is not checked (use [`verify`]).
pub fn summary(paths: &[PathBuf], since: Option<Duration>) -> Result<Summary, AuditError> {
    let files = collect_files(paths)?;
    let cutoff = since.map(|d| {
        Timestamp::from_system_time(SystemTime::now().checked_sub(d).unwrap_or(UNIX_EPOCH))
    });
    let mut s = Summary {
        files: files.len(),
        since: cutoff,
        records: 0,
        blocked: 0,
        reported: 0,
        allowed: 0,
        skipped_lines: 0,
        by_rule: Vec::new(),
        by_class: Vec::new(),
        by_country: Vec::new(),
        by_group: Vec::new(),
        top_hosts: Vec::new(),
    };
    let (mut rule, mut class, mut country, mut group, mut host) = (
        Counter::default(),
        Counter::default(),
        Counter::default(),
        Counter::default(),
        Counter::default(),
    );
    let mut buf = Vec::new();
    for path in &files {
        // A file holds records of its name's day or earlier: skip whole days before the cutoff.
        if let (Some(c), Some((date, _))) = (cutoff, sort_key(path).0) {
            if days_from_file_date(date) < c.days() {
                continue;
            }
        }
        let file = File::open(path).map_err(|e| io_error("open", path, &e))?;
        let mut reader = BufReader::with_capacity(1 << 16, file);
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| io_error("read", path, &e))?;
            if n == 0 {
                break;
            }
            let Ok(line) = serde_json::from_slice::<StoredLine>(buf.trim_ascii_end()) else {
                s.skipped_lines += 1;
                continue;
            };
            let r = line.record;
            if cutoff.is_some_and(|c| r.time < c) {
                continue;
            }
            s.records += 1;
            match r.action {
                Action::Block => s.blocked += 1,
                Action::Report => s.reported += 1,
                Action::Allow => {
                    s.allowed += 1;
                    continue;
                }
            }
            rule.add(&r.rule, r.action);
            country.add(&r.country, r.action);
            group.add(r.client.group.as_deref().unwrap_or("-"), r.action);
            host.add(&r.host, r.action);
            let mut classes: Vec<&str> = r.data.iter().map(|d| d.class.as_str()).collect();
            classes.sort_unstable();
            classes.dedup();
            for c in classes {
                class.add(c, r.action);
            }
        }
    }
    s.by_rule = rule.rows(usize::MAX);
    s.by_class = class.rows(usize::MAX);
    s.by_country = country.rows(usize::MAX);
    s.by_group = group.rows(usize::MAX);
    s.top_hosts = host.rows(10);
    Ok(s)
}

impl Summary {
    /// Renders aligned plain-text tables (one per dimension) with a header line.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let window = self
            .since
            .map_or_else(|| "all time".to_string(), |t| format!("since {t}"));
        out.push_str(&format!(
            "audit summary ({window}): {} records in {} files: {} blocked, {} reported, {} allowed\n",
            self.records, self.files, self.blocked, self.reported, self.allowed
        ));
        if self.skipped_lines > 0 {
            out.push_str(&format!(
                "warning: {} lines were not audit records; run `sima audit verify`\n",
                self.skipped_lines
            ));
        }
        let tables: [(&str, &[CountRow]); 5] = [
            ("rule", &self.by_rule),
            ("data class", &self.by_class),
            ("country", &self.by_country),
            ("client group", &self.by_group),
            ("top host", &self.top_hosts),
        ];
        for (title, rows) in tables {
            out.push('\n');
            let width = rows
                .iter()
                .map(|r| r.key.chars().count())
                .chain([title.len()])
                .max()
                .unwrap_or(0);
            out.push_str(&format!(
                "{:<width$}  {:>9}  {:>9}\n",
                title.to_uppercase(),
                "BLOCKED",
                "REPORTED"
            ));
            if rows.is_empty() {
                out.push_str("(none)\n");
            }
            for r in rows {
                out.push_str(&format!(
                    "{:<width$}  {:>9}  {:>9}\n",
                    r.key, r.blocked, r.reported
                ));
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

/// Writer settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Directory of the audit files; created when missing.
    pub dir: PathBuf,
    /// Rotate once a file would grow beyond this (default 64 MiB). A single larger record
    /// still gets a file of its own.
    pub max_file_bytes: u64,
    /// Records arriving within this window after the first share one fsync (default 5 ms;
    /// zero syncs whatever is already queued).
    pub fsync_delay: Duration,
    /// Queue capacity (default 4096); `record` fails with `QueueFull` beyond it.
    pub queue: usize,
    /// Files whose name date is more than this many days before the newest file are deleted
    /// whenever a file is opened (default 180; 0 keeps everything).
    pub retention_days: u32,
}

impl AuditConfig {
    /// Defaults for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            fsync_delay: DEFAULT_FSYNC_DELAY,
            queue: DEFAULT_QUEUE,
            retention_days: DEFAULT_RETENTION_DAYS,
        }
    }
}

/// Kinds of write failure, for metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// An I/O error other than a full disk.
    Io,
    /// The disk was full.
    DiskFull,
    /// The queue was full.
    QueueFull,
    /// The record could not be serialized.
    Serialize,
}

impl FailureKind {
    /// All kinds, for metric labels.
    pub const ALL: [FailureKind; 4] = [
        FailureKind::Io,
        FailureKind::DiskFull,
        FailureKind::QueueFull,
        FailureKind::Serialize,
    ];

    /// The label (`io`, `disk_full`, `queue_full`, `serialize`).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Io => "io",
            FailureKind::DiskFull => "disk_full",
            FailureKind::QueueFull => "queue_full",
            FailureKind::Serialize => "serialize",
        }
    }
}

/// Counters for metrics; read them with [`AuditStats::records_written`] and
/// [`AuditStats::write_failures`].
#[derive(Debug, Default)]
pub struct AuditStats {
    written: [AtomicU64; 3],
    failures: [AtomicU64; 4],
}

impl AuditStats {
    /// Records written and fsynced with this action.
    pub fn records_written(&self, action: Action) -> u64 {
        self.written
            .get(action as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Records that failed with this kind of failure.
    pub fn write_failures(&self, kind: FailureKind) -> u64 {
        self.failures
            .get(kind as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn count_written(&self, action: Action) {
        if let Some(c) = self.written.get(action as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count_failure(&self, e: &AuditError) {
        let kind = match e {
            AuditError::DiskFull { .. } => FailureKind::DiskFull,
            AuditError::QueueFull { .. } => FailureKind::QueueFull,
            AuditError::Serialize { .. } => FailureKind::Serialize,
            AuditError::Closed => return,
            _ => FailureKind::Io,
        };
        if let Some(c) = self.failures.get(kind as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A torn last line removed at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The file that was truncated.
    pub file: PathBuf,
    /// Bytes removed from its end.
    pub bytes_removed: u64,
}

/// What the writer found when it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartState {
    /// `seq` the next record gets.
    pub next_seq: u64,
    /// `prev` the next record gets.
    pub prev: String,
    /// Set when the newest file ended with an incomplete record (a crash during a write),
    /// which was cut off; that record was never acknowledged.
    pub torn_tail: Option<TornTail>,
    /// The file the writer appends to.
    pub file: PathBuf,
}

/// Starts the audit writer.
#[derive(Debug)]
pub struct AuditWriter;

struct Shared {
    healthy: AtomicBool,
    stats: AuditStats,
    start: StartState,
    capacity: usize,
}

type Reply = oneshot::Sender<Result<(), AuditError>>;

enum Msg {
    Record(Box<AuditRecord>, Reply),
    Close(Reply),
}

/// Cheap, cloneable handle to the writer task.
#[derive(Clone)]
pub struct AuditHandle {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

impl fmt::Debug for AuditHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditHandle")
            .field("healthy", &self.healthy())
            .field("start", &self.shared.start)
            .finish_non_exhaustive()
    }
}

struct OpenFile {
    file: File,
    path: PathBuf,
    date: u32,
    index: u32,
    /// Length known to end after a complete, fsynced line.
    len: u64,
}

struct WriterState {
    dir: PathBuf,
    max_file_bytes: u64,
    retention_days: u32,
    file: Option<OpenFile>,
    /// A file left with a partial line that could not be cut yet: (path, good length).
    dirty: Option<(PathBuf, u64)>,
    next_seq: u64,
    prev: String,
}

impl AuditWriter {
    /// Recovers the chain from `cfg.dir` (creating it when missing), cuts a torn last line
    /// (with a warning, see [`StartState::torn_tail`]), opens the file to append to, and
    /// spawns the writer task on the current tokio runtime. Does blocking file I/O: call it at
    /// startup. Fails when the directory cannot be created, read or written, when the newest
    /// record is damaged, or when called outside a tokio runtime.
    pub fn start(
        cfg: AuditConfig,
    ) -> Result<(AuditHandle, tokio::task::JoinHandle<()>), AuditError> {
        if cfg.queue == 0 || cfg.max_file_bytes == 0 {
            return Err(AuditError::Config {
                detail: "audit queue and max_file_bytes must be greater than 0".to_string(),
            });
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| AuditError::Config {
            detail: "the audit writer must be started inside the tokio runtime".to_string(),
        })?;
        let (state, start) = WriterState::recover(&cfg)?;
        let shared = Arc::new(Shared {
            healthy: AtomicBool::new(true),
            stats: AuditStats::default(),
            start,
            capacity: cfg.queue,
        });
        let (tx, rx) = mpsc::channel(cfg.queue);
        let task = runtime.spawn(run_writer(
            rx,
            state,
            Arc::clone(&shared),
            cfg.fsync_delay,
            cfg.queue,
        ));
        Ok((AuditHandle { tx, shared }, task))
    }
}

impl AuditHandle {
    /// Queues `rec` and returns once it is written and fsynced. Fails at once with
    /// `QueueFull` when the queue is full and with `Closed` after [`AuditHandle::close`].
    /// Dropping the future after queueing does not cancel the write.
    pub async fn record(&self, rec: AuditRecord) -> Result<(), AuditError> {
        let (reply, done) = oneshot::channel();
        match self.tx.try_send(Msg::Record(Box::new(rec), reply)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let e = AuditError::QueueFull {
                    capacity: self.shared.capacity,
                };
                self.shared.stats.count_failure(&e);
                return Err(e);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(AuditError::Closed),
        }
        done.await.unwrap_or(Err(AuditError::Closed))
    }

    /// False after a write failure, until a later write succeeds (for `/readyz`).
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &AuditStats {
        &self.shared.stats
    }

    /// What the writer found at start.
    pub fn start_state(&self) -> &StartState {
        &self.shared.start
    }

    /// Graceful shutdown: writes and fsyncs everything queued before this call, then stops
    /// the writer (later `record` calls fail with `Closed`). Returns the last batch's error,
    /// if it failed.
    pub async fn close(&self) -> Result<(), AuditError> {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Msg::Close(reply)).await.is_err() {
            return Ok(()); // already stopped
        }
        done.await.unwrap_or(Err(AuditError::Closed))
    }
}

async fn run_writer(
    mut rx: mpsc::Receiver<Msg>,
    state: WriterState,
    shared: Arc<Shared>,
    delay: Duration,
    max_batch: usize,
) {
    let mut state = Some(state);
    while let Some(first) = rx.recv().await {
        let mut records = Vec::new();
        let mut replies = Vec::new();
        let mut closes = Vec::new();
        let mut take = |m: Msg, records: &mut Vec<AuditRecord>, closes: &mut Vec<Reply>| match m {
            Msg::Record(r, reply) => {
                records.push(*r);
                replies.push(reply);
            }
            Msg::Close(reply) => closes.push(reply),
        };
        take(first, &mut records, &mut closes);
        if closes.is_empty() && !delay.is_zero() {
            let deadline = tokio::time::Instant::now() + delay;
            while closes.is_empty() && records.len() < max_batch {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(m)) => take(m, &mut records, &mut closes),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        while closes.is_empty() && records.len() < max_batch {
            match rx.try_recv() {
                Ok(m) => take(m, &mut records, &mut closes),
                Err(_) => break,
            }
        }
        if !closes.is_empty() {
            rx.close();
            while let Ok(m) = rx.try_recv() {
                take(m, &mut records, &mut closes);
            }
        }
        let Some(mut st) = state.take() else { break };
        let joined = tokio::task::spawn_blocking(move || {
            let results = st.write_batch(&records);
            (st, records, results)
        })
        .await;
        let Ok((st, records, results)) = joined else {
            // The blocking task was cancelled (runtime shutting down): nothing more can be written.
            shared.healthy.store(false, Ordering::Relaxed);
            for r in replies.into_iter().chain(closes) {
                let _ = r.send(Err(AuditError::Closed));
            }
            break;
        };
        state = Some(st);
        let mut batch_error = None;
        let mut results_error: Option<AuditError> = None;
        for ((rec, result), reply) in records.iter().zip(results).zip(replies) {
            match &result {
                Ok(()) => shared.stats.count_written(rec.action),
                Err(e) => {
                    shared.stats.count_failure(e);
                    batch_error.get_or_insert_with(|| e.clone());
                    if !matches!(e, AuditError::Serialize { .. }) {
                        results_error.get_or_insert_with(|| e.clone());
                    }
                }
            }
            let _ = reply.send(result);
        }
        let write_error = results_error.as_ref();
        if let Some(e) = write_error {
            if shared.healthy.swap(false, Ordering::Relaxed) {
                tracing::error!(error = %e, "audit log write failed");
            }
        } else if batch_error.is_none()
            && !records.is_empty()
            && !shared.healthy.swap(true, Ordering::Relaxed)
        {
            tracing::info!("audit log writes are succeeding again");
        }
        if !closes.is_empty() {
            for c in closes {
                let _ = c.send(batch_error.clone().map_or(Ok(()), Err));
            }
            break;
        }
    }
}

/// Turns the `Ok` results from index `from` on (records not yet on disk) into `e`.
fn fail_from(results: &mut [Result<(), AuditError>], from: usize, e: &AuditError) {
    for r in results.iter_mut().skip(from) {
        if r.is_ok() {
            *r = Err(e.clone());
        }
    }
}

/// Position of the last `\n` in `file` before byte `end`, scanning backwards.
fn last_newline_before(file: &mut File, end: u64) -> io::Result<Option<u64>> {
    const CHUNK: u64 = 64 * 1024;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut hi = end;
    while hi > 0 {
        let lo = hi.saturating_sub(CHUNK);
        let len = usize::try_from(hi - lo).unwrap_or(0);
        let chunk = buf.get_mut(..len).unwrap_or_default();
        file.seek(SeekFrom::Start(lo))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&c| c == b'\n') {
            return Ok(Some(lo + i as u64));
        }
        hi = lo;
    }
    Ok(None)
}

impl WriterState {
    fn recover(cfg: &AuditConfig) -> Result<(Self, StartState), AuditError> {
        let dir = &cfg.dir;
        fs::create_dir_all(dir).map_err(|e| io_error("create directory", dir, &e))?;
        let files = list_audit_files(dir)?;
        let mut torn_tail = None;
        let mut next_seq = 0;
        let mut prev = GENESIS_PREV.to_string();
        // (path, date, index, length) of the newest file, after any repair.
        let mut newest: Option<(PathBuf, u32, u32, u64)> = None;
        for (path, date, index) in files.iter().rev() {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| io_error("open", path, &e))?;
            let io = |e: io::Error| io_error("read", path, &e);
            let mut len = file.metadata().map_err(io)?.len();
            if len > 0 {
                let mut last = [0u8; 1];
                file.seek(SeekFrom::Start(len - 1)).map_err(io)?;
                file.read_exact(&mut last).map_err(io)?;
                if last[0] != b'\n' {
                    let keep = last_newline_before(&mut file, len)
                        .map_err(io)?
                        .map_or(0, |p| p + 1);
                    file.set_len(keep)
                        .and_then(|()| file.sync_all())
                        .map_err(|e| io_error("truncate torn record in", path, &e))?;
                    tracing::warn!(
                        file = %path.display(),
                        bytes_removed = len - keep,
                        "audit log ended with an incomplete record (crash during a write); cut it off, the chain continues from the last complete record"
                    );
                    torn_tail = Some(TornTail {
                        file: path.clone(),
                        bytes_removed: len - keep,
                    });
                    len = keep;
                }
            }
            if newest.is_none() {
                newest = Some((path.clone(), *date, *index, len));
            }
            if len == 0 {
                continue; // empty file: the chain state is in an older one
            }
            let start = last_newline_before(&mut file, len - 1)
                .map_err(io)?
                .map_or(0, |p| p + 1);
            let mut line = vec![0u8; usize::try_from(len - 1 - start).unwrap_or(0)];
            file.seek(SeekFrom::Start(start)).map_err(io)?;
            file.read_exact(&mut line).map_err(io)?;
            let stored = check_line(&line).map_err(|(kind, detail)| AuditError::Corrupt {
                path: path.clone(),
                offset: start,
                detail: format!("{kind}: {detail}"),
            })?;
            next_seq = stored.seq.saturating_add(1);
            prev = stored.hash;
            break;
        }
        let mut state = Self {
            dir: dir.clone(),
            max_file_bytes: cfg.max_file_bytes,
            retention_days: cfg.retention_days,
            file: None,
            dirty: None,
            next_seq,
            prev: prev.clone(),
        };
        let today = Timestamp::now().file_date();
        match newest {
            Some((path, date, index, len)) if date == today && len < cfg.max_file_bytes => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|e| io_error("open", &path, &e))?;
                state.file = Some(OpenFile {
                    file,
                    path,
                    date,
                    index,
                    len,
                });
            }
            Some((_, date, index, _)) => {
                state.open_new(today.max(date), (date >= today).then_some(index))?
            }
            None => state.open_new(today, None)?,
        }
        let file = state
            .file
            .as_ref()
            .map(|f| f.path.clone())
            .unwrap_or_default();
        Ok((
            state,
            StartState {
                next_seq,
                prev,
                torn_tail,
                file,
            },
        ))
    }

    /// Creates the next file for `date` (after `last_index` when known) and prunes old files.
    fn open_new(&mut self, date: u32, last_index: Option<u32>) -> Result<(), AuditError> {
        let mut index = match last_index {
            Some(i) => i + 1,
            None => list_audit_files(&self.dir)?
                .iter()
                .filter(|(_, d, _)| *d == date)
                .map(|(_, _, i)| *i)
                .max()
                .unwrap_or(0)
                .saturating_add(1),
        };
        let mut attempts = 0;
        let (file, path) = loop {
            let path = self.dir.join(file_name(date, index));
            match OpenOptions::new().append(true).create_new(true).open(&path) {
                Ok(f) => break (f, path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 1000 => {
                    attempts += 1;
                    index += 1;
                }
                Err(e) => return Err(io_error("create", &path, &e)),
            }
        };
        sync_dir(&self.dir).map_err(|e| io_error("fsync directory", &self.dir, &e))?;
        self.file = Some(OpenFile {
            file,
            path,
            date,
            index,
            len: 0,
        });
        self.prune(date);
        Ok(())
    }

    /// Deletes files dated more than `retention_days` before `today`, never the current one.
    fn prune(&self, today: u32) {
        if self.retention_days == 0 {
            return;
        }
        let cutoff = days_from_file_date(today) - i64::from(self.retention_days);
        let current = self.file.as_ref().map(|f| f.path.as_path());
        let Ok(files) = list_audit_files(&self.dir) else {
            return;
        };
        for (path, date, _) in files {
            if days_from_file_date(date) >= cutoff || Some(path.as_path()) == current {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "deleted audit file past retention")
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot delete audit file past retention")
                }
            }
        }
    }

    /// Writes and fsyncs `pending` to the current file; on failure cuts the file back.
    fn flush(&mut self, pending: &mut Vec<u8>) -> Result<(), AuditError> {
        if pending.is_empty() {
            return Ok(());
        }
        let Some(f) = self.file.as_mut() else {
            pending.clear();
            return Err(AuditError::Closed);
        };
        let result = f
            .file
            .write_all(pending)
            .map_err(|e| io_error("write", &f.path, &e))
            .and_then(|()| {
                f.file
                    .sync_data()
                    .map_err(|e| io_error("fsync", &f.path, &e))
            });
        match result {
            Ok(()) => f.len += pending.len() as u64,
            Err(_) => {
                // Remove any partial line so the file stays a valid chain prefix.
                if f.file
                    .set_len(f.len)
                    .and_then(|()| f.file.sync_data())
                    .is_err()
                {
                    self.dirty = Some((f.path.clone(), f.len));
                    self.file = None;
                }
            }
        }
        pending.clear();
        result
    }

    /// Writes `records` in order; one fsync per file touched. A failure fails the rest.
    fn write_batch(&mut self, records: &[AuditRecord]) -> Vec<Result<(), AuditError>> {
        let mut results: Vec<Result<(), AuditError>> = Vec::with_capacity(records.len());
        let mut pending = Vec::new();
        let mut pending_from = 0; // index of the first record in `pending`
        let mut seq = self.next_seq;
        let mut prev = self.prev.clone();
        let mut failed: Option<AuditError> = None;
        for (i, rec) in records.iter().enumerate() {
            if let Some(e) = &failed {
                results.push(Err(e.clone()));
                continue;
            }
            let (line, hash) = match encode_line(rec, seq, &prev) {
                Ok(x) => x,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            let date = rec.time.file_date();
            let rotate = match &self.file {
                None => true,
                Some(f) => {
                    let used = f.len + pending.len() as u64;
                    date > f.date || (used > 0 && used + line.len() as u64 > self.max_file_bytes)
                }
            };
            if rotate {
                if let Err(e) = self.flush(&mut pending) {
                    fail_from(&mut results, pending_from, &e);
                    results.push(Err(e.clone()));
                    failed = Some(e);
                    continue;
                }
                self.next_seq = seq;
                self.prev.clone_from(&prev);
                pending_from = i;
                if let Err(e) = self.rotate(date) {
                    results.push(Err(e.clone()));
                    failed = Some(e);
                    continue;
                }
            }
            pending.extend_from_slice(&line);
            results.push(Ok(()));
            seq += 1;
            prev = hash;
        }
        if failed.is_none() {
            match self.flush(&mut pending) {
                Ok(()) => {
                    self.next_seq = seq;
                    self.prev = prev;
                }
                Err(e) => fail_from(&mut results, pending_from, &e),
            }
        }
        results
    }

    fn rotate(&mut self, record_date: u32) -> Result<(), AuditError> {
        if let Some((path, len)) = self.dirty.take() {
            let cut = OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(len).and_then(|()| f.sync_data()));
            if cut.is_err() {
                self.dirty = Some((path, len));
            }
        }
        let (date, last_index) = match &self.file {
            Some(f) if record_date <= f.date => (f.date, Some(f.index)),
            _ => (record_date, None),
        };
        let date = match &self.dirty {
            Some((p, _)) => sort_key(p).0.map_or(date, |(d, _)| d.max(date)),
            None => date,
        };
        self.open_new(date, last_index)
    }
}

#[cfg(test)]
mod progress_tests {
    #[test]
    fn bar_shape() {
        assert_eq!(
            super::progress_bar(0, 100),
            format!("verify [{}]   0% 0/0 MiB", ".".repeat(30))
        );
        let half = super::progress_bar(64 << 20, 128 << 20);
        assert!(
            half.contains(&"#".repeat(15)) && half.contains(" 50% 64/128 MiB"),
            "{half}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn rec(i: u64, action: Action, rule: &str, class: &str, country: &str) -> AuditRecord {
        AuditRecord {
            time: Timestamp::now(),
            request_id: format!("req-{i}"),
            client: Client {
                address: "10.0.0.7".parse().unwrap(),
                group: Some("payments".into()),
                identity: None,
            },
            method: "POST".into(),
            host: format!("h{i}.example"),
            port: 443,
            address: Some("203.0.113.9".parse().unwrap()),
            country: country.into(),
            transport: Transport::Http,
            path: strip_query_values("/v1/users?id=42&q=abc"),
            rule: rule.into(),
            mode: Mode::Enforce,
            action,
            reason: "personal_data_abroad".into(),
            message: None,
            citation: Some("RBI DPSS.CO.OD.No 2785/06.08.005/2017-18".into()),
            data: vec![DataFinding {
                class: class.into(),
                count: 1,
                locations: vec![Location::Body],
                fingerprints: vec!["0123456789abcdef".into()],
            }],
            bytes_released: 0,
            policy: PolicyRef {
                name: "default".into(),
                hash: "abc".into(),
            },
            sima_version: "0.1.0".into(),
        }
    }

    fn block(i: u64) -> AuditRecord {
        rec(i, Action::Block, "no-pii-abroad", "aadhaar", "US")
    }

    fn cfg(dir: &Path) -> AuditConfig {
        let mut c = AuditConfig::new(dir);
        c.fsync_delay = Duration::from_millis(1);
        c
    }

    async fn write_n(c: AuditConfig, from: u64, n: u64) -> StartState {
        let (h, task) = AuditWriter::start(c).unwrap();
        for i in from..from + n {
            h.record(block(i)).await.unwrap();
        }
        h.close().await.unwrap();
        task.await.unwrap();
        h.start_state().clone()
    }

    fn only_file(dir: &Path) -> PathBuf {
        let files = list_audit_files(dir).unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        files[0].0.clone()
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    fn broken(dir: &Path) -> Broken {
        verify(&[dir.to_path_buf()])
            .unwrap()
            .broken
            .expect("chain should be broken")
    }

    #[test]
    fn timestamps_format_and_parse() {
        let t = Timestamp::from_unix_micros(1_700_000_000_123_456);
        assert_eq!(t.to_string(), "2023-11-14T22:13:20.123456Z");
        assert_eq!("2023-11-14T22:13:20.123456Z".parse::<Timestamp>(), Ok(t));
        assert_eq!(
            "2023-11-14T22:13:20.1234569+00:00".parse::<Timestamp>(),
            Ok(t)
        );
        assert_eq!(
            Timestamp::from_unix_micros(0).to_string(),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            Timestamp::from_unix_micros(951_782_400_000_000).to_string(),
            "2000-02-29T00:00:00.000000Z"
        );
        for bad in [
            "2023-02-30T00:00:00Z",
            "2023-11-14 22:13:20Z",
            "2023-11-14T22:13:20+05:30",
            "x",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad}");
        }
        let now = Timestamp::now();
        assert_eq!(now.to_string().parse::<Timestamp>(), Ok(now));
        assert_eq!(t.file_date(), 20231114);
        assert_eq!(days_from_file_date(20231114), t.days());
    }

    #[test]
    fn query_values_are_stripped() {
        assert_eq!(
            strip_query_values("/v1/users?id=5&q=x#frag"),
            "/v1/users?id=&q="
        );
        assert_eq!(strip_query_values("/a?flag&b="), "/a?flag&b=");
        assert_eq!(strip_query_values("/plain"), "/plain");
    }

    #[tokio::test]
    async fn records_round_trip_and_chain_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let written: Vec<AuditRecord> = (0..3).map(block).collect();
        let (h, task) = AuditWriter::start(cfg(dir.path())).unwrap();
        for r in &written {
            h.record(r.clone()).await.unwrap();
        }
        h.close().await.unwrap();
        task.await.unwrap();
        assert!(matches!(h.record(block(9)).await, Err(AuditError::Closed)));
        assert_eq!(h.stats().records_written(Action::Block), 3);

        let path = only_file(dir.path());
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"path\":\"/v1/users?id=&q=\""));
        let mut prev = GENESIS_PREV.to_string();
        for (i, line) in text.lines().enumerate() {
            let stored = check_line(line.as_bytes()).unwrap();
            assert_eq!(stored.record, written[i]);
            assert_eq!(stored.seq, i as u64);
            assert_eq!(stored.prev, prev);
            prev = stored.hash;
        }
        let report = verify(&[dir.path().to_path_buf()]).unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!((report.files, report.records), (1, 3));
        assert_eq!((report.first_seq, report.last_seq), (Some(0), Some(2)));
        assert_eq!(report.last_hash, Some(prev));
        assert!(report.starts_at_genesis);
        // The canonical definition: hash = sha256(line minus the hash tail, plus `}`).
        let first = text.lines().next().unwrap();
        let (body, _) = first.split_at(first.len() - HASH_TAIL_LEN);
        let expect = hex::encode(Sha256::digest(format!("{body}}}")));
        assert!(first.ends_with(&format!(",\"hash\":\"{expect}\"}}")));
    }

    #[tokio::test]
    async fn edited_field_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_n(cfg(dir.path()), 0, 5).await;
        let path = only_file(dir.path());
        let mut l = lines(&path);
        l[2] = l[2].replace("h2.example", "h2.exampld");
        write_lines(&path, &l);
        let b = broken(dir.path());
        assert_eq!(
            (b.file.clone(), b.line, b.kind),
            (path, 3, BreakKind::Edited)
        );
    }

    #[tokio::test]
    async fn rehashed_edit_breaks_next_prev() {
        let dir = tempfile::tempdir().unwrap();
        write_n(cfg(dir.path()), 0, 4).await;
        let path = only_file(dir.path());
        let mut l = lines(&path);
        let s = check_line(l[1].as_bytes()).unwrap();
        let mut r = s.record;
        r.host = "forged.example".into();
        let (line, _) = encode_line(&r, s.seq, &s.prev).unwrap();
        l[1] = String::from_utf8(line).unwrap().trim_end().to_string();
        write_lines(&path, &l);
        let b = broken(dir.path());
        assert_eq!((b.line, b.kind), (3, BreakKind::Edited), "{b}");
    }

    #[tokio::test]
    async fn deleted_line_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_n(cfg(dir.path()), 0, 5).await;
        let path = only_file(dir.path());
        let mut l = lines(&path);
        l.remove(2);
        write_lines(&path, &l);
        let b = broken(dir.path());
        assert_eq!(
            (b.file.clone(), b.line, b.kind),
            (path, 3, BreakKind::Deleted),
            "{b}"
        );
    }

    #[tokio::test]
    async fn swapped_lines_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_n(cfg(dir.path()), 0, 5).await;
        let path = only_file(dir.path());
        let mut l = lines(&path);
        l.swap(1, 2);
        write_lines(&path, &l);
        let b = broken(dir.path());
        assert_eq!(
            (b.file.clone(), b.line, b.kind),
            (path, 2, BreakKind::Reordered),
            "{b}"
        );
    }

    #[tokio::test]
    async fn duplicated_line_is_reordered() {
        let dir = tempfile::tempdir().unwrap();
        write_n(cfg(dir.path()), 0, 3).await;
        let path = only_file(dir.path());
        let mut l = lines(&path);
        l.insert(2, l[1].clone());
        write_lines(&path, &l);
        let b = broken(dir.path());
        assert_eq!((b.line, b.kind), (3, BreakKind::Reordered), "{b}");
    }

    #[tokio::test]
    async fn truncated_last_line_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_n(cfg(dir.path()), 0, 4).await;
        let path = only_file(dir.path());
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        let b = broken(dir.path());
        assert_eq!(
            (b.file.clone(), b.line, b.kind),
            (path, 4, BreakKind::Truncated),
            "{b}"
        );
    }

    #[tokio::test]
    async fn malformed_line_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_n(cfg(dir.path()), 0, 5).await;
        let path = only_file(dir.path());
        let mut l = lines(&path);
        l[3] = "{\"seq\": 3, oops".into();
        write_lines(&path, &l);
        let b = broken(dir.path());
        assert_eq!(
            (b.file.clone(), b.line, b.kind),
            (path.clone(), 4, BreakKind::Malformed),
            "{b}"
        );
        // Valid JSON without the hash tail is malformed too.
        l[3] = "{}".into();
        write_lines(&path, &l);
        assert_eq!(broken(dir.path()).kind, BreakKind::Malformed);
    }

    #[tokio::test]
    async fn size_rotation_verifies_across_files_and_missing_file_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path());
        c.max_file_bytes = 2000;
        write_n(c, 0, 20).await;
        let files = list_audit_files(dir.path()).unwrap();
        assert!(files.len() >= 4, "{files:?}");
        for (p, _, _) in &files {
            assert!(fs::metadata(p).unwrap().len() <= 2000);
        }
        let report = verify(&[dir.path().to_path_buf()]).unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(
            (report.files, report.records, report.last_seq),
            (files.len(), 20, Some(19))
        );
        // Passing files explicitly, in any order, sorts them by name.
        let mut explicit: Vec<PathBuf> = files.iter().rev().map(|f| f.0.clone()).collect();
        explicit.push(files[0].0.clone());
        assert_eq!(verify(&explicit).unwrap().records, 20);
        // Without the first file the chain starts later but is intact.
        let tail: Vec<PathBuf> = files[1..].iter().map(|f| f.0.clone()).collect();
        let r = verify(&tail).unwrap();
        assert!(r.is_intact() && !r.starts_at_genesis);
        // A missing middle file is a deletion at the first line of the next one.
        fs::remove_file(&files[1].0).unwrap();
        let b = broken(dir.path());
        assert_eq!(
            (b.file.clone(), b.line, b.kind),
            (files[2].0.clone(), 1, BreakKind::Deleted),
            "{b}"
        );
    }

    #[tokio::test]
    async fn day_change_rotates_and_retention_prunes_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("audit-20000101-001.jsonl");
        fs::write(&old, "").unwrap();
        let (h, task) = AuditWriter::start(cfg(dir.path())).unwrap();
        assert!(!old.exists(), "file past retention should be pruned");
        let mut r = block(0);
        h.record(r.clone()).await.unwrap();
        r.time = Timestamp::from_unix_micros(r.time.unix_micros() + 86_400_000_000);
        h.record(r).await.unwrap();
        h.close().await.unwrap();
        task.await.unwrap();
        let files = list_audit_files(dir.path()).unwrap();
        assert_eq!(files.len(), 2);
        assert!(files[1].1 > files[0].1);
        assert!(verify(&[dir.path().to_path_buf()]).unwrap().is_intact());
    }

    #[tokio::test]
    async fn restart_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_n(cfg(dir.path()), 0, 3).await;
        assert_eq!((first.next_seq, first.prev.as_str()), (0, GENESIS_PREV));
        let second = write_n(cfg(dir.path()), 3, 3).await;
        assert_eq!(second.next_seq, 3);
        assert_eq!(second.torn_tail, None);
        let report = verify(&[dir.path().to_path_buf()]).unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!((report.records, report.last_seq), (6, Some(5)));
        assert_eq!(lines(&only_file(dir.path())).len(), 6);
    }

    #[tokio::test]
    async fn torn_last_line_is_cut_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_n(cfg(dir.path()), 0, 3).await;
        let path = only_file(dir.path());
        let good_len = fs::metadata(&path).unwrap().len();
        let partial: &[u8] = b"{\"time\":\"2025-01-01T00:00:00.000000Z\",\"request_id\":\"torn";
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(partial).unwrap();
        drop(f);
        assert_eq!(broken(dir.path()).kind, BreakKind::Truncated);

        let state = write_n(cfg(dir.path()), 3, 2).await;
        let torn = state.torn_tail.unwrap();
        assert_eq!(
            (torn.file, torn.bytes_removed),
            (path.clone(), partial.len() as u64)
        );
        assert_eq!(state.next_seq, 3);
        let report = verify(&[dir.path().to_path_buf()]).unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records, 5);
        assert!(fs::metadata(&path).unwrap().len() > good_len);
    }

    #[tokio::test]
    async fn damaged_newest_record_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        write_n(cfg(dir.path()), 0, 2).await;
        let path = only_file(dir.path());
        let mut l = lines(&path);
        l[1] = l[1].replace("h1.example", "hX.example");
        write_lines(&path, &l);
        let err = AuditWriter::start(cfg(dir.path())).unwrap_err();
        assert!(matches!(err, AuditError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("sima audit verify"));
    }

    #[test]
    fn key_file_is_private_and_fingerprints_are_keyed() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.key");
        let fa = Fingerprinter::load_or_create(&a).unwrap();
        assert_eq!(
            fs::metadata(&a).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_to_string(&a).unwrap().trim().len(), 64);
        let again = Fingerprinter::load_or_create(&a).unwrap();
        let fp = fa.fingerprint("aadhaar", b"234567890123");
        assert_eq!(fp.len(), 16);
        assert!(fp.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(fp, again.fingerprint("aadhaar", b"234567890123"));
        assert_ne!(fp, fa.fingerprint("pan", b"234567890123"));
        assert_ne!(fp, fa.fingerprint("aadhaar", b"234567890124"));
        let fb = Fingerprinter::load_or_create(&dir.path().join("b.key")).unwrap();
        assert_ne!(fp, fb.fingerprint("aadhaar", b"234567890123"));
        assert!(!format!("{fa:?}").contains(&fs::read_to_string(&a).unwrap().trim().to_string()));

        // An operator-provided raw 32-byte key works.
        let raw = dir.path().join("raw.key");
        fs::write(&raw, [7u8; 32]).unwrap();
        fs::set_permissions(&raw, fs::Permissions::from_mode(0o400)).unwrap();
        let fr = Fingerprinter::load_or_create(&raw).unwrap();
        assert_eq!(
            fr.fingerprint("x", b"y"),
            Fingerprinter::from_key(&[7u8; 32])
                .unwrap()
                .fingerprint("x", b"y")
        );

        fs::set_permissions(&a, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Fingerprinter::load_or_create(&a).unwrap_err();
        assert!(
            matches!(err, AuditError::KeyPermissions { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));

        let short = dir.path().join("short.key");
        fs::write(&short, "abcd\n").unwrap();
        fs::set_permissions(&short, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            Fingerprinter::load_or_create(&short),
            Err(AuditError::KeyInvalid { .. })
        ));
    }

    #[tokio::test]
    async fn detected_values_never_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let fp = Fingerprinter::load_or_create(&dir.path().join("key")).unwrap();
        let value = "9876543210";
        let mut r = block(0);
        r.data[0].class = "phone".into();
        r.data[0].fingerprints = vec![fp.fingerprint("phone", value.as_bytes())];
        r.path = strip_query_values(&format!("/send?mobile={value}"));
        let logs = dir.path().join("log");
        let (h, task) = AuditWriter::start(cfg(&logs)).unwrap();
        h.record(r.clone()).await.unwrap();
        h.close().await.unwrap();
        task.await.unwrap();
        let text = fs::read_to_string(only_file(&logs)).unwrap();
        assert!(!text.contains(value));
        assert!(text.contains(&r.data[0].fingerprints[0]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path());
        c.fsync_delay = DEFAULT_FSYNC_DELAY;
        let (h, task) = AuditWriter::start(c).unwrap();
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let h = h.clone();
                tokio::spawn(async move { h.record(block(i)).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        h.close().await.unwrap();
        task.await.unwrap();
        assert_eq!(h.stats().records_written(Action::Block), 100);
        let report = verify(&[dir.path().to_path_buf()]).unwrap();
        assert!(report.is_intact());
        assert_eq!(report.records, 100);
    }

    #[tokio::test]
    async fn full_queue_fails_fast() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path());
        c.queue = 1;
        let (h, task) = AuditWriter::start(c).unwrap();
        // On this single-threaded runtime the writer cannot run between the two polls, so the
        // second record finds the one-slot queue full.
        let (a, b) = tokio::join!(h.record(block(0)), h.record(block(1)));
        a.unwrap();
        assert!(
            matches!(b, Err(AuditError::QueueFull { capacity: 1 })),
            "{b:?}"
        );
        assert_eq!(h.stats().write_failures(FailureKind::QueueFull), 1);
        assert!(h.healthy(), "a full queue is overload, not a disk failure");
        h.close().await.unwrap();
        task.await.unwrap();
    }

    /// Makes `dir` unwritable: chmod 0500, or (as root, where modes do not stop writes)
    /// replaces it with a regular file. Returns a function that undoes it.
    fn sabotage(dir: &Path) -> impl FnOnce() {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o500)).unwrap();
        let probe = dir.join("probe");
        let privileged = fs::write(&probe, b"x").is_ok();
        let dir = dir.to_path_buf();
        let moved = dir.with_extension("moved");
        if privileged {
            fs::remove_file(&probe).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
            fs::rename(&dir, &moved).unwrap();
            fs::write(&dir, b"not a directory").unwrap();
        }
        move || {
            if privileged {
                fs::remove_file(&dir).unwrap();
                fs::rename(&moved, &dir).unwrap();
            } else {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
            }
        }
    }

    #[tokio::test]
    async fn unwritable_directory_makes_writer_unhealthy_until_writes_succeed() {
        let root = tempfile::tempdir().unwrap();
        // A directory that cannot be created at all: start fails.
        let file = root.path().join("plain-file");
        fs::write(&file, b"x").unwrap();
        let err = AuditWriter::start(cfg(&file.join("audit"))).unwrap_err();
        assert!(matches!(err, AuditError::Io { .. }), "{err}");
        assert!(err.to_string().contains("plain-file"), "{err}");

        let dir = root.path().join("audit");
        let mut c = cfg(&dir);
        c.max_file_bytes = 1; // every record after the first in a file opens a new file
        let (h, task) = AuditWriter::start(c).unwrap();
        h.record(block(0)).await.unwrap();
        assert!(h.healthy());
        let restore = sabotage(&dir);
        let err = h.record(block(1)).await.unwrap_err();
        assert!(matches!(err, AuditError::Io { .. }), "{err}");
        assert!(!h.healthy());
        assert_eq!(h.stats().write_failures(FailureKind::Io), 1);
        restore();
        h.record(block(2)).await.unwrap();
        assert!(h.healthy());
        h.close().await.unwrap();
        task.await.unwrap();
        let report = verify(std::slice::from_ref(&dir)).unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records, 2);
    }

    #[test]
    fn disk_full_is_mapped() {
        let e = io::Error::from_raw_os_error(28);
        assert!(matches!(
            io_error("write", Path::new("f"), &e),
            AuditError::DiskFull { .. }
        ));
    }

    #[tokio::test]
    async fn summary_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (h, task) = AuditWriter::start(cfg(dir.path())).unwrap();
        let mut records = vec![
            rec(1, Action::Block, "r1", "aadhaar", "US"),
            rec(1, Action::Block, "r1", "pan", "US"),
            rec(2, Action::Report, "r2", "aadhaar", "SG"),
            rec(3, Action::Allow, "r3", "aadhaar", "US"),
        ];
        records[1].client.group = None;
        let extra = records[0].data[0].clone();
        records[1].data.push(extra);
        let mut old = rec(4, Action::Block, "r9", "pan", "DE");
        old.time = Timestamp::from_unix_micros(Timestamp::now().unix_micros() - 7_200_000_000);
        records.push(old);
        for r in records {
            h.record(r).await.unwrap();
        }
        h.close().await.unwrap();
        task.await.unwrap();

        let all = summary(&[dir.path().to_path_buf()], None).unwrap();
        assert_eq!(
            (all.records, all.blocked, all.reported, all.allowed),
            (5, 3, 1, 1)
        );
        let row = |rows: &[CountRow], k: &str| {
            rows.iter()
                .find(|r| r.key == k)
                .map(|r| (r.blocked, r.reported))
        };
        assert_eq!(row(&all.by_rule, "r1"), Some((2, 0)));
        assert_eq!(row(&all.by_rule, "r3"), None);
        assert_eq!(row(&all.by_class, "aadhaar"), Some((2, 1)));
        assert_eq!(row(&all.by_class, "pan"), Some((2, 0)));
        assert_eq!(row(&all.by_country, "US"), Some((2, 0)));
        assert_eq!(row(&all.by_group, "-"), Some((1, 0)));
        assert_eq!(row(&all.by_group, "payments"), Some((2, 1)));
        assert_eq!(
            all.top_hosts[0],
            CountRow {
                key: "h1.example".into(),
                blocked: 2,
                reported: 0
            }
        );

        let recent = summary(&[dir.path().to_path_buf()], Some(Duration::from_secs(3600))).unwrap();
        assert_eq!((recent.records, recent.blocked), (4, 2));
        assert_eq!(row(&recent.by_rule, "r9"), None);

        let table = all.render_table();
        assert!(table.contains("RULE  "), "{table}");
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("r1 ") && l.ends_with("        2          0")),
            "{table}"
        );
        let json: serde_json::Value = serde_json::to_value(&all).unwrap();
        assert_eq!(json["blocked"], 3);
        assert!(matches!(
            summary(&[dir.path().join("nope")], None),
            Err(AuditError::Io { .. })
        ));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            verify(&[empty.path().to_path_buf()]),
            Err(AuditError::NoFiles { .. })
        ));
    }
}
