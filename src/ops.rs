//! Operator operations shared by the CLI and the REST API: opening retirements by hand,
//! with the subjects checked as keys and against the source's exclusions.
//!
//! Invariant 3 holds however a retirement is opened: a subject matched by
//! `source.exclude` or an allow-list is refused unless an operator overrides it for that
//! one subject, and the override is stored on the retirement and in its event.

use crate::domain::{REASONS, StateGraph};
use crate::pii::HashKey;
use crate::sql::source::{SourceError, SourceReader};
use crate::store::{EnqueueOptions, EnqueueOutcome, NewRetirement, Store, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;

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

/// What enqueueing one subject did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Opened {
    /// A new retirement with this id.
    Created {
        /// Retirement id.
        id: i64,
    },
    /// The subject already has this open retirement.
    AlreadyOpen {
        /// Retirement id.
        id: i64,
    },
    /// Refused: the source's exclusions keep this subject out.
    Refused {
        /// Which rule: `excluded by source.exclude`, `excluded by source.allow_ids`…
        why: String,
    },
}

/// Why an enqueue could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// Bad input; nothing was written.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The reason is not one lethe knows.
    #[error("reason {0}: unknown reason (allowed: {allowed})", allowed = REASONS.join(", "))]
    UnknownReason(String),
    /// Nothing to enqueue.
    #[error("nothing to enqueue: give SUBJECT arguments or --from-file")]
    Empty,
    /// An override names more than one subject.
    #[error(
        "--override-exclusion applies to one subject at a time ({0} given): enqueue the others without it"
    )]
    OverrideOfMany(usize),
    /// No source to check the exclusions against.
    #[error(
        "no [source] is configured: the exclusions of enqueued subjects (source.exclude, allow-lists) cannot be checked; configure [source], or give one subject with --override-exclusion"
    )]
    NoSource,
    /// The source failed while checking.
    #[error("{0} (the exclusions of enqueued subjects cannot be checked; nothing was written)")]
    Source(#[from] SourceError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which of `requests` the source's exclusions keep out, and by which rule: one query
/// for the predicate (`source.exclude`), then the allow-lists on the id and on the email
/// the source holds as well as the one given.
pub async fn exclusions(
    reader: &SourceReader,
    requests: &[Request],
) -> Result<HashMap<i64, String>, SourceError> {
    let subjects: Vec<(i64, Option<&str>)> = requests
        .iter()
        .map(|r| (r.subject, r.email.as_deref()))
        .collect();
    let rules = reader.exclusion_rules(&subjects).await?;
    Ok(rules
        .into_iter()
        .map(|(id, rule)| (id, format!("excluded by source.{rule}")))
        .collect())
}

/// What one hand-opened enqueue is.
pub struct Enqueue<'a> {
    /// The subjects, validated.
    pub requests: &'a [Request],
    /// `requested` or `inactive`.
    pub reason: &'a str,
    /// The operator overrides the exclusions (one subject only).
    pub exclusion_override: bool,
    /// Who, for the events.
    pub actor: &'a str,
}

/// Opens retirements by hand: refuses subjects the exclusions keep out (the others are
/// enqueued), unless `exclusion_override` (one subject only), which needs no source.
/// Without an override, `reader` is required: no check is ever skipped silently.
pub async fn enqueue(
    store: &dyn Store,
    graph: &StateGraph,
    reader: Option<&SourceReader>,
    key: &HashKey,
    input: Enqueue<'_>,
    now: DateTime<Utc>,
) -> Result<Vec<(i64, Opened)>, EnqueueError> {
    if !REASONS.contains(&input.reason) {
        return Err(EnqueueError::UnknownReason(shown(input.reason)));
    }
    if input.requests.is_empty() {
        return Err(EnqueueError::Empty);
    }
    if input.exclusion_override && input.requests.len() > 1 {
        return Err(EnqueueError::OverrideOfMany(input.requests.len()));
    }
    let refused = if input.exclusion_override {
        HashMap::new()
    } else {
        exclusions(reader.ok_or(EnqueueError::NoSource)?, input.requests).await?
    };
    let new: Vec<NewRetirement> = input
        .requests
        .iter()
        .filter(|r| !refused.contains_key(&r.subject))
        .map(|r| {
            let subject = r.subject.to_string();
            NewRetirement {
                subject_hash: key.subject(&subject),
                email_hash: r.email.as_deref().map(|e| key.email(e)),
                subject,
                email: r.email.clone(),
                username: r.username.clone(),
                reason: input.reason.to_string(),
                locale: None,
            }
        })
        .collect();
    let options = EnqueueOptions {
        exclusion_override: input.exclusion_override,
    };
    let outcomes = if new.is_empty() {
        Vec::new()
    } else {
        store
            .enqueue_with(graph.initial(), &new, options, input.actor, now)
            .await?
    };
    let mut outcomes = outcomes.into_iter();
    input
        .requests
        .iter()
        .map(|r| {
            let opened = match refused.get(&r.subject) {
                Some(why) => Opened::Refused { why: why.clone() },
                None => match outcomes.next() {
                    Some(EnqueueOutcome::Created(id)) => Opened::Created { id },
                    Some(EnqueueOutcome::AlreadyOpen(id)) => Opened::AlreadyOpen { id },
                    None => {
                        return Err(EnqueueError::Store(StoreError::Query {
                            context: "enqueue (the store reported fewer outcomes than subjects)",
                            source: sqlx::Error::RowNotFound,
                        }));
                    }
                },
            };
            Ok((r.subject, opened))
        })
        .collect()
}

/// The name of the OS account this process runs as (for operator events when neither
/// `LETHE_OPERATOR` nor `$USER` says who acts: cron, containers): the effective uid of
/// `/proc/self/status` looked up in `/etc/passwd`, else `id -un`, else `uid:N`.
pub fn os_account_name() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                // Uid: real effective saved filesystem
                line.strip_prefix("Uid:")
                    .and_then(|ids| ids.split_whitespace().nth(1))
                    .map(str::to_string)
            })
        });
    if let Some(uid) = &uid
        && let Ok(passwd) = std::fs::read_to_string("/etc/passwd")
    {
        let name = passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            (fields.nth(1)? == uid && !name.is_empty()).then(|| name.to_string())
        });
        if name.is_some() {
            return name;
        }
    }
    std::process::Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| uid.map(|uid| format!("uid:{uid}")))
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
    fn the_os_account_has_a_name() {
        let name = os_account_name().expect("a name for the running account");
        assert!(!name.is_empty() && !name.contains(':') || name.starts_with("uid:"));
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
