//! Settings of the generic `http` stage: one configured request per subject (an optional
//! lookup first), the statuses that count as done or gone, and how it authenticates.

use super::http::{Secret, check_url, secret, secret_env};
use super::template::{Template, Values, Var, body_template, header_templates, url_template};
use serde::Deserialize;

/// The methods an http stage may use.
pub const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// How an http stage authenticates.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HttpAuth {
    /// `Authorization: Bearer <LETHE_HTTP_<NAME>_TOKEN>` (a struct variant, so a stray
    /// key such as `header` is refused rather than ignored).
    Bearer {},
    /// `<header>: <prefix><LETHE_HTTP_<NAME>_TOKEN>` (Elasticsearch: `Authorization`,
    /// `ApiKey `).
    Header {
        /// The header's name.
        header: String,
        /// What goes before the token.
        #[serde(default)]
        prefix: String,
    },
    /// OAuth2 client credentials: a token from `token_url` for `client_id` and
    /// `LETHE_HTTP_<NAME>_CLIENT_SECRET`, sent as a bearer token, cached until shortly
    /// before it expires and fetched again once on a 401.
    Oauth2 {
        /// The token endpoint.
        token_url: String,
        /// The client id.
        client_id: String,
        /// Scopes to ask for, if the provider needs them.
        #[serde(default)]
        scope: Option<String>,
    },
}

/// A request made before the main one to find the service's own id of the user.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupSettings {
    /// The method (GET by default).
    #[serde(default = "default_lookup_method")]
    pub method: String,
    /// The URL template (it cannot use `{{ lookup.id }}`).
    #[serde(deserialize_with = "url_template")]
    pub url: Template,
    /// Headers, as templates.
    #[serde(default, deserialize_with = "header_templates")]
    pub headers: Vec<(String, Template)>,
    /// JSON pointer to the id in the reply (`/0/id`, `/data/0/id`). An empty list where
    /// it points means the user is already gone; a reply without that list fails.
    pub pointer: String,
    /// Statuses of the lookup that mean the user is gone (none by default: a 404 is more
    /// often a wrong URL than a missing user).
    #[serde(default)]
    pub gone: Vec<u16>,
}

http_stage_settings! {
    /// Settings of an http stage; its secrets come from `LETHE_HTTP_<NAME>_TOKEN` or
    /// `LETHE_HTTP_<NAME>_CLIENT_SECRET`.
    pub struct HttpSettings {
        /// The service's name: in events, errors and its secrets' variable names.
        pub name: String,
        /// The method of the main request.
        #[serde(default = "default_method")]
        pub method: String,
        /// The URL template of the main request.
        #[serde(deserialize_with = "url_template")]
        pub url: Template,
        /// Headers of both requests, as templates.
        #[serde(default, deserialize_with = "header_templates")]
        pub headers: Vec<(String, Template)>,
        /// A JSON body template, if the request has a body.
        #[serde(default, deserialize_with = "body_template")]
        pub body: Option<Template>,
        /// Statuses that mean done; empty means any 2xx.
        #[serde(default)]
        pub ok: Vec<u16>,
        /// Statuses that mean already gone (also success).
        #[serde(default = "default_gone")]
        pub gone: Vec<u16>,
        /// The lookup request, if the service keys users by its own id.
        #[serde(default)]
        pub lookup: Option<LookupSettings>,
        /// How requests authenticate; none by default.
        #[serde(default)]
        pub auth: Option<HttpAuth>,
        /// A URL `check --connect` GETs with the stage's auth, expecting 2xx (a cheap
        /// authenticated read, such as a count).
        #[serde(default)]
        pub probe_url: Option<String>,
        /// From `LETHE_HTTP_<NAME>_TOKEN` or `LETHE_HTTP_<NAME>_CLIENT_SECRET`.
        #[serde(skip)]
        pub secret: Option<Secret>,
    }
}

impl HttpSettings {
    /// The environment variable holding this stage's secret, if its auth needs one.
    pub fn secret_var(&self) -> Option<String> {
        let key = match self.auth.as_ref()? {
            HttpAuth::Bearer {} | HttpAuth::Header { .. } => "token",
            HttpAuth::Oauth2 { .. } => "client_secret",
        };
        Some(secret_env("http", Some(&self.name), key))
    }

    /// Takes the secret from the environment.
    pub(crate) fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        self.secret = self.secret_var().and_then(|var| secret(env, &var));
    }

    /// Checks values; errors are (key, problem).
    pub(crate) fn check(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, problem: String| Err((key.to_string(), problem));
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return bad(
                "name",
                format!(
                    "{:?}: letters, digits and _ only (it names LETHE_HTTP_<NAME>_* variables)",
                    self.name
                ),
            );
        }
        check_method(&self.method).or_else(|p| bad("method", p))?;
        check_url_template(&self.url).or_else(|p| bad("url", p))?;
        for (name, template) in &self.headers {
            check_header(name, template).or_else(|p| bad("headers", p))?;
        }
        if let Some(body) = &self.body {
            let text = body.render(&Values::sample()).unwrap_or_default();
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
                return bad(
                    "body",
                    format!(
                        "{:?} is not JSON once its variables are filled in ({e}); put string variables in quotes",
                        body.source()
                    ),
                );
            }
        }
        for (key, statuses) in [("ok", &self.ok), ("gone", &self.gone)] {
            if let Some(s) = statuses.iter().find(|s| !(100..=599).contains(*s)) {
                return bad(key, format!("{s} is not an HTTP status"));
            }
        }
        let uses_lookup = self.url.uses(Var::LookupId)
            || self.body.as_ref().is_some_and(|b| b.uses(Var::LookupId))
            || self.headers.iter().any(|(_, t)| t.uses(Var::LookupId));
        match &self.lookup {
            None if uses_lookup => {
                return bad(
                    "url",
                    "{{ lookup.id }} is used but the stage has no [stage.lookup] request".into(),
                );
            }
            None => {}
            Some(lookup) => {
                let at = |key: &str| format!("lookup.{key}");
                check_method(&lookup.method).map_err(|p| (at("method"), p))?;
                check_url_template(&lookup.url).map_err(|p| (at("url"), p))?;
                let own_id = lookup.url.uses(Var::LookupId)
                    || lookup.headers.iter().any(|(_, t)| t.uses(Var::LookupId));
                if own_id {
                    return Err((
                        at("url"),
                        "the lookup cannot use {{ lookup.id }}: it finds it".into(),
                    ));
                }
                for (name, template) in &lookup.headers {
                    check_header(name, template).map_err(|p| (at("headers"), p))?;
                }
                check_pointer(&lookup.pointer).map_err(|p| (at("pointer"), p))?;
            }
        }
        match &self.auth {
            Some(HttpAuth::Header { header, .. }) => {
                check_header_name(header).or_else(|p| bad("auth", p))?
            }
            Some(HttpAuth::Oauth2 { token_url, .. }) => {
                check_url(token_url).or_else(|p| bad("auth", format!("token_url: {p}")))?
            }
            _ => {}
        }
        if let Some(url) = &self.probe_url {
            check_url(url).or_else(|p| bad("probe_url", p))?;
        }
        self.limits().check()
    }
}

fn check_method(method: &str) -> Result<(), String> {
    match METHODS.contains(&method) {
        true => Ok(()),
        false => Err(format!(
            "{method:?}: not a method lethe sends (allowed: {})",
            METHODS.join(", ")
        )),
    }
}

fn check_url_template(template: &Template) -> Result<(), String> {
    let url = template.render(&Values::sample()).unwrap_or_default();
    check_url(&url).map_err(|p| format!("{:?}: {p}", template.source()))
}

fn check_header(name: &str, template: &Template) -> Result<(), String> {
    check_header_name(name)?;
    if template.source().chars().any(char::is_control) {
        return Err(format!("header {name}: the value has a control character"));
    }
    Ok(())
}

fn check_header_name(name: &str) -> Result<(), String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    match !name.is_empty() && name.chars().all(token) {
        true => Ok(()),
        false => Err(format!("{name:?} is not a header name")),
    }
}

/// A JSON pointer (RFC 6901): empty, or `/` segments with `~0` and `~1` as the only escapes.
fn check_pointer(pointer: &str) -> Result<(), String> {
    let bad = || format!("{pointer:?} is not a JSON pointer (e.g. /0/id, /data/0/id)");
    if pointer.is_empty() {
        return Ok(());
    }
    if !pointer.starts_with('/') {
        return Err(bad());
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(bad());
        }
    }
    Ok(())
}

fn default_method() -> String {
    "DELETE".into()
}

fn default_lookup_method() -> String {
    "GET".into()
}

fn default_gone() -> Vec<u16> {
    vec![404, 410]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_are_checked() {
        assert!(check_pointer("/0/id").is_ok());
        assert!(check_pointer("/a~1b/~0").is_ok());
        assert!(check_pointer("").is_ok());
        assert!(check_pointer("0/id").is_err());
        assert!(check_pointer("/a~2").is_err());
    }
}
