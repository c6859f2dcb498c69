use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;

fn rec(i: u64) -> Record {
    Record {
        time_ms: 1_714_564_800_000 + i,
        index: Some(i),
        actor: format!("token:acc-{i}"),
        client: Some("10.0.0.9".into()),
        action: "register".into(),
        resource: format!("service:payments/instance:web-{i}"),
        outcome: "ok".into(),
        detail: None,
    }
}

fn denial(i: u64) -> Record {
    Record {
        time_ms: 1_714_564_900_000 + i,
        index: None,
        actor: "anonymous".into(),
        client: Some("192.0.2.1".into()),
        action: "denied".into(),
        resource: "service:payments".into(),
        outcome: "unauthenticated".into(),
        detail: Some("no token".into()),
    }
}

fn records(range: std::ops::RangeInclusive<u64>) -> Vec<Record> {
    range.map(rec).collect()
}

fn file(dir: &Path, no: u64) -> PathBuf {
    dir.join(line::file_name(no))
}

/// The lines of a file, without their newlines.
fn lines_of(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    std::fs::write(path, out).unwrap();
}

fn broken(dir: &Path) -> Broken {
    match verify(dir) {
        Err(VerifyError::Broken(b)) => b,
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

fn seqs(values: &[serde_json::Value]) -> Vec<u64> {
    values.iter().map(|v| v["seq"].as_u64().unwrap()).collect()
}

#[test]
fn appended_records_read_back_in_order_with_every_field() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let log = AuditLog::open(&dir, 1 << 20).unwrap();
    log.append(records(1..=2)).unwrap();
    let mut third = rec(3);
    third.index = None;
    third.client = None;
    third.detail = Some("why".into());
    log.append(vec![third]).unwrap();

    let all = read(&dir, 0, 100).unwrap();
    assert_eq!(seqs(&all), [1, 2, 3]);
    let first = &all[0];
    assert_eq!(first["time"], "2024-05-01T12:00:00.001Z");
    assert_eq!(first["time_ms"], 1_714_564_800_001u64);
    assert_eq!(first["index"], 1);
    assert_eq!(first["actor"], "token:acc-1");
    assert_eq!(first["client"], "10.0.0.9");
    assert_eq!(first["action"], "register");
    assert_eq!(first["resource"], "service:payments/instance:web-1");
    assert_eq!(first["outcome"], "ok");
    assert_eq!(first["detail"], serde_json::Value::Null);
    assert!(first.get("coalesced").is_none(), "only on coalesce records");
    assert_eq!(first["prev"], "0".repeat(64));
    assert_eq!(all[2]["index"], serde_json::Value::Null);
    assert_eq!(all[2]["client"], serde_json::Value::Null);
    assert_eq!(all[2]["detail"], "why");

    // Each prev is the SHA-256 of the line before, as stored.
    let lines = lines_of(&file(&dir, 1));
    assert_eq!(lines.len(), 3);
    for i in 1..3 {
        let expected = line::hex(&line::digest(&lines[i - 1]));
        assert_eq!(all[i]["prev"], expected);
    }

    assert_eq!(seqs(&read(&dir, 1, 1).unwrap()), [2]);
    assert_eq!(seqs(&read(&dir, 1, 100).unwrap()), [2, 3]);
    assert!(read(&dir, 3, 100).unwrap().is_empty());
    assert!(read(&dir, 0, 0).unwrap().is_empty());

    let report = verify(&dir).unwrap();
    assert_eq!((report.files, report.records, report.last_seq), (1, 3, 3));
    assert_eq!(report.head, line::hex(&line::digest(&lines[2])));
    assert_eq!(report.unfinished_tail_bytes, 0);
}

#[test]
fn reopening_continues_the_seq_and_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(tmp.path(), 1 << 20).unwrap();
    log.append(records(1..=3)).unwrap();
    drop(log);
    let log = AuditLog::open(tmp.path(), 1 << 20).unwrap();
    log.append(records(4..=5)).unwrap();
    assert_eq!(seqs(&read(tmp.path(), 0, 100).unwrap()), [1, 2, 3, 4, 5]);
    assert_eq!(verify(tmp.path()).unwrap().last_seq, 5);
}

#[test]
fn rotation_keeps_one_chain_across_files_and_read_spans_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let one_line = line::encode(1, &line::GENESIS, &rec(1), None).len() as u64 + 1;
    // Three records per file.
    let max = one_line * 3 + one_line / 2;
    let log = AuditLog::open(dir, max).unwrap();
    log.append(records(1..=4)).unwrap();
    for i in 5..=10 {
        log.append(vec![rec(i)]).unwrap();
    }
    let report = verify(dir).unwrap();
    assert_eq!((report.files, report.records), (4, 10));
    for no in 1..=4 {
        assert!(std::fs::metadata(file(dir, no)).unwrap().len() <= max);
    }
    assert_eq!(lines_of(&file(dir, 4)).len(), 1);

    // The first record of a file names the last line of the file before.
    let last_of_1 = lines_of(&file(dir, 1)).pop().unwrap();
    let first_of_2 = line::parse(&lines_of(&file(dir, 2))[0]).unwrap();
    assert_eq!(first_of_2.seq, 4);
    assert_eq!(first_of_2.prev, line::hex(&line::digest(&last_of_1)));

    assert_eq!(
        seqs(&read(dir, 0, 100).unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(seqs(&read(dir, 2, 5).unwrap()), [3, 4, 5, 6, 7]);
    assert_eq!(seqs(&read(dir, 7, 100).unwrap()), [8, 9, 10]);
    assert_eq!(seqs(&read(dir, 9, 100).unwrap()), [10]);

    // Reopened, the writer goes on in the last file, then rotates.
    drop(log);
    let log = AuditLog::open(dir, max).unwrap();
    log.append(records(11..=13)).unwrap();
    let report = verify(dir).unwrap();
    assert_eq!((report.files, report.last_seq), (5, 13));
}

#[test]
fn a_record_larger_than_a_file_gets_a_file_of_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(tmp.path(), 10).unwrap();
    log.append(records(1..=3)).unwrap();
    let report = verify(tmp.path()).unwrap();
    assert_eq!((report.files, report.records), (3, 3));
}

#[test]
fn every_flipped_bit_in_a_middle_record_breaks_the_chain_at_it_or_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    AuditLog::open(dir, 1 << 20)
        .unwrap()
        .append(records(1..=9))
        .unwrap();
    let path = file(dir, 1);
    let original = std::fs::read(&path).unwrap();
    let lines = lines_of(&path);
    // Record 5 starts after four lines and their newlines.
    let start: usize = lines[..4].iter().map(|l| l.len() + 1).sum();
    let end = start + lines[4].len() + 1; // its newline too
    for at in start..end {
        for bit in [0x01u8, 0x20, 0x80] {
            let mut bytes = original.clone();
            bytes[at] ^= bit;
            std::fs::write(&path, &bytes).unwrap();
            let b = broken(dir);
            assert_eq!(b.file, path);
            match b.why {
                // Still a record: only the next record's prev shows it
                // (or its own seq or prev, if the flip hit those).
                Break::Prev if b.seq == 6 => assert_eq!(b.line, 6),
                _ => assert_eq!((b.line, b.seq), (5, 5), "byte {at} bit {bit:#x}: {b}"),
            }
        }
    }
}

#[test]
fn a_changed_value_is_reported_at_the_record_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    AuditLog::open(dir, 1 << 20)
        .unwrap()
        .append(records(1..=9))
        .unwrap();
    let path = file(dir, 1);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("token:acc-5", "token:acc-X")).unwrap();
    let b = broken(dir);
    assert_eq!((b.line, b.seq, b.why.clone()), (6, 6, Break::Prev), "{b}");
    assert!(
        b.to_string()
            .contains("audit-000001.jsonl line 6 (record 6)"),
        "{b}"
    );

    // A line that is no longer JSON is reported at itself.
    std::fs::write(&path, text.replace("\"token:acc-5\"", "\"token:acc-5")).unwrap();
    let b = broken(dir);
    assert_eq!((b.line, b.seq), (5, 5));
    assert!(matches!(b.why, Break::Unparseable(_)), "{b}");
}

#[test]
fn a_deleted_or_inserted_line_is_reported_where_it_happened() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    AuditLog::open(dir, 1 << 20)
        .unwrap()
        .append(records(1..=9))
        .unwrap();
    let path = file(dir, 1);
    let lines = lines_of(&path);

    let mut deleted = lines.clone();
    deleted.remove(4);
    write_lines(&path, &deleted);
    let b = broken(dir);
    assert_eq!((b.line, b.seq, b.why), (5, 5, Break::Seq { found: 6 }));

    let mut inserted = lines.clone();
    inserted.insert(3, lines[2].clone());
    write_lines(&path, &inserted);
    let b = broken(dir);
    assert_eq!((b.line, b.seq, b.why), (4, 4, Break::Seq { found: 3 }));

    // A forged record with the right seq and prev still shifts the rest.
    let forged = line::encode(5, &line::digest(&lines[3]), &rec(99), None);
    let mut forged_in = lines.clone();
    forged_in.insert(4, forged);
    write_lines(&path, &forged_in);
    let b = broken(dir);
    assert_eq!((b.line, b.seq, b.why), (6, 6, Break::Seq { found: 5 }));

    write_lines(&path, &lines);
    assert_eq!(verify(dir).unwrap().records, 9);
}

#[test]
fn a_missing_or_swapped_file_breaks_the_chain_at_the_file_after() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let one_line = line::encode(1, &line::GENESIS, &rec(1), None).len() as u64 + 1;
    let log = AuditLog::open(dir, one_line * 2 + 1).unwrap();
    log.append(records(1..=8)).unwrap();
    drop(log);
    assert_eq!(verify(dir).unwrap().files, 4);

    // Files 2 and 3 trade places.
    let (two, three, spare) = (file(dir, 2), file(dir, 3), dir.join("spare"));
    std::fs::rename(&two, &spare).unwrap();
    std::fs::rename(&three, &two).unwrap();
    std::fs::rename(&spare, &three).unwrap();
    let b = broken(dir);
    assert_eq!((b.file, b.line, b.seq), (two.clone(), 1, 3));
    assert_eq!(b.why, Break::Seq { found: 5 });
    std::fs::rename(&three, &spare).unwrap();
    std::fs::rename(&two, &three).unwrap();
    std::fs::rename(&spare, &two).unwrap();
    assert!(verify(dir).is_ok());

    std::fs::remove_file(&two).unwrap();
    let b = broken(dir);
    assert_eq!((b.file, b.line, b.seq), (three, 1, 3));
    assert_eq!(b.why, Break::MissingFile("audit-000002.jsonl".into()));

    // The first file is missing too: the log does not start at the start.
    std::fs::remove_file(file(dir, 1)).unwrap();
    let b = broken(dir);
    assert_eq!(
        b.why,
        Break::MissingFile("audit-000001.jsonl to audit-000002.jsonl".into())
    );
}

#[test]
fn an_empty_middle_file_and_an_unfinished_middle_line_are_breaks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = AuditLog::open(dir, 1).unwrap();
    log.append(records(1..=3)).unwrap();
    drop(log);
    let two = file(dir, 2);
    let line = std::fs::read(&two).unwrap();
    std::fs::write(&two, &line[..line.len() - 1]).unwrap();
    let b = broken(dir);
    assert_eq!(
        (b.file.clone(), b.line, b.why),
        (two.clone(), 1, Break::Unfinished)
    );
    std::fs::write(&two, b"").unwrap();
    let b = broken(dir);
    assert_eq!((b.file, b.line, b.why), (two, 1, Break::EmptyFile));
}

#[test]
fn a_torn_last_line_is_cut_away_at_open_and_the_chain_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    AuditLog::open(dir, 1 << 20)
        .unwrap()
        .append(records(1..=5))
        .unwrap();
    let path = file(dir, 1);
    let whole = std::fs::read(&path).unwrap();
    let next = line::encode(6, &[7; 32], &rec(6), None);
    let mut torn = whole.clone();
    torn.extend_from_slice(&next[..40]);
    std::fs::write(&path, &torn).unwrap();

    // Not acknowledged, so not a break; verify says it is there.
    let report = verify(dir).unwrap();
    assert_eq!((report.records, report.unfinished_tail_bytes), (5, 40));
    assert_eq!(seqs(&read(dir, 0, 100).unwrap()), [1, 2, 3, 4, 5]);

    let log = AuditLog::open(dir, 1 << 20).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        whole,
        "the torn bytes are gone"
    );
    log.append(vec![rec(6)]).unwrap();
    let report = verify(dir).unwrap();
    assert_eq!((report.records, report.unfinished_tail_bytes), (6, 0));
}

#[test]
fn a_last_whole_line_that_is_not_a_record_is_cut_away_but_two_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    AuditLog::open(dir, 1 << 20)
        .unwrap()
        .append(records(1..=3))
        .unwrap();
    let path = file(dir, 1);
    let whole = std::fs::read(&path).unwrap();

    let mut one_bad = whole.clone();
    one_bad.extend_from_slice(b"{\"seq\":4,\"ti\0\0\0\n");
    std::fs::write(&path, &one_bad).unwrap();
    let log = AuditLog::open(dir, 1 << 20).unwrap();
    log.append(vec![rec(4)]).unwrap();
    drop(log);
    assert_eq!(verify(dir).unwrap().last_seq, 4);

    let mut two_bad = std::fs::read(&path).unwrap();
    two_bad.extend_from_slice(b"garbage\nmore garbage\npartial");
    std::fs::write(&path, &two_bad).unwrap();
    match AuditLog::open(dir, 1 << 20) {
        Err(AuditError::Damaged { path: p, .. }) => assert_eq!(p, path),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a damaged log was opened"),
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        two_bad,
        "left for an operator"
    );
}

#[test]
fn an_empty_last_file_continues_the_chain_of_the_file_before() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    AuditLog::open(dir, 1 << 20)
        .unwrap()
        .append(records(1..=2))
        .unwrap();
    // A crash right after the next file was created.
    std::fs::write(file(dir, 2), b"").unwrap();
    assert!(verify(dir).is_ok());
    AuditLog::open(dir, 1 << 20)
        .unwrap()
        .append(vec![rec(3)])
        .unwrap();
    let report = verify(dir).unwrap();
    assert_eq!((report.files, report.last_seq), (2, 3));
    assert_eq!(lines_of(&file(dir, 2)).len(), 1);
}

#[test]
fn a_denial_flood_beyond_the_queue_becomes_one_coalesce_record_with_the_count() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = AuditLog::open(dir, 64 << 20).unwrap();
    let flood = DENY_QUEUE as u64 + 7;
    for i in 0..flood {
        log.deny(denial(i));
    }
    assert!(read(dir, 0, 1).unwrap().is_empty(), "nothing written yet");
    log.flush().unwrap();
    let all = read(dir, 0, usize::MAX).unwrap();
    assert_eq!(all.len(), DENY_QUEUE + 1);
    assert!(
        all[..DENY_QUEUE]
            .iter()
            .all(|v| v.get("coalesced").is_none())
    );
    assert_eq!(
        all[DENY_QUEUE - 1]["time_ms"],
        denial(DENY_QUEUE as u64 - 1).time_ms
    );
    let coalesce = &all[DENY_QUEUE];
    assert_eq!(coalesce["coalesced"], 7);
    assert_eq!(coalesce["actor"], "system");
    assert_eq!(coalesce["outcome"], "coalesced");
    assert_eq!(coalesce["time_ms"], denial(flood - 1).time_ms);
    assert!(
        coalesce["detail"]
            .as_str()
            .unwrap()
            .starts_with("7 denials")
    );
    assert_eq!(verify(dir).unwrap().records, DENY_QUEUE as u64 + 1);

    // The count starts again after a write.
    log.deny(denial(0));
    log.flush().unwrap();
    let after = read(dir, DENY_QUEUE as u64 + 1, 10).unwrap();
    assert_eq!(after.len(), 1);
    assert!(after[0].get("coalesced").is_none());
}

#[test]
fn queued_denials_are_written_before_the_next_appended_records() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(tmp.path(), 1 << 20).unwrap();
    log.deny(denial(1));
    log.deny(denial(2));
    log.append(vec![rec(3)]).unwrap();
    let all = read(tmp.path(), 0, 100).unwrap();
    let actions: Vec<&str> = all.iter().map(|v| v["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["denied", "denied", "register"]);
    assert_eq!(seqs(&all), [1, 2, 3]);
    // Nothing queued: a flush writes nothing.
    log.flush().unwrap();
    assert_eq!(verify(tmp.path()).unwrap().records, 3);
}

#[test]
fn a_failed_write_keeps_nothing_and_its_denials_stay_queued() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let one_line = line::encode(1, &line::GENESIS, &rec(1), None).len() as u64 + 1;
    // Room for record 1 and the denial, not for another record.
    let log = AuditLog::open(dir, one_line * 2 + 50).unwrap();
    log.append(vec![rec(1)]).unwrap();
    let before = std::fs::read(file(dir, 1)).unwrap();
    // The next file cannot be created (its name is taken by a directory),
    // so a batch that needs it fails after part of it went into file 1.
    std::fs::create_dir(file(dir, 2)).unwrap();
    log.deny(denial(1));
    assert!(matches!(
        log.append(records(2..=3)),
        Err(AuditError::Write { .. })
    ));
    assert_eq!(std::fs::read(file(dir, 1)).unwrap(), before);

    std::fs::remove_dir(file(dir, 2)).unwrap();
    log.append(vec![rec(2)]).unwrap();
    let all = read(dir, 0, 100).unwrap();
    assert_eq!(seqs(&all), [1, 2, 3]);
    assert_eq!(all[1]["action"], "denied", "the queued denial was kept");
    assert_eq!(lines_of(&file(dir, 1)).len(), 2, "record 1 and the denial");
    assert_eq!(verify(dir).unwrap().last_seq, 3);
}

#[test]
fn detail_is_cut_to_the_bound_on_a_char_boundary() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(tmp.path(), 1 << 20).unwrap();
    let mut r = rec(1);
    // 1 + 2 * 300 bytes: 512 falls inside a two-byte char.
    let long = format!("x{}", "é".repeat(300));
    r.detail = Some(long.clone());
    log.append(vec![r]).unwrap();
    let got = read(tmp.path(), 0, 1).unwrap()[0]["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(got.len(), 511);
    assert!(long.starts_with(&got));
    assert_eq!(line::truncate("short", MAX_DETAIL_BYTES), "short");
}

#[test]
fn the_directory_is_private_and_held_by_one_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a").join("audit");
    let log = AuditLog::open(&dir, 1 << 20).unwrap();
    log.append(vec![rec(1)]).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&file(&dir, 1)), 0o600);
    assert_eq!(log.dir(), dir);

    assert!(matches!(
        AuditLog::open(&dir, 1 << 20),
        Err(AuditError::Locked { .. })
    ));
    let clone = log.clone();
    drop(log);
    assert!(matches!(
        AuditLog::open(&dir, 1 << 20),
        Err(AuditError::Locked { .. })
    ));
    drop(clone);
    AuditLog::open(&dir, 1 << 20).unwrap();
}

#[test]
fn verify_of_an_empty_directory_vouches_for_nothing_and_of_a_missing_one_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let report = verify(tmp.path()).unwrap();
    assert_eq!((report.files, report.records, report.last_seq), (0, 0, 0));
    assert_eq!(report.head, "0".repeat(64));
    assert!(matches!(
        verify(&tmp.path().join("nope")),
        Err(VerifyError::Io { .. })
    ));
}

#[test]
fn times_are_rfc3339_utc_with_milliseconds_for_any_u64() {
    for ms in [0, 1_714_564_800_250, 951_782_400_000, 4_102_444_799_999] {
        let expected = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string();
        assert_eq!(line::rfc3339_millis(ms), expected);
    }
    assert_eq!(line::rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
    // Far past year 9999: a longer year, not a panic.
    assert!(line::rfc3339_millis(u64::MAX).ends_with(".615Z"));
}

#[test]
fn only_exactly_named_files_are_audit_files() {
    assert_eq!(line::file_number("audit-000001.jsonl"), Some(1));
    assert_eq!(line::file_number("audit-1234567.jsonl"), Some(1_234_567));
    for other in [
        "audit-1.jsonl",
        "audit-0000001.jsonl",
        "audit-00000a.jsonl",
        "audit-000001.jsonl.bak",
        "audit.lock",
    ] {
        assert_eq!(line::file_number(other), None, "{other}");
    }
}
