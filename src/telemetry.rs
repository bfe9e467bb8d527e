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
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
