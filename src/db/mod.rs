//! Databases, below every floor that talks to one: which engine a URL names
//! ([`Dialect`], [`Backend`]), how to quote for it, how to show a URL without its password,
//! and opening a pool so that an unreachable database fails at once with its own error.
//!
//! sqlx's pool retries a refused connection until its acquire timeout (30 s by default)
//! and then reports only "pool timed out while waiting for an open connection". One
//! direct connection first, bounded by [`CONNECT_TIMEOUT`], reports "connection refused",
//! an unknown host or a rejected password within seconds.

mod dialect;
mod url;

pub use dialect::Dialect;
pub use url::{Backend, redact_url};

use sqlx::{ConnectOptions, Connection};
use std::time::Duration;

/// How long the first, direct connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects once directly to a MySQL/MariaDB or PostgreSQL `url` and closes the
/// connection: the driver's own error, or a timeout after [`CONNECT_TIMEOUT`], before a
/// pool would retry it for its whole acquire timeout. SQLite (a file) needs no probe.
pub async fn probe(url: &str) -> Result<(), sqlx::Error> {
    if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        probe_with(url.parse::<sqlx::mysql::MySqlConnectOptions>()?).await
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        probe_with(url.parse::<sqlx::postgres::PgConnectOptions>()?).await
    } else {
        Ok(())
    }
}

async fn probe_with<O>(options: O) -> Result<(), sqlx::Error>
where
    O: ConnectOptions,
    O::Connection: Sized,
{
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
        .await
        .map_err(|_| {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no answer within {} s (is the host reachable?)",
                    CONNECT_TIMEOUT.as_secs()
                ),
            ))
        })??;
    // The pool opens its own; failing to say goodbye is no reason to fail.
    let _ = connection.close().await;
    Ok(())
}

/// An error and its causes in one line, each cause once: a cause whose text the line
/// already holds (an error that prints its source, as most do) is not repeated.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = anyhow::Error::from(sqlx::Error::Io(io)).context("cannot open: refused here");
        let line = super::chain(e.as_ref());
        assert_eq!(line.matches("refused").count(), 2, "{line}");
        assert!(line.starts_with("cannot open: refused here"), "{line}");
    }
}
