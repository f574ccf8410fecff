//! The demo's edX-like source: `auth_user` and the tables that hang off it (the tables the
//! edX preset's rules name among them) in a new SQLite file or an empty MySQL/MariaDB
//! database, filled with synthetic users, and the cast of users who each show one rule of
//! the pipeline. One generator; the dialect changes only the DDL's types and the quoting.

use crate::db::Dialect;
use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::{Connection, Database, MySql, MySqlConnection, Sqlite, SqliteConnection};

/// A link column: (column, referenced table, NOT NULL).
type Link = (&'static str, &'static str, bool);

/// The tables of the demo's source, after `auth_user`, each with its link columns.
const TABLES: &[(&str, &[Link])] = &[
    ("auth_userprofile", &[("user_id", "auth_user", true)]),
    (
        "student_courseenrollment",
        &[("user_id", "auth_user", true)],
    ),
    (
        "student_historicalcourseenrollment",
        &[("user_id", "auth_user", false)],
    ),
    (
        "student_manualenrollmentaudit",
        &[
            ("enrollment_id", "student_courseenrollment", false),
            ("enrolled_by_id", "auth_user", false),
        ],
    ),
    ("student_courseenrollmentallowed", &[]),
    ("user_api_userpreference", &[("user_id", "auth_user", true)]),
    (
        "courseware_studentmodule",
        &[("student_id", "auth_user", true)],
    ),
    // The tables the edX preset protects.
    ("authtoken_token", &[("user_id", "auth_user", true)]),
    (
        "certificates_certificatehtmlviewconfiguration",
        &[("changed_by_id", "auth_user", false)],
    ),
    (
        "contentstore_videouploadconfig",
        &[("changed_by_id", "auth_user", false)],
    ),
    (
        "course_action_state_coursererunstate",
        &[
            ("created_user_id", "auth_user", false),
            ("updated_user_id", "auth_user", false),
        ],
    ),
    (
        "course_creators_coursecreator",
        &[("user_id", "auth_user", true)],
    ),
    (
        "dark_lang_darklangconfig",
        &[("changed_by_id", "auth_user", false)],
    ),
    (
        "util_ratelimitconfiguration",
        &[("changed_by_id", "auth_user", false)],
    ),
    (
        "verify_student_historicalverificationdeadline",
        &[("history_user_id", "auth_user", false)],
    ),
    ("wiki_article", &[("owner_id", "auth_user", false)]),
    (
        "wiki_articlerevision",
        &[
            ("user_id", "auth_user", false),
            ("article_id", "wiki_article", true),
        ],
    ),
];

/// Users the demo needs at least: its cast takes ten inactive users.
pub const MIN_USERS: i64 = 300;

/// Who is who among the demo's users (ids are 1..=users).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cast {
    /// Every user.
    pub users: i64,
    /// Inactive for years, not staff: the scan opens a retirement for each.
    pub inactive: Vec<i64>,
    /// Staff and superusers, inactive too: `source.exclude` keeps them out.
    pub staff: Vec<i64>,
    /// Has an API token (a table the preset protects): ends ERRORED `protected: …`.
    pub protected: i64,
    /// Logs in during the grace period: ends ABORTED "active again".
    pub returning: i64,
    /// Never logged in: counted from sign-up.
    pub never_logged_in: i64,
    /// Their mailbox no longer exists: the SMTP server refuses the warning.
    pub refused: i64,
    /// Enrolled other (active) users by hand: those rows stay, the actor column is nulled.
    pub actors: Vec<i64>,
    /// Signed up two days ago and never confirmed their email: the unverified rule opens a
    /// retirement for each (about 1%).
    pub unverified: Vec<i64>,
    /// Unverified, confirms during the grace period: ends ABORTED "account confirmed".
    pub confirming: i64,
}

impl Cast {
    /// The cast among `users` users: about 3% inactive, 2% staff.
    pub fn new(users: i64) -> Cast {
        let inactive: Vec<i64> = (1..=users).filter(|i| Self::inactive_id(*i)).collect();
        let staff = (1..=users).filter(|i| Self::staff_id(*i)).collect();
        let at = |k: usize| inactive.get(k).copied().unwrap_or_default();
        let unverified: Vec<i64> = (1..=users).filter(|i| Self::unverified_id(*i)).collect();
        Cast {
            confirming: unverified.first().copied().unwrap_or_default(),
            unverified,
            users,
            protected: at(0),
            returning: at(1),
            never_logged_in: at(2),
            refused: at(3),
            actors: inactive.iter().skip(4).take(3).copied().collect(),
            staff,
            inactive,
        }
    }

    fn inactive_id(id: i64) -> bool {
        id % 33 == 1 && !Self::staff_id(id)
    }

    fn staff_id(id: i64) -> bool {
        id % 50 == 25
    }

    fn unverified_id(id: i64) -> bool {
        id % 97 == 48 && !Self::staff_id(id) && !Self::inactive_id(id)
    }

    /// Whether `id` is inactive and not staff.
    pub fn is_inactive(&self, id: i64) -> bool {
        Self::inactive_id(id)
    }

    /// The email of user `id`.
    pub fn email(&self, id: i64) -> String {
        match id == self.refused {
            true => format!("moved-away{id}@example.org"),
            false => format!("user{id}@example.org"),
        }
    }

    /// The unverified users that end COMPLETE (all but the confirming one).
    pub fn retired_unverified(&self) -> Vec<i64> {
        self.unverified
            .iter()
            .copied()
            .filter(|i| *i != self.confirming)
            .collect()
    }

    /// The inactive users that end COMPLETE.
    pub fn retired(&self) -> Vec<i64> {
        let kept = [self.protected, self.returning, self.refused];
        self.inactive
            .iter()
            .copied()
            .filter(|i| !kept.contains(i))
            .collect()
    }
}

/// Errors creating or changing the source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The database said no.
    #[error("the demo's source database {file}: {source}")]
    Database {
        /// The URL, without its password.
        file: String,
        /// Why.
        source: sqlx::Error,
    },
    /// Not a database the demo writes into.
    #[error("--source {url}: {problem}")]
    Refused {
        /// The URL, without its password.
        url: String,
        /// What is wrong and what the demo needs.
        problem: String,
    },
}

impl SourceError {
    /// Whether the demo refused the database (it wrote nothing into it).
    pub fn refused(&self) -> bool {
        matches!(self, SourceError::Refused { .. })
    }
}

fn failing(url: &str) -> impl Fn(sqlx::Error) -> SourceError + '_ {
    move |source| SourceError::Database {
        file: crate::db::redact_url(url),
        source,
    }
}

/// The DDL of the source in `d` (SQLite or MySQL/MariaDB): the same tables either way.
fn ddl(d: Dialect) -> Vec<String> {
    let q = |ident: &str| d.quote(ident);
    // Rows of most tables come without an id: SQLite's INTEGER PRIMARY KEY numbers them,
    // MySQL needs AUTO_INCREMENT. Indexed text needs a length on MySQL.
    let (id, link, key_text, time, engine) = match d {
        Dialect::MySql => (
            "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
            "BIGINT",
            "VARCHAR(254)",
            "DATETIME(6)",
            " ENGINE=InnoDB",
        ),
        _ => ("INTEGER PRIMARY KEY", "INTEGER", "TEXT", "TEXT", ""),
    };
    let mut statements = Vec::new();
    if d == Dialect::Sqlite {
        statements.push("PRAGMA journal_mode = WAL".to_string());
    }
    statements.push(format!(
        "CREATE TABLE {} (id {id}, username {key_text} NOT NULL, \
         email {key_text} NOT NULL UNIQUE, is_active INTEGER NOT NULL DEFAULT 1, \
         is_staff INTEGER NOT NULL DEFAULT 0, is_superuser INTEGER NOT NULL DEFAULT 0, \
         last_login {time} NULL, date_joined {time} NOT NULL){engine}",
        q("auth_user")
    ));
    for (table, links) in TABLES {
        let mut columns = vec![format!("id {id}"), "data TEXT NULL".to_string()];
        if *table == "student_courseenrollmentallowed" {
            columns.push(format!("email {key_text} NOT NULL"));
        }
        for (column, _, required) in links.iter() {
            let null = if *required { "NOT NULL" } else { "NULL" };
            columns.push(format!("{} {link} {null}", q(column)));
        }
        for (column, target, _) in links.iter() {
            columns.push(format!(
                "FOREIGN KEY ({}) REFERENCES {} (id)",
                q(column),
                q(target)
            ));
        }
        statements.push(format!(
            "CREATE TABLE {} ({}){engine}",
            q(table),
            columns.join(", ")
        ));
        // As edX's own schema: every link indexed, so a deletion finds its rows by key.
        for (column, _, _) in links.iter() {
            statements.push(format!(
                "CREATE INDEX {} ON {} ({})",
                q(&format!("{table}_{column}")),
                q(table),
                q(column)
            ));
        }
    }
    statements.push(format!(
        "CREATE INDEX {} ON {} (email)",
        q("student_courseenrollmentallowed_email"),
        q("student_courseenrollmentallowed")
    ));
    statements
}

/// One generated value (bound, never spliced into the SQL).
enum Value {
    Int(i64),
    Text(String),
    Time(Option<NaiveDateTime>),
}

/// Rows of one table, inserted in statements of `CHUNK` rows.
struct Rows {
    table: &'static str,
    columns: &'static [&'static str],
    rows: Vec<Vec<Value>>,
}

const CHUNK: usize = 500;

impl Rows {
    fn new(table: &'static str, columns: &'static [&'static str]) -> Self {
        Rows {
            table,
            columns,
            rows: Vec::new(),
        }
    }

    async fn flush<DB: Driver>(
        &mut self,
        d: Dialect,
        conn: &mut DB::Connection,
    ) -> Result<(), sqlx::Error> {
        let columns: Vec<String> = self.columns.iter().map(|c| d.quote(c)).collect();
        for chunk in self.rows.chunks(CHUNK) {
            let mut n = 0;
            let tuples: Vec<String> = chunk
                .iter()
                .map(|row| {
                    n += row.len();
                    format!("({})", d.params(n - row.len() + 1, row.len()))
                })
                .collect();
            let sql = format!(
                "INSERT INTO {} ({}) VALUES {}",
                d.quote(self.table),
                columns.join(", "),
                tuples.join(", ")
            );
            DB::execute(conn, sql, chunk.iter().flatten()).await?;
        }
        self.rows.clear();
        Ok(())
    }
}

/// The drivers the generator writes through: SQLite and MySQL/MariaDB.
trait Driver: Database {
    /// Runs `sql` with `values` bound in order.
    async fn execute<'v>(
        conn: &mut Self::Connection,
        sql: String,
        values: impl Iterator<Item = &'v Value>,
    ) -> Result<(), sqlx::Error>;
}

macro_rules! driver {
    ($db:ty) => {
        impl Driver for $db {
            async fn execute<'v>(
                conn: &mut <$db as Database>::Connection,
                sql: String,
                values: impl Iterator<Item = &'v Value>,
            ) -> Result<(), sqlx::Error> {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for value in values {
                    query = match value {
                        Value::Int(v) => query.bind(*v),
                        Value::Text(v) => query.bind(v.clone()),
                        Value::Time(v) => query.bind(*v),
                    };
                }
                query.execute(conn).await.map(|_| ())
            }
        }
    };
}

driver!(Sqlite);
driver!(MySql);

/// Refuses a MySQL/MariaDB source the demo must not write into (see [`create`]); an SQLite
/// file is the demo's own.
pub async fn check(url: &str) -> Result<(), SourceError> {
    if Dialect::from_url(url) != Ok(Dialect::MySql) {
        return Ok(());
    }
    let mut conn = MySqlConnection::connect(url).await.map_err(failing(url))?;
    refuse_used(url, &mut conn).await
}

/// Refuses a MySQL/MariaDB database the demo must not write into: one that names no
/// database, or one that already has one of the demo's tables (`auth_user`: edX's own).
async fn refuse_used(url: &str, conn: &mut MySqlConnection) -> Result<(), SourceError> {
    let fail = failing(url);
    let refused = |problem: String| SourceError::Refused {
        url: crate::db::redact_url(url),
        problem,
    };
    let database: Option<String> = sqlx::query_scalar("SELECT DATABASE()")
        .fetch_one(&mut *conn)
        .await
        .map_err(&fail)?;
    let Some(database) = database else {
        return Err(refused(
            "names no database: give an empty one, e.g. mysql://root@127.0.0.1/edx_demo".into(),
        ));
    };
    let existing: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() \
         ORDER BY TABLE_NAME",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(&fail)?;
    // Any table at all: the deletions would follow foreign keys into data that is not the
    // demo's, and ids 1..N overlap real ones.
    if let Some(table) = existing.first() {
        return Err(refused(format!(
            "database {database} is not empty ({} tables, among them {table}): the demo \
             writes only into an empty database (never a real one); create one for it",
            existing.len()
        )));
    }
    Ok(())
}

/// Creates the source at `url` with the cast's users: a new SQLite file, or an empty
/// MySQL/MariaDB database (refused when it has any table); `progress` is
/// called with the number of users written so far.
pub async fn create(
    url: &str,
    cast: &Cast,
    now: DateTime<Utc>,
    progress: &dyn Fn(u64),
) -> Result<(), SourceError> {
    let fail = failing(url);
    match Dialect::from_url(url) {
        Ok(Dialect::MySql) => {
            let mut conn = MySqlConnection::connect(url).await.map_err(&fail)?;
            refuse_used(url, &mut conn).await?;
            fill::<MySql>(Dialect::MySql, &mut conn, cast, now, progress)
                .await
                .map_err(&fail)
        }
        Ok(Dialect::Sqlite) => {
            let options = url
                .parse::<sqlx::sqlite::SqliteConnectOptions>()
                .map_err(&fail)?
                .create_if_missing(true);
            let mut conn = SqliteConnection::connect_with(&options)
                .await
                .map_err(&fail)?;
            fill::<Sqlite>(Dialect::Sqlite, &mut conn, cast, now, progress)
                .await
                .map_err(&fail)
        }
        _ => Err(SourceError::Refused {
            url: crate::db::redact_url(url),
            problem: "the demo's source is SQLite or MySQL/MariaDB (mysql://…)".into(),
        }),
    }
}

/// The DDL and the rows, in `d`, over one connection.
async fn fill<DB: Driver>(
    d: Dialect,
    conn: &mut DB::Connection,
    cast: &Cast,
    now: DateTime<Utc>,
    progress: &dyn Fn(u64),
) -> Result<(), sqlx::Error> {
    for statement in ddl(d) {
        DB::execute(conn, statement, std::iter::empty()).await?;
    }
    let now = now.naive_utc();
    let days = |d: i64| now - chrono::Duration::days(d);
    let mut users = Rows::new(
        "auth_user",
        &[
            "id",
            "username",
            "email",
            "is_staff",
            "is_active",
            "last_login",
            "date_joined",
        ],
    );
    let mut profiles = Rows::new("auth_userprofile", &["user_id", "data"]);
    let mut enrollments = Rows::new("student_courseenrollment", &["id", "user_id", "data"]);
    let mut history = Rows::new("student_historicalcourseenrollment", &["user_id", "data"]);
    let mut audits = Rows::new(
        "student_manualenrollmentaudit",
        &["enrollment_id", "enrolled_by_id", "data"],
    );
    let mut allowed = Rows::new("student_courseenrollmentallowed", &["email", "data"]);
    let mut preferences = Rows::new("user_api_userpreference", &["user_id", "data"]);
    let mut modules = Rows::new("courseware_studentmodule", &["student_id", "data"]);
    let mut tx = conn.begin().await?;
    let block = 5_000;
    for start in (1..=cast.users).step_by(block as usize) {
        for id in start..(start + block).min(cast.users + 1) {
            let staff = Cast::staff_id(id);
            // Inactive users (and staff) last came 6 to 8 years ago; the others this year.
            let (last_login, joined) = if cast.is_inactive(id) || staff {
                (Some(days(2200 + id % 700)), days(3000 + id % 700))
            } else {
                (Some(days(id % 300)), days(400 + id % 2000))
            };
            let unverified = Cast::unverified_id(id);
            let (last_login, joined) = if unverified {
                (None, days(2))
            } else if id == cast.never_logged_in {
                (None, joined)
            } else {
                (last_login, joined)
            };
            users.rows.push(vec![
                Value::Int(id),
                Value::Text(format!("user{id}")),
                Value::Text(cast.email(id)),
                Value::Int(staff as i64),
                Value::Int(!unverified as i64),
                Value::Time(last_login),
                Value::Time(Some(joined)),
            ]);
            profiles.rows.push(vec![
                Value::Int(id),
                Value::Text(format!("profile of {id}")),
            ]);
            for course in 0..2 {
                enrollments.rows.push(vec![
                    Value::Int(id * 2 + course),
                    Value::Int(id),
                    Value::Text(format!("course-v1:demo+C{course}+2026")),
                ]);
            }
            history
                .rows
                .push(vec![Value::Int(id), Value::Text("enrolled".into())]);
            preferences
                .rows
                .push(vec![Value::Int(id), Value::Text("pref-lang=en".into())]);
            modules.rows.push(vec![
                Value::Int(id),
                Value::Text("{\"position\": 1}".into()),
            ]);
            if cast.is_inactive(id) && id % 2 == 1 {
                allowed.rows.push(vec![
                    Value::Text(cast.email(id)),
                    Value::Text("invited".into()),
                ]);
            }
        }
        for table in [&mut users, &mut profiles, &mut enrollments, &mut history] {
            table.flush::<DB>(d, &mut tx).await?;
        }
        for table in [&mut preferences, &mut modules, &mut allowed] {
            table.flush::<DB>(d, &mut tx).await?;
        }
        progress((start + block - 1).min(cast.users) as u64);
    }
    // Each actor enrolled the next active user by hand; one inactive user's own
    // enrollment was manual too (deleted with it).
    for actor in &cast.actors {
        let enrolled = actor + 1;
        audits.rows.push(vec![
            Value::Int(enrolled * 2),
            Value::Int(*actor),
            Value::Text("enrolled by support".into()),
        ]);
    }
    if let Some(first) = cast.retired().first() {
        audits.rows.push(vec![
            Value::Int(first * 2),
            Value::Int(2),
            Value::Text("self".into()),
        ]);
    }
    audits.flush::<DB>(d, &mut tx).await?;
    let mut token = Rows::new("authtoken_token", &["user_id", "data"]);
    token.rows.push(vec![
        Value::Int(cast.protected),
        Value::Text("token".into()),
    ]);
    token.flush::<DB>(d, &mut tx).await?;
    tx.commit().await
}

/// Marks user `id` of the source at `url` (SQLite or MySQL/MariaDB) as logged in at `at`.
pub async fn log_in(url: &str, id: i64, at: DateTime<Utc>) -> Result<(), SourceError> {
    set_user(url, id, "last_login", Value::Time(Some(at.naive_utc()))).await
}

/// Marks user `id` of the source at `url` as having confirmed their email.
pub async fn confirm(url: &str, id: i64) -> Result<(), SourceError> {
    set_user(url, id, "is_active", Value::Int(1)).await
}

/// Sets one column of user `id`.
async fn set_user(url: &str, id: i64, column: &str, value: Value) -> Result<(), SourceError> {
    let fail = failing(url);
    let d = Dialect::from_url(url).map_err(|problem| SourceError::Refused {
        url: crate::db::redact_url(url),
        problem,
    })?;
    let sql = format!(
        "UPDATE {} SET {} = {} WHERE id = {}",
        d.quote("auth_user"),
        d.quote(column),
        d.param(1),
        d.param(2)
    );
    let values = [value, Value::Int(id)];
    match d {
        Dialect::MySql => {
            let mut conn = MySqlConnection::connect(url).await.map_err(&fail)?;
            MySql::execute(&mut conn, sql, values.iter()).await
        }
        _ => {
            let mut conn = SqliteConnection::connect(url).await.map_err(&fail)?;
            Sqlite::execute(&mut conn, sql, values.iter()).await
        }
    }
    .map_err(&fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cast_has_every_part_and_nobody_twice() {
        let cast = Cast::new(MIN_USERS);
        assert_eq!(cast.inactive.len(), 10);
        let mut roles = vec![
            cast.protected,
            cast.returning,
            cast.never_logged_in,
            cast.refused,
        ];
        roles.extend(&cast.actors);
        let mut unique = roles.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 7, "{roles:?}");
        assert!(
            roles
                .iter()
                .all(|r| cast.is_inactive(*r) && !cast.staff.contains(r))
        );
        assert!(cast.staff.iter().all(|s| !cast.is_inactive(*s)));
        assert_eq!(cast.retired().len(), 7);
        // Each actor's enrolled user is active.
        assert!(cast.actors.iter().all(|a| !cast.is_inactive(a + 1)));
        assert_eq!(cast.unverified, vec![48, 145, 242]);
        assert_eq!(cast.confirming, cast.unverified[0]);
        assert!(
            cast.unverified
                .iter()
                .all(|u| !cast.is_inactive(*u) && !cast.staff.contains(u))
        );
    }
}
