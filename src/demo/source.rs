//! The demo's edX-like source: an SQLite `auth_user` and the tables that hang off it (the
//! tables the edX preset's rules name among them), filled with synthetic users, and the
//! cast of users who each show one rule of the pipeline.

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::{Connection, QueryBuilder, Sqlite, SqliteConnection};

/// The tables of the demo's source, after `auth_user`, each with its link columns:
/// (column, referenced table, NOT NULL).
/// A link column: (column, referenced table, NOT NULL).
type Link = (&'static str, &'static str, bool);

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
}

impl Cast {
    /// The cast among `users` users: about 3% inactive, 2% staff.
    pub fn new(users: i64) -> Cast {
        let inactive: Vec<i64> = (1..=users).filter(|i| Self::inactive_id(*i)).collect();
        let staff = (1..=users).filter(|i| Self::staff_id(*i)).collect();
        let at = |k: usize| inactive.get(k).copied().unwrap_or_default();
        Cast {
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

/// Errors creating the source.
#[derive(Debug, thiserror::Error)]
#[error("the demo's source database {file}: {source}")]
pub struct SourceError {
    file: String,
    source: sqlx::Error,
}

fn ddl() -> Vec<String> {
    let mut statements = vec![
        "PRAGMA journal_mode = WAL".to_string(),
        "CREATE TABLE auth_user (id INTEGER PRIMARY KEY, username TEXT NOT NULL, \
         email TEXT NOT NULL UNIQUE, is_active INTEGER NOT NULL DEFAULT 1, \
         is_staff INTEGER NOT NULL DEFAULT 0, is_superuser INTEGER NOT NULL DEFAULT 0, \
         last_login TEXT NULL, date_joined TEXT NOT NULL)"
            .to_string(),
    ];
    for (table, links) in TABLES {
        let mut columns = vec![
            "id INTEGER PRIMARY KEY".to_string(),
            "data TEXT NULL".to_string(),
        ];
        if *table == "student_courseenrollmentallowed" {
            columns.push("email TEXT NOT NULL".into());
        }
        for (column, _, required) in links.iter() {
            let null = if *required { "NOT NULL" } else { "NULL" };
            columns.push(format!("{column} INTEGER {null}"));
        }
        for (column, target, _) in links.iter() {
            columns.push(format!("FOREIGN KEY ({column}) REFERENCES {target} (id)"));
        }
        statements.push(format!("CREATE TABLE {table} ({})", columns.join(", ")));
        // As edX's own schema: every link indexed, so a deletion finds its rows by key.
        for (column, _, _) in links.iter() {
            statements.push(format!(
                "CREATE INDEX {table}_{column} ON {table} ({column})"
            ));
        }
    }
    statements.push(
        "CREATE INDEX student_courseenrollmentallowed_email ON student_courseenrollmentallowed (email)"
            .into(),
    );
    statements
}

/// One generated row: its table and values (bound, never spliced into the SQL).
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

    async fn flush(&mut self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        for chunk in self.rows.chunks(CHUNK) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
                "INSERT INTO {} ({}) ",
                self.table,
                self.columns.join(", ")
            ));
            q.push_values(chunk, |mut b, row| {
                for value in row {
                    match value {
                        Value::Int(v) => b.push_bind(*v),
                        Value::Text(v) => b.push_bind(v.clone()),
                        Value::Time(v) => b.push_bind(*v),
                    };
                }
            });
            q.build().execute(&mut *conn).await?;
        }
        self.rows.clear();
        Ok(())
    }
}

/// Creates the source at `url` (a new SQLite file) with the cast's users; `progress` is
/// called with the number of users written so far.
pub async fn create(
    url: &str,
    cast: &Cast,
    now: DateTime<Utc>,
    progress: &dyn Fn(u64),
) -> Result<(), SourceError> {
    let fail = |source| SourceError {
        file: crate::db::redact_url(url),
        source,
    };
    let options = url
        .parse::<sqlx::sqlite::SqliteConnectOptions>()
        .map_err(fail)?
        .create_if_missing(true);
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .map_err(fail)?;
    for statement in ddl() {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut conn)
            .await
            .map_err(fail)?;
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
    let mut tx = conn.begin().await.map_err(fail)?;
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
            let last_login = if id == cast.never_logged_in {
                None
            } else {
                last_login
            };
            users.rows.push(vec![
                Value::Int(id),
                Value::Text(format!("user{id}")),
                Value::Text(cast.email(id)),
                Value::Int(staff as i64),
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
            table.flush(&mut tx).await.map_err(fail)?;
        }
        for table in [&mut preferences, &mut modules, &mut allowed] {
            table.flush(&mut tx).await.map_err(fail)?;
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
    audits.flush(&mut tx).await.map_err(fail)?;
    sqlx::query("INSERT INTO authtoken_token (user_id, data) VALUES ($1, 'token')")
        .bind(cast.protected)
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    tx.commit().await.map_err(fail)?;
    Ok(())
}

/// Marks user `id` as having logged in at `at`.
pub async fn log_in(url: &str, id: i64, at: DateTime<Utc>) -> Result<(), SourceError> {
    let fail = |source| SourceError {
        file: crate::db::redact_url(url),
        source,
    };
    let mut conn = SqliteConnection::connect(url).await.map_err(fail)?;
    sqlx::query("UPDATE auth_user SET last_login = $1 WHERE id = $2")
        .bind(at.naive_utc())
        .bind(id)
        .execute(&mut conn)
        .await
        .map_err(fail)?;
    Ok(())
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
    }
}
