//! states.toml: the ordered states, with one end state per role.

use super::{ConfigError, invalid, parse_toml};
use crate::domain::{Role, StateDef, StateGraph};
use serde::Deserialize;
use strum::VariantNames;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatesFile {
    #[serde(default)]
    state: Vec<StateEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateEntry {
    name: String,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Parses and validates states.toml.
pub(super) fn parse(file: &str, text: &str) -> Result<StateGraph, ConfigError> {
    let parsed: StatesFile = parse_toml(file, text)?;
    if parsed.state.is_empty() {
        return Err(invalid(
            file,
            "state",
            None,
            "no state declared: add [[state]] tables, in pipeline order",
        ));
    }
    let mut defs: Vec<StateDef> = Vec::with_capacity(parsed.state.len());
    for (i, entry) in parsed.state.into_iter().enumerate() {
        let key = format!("state[{}].name", i + 1);
        if !valid_name(&entry.name) {
            return Err(invalid(
                file,
                key,
                Some(&entry.name),
                "a state name is 1 to 64 upper-case letters, digits or _ (e.g. RETIRING_EDX)",
            ));
        }
        if let Some(first) = defs.iter().position(|d| d.name == entry.name) {
            return Err(invalid(
                file,
                key,
                Some(&entry.name),
                format!("declared twice (first at state[{}])", first + 1),
            ));
        }
        if let Some(role) = entry.role
            && let Some(other) = defs.iter().find(|d| d.role == Some(role))
        {
            return Err(invalid(
                file,
                format!("state[{}].role", i + 1),
                Some(&role.to_string()),
                format!(
                    "already the role of {}: exactly one state per role",
                    other.name
                ),
            ));
        }
        defs.push(StateDef {
            name: entry.name,
            role: entry.role,
        });
    }
    for role in Role::VARIANTS {
        if !defs
            .iter()
            .any(|d| d.role.map(|r| r.to_string()).as_deref() == Some(role))
        {
            return Err(invalid(
                file,
                "state",
                None,
                format!(
                    "no state has role = \"{role}\": each of {} needs exactly one end state",
                    Role::VARIANTS.join(", ")
                ),
            ));
        }
    }
    StateGraph::new(defs).map_err(|problem| invalid(file, "state", None, problem))
}
