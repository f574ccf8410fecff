//! Test helpers: a fresh database per test (PostgreSQL or SQLite), dropped afterwards,
//! and the config fixtures.
#![allow(dead_code)]

pub mod browser;
pub mod edx;
pub mod history;
pub mod invariants;
pub mod mocks;
pub mod operator;
pub mod proxy;
pub mod services;
pub mod smtp;
pub mod target;

use lethe::config::{Config, Pipeline};
use lethe::domain::StateGraph;
use lethe::pii::HashKey;
use lethe::store::{self, NewRetirement, Store};
use sqlx::Connection;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Admin URL of the local PostgreSQL (database `test` exists on every machine).
pub fn pg_admin_url() -> String {
    services::require(services::Service::Postgres)
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Which backend a contract test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    Sqlite,
}

/// A database that exists for one test and is dropped (or deleted) at the end.
pub struct TestDb {
    pub url: String,
    kind: Kind,
    name: String,
}

impl TestDb {
    pub async fn new(kind: Kind) -> TestDb {
        let name = unique_name("lethe_t");
        match kind {
            Kind::Postgres => {
                let mut admin = sqlx::PgConnection::connect(&pg_admin_url())
                    .await
                    .expect("connect to PostgreSQL as its admin");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&mut admin)
                    .await
                    .expect("create the test database");
                let base = pg_admin_url();
                let root = &base[..base.rfind('/').expect("a database in the URL")];
                TestDb {
                    url: format!("{root}/{name}"),
                    kind,
                    name,
                }
            }
            Kind::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                TestDb {
                    url: format!("sqlite://{}", path.display()),
                    kind,
                    name: path.display().to_string(),
                }
            }
        }
    }

    /// Opens, migrates and syncs the store.
    pub async fn store(&self, graph: &StateGraph) -> Arc<dyn Store> {
        let store = store::open(&self.url, 8).await.expect("open the store");
        store.migrate().await.expect("migrate");
        store.sync_states(graph).await.expect("sync states");
        store
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match self.kind {
            Kind::Sqlite => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", self.name));
                }
            }
            Kind::Postgres => {
                let name = self.name.clone();
                // Drop runs outside any runtime we may block: use a thread with its own.
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(async {
                        if let Ok(mut admin) = sqlx::PgConnection::connect(&pg_admin_url()).await {
                            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                            )))
                            .execute(&mut admin)
                            .await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

pub const STATES: &str = r#"
[[state]]
name = "PENDING"
[[state]]
name = "WARNED"
[[state]]
name = "RETIRING_EDX"
[[state]]
name = "RETIRING_SARBACANE"
[[state]]
name = "NOTIFIED"
[[state]]
name = "COMPLETE"
role = "complete"
[[state]]
name = "ERRORED"
role = "errored"
[[state]]
name = "ABORTED"
role = "aborted"
"#;

/// A pipeline.toml with noop stages for the five working states of `STATES`.
pub fn noop_pipeline(extra_policy: &str, driver: &str) -> String {
    let mut text = format!(
        "[policy]\nmax_attempts = 3\nretry_base = \"1m\"\nretry_cap = \"1h\"\n{extra_policy}\n[driver]\n{driver}\n"
    );
    for state in [
        "PENDING",
        "WARNED",
        "RETIRING_EDX",
        "RETIRING_SARBACANE",
        "NOTIFIED",
    ] {
        text.push_str(&format!(
            "[[stage]]\nstate = \"{state}\"\nhandler = \"noop\"\n"
        ));
    }
    text
}

/// The validated fixture config.
pub fn config(pipeline: &str) -> (StateGraph, Pipeline) {
    Config::from_texts("states.toml", STATES, "pipeline.toml", pipeline).expect("valid fixture")
}

pub fn key() -> HashKey {
    HashKey::new("test-key-0123456789").expect("key")
}

/// New retirements for subjects `from..to`, with email and username.
pub fn subjects(from: u32, to: u32) -> Vec<NewRetirement> {
    let key = key();
    (from..to)
        .map(|i| {
            let email = format!("user{i}@example.org");
            NewRetirement {
                subject: i.to_string(),
                email_hash: Some(key.email(&email)),
                email: Some(email),
                username: Some(format!("user{i}")),
                reason: "inactive".into(),
                subject_hash: key.subject(&i.to_string()),
                locale: None,
                rule: None,
            }
        })
        .collect()
}

/// The repository root (for the shipped config files and the binary's working dir).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn t0() -> chrono::DateTime<chrono::Utc> {
    "2026-11-22T10:00:00Z".parse().expect("time")
}

/// The MariaDB admin URL of the tests (database `test` exists on every machine).
pub fn mysql_admin_url() -> String {
    services::require(services::Service::MariaDb)
}

/// Runs statements on any of the three databases, naming the one that fails.
pub async fn exec<S: AsRef<str>>(url: &str, statements: &[S]) {
    let d = lethe::sql::Dialect::from_url(url).unwrap();
    macro_rules! run {
        ($conn:ty) => {{
            let mut conn = <$conn>::connect(url).await.unwrap();
            for s in statements {
                sqlx::query(sqlx::AssertSqlSafe(s.as_ref().to_string()))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", s.as_ref()));
            }
        }};
    }
    match d {
        lethe::sql::Dialect::MySql => run!(sqlx::MySqlConnection),
        lethe::sql::Dialect::Postgres => run!(sqlx::PgConnection),
        lethe::sql::Dialect::Sqlite => run!(sqlx::SqliteConnection),
    }
}

/// One integer from any of the three databases.
pub async fn scalar(url: &str, sql: String) -> i64 {
    macro_rules! one {
        ($conn:ty) => {{
            let mut conn = <$conn>::connect(url).await.unwrap();
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.clone()))
                .fetch_one(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        }};
    }
    match lethe::sql::Dialect::from_url(url).unwrap() {
        lethe::sql::Dialect::MySql => one!(sqlx::MySqlConnection),
        lethe::sql::Dialect::Postgres => one!(sqlx::PgConnection),
        lethe::sql::Dialect::Sqlite => one!(sqlx::SqliteConnection),
    }
}

/// Generates `postgres::NAME` and `sqlite::NAME` tests calling `NAME(Kind)` for each name.
#[macro_export]
macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Postgres).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Sqlite).await
                }
            )*
        }
    };
}

/// Each event as (from state, to state, outcome), oldest first.
pub fn event_path(events: &[lethe::store::Event]) -> Vec<(Option<&str>, &str, &str)> {
    events
        .iter()
        .map(|e| {
            (
                e.from_state.as_deref(),
                e.to_state.as_str(),
                e.outcome.as_str(),
            )
        })
        .collect()
}

/// A claimed retirement as a handler receives it (subject = id, username `user<id>`).
pub fn claimed(id: i64, email: Option<&str>) -> lethe::store::Claimed {
    lethe::store::Claimed {
        id,
        subject: id.to_string(),
        email: email.map(str::to_string),
        username: Some(format!("user{id}")),
        reason: lethe::domain::Reason::INACTIVE,
        state: "RETIRING".into(),
        attempt: 1,
        lost_leases: 0,
        warned_at: None,
        created_at: chrono::Utc::now(),
        locale: None,
        reminders_sent: 0,
        exclusion_override: false,
        rule: None,
    }
}

/// `[[api_key]]` entries for (name, scope, key) triples, each with the key's SHA-256.
pub fn api_keys(keys: &[(&str, &str, &str)]) -> String {
    use sha2::Digest;
    let mut text = String::new();
    for (name, scope, key) in keys {
        let hash: String = sha2::Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        text.push_str(&format!(
            "[[api_key]]\nname = \"{name}\"\nscope = \"{scope}\"\nsha256 = \"{hash}\"\n"
        ));
    }
    text
}

/// The stages of the API and console tests: the edX preset's states, a SQL target, two
/// downstream services (nothing is run: the tests set the states).
pub const SERVICE_STAGES: &str = r#"
[[stage]]
state = "PENDING"
handler = "noop"
[[stage]]
state = "WARNED"
handler = "noop"
[[stage]]
state = "RETIRING_EDX"
handler = "sql_delete"
target = "edx"
[[stage]]
state = "RETIRING_SARBACANE"
handler = "sarbacane"
[[stage]]
state = "NOTIFIED"
handler = "notify"
services = ["joanie", "ashley"]
[[target]]
name = "edx"
url = "mysql://127.0.0.1/edxapp"
[[service]]
name = "joanie"
[[service]]
name = "ashley"
"#;
