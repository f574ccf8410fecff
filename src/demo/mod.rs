//! `lethe demo`: the whole edX pipeline in seconds, on embedded SQLite by default. It
//! writes the shipped preset with an overlay (periods compressed, URLs pointed at
//! in-process stand-ins) beside a synthetic edX source, then runs the real scan, driver,
//! handlers and API: an SMTP server writing `.eml` files, a Sarbacane stand-in, and
//! downstream services that pull and acknowledge over HTTP with their service keys. The
//! source may be an empty MySQL/MariaDB database, the store PostgreSQL, the SMTP server an
//! external catcher (as in docker/compose.yaml).

mod follow;
mod overlay;
mod paths;
mod report;
mod smtp;
pub mod source;
mod standins;

pub use overlay::merge;
pub use paths::{Paths, shown};
pub use report::{Notable, Report};
pub use source::{Cast, MIN_USERS};

use crate::config::Config;
use crate::driver::Driver;
use crate::pii::HashKey;
use follow::Watch;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The demo's hash key: its data is synthetic, the key is not a secret.
pub const HASH_KEY: &str = "lethe-demo-hash-key-not-a-secret";

/// The most users a demo generates.
pub const MAX_USERS: i64 = 10_000_000;

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Users in the synthetic source.
    pub users: i64,
    /// Where its files go (created; an earlier demo's files there are replaced).
    pub dir: PathBuf,
    /// An empty MySQL/MariaDB database to create the source in (default: SQLite in `dir`).
    pub source: Option<String>,
    /// The store (default: SQLite in `dir`); refused when it holds retirements.
    pub store: Option<String>,
    /// An SMTP server, `HOST:PORT`, no TLS nor auth (default: the built-in one).
    pub smtp: Option<String>,
    /// Where the API listens (default: a free port on 127.0.0.1).
    pub listen: Option<String>,
}

impl Options {
    /// `users` users in `dir`, everything else built in.
    pub fn new(users: i64, dir: PathBuf) -> Options {
        Options {
            users,
            dir,
            source: None,
            store: None,
            smtp: None,
            listen: None,
        }
    }
}

/// Hears how the demo is getting on.
pub trait Progress: Send + Sync {
    /// A phase starts, with `total` steps.
    fn start(&self, phase: &str, total: u64);
    /// `done` steps of the current phase are done.
    fn set(&self, done: u64);
    /// The current phase is over.
    fn finish(&self);
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Bad options.
    #[error("{0}")]
    Options(String),
    /// A database the demo must not write into.
    #[error("{0}")]
    Refused(String),
    /// A file or a socket.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The demo's own configuration did not load (a bug in the overlay).
    #[error("the demo's configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The source.
    #[error(transparent)]
    Source(#[from] source::SourceError),
    /// The store.
    #[error("the demo's store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// Anything of the pipeline itself (stages, scan, driver).
    #[error("{0}")]
    Pipeline(String),
    /// Nothing moved for too long.
    #[error("the demo stalled in phase {phase}: {states}")]
    Stalled {
        /// The phase.
        phase: String,
        /// Retirements per state then.
        states: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

/// A finished demo: its report, its files, and its API, still serving until stopped.
pub struct Finished {
    /// What happened.
    pub report: Report,
    /// Where.
    pub paths: Paths,
    /// The API's base URL.
    pub api_url: String,
    /// A read-only (auditor) key for it.
    pub auditor_key: String,
    stop: watch::Sender<bool>,
    api: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Finished {
    /// Stops the API and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.api.await;
    }
}

/// A key of the demo's API.
pub(crate) struct DemoKey {
    name: &'static str,
    scope: &'static str,
    key: String,
    sha256: String,
}

/// The keys of the demo's API: one per downstream service, one for auditors.
fn keys() -> Vec<DemoKey> {
    [
        ("joanie", "service:joanie"),
        ("ashley", "service:ashley"),
        ("auditor", "auditor"),
    ]
    .into_iter()
    .map(|(name, scope)| {
        let (key, sha256) = crate::api::auth::new_key();
        DemoKey {
            name,
            scope,
            key,
            sha256,
        }
    })
    .collect()
}

/// The demo's secrets, in place of the environment: its stand-ins' credentials, and the
/// source's URL (it may hold a password, so it may not be in the files).
fn demo_env(name: &str, source_url: &str) -> Option<String> {
    match name {
        "LETHE_SARBACANE_ACCOUNT_ID" => Some("demo-account".into()),
        "LETHE_SARBACANE_API_KEY" => Some("demo-api-key".into()),
        _ if name == crate::config::SOURCE_URL_ENV
            || name == crate::config::env_key("edx", "URL") =>
        {
            Some(source_url.to_string())
        }
        _ => None,
    }
}

/// Binds `addr`; returns the listener and its address.
async fn bind(addr: &str) -> Result<(TcpListener, std::net::SocketAddr), DemoError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(io(format!("binding {addr}")))?;
    let local = listener
        .local_addr()
        .map_err(io(format!("reading the address bound for {addr}")))?;
    Ok((listener, local))
}

/// `--smtp HOST:PORT` read.
fn smtp_address(value: &str) -> Result<(String, u16), DemoError> {
    value
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
        .filter(|(host, port)| !host.is_empty() && *port > 0)
        .map(|(host, port)| (host.to_string(), port))
        .ok_or_else(|| {
            DemoError::Options(format!(
                "--smtp {value}: HOST:PORT expected (e.g. mailpit:1025)"
            ))
        })
}

/// Refuses a `--store` that already holds retirements (the demo's are synthetic) or a
/// schema older than this release: a deployment's store, never written to.
async fn refuse_used_store(url: &str) -> Result<(), DemoError> {
    let store = crate::store::open(url, 1).await?;
    let shown = crate::db::redact_url(url);
    match store.check_migrated().await {
        Err(crate::store::StoreError::NotMigrated) => {
            // Not lethe's yet: still only a database with nothing in it.
            return match tables_in(url).await {
                Ok(0) => Ok(()),
                Ok(n) => Err(DemoError::Refused(format!(
                    "--store {shown}: not empty ({n} tables): the demo writes only into an empty store"
                ))),
                Err(e) => Err(DemoError::Refused(format!(
                    "--store {shown}: cannot tell whether it is empty ({e})"
                ))),
            };
        }
        Err(crate::store::StoreError::Behind { .. }) => {
            return Err(DemoError::Refused(format!(
                "--store {shown}: an older lethe store: the demo needs a new, empty one"
            )));
        }
        Err(e) => return Err(e.into()),
        Ok(()) => {}
    }
    let held: i64 = store.stats().await?.iter().map(|(_, n)| *n).sum();
    match held {
        0 => Ok(()),
        n => Err(DemoError::Refused(format!(
            "--store {shown}: holds {n} retirements: the demo writes only into an empty store"
        ))),
    }
}

/// Tables in the current schema of the store at `url`.
async fn tables_in(url: &str) -> Result<i64, sqlx::Error> {
    use sqlx::Connection;
    match crate::db::Dialect::from_url(url) {
        Ok(crate::db::Dialect::Postgres) => {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()",
            )
            .fetch_one(&mut conn)
            .await
        }
        _ => {
            let mut conn = sqlx::SqliteConnection::connect(url).await?;
            sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'")
                .fetch_one(&mut conn)
                .await
        }
    }
}

/// Runs the demo; the API keeps serving on the demo's store until [`Finished::stop`].
pub async fn run(options: &Options, progress: &dyn Progress) -> Result<Finished, DemoError> {
    if !(MIN_USERS..=MAX_USERS).contains(&options.users) {
        return Err(DemoError::Options(format!(
            "--users {}: from {MIN_USERS} (the demo's cast needs ten inactive users) to {MAX_USERS}",
            options.users
        )));
    }
    let started = Instant::now();
    let paths = Paths::new(options);
    let cast = Cast::new(options.users);
    let key = HashKey::new(HASH_KEY.as_bytes().to_vec())
        .map_err(|e| DemoError::Pipeline(format!("the demo's hash key: {e}")))?;
    let smtp = options.smtp.as_deref().map(smtp_address).transpose()?;
    if let Some(url) = &options.source {
        if crate::db::Dialect::from_url(url) != Ok(crate::db::Dialect::MySql) {
            return Err(DemoError::Options(format!(
                "--source {}: a MySQL/MariaDB URL (mysql://…) expected",
                crate::db::redact_url(url)
            )));
        }
        source::check(url).await?;
    }
    if let Some(store) = &options.store {
        refuse_used_store(store).await?;
    }
    paths::check_dir(&paths)?;
    // The built-in SMTP server only without --smtp: it refuses the cast's moved-away mailbox.
    let (mail, smtp_host, smtp_port) = match smtp {
        Some((host, port)) => (None, host, port),
        None => {
            let sink = smtp::MailSink::start(paths.mail.clone(), vec![cast.email(cast.refused)])
                .await
                .map_err(io("starting the demo's SMTP server"))?;
            let port = sink.port;
            (Some(sink), "127.0.0.1".to_string(), port)
        }
    };
    let (sarbacane_listener, sarbacane) = bind("127.0.0.1:0").await?;
    let (api_listener, api) = bind(options.listen.as_deref().unwrap_or("127.0.0.1:0")).await?;
    // The stand-ins call the API on loopback whatever address it listens on.
    let api_url = match api.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            format!("http://127.0.0.1:{}", api.port())
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => format!("http://[::1]:{}", api.port()),
        _ => format!("http://{api}"),
    };
    let keys = keys();
    let overlay = overlay::overlay_text(&overlay::Settings {
        store_url: &paths.store_url,
        source_url: &paths.source_url,
        users: options.users,
        smtp: (&smtp_host, smtp_port),
        sarbacane: sarbacane.port(),
        api: api.to_string(),
        keys: &keys,
    });
    paths::write_files(&paths, &overlay)?;
    let mut phases: Vec<(String, Duration)> = Vec::new();

    let phase = Instant::now();
    progress.start("creating the edX source", options.users as u64);
    source::create(&paths.source_url, &cast, chrono::Utc::now(), &|n| {
        progress.set(n)
    })
    .await?;
    progress.finish();
    phases.push(("source".into(), phase.elapsed()));

    let env = |name: &str| demo_env(name, &paths.source_url);
    let config = Config::load(&paths.states, &paths.pipeline)?.with_env(&env)?;
    let pipeline = Arc::new(config.pipeline.clone());
    let graph = config.graph.clone();
    let store = crate::store::open(&paths.store_url, 8).await?;
    store.migrate().await?;
    store.sync_states(&graph).await?;
    let source_config = pipeline
        .source
        .clone()
        .ok_or_else(|| DemoError::Pipeline("the preset has no [source]".into()))?;
    let reader = crate::sql::source::SourceReader::connect_for(&source_config, &pipeline.rules)
        .await
        .map_err(|e| DemoError::Pipeline(format!("the demo's source: {e}")))?;

    let sarbacane = Arc::new(standins::Sarbacane::default());
    sarbacane.serve(
        sarbacane_listener,
        (1..=options.users).map(|i| cast.email(i)).collect(),
    );

    let phase = Instant::now();
    progress.start("scanning the source by rule", 1);
    let scans = crate::driver::scan::scan(
        store.as_ref(),
        &graph,
        &reader,
        &pipeline,
        &key,
        chrono::Utc::now(),
        crate::driver::scan::ScanOptions::default(),
    )
    .await
    .map_err(|e| DemoError::Pipeline(format!("the scan: {e}")))?;
    progress.finish();
    phases.push(("scan".into(), phase.elapsed()));
    if let Some(refused) = scans.iter().find_map(|s| s.counts.refused.as_ref()) {
        return Err(DemoError::Pipeline(format!(
            "the scan was refused: {refused}"
        )));
    }
    let enqueued: i64 = scans.iter().map(|s| s.counts.enqueued).sum();
    let excluded: i64 = scans.iter().map(|s| s.counts.excluded).sum();

    let (stop, stopped) = watch::channel(false);
    let api_state = Arc::new(
        crate::api::ApiState::new(
            store.clone(),
            pipeline.clone(),
            graph.clone(),
            Arc::new(crate::clock::SystemClock),
        )
        .with_source(Some(Arc::new(reader)))
        .with_hash_key(Some(key.clone())),
    );
    // The console too: the auditor key the demo prints signs in to it.
    let console = crate::console::ConsoleState::new(
        store.clone(),
        pipeline.clone(),
        graph.clone(),
        Arc::new(crate::clock::SystemClock),
    )
    .with_hash_key(Some(key.clone()))
    .with_driver(true);
    let api = {
        let mut stopped = stopped.clone();
        tokio::spawn(crate::api::serve(
            api_listener,
            api_state,
            crate::console::router(Arc::new(console)),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ))
    };
    let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::SystemClock);
    let handlers = crate::stages::build_from(crate::stages::BuildContext {
        pipeline: &pipeline,
        clock: clock.clone(),
        store: Some(store.clone()),
    })
    .await
    .map_err(|e| DemoError::Pipeline(format!("building the stages: {e}")))?;
    let driver = Arc::new(Driver::new(
        store.clone(),
        graph.clone(),
        pipeline.policy.clone(),
        pipeline.driver.clone(),
        handlers,
        crate::driver::unique_owner(),
        clock,
    ));
    let (driver_stop, driver_stopped) = watch::channel(false);
    let driving = {
        let driver = driver.clone();
        tokio::spawn(async move { driver.run(driver_stopped).await })
    };
    let consumers: Vec<standins::Consumer> = keys
        .iter()
        .filter(|k| k.scope.starts_with("service:"))
        .map(|k| standins::Consumer {
            service: k.name.to_string(),
            key: k.key.clone(),
            acked: Arc::new(AtomicU64::new(0)),
        })
        .collect();
    for consumer in &consumers {
        consumer.spawn(api_url.clone(), stopped.clone());
    }

    let watched = Watch {
        store: store.as_ref(),
        graph: &graph,
        pipeline: &pipeline,
        cast: &cast,
        key: &key,
        source_url: &paths.source_url,
    }
    .phases(enqueued, progress)
    .await;
    let _ = driver_stop.send(true);
    let driven = driving.await;
    let watched = watched?;
    match driven {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(DemoError::Pipeline(format!("the driver: {e}"))),
        Err(e) => return Err(DemoError::Pipeline(format!("the driver stopped: {e}"))),
    }
    phases.extend(watched);

    let mut report = Report {
        users: options.users,
        opened: enqueued,
        excluded,
        mail_files: mail.as_ref().map_or(0, |m| m.accepted()),
        mail_refused: mail.as_ref().map_or(0, |m| m.refused()),
        smtp: options.smtp.clone(),
        sarbacane_removed: sarbacane.removed(),
        acks: consumers
            .iter()
            .map(|c| {
                (
                    c.service.clone(),
                    c.acked.load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .collect(),
        ..Report::default()
    };
    let reasons: Vec<String> = pipeline
        .notices
        .all()
        .iter()
        .map(|p| p.reason.to_string())
        .collect();
    report::read(store.as_ref(), &graph, &cast, &key, &reasons, &mut report).await?;
    report.phases = phases;
    report.elapsed = started.elapsed();
    let auditor_key = keys
        .iter()
        .find(|k| k.scope == "auditor")
        .map(|k| k.key.clone())
        .unwrap_or_default();
    Ok(Finished {
        report,
        paths,
        api_url,
        auditor_key,
        stop,
        api,
    })
}

impl crate::error::Classified for DemoError {
    fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            DemoError::Options(_) => ErrorKind::Config,
            DemoError::Refused(_) => ErrorKind::Refused,
            DemoError::Source(e) if e.refused() => ErrorKind::Refused,
            DemoError::Io { .. } => ErrorKind::Unreachable,
            _ => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn smtp_addresses_are_host_and_port() {
        assert_eq!(
            super::smtp_address("mailpit:1025").unwrap(),
            ("mailpit".to_string(), 1025)
        );
        for bad in ["mailpit", ":1025", "mailpit:", "mailpit:0", "mailpit:70000"] {
            let e = super::smtp_address(bad).unwrap_err().to_string();
            assert!(e.contains("HOST:PORT expected"), "{bad}: {e}");
        }
    }
}
