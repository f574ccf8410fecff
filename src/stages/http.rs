//! `http`: one configured request per subject (Keycloak, WorkOS, Elasticsearch, a CRM…),
//! after an optional lookup of the service's own id. Success is an `ok` status, or a
//! `gone` one, or a lookup that finds nobody (already deleted).

use super::{BatchError, Handler, Reporter};
use crate::config::{HttpSettings, RenderError, Template, Values};
use crate::domain::{Outcome, StageResult};
use crate::http::auth::{Auth, Credential};
use crate::http::{Call, Client, Reply, ReplyClass, Statuses, reply};
use crate::store::Claimed;
use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// Calls one HTTP service per subject.
pub struct HttpHandler {
    service: Arc<Service>,
}

struct Service {
    settings: HttpSettings,
    client: Client,
    auth: Auth,
    statuses: Statuses,
}

/// One request of a subject, rendered.
struct Request<'a> {
    what: &'static str,
    method: &'a str,
    url: &'a Template,
    /// Headers besides the stage's own.
    extra_headers: &'a [(String, Template)],
    body: Option<&'a Template>,
}

/// Why a subject's request was not sent or not taken.
enum Stop {
    /// A value the templates need is missing (no email…) or cannot stand in a URL.
    Render(RenderError),
    /// The outcome is decided.
    Outcome(Outcome),
}

impl HttpHandler {
    /// A handler for `settings` (its secret already read from the environment).
    pub fn new(settings: HttpSettings) -> Result<Self, super::BuildError> {
        let var = settings.secret_var();
        let auth = Auth::new(
            &settings.name,
            settings.auth.as_ref(),
            settings.secret.as_ref(),
            var.as_deref(),
        )?;
        let client = Client::new(&settings.name, settings.limits(), Vec::new())?;
        let statuses = Statuses {
            ok: settings.ok.clone(),
            gone: settings.gone.clone(),
        };
        Ok(Self {
            service: Arc::new(Service {
                settings,
                client,
                auth,
                statuses,
            }),
        })
    }

    /// Requests sent so far, token fetches included (for tests).
    pub fn requests_sent(&self) -> u64 {
        self.service.client.sent()
    }

    /// What `check --connect` reports: a token fetched, then `probe_url` read (2xx), or
    /// without a probe the service's origin answering at all.
    pub async fn reach(&self) -> Result<String, String> {
        let service = &self.service;
        let credential = service.auth.credential(&service.client).await?;
        let token = matches!(service.auth, Auth::Oauth2(_)).then_some("token fetched; ");
        let (url, strict) = match &service.settings.probe_url {
            Some(url) => (url.clone(), true),
            None => {
                let sample = service
                    .settings
                    .url
                    .render(&Values::sample())
                    .unwrap_or_default();
                let origin = url::Url::parse(&sample)
                    .map(|u| u.origin().ascii_serialization())
                    .map_err(|e| e.to_string())?;
                (format!("{origin}/"), false)
            }
        };
        let url = url::Url::parse(&url).map_err(|e| e.to_string())?;
        let mut call = Call::new(reqwest::Method::GET, url);
        if let Some((name, value)) = credential {
            call.headers.insert(name, value);
        }
        let reply = service
            .client
            .send(&call)
            .await
            .map_err(|e| e.what.clone())?;
        let token = token.unwrap_or("");
        match (strict, (200..300).contains(&reply.status)) {
            (true, true) => Ok(format!("{token}probe answered HTTP {}", reply.status)),
            (true, false) => Err(format!(
                "{token}probe_url: {}",
                reply::summary(reply.status, &reply.body, &[])
            )),
            (false, _) => Ok(format!(
                "{token}the origin answered HTTP {} (set probe_url for an authenticated check)",
                reply.status
            )),
        }
    }
}

impl Service {
    /// The subject's lookup (if any) then its request.
    async fn retire(&self, c: &Claimed) -> StageResult {
        let mut values = Values {
            subject: &c.subject,
            email: c.email.as_deref().filter(|e| !e.is_empty()),
            username: c.username.as_deref().filter(|u| !u.is_empty()),
            reason: c.reason.as_str(),
            retirement_id: c.id,
            lookup_id: None,
        };
        let hide: Vec<&str> = values.email.into_iter().chain(values.username).collect();
        let settings = &self.settings;
        let found = match &settings.lookup {
            None => None,
            Some(lookup) => {
                let request = Request {
                    what: "lookup",
                    method: &lookup.method,
                    url: &lookup.url,
                    extra_headers: &lookup.headers,
                    body: None,
                };
                let reply = match self.send(&request, &values, &hide).await {
                    Ok(reply) => reply,
                    Err(stop) => return self.stopped(stop),
                };
                match self.found(&reply, lookup, &hide) {
                    Ok(Some(id)) => Some(id),
                    Ok(None) => {
                        return StageResult::new(Outcome::Done).with_detail(json!({
                            "service": settings.name,
                            "lookup": "not found: nothing to delete",
                        }));
                    }
                    Err(outcome) => return outcome.into(),
                }
            }
        };
        values.lookup_id = found.as_deref();
        let request = Request {
            what: "request",
            method: &settings.method,
            url: &settings.url,
            extra_headers: &[],
            body: settings.body.as_ref(),
        };
        let reply = match self.send(&request, &values, &hide).await {
            Ok(reply) => reply,
            Err(stop) => return self.stopped(stop),
        };
        let mut detail = json!({"service": settings.name, "status": reply.status});
        if found.is_some() {
            detail["lookup"] = json!("found");
        }
        match self.statuses.classify(reply.status) {
            ReplyClass::Ok => StageResult::new(Outcome::Done).with_detail(detail),
            ReplyClass::Gone => {
                detail["gone"] = json!(true);
                StageResult::new(Outcome::Done).with_detail(detail)
            }
            class => self.refused(&request, &reply, class, &hide).into(),
        }
    }

    /// The id the lookup's reply holds at its pointer: `None` when the list it points into
    /// is empty (or the status is one of the lookup's `gone`), an outcome when the reply
    /// is refused, is not JSON, has no such list, or holds several matches.
    fn found(
        &self,
        reply: &Reply,
        lookup: &crate::config::LookupSettings,
        hide: &[&str],
    ) -> Result<Option<String>, Outcome> {
        let name = &self.settings.name;
        let pointer = lookup.pointer.as_str();
        let statuses = Statuses {
            ok: Vec::new(),
            gone: lookup.gone.clone(),
        };
        match statuses.classify(reply.status) {
            ReplyClass::Ok => {}
            ReplyClass::Gone => return Ok(None),
            class => {
                let error = format!(
                    "{name} lookup: {}",
                    reply::summary(reply.status, &reply.body, hide)
                );
                return Err(super::refusal(class, reply.status, error));
            }
        }
        let value: serde_json::Value =
            serde_json::from_str(&reply.body).map_err(|_| Outcome::Fail {
                error: format!(
                    "{name} lookup: HTTP {} with a body that is not JSON; check lookup.url",
                    reply.status
                ),
            })?;
        let fail = |why: String| Outcome::Fail {
            error: format!("{name} lookup: {why}; check lookup.pointer"),
        };
        // The list the pointer indexes into (`/data` of `/data/0/id`): empty means gone.
        let segments: Vec<&str> = pointer.split('/').collect();
        let index = segments
            .iter()
            .rposition(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
        let list = index.map(|i| segments[..i].join("/"));
        if let Some(serde_json::Value::Array(items)) =
            list.as_deref().and_then(|l| value.pointer(l))
        {
            if items.is_empty() {
                return Ok(None);
            }
            if items.len() > 1 {
                return Err(fail(format!(
                    "{} users match, not one: nothing deleted",
                    items.len()
                )));
            }
        }
        match value.pointer(pointer) {
            Some(serde_json::Value::String(id)) if !id.is_empty() => Ok(Some(id.clone())),
            Some(serde_json::Value::Number(id)) => Ok(Some(id.to_string())),
            None => Err(fail(format!("the reply has nothing at {pointer}"))),
            Some(other) => Err(fail(format!(
                "{pointer} picks {}, not an id",
                json_kind(other)
            ))),
        }
    }

    /// Sends `request` with the stage's auth; on a 401 with an OAuth2 token, once more
    /// with a fresh token.
    async fn send(
        &self,
        request: &Request<'_>,
        values: &Values<'_>,
        hide: &[&str],
    ) -> Result<Reply, Stop> {
        let mut call = self.call(request, values)?;
        let credential = self
            .auth
            .credential(&self.client)
            .await
            .map_err(|error| self.retry(format!("{}: {error}", self.settings.name)))?;
        let reply = self.send_with(&mut call, &credential).await?;
        if reply.status != 401 {
            return Ok(reply);
        }
        match self.auth.renewed(&self.client, &credential).await {
            None => Ok(reply),
            Some(Ok(fresh)) => self.send_with(&mut call, &Some(fresh)).await,
            Some(Err(error)) => Err(self.retry(format!(
                "{} {}: {} and {error}",
                self.settings.name,
                request.what,
                reply::summary(reply.status, &reply.body, hide)
            ))),
        }
    }

    async fn send_with(
        &self,
        call: &mut Call,
        credential: &Option<Credential>,
    ) -> Result<Reply, Stop> {
        if let Some((name, value)) = credential {
            call.headers.insert(name.clone(), value.clone());
        }
        self.client
            .send(call)
            .await
            .map_err(|e| self.retry(e.to_string()))
    }

    /// The call of `request` for these values.
    fn call(&self, request: &Request<'_>, values: &Values<'_>) -> Result<Call, Stop> {
        let name = &self.settings.name;
        let url = request.url.render(values).map_err(Stop::Render)?;
        let url = url::Url::parse(&url).map_err(|e| {
            Stop::Outcome(Outcome::Fail {
                error: format!(
                    "{name} {}: the URL is not valid for this subject: {e}",
                    request.what
                ),
            })
        })?;
        let method =
            reqwest::Method::from_bytes(request.method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut call = Call::new(method, url);
        call.headers = self.headers(request, values)?;
        if let Some(body) = request.body {
            let text = body.render(values).map_err(Stop::Render)?;
            if serde_json::from_str::<serde_json::Value>(&text).is_err() {
                return Err(Stop::Outcome(Outcome::Fail {
                    error: format!(
                        "{name} {}: the body is not JSON for this subject; check body",
                        request.what
                    ),
                }));
            }
            let headers = std::mem::take(&mut call.headers);
            call = call.json(text.into_bytes());
            call.headers.extend(headers);
        }
        Ok(call)
    }

    /// The stage's headers, then the request's own, rendered.
    fn headers(&self, request: &Request<'_>, values: &Values<'_>) -> Result<HeaderMap, Stop> {
        let what = request.what;
        let mut headers = HeaderMap::new();
        for (name, template) in self.settings.headers.iter().chain(request.extra_headers) {
            let value = template.render(values).map_err(Stop::Render)?;
            let invalid = || {
                Stop::Outcome(Outcome::Fail {
                    error: format!(
                        "{} {what}: header {name} is not valid for this subject",
                        self.settings.name
                    ),
                })
            };
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
            let value = HeaderValue::from_str(&value).map_err(|_| invalid())?;
            headers.insert(name, value);
        }
        Ok(headers)
    }

    /// The outcome of a reply that is neither ok nor gone.
    fn refused(
        &self,
        request: &Request<'_>,
        reply: &Reply,
        class: ReplyClass,
        hide: &[&str],
    ) -> Outcome {
        let error = format!(
            "{} {} {}: {}",
            self.settings.name,
            request.method,
            path_of(request.url.source()),
            reply::summary(reply.status, &reply.body, hide)
        );
        super::refusal(class, reply.status, error)
    }

    fn retry(&self, error: String) -> Stop {
        Stop::Outcome(Outcome::Retry { error })
    }

    fn stopped(&self, stop: Stop) -> StageResult {
        match stop {
            Stop::Outcome(outcome) => outcome.into(),
            Stop::Render(RenderError::Missing(var)) => {
                StageResult::new(Outcome::Done).with_detail(json!({
                    "service": self.settings.name,
                    "skipped": format!(
                        "no {}: the request needs {{{{ {} }}}}",
                        var.name().replace('_', " "),
                        var.name()
                    ),
                }))
            }
            Stop::Render(RenderError::Unsafe(var)) => Outcome::Fail {
                error: format!(
                    "{}: the {{{{ {} }}}} of this subject (. or ..) would change the URL's path",
                    self.settings.name,
                    var.name()
                ),
            }
            .into(),
        }
    }
}

/// The path of a URL template as written (`/admin/realms/x/users/{{ lookup.id }}`): what
/// an error shows of a request, since the rendered URL holds the subject's values.
fn path_of(template: &str) -> &str {
    let after_scheme = template.find("://").map_or(0, |i| i + 3);
    let rest = &template[after_scheme..];
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    path.split('?').next().unwrap_or(path)
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Object(_) => "an object",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Null => "null",
        _ => "an empty string",
    }
}

#[async_trait]
impl Handler for HttpHandler {
    async fn handle(&self, batch: &[Claimed]) -> Result<HashMap<i64, StageResult>, BatchError> {
        self.handle_reporting(batch, &Reporter::none()).await
    }

    /// Calls for the subjects at once (the client bounds the requests in flight), handing
    /// each outcome over as it is decided.
    async fn handle_reporting(
        &self,
        batch: &[Claimed],
        reporter: &Reporter,
    ) -> Result<HashMap<i64, StageResult>, BatchError> {
        let service = self.service.clone();
        let work = batch.iter().map(|c| (c.id, c.clone())).collect();
        Ok(super::each_at_once(work, reporter, move |c: Claimed| {
            let service = service.clone();
            async move { service.retire(&c).await }
        })
        .await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_show_the_templates_path_only() {
        assert_eq!(
            path_of("https://kc.example.org/admin/realms/x/users/{{ lookup.id }}"),
            "/admin/realms/x/users/{{ lookup.id }}"
        );
        assert_eq!(path_of("https://x.org/users?email={{ email }}"), "/users");
        assert_eq!(path_of("https://x.org"), "/");
    }
}
