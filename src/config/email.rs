//! `[email]`: the SMTP server, the sender, the rate limit and the template variables.

use super::{ConfigError, HumanDuration, invalid};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Environment variables that hold what must not be in files.
pub const SMTP_HOST_ENV: &str = "LETHE_SMTP_HOST";
/// SMTP user name.
pub const SMTP_USERNAME_ENV: &str = "LETHE_SMTP_USERNAME";
/// SMTP password.
pub const SMTP_PASSWORD_ENV: &str = "LETHE_SMTP_PASSWORD";

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    /// Plain text (a relay on localhost).
    None,
    /// Plain connection upgraded with STARTTLS, required.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// What a permanent refusal (5xx, invalid address) does to a retirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Undeliverable {
    /// The retirement goes to the errored state for an operator.
    Error,
    /// The pipeline goes on without a delivered notice; the event says so.
    Proceed,
}

/// The validated `[email]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Email {
    /// SMTP host (`LETHE_SMTP_HOST` overrides it).
    pub host: String,
    /// SMTP port; by default 25, 587 or 465 after `tls`.
    pub port: Option<u16>,
    /// Connection security.
    pub tls: Tls,
    /// Sender, `Name <address>` or `address`.
    pub from: String,
    /// Limit on every SMTP exchange (connect, each command, the whole send).
    pub timeout: HumanDuration,
    /// Messages per minute at most, over all stages of this process.
    pub rate_per_minute: u32,
    /// Pooled SMTP connections, and messages in flight at once.
    pub pool_size: u32,
    /// The policy for permanent refusals.
    pub on_undeliverable: Undeliverable,
    /// Template directory, relative to pipeline.toml.
    pub templates: PathBuf,
    /// Locale used when a subject has none, or its locale has no template.
    pub default_locale: String,
    /// `{{ site_name }}`.
    pub site_name: String,
    /// `{{ login_url }}`.
    pub login_url: String,
    /// `{{ support_email }}`.
    pub support_email: String,
    /// From `LETHE_SMTP_USERNAME` only.
    #[serde(skip)]
    pub username: Option<String>,
    /// From `LETHE_SMTP_PASSWORD` only.
    #[serde(skip)]
    pub password: Option<String>,
}

impl Default for Email {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: None,
            tls: Tls::Starttls,
            from: String::new(),
            timeout: HumanDuration(Duration::from_secs(30)),
            rate_per_minute: 600,
            pool_size: 4,
            on_undeliverable: Undeliverable::Error,
            templates: PathBuf::from("templates"),
            default_locale: "en".into(),
            site_name: String::new(),
            login_url: String::new(),
            support_email: String::new(),
            username: None,
            password: None,
        }
    }
}

impl Email {
    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            Tls::None => 25,
            Tls::Starttls => 587,
            Tls::Tls => 465,
        })
    }

    /// Checks values.
    pub(super) fn validate(self, file: &str) -> Result<Self, ConfigError> {
        if self.host.trim().is_empty() {
            return Err(invalid(file, "email.host", Some(&self.host), "empty"));
        }
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(invalid(
                file,
                "email.from",
                Some(&self.from),
                "not an address (write \"Name <noreply@example.org>\" or \"noreply@example.org\")",
            ));
        }
        if self.rate_per_minute == 0 {
            return Err(invalid(
                file,
                "email.rate_per_minute",
                Some("0"),
                "must be at least 1",
            ));
        }
        if !(1..=100).contains(&self.pool_size) {
            return Err(invalid(
                file,
                "email.pool_size",
                None,
                format!("{} is out of range (allowed: 1 to 100)", self.pool_size),
            ));
        }
        if self.timeout.0 < Duration::from_millis(100) {
            return Err(invalid(
                file,
                "email.timeout",
                None,
                "must be at least 100ms",
            ));
        }
        Ok(self)
    }

    /// Takes the host and the credentials from the environment.
    pub(super) fn apply_env(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(host) = env(SMTP_HOST_ENV) {
            if host.trim().is_empty() {
                return Err(invalid(
                    super::ENVIRONMENT,
                    SMTP_HOST_ENV,
                    Some(&host),
                    "empty",
                ));
            }
            self.host = host;
        }
        self.username = env(SMTP_USERNAME_ENV);
        self.password = env(SMTP_PASSWORD_ENV);
        if self.username.is_some() != self.password.is_some() {
            return Err(invalid(
                super::ENVIRONMENT,
                "email",
                None,
                format!("set both {SMTP_USERNAME_ENV} and {SMTP_PASSWORD_ENV}, or neither"),
            ));
        }
        Ok(())
    }
}
