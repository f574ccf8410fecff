//! `[[service]]`: the downstream systems that delete their own copy of a retired user and
//! acknowledge it (through the API, or after a signed webhook).

use super::http::{Secret, check_url, secret, secret_env};
use super::{ConfigError, HumanDuration, invalid};
use serde::Deserialize;
use std::time::Duration;

/// A downstream service.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Its name, as notify stages, acks and the API name it.
    pub name: String,
    /// Where a signed event is posted for each retirement, if anywhere.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// How long it has to acknowledge before the retirement fails naming it.
    #[serde(default = "default_ack_deadline", deserialize_with = "duration")]
    pub ack_deadline: Duration,
    /// The webhook signing secret (`whsec_…`), from `LETHE_SERVICE_<NAME>_SECRET`.
    #[serde(skip)]
    pub secret: Option<Secret>,
}

impl Service {
    /// The environment variable of this service's webhook secret.
    pub fn secret_env(&self) -> String {
        secret_env("service", Some(&self.name), "secret")
    }

    /// Takes the webhook secret from the environment.
    pub(crate) fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        self.secret = secret(env, &self.secret_env());
    }
}

/// Checks the `[[service]]` entries: names unique and plain, URLs http(s), deadlines sane.
pub(super) fn check_services(file: &str, services: &[Service]) -> Result<(), ConfigError> {
    for (i, service) in services.iter().enumerate() {
        let at = format!("service[{}]", i + 1);
        let plain = !service.name.is_empty()
            && service
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !plain {
            return Err(invalid(
                file,
                format!("{at}.name"),
                Some(&service.name),
                "a name is letters, digits, - and _",
            ));
        }
        if services[..i].iter().any(|s| s.name == service.name) {
            return Err(invalid(
                file,
                format!("{at}.name"),
                Some(&service.name),
                "declared twice",
            ));
        }
        if let Some(other) = services[..i]
            .iter()
            .find(|s| s.secret_env() == service.secret_env())
        {
            return Err(invalid(
                file,
                format!("{at}.name"),
                Some(&service.name),
                format!(
                    "its secret would be {}, as service {}'s: rename one",
                    service.secret_env(),
                    other.name
                ),
            ));
        }
        if let Some(url) = &service.webhook_url {
            check_url(url).map_err(|problem| {
                invalid(file, format!("{at}.webhook_url"), None, problem) // not shown: it may carry a token
            })?;
        }
        if service.ack_deadline < Duration::from_secs(60) {
            return Err(invalid(
                file,
                format!("{at}.ack_deadline"),
                Some(&HumanDuration(service.ack_deadline).to_string()),
                "must be at least 1m",
            ));
        }
    }
    Ok(())
}

fn default_ack_deadline() -> Duration {
    Duration::from_secs(30 * 86_400)
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    HumanDuration::deserialize(d).map(|h| h.0)
}
