//! Logging: a tracing subscriber writing text or JSON lines to stderr. The canonical
//! per-request line is emitted by `proxy::finish` under target `sima::request`.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Default filter when `RUST_LOG` is unset: one line per request, warnings and errors.
pub const DEFAULT_FILTER: &str = "info";

/// Installs the global subscriber. Log lines go to stderr through a writer thread that
/// batches them, so the request path never waits on a write syscall. Keep the returned
/// guard alive until exit: dropping it flushes what is queued.
pub fn init(format: LogFormat) -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
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
    guard
}
