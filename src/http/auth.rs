//! How a stage's requests authenticate: a static header from the environment, or an
//! OAuth2 client-credentials token, cached until shortly before it expires and fetched
//! again when the service answers 401.

use super::{Call, Client, HttpError, reply};
use crate::config::{HttpAuth, Secret};
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use std::time::{Duration, Instant};

/// The header a request authenticates with.
pub type Credential = (HeaderName, HeaderValue);

/// A stage's authentication.
pub enum Auth {
    /// No header.
    None,
    /// The same header on every request.
    Static(Credential),
    /// A token fetched from the provider.
    Oauth2(TokenSource),
}

/// An OAuth2 client-credentials token endpoint, and the token it last gave.
pub struct TokenSource {
    url: url::Url,
    form: Secret,
    cached: tokio::sync::Mutex<Cached>,
}

/// The last token, or the last failure (kept briefly, so a batch waiting on a token
/// endpoint that is down shares one failure instead of each trying in turn).
#[derive(Default)]
struct Cached {
    token: Option<(HeaderValue, Instant)>,
    failed: Option<(String, Instant)>,
}

/// A token used when it has less than this left is fetched again first.
const MARGIN: Duration = Duration::from_secs(30);
/// How long a token without `expires_in` is used.
const UNSTATED_LIFETIME: Duration = Duration::from_secs(300);
/// The lifetimes a token is trusted for, whatever the endpoint says.
const LIFETIMES: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(86_400));
/// How long a failed token fetch answers for the next ones.
const FAILURE_KEPT: Duration = Duration::from_secs(5);

impl Auth {
    /// The auth `config` describes for `service`, with its `secret` from the environment
    /// (named by `var` when it is missing).
    pub fn new(
        service: &str,
        config: Option<&HttpAuth>,
        secret: Option<&Secret>,
        var: Option<&str>,
    ) -> Result<Self, HttpError> {
        let setup = |problem: String| HttpError::Setup {
            service: service.to_string(),
            problem,
        };
        let Some(config) = config else {
            return Ok(Auth::None);
        };
        let secret = secret.ok_or_else(|| {
            setup(format!(
                "set {} in the environment",
                var.unwrap_or("the stage's secret")
            ))
        })?;
        let sensitive = |text: String| {
            HeaderValue::from_str(&text)
                .map(|mut v| {
                    v.set_sensitive(true);
                    v
                })
                .map_err(|_| setup("the secret is not a valid header value".into()))
        };
        Ok(match config {
            HttpAuth::Bearer {} => Auth::Static((
                AUTHORIZATION,
                sensitive(format!("Bearer {}", secret.expose()))?,
            )),
            HttpAuth::Header { header, prefix } => Auth::Static((
                HeaderName::from_bytes(header.as_bytes())
                    .map_err(|_| setup(format!("{header:?} is not a header name")))?,
                sensitive(format!("{prefix}{}", secret.expose()))?,
            )),
            HttpAuth::Oauth2 {
                token_url,
                client_id,
                scope,
            } => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "client_credentials")
                    .append_pair("client_id", client_id)
                    .append_pair("client_secret", secret.expose());
                if let Some(scope) = scope {
                    form.append_pair("scope", scope);
                }
                Auth::Oauth2(TokenSource {
                    url: url::Url::parse(token_url)
                        .map_err(|e| setup(format!("token_url: {e}")))?,
                    form: Secret::new(form.finish()),
                    cached: tokio::sync::Mutex::new(Cached::default()),
                })
            }
        })
    }

    /// The header to send now (a token is fetched when none is fresh); `Err` says why
    /// none could be had.
    pub async fn credential(&self, client: &Client) -> Result<Option<Credential>, String> {
        match self {
            Auth::None => Ok(None),
            Auth::Static(header) => Ok(Some(header.clone())),
            Auth::Oauth2(source) => Ok(Some((AUTHORIZATION, source.token(client, None).await?))),
        }
    }

    /// After a 401 to a request sent with `used`: a fresh token, once; `None` when
    /// renewing cannot help (a static header).
    pub async fn renewed(
        &self,
        client: &Client,
        used: &Option<Credential>,
    ) -> Option<Result<Credential, String>> {
        let Auth::Oauth2(source) = self else {
            return None;
        };
        let used = used.as_ref().map(|(_, value)| value);
        Some(
            source
                .token(client, used)
                .await
                .map(|token| (AUTHORIZATION, token)),
        )
    }
}

impl TokenSource {
    /// The cached token while fresh and not `stale`, else a new one; one fetch at a time,
    /// so a batch waiting on an expired token fetches it once.
    async fn token(
        &self,
        client: &Client,
        stale: Option<&HeaderValue>,
    ) -> Result<HeaderValue, String> {
        let mut cached = self.cached.lock().await;
        let now = Instant::now();
        if let Some((token, until)) = &cached.token
            && now < *until
            && stale != Some(token)
        {
            return Ok(token.clone());
        }
        if let Some((error, at)) = &cached.failed
            && now.duration_since(*at) < FAILURE_KEPT
        {
            return Err(error.clone());
        }
        match self.fetch(client).await {
            Ok((token, lifetime)) => {
                let lifetime = lifetime.clamp(LIFETIMES.0, LIFETIMES.1);
                let until = Instant::now() + lifetime.saturating_sub(MARGIN.min(lifetime / 2));
                cached.token = Some((token.clone(), until));
                cached.failed = None;
                Ok(token)
            }
            Err(error) => {
                cached.failed = Some((error.clone(), Instant::now()));
                Err(error)
            }
        }
    }

    async fn fetch(&self, client: &Client) -> Result<(HeaderValue, Duration), String> {
        let mut call = Call::new(reqwest::Method::POST, self.url.clone());
        call.headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        call.body = Some(self.form.expose().as_bytes().to_vec());
        let reply = client
            .send(&call)
            .await
            .map_err(|e| format!("cannot fetch a token: {e}"))?;
        if !(200..300).contains(&reply.status) {
            return Err(format!(
                "the token endpoint refused: {}",
                reply::summary(reply.status, &reply.body, &[])
            ));
        }
        parse_token(&reply.body)
    }
}

/// The bearer header and lifetime of a token endpoint's JSON reply.
fn parse_token(body: &str) -> Result<(HeaderValue, Duration), String> {
    let value: serde_json::Value = serde_json::from_str(body)
        .map_err(|_| "the token endpoint's reply is not JSON".to_string())?;
    let token = value
        .get("access_token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "the token endpoint's reply has no access_token".to_string())?;
    let lifetime = value
        .get("expires_in")
        .and_then(|e| e.as_u64())
        .map_or(UNSTATED_LIFETIME, Duration::from_secs);
    let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "the access_token is not a valid header value".to_string())?;
    header.set_sensitive(true);
    Ok((header, lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_replies_are_read_or_refused_plainly() {
        let (header, lifetime) =
            parse_token(r#"{"access_token":"abc","expires_in":60,"token_type":"Bearer"}"#).unwrap();
        assert_eq!(header.to_str().unwrap(), "Bearer abc");
        assert!(header.is_sensitive());
        assert_eq!(lifetime, Duration::from_secs(60));
        assert_eq!(
            parse_token(r#"{"access_token":"abc"}"#).unwrap().1,
            UNSTATED_LIFETIME
        );
        assert!(parse_token("<html>").unwrap_err().contains("not JSON"));
        assert!(parse_token("{}").unwrap_err().contains("access_token"));
    }
}
