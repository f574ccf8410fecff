//! The console: server-rendered pages under `/ui` for operators and auditors, served by
//! the API's process (`lethe run`, `lethe serve`). Sign-in with an operator or auditor API
//! key; a signed HttpOnly, SameSite=Strict session cookie; a CSRF token on every form;
//! every action an event naming the key (`console:NAME`). No JavaScript, no CDN: HTML from
//! compile-time templates (maud, escaped), SVG charts, one CSS file.
//!
//! Invariant: nothing changes on a GET; a POST changes nothing without a valid session,
//! its CSRF token, an operator key and an explicit confirmation.

pub mod chart;
mod dashboard;
mod errored;
mod layout;
mod lookup;
mod retirement;
pub mod session;
mod signin;

use crate::clock::Clock;
use crate::config::Pipeline;
use crate::domain::StateGraph;
use crate::store::Store;
use axum::Router;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use layout::Page;
use session::{Session, Signer};
use std::sync::Arc;

/// What the pages share.
pub struct ConsoleState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The pipeline (keys, stages, services, policy).
    pub pipeline: Arc<Pipeline>,
    /// The states.
    pub graph: StateGraph,
    /// Sessions expire and pages tell ages by this clock.
    pub clock: Arc<dyn Clock>,
    /// For lookups by email or subject id after the PII is erased.
    pub hash_key: Option<crate::pii::HashKey>,
    /// Whether this process runs the driver (`lethe run`) or only serves (`lethe serve`).
    pub runs_driver: bool,
    signer: Signer,
    /// The chart's closed days, read once a day (see `dashboard::ClosedDays`).
    closed_days: std::sync::Mutex<Option<dashboard::ClosedDays>>,
}

impl ConsoleState {
    /// The console over `store` for `pipeline`; sessions are signed with
    /// `LETHE_CONSOLE_SECRET` when set, else with a random secret of this process.
    pub fn new(
        store: Arc<dyn Store>,
        pipeline: Arc<Pipeline>,
        graph: StateGraph,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let signer = match &pipeline.api.console_secret {
            Some(secret) => Signer::new(secret.expose().as_bytes()),
            None => Signer::random(),
        };
        Self {
            store,
            pipeline,
            graph,
            clock,
            hash_key: None,
            runs_driver: false,
            signer,
            closed_days: std::sync::Mutex::new(None),
        }
    }

    /// With the hash key.
    pub fn with_hash_key(mut self, key: Option<crate::pii::HashKey>) -> Self {
        self.hash_key = key;
        self
    }

    /// Saying whether this process runs the driver.
    pub fn with_driver(mut self, runs_driver: bool) -> Self {
        self.runs_driver = runs_driver;
        self
    }

    /// The session the request's cookie opens: none is a redirect to the sign-in page, a
    /// forged, expired or orphaned one a 401 page saying which.
    fn session(&self, headers: &HeaderMap) -> Result<Session, Page> {
        let Some(cookie) = session::cookie(headers, session::SESSION_COOKIE) else {
            return Err(Page::redirect("/ui/signin"));
        };
        self.signer
            .check(cookie, &self.pipeline.api.keys, self.clock.now())
            .map_err(|why| signin::page(self, headers, Some(&why.to_string()), 401))
    }

    /// [`Self::session`] for a form: its CSRF token must be the session's.
    fn posted(&self, headers: &HeaderMap, form: &Form) -> Result<Session, Page> {
        let session = self.session(headers)?;
        match self
            .signer
            .csrf_ok(&session, form.get("csrf").unwrap_or(""))
        {
            true => Ok(session),
            false => Err(Page::error(
                Some(&session),
                self,
                400,
                "The form's security token is missing or wrong",
                "Nothing was changed. Reload the page and try again.",
            )),
        }
    }

    /// [`Self::posted`] for an action: only an operator acts.
    fn acting(&self, headers: &HeaderMap, form: &Form) -> Result<Session, Page> {
        let session = self.posted(headers, form)?;
        if !session.acts() {
            return Err(Page::error(
                Some(&session),
                self,
                403,
                "An auditor key reads; only an operator key acts",
                "Nothing was changed.",
            ));
        }
        Ok(session)
    }

    fn csrf(&self, session: &Session) -> String {
        self.signer.csrf(session)
    }
}

/// A form's fields (`application/x-www-form-urlencoded`), the first value of each name.
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Self {
        Form(url::form_urlencoded::parse(body).into_owned().collect())
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The console's routes, under `/ui`.
pub fn router(state: Arc<ConsoleState>) -> Router {
    Router::new()
        .route("/ui", get(dashboard::page))
        .route("/ui/", get(dashboard::page))
        .route("/ui/style.css", get(layout::style))
        .route("/ui/signin", get(signin::form).post(signin::submit))
        .route("/ui/signout", post(signin::signout))
        .route("/ui/errored", get(errored::page))
        .route("/ui/retirements/{id}", get(retirement::page))
        .route("/ui/retirements/{id}/resume", post(errored::resume))
        .route("/ui/retirements/{id}/abort", post(errored::abort))
        .route("/ui/lookup", get(lookup::page).post(lookup::search))
        .route("/ui/audit.csv", get(lookup::export))
        .with_state(state)
}
