//! Reading the audit log back: [`read`] pages through it for the API, and
//! [`verify`] walks the whole chain for an operator. Neither writes, so
//! both are safe beside a running server.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::AuditError;
use super::line::{self, GENESIS};

/// Records with `seq > since`, at most `limit`, oldest first, across the
/// files, as parsed JSON objects (the fields of the line format).
///
/// Files that end before `since` are skipped by their first record, so a
/// page costs about one file's reading, not the whole log's. An unfinished
/// last line (being written right now, or torn by a crash) is not returned.
pub fn read(dir: &Path, since: u64, limit: usize) -> Result<Vec<serde_json::Value>, AuditError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let files = line::list_files(dir).map_err(|source| AuditError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    // The last file whose first record is at or before since + 1.
    let mut start = 0;
    for (i, (_, path)) in files.iter().enumerate().skip(1) {
        match first_seq(path)? {
            Some(first) if first <= since.saturating_add(1) => start = i,
            Some(_) => break,
            None => {}
        }
    }
    for (_, path) in &files[start..] {
        let mut lines = Lines::open(path).map_err(|source| read_err(path, source))?;
        while let Some((n, bytes)) = lines.next().map_err(|source| read_err(path, source))? {
            let Some(bytes) = bytes.strip_suffix(b"\n") else {
                break;
            };
            let value: serde_json::Value =
                serde_json::from_slice(bytes).map_err(|e| AuditError::Unparseable {
                    path: path.clone(),
                    line: n,
                    why: e.to_string(),
                })?;
            let seq = value.get("seq").and_then(serde_json::Value::as_u64);
            let Some(seq) = seq else {
                return Err(AuditError::Unparseable {
                    path: path.clone(),
                    line: n,
                    why: "no seq".into(),
                });
            };
            if seq > since {
                out.push(value);
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

/// The seq of the first record of a file, None if it has none.
fn first_seq(path: &Path) -> Result<Option<u64>, AuditError> {
    let mut lines = Lines::open(path).map_err(|source| read_err(path, source))?;
    let Some((_, bytes)) = lines.next().map_err(|source| read_err(path, source))? else {
        return Ok(None);
    };
    let Some(bytes) = bytes.strip_suffix(b"\n") else {
        return Ok(None);
    };
    line::parse(bytes)
        .map(|r| Some(r.seq))
        .map_err(|e| AuditError::Unparseable {
            path: path.to_path_buf(),
            line: 1,
            why: e.to_string(),
        })
}

/// What [`verify`] found in a log whose chain is whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Audit files read.
    pub files: usize,
    /// Records checked.
    pub records: u64,
    /// Seq of the last record (0 if there is none).
    pub last_seq: u64,
    /// Hex SHA-256 of the last record's line (64 zeros if there is none).
    /// Noted down somewhere else, it later proves that nothing up to that
    /// record was changed, including the record itself.
    pub head: String,
    /// Bytes of an unfinished line at the very end: a write in progress or
    /// cut short by a crash, never acknowledged; the next open removes it.
    pub unfinished_tail_bytes: u64,
}

/// Why [`verify`] did not vouch for a log.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The directory or a file could not be read; nothing is said of the chain.
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// The chain breaks at this record.
    #[error(transparent)]
    Broken(#[from] Broken),
}

/// The first record at which the chain breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} line {line} (record {seq}): {why}", file.display())]
pub struct Broken {
    /// The file holding the record.
    pub file: PathBuf,
    /// Its line in that file, from 1.
    pub line: u64,
    /// The seq a record at this place must have (what the line holds may
    /// differ, or be unreadable).
    pub seq: u64,
    pub why: Break,
}

/// How a chain breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    /// The line is not a record: changed, or not written by Maxine.
    #[error("not a record: {0}")]
    Unparseable(String),
    /// Records were removed, added or reordered before this one.
    #[error("its seq is {found}: records before it were removed, added or reordered")]
    Seq { found: u64 },
    /// Its `prev` is not the hash of the record before it.
    #[error(
        "its prev is not the SHA-256 of the record before it (64 zeros for the first record): \
         this record or the one before it was changed"
    )]
    Prev,
    /// Audit files are missing before the one holding this record.
    #[error("{0} is missing")]
    MissingFile(String),
    /// A file other than the last holds no record.
    #[error("the file is empty, and a later file exists")]
    EmptyFile,
    /// A line without a newline in a file other than the last.
    #[error("the line is unfinished, and a later file exists")]
    Unfinished,
}

/// Checks the whole chain: files numbered from 1 without gaps, seq 1, 2, 3…
/// line after line, and every `prev` equal to the SHA-256 of the line
/// before it (64 zeros for the first). Returns the first record at which
/// that fails.
///
/// What a chain alone cannot show: records cut off at the end (the log
/// simply looks shorter), and a change to the last record that keeps it a
/// valid record, since no later record names its hash. Both are caught by
/// comparing with a [`VerifyReport::head`] noted down earlier: that record
/// must still be there with the same hash.
pub fn verify(dir: &Path) -> Result<VerifyReport, VerifyError> {
    let files = line::list_files(dir).map_err(|source| VerifyError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut seq = 1;
    let mut prev = GENESIS;
    let mut unfinished_tail_bytes = 0;
    for (i, (no, path)) in files.iter().enumerate() {
        let is_last = i + 1 == files.len();
        let expected_no = i as u64 + 1;
        let broken = |line, seq, why| {
            VerifyError::Broken(Broken {
                file: path.clone(),
                line,
                seq,
                why,
            })
        };
        if *no != expected_no {
            let mut missing = line::file_name(expected_no);
            if *no > expected_no + 1 {
                missing = format!("{missing} to {}", line::file_name(no - 1));
            }
            return Err(broken(1, seq, Break::MissingFile(missing)));
        }
        let io = |source| VerifyError::Io {
            path: path.clone(),
            source,
        };
        let mut lines = Lines::open(path).map_err(io)?;
        let mut any = false;
        while let Some((n, bytes)) = lines.next().map_err(io)? {
            any = true;
            let Some(bytes) = bytes.strip_suffix(b"\n") else {
                if is_last {
                    unfinished_tail_bytes = bytes.len() as u64;
                    break;
                }
                return Err(broken(n, seq, Break::Unfinished));
            };
            let rec = line::parse(bytes)
                .map_err(|e| broken(n, seq, Break::Unparseable(e.to_string())))?;
            if rec.seq != seq {
                return Err(broken(n, seq, Break::Seq { found: rec.seq }));
            }
            if rec.prev != line::hex(&prev) {
                return Err(broken(n, seq, Break::Prev));
            }
            prev = line::digest(bytes);
            seq += 1;
        }
        if !any && !is_last {
            return Err(broken(1, seq, Break::EmptyFile));
        }
    }
    Ok(VerifyReport {
        files: files.len(),
        records: seq - 1,
        last_seq: seq - 1,
        head: line::hex(&prev),
        unfinished_tail_bytes,
    })
}

/// The lines of a file with their numbers (from 1), each with its newline
/// if it has one.
struct Lines {
    reader: BufReader<File>,
    buf: Vec<u8>,
    n: u64,
}

impl Lines {
    fn open(path: &Path) -> io::Result<Lines> {
        Ok(Lines {
            reader: BufReader::with_capacity(64 * 1024, File::open(path)?),
            buf: Vec::new(),
            n: 0,
        })
    }

    fn next(&mut self) -> io::Result<Option<(u64, &[u8])>> {
        self.buf.clear();
        if self.reader.read_until(b'\n', &mut self.buf)? == 0 {
            return Ok(None);
        }
        self.n += 1;
        Ok(Some((self.n, &self.buf)))
    }
}

fn read_err(path: &Path, source: io::Error) -> AuditError {
    AuditError::Read {
        path: path.to_path_buf(),
        source,
    }
}
