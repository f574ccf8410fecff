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
    redact_query(&redact_userinfo(url))
}

/// A `password=` (or `sslpassword=`) query parameter, as PostgreSQL and MySQL URLs allow.
fn redact_query(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if name.to_ascii_lowercase().ends_with("password") => {
                format!("{name}=***")
            }
            _ => param.to_string(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

fn redact_userinfo(url: &str) -> String {
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
    fn passwords_in_the_query_are_hidden_too() {
        assert_eq!(
            redact_url("postgres://u@h/db?sslmode=require&password=s3cret"),
            "postgres://u@h/db?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("mysql://u:p@h/db?Password=x"),
            "mysql://u:***@h/db?Password=***"
        );
        assert_eq!(
            redact_url("sqlite://a.db?mode=rwc"),
            "sqlite://a.db?mode=rwc"
        );
    }

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
