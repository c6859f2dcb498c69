//! One MQTT 3.1.1 connection to the broker, as the publisher uses it.
//!
//! Packets are encoded and decoded by rumqttc's codec (`mqttbytes`); this
//! is only the connection around it: CONNECT and its CONNACK, QoS 1
//! PUBLISH packets queued in one buffer and written together, PUBACK and
//! PINGRESP read by a task of their own (ADR 0014: rumqttc's event loop
//! writes and flushes each message by itself, and wakes three tasks per
//! message).
//!
//! ```text
//!   publisher --queue()--> buffer --flush(): one write--> broker
//!   publisher <--recv()-- reader task <--PUBACK, PINGRESP-- broker
//! ```

use std::time::Duration;

use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet, Publish};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio_util::bytes::{Bytes, BytesMut};

/// The largest packet accepted from the broker (it sends only
/// acknowledgements).
const MAX_INCOMING: usize = 64 << 10;

/// How long connecting, and each write, may take.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the broker sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// It has the QoS 1 message with this packet id.
    PubAck(u16),
    PingResp,
}

/// Whom to connect to, and as whom.
pub struct Connection<'a> {
    pub host: &'a str,
    pub port: u16,
    pub client_id: &'a str,
    pub keep_alive: Duration,
    pub credentials: Option<&'a (String, String)>,
    /// The largest packet sent.
    pub max_outgoing: usize,
}

/// A connected session with a clean state.
pub struct Link {
    write: OwnedWriteHalf,
    out: BytesMut,
    max_outgoing: usize,
    incoming: mpsc::UnboundedReceiver<Result<Incoming, String>>,
    reader: tokio::task::JoinHandle<()>,
    last_pkid: u16,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Link {
    /// Connects, and waits for the broker to accept the session.
    pub async fn connect(c: &Connection<'_>) -> Result<Link, String> {
        let stream = tokio::time::timeout(NETWORK_TIMEOUT, TcpStream::connect((c.host, c.port)))
            .await
            .map_err(|_| "connecting timed out".to_string())?
            .map_err(|e| e.to_string())?;
        // Batches are made here, each written once.
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (mut read, mut write) = stream.into_split();
        let mut connect = Connect::new(c.client_id);
        connect.keep_alive = c.keep_alive.as_secs().clamp(1, u16::MAX.into()) as u16;
        connect.clean_session = true;
        if let Some((user, password)) = c.credentials {
            connect.set_login(user.clone(), password.clone());
        }
        let mut out = BytesMut::with_capacity(64 << 10);
        Packet::Connect(connect)
            .write(&mut out, c.max_outgoing)
            .map_err(|e| e.to_string())?;
        write_all(&mut write, &mut out).await?;
        let mut buf = BytesMut::with_capacity(4096);
        let first = tokio::time::timeout(NETWORK_TIMEOUT, next_packet(&mut read, &mut buf))
            .await
            .map_err(|_| "the broker did not answer CONNECT".to_string())??;
        match first {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => {}
            Packet::ConnAck(ack) => {
                return Err(format!("the broker refused the connection: {:?}", ack.code));
            }
            other => return Err(format!("the broker answered CONNECT with {other:?}")),
        }
        let (tx, incoming) = mpsc::unbounded_channel();
        // What it sends is bounded by what was sent to it: one PUBACK per
        // message in the publisher's window, one PINGRESP per ping.
        let reader = tokio::spawn(async move {
            loop {
                let got = match next_packet(&mut read, &mut buf).await {
                    Ok(Packet::PubAck(ack)) => Ok(Incoming::PubAck(ack.pkid)),
                    Ok(Packet::PingResp) => Ok(Incoming::PingResp),
                    Ok(Packet::Disconnect) => Err("the broker disconnected".to_string()),
                    // Nothing else is expected of a broker this session
                    // subscribes to nothing on.
                    Ok(_) => continue,
                    Err(e) => Err(e),
                };
                let end = got.is_err();
                if tx.send(got).is_err() || end {
                    return;
                }
            }
        });
        Ok(Link {
            write,
            out,
            max_outgoing: c.max_outgoing,
            incoming,
            reader,
            last_pkid: 0,
        })
    }

    /// Queues a QoS 1 message; returns its packet id. Sent by the next
    /// [`Link::flush`]. At most 65,535 may be unacknowledged at once.
    pub fn queue(&mut self, topic: String, retain: bool, payload: Bytes) -> Result<u16, String> {
        self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain,
            topic,
            pkid: self.last_pkid,
            payload,
        };
        Packet::Publish(publish)
            .write(&mut self.out, self.max_outgoing)
            .map_err(|e| e.to_string())?;
        Ok(self.last_pkid)
    }

    /// Queues a PINGREQ.
    pub fn ping(&mut self) -> Result<(), String> {
        Packet::PingReq
            .write(&mut self.out, self.max_outgoing)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Whether something is queued.
    pub fn has_queued(&self) -> bool {
        !self.out.is_empty()
    }

    /// Writes everything queued, in one write where the socket takes it.
    /// Not for a `select!`: a write stopped half-way would break the
    /// stream.
    pub async fn flush(&mut self) -> Result<(), String> {
        write_all(&mut self.write, &mut self.out).await
    }

    /// What the broker sent next (safe to cancel).
    pub async fn recv(&mut self) -> Result<Incoming, String> {
        self.incoming
            .recv()
            .await
            .unwrap_or_else(|| Err("the connection closed".to_string()))
    }

    /// Says goodbye, without waiting long.
    pub async fn disconnect(mut self) {
        if Packet::Disconnect
            .write(&mut self.out, self.max_outgoing)
            .is_ok()
        {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.flush()).await;
        }
    }
}

/// Writes and empties `out`, within the network timeout.
async fn write_all(write: &mut OwnedWriteHalf, out: &mut BytesMut) -> Result<(), String> {
    if out.is_empty() {
        return Ok(());
    }
    tokio::time::timeout(NETWORK_TIMEOUT, write.write_all(out))
        .await
        .map_err(|_| "writing to the broker timed out".to_string())?
        .map_err(|e| e.to_string())?;
    out.clear();
    Ok(())
}

/// Reads the next packet, keeping what follows it in `buf`.
async fn next_packet(read: &mut OwnedReadHalf, buf: &mut BytesMut) -> Result<Packet, String> {
    loop {
        match Packet::read(buf, MAX_INCOMING) {
            Ok(p) => return Ok(p),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(n)) => buf.reserve(n),
            Err(e) => return Err(format!("a malformed packet from the broker: {e}")),
        }
        match read.read_buf(buf).await {
            Ok(0) => return Err("the broker closed the connection".to_string()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}
