//! Sending email: pooled lettre SMTP connections, a process-wide rate limit, a timeout on
//! every send, and SMTP replies sorted into accepted, transient and permanent.

pub mod compose;
pub mod template;

pub use template::{Rendered, TemplateError, Templates, Vars};

use crate::config::{Email, Tls};
use compose::{Composer, Parts};
use lettre::Address;
use lettre::address::Envelope;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Tls as SmtpTls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// What happened to one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The server accepted it.
    Accepted {
        /// The Message-ID header we set.
        message_id: String,
        /// The server's reply, e.g. `250 2.0.0 Ok: queued as 12`.
        reply: String,
    },
    /// Worth trying again later: 4xx, connection lost, timeout.
    Transient(String),
    /// Will not work as is: 5xx, an invalid or missing address.
    Permanent(String),
}

/// Why the mailer cannot be built or reached.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The SMTP settings do not work.
    #[error("email: {0}")]
    Config(String),
    /// The SMTP server cannot be reached or refused the connection.
    #[error("email: cannot reach the SMTP server {server}: {problem}")]
    Unreachable {
        /// host:port.
        server: String,
        /// What happened.
        problem: String,
    },
}

impl crate::error::Classified for MailError {
    fn kind(&self) -> crate::error::ErrorKind {
        match self {
            MailError::Config(_) => crate::error::ErrorKind::Config,
            MailError::Unreachable { .. } => crate::error::ErrorKind::Unreachable,
        }
    }
}

/// Connections idle longer than this are checked with NOOP before a message: a server may
/// have closed them. A connection used more recently goes straight to MAIL FROM, saving
/// the round trip lettre's own pool spends on every message.
pub const PROBE_AFTER: Duration = Duration::from_secs(5);

/// Connections idle longer than this are closed instead of reused.
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// How to open one SMTP session.
struct Session {
    host: String,
    port: u16,
    tls: SmtpTls,
    hello: ClientId,
    credentials: Option<Credentials>,
    timeout: Duration,
}

impl Session {
    fn new(config: &Email) -> Result<Self, MailError> {
        let host = config.host.clone();
        let parameters = || {
            TlsParameters::new(host.clone())
                .map_err(|e| MailError::Config(format!("email.host {host:?}: {e}")))
        };
        let tls = match config.tls {
            Tls::None => SmtpTls::None,
            Tls::Starttls => SmtpTls::Required(parameters()?),
            Tls::Tls => SmtpTls::Wrapper(parameters()?),
        };
        let credentials = match (&config.username, &config.password) {
            (Some(user), Some(password)) => Some(Credentials::new(user.clone(), password.clone())),
            _ => None,
        };
        Ok(Self {
            port: config.port(),
            host,
            tls,
            hello: ClientId::default(),
            credentials,
            timeout: config.timeout.0,
        })
    }

    /// Connects, says EHLO, upgrades with STARTTLS when asked, and authenticates.
    ///
    /// Plain and STARTTLS connections are opened here with TCP_NODELAY: lettre writes the
    /// message and the final `.` in two writes, and without it the second waits for the
    /// server to acknowledge the first, which servers delay by up to 40 ms (measured: 44 ms
    /// per message, 23 messages per second per connection). Implicit TLS goes through
    /// lettre's own connect, which cannot take a socket of ours.
    async fn open(&self) -> Result<AsyncSmtpConnection, SendError> {
        let mut conn = match &self.tls {
            SmtpTls::Wrapper(parameters) => {
                AsyncSmtpConnection::connect_tokio1(
                    (self.host.as_str(), self.port),
                    Some(self.timeout),
                    &self.hello,
                    Some(parameters.clone()),
                    None,
                )
                .await?
            }
            _ => {
                let connect = tokio::net::TcpStream::connect((self.host.as_str(), self.port));
                let stream = match tokio::time::timeout(self.timeout, connect).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return Err(SendError::Connect(e.to_string())),
                    Err(_) => return Err(SendError::Connect("connection timed out".into())),
                };
                // Only a latency hint: a socket that refuses it still works.
                let _ = stream.set_nodelay(true);
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello).await?
            }
        };
        if let SmtpTls::Required(parameters) = &self.tls {
            conn.starttls(parameters.clone(), &self.hello).await?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        Ok(conn)
    }
}

/// Why a message did not go through.
#[derive(Debug)]
enum SendError {
    /// What lettre reported: a reply code, a broken connection, TLS.
    Smtp(lettre::transport::smtp::Error),
    /// The TCP connection could not be opened.
    Connect(String),
}

impl SendError {
    fn is_permanent(&self) -> bool {
        matches!(self, SendError::Smtp(e) if e.is_permanent())
    }
}

impl From<lettre::transport::smtp::Error> for SendError {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        SendError::Smtp(e)
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Smtp(e) => e.fmt(f),
            SendError::Connect(problem) => write!(f, "cannot connect: {problem}"),
        }
    }
}

/// A connection back in the pool, and since when.
struct Parked {
    conn: AsyncSmtpConnection,
    since: Instant,
}

/// A pooled connection for one message, and whether it was reused without a NOOP.
struct Checkout {
    conn: AsyncSmtpConnection,
    unprobed: bool,
}

/// A pooled, rate-limited SMTP sender shared by every email stage of the process.
pub struct Mailer {
    session: Session,
    probe_after: Duration,
    idle_limit: Duration,
    /// Connections between messages; at most `pool_size`, as many as messages in flight.
    idle: std::sync::Mutex<Vec<Parked>>,
    limiter: governor::DefaultDirectRateLimiter,
    /// The envelope sender (the address of `email.from`).
    sender: Address,
    composer: Composer,
    /// Messages in flight over the whole process, at most the pool size, so batches that
    /// run at once share the pooled connections instead of opening more.
    in_flight: tokio::sync::Semaphore,
}

impl Mailer {
    /// Prepares the sender (no connection is made until the first send).
    pub fn new(config: &Email) -> Result<Self, MailError> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| MailError::Config(format!("email.from: {e}")))?;
        // Evenly spaced sends, with a burst of a tenth of a second's worth so that timer
        // overshoot on each wait is caught up instead of lost (a burst of one runs ~5% slow).
        let rate = NonZeroU32::new(config.rate_per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.rate_per_minute / 600).unwrap_or(NonZeroU32::MIN);
        let limiter =
            governor::RateLimiter::direct(governor::Quota::per_minute(rate).allow_burst(burst));
        Ok(Self {
            session: Session::new(config)?,
            probe_after: PROBE_AFTER,
            idle_limit: IDLE_LIMIT,
            idle: std::sync::Mutex::new(Vec::with_capacity(config.pool_size as usize)),
            limiter,
            composer: Composer::new(&from),
            sender: from.email,
            in_flight: tokio::sync::Semaphore::new(config.pool_size as usize),
        })
    }

    /// Changes when a parked connection is probed with NOOP and when it is closed instead
    /// (by default [`PROBE_AFTER`] and [`IDLE_LIMIT`]).
    pub fn with_idle_rules(mut self, probe_after: Duration, idle_limit: Duration) -> Self {
        self.probe_after = probe_after;
        self.idle_limit = idle_limit;
        self
    }

    fn parked(&self) -> std::sync::MutexGuard<'_, Vec<Parked>> {
        match self.idle.lock() {
            Ok(idle) => idle,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The most recently used live connection, or a new one.
    async fn checkout(&self) -> Result<Checkout, SendError> {
        loop {
            let Some(Parked { mut conn, since }) = self.parked().pop() else {
                let conn = self.session.open().await?;
                return Ok(Checkout {
                    conn,
                    unprobed: false,
                });
            };
            let idle = since.elapsed();
            if idle > self.idle_limit {
                // Closed without QUIT: a server that went away would hold the send until the timeout.
                drop(conn);
            } else if idle <= self.probe_after {
                return Ok(Checkout {
                    conn,
                    unprobed: true,
                });
            } else if conn.test_connected().await {
                return Ok(Checkout {
                    conn,
                    unprobed: false,
                });
            }
        }
    }

    fn checkin(&self, conn: AsyncSmtpConnection) {
        // lettre marks a connection broken after any failed command.
        if !conn.has_broken() {
            self.parked().push(Parked {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// One message over a pooled connection. A connection reused without a NOOP that breaks,
    /// or answers 421 (closing), may have been closed by the server while idle: the message
    /// goes once more over a new connection (at most once, as a driver retry would; nothing
    /// was accepted on the failed one unless its last reply was lost). Other replies, such
    /// as a 451 "try later", go to the driver's retry schedule.
    async fn deliver(&self, envelope: &Envelope, bytes: &[u8]) -> Result<Response, SendError> {
        let Checkout { mut conn, unprobed } = self.checkout().await?;
        let sent = match conn.send(envelope, bytes).await {
            Err(e) if unprobed && closed_while_idle(&e) => {
                conn = self.session.open().await?;
                conn.send(envelope, bytes).await
            }
            sent => sent,
        };
        // lettre marks a connection broken when a command failed on it; those are not parked.
        self.checkin(conn);
        Ok(sent?)
    }

    /// Opens a connection and says hello (`check --connect`).
    pub async fn test_connection(&self) -> Result<(), MailError> {
        let unreachable = |problem: String| MailError::Unreachable {
            server: format!("{}:{}", self.session.host, self.session.port),
            problem,
        };
        let probe = async {
            let mut conn = self.session.open().await?;
            let alive = conn.test_connected().await;
            let _ = conn.quit().await;
            Ok::<_, SendError>(alive)
        };
        match tokio::time::timeout(self.session.timeout, probe).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(unreachable("the server did not answer NOOP".into())),
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Err(_) => Err(unreachable(format!(
                "no answer within {}",
                crate::config::HumanDuration(self.session.timeout)
            ))),
        }
    }

    /// Sends one message to `to`, waiting for the rate limit first. `key` names it in its
    /// Message-ID, `<lethe.{key}@{sender domain}>`, traceable without naming the recipient
    /// and the same when the message is sent again (mail clients fold such copies).
    pub async fn send(&self, to: Option<&str>, rendered: &Rendered, key: &str) -> Delivery {
        let Some(to) = to.map(str::trim).filter(|t| !t.is_empty()) else {
            return Delivery::Permanent("no email address".into());
        };
        let Some(address) = to
            .parse::<Address>()
            .ok()
            .or_else(|| to.parse::<Mailbox>().ok().map(|m| m.email))
        else {
            return Delivery::Permanent("invalid email address".into());
        };
        let key: String = key
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
                _ => '-',
            })
            .collect();
        let message_id = format!("<lethe.{key}@{}>", self.sender.domain());
        let boundary = format!("{:016x}{:016x}", rand_u64(), rand_u64());
        let bytes = self.composer.compose(&Parts {
            to: &address,
            subject: &rendered.subject,
            text: &rendered.text,
            html: &rendered.html,
            message_id: &message_id,
            boundary: &boundary,
            date: std::time::SystemTime::now(),
        });
        let envelope = match Envelope::new(Some(self.sender.clone()), vec![address]) {
            Ok(envelope) => envelope,
            Err(e) => return Delivery::Permanent(format!("cannot address the message: {e}")),
        };
        let Ok(_slot) = self.in_flight.acquire().await else {
            return Delivery::Transient("the mailer is shutting down".into());
        };
        self.limiter.until_ready().await;
        // lettre bounds the connect and each command; the whole send is bounded here. A
        // connection that timed out is dropped with the send, never parked.
        match tokio::time::timeout(self.session.timeout, self.deliver(&envelope, &bytes)).await {
            Err(_) => Delivery::Transient(format!(
                "smtp: no answer within {}",
                crate::config::HumanDuration(self.session.timeout)
            )),
            Ok(Ok(response)) => Delivery::Accepted {
                message_id,
                reply: without_address(
                    &format!(
                        "{} {}",
                        response.code(),
                        response.message().collect::<Vec<_>>().join(" ")
                    ),
                    to,
                ),
            },
            Ok(Err(e)) if e.is_permanent() => {
                Delivery::Permanent(without_address(&format!("smtp: {e}"), to))
            }
            Ok(Err(e)) => Delivery::Transient(without_address(&format!("smtp: {e}"), to)),
        }
    }
}

/// A broken connection (no reply at all) or a 421 "service closing".
fn closed_while_idle(e: &lettre::transport::smtp::Error) -> bool {
    match e.status() {
        Some(code) => u16::from(code) == 421,
        None => !e.is_client(),
    }
}

/// Servers often echo the recipient (`<ann@example.org>: Recipient address rejected`);
/// replies go into events, which outlive the address, so it is cut out (invariant 8).
fn without_address(text: &str, address: &str) -> String {
    let lower_text = text.to_lowercase();
    let lower_address = address.to_lowercase();
    if lower_address.is_empty() || lower_text.len() != text.len() {
        return text.replace(address, "<recipient>");
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    for (at, _) in lower_text.match_indices(&lower_address) {
        out.push_str(&text[rest..at]);
        out.push_str("<recipient>");
        rest = at + address.len();
    }
    out.push_str(&text[rest..]);
    out
}

/// Process-local randomness for Message-IDs (uniqueness, not secrecy).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn replies_lose_the_recipient_address() {
        assert_eq!(
            super::without_address(
                "smtp: permanent error (550): 5.1.1 <Ann@Example.org>: Recipient address rejected",
                "ann@example.org"
            ),
            "smtp: permanent error (550): 5.1.1 <<recipient>>: Recipient address rejected"
        );
    }
}
