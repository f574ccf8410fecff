//! Keyed hashes that let an auditor find a retirement after its PII was erased.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The environment variable that holds the hash key.
pub const HASH_KEY_ENV: &str = "LETHE_HASH_KEY";

/// Minimum key length, so that a short guessable key is refused.
const MIN_KEY_LEN: usize = 16;

/// HMAC-SHA256 key for subject and email hashes. Its Debug never shows the key.
#[derive(Clone)]
pub struct HashKey {
    /// The MAC with the key already absorbed: each hash clones it instead of redoing the
    /// key schedule (a scan hashes every candidate).
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(..)")
    }
}

/// Why no usable hash key is available.
#[derive(Debug, thiserror::Error)]
pub enum HashKeyError {
    /// The variable is not set.
    #[error(
        "{HASH_KEY_ENV} is not set: set it to a secret of at least {MIN_KEY_LEN} characters (it keys the audit hashes that outlive erased emails; keep it stable)"
    )]
    Missing,
    /// The key is too short.
    #[error("{HASH_KEY_ENV} is too short ({0} bytes): use at least {MIN_KEY_LEN}")]
    TooShort(usize),
}

impl crate::error::Classified for HashKeyError {
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::Config
    }
}

impl HashKey {
    /// A key from raw bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, HashKeyError> {
        let bytes = bytes.into();
        if bytes.len() < MIN_KEY_LEN {
            return Err(HashKeyError::TooShort(bytes.len()));
        }
        let Ok(keyed) = Hmac::<Sha256>::new_from_slice(&bytes) else {
            unreachable!("HMAC accepts keys of any length")
        };
        Ok(Self { keyed })
    }

    /// The key from `LETHE_HASH_KEY`.
    pub fn from_env() -> Result<Self, HashKeyError> {
        match std::env::var(HASH_KEY_ENV) {
            Ok(value) if !value.is_empty() => Self::new(value.into_bytes()),
            _ => Err(HashKeyError::Missing),
        }
    }

    fn hash(&self, domain: &str, value: &str) -> String {
        let mut mac = self.keyed.clone();
        mac.update(domain.as_bytes());
        mac.update(b":");
        mac.update(value.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// Hash of a subject id.
    pub fn subject(&self, subject: &str) -> String {
        self.hash("subject", subject.trim())
    }

    /// Hash of an email address, case-insensitive.
    pub fn email(&self, email: &str) -> String {
        self.hash("email", &email.trim().to_lowercase())
    }
}

/// Lower-case hex, without a `format!` per byte (scans hash a hundred thousand subjects).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_keyed_stable_and_domain_separated() {
        let k1 = HashKey::new("0123456789abcdef").unwrap();
        let k2 = HashKey::new("fedcba9876543210").unwrap();
        assert_eq!(k1.subject("42"), k1.subject(" 42 "));
        assert_ne!(k1.subject("42"), k2.subject("42"));
        assert_ne!(k1.subject("a@b.c"), k1.email("a@b.c"));
        assert_eq!(k1.email("A@B.c"), k1.email("a@b.C"));
        assert_eq!(k1.subject("42").len(), 64);
        // HMAC-SHA256(key, "domain:value"), as stored by every release (checked with Python's hmac).
        assert_eq!(
            k1.subject("42"),
            "e69121f300729e89cb8460323cbeb84c4215f008d4fc38b44e19d951bf95ec95"
        );
        assert_eq!(
            k1.email("A@b.c"),
            "bcf3865b2dd062816de87ef899758fe7694528c3261c4f5af02a5f30eaee1d75"
        );
    }

    #[test]
    fn hex_is_lower_case_two_digits_a_byte() {
        // Stored hashes were written with `{:02x}` per byte: the encoding must not change.
        let bytes = [0x00, 0x0f, 0xa5, 0xff, 0x10];
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&bytes), expected);
        assert_eq!(hex(&bytes), "000fa5ff10");
    }

    #[test]
    fn short_keys_are_refused_and_debug_hides_the_key() {
        assert!(matches!(
            HashKey::new("short"),
            Err(HashKeyError::TooShort(5))
        ));
        let k = HashKey::new("0123456789abcdef").unwrap();
        assert!(!format!("{k:?}").contains("0123"));
    }
}
