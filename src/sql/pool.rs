//! Connection pools to the databases lethe reads (the source) and deletes from (targets),
//! whatever their dialect, and the catalog lookups both need.

use crate::db::Dialect;
use sqlx::Row;
use sqlx::mysql::MySqlPool;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

/// Prepared statements kept per connection. A batch runs about two per plan step (the
/// per-subject count and the change) plus the checks, 130 on the edX schema, per padded
/// batch size in use (`padded`); with fewer slots each statement evicts one still in use,
/// and sqlx's close-then-prepare exchange waits on a delayed ACK (tens of milliseconds a
/// statement on MariaDB). With a pool of `parallel_batches + 1` connections, a target keeps
/// at most about 1,500 statements on a server whose default limit is 16,382.
const STATEMENT_CACHE: usize = 512;

/// A connection pool to a target of any supported dialect.
#[derive(Clone)]
pub enum Pool {
    /// MySQL or MariaDB.
    MySql(MySqlPool),
    /// PostgreSQL.
    Postgres(PgPool),
    /// SQLite.
    Sqlite(SqlitePool),
}

impl Pool {
    /// Connects to `url`, whose scheme picks the dialect, with at most `connections` open
    /// (each keeps its prepared statements on the server, which a platform's database
    /// limits in total).
    pub async fn connect(url: &str, connections: u32) -> Result<(Dialect, Pool), sqlx::Error> {
        let dialect = Dialect::from_url(url).map_err(|e| sqlx::Error::Configuration(e.into()))?;
        crate::db::probe(url).await?;
        let connections = connections.max(1);
        let pool = match dialect {
            // READ COMMITTED: deletions by explicit keys need no gap locks, and without them
            // concurrent batches (and the platform's own traffic) do not block each other.
            Dialect::MySql => Pool::MySql(
                sqlx::mysql::MySqlPoolOptions::new()
                    .max_connections(connections)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            use sqlx::Executor;
                            conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                                .await
                                .map(|_| ())
                        })
                    })
                    .connect_with(
                        url.parse::<sqlx::mysql::MySqlConnectOptions>()?
                            .statement_cache_capacity(STATEMENT_CACHE),
                    )
                    .await?,
            ),
            Dialect::Postgres => Pool::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(connections)
                    .connect_with(
                        url.parse::<sqlx::postgres::PgConnectOptions>()?
                            .statement_cache_capacity(STATEMENT_CACHE),
                    )
                    .await?,
            ),
            Dialect::Sqlite => Pool::Sqlite(
                sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(connections)
                    .connect_with(
                        url.parse::<sqlx::sqlite::SqliteConnectOptions>()?
                            .statement_cache_capacity(STATEMENT_CACHE),
                    )
                    .await?,
            ),
        };
        Ok((dialect, pool))
    }
}

/// Runs the same code against whichever pool is inside.
macro_rules! with_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            Pool::MySql($p) => $body,
            Pool::Postgres($p) => $body,
            Pool::Sqlite($p) => $body,
        }
    };
}

pub(crate) use with_pool;

/// Whether a declared column type holds integers: the catalog's integer type names on
/// MySQL and PostgreSQL (`interval` and `point` are not), SQLite's affinity rule (the name
/// contains INT) there.
pub fn is_integer_type(dialect: Dialect, declared: &str) -> bool {
    let declared = declared.to_ascii_lowercase();
    match dialect {
        Dialect::Sqlite => declared.contains("int"),
        Dialect::MySql => matches!(
            declared.as_str(),
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint"
        ),
        Dialect::Postgres => matches!(declared.as_str(), "smallint" | "integer" | "bigint"),
    }
}

/// The declared type of one column, if it exists.
pub async fn column_type(
    pool: &Pool,
    table: &str,
    column: &str,
) -> Result<Option<String>, sqlx::Error> {
    let sql = match pool {
        Pool::MySql(_) => {
            "SELECT CAST(DATA_TYPE AS CHAR) AS ty FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?"
        }
        Pool::Postgres(_) => {
            "SELECT data_type::text AS ty FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2"
        }
        Pool::Sqlite(_) => "SELECT type AS ty FROM pragma_table_info($1) WHERE name = $2",
    };
    with_pool!(pool, p => {
        let row = sqlx::query(sql).bind(table).bind(column).fetch_optional(p).await?;
        row.map(|r| r.try_get::<String, _>("ty")).transpose()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_types_by_dialect() {
        for ty in ["int", "BIGINT", "smallint", "mediumint"] {
            assert!(is_integer_type(Dialect::MySql, ty), "{ty}");
        }
        for ty in ["varchar", "decimal", "point", "multipoint"] {
            assert!(!is_integer_type(Dialect::MySql, ty), "{ty}");
        }
        for ty in ["integer", "bigint", "smallint"] {
            assert!(is_integer_type(Dialect::Postgres, ty), "{ty}");
        }
        for ty in ["interval", "text", "uuid", "numeric"] {
            assert!(!is_integer_type(Dialect::Postgres, ty), "{ty}");
        }
        for ty in ["INTEGER", "BIGINT", "UNSIGNED BIG INT"] {
            assert!(is_integer_type(Dialect::Sqlite, ty), "{ty}");
        }
        for ty in ["TEXT", "", "REAL"] {
            assert!(!is_integer_type(Dialect::Sqlite, ty), "{ty}");
        }
    }
}
