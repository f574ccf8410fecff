//! Why a retirement was opened.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Why a retirement was opened: `inactive` (found by the scan) or `requested` (asked by
/// the user, through an operator). The notice rules depend on it: a requested deletion
/// needs no warning and no grace period, and activity does not hold it back.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Reason(Cow<'static, str>);

impl Reason {
    /// Inactive for longer than the policy allows (the scan's reason).
    pub const INACTIVE: Reason = Reason(Cow::Borrowed("inactive"));
    /// The user asked for the deletion.
    pub const REQUESTED: Reason = Reason(Cow::Borrowed("requested"));
    /// Every reason an operator may give.
    pub const KNOWN: &'static [Reason] = &[Reason::INACTIVE, Reason::REQUESTED];

    /// A known reason by name, or `None`.
    pub fn parse(name: &str) -> Option<Reason> {
        Self::KNOWN.iter().find(|r| r.as_str() == name).cloned()
    }

    /// A reason as stored (read back from a store, whatever it holds).
    pub fn stored(name: String) -> Reason {
        Reason(Cow::Owned(name))
    }

    /// The name, as stored and printed.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the user asked for the deletion (no notice owed, activity does not hold it).
    pub fn is_requested(&self) -> bool {
        *self == Reason::REQUESTED
    }

    /// The known names, comma-separated, for messages.
    pub fn known_names() -> String {
        Self::KNOWN
            .iter()
            .map(Reason::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl From<&'static str> for Reason {
    fn from(name: &'static str) -> Self {
        Reason(Cow::Borrowed(name))
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_reasons_parse_and_others_do_not() {
        assert_eq!(Reason::parse("requested"), Some(Reason::REQUESTED));
        assert!(Reason::parse("requested").is_some_and(|r| r.is_requested()));
        assert!(!Reason::INACTIVE.is_requested());
        assert_eq!(Reason::parse("bored"), None);
        assert!(Reason::stored("requested".into()).is_requested());
        assert_eq!(Reason::known_names(), "inactive, requested");
        assert_eq!(
            serde_json::to_string(&Reason::INACTIVE).ok().as_deref(),
            Some("\"inactive\"")
        );
    }
}
