//! `lethe demo`: the whole edX pipeline on embedded SQLite in seconds. It writes the
//! shipped preset with an overlay (periods compressed, URLs pointed at in-process
//! stand-ins) beside a synthetic edX source, then runs the real scan, driver, handlers and
//! API: an SMTP server writing `.eml` files, a Sarbacane stand-in, and downstream services
//! that pull and acknowledge over HTTP with their service keys.

mod overlay;
mod report;
mod smtp;
pub mod source;
mod standins;

pub use overlay::merge;
pub use report::{Notable, Report};
pub use source::{Cast, MIN_USERS};

use crate::config::{Config, preset};
use crate::driver::Driver;
use crate::pii::HashKey;
use crate::store::Store;
use std::path::{Path, PathBuf};
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

/// The demo's files.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Its directory.
    pub dir: PathBuf,
    /// The merged pipeline.toml.
    pub pipeline: PathBuf,
    /// states.toml (the shipped one).
    pub states: PathBuf,
    /// What the demo changed in the preset.
    pub overlay: PathBuf,
    /// The SQLite store's URL.
    pub store_url: String,
    /// The SQLite source's URL.
    pub source_url: String,
    /// Where the `.eml` files are.
    pub mail: PathBuf,
}

impl Paths {
    fn new(dir: &Path) -> Paths {
        Paths {
            dir: dir.to_path_buf(),
            pipeline: dir.join("pipeline.toml"),
            states: dir.join("states.toml"),
            overlay: dir.join("overlay.toml"),
            store_url: format!("sqlite://{}", dir.join("lethe.db").display()),
            source_url: format!("sqlite://{}", dir.join("edx.db").display()),
            mail: dir.join("mail"),
        }
    }
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
struct DemoKey {
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

/// The overlay the demo applies to the shipped pipeline.toml.
fn overlay_text(
    paths: &Paths,
    users: i64,
    smtp: u16,
    sarbacane: u16,
    api: u16,
    keys: &[DemoKey],
) -> String {
    let mut text = format!(
        r#"# lethe demo: what the demo changes in the shipped edX preset. pipeline.toml beside
# this file is the preset with these values applied; states.toml and templates/ are the
# shipped ones, unchanged.

[store]
url = "{store}"

# Periods compressed from days to seconds.
[policy]
grace_period = "3s"
retry_base = "1s"
retry_cap = "5s"

[driver]
poll_interval = "50ms"

[[stage]]
state = "WARNED"
reminders = ["1s"]

# The in-process Sarbacane stand-in.
[[stage]]
state = "RETIRING_SARBACANE"
url = "http://127.0.0.1:{sarbacane}/v1"

# Acknowledgements are looked at again this often (the preset: 1h).
[[stage]]
state = "NOTIFIED"
recheck = "1s"

# The in-process SMTP server: it writes each message under mail/.
[email]
host = "127.0.0.1"
port = {smtp}
tls = "none"
rate_per_minute = 100000

# The synthetic edX database (SQLite); one scan may open every inactive user of the demo.
[source]
url = "{source}"
max_new_per_scan = {users}

[[target]]
name = "edx"
url = "{source}"
parallel_batches = 1

# The API, with a key for each downstream service and one for auditors.
[api]
listen = "127.0.0.1:{api}"
"#,
        store = paths.store_url,
        source = paths.source_url,
    );
    for DemoKey {
        name,
        scope,
        sha256,
        ..
    } in keys
    {
        text.push_str(&format!(
            "\n[[api_key]]\nname = \"{name}\"\nscope = \"{scope}\"\nsha256 = \"{sha256}\"\n"
        ));
    }
    text
}

/// The shipped pipeline.toml with `overlay` applied.
fn merged_pipeline(overlay: &str) -> Result<String, DemoError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        DemoError::Pipeline(format!("the demo's {what} is not TOML: {e}"))
    };
    let mut base: toml::Value =
        toml::from_str(preset::EDX_PIPELINE).map_err(|e| bad("preset", &e))?;
    let overlay: toml::Value = toml::from_str(overlay).map_err(|e| bad("overlay", &e))?;
    merge(&mut base, &overlay);
    let body = toml::to_string(&base).map_err(|e| bad("pipeline", &e))?;
    Ok(format!(
        "# Written by lethe demo: the shipped edX preset with overlay.toml applied.\n\n{body}"
    ))
}

/// Writes the demo's configuration files; an earlier demo's files in `dir` are replaced.
fn write_files(paths: &Paths, overlay: &str) -> Result<(), DemoError> {
    let dir = &paths.dir;
    // Only an empty directory or an earlier demo's: never a deployment's files.
    let used = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if used && !paths.overlay.exists() {
        return Err(DemoError::Options(format!(
            "--dir {}: not empty and not an earlier demo's (no overlay.toml): choose another",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    for stale in [
        "lethe.db",
        "lethe.db-wal",
        "lethe.db-shm",
        "edx.db",
        "edx.db-wal",
        "edx.db-shm",
    ] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let _ = std::fs::remove_dir_all(&paths.mail);
    std::fs::create_dir_all(&paths.mail).map_err(io("creating the mail directory"))?;
    let pipeline = merged_pipeline(overlay)?;
    let mut files: Vec<(&str, &str)> =
        vec![("overlay.toml", overlay), ("pipeline.toml", &pipeline)];
    files.extend(
        preset::Preset::Edx
            .files()
            .into_iter()
            .filter(|(p, _)| *p != "pipeline.toml"),
    );
    for (path, text) in files {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        std::fs::write(&file, text).map_err(io(format!("writing {}", file.display())))?;
    }
    Ok(())
}

/// The demo's secrets, in place of the environment.
fn demo_env(name: &str) -> Option<String> {
    match name {
        "LETHE_SARBACANE_ACCOUNT_ID" => Some("demo-account".into()),
        "LETHE_SARBACANE_API_KEY" => Some("demo-api-key".into()),
        _ => None,
    }
}

async fn bind() -> Result<(TcpListener, u16), DemoError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("binding a local port"))?;
    let port = listener
        .local_addr()
        .map_err(io("reading a local port"))?
        .port();
    Ok((listener, port))
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
    let paths = Paths::new(&options.dir);
    let cast = Cast::new(options.users);
    let key = HashKey::new(HASH_KEY.as_bytes().to_vec())
        .map_err(|e| DemoError::Pipeline(format!("the demo's hash key: {e}")))?;
    let mail = smtp::MailSink::start(paths.mail.clone(), vec![cast.email(cast.refused)])
        .await
        .map_err(io("starting the demo's SMTP server"))?;
    let (sarbacane_listener, sarbacane_port) = bind().await?;
    let (api_listener, api_port) = bind().await?;
    let keys = keys();
    let overlay = overlay_text(
        &paths,
        options.users,
        mail.port,
        sarbacane_port,
        api_port,
        &keys,
    );
    write_files(&paths, &overlay)?;
    let mut phases: Vec<(String, Duration)> = Vec::new();

    let phase = Instant::now();
    progress.start("creating the edX source", options.users as u64);
    source::create(&paths.source_url, &cast, chrono::Utc::now(), &|n| {
        progress.set(n)
    })
    .await?;
    progress.finish();
    phases.push(("source".into(), phase.elapsed()));

    let config = Config::load(&paths.states, &paths.pipeline)?.with_env(&demo_env)?;
    let pipeline = Arc::new(config.pipeline.clone());
    let graph = config.graph.clone();
    let store = crate::store::open(&paths.store_url, 8).await?;
    store.migrate().await?;
    store.sync_states(&graph).await?;
    let source_config = pipeline
        .source
        .clone()
        .ok_or_else(|| DemoError::Pipeline("the preset has no [source]".into()))?;
    let reader = crate::sql::source::SourceReader::connect(&source_config)
        .await
        .map_err(|e| DemoError::Pipeline(format!("the demo's source: {e}")))?;

    let sarbacane = Arc::new(standins::Sarbacane::default());
    sarbacane.serve(
        sarbacane_listener,
        (1..=options.users).map(|i| cast.email(i)).collect(),
    );

    let phase = Instant::now();
    progress.start("scanning for inactive users", 1);
    let scan = crate::driver::scan::scan(
        store.as_ref(),
        &graph,
        &reader,
        &source_config,
        &pipeline.policy,
        &key,
        chrono::Utc::now(),
        crate::driver::scan::ScanOptions {
            dry_run: false,
            limit: None,
        },
    )
    .await
    .map_err(|e| DemoError::Pipeline(format!("the scan: {e}")))?;
    progress.finish();
    phases.push(("scan".into(), phase.elapsed()));
    if let Some(refused) = &scan.counts.refused {
        return Err(DemoError::Pipeline(format!(
            "the scan was refused: {refused}"
        )));
    }

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
    let api = {
        let mut stopped = stopped.clone();
        tokio::spawn(crate::api::serve(api_listener, api_state, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }))
    };
    let api_url = format!("http://127.0.0.1:{api_port}");
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
    .phases(scan.counts.enqueued, progress)
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
        opened: scan.counts.enqueued,
        excluded: scan.counts.excluded,
        mail_files: mail.accepted(),
        mail_refused: mail.refused(),
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
    report::read(store.as_ref(), &graph, &cast, &key, &mut report).await?;
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

/// What following the run needs.
struct Watch<'a> {
    store: &'a dyn Store,
    graph: &'a crate::domain::StateGraph,
    pipeline: &'a crate::config::Pipeline,
    cast: &'a Cast,
    key: &'a HashKey,
    source_url: &'a str,
}

impl Watch<'_> {
    /// Follows the retirements through the working states, one progress phase per state,
    /// until each has ended or stopped in ERRORED; logs the returning user in once warned.
    async fn phases(
        &self,
        opened: i64,
        progress: &dyn Progress,
    ) -> Result<Vec<(String, Duration)>, DemoError> {
        let Watch {
            store,
            graph,
            pipeline,
            cast,
            key,
            source_url,
        } = *self;
        let working = graph.working().to_vec();
        let returning = crate::store::Lookup::Subject {
            raw: cast.returning.to_string(),
            subject_hash: Some(key.subject(&cast.returning.to_string())),
            email_hash: None,
        };
        let mut logged_in = false;
        let mut timings = Vec::new();
        let stall_limit = Duration::from_secs(60);
        for (index, state) in working.iter().enumerate() {
            let phase = Instant::now();
            let description = match pipeline.stage(state) {
                Some(stage) => format!("{state} ({})", stage.kind),
                None => state.clone(),
            };
            progress.start(&description, opened as u64);
            let (mut last, mut moved) = (-1i64, Instant::now());
            loop {
                let counts = store.stats().await?;
                // Past this state: in a later working state, ended, or parked in ERRORED.
                let past: i64 = counts
                    .iter()
                    .filter(|(s, _)| {
                        working
                            .iter()
                            .position(|w| w == s)
                            .is_none_or(|i| i > index)
                    })
                    .map(|(_, n)| *n)
                    .sum();
                progress.set(past as u64);
                if !logged_in
                    && let Some(r) = store.find(&returning).await?
                    && r.warned_at.is_some()
                {
                    // The source may be busy with a deletion: tried again at the next tick.
                    match source::log_in(source_url, cast.returning, chrono::Utc::now()).await {
                        Ok(()) => logged_in = true,
                        Err(e) => tracing::warn!(error = %e, "demo: logging the returning user in"),
                    }
                }
                if past >= opened {
                    break;
                }
                if past != last {
                    (last, moved) = (past, Instant::now());
                } else if moved.elapsed() > stall_limit {
                    let states: Vec<String> =
                        counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
                    return Err(DemoError::Stalled {
                        phase: description,
                        states: states.join(", "),
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            progress.finish();
            timings.push((state.to_lowercase(), phase.elapsed()));
        }
        Ok(timings)
    }
}

impl crate::error::Classified for DemoError {
    fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            DemoError::Options(_) => ErrorKind::Config,
            DemoError::Io { .. } => ErrorKind::Unreachable,
            _ => ErrorKind::Internal,
        }
    }
}
