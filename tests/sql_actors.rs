//! Invariant 5 on a schema whose actor columns are NOT NULL (as in Mork's edX models), on
//! MariaDB, PostgreSQL and SQLite: a row whose owner is not being retired is never deleted;
//! its actor column is reassigned to the placeholder account, or its subject is refused
//! before anything is deleted.

mod common;

use common::edx::Owned;
use common::target::{Fixture, warned};
use lethe::sql::Dialect;
use lethe::sql::target::{Subject, SubjectResult};
use std::collections::BTreeMap;

const TABLES: &[&str] = &[
    "auth_user",
    "student_userstanding",
    "verify_student_softwaresecurephotoverification",
    "student_historicalcourseenrollment",
    "notes_note",
];

fn ddl(d: Dialect) -> Vec<String> {
    let (int, engine) = match d {
        Dialect::MySql => ("BIGINT", " ENGINE=InnoDB"),
        Dialect::Postgres => ("BIGINT", ""),
        Dialect::Sqlite => ("INTEGER", ""),
    };
    let fk = |c: &str| format!("FOREIGN KEY ({c}) REFERENCES auth_user (id)");
    vec![
        format!(
            "CREATE TABLE auth_user (id {int} PRIMARY KEY, username VARCHAR(100) NOT NULL, \
             last_login TIMESTAMP NULL){engine}"
        ),
        format!(
            "CREATE TABLE student_userstanding (id {int} PRIMARY KEY, user_id {int} NOT NULL, \
             changed_by_id {int} NOT NULL, {}, {}){engine}",
            fk("user_id"),
            fk("changed_by_id")
        ),
        format!(
            "CREATE TABLE verify_student_softwaresecurephotoverification (id {int} PRIMARY KEY, \
             user_id {int} NOT NULL, reviewing_user_id {int} NOT NULL, {}, {}){engine}",
            fk("user_id"),
            fk("reviewing_user_id")
        ),
        format!(
            "CREATE TABLE student_historicalcourseenrollment (id {int} PRIMARY KEY, user_id {int} NULL, \
             course VARCHAR(100) NOT NULL, {}){engine}",
            fk("user_id")
        ),
        format!(
            "CREATE TABLE notes_note (id {int} PRIMARY KEY, user_id {int} NOT NULL, {}){engine}",
            fk("user_id")
        ),
    ]
}

/// Users 1 (staff: changed and reviewed other users' rows), 2, 3 and 9 (the placeholder).
fn seed() -> (Vec<String>, Owned) {
    let mut sql: Vec<String> = [1, 2, 3, 9]
        .iter()
        .map(|u| {
            format!(
                "INSERT INTO auth_user (id, username, last_login) VALUES ({u}, 'user{u}', '2019-01-01 00:00:00')"
            )
        })
        .collect();
    for (id, user, actor) in [(1, 2, 1), (2, 3, 3), (3, 1, 2)] {
        sql.push(format!(
            "INSERT INTO student_userstanding (id, user_id, changed_by_id) VALUES ({id}, {user}, {actor})"
        ));
    }
    for (id, user, reviewer) in [(1, 2, 1), (2, 1, 1)] {
        sql.push(format!(
            "INSERT INTO verify_student_softwaresecurephotoverification (id, user_id, reviewing_user_id) VALUES ({id}, {user}, {reviewer})"
        ));
    }
    for (id, user) in [(1, 1), (2, 2)] {
        sql.push(format!(
            "INSERT INTO student_historicalcourseenrollment (id, user_id, course) VALUES ({id}, {user}, 'course-v1:x')"
        ));
    }
    for (id, user) in [(1, 1), (2, 1), (3, 2)] {
        sql.push(format!(
            "INSERT INTO notes_note (id, user_id) VALUES ({id}, {user})"
        ));
    }
    (sql, Owned::new())
}

async fn fixture(d: Dialect) -> Fixture {
    let (seed, owned) = seed();
    Fixture::with(d, &ddl(d), &seed, owned).await
}

fn target_toml(url: &str, extra: &str) -> String {
    format!(
        "[[target]]\nname = \"edx\"\nurl = \"{url}\"\n\
         delete = [\"student_historicalcourseenrollment.user_id\"]\n{extra}"
    )
}

async fn counts(f: &Fixture) -> BTreeMap<&'static str, i64> {
    let mut out = BTreeMap::new();
    for t in TABLES {
        out.insert(*t, f.count(&format!("SELECT COUNT(*) FROM {t}")).await);
    }
    out
}

fn subjects(ids: &[i64]) -> Vec<Subject> {
    ids.iter()
        .map(|&id| Subject {
            id,
            active_after: warned(),
            check_exclusions: true,
            still_selected: None,
        })
        .collect()
}

fn rows(result: &SubjectResult) -> &BTreeMap<String, u64> {
    match result {
        SubjectResult::Retired {
            already_gone: false,
            rows,
        } => rows,
        other => panic!("not retired: {other:?}"),
    }
}

per_dialect!(
    kept_rows_behind_not_null_actors_refuse_the_subject_first,
    kept_rows_are_reassigned_to_the_placeholder,
    a_nullable_owner_link_must_be_classified,
);

async fn kept_rows_behind_not_null_actors_refuse_the_subject_first(d: Dialect) {
    let f = fixture(d).await;
    let target = f.target_with(&target_toml(&f.url, "")).await;
    let before = counts(&f).await;
    // User 1 changed user 2's standing and reviewed user 2's photo: without a placeholder
    // those rows can be neither deleted nor kept, so user 1 is refused and nothing changes.
    let report = target.retire(&subjects(&[1])).await.unwrap();
    let SubjectResult::Refused(why) = &report.subjects[&1] else {
        panic!("{:?}", report.subjects[&1]);
    };
    assert!(
        why.contains("student_userstanding.changed_by_id (1 rows")
            && why.contains(
                "verify_student_softwaresecurephotoverification.reviewing_user_id (1 rows"
            ),
        "{why}"
    );
    assert!(!why.contains("user2"), "no names in reasons: {why}");
    assert_eq!(report.deleted, 0);
    assert_eq!(counts(&f).await, before, "nothing was deleted");

    // Retired together, each row goes once, counted for its owner.
    let report = target.retire(&subjects(&[1, 2])).await.unwrap();
    let one = rows(&report.subjects[&1]);
    let two = rows(&report.subjects[&2]);
    assert_eq!(
        one.get("student_userstanding (delete)"),
        Some(&1),
        "{one:?}"
    );
    assert_eq!(
        two.get("student_userstanding (delete)"),
        Some(&1),
        "{two:?}"
    );
    let photo = "verify_student_softwaresecurephotoverification (delete)";
    assert_eq!((one.get(photo), two.get(photo)), (Some(&1), Some(&1)));
    assert_eq!(one.get("notes_note (delete)"), Some(&2));
    assert_eq!(two.get("notes_note (delete)"), Some(&1));
    // User 3's own standing row (changed by user 3) stays whole.
    assert_eq!(
        f.count(
            "SELECT COUNT(*) FROM student_userstanding WHERE user_id = 3 AND changed_by_id = 3"
        )
        .await,
        1
    );
    assert_eq!(
        f.count("SELECT COUNT(*) FROM student_userstanding").await,
        1
    );
    assert_eq!(
        f.count("SELECT COUNT(*) FROM student_historicalcourseenrollment")
            .await,
        0,
        "history rows of retired users are deleted, not kept without their user"
    );
}

async fn kept_rows_are_reassigned_to_the_placeholder(d: Dialect) {
    let f = fixture(d).await;
    let target = f
        .target_with(&target_toml(&f.url, "reassign_to = 9\n"))
        .await;
    let report = target.retire(&subjects(&[1])).await.unwrap();
    let one = rows(&report.subjects[&1]);
    assert_eq!(
        one.get("student_userstanding (delete)"),
        Some(&1),
        "{one:?}"
    );
    assert_eq!(
        one.get("student_userstanding (anonymize)"),
        Some(&1),
        "{one:?}"
    );
    // User 2's rows are all there, their actor now the placeholder.
    for (table, n) in [
        ("student_userstanding", 1),
        ("verify_student_softwaresecurephotoverification", 1),
        ("student_historicalcourseenrollment", 1),
        ("notes_note", 1),
    ] {
        assert_eq!(
            f.count(&format!("SELECT COUNT(*) FROM {table} WHERE user_id = 2"))
                .await,
            n,
            "{table}"
        );
    }
    assert_eq!(
        f.count(
            "SELECT COUNT(*) FROM student_userstanding WHERE user_id = 2 AND changed_by_id = 9"
        )
        .await,
        1
    );
    assert_eq!(
        f.count("SELECT COUNT(*) FROM verify_student_softwaresecurephotoverification WHERE user_id = 2 AND reviewing_user_id = 9")
            .await,
        1
    );
    assert_eq!(
        f.count("SELECT COUNT(*) FROM auth_user WHERE id = 1").await,
        0
    );
    // The placeholder itself is never retired.
    let report = target.retire(&subjects(&[9])).await.unwrap();
    assert!(
        matches!(&report.subjects[&9], SubjectResult::Refused(why) if why.contains("placeholder")),
        "{:?}",
        report.subjects[&9]
    );
    assert_eq!(
        f.count("SELECT COUNT(*) FROM auth_user WHERE id = 9").await,
        1
    );
}

async fn a_nullable_owner_link_must_be_classified(d: Dialect) {
    let f = fixture(d).await;
    let err = f
        .try_target(&format!(
            "[[target]]\nname = \"edx\"\nurl = \"{}\"\n",
            f.url
        ))
        .await
        .err()
        .expect("refused");
    assert!(
        err.contains("student_historicalcourseenrollment.user_id")
            && err.contains("delete, nullify or anonymize"),
        "{err}"
    );
    // A placeholder that does not exist is refused by name too.
    let err = f
        .try_target(&target_toml(&f.url, "reassign_to = 77\n"))
        .await
        .err()
        .expect("refused");
    assert!(err.contains("reassign_to = 77"), "{err}");
}
