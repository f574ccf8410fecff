//! The daemon as a process: killed with SIGKILL mid-batch and restarted, it finishes
//! everything exactly once; SIGTERM stops it cleanly with no lease left behind.

mod common;

use common::{Kind, STATES, TestDb, config, subjects};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PIPELINE: &str = r#"
[policy]
max_attempts = 5
[driver]
batch_size = 100
concurrency = 2
lease = "10m"
poll_interval = "50ms"
"#;

fn write_config(dir: &Path, delay: &str) -> String {
    let mut pipeline = PIPELINE.to_string();
    for state in [
        "PENDING",
        "WARNED",
        "RETIRING_EDX",
        "RETIRING_SARBACANE",
        "NOTIFIED",
    ] {
        pipeline.push_str(&format!(
            "[[stage]]\nstate = \"{state}\"\nhandler = \"noop\"\ndelay = \"{delay}\"\n"
        ));
    }
    std::fs::write(dir.join("states.toml"), STATES).unwrap();
    std::fs::write(dir.join("pipeline.toml"), &pipeline).unwrap();
    pipeline
}

fn lethe(dir: &Path, url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lethe"));
    cmd.current_dir(dir)
        .args(args)
        .env("LETHE_STORE_URL", url)
        .env("LETHE_HASH_KEY", "test-key-0123456789")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

async fn count(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Waits (bounded) for a condition the daemon makes true.
async fn wait_until(pool: &sqlx::PgPool, sql: &'static str, at_least: i64, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(pool, sql).await < at_least {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the daemon exited early"
        );
        assert!(Instant::now() < deadline, "timed out waiting for: {sql}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lethe-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_batch_is_finished_by_the_next_one() {
    let db = TestDb::new(Kind::Postgres).await;
    let dir = temp_dir("kill");
    let pipeline = write_config(&dir, "30ms");
    let (graph, _) = config(&pipeline);
    let store = db.store(&graph).await;
    store
        .enqueue("PENDING", &subjects(0, 2000), "cli", chrono::Utc::now())
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();

    let mut daemon = lethe(&dir, &db.url, &["run"]).spawn().unwrap();
    wait_until(
        &pool,
        "SELECT COUNT(*) FROM retirement_event WHERE outcome = 'done'",
        1500,
        &mut daemon,
    )
    .await;
    wait_until(
        &pool,
        "SELECT COUNT(*) FROM retirement WHERE lease_owner IS NOT NULL",
        1,
        &mut daemon,
    )
    .await;
    daemon.kill().unwrap(); // SIGKILL
    daemon.wait().unwrap();
    let orphaned = count(
        &pool,
        "SELECT COUNT(*) FROM retirement WHERE lease_owner IS NOT NULL",
    )
    .await;
    assert!(orphaned > 0, "the kill landed mid-batch");

    // Time passes for the leases (shifted in SQL rather than slept through).
    sqlx::query("UPDATE retirement SET due_at = due_at - interval '11 minutes' WHERE lease_owner IS NOT NULL")
        .execute(&pool)
        .await
        .unwrap();
    let out = lethe(&dir, &db.url, &["run", "--once"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM retirement WHERE state = 'COMPLETE'"
        )
        .await,
        2000
    );
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM retirement_event WHERE outcome = 'done'"
        )
        .await,
        10_000
    );
    let twice = count(
        &pool,
        "SELECT COUNT(*) FROM (SELECT retirement_id, from_state FROM retirement_event \
         WHERE outcome = 'done' GROUP BY 1, 2 HAVING COUNT(*) > 1) d",
    )
    .await;
    assert_eq!(twice, 0, "each (retirement, state) applied exactly once");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_daemon_cleanly() {
    let db = TestDb::new(Kind::Postgres).await;
    let dir = temp_dir("term");
    let pipeline = write_config(&dir, "300ms");
    let (graph, _) = config(&pipeline);
    let store = db.store(&graph).await;
    store
        .enqueue("PENDING", &subjects(0, 1000), "cli", chrono::Utc::now())
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();

    let mut daemon = lethe(&dir, &db.url, &["run"]).spawn().unwrap();
    wait_until(
        &pool,
        "SELECT COUNT(*) FROM retirement WHERE lease_owner IS NOT NULL",
        1,
        &mut daemon,
    )
    .await;
    let term = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the daemon did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM retirement WHERE lease_owner IS NOT NULL"
        )
        .await,
        0
    );
    assert!(
        count(
            &pool,
            "SELECT COUNT(*) FROM retirement WHERE state = 'COMPLETE'"
        )
        .await
            < 1000,
        "it stopped early"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn serve_answers_a_key_from_key_new_and_stops_on_sigterm() {
    let db = TestDb::new(Kind::Postgres).await;
    let dir = temp_dir("serve");
    let pipeline = write_config(&dir, "0ms");
    let out = lethe(&dir, &db.url, &["key", "new", "ops", "--scope", "operator"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let key = printed
        .lines()
        .find_map(|l| l.strip_prefix("key (shown once; give it to ops): "))
        .unwrap()
        .to_string();
    let lines = printed.split("add to pipeline.toml:\n").nth(1).unwrap();
    assert!(
        !lines.contains(&key),
        "the config holds the hash, never the key"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.join("pipeline.toml"),
        format!("{pipeline}\n[api]\nlisten = \"127.0.0.1:{port}\"\n{lines}"),
    )
    .unwrap();
    assert!(
        lethe(&dir, &db.url, &["migrate"])
            .status()
            .unwrap()
            .success()
    );
    let mut server = lethe(&dir, &db.url, &["serve"]).spawn().unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(server.try_wait().unwrap().is_none(), "serve exited early");
        assert!(Instant::now() < deadline, "serve never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let users = client
        .get(format!("{base}/v1/users"))
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(users.status(), 200);
    assert_eq!(users.text().await.unwrap(), "[]");
    let refused = client.get(format!("{base}/v1/users")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    // The console is served beside the API.
    let signin = client
        .get(format!("{base}/ui/signin"))
        .send()
        .await
        .unwrap();
    assert_eq!(signin.status(), 200);
    assert!(signin.text().await.unwrap().contains("Sign in"));
    let term = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
