//! `lookup`: asks Maxine's DNS one question, as `dig` would, and prints the
//! answer in zone-file form, or what the server said instead (NXDOMAIN,
//! NODATA, REFUSED, ...) in words. A server that is not there is reported
//! within a few seconds, with where the command looked and how to point it
//! elsewhere.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Args)]
pub struct LookupArgs {
    /// Name to resolve, e.g. payments.maxine or _payments._tcp.maxine
    name: String,
    /// Record type: A, AAAA, SRV, TXT, SOA, ANY, ...
    #[arg(default_value = "A")]
    rtype: String,
    /// Maxine's DNS address
    #[arg(
        long,
        env = "MAXINE_DNS",
        default_value = "127.0.0.1:8600",
        value_name = "IP:PORT"
    )]
    dns: SocketAddr,
    /// Ask over TCP (a truncated UDP answer is asked again over TCP anyway)
    #[arg(long)]
    tcp: bool,
}

/// How long one try waits for an answer; UDP tries twice.
const TRY_TIMEOUT: Duration = Duration::from_millis(1500);

pub async fn lookup(a: LookupArgs) -> anyhow::Result<()> {
    let rtype: RecordType = a
        .rtype
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| anyhow!("{:?} is not a record type such as A, AAAA or SRV", a.rtype))?;
    let name = Name::from_ascii(if a.name.ends_with('.') {
        a.name.clone()
    } else {
        format!("{}.", a.name)
    })
    .with_context(|| format!("{:?} is not a domain name", a.name))?;
    let question = query(&name, rtype)?;
    let reply = if a.tcp {
        ask_tcp(a.dns, &question).await?
    } else {
        let reply = ask_udp(a.dns, &question).await?;
        if reply.metadata.truncation {
            ask_tcp(a.dns, &question).await?
        } else {
            reply
        }
    };
    print!(
        "{}",
        describe(&name, rtype, &reply).map_err(|e| anyhow!(e))?
    );
    Ok(())
}

/// The question as a DNS message, with EDNS (1232 bytes over UDP).
fn query(name: &Name, rtype: RecordType) -> anyhow::Result<Vec<u8>> {
    let mut m = Message::query();
    m.metadata.message_type = MessageType::Query;
    m.metadata.op_code = OpCode::Query;
    m.metadata.recursion_desired = false;
    let mut q = Query::query(name.clone(), rtype);
    q.set_query_class(DNSClass::IN);
    m.add_query(q);
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    m.set_edns(edns);
    Ok(m.to_vec()?)
}

/// Where to look instead, for every error about reaching the server.
fn hint(server: SocketAddr) -> String {
    format!(
        "is `maxine serve` running with --dns-addr {server}? Point this command at another \
         server with --dns IP:PORT or MAXINE_DNS"
    )
}

async fn ask_udp(server: SocketAddr, question: &[u8]) -> anyhow::Result<Message> {
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("a socket address");
    let sock = tokio::net::UdpSocket::bind(local).await?;
    // Connected: a closed port comes back at once as "connection refused"
    // (ICMP port unreachable) instead of a timeout.
    sock.connect(server).await?;
    let id = u16::from_be_bytes([question[0], question[1]]);
    let mut buf = vec![0u8; 65_535];
    for _ in 0..2 {
        sock.send(question)
            .await
            .map_err(|e| unreachable(server, e))?;
        let deadline = tokio::time::Instant::now() + TRY_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => break, // try again
                Ok(Err(e)) => return Err(unreachable(server, e)),
                Ok(Ok(n)) => {
                    if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                        return Message::from_vec(&buf[..n])
                            .with_context(|| format!("{server} sent a reply that is not DNS"));
                    }
                }
            }
        }
    }
    bail!(
        "no DNS answer from {server} (UDP) within {}s: {}",
        2 * TRY_TIMEOUT.as_millis() / 1000,
        hint(server)
    )
}

async fn ask_tcp(server: SocketAddr, question: &[u8]) -> anyhow::Result<Message> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(server)
            .await
            .map_err(|e| unreachable(server, e))?;
        let mut framed = (question.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(question);
        s.write_all(&framed).await?;
        let len = s.read_u16().await? as usize;
        let mut buf = vec![0u8; len];
        s.read_exact(&mut buf).await?;
        Message::from_vec(&buf).with_context(|| format!("{server} sent a reply that is not DNS"))
    };
    match tokio::time::timeout(TRY_TIMEOUT * 2, exchange).await {
        Ok(r) => r,
        Err(_) => bail!(
            "no DNS answer from {server} (TCP) within {}s: {}",
            2 * TRY_TIMEOUT.as_millis() / 1000,
            hint(server)
        ),
    }
}

fn unreachable(server: SocketAddr, e: std::io::Error) -> anyhow::Error {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => anyhow!(
            "nothing answers DNS at {server} (connection refused): {}",
            hint(server)
        ),
        _ => anyhow!("cannot reach {server}: {e}: {}", hint(server)),
    }
}

/// The answer in zone-file form (`Ok`), or why there is none in words
/// (`Err`, for standard error and exit status 1).
fn describe(name: &Name, rtype: RecordType, reply: &Message) -> Result<String, String> {
    let asked = format!("{name} {rtype}");
    let code = reply.metadata.response_code;
    match code {
        ResponseCode::NoError if !reply.answers.is_empty() => {
            let mut out = String::new();
            section(&mut out, "answer", &reply.answers);
            section(&mut out, "additional", &reply.additionals);
            Ok(out)
        }
        ResponseCode::NoError => Err(format!(
            "{asked}: NODATA: the name exists, but has no {rtype} records{}",
            soa(reply)
        )),
        ResponseCode::NXDomain => Err(format!("{asked}: NXDOMAIN: no such name{}", soa(reply))),
        ResponseCode::Refused => Err(format!(
            "{asked}: REFUSED: the server does not answer for this name (Maxine answers only \
             for its zone, --domain)"
        )),
        other => Err(format!("{asked}: the server answered {other}")),
    }
}

fn section(out: &mut String, title: &str, records: &[Record]) {
    if records.is_empty() {
        return;
    }
    out.push_str(&format!(";; {title}\n"));
    for r in records {
        out.push_str(&format!("{r}\n"));
    }
}

/// The SOA of a negative answer, as its zone-file line after a colon.
fn soa(reply: &Message) -> String {
    reply
        .authorities
        .iter()
        .find(|r| r.record_type() == RecordType::SOA)
        .map(|r| format!(" (authority: {r})"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: ResponseCode, answers: &[&str]) -> Message {
        let mut m = Message::response(1, OpCode::Query);
        m.metadata.response_code = code;
        for a in answers {
            let mut parts = a.split_whitespace();
            let name = Name::from_ascii(parts.next().unwrap()).unwrap();
            let ip: std::net::Ipv4Addr = parts.last().unwrap().parse().unwrap();
            m.answers.push(Record::from_rdata(
                name,
                5,
                hickory_proto::rr::RData::A(ip.into()),
            ));
        }
        m
    }

    #[test]
    fn answers_print_as_zone_file_lines_and_negative_answers_in_words() {
        let name = Name::from_ascii("payments.maxine.").unwrap();
        let ok = describe(
            &name,
            RecordType::A,
            &reply(ResponseCode::NoError, &["payments.maxine. 10.0.0.7"]),
        )
        .unwrap();
        assert_eq!(ok, ";; answer\npayments.maxine. 5 IN A 10.0.0.7\n");
        let nx = describe(&name, RecordType::A, &reply(ResponseCode::NXDomain, &[])).unwrap_err();
        assert_eq!(nx, "payments.maxine. A: NXDOMAIN: no such name");
        let nodata =
            describe(&name, RecordType::AAAA, &reply(ResponseCode::NoError, &[])).unwrap_err();
        assert!(
            nodata.contains("NODATA") && nodata.contains("no AAAA records"),
            "{nodata}"
        );
        for text in [nx, nodata] {
            assert!(!text.contains('{') && !text.contains("Some("), "{text}");
        }
    }
}
