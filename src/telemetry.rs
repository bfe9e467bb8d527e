//! Logging: a tracing subscriber writing text or JSON lines to stderr. The canonical
//! per-request line is emitted by `proxy::finish`.
//!
//! Lines are appended to an in-memory batch that a background thread writes every
//! `DEFAULT_LOG_FLUSH_INTERVAL`: the request path neither makes a write syscall nor wakes
//! another thread per line (both cost more than formatting the line).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Default filter when `RUST_LOG` is unset: one line per request, warnings and errors.
pub const DEFAULT_FILTER: &str = "info";
/// How often batched log lines are written out.
pub const DEFAULT_LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// A batch this large is written at once by the logging request itself: memory stays
/// bounded when stderr is slower than the traffic.
pub const MAX_LOG_BATCH: usize = 4 * 1024 * 1024;
/// Starting size of each of the two batch buffers.
const INITIAL_LOG_BATCH: usize = 64 * 1024;

struct Batch {
    buf: Mutex<Vec<u8>>,
    stop: AtomicBool,
}

/// Writes lines into the shared batch.
#[derive(Clone)]
struct BatchWriter(Arc<Batch>);

/// Holds the batch for one line.
struct LineGuard<'a>(Option<MutexGuard<'a, Vec<u8>>>);

impl Write for LineGuard<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let Some(buf) = self.0.as_mut() {
            buf.extend_from_slice(data);
            if buf.len() > MAX_LOG_BATCH {
                let _ = std::io::stderr().write_all(buf);
                buf.clear();
            }
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = LineGuard<'a>;
    fn make_writer(&'a self) -> LineGuard<'a> {
        LineGuard(self.0.buf.lock().ok())
    }
}

static ACCESS: std::sync::OnceLock<(Arc<Batch>, LogFormat)> = std::sync::OnceLock::new();

/// One request's canonical line: fixed fields, written without going through tracing's
/// field machinery (this line is on every request; its cost is the proxy's cost).
pub struct AccessLine<'a> {
    /// Request id.
    pub request_id: &'a str,
    /// Client address.
    pub client: std::net::IpAddr,
    /// Method.
    pub method: &'a str,
    /// forward / connect / reverse.
    pub transport: &'a str,
    /// Destination host.
    pub host: &'a str,
    /// Destination port.
    pub port: u16,
    /// Dialled address, if any.
    pub peer: Option<std::net::IpAddr>,
    /// Country or `unknown`.
    pub country: &'a str,
    /// allow / deny / report.
    pub decision: &'a str,
    /// Reason label.
    pub reason: &'a str,
    /// Rule id or `-`.
    pub rule: &'a str,
    /// Data classes found, comma-separated.
    pub data_classes: &'a str,
    /// Response status.
    pub status: u16,
    /// Duration in milliseconds.
    pub duration_ms: f64,
}

/// Writes the canonical line for a request, if request logging is on, stamped with the
/// wall-clock time of `at` (the caller's own clock reading). Returns false when it is not
/// handled here (no subscriber installed by `init`, e.g. in tests).
pub fn access(line: &AccessLine<'_>, at: std::time::Instant) -> bool {
    let Some((batch, format)) = ACCESS.get() else {
        return false;
    };
    if !tracing::enabled!(target: "sima::request", tracing::Level::INFO) {
        return true;
    }
    // Formatted by hand into a reused per-thread buffer: `write!` with `Display` for IPs,
    // numbers and the timestamp was a tenth of the proxy's user-space time per request.
    LINE.with(|cell| {
        let Ok(mut out) = cell.try_borrow_mut() else {
            return;
        };
        out.clear();
        format_access(&mut out, line, *format, wall_clock(at));
        let _ = LineGuard(batch.buf.lock().ok()).write_all(&out);
    });
    true
}

/// How long a monotonic-to-wall-clock pairing is trusted before it is read again.
const WALL_CLOCK_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// The wall-clock time at `at`, from a pairing of the two clocks taken at most a second
/// earlier. Both clocks advance at the same (NTP-slewed) rate, so only a step of the wall
/// clock is seen late, by up to a second. A clock read costs about 30 ns on a VM, and the
/// caller has already made one.
fn wall_clock(at: std::time::Instant) -> std::time::SystemTime {
    let (mono, wall) = WALL
        .get()
        .filter(|(mono, _)| at.saturating_duration_since(*mono) < WALL_CLOCK_REFRESH)
        .unwrap_or_else(|| {
            let pair = (std::time::Instant::now(), std::time::SystemTime::now());
            WALL.set(Some(pair));
            pair
        });
    match at.checked_duration_since(mono) {
        Some(ahead) => wall + ahead,
        None => wall.checked_sub(mono - at).unwrap_or(wall),
    }
}

thread_local! {
    static LINE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
    /// A monotonic instant and the wall-clock time read with it (see `wall_clock`).
    static WALL: std::cell::Cell<Option<(std::time::Instant, std::time::SystemTime)>> =
        const { std::cell::Cell::new(None) };
    /// Seconds since the epoch and their `YYYY-MM-DDTHH:MM:SS` rendering.
    static SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
}

/// The access line's field names, in order, with their JSON (`,"name":`) and text
/// (` name=`) punctuation joined at compile time: one append per key, not three.
macro_rules! access_keys {
    ($($name:literal),* $(,)?) => {
        const JSON_KEYS: [&str; ACCESS_FIELDS] = [$(concat!(",\"", $name, "\":")),*];
        const TEXT_KEYS: [&str; ACCESS_FIELDS] = [$(concat!(" ", $name, "=")),*];
    };
}
const ACCESS_FIELDS: usize = 14;
access_keys!(
    "sima.request_id",
    "client.address",
    "http.request.method",
    "sima.transport",
    "server.address",
    "server.port",
    "network.peer.address",
    "sima.country",
    "sima.decision",
    "sima.reason",
    "sima.rule_id",
    "sima.data_classes",
    "http.response.status_code",
    "sima.duration_ms",
);

/// One field's value in the access line.
enum Field<'a> {
    Str(&'a str),
    Ip(Option<std::net::IpAddr>),
    Num(u64),
    Millis(f64),
}

fn format_access(
    out: &mut Vec<u8>,
    line: &AccessLine<'_>,
    format: LogFormat,
    now: std::time::SystemTime,
) {
    let micros = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(0));
    let values: [Field<'_>; ACCESS_FIELDS] = [
        Field::Str(line.request_id),
        Field::Ip(Some(line.client)),
        Field::Str(line.method),
        Field::Str(line.transport),
        Field::Str(line.host),
        Field::Num(u64::from(line.port)),
        Field::Ip(line.peer),
        Field::Str(line.country),
        Field::Str(line.decision),
        Field::Str(line.reason),
        Field::Str(line.rule),
        Field::Str(line.data_classes),
        Field::Num(u64::from(line.status)),
        Field::Millis(line.duration_ms),
    ];
    let json = format == LogFormat::Json;
    if json {
        out.extend_from_slice(b"{\"timestamp\":\"");
        push_time(out, micros);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\"");
    } else {
        push_time(out, micros);
        out.extend_from_slice(b"  INFO request");
    }
    let keys = if json { &JSON_KEYS } else { &TEXT_KEYS };
    for (key, value) in keys.iter().zip(&values) {
        out.extend_from_slice(key.as_bytes());
        match value {
            Field::Str(v) if json => push_json_str(out, v),
            Field::Str(v) => push_debug_str(out, v),
            Field::Ip(ip) => {
                if json {
                    out.push(b'"');
                }
                if let Some(ip) = ip {
                    crate::text::push_ip(out, *ip);
                }
                if json {
                    out.push(b'"');
                }
            }
            Field::Num(n) => push_u64(out, *n),
            Field::Millis(ms) => push_millis(out, *ms),
        }
    }
    out.extend_from_slice(if json { b"}\n" } else { b"\n" });
}

/// RFC 3339 UTC with microseconds; the date and time of day are rendered once a second.
fn push_time(out: &mut Vec<u8>, micros: u64) {
    let sec = micros / 1_000_000;
    let (cached, mut text) = SECOND.get();
    if cached != sec {
        let full = crate::audit::Timestamp::from_unix_micros(sec * 1_000_000).to_string();
        if let Some(prefix) = full.as_bytes().get(..19) {
            text.copy_from_slice(prefix);
            SECOND.set((sec, text));
        }
    }
    out.extend_from_slice(&text);
    out.push(b'.');
    let frac = micros % 1_000_000;
    let mut digits = [b'0'; 6];
    let mut n = frac;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits);
    out.push(b'Z');
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Milliseconds with three decimals, from a float (`12.345`).
fn push_millis(out: &mut Vec<u8>, ms: f64) {
    let micros = if ms.is_finite() && ms > 0.0 {
        (ms * 1000.0).round() as u64
    } else {
        0
    };
    push_u64(out, micros / 1000);
    out.push(b'.');
    let frac = micros % 1000;
    out.extend_from_slice(&[
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// A JSON string literal.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Almost every value needs no escaping: check without branching per byte (this folds
    // into SIMD compares), then copy it whole.
    let plain = !bytes.iter().fold(false, |esc, &b| {
        esc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0..=0x1f => {
                out.extend_from_slice(&bytes[from..i]);
                let _ = write!(out, "\\u{:04x}", b);
                from = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[from..i]);
        out.extend_from_slice(esc);
        from = i + 1;
    }
    out.extend_from_slice(&bytes[from..]);
    out.push(b'"');
}

/// As `str::escape_debug`, without its per-character cost for plain text.
fn push_debug_str(out: &mut Vec<u8>, s: &str) {
    let plain = s
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && !matches!(b, b'"' | b'\'' | b'\\'));
    if plain {
        out.extend_from_slice(s.as_bytes());
    } else {
        let _ = write!(out, "{}", s.escape_debug());
    }
}

/// Flushes the log batch when dropped: keep it alive until exit.
pub struct LogGuard {
    batch: Arc<Batch>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.batch.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        flush(&self.batch, &mut Vec::new());
    }
}

/// Writes out the batch. The flusher swaps in its own, already grown, buffer: taking the
/// batch and leaving an empty one made every request burst regrow it from nothing (a
/// realloc, copy and fresh pages per doubling, every interval).
fn flush(batch: &Batch, spare: &mut Vec<u8>) {
    spare.clear();
    match batch.buf.lock() {
        Ok(mut b) if !b.is_empty() => std::mem::swap(&mut *b, spare),
        _ => return,
    }
    let _ = std::io::stderr().write_all(spare);
    // A burst may have grown it far beyond the usual batch; don't keep that forever.
    if spare.capacity() > MAX_LOG_BATCH {
        *spare = Vec::with_capacity(INITIAL_LOG_BATCH);
    }
}

/// Installs the global subscriber (later calls do nothing) and starts the flusher.
pub fn init(format: LogFormat) -> LogGuard {
    let batch = Arc::new(Batch {
        buf: Mutex::new(Vec::with_capacity(INITIAL_LOG_BATCH)),
        stop: AtomicBool::new(false),
    });
    let b = batch.clone();
    let thread = std::thread::Builder::new()
        .name("sima-log".into())
        .spawn(move || {
            let mut spare = Vec::with_capacity(INITIAL_LOG_BATCH);
            while !b.stop.load(Ordering::Relaxed) {
                std::thread::sleep(DEFAULT_LOG_FLUSH_INTERVAL);
                flush(&b, &mut spare);
            }
        })
        .ok();
    let writer = BatchWriter(batch.clone());
    let _ = ACCESS.set((batch.clone(), format));
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colour only for a person at a terminal, never into files or log agents.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
    LogGuard { batch, thread }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_follows_the_callers_instant() {
        let now = std::time::Instant::now();
        let earlier = now
            .checked_sub(std::time::Duration::from_millis(250))
            .unwrap();
        let (w_now, w_earlier) = (wall_clock(now), wall_clock(earlier));
        assert_eq!(
            w_now.duration_since(w_earlier).unwrap(),
            std::time::Duration::from_millis(250)
        );
        let sys = std::time::SystemTime::now();
        let off = sys.duration_since(w_now).unwrap_or_else(|e| e.duration());
        assert!(off < std::time::Duration::from_millis(100), "{off:?} off");
    }

    proptest::proptest! {
        #[test]
        fn json_strings_round_trip(s in "(?s).{0,40}", pad in 0usize..9) {
            // A plain prefix of any length before whatever follows.
            let s = format!("{}{s}", "a".repeat(pad));
            let mut out = Vec::new();
            push_json_str(&mut out, &s);
            let back: String = serde_json::from_slice(&out).unwrap();
            proptest::prop_assert_eq!(&back, &s);
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = Vec::new();
        push_json_str(&mut out, "rule \"x\"\\\n\u{1}é");
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, "rule \"x\"\\\n\u{1}é");
    }

    fn sample<'a>(host: &'a str, peer: Option<std::net::IpAddr>) -> AccessLine<'a> {
        AccessLine {
            request_id: "00000000deadbeef",
            client: "127.0.0.1".parse().unwrap(),
            method: "GET",
            transport: "forward",
            host,
            port: 8080,
            peer,
            country: "US",
            decision: "deny",
            reason: "data_residency",
            rule: "personal-data-stays-in-india",
            data_classes: "aadhaar,pan",
            status: 451,
            duration_ms: 12.3456,
        }
    }

    #[test]
    fn json_line_is_one_valid_object_with_every_field() {
        let mut out = Vec::new();
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_764_146_096_000_042);
        let line = sample("api.\"odd\".example", Some("2001:db8::1".parse().unwrap()));
        format_access(&mut out, &line, LogFormat::Json, at);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["timestamp"], "2025-11-26T08:34:56.000042Z");
        assert_eq!(v["server.address"], "api.\"odd\".example");
        assert_eq!(v["client.address"], "127.0.0.1");
        assert_eq!(v["network.peer.address"], "2001:db8::1");
        assert_eq!(v["server.port"], 8080);
        assert_eq!(v["http.response.status_code"], 451);
        assert_eq!(v["sima.duration_ms"], 12.346);
        assert_eq!(v["sima.data_classes"], "aadhaar,pan");
    }

    #[test]
    fn text_line_matches_display_formatting() {
        let mut out = Vec::new();
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_764_146_096_123_456);
        format_access(&mut out, &sample("bad\nhost", None), LogFormat::Text, at);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "2025-11-26T08:34:56.123456Z  INFO request sima.request_id=00000000deadbeef \
             client.address=127.0.0.1 http.request.method=GET sima.transport=forward \
             server.address=bad\\nhost server.port=8080 network.peer.address= sima.country=US \
             sima.decision=deny sima.reason=data_residency \
             sima.rule_id=personal-data-stays-in-india sima.data_classes=aadhaar,pan \
             http.response.status_code=451 sima.duration_ms=12.346\n"
        );
    }

    #[test]
    fn flushing_swaps_buffers_and_keeps_their_capacity() {
        let batch = Batch {
            buf: Mutex::new(Vec::with_capacity(INITIAL_LOG_BATCH)),
            stop: AtomicBool::new(false),
        };
        let mut spare = Vec::with_capacity(INITIAL_LOG_BATCH);
        for round in 0..3 {
            batch.buf.lock().unwrap().extend_from_slice(b"line\n");
            flush(&batch, &mut spare);
            // The flushed lines are in the spare buffer (what was written to stderr) ...
            assert_eq!(spare, b"line\n", "round {round}");
            // ... and the batch that takes the next lines starts grown, not empty-handed.
            let b = batch.buf.lock().unwrap();
            assert!(b.is_empty());
            assert!(b.capacity() >= INITIAL_LOG_BATCH, "round {round}");
        }
        // Nothing pending: nothing is swapped or written.
        spare.extend_from_slice(b"stale");
        flush(&batch, &mut spare);
        assert!(spare.is_empty());
    }

    #[test]
    fn cached_second_moves_on() {
        let mut a = Vec::new();
        push_time(&mut a, 1_764_146_096_999_999);
        let mut b = Vec::new();
        push_time(&mut b, 1_764_146_097_000_000);
        assert_eq!(a, b"2025-11-26T08:34:56.999999Z");
        assert_eq!(b, b"2025-11-26T08:34:57.000000Z");
    }
}
