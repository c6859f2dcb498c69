//! `audit verify`: checks the hash chain of an audit directory, offline
//! (no server needed; safe beside a running one, which it does not touch).

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use maxine::audit::{self, VerifyError};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check every record of an audit directory: exit 0 if the chain is
    /// whole, 1 naming the first broken record otherwise.
    Verify(VerifyArgs),
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The audit directory, holding audit-000001.jsonl, ...
    pub dir: PathBuf,
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    let AuditCommand::Verify(a) = cmd;
    match audit::verify(&a.dir) {
        Ok(r) => {
            println!(
                "audit log verified: {} in {}, last seq {}",
                count(r.records, "record"),
                count(r.files as u64, "file"),
                r.last_seq
            );
            // Noted down, the head lets a later run show that nothing up to
            // here was cut off or changed, which a chain alone cannot.
            println!("head sha256 {}", r.head);
            if r.files == 0 {
                eprintln!(
                    "note: {} holds no audit files (audit-000001.jsonl, ...): is it the audit directory?",
                    a.dir.display()
                );
            }
            if r.unfinished_tail_bytes > 0 {
                println!(
                    "the last file ends in {} bytes of an unfinished record: a write in progress, \
                     or cut short by a crash (never acknowledged; removed when Maxine next opens the log)",
                    r.unfinished_tail_bytes
                );
            }
            Ok(())
        }
        Err(VerifyError::Broken(b)) => bail!("audit log broken: {b}"),
        Err(e) => Err(e.into()),
    }
}

/// "1 record", "2 records".
fn count(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}
