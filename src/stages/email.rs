//! The email handler: renders a template per retirement and sends it; the warning stage
//! records `warned_at` when the server accepted the notice (invariant 2).

use super::Reasons;
use super::{BatchError, Handler, Reporter};
use crate::clock::Clock;
use crate::config::{Email, EmailSettings, TemplateRole, Undeliverable};
use crate::domain::{Outcome, StageResult, grace_ends};
use crate::mail::{Delivery, Mailer, Templates, Vars};
use crate::store::Claimed;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What every email-sending stage shares: the mailer, the templates, the variables.
pub struct Notifier {
    /// The SMTP sender.
    pub mailer: Mailer,
    /// Loaded and checked templates.
    pub templates: Templates,
    /// `[email]`.
    pub config: Email,
    /// Time as the driver sees it.
    pub clock: Arc<dyn Clock>,
}

/// The result of sending one template to one retirement.
pub struct Sent {
    /// What the server said.
    pub delivery: Delivery,
    /// When it said so (the clock read as the reply arrived): a notice runs from here.
    pub at: DateTime<Utc>,
    /// Event detail (template, locale, Message-ID, reply).
    pub detail: serde_json::Value,
}

impl Sent {
    /// The one mapping of a delivery to an outcome: `delivered` when the server accepted the
    /// message, Retry when it asked to try later, and for a refusal what `policy`
    /// (`on_undeliverable`) says: Fail (`refused` prefixes the error), or `delivered` with
    /// the refusal recorded in the detail.
    pub fn outcome(
        self,
        policy: Undeliverable,
        refused: &str,
        delivered: impl FnOnce(serde_json::Value) -> StageResult,
    ) -> StageResult {
        use crate::domain::{Delivery as Went, OnRefused};
        let mut detail = self.detail;
        let went = match self.delivery {
            Delivery::Accepted { .. } => Went::Done,
            Delivery::Transient(error) => Went::Later(error),
            Delivery::Permanent(error) => Went::Refused(error),
        };
        let on_refused = match policy {
            Undeliverable::Error => OnRefused::Fail,
            Undeliverable::Proceed => OnRefused::Proceed,
        };
        match crate::domain::delivery_outcome(went, on_refused) {
            Ok(None) => delivered(detail),
            Ok(Some(error)) => {
                detail["undeliverable"] = json!(error);
                detail["on_undeliverable"] = json!("proceed");
                delivered(detail)
            }
            Err(Outcome::Fail { error }) => StageResult::new(Outcome::Fail {
                error: format!("{refused}: {error}"),
            })
            .with_detail(detail),
            Err(outcome) => StageResult::new(outcome).with_detail(detail),
        }
    }
}

impl Notifier {
    /// The variables taken from `[email]`, for checking templates at start.
    pub fn config_vars(config: &Email) -> Vars {
        let mut vars = Vars::default();
        vars.set("site_name", config.site_name.clone())
            .set("login_url", config.login_url.clone())
            .set("support_email", config.support_email.clone());
        vars
    }

    /// Sends `template` to each retirement (the mailer bounds how many at once) and
    /// collects the results; see [`Notifier::send_each`].
    pub async fn send_all(
        self: &Arc<Self>,
        batch: &[Claimed],
        template: impl Fn(&Claimed) -> String,
        key: impl Fn(&Claimed) -> String,
        deletion: impl Fn(&Claimed) -> DateTime<Utc>,
    ) -> HashMap<i64, Sent> {
        let mut out = HashMap::with_capacity(batch.len());
        self.send_each(batch, template, key, deletion, |id, sent| {
            out.insert(id, sent);
        })
        .await;
        out
    }

    /// Sends each retirement its `template` and hands each result to `each` as the server
    /// answers. `key` names the message in its Message-ID
    /// (`<lethe.{key}.{retirement opened, µs}@{sender domain}>`), the same for a resent
    /// copy, so mail clients fold the copies, and never one of another store or an earlier
    /// pass (a provider drops a second message with an id it has seen); `deletion` gives the
    /// date shown as `{{ deletion_date }}`.
    pub async fn send_each(
        self: &Arc<Self>,
        batch: &[Claimed],
        template: impl Fn(&Claimed) -> String,
        key: impl Fn(&Claimed) -> String,
        deletion: impl Fn(&Claimed) -> DateTime<Utc>,
        mut each: impl FnMut(i64, Sent),
    ) {
        let now = self.clock.now();
        let mut tasks = tokio::task::JoinSet::new();
        for c in batch {
            let template = template(c);
            let template = template.as_str();
            let when = deletion(c);
            let days_left = ((when - now).num_seconds().max(0) + 86_399) / 86_400;
            let mut vars = Self::config_vars(&self.config);
            vars.set("username", c.username.clone().unwrap_or_default())
                .set("deletion_date", when.format("%Y-%m-%d").to_string())
                .set("days_left", days_left.to_string());
            let Some((locale, rendered)) =
                self.templates.render(template, c.locale.as_deref(), &vars)
            else {
                let error = format!("template {template:?} is not loaded");
                let detail = json!({ "template": template });
                let delivery = Delivery::Permanent(error);
                let at = self.clock.now();
                each(
                    c.id,
                    Sent {
                        delivery,
                        at,
                        detail,
                    },
                );
                continue;
            };
            let (me, to) = (self.clone(), c.email.clone());
            let (id, key) = (
                c.id,
                format!("{}.{}", key(c), c.created_at.timestamp_micros()),
            );
            let template = template.to_string();
            tasks.spawn(async move {
                let delivery = me.mailer.send(to.as_deref(), &rendered, &key).await;
                // Each message's own acceptance time, not the batch's start: with a batch
                // of sends taking seconds, the notice must run from when it arrived.
                let at = me.clock.now();
                let mut detail = json!({ "template": template, "locale": locale });
                match &delivery {
                    Delivery::Accepted { message_id, reply } => {
                        detail["message_id"] = json!(message_id);
                        detail["smtp_reply"] = json!(reply);
                    }
                    Delivery::Transient(e) | Delivery::Permanent(e) => {
                        detail["smtp_error"] = json!(e);
                    }
                }
                (
                    id,
                    Sent {
                        delivery,
                        at,
                        detail,
                    },
                )
            });
        }
        while let Some(joined) = tasks.join_next().await {
            // A panicked send leaves its retirement without a result: the driver retries it.
            if let Ok((id, sent)) = joined {
                each(id, sent);
            }
        }
    }
}

/// Sends one template per retirement: the stage's, or for the notice and the deletion
/// confirmation the one the retirement's reason says.
pub struct EmailHandler {
    notifier: Arc<Notifier>,
    settings: EmailSettings,
    reasons: Arc<Reasons>,
}

impl EmailHandler {
    /// A handler for one email stage.
    pub fn new(notifier: Arc<Notifier>, settings: EmailSettings, reasons: Arc<Reasons>) -> Self {
        Self {
            notifier,
            settings,
            reasons,
        }
    }

    /// What to send `c`: a template, or the outcome without a message (its reason sends
    /// none here, or has no policy at all).
    fn template_for(&self, c: &Claimed) -> Result<String, StageResult> {
        let role = self.settings.role();
        let notice = self.settings.records_notice();
        if !notice && role != TemplateRole::Deleted {
            return Ok(self.settings.template.clone());
        }
        let policy = self
            .reasons
            .fit(c)
            .map_err(|error| StageResult::new(Outcome::Fail { error }))?;
        let template = if notice {
            &policy.template
        } else {
            &policy.deleted_template
        };
        template.clone().ok_or_else(|| {
            StageResult::new(Outcome::Done).with_detail(json!({
                "skipped": format!("reason {} sends no {} message", c.reason, if notice { "notice" } else { "deletion confirmation" }),
            }))
        })
    }
}

impl EmailHandler {
    /// The outcome of one message: accepted (or passed over) records the notice, which
    /// then runs from the attempt.
    fn outcome(&self, sent: Sent) -> StageResult {
        let (at, notice) = (sent.at, self.settings.records_notice());
        let template = sent.detail["template"]
            .as_str()
            .unwrap_or(&self.settings.template)
            .to_string();
        let result = sent.outcome(
            self.notifier.config.on_undeliverable,
            "undeliverable",
            |detail| {
                let mut r = StageResult::new(Outcome::Done).with_detail(detail);
                if notice {
                    r.warned_at = Some(at);
                }
                r
            },
        );
        let kind = match &result.outcome {
            Outcome::Done => "accepted",
            Outcome::Retry { .. } => "deferred",
            _ => "refused",
        };
        crate::metrics::count(
            "lethe_emails_total",
            &[("template", &template), ("result", kind)],
            1,
        );
        result
    }
}

#[async_trait]
impl Handler for EmailHandler {
    async fn handle(&self, batch: &[Claimed]) -> Result<HashMap<i64, StageResult>, BatchError> {
        self.handle_reporting(batch, &Reporter::none()).await
    }

    /// Hands each message's outcome over as the server answers, so the driver records
    /// acceptances while the rest of the batch is still being sent.
    async fn handle_reporting(
        &self,
        batch: &[Claimed],
        reporter: &Reporter,
    ) -> Result<HashMap<i64, StageResult>, BatchError> {
        let now = self.notifier.clock.now();
        let notice = self.settings.records_notice();
        let role = self.settings.role();
        let mut left = HashMap::new();
        let mut templates: HashMap<i64, String> = HashMap::with_capacity(batch.len());
        let mut sending: Vec<Claimed> = Vec::with_capacity(batch.len());
        for c in batch {
            match self.template_for(c) {
                Ok(template) => {
                    templates.insert(c.id, template);
                    sending.push(c.clone());
                }
                Err(result) => {
                    if let Err(result) = reporter.report(c.id, result) {
                        left.insert(c.id, result);
                    }
                }
            }
        }
        let template = |c: &Claimed| templates.get(&c.id).cloned().unwrap_or_default();
        let hold = |c: &Claimed| {
            self.reasons
                .policy(c)
                .map(|p| p.rule)
                .unwrap_or(crate::domain::NoticeRule {
                    required: true,
                    hold: Duration::ZERO,
                })
        };
        self.notifier
            .send_each(
                &sending,
                template,
                |c| format!("{}.{}", c.id, template(c)),
                |c| {
                    // A warning announces the end of a grace period starting now (a cool-off,
                    // the end of the one since the request), a reminder the one that started
                    // at the warning, the confirmation today's deletion.
                    let rule = hold(c);
                    match (notice, c.warned_at) {
                        _ if role == TemplateRole::Deleted => now,
                        _ if !rule.required => rule.ends(None, c.created_at).unwrap_or(now),
                        (false, Some(at)) => grace_ends(at, rule.hold),
                        _ => grace_ends(now, rule.hold),
                    }
                },
                |id, sent| {
                    if let Err(result) = reporter.report(id, self.outcome(sent)) {
                        left.insert(id, result);
                    }
                },
            )
            .await;
        Ok(left)
    }
}
