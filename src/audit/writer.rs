//! The durable writer: one task owns the open file; records are queued, written,
//! `fdatasync`ed in groups, rotated by size and day, and pruned by age.

use super::*;

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
    pub(super) written: [AtomicU64; 3],
    pub(super) failures: [AtomicU64; 4],
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

    pub(super) fn count_written(&self, action: Action) {
        if let Some(c) = self.written.get(action as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn count_failure(&self, e: &AuditError) {
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

pub(super) struct Shared {
    pub(super) healthy: AtomicBool,
    pub(super) stats: AuditStats,
    pub(super) start: StartState,
    pub(super) capacity: usize,
}

pub(super) type Reply = oneshot::Sender<Result<(), AuditError>>;

pub(super) enum Msg {
    Record(Box<AuditRecord>, Reply),
    Close(Reply),
}

/// Cheap, cloneable handle to the writer task.
#[derive(Clone)]
pub struct AuditHandle {
    pub(super) tx: mpsc::Sender<Msg>,
    pub(super) shared: Arc<Shared>,
}

impl fmt::Debug for AuditHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditHandle")
            .field("healthy", &self.healthy())
            .field("start", &self.shared.start)
            .finish_non_exhaustive()
    }
}

pub(super) struct OpenFile {
    pub(super) file: File,
    pub(super) path: PathBuf,
    pub(super) date: u32,
    pub(super) index: u32,
    /// Length known to end after a complete, fsynced line.
    pub(super) len: u64,
}

pub(super) struct WriterState {
    pub(super) dir: PathBuf,
    pub(super) max_file_bytes: u64,
    pub(super) retention_days: u32,
    pub(super) file: Option<OpenFile>,
    /// A file left with a partial line that could not be cut yet: (path, good length).
    pub(super) dirty: Option<(PathBuf, u64)>,
    pub(super) next_seq: u64,
    pub(super) prev: String,
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
pub(super) fn fail_from(results: &mut [Result<(), AuditError>], from: usize, e: &AuditError) {
    for r in results.iter_mut().skip(from) {
        if r.is_ok() {
            *r = Err(e.clone());
        }
    }
}

/// Position of the last `\n` in `file` before byte `end`, scanning backwards.
pub(super) fn last_newline_before(file: &mut File, end: u64) -> io::Result<Option<u64>> {
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
    pub(super) fn recover(cfg: &AuditConfig) -> Result<(Self, StartState), AuditError> {
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
    pub(super) fn open_new(
        &mut self,
        date: u32,
        last_index: Option<u32>,
    ) -> Result<(), AuditError> {
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
    pub(super) fn prune(&self, today: u32) {
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
    pub(super) fn flush(&mut self, pending: &mut Vec<u8>) -> Result<(), AuditError> {
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
    pub(super) fn write_batch(&mut self, records: &[AuditRecord]) -> Vec<Result<(), AuditError>> {
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

    pub(super) fn rotate(&mut self, record_date: u32) -> Result<(), AuditError> {
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
