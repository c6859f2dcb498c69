//! Many registrations written straight into etcd, keys and values exactly
//! as a node's proposer writes them (the same function makes them), in
//! large plain transactions: how the start-up benchmark
//! (`examples/etcd_fill.rs`, `benches/etcd-startup.sh`) puts a million
//! instances into etcd in seconds instead of through the API. Not used by
//! the server; nothing is checked (no quota, no owner, no compare): the
//! caller hands valid, distinct registrations.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, Txn, TxnOp};
use tokio::task::JoinSet;

use super::{Keys, registration};
use crate::core::{InstanceId, InstanceSpec, ServiceKey};

/// Bytes of keys and values in one transaction, below etcd's default
/// `--max-request-bytes` (1.5 MiB).
const MAX_BYTES: usize = 1024 * 1024;
/// Transactions in flight at once.
const IN_FLIGHT: usize = 4;

/// Writes `registrations` under `prefix` (as in `etcd://.../PREFIX`) through
/// the members at `endpoints` (`host:port`), at most `per_txn` keys per
/// transaction (etcd refuses more than its `--max-txn-ops`); returns the
/// revision of the last transaction.
pub async fn fill(
    endpoints: &[String],
    prefix: &str,
    registrations: impl IntoIterator<Item = (ServiceKey, InstanceId, InstanceSpec)>,
    per_txn: usize,
) -> anyhow::Result<u64> {
    let urls: Vec<String> = endpoints.iter().map(|e| format!("http://{e}")).collect();
    let client = Client::connect(
        urls,
        Some(ConnectOptions::new().with_connect_timeout(Duration::from_secs(5))),
    )
    .await?;
    let keys = Keys::new(prefix);
    let per_txn = per_txn.max(1);
    let mut flying: JoinSet<anyhow::Result<u64>> = JoinSet::new();
    let mut revision = 0;
    let mut ops = Vec::with_capacity(per_txn);
    let mut bytes = 0;
    let mut items = registrations.into_iter().peekable();
    while items.peek().is_some() {
        for (key, id, spec) in items.by_ref() {
            let (k, v) = registration(&keys, &key, &id, spec);
            bytes += k.len() + v.len();
            ops.push(TxnOp::put(k, v, None));
            if ops.len() >= per_txn || bytes >= MAX_BYTES {
                break;
            }
        }
        if flying.len() >= IN_FLIGHT
            && let Some(done) = flying.join_next().await
        {
            revision = revision.max(done??);
        }
        let txn = Txn::new().and_then(std::mem::take(&mut ops));
        bytes = 0;
        let mut c = client.clone();
        flying.spawn(async move {
            let resp = c.txn(txn).await?;
            Ok(resp.header().map_or(0, |h| h.revision()) as u64)
        });
    }
    while let Some(done) = flying.join_next().await {
        revision = revision.max(done??);
    }
    Ok(revision)
}
