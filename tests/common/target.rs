//! A target database of one dialect per test (MariaDB, PostgreSQL or SQLite), dropped at
//! the end.

use super::edx::{self, Owned};
use super::{Kind, TestDb, exec, mysql_admin_url, scalar};
use lethe::config::Config;
use lethe::sql::Dialect;
use lethe::sql::target::Target;
use std::collections::BTreeMap;

/// A fixture database of one dialect, dropped at the end.
pub struct Fixture {
    /// The database.
    pub url: String,
    _pg_or_sqlite: Option<TestDb>,
    mysql_name: Option<String>,
    /// What each user owns.
    pub owned: Owned,
}

impl Fixture {
    /// The edX-like fixture (tests/common/edx.rs), seeded.
    pub async fn new(dialect: Dialect) -> Fixture {
        let (seed, owned) = edx::seed(dialect, 3, 3);
        Fixture::with(dialect, &edx::ddl(dialect), &seed, owned).await
    }

    /// A database of `dialect` with these statements run in it.
    pub async fn with(dialect: Dialect, ddl: &[String], seed: &[String], owned: Owned) -> Fixture {
        let (url, db, mysql_name) = match dialect {
            Dialect::MySql => {
                let name = format!("lethe_t_{}_{}", std::process::id(), rand_suffix());
                exec(&mysql_admin_url(), &[format!("CREATE DATABASE {name}")]).await;
                let admin = mysql_admin_url();
                let root = &admin[..admin.rfind('/').unwrap()];
                (format!("{root}/{name}"), None, Some(name))
            }
            Dialect::Postgres => {
                let db = TestDb::new(Kind::Postgres).await;
                (db.url.clone(), Some(db), None)
            }
            Dialect::Sqlite => {
                let db = TestDb::new(Kind::Sqlite).await;
                (format!("{}?mode=rwc", db.url), Some(db), None)
            }
        };
        exec(&url, ddl).await;
        exec(&url, seed).await;
        Fixture {
            url,
            _pg_or_sqlite: db,
            mysql_name,
            owned,
        }
    }

    /// The edX preset's target on this database.
    pub async fn target(&self) -> Target {
        self.target_with(&edx::target_toml(&self.url)).await
    }

    /// A target from this `[[target]]` text.
    pub async fn target_with(&self, target_toml: &str) -> Target {
        match self.try_target(target_toml).await {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    /// A target from this `[[target]]` text, or why it was refused.
    pub async fn try_target(&self, target_toml: &str) -> Result<Target, String> {
        let text = format!("{}{target_toml}", super::noop_pipeline("", ""));
        let (_, pipeline) =
            Config::from_texts("states.toml", super::STATES, "pipeline.toml", &text).unwrap();
        Target::connect(&pipeline.targets[0])
            .await
            .map_err(|e| e.to_string())
    }

    /// Rows per table of the edX fixture.
    pub async fn counts(&self) -> BTreeMap<&'static str, i64> {
        let mut out = BTreeMap::new();
        for table in edx::all_tables() {
            out.insert(
                table,
                scalar(&self.url, format!("SELECT COUNT(*) FROM {table}")).await,
            );
        }
        out
    }

    /// One count.
    pub async fn count(&self, sql: &str) -> i64 {
        scalar(&self.url, sql.to_string()).await
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(name) = self.mysql_name.take() {
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(exec(
                    &mysql_admin_url(),
                    &[format!("DROP DATABASE IF EXISTS {name}")],
                ));
            })
            .join();
        }
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// The time every fixture user was warned.
pub fn warned() -> Option<chrono::DateTime<chrono::Utc>> {
    Some("2020-01-01T00:00:00Z".parse().unwrap())
}

/// Generates `mariadb::NAME`, `postgres::NAME` and `sqlite::NAME` tests calling
/// `NAME(Dialect)` for each name.
#[macro_export]
macro_rules! per_dialect {
    ($($name:ident),* $(,)?) => {
        mod mariadb { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(lethe::sql::Dialect::MySql).await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(lethe::sql::Dialect::Postgres).await } )* }
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(lethe::sql::Dialect::Sqlite).await } )* }
    };
}
