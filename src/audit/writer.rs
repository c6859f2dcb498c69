//! The one writer of an audit directory: where the chain stands (next seq,
//! hash of the last line, current file), picked up from the files at open,
//! and batches written, rotated and fsynced, or undone when they fail.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::AuditError;
use super::Record;
use super::line::{self, Digest, GENESIS};

/// A record to write, and the count of denials it stands for if it is a
/// coalesce record.
pub(super) struct Entry {
    pub record: Record,
    pub coalesced: Option<u64>,
}

pub(super) struct Writer {
    dir: PathBuf,
    max_file_bytes: u64,
    /// Number of the file the next line goes into.
    file_no: u64,
    /// That file, once it exists (a new file is created by its first write).
    file: Option<File>,
    /// Bytes in that file.
    file_len: u64,
    next_seq: u64,
    /// Hash of the last line written: the next record's `prev`.
    prev: Digest,
    /// Files created by the batch being written, to remove if it fails.
    created: Vec<PathBuf>,
    /// A failed batch could not be undone: what is on disk is no longer
    /// what this struct says, and the next append reloads it first.
    stale: bool,
}

/// Where the chain stood before a batch, to undo it.
struct Checkpoint {
    file_no: u64,
    file_existed: bool,
    file_len: u64,
    next_seq: u64,
    prev: Digest,
}

impl Writer {
    /// Picks up the chain from the last record of the last file. An
    /// unfinished last line (a crash mid-write: it was never acknowledged)
    /// is cut away, and so is a last line that is not a record; anything
    /// more damaged than that is refused, for an operator to look at.
    pub(super) fn load(dir: &Path, max_file_bytes: u64) -> Result<Writer, AuditError> {
        let mut w = Writer {
            dir: dir.to_path_buf(),
            max_file_bytes,
            file_no: 1,
            file: None,
            file_len: 0,
            next_seq: 1,
            prev: GENESIS,
            created: Vec::new(),
            stale: false,
        };
        let files = line::list_files(dir).map_err(|source| AuditError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let Some((no, path)) = files.last() else {
            return Ok(w);
        };
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(|source| read_err(path, source))?;
        let len = file
            .metadata()
            .map_err(|source| read_err(path, source))?
            .len();
        let tail = examine(&file, len, path)?;
        if tail.keep < len {
            tracing::warn!(
                file = %path.display(),
                bytes = len - tail.keep,
                "the audit log ends in a record that was being written when Maxine stopped; \
                 it was never acknowledged and is cut away"
            );
            file.set_len(tail.keep)
                .and_then(|()| file.sync_all())
                .map_err(|source| write_err(path, source))?;
        }
        w.file_no = *no;
        w.file_len = tail.keep;
        w.file = Some(file);
        let last = match tail.last {
            Some(l) => Some(l),
            // An empty last file (created just before a crash): the chain
            // goes on from the file before, which must end cleanly.
            None if files.len() >= 2 => {
                let (_, prev_path) = &files[files.len() - 2];
                let f = File::open(prev_path).map_err(|source| read_err(prev_path, source))?;
                let len = f
                    .metadata()
                    .map_err(|source| read_err(prev_path, source))?
                    .len();
                let t = examine(&f, len, prev_path)?;
                if t.keep != len || t.last.is_none() {
                    return Err(AuditError::Damaged {
                        path: prev_path.clone(),
                        offset: t.keep,
                        why: "a later file exists, but this one does not end in a whole record"
                            .into(),
                    });
                }
                t.last
            }
            None => None,
        };
        if let Some(last) = last {
            // `examine` only returns lines that parse.
            let rec = line::parse(&last).map_err(|e| AuditError::Damaged {
                path: path.clone(),
                offset: 0,
                why: e.to_string(),
            })?;
            w.next_seq = rec.seq + 1;
            w.prev = line::digest(&last);
        }
        Ok(w)
    }

    /// Makes the next append reload the chain from the files first.
    pub(super) fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// Writes `entries` in order and fsyncs; on Err nothing of them is
    /// kept (unless undoing failed too, and then the next call reloads).
    pub(super) fn append(&mut self, entries: &[Entry]) -> Result<(), AuditError> {
        if self.stale {
            *self = Writer::load(&self.dir, self.max_file_bytes)?;
        }
        if entries.is_empty() {
            return Ok(());
        }
        let checkpoint = Checkpoint {
            file_no: self.file_no,
            file_existed: self.file.is_some(),
            file_len: self.file_len,
            next_seq: self.next_seq,
            prev: self.prev,
        };
        self.created.clear();
        let result = self.write_batch(entries);
        if result.is_err()
            && let Err(e) = self.undo(&checkpoint)
        {
            tracing::warn!(error = %e, dir = %self.dir.display(),
                "cannot undo a failed audit write; the log is reloaded from disk before the next one");
            self.stale = true;
        }
        result
    }

    fn write_batch(&mut self, entries: &[Entry]) -> Result<(), AuditError> {
        let mut buf = Vec::new();
        for e in entries {
            let line = line::encode(self.next_seq, &self.prev, &e.record, e.coalesced);
            let used = self.file_len + buf.len() as u64;
            // A file always takes at least one record, however long.
            if used > 0 && used + line.len() as u64 + 1 > self.max_file_bytes {
                self.write_out(&buf)?;
                buf.clear();
                // The old file is complete on disk before the next exists,
                // so only the last file can ever end in a torn line.
                self.sync_file()?;
                self.file = None;
                self.file_no += 1;
                self.file_len = 0;
            }
            self.prev = line::digest(&line);
            self.next_seq += 1;
            buf.extend_from_slice(&line);
            buf.push(b'\n');
        }
        self.write_out(&buf)?;
        self.sync_file()
    }

    fn path(&self, no: u64) -> PathBuf {
        self.dir.join(line::file_name(no))
    }

    fn write_out(&mut self, buf: &[u8]) -> Result<(), AuditError> {
        if buf.is_empty() {
            return Ok(());
        }
        let path = self.path(self.file_no);
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                let f = OpenOptions::new()
                    .append(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|source| write_err(&path, source))?;
                self.created.push(path.clone());
                sync_dir(&self.dir)?;
                self.file.insert(f)
            }
        };
        // One write per batch and file: a crash leaves whole lines and at
        // most one unfinished one, at the end.
        file.write_all(buf)
            .map_err(|source| write_err(&path, source))?;
        self.file_len += buf.len() as u64;
        Ok(())
    }

    fn sync_file(&self) -> Result<(), AuditError> {
        match &self.file {
            // Data and the file size: all a reader needs to find the lines.
            Some(f) => f
                .sync_data()
                .map_err(|source| write_err(&self.path(self.file_no), source)),
            None => Ok(()),
        }
    }

    /// Puts the files and the chain back where `cp` says.
    fn undo(&mut self, cp: &Checkpoint) -> io::Result<()> {
        self.file = None;
        if !self.created.is_empty() {
            for path in std::mem::take(&mut self.created) {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            File::open(&self.dir)?.sync_all()?;
        }
        if cp.file_existed {
            let f = OpenOptions::new()
                .read(true)
                .append(true)
                .open(self.path(cp.file_no))?;
            f.set_len(cp.file_len)?;
            f.sync_all()?;
            self.file = Some(f);
        }
        self.file_no = cp.file_no;
        self.file_len = cp.file_len;
        self.next_seq = cp.next_seq;
        self.prev = cp.prev;
        Ok(())
    }
}

/// What the end of a file holds: how many bytes to keep, and the last
/// whole line that is a record (None if none is left).
struct Tail {
    keep: u64,
    last: Option<Vec<u8>>,
}

/// Reads back from the end of `file` as far as needed to see two whole
/// lines, and decides what survives: an unfinished last line goes, and so
/// does one last whole line that is not a record; a second bad line is
/// damage, not an interrupted write.
fn examine(file: &File, len: u64, path: &Path) -> Result<Tail, AuditError> {
    let (start, buf) = read_tail(file, len).map_err(|source| read_err(path, source))?;
    // Bytes after the last newline were never acknowledged.
    let mut end = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut dropped_line = false;
    while end > 0 {
        let line_start = buf[..end - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = &buf[line_start..end - 1];
        match line::parse(line) {
            Ok(_) => {
                return Ok(Tail {
                    keep: start + end as u64,
                    last: Some(line.to_vec()),
                });
            }
            Err(e) if dropped_line => {
                return Err(AuditError::Damaged {
                    path: path.to_path_buf(),
                    offset: start + line_start as u64,
                    why: format!(
                        "the last two lines are not records ({e}): this is damage, not an \
                         interrupted write; see `maxine audit verify`"
                    ),
                });
            }
            Err(_) => {
                dropped_line = true;
                end = line_start;
            }
        }
    }
    Ok(Tail {
        keep: start + end as u64,
        last: None,
    })
}

/// The end of `file`, from an offset early enough to hold two whole lines
/// (three newlines) or from the start: (offset, bytes).
fn read_tail(file: &File, len: u64) -> io::Result<(u64, Vec<u8>)> {
    let mut want: u64 = 16 * 1024;
    loop {
        let start = len.saturating_sub(want);
        let mut buf = vec![0; (len - start) as usize];
        file.read_exact_at(&mut buf, start)?;
        if start == 0 || buf.iter().filter(|&&b| b == b'\n').count() >= 3 {
            return Ok((start, buf));
        }
        want *= 2;
    }
}

/// Makes a new directory entry in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| write_err(dir, source))
}

fn read_err(path: &Path, source: io::Error) -> AuditError {
    AuditError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn write_err(path: &Path, source: io::Error) -> AuditError {
    AuditError::Write {
        path: path.to_path_buf(),
        source,
    }
}
