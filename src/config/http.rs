//! Settings of the stages that call HTTP services: the client limits every such stage has,
//! the `sarbacane` stage, and the secrets they take from the environment.

use super::HumanDuration;
use serde::Deserialize;
use std::time::Duration;

/// A secret from the environment: its `Debug` never shows it, so it cannot reach a log
/// line or an error by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret read from the environment.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one header or signature that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `LETHE_<KIND>_<NAME>_<KEY>` (or `LETHE_<KIND>_<KEY>` without a name), upper-cased with
/// non-alphanumerics as `_`: the rule every secret of a stage, target or service follows.
pub fn secret_env(kind: &str, name: Option<&str>, key: &str) -> String {
    let upper = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    match name {
        Some(name) => format!("LETHE_{}_{}_{}", upper(kind), upper(name), upper(key)),
        None => format!("LETHE_{}_{}", upper(kind), upper(key)),
    }
}

/// Reads a secret: unset or blank is `None` (the stage that needs it refuses to start,
/// naming the variable).
pub(crate) fn secret(env: &dyn Fn(&str) -> Option<String>, var: &str) -> Option<Secret> {
    env(var)
        .filter(|value| !value.trim().is_empty())
        .map(Secret::new)
}

/// The limits of one stage's HTTP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Every request, connection to last byte.
    pub timeout: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Requests started per minute, if limited.
    pub rate_per_minute: Option<u32>,
    /// Quick retries of one request (connection reset, 429, 502/503/504) before the
    /// driver's retry schedule takes over.
    pub retries: u32,
    /// The first quick retry's delay; each next one doubles it (with jitter).
    pub retry_delay: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            concurrency: 8,
            rate_per_minute: None,
            retries: 2,
            retry_delay: Duration::from_millis(250),
        }
    }
}

impl HttpLimits {
    /// Checks the limits; errors are (key, problem).
    pub(crate) fn check(&self) -> Result<(), (String, String)> {
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(600) {
            return Err(("timeout".into(), "must be between 1ms and 10m".into()));
        }
        if !(1..=1024).contains(&self.concurrency) {
            return Err(("concurrency".into(), "must be between 1 and 1024".into()));
        }
        if self.rate_per_minute == Some(0) {
            return Err(("rate_per_minute".into(), "must be at least 1".into()));
        }
        if self.retries > 10 {
            return Err(("retries".into(), "must be at most 10".into()));
        }
        if self.retry_delay > Duration::from_secs(60) {
            return Err(("retry_delay".into(), "must be at most 1m".into()));
        }
        Ok(())
    }
}

/// The account id's environment variable of a sarbacane stage.
pub const SARBACANE_ACCOUNT_ENV: &str = "LETHE_SARBACANE_ACCOUNT_ID";
/// The API key's environment variable of a sarbacane stage.
pub const SARBACANE_KEY_ENV: &str = "LETHE_SARBACANE_API_KEY";

/// Declares the settings of a stage that calls HTTP services: its own fields, then the
/// client limits every such stage has (`timeout`, `concurrency`, `rate_per_minute`,
/// `retries`, `retry_delay`) and `limits()` to read them.
macro_rules! http_stage_settings {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// See [`HttpLimits::timeout`].
            #[serde(default = "crate::config::http::default_timeout", deserialize_with = "crate::config::http::duration")]
            pub timeout: std::time::Duration,
            /// See [`HttpLimits::concurrency`].
            #[serde(default = "crate::config::http::default_concurrency")]
            pub concurrency: usize,
            /// See [`HttpLimits::rate_per_minute`].
            #[serde(default)]
            pub rate_per_minute: Option<u32>,
            /// See [`HttpLimits::retries`].
            #[serde(default = "crate::config::http::default_retries")]
            pub retries: u32,
            /// See [`HttpLimits::retry_delay`].
            #[serde(default = "crate::config::http::default_retry_delay", deserialize_with = "crate::config::http::duration")]
            pub retry_delay: std::time::Duration,
        }

        impl $name {
            /// The client limits of this stage.
            pub fn limits(&self) -> $crate::config::HttpLimits {
                $crate::config::HttpLimits {
                    timeout: self.timeout,
                    concurrency: self.concurrency,
                    rate_per_minute: self.rate_per_minute,
                    retries: self.retries,
                    retry_delay: self.retry_delay,
                }
            }
        }
    };
}

http_stage_settings! {
    /// Settings of a sarbacane stage; the account id and API key come from
    /// `LETHE_SARBACANE_ACCOUNT_ID` and `LETHE_SARBACANE_API_KEY`.
    pub struct SarbacaneSettings {
        /// The API's base URL.
        #[serde(default = "default_sarbacane_url")]
        pub url: String,
        /// How long the lists and blacklists fetched for one batch serve the next ones.
        #[serde(default = "default_lists_ttl", deserialize_with = "duration")]
        pub lists_ttl: Duration,
        /// Lists asked for per page (Sarbacane allows at most 1000).
        #[serde(default = "default_page_size")]
        pub page_size: u32,
        /// From `LETHE_SARBACANE_ACCOUNT_ID`.
        #[serde(skip)]
        pub account_id: Option<Secret>,
        /// From `LETHE_SARBACANE_API_KEY`.
        #[serde(skip)]
        pub api_key: Option<Secret>,
    }
}

http_stage_settings! {
    /// Settings of a notify stage: the `[[service]]`s that must acknowledge, and the
    /// limits of the client that posts their webhooks.
    pub struct NotifySettings {
        /// The services, by name.
        pub services: Vec<String>,
        /// How often an unacknowledged retirement is looked at again (an ack wakes it
        /// at once; this bounds the wait for a webhook that failed).
        #[serde(default = "default_recheck", deserialize_with = "duration")]
        pub recheck: Duration,
        /// lethe's API as the services reach it (`https://lethe.example.org`): webhooks
        /// then carry the URL to acknowledge at.
        #[serde(default)]
        pub ack_url: Option<String>,
    }
}

impl NotifySettings {
    /// Checks values; errors are (key, problem).
    pub(crate) fn check(&self) -> Result<(), (String, String)> {
        if self.services.is_empty() {
            return Err((
                "services".into(),
                "name at least one [[service]] that must acknowledge".into(),
            ));
        }
        if self.recheck < Duration::from_secs(1) {
            return Err(("recheck".into(), "must be at least 1s".into()));
        }
        if let Some(url) = &self.ack_url {
            check_url(url).map_err(|problem| ("ack_url".to_string(), problem))?;
        }
        self.limits().check()
    }
}

impl SarbacaneSettings {
    /// Checks values; errors are (key, problem).
    pub(crate) fn check(&self) -> Result<(), (String, String)> {
        check_url(&self.url).map_err(|problem| ("url".to_string(), problem))?;
        if !(1..=1000).contains(&self.page_size) {
            return Err(("page_size".into(), "must be between 1 and 1000".into()));
        }
        self.limits().check()
    }

    /// Takes the account id and the API key from the environment.
    pub(crate) fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        self.account_id = secret(env, SARBACANE_ACCOUNT_ENV);
        self.api_key = secret(env, SARBACANE_KEY_ENV);
    }
}

/// Checks that `text` is an absolute http(s) URL.
pub(crate) fn check_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(()),
        "http" | "https" => Err("the URL has no host".into()),
        other => Err(format!("scheme {other:?}: only http and https are allowed")),
    }
}

fn default_sarbacane_url() -> String {
    "https://sarbacaneapis.com/v1".into()
}

fn default_recheck() -> Duration {
    Duration::from_secs(3600)
}

fn default_lists_ttl() -> Duration {
    Duration::from_secs(300)
}

fn default_page_size() -> u32 {
    1000
}

pub(crate) fn default_timeout() -> Duration {
    HttpLimits::default().timeout
}

pub(crate) fn default_concurrency() -> usize {
    HttpLimits::default().concurrency
}

pub(crate) fn default_retries() -> u32 {
    HttpLimits::default().retries
}

pub(crate) fn default_retry_delay() -> Duration {
    HttpLimits::default().retry_delay
}

pub(crate) fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    HumanDuration::deserialize(d).map(|h| h.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_named_by_kind_name_and_key_and_never_shown() {
        assert_eq!(
            secret_env("http", Some("key-cloak"), "token"),
            "LETHE_HTTP_KEY_CLOAK_TOKEN"
        );
        assert_eq!(
            secret_env("sarbacane", None, "api_key"),
            "LETHE_SARBACANE_API_KEY"
        );
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
        assert_eq!(secret(&|_| Some("  ".to_string()), "LETHE_X_KEY"), None);
        assert_eq!(
            secret(&|_| Some("k".to_string()), "LETHE_X_KEY"),
            Some(Secret::new("k"))
        );
    }

    #[test]
    fn urls_and_limits_are_checked() {
        assert!(check_url("https://sarbacaneapis.com/v1").is_ok());
        assert!(check_url("ftp://x.org").unwrap_err().contains("ftp"));
        assert!(check_url("not a url").is_err());
        let limits = HttpLimits {
            concurrency: 0,
            ..HttpLimits::default()
        };
        assert_eq!(limits.check().unwrap_err().0, "concurrency");
        assert!(HttpLimits::default().check().is_ok());
    }
}
