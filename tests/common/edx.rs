//! An edX-like schema fixture: 46 tables linked to `auth_user` (two-level chains, nullable
//! actor columns, the protected tables of the edX preset, an email link without a foreign
//! key, self-references and a cycle), generated for MariaDB, PostgreSQL and SQLite, and a
//! seeder that gives several users rows everywhere.
#![allow(dead_code)]

use lethe::sql::Dialect;
use std::collections::BTreeMap;

/// A link column: (column, referenced table, nullable).
pub type LinkSpec = (&'static str, &'static str, bool);

/// (table, links). Every table also has `id` and `data`.
pub const TABLES: &[(&str, &[LinkSpec])] = &[
    ("auth_userprofile", &[("user_id", "auth_user", false)]),
    (
        "student_courseenrollment",
        &[("user_id", "auth_user", false)],
    ),
    (
        "student_courseenrollmentattribute",
        &[("enrollment_id", "student_courseenrollment", false)],
    ),
    (
        "student_manualenrollmentaudit",
        &[
            ("enrollment_id", "student_courseenrollment", true),
            ("enrolled_by_id", "auth_user", true),
        ],
    ),
    (
        "courseware_studentmodule",
        &[("student_id", "auth_user", false)],
    ),
    (
        "courseware_studentmodulehistory",
        &[("student_module_id", "courseware_studentmodule", false)],
    ),
    (
        "student_anonymoususerid",
        &[("user_id", "auth_user", false)],
    ),
    ("student_userattribute", &[("user_id", "auth_user", false)]),
    (
        "user_api_userpreference",
        &[("user_id", "auth_user", false)],
    ),
    (
        "student_pendingemailchange",
        &[("user_id", "auth_user", false)],
    ),
    ("student_loginfailures", &[("user_id", "auth_user", false)]),
    ("student_registration", &[("user_id", "auth_user", false)]),
    (
        "grades_persistentcoursegrade",
        &[("user_id", "auth_user", false)],
    ),
    (
        "grades_persistentsubsectiongrade",
        &[("user_id", "auth_user", false)],
    ),
    (
        "certificates_generatedcertificate",
        &[("user_id", "auth_user", false)],
    ),
    ("bulk_email_optout", &[("user_id", "auth_user", false)]),
    (
        "social_auth_usersocialauth",
        &[("user_id", "auth_user", false)],
    ),
    (
        "oauth2_provider_accesstoken",
        &[("user_id", "auth_user", false)],
    ),
    (
        "oauth2_provider_refreshtoken",
        &[
            ("user_id", "auth_user", false),
            ("access_token_id", "oauth2_provider_accesstoken", true),
        ],
    ),
    (
        "django_comment_client_role_users",
        &[("user_id", "auth_user", false)],
    ),
    (
        "student_courseaccessrole",
        &[("user_id", "auth_user", false)],
    ),
    (
        "completion_blockcompletion",
        &[("user_id", "auth_user", false)],
    ),
    ("survey_surveyanswer", &[("user_id", "auth_user", false)]),
    (
        "teams_courseteammembership",
        &[("user_id", "auth_user", false)],
    ),
    (
        "verify_student_softwaresecurephotoverification",
        &[
            ("user_id", "auth_user", false),
            ("reviewing_user_id", "auth_user", true),
        ],
    ),
    (
        "entitlements_courseentitlement",
        &[("user_id", "auth_user", false)],
    ),
    ("badges_badgeassertion", &[("user_id", "auth_user", false)]),
    ("notes_note", &[("user_id", "auth_user", false)]),
    ("bookmarks_bookmark", &[("user_id", "auth_user", false)]),
    (
        "student_userstanding",
        &[
            ("user_id", "auth_user", false),
            ("changed_by_id", "auth_user", true),
        ],
    ),
    (
        "instructor_task_instructortask",
        &[("requester_id", "auth_user", true)],
    ),
    (
        "config_models_siteconfig",
        &[("changed_by_id", "auth_user", true)],
    ),
    (
        "django_comment_thread",
        &[
            ("author_id", "auth_user", false),
            ("parent_id", "django_comment_thread", true),
        ],
    ),
    (
        "experiments_experimentdata",
        &[
            ("user_id", "auth_user", false),
            ("key_id", "experiments_experimentkeyvalue", true),
        ],
    ),
    (
        "experiments_experimentkeyvalue",
        &[
            ("user_id", "auth_user", false),
            ("data_id", "experiments_experimentdata", false),
        ],
    ),
    ("forum_post", &[("author_id", "auth_user", true)]),
    ("student_courseenrollmentallowed", &[]),
    // The protected tables of the edX preset.
    ("authtoken_token", &[("user_id", "auth_user", false)]),
    (
        "certificates_certificatehtmlviewconfiguration",
        &[("changed_by_id", "auth_user", true)],
    ),
    (
        "contentstore_videouploadconfig",
        &[("changed_by_id", "auth_user", true)],
    ),
    (
        "course_action_state_coursererunstate",
        &[
            ("created_user_id", "auth_user", true),
            ("updated_user_id", "auth_user", true),
        ],
    ),
    (
        "course_creators_coursecreator",
        &[("user_id", "auth_user", false)],
    ),
    (
        "dark_lang_darklangconfig",
        &[("changed_by_id", "auth_user", true)],
    ),
    (
        "util_ratelimitconfiguration",
        &[("changed_by_id", "auth_user", true)],
    ),
    (
        "verify_student_historicalverificationdeadline",
        &[("history_user_id", "auth_user", true)],
    ),
    ("wiki_article", &[("owner_id", "auth_user", true)]),
    (
        "wiki_articlerevision",
        &[
            ("user_id", "auth_user", true),
            ("article_id", "wiki_article", false),
        ],
    ),
];

/// The pipeline.toml `[[target]]` for this fixture (the edX preset plus its extras).
pub fn target_toml(url: &str) -> String {
    format!(
        r#"
[[target]]
name = "edx"
url = "{url}"
protect = [
    "authtoken_token.user_id",
    "certificates_certificatehtmlviewconfiguration.changed_by_id",
    "contentstore_videouploadconfig.changed_by_id",
    "course_action_state_coursererunstate.created_user_id",
    "course_action_state_coursererunstate.updated_user_id",
    "course_creators_coursecreator.user_id",
    "dark_lang_darklangconfig.changed_by_id",
    "util_ratelimitconfiguration.changed_by_id",
    "verify_student_historicalverificationdeadline.history_user_id",
    "wiki_article.owner_id",
    "wiki_articlerevision.user_id",
]
delete = ["student_manualenrollmentaudit.enrollment_id"]
[[target.anonymize]]
link = "forum_post.author_id"
set = {{ data = "[deleted]" }}
[[target.extra_link]]
link = "student_courseenrollmentallowed.email"
references = "auth_user.email"
"#
    )
}

fn id_type(d: Dialect) -> &'static str {
    match d {
        Dialect::MySql | Dialect::Postgres => "BIGINT",
        Dialect::Sqlite => "INTEGER",
    }
}

/// DDL for the whole fixture, in an order the database accepts.
pub fn ddl(d: Dialect) -> Vec<String> {
    let int = id_type(d);
    let (text, time, engine) = match d {
        Dialect::MySql => ("VARCHAR(255)", "DATETIME(6)", " ENGINE=InnoDB"),
        Dialect::Postgres => ("VARCHAR(255)", "TIMESTAMP", ""),
        Dialect::Sqlite => ("TEXT", "TEXT", ""),
    };
    let inline_fk = d == Dialect::Sqlite;
    let mut statements = Vec::new();
    let mut later = Vec::new();
    let mut fk = |table: &str, column: &str, target: &str, columns: &mut Vec<String>| {
        let target_col = if column == "email" { "email" } else { "id" };
        if inline_fk {
            columns.push(format!(
                "FOREIGN KEY ({column}) REFERENCES {target} ({target_col})"
            ));
        } else {
            later.push(format!(
                "ALTER TABLE {table} ADD CONSTRAINT fk_{} FOREIGN KEY ({column}) REFERENCES {target} ({target_col})",
                later.len() + 1
            ));
        }
    };
    let mut user_cols = vec![
        format!("id {int} PRIMARY KEY"),
        format!("username {text} NOT NULL"),
        format!("email {text} NOT NULL UNIQUE"),
        format!("is_staff {int} NOT NULL DEFAULT 0"),
        format!("is_superuser {int} NOT NULL DEFAULT 0"),
        format!("is_active {int} NOT NULL DEFAULT 1"),
        format!("last_login {time} NULL"),
        format!("date_joined {time} NOT NULL"),
        format!("referred_by_id {int} NULL"),
    ];
    fk("auth_user", "referred_by_id", "auth_user", &mut user_cols);
    statements.push(format!(
        "CREATE TABLE auth_user ({}){engine}",
        user_cols.join(", ")
    ));
    for (table, links) in TABLES {
        let mut cols = vec![format!("id {int} PRIMARY KEY"), format!("data {text} NULL")];
        if *table == "student_courseenrollmentallowed" {
            cols.push(format!("email {text} NOT NULL"));
        }
        for (column, _, nullable) in links.iter() {
            cols.push(format!(
                "{column} {int} {}",
                if *nullable { "NULL" } else { "NOT NULL" }
            ));
        }
        for (column, target, _) in links.iter() {
            fk(table, column, target, &mut cols);
        }
        statements.push(format!(
            "CREATE TABLE {table} ({}){engine}",
            cols.join(", ")
        ));
    }
    statements.extend(later);
    statements
}

/// Users seeded: 1..=6.
pub const USERS: std::ops::RangeInclusive<i64> = 1..=6;

/// Rows per (table, owner): what retiring the owner deletes. Built by `seed`.
pub type Owned = BTreeMap<(String, i64), i64>;

/// INSERT statements that give every user rows everywhere, with cross-user actor links,
/// and what each user owns. `protected_user` also gets a wiki article.
pub fn seed(d: Dialect, protected_user: i64, rows_per_table: i64) -> (Vec<String>, Owned) {
    let time = |t: &str| match d {
        Dialect::Sqlite | Dialect::Postgres | Dialect::MySql => format!("'{t}'"),
    };
    let mut sql = Vec::new();
    let mut owned = Owned::new();
    let mut next_id = 1000i64;
    let mut id = || {
        next_id += 1;
        next_id
    };
    let other = |u: i64| if u == 6 { 1 } else { u + 1 };
    for u in USERS {
        sql.push(format!(
            "INSERT INTO auth_user (id, username, email, is_staff, is_superuser, last_login, date_joined, referred_by_id) \
             VALUES ({u}, 'user{u}', 'user{u}@example.org', 0, 0, {}, {}, NULL)",
            time("2019-01-01 00:00:00"),
            time("2018-01-01 00:00:00")
        ));
    }
    // User 4 was referred by user 1 (a self-reference to nullify).
    sql.push("UPDATE auth_user SET referred_by_id = 1 WHERE id = 4".into());
    let mut own =
        |table: &str, u: i64, n: i64| *owned.entry((table.to_string(), u)).or_default() += n;
    for u in USERS {
        for (table, links) in TABLES {
            let protected = table.starts_with("authtoken")
                || table.starts_with("certificates_certificatehtml")
                || table.starts_with("contentstore")
                || table.starts_with("course_action")
                || table.starts_with("course_creators")
                || table.starts_with("dark_lang")
                || table.starts_with("util_rate")
                || table.starts_with("verify_student_historical")
                || table.starts_with("wiki");
            if protected
                || links.iter().any(|(_, target, _)| *target != "auth_user") && links.len() == 1
            {
                continue;
            }
            match *table {
                "student_courseenrollmentallowed" => {
                    for _ in 0..rows_per_table {
                        sql.push(format!("INSERT INTO {table} (id, data, email) VALUES ({}, 'x', 'user{u}@example.org')", id()));
                    }
                    own(table, u, rows_per_table);
                }
                "instructor_task_instructortask" | "config_models_siteconfig" => {
                    // Rows that only name the user as an actor: kept, link set to NULL.
                    let column = links[0].0;
                    sql.push(format!(
                        "INSERT INTO {table} (id, data, {column}) VALUES ({}, 'x', {u})",
                        id()
                    ));
                }
                "forum_post" => {
                    sql.push(format!("INSERT INTO {table} (id, data, author_id) VALUES ({}, 'post by user{u}', {u})", id()));
                }
                "student_courseenrollment" => {
                    for _ in 0..rows_per_table {
                        let e = id();
                        sql.push(format!(
                            "INSERT INTO {table} (id, data, user_id) VALUES ({e}, 'x', {u})"
                        ));
                        sql.push(format!("INSERT INTO student_courseenrollmentattribute (id, data, enrollment_id) VALUES ({}, 'x', {e})", id()));
                        // An audit row of the user's own enrollment, written by another user.
                        sql.push(format!(
                            "INSERT INTO student_manualenrollmentaudit (id, data, enrollment_id, enrolled_by_id) VALUES ({}, 'x', {e}, {})",
                            id(),
                            other(u)
                        ));
                    }
                    own(table, u, rows_per_table);
                    own("student_courseenrollmentattribute", u, rows_per_table);
                    own("student_manualenrollmentaudit", u, rows_per_table);
                }
                "student_manualenrollmentaudit" | "student_courseenrollmentattribute" => {}
                "courseware_studentmodule" => {
                    for _ in 0..rows_per_table {
                        let m = id();
                        sql.push(format!(
                            "INSERT INTO {table} (id, data, student_id) VALUES ({m}, 'x', {u})"
                        ));
                        for _ in 0..2 {
                            sql.push(format!(
                                "INSERT INTO courseware_studentmodulehistory (id, data, student_module_id) VALUES ({}, 'x', {m})",
                                id()
                            ));
                        }
                    }
                    own(table, u, rows_per_table);
                    own("courseware_studentmodulehistory", u, 2 * rows_per_table);
                }
                "courseware_studentmodulehistory" => {}
                "oauth2_provider_accesstoken" => {
                    let a = id();
                    sql.push(format!(
                        "INSERT INTO {table} (id, data, user_id) VALUES ({a}, 'x', {u})"
                    ));
                    sql.push(format!(
                        "INSERT INTO oauth2_provider_refreshtoken (id, data, user_id, access_token_id) VALUES ({}, 'x', {u}, {a})",
                        id()
                    ));
                    own(table, u, 1);
                    own("oauth2_provider_refreshtoken", u, 1);
                }
                "oauth2_provider_refreshtoken" => {}
                "verify_student_softwaresecurephotoverification" | "student_userstanding" => {
                    // Own row, reviewed/changed by another user (actor column).
                    let actor = links[1].0;
                    sql.push(format!("INSERT INTO {table} (id, data, user_id, {actor}) VALUES ({}, 'x', {u}, {})", id(), other(u)));
                    own(table, u, 1);
                }
                "django_comment_thread" => {
                    let t = id();
                    sql.push(format!("INSERT INTO {table} (id, data, author_id, parent_id) VALUES ({t}, 'x', {u}, NULL)"));
                    // Another user's reply to this thread (self-reference to nullify).
                    sql.push(format!("INSERT INTO {table} (id, data, author_id, parent_id) VALUES ({}, 'reply', {}, {t})", id(), other(u)));
                    own(table, u, 1);
                    own(table, other(u), 1);
                }
                "experiments_experimentdata" => {
                    let e = id();
                    let k = id();
                    sql.push(format!("INSERT INTO {table} (id, data, user_id, key_id) VALUES ({e}, 'x', {u}, NULL)"));
                    sql.push(format!("INSERT INTO experiments_experimentkeyvalue (id, data, user_id, data_id) VALUES ({k}, 'x', {u}, {e})"));
                    sql.push(format!("UPDATE {table} SET key_id = {k} WHERE id = {e}"));
                    own(table, u, 1);
                    own("experiments_experimentkeyvalue", u, 1);
                }
                "experiments_experimentkeyvalue" => {}
                _ => {
                    let column = links[0].0;
                    for _ in 0..rows_per_table {
                        sql.push(format!(
                            "INSERT INTO {table} (id, data, {column}) VALUES ({}, 'x', {u})",
                            id()
                        ));
                    }
                    own(table, u, rows_per_table);
                }
            }
        }
        // Protected rows for other users' sake: an API token for user 5 only.
        if u == 5 {
            sql.push(format!(
                "INSERT INTO authtoken_token (id, data, user_id) VALUES ({}, 'x', 5)",
                id()
            ));
        }
    }
    let article = id();
    sql.push(format!(
        "INSERT INTO wiki_article (id, data, owner_id) VALUES ({article}, 'x', {protected_user})"
    ));
    sql.push(format!("INSERT INTO wiki_articlerevision (id, data, user_id, article_id) VALUES ({}, 'x', {protected_user}, {article})", id()));
    (sql, owned)
}

/// Every table of the fixture, the root included.
pub fn all_tables() -> Vec<&'static str> {
    std::iter::once("auth_user")
        .chain(TABLES.iter().map(|(t, _)| *t))
        .collect()
}
