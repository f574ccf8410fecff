//! Webhooks signed the Standard Webhooks way, so receivers verify them with the published
//! `standardwebhooks` libraries: `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "<id>.<timestamp>.<body>">`, keyed by the base64 part of a `whsec_` secret.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The secret is not a `whsec_` secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a webhook secret is `whsec_` followed by base64 (24 to 64 bytes)")]
pub struct BadSecret;

/// A signing key, from a `whsec_…` secret.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl SigningKey {
    /// Decodes `whsec_<base64>` (the prefix may be left out, as the libraries allow).
    pub fn parse(secret: &str) -> Result<Self, BadSecret> {
        let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
        let key = STANDARD.decode(encoded.trim()).map_err(|_| BadSecret)?;
        match key.len() {
            24..=64 => Ok(Self(key)),
            _ => Err(BadSecret),
        }
    }

    /// `v1,<signature>` of one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC accepts a key of any length: this cannot fail.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// Whether `signatures` (the `webhook-signature` header: `v1,<sig>` entries separated by
    /// spaces) holds this message's signature and `timestamp` is within `tolerance`
    /// seconds of `now`; compared in constant time.
    pub fn verify(
        &self,
        id: &str,
        timestamp: i64,
        body: &[u8],
        signatures: &str,
        now: i64,
        tolerance: i64,
    ) -> bool {
        use subtle::ConstantTimeEq;
        if now.abs_diff(timestamp) > tolerance.unsigned_abs() {
            return false;
        }
        let expected = self.sign(id, timestamp, body);
        signatures
            .split(' ')
            .any(|given| bool::from(given.as_bytes().ct_eq(expected.as_bytes())))
    }

    /// The three headers of a signed message.
    pub fn headers(&self, id: &str, timestamp: i64, body: &[u8]) -> [(&'static str, String); 3] {
        [
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", self.sign(id, timestamp, body)),
        ]
    }
}

/// WorkOS's webhook signature: `WorkOS-Signature: t=<unix ms>, v1=<hex HMAC-SHA256 of
/// "<t>.<body>">` keyed by the endpoint's secret as it is; `Ok` when it matches and `t` is
/// within `tolerance_ms` of `now_ms`, else why not.
pub fn verify_workos(
    secret: &str,
    header: &str,
    body: &[u8],
    now_ms: i64,
    tolerance_ms: i64,
) -> Result<(), &'static str> {
    use subtle::ConstantTimeEq;
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = Some(value.trim()),
            Some(("v1", value)) => v1 = Some(value.trim()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err("the WorkOS-Signature header is not t=…, v1=…");
    };
    let at: i64 = t
        .parse()
        .map_err(|_| "the WorkOS-Signature time is not a number")?;
    if now_ms.abs_diff(at) > tolerance_ms.unsigned_abs() {
        return Err("the WorkOS-Signature time is outside the tolerance");
    }
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    match bool::from(
        expected
            .as_bytes()
            .ct_eq(v1.to_ascii_lowercase().as_bytes()),
    ) {
        true => Ok(()),
        false => Err("the WorkOS-Signature does not match"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_test_vectors_sign_alike() {
        let key = SigningKey::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(
            key.sign(
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            key.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    fn header_min(key: &SigningKey) -> String {
        key.sign("msg_1", i64::MIN, b"{}")
    }

    #[test]
    fn signatures_verify_within_the_tolerance_and_not_tampered_with() {
        let key = SigningKey::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let signed = key.sign("msg_1", 1_000, b"{}");
        let header = format!("v1,bogus {signed}");
        assert!(key.verify("msg_1", 1_000, b"{}", &header, 1_100, 300));
        assert!(!key.verify("msg_1", 1_000, b"{ }", &header, 1_100, 300));
        assert!(!key.verify("msg_2", 1_000, b"{}", &header, 1_100, 300));
        assert!(!key.verify("msg_1", 1_000, b"{}", &header, 2_000, 300));
        // WorkOS: hex HMAC of "<t>.<body>" with the secret as it is, t in milliseconds.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"sec").unwrap();
        mac.update(b"1700000000000.{\"a\":1}");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let header = format!("t=1700000000000, v1={hex}");
        assert_eq!(
            verify_workos("sec", &header, b"{\"a\":1}", 1_700_000_060_000, 180_000),
            Ok(())
        );
        assert!(verify_workos("sec", &header, b"{\"a\":2}", 1_700_000_060_000, 180_000).is_err());
        assert!(verify_workos("sec", &header, b"{\"a\":1}", 1_700_000_300_000, 180_000).is_err());
        assert!(verify_workos("other", &header, b"{\"a\":1}", 1_700_000_060_000, 180_000).is_err());
        assert!(verify_workos("sec", "v1=abc", b"{}", 0, 180_000).is_err());
        // Extreme times are outside the tolerance, not an overflow.
        assert!(!key.verify("msg_1", i64::MIN, b"{}", &header_min(&key), i64::MAX, 300));
        let extreme = format!("t={}, v1={hex}", i64::MIN);
        assert!(verify_workos("sec", &extreme, b"{\"a\":1}", i64::MAX, 180_000).is_err());
    }

    #[test]
    fn bad_secrets_are_refused_and_keys_never_shown() {
        assert_eq!(
            SigningKey::parse("whsec_not base64!").unwrap_err(),
            BadSecret
        );
        assert_eq!(SigningKey::parse("whsec_AAAA").unwrap_err(), BadSecret);
        let key = SigningKey::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(format!("{key:?}"), "SigningKey(***)");
    }
}
