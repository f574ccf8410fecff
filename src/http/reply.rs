//! What an HTTP reply means for a retirement: pure rules, no I/O.

use std::time::{Duration, SystemTime};

/// What a reply's status means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyClass {
    /// The service did it.
    Ok,
    /// The service does not have it (already deleted, never there): also success.
    Gone,
    /// Try again later: 408, 425, 429 and 5xx.
    Transient,
    /// The request is wrong or refused: retrying will not help.
    Permanent,
}

/// Which statuses count as done and as already gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statuses {
    /// Success; empty means any 2xx.
    pub ok: Vec<u16>,
    /// Already gone.
    pub gone: Vec<u16>,
}

impl Default for Statuses {
    fn default() -> Self {
        Self {
            ok: Vec::new(),
            gone: vec![404, 410],
        }
    }
}

impl Statuses {
    /// The class of `status`.
    pub fn classify(&self, status: u16) -> ReplyClass {
        let ok = match self.ok.is_empty() {
            true => (200..300).contains(&status),
            false => self.ok.contains(&status),
        };
        if ok {
            ReplyClass::Ok
        } else if self.gone.contains(&status) {
            ReplyClass::Gone
        } else if quick_retry(status) || matches!(status, 408 | 425 | 500..=599) {
            ReplyClass::Transient
        } else {
            ReplyClass::Permanent
        }
    }
}

/// Statuses a request is retried on at once, within its call (after `Retry-After`).
pub fn quick_retry(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// A `Retry-After` value: seconds, or an HTTP date (then the time left until it).
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The delay before the next quick retry: the backoff's, or longer when the server asked
/// for it. `None` stops retrying: the backoff is spent, or the server asks for longer
/// than `longest` (the driver's retry schedule then takes over).
pub fn next_delay(
    backoff: Option<Duration>,
    asked: Option<Duration>,
    longest: Duration,
) -> Option<Duration> {
    let backoff = backoff?;
    match asked {
        Some(asked) if asked > longest => None,
        Some(asked) => Some(asked.max(backoff)),
        None => Some(backoff),
    }
}

/// A short summary of a reply for an event or an error: the status and the body's own
/// message (`message`, `error_description`, `error`, `detail`; a body that is not JSON:
/// its first line), with every one of `hide` (the address, the username) replaced in any
/// ASCII case and in its URL-encoded forms, and cut to 200 characters.
pub fn summary(status: u16, body: &str, hide: &[&str]) -> String {
    // A JSON body shows only its message: the rest may hold the user's data.
    let message = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => ["message", "error_description", "error", "detail"]
            .iter()
            .find_map(|k| v.get(k).and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_default(),
        Err(_) => body.lines().next().unwrap_or("").trim().to_string(),
    };
    // Decoded first, so an address echoed URL-encoded (whole or in part) is found too.
    let mut message = percent_decoded(&message);
    for secret in hide.iter().filter(|s| !s.is_empty()) {
        message = replace_ignoring_ascii_case(&message, secret, "<redacted>");
    }
    let mut shown: String = message.chars().take(200).collect();
    if shown.len() < message.len() {
        shown.push('…');
    }
    match shown.is_empty() {
        true => format!("HTTP {status}"),
        false => format!("HTTP {status}: {shown}"),
    }
}

/// `text` with every valid `%XX` decoded (invalid UTF-8 replaced).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` with every `needle`, in any ASCII case, replaced by `with`.
fn replace_ignoring_ascii_case(text: &str, needle: &str, with: &str) -> String {
    // ASCII lowering keeps every byte where it is, so positions carry over.
    let (lower, needle) = (text.to_ascii_lowercase(), needle.to_ascii_lowercase());
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(at) = lower[from..].find(&needle) {
        out.push_str(&text[from..from + at]);
        out.push_str(with);
        from += at + needle.len();
    }
    out.push_str(&text[from..]);
    out
}

/// The message of a JSON body, if it has one: `{"message": "…"}`.
pub fn json_message(body: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()?
        .get("message")?
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_classify_by_default_and_as_configured() {
        let s = Statuses::default();
        assert_eq!(s.classify(204), ReplyClass::Ok);
        assert_eq!(s.classify(404), ReplyClass::Gone);
        assert_eq!(s.classify(410), ReplyClass::Gone);
        assert_eq!(s.classify(429), ReplyClass::Transient);
        assert_eq!(s.classify(500), ReplyClass::Transient);
        assert_eq!(s.classify(408), ReplyClass::Transient);
        assert_eq!(s.classify(400), ReplyClass::Permanent);
        assert_eq!(s.classify(401), ReplyClass::Permanent);
        assert_eq!(s.classify(302), ReplyClass::Permanent);
        let custom = Statuses {
            ok: vec![202],
            gone: vec![400],
        };
        assert_eq!(custom.classify(200), ReplyClass::Permanent);
        assert_eq!(custom.classify(202), ReplyClass::Ok);
        assert_eq!(custom.classify(400), ReplyClass::Gone);
        assert_eq!(custom.classify(404), ReplyClass::Permanent);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(retry_after(" 3 ", now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(90)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn the_server_may_lengthen_a_retry_but_not_revive_a_spent_backoff() {
        let s = Duration::from_secs;
        assert_eq!(next_delay(Some(s(1)), None, s(10)), Some(s(1)));
        assert_eq!(next_delay(Some(s(1)), Some(s(5)), s(10)), Some(s(5)));
        assert_eq!(next_delay(Some(s(2)), Some(s(0)), s(10)), Some(s(2)));
        assert_eq!(next_delay(Some(s(1)), Some(s(60)), s(10)), None);
        assert_eq!(next_delay(None, Some(s(1)), s(10)), None);
    }

    #[test]
    fn summaries_keep_the_message_and_hide_the_address() {
        assert_eq!(
            summary(
                400,
                r#"{"message":"bad contact a+b@x.org"}"#,
                &["a+b@x.org"]
            ),
            "HTTP 400: bad contact <redacted>"
        );
        assert_eq!(
            summary(
                400,
                r#"{"message":"A+B@X.org and a%2Bb%40x.org and a%2Bb@x.org"}"#,
                &["a+b@x.org"]
            ),
            "HTTP 400: <redacted> and <redacted> and <redacted>"
        );
        assert_eq!(summary(502, "", &[]), "HTTP 502");
        assert_eq!(summary(401, "<html>\nno</html>", &[]), "HTTP 401: <html>");
        let long = "x".repeat(500);
        assert_eq!(
            summary(500, &long, &[]).chars().count(),
            "HTTP 500: ".len() + 201
        );
        assert_eq!(
            json_message(r#"{"message":"No contacts versions to delete"}"#).as_deref(),
            Some("No contacts versions to delete")
        );
        assert_eq!(json_message("not json"), None);
    }
}
