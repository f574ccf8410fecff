//! What the demo changes in the shipped preset (`overlay.toml`), and a TOML overlay over a
//! pipeline.toml: tables merge key by key; an array of tables (`[[stage]]`, `[[target]]`,
//! `[[service]]`) merges each overlay entry into the base entry with the same `state` or
//! `name`, or appends it. Pure.

use super::{DemoError, DemoKey, paths::shown};
use crate::config::preset;
use toml::Value;

/// What the overlay points the preset at.
pub(super) struct Settings<'a> {
    /// The store's URL.
    pub store_url: &'a str,
    /// The source's (and the edx target's) URL.
    pub source_url: &'a str,
    /// Users in the source.
    pub users: i64,
    /// The SMTP server: the built-in one or `--smtp`.
    pub smtp: (&'a str, u16),
    /// The Sarbacane stand-in's port on 127.0.0.1.
    pub sarbacane: u16,
    /// Where the API listens.
    pub api: String,
    /// The API's keys.
    pub keys: &'a [DemoKey],
}

/// `text` as a TOML string, quotes and backslashes escaped.
fn quoted(text: &str) -> String {
    Value::String(text.to_string()).to_string()
}

/// `url = "…"`, or a comment where the URL holds a password (the demo passes it in its
/// own environment instead).
fn url_line(url: &str) -> String {
    match shown(url) {
        Some(url) => format!("url = {}", quoted(url)),
        None => format!(
            "# url = {}: given to the demo, not written here",
            quoted(&crate::db::redact_url(url))
        ),
    }
}

/// The overlay the demo applies to the shipped pipeline.toml.
pub(super) fn overlay_text(s: &Settings) -> String {
    let mut text = format!(
        r#"# lethe demo: what the demo changes in the shipped edX preset. pipeline.toml beside
# this file is the preset with these values applied; states.toml and templates/ are the
# shipped ones, unchanged.

[store]
{store}

# Periods compressed from days to seconds.
[policy]
grace_period = "3s"
retry_base = "1s"
retry_cap = "5s"

[driver]
poll_interval = "50ms"

[[stage]]
state = "WARNED"
reminders = ["1s"]

# Unconfirmed accounts too (the preset ships the rule switched off), 3 s to confirm.
[[rule]]
name = "unverified"
enabled = true

[notice.unverified]
grace_period = "3s"
reminders = ["1s"]

# The in-process Sarbacane stand-in.
[[stage]]
state = "RETIRING_SARBACANE"
url = "http://127.0.0.1:{sarbacane}/v1"

# An acknowledgement wakes its retirement at once; this is the safety net (the preset: 1h).
# Each look writes a wait event per retirement still waiting: at 1s, a 100,000-user demo
# wrote 290,000 of them and spent most of its time doing so.
[[stage]]
state = "NOTIFIED"
recheck = "10s"

# The SMTP server: the demo's own, writing each message under mail/, or --smtp.
[email]
host = {smtp_host}
port = {smtp_port}
tls = "none"
rate_per_minute = 100000

# The synthetic edX database; one scan may open every inactive user of the demo.
[source]
{source}
max_new_per_scan = {users}

[[target]]
name = "edx"
{source}
parallel_batches = 1

# The API, with a key for each downstream service and one for auditors.
[api]
listen = {api}
"#,
        store = url_line(s.store_url),
        source = url_line(s.source_url),
        sarbacane = s.sarbacane,
        smtp_host = quoted(s.smtp.0),
        smtp_port = s.smtp.1,
        users = s.users,
        api = quoted(&s.api),
    );
    for DemoKey {
        name,
        scope,
        sha256,
        ..
    } in s.keys
    {
        text.push_str(&format!(
            "\n[[api_key]]\nname = \"{name}\"\nscope = \"{scope}\"\nsha256 = \"{sha256}\"\n"
        ));
    }
    text
}

/// The shipped pipeline.toml with `overlay` applied.
pub(super) fn merged_pipeline(overlay: &str) -> Result<String, DemoError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        DemoError::Pipeline(format!("the demo's {what} is not TOML: {e}"))
    };
    let mut base: Value = toml::from_str(preset::EDX_PIPELINE).map_err(|e| bad("preset", &e))?;
    let overlay: Value = toml::from_str(overlay).map_err(|e| bad("overlay", &e))?;
    merge(&mut base, &overlay);
    let body = toml::to_string(&base).map_err(|e| bad("pipeline", &e))?;
    Ok(format!(
        "# Written by lethe demo: the shipped edX preset with overlay.toml applied.\n\n{body}"
    ))
}

/// The key that names an entry of an array of tables.
fn identity(entry: &Value) -> Option<(&'static str, &Value)> {
    ["state", "name"]
        .into_iter()
        .find_map(|key| entry.get(key).map(|v| (key, v)))
}

/// `overlay` applied over `base`.
pub fn merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Table(base), Value::Table(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(base), Value::Array(overlay))
            if overlay.iter().all(|v| v.is_table()) && base.iter().all(|v| v.is_table()) =>
        {
            for entry in overlay {
                let same = identity(entry)
                    .and_then(|(key, id)| base.iter_mut().find(|b| b.get(key) == Some(id)));
                match same {
                    Some(existing) => merge(existing, entry),
                    None => base.push(entry.clone()),
                }
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn tables_merge_and_entries_merge_by_state_or_name() {
        let mut base = parse(
            r#"
[policy]
grace_period = "30d"
max_attempts = 8
[[stage]]
state = "PENDING"
handler = "email"
[[stage]]
state = "WARNED"
handler = "grace"
reminders = ["7d"]
[[service]]
name = "joanie"
"#,
        );
        let overlay = parse(
            r#"
[policy]
grace_period = "3s"
[[stage]]
state = "WARNED"
reminders = ["1s"]
[[service]]
name = "ashley"
[[api_key]]
name = "k"
"#,
        );
        merge(&mut base, &overlay);
        assert_eq!(base["policy"]["grace_period"].as_str(), Some("3s"));
        assert_eq!(base["policy"]["max_attempts"].as_integer(), Some(8));
        let stages = base["stage"].as_array().unwrap();
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[1]["handler"].as_str(), Some("grace"));
        assert_eq!(stages[1]["reminders"][0].as_str(), Some("1s"));
        assert_eq!(base["service"].as_array().unwrap().len(), 2);
        assert_eq!(base["api_key"][0]["name"].as_str(), Some("k"));
    }
}
