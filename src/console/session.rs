//! Console sessions: an HMAC-signed cookie naming the API key signed in with, its
//! fingerprint and an expiry; CSRF tokens derived from the session's nonce. Pure but for
//! the randomness of new nonces: the time comes from the caller.
//!
//! Invariant: the cookie holds no key and no PII; a session ends at its expiry, when its
//! key leaves pipeline.toml or changes, and when the signing secret changes.

use crate::config::{ApiKey, Scope};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "lethe_session";
/// The cookie that carries the sign-in form's nonce (before any session).
pub const SIGNIN_COOKIE: &str = "lethe_signin";

/// Who is signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The API key's name: the actor of the console's actions (`console:NAME`).
    pub name: String,
    /// Operator or auditor.
    pub scope: Scope,
    /// When it ends.
    pub expires: DateTime<Utc>,
    nonce: String,
}

impl Session {
    /// The actor recorded on the events this session's actions make.
    pub fn actor(&self) -> String {
        format!("console:{}", self.name)
    }

    /// Whether it may act (resume, abort).
    pub fn acts(&self) -> bool {
        self.scope == Scope::Operator
    }
}

/// Why a cookie does not open a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not a cookie this console signed (forged, cut, or signed by another secret).
    #[error("The session cookie is not one this console signed: sign in again")]
    Forged,
    /// Past its expiry.
    #[error("The session expired: sign in again")]
    Expired,
    /// Its key is no longer in pipeline.toml, or was replaced.
    #[error("The key this session was opened with is no longer configured: sign in again")]
    KeyGone,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    /// Key name.
    k: String,
    /// First 8 bytes of the key's SHA-256, hex: a replaced key ends its sessions.
    f: String,
    /// Expiry, Unix seconds.
    e: i64,
    /// Random, for the CSRF token.
    n: String,
}

/// Signs and checks sessions and CSRF tokens with one secret.
#[derive(Clone)]
pub struct Signer {
    secret: Vec<u8>,
}

impl Signer {
    /// A signer with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: secret.to_vec(),
        }
    }

    /// A signer with a random secret (sessions end with the process).
    pub fn random() -> Self {
        Self::new(format!("{}{}", nonce(), nonce()).as_bytes())
    }

    fn mac(&self, purpose: &str, data: &[u8]) -> Hmac<Sha256> {
        // Any length is a valid HMAC key: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(data);
        mac
    }

    fn tag(&self, purpose: &str, data: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(purpose, data).finalize().into_bytes())
    }

    fn verify(&self, purpose: &str, data: &[u8], tag: &str) -> bool {
        URL_SAFE_NO_PAD
            .decode(tag)
            .is_ok_and(|tag| self.mac(purpose, data).verify_slice(&tag).is_ok())
    }

    /// The cookie value of a new session for `key` that ends at `expires`.
    pub fn open(&self, key: &ApiKey, expires: DateTime<Utc>) -> String {
        let claims = Claims {
            k: key.name.clone(),
            f: fingerprint(key),
            e: expires.timestamp(),
            n: nonce(),
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let tag = self.tag("session", payload.as_bytes());
        format!("{payload}.{tag}")
    }

    /// The session `cookie` opens at `now`, among the configured `keys`.
    pub fn check(
        &self,
        cookie: &str,
        keys: &[ApiKey],
        now: DateTime<Utc>,
    ) -> Result<Session, Refused> {
        let (payload, tag) = cookie.split_once('.').ok_or(Refused::Forged)?;
        if !self.verify("session", payload.as_bytes(), tag) {
            return Err(Refused::Forged);
        }
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(Refused::Forged)?;
        let expires = DateTime::from_timestamp(claims.e, 0).ok_or(Refused::Forged)?;
        if expires <= now {
            return Err(Refused::Expired);
        }
        let key = keys
            .iter()
            .find(|k| k.name == claims.k && fingerprint(k) == claims.f)
            .filter(|k| !matches!(k.scope, Scope::Service(_)))
            .ok_or(Refused::KeyGone)?;
        Ok(Session {
            name: key.name.clone(),
            scope: key.scope.clone(),
            expires,
            nonce: claims.n,
        })
    }

    /// The CSRF token every form of `session` carries.
    pub fn csrf(&self, session: &Session) -> String {
        self.tag("csrf", session.nonce.as_bytes())
    }

    /// Whether `token` is `session`'s CSRF token.
    pub fn csrf_ok(&self, session: &Session, token: &str) -> bool {
        self.verify("csrf", session.nonce.as_bytes(), token)
    }

    /// A fresh sign-in nonce (its cookie) and the token its form carries.
    pub fn signin(&self) -> (String, String) {
        let nonce = nonce();
        let token = self.tag("signin", nonce.as_bytes());
        (nonce, token)
    }

    /// Whether `token` is the sign-in form's token for the nonce of its cookie.
    pub fn signin_ok(&self, nonce: &str, token: &str) -> bool {
        !nonce.is_empty() && self.verify("signin", nonce.as_bytes(), token)
    }
}

fn fingerprint(key: &ApiKey) -> String {
    key.sha256[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The value of cookie `name` among the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, scoped to `/ui`, `Secure` when the
/// console is reached over HTTPS (through a proxy that says so); `max_age` 0 clears it.
pub fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/ui; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, scope: Scope, byte: u8) -> ApiKey {
        ApiKey {
            name: name.into(),
            scope,
            sha256: [byte; 32],
        }
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn a_session_opens_until_it_expires() {
        let signer = Signer::new(b"secret");
        let keys = [key("ops", Scope::Operator, 1)];
        let cookie = signer.open(&keys[0], at(3600));
        let session = signer.check(&cookie, &keys, at(0)).unwrap();
        assert_eq!(session.actor(), "console:ops");
        assert!(session.acts());
        assert_eq!(
            signer.check(&cookie, &keys, at(3600)),
            Err(Refused::Expired)
        );
    }

    #[test]
    fn forged_cookies_and_other_secrets_are_refused() {
        let signer = Signer::new(b"secret");
        let keys = [key("dpo", Scope::Auditor, 1)];
        let cookie = signer.open(&keys[0], at(3600));
        assert_eq!(
            Signer::new(b"other").check(&cookie, &keys, at(0)),
            Err(Refused::Forged)
        );
        let (payload, tag) = cookie.split_once('.').unwrap();
        let claims = r#"{"k":"dpo","f":"0101010101010101","e":99999999999,"n":"x"}"#;
        let longer = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(claims));
        assert_eq!(signer.check(&longer, &keys, at(0)), Err(Refused::Forged));
        for bad in ["", "nodot", &format!("{payload}."), &format!(".{tag}")] {
            assert_eq!(signer.check(bad, &keys, at(0)), Err(Refused::Forged));
        }
        assert!(!signer.check(&cookie, &keys, at(0)).unwrap().acts());
    }

    #[test]
    fn a_replaced_or_removed_key_ends_its_sessions() {
        let signer = Signer::new(b"secret");
        let cookie = signer.open(&key("ops", Scope::Operator, 1), at(3600));
        let replaced = [key("ops", Scope::Operator, 2)];
        assert_eq!(
            signer.check(&cookie, &replaced, at(0)),
            Err(Refused::KeyGone)
        );
        assert_eq!(signer.check(&cookie, &[], at(0)), Err(Refused::KeyGone));
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let signer = Signer::new(b"secret");
        let keys = [key("ops", Scope::Operator, 1)];
        let one = signer
            .check(&signer.open(&keys[0], at(60)), &keys, at(0))
            .unwrap();
        let two = signer
            .check(&signer.open(&keys[0], at(60)), &keys, at(0))
            .unwrap();
        let token = signer.csrf(&one);
        assert!(signer.csrf_ok(&one, &token));
        assert!(!signer.csrf_ok(&two, &token));
        assert!(!signer.csrf_ok(&one, ""));
        let (nonce, token) = signer.signin();
        assert!(signer.signin_ok(&nonce, &token));
        assert!(!signer.signin_ok("other", &token));
        assert!(!signer.signin_ok("", &token));
    }

    #[test]
    fn cookies_are_read_from_the_header() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("cookie", "a=1; lethe_session=xyz.abc".parse().unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("xyz.abc"));
        assert_eq!(cookie(&headers, "b"), None);
        assert!(set_cookie("a", "b", 0, true).ends_with("SameSite=Strict; Secure"));
    }
}
