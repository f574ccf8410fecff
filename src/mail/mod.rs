//! Sending email: a pooled lettre SMTP transport, a process-wide rate limit, a timeout on
//! every send, and SMTP replies sorted into accepted, transient and permanent.

pub mod template;

pub use template::{Rendered, TemplateError, Templates, Vars};

use crate::config::{Email, Tls};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

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

type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// A pooled, rate-limited SMTP sender shared by every email stage of the process.
pub struct Mailer {
    /// Replaced whole after a send times out: the pool may hold the stalled connection.
    transport: std::sync::RwLock<Arc<Transport>>,
    config: Email,
    limiter: governor::DefaultDirectRateLimiter,
    from: Mailbox,
    domain: String,
    timeout: Duration,
    server: String,
    /// Messages in flight over the whole process, at most the pool size, so batches that
    /// run at once share the pooled connections instead of opening more.
    in_flight: tokio::sync::Semaphore,
}

impl Mailer {
    /// Builds the transport (no connection is made until the first send).
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
            transport: std::sync::RwLock::new(Arc::new(Self::transport(config)?)),
            config: config.clone(),
            limiter,
            domain: from.email.domain().to_string(),
            from,
            timeout: config.timeout.0,
            server: format!("{}:{}", config.host, config.port()),
            in_flight: tokio::sync::Semaphore::new(config.pool_size as usize),
        })
    }

    fn transport(config: &Email) -> Result<Transport, MailError> {
        let host = config.host.as_str();
        let builder = match config.tls {
            Tls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            Tls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|e| MailError::Config(format!("email.host {host:?}: {e}")))?,
            Tls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                .map_err(|e| MailError::Config(format!("email.host {host:?}: {e}")))?,
        };
        let mut builder = builder
            .port(config.port())
            .timeout(Some(config.timeout.0))
            .pool_config(PoolConfig::new().max_size(config.pool_size));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(builder.build())
    }

    fn current(&self) -> Arc<Transport> {
        match self.transport.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Drops the pool (and whatever stalled connection it holds) for a fresh one.
    fn renew(&self, stale: &Arc<Transport>) {
        let Ok(fresh) = Self::transport(&self.config) else {
            return;
        };
        let mut slot = match self.transport.write() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Another send may have renewed it already.
        if Arc::ptr_eq(&slot, stale) {
            *slot = Arc::new(fresh);
        }
    }

    /// Opens a connection and says hello (`check --connect`).
    pub async fn test_connection(&self) -> Result<(), MailError> {
        let unreachable = |problem: String| MailError::Unreachable {
            server: self.server.clone(),
            problem,
        };
        match tokio::time::timeout(self.timeout, self.current().test_connection()).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(unreachable("the server did not answer NOOP".into())),
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Err(_) => Err(unreachable(format!(
                "no answer within {}",
                crate::config::HumanDuration(self.timeout)
            ))),
        }
    }

    /// Sends one message to `to`, waiting for the rate limit first. `key` makes the
    /// Message-ID unique and traceable without naming the recipient.
    pub async fn send(&self, to: Option<&str>, rendered: &Rendered, key: &str) -> Delivery {
        let Some(to) = to.map(str::trim).filter(|t| !t.is_empty()) else {
            return Delivery::Permanent("no email address".into());
        };
        let Ok(mailbox) = to.parse::<Mailbox>() else {
            return Delivery::Permanent("invalid email address".into());
        };
        let message_id = format!("<lethe.{key}.{:016x}@{}>", rand_u64(), self.domain);
        let message = Message::builder()
            .from(self.from.clone())
            .to(mailbox)
            .subject(rendered.subject.clone())
            .message_id(Some(message_id.clone()))
            .multipart(MultiPart::alternative_plain_html(
                rendered.text.clone(),
                rendered.html.clone(),
            ));
        let message = match message {
            Ok(m) => m,
            Err(e) => return Delivery::Permanent(format!("cannot build the message: {e}")),
        };
        let Ok(_slot) = self.in_flight.acquire().await else {
            return Delivery::Transient("the mailer is shutting down".into());
        };
        self.limiter.until_ready().await;
        let transport = self.current();
        // lettre bounds the connect only; the whole send is bounded here.
        match tokio::time::timeout(self.timeout, transport.send(message)).await {
            Err(_) => {
                self.renew(&transport);
                Delivery::Transient(format!(
                    "smtp: no answer within {}",
                    crate::config::HumanDuration(self.timeout)
                ))
            }
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
