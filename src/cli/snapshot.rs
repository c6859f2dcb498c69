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
    let resp = send(&a.client, http.get(url)).await?;
    if !resp.status().is_success() {
        return print_response(resp).await;
    }
    let bytes = resp
        .bytes()
        .await
        .context("the snapshot download broke off")?;
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
        std::fs::read(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
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
    let result = maxine::store::snapshot::restore_into(&mut *store, &bytes);
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
