//! The REST API (axum), served by `lethe run` beside the driver and by `lethe serve`: the
//! Mork-compatible pull-and-acknowledge surface for downstream services, heartbeats and
//! health. Every `/v1` route needs an API key (`auth`); every write is an event naming it.
//!
//! Invariant: no email or username in an access log line (routes are logged by their
//! template, never the path or query as sent); bad input is a 4xx, never a 500.

pub mod activity;
pub mod audit;
pub mod auth;
pub mod error;
pub mod mork;
pub mod openapi;
pub mod retirements;
pub mod tasks;

use crate::clock::Clock;
use crate::config::Pipeline;
use crate::domain::StateGraph;
use crate::store::Store;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the handlers share.
pub struct ApiState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The pipeline (services, keys, stages).
    pub pipeline: Arc<Pipeline>,
    /// The states.
    pub graph: StateGraph,
    /// The clock acknowledgements are stamped with.
    pub clock: Arc<dyn Clock>,
    /// lethe's own deleting stages, as the user list shows them.
    pub own: Vec<mork::OwnStage>,
    /// The source, to find the users a bulk request names and check their exclusions.
    pub source: Option<Arc<crate::sql::source::SourceReader>>,
    /// The hash key, for retirements opened here and lookups by email.
    pub hash_key: Option<crate::pii::HashKey>,
    /// Mork's tasks started here.
    pub tasks: tasks::Tasks,
    /// The key Standard-Webhooks-signed activity reports are verified with, parsed once
    /// (a secret that is not `whsec_…` is refused at start by `lethe serve` and `run`).
    pub webhook_key: Option<crate::http::sign::SigningKey>,
    /// The SQL targets `/readyz` connects to, by name and URL.
    pub targets: Vec<(String, String)>,
}

impl ApiState {
    /// The state of an API over `store` for `pipeline`.
    pub fn new(
        store: Arc<dyn Store>,
        pipeline: Arc<Pipeline>,
        graph: StateGraph,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let own = mork::own_stages(&pipeline, &graph);
        let webhook_key = pipeline
            .api
            .webhook_secret
            .as_ref()
            .and_then(|s| crate::http::sign::SigningKey::parse(s.expose()).ok());
        Self {
            webhook_key,
            store,
            pipeline,
            graph,
            clock,
            own,
            source: None,
            hash_key: None,
            tasks: tasks::Tasks::default(),
            targets: Vec::new(),
        }
    }

    /// With the SQL targets `/readyz` checks (those with a URL).
    pub fn with_targets(mut self, targets: &[crate::config::Target]) -> Self {
        self.targets = targets
            .iter()
            .filter_map(|t| Some((t.name.clone(), t.url.clone()?)))
            .collect();
        self
    }

    /// With the source (bulk requests need it).
    pub fn with_source(mut self, source: Option<Arc<crate::sql::source::SourceReader>>) -> Self {
        self.source = source;
        self
    }

    /// With the hash key.
    pub fn with_hash_key(mut self, key: Option<crate::pii::HashKey>) -> Self {
        self.hash_key = key;
        self
    }
}

/// The largest request body taken (a bulk request of 10,000 ids fits).
pub const BODY_LIMIT: usize = 1 << 20;
/// How long a request may take before it is answered 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The whole API.
pub fn router(state: Arc<ApiState>) -> Router {
    router_with(state, Router::new())
}

/// The API with `pages` (the console) served beside it, under the same access log, body
/// limit and timeout.
pub fn router_with(state: Arc<ApiState>, pages: Router) -> Router {
    let keyed = Router::new()
        .route("/v1/users", get(mork::list_users))
        .route("/v1/users/", get(mork::list_users))
        .route("/v1/users/{id}", get(mork::get_user))
        .route(
            "/v1/users/{id}/status/{service}",
            get(mork::get_status).patch(mork::patch_status),
        )
        .route("/v1/tasks", post(tasks::create).options(tasks::options))
        .route("/v1/tasks/", post(tasks::create).options(tasks::options))
        .route("/v1/tasks/{id}/status", get(tasks::status))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_mork_key,
        ));
    let own = Router::new()
        .route(
            "/v1/retirements",
            get(retirements::list).post(retirements::open),
        )
        .route("/v1/retirements/{id}", get(retirements::one))
        .route("/v1/retirements/{id}/resume", post(retirements::resume))
        .route("/v1/retirements/{id}/abort", post(retirements::abort))
        .route("/v1/stats", get(retirements::stats))
        .route("/v1/audit", get(audit::audit))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .merge(keyed)
        .merge(own)
        // Keyed or signed: it checks for itself.
        .route("/v1/activity", post(activity::report))
        .route("/__lbheartbeat__", get(lbheartbeat))
        .route("/__heartbeat__", get(heartbeat))
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi::document))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async { error::ApiError::not_found("no such route") })
        .with_state(state)
        .merge(pages)
        .layer(middleware::from_fn(access_log))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// Serves the API and `pages` on `listener` until `shutdown` resolves, letting requests
/// in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    pages: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router_with(state, pages))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Authenticates the key and hands the caller to the handler (before any parameter is
/// read, as Mork does); lethe's error shape.
async fn require_key(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    authenticated(&state, request, next, error::Shape::Lethe).await
}

/// [`require_key`] with Mork's `{"detail"}` shape.
async fn require_mork_key(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    authenticated(&state, request, next, error::Shape::Mork).await
}

async fn authenticated(
    state: &ApiState,
    mut request: Request,
    next: Next,
    shape: error::Shape,
) -> Response {
    match auth::authenticate(request.headers(), &state.pipeline.api.keys) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(mut e) => {
            e.shape = shape;
            e.into_response()
        }
    }
}

/// Logs each request by its route template (never the path as sent: it may hold an
/// email), its status and duration; answers 503 past [`REQUEST_TIMEOUT`].
async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(unmatched)".to_string(), |p| p.as_str().to_string());
    let method = request.method().clone();
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                json!({"error": {"code": "timeout", "message": "the request took too long"}}),
            ),
        )
            .into_response(),
    };
    let status = response.status().as_u16().to_string();
    crate::metrics::count(
        "lethe_api_requests_total",
        &[("route", &route), ("status", &status)],
        1,
    );
    crate::metrics::observe(
        "lethe_api_seconds",
        &[("route", &route)],
        started.elapsed().as_secs_f64(),
    );
    tracing::info!(
        method = %method,
        route = %route,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "api request"
    );
    response
}

/// Mork's `/__lbheartbeat__`: the process answers (`null`).
#[utoipa::path(get, path = "/__lbheartbeat__", tag = "health", responses((status = 200)))]
async fn lbheartbeat() -> axum::Json<serde_json::Value> {
    axum::Json(json!(null))
}

/// `/healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Object)))]
async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(json!({"status": "ok"}))
}

/// Mork's `/__heartbeat__`: `{"database": "ok"}`, or 500 `{"database": "error"}`.
#[utoipa::path(get, path = "/__heartbeat__", tag = "health", responses((status = 200, body = Object), (status = 500)))]
async fn heartbeat(State(state): State<Arc<ApiState>>) -> Response {
    match state.store.next_due().await {
        Ok(_) => axum::Json(json!({"database": "ok"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "heartbeat: the store is not reachable");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"database": "error"})),
            )
                .into_response()
        }
    }
}

/// `/metrics`: Prometheus text; retirements per state are read from the store now.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, content_type = "text/plain")))]
async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let per_state = match crate::ops::stats(state.store.as_ref(), Some(&state.graph)).await {
        Ok(counts) => counts
            .into_iter()
            .map(|(name, n)| (vec![("state", name)], n))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: the store did not answer");
            Vec::new()
        }
    };
    let text =
        crate::metrics::render(&[("lethe_retirements", "Retirements per state.", per_state)]);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `/readyz`: the store answers, and the source and each SQL target when this process
/// uses them (a fresh connection each, 5 s at most); 503 naming
/// what failed otherwise.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, body = Object), (status = 503)))]
async fn ready(State(state): State<Arc<ApiState>>) -> Response {
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    let store = match state.store.next_due().await {
        Ok(_) => "ok",
        Err(e) => {
            tracing::warn!(error = %e, "readyz: the store is not reachable");
            ready = false;
            "unreachable"
        }
    };
    checks.insert("store".into(), json!(store));
    if let Some(source) = &state.source {
        let pinged = tokio::time::timeout(Duration::from_secs(5), source.ping()).await;
        let answer = match pinged.map_err(|_| "no answer within 5s".to_string()) {
            Ok(Ok(())) => "ok",
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::db::chain(&e), "readyz: the source is not reachable");
                ready = false;
                "unreachable"
            }
            Err(e) => {
                tracing::warn!(error = %e, "readyz: the source is not reachable");
                ready = false;
                "unreachable"
            }
        };
        checks.insert("source".into(), json!(answer));
    }
    if !state.targets.is_empty() {
        let probes = state.targets.iter().map(|(name, url)| async move {
            match crate::db::probe(url).await {
                Ok(()) => (name.clone(), "ok"),
                Err(e) => {
                    tracing::warn!(target = %name, error = %crate::db::chain(&e), "readyz: the target is not reachable");
                    (name.clone(), "unreachable")
                }
            }
        });
        let mut targets = serde_json::Map::new();
        for (name, answer) in futures_util::future::join_all(probes).await {
            ready &= answer == "ok";
            targets.insert(name, json!(answer));
        }
        checks.insert("targets".into(), serde_json::Value::Object(targets));
    }
    checks.insert(
        "status".into(),
        json!(if ready { "ready" } else { "not ready" }),
    );
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(serde_json::Value::Object(checks))).into_response()
}
