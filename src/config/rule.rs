//! `[[rule]]`: the selection rules a scan runs, each opening retirements with its reason.
//! Without any, one rule `inactive` is built from `[source]` and `[policy]` (today's preset).

use super::{ConfigError, HumanDuration, Source, invalid};
use crate::domain::Reason;
use serde::Deserialize;
use std::time::Duration;

/// What a rule selects by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Select {
    /// No login (or, for those who never logged in, no sign-up) for `after`.
    Inactive,
    /// Never confirmed their email (`source.verified_column = 0`) and signed up `after` ago.
    Unverified,
    /// Only the rule's `where` predicate.
    Where,
}

/// One `[[rule]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleSection {
    name: String,
    reason: Option<String>,
    #[serde(default)]
    select: Option<Select>,
    after: Option<HumanDuration>,
    #[serde(rename = "where")]
    predicate: Option<String>,
    interval: Option<HumanDuration>,
    max_new_per_scan: Option<u64>,
    max_new_share: Option<f64>,
    enabled: Option<bool>,
}

/// A validated selection rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique name (`lethe scan --rule NAME`, recorded on each retirement and scan run).
    pub name: String,
    /// The reason its retirements are opened with (its notice policy follows from it).
    pub reason: Reason,
    /// What it selects by.
    pub select: Select,
    /// Inactive: time since the last activity; unverified: since sign-up; where: unused.
    pub after: Duration,
    /// Operator SQL predicate on the source table, ANDed to the selection; spliced as
    /// written, like `source.exclude`.
    pub predicate: Option<String>,
    /// Time between two scans of this rule by the daemon.
    pub interval: Duration,
    /// A scan of this rule that would open more than this opens nothing.
    pub max_new_per_scan: u64,
    /// ...or more than this share of all users.
    pub max_new_share: f64,
    /// Whether the daemon and `lethe scan` run it.
    pub enabled: bool,
}

impl Rule {
    /// The one rule of a pipeline without `[[rule]]`: inactive for `source.inactive_after`
    /// (else `inactive_after`, the policy's), on the source's interval and limits.
    pub fn implicit(source: &Source, inactive_after: Duration) -> Rule {
        Rule {
            name: "inactive".into(),
            reason: Reason::INACTIVE,
            select: Select::Inactive,
            after: source.inactive_after.map(|d| d.0).unwrap_or(inactive_after),
            predicate: None,
            interval: source.scan_interval.0,
            max_new_per_scan: source.max_new_per_scan,
            max_new_share: source.max_new_share,
            enabled: true,
        }
    }

    /// Where its limits are configured, for the blast-radius message.
    pub fn limits_at(&self, implicit: bool) -> String {
        if implicit {
            "source".into()
        } else {
            format!("rule {:?}", self.name)
        }
    }

    /// Whether the source's verified column matters to this rule.
    pub fn reads_verified(&self) -> bool {
        self.select == Select::Unverified
    }
}

/// Whether `name` may name a rule or a reason: letters, digits, `_` and `-`.
pub(super) fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
}

/// The default sign-up age of an unverified account before it is selected.
const UNVERIFIED_AFTER: Duration = Duration::from_secs(86_400);

/// The rules of pipeline.toml, or the one implicit `inactive` rule of `[source]`.
pub(super) fn parse_rules(
    file: &str,
    sections: Vec<RuleSection>,
    source: Option<&Source>,
    inactive_after: Duration,
) -> Result<(Vec<Rule>, bool), ConfigError> {
    let Some(source) = source else {
        if sections.is_empty() {
            return Ok((Vec::new(), true));
        }
        return Err(invalid(
            file,
            "rule[1]",
            None,
            "rules select from the source: add a [source] section",
        ));
    };
    if sections.is_empty() {
        return Ok((vec![Rule::implicit(source, inactive_after)], true));
    }
    let inactive_after = source.inactive_after.map(|d| d.0).unwrap_or(inactive_after);
    let mut rules: Vec<Rule> = Vec::with_capacity(sections.len());
    for (i, section) in sections.into_iter().enumerate() {
        let at = format!("rule[{}]", i + 1);
        let name = section.name.trim().to_string();
        if !is_name(&name) {
            return Err(invalid(
                file,
                format!("{at}.name"),
                Some(&section.name),
                "a rule's name is letters, digits, _ and - (it is given to lethe scan --rule)",
            ));
        }
        if let Some(first) = rules
            .iter()
            .position(|r| r.name.eq_ignore_ascii_case(&name))
        {
            return Err(invalid(
                file,
                format!("{at}.name"),
                Some(&name),
                format!(
                    "rule[{}] has this name already: names are unique",
                    first + 1
                ),
            ));
        }
        let reason = section.reason.unwrap_or_else(|| name.clone());
        if reason.trim().is_empty() || reason == Reason::REQUESTED.as_str() {
            return Err(invalid(
                file,
                format!("{at}.reason"),
                Some(&reason),
                "requested is for deletions a user asked for: a rule's reason is another name (inactive, unverified...)",
            ));
        }
        let select = section.select.unwrap_or(Select::Inactive);
        let predicate = section.predicate.map(|p| p.trim().to_string());
        if predicate.as_deref().is_some_and(str::is_empty)
            || (select == Select::Where && predicate.is_none())
        {
            return Err(invalid(
                file,
                format!("{at}.where"),
                predicate.as_deref(),
                "select = \"where\" needs a `where` predicate on the source table (SQL, e.g. \"deactivated_at IS NOT NULL\")",
            ));
        }
        let after = match (select, section.after) {
            (Select::Inactive, Some(after)) if after.0 < Duration::from_secs(86_400) => {
                return Err(invalid(
                    file,
                    format!("{at}.after"),
                    Some(&after.to_string()),
                    "an inactivity period must be at least 1d",
                ));
            }
            (Select::Where, Some(after)) => {
                return Err(invalid(
                    file,
                    format!("{at}.after"),
                    Some(&after.to_string()),
                    "select = \"where\" selects by its predicate alone: put any time condition in `where`",
                ));
            }
            (_, Some(after)) => after.0,
            (Select::Inactive, None) => inactive_after,
            (Select::Unverified, None) => UNVERIFIED_AFTER,
            (Select::Where, None) => Duration::ZERO,
        };
        let interval = section.interval.unwrap_or(source.scan_interval);
        if interval.0 < Duration::from_secs(1) {
            return Err(invalid(
                file,
                format!("{at}.interval"),
                Some(&interval.to_string()),
                "must be at least 1s",
            ));
        }
        let max_new_share = section.max_new_share.unwrap_or(source.max_new_share);
        if !(max_new_share > 0.0 && max_new_share <= 1.0) {
            return Err(invalid(
                file,
                format!("{at}.max_new_share"),
                None,
                format!("{max_new_share} is out of range (allowed: above 0, at most 1)"),
            ));
        }
        rules.push(Rule {
            name,
            reason: Reason::stored(reason),
            select,
            after,
            predicate,
            interval: interval.0,
            max_new_per_scan: section.max_new_per_scan.unwrap_or(source.max_new_per_scan),
            max_new_share,
            enabled: section.enabled.unwrap_or(true),
        });
    }
    Ok((rules, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Result<(Vec<Rule>, bool), ConfigError> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            rule: Vec<RuleSection>,
        }
        let parsed: File =
            toml::from_str(text).map_err(|e| invalid("p", "", None, e.to_string()))?;
        parse_rules(
            "p",
            parsed.rule,
            Some(&Source::default()),
            Duration::from_secs(1825 * 86_400),
        )
    }

    #[test]
    fn no_rule_means_the_inactive_rule_of_the_source() {
        let (rules, implicit) = rules("").unwrap();
        assert!(implicit);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].reason, Reason::INACTIVE);
        assert_eq!(rules[0].after, Duration::from_secs(1825 * 86_400));
        assert_eq!(rules[0].limits_at(implicit), "source");
    }

    #[test]
    fn rules_take_defaults_from_the_source_and_their_name() {
        let (rules, implicit) = rules(
            r#"
            [[rule]]
            name = "inactive"
            [[rule]]
            name = "unverified"
            select = "unverified"
            enabled = false
            max_new_per_scan = 10
            "#,
        )
        .unwrap();
        assert!(!implicit);
        assert_eq!(rules[1].reason, "unverified");
        assert_eq!(rules[1].after, UNVERIFIED_AFTER);
        assert!(!rules[1].enabled);
        assert_eq!(rules[1].max_new_per_scan, 10);
        assert_eq!(rules[0].max_new_per_scan, 1000);
    }

    #[test]
    fn bad_rules_name_their_key() {
        let cases = [
            (
                "[[rule]]\nname = \"a\"\n[[rule]]\nname = \"A\"",
                "rule[2].name",
            ),
            ("[[rule]]\nname = \"a b\"", "rule[1].name"),
            (
                "[[rule]]\nname = \"x\"\nreason = \"requested\"",
                "rule[1].reason",
            ),
            (
                "[[rule]]\nname = \"x\"\nselect = \"where\"",
                "rule[1].where",
            ),
            ("[[rule]]\nname = \"x\"\nafter = \"1h\"", "rule[1].after"),
            (
                "[[rule]]\nname = \"x\"\nmax_new_share = 2.0",
                "rule[1].max_new_share",
            ),
        ];
        for (text, key) in cases {
            let err = rules(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
