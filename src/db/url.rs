//! Which database a URL names, and how to show a URL without its password.

/// Which database a store URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL: production, shared by several daemons.
    Postgres,
    /// SQLite: the embedded single-daemon default.
    Sqlite,
}

impl Backend {
    /// Recognises `postgres://`, `postgresql://` and `sqlite:` URLs.
    pub fn from_url(url: &str) -> Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            Err("unsupported store URL (allowed: postgres://…, postgresql://…, sqlite://FILE, sqlite::memory:)".into())
        }
    }
}

/// A URL with any password replaced, fit for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_backend_and_hide_passwords() {
        assert_eq!(Backend::from_url("postgres://h/db"), Ok(Backend::Postgres));
        assert_eq!(Backend::from_url("sqlite://lethe.db"), Ok(Backend::Sqlite));
        assert!(
            Backend::from_url("mysql://h/db")
                .unwrap_err()
                .contains("allowed")
        );
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
