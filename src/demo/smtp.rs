//! The demo's SMTP server: plain ESMTP on 127.0.0.1, each accepted message written as a
//! `.eml` file; mailboxes in `refused` get `550 5.1.1` at RCPT, as a real server answers
//! for an address that no longer exists.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A running server; dropping it does not stop it (the demo's runtime ends it).
pub struct MailSink {
    /// Its port on 127.0.0.1.
    pub port: u16,
    accepted: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
}

impl MailSink {
    /// Binds an ephemeral port and serves until the process (or runtime) ends.
    pub async fn start(dir: PathBuf, refused: Vec<String>) -> std::io::Result<MailSink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let sink = MailSink {
            port,
            accepted: Arc::new(AtomicU64::new(0)),
            refused: Arc::new(AtomicU64::new(0)),
        };
        let shared = Arc::new(Shared {
            dir,
            refused,
            accepted: sink.accepted.clone(),
            refusals: sink.refused.clone(),
        });
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = shared.serve(stream).await {
                        tracing::debug!(error = %e, "demo SMTP connection ended");
                    }
                });
            }
        });
        Ok(sink)
    }

    /// Messages written so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Recipients refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

struct Shared {
    dir: PathBuf,
    refused: Vec<String>,
    accepted: Arc<AtomicU64>,
    refusals: Arc<AtomicU64>,
}

/// The address inside `<...>` of a MAIL FROM or RCPT TO argument.
fn address(argument: &str) -> &str {
    let start = argument.find('<').map_or(0, |i| i + 1);
    let end = argument[start..]
        .find('>')
        .map_or(argument.len(), |i| start + i);
    &argument[start..end]
}

impl Shared {
    async fn serve(&self, stream: TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        write.write_all(b"220 demo.lethe ESMTP\r\n").await?;
        let mut recipients = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let command = line.trim_end();
            let verb = command.get(..4).unwrap_or(command).to_ascii_uppercase();
            let reply: &[u8] = match verb.as_str() {
                "EHLO" => b"250-demo.lethe\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
                "HELO" => b"250 demo.lethe\r\n",
                "MAIL" => {
                    recipients = 0;
                    b"250 2.1.0 Ok\r\n"
                }
                "RCPT" => {
                    let to = address(command.get(8..).unwrap_or_default());
                    if self.refused.iter().any(|r| r.eq_ignore_ascii_case(to)) {
                        self.refusals.fetch_add(1, Ordering::Relaxed);
                        b"550 5.1.1 mailbox unavailable\r\n"
                    } else {
                        recipients += 1;
                        b"250 2.1.5 Ok\r\n"
                    }
                }
                "DATA" if recipients == 0 => b"554 5.5.1 no valid recipients\r\n",
                "DATA" => {
                    write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                    let mut message = Vec::new();
                    loop {
                        line.clear();
                        if lines.read_line(&mut line).await? == 0 {
                            return Ok(());
                        }
                        if line == ".\r\n" || line == ".\n" {
                            break;
                        }
                        // Dot-stuffing: a leading dot was doubled by the client.
                        let text = line.strip_prefix('.').unwrap_or(&line);
                        message.extend_from_slice(text.as_bytes());
                    }
                    let n = self.accepted.fetch_add(1, Ordering::Relaxed) + 1;
                    let file = self.dir.join(format!("{n:06}.eml"));
                    tokio::fs::write(&file, &message).await?;
                    recipients = 0;
                    b"250 2.0.0 Ok: queued\r\n"
                }
                "RSET" => {
                    recipients = 0;
                    b"250 2.0.0 Ok\r\n"
                }
                "NOOP" => b"250 2.0.0 Ok\r\n",
                "QUIT" => {
                    write.write_all(b"221 2.0.0 Bye\r\n").await?;
                    return Ok(());
                }
                _ => b"502 5.5.2 command not recognized\r\n",
            };
            write.write_all(reply).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_are_read_inside_angle_brackets() {
        assert_eq!(super::address("TO:<a@b.c> SIZE=1"), "a@b.c");
        assert_eq!(super::address("a@b.c"), "a@b.c");
    }
}
