//! Logging setup: `tracing` with structured fields, human or JSON.

use std::io::IsTerminal;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// Installs the global subscriber. `LETHE_LOG` (e.g. `info` or `lethe=debug,sqlx=warn`)
/// sets levels, else `default` (sqlx at warn at most); `json` switches to one JSON object
/// per line. Logs go to stderr.
pub fn init(json: bool, default: tracing::Level) {
    let filter = std::env::var("LETHE_LOG")
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| {
            Targets::new()
                .with_default(default)
                .with_target("sqlx", tracing::Level::WARN.min(default))
        });
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init()
    };
    // A second init (tests, embedded use) keeps the first subscriber.
    let _ = result;
}
