//! The `[[stage]]` list of pipeline.toml: one stage per working state of states.toml, in
//! its order, each with its handler's settings; and what the notice stages need.

use super::stage::{HandlerKind, StageSettings};
use super::{ConfigError, Stage, invalid};
use crate::domain::StateGraph;
use strum::VariantNames;

/// Email stages need `[email]`; grace reminders need `[email]` (that they fall inside
/// each reason's grace period is checked with the notice policies); an activity re-check
/// needs `[source]`.
pub(super) fn check_notice_stages(
    file: &str,
    stages: &[Stage],
    has_source: bool,
    has_email: bool,
) -> Result<(), ConfigError> {
    for stage in stages {
        let at = format!("stage for {}", stage.state);
        match &stage.settings {
            StageSettings::Email(_) if !has_email => {
                return Err(invalid(
                    file,
                    at,
                    None,
                    "handler email needs an [email] section (SMTP server, sender, templates)",
                ));
            }
            StageSettings::Grace(g) => {
                if !g.reminders.is_empty() && !has_email {
                    return Err(invalid(
                        file,
                        format!("{at}.reminders"),
                        None,
                        "reminders need an [email] section",
                    ));
                }
                if g.recheck && !has_source {
                    return Err(invalid(
                        file,
                        format!("{at}.recheck"),
                        Some("true"),
                        "re-checking activity needs a [source] (or set recheck = false)",
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

pub(super) fn parse_stages(
    file: &str,
    tables: Vec<toml::Table>,
    graph: &StateGraph,
    states_file: &str,
) -> Result<Vec<Stage>, ConfigError> {
    let mut stages: Vec<Stage> = Vec::with_capacity(tables.len());
    for (i, mut table) in tables.into_iter().enumerate() {
        let at = format!("stage[{}]", i + 1);
        let state = take_string(
            file,
            &mut table,
            &at,
            "state",
            "the working state this stage advances",
        )?;
        if !graph.contains(&state) {
            return Err(invalid(
                file,
                format!("{at}.state"),
                Some(&state),
                format!(
                    "no such state in {states_file} (known: {})",
                    graph.names().join(", ")
                ),
            ));
        }
        if !graph.is_working(&state) {
            return Err(invalid(
                file,
                format!("{at}.state"),
                Some(&state),
                format!(
                    "{state} is an end state and takes no stage (working states: {})",
                    graph.working().join(", ")
                ),
            ));
        }
        if let Some(first) = stages.iter().position(|s| s.state == state) {
            return Err(invalid(
                file,
                format!("{at}.state"),
                Some(&state),
                format!(
                    "{state} already has a stage (stage[{}]): one stage per state",
                    first + 1
                ),
            ));
        }
        let handler = take_string(file, &mut table, &at, "handler", "the handler kind")?;
        let kind: HandlerKind = handler.parse().map_err(|_| {
            invalid(
                file,
                format!("{at}.handler"),
                Some(&handler),
                format!(
                    "unknown handler kind (known: {})",
                    HandlerKind::VARIANTS.join(", ")
                ),
            )
        })?;
        let settings = StageSettings::parse(kind, table)
            .map_err(|(key, problem)| invalid(file, format!("{at}.{key}"), None, problem))?;
        stages.push(Stage {
            state,
            kind,
            settings,
        });
    }
    if let Some(missing) = graph
        .working()
        .iter()
        .find(|w| !stages.iter().any(|s| &s.state == *w))
    {
        return Err(invalid(
            file,
            "stage",
            None,
            format!(
                "state {missing} has no stage: every working state of {states_file} needs exactly one [[stage]]"
            ),
        ));
    }
    // Stages run in the order of states.toml, whatever their order in the file.
    stages.sort_by_key(|s| graph.working().iter().position(|w| *w == s.state));
    Ok(stages)
}

fn take_string(
    file: &str,
    table: &mut toml::Table,
    at: &str,
    key: &str,
    meaning: &str,
) -> Result<String, ConfigError> {
    match table.remove(key) {
        Some(toml::Value::String(s)) => Ok(s),
        Some(other) => Err(invalid(
            file,
            format!("{at}.{key}"),
            None,
            format!("expected a string ({meaning}), found {}", other.type_str()),
        )),
        None => Err(invalid(
            file,
            format!("{at}.{key}"),
            None,
            format!("missing: {meaning}"),
        )),
    }
}
