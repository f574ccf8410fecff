//! The HTTP client of the stages: one per stage (its connections reused), a timeout on
//! every request, a bound on requests in flight and on their rate, quick retries of one
//! request (connection reset, 429, 502/503/504, after `Retry-After`), and signing.
//!
//! Invariant: no URL, header value or body reaches an error or a log line (URLs carry
//! addresses in their query, headers carry keys); errors say what failed by its kind.

pub mod auth;
pub mod reply;
pub mod sign;

pub use reply::{ReplyClass, Statuses};

use crate::config::HttpLimits;
use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

/// A request that can be sent again as it is.
#[derive(Debug, Clone)]
pub struct Call {
    /// The method.
    pub method: reqwest::Method,
    /// The URL, query included.
    pub url: url::Url,
    /// Headers of this request (the client's own are added).
    pub headers: HeaderMap,
    /// A JSON body, if any.
    pub body: Option<Vec<u8>>,
}

impl Call {
    /// A request without a body.
    pub fn new(method: reqwest::Method, url: url::Url) -> Self {
        Self {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
        }
    }

    /// With a JSON body.
    pub fn json(mut self, body: Vec<u8>) -> Self {
        self.headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.body = Some(body);
        self
    }
}

/// A reply, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The body as text.
    pub body: String,
    /// What `Retry-After` asked for, if anything.
    pub retry_after: Option<Duration>,
}

/// A request that got no reply.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service}: {what}")]
pub struct CallError {
    /// The stage or service called.
    pub service: String,
    /// What went wrong, without the URL.
    pub what: String,
}

/// The client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A header or the TLS setup is wrong.
    #[error("{service}: cannot set up the HTTP client: {problem}")]
    Setup {
        /// The stage or service.
        service: String,
        /// What is wrong.
        problem: String,
    },
}

impl crate::error::Classified for HttpError {
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::Config
    }
}

/// One stage's client.
pub struct Client {
    service: String,
    inner: reqwest::Client,
    limits: HttpLimits,
    in_flight: tokio::sync::Semaphore,
    rate: Option<governor::DefaultDirectRateLimiter>,
    sent: std::sync::atomic::AtomicU64,
}

/// The longest `Retry-After` a quick retry waits for; longer goes to the driver's schedule.
const LONGEST_QUICK_WAIT: Duration = Duration::from_secs(30);

impl Client {
    /// A client for `service` with `limits`; `headers` go on every request (marked
    /// sensitive, so they are never printed).
    pub fn new(
        service: &str,
        limits: HttpLimits,
        headers: Vec<(&'static str, &str)>,
    ) -> Result<Self, HttpError> {
        let setup = |problem: String| HttpError::Setup {
            service: service.to_string(),
            problem,
        };
        // reqwest is built without a crypto provider of its own: ring, as lettre uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut defaults = HeaderMap::new();
        for (name, value) in headers {
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| setup(format!("the value of header {name} is not valid")))?;
            value.set_sensitive(true);
            defaults.insert(HeaderName::from_static(name), value);
        }
        let inner = reqwest::Client::builder()
            .user_agent(concat!("lethe/", env!("CARGO_PKG_VERSION")))
            .default_headers(defaults)
            .timeout(limits.timeout)
            .connect_timeout(limits.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(limits.concurrency)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| setup(e.without_url().to_string()))?;
        let rate = limits
            .rate_per_minute
            .and_then(NonZeroU32::new)
            .map(|rate| {
                let burst = NonZeroU32::new(rate.get() / 600).unwrap_or(NonZeroU32::MIN);
                governor::RateLimiter::direct(governor::Quota::per_minute(rate).allow_burst(burst))
            });
        Ok(Self {
            service: service.to_string(),
            inner,
            in_flight: tokio::sync::Semaphore::new(limits.concurrency),
            limits,
            rate,
            sent: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Requests sent so far (retries included).
    pub fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends `call`, retrying it quickly on a reset connection or a 429/502/503/504 (after
    /// `Retry-After` when the server gives one); the last reply is returned whatever its
    /// status, an error only when no reply came.
    pub async fn send(&self, call: &Call) -> Result<Reply, CallError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.limits.retry_delay)
            .with_max_delay(LONGEST_QUICK_WAIT)
            .with_max_times(self.limits.retries as usize)
            .with_jitter();
        let outcome = (|| async { self.attempt(call).await })
            .retry(backoff)
            .when(|a: &Attempt| a.retry)
            .adjust(|a: &Attempt, delay| {
                let asked = a.reply.as_ref().and_then(|r| r.retry_after);
                reply::next_delay(delay, asked, LONGEST_QUICK_WAIT)
            })
            .await;
        match outcome {
            Ok(reply) => Ok(reply),
            Err(Attempt {
                reply: Some(reply), ..
            }) => Ok(reply),
            Err(Attempt {
                error: Some(error), ..
            }) => Err(error),
            Err(_) => Err(self.failed("no reply".into())),
        }
    }

    /// One try: a reply, or why it should (or should not) be tried again.
    async fn attempt(&self, call: &Call) -> Result<Reply, Attempt> {
        if let Some(rate) = &self.rate {
            rate.until_ready().await;
        }
        let _slot = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| Attempt::failed(self.failed("client closed".into()), false))?;
        self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut request = self
            .inner
            .request(call.method.clone(), call.url.clone())
            .headers(call.headers.clone());
        if let Some(body) = &call.body {
            request = request.body(body.clone());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                // A connection that failed or was reset is tried again; a timeout is not
                // (the request may be running there: the driver's schedule retries it).
                let retry = !e.is_timeout() && (e.is_connect() || e.is_request());
                return Err(Attempt::failed(self.transport(e), retry));
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| reply::retry_after(v, SystemTime::now()));
        let body = match response.text().await {
            Ok(body) => body,
            Err(e) => return Err(Attempt::failed(self.transport(e), false)),
        };
        let reply = Reply {
            status,
            body,
            retry_after,
        };
        match reply::quick_retry(status) {
            true => Err(Attempt {
                retry: true,
                reply: Some(reply),
                error: None,
            }),
            false => Ok(reply),
        }
    }

    fn transport(&self, e: reqwest::Error) -> CallError {
        let what = if e.is_timeout() {
            format!("no reply within {:?}", self.limits.timeout)
        } else if e.is_connect() {
            "cannot connect".to_string()
        } else {
            // Without the URL: it carries the address.
            let e = e.without_url();
            let mut what = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                what = format!("{what}: {cause}");
                source = cause.source();
            }
            what
        };
        self.failed(what)
    }

    fn failed(&self, what: String) -> CallError {
        CallError {
            service: self.service.clone(),
            what,
        }
    }
}

/// A try that did not give a final reply.
struct Attempt {
    retry: bool,
    reply: Option<Reply>,
    error: Option<CallError>,
}

impl Attempt {
    fn failed(error: CallError, retry: bool) -> Self {
        Self {
            retry,
            reply: None,
            error: Some(error),
        }
    }
}
