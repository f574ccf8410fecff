//! `[notice.<reason>]`: the notice policy of each reason (whether a warning is owed, its
//! template, the grace period or cool-off, the reminders, the deletion confirmation).
//! `inactive`'s unset keys take the stages' values, so a pipeline without `[notice]` keeps
//! today's behaviour (the notice stage's template, `policy.grace_period`, the grace stage's
//! reminders); another reason's notice names its own templates (the inactivity wording
//! would be wrong for it); every reason's grace defaults to `policy.grace_period` and its
//! confirmation to the confirmation stage's template.

use super::stage::{StageSettings, TemplateRole};
use super::{ConfigError, HumanDuration, Stage, invalid};
use crate::domain::{NoticeRule, Reason};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// One `[notice.<reason>]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NoticeSection {
    required: Option<bool>,
    template: Option<String>,
    grace_period: Option<HumanDuration>,
    cool_off: Option<HumanDuration>,
    reminders: Option<Vec<HumanDuration>>,
    reminder_template: Option<String>,
    deleted_template: Option<String>,
}

/// The notice policy of one reason.
#[derive(Debug, Clone, PartialEq)]
pub struct NoticePolicy {
    /// The reason it applies to.
    pub reason: Reason,
    /// What invariant 2 demands for it (checked again by every deleting stage).
    pub rule: NoticeRule,
    /// What the notice stage sends: the warning (required), or the request's confirmation
    /// (a cool-off); `None`: nothing.
    pub template: Option<String>,
    /// Reminders, as time before the end of the grace period.
    pub reminders: Vec<Duration>,
    /// The reminders' template.
    pub reminder_template: String,
    /// What the confirmation stage sends once deleted; `None`: nothing.
    pub deleted_template: Option<String>,
    /// Whether `[notice.<reason>]` is written (not derived from the stages).
    pub explicit: bool,
    /// Whether its `reminders` are written (not the grace stage's).
    reminders_written: bool,
}

impl NoticePolicy {
    /// One line for `lethe check`.
    pub fn describe(&self) -> String {
        let hold = HumanDuration(self.rule.hold);
        let mut line = if self.rule.required {
            format!(
                "notice required ({}), deletion {hold} after it is accepted",
                self.template.as_deref().unwrap_or("no template")
            )
        } else if self.rule.hold.is_zero() {
            "no notice, deleted at once".to_string()
        } else {
            format!("no notice required, cool-off {hold} after the opening")
        };
        if !self.rule.required
            && let Some(t) = &self.template
        {
            line.push_str(&format!(", confirmation {t}"));
        }
        if !self.reminders.is_empty() {
            let before: Vec<String> = self
                .reminders
                .iter()
                .map(|r| HumanDuration(*r).to_string())
                .collect();
            line.push_str(&format!(
                ", reminders {} ({} before the end)",
                self.reminder_template,
                before.join(", ")
            ));
        }
        if let Some(t) = &self.deleted_template {
            line.push_str(&format!(", after deletion {t}"));
        }
        line
    }
}

/// Every reason's policy: those written, plus `inactive` and `requested` derived from the
/// stages when not written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Notices(Vec<NoticePolicy>);

impl Notices {
    /// The policy of `reason`, if it has one (a reason without one is never deleted).
    pub fn get(&self, reason: &str) -> Option<&NoticePolicy> {
        self.0.iter().find(|p| p.reason == reason)
    }

    /// The pure rule of `reason`, for the deletion hold.
    pub fn rule(&self, reason: &str) -> Option<&NoticeRule> {
        self.get(reason).map(|p| &p.rule)
    }

    /// Every policy, `inactive` and `requested` first, then the written ones by name.
    pub fn all(&self) -> &[NoticePolicy] {
        &self.0
    }

    /// A reason an operator may open a retirement with: one that has a policy.
    pub fn reason(&self, name: &str) -> Option<Reason> {
        self.get(name).map(|p| p.reason.clone())
    }

    /// The reasons, comma-separated, for messages.
    pub fn names(&self) -> String {
        self.0
            .iter()
            .map(|p| p.reason.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The templates the policies send through the stages there are.
    pub fn templates(&self, stages: &[Stage]) -> Vec<String> {
        let notice_stage = stages.iter().any(|s| notice_stage(s).is_some());
        let deleted_stage = stages.iter().any(|s| deleted_stage(s).is_some());
        let grace_stage = stages
            .iter()
            .any(|s| matches!(s.settings, StageSettings::Grace(_)));
        let mut out = Vec::new();
        for p in &self.0 {
            if notice_stage && let Some(t) = &p.template {
                out.push(t.clone());
            }
            if deleted_stage && let Some(t) = &p.deleted_template {
                out.push(t.clone());
            }
            if grace_stage && !p.reminders.is_empty() {
                out.push(p.reminder_template.clone());
            }
        }
        out
    }
}

/// The template of the stage whose acceptance is the notice, if `stage` is it.
fn notice_stage(stage: &Stage) -> Option<&str> {
    match &stage.settings {
        StageSettings::Email(e) if e.records_notice() => Some(&e.template),
        _ => None,
    }
}

/// The template of the stage that confirms the deletion, if `stage` is it.
fn deleted_stage(stage: &Stage) -> Option<&str> {
    match &stage.settings {
        StageSettings::Email(e) if e.role() == TemplateRole::Deleted => Some(&e.template),
        _ => None,
    }
}

/// What the stages say, the defaults of the policies.
struct StageDefaults {
    /// The grace stage's state, to name its keys.
    grace_state: Option<String>,
    template: Option<String>,
    reminders: Vec<Duration>,
    reminder_template: String,
    deleted_template: Option<String>,
}

impl StageDefaults {
    fn of(stages: &[Stage]) -> Self {
        let grace = stages.iter().find_map(|s| match &s.settings {
            StageSettings::Grace(g) => Some(g),
            _ => None,
        });
        Self {
            grace_state: stages
                .iter()
                .find(|s| matches!(s.settings, StageSettings::Grace(_)))
                .map(|s| s.state.clone()),
            template: stages.iter().find_map(notice_stage).map(str::to_string),
            reminders: grace.map(|g| g.reminders.clone()).unwrap_or_default(),
            reminder_template: grace
                .map(|g| g.reminder_template.clone())
                .unwrap_or_else(|| TemplateRole::Reminder.to_string()),
            deleted_template: stages.iter().find_map(deleted_stage).map(str::to_string),
        }
    }
}

/// Builds every reason's policy and checks it against the stages, the grace period and
/// the rules' reasons (each must have one).
pub(super) fn parse_notices(
    file: &str,
    sections: BTreeMap<String, NoticeSection>,
    stages: &[Stage],
    grace_period: Duration,
    rule_reasons: &[(String, Reason)],
    has_email: bool,
) -> Result<Notices, ConfigError> {
    let defaults = StageDefaults::of(stages);
    let mut policies = Vec::new();
    let mut written = sections;
    for reason in [Reason::INACTIVE, Reason::REQUESTED] {
        let section = written.remove(reason.as_str());
        let explicit = section.is_some();
        let section = section.unwrap_or_else(|| NoticeSection {
            required: Some(reason != Reason::REQUESTED),
            ..NoticeSection::default()
        });
        policies.push(policy(
            file,
            reason,
            section,
            explicit,
            &defaults,
            grace_period,
        )?);
    }
    for (name, section) in written {
        if !super::rule::is_name(&name) {
            return Err(invalid(
                file,
                format!("notice.{name}"),
                Some(&name),
                "a reason is letters, digits, _ and -",
            ));
        }
        policies.push(policy(
            file,
            Reason::stored(name),
            section,
            true,
            &defaults,
            grace_period,
        )?);
    }
    let notices = Notices(policies);
    let has_notice_stage = stages.iter().any(|s| notice_stage(s).is_some());
    for (at, reason) in rule_reasons {
        if notices
            .get(reason.as_str())
            .is_some_and(|p| p.rule.required && !has_notice_stage)
        {
            return Err(invalid(
                file,
                format!("{at}.reason"),
                Some(reason.as_str()),
                "this reason requires a notice, and no email stage records one (template = \"warning\", or notice = true): its retirements could never be deleted",
            ));
        }
        if notices.get(reason.as_str()).is_none() {
            return Err(invalid(
                file,
                format!("{at}.reason"),
                Some(reason.as_str()),
                format!(
                    "no notice policy for this reason: add [notice.{reason}] (required = true with its template and grace_period, or required = false) (policies: {})",
                    notices.names()
                ),
            ));
        }
    }
    for p in notices.all() {
        let at = format!("notice.{}", p.reason);
        if p.explicit && p.rule.required && !has_notice_stage {
            return Err(invalid(
                file,
                format!("{at}.required"),
                Some("true"),
                "a required notice needs an email stage that records it (template = \"warning\", or notice = true)",
            ));
        }
        if (p.template.is_some() || !p.reminders.is_empty()) && p.explicit && !has_email {
            return Err(invalid(
                file,
                format!("{at}.template"),
                p.template.as_deref(),
                "sending a notice needs an [email] section",
            ));
        }
        if let Some(r) = p.reminders.iter().find(|r| **r >= p.rule.hold) {
            let key = match (p.reminders_written, &defaults.grace_state) {
                (false, Some(state)) => format!("stage for {state}.reminders"),
                _ => format!("{at}.reminders"),
            };
            return Err(invalid(
                file,
                key,
                Some(&HumanDuration(*r).to_string()),
                format!(
                    "a reminder is sent this long before the end of the grace period, which is {} for reason {}",
                    HumanDuration(p.rule.hold),
                    p.reason
                ),
            ));
        }
    }
    Ok(notices)
}

fn policy(
    file: &str,
    reason: Reason,
    s: NoticeSection,
    explicit: bool,
    defaults: &StageDefaults,
    grace_period: Duration,
) -> Result<NoticePolicy, ConfigError> {
    let at = format!("notice.{reason}");
    let required = s.required.unwrap_or(true);
    let hold = if required {
        if let Some(cool_off) = s.cool_off {
            return Err(invalid(
                file,
                format!("{at}.cool_off"),
                Some(&cool_off.to_string()),
                "a cool-off is for reasons without a required notice (required = false); a required notice has a grace_period",
            ));
        }
        let grace = s.grace_period.map(|g| g.0).unwrap_or(grace_period);
        if grace < Duration::from_secs(1) {
            return Err(invalid(
                file,
                format!("{at}.grace_period"),
                Some(&HumanDuration(grace).to_string()),
                "must be at least 1s: the notice must reach the user before anything is deleted",
            ));
        }
        grace
    } else {
        if let Some(grace) = s.grace_period {
            return Err(invalid(
                file,
                format!("{at}.grace_period"),
                Some(&grace.to_string()),
                "without a required notice there is no grace period: set cool_off (counted from the request) instead",
            ));
        }
        if s.reminders.as_ref().is_some_and(|r| !r.is_empty()) {
            return Err(invalid(
                file,
                format!("{at}.reminders"),
                None,
                "reminders follow a required notice (required = true)",
            ));
        }
        s.cool_off.map(|c| c.0).unwrap_or(Duration::ZERO)
    };
    // Only inactivity takes the stages' wording: another reason names its own.
    let inherits = reason == Reason::INACTIVE && required;
    let template = match inherits {
        true => s.template.or_else(|| defaults.template.clone()),
        false => s.template,
    };
    if explicit && required && template.is_none() {
        return Err(invalid(
            file,
            format!("{at}.template"),
            None,
            "a required notice needs its template (e.g. \"confirm_account\")",
        ));
    }
    let reminders_written = s.reminders.is_some();
    let reminders: Vec<Duration> = match s.reminders {
        Some(r) => r.into_iter().map(|h| h.0).collect(),
        None if inherits => defaults.reminders.clone(),
        None => Vec::new(),
    };
    let reminder_template = match (s.reminder_template, inherits) {
        (Some(t), _) => t,
        (None, true) => defaults.reminder_template.clone(),
        (None, false) if reminders.is_empty() => TemplateRole::Reminder.to_string(),
        (None, false) => {
            return Err(invalid(
                file,
                format!("{at}.reminder_template"),
                None,
                "reminders need their own template for this reason (e.g. \"confirm_account_reminder\")",
            ));
        }
    };
    Ok(NoticePolicy {
        reason,
        rule: NoticeRule { required, hold },
        template,
        reminders,
        reminder_template,
        deleted_template: s
            .deleted_template
            .or_else(|| defaults.deleted_template.clone()),
        explicit,
        reminders_written,
    })
}
