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
        websocket_message: None,
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
