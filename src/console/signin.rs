//! Signing in with an API key (operator or auditor; a service key is refused) and out.

use super::layout::{Page, https, shell};
use super::session::{SESSION_COOKIE, SIGNIN_COOKIE, cookie, set_cookie};
use super::{ConsoleState, Form};
use crate::config::{ApiKey, Scope};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use maud::html;
use std::sync::Arc;

/// The sign-in page with `message` (why the last attempt or the old session failed), a
/// fresh nonce in its cookie and the matching token in the form.
pub(super) fn page(
    state: &ConsoleState,
    headers: &HeaderMap,
    message: Option<&str>,
    status: u16,
) -> Page {
    let (nonce, token) = state.signer.signin();
    let body = html! {
        section.signin {
            h1 { "Sign in" }
            @if let Some(message) = message {
                p.error role="alert" { (message) }
            }
            p { "Sign in with an operator or auditor API key (" code { "lethe key new NAME --scope operator" } "). The key is not kept: the session is a signed cookie." }
            form method="post" action="/ui/signin" {
                input type="hidden" name="csrf" value=(token);
                label for="key" { "API key" }
                input id="key" type="password" name="key" autocomplete="off" required autofocus;
                button type="submit" { "Sign in" }
            }
        }
    };
    let mut page = Page::html(status, shell(state, None, "Sign in", body)).with_cookie(set_cookie(
        SIGNIN_COOKIE,
        &nonce,
        3600,
        https(headers),
    ));
    if status == 401 {
        // A refused session cookie is of no more use.
        page = page.with_cookie(set_cookie(SESSION_COOKIE, "", 0, https(headers)));
    }
    page
}

/// `GET /ui/signin`.
pub(super) async fn form(State(state): State<Arc<ConsoleState>>, headers: HeaderMap) -> Page {
    page(&state, &headers, None, 200)
}

/// `POST /ui/signin` with `key` and `csrf`.
pub(super) async fn submit(
    State(state): State<Arc<ConsoleState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Page {
    let form = Form::parse(&body);
    let nonce = cookie(&headers, SIGNIN_COOKIE).unwrap_or("");
    if !state
        .signer
        .signin_ok(nonce, form.get("csrf").unwrap_or(""))
    {
        return page(
            &state,
            &headers,
            Some("The sign-in form had expired or was not this console's: try again."),
            400,
        );
    }
    let given = form.get("key").unwrap_or("").trim();
    let Some(key) = (!given.is_empty())
        .then(|| ApiKey::matching(&state.pipeline.api.keys, given))
        .flatten()
    else {
        tracing::info!("console: sign-in refused: no such key");
        return page(
            &state,
            &headers,
            Some("No configured API key matches: check the key, or ask for one."),
            401,
        );
    };
    if let Scope::Service(service) = &key.scope {
        tracing::info!(key = %key.name, "console: sign-in refused: a service key");
        return page(
            &state,
            &headers,
            Some(&format!(
                "{} is a service key (for {service}'s pulls and acknowledgements): the console takes an operator or auditor key.",
                key.name
            )),
            403,
        );
    }
    let ttl = state.pipeline.api.session_ttl;
    let expires = crate::domain::after(state.clock.now(), ttl);
    tracing::info!(key = %key.name, scope = %key.scope, "console: signed in");
    Page::redirect("/ui")
        .with_cookie(set_cookie(
            SESSION_COOKIE,
            &state.signer.open(key, expires),
            ttl.as_secs() as i64,
            https(&headers),
        ))
        .with_cookie(set_cookie(SIGNIN_COOKIE, "", 0, https(&headers)))
}

/// `POST /ui/signout` with `csrf`: clears the cookie.
pub(super) async fn signout(
    State(state): State<Arc<ConsoleState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Page {
    let form = Form::parse(&body);
    // A stale or absent session signs out just the same; a foreign form does not.
    if state.session(&headers).is_ok()
        && let Err(page) = state.posted(&headers, &form)
    {
        return page;
    }
    Page::redirect("/ui/signin").with_cookie(set_cookie(SESSION_COOKIE, "", 0, https(&headers)))
}
