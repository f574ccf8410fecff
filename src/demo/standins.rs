//! In-process stand-ins for the systems around lethe: Sarbacane (a mailing list and a
//! blacklist over HTTP) and the downstream services, which pull `to_delete` from lethe's
//! API over HTTP with their service key and acknowledge each user.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Sarbacane's contacts: the newsletter list and the unsubscribers of one blacklist.
#[derive(Default)]
pub struct Sarbacane {
    contacts: Mutex<HashSet<String>>,
    unsubscribed: Mutex<HashSet<String>>,
    removed: AtomicU64,
}

impl Sarbacane {
    /// Contacts (and blacklist entries) deleted so far.
    pub fn removed(&self) -> u64 {
        self.removed.load(Ordering::Relaxed)
    }

    /// Serves Sarbacane's API under `/v1` on `listener` until the runtime ends.
    pub fn serve(self: &Arc<Self>, listener: tokio::net::TcpListener, subscribed: Vec<String>) {
        if let Ok(mut contacts) = self.contacts.lock() {
            contacts.extend(subscribed.iter().cloned());
        }
        if let Ok(mut unsubscribed) = self.unsubscribed.lock() {
            unsubscribed.extend(subscribed.into_iter().step_by(7));
        }
        let app = axum::Router::new()
            .route("/v1/lists", get(|q| list_of("newsletter", q)))
            .route("/v1/blacklists", get(|q| list_of("optouts", q)))
            .route("/v1/{kind}/{id}/{place}", delete(remove))
            .with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }
}

async fn list_of(
    id: &'static str,
    Query(q): Query<HashMap<String, String>>,
) -> axum::Json<serde_json::Value> {
    let first = q.get("offset").is_none_or(|o| o == "0");
    axum::Json(match first {
        true => serde_json::json!([{ "id": id, "name": id }]),
        false => serde_json::json!([]),
    })
}

async fn remove(
    State(s): State<Arc<Sarbacane>>,
    Path((kind, _id, place)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> StatusCode {
    let Some(email) = q.get("email") else {
        return StatusCode::BAD_REQUEST;
    };
    let set = match (kind.as_str(), place.as_str()) {
        ("lists", "contacts") => &s.contacts,
        ("blacklists", "unsubscribers") => &s.unsubscribed,
        ("blacklists", _) => return StatusCode::NOT_FOUND,
        _ => return StatusCode::BAD_REQUEST,
    };
    let removed = set.lock().map(|mut set| set.remove(email)).unwrap_or(false);
    match removed {
        true => {
            s.removed.fetch_add(1, Ordering::Relaxed);
            StatusCode::OK
        }
        false => StatusCode::NOT_FOUND,
    }
}

/// A downstream service: pulls its `to_delete` list, "deletes" each user, acknowledges.
pub struct Consumer {
    /// The service's name (its `[[service]]`).
    pub service: String,
    /// Its API key.
    pub key: String,
    /// Acknowledgements it sent.
    pub acked: Arc<AtomicU64>,
}

impl Consumer {
    /// Runs the pull-and-acknowledge loop against `base` until `stop` says so.
    pub fn spawn(&self, base: String, mut stop: watch::Receiver<bool>) {
        let (service, key, acked) = (self.service.clone(), self.key.clone(), self.acked.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                match pull_and_ack(&client, &base, &service, &key).await {
                    Ok(n) => {
                        acked.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!(service = %service, error = %e, "demo consumer"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }
}

/// Acknowledgements a consumer has in flight at once.
const ACKS_IN_FLIGHT: usize = 8;

/// One pass: every page of `to_delete`, each user acknowledged; how many.
async fn pull_and_ack(
    client: &reqwest::Client,
    base: &str,
    service: &str,
    key: &str,
) -> Result<u64, reqwest::Error> {
    let mut acked = 0;
    loop {
        let users: Vec<serde_json::Value> = client
            .get(format!(
                "{base}/v1/users?deletion_status=to_delete&limit=500"
            ))
            .header("x-api-key", key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        // A real service acknowledges as it deletes, several at once: so does this one.
        // Each request is built first: the futures then own what they send.
        let patches: Vec<_> = users
            .iter()
            .filter_map(|user| user["id"].as_str())
            .map(|id| {
                let request = client
                    .patch(format!("{base}/v1/users/{id}/status/{service}"))
                    .header("x-api-key", key)
                    .json(&serde_json::json!({ "deletion_status": "deleted" }));
                async move { request.send().await?.error_for_status().map(|_| ()) }
            })
            .collect();
        let results: Vec<Result<(), reqwest::Error>> = futures_util::stream::iter(patches)
            .buffer_unordered(ACKS_IN_FLIGHT)
            .collect()
            .await;
        let page = results.len() as u64;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        acked += page;
        // An empty page, or one that acknowledged nothing: the next pass tries again.
        if page == 0 {
            return Ok(acked);
        }
    }
}
