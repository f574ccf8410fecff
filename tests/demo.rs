//! `lethe demo` end to end on a small cast: the final table exactly, the mail directory,
//! the acknowledgements through the API, and the source checked row by row; then the
//! binary itself, and the commands it suggests run against its files.

use lethe::demo::{Cast, Options, Progress};
use sqlx::{Connection, Row};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: &str, _: u64) {}
    fn set(&self, _: u64) {}
    fn finish(&self) {}
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("lethe-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const USERS: i64 = 300;

/// The `To:` address of every message in `dir`, by template (read from its subject).
fn mail(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut by_template: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let header = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let subject = header("Subject:");
        let template = if subject.contains("has been deleted") {
            "deleted"
        } else if subject.contains("Reminder") || subject.contains("reminder") {
            "reminder"
        } else {
            "warning"
        };
        by_template
            .entry(template.into())
            .or_default()
            .push(header("To:"));
    }
    for addresses in by_template.values_mut() {
        addresses.sort();
    }
    by_template
}

async fn count(conn: &mut sqlx::SqliteConnection, sql: &str) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut *conn)
        .await
        .unwrap()
        .get::<i64, _>(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_takes_its_cast_where_each_belongs() {
    let dir = TempDir::new("demo");
    let finished = lethe::demo::run(
        &Options {
            users: USERS,
            dir: dir.0.clone(),
        },
        &Quiet,
    )
    .await
    .unwrap();
    let report = finished.report.clone();
    let paths = finished.paths.clone();
    finished.stop().await;
    let cast = Cast::new(USERS);
    let retired = cast.retired();
    assert_eq!(retired.len(), 7);

    let states: BTreeMap<String, i64> = report.states.iter().cloned().collect();
    assert_eq!(
        states,
        BTreeMap::from([
            ("ABORTED".into(), 1),
            ("COMPLETE".into(), 7),
            ("ERRORED".into(), 2)
        ])
    );
    let notable: Vec<(String, String, String)> = report
        .notable
        .iter()
        .map(|n| {
            let why: String = n.why.chars().take(22).collect();
            (n.subject.clone(), n.state.clone(), why)
        })
        .collect();
    assert_eq!(
        notable,
        [
            (
                cast.returning.to_string(),
                "ABORTED".into(),
                "active again at 2026-1".into()
            ),
            (
                cast.protected.to_string(),
                "ERRORED".into(),
                "protected: authtoken_t".into()
            ),
            (
                cast.refused.to_string(),
                "ERRORED".into(),
                "undeliverable: smtp: p".into()
            ),
        ]
    );
    assert!(
        report.notable[1]
            .why
            .contains("authtoken_token.user_id (1 row)")
    );
    assert_eq!(report.opened, 10);
    assert_eq!(report.excluded, 6, "the inactive staff");

    // Warnings to everyone opened but the refused address; a reminder to each warned user
    // still waiting (the returning one logged in first); confirmations to the retired.
    let emails = |ids: &[i64]| -> Vec<String> {
        let mut v: Vec<String> = ids.iter().map(|i| cast.email(*i)).collect();
        v.sort();
        v
    };
    let warned: Vec<i64> = cast
        .inactive
        .iter()
        .copied()
        .filter(|i| *i != cast.refused)
        .collect();
    let reminded: Vec<i64> = warned
        .iter()
        .copied()
        .filter(|i| *i != cast.returning)
        .collect();
    let expected = BTreeMap::from([
        ("deleted".to_string(), emails(&retired)),
        ("reminder".to_string(), emails(&reminded)),
        ("warning".to_string(), emails(&warned)),
    ]);
    assert_eq!(mail(&paths.mail), expected);
    assert_eq!(
        report.emails,
        BTreeMap::from([
            ("deleted".to_string(), 7),
            ("reminder".to_string(), 8),
            ("warning".to_string(), 9)
        ])
    );
    assert_eq!((report.mail_files, report.mail_refused), (24, 1));
    assert_eq!(
        report.acks,
        BTreeMap::from([("ashley".to_string(), 7), ("joanie".to_string(), 7)])
    );

    // The source: nothing of a retired user is left; everyone else's rows are all there,
    // the rows the actors made for others kept with the actor nulled.
    let mut conn = sqlx::SqliteConnection::connect(&paths.source_url)
        .await
        .unwrap();
    let ids = retired
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    for (table, column) in [
        ("auth_user", "id"),
        ("auth_userprofile", "user_id"),
        ("student_courseenrollment", "user_id"),
        ("student_historicalcourseenrollment", "user_id"),
        ("user_api_userpreference", "user_id"),
        ("courseware_studentmodule", "student_id"),
        ("student_manualenrollmentaudit", "enrolled_by_id"),
    ] {
        let left = count(
            &mut conn,
            &format!("SELECT COUNT(*) FROM {table} WHERE {column} IN ({ids})"),
        )
        .await;
        assert_eq!(left, 0, "{table}");
        let others = count(
            &mut conn,
            &format!("SELECT COUNT(*) FROM {table} WHERE {column} NOT IN ({ids})"),
        )
        .await;
        let per_user = match table {
            "student_courseenrollment" => 2,
            "student_manualenrollmentaudit" => 0,
            _ => 1,
        };
        assert_eq!(others, (USERS - 7) * per_user, "{table}");
    }
    let addresses = emails(&retired)
        .iter()
        .map(|e| format!("'{e}'"))
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        count(
            &mut conn,
            &format!(
                "SELECT COUNT(*) FROM student_courseenrollmentallowed WHERE email IN ({addresses})"
            )
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT COUNT(*) FROM student_manualenrollmentaudit WHERE enrolled_by_id IS NULL"
        )
        .await,
        3,
        "the actors' rows for other users stay"
    );
    assert_eq!(
        count(&mut conn, "SELECT COUNT(*) FROM authtoken_token").await,
        1
    );
    for kept in [cast.protected, cast.returning, cast.refused] {
        let sql = format!("SELECT COUNT(*) FROM auth_user WHERE id = {kept}");
        assert_eq!(count(&mut conn, &sql).await, 1);
    }
}

fn lethe(args: &[&str]) -> (i32, String) {
    lethe_with(args, &[])
}

fn lethe_with(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("LETHE_STORE_URL")
        .env_remove("LETHE_SOURCE_URL")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_demo_command_prints_its_table_and_commands_that_work() {
    let dir = TempDir::new("demo-cli");
    let dir_arg = dir.0.display().to_string();
    let (code, out) = lethe(&["demo", "--users", "300", "--dir", &dir_arg]);
    assert_eq!(code, 0, "{out}");
    for line in [
        "300 users; the scan opened 10 retirements (6 inactive staff excluded)",
        "COMPLETE           7",
        "Acknowledged by joanie through the API: 7",
        "overlay.toml says what it changed",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
    // Every suggested command runs against the demo's files.
    let suggested: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter(|l| l.contains("lethe "))
        .collect();
    assert_eq!(suggested.len(), 5, "{out}");
    for command in suggested {
        // `VAR=value lethe …`, as a shell reads it.
        let mut words = command.split_whitespace();
        let mut env = Vec::new();
        for word in words.by_ref() {
            match word.split_once('=') {
                Some(pair) => env.push(pair),
                None => break,
            }
        }
        let args: Vec<&str> = words.collect();
        let (code, text) = lethe_with(&args, &env);
        assert_eq!(code, 0, "{command}: {text}");
    }
    let stats = lethe(&[
        "stats",
        "--json",
        "--config",
        &format!("{dir_arg}/pipeline.toml"),
        "--states",
        &format!("{dir_arg}/states.toml"),
    ]);
    assert!(stats.1.contains("\"COMPLETE\":7"), "{}", stats.1);
    let bad = lethe(&["demo", "--users", "10", "--dir", &dir_arg]);
    assert_eq!(bad.0, 2, "{}", bad.1);
    assert!(bad.1.contains("--users 10: from 300"), "{}", bad.1);
    // A directory that holds something else is never written to.
    let other = TempDir::new("demo-other");
    std::fs::create_dir_all(&other.0).unwrap();
    std::fs::write(other.0.join("lethe.db"), "a deployment's store").unwrap();
    let refused = lethe(&["demo", "--dir", &other.0.display().to_string()]);
    assert_eq!(refused.0, 2, "{}", refused.1);
    assert!(refused.1.contains("not an earlier demo's"), "{}", refused.1);
    assert_eq!(
        std::fs::read_to_string(other.0.join("lethe.db")).unwrap(),
        "a deployment's store"
    );
}
