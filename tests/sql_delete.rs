//! Set-based deletion against real MariaDB (foreign key checks on), PostgreSQL and SQLite,
//! on the edX-like fixture: only the retired users' rows go, actors are nullified,
//! protected and active users are untouched, reruns are no-ops, failures roll back.

mod common;

use common::edx;
use common::target::{Fixture, warned};
use common::{Kind, TestDb, exec, mysql_admin_url, scalar};
use lethe::config::Config;
use lethe::sql::Dialect;
use lethe::sql::target::{Subject, SubjectResult, Target};

per_dialect!(
    only_the_retired_users_rows_go,
    each_subject_counts_its_own_rows,
    a_rerun_is_a_no_op,
    a_failure_mid_batch_leaves_the_database_as_it_was,
    exclusions_are_re_checked_in_the_deleting_transaction,
);

async fn only_the_retired_users_rows_go(dialect: Dialect) {
    let f = Fixture::new(dialect).await;
    let target = f.target().await;
    assert!(
        target.plan.steps.len() >= 40,
        "{} steps",
        target.plan.steps.len()
    );
    // User 2 logged in after the warning.
    exec(
        &f.url,
        &["UPDATE auth_user SET last_login = '2026-06-01 12:00:00' WHERE id = 2".to_string()],
    )
    .await;
    let before = f.counts().await;
    let subjects: Vec<Subject> = [1, 2, 3]
        .into_iter()
        .map(|id| Subject {
            id,
            active_after: warned(),
            check_exclusions: true,
            still_selected: None,
        })
        .collect();
    let report = target.retire(&subjects).await.unwrap();
    // User 1's own rows, per table, as its event records them.
    let SubjectResult::Retired {
        already_gone: false,
        rows,
    } = &report.subjects[&1]
    else {
        panic!("user 1 not retired: {:?}", report.subjects[&1]);
    };
    for ((table, user), n) in &f.owned {
        if *user == 1 && *n > 0 {
            assert_eq!(
                rows.get(&format!("{table} (delete)")),
                Some(&(*n as u64)),
                "{table}"
            );
        }
    }
    assert_eq!(rows.get("auth_user (delete)"), Some(&1));
    assert!(
        rows.keys().any(|k| k.ends_with("(nullify)")),
        "actor columns of others' rows are counted too: {rows:?}"
    );
    assert!(
        matches!(report.subjects[&2], SubjectResult::Active(_)),
        "{:?}",
        report.subjects[&2]
    );
    // Every protected link the user has rows behind is named, with its rows.
    assert_eq!(
        report.subjects[&3],
        SubjectResult::Protected(vec![
            ("wiki_article.owner_id".into(), 1),
            ("wiki_articlerevision.user_id".into(), 1)
        ])
    );
    assert_eq!(report.rows["courseware_studentmodulehistory (delete)"], 6);

    let after = f.counts().await;
    for (table, count) in &before {
        let gone = f.owned.get(&(table.to_string(), 1)).copied().unwrap_or(0)
            + i64::from(*table == "auth_user");
        assert_eq!(after[table], count - gone, "{table}: only user 1's rows go");
    }
    // Actor columns of other users' rows that pointed at user 1 are NULL; the rows stay.
    assert_eq!(
        f.count("SELECT COUNT(*) FROM student_manualenrollmentaudit WHERE enrolled_by_id = 1")
            .await,
        0
    );
    assert_eq!(
        f.count("SELECT COUNT(*) FROM student_userstanding WHERE changed_by_id IS NULL")
            .await,
        1
    );
    assert_eq!(f.count("SELECT COUNT(*) FROM verify_student_softwaresecurephotoverification WHERE reviewing_user_id IS NULL").await, 1);
    assert_eq!(
        f.count("SELECT COUNT(*) FROM instructor_task_instructortask WHERE requester_id IS NULL")
            .await,
        1
    );
    assert_eq!(
        f.count("SELECT COUNT(*) FROM auth_user WHERE id = 4 AND referred_by_id IS NULL")
            .await,
        1
    );
    assert_eq!(
        f.count(
            "SELECT COUNT(*) FROM django_comment_thread WHERE parent_id IS NULL AND data = 'reply'"
        )
        .await,
        1
    );
    // Kept forum posts are anonymized.
    assert_eq!(
        f.count("SELECT COUNT(*) FROM forum_post WHERE author_id IS NULL AND data = '[deleted]'")
            .await,
        1
    );
    assert_eq!(
        f.count("SELECT COUNT(*) FROM forum_post WHERE data LIKE '%user1%'")
            .await,
        0
    );
    // The invitation by email is gone, the others stay.
    assert_eq!(
        f.count(
            "SELECT COUNT(*) FROM student_courseenrollmentallowed WHERE email = 'user1@example.org'"
        )
        .await,
        0
    );
    // The active and the protected users are whole.
    for u in [2, 3] {
        assert_eq!(
            f.count(&format!("SELECT COUNT(*) FROM auth_user WHERE id = {u}"))
                .await,
            1
        );
        assert_eq!(
            f.count(&format!(
                "SELECT COUNT(*) FROM courseware_studentmodule WHERE student_id = {u}"
            ))
            .await,
            3
        );
    }
}

/// Made staff or allow-listed after the warning: not deleted, unless an operator overrode
/// the exclusions for that subject.
async fn exclusions_are_re_checked_in_the_deleting_transaction(dialect: Dialect) {
    let f = Fixture::new(dialect).await;
    let source = "[source]\nallow_emails = [\"user4@example.org\"]\n";
    let target = f
        .target_with(&format!("{source}{}", edx::target_toml(&f.url)))
        .await;
    exec(
        &f.url,
        &[
            "UPDATE auth_user SET is_staff = 1 WHERE id = 1".to_string(),
            "UPDATE auth_user SET is_superuser = 1 WHERE id = 2".to_string(),
        ],
    )
    .await;
    let subject = |id, check_exclusions| Subject {
        id,
        active_after: warned(),
        check_exclusions,
        still_selected: None,
    };
    let report = target
        .retire(&[
            subject(1, true),
            subject(2, false),
            subject(4, true),
            subject(6, true),
        ])
        .await
        .unwrap();
    assert_eq!(
        report.subjects[&1],
        SubjectResult::Excluded("excluded by source.exclude (re-checked before deleting)".into())
    );
    assert_eq!(
        report.subjects[&4],
        SubjectResult::Excluded("allow-listed in [source] (re-checked before deleting)".into())
    );
    assert!(
        report.subjects[&2].deleted_now(),
        "{:?}",
        report.subjects[&2]
    );
    assert!(
        report.subjects[&6].deleted_now(),
        "{:?}",
        report.subjects[&6]
    );
    assert_eq!(
        f.count("SELECT COUNT(*) FROM auth_user WHERE id IN (1, 4)")
            .await,
        2
    );
}

async fn a_rerun_is_a_no_op(dialect: Dialect) {
    let f = Fixture::new(dialect).await;
    let target = f.target().await;
    let one = [Subject {
        id: 1,
        active_after: warned(),
        check_exclusions: true,
        still_selected: None,
    }];
    target.retire(&one).await.unwrap();
    let before = f.counts().await;
    let report = target.retire(&one).await.unwrap();
    assert_eq!(
        report.subjects[&1],
        SubjectResult::Retired {
            already_gone: true,
            rows: Default::default()
        }
    );
    assert_eq!(f.counts().await, before);
}

/// Subjects deleted together: each one's event counts its own rows, and the counts add up
/// to what the statements changed.
async fn each_subject_counts_its_own_rows(dialect: Dialect) {
    let f = Fixture::new(dialect).await;
    let target = f.target().await;
    let users = [1, 4];
    let subjects: Vec<Subject> = users
        .iter()
        .map(|&id| Subject {
            id,
            active_after: warned(),
            check_exclusions: true,
            still_selected: None,
        })
        .collect();
    let report = target.retire(&subjects).await.unwrap();
    assert_eq!(report.deleted, 2, "{:?}", report.subjects);
    let mut summed: std::collections::BTreeMap<String, u64> = Default::default();
    for u in users {
        let SubjectResult::Retired {
            already_gone: false,
            rows,
        } = &report.subjects[&u]
        else {
            panic!("user {u} not retired: {:?}", report.subjects[&u]);
        };
        for ((table, owner), n) in &f.owned {
            if *owner == u && *n > 0 {
                assert_eq!(
                    rows.get(&format!("{table} (delete)")),
                    Some(&(*n as u64)),
                    "user {u}: {table}"
                );
            }
        }
        for (label, n) in rows {
            *summed.entry(label.clone()).or_default() += n;
        }
    }
    assert_eq!(
        summed, report.rows,
        "per-subject counts add up to the batch"
    );
}

async fn a_failure_mid_batch_leaves_the_database_as_it_was(dialect: Dialect) {
    let f = Fixture::new(dialect).await;
    let trigger = match dialect {
        Dialect::MySql => vec!["CREATE TRIGGER boom BEFORE DELETE ON bookmarks_bookmark FOR EACH ROW \
             BEGIN IF OLD.data = 'boom' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'boom'; END IF; END"
            .to_string()],
        Dialect::Postgres => vec![
            "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF OLD.data = 'boom' THEN RAISE EXCEPTION 'boom'; END IF; RETURN OLD; END $$"
                .to_string(),
            "CREATE TRIGGER boom BEFORE DELETE ON bookmarks_bookmark FOR EACH ROW EXECUTE FUNCTION boom()".to_string(),
        ],
        Dialect::Sqlite => vec!["CREATE TRIGGER boom BEFORE DELETE ON bookmarks_bookmark WHEN OLD.data = 'boom' \
             BEGIN SELECT RAISE(ABORT, 'boom'); END"
            .to_string()],
    };
    exec(&f.url, &trigger).await;
    exec(
        &f.url,
        &["UPDATE bookmarks_bookmark SET data = 'boom' WHERE user_id = 4".to_string()],
    )
    .await;
    let target = f.target().await;
    let before = f.counts().await;
    // bookmarks_bookmark comes after many other tables in the plan: the failure lands mid-batch.
    let batch: Vec<Subject> = [1, 4]
        .into_iter()
        .map(|id| Subject {
            id,
            active_after: warned(),
            check_exclusions: true,
            still_selected: None,
        })
        .collect();
    let err = target.retire(&batch).await.unwrap_err();
    assert!(err.to_string().contains("rolled back"), "{err}");
    assert_eq!(f.counts().await, before, "nothing of the batch was deleted");
}

fn lethe_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
        .current_dir(dir)
        .args(args)
        .env("LETHE_HASH_KEY", "test-key-0123456789")
        .env_remove("LETHE_STORE_URL")
        .env_remove("LETHE_TARGET_EDX_URL")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_check_connect_show_the_plan_and_name_what_is_wrong() {
    let f = Fixture::new(Dialect::MySql).await;
    let dir = std::env::temp_dir().join(format!("lethe-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("states.toml"), common::STATES).unwrap();
    let pipeline = format!(
        "{}{}",
        common::noop_pipeline("", ""),
        edx::target_toml(&f.url)
    );
    std::fs::write(dir.join("pipeline.toml"), &pipeline).unwrap();
    let before = f.counts().await;

    let out = lethe_in(&dir, &["plan", "1", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = plan[0]["steps"].as_array().unwrap();
    let history = steps
        .iter()
        .find(|s| s["link"] == "courseware_studentmodulehistory.student_module_id")
        .unwrap();
    assert_eq!(
        (history["action"].as_str(), history["rows"].as_i64()),
        (Some("delete"), Some(6))
    );
    assert_eq!(plan[0]["verdict"], "would be deleted");
    assert_eq!(plan[0]["exact"], true);
    // User 1's refresh token is its own: deleted before its link to the access token would
    // be nullified, so nothing is counted as nullified there.
    let refresh = steps
        .iter()
        .find(|s| s["link"] == "oauth2_provider_refreshtoken.access_token_id")
        .unwrap();
    assert_eq!(refresh["rows"].as_i64(), Some(0), "{refresh}");
    assert_eq!(f.counts().await, before, "plan changes nothing");

    // A protected subject: the verdict comes first, naming every protected link.
    let out = lethe_in(&dir, &["plan", "3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().next().is_some_and(|l| l
            == "target edx: the deletion would be refused: protected: wiki_article.owner_id (1 row), wiki_articlerevision.user_id (1 row)"),
        "{text}"
    );
    assert_eq!(f.counts().await, before, "plan changes nothing");

    // check --connect reaches the store too, which only `migrate` creates.
    assert!(lethe_in(&dir, &["migrate"]).status.success());
    let out = lethe_in(&dir, &["check", "--connect"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("protected columns: "), "{text}");
    assert!(text.contains("nullified columns to review"), "{text}");
    assert!(
        text.contains("student_manualenrollmentaudit.enrolled_by_id"),
        "{text}"
    );
    // Tables linking to the root twice: each link's rule is listed.
    assert!(
        text.contains("student_userstanding.user_id (NOT NULL): delete: owner"),
        "{text}"
    );
    assert!(
        text.contains("student_userstanding.changed_by_id (NULL): nullify"),
        "{text}"
    );

    // A protected column that does not exist is named, and nothing starts.
    let bad = pipeline.replace("\"wiki_article.owner_id\"", "\"wiki_article.owner\"");
    std::fs::write(dir.join("pipeline.toml"), &bad).unwrap();
    let out = lethe_in(&dir, &["check", "--connect"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("target edx: wiki_article.owner: column wiki_article.owner does not exist"),
        "{err}"
    );

    // An unreachable target is named.
    let down = pipeline.replace("127.0.0.1:3306", "127.0.0.1:1");
    std::fs::write(dir.join("pipeline.toml"), &down).unwrap();
    let out = lethe_in(&dir, &["check", "--connect"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("target edx: cannot connect"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_records_rows_deleted_and_protection_in_events() {
    use lethe::store::Lookup;
    let f = Fixture::new(Dialect::MySql).await;
    let text = format!(
        "{}{}",
        common::noop_pipeline("grace_period = \"1d\"", "").replace(
            "state = \"RETIRING_EDX\"\nhandler = \"noop\"",
            "state = \"RETIRING_EDX\"\nhandler = \"sql_delete\"\ntarget = \"edx\""
        ),
        edx::target_toml(&f.url)
    );
    let (graph, pipeline) =
        Config::from_texts("states.toml", common::STATES, "pipeline.toml", &text).unwrap();
    let store_db = TestDb::new(Kind::Sqlite).await;
    let store = store_db.store(&graph).await;
    let t0 = common::t0();
    store
        .enqueue("PENDING", &common::subjects(1, 4), "cli", t0)
        .await
        .unwrap();
    // Warned when opened (the noop stages send nothing); the clock is past the grace period.
    exec(
        &store_db.url,
        &["UPDATE retirement SET warned_at = created_at".to_string()],
    )
    .await;
    // User 2 comes back after the warning.
    exec(
        &f.url,
        &["UPDATE auth_user SET last_login = '2026-11-23 08:00:00' WHERE id = 2".to_string()],
    )
    .await;
    run_driver_once(
        &pipeline,
        graph,
        store.clone(),
        t0 + chrono::Duration::days(2),
    )
    .await;
    let find = |s: &str| Lookup::subject(s, Some(&common::key()));
    let one = store.find(&find("1")).await.unwrap().unwrap();
    assert_eq!(one.state, "COMPLETE");
    let events = store.history(one.id).await.unwrap();
    let deletion = events
        .iter()
        .find(|e| e.from_state.as_deref() == Some("RETIRING_EDX"))
        .unwrap();
    assert!(
        deletion
            .detail
            .contains("\"courseware_studentmodulehistory (delete)\":6"),
        "{}",
        deletion.detail
    );
    let two = store.find(&find("2")).await.unwrap().unwrap();
    assert_eq!(two.state, "ABORTED");
    let why = store
        .history(two.id)
        .await
        .unwrap()
        .last()
        .unwrap()
        .detail
        .clone();
    assert!(why.contains("active again at 2026-11-23"), "{why}");
    let three = store.find(&find("3")).await.unwrap().unwrap();
    assert_eq!(three.state, "ERRORED");
    assert_eq!(
        three.last_error.as_deref(),
        Some("protected: wiki_article.owner_id (1 row), wiki_articlerevision.user_id (1 row)")
    );
    assert_eq!(
        f.count("SELECT COUNT(*) FROM auth_user WHERE id IN (2, 3)")
            .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_transaction_rolls_back_and_the_retry_finishes() {
    let f = Fixture::new(Dialect::MySql).await;
    // bookmarks_bookmark comes late in the plan: make its delete wait, then cut the connection there.
    exec(
        &f.url,
        &[
            "CREATE TRIGGER slow BEFORE DELETE ON bookmarks_bookmark FOR EACH ROW \
             BEGIN IF OLD.data = 'slow' THEN SET @waited = SLEEP(10); END IF; END"
                .to_string(),
            "UPDATE bookmarks_bookmark SET data = 'slow' WHERE user_id = 4".to_string(),
        ],
    )
    .await;
    let target = std::sync::Arc::new(f.target().await);
    let before = f.counts().await;
    let batch: Vec<Subject> = [1, 4]
        .into_iter()
        .map(|id| Subject {
            id,
            active_after: warned(),
            check_exclusions: true,
            still_selected: None,
        })
        .collect();
    let running = tokio::spawn({
        let (target, batch) = (target.clone(), batch.clone());
        async move { target.retire(&batch).await }
    });
    let db = f.url.rsplit('/').next().unwrap().to_string();
    let find = format!(
        "SELECT COALESCE(MAX(ID), 0) FROM information_schema.PROCESSLIST WHERE DB = '{db}' AND (STATE = 'User sleep' OR INFO LIKE '%bookmarks_bookmark%')"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let connection = loop {
        let id = scalar(&mysql_admin_url(), find.clone()).await;
        if id > 0 {
            break id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the delete never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    exec(&mysql_admin_url(), &[format!("KILL {connection}")]).await;
    let err = running.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("rolled back"), "{err}");
    assert_eq!(f.counts().await, before, "no subject is half-deleted");

    // The retry (the driver retries the whole batch) finishes it.
    exec(&f.url, &["DROP TRIGGER slow".to_string()]).await;
    let report = target.retire(&batch).await.unwrap();
    assert!(report.subjects[&1].deleted_now());
    assert!(report.subjects[&4].deleted_now());
    assert_eq!(
        f.count("SELECT COUNT(*) FROM auth_user WHERE id IN (1, 4)")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_chosen_as_deadlock_victim_is_rerun_and_finishes() {
    use sqlx::{Connection, Executor};
    let f = Fixture::new(Dialect::MySql).await;
    let target = std::sync::Arc::new(f.target().await);
    let before = f.counts().await;
    // Another transaction, heavier than the batch (so InnoDB picks the batch as the victim),
    // holds a row the batch deletes late in its plan.
    let mut other = sqlx::MySqlConnection::connect(&f.url).await.unwrap();
    other
        .execute("CREATE TABLE scratch (n INT PRIMARY KEY)")
        .await
        .unwrap();
    other.execute("BEGIN").await.unwrap();
    other
        .execute("INSERT INTO scratch SELECT seq FROM seq_1_to_20000")
        .await
        .unwrap();
    other
        .execute("UPDATE bookmarks_bookmark SET data = 'held' WHERE user_id = 1")
        .await
        .unwrap();
    let running = tokio::spawn({
        let target = target.clone();
        async move {
            target
                .retire(&[Subject {
                    id: 1,
                    active_after: warned(),
                    check_exclusions: true,
                    still_selected: None,
                }])
                .await
        }
    });
    // Wait until the batch waits on that row, holding the root row.
    let db = f.url.rsplit('/').next().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while scalar(
        &mysql_admin_url(),
        format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = '{db}' \
             AND INFO LIKE 'DELETE FROM `bookmarks_bookmark`%'"
        ),
    )
    .await
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the batch never waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let deadlocks = || async {
        scalar(
            &mysql_admin_url(),
            "SELECT CAST(VARIABLE_VALUE AS SIGNED) FROM information_schema.GLOBAL_STATUS \
             WHERE VARIABLE_NAME = 'INNODB_DEADLOCKS'"
                .to_string(),
        )
        .await
    };
    let deadlocks_before = deadlocks().await;
    // Now the other transaction wants the batch's root row: a deadlock.
    other
        .execute("SELECT id FROM auth_user WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    other.execute("ROLLBACK").await.unwrap();
    other.execute("DROP TABLE scratch").await.unwrap();
    let report = running.await.unwrap().unwrap();
    assert!(deadlocks().await > deadlocks_before, "no deadlock happened");
    assert!(report.subjects[&1].deleted_now());
    let after = f.counts().await;
    for (table, count) in &before {
        let gone = f.owned.get(&(table.to_string(), 1)).copied().unwrap_or(0)
            + i64::from(*table == "auth_user");
        assert_eq!(after[table], count - gone, "{table}: only user 1's rows go");
    }
}

/// A root key that is not an integer is refused at connect, naming the column and its type.
#[tokio::test]
async fn a_non_integer_root_key_is_refused_by_name() {
    let db = TestDb::new(Kind::Sqlite).await;
    exec(
        &format!("{}?mode=rwc", db.url),
        &["CREATE TABLE auth_user (id TEXT PRIMARY KEY, email TEXT, last_login TEXT)"],
    )
    .await;
    let text = format!(
        "{}[[target]]\nname = \"edx\"\nurl = \"{}\"\n",
        common::noop_pipeline("", ""),
        db.url
    );
    let (_, pipeline) =
        Config::from_texts("states.toml", common::STATES, "pipeline.toml", &text).unwrap();
    let Err(error) = Target::connect(&pipeline.targets[0]).await else {
        panic!("a TEXT root key was accepted");
    };
    assert!(
        error.to_string().contains(
            "target edx: auth_user.id is TEXT: subjects are retired by integer keys only"
        ),
        "{error}"
    );
}

/// A target whose users table is not the source's cannot re-check exclusions in its own
/// transaction: the stage re-reads them through the source just before the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_apart_from_the_source_re_checks_exclusions_through_it() {
    use lethe::store::Lookup;
    let f = Fixture::new(Dialect::MySql).await;
    let source_db = TestDb::new(Kind::Sqlite).await;
    let source_url = format!("{}?mode=rwc", source_db.url);
    let mut users = vec![
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, username TEXT, last_login TEXT, \
         date_joined TEXT, is_staff INTEGER NOT NULL DEFAULT 0, is_superuser INTEGER NOT NULL DEFAULT 0)"
            .to_string(),
    ];
    for u in 1..=6 {
        users.push(format!(
            "INSERT INTO users VALUES ({u}, 'user{u}@example.org', 'user{u}', '2019-01-01 00:00:00', '2018-01-01 00:00:00', {}, 0)",
            i32::from(u == 4)
        ));
    }
    exec(&source_url, &users).await;
    let text = format!(
        "{}[source]\nurl = \"{source_url}\"\ntable = \"users\"\n{}",
        common::noop_pipeline("grace_period = \"1d\"", "").replace(
            "state = \"RETIRING_EDX\"\nhandler = \"noop\"",
            "state = \"RETIRING_EDX\"\nhandler = \"sql_delete\"\ntarget = \"edx\""
        ),
        edx::target_toml(&f.url)
    );
    let (graph, pipeline) =
        Config::from_texts("states.toml", common::STATES, "pipeline.toml", &text).unwrap();
    assert!(pipeline.targets[0].exclusions.is_none());
    let store_db = TestDb::new(Kind::Sqlite).await;
    let store = store_db.store(&graph).await;
    let t0 = common::t0();
    let mut subjects = common::subjects(1, 2);
    subjects.extend(common::subjects(4, 5));
    store
        .enqueue("PENDING", &subjects, "cli", t0)
        .await
        .unwrap();
    exec(
        &store_db.url,
        &["UPDATE retirement SET warned_at = created_at".to_string()],
    )
    .await;
    run_driver_once(
        &pipeline,
        graph,
        store.clone(),
        t0 + chrono::Duration::days(2),
    )
    .await;
    let find = |s: &str| Lookup::subject(s, Some(&common::key()));
    assert_eq!(
        store.find(&find("1")).await.unwrap().unwrap().state,
        "COMPLETE"
    );
    let four = store.find(&find("4")).await.unwrap().unwrap();
    assert_eq!(four.state, "ABORTED");
    let last = store.history(four.id).await.unwrap().pop().unwrap();
    assert!(
        last.detail
            .contains("excluded by source.exclude (re-checked before deleting)"),
        "{}",
        last.detail
    );
    assert_eq!(
        f.count("SELECT COUNT(*) FROM auth_user WHERE id = 4").await,
        1
    );
}

/// Runs a driver over everything due at `now`, with the pipeline's real handlers.
async fn run_driver_once(
    pipeline: &lethe::config::Pipeline,
    graph: lethe::domain::StateGraph,
    store: std::sync::Arc<dyn lethe::store::Store>,
    now: chrono::DateTime<chrono::Utc>,
) {
    use lethe::clock::ManualClock;
    use lethe::driver::Driver;
    let clock = std::sync::Arc::new(ManualClock::new(now));
    let handlers = lethe::stages::build_with(pipeline, clock.clone())
        .await
        .unwrap();
    let driver = std::sync::Arc::new(Driver::new(
        store,
        graph,
        pipeline.policy.clone(),
        pipeline.driver.clone(),
        handlers,
        "d1".into(),
        clock,
    ));
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    driver.run_once(shutdown).await.unwrap();
}
