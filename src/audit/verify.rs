//! `sima audit verify`: the hash chain checked file by file, with progress on a terminal.

use super::*;

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

pub(super) struct Progress {
    pub(super) total: u64,
    pub(super) done: u64,
    pub(super) next: u64,
    pub(super) enabled: bool,
}

impl Progress {
    pub(super) fn new(files: &[PathBuf]) -> Self {
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

    pub(super) fn add(&mut self, n: u64) {
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
pub(super) fn progress_bar(done: u64, total: u64) -> String {
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
pub(super) fn seq_appears_later(
    reader: &mut impl BufRead,
    later: &[PathBuf],
    lo: u64,
    hi: u64,
) -> bool {
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
