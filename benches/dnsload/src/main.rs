//! dnsload: a closed-loop DNS load generator for Linux, for finding a DNS server's ceiling when
//! dnsperf (about 90k qps on one core) is the limit.
//!
//! ```text
//! dnsload udp ADDR QUERYFILE SECONDS [--sockets 8] [--window 64] [--batch 32] [--rate QPS] [--edns SIZE] [--source IP]
//! dnsload tcp ADDR QUERYFILE SECONDS [--conns 50] [--pipeline 16] [--rate QPS] [--edns SIZE]
//! ```
//!
//! UDP: `--sockets` connected sockets, each keeping up to `--window` queries outstanding, moved
//! `--batch` at a time with sendmmsg/recvmmsg, busy-polled with MSG_DONTWAIT (so the client always
//! shows about 100% CPU on its core). TCP: `--conns` persistent connections, each with up to
//! `--pipeline` length-prefixed queries in flight (RFC 7766 pipelining), non-blocking sockets
//! busy-polled through one epoll set; a connection the server closes is reopened and counted.
//!
//! Replies are matched by DNS id and question; a query unanswered after 1 s is counted lost (a
//! reply arriving later is counted late, not completed). `--rate` paces sends to that many
//! queries per second (still bounded by the window). `--edns SIZE` adds an OPT record (version 0,
//! that UDP payload size, no options) to every query. Queries have RD=0. `--source IP` (IPv4,
//! UDP) binds socket i to IP + i, so `--sockets 1000 --source 127.1.0.1` asks from 1,000 source
//! addresses (the askers of a policy benchmark).
//!
//! Query file: dnsperf format, one `name TYPE` per line (`#` comments and blank lines skipped);
//! the file is replayed in order, cyclically.
//!
//! Output (`Queries per second:` as dnsperf words it, so benches/measure-cpu.py can read it):
//! sent, completed, lost, qps, rcode counts, TC count, latency avg/p50/p90/p99/p99.9 (1 us buckets).

use std::collections::VecDeque;
use std::mem::zeroed;
use std::net::SocketAddr;
use std::process::exit;
use std::time::Instant;

/// A query unanswered for this long is counted lost.
const LOST_AFTER_NS: u64 = 1_000_000_000;
/// How often outstanding queries are checked for loss.
const SWEEP_EVERY_NS: u64 = 100_000_000;
/// Latency histogram: 1 us buckets up to 2 s (replies are accepted up to about 1.1 s).
const HIST_US: usize = 2_000_000;
/// Largest reply read over UDP.
const UDP_RBUF: usize = 4096;
/// Largest query written (12 header + 255 name + 4 + 11 OPT, rounded up).
const QBUF: usize = 320;
/// Delay before reopening a TCP connection whose connect failed.
const RECONNECT_DELAY_NS: u64 = 100_000_000;

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("dnsload: {msg}");
    exit(2)
}

const USAGE: &str = "usage:
  dnsload udp ADDR QUERYFILE SECONDS [--sockets 8] [--window 64] [--batch 32] [--rate QPS] [--edns SIZE] [--source IP]
  dnsload tcp ADDR QUERYFILE SECONDS [--conns 50] [--pipeline 16] [--rate QPS] [--edns SIZE]";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Udp,
    Tcp,
}

struct Opts {
    mode: Mode,
    addr: SocketAddr,
    qfile: String,
    secs: f64,
    sockets: usize,
    window: usize,
    batch: usize,
    conns: usize,
    pipeline: usize,
    rate: f64,
    edns: Option<u16>,
    /// UDP socket i is bound to this address + i.
    source: Option<std::net::Ipv4Addr>,
}

fn parse_opts() -> Opts {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        exit(0);
    }
    let mut pos = Vec::new();
    let mut o = Opts {
        mode: Mode::Udp,
        addr: "127.0.0.1:53".parse().unwrap(),
        qfile: String::new(),
        secs: 0.0,
        sockets: 8,
        window: 64,
        batch: 32,
        conns: 50,
        pipeline: 16,
        rate: 0.0,
        edns: None,
        source: None,
    };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if let Some(flag) = a.strip_prefix("--") {
            let (name, val) = match flag.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => {
                    i += 1;
                    let v = args.get(i).unwrap_or_else(|| die(format!("--{flag} needs a value\n{USAGE}")));
                    (flag.to_string(), v.clone())
                }
            };
            let num = |v: &str| -> f64 {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .unwrap_or_else(|| die(format!("--{name}: {v:?} is not a non-negative number")))
            };
            match name.as_str() {
                "sockets" => o.sockets = num(&val) as usize,
                "window" => o.window = num(&val) as usize,
                "batch" => o.batch = num(&val) as usize,
                "conns" => o.conns = num(&val) as usize,
                "pipeline" => o.pipeline = num(&val) as usize,
                "rate" => o.rate = num(&val),
                "source" => {
                    o.source = Some(val.parse().unwrap_or_else(|_| die(format!("--source: {val:?} is not an IPv4 address"))))
                }
                "edns" => {
                    let s = num(&val);
                    if !(512.0..=65535.0).contains(&s) {
                        die("--edns: UDP payload size must be 512..65535");
                    }
                    o.edns = Some(s as u16)
                }
                _ => die(format!("unknown option --{name}\n{USAGE}")),
            }
        } else {
            pos.push(a.clone());
        }
        i += 1;
    }
    if pos.len() != 4 {
        die(USAGE);
    }
    o.mode = match pos[0].as_str() {
        "udp" => Mode::Udp,
        "tcp" => Mode::Tcp,
        m => die(format!("mode must be udp or tcp, not {m:?}\n{USAGE}")),
    };
    o.addr = pos[1]
        .parse()
        .unwrap_or_else(|_| die(format!("{:?} is not an IP:PORT address", pos[1])));
    o.qfile = pos[2].clone();
    o.secs = pos[3]
        .parse::<f64>()
        .ok()
        .filter(|s| *s > 0.0 && s.is_finite())
        .unwrap_or_else(|| die(format!("SECONDS: {:?} is not a positive number", pos[3])));
    if o.sockets == 0 || o.window == 0 || o.batch == 0 || o.conns == 0 || o.pipeline == 0 {
        die("--sockets, --window, --batch, --conns and --pipeline must be at least 1");
    }
    if o.window > 16384 || o.pipeline > 16384 {
        die("--window and --pipeline are at most 16384");
    }
    if o.batch > 1024 {
        die("--batch is at most 1024");
    }
    o
}

// ---------------------------------------------------------------------------------------------
// Queries

/// All queries encoded back to back (id 0), with each one's offset and length.
struct Queries {
    data: Vec<u8>,
    /// (offset, total length, question section length)
    idx: Vec<(u32, u16, u16)>,
}

impl Queries {
    fn get(&self, i: usize) -> &[u8] {
        let (off, len, _) = self.idx[i];
        &self.data[off as usize..off as usize + len as usize]
    }
    fn question(&self, i: usize) -> &[u8] {
        let (off, _, ql) = self.idx[i];
        &self.data[off as usize + 12..off as usize + 12 + ql as usize]
    }
}

fn qtype_code(t: &str) -> Option<u16> {
    Some(match t.to_ascii_uppercase().as_str() {
        "A" => 1,
        "NS" => 2,
        "CNAME" => 5,
        "SOA" => 6,
        "PTR" => 12,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        "SRV" => 33,
        "NAPTR" => 35,
        "DS" => 43,
        "DNSKEY" => 48,
        "HTTPS" => 65,
        "CAA" => 257,
        "ANY" => 255,
        u => u.strip_prefix("TYPE")?.parse().ok()?,
    })
}

/// Encodes `name` (dotted, trailing dot optional) into wire format; None if it is not a valid name.
fn encode_name(name: &str, out: &mut Vec<u8>) -> Option<()> {
    let start = out.len();
    let n = name.strip_suffix('.').unwrap_or(name);
    if !n.is_empty() {
        for l in n.split('.') {
            if l.is_empty() || l.len() > 63 {
                return None;
            }
            out.push(l.len() as u8);
            out.extend_from_slice(l.as_bytes());
        }
    }
    out.push(0);
    if out.len() - start > 255 {
        return None;
    }
    Some(())
}

fn load_queries(path: &str, edns: Option<u16>) -> Queries {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| die(format!("cannot read {path}: {e}")));
    let mut q = Queries { data: Vec::new(), idx: Vec::new() };
    let mut bad = 0usize;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut it = line.split_whitespace();
        let (Some(name), Some(t)) = (it.next(), it.next()) else {
            bad += 1;
            continue;
        };
        let Some(qtype) = qtype_code(t) else {
            bad += 1;
            continue;
        };
        let off = q.data.len();
        q.data.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, if edns.is_some() { 1 } else { 0 }]);
        if encode_name(name, &mut q.data).is_none() {
            q.data.truncate(off);
            bad += 1;
            continue;
        }
        q.data.extend_from_slice(&qtype.to_be_bytes());
        q.data.extend_from_slice(&[0, 1]);
        let qlen = q.data.len() - off - 12;
        if let Some(size) = edns {
            // root name, TYPE OPT, CLASS = payload size, TTL = ext-rcode 0, version 0, flags 0, RDLEN 0
            q.data.extend_from_slice(&[0, 0, 41]);
            q.data.extend_from_slice(&size.to_be_bytes());
            q.data.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        q.idx.push((off as u32, (q.data.len() - off) as u16, qlen as u16));
    }
    if bad > 0 {
        eprintln!("dnsload: skipped {bad} unusable lines of {path}");
    }
    if q.idx.is_empty() {
        die(format!("no queries in {path} (expected lines such as `svc0.maxine. A`)"));
    }
    q
}

// ---------------------------------------------------------------------------------------------
// Outstanding queries of one socket or connection

#[derive(Clone, Copy, Default)]
struct Slot {
    /// ns since start (always > 0) when sent; 0 = free
    sent: u64,
    id: u16,
    generation: u16,
    qidx: u32,
}

/// Ids are (generation << bits | slot): each slot is reused only after all others (FIFO free
/// list), and gets a new id each time, so a late reply to an expired query does not match the
/// next query in that slot until the 16-bit id space wraps.
struct Tracker {
    bits: u32,
    mask: usize,
    slots: Vec<Slot>,
    free: VecDeque<u16>,
    outstanding: usize,
}

impl Tracker {
    fn new(window: usize) -> Self {
        let cap = (window * 4).next_power_of_two().clamp(16, 65536);
        Tracker {
            bits: cap.trailing_zeros(),
            mask: cap - 1,
            slots: vec![Slot::default(); cap],
            free: (0..cap as u32).map(|s| s as u16).collect(),
            outstanding: 0,
        }
    }
    fn alloc(&mut self, qidx: usize, now: u64) -> u16 {
        let s = self.free.pop_front().expect("tracker full") as usize;
        let sl = &mut self.slots[s];
        sl.generation = sl.generation.wrapping_add(1);
        sl.id = (((sl.generation as u32) << self.bits) | s as u32) as u16;
        sl.sent = now;
        sl.qidx = qidx as u32;
        self.outstanding += 1;
        sl.id
    }
    /// The slot of an outstanding query with this id.
    fn find(&self, id: u16) -> Option<usize> {
        let s = id as usize & self.mask;
        let sl = &self.slots[s];
        (sl.sent != 0 && sl.id == id).then_some(s)
    }
    fn release(&mut self, s: usize) {
        self.slots[s].sent = 0;
        self.free.push_back(s as u16);
        self.outstanding -= 1;
    }
    /// Frees queries older than LOST_AFTER_NS (all of them if `all`), returning how many.
    fn expire(&mut self, now: u64, all: bool) -> u64 {
        if self.outstanding == 0 {
            return 0;
        }
        let mut n = 0;
        for s in 0..self.slots.len() {
            let t = self.slots[s].sent;
            if t != 0 && (all || now.saturating_sub(t) > LOST_AFTER_NS) {
                self.release(s);
                n += 1;
            }
        }
        n
    }
}

// ---------------------------------------------------------------------------------------------
// Accounting

struct Stats {
    sent: u64,
    completed: u64,
    lost: u64,
    /// replies whose id matches no outstanding query (late after being counted lost, or duplicates)
    unmatched: u64,
    /// replies whose id matches an outstanding query but whose question differs
    mismatched: u64,
    /// datagrams or messages too short or without QR
    malformed: u64,
    tc: u64,
    rcodes: [u64; 16],
    /// replies without an OPT record to queries that had one
    no_opt: u64,
    reply_bytes: u64,
    hist: Vec<u64>,
    over: u64,
    max_us: u64,
    // TCP
    conns_opened: u64,
    server_closes: u64,
    lost_on_close: u64,
    connect_failures: u64,
    send_errors: u64,
}

impl Stats {
    fn new() -> Self {
        Stats {
            sent: 0,
            completed: 0,
            lost: 0,
            unmatched: 0,
            mismatched: 0,
            malformed: 0,
            tc: 0,
            rcodes: [0; 16],
            no_opt: 0,
            reply_bytes: 0,
            hist: vec![0; HIST_US],
            over: 0,
            max_us: 0,
            conns_opened: 0,
            server_closes: 0,
            lost_on_close: 0,
            connect_failures: 0,
            send_errors: 0,
        }
    }

    /// Accounts one reply; matches it against `tr` and frees the query's slot.
    fn reply(&mut self, b: &[u8], tr: &mut Tracker, qs: &Queries, now: u64, edns: bool) {
        if b.len() < 12 || b[2] & 0x80 == 0 {
            self.malformed += 1;
            return;
        }
        let id = u16::from_be_bytes([b[0], b[1]]);
        let Some(s) = tr.find(id) else {
            self.unmatched += 1;
            return;
        };
        let sl = tr.slots[s];
        let qdcount = u16::from_be_bytes([b[4], b[5]]);
        // A reply without a question (allowed for some errors) is matched on the id alone.
        if qdcount != 0 {
            let q = qs.question(sl.qidx as usize);
            if b.len() < 12 + q.len() || !b[12..12 + q.len()].eq_ignore_ascii_case(q) {
                self.mismatched += 1;
                return;
            }
        }
        tr.release(s);
        self.completed += 1;
        self.reply_bytes += b.len() as u64;
        self.rcodes[(b[3] & 0xF) as usize] += 1;
        if b[2] & 0x02 != 0 {
            self.tc += 1;
        }
        if edns && !has_opt(b) {
            self.no_opt += 1;
        }
        let us = now.saturating_sub(sl.sent) / 1000;
        self.max_us = self.max_us.max(us);
        match self.hist.get_mut(us as usize) {
            Some(c) => *c += 1,
            None => self.over += 1,
        }
    }

    fn report(&self, o: &Opts, nq: usize, wall: f64) {
        let pct = |p: f64| -> String {
            let target = ((p / 100.0 * self.completed as f64).ceil() as u64).max(1);
            let mut acc = 0;
            for (us, c) in self.hist.iter().enumerate() {
                acc += c;
                if acc >= target {
                    return format!("{:.3}", us as f64 / 1000.0);
                }
            }
            format!(">{}", HIST_US / 1000)
        };
        let sum_us: u64 = self.hist.iter().enumerate().map(|(us, c)| us as u64 * c).sum();
        let r = &self.rcodes;
        let other: u64 = self.rcodes.iter().sum::<u64>() - r[0] - r[1] - r[2] - r[3] - r[4] - r[5];
        let mode = match o.mode {
            Mode::Udp => format!("udp, {} sockets, window {}, batch {}", o.sockets, o.window, o.batch),
            Mode::Tcp => format!("tcp, {} connections, pipeline {}", o.conns, o.pipeline),
        };
        let rate = if o.rate > 0.0 { format!("{:.0} qps", o.rate) } else { "max".into() };
        let edns = o.edns.map_or("off".to_string(), |s| s.to_string());
        println!("dnsload {} to {}, {nq} distinct queries, {:.1} s, rate {rate}, edns {edns}", mode, o.addr, o.secs);
        println!("Queries sent:         {}", self.sent);
        println!("Queries completed:    {}", self.completed);
        println!("Queries lost:         {}", self.lost);
        println!("Queries per second:   {:.1}", self.completed as f64 / o.secs);
        println!(
            "Response rcodes: NOERROR {} NXDOMAIN {} REFUSED {} SERVFAIL {} FORMERR {} NOTIMP {} other {}",
            r[0], r[3], r[5], r[2], r[1], r[4], other
        );
        println!("Truncated (TC):       {}", self.tc);
        println!(
            "Latency ms: avg {:.3} p50 {} p90 {} p99 {} p99.9 {} max {:.3} (>{} ms: {})",
            sum_us as f64 / self.completed.max(1) as f64 / 1000.0,
            pct(50.0),
            pct(90.0),
            pct(99.0),
            pct(99.9),
            self.max_us as f64 / 1000.0,
            HIST_US / 1000,
            self.over
        );
        println!(
            "Replies: avg {:.0} bytes; unmatched/late {} mismatched question {} malformed {}{}",
            self.reply_bytes as f64 / self.completed.max(1) as f64,
            self.unmatched,
            self.mismatched,
            self.malformed,
            if o.edns.is_some() { format!(" without OPT {}", self.no_opt) } else { String::new() }
        );
        if o.mode == Mode::Tcp {
            println!(
                "Connections: opened {} closed by server {} (queries lost with them {}) connect failures {} send errors {}",
                self.conns_opened, self.server_closes, self.lost_on_close, self.connect_failures, self.send_errors
            );
        } else if self.send_errors > 0 {
            println!("Send errors:          {}", self.send_errors);
        }
        println!("Run time:             {wall:.2} s (sending {:.2} s, then up to 1 s for late replies)", o.secs);
    }
}

/// Whether a DNS message has an OPT record in its additional section.
fn has_opt(b: &[u8]) -> bool {
    fn skip_name(b: &[u8], mut p: usize) -> Option<usize> {
        loop {
            let l = *b.get(p)? as usize;
            if l == 0 {
                return Some(p + 1);
            }
            if l & 0xC0 == 0xC0 {
                return Some(p + 2);
            }
            p += 1 + l;
        }
    }
    let cnt = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]) as usize;
    let (qd, an, ns, ar) = (cnt(4), cnt(6), cnt(8), cnt(10));
    let mut p = 12;
    for _ in 0..qd {
        match skip_name(b, p) {
            Some(q) => p = q + 4,
            None => return false,
        }
    }
    for i in 0..an + ns + ar {
        let Some(q) = skip_name(b, p) else { return false };
        if q + 10 > b.len() {
            return false;
        }
        if i >= an + ns && u16::from_be_bytes([b[q], b[q + 1]]) == 41 {
            return true;
        }
        p = q + 10 + u16::from_be_bytes([b[q + 8], b[q + 9]]) as usize;
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Clock, rate

struct Clock(Instant);

impl Clock {
    /// ns since start, never 0.
    fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64 + 1
    }
}

/// How many more queries may be sent now to keep to `rate` (unbounded if 0).
fn allowance(rate: f64, now: u64, sent: u64) -> usize {
    if rate <= 0.0 {
        return usize::MAX;
    }
    let due = (rate * now as f64 / 1e9) as u64 + 1;
    due.saturating_sub(sent) as usize
}

// ---------------------------------------------------------------------------------------------
// Sockets

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A non-blocking socket of `kind`, connect()ed (or connecting) to `addr`. Err(errno) on failure.
fn open_socket(addr: &SocketAddr, kind: i32) -> Result<i32, i32> {
    open_socket_from(addr, kind, None)
}

/// [`open_socket`], bound first to `from` (port 0) when given.
fn open_socket_from(addr: &SocketAddr, kind: i32, from: Option<std::net::Ipv4Addr>) -> Result<i32, i32> {
    let fam = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let fd = unsafe { libc::socket(fam, kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(errno());
    }
    if kind == libc::SOCK_STREAM {
        let one: libc::c_int = 1;
        unsafe {
            libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, &one as *const _ as *const _, 4);
        }
    } else {
        let sz: libc::c_int = 1 << 20;
        unsafe {
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &sz as *const _ as *const _, 4);
        }
    }
    if let Some(ip) = from {
        let (ss, len) = sockaddr(&SocketAddr::new(ip.into(), 0));
        if unsafe { libc::bind(fd, &ss as *const _ as *const libc::sockaddr, len) } < 0 {
            let e = errno();
            unsafe { libc::close(fd) };
            return Err(e);
        }
    }
    let (ss, len) = sockaddr(addr);
    let r = unsafe { libc::connect(fd, &ss as *const _ as *const libc::sockaddr, len) };
    if r < 0 && errno() != libc::EINPROGRESS {
        let e = errno();
        unsafe { libc::close(fd) };
        return Err(e);
    }
    Ok(fd)
}

/// Pre-built mmsghdr array over fixed buffers (built once; the kernel only writes msg_len and
/// msg_flags, so it is reused for every call).
struct MsgVec {
    bufs: Vec<u8>,
    size: usize,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl MsgVec {
    fn new(n: usize, size: usize) -> Box<Self> {
        let mut m = Box::new(MsgVec { bufs: vec![0; n * size], size, iov: Vec::with_capacity(n), hdrs: Vec::with_capacity(n) });
        let base = m.bufs.as_mut_ptr();
        for i in 0..n {
            m.iov.push(libc::iovec { iov_base: unsafe { base.add(i * size) } as *mut _, iov_len: size });
        }
        let iovp = m.iov.as_mut_ptr();
        for i in 0..n {
            let mut h: libc::mmsghdr = unsafe { zeroed() };
            h.msg_hdr.msg_iov = unsafe { iovp.add(i) };
            h.msg_hdr.msg_iovlen = 1;
            m.hdrs.push(h);
        }
        m
    }
    fn buf(&self, i: usize, len: usize) -> &[u8] {
        &self.bufs[i * self.size..i * self.size + len]
    }
    fn buf_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i * self.size..(i + 1) * self.size]
    }
}

// ---------------------------------------------------------------------------------------------
// UDP

struct UdpSock {
    fd: i32,
    tr: Tracker,
}

fn run_udp(o: &Opts, qs: &Queries, st: &mut Stats) {
    let mut socks: Vec<UdpSock> = (0..o.sockets)
        .map(|i| UdpSock {
            fd: open_socket_from(&o.addr, libc::SOCK_DGRAM, o.source.map(|ip| (u32::from(ip) + i as u32).into()))
                .unwrap_or_else(|e| die(format!("udp socket to {}: {}", o.addr, std::io::Error::from_raw_os_error(e)))),
            tr: Tracker::new(o.window),
        })
        .collect();
    let batch = o.batch;
    let mut rx = MsgVec::new(batch, UDP_RBUF);
    let mut tx = MsgVec::new(batch, QBUF);
    let mut txq: Vec<(usize, u16)> = Vec::with_capacity(batch); // (slot, id) of each message in tx
    let clock = Clock(Instant::now());
    let dur = (o.secs * 1e9) as u64;
    let mut qi = 0usize;
    let mut last_sweep = 0u64;
    let mut round = 0usize;
    let edns = o.edns.is_some();
    loop {
        let now = clock.now();
        let sending = now < dur;
        if !sending && (socks.iter().all(|s| s.tr.outstanding == 0) || now > dur + LOST_AFTER_NS) {
            break;
        }
        round += 1;
        let n = socks.len();
        for k in 0..n {
            let sk = &mut socks[(round + k) % n];
            // receive everything waiting
            loop {
                let r = unsafe {
                    libc::recvmmsg(sk.fd, rx.hdrs.as_mut_ptr(), batch as u32, libc::MSG_DONTWAIT, std::ptr::null_mut())
                };
                if r <= 0 {
                    break;
                }
                let t = clock.now();
                for i in 0..r as usize {
                    let len = (rx.hdrs[i].msg_len as usize).min(UDP_RBUF);
                    st.reply(rx.buf(i, len), &mut sk.tr, qs, t, edns);
                }
                if (r as usize) < batch {
                    break;
                }
            }
            if !sending {
                continue;
            }
            let room = (o.window - sk.tr.outstanding).min(batch).min(allowance(o.rate, clock.now(), st.sent));
            if room == 0 {
                continue;
            }
            let t = clock.now();
            txq.clear();
            for j in 0..room {
                let qidx = qi % qs.idx.len();
                qi += 1;
                let id = sk.tr.alloc(qidx, t);
                let p = qs.get(qidx);
                let b = tx.buf_mut(j);
                b[..p.len()].copy_from_slice(p);
                b[..2].copy_from_slice(&id.to_be_bytes());
                tx.iov[j].iov_len = p.len();
                txq.push((id as usize & sk.tr.mask, id));
            }
            let r = unsafe { libc::sendmmsg(sk.fd, tx.hdrs.as_mut_ptr(), room as u32, 0) };
            let done = if r < 0 {
                let e = errno();
                if e != libc::EAGAIN && e != libc::ENOBUFS && e != libc::ECONNREFUSED {
                    st.send_errors += 1;
                }
                0
            } else {
                r as usize
            };
            for &(s, _) in &txq[done..] {
                sk.tr.release(s); // not sent: give the slot back
            }
            st.sent += done as u64;
        }
        if now - last_sweep > SWEEP_EVERY_NS {
            last_sweep = now;
            for sk in socks.iter_mut() {
                st.lost += sk.tr.expire(now, false);
            }
        }
    }
    let now = clock.now();
    for sk in socks.iter_mut() {
        st.lost += sk.tr.expire(now, true);
        unsafe { libc::close(sk.fd) };
    }
}

// ---------------------------------------------------------------------------------------------
// TCP

#[derive(PartialEq)]
enum CState {
    Connecting,
    Open,
    /// closed; reopen at this time
    Down(u64),
}

struct Conn {
    fd: i32,
    state: CState,
    tr: Tracker,
    wbuf: Vec<u8>,
    wpos: usize,
    rbuf: Vec<u8>,
    rlen: usize,
    /// EPOLLOUT is registered
    want_out: bool,
}

const RBUF_TCP: usize = 2 * 65538;

fn epoll_set(ep: i32, op: i32, fd: i32, i: usize, out: bool) {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLRDHUP | if out { libc::EPOLLOUT } else { 0 }) as u32,
        u64: i as u64,
    };
    if unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) } < 0 {
        die(format!("epoll_ctl: {}", std::io::Error::last_os_error()));
    }
}

fn tcp_open(c: &mut Conn, ep: i32, i: usize, o: &Opts, st: &mut Stats, now: u64) {
    match open_socket(&o.addr, libc::SOCK_STREAM) {
        Ok(fd) => {
            c.fd = fd;
            c.state = CState::Connecting;
            c.wbuf.clear();
            c.wpos = 0;
            c.rlen = 0;
            c.want_out = true;
            epoll_set(ep, libc::EPOLL_CTL_ADD, fd, i, true);
        }
        Err(e) => {
            if st.connect_failures == 0 {
                eprintln!("dnsload: connect to {}: {}", o.addr, std::io::Error::from_raw_os_error(e));
            }
            st.connect_failures += 1;
            c.state = CState::Down(now + RECONNECT_DELAY_NS);
        }
    }
}

/// Closes a connection; its outstanding queries are lost. `by_server`: the server closed it.
fn tcp_close(c: &mut Conn, ep: i32, st: &mut Stats, now: u64, by_server: bool) {
    unsafe {
        libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, c.fd, std::ptr::null_mut());
        libc::close(c.fd);
    }
    c.fd = -1;
    let n = c.tr.expire(now, true);
    st.lost += n;
    if by_server {
        st.server_closes += 1;
        st.lost_on_close += n;
    }
    c.state = CState::Down(now);
}

/// Writes pending bytes; false if the connection failed.
fn tcp_flush(c: &mut Conn, ep: i32, i: usize, st: &mut Stats) -> bool {
    while c.wpos < c.wbuf.len() {
        let r = unsafe { libc::write(c.fd, c.wbuf[c.wpos..].as_ptr() as *const _, c.wbuf.len() - c.wpos) };
        if r < 0 {
            let e = errno();
            if e == libc::EAGAIN || e == libc::EINTR {
                break;
            }
            if e != libc::EPIPE && e != libc::ECONNRESET {
                st.send_errors += 1;
            }
            return false;
        }
        c.wpos += r as usize;
    }
    let pending = c.wpos < c.wbuf.len();
    if !pending {
        c.wbuf.clear();
        c.wpos = 0;
    }
    if pending != c.want_out {
        c.want_out = pending;
        epoll_set(ep, libc::EPOLL_CTL_MOD, c.fd, i, pending);
    }
    true
}

/// Reads what is available and accounts complete messages; false if the connection ended.
fn tcp_read(c: &mut Conn, qs: &Queries, st: &mut Stats, now: u64, edns: bool) -> bool {
    let r = unsafe { libc::read(c.fd, c.rbuf[c.rlen..].as_mut_ptr() as *mut _, RBUF_TCP - c.rlen) };
    if r == 0 {
        return false;
    }
    if r < 0 {
        let e = errno();
        return e == libc::EAGAIN || e == libc::EINTR;
    }
    c.rlen += r as usize;
    let mut p = 0;
    while c.rlen - p >= 2 {
        let len = u16::from_be_bytes([c.rbuf[p], c.rbuf[p + 1]]) as usize;
        if c.rlen - p < 2 + len {
            break;
        }
        st.reply(&c.rbuf[p + 2..p + 2 + len], &mut c.tr, qs, now, edns);
        p += 2 + len;
    }
    c.rbuf.copy_within(p..c.rlen, 0);
    c.rlen -= p;
    true
}

fn run_tcp(o: &Opts, qs: &Queries, st: &mut Stats) {
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        die(format!("epoll_create1: {}", std::io::Error::last_os_error()));
    }
    let clock = Clock(Instant::now());
    let dur = (o.secs * 1e9) as u64;
    let edns = o.edns.is_some();
    let mut conns: Vec<Conn> = (0..o.conns)
        .map(|_| Conn {
            fd: -1,
            state: CState::Down(0),
            tr: Tracker::new(o.pipeline),
            wbuf: Vec::with_capacity(o.pipeline * (QBUF + 2)),
            wpos: 0,
            rbuf: vec![0; RBUF_TCP],
            rlen: 0,
            want_out: false,
        })
        .collect();
    let now = clock.now();
    for (i, c) in conns.iter_mut().enumerate() {
        tcp_open(c, ep, i, o, st, now);
    }
    if st.connect_failures as usize == conns.len() {
        die(format!("cannot connect to {}", o.addr));
    }
    let mut events: Vec<libc::epoll_event> = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut qi = 0usize;
    let mut last_sweep = 0u64;
    loop {
        let now = clock.now();
        let sending = now < dur;
        if !sending && (conns.iter().all(|c| c.tr.outstanding == 0) || now > dur + LOST_AFTER_NS) {
            break;
        }
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 0) };
        let t = clock.now();
        for e in &events[..n.max(0) as usize] {
            let (ev, i) = (e.events, e.u64 as usize);
            let c = &mut conns[i];
            if c.state == CState::Connecting {
                if ev & (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32 == 0 {
                    continue;
                }
                let mut err: libc::c_int = 0;
                let mut len = 4 as libc::socklen_t;
                unsafe {
                    libc::getsockopt(c.fd, libc::SOL_SOCKET, libc::SO_ERROR, &mut err as *mut _ as *mut _, &mut len);
                }
                if err != 0 || ev & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
                    if st.connect_failures == 0 {
                        eprintln!("dnsload: connect to {}: {}", o.addr, std::io::Error::from_raw_os_error(err));
                    }
                    st.connect_failures += 1;
                    tcp_close(c, ep, st, t, false);
                    c.state = CState::Down(t + RECONNECT_DELAY_NS);
                    continue;
                }
                c.state = CState::Open;
                st.conns_opened += 1;
                c.want_out = false;
                epoll_set(ep, libc::EPOLL_CTL_MOD, c.fd, i, false);
                continue;
            }
            if c.state != CState::Open {
                continue;
            }
            if ev & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0
                && !tcp_read(c, qs, st, t, edns)
            {
                tcp_close(c, ep, st, t, true);
                continue;
            }
            if ev & libc::EPOLLOUT as u32 != 0 && !tcp_flush(c, ep, i, st) {
                tcp_close(c, ep, st, t, true);
            }
        }
        // top up every open connection, reopen closed ones
        for (i, c) in conns.iter_mut().enumerate() {
            match c.state {
                CState::Down(at) if sending && t >= at => {
                    tcp_open(c, ep, i, o, st, t);
                    continue;
                }
                CState::Open => {}
                _ => continue,
            }
            if !sending || c.want_out {
                continue;
            }
            let room = (o.pipeline - c.tr.outstanding).min(allowance(o.rate, t, st.sent));
            if room == 0 {
                continue;
            }
            for _ in 0..room {
                let qidx = qi % qs.idx.len();
                qi += 1;
                let id = c.tr.alloc(qidx, t);
                let p = qs.get(qidx);
                c.wbuf.extend_from_slice(&(p.len() as u16).to_be_bytes());
                let at = c.wbuf.len();
                c.wbuf.extend_from_slice(p);
                c.wbuf[at..at + 2].copy_from_slice(&id.to_be_bytes());
            }
            st.sent += room as u64;
            if !tcp_flush(c, ep, i, st) {
                tcp_close(c, ep, st, t, true);
            }
        }
        if t - last_sweep > SWEEP_EVERY_NS {
            last_sweep = t;
            for c in conns.iter_mut() {
                st.lost += c.tr.expire(t, false);
            }
        }
    }
    let now = clock.now();
    for c in conns.iter_mut() {
        st.lost += c.tr.expire(now, true);
        if c.fd >= 0 {
            unsafe { libc::close(c.fd) };
        }
    }
    unsafe { libc::close(ep) };
}

fn main() {
    let o = parse_opts();
    let qs = load_queries(&o.qfile, o.edns);
    let mut st = Stats::new();
    let t0 = Instant::now();
    match o.mode {
        Mode::Udp => run_udp(&o, &qs, &mut st),
        Mode::Tcp => run_tcp(&o, &qs, &mut st),
    }
    st.report(&o, qs.idx.len(), t0.elapsed().as_secs_f64());
}
