//! `[api]` and `[[api_key]]`: where the REST API listens and who may call it. Keys are
//! stored as their SHA-256 only; `lethe key new` prints a key once with its config line.

use super::{ConfigError, invalid};
use serde::Deserialize;

/// What a key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Reads and acts (resume, abort, enqueue).
    Operator,
    /// Reads, never writes.
    Auditor,
    /// A downstream service: sees and acknowledges its own service only.
    Service(String),
}

impl Scope {
    /// Parses `operator`, `auditor` or `service:NAME`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "operator" => Some(Scope::Operator),
            "auditor" => Some(Scope::Auditor),
            _ => text
                .strip_prefix("service:")
                .filter(|name| !name.is_empty())
                .map(|name| Scope::Service(name.to_string())),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Operator => f.write_str("operator"),
            Scope::Auditor => f.write_str("auditor"),
            Scope::Service(name) => write!(f, "service:{name}"),
        }
    }
}

/// One API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Who it is: the actor of every write made with it (`api:NAME`).
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// SHA-256 of the key, 32 bytes.
    pub sha256: [u8; 32],
}

impl ApiKey {
    /// The key among `keys` whose SHA-256 is that of `given`; every key is compared in
    /// constant time, so the time taken does not say which one nearly matched.
    pub fn matching<'a>(keys: &'a [ApiKey], given: &str) -> Option<&'a ApiKey> {
        use sha2::Digest;
        use subtle::ConstantTimeEq;
        let hash: [u8; 32] = sha2::Sha256::digest(given.trim().as_bytes()).into();
        let mut found = None;
        for key in keys {
            if bool::from(key.sha256.ct_eq(&hash)) {
                found = Some(key);
            }
        }
        found
    }
}

/// The API's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    /// Whether pipeline.toml has an `[api]` section (`lethe run` then serves the API).
    pub configured: bool,
    /// `host:port` to listen on.
    pub listen: String,
    /// The keys.
    pub keys: Vec<ApiKey>,
    /// The `whsec_` secret `POST /v1/activity` verifies Standard Webhooks signatures with,
    /// from `LETHE_API_WEBHOOK_SECRET`.
    pub webhook_secret: Option<super::Secret>,
    /// The secret of a WorkOS webhook endpoint feeding `POST /v1/activity`, from
    /// `LETHE_API_WORKOS_SECRET`.
    pub workos_secret: Option<super::Secret>,
    /// How long a console session lasts after sign-in (`[api] session_ttl`, default 8h).
    pub session_ttl: std::time::Duration,
    /// The secret console session cookies are signed with, from `LETHE_CONSOLE_SECRET`
    /// (without it, a random one per process: sessions end when it restarts).
    pub console_secret: Option<super::Secret>,
}

/// The environment variable of the activity webhook's Standard Webhooks secret.
pub const API_WEBHOOK_SECRET_ENV: &str = "LETHE_API_WEBHOOK_SECRET";
/// The environment variable of the WorkOS endpoint's secret.
pub const API_WORKOS_SECRET_ENV: &str = "LETHE_API_WORKOS_SECRET";
/// The environment variable of the secret console sessions are signed with.
pub const CONSOLE_SECRET_ENV: &str = "LETHE_CONSOLE_SECRET";
/// The longest console session `[api] session_ttl` may ask for.
pub const MAX_SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 86400);
/// How long a console session lasts unless `[api] session_ttl` says otherwise.
pub const DEFAULT_SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(8 * 3600);

impl Api {
    /// Takes the activity webhooks' secrets from the environment.
    pub(crate) fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        self.webhook_secret = super::http::secret(env, API_WEBHOOK_SECRET_ENV);
        self.workos_secret = super::http::secret(env, API_WORKOS_SECRET_ENV);
        self.console_secret = super::http::secret(env, CONSOLE_SECRET_ENV);
    }
}

/// Where the API listens unless `[api] listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8100";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ApiSection {
    listen: Option<String>,
    session_ttl: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApiKeySection {
    name: String,
    scope: String,
    sha256: String,
}

/// Validates `[api]` and `[[api_key]]`; `services` are the `[[service]]` names a
/// service scope may name.
pub(super) fn parse_api(
    file: &str,
    section: Option<ApiSection>,
    keys: Vec<ApiKeySection>,
    services: &[String],
) -> Result<Api, ConfigError> {
    let configured = section.is_some();
    let section = section.unwrap_or_default();
    let session_ttl = match &section.session_ttl {
        None => DEFAULT_SESSION_TTL,
        Some(text) => match super::duration::parse_duration(text) {
            Ok(ttl) if ttl >= std::time::Duration::from_secs(60) && ttl <= MAX_SESSION_TTL => ttl,
            Ok(_) => {
                return Err(invalid(
                    file,
                    "api.session_ttl",
                    Some(text),
                    "a console session lasts from 1m to 30d",
                ));
            }
            Err(why) => return Err(invalid(file, "api.session_ttl", Some(text), why)),
        },
    };
    let listen = section.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    if listen.parse::<std::net::SocketAddr>().is_err() {
        return Err(invalid(
            file,
            "api.listen",
            Some(&listen),
            "expected an address and port, e.g. 127.0.0.1:8100 or 0.0.0.0:8100",
        ));
    }
    let mut parsed: Vec<ApiKey> = Vec::with_capacity(keys.len());
    for (i, key) in keys.into_iter().enumerate() {
        let at = |k: &str| format!("api_key[{}].{k}", i + 1);
        if key.name.is_empty() || parsed.iter().any(|k| k.name == key.name) {
            return Err(invalid(
                file,
                at("name"),
                Some(&key.name),
                "names are unique and not empty",
            ));
        }
        let scope = Scope::parse(&key.scope).ok_or_else(|| {
            invalid(
                file,
                at("scope"),
                Some(&key.scope),
                "expected operator, auditor or service:NAME",
            )
        })?;
        if let Scope::Service(name) = &scope
            && !services.contains(name)
        {
            return Err(invalid(
                file,
                at("scope"),
                Some(&key.scope),
                format!(
                    "no [[service]] is named {name} (declared: {})",
                    services.join(", ")
                ),
            ));
        }
        let sha256 = parse_hex32(&key.sha256).ok_or_else(|| {
            invalid(
                file,
                at("sha256"),
                None,
                "expected the 64 hex digits `lethe key new` prints (the key's SHA-256, never the key)",
            )
        })?;
        if parsed.iter().any(|k| k.sha256 == sha256) {
            return Err(invalid(
                file,
                at("sha256"),
                None,
                "two keys have the same hash",
            ));
        }
        parsed.push(ApiKey {
            name: key.name,
            scope,
            sha256,
        });
    }
    Ok(Api {
        configured,
        listen,
        keys: parsed,
        webhook_secret: None,
        workos_secret: None,
        session_ttl,
        console_secret: None,
    })
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_hashes_parse() {
        assert_eq!(Scope::parse("operator"), Some(Scope::Operator));
        assert_eq!(
            Scope::parse("service:joanie"),
            Some(Scope::Service("joanie".into()))
        );
        assert_eq!(Scope::parse("service:"), None);
        assert_eq!(Scope::parse("admin"), None);
        assert_eq!(Scope::Service("a".into()).to_string(), "service:a");
        assert_eq!(parse_hex32(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(parse_hex32("abc"), None);
        assert_eq!(parse_hex32(&"zz".repeat(32)), None);
    }
}
