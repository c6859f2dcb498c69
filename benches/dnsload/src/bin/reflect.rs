//! reflect: the floor of a UDP DNS server on this machine. It sends every query straight back as
//! its own reply (the same bytes with QR set: no answer records, rcode NOERROR), moving datagrams
//! in `recvmmsg`/`sendmmsg` batches as a fast server does, and does no DNS work at all. Its CPU
//! per query under dnsload is what the kernel charges for receiving and sending one query over
//! loopback, which no server on this path can go below.
//!
//! ```text
//! reflect ADDR [--batch 32] [--seconds 600]
//! taskset -c 0 target/dnsload/release/reflect 127.0.0.1:5399 & PID=$!
//! benches/measure-cpu.py floor $PID -- taskset -c 1 target/dnsload/release/dnsload udp 127.0.0.1:5399 queries.txt 10
//! ```
//!
//! It exits on SIGTERM/SIGINT (the default action) or after `--seconds`, so a forgotten one does
//! not stay.

use std::mem::zeroed;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::exit;
use std::time::{Duration, Instant};

/// Largest datagram read: a query with EDNS is far smaller.
const MAX_DATAGRAM: usize = 1232;
/// A DNS header's size; shorter datagrams are dropped.
const HEADER: usize = 12;
/// The QR bit, in the header's third byte.
const QR: u8 = 0x80;
/// Receive buffer asked for, as Maxine's UDP sockets do: with the default (about 200 KiB) a burst
/// of queries that arrives while the process is not running overflows it and queries are lost.
const RCVBUF: libc::c_int = 4 << 20;

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("reflect: {msg}");
    exit(2)
}

fn parse_args() -> (String, usize, u64) {
    let usage = "usage: reflect ADDR [--batch 32] [--seconds 600]";
    let mut args = std::env::args().skip(1);
    let (mut addr, mut batch, mut secs) = (None, 32usize, 600u64);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| die(format!("{name} needs a number\n{usage}")))
        };
        match a.as_str() {
            "--batch" => batch = num("--batch") as usize,
            "--seconds" => secs = num("--seconds"),
            "-h" | "--help" => {
                println!("{usage}");
                exit(0)
            }
            _ if addr.is_none() && !a.starts_with('-') => addr = Some(a),
            _ => die(format!("unexpected argument {a}\n{usage}")),
        }
    }
    if !(1..=1024).contains(&batch) || secs == 0 {
        die(format!("--batch is 1 to 1024, --seconds at least 1\n{usage}"));
    }
    (addr.unwrap_or_else(|| die(usage)), batch, secs)
}

fn main() {
    let (addr, batch, secs) = parse_args();
    let sock = UdpSocket::bind(&addr).unwrap_or_else(|e| die(format!("bind {addr}: {e}")));
    // a blocking socket that wakes up once a second, to notice the deadline
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap_or_else(|e| die(e));
    let fd = sock.as_raw_fd();
    // SAFETY: a valid socket and an int option of the stated size. Capped by net.core.rmem_max.
    let r = unsafe {
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, (&RCVBUF as *const libc::c_int).cast(), 4)
    };
    if r != 0 {
        eprintln!("reflect: SO_RCVBUF: {}", std::io::Error::last_os_error());
    }
    let deadline = Instant::now() + Duration::from_secs(secs);

    // Fixed buffers and headers, built once. recvmmsg writes each source address into `peers`,
    // and sendmmsg sends each reply back to it through the same header.
    let mut bufs = vec![[0u8; MAX_DATAGRAM]; batch];
    // SAFETY: sockaddr_storage and mmsghdr are plain C structs for which all-zero is valid.
    let mut peers: Vec<libc::sockaddr_storage> = vec![unsafe { zeroed() }; batch];
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: MAX_DATAGRAM })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; batch];
    let mut replies: Vec<libc::mmsghdr> = Vec::with_capacity(batch);

    while Instant::now() < deadline {
        for i in 0..batch {
            iov[i].iov_len = MAX_DATAGRAM;
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut peers[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iov[i];
            h.msg_iovlen = 1;
        }
        // SAFETY: every header points at live buffers of the stated sizes, owned above.
        let n = unsafe {
            libc::recvmmsg(fd, hdrs.as_mut_ptr(), batch as u32, libc::MSG_WAITFORONE, std::ptr::null_mut())
        };
        if n <= 0 {
            continue; // the 1 s timeout, or EINTR
        }
        replies.clear();
        for i in 0..n as usize {
            let len = hdrs[i].msg_len as usize;
            if len < HEADER {
                continue;
            }
            bufs[i][2] |= QR;
            iov[i].iov_len = len;
            replies.push(hdrs[i]);
        }
        let mut sent = 0;
        while sent < replies.len() {
            // SAFETY: as above; the copied headers point at the same buffers and addresses.
            let s =
                unsafe { libc::sendmmsg(fd, replies[sent..].as_mut_ptr(), (replies.len() - sent) as u32, 0) };
            if s <= 0 {
                break; // a full send buffer: the rest are lost, as a real server's would be
            }
            sent += s as usize;
        }
    }
}
