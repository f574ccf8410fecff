//! Reading the source of truth: keyset pages of a rule's candidates, never OFFSET; the
//! re-reads of known subjects are in `recheck.rs`.

mod recheck;

use super::pool::{Pool, with_pool};
use crate::config::{Rule, Select, Source};
use crate::db::Dialect;
use chrono::NaiveDateTime;
use sqlx::Row;

/// What went wrong with the source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No URL configured.
    #[error(
        "source: no URL: set {} (or source.url in pipeline.toml)",
        crate::config::SOURCE_URL_ENV
    )]
    NoUrl,
    /// The database could not be reached.
    #[error("source: cannot connect to {url}: {source}")]
    Connect {
        /// URL, password redacted.
        url: String,
        /// Driver error.
        source: sqlx::Error,
    },
    /// A configured table, column or predicate does not work.
    #[error("source: {what} does not work: {source}")]
    Schema {
        /// The table, column or predicate, as configured.
        what: String,
        /// Driver error.
        source: sqlx::Error,
    },
    /// The id column does not hold integers.
    #[error(
        "source: column {column} is {declared}: subjects are read by integer keys only (set source.id_column to an integer column)"
    )]
    NotInteger {
        /// `table.column`, as configured.
        column: String,
        /// Its declared type.
        declared: String,
    },
    /// A scan query failed.
    #[error("source: {context} failed: {source}")]
    Query {
        /// What was being read.
        context: &'static str,
        /// Driver error.
        source: sqlx::Error,
    },
}

impl crate::error::Classified for SourceError {
    fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            SourceError::Connect { .. } | SourceError::Query { .. } => ErrorKind::Unreachable,
            SourceError::NoUrl | SourceError::Schema { .. } | SourceError::NotInteger { .. } => {
                ErrorKind::Config
            }
        }
    }
}

/// One inactive user of a page.
#[derive(Debug, Clone, PartialEq)]
pub struct Inactive {
    /// Primary key.
    pub id: i64,
    /// Email, if any.
    pub email: Option<String>,
    /// Username, if any.
    pub username: Option<String>,
    /// Whether the exclusion predicate matched (staff, superusers...).
    pub excluded: bool,
    /// Language, when the source has a locale column.
    pub locale: Option<String>,
    /// Last login; `None`: never logged in.
    pub last_login: Option<NaiveDateTime>,
    /// Sign-up.
    pub date_joined: Option<NaiveDateTime>,
}

/// Rows of each driver whose time columns decode as naive or zoned times.
trait TimeRow {
    /// A time column as UTC wall time, whether the driver gives it with or without a zone.
    fn naive(&self, column: &str) -> Result<Option<NaiveDateTime>, sqlx::Error>;
}

macro_rules! time_row {
    ($($row:ty),*) => {$(
        impl TimeRow for $row {
            fn naive(&self, column: &str) -> Result<Option<NaiveDateTime>, sqlx::Error> {
                self.try_get::<Option<NaiveDateTime>, _>(column).or_else(|_| {
                    self.try_get::<Option<chrono::DateTime<chrono::Utc>>, _>(column)
                        .map(|t| t.map(|t| t.naive_utc()))
                })
            }
        }
    )*};
}

time_row!(
    sqlx::mysql::MySqlRow,
    sqlx::postgres::PgRow,
    sqlx::sqlite::SqliteRow
);

/// A user of the source, found by id or email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceUser {
    /// The primary key.
    pub id: i64,
    /// Email.
    pub email: Option<String>,
    /// Username.
    pub username: Option<String>,
    /// Language, when the source has a column for it.
    pub locale: Option<String>,
}

/// A value to find users by.
#[derive(Debug, Clone)]
enum Key {
    Id(i64),
    Email(String),
}

/// What must still hold of a subject selected by `rule`, beyond having been inactive
/// (activity is re-checked apart): SQL on the source table, or `None`. An unverified
/// account must still be unconfirmed; a rule's predicate must still match.
pub fn still_selected(d: Dialect, source: &Source, rule: &Rule) -> Option<String> {
    let mut conditions = Vec::new();
    if rule.select == Select::Unverified {
        conditions.push(format!("{} = 0", d.quote(&source.verified_column)));
    }
    if let Some(predicate) = &rule.predicate {
        conditions.push(format!("({predicate})"));
    }
    (!conditions.is_empty()).then(|| conditions.join(" AND "))
}

/// The SQL condition (in `d`) that `rule` selects by, its cut-off bound as parameter
/// `cutoff` (bound for every kind, so each query keeps its parameters).
fn selection(d: Dialect, c: &Source, rule: &Rule, cutoff: usize) -> String {
    let last_login = d.quote(&c.last_login_column);
    let joined = d.quote(&c.date_joined_column);
    let mut condition = match rule.select {
        Select::Inactive => format!("COALESCE({last_login}, {joined}) < {}", d.param(cutoff)),
        // Never logged in: an account an admin deactivated (also is_active = 0 on edX)
        // had logged in, and is left to the inactivity rule.
        Select::Unverified => format!(
            "{} = 0 AND {last_login} IS NULL AND {joined} < {}",
            d.quote(&c.verified_column),
            d.param(cutoff)
        ),
        Select::Where => format!("{} IS NOT NULL", d.param(cutoff)),
    };
    if let Some(predicate) = &rule.predicate {
        condition.push_str(&format!(" AND ({predicate})"));
    }
    condition
}

/// A connected source.
pub struct SourceReader {
    dialect: Dialect,
    pool: Pool,
    config: Source,
}

impl SourceReader {
    /// Connects and checks that the table, every configured column and the exclusion
    /// predicate work, naming the first one that does not.
    pub async fn connect(config: &Source) -> Result<Self, SourceError> {
        Self::connect_for(config, &[]).await
    }

    /// [`SourceReader::connect`], checking too the columns and predicates of `rules`.
    pub async fn connect_for(config: &Source, rules: &[Rule]) -> Result<Self, SourceError> {
        let url = config.url.clone().ok_or(SourceError::NoUrl)?;
        // The scan reads two ranges and counts users at once; the grace stage re-reads logins.
        let (dialect, pool) =
            Pool::connect(&url, 4)
                .await
                .map_err(|source| SourceError::Connect {
                    url: crate::db::redact_url(&url),
                    source,
                })?;
        let reader = Self {
            dialect,
            pool,
            config: config.clone(),
        };
        let table = dialect.quote(&config.table);
        let mut probes = vec![(
            format!("table {}", config.table),
            format!("SELECT 1 FROM {table} WHERE 1 = 0"),
        )];
        for column in [
            &config.id_column,
            &config.email_column,
            &config.username_column,
            &config.last_login_column,
            &config.date_joined_column,
        ]
        .into_iter()
        .chain(&config.locale_column)
        {
            probes.push((
                format!("column {}.{column}", config.table),
                format!("SELECT {} FROM {table} WHERE 1 = 0", dialect.quote(column)),
            ));
        }
        probes.push((
            format!("source.exclude predicate {:?}", config.exclude),
            format!("SELECT 1 FROM {table} WHERE ({}) AND 1 = 0", config.exclude),
        ));
        if rules.iter().any(Rule::reads_verified) {
            probes.push((
                format!(
                    "source.verified_column {}.{}",
                    config.table, config.verified_column
                ),
                format!(
                    "SELECT {} FROM {table} WHERE 1 = 0",
                    dialect.quote(&config.verified_column)
                ),
            ));
        }
        for rule in rules {
            if let Some(predicate) = &rule.predicate {
                probes.push((
                    format!("the `where` of rule {:?} ({predicate:?})", rule.name),
                    format!("SELECT 1 FROM {table} WHERE ({predicate}) AND 1 = 0"),
                ));
            }
        }
        for (what, sql) in probes {
            with_pool!(&reader.pool, p => sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(p).await.map(|_| ()))
                .map_err(|source| SourceError::Schema { what, source })?;
        }
        // A text key would be cast to a number (MySQL makes 'abc' 0): refuse it by name.
        let column = format!("{}.{}", config.table, config.id_column);
        let declared = super::pool::column_type(&reader.pool, &config.table, &config.id_column)
            .await
            .map_err(|source| SourceError::Schema {
                what: format!("column {column}"),
                source,
            })?;
        if let Some(declared) = declared.filter(|ty| !super::pool::is_integer_type(dialect, ty)) {
            return Err(SourceError::NotInteger { column, declared });
        }
        Ok(reader)
    }

    /// The source database's SQL dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The `[source]` it was connected with.
    pub fn config(&self) -> &Source {
        &self.config
    }

    /// Whether the source answers (a `SELECT 1`: readiness probes must stay cheap).
    pub async fn ping(&self) -> Result<(), SourceError> {
        let answered =
            with_pool!(&self.pool, p => sqlx::query("SELECT 1").fetch_one(p).await.map(|_| ()));
        answered.map_err(|source| SourceError::Query {
            context: "reaching the source",
            source,
        })
    }

    /// Number of users in the table (the base of `max_new_share`).
    pub async fn count_users(&self) -> Result<i64, SourceError> {
        let sql = format!(
            "SELECT COUNT(*) FROM {}",
            self.dialect.quote(&self.config.table)
        );
        let count = with_pool!(&self.pool, p => sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_one(p).await.and_then(|r| r.try_get::<i64, _>(0)));
        count.map_err(|source| SourceError::Query {
            context: "counting users",
            source,
        })
    }

    /// The smallest and largest id, `None` when the table is empty.
    pub async fn id_range(&self) -> Result<Option<(i64, i64)>, SourceError> {
        let d = self.dialect;
        let id = d.quote(&self.config.id_column);
        let sql = format!(
            "SELECT {} AS lo, {} AS hi FROM {}",
            d.bigint(&format!("MIN({id})")),
            d.bigint(&format!("MAX({id})")),
            d.quote(&self.config.table)
        );
        let range = with_pool!(&self.pool, p => sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_one(p).await.and_then(|r| {
            Ok(r.try_get::<Option<i64>, _>("lo")?.zip(r.try_get::<Option<i64>, _>("hi")?))
        }));
        range.map_err(|source| SourceError::Query {
            context: "reading the id range",
            source,
        })
    }

    /// Up to `limit` users with `after` < id <= `upto` that `rule` selects, in id order:
    /// inactive, last activity (last login, or sign-up for those who never logged in)
    /// before `cutoff`; unverified, never confirmed and signed up before `cutoff`; and the
    /// rule's predicate, if any.
    pub async fn candidates_page(
        &self,
        rule: &Rule,
        after: i64,
        upto: i64,
        cutoff: NaiveDateTime,
        limit: usize,
        with_times: bool,
    ) -> Result<Vec<Inactive>, SourceError> {
        let d = self.dialect;
        let c = &self.config;
        let id = d.quote(&c.id_column);
        // The times say why a dry run lists a candidate; a real scan does not read them.
        let times = if with_times {
            format!(
                "{} AS last_login, {} AS date_joined, ",
                d.quote(&c.last_login_column),
                d.quote(&c.date_joined_column)
            )
        } else {
            String::new()
        };
        // ORDER BY names the column with its table: the bare name would be the CAST alias,
        // and sorting by that expression cannot use the primary key.
        // The exclusion predicate is operator config (like a view definition), so it is
        // spliced as written; every value is bound.
        let selects = selection(d, c, rule, 3);
        let sql = format!(
            "SELECT {id_expr} AS id, {email} AS email, {username} AS username, {locale} AS locale, \
             {times}CASE WHEN ({exclude}) THEN 1 ELSE 0 END AS excluded \
             FROM {table} WHERE {id} > {p1} AND {id} <= {p2} AND {selects} \
             ORDER BY {table}.{id} LIMIT {p4}",
            id_expr = d.bigint(&id),
            email = d.quote(&c.email_column),
            username = d.quote(&c.username_column),
            locale = c
                .locale_column
                .as_deref()
                .map(|l| d.quote(l))
                .unwrap_or_else(|| "NULL".into()),
            exclude = c.exclude,
            table = d.quote(&c.table),
            p1 = d.param(1),
            p2 = d.param(2),
            p4 = d.param(4),
        );
        let rows = with_pool!(&self.pool, p => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(after)
                .bind(upto)
                .bind(cutoff)
                .bind(limit as i64)
                .fetch_all(p)
                .await;
            rows.and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        let excluded = r
                            .try_get::<i64, _>("excluded")
                            .or_else(|_| r.try_get::<i32, _>("excluded").map(i64::from))?;
                        Ok(Inactive {
                            id: r.try_get("id")?,
                            email: r.try_get("email")?,
                            username: r.try_get("username")?,
                            excluded: excluded != 0,
                            locale: r.try_get::<Option<String>, _>("locale").unwrap_or(None),
                            last_login: if with_times { TimeRow::naive(r, "last_login")? } else { None },
                            date_joined: if with_times { TimeRow::naive(r, "date_joined")? } else { None },
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            })
        });
        rows.map_err(|source| SourceError::Query {
            context: "reading a page of a rule's candidates",
            source,
        })
    }

    /// The users whose id is one of `ids` or whose email is exactly one of `emails`, a
    /// query per thousand values (hand-opened retirements, the API's bulk request).
    pub async fn find_users(
        &self,
        ids: &[i64],
        emails: &[String],
    ) -> Result<Vec<SourceUser>, SourceError> {
        let c = &self.config;
        let keys: Vec<Key> = ids.iter().map(|i| Key::Id(*i)).collect();
        let mut found = self.users_where(&c.id_column, &keys).await?;
        let keys: Vec<Key> = emails.iter().map(|e| Key::Email(e.clone())).collect();
        found.extend(self.users_where(&c.email_column, &keys).await?);
        found.sort_by_key(|u| u.id);
        found.dedup_by_key(|u| u.id);
        Ok(found)
    }

    async fn users_where(
        &self,
        column: &str,
        keys: &[Key],
    ) -> Result<Vec<SourceUser>, SourceError> {
        let d = self.dialect;
        let c = &self.config;
        let mut out = Vec::new();
        for chunk in keys.chunks(1000) {
            let sql = format!(
                "SELECT {id_expr} AS id, {email} AS email, {username} AS username, {locale} AS locale \
                 FROM {table} WHERE {column} IN ({params})",
                id_expr = d.bigint(&d.quote(&c.id_column)),
                email = d.quote(&c.email_column),
                username = d.quote(&c.username_column),
                locale = c
                    .locale_column
                    .as_deref()
                    .map(|l| d.quote(l))
                    .unwrap_or_else(|| "NULL".into()),
                table = d.quote(&c.table),
                column = d.quote(column),
                params = d.params(1, chunk.len()),
            );
            let rows = with_pool!(&self.pool, p => {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for key in chunk {
                    query = match key {
                        Key::Id(id) => query.bind(*id),
                        Key::Email(email) => query.bind(email.clone()),
                    };
                }
                query.fetch_all(p).await.and_then(|rows| {
                    rows.iter()
                        .map(|r| {
                            Ok(SourceUser {
                                id: r.try_get("id")?,
                                email: r.try_get("email")?,
                                username: r.try_get("username")?,
                                locale: r.try_get::<Option<String>, _>("locale").unwrap_or(None),
                            })
                        })
                        .collect::<Result<Vec<_>, sqlx::Error>>()
                })
            });
            out.extend(rows.map_err(|source| SourceError::Query {
                context: "finding users by id or email",
                source,
            })?);
        }
        Ok(out)
    }
}
