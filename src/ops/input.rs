//! Operator input, validated: subjects as keys, field lengths, times; quoted safely.

use chrono::{DateTime, NaiveDate, Utc};

/// Longest email accepted (RFC 5321's path limit).
pub const MAX_EMAIL: usize = 254;
/// Longest username accepted (Django's `auth_user.username`).
pub const MAX_USERNAME: usize = 150;
/// Characters of operator input quoted in a message at most.
const SHOWN: usize = 40;

/// Operator input quoted for a message: at most 40 characters, with the full length when cut.
pub fn shown(text: &str) -> String {
    let count = text.chars().count();
    if count <= SHOWN {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(SHOWN).collect();
        format!("{head:?}… ({count} characters)")
    }
}

/// Why a subject given by an operator is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Not a positive 64-bit integer.
    #[error(
        "{at}: {value} is not a subject: subjects are the source's integer keys (1 to 9223372036854775807)"
    )]
    NotAKey {
        /// Where: `argument 2`, `subjects.csv:7`.
        at: String,
        /// The value, quoted and truncated.
        value: String,
    },
    /// A field is longer than allowed (the value itself is never echoed: it is PII).
    #[error("{at}: the {field} is {len} characters long (at most {max})")]
    TooLong {
        /// Where.
        at: String,
        /// `email` or `username`.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a time in a format lethe reads.
    #[error("{at} {value}: expected RFC 3339 (2026-01-31T12:00:00Z) or YYYY-MM-DD")]
    NotATime {
        /// Where: `--since`, a query parameter.
        at: String,
        /// The value, quoted and truncated.
        value: String,
    },
}

impl crate::error::Classified for InputError {
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::Config
    }
}

/// A subject to open a retirement for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The source's primary key.
    pub subject: i64,
    /// Email, if given.
    pub email: Option<String>,
    /// Username, if given.
    pub username: Option<String>,
}

/// Parses a subject: digits only, positive, within i64 (`-5`, `1e3`, `1; drop table x`
/// and `99999999999999999999` are refused).
pub fn parse_subject(at: &str, raw: &str) -> Result<i64, InputError> {
    let raw = raw.trim();
    let bad = || InputError::NotAKey {
        at: at.to_string(),
        value: shown(raw),
    };
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match raw.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(bad()),
    }
}

/// Validates one line of input: the subject as a key, email and username by length.
pub fn request(
    at: &str,
    subject: &str,
    email: Option<String>,
    username: Option<String>,
) -> Result<Request, InputError> {
    let subject = parse_subject(at, subject)?;
    for (field, value, max) in [
        ("email", &email, MAX_EMAIL),
        ("username", &username, MAX_USERNAME),
    ] {
        let len = value.as_deref().map(|v| v.chars().count()).unwrap_or(0);
        if len > max {
            return Err(InputError::TooLong {
                at: at.to_string(),
                field,
                len,
                max,
            });
        }
    }
    Ok(Request {
        subject,
        email,
        username,
    })
}

/// Parses a time given as RFC 3339 or as a date (midnight UTC).
pub fn parse_time(at: &str, text: &str) -> Result<DateTime<Utc>, InputError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| InputError::NotATime {
            at: at.to_string(),
            value: shown(text),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_positive_i64_keys() {
        assert_eq!(parse_subject("a", " 42 "), Ok(42));
        assert_eq!(parse_subject("a", "007"), Ok(7));
        for bad in [
            "",
            "0",
            "-5",
            "+5",
            "1e3",
            "1; drop table x",
            "99999999999999999999",
        ] {
            assert!(parse_subject("a", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_are_rfc3339_or_dates() {
        let t = parse_time("--at", "2026-01-31").expect("a date");
        assert_eq!(t.to_rfc3339(), "2026-01-31T00:00:00+00:00");
        assert!(parse_time("--at", "2026-01-31T12:00:00+02:00").is_ok());
        let e = parse_time("--at", "yesterday").expect_err("not a time");
        assert!(
            e.to_string().starts_with("--at \"yesterday\": expected"),
            "{e}"
        );
    }

    #[test]
    fn long_input_is_cut_in_messages() {
        assert_eq!(shown("abc"), "\"abc\"");
        let cut = shown(&"9".repeat(1000));
        assert!(
            cut.len() < 80 && cut.ends_with("(1000 characters)"),
            "{cut}"
        );
    }
}
