//! What the stages know of each reason and rule: the notice policy a retirement follows and
//! the re-check of the rule that selected it.

use crate::config::{NoticePolicy, Notices, Pipeline, Rule, Select, Source};
use crate::db::Dialect;
use crate::store::Claimed;
use std::sync::Arc;

/// The notice policies, the rules and the source they select from.
#[derive(Debug, Default)]
pub struct Reasons {
    notices: Notices,
    rules: Vec<Rule>,
    source: Option<Source>,
}

impl Reasons {
    /// The pipeline's.
    pub fn of(pipeline: &Pipeline) -> Arc<Self> {
        Arc::new(Self {
            notices: pipeline.notices.clone(),
            rules: pipeline.rules.clone(),
            source: pipeline.source.clone(),
        })
    }

    /// The notice policy `c` follows; `None`: its reason has none (never deleted).
    pub fn policy(&self, c: &Claimed) -> Option<&NoticePolicy> {
        self.notices.get(c.reason.as_str())
    }

    /// The rule `c` is re-checked against: the one that opened it, else the first of its
    /// reason (opened by hand); none for a requested one.
    pub fn rule(&self, c: &Claimed) -> Option<&Rule> {
        if c.reason.is_requested() {
            return None;
        }
        c.rule
            .as_deref()
            .and_then(|name| self.rules.iter().find(|r| r.name == name))
            .or_else(|| self.rules.iter().find(|r| r.reason == c.reason))
    }

    /// Whether activity after the warning cancels `c`: not for a requested one, nor for a
    /// rule that selects by its predicate alone.
    pub fn activity_cancels(&self, c: &Claimed) -> bool {
        !c.reason.is_requested() && self.rule(c).is_none_or(|r| r.select != Select::Where)
    }

    /// The SQL (in `d`) that must still hold of `c` on the source table, from its rule.
    pub fn still_selected(&self, c: &Claimed, d: Dialect) -> Option<String> {
        let source = self.source.as_ref()?;
        crate::sql::source::still_selected(d, source, self.rule(c)?)
    }

    /// Why `c` is cancelled when its rule no longer selects it, seen at `at`.
    pub fn unselected_why(&self, c: &Claimed, at: chrono::DateTime<chrono::Utc>) -> String {
        match self.rule(c) {
            Some(r) if r.select == Select::Unverified => {
                format!("account confirmed at {}", at.to_rfc3339())
            }
            Some(r) => format!(
                "no longer matches rule {} (re-checked at {})",
                r.name,
                at.to_rfc3339()
            ),
            None => format!("no longer selected (re-checked at {})", at.to_rfc3339()),
        }
    }
}
