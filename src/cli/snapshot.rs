//! `snapshot save` (from a running server, through the API) and
//! `snapshot restore` (into the store of a stopped server).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::api::{ClientArgs, client_with_timeout, print_response, send};
use super::settings::StoreArgs;

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Save the registry of a running server to FILE (GET /v1/snapshot).
    Save(SnapshotSaveArgs),
    /// Replace what the store holds with FILE. Run it while Maxine is
    /// stopped, with the store settings `serve` uses; then start Maxine.
    Restore(SnapshotRestoreArgs),
}

#[derive(Args)]
pub struct SnapshotSaveArgs {
    /// The snapshot file to write (replaced whole, never left half-written)
    file: PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct SnapshotRestoreArgs {
    /// A snapshot file written by `maxine snapshot save`
    file: PathBuf,
    #[command(flatten)]
    settings: StoreArgs,
}

pub async fn save(a: SnapshotSaveArgs) -> anyhow::Result<()> {
    let url = format!("{}/v1/snapshot", a.client.api.trim_end_matches('/'));
    // A million instances make a file of a few hundred MB.
    let http = client_with_timeout(&a.client, std::time::Duration::from_secs(600))?;
    let mut resp = send(&a.client, http.get(url)).await?;
    if !resp.status().is_success() {
        return print_response(resp).await;
    }
    let bar = super::progress::bytes("downloading", resp.content_length());
    // The length is the server's word: a first allocation of at most 64 MiB.
    let mut bytes = Vec::with_capacity(resp.content_length().unwrap_or(0).min(64 << 20) as usize);
    while let Some(chunk) = resp
        .chunk()
        .await
        .context("the snapshot download broke off")?
    {
        bytes.extend_from_slice(&chunk);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let snap = maxine::store::snapshot::decode(&bytes)?;
    // Write beside the target, fsync, rename over it, fsync the directory:
    // FILE is either the old file or the whole new one, even after a crash.
    let dir = match a.file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        a.file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("snapshot"),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &a.file)?;
        std::fs::File::open(&dir)?.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        bail!("cannot write {}: {e}", a.file.display());
    }
    println!(
        "saved {} instances at index {} to {}",
        snap.records.len(),
        snap.last_index,
        a.file.display()
    );
    Ok(())
}

pub fn restore(a: SnapshotRestoreArgs) -> anyhow::Result<()> {
    let config = a.settings.load()?;
    let bytes =
        read_with_progress(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    // Verify before opening the store, so a bad file touches nothing.
    maxine::store::snapshot::decode(&bytes)
        .with_context(|| format!("{} cannot be restored", a.file.display()))?;
    let Some(mut store) = maxine::app::open_store(&config)? else {
        bail!("the store is \"memory\": there is nothing to restore into");
    };
    // A restore replaces every registration, token and policy: it is
    // audited like any other change (and a running server, which holds
    // the audit log, is refused here).
    let audit =
        maxine::audit::AuditLog::open(&config.data_dir.join("audit"), config.audit.max_file_bytes)
            .context("cannot open the audit log (stop the server before restoring)")?;
    let mut checking: Option<indicatif::ProgressBar> = None;
    let mut writing: Option<indicatif::ProgressBar> = None;
    let result = maxine::store::snapshot::restore_into_with(&mut *store, &bytes, &mut |step| {
        use maxine::store::snapshot::RestoreStep;
        match step {
            RestoreStep::Checked { checked, total } => checking
                .get_or_insert_with(|| super::progress::records("checking", total as u64))
                .set_position(checked as u64),
            RestoreStep::Writing => {
                if let Some(bar) = checking.take() {
                    bar.finish_and_clear();
                }
                writing = Some(super::progress::spinner("writing to the store"));
            }
        }
    });
    for bar in [checking, writing].into_iter().flatten() {
        bar.finish_and_clear();
    }
    let record = maxine::audit::Record {
        time_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        index: result.as_ref().ok().map(|d| d.last_index),
        actor: format!(
            "local:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        ),
        client: None,
        action: "snapshot.restore".into(),
        resource: format!("store:{}", store.describe()),
        outcome: if result.is_ok() { "ok" } else { "failed" }.into(),
        detail: Some(format!("from {}", a.file.display())),
    };
    audit
        .append(vec![record])
        .context("cannot write the audit log")?;
    let done = result?;
    println!(
        "restored {} instances and {} tokens, policies and users into {}; the change index goes on from {}. Start `maxine serve` to serve them.",
        done.instances,
        done.acl_objects,
        store.describe(),
        done.last_index
    );
    Ok(())
}

/// Reads a whole file, with a bar of bytes on a terminal.
fn read_with_progress(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let bar = super::progress::bytes("reading", Some(len));
    let mut out = Vec::with_capacity(len as usize);
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}
