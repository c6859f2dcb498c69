//! The DNS wire protocol on the query path: reading a request's header,
//! question and EDNS, and writing replies from pre-encoded pieces.
//!
//! Everything here works on byte slices and never allocates per query beyond
//! the caller's reused output buffer. Decisions follow RFC 1035, 2308, 6891,
//! 7766 and 8482; the reasons are beside each rule.

use std::net::IpAddr;

use crate::core::ClientSubnet;

/// Record types and classes the query path needs by number.
pub mod types {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const TKEY: u16 = 249;
    pub const TSIG: u16 = 250;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
    pub const MAILB: u16 = 253;
    pub const MAILA: u16 = 254;
    pub const ANY: u16 = 255;
    pub const CLASS_IN: u16 = 1;
}

pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const FORMERR: u8 = 1;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;
    /// RFC 8945 5.2: a TSIG that does not verify.
    pub const NOTAUTH: u8 = 9;
    /// Extended rcode 16 = (upper 8 bits 1 in OPT) << 4 | 0.
    pub const BADVERS_UPPER: u8 = 1;
}

/// The UDP payload size Maxine advertises (DNS flag day 2020).
pub const OUR_UDP_SIZE: u16 = 1232;
/// Largest message without EDNS (RFC 1035 4.2.1).
pub const PLAIN_UDP_SIZE: usize = 512;
/// Largest DNS message over TCP.
pub const TCP_MAX_SIZE: usize = 65_535;
/// Longest name on the wire (RFC 1035 2.3.4).
pub const MAX_NAME_LEN: usize = 255;

/// EDNS0 data of a request (RFC 6891).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    pub udp_size: u16,
    pub version: u8,
    /// DNSSEC OK; copied into the reply (RFC 3225 3).
    pub dnssec_ok: bool,
}

/// A request that passed the checks every reply needs.
#[derive(Debug)]
pub struct Request<'a> {
    pub packet: &'a [u8],
    pub id: u16,
    pub rd: bool,
    pub cd: bool,
    /// The question as the client wrote it (name, type, class): echoed byte-exact.
    pub question: &'a [u8],
    /// The question name in lowercase wire form.
    pub qname_lower: [u8; MAX_NAME_LEN],
    pub qname_len: usize,
    /// Offsets (into the name) where each label starts, for suffix checks.
    pub label_starts: [u8; 128],
    pub label_count: usize,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
    /// The EDNS Client Subnet option (RFC 7871), when the query had one.
    pub client_subnet: Option<ClientSubnet>,
    /// Length of the TSIG record that ends the query (RFC 8945), when it
    /// is signed; 0 when not.
    pub tsig_len: usize,
}

impl Request<'_> {
    pub fn qname(&self) -> &[u8] {
        &self.qname_lower[..self.qname_len]
    }

    /// How many labels of the name start before `offset` (an offset from
    /// [`Request::suffix_offset`]).
    pub fn labels_before(&self, offset: usize) -> usize {
        self.label_starts[..self.label_count]
            .iter()
            .filter(|&&s| (s as usize) < offset)
            .count()
    }

    /// Offset, within the name, of the label where `suffix` (lowercase wire
    /// form ending with the root) starts, if the name ends with it on a label
    /// boundary.
    pub fn suffix_offset(&self, suffix: &[u8]) -> Option<usize> {
        let name = self.qname();
        if suffix.len() > name.len() {
            return None;
        }
        let start = name.len() - suffix.len();
        let on_boundary = self.label_starts[..self.label_count]
            .iter()
            .any(|&s| s as usize == start)
            || start == name.len() - 1;
        (on_boundary && &name[start..] == suffix).then_some(start)
    }
}

/// A request that gets no ordinary answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Reject {
    /// Not a query we may answer (too short to carry an ID, or QR=1): drop it.
    Drop,
    /// Reply with this rcode and a header only (question not echoed).
    HeaderOnly { rcode: u8 },
    /// Unknown opcode: NOTIMP, without echoing RD or CD.
    NotImp { opcode: u8 },
}

const HEADER: usize = 12;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Reads the parts of a request every reply depends on.
pub fn parse(packet: &[u8]) -> Result<Request<'_>, Reject> {
    if packet.len() < HEADER {
        return Err(Reject::Drop); // nothing to reply to reliably
    }
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    if flags & 0x8000 != 0 {
        return Err(Reject::Drop); // a response: never answer it (loops)
    }
    let opcode = ((flags >> 11) & 0xF) as u8;
    if opcode != 0 {
        return Err(Reject::NotImp { opcode });
    }
    let formerr = Reject::HeaderOnly {
        rcode: rcode::FORMERR,
    };
    let qdcount = u16::from_be_bytes([packet[4], packet[5]]);
    if qdcount != 1 {
        return Err(formerr);
    }
    // Question name: plain labels only (a pointer can only point backwards,
    // and nothing precedes the first name).
    let mut qname_lower = [0u8; MAX_NAME_LEN];
    let mut label_starts = [0u8; 128];
    let mut label_count = 0;
    let mut pos = HEADER;
    let mut n = 0;
    loop {
        let len = *packet.get(pos).ok_or(Reject::HeaderOnly {
            rcode: rcode::FORMERR,
        })? as usize;
        if len & 0xC0 != 0 {
            return Err(formerr);
        }
        if n + 1 + len > MAX_NAME_LEN {
            return Err(formerr);
        }
        if len == 0 {
            qname_lower[n] = 0;
            n += 1;
            pos += 1;
            break;
        }
        let label = packet
            .get(pos + 1..pos + 1 + len)
            .ok_or(Reject::HeaderOnly {
                rcode: rcode::FORMERR,
            })?;
        label_starts[label_count] = n as u8;
        label_count += 1;
        qname_lower[n] = len as u8;
        for (d, s) in qname_lower[n + 1..n + 1 + len].iter_mut().zip(label) {
            *d = s.to_ascii_lowercase();
        }
        n += 1 + len;
        pos += 1 + len;
    }
    let qtype = u16_at(packet, pos).ok_or(Reject::HeaderOnly {
        rcode: rcode::FORMERR,
    })?;
    let qclass = u16_at(packet, pos + 2).ok_or(Reject::HeaderOnly {
        rcode: rcode::FORMERR,
    })?;
    let question = &packet[HEADER..pos + 4];
    pos += 4;

    // Answer and authority records (unusual in a query) are skipped, but an
    // OPT there is malformed. In the additional section at most one OPT.
    let ancount = u16_at(packet, 6).unwrap_or(0) as usize;
    let nscount = u16_at(packet, 8).unwrap_or(0) as usize;
    let arcount = u16_at(packet, 10).unwrap_or(0) as usize;
    let mut edns = None;
    let mut client_subnet = None;
    let mut tsig_len = 0;
    let total = ancount + nscount + arcount;
    for i in 0..total {
        let rec = skip_record(packet, pos).ok_or(Reject::HeaderOnly {
            rcode: rcode::FORMERR,
        })?;
        if rec.rtype == types::TSIG {
            // RFC 8945 5.1: the last record of the additional section.
            if i + 1 != total || i < ancount + nscount {
                return Err(formerr);
            }
            tsig_len = rec.end - pos;
        }
        if rec.rtype == types::OPT {
            let in_additional = i >= ancount + nscount;
            if !in_additional || edns.is_some() || !rec.owner_is_root {
                return Err(formerr);
            }
            edns = Some(Edns {
                udp_size: rec.class,
                version: (rec.ttl >> 16) as u8,
                dnssec_ok: rec.ttl & 0x8000 != 0,
            });
            let rdata = &packet[rec.end - rec.rdlen..rec.end];
            client_subnet = client_subnet_of(rdata).map_err(|()| Reject::HeaderOnly {
                rcode: rcode::FORMERR,
            })?;
        }
        pos = rec.end;
    }

    Ok(Request {
        packet,
        id: u16::from_be_bytes([packet[0], packet[1]]),
        rd: flags & 0x0100 != 0,
        cd: flags & 0x0010 != 0,
        question,
        qname_lower,
        qname_len: n,
        label_starts,
        label_count,
        qtype,
        qclass,
        edns,
        client_subnet,
        tsig_len,
    })
}

/// EDNS option code of Client Subnet (RFC 7871 6).
const OPT_CLIENT_SUBNET: u16 = 8;

/// The Client Subnet option among the options of an OPT record's RDATA.
/// `Err`: the option is malformed, which RFC 7871 7.1.1 answers with
/// FORMERR (a family other than IPv4/IPv6, a prefix longer than the
/// family's, an address whose length does not match the prefix, or bits
/// set beyond the prefix). Other options are skipped (never echoed).
fn client_subnet_of(mut rdata: &[u8]) -> Result<Option<ClientSubnet>, ()> {
    let mut found = None;
    while !rdata.is_empty() {
        let code = u16_at(rdata, 0).ok_or(())?;
        let len = u16_at(rdata, 2).ok_or(())? as usize;
        let data = rdata.get(4..4 + len).ok_or(())?;
        rdata = &rdata[4 + len..];
        if code != OPT_CLIENT_SUBNET {
            continue;
        }
        let family = u16_at(data, 0).ok_or(())?;
        let source = *data.get(2).ok_or(())?;
        let addr = data.get(4..).ok_or(())?;
        let max = match family {
            1 => 32,
            2 => 128,
            _ => return Err(()),
        };
        if source > max || addr.len() != (source as usize).div_ceil(8) {
            return Err(());
        }
        if source % 8 != 0 && addr.last().is_some_and(|b| b & (0xFF >> (source % 8)) != 0) {
            return Err(());
        }
        let mut bytes = [0u8; 16];
        bytes[..addr.len()].copy_from_slice(addr);
        let ip = if family == 1 {
            IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
        } else {
            IpAddr::from(bytes)
        };
        found = Some(ClientSubnet {
            addr: ip,
            source_prefix: source,
        });
    }
    Ok(found)
}

struct SkippedRecord {
    rtype: u16,
    rdlen: usize,
    class: u16,
    ttl: u32,
    owner_is_root: bool,
    end: usize,
}

/// Steps over one resource record, following no pointers (a pointer ends a
/// name), so compression loops cannot trap it.
fn skip_record(b: &[u8], pos: usize) -> Option<SkippedRecord> {
    let owner_is_root = *b.get(pos)? == 0;
    let pos = skip_name(b, pos)?;
    let rtype = u16_at(b, pos)?;
    let class = u16_at(b, pos + 2)?;
    let ttl = u32::from_be_bytes(b.get(pos + 4..pos + 8)?.try_into().ok()?);
    let rdlen = u16_at(b, pos + 8)? as usize;
    let end = pos + 10 + rdlen;
    if end > b.len() {
        return None;
    }
    Some(SkippedRecord {
        rtype,
        rdlen,
        class,
        ttl,
        owner_is_root,
        end,
    })
}

/// The size a reply must fit in.
pub fn size_limit(edns: Option<Edns>, tcp: bool) -> usize {
    if tcp {
        return TCP_MAX_SIZE;
    }
    match edns {
        None => PLAIN_UDP_SIZE,
        Some(e) => (e.udp_size.max(PLAIN_UDP_SIZE as u16)).min(OUR_UDP_SIZE) as usize,
    }
}

/// The sections of a reply after the question (RFC 1035 4.1), in the
/// order they must be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    Answer = 1,
    Authority = 2,
    Additional = 3,
}

/// Writes replies into a reused buffer. Sections must be written in order:
/// header, question, answer, authority, additional.
pub struct ReplyWriter<'o> {
    pub out: &'o mut Vec<u8>,
    counts: [u16; 4],
    limit: usize,
    /// A reply on a stream (TCP): the 64 KiB message limit, no retry.
    stream: bool,
    /// The request's Client Subnet, echoed in the OPT record with this
    /// scope prefix length (RFC 7871 7.2.1; 0 until
    /// [`ReplyWriter::set_scope`]).
    echo: Option<(ClientSubnet, u8)>,
}

/// Header bits of a reply.
#[derive(Clone, Copy)]
pub struct Flags {
    pub aa: bool,
    pub rd: bool,
    pub cd: bool,
    pub rcode: u8,
}

impl<'o> ReplyWriter<'o> {
    /// Starts a reply to `req` (header and the echoed question), leaving room
    /// for the OPT record when the request had one.
    pub fn start(out: &'o mut Vec<u8>, req: &Request<'_>, flags: Flags, limit: usize) -> Self {
        out.clear();
        write_header(out, req.id, 0, flags, false);
        out.extend_from_slice(req.question);
        let echo = req
            .client_subnet
            .filter(|_| req.edns.is_some())
            .map(|s| (s, 0));
        let opt_room = match (req.edns, echo) {
            (None, _) => 0,
            (Some(_), None) => 11,
            (Some(_), Some((s, _))) => 11 + client_subnet_len(s),
        };
        Self {
            out,
            counts: [1, 0, 0, 0],
            limit: limit - opt_room,
            stream: limit == TCP_MAX_SIZE,
            echo,
        }
    }

    /// The scope prefix length of the echoed Client Subnet: how many
    /// leading bits of the asker's subnet this answer depends on (RFC 7871
    /// 7.2.1). Without a Client Subnet in the request, nothing.
    #[inline]
    pub fn set_scope(&mut self, scope: u8) {
        if let Some((_, s)) = &mut self.echo {
            *s = scope;
        }
    }

    /// Whether this reply goes out on a stream (TCP): answers carry every
    /// record that fits rather than a UDP window.
    #[inline]
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// Bytes still free before the limit (the OPT record's room kept).
    #[inline]
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.out.len())
    }

    /// Appends a record whose owner is the question name (a pointer to it)
    /// followed by `tail` (type, class, TTL, length, data). False when it does
    /// not fit; nothing is written then.
    pub fn push_at_qname(&mut self, section: Section, tail: &[u8]) -> bool {
        if self.out.len() + 2 + tail.len() > self.limit {
            return false;
        }
        self.out.extend_from_slice(&[0xC0, 0x0C]);
        self.out.extend_from_slice(tail);
        self.counts[section as usize] += 1;
        true
    }

    /// Appends a record with a pointer to `owner_offset` (an offset in the
    /// message) as owner.
    pub fn push_at_offset(&mut self, section: Section, owner_offset: usize, tail: &[u8]) -> bool {
        if self.out.len() + 2 + tail.len() > self.limit {
            return false;
        }
        self.out
            .extend_from_slice(&(0xC000u16 | owner_offset as u16).to_be_bytes());
        self.out.extend_from_slice(tail);
        self.counts[section as usize] += 1;
        true
    }

    /// Appends a complete record (owner name included).
    pub fn push_full(&mut self, section: Section, record: &[u8]) -> bool {
        if self.out.len() + record.len() > self.limit {
            return false;
        }
        self.out.extend_from_slice(record);
        self.counts[section as usize] += 1;
        true
    }

    /// Appends `count` complete records, encoded back to back in `bytes`, to
    /// `section` in one copy. False when they do not all fit; nothing is
    /// written then.
    pub fn push_records(&mut self, section: Section, bytes: &[u8], count: u16) -> bool {
        if self.out.len() + bytes.len() > self.limit {
            return false;
        }
        self.out.extend_from_slice(bytes);
        self.counts[section as usize] += count;
        true
    }

    /// Drops everything after the question and marks the reply truncated.
    pub fn truncate(&mut self) {
        self.out.truncate(HEADER + self.question_len());
        self.counts = [1, 0, 0, 0];
        self.out[2] |= 0x02;
    }

    fn question_len(&self) -> usize {
        // The question sits right after the header; find its end again.
        let mut pos = HEADER;
        while self.out[pos] != 0 {
            pos += 1 + self.out[pos] as usize;
        }
        pos + 1 + 4 - HEADER
    }

    /// Sets the rcode bits in the header.
    pub fn set_rcode(&mut self, rcode: u8) {
        self.out[3] = (self.out[3] & 0xF0) | (rcode & 0x0F);
    }

    /// Adds the OPT record (when the request had EDNS) and the counts.
    pub fn finish(self, edns: Option<Edns>, ext_rcode: u8) {
        self.finish_with(edns, ext_rcode, None)
    }

    /// [`ReplyWriter::finish`] with an Extended DNS Error (RFC 8914) in
    /// the OPT record: its info code and extra text. Without EDNS in the
    /// request there is no OPT, so no EDE either.
    pub fn finish_with(self, edns: Option<Edns>, ext_rcode: u8, ede: Option<(u16, &str)>) {
        let mut counts = self.counts;
        if let Some(e) = edns {
            // RDLEN is the OPT record's last fixed field: 9 bytes in.
            let rdlen_at = self.out.len() + 9;
            push_opt(self.out, e, ext_rcode);
            if let Some((subnet, scope)) = self.echo {
                push_client_subnet(self.out, rdlen_at, subnet, scope);
            }
            if let Some((code, text)) = ede {
                push_ede(self.out, rdlen_at, code, text);
            }
            counts[3] += 1;
        }
        for (i, c) in counts.iter().enumerate() {
            self.out[4 + 2 * i..6 + 2 * i].copy_from_slice(&c.to_be_bytes());
        }
    }
}

fn write_header(out: &mut Vec<u8>, id: u16, opcode: u8, f: Flags, tc: bool) {
    let mut b2 = 0x80 | (opcode << 3);
    if f.aa {
        b2 |= 0x04;
    }
    if tc {
        b2 |= 0x02;
    }
    if f.rd {
        b2 |= 0x01;
    }
    let mut b3 = f.rcode & 0x0F;
    if f.cd {
        b3 |= 0x10;
    }
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[b2, b3, 0, 0, 0, 0, 0, 0, 0, 0]);
}

/// Extended DNS Error info codes (RFC 8914 4).
pub mod ede {
    /// 18: the server is unable to respond to the requester because of
    /// policy (who asks), not because of the data.
    pub const PROHIBITED: u16 = 18;
}

/// The EDNS option code of an Extended DNS Error (RFC 8914 2).
const OPT_EDE: u16 = 15;

/// Appends an EDE option to the OPT record [`push_opt`] just wrote,
/// fixing its RDLEN.
fn push_ede(out: &mut Vec<u8>, rdlen_at: usize, code: u16, text: &str) {
    push_option(
        out,
        rdlen_at,
        OPT_EDE,
        &[&code.to_be_bytes(), text.as_bytes()],
    );
}

/// Bytes a Client Subnet option takes in the OPT record: code, length,
/// family, two prefix lengths and the address's significant bytes.
fn client_subnet_len(s: ClientSubnet) -> usize {
    8 + (s.source_prefix as usize).div_ceil(8)
}

/// Appends the request's Client Subnet option with `scope` (RFC 7871 6:
/// family, source prefix and address as the query had them).
fn push_client_subnet(out: &mut Vec<u8>, rdlen_at: usize, s: ClientSubnet, scope: u8) {
    let (family, octets): (u16, [u8; 16]) = match s.addr {
        IpAddr::V4(v4) => {
            let mut b = [0; 16];
            b[..4].copy_from_slice(&v4.octets());
            (1, b)
        }
        IpAddr::V6(v6) => (2, v6.octets()),
    };
    let n = (s.source_prefix as usize).div_ceil(8);
    push_option(
        out,
        rdlen_at,
        OPT_CLIENT_SUBNET,
        &[
            &family.to_be_bytes(),
            &[s.source_prefix, scope],
            &octets[..n],
        ],
    );
}

/// Appends one option (code, then `parts` as its data) to the OPT record
/// that ends the message and whose RDLEN is at `rdlen_at`, fixing it.
fn push_option(out: &mut Vec<u8>, rdlen_at: usize, code: u16, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&(len as u16).to_be_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
    let rdlen = u16::from_be_bytes([out[rdlen_at], out[rdlen_at + 1]]) as usize + 4 + len;
    out[rdlen_at..rdlen_at + 2].copy_from_slice(&(rdlen as u16).to_be_bytes());
}

/// Our OPT record: root owner, our UDP size, no options (unknown options of
/// the client are never echoed, RFC 6891 6.1.2).
fn push_opt(out: &mut Vec<u8>, req: Edns, ext_rcode: u8) {
    out.push(0);
    out.extend_from_slice(&types::OPT.to_be_bytes());
    out.extend_from_slice(&OUR_UDP_SIZE.to_be_bytes());
    out.push(ext_rcode);
    out.push(0); // version 0
    out.push(if req.dnssec_ok { 0x80 } else { 0 });
    out.extend_from_slice(&[0, 0, 0]); // flags low byte, RDLEN 0
}

/// A reply for a rejected request; false: drop it. When the request carried
/// exactly one well-formed OPT, the reply carries ours (RFC 6891 7).
pub fn write_reject(out: &mut Vec<u8>, packet: &[u8], reject: &Reject) -> bool {
    out.clear();
    if packet.len() < HEADER || *reject == Reject::Drop {
        return false;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let (opcode, flags) = match *reject {
        Reject::Drop => return false,
        Reject::HeaderOnly { rcode } => (
            0,
            Flags {
                aa: false,
                rd: packet[2] & 0x01 != 0,
                cd: packet[3] & 0x10 != 0,
                rcode,
            },
        ),
        Reject::NotImp { opcode } => (
            opcode,
            Flags {
                aa: false,
                rd: false,
                cd: false,
                rcode: rcode::NOTIMP,
            },
        ),
    };
    write_header(out, id, opcode, flags, false);
    if let Some(edns) = lenient_edns(packet) {
        push_opt(out, edns, 0);
        out[11] = 1; // ARCOUNT
    }
    true
}

/// The EDNS data of a packet that did not parse as a query, if its sections
/// can still be walked and hold exactly one OPT with the root as owner.
fn lenient_edns(packet: &[u8]) -> Option<Edns> {
    let count = |at| u16_at(packet, at).map(usize::from);
    let (qd, an, ns, ar) = (count(4)?, count(6)?, count(8)?, count(10)?);
    let mut pos = HEADER;
    for _ in 0..qd {
        pos = skip_name(packet, pos)? + 4;
    }
    let mut found = None;
    for i in 0..an + ns + ar {
        let rec = skip_record(packet, pos)?;
        if rec.rtype == types::OPT {
            if i < an + ns || found.is_some() || !rec.owner_is_root {
                return None;
            }
            found = Some(Edns {
                udp_size: rec.class,
                version: (rec.ttl >> 16) as u8,
                dnssec_ok: rec.ttl & 0x8000 != 0,
            });
        }
        pos = rec.end;
    }
    (pos <= packet.len()).then_some(found).flatten()
}

/// Steps over a name, stopping at a pointer (never following it).
fn skip_name(b: &[u8], mut pos: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *b.get(pos)? as usize;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(pos + 1),
            0x00 => pos += 1 + len,
            0xC0 => return Some(pos + 2),
            _ => return None,
        }
    }
    None
}

/// Turns a reply into its truncated form: header and question only, TC=1
/// (used when rate limiting "slips" a response).
pub fn make_truncated(out: &mut Vec<u8>) {
    if out.len() < HEADER {
        return;
    }
    let qd = u16::from_be_bytes([out[4], out[5]]);
    let end = if qd == 1 {
        match skip_name(out, HEADER) {
            Some(p) if p + 4 <= out.len() => p + 4,
            _ => HEADER,
        }
    } else {
        HEADER
    };
    out.truncate(end);
    out[2] |= 0x02;
    if end == HEADER {
        out[4..6].copy_from_slice(&[0, 0]);
    }
    out[6..12].copy_from_slice(&[0; 6]);
}

/// Lowercase wire form of a dotted name (`"a.b"` or `"a.b."`); `None` when a
/// label is empty or too long.
pub fn wire_name(dotted: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(dotted.len() + 2);
    let trimmed = dotted.trim_end_matches('.');
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
            out.push(label.len() as u8);
            out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    out.push(0);
    (out.len() <= MAX_NAME_LEN).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16, edns: Option<(u16, u8)>) -> Vec<u8> {
        let mut q = vec![
            0x12,
            0x34,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(edns.is_some()),
        ];
        q.extend(wire_name(name).unwrap());
        q.extend(qtype.to_be_bytes());
        q.extend(1u16.to_be_bytes());
        if let Some((size, version)) = edns {
            q.extend([0, 0, 41]);
            q.extend(size.to_be_bytes());
            q.extend([0, version, 0x80, 0, 0, 0]);
        }
        q
    }

    #[test]
    fn parses_question_in_lowercase_and_keeps_client_bytes() {
        let mut q = query("PayMents.maxine", types::A, Some((4096, 0)));
        q[13] = b'P';
        let r = parse(&q).unwrap();
        assert_eq!(r.qname(), wire_name("payments.maxine").unwrap().as_slice());
        assert_eq!(&r.question[1..9], b"Payments");
        assert_eq!(
            r.edns,
            Some(Edns {
                udp_size: 4096,
                version: 0,
                dnssec_ok: true
            })
        );
        assert_eq!(r.suffix_offset(&wire_name("maxine").unwrap()), Some(9));
        assert_eq!(r.suffix_offset(&wire_name("ments.maxine").unwrap()), None);
        assert_eq!(r.suffix_offset(&[0]), Some(16));
    }

    #[test]
    fn malformed_requests_are_rejected_not_panicked_on() {
        assert_eq!(parse(&[0; 5]).unwrap_err(), Reject::Drop);
        let mut resp = query("a.maxine", 1, None);
        resp[2] |= 0x80;
        assert_eq!(parse(&resp).unwrap_err(), Reject::Drop);
        let mut two = query("a.maxine", 1, None);
        two[5] = 2;
        assert!(matches!(parse(&two), Err(Reject::HeaderOnly { rcode: 1 })));
        let q = query("a.maxine", 1, None);
        assert!(matches!(
            parse(&q[..q.len() - 1]),
            Err(Reject::HeaderOnly { rcode: 1 })
        ));
        // A pointer in the question, pointing at itself.
        let mut ptr = q[..12].to_vec();
        ptr.extend([0xC0, 12, 0, 1, 0, 1]);
        assert!(matches!(parse(&ptr), Err(Reject::HeaderOnly { rcode: 1 })));
        // Two OPT records.
        let mut q2 = query("a.maxine", 1, Some((1232, 0)));
        q2[11] = 2;
        q2.extend([0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(parse(&q2), Err(Reject::HeaderOnly { rcode: 1 })));
        let mut op = query("a.maxine", 1, None);
        op[2] = 0x29; // opcode 5 (UPDATE), RD
        assert_eq!(parse(&op).unwrap_err(), Reject::NotImp { opcode: 5 });
    }

    /// A query with an OPT record carrying `options` (code, data).
    fn with_options(options: &[(u16, &[u8])]) -> Vec<u8> {
        let mut q = query("a.maxine", types::A, None);
        q[11] = 1;
        let rdata: Vec<u8> = options
            .iter()
            .flat_map(|(code, data)| {
                let mut o = code.to_be_bytes().to_vec();
                o.extend((data.len() as u16).to_be_bytes());
                o.extend(*data);
                o
            })
            .collect();
        q.extend([0, 0, 41, 4, 0xD0, 0, 0, 0, 0]);
        q.extend((rdata.len() as u16).to_be_bytes());
        q.extend(rdata);
        q
    }

    #[test]
    fn client_subnets_are_read_and_malformed_ones_are_formerr() {
        let ecs = |family: u16, source: u8, addr: &[u8]| {
            let mut d = family.to_be_bytes().to_vec();
            d.extend([source, 0]);
            d.extend(addr);
            d
        };
        let v4 = ecs(1, 24, &[192, 0, 2]);
        let q = with_options(&[(10, &[1; 8]), (8, &v4)]);
        let r = parse(&q).unwrap();
        assert_eq!(
            r.client_subnet,
            Some(ClientSubnet {
                addr: "192.0.2.0".parse().unwrap(),
                source_prefix: 24
            })
        );
        let v6 = ecs(2, 56, &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0x12]);
        let q = with_options(&[(8, &v6)]);
        let r = parse(&q).unwrap();
        assert_eq!(
            r.client_subnet.unwrap().addr,
            "2001:db8:0:1200::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            parse(&with_options(&[(10, &[1; 8])]))
                .unwrap()
                .client_subnet,
            None
        );
        for bad in [
            ecs(3, 8, &[1]),              // unknown family
            ecs(1, 33, &[1, 2, 3, 4, 5]), // prefix longer than IPv4
            ecs(1, 24, &[192, 0]),        // address shorter than the prefix
            ecs(1, 20, &[192, 0, 0x2F]),  // bits beyond the prefix
            vec![0, 1],                   // truncated
        ] {
            assert_eq!(
                parse(&with_options(&[(8, &bad)])).unwrap_err(),
                Reject::HeaderOnly {
                    rcode: rcode::FORMERR
                },
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_client_subnet_is_echoed_with_the_scope_beside_an_ede() {
        let v4 = [0, 1, 24, 0, 192, 0, 2];
        let q = with_options(&[(8, &v4)]);
        let r = parse(&q).unwrap();
        let flags = Flags {
            aa: true,
            rd: false,
            cd: false,
            rcode: rcode::REFUSED,
        };
        let mut out = Vec::new();
        let mut w = ReplyWriter::start(&mut out, &r, flags, 512);
        w.set_scope(24);
        w.finish_with(r.edns, 0, Some((ede::PROHIBITED, "no")));
        let m = hickory_proto::op::Message::from_vec(&out).expect("parses");
        let opt = m.edns.as_ref().expect("an OPT record");
        use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
        let Some(EdnsOption::Subnet(ecs)) = opt.option(EdnsCode::Subnet) else {
            panic!("no Client Subnet in {opt:?}");
        };
        assert_eq!(
            (ecs.addr(), ecs.source_prefix(), ecs.scope_prefix()),
            ("192.0.2.0".parse().unwrap(), 24, 24)
        );
        // Option by option, by hand: ECS (code 8) then EDE (code 15).
        let rdata = &out[out.len() - (4 + 7 + 4 + 4)..];
        assert_eq!(&rdata[..11], &[0, 8, 0, 7, 0, 1, 24, 24, 192, 0, 2]);
        assert_eq!(&rdata[11..15], &[0, 15, 0, 4]);
        // Without a call to set_scope the echo says 0: everyone's answer.
        let mut out = Vec::new();
        ReplyWriter::start(&mut out, &r, flags, 512).finish(r.edns, 0);
        assert_eq!(
            &out[out.len() - 11..],
            &[0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2]
        );
        assert_eq!(
            u16::from_be_bytes([out[out.len() - 13], out[out.len() - 12]]),
            11
        );
    }

    #[test]
    fn size_limit_follows_edns() {
        let e = |s| {
            Some(Edns {
                udp_size: s,
                version: 0,
                dnssec_ok: false,
            })
        };
        assert_eq!(size_limit(None, false), 512);
        assert_eq!(size_limit(e(100), false), 512);
        assert_eq!(size_limit(e(800), false), 800);
        assert_eq!(size_limit(e(4096), false), 1232);
        assert_eq!(size_limit(None, true), 65535);
    }
}
