//! The page shell (navigation, who is signed in, sign-out), the response a page becomes,
//! error pages, the CSS, and how times and ages are shown.

use super::ConsoleState;
use super::session::Session;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

/// What a console handler answers: a page, or a redirect, with the cookies it sets.
pub(crate) struct Page {
    status: StatusCode,
    body: Option<String>,
    location: Option<String>,
    cookies: Vec<String>,
}

impl Page {
    /// An HTML page with `status`.
    pub(crate) fn html(status: u16, markup: Markup) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            body: Some(markup.into_string()),
            location: None,
            cookies: Vec::new(),
        }
    }

    /// A 303 to `to` (after a POST, or to the sign-in page).
    pub(crate) fn redirect(to: &str) -> Self {
        Self {
            status: StatusCode::SEE_OTHER,
            body: None,
            location: Some(to.to_string()),
            cookies: Vec::new(),
        }
    }

    /// Also sets this cookie (a `Set-Cookie` value).
    pub(crate) fn with_cookie(mut self, cookie: String) -> Self {
        self.cookies.push(cookie);
        self
    }

    /// A page that says what went wrong (`title`) and what it means (`detail`).
    pub(crate) fn error(
        session: Option<&Session>,
        state: &ConsoleState,
        status: u16,
        title: &str,
        detail: &str,
    ) -> Self {
        let body = html! {
            h1 { (title) }
            p.error role="alert" { (detail) }
            p { a href="/ui" { "Back to the dashboard" } }
        };
        Self::html(status, shell(state, session, title, body))
    }

    /// A 500 page; the log says what failed, the page does not.
    pub(crate) fn internal(
        session: Option<&Session>,
        state: &ConsoleState,
        doing: &str,
        error: &dyn std::fmt::Display,
    ) -> Self {
        tracing::error!(error = %error, "console: {doing} failed");
        Self::error(
            session,
            state,
            500,
            "Something failed on the server",
            &format!(
                "{doing} failed; the server's log says why. Nothing was changed by this page."
            ),
        )
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut response = match self.body {
            Some(body) => (
                self.status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                body,
            )
                .into_response(),
            None => self.status.into_response(),
        };
        let headers = response.headers_mut();
        if let Some(location) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            headers.insert(header::LOCATION, location);
        }
        for cookie in self.cookies {
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                headers.append(header::SET_COOKIE, value);
            }
        }
        // Pages hold operator data: not cached, not framed, no scripts, no third party.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        response
    }
}

/// The shell of every page: the navigation, who is signed in, and `main`.
pub(crate) fn shell(
    state: &ConsoleState,
    session: Option<&Session>,
    title: &str,
    main: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · lethe" }
                link rel="stylesheet" href="/ui/style.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Console" {
                        a.brand href="/ui" { "lethe" }
                        @if let Some(session) = session {
                            a href="/ui" { "Dashboard" }
                            a href="/ui/errored" { "Errored" }
                            a href="/ui/lookup" { "Lookup" }
                            span.who { "Signed in as " strong { (session.name) } " (" (session.scope) ")" }
                            form.inline method="post" action="/ui/signout" {
                                input type="hidden" name="csrf" value=(state.csrf(session));
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" { (main) }
            }
        }
    }
}

/// `/ui/style.css`.
pub(crate) async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("style.css"),
    )
        .into_response()
}

/// A time as pages show it: to the minute, UTC.
pub(crate) fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// How long ago `at` was, in the two largest units (`3d 4h`, `5m`).
pub(crate) fn age(now: DateTime<Utc>, at: DateTime<Utc>) -> String {
    let secs = (now - at).num_seconds().max(0);
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// Whether the request came over HTTPS (a proxy says so): session cookies are `Secure` then.
pub(crate) fn https(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_in_two_units() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let ago = |s: i64| age(now, now - chrono::Duration::seconds(s));
        assert_eq!(ago(42), "42s");
        assert_eq!(ago(300), "5m");
        assert_eq!(ago(3 * 3600 + 60), "3h 1m");
        assert_eq!(ago(3 * 86_400 + 4 * 3600), "3d 4h");
        assert_eq!(ago(-5), "0s");
    }
}
