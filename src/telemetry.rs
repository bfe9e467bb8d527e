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

/// Writes the canonical line for a request, if request logging is on. Returns false when
/// it is not handled here (no subscriber installed by `init`, e.g. in tests).
pub fn access(line: &AccessLine<'_>) -> bool {
    let Some((batch, format)) = ACCESS.get() else {
        return false;
    };
    if !tracing::enabled!(target: "sima::request", tracing::Level::INFO) {
        return true;
    }
    use std::fmt::Write as _;
    let mut s = String::with_capacity(384);
    let ts = crate::audit::Timestamp::now();
    let peer = line.peer.map(|p| p.to_string()).unwrap_or_default();
    match format {
        LogFormat::Json => {
            let _ = write!(s, "{{\"timestamp\":\"{ts}\",\"level\":\"INFO\",\"message\":\"request\",\"sima.request_id\":");
            json_str(&mut s, line.request_id);
            let _ = write!(
                s,
                ",\"client.address\":\"{}\",\"http.request.method\":",
                line.client
            );
            json_str(&mut s, line.method);
            let _ = write!(
                s,
                ",\"sima.transport\":\"{}\",\"server.address\":",
                line.transport
            );
            json_str(&mut s, line.host);
            let _ = write!(s, ",\"server.port\":{},\"network.peer.address\":\"{peer}\",\"sima.country\":\"{}\",\"sima.decision\":\"{}\",\"sima.reason\":\"{}\",\"sima.rule_id\":", line.port, line.country, line.decision, line.reason);
            json_str(&mut s, line.rule);
            s.push_str(",\"sima.data_classes\":");
            json_str(&mut s, line.data_classes);
            let _ = writeln!(
                s,
                ",\"http.response.status_code\":{},\"sima.duration_ms\":{:.3}}}",
                line.status, line.duration_ms
            );
        }
        LogFormat::Text => {
            let _ = writeln!(
                s,
                "{ts}  INFO request sima.request_id={} client.address={} http.request.method={} sima.transport={} server.address={} server.port={} network.peer.address={peer} sima.country={} sima.decision={} sima.reason={} sima.rule_id={} sima.data_classes={} http.response.status_code={} sima.duration_ms={:.3}",
                line.request_id, line.client, line.method.escape_debug(), line.transport, line.host.escape_debug(), line.port, line.country, line.decision, line.reason, line.rule.escape_debug(), line.data_classes, line.status, line.duration_ms
            );
        }
    }
    let _ = LineGuard(batch.buf.lock().ok()).write_all(s.as_bytes());
    true
}

fn json_str(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
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
        flush(&self.batch);
    }
}

fn flush(batch: &Batch) {
    let out = match batch.buf.lock() {
        Ok(mut b) if !b.is_empty() => std::mem::take(&mut *b),
        _ => return,
    };
    let _ = std::io::stderr().write_all(&out);
}

/// Installs the global subscriber (later calls do nothing) and starts the flusher.
pub fn init(format: LogFormat) -> LogGuard {
    let batch = Arc::new(Batch {
        buf: Mutex::new(Vec::with_capacity(64 * 1024)),
        stop: AtomicBool::new(false),
    });
    let b = batch.clone();
    let thread = std::thread::Builder::new()
        .name("sima-log".into())
        .spawn(move || {
            while !b.stop.load(Ordering::Relaxed) {
                std::thread::sleep(DEFAULT_LOG_FLUSH_INTERVAL);
                flush(&b);
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
    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        super::json_str(&mut s, "rule \"x\"\\\n\u{1}é");
        let back: String = serde_json::from_str(&s).unwrap();
        assert_eq!(back, "rule \"x\"\\\n\u{1}é");
    }
}
