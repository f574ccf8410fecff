//! What the stages know of each reason and rule: the notice policy a retirement follows and
//! the re-check of the rule that selected it.

use crate::config::{NoticePolicy, Notices, Pipeline, Rule, Select, Source};
use crate::db::Dialect;
use crate::domain::{Outcome, StageResult};
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

    /// The policy `c` goes on under, or why it cannot go on: the rule that opened it is no
    /// longer configured (its re-check would be lost), or its reason has no notice policy.
    pub fn fit(&self, c: &Claimed) -> Result<&NoticePolicy, String> {
        if let Some(name) = &c.rule
            && !self.rules.iter().any(|r| &r.name == name)
        {
            return Err(format!(
                "rule {name} that opened it is no longer in pipeline.toml: restore it, or abort the retirement"
            ));
        }
        self.policy(c).ok_or_else(|| {
            format!(
                "reason {} has no notice policy: add [notice.{}] to pipeline.toml, then resume",
                c.reason, c.reason
            )
        })
    }

    /// What a deleting stage answers instead of acting on `c` at `now`: a retirement unfit
    /// to go on, or one its reason's policy does not let be deleted yet (invariant 2).
    pub fn hold(&self, c: &Claimed, now: chrono::DateTime<chrono::Utc>) -> Option<StageResult> {
        let policy = match self.fit(c) {
            Ok(policy) => policy,
            Err(error) => return Some(StageResult::new(Outcome::Fail { error })),
        };
        crate::domain::deletion_hold(
            &c.reason,
            Some(&policy.rule),
            c.warned_at,
            c.created_at,
            now,
        )
        .map(StageResult::new)
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
