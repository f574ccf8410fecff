//! Who calls: an API key from `X-API-Key` (Mork's header) or `Authorization: Bearer`,
//! matched by its SHA-256 in constant time against every `[[api_key]]`.

use super::error::ApiError;
use crate::config::{ApiKey, Scope};
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

/// The key a request was made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's name.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
}

impl Caller {
    /// The actor recorded on the events this caller's writes make.
    pub fn actor(&self) -> String {
        format!("api:{}", self.name)
    }

    /// Whether it may read retirements (operators and auditors).
    pub fn reads_all(&self) -> bool {
        matches!(self.scope, Scope::Operator | Scope::Auditor)
    }

    /// The service a service key speaks for.
    pub fn service(&self) -> Option<&str> {
        match &self.scope {
            Scope::Service(name) => Some(name),
            _ => None,
        }
    }
}

/// The caller `headers` authenticate, among `keys`; 401 otherwise.
pub fn authenticate(headers: &HeaderMap, keys: &[ApiKey]) -> Result<Caller, ApiError> {
    let given = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string)
        })
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(ApiError::unauthorized)?;
    ApiKey::matching(keys, &given)
        .map(|key| Caller {
            name: key.name.clone(),
            scope: key.scope.clone(),
        })
        .ok_or_else(ApiError::unauthorized)
}

/// A fresh random key (two v4 UUIDs: 244 random bits) and its SHA-256 in hex.
pub fn new_key() -> (String, String) {
    let key = format!(
        "lethe_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let hash = Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (key, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_found_by_its_hash_from_either_header() {
        let (key, hash) = new_key();
        assert!(key.starts_with("lethe_") && key.len() == 70);
        let sha256 = crate::config::Scope::parse("auditor").map(|scope| ApiKey {
            name: "dpo".into(),
            scope,
            sha256: std::array::from_fn(|i| {
                u8::from_str_radix(&hash[2 * i..2 * i + 2], 16).unwrap()
            }),
        });
        let keys = vec![sha256.unwrap()];
        let mut headers = HeaderMap::new();
        assert_eq!(authenticate(&headers, &keys).unwrap_err().status, 401);
        headers.insert("x-api-key", key.parse().unwrap());
        assert_eq!(authenticate(&headers, &keys).unwrap().name, "dpo");
        let mut bearer = HeaderMap::new();
        bearer.insert("authorization", format!("Bearer {key}").parse().unwrap());
        assert_eq!(authenticate(&bearer, &keys).unwrap().actor(), "api:dpo");
        bearer.insert("authorization", "Bearer nope".parse().unwrap());
        assert_eq!(authenticate(&bearer, &keys).unwrap_err().status, 401);
    }
}
