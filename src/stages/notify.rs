//! `notify`: hands each retirement to the downstream services that keep a copy of the
//! user (a `service_ack` row each, `to_delete`, which they pull through the API; a signed
//! webhook to those that have one), then waits until every one has acknowledged. Past a
//! service's `ack_deadline` the retirement fails, naming every service still missing.

use super::{BatchError, Handler, Reporter};
use crate::clock::Clock;
use crate::config::{NotifySettings, Service};
use crate::domain::{Outcome, StageResult};
use crate::http::sign::SigningKey;
use crate::http::{Call, Client, ReplyClass, Statuses, reply};
use crate::store::{Claimed, ServiceAck, Store};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A service as this stage calls it.
struct Downstream {
    name: String,
    deadline: Duration,
    webhook: Option<(url::Url, SigningKey)>,
}

/// Notifies downstream services and awaits their acknowledgements.
pub struct NotifyHandler {
    inner: Arc<Inner>,
}

/// What the webhooks of a batch share.
struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    client: Client,
    services: Vec<Downstream>,
    names: Vec<String>,
    recheck: Duration,
    ack_base: Option<String>,
}

impl NotifyHandler {
    /// A handler for `settings`, the `[[service]]`s it names taken from `services`.
    pub fn new(
        settings: &NotifySettings,
        services: &[Service],
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, super::BuildError> {
        let mut downstream = Vec::with_capacity(settings.services.len());
        for name in &settings.services {
            let service = services.iter().find(|s| &s.name == name).ok_or_else(|| {
                super::BuildError::Missing(format!("no [[service]] is named {name}"))
            })?;
            let webhook = match &service.webhook_url {
                None => None,
                Some(url) => {
                    let secret = service.secret.as_ref().ok_or_else(|| {
                        super::BuildError::Missing(format!(
                            "service {name} has a webhook_url: set its signing secret in {}",
                            service.secret_env()
                        ))
                    })?;
                    let key = SigningKey::parse(secret.expose()).map_err(|e| {
                        super::BuildError::Missing(format!("{}: {e}", service.secret_env()))
                    })?;
                    let url = url::Url::parse(url).map_err(|e| {
                        super::BuildError::Missing(format!("service {name} webhook_url: {e}"))
                    })?;
                    Some((url, key))
                }
            };
            downstream.push(Downstream {
                name: name.clone(),
                deadline: service.ack_deadline,
                webhook,
            });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                clock,
                client: Client::new("webhooks", settings.limits(), Vec::new())?,
                names: settings.services.clone(),
                services: downstream,
                recheck: settings.recheck,
                ack_base: settings.ack_url.clone(),
            }),
        })
    }
}

impl Inner {
    /// Posts the signed event about `c` to `service`'s webhook; the error summarises why
    /// it was not delivered.
    async fn post(
        &self,
        c: &Claimed,
        service: &Downstream,
        ack: &ServiceAck,
    ) -> Result<(), String> {
        let Some((url, key)) = &service.webhook else {
            return Ok(());
        };
        let created = ack.created_at.unwrap_or(c.created_at);
        // The same id for every resend, so receivers deduplicate.
        let id = format!(
            "msg_lethe_{}_{}_{}",
            c.id,
            service.name,
            created.timestamp_micros()
        );
        let ack_url = self.ack_base.as_ref().map(|base| {
            format!(
                "{}/v1/users/{}/status/{}",
                base.trim_end_matches('/'),
                c.id,
                service.name
            )
        });
        let now = self.clock.now();
        let body = json!({
            "type": "retirement.to_delete",
            "timestamp": now.to_rfc3339(),
            "data": {
                "retirement_id": c.id,
                "subject": c.subject,
                "email": c.email,
                "username": c.username,
                "reason": c.reason,
                "service": service.name,
                "ack_url": ack_url,
            }
        })
        .to_string()
        .into_bytes();
        let signed = key.headers(&id, now.timestamp(), &body);
        let mut call = Call::new(reqwest::Method::POST, url.clone()).json(body);
        for (name, value) in signed {
            if let Ok(value) = reqwest::header::HeaderValue::from_str(&value) {
                call.headers.insert(name, value);
            }
        }
        let hide: Vec<&str> = [c.email.as_deref(), c.username.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        let reply = self
            .client
            .send(&call)
            .await
            .map_err(|e| format!("webhook to {}: {}", service.name, e.what))?;
        match Statuses::default().classify(reply.status) {
            ReplyClass::Ok => Ok(()),
            _ => Err(format!(
                "webhook to {}: {}",
                service.name,
                reply::summary(reply.status, &reply.body, &hide)
            )),
        }
    }

    /// The outcome of one retirement given its acknowledgement rows (webhooks sent).
    async fn settle(&self, c: &Claimed, acks: &[ServiceAck], now: DateTime<Utc>) -> StageResult {
        let mut failed_webhooks = Vec::new();
        for service in &self.services {
            let Some(ack) = acks.iter().find(|a| a.service == service.name) else {
                continue;
            };
            if ack.acked || ack.notified_at.is_some() || service.webhook.is_none() {
                continue;
            }
            match self.post(c, service, ack).await {
                Ok(()) => {
                    if let Err(e) = self.store.mark_notified(c.id, &service.name, now).await {
                        // Delivered but not recorded: it is sent again (same webhook-id).
                        tracing::warn!(retirement_id = c.id, service = %service.name, error = %e,
                            "webhook delivered; recording it failed");
                    }
                }
                Err(error) => failed_webhooks.push(error),
            }
        }
        decide(&self.services, acks, now, self.recheck, failed_webhooks)
    }
}

/// What the acknowledgements say: all in → Done; one missing past its deadline → Fail
/// naming every missing service; a webhook not delivered → Retry (the driver's backoff);
/// else Wait for the next ack (which wakes it) or the next look.
fn decide(
    services: &[Downstream],
    acks: &[ServiceAck],
    now: DateTime<Utc>,
    recheck: Duration,
    failed_webhooks: Vec<String>,
) -> StageResult {
    let acked = |name: &str| acks.iter().any(|a| a.service == name && a.acked);
    let missing: Vec<&Downstream> = services.iter().filter(|s| !acked(&s.name)).collect();
    if missing.is_empty() {
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        return StageResult::new(Outcome::Done).with_detail(json!({ "acknowledged": names }));
    }
    let missing_names: Vec<&str> = missing.iter().map(|s| s.name.as_str()).collect();
    let deadline_of = |s: &Downstream| {
        let since = acks
            .iter()
            .find(|a| a.service == s.name)
            .and_then(|a| a.created_at)
            .unwrap_or(now);
        crate::domain::after(since, s.deadline)
    };
    if let Some(late) = missing.iter().find(|s| deadline_of(s) <= now) {
        return Outcome::Fail {
            error: format!(
                "{} did not acknowledge within {} (still missing: {})",
                late.name,
                crate::config::HumanDuration(late.deadline),
                missing_names.join(", ")
            ),
        }
        .into();
    }
    if !failed_webhooks.is_empty() {
        return Outcome::Retry {
            error: failed_webhooks.join("; "),
        }
        .into();
    }
    let next = missing
        .iter()
        .map(|s| deadline_of(s))
        .min()
        .unwrap_or(now)
        .min(crate::domain::after(now, recheck));
    Outcome::Wait {
        until: next,
        why: format!("awaiting acknowledgement from {}", missing_names.join(", ")),
    }
    .into()
}

#[async_trait]
impl Handler for NotifyHandler {
    async fn handle(&self, batch: &[Claimed]) -> Result<HashMap<i64, StageResult>, BatchError> {
        self.handle_reporting(batch, &Reporter::none()).await
    }

    /// Records the services awaited for the whole batch, then posts the webhooks of its
    /// retirements at once (the client bounds the requests in flight).
    async fn handle_reporting(
        &self,
        batch: &[Claimed],
        reporter: &Reporter,
    ) -> Result<HashMap<i64, StageResult>, BatchError> {
        let inner = self.inner.clone();
        let now = inner.clock.now();
        let ids: Vec<i64> = batch.iter().map(|c| c.id).collect();
        let rows = inner
            .store
            .await_acks(&ids, &inner.names, now)
            .await
            .map_err(|e| BatchError(format!("cannot record the services awaited: {e}")))?;
        let mut by_id: HashMap<i64, Vec<ServiceAck>> = HashMap::new();
        for row in rows {
            by_id.entry(row.retirement_id).or_default().push(row);
        }
        let work = batch
            .iter()
            .map(|c| (c.id, (c.clone(), by_id.remove(&c.id).unwrap_or_default())))
            .collect();
        Ok(super::each_at_once(
            work,
            reporter,
            move |(c, acks): (Claimed, Vec<ServiceAck>)| {
                let inner = inner.clone();
                async move { inner.settle(&c, &acks, now).await }
            },
        )
        .await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn service(name: &str, days: u64) -> Downstream {
        Downstream {
            name: name.into(),
            deadline: Duration::from_secs(days * 86_400),
            webhook: None,
        }
    }

    fn ack(service: &str, acked: bool) -> ServiceAck {
        ServiceAck {
            retirement_id: 1,
            service: service.into(),
            acked,
            created_at: Some(at("2026-01-01T00:00:00Z")),
            notified_at: None,
            acked_at: None,
            acked_by: None,
        }
    }

    #[test]
    fn acks_decide_done_wait_fail_and_retry() {
        let services = [service("joanie", 30), service("ashley", 10)];
        let hour = Duration::from_secs(3600);
        let (j, a) = (ack("joanie", true), ack("ashley", false));
        let now = at("2026-01-02T00:00:00Z");
        let r = decide(&services, &[j.clone(), a.clone()], now, hour, vec![]);
        assert_eq!(
            r.outcome,
            Outcome::Wait {
                until: at("2026-01-02T01:00:00Z"),
                why: "awaiting acknowledgement from ashley".into()
            }
        );
        // The wait never runs past the nearest deadline.
        let r = decide(
            &services,
            &[j.clone(), a.clone()],
            at("2026-01-10T23:30:00Z"),
            hour,
            vec![],
        );
        assert!(
            matches!(r.outcome, Outcome::Wait { until, .. } if until == at("2026-01-11T00:00:00Z"))
        );
        let late = ack("joanie", false);
        let r = decide(
            &services,
            &[late, a.clone()],
            at("2026-01-11T00:00:00Z"),
            hour,
            vec![],
        );
        assert_eq!(
            r.outcome,
            Outcome::Fail {
                error: "ashley did not acknowledge within 10d (still missing: joanie, ashley)"
                    .into()
            }
        );
        let r = decide(
            &services,
            &[j.clone(), a.clone()],
            now,
            hour,
            vec!["webhook to ashley: HTTP 500".into()],
        );
        assert!(
            matches!(r.outcome, Outcome::Retry { error } if error == "webhook to ashley: HTTP 500")
        );
        let done = ack("ashley", true);
        let r = decide(&services, &[j.clone(), done], now, hour, vec![]);
        assert_eq!(r.outcome, Outcome::Done);
        assert_eq!(
            r.detail,
            Some(json!({"acknowledged": ["joanie", "ashley"]}))
        );
    }
}
