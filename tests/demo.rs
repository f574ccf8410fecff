//! `lethe demo` end to end on a small cast: the final table exactly, the mail directory,
//! the acknowledgements through the API, and the source checked row by row, on SQLite and
//! on MariaDB with a PostgreSQL store (a used database refused); then the binary itself,
//! the commands it suggests run against its files, and an external SMTP server.

mod common;

use common::{Kind, TestDb, scalar};
use lethe::demo::{Cast, DemoError, Options, Paths, Progress, Report};
use std::collections::BTreeMap;
use std::path::PathBuf;

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

/// A MariaDB database that exists for one test and is dropped at the end.
struct MariaDb {
    url: String,
    name: String,
}

impl MariaDb {
    async fn new() -> MariaDb {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("lethe_demo_{}_{nanos}", std::process::id());
        common::exec(
            &common::mysql_admin_url(),
            &[format!("CREATE DATABASE `{name}`")],
        )
        .await;
        let admin = common::mysql_admin_url();
        let root = &admin[..admin.rfind('/').unwrap()];
        MariaDb {
            url: format!("{root}/{name}"),
            name,
        }
    }

    /// Tables in it.
    async fn tables(&self) -> i64 {
        scalar(
            &common::mysql_admin_url(),
            format!(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}'",
                self.name
            ),
        )
        .await
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: a thread with its own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(common::exec(
                    &common::mysql_admin_url(),
                    &[format!("DROP DATABASE IF EXISTS `{name}`")],
                ))
        })
        .join();
    }
}

/// The `To:` address of every message, by template (read from its subject).
fn mail(messages: impl IntoIterator<Item = String>) -> BTreeMap<String, Vec<String>> {
    let mut by_template: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for text in messages {
        let header = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let subject = header("Subject:");
        let template = if subject.contains("unconfirmed") && subject.contains("has been deleted") {
            "deleted_unverified"
        } else if subject.contains("has been deleted") {
            "deleted"
        } else if subject.contains("Reminder: your unconfirmed") {
            "confirm_account_reminder"
        } else if subject.starts_with("Confirm your") {
            "confirm_account"
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

/// The `.eml` files the built-in SMTP server wrote.
fn mail_files(paths: &Paths) -> Vec<String> {
    std::fs::read_dir(&paths.mail)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect()
}

/// Runs the demo and stops its API.
async fn run(options: &Options) -> Result<(Report, Paths), DemoError> {
    let finished = lethe::demo::run(options, &Quiet).await?;
    let done = (finished.report.clone(), finished.paths.clone());
    finished.stop().await;
    Ok(done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_takes_its_cast_where_each_belongs() {
    let dir = TempDir::new("demo");
    let (report, paths) = run(&Options::new(USERS, dir.0.clone())).await.unwrap();
    assert_outcome(&report, &paths).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_mariadb_and_postgresql_the_outcome_is_the_same_and_a_used_database_is_refused() {
    let (source, store, dir) = (
        MariaDb::new().await,
        TestDb::new(Kind::Postgres).await,
        TempDir::new("demo-mariadb"),
    );
    let options = Options {
        source: Some(source.url.clone()),
        store: Some(store.url.clone()),
        ..Options::new(USERS, dir.0.clone())
    };
    let (report, paths) = run(&options).await.unwrap();
    assert_eq!(
        (paths.source_url.as_str(), paths.store_url.as_str()),
        (source.url.as_str(), store.url.as_str())
    );
    assert_outcome(&report, &paths).await;
    let users_left = || scalar(&source.url, "SELECT COUNT(*) FROM auth_user".into());
    assert_eq!(users_left().await, USERS - 9);

    // Again into the same source, through the binary: refused, exit 3, nothing written.
    let fresh_store = TestDb::new(Kind::Postgres).await;
    let again = TempDir::new("demo-mariadb-again");
    let (code, out) = lethe_with(
        &[
            "demo",
            "--users",
            "300",
            "--dir",
            &again.0.display().to_string(),
        ],
        &[
            ("LETHE_DEMO_SOURCE_URL", &source.url),
            ("LETHE_STORE_URL", &fresh_store.url),
        ],
    );
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!(
            "database {} is not empty (18 tables, among them ",
            source.name
        )),
        "{out}"
    );
    assert_eq!(users_left().await, USERS - 9);
    assert!(!again.0.exists(), "no file written");
    let store_tables =
        "SELECT COUNT(*)::bigint FROM information_schema.tables WHERE table_schema = 'public'";
    assert_eq!(scalar(&fresh_store.url, store_tables.into()).await, 0);

    // A fresh source with the used store: refused too, the source left empty.
    let fresh_source = MariaDb::new().await;
    let refused = run(&Options {
        source: Some(fresh_source.url.clone()),
        store: Some(store.url.clone()),
        ..Options::new(USERS, again.0.clone())
    })
    .await;
    match refused {
        Err(e @ DemoError::Refused(_)) => {
            assert!(e.to_string().contains("holds 13 retirements"), "{e}");
            assert_eq!(lethe::error::Classified::kind(&e).exit_code(), 3);
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert_eq!(fresh_source.tables().await, 0);

    // A database with any other table (a real application's) is refused before a write.
    let other = MariaDb::new().await;
    common::exec(
        &other.url,
        &["CREATE TABLE reports (id INT PRIMARY KEY, user_id INT NOT NULL)"],
    )
    .await;
    let refused = run(&Options {
        source: Some(other.url.clone()),
        ..Options::new(USERS, again.0.clone())
    })
    .await;
    match refused {
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains("is not empty (1 tables, among them reports)"),
                "{message}"
            );
            assert_eq!(lethe::error::Classified::kind(&e).exit_code(), 3);
        }
        Ok(_) => panic!("a database with a table of its own was seeded"),
    }
    assert_eq!(other.tables().await, 1);
}

/// What every run of the cast ends with (the built-in SMTP server), read from the report,
/// the `.eml` files and the source, whatever its database.
async fn assert_outcome(report: &Report, paths: &Paths) {
    let cast = Cast::new(USERS);
    let unverified = cast.retired_unverified();
    assert_eq!(unverified.len(), 2);
    let mut retired = cast.retired();
    assert_eq!(retired.len(), 7);
    let inactive_retired = retired.clone();
    retired.extend(&unverified);

    let states: BTreeMap<String, i64> = report.states.iter().cloned().collect();
    assert_eq!(
        states,
        BTreeMap::from([
            ("ABORTED".into(), 2),
            ("COMPLETE".into(), 9),
            ("ERRORED".into(), 2)
        ])
    );
    assert_eq!(
        report.reasons["COMPLETE"],
        vec![("inactive".to_string(), 7), ("unverified".to_string(), 2)]
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
                cast.confirming.to_string(),
                "ABORTED".into(),
                "account confirmed at 2".into()
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
        report.notable[2]
            .why
            .contains("authtoken_token.user_id (1 row)")
    );
    assert_eq!(report.opened, 13);
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
    // The unverified: asked to confirm, reminded unless they did, told once deleted.
    let expected = BTreeMap::from([
        ("confirm_account".to_string(), emails(&cast.unverified)),
        ("confirm_account_reminder".to_string(), emails(&unverified)),
        ("deleted".to_string(), emails(&inactive_retired)),
        ("deleted_unverified".to_string(), emails(&unverified)),
        ("reminder".to_string(), emails(&reminded)),
        ("warning".to_string(), emails(&warned)),
    ]);
    assert_eq!(mail(mail_files(paths)), expected);
    assert_eq!(
        report.emails,
        BTreeMap::from([
            ("confirm_account".to_string(), 3),
            ("confirm_account_reminder".to_string(), 2),
            ("deleted".to_string(), 7),
            ("deleted_unverified".to_string(), 2),
            ("reminder".to_string(), 8),
            ("warning".to_string(), 9)
        ])
    );
    assert_eq!((report.mail_files, report.mail_refused), (31, 1));
    assert_eq!(
        report.acks,
        BTreeMap::from([("ashley".to_string(), 9), ("joanie".to_string(), 9)])
    );

    // The source: nothing of a retired user is left; everyone else's rows are all there,
    // the rows the actors made for others kept with the actor nulled.
    let count = |sql: &str| scalar(&paths.source_url, sql.to_string());
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
        let left = count(&format!(
            "SELECT COUNT(*) FROM {table} WHERE {column} IN ({ids})"
        ))
        .await;
        assert_eq!(left, 0, "{table}");
        let others = count(&format!(
            "SELECT COUNT(*) FROM {table} WHERE {column} NOT IN ({ids})"
        ))
        .await;
        let per_user = match table {
            "student_courseenrollment" => 2,
            "student_manualenrollmentaudit" => 0,
            _ => 1,
        };
        assert_eq!(others, (USERS - 9) * per_user, "{table}");
    }
    let addresses = emails(&retired)
        .iter()
        .map(|e| format!("'{e}'"))
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        count(&format!(
            "SELECT COUNT(*) FROM student_courseenrollmentallowed WHERE email IN ({addresses})"
        ))
        .await,
        0
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM student_manualenrollmentaudit WHERE enrolled_by_id IS NULL")
            .await,
        3,
        "the actors' rows for other users stay"
    );
    assert_eq!(count("SELECT COUNT(*) FROM authtoken_token").await, 1);
    for kept in [cast.protected, cast.returning, cast.refused] {
        let sql = format!("SELECT COUNT(*) FROM auth_user WHERE id = {kept}");
        assert_eq!(count(&sql).await, 1);
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
        "300 users; the scan opened 13 retirements (6 staff excluded)",
        "COMPLETE           9   inactive 7, unverified 2",
        "user 48       ABORTED    account confirmed at",
        "Acknowledged by joanie through the API: 9",
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
    assert!(stats.1.contains("\"COMPLETE\":9"), "{}", stats.1);
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

/// A child process killed if the test ends before it does.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on 127.0.0.1:`port`: the status line.
fn get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply.lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_smtp_the_mail_goes_there_and_with_listen_the_api_serves_there_until_sigterm() {
    use std::io::BufRead;
    let smtp = common::smtp::SmtpServer::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = TempDir::new("demo-smtp");
    let smtp_arg = format!("127.0.0.1:{}", smtp.port());
    let mut child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
            .args(["demo", "--users", "300", "--serve", "--smtp", &smtp_arg])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--dir", &dir.0.display().to_string()])
            .env_remove("LETHE_STORE_URL")
            .env_remove("LETHE_DEMO_SOURCE_URL")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    // Until the demo says it serves (or ends: then the assertions below say why).
    let out = tokio::task::spawn_blocking(move || {
        let mut out = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            out.push_str(&line);
            out.push('\n');
            if line.contains("stops it") {
                break;
            }
        }
        out
    });
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
        .await
        .expect("the demo serves within 2 minutes")
        .unwrap();
    let cast = Cast::new(USERS);
    for line in [
        "COMPLETE          10".to_string(),
        format!("Emails accepted by {smtp_arg} (from the store's events)"),
        format!("user {} (the cast's moved-away mailbox)", cast.refused),
        "Acknowledged by joanie through the API: 10".to_string(),
        format!("serving the demo's store at http://127.0.0.1:{port}"),
    ] {
        assert!(out.contains(&line), "{line}\n{out}");
    }
    assert!(!out.contains("written under mail/"), "{out}");
    assert_eq!(get(port, "/healthz"), "HTTP/1.1 200 OK");
    assert_eq!(get(port, "/ui/signin"), "HTTP/1.1 200 OK");
    assert!(
        out.contains(&format!("the console: http://127.0.0.1:{port}/ui")),
        "{out}"
    );

    // Everyone opened was warned; all but the returning user reminded; eight inactive
    // and two unverified deleted.
    let counts: BTreeMap<String, usize> = mail(smtp.messages().into_iter().map(|m| m.raw))
        .into_iter()
        .map(|(template, to)| (template, to.len()))
        .collect();
    let expected = [
        ("confirm_account", 3),
        ("confirm_account_reminder", 2),
        ("deleted", 8),
        ("deleted_unverified", 2),
        ("reminder", 9),
        ("warning", 10),
    ];
    assert_eq!(counts, expected.map(|(t, n)| (t.to_string(), n)).into());
    assert_eq!(std::fs::read_dir(dir.0.join("mail")).unwrap().count(), 0);

    // As `docker stop` does.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
