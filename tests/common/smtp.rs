//! A scripted SMTP server over real TCP (127.0.0.1, ephemeral port) for integration tests
//! and benchmarks.
//!
//! Every connection is served in its own task; dropping the [`SmtpServer`] aborts the accept
//! loop and every connection task (their sockets are closed). Faults queued with
//! [`SmtpServer::script`] are applied, in order, to the next mail transactions; with an empty
//! script every transaction is accepted with `250 2.0.0 Ok: queued as <n>`.
//!
//! Uses only std and tokio (net, io-util, time, sync, rt).
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// One behaviour applied to the next mail transaction (MAIL FROM .. end of DATA), in order;
/// when the script is empty, transactions are accepted with "250 2.0.0 Ok: queued as <n>".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Reply this code + text to RCPT TO (e.g. 550 "5.1.1 no such user", 451 "4.3.0 try later").
    AtRcpt(u16, &'static str),
    /// Read the whole DATA, then reply this code + text instead of 250 (message not recorded).
    AtDataEnd(u16, &'static str),
    /// Close the TCP connection in the middle of DATA (after reading some of the data),
    /// without replying.
    DropMidData,
    /// After the DATA terminator, never reply (keep the socket open until the server is
    /// dropped) — a stalled server.
    Stall,
    /// On the next new connection, greet with "421 4.3.2 busy" and close (counts as one script
    /// item consumed at connect time, not per transaction).
    BusyGreeting,
    /// Accept the message, then close the connection without a word, as a server does with
    /// a connection it finds idle for too long.
    HangUpAfterAccepting,
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Received {
    /// MAIL FROM address without `<>`.
    pub from: String,
    /// RCPT TO addresses without `<>` (only the accepted ones).
    pub to: Vec<String>,
    /// The DATA payload, dot-unstuffed, CRLF kept, without the final ".\r\n".
    pub raw: String,
    /// When the message was accepted: the DATA terminator was read and any
    /// [`SmtpServer::delay_acceptance`] delay is over; the 250 reply follows at once.
    pub at: Instant,
}

impl Received {
    /// Header value of the top-level message (case-insensitive name, first occurrence,
    /// unfolded, trimmed; RFC 2047 encoded-words `=?utf-8?b?..?=` and `=?utf-8?q?..?=`
    /// decoded, adjacent encoded words joined).
    pub fn header(&self, name: &str) -> Option<String> {
        let (headers, _) = split_entity(&self.raw);
        find_header(&headers, name).map(|v| decode_rfc2047(v.trim()))
    }

    /// The decoded body of the first MIME part (depth first) whose Content-Type starts with
    /// `mime` (e.g. "text/plain", "text/html"), through multipart/* (alternative, mixed,
    /// related, nested) with boundaries, and Content-Transfer-Encoding
    /// 7bit/8bit/binary/quoted-printable/base64; decoded as UTF-8 (lossy; ISO-8859-1 and
    /// US-ASCII charsets are honoured). Line endings are normalised to "\n".
    /// For a non-multipart message, the body if its Content-Type (default text/plain) matches,
    /// without up to two trailing line breaks (the one SMTP framing needs and the one the
    /// composer adds after the body: with lettre, exactly the body it was given).
    pub fn part(&self, mime: &str) -> Option<String> {
        find_part(&self.raw, &mime.trim().to_ascii_lowercase(), 0)
    }
}

struct Shared {
    script: Mutex<VecDeque<Fault>>,
    messages: Mutex<Vec<Received>>,
    count: AtomicUsize,
    connections: AtomicUsize,
    noops: AtomicUsize,
    count_only: AtomicBool,
    delayed_acks: AtomicBool,
    acceptance_delay_us: AtomicU64,
}

/// A scripted SMTP server; see the module docs.
pub struct SmtpServer {
    port: u16,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl SmtpServer {
    /// Binds 127.0.0.1:0 and serves every connection in a spawned task until dropped.
    pub async fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("smtp test server: bind 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("smtp test server: local_addr")
            .port();
        let shared = Arc::new(Shared {
            script: Mutex::new(VecDeque::new()),
            messages: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            noops: AtomicUsize::new(0),
            count_only: AtomicBool::new(false),
            delayed_acks: AtomicBool::new(false),
            acceptance_delay_us: AtomicU64::new(0),
        });
        let sh = shared.clone();
        let accept = tokio::spawn(async move {
            // Owned here: when this task is aborted, the set is dropped and every connection
            // task is aborted with it (closing its socket).
            let mut conns = JoinSet::new();
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        sh.connections.fetch_add(1, Ordering::SeqCst);
                        let sh = sh.clone();
                        conns.spawn(async move {
                            let _ = serve(stream, &sh).await;
                        });
                    }
                    // E.g. too many open files: back off a little instead of spinning.
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
                while conns.try_join_next().is_some() {}
            }
        });
        SmtpServer {
            port,
            shared,
            accept,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Appends faults to the script.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.shared.script).extend(faults);
    }

    /// Accepted messages so far, in order (empty in count-only mode for the messages
    /// accepted after [`SmtpServer::count_only`]).
    pub fn messages(&self) -> Vec<Received> {
        lock(&self.shared.messages).clone()
    }

    /// Number of accepted messages (cheap, for benches with many messages).
    pub fn count(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// NOOP commands received so far.
    pub fn noops(&self) -> usize {
        self.shared.noops.load(Ordering::SeqCst)
    }

    /// Waits (polling every 5 ms, up to `timeout`) until at least n messages were accepted;
    /// returns whether it happened.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let start = Instant::now();
        loop {
            if self.count() >= n {
                return true;
            }
            if start.elapsed() >= timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Acknowledge like a stock server: Linux's delayed ACKs, no TCP_QUICKACK.
    pub fn delayed_acks(&self) {
        self.shared.delayed_acks.store(true, Ordering::SeqCst);
    }

    /// A slow server: wait `delay` after each message's DATA before accepting it (each
    /// connection on its own, so `n` connections accept up to `n` messages per delay).
    pub fn delay_acceptance(&self, delay: Duration) {
        self.shared
            .acceptance_delay_us
            .store(delay.as_micros() as u64, Ordering::SeqCst);
    }

    /// Stop keeping message bodies (only count them), for benchmarks with 10,000+ messages.
    pub fn count_only(&self) {
        self.shared.count_only.store(true, Ordering::SeqCst);
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Protocol

struct Transaction {
    from: String,
    to: Vec<String>,
    fault: Option<Fault>,
}

async fn reply(w: &mut BufWriter<OwnedWriteHalf>, text: &str) -> std::io::Result<()> {
    w.write_all(text.as_bytes()).await?;
    w.write_all(b"\r\n").await?;
    w.flush().await
}

/// Serves one connection; any I/O error ends it (the caller ignores the error).
async fn serve(stream: TcpStream, sh: &Shared) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut w = BufWriter::new(w);

    let busy = {
        let mut script = lock(&sh.script);
        if matches!(script.front(), Some(Fault::BusyGreeting)) {
            script.pop_front();
            true
        } else {
            false
        }
    };
    if busy {
        reply(&mut w, "421 4.3.2 busy").await?;
        let _ = w.shutdown().await;
        return Ok(());
    }
    reply(&mut w, "220 localhost ESMTP test").await?;

    let mut tx: Option<Transaction> = None;
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let cmd = text.trim_end_matches(['\r', '\n']);
        let upper = cmd.to_ascii_uppercase();
        let verb = upper.split_whitespace().next().unwrap_or("");
        match verb {
            "EHLO" => {
                tx = None;
                reply(
                    &mut w,
                    "250-localhost\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8",
                )
                .await?;
            }
            "HELO" => {
                tx = None;
                reply(&mut w, "250 localhost").await?;
            }
            "MAIL" => {
                if !upper.starts_with("MAIL FROM:") {
                    reply(&mut w, "501 5.5.4 Syntax: MAIL FROM:<address>").await?;
                } else if tx.is_some() {
                    reply(&mut w, "503 5.5.1 Error: nested MAIL command").await?;
                } else {
                    let from = parse_addr(&cmd["MAIL FROM:".len()..]);
                    let fault = {
                        let mut script = lock(&sh.script);
                        match script.front() {
                            None | Some(Fault::BusyGreeting) => None,
                            Some(_) => script.pop_front(),
                        }
                    };
                    tx = Some(Transaction {
                        from,
                        to: Vec::new(),
                        fault,
                    });
                    reply(&mut w, "250 2.1.0 Ok").await?;
                }
            }
            "RCPT" => match tx.as_mut() {
                None => reply(&mut w, "503 5.5.1 Error: need MAIL command").await?,
                Some(_) if !upper.starts_with("RCPT TO:") => {
                    reply(&mut w, "501 5.5.4 Syntax: RCPT TO:<address>").await?
                }
                Some(t) => {
                    let addr = parse_addr(&cmd["RCPT TO:".len()..]);
                    if let Some(Fault::AtRcpt(code, msg)) = t.fault.clone() {
                        t.fault = None;
                        if (200..300).contains(&code) {
                            t.to.push(addr);
                        }
                        reply(&mut w, &format!("{code} {msg}")).await?;
                    } else {
                        t.to.push(addr);
                        reply(&mut w, "250 2.1.5 Ok").await?;
                    }
                }
            },
            "DATA" => {
                let Some(t) = tx.take() else {
                    reply(&mut w, "503 5.5.1 Error: need MAIL command").await?;
                    continue;
                };
                if t.to.is_empty() {
                    reply(&mut w, "554 5.5.1 Error: no valid recipients").await?;
                    tx = Some(t);
                    continue;
                }
                reply(&mut w, "354 End data with <CR><LF>.<CR><LF>").await?;
                if t.fault == Some(Fault::DropMidData) {
                    // Read some of the data, then hang up without a reply.
                    line.clear();
                    let _ = r.read_until(b'\n', &mut line).await;
                    return Ok(());
                }
                let keep = !sh.count_only.load(Ordering::SeqCst);
                let mut data: Vec<u8> = Vec::new();
                loop {
                    if r.buffer().is_empty() && !sh.delayed_acks.load(Ordering::SeqCst) {
                        quickack(r.get_ref().as_ref());
                    }
                    line.clear();
                    if r.read_until(b'\n', &mut line).await? == 0 {
                        return Ok(()); // client went away mid-DATA
                    }
                    if line == b".\r\n" || line == b".\n" {
                        break;
                    }
                    if keep {
                        let l = if line.first() == Some(&b'.') {
                            &line[1..]
                        } else {
                            &line[..]
                        };
                        data.extend_from_slice(l);
                    }
                }
                let delay = sh.acceptance_delay_us.load(Ordering::SeqCst);
                if delay > 0 && !matches!(t.fault, Some(Fault::Stall)) {
                    tokio::time::sleep(Duration::from_micros(delay)).await;
                }
                let at = Instant::now();
                match t.fault {
                    Some(Fault::Stall) => {
                        // Never reply; the socket stays open until the server is dropped.
                        std::future::pending::<()>().await;
                    }
                    Some(Fault::AtDataEnd(code, msg)) => {
                        reply(&mut w, &format!("{code} {msg}")).await?;
                    }
                    _ => {
                        let n = if keep {
                            let mut msgs = lock(&sh.messages);
                            msgs.push(Received {
                                from: t.from,
                                to: t.to,
                                raw: String::from_utf8_lossy(&data).into_owned(),
                                at,
                            });
                            sh.count.fetch_add(1, Ordering::SeqCst) + 1
                        } else {
                            sh.count.fetch_add(1, Ordering::SeqCst) + 1
                        };
                        reply(&mut w, &format!("250 2.0.0 Ok: queued as {n}")).await?;
                        if t.fault == Some(Fault::HangUpAfterAccepting) {
                            let _ = w.shutdown().await;
                            return Ok(());
                        }
                    }
                }
            }
            "RSET" => {
                tx = None;
                reply(&mut w, "250 2.0.0 Ok").await?;
            }
            "NOOP" => {
                sh.noops.fetch_add(1, Ordering::SeqCst);
                reply(&mut w, "250 2.0.0 Ok").await?
            }
            "QUIT" => {
                reply(&mut w, "221 2.0.0 Bye").await?;
                let _ = w.shutdown().await;
                return Ok(());
            }
            "AUTH" => reply(&mut w, "502 5.5.1 AUTH not supported").await?,
            _ => reply(&mut w, "500 5.5.2 unrecognized").await?,
        }
    }
}

/// Acknowledges what was received right away instead of delaying the ACK.
///
/// Clients such as lettre write the message and the final "\r\n.\r\n" in two writes without
/// TCP_NODELAY: Nagle holds the terminator back until the message is acknowledged, and
/// Linux delays that ACK (~40 ms) on an interactive connection, which would cap a client at
/// ~25 messages per second per connection. Only a hint: errors are ignored.
#[cfg(target_os = "linux")]
fn quickack(stream: &TcpStream) {
    use std::os::fd::AsFd;
    use std::os::linux::net::TcpStreamExt;
    // A duplicate of the descriptor refers to the same socket.
    if let Ok(fd) = stream.as_fd().try_clone_to_owned() {
        let _ = std::net::TcpStream::from(fd).set_quickack(true);
    }
}

#[cfg(not(target_os = "linux"))]
fn quickack(_stream: &TcpStream) {}

/// `<a@b> PARAM=x` or `a@b PARAM=x` → `a@b`.
fn parse_addr(s: &str) -> String {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('<') {
        match rest.find('>') {
            Some(end) => rest[..end].to_string(),
            None => rest.trim_end().to_string(),
        }
    } else {
        s.split_whitespace().next().unwrap_or("").to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// MIME

/// Splits an entity into its (unfolded) header fields and its body.
fn split_entity(s: &str) -> (Vec<(String, String)>, &str) {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    loop {
        if pos >= s.len() {
            return (headers, "");
        }
        let (line, next) = match s[pos..].find('\n') {
            Some(i) => (&s[pos..pos + i], pos + i + 1),
            None => (&s[pos..], s.len()),
        };
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            return (headers, &s[next..]);
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            // Unfolding: drop the line break, keep the whitespace.
            if let Some(last) = headers.last_mut() {
                last.1.push_str(line);
            }
        } else if let Some(colon) = line.find(':') {
            headers.push((
                line[..colon].trim().to_string(),
                line[colon + 1..].to_string(),
            ));
        }
        pos = next;
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name.trim()))
        .map(|(_, v)| v.as_str())
}

/// `text/plain; charset="utf-8"` → ("text/plain", {"charset": "utf-8"}).
fn parse_content_type(v: &str) -> (String, HashMap<String, String>) {
    let mut params = HashMap::new();
    let v = v.trim();
    let (ty, mut rest) = match v.find(';') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, ""),
    };
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            break;
        }
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_ascii_lowercase();
        let after = rest[eq + 1..].trim_start();
        let (value, remaining) = if let Some(q) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, c2)) = chars.next() {
                            out.push(c2);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    _ => out.push(c),
                }
            }
            (out, &q[end.min(q.len())..])
        } else {
            match after.find(';') {
                Some(i) => (after[..i].trim().to_string(), &after[i..]),
                None => (after.trim().to_string(), ""),
            }
        };
        params.insert(key, value);
        rest = remaining;
    }
    (ty.trim().to_ascii_lowercase(), params)
}

/// The parts of a multipart body (without the CRLF that precedes each delimiter).
fn split_multipart<'a>(body: &'a str, boundary: &str) -> Vec<&'a str> {
    let delim = format!("--{boundary}");
    let close = format!("--{boundary}--");
    let mut parts = Vec::new();
    let mut part_start: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let (line, next) = match body[pos..].find('\n') {
            Some(i) => (&body[pos..pos + i], pos + i + 1),
            None => (&body[pos..], body.len()),
        };
        let l = line.trim_end_matches(['\r', ' ', '\t']);
        let is_close = l == close;
        if is_close || l == delim {
            if let Some(start) = part_start {
                let mut end = pos;
                if body[..end].ends_with('\n') {
                    end -= 1;
                    if body[..end].ends_with('\r') {
                        end -= 1;
                    }
                }
                parts.push(&body[start..end.max(start)]);
            }
            if is_close {
                break;
            }
            part_start = Some(next);
        }
        pos = next;
    }
    parts
}

fn find_part(entity: &str, mime: &str, depth: usize) -> Option<String> {
    if depth > 32 {
        return None;
    }
    let (headers, mut body) = split_entity(entity);
    let (ty, params) =
        parse_content_type(find_header(&headers, "content-type").unwrap_or("text/plain"));
    let is_multipart = ty.starts_with("multipart/");
    if ty.starts_with(mime) && (!is_multipart || mime.starts_with("multipart")) {
        if depth == 0 {
            // A non-multipart message: the DATA payload ends with the line break that SMTP
            // framing needs, and composers (lettre) add one more after the body.
            for _ in 0..2 {
                body = body
                    .strip_suffix("\r\n")
                    .or_else(|| body.strip_suffix('\n'))
                    .unwrap_or(body);
            }
        }
        let cte = find_header(&headers, "content-transfer-encoding")
            .unwrap_or("7bit")
            .trim()
            .to_ascii_lowercase();
        let bytes = match cte.as_str() {
            "quoted-printable" => decode_qp(body.as_bytes()),
            "base64" => decode_base64(body.as_bytes()),
            _ => body.as_bytes().to_vec(),
        };
        let charset = params.get("charset").map(String::as_str).unwrap_or("utf-8");
        return Some(decode_charset(charset, &bytes).replace("\r\n", "\n"));
    }
    if is_multipart {
        let boundary = params.get("boundary")?;
        for p in split_multipart(body, boundary) {
            if let Some(found) = find_part(p, mime, depth + 1) {
                return Some(found);
            }
        }
    }
    None
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Quoted-printable body decoding (RFC 2045 §6.7): soft line breaks, `=XX`, trailing
/// whitespace on encoded lines dropped; a malformed `=` is kept as is.
fn decode_qp(input: &[u8]) -> Vec<u8> {
    let is_ws = |c: &&u8| **c == b' ' || **c == b'\t';
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        match b {
            b'=' => {
                let rest = &input[i + 1..];
                if let (Some(h), Some(l)) = (
                    rest.first().and_then(|c| hex_val(*c)),
                    rest.get(1).and_then(|c| hex_val(*c)),
                ) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                // Soft line break: "=" then optional whitespace, then CRLF / LF / end.
                let ws = rest.iter().take_while(is_ws).count();
                let after = &rest[ws..];
                if after.starts_with(b"\r\n") {
                    i += 1 + ws + 2;
                } else if after.starts_with(b"\n") {
                    i += 1 + ws + 1;
                } else if after.is_empty() {
                    i = input.len();
                } else {
                    out.push(b'=');
                    i += 1;
                }
            }
            b' ' | b'\t' => {
                // Trailing whitespace before a line break was added in transport: drop it.
                let ws = input[i..].iter().take_while(is_ws).count();
                let after = &input[i + ws..];
                if !(after.starts_with(b"\r\n") || after.starts_with(b"\n") || after.is_empty()) {
                    out.extend_from_slice(&input[i..i + ws]);
                }
                i += ws;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Base64 decoding; characters outside the alphabet (line breaks, spaces) are skipped and
/// decoding stops at the first `=`.
fn decode_base64(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in input {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// RFC 2047 "Q" encoding: like quoted-printable, with `_` for a space.
fn decode_q(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'_' => {
                out.push(b' ');
                i += 1;
            }
            b'=' if i + 2 < input.len() => match (hex_val(input[i + 1]), hex_val(input[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'=');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn decode_charset(charset: &str, bytes: &[u8]) -> String {
    let cs = charset.trim().trim_matches('"').to_ascii_lowercase();
    let cs = cs.split('*').next().unwrap_or("");
    match cs {
        "iso-8859-1" | "iso8859-1" | "latin1" | "latin-1" | "us-ascii" | "ascii" => {
            bytes.iter().map(|&b| char::from(b)).collect()
        }
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Parses one encoded word at the start of `s`: returns (charset, decoded bytes, length).
fn parse_encoded_word(s: &str) -> Option<(String, Vec<u8>, usize)> {
    let rest = s.strip_prefix("=?")?;
    let q1 = rest.find('?')?;
    let charset = &rest[..q1];
    let after = &rest[q1 + 1..];
    let q2 = after.find('?')?;
    let enc = &after[..q2];
    let text_start = &after[q2 + 1..];
    let end = text_start.find("?=")?;
    let text = &text_start[..end];
    if charset.is_empty() || text.contains([' ', '\t']) {
        return None;
    }
    let bytes = if enc.eq_ignore_ascii_case("b") {
        decode_base64(text.as_bytes())
    } else if enc.eq_ignore_ascii_case("q") {
        decode_q(text.as_bytes())
    } else {
        return None;
    };
    let len = 2 + q1 + 1 + q2 + 1 + end + 2;
    Some((charset.to_ascii_lowercase(), bytes, len))
}

/// Decodes RFC 2047 encoded words in an (unfolded) header value; whitespace between adjacent
/// encoded words is dropped, and their bytes are joined before charset decoding (so a
/// character split across two words survives).
fn decode_rfc2047(value: &str) -> String {
    let mut out = String::new();
    let mut run: Option<(String, Vec<u8>)> = None;
    let mut ws = String::new();
    let mut last_was_word = false;
    let mut i = 0;
    while i < value.len() {
        let rest = &value[i..];
        if let Some((charset, bytes, len)) = parse_encoded_word(rest) {
            if last_was_word {
                ws.clear();
            } else {
                out.push_str(&ws);
                ws.clear();
            }
            match run.as_mut() {
                Some((cs, buf)) if *cs == charset => buf.extend_from_slice(&bytes),
                _ => {
                    if let Some((cs, buf)) = run.take() {
                        out.push_str(&decode_charset(&cs, &buf));
                    }
                    run = Some((charset, bytes));
                }
            }
            last_was_word = true;
            i += len;
            continue;
        }
        let Some(c) = rest.chars().next() else { break };
        if c == ' ' || c == '\t' {
            ws.push(c);
        } else {
            if let Some((cs, buf)) = run.take() {
                out.push_str(&decode_charset(&cs, &buf));
            }
            out.push_str(&ws);
            ws.clear();
            out.push(c);
            last_was_word = false;
        }
        i += c.len_utf8();
    }
    if let Some((cs, buf)) = run.take() {
        out.push_str(&decode_charset(&cs, &buf));
    }
    out.push_str(&ws);
    out
}
