//! The Redis store (`--store redis://host:port/db`), for operators who keep
//! their state in Redis.
//!
//! Layout: the hash `maxine:records` maps a change index (decimal) to a
//! record, and the hash `maxine:meta` holds `last_index`. A commit is one
//! `MULTI`/`EXEC` transaction, so a batch is applied whole or not at all.
//!
//! A Redis can lose everything under a running Maxine: restarted without
//! persistence, flushed, or failed over to an empty replica. Acknowledging
//! changes into that empty database would look fine until Maxine restarts
//! and loads nothing. So `open` makes sure the key `maxine:epoch` holds a
//! random value and remembers it, and every commit `WATCH`es that key and
//! checks the value before its transaction: a key that is gone or changed
//! (also between the check and `EXEC`, which then aborts) fails the commit
//! with [`StoreError::Lost`], and every later one too, until Maxine is
//! restarted on purpose (docs/operations.md, "Redis lost its data").
//!
//! `rediss://` URLs are Redis over TLS (rustls), verified against the
//! system's roots or the CA certificates given to [`RedisStore::open_with`].
//!
//! Durability is Redis's: a reply to `EXEC` means the data is on disk only
//! with `appendonly yes` and `appendfsync always`. With the default
//! `everysec`, up to a second of acknowledged changes can be lost when Redis
//! (or its machine) crashes. Maxine checks the setting at start-up and warns.
//! Use one Redis database per Maxine (`redis://host/3`).

use std::time::Duration;

use super::{Op, Store, StoreError, WriteBatch};

const RECORDS: &str = "maxine:records";
const META: &str = "maxine:meta";
const LAST_INDEX: &str = "last_index";
/// Written once by the first Maxine on a database; see the module docs.
const EPOCH: &str = "maxine:epoch";
/// Connecting, reading and writing give up after this, so a hung Redis
/// fails requests (503) instead of holding them forever.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Field-value pairs per HSET, and fields per HSCAN step.
const CHUNK: usize = 10_000;

pub struct RedisStore {
    client: redis::Client,
    conn: Option<redis::Connection>,
    /// The value of [`EPOCH`] found or written at open.
    epoch: String,
}

impl RedisStore {
    /// Connects to `url` and warns when Redis is not set up to fsync every write.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with_password(url, None)
    }

    /// [`RedisStore::open`], with `password` (from `store_password_file`)
    /// in place of any in the URL.
    pub fn open_with_password(url: &str, password: Option<&str>) -> Result<Self, StoreError> {
        Self::open_with(url, password, None)
    }

    /// [`RedisStore::open_with_password`]; a `rediss://` server's
    /// certificate must be signed by one of the PEM certificates in `ca`
    /// (none: the system's trusted roots).
    pub fn open_with(
        url: &str,
        password: Option<&str>,
        ca: Option<&[u8]>,
    ) -> Result<Self, StoreError> {
        use redis::IntoConnectionInfo;
        let bad_url = |e: redis::RedisError| {
            StoreError::Redis(format!("{:?} is not a Redis URL: {e}", redact(url)))
        };
        let mut info = url.into_connection_info().map_err(bad_url)?;
        if let Some(pw) = password {
            let settings = info.redis_settings().clone().set_password(pw);
            info = info.set_redis_settings(settings);
        }
        let client = match ca {
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                },
            ),
            None => redis::Client::open(info),
        }
        .map_err(bad_url)?;
        let mut s = Self {
            client,
            conn: None,
            epoch: String::new(),
        };
        s.connect()?;
        s.check_durability();
        s.epoch = s.adopt_epoch()?;
        Ok(s)
    }

    /// The database's epoch, written now if it has none: a fresh
    /// database, or one kept by a Maxine from before epochs.
    fn adopt_epoch(&mut self) -> Result<String, StoreError> {
        let mut fresh = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut fresh)
            .map_err(|_| StoreError::Redis("the system random source failed".into()))?;
        let fresh: String = fresh.iter().map(|b| format!("{b:02x}")).collect();
        let conn = self.conn()?;
        // SET NX, then GET: whichever value won is the epoch.
        let (set, epoch, records): (bool, String, u64) = redis::pipe()
            .cmd("SET")
            .arg(EPOCH)
            .arg(&fresh)
            .arg("NX")
            .cmd("GET")
            .arg(EPOCH)
            .cmd("HLEN")
            .arg(RECORDS)
            .query(conn)
            .map_err(redis_err)?;
        if set {
            tracing::info!(
                store = %self.describe(), records,
                "Redis had no Maxine epoch: wrote one, to notice if Redis loses its data"
            );
        }
        Ok(epoch)
    }

    fn connect(&mut self) -> Result<(), StoreError> {
        self.conn = None;
        let conn = self
            .client
            .get_connection_with_timeout(TIMEOUT)
            .map_err(|e| {
                StoreError::Redis(format!("cannot connect to {}: {e}", self.describe()))
            })?;
        conn.set_read_timeout(Some(TIMEOUT)).map_err(redis_err)?;
        conn.set_write_timeout(Some(TIMEOUT)).map_err(redis_err)?;
        self.conn = Some(conn);
        Ok(())
    }

    fn conn(&mut self) -> Result<&mut redis::Connection, StoreError> {
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Redis("not connected".into()))
    }

    /// Logs a warning unless Redis fsyncs its append-only file on every write.
    fn check_durability(&mut self) {
        let Ok(conn) = self.conn() else { return };
        let get = |conn: &mut redis::Connection, name: &str| -> Option<String> {
            let (_, v): (String, String) =
                redis::cmd("CONFIG").arg("GET").arg(name).query(conn).ok()?;
            Some(v)
        };
        let aof = get(conn, "appendonly");
        let fsync = get(conn, "appendfsync");
        match (aof.as_deref(), fsync.as_deref()) {
            (Some("yes"), Some("always")) => {}
            (None, _) | (_, None) => tracing::warn!(
                "cannot read Redis's appendonly/appendfsync settings (CONFIG GET refused): \
                 acknowledged registrations survive a Redis crash only with \
                 appendonly yes and appendfsync always"
            ),
            (aof, fsync) => tracing::warn!(
                appendonly = aof.unwrap_or(""),
                appendfsync = fsync.unwrap_or(""),
                "Redis does not fsync every write: acknowledged registrations can be lost \
                 if Redis crashes; set appendonly yes and appendfsync always"
            ),
        }
    }
}

fn redis_err(e: redis::RedisError) -> StoreError {
    StoreError::Redis(e.to_string())
}

/// What a commit into a Redis that lost Maxine's data is refused with.
fn lost(found: Option<&str>) -> StoreError {
    let what = match found {
        None => format!("the key {EPOCH} that Maxine wrote at start-up is gone"),
        Some(_) => format!("the key {EPOCH} holds another Maxine's value"),
    };
    StoreError::Lost(format!(
        "Redis no longer holds this Maxine's data ({what}: Redis was restarted without \
         persistence, flushed, or failed over to an empty replica). Changes are refused \
         rather than saved into a database that lacks the rest of the registry; an operator \
         must restore it (docs/operations.md, \"Redis lost its data\")"
    ))
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

impl Store for RedisStore {
    fn describe(&self) -> String {
        let info = self.client.get_connection_info();
        format!("redis://{}/{}", info.addr(), info.redis_settings().db())
    }

    fn load(&mut self, f: &mut dyn FnMut(u64, &[u8])) -> Result<u64, StoreError> {
        let conn = self.conn()?;
        let mut last: u64 = redis::cmd("HGET")
            .arg(META)
            .arg(LAST_INDEX)
            .query::<Option<u64>>(conn)
            .map_err(redis_err)?
            .unwrap_or(0);
        // HSCAN in steps, so a large registry does not block Redis in one reply.
        let mut cursor = 0u64;
        loop {
            let (next, pairs): (u64, Vec<(String, Vec<u8>)>) = redis::cmd("HSCAN")
                .arg(RECORDS)
                .arg(cursor)
                .arg("COUNT")
                .arg(CHUNK)
                .query(conn)
                .map_err(redis_err)?;
            for (field, value) in pairs {
                match field.parse::<u64>() {
                    Ok(index) => {
                        last = last.max(index);
                        f(index, &value);
                    }
                    Err(_) => tracing::warn!(field, "skipping a Redis field that is not an index"),
                }
            }
            if next == 0 {
                return Ok(last);
            }
            cursor = next;
        }
    }

    fn commit(&mut self, batch: &WriteBatch) -> Result<(), StoreError> {
        batch.check()?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        if batch.clear {
            pipe.del(RECORDS).ignore();
        }
        // Runs of puts become one HSET and runs of deletes one HDEL, in order.
        let mut i = 0;
        while i < batch.ops.len() {
            match &batch.ops[i] {
                Op::Put(..) => {
                    let mut cmd = redis::cmd("HSET");
                    cmd.arg(RECORDS);
                    let mut n = 0;
                    while let Some(Op::Put(index, value)) = batch.ops.get(i)
                        && n < CHUNK
                    {
                        cmd.arg(index).arg(value.as_slice());
                        i += 1;
                        n += 1;
                    }
                    pipe.add_command(cmd).ignore();
                }
                Op::Delete(_) => {
                    let mut cmd = redis::cmd("HDEL");
                    cmd.arg(RECORDS);
                    let mut n = 0;
                    while let Some(Op::Delete(index)) = batch.ops.get(i)
                        && n < CHUNK
                    {
                        cmd.arg(index);
                        i += 1;
                        n += 1;
                    }
                    pipe.add_command(cmd).ignore();
                }
            }
        }
        // The journal hands over ever higher indexes; a snapshot restore
        // passes the highest it knows. Either way a plain set keeps the max.
        // Its reply is what EXEC returns when it ran (nil when it aborted).
        pipe.hset(META, LAST_INDEX, batch.last_index);
        let epoch = self.epoch.clone();
        let conn = self.conn()?;
        // WATCH first: should the epoch change between this check and EXEC
        // (a FLUSHALL), the transaction aborts.
        let ((), found): ((), Option<String>) = redis::pipe()
            .cmd("WATCH")
            .arg(EPOCH)
            .cmd("GET")
            .arg(EPOCH)
            .query(conn)
            .map_err(redis_err)?;
        if found.as_deref() != Some(epoch.as_str()) {
            let _ = redis::cmd("UNWATCH").query::<()>(conn);
            return Err(lost(found.as_deref()));
        }
        match pipe.query::<Option<(i64,)>>(conn).map_err(redis_err)? {
            Some(_) => Ok(()),
            None => Err(lost(None)),
        }
    }

    fn reopen(&mut self) -> Result<(), StoreError> {
        self.connect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            super::redact("redis://user:secret@db.example:6379/2"),
            "redis://***@db.example:6379/2"
        );
        assert_eq!(super::redact("redis://h:1/0"), "redis://h:1/0");
    }
}
