//! A TOML overlay over a pipeline.toml: tables merge key by key; an array of tables
//! (`[[stage]]`, `[[target]]`, `[[service]]`) merges each overlay entry into the base entry
//! with the same `state` or `name`, or appends it. Pure.

use toml::Value;

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
