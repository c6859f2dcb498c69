//! The bytes of the audit log: one JSON object per line, each naming the
//! SHA-256 of the line before it, in files `audit-NNNNNN.jsonl`.
//!
//! Both the writer and the readers (`read`, `verify`) take the format from
//! here, so a line is encoded in one place and checked against the same
//! definition.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Record;

/// What the first record names as its `prev`: 32 zero bytes.
pub(super) const GENESIS: Digest = [0; 32];

/// A SHA-256 digest.
pub(super) type Digest = [u8; 32];

/// Longest `detail` kept, in bytes; longer ones are cut on a char boundary.
pub const MAX_DETAIL_BYTES: usize = 512;

/// One line as stored. Field order is the order written, for people
/// reading the files; the chain covers the bytes, not this struct.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Stored {
    pub seq: u64,
    pub time: String,
    pub time_ms: u64,
    pub index: Option<u64>,
    pub actor: String,
    pub client: Option<String>,
    pub action: String,
    pub resource: String,
    pub outcome: String,
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesced: Option<u64>,
    pub prev: String,
}

/// The line (without its newline) of `record` at `seq`, chained to `prev`.
/// `coalesced` is set only on the record that stands for dropped denials.
pub(super) fn encode(seq: u64, prev: &Digest, record: &Record, coalesced: Option<u64>) -> Vec<u8> {
    let stored = Stored {
        seq,
        time: rfc3339_millis(record.time_ms),
        time_ms: record.time_ms,
        index: record.index,
        actor: record.actor.clone(),
        client: record.client.clone(),
        action: record.action.clone(),
        resource: record.resource.clone(),
        outcome: record.outcome.clone(),
        detail: record
            .detail
            .as_deref()
            .map(|d| truncate(d, MAX_DETAIL_BYTES).to_owned()),
        coalesced,
        prev: hex(prev),
    };
    // Strings and integers only: serialising cannot fail, and serde_json
    // escapes newlines, so a line never contains b'\n'.
    serde_json::to_vec(&stored).expect("an audit record serialises")
}

/// Parses a line (without its newline) as a record.
pub(super) fn parse(line: &[u8]) -> Result<Stored, serde_json::Error> {
    serde_json::from_slice(line)
}

/// SHA-256 of a line's bytes (without its newline).
pub(super) fn digest(line: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, line);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lower-case hex of a digest, as `prev` holds it.
pub(super) fn hex(d: &Digest) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in d {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

/// `s` cut to at most `max` bytes, at a char boundary.
pub(super) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// RFC 3339 in UTC with milliseconds, e.g. `2024-05-01T12:00:00.250Z`.
/// Any `u64` is accepted (years past 9999 get more digits), so a clock far
/// off cannot make a record unwritable.
pub(super) fn rfc3339_millis(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// (year, month, day) of a count of days since 1970-01-01, in the
/// proleptic Gregorian calendar (the "civil from days" algorithm over
/// 400-year eras, which start on a 1 March).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // 719_468 days from 0000-03-01 to 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// The name of audit file number `no`.
pub(super) fn file_name(no: u64) -> String {
    format!("audit-{no:06}.jsonl")
}

/// The number of an audit file from its name, if it is one of ours
/// (spelled exactly as [`file_name`] spells it).
pub(super) fn file_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let no: u64 = digits.parse().ok()?;
    (file_name(no) == name).then_some(no)
}

/// The audit files in `dir`, by number. Other files are not looked at.
pub(super) fn list_files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(no) = entry.file_name().to_str().and_then(file_number) else {
            continue;
        };
        if entry.file_type()?.is_file() {
            files.push((no, entry.path()));
        }
    }
    files.sort_unstable_by_key(|(no, _)| *no);
    Ok(files)
}
