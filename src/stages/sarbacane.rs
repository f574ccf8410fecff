//! `sarbacane`: removes each subject's address from every Sarbacane list and blacklist.
//! The lists and blacklists are fetched once per batch (every page) and kept for
//! `lists_ttl`, so a user costs one DELETE per list and two per blacklist.

use super::{BatchError, Handler, Reporter};
use crate::config::SarbacaneSettings;
use crate::domain::{Outcome, StageResult};
use crate::http::{Call, Client, ReplyClass, Statuses, reply};
use crate::store::Claimed;
use async_trait::async_trait;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What Sarbacane answers (HTTP 500) when the address is not in the list.
const NOT_IN_LIST: &str = "No contacts versions to delete";

/// The ids of the account's lists and blacklists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lists {
    /// Contact lists.
    pub lists: Vec<String>,
    /// Blacklists (each has unsubscribers and complaints).
    pub blacklists: Vec<String>,
}

/// Removes contacts from Sarbacane.
pub struct SarbacaneHandler {
    api: Arc<Api>,
    lists_ttl: std::time::Duration,
    cached: Mutex<Option<(Instant, Arc<Lists>)>>,
}

/// The account's API: shared by the removals a batch runs at once.
struct Api {
    client: Client,
    base: url::Url,
    page_size: usize,
}

/// Where one address is removed from.
#[derive(Clone, Copy)]
enum Place {
    List,
    Unsubscribers,
    Complaints,
}

impl SarbacaneHandler {
    /// A handler calling `settings.url` with the account id and key of `settings`.
    pub fn new(settings: SarbacaneSettings) -> Result<Self, super::BuildError> {
        let missing = |var: &str, what: &str| {
            super::BuildError::Missing(format!(
                "the sarbacane stage needs {what}: set {var} in the environment"
            ))
        };
        let account = settings
            .account_id
            .clone()
            .ok_or_else(|| missing(crate::config::SARBACANE_ACCOUNT_ENV, "the account id"))?;
        let key = settings
            .api_key
            .clone()
            .ok_or_else(|| missing(crate::config::SARBACANE_KEY_ENV, "the API key"))?;
        let base = url::Url::parse(&settings.url).map_err(|e| {
            super::BuildError::Missing(format!("sarbacane url {:?}: {e}", settings.url))
        })?;
        let client = Client::new(
            "sarbacane",
            settings.limits(),
            vec![("accountid", account.expose()), ("apikey", key.expose())],
        )?;
        Ok(Self {
            api: Arc::new(Api {
                client,
                base,
                page_size: settings.page_size as usize,
            }),
            lists_ttl: settings.lists_ttl,
            cached: Mutex::new(None),
        })
    }

    /// Requests sent so far (for benchmarks and tests).
    pub fn requests_sent(&self) -> u64 {
        self.api.client.sent()
    }

    /// The lists and blacklists, from the cache while it is fresh.
    pub async fn lists(&self) -> Result<Arc<Lists>, String> {
        if let Some((at, lists)) = self.cached_lists()
            && at.elapsed() < self.lists_ttl
        {
            return Ok(lists);
        }
        let lists = Arc::new(Lists {
            lists: self.api.all_pages("lists").await?,
            blacklists: self.api.all_pages("blacklists").await?,
        });
        if let Ok(mut cached) = self.cached.lock() {
            *cached = Some((Instant::now(), lists.clone()));
        }
        Ok(lists)
    }

    fn cached_lists(&self) -> Option<(Instant, Arc<Lists>)> {
        self.cached.lock().ok().and_then(|c| c.clone())
    }
}

impl Api {
    /// The URL `base/segments…`.
    fn url(&self, segments: &[&str]) -> url::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Every id of `GET /{what}`, page by page (`offset`, `limit`).
    async fn all_pages(&self, what: &str) -> Result<Vec<String>, String> {
        let limit = self.page_size;
        let mut ids = Vec::new();
        loop {
            let mut url = self.url(&[what]);
            url.query_pairs_mut()
                .append_pair("offset", &ids.len().to_string())
                .append_pair("limit", &limit.to_string());
            let reply = self
                .client
                .send(&Call::new(reqwest::Method::GET, url))
                .await
                .map_err(|e| format!("cannot read the {what}: {e}"))?;
            if !(200..300).contains(&reply.status) {
                return Err(format!(
                    "cannot read the {what}: {}",
                    reply::summary(reply.status, &reply.body, &[])
                ));
            }
            let page = page_ids(&reply.body)
                .map_err(|problem| format!("cannot read the {what}: {problem}"))?;
            let full = page.len() >= limit;
            // An API that ignores `offset` would send the same page forever.
            if page.first().is_some_and(|first| ids.contains(first)) {
                return Err(format!(
                    "cannot read the {what}: the API sent a page again (does it ignore offset?)"
                ));
            }
            ids.extend(page);
            if !full {
                return Ok(ids);
            }
        }
    }

    /// Removes `email` everywhere; Done with how many lists and blacklists held it.
    async fn remove(&self, lists: &Lists, email: &str) -> StageResult {
        let mut removed_from = (0usize, 0usize);
        let places = lists.lists.iter().map(|id| (Place::List, id)).chain(
            lists
                .blacklists
                .iter()
                .flat_map(|id| [(Place::Unsubscribers, id), (Place::Complaints, id)]),
        );
        let mut blacklisted: Vec<&str> = Vec::new();
        for (place, id) in places {
            let segments: [&str; 3] = match place {
                Place::List => ["lists", id, "contacts"],
                Place::Unsubscribers => ["blacklists", id, "unsubscribers"],
                Place::Complaints => ["blacklists", id, "complaints"],
            };
            let mut url = self.url(&segments);
            url.query_pairs_mut().append_pair("email", email);
            let reply = match self
                .client
                .send(&Call::new(reqwest::Method::DELETE, url))
                .await
            {
                Ok(reply) => reply,
                Err(e) => {
                    return Outcome::Retry {
                        error: e.to_string(),
                    }
                    .into();
                }
            };
            let at = segments.join("/").replace(id.as_str(), "{id}");
            match classify(reply.status, &reply.body) {
                ReplyClass::Ok => match place {
                    Place::List => removed_from.0 += 1,
                    _ if !blacklisted.contains(&id.as_str()) => {
                        blacklisted.push(id);
                        removed_from.1 += 1;
                    }
                    _ => {}
                },
                ReplyClass::Gone => {}
                class => {
                    let error = format!(
                        "sarbacane DELETE /{at}: {}",
                        reply::summary(reply.status, &reply.body, &[email])
                    );
                    return super::refusal(class, reply.status, error).into();
                }
            }
        }
        StageResult::new(Outcome::Done).with_detail(json!({
            "lists": removed_from.0,
            "blacklists": removed_from.1,
            "lists_checked": lists.lists.len(),
            "blacklists_checked": lists.blacklists.len(),
        }))
    }
}

/// A DELETE's reply: not found (404, 410, or Sarbacane's 500 "No contacts versions to
/// delete") is success.
pub fn classify(status: u16, body: &str) -> ReplyClass {
    if status == 500 && reply::json_message(body).as_deref() == Some(NOT_IN_LIST) {
        return ReplyClass::Gone;
    }
    Statuses::default().classify(status)
}

/// The ids of a page of lists: a JSON array of objects with an `id`.
fn page_ids(body: &str) -> Result<Vec<String>, String> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|_| "the reply is not JSON".to_string())?;
    let items = value
        .as_array()
        .ok_or_else(|| "the reply is not a JSON array".to_string())?;
    items
        .iter()
        .map(|item| match item.get("id") {
            Some(serde_json::Value::String(id)) => Ok(id.clone()),
            Some(serde_json::Value::Number(id)) => Ok(id.to_string()),
            _ => Err("an item has no id".to_string()),
        })
        .collect()
}

#[async_trait]
impl Handler for SarbacaneHandler {
    async fn handle(&self, batch: &[Claimed]) -> Result<HashMap<i64, StageResult>, BatchError> {
        self.handle_reporting(batch, &Reporter::none()).await
    }

    /// Removes the subjects at once (the client bounds the requests in flight), handing
    /// each outcome over as its last request answers.
    async fn handle_reporting(
        &self,
        batch: &[Claimed],
        reporter: &Reporter,
    ) -> Result<HashMap<i64, StageResult>, BatchError> {
        let mut left = HashMap::new();
        let mut give = |id: i64, result: StageResult| {
            if let Err(result) = reporter.report(id, result) {
                left.insert(id, result);
            }
        };
        let mut todo = Vec::with_capacity(batch.len());
        for c in batch {
            match c.email.as_deref().filter(|e| !e.is_empty()) {
                Some(email) => todo.push((c.id, email.to_string())),
                None => give(
                    c.id,
                    StageResult::new(Outcome::Done).with_detail(json!({
                        "skipped": "no email address: nothing to remove from Sarbacane"
                    })),
                ),
            }
        }
        if todo.is_empty() {
            return Ok(left);
        }
        let lists = self.lists().await.map_err(BatchError)?;
        let api = self.api.clone();
        left.extend(
            super::each_at_once(todo, reporter, move |email: String| {
                let (api, lists) = (api.clone(), lists.clone());
                async move { api.remove(&lists, &email).await }
            })
            .await,
        );
        Ok(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_in_any_form_is_success() {
        assert_eq!(classify(204, ""), ReplyClass::Ok);
        assert_eq!(classify(404, ""), ReplyClass::Gone);
        assert_eq!(
            classify(500, r#"{"message":"No contacts versions to delete"}"#),
            ReplyClass::Gone
        );
        assert_eq!(
            classify(500, r#"{"message":"boom"}"#),
            ReplyClass::Transient
        );
        assert_eq!(classify(429, ""), ReplyClass::Transient);
        assert_eq!(classify(400, ""), ReplyClass::Permanent);
    }

    #[test]
    fn pages_are_arrays_of_ids() {
        assert_eq!(
            page_ids(r#"[{"id":"a","name":"x"},{"id":7}]"#).unwrap(),
            vec!["a".to_string(), "7".to_string()]
        );
        assert!(page_ids("{}").unwrap_err().contains("array"));
        assert!(page_ids("<html>").unwrap_err().contains("JSON"));
        assert!(page_ids(r#"[{"name":"x"}]"#).unwrap_err().contains("id"));
    }
}
