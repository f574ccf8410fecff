//! `[[stage]]`: the handler kinds and each kind's settings. The stages module implements
//! what these types describe; every kind's settings are parsed the same way (serde,
//! unknown keys refused), and every error names the key at fault.

use super::HumanDuration;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use strum::{Display, EnumString, VariantNames};

/// The closed set of handler kinds a stage may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Display, EnumString, VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum HandlerKind {
    /// Warning, reminder and deletion emails over SMTP.
    Email,
    /// Waits out the grace period and re-checks activity.
    Grace,
    /// Set-based deletion from a relational database.
    SqlDelete,
    /// Removes the contact from Sarbacane.
    Sarbacane,
    /// Calls an HTTP service (identity providers, search indexes...).
    Http,
    /// Publishes to downstream services and awaits their acks.
    Notify,
    /// Does nothing and moves on (placeholders, demos, benchmarks); `delay` simulates work.
    Noop,
}

impl HandlerKind {
    /// Whether this kind removes or hands over data (after it, activity no longer cancels).
    pub fn deletes(self) -> bool {
        matches!(
            self,
            HandlerKind::SqlDelete
                | HandlerKind::Sarbacane
                | HandlerKind::Http
                | HandlerKind::Notify
        )
    }
}

/// A stage's validated settings.
#[derive(Debug, Clone, PartialEq)]
pub enum StageSettings {
    /// Settings of the noop handler.
    Noop(NoopSettings),
    /// An email stage: its template.
    Email(EmailSettings),
    /// A grace stage: reminders and the re-check.
    Grace(GraceSettings),
    /// A sql_delete stage: the `[[target]]` it deletes from.
    SqlDelete(SqlDeleteSettings),
    /// A sarbacane stage: the API, its limits and credentials.
    Sarbacane(super::SarbacaneSettings),
    /// A notify stage: the services that must acknowledge.
    Notify(super::NotifySettings),
    /// An http stage: the request per subject, its lookup and auth.
    Http(Box<super::HttpSettings>),
}

/// Settings of a noop stage.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoopSettings {
    /// Simulated work per batch.
    #[serde(default, deserialize_with = "duration")]
    pub delay: Duration,
}

/// Settings of an email stage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    /// Template name (`warning`, `reminder`, `deleted`...).
    pub template: String,
    /// Whether acceptance of this message is the notice that starts the grace period;
    /// by default true for the warning template only.
    #[serde(default)]
    pub notice: Option<bool>,
}

/// What a template is for, by its name: it decides the defaults (which message is the
/// notice) and which deletion date the message announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Display, EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum TemplateRole {
    /// `warning`: by default the notice that starts the grace period; announces its end.
    Warning,
    /// `reminder`: sent during the grace period; announces the end that the warning set.
    Reminder,
    /// `deleted`: the confirmation; announces today's deletion.
    Deleted,
    /// Any other name: announces the end of a grace period as a reminder would.
    Other,
}

impl TemplateRole {
    /// The role of the template called `name`.
    pub fn of(name: &str) -> Self {
        name.parse().unwrap_or(TemplateRole::Other)
    }
}

impl EmailSettings {
    /// What this stage's template is for.
    pub fn role(&self) -> TemplateRole {
        TemplateRole::of(&self.template)
    }

    /// Whether this stage records `warned_at`.
    pub fn records_notice(&self) -> bool {
        self.notice.unwrap_or(self.role() == TemplateRole::Warning)
    }
}

/// Settings of a grace stage. The period itself is `policy.grace_period`, so no stage can
/// shorten it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraceSettings {
    /// Reminders, as time before the end of the grace period (`["7d"]`).
    #[serde(default, deserialize_with = "durations")]
    pub reminders: Vec<Duration>,
    /// Template of the reminders.
    #[serde(default = "default_reminder_template")]
    pub reminder_template: String,
    /// Re-read the last login in the source at each run and at the end.
    #[serde(default = "default_recheck")]
    pub recheck: bool,
}

/// Settings of a sql_delete stage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlDeleteSettings {
    /// The `[[target]]` to delete from, by name.
    pub target: String,
}

fn default_reminder_template() -> String {
    TemplateRole::Reminder.to_string()
}

fn default_recheck() -> bool {
    true
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    HumanDuration::deserialize(d).map(|h| h.0)
}

fn durations<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    Ok(Vec::<HumanDuration>::deserialize(d)?
        .into_iter()
        .map(|h| h.0)
        .collect())
}

impl StageSettings {
    /// Validates the keys left in a `[[stage]]` table for `kind`; errors are (key, problem).
    pub fn parse(kind: HandlerKind, table: toml::Table) -> Result<Self, (String, String)> {
        Ok(match kind {
            HandlerKind::Noop => StageSettings::Noop(typed(kind, table)?),
            HandlerKind::Email => StageSettings::Email(typed(kind, table)?),
            HandlerKind::Grace => StageSettings::Grace(typed(kind, table)?),
            HandlerKind::SqlDelete => StageSettings::SqlDelete(typed(kind, table)?),
            HandlerKind::Sarbacane => {
                let settings: super::SarbacaneSettings = typed(kind, table)?;
                settings.check()?;
                StageSettings::Sarbacane(settings)
            }
            HandlerKind::Notify => {
                let settings: super::NotifySettings = typed(kind, table)?;
                settings.check()?;
                StageSettings::Notify(settings)
            }
            HandlerKind::Http => {
                let settings: super::HttpSettings = typed(kind, table)?;
                settings.check()?;
                StageSettings::Http(Box::new(settings))
            }
        })
    }
}

/// Deserializes a kind's settings: an unknown key is named with the allowed ones; a bad
/// value is named by its key (found from the parser's position in the table written out
/// again, one key per line).
fn typed<T: DeserializeOwned>(
    kind: HandlerKind,
    table: toml::Table,
) -> Result<T, (String, String)> {
    let allowed = fields_of::<T>();
    if let Some(key) = table.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err((
            key.clone(),
            format!(
                "unknown setting for handler {kind} (allowed: {})",
                allowed.join(", ")
            ),
        ));
    }
    let mut text = String::new();
    let mut starts: Vec<(usize, &str)> = Vec::with_capacity(table.len());
    // Tables last: each is written as a `[key]` section, which takes the keys after it.
    let is_table = |v: &toml::Value| match v {
        toml::Value::Table(_) => true,
        // What the serializer writes as `[[key]]`; a mixed array it writes inline.
        toml::Value::Array(items) => !items.is_empty() && items.iter().all(|i| i.is_table()),
        _ => false,
    };
    let mut entries: Vec<(&String, &toml::Value)> = table.iter().collect();
    entries.sort_by_key(|(_, value)| is_table(value));
    for (key, value) in entries {
        let mut one = toml::Table::new();
        one.insert(key.clone(), value.clone());
        starts.push((text.len(), key));
        text.push_str(&toml::to_string(&one).unwrap_or_default());
    }
    toml::from_str(&text).map_err(|e: toml::de::Error| {
        let key = e
            .span()
            .and_then(|span| starts.iter().rev().find(|(at, _)| *at <= span.start))
            .map_or_else(|| format!("({kind} settings)"), |(_, key)| key.to_string());
        (key, e.message().trim().to_string())
    })
}

/// The field names of a struct `T` derives `Deserialize` for: serde hands them to the
/// deserializer, which here keeps them and stops.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field names read")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = fields;
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kind: HandlerKind, text: &str) -> Result<StageSettings, (String, String)> {
        StageSettings::parse(kind, toml::from_str(text).unwrap())
    }

    #[test]
    fn every_kind_names_the_key_at_fault() {
        let (key, problem) = parse(HandlerKind::Noop, "colour = \"red\"").unwrap_err();
        assert_eq!(key, "colour");
        assert_eq!(problem, "unknown setting for handler noop (allowed: delay)");
        let (key, problem) = parse(HandlerKind::Noop, "delay = \"fast\"").unwrap_err();
        assert_eq!(key, "delay");
        assert!(problem.starts_with("\"fast\": "), "{problem}");
        let (key, problem) =
            parse(HandlerKind::Grace, "recheck = true\nreminders = [\"1y\"]").unwrap_err();
        assert_eq!(key, "reminders", "{problem}");
        let (key, problem) = parse(HandlerKind::SqlDelete, "").unwrap_err();
        assert!(problem.contains("target"), "{key}: {problem}");
        let (key, _) = parse(HandlerKind::SqlDelete, "target = 3").unwrap_err();
        assert_eq!(key, "target");
        let (key, problem) =
            parse(HandlerKind::Email, "template = \"x\"\nnotise = true").unwrap_err();
        assert_eq!(key, "notise");
        assert!(problem.contains("allowed: template, notice"), "{problem}");
    }

    #[test]
    fn keys_after_a_nested_table_stay_at_the_top() {
        // A table sorts before `url` here: written first, it would swallow the keys after.
        let text = "auth = { type = \"bearer\" }\nheaders = { X-A = \"1\" }\nname = \"crm\"\nurl = \"https://x.org/{{ subject }}\"\nok = [202]";
        let StageSettings::Http(h) = parse(HandlerKind::Http, text).unwrap() else {
            panic!("http settings expected");
        };
        assert_eq!((h.name.as_str(), h.ok.as_slice()), ("crm", &[202][..]));
        assert_eq!(h.headers.len(), 1);
    }

    #[test]
    fn a_templates_role_comes_from_its_name() {
        assert_eq!(TemplateRole::of("warning"), TemplateRole::Warning);
        assert_eq!(TemplateRole::of("deleted"), TemplateRole::Deleted);
        assert_eq!(TemplateRole::of("other"), TemplateRole::Other);
        let email = |template: &str, notice| EmailSettings {
            template: template.into(),
            notice,
        };
        assert!(email("warning", None).records_notice());
        assert!(!email("warning", Some(false)).records_notice());
        assert!(!email("reminder", None).records_notice());
        assert!(email("final", Some(true)).records_notice());
    }

    #[test]
    fn settings_parse_into_their_types() {
        assert_eq!(
            parse(HandlerKind::Noop, "delay = \"250ms\"").unwrap(),
            StageSettings::Noop(NoopSettings {
                delay: Duration::from_millis(250)
            })
        );
        assert_eq!(
            parse(HandlerKind::SqlDelete, "target = \"edx\"").unwrap(),
            StageSettings::SqlDelete(SqlDeleteSettings {
                target: "edx".into()
            })
        );
        let StageSettings::Grace(g) = parse(HandlerKind::Grace, "reminders = [\"7d\"]").unwrap()
        else {
            panic!("grace settings expected");
        };
        assert_eq!(g.reminders, vec![Duration::from_secs(7 * 86_400)]);
        assert_eq!(g.reminder_template, "reminder");
        assert!(g.recheck);
        let (key, problem) =
            parse(HandlerKind::Http, "name = \"kc\"\nurl = \"x/{{ id }}\"").unwrap_err();
        assert_eq!(key, "url");
        assert!(problem.contains("unknown variable {{ id }}"), "{problem}");
    }
}
