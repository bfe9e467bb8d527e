//! `sima audit summary`: blocks counted by rule, destination country and data class.

use super::*;

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
pub(super) struct Counter(HashMap<String, (u64, u64)>);

impl Counter {
    pub(super) fn add(&mut self, key: &str, action: Action) {
        let entry = self.0.entry(key.to_string()).or_default();
        match action {
            Action::Block => entry.0 += 1,
            Action::Report => entry.1 += 1,
            Action::Allow => {}
        }
    }

    pub(super) fn rows(self, limit: usize) -> Vec<CountRow> {
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
