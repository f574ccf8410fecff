//! `cargo bench --bench scan`: 1,000,000 users in `auth_user` on the local MariaDB, 10%
//! inactive. Ours: the full scan (keyset pages, exclusions, allow-lists, the open-retirement
//! check against a SQLite store and the blast-radius guard) as a dry run. Baseline in the
//! same run: one plain SELECT streaming the same inactive rows.
//! The admin URL comes from `LETHE_BENCH_MYSQL_URL` (default: local `test` database).

mod common;

use anyhow::Context;
use futures_util::TryStreamExt;
use lethe::config::Config;
use lethe::driver::scan::{ScanOptions, scan};
use lethe::pii::HashKey;
use lethe::sql::source::SourceReader;
use sqlx::Connection;
use std::time::Instant;

const USERS: i64 = 1_000_000;

const STATES: &str = "[[state]]\nname = \"PENDING\"\n[[state]]\nname = \"COMPLETE\"\nrole = \"complete\"\n\
[[state]]\nname = \"ERRORED\"\nrole = \"errored\"\n[[state]]\nname = \"ABORTED\"\nrole = \"aborted\"\n";

async fn run(admin: &str, name: &str, store_path: &str) -> anyhow::Result<()> {
    let root = &admin[..admin.rfind('/').context("a database in the URL")?];
    let url = format!("{root}/{name}");
    common::mysql_exec(admin, &[format!("CREATE DATABASE {name}")]).await?;
    let started = Instant::now();
    common::mysql_exec(
        &url,
        &[
            "CREATE TABLE auth_user (id INT PRIMARY KEY AUTO_INCREMENT, username VARCHAR(150) NOT NULL, \
             email VARCHAR(254) NOT NULL, is_staff TINYINT NOT NULL DEFAULT 0, is_superuser TINYINT NOT NULL DEFAULT 0, \
             last_login DATETIME(6) NULL, date_joined DATETIME(6) NOT NULL)"
                .into(),
            // Every tenth user inactive; a few of those never logged in, a few are staff.
            format!(
                "INSERT INTO auth_user SELECT seq, CONCAT('user', seq), CONCAT('user', seq, '@example.org'), \
                 seq % 1000 = 0, 0, \
                 CASE WHEN seq % 10 <> 0 THEN '2026-01-01' WHEN seq % 100 = 50 THEN NULL ELSE '2015-01-01' END, \
                 '2014-01-01' FROM seq_1_to_{USERS}"
            ),
        ],
    )
    .await?;
    println!(
        "scan bench: {USERS} users seeded in {:.1}s (not timed)",
        started.elapsed().as_secs_f64()
    );

    let cutoff = "2021-11-22 00:00:00";
    // Baseline: one plain SELECT streaming the inactive rows with the columns a dry run
    // reports (its times say why each one is a candidate).
    let started = Instant::now();
    let mut conn = sqlx::MySqlConnection::connect(&url).await?;
    let mut stream = sqlx::query(
        "SELECT id, email, username, last_login, date_joined FROM auth_user WHERE COALESCE(last_login, date_joined) < ?",
    )
    .bind(cutoff)
    .fetch(&mut conn);
    let mut streamed = 0u64;
    while stream.try_next().await?.is_some() {
        streamed += 1;
    }
    drop(stream);
    let baseline_s = started.elapsed().as_secs_f64();
    let baseline = streamed as f64 / baseline_s;
    println!(
        "baseline: streamed {streamed} inactive rows in {baseline_s:.2}s = {baseline:.0} rows/s"
    );

    let pipeline_text = format!(
        "[policy]\ninactive_after = \"1826d\"\n[[stage]]\nstate = \"PENDING\"\nhandler = \"noop\"\n\
         [source]\nurl = \"{url}\"\nbatch_size = 10000\nmax_new_per_scan = 1000000\nmax_new_share = 1.0\n"
    );
    let (graph, pipeline) =
        Config::from_texts("states.toml", STATES, "pipeline.toml", &pipeline_text)?;
    let source = pipeline.source.clone().context("source")?;
    let reader = SourceReader::connect(&source).await?;
    let store = lethe::store::open(&format!("sqlite://{store_path}"), 2).await?;
    store.migrate().await?;
    store.sync_states(&graph).await?;
    let key = HashKey::new("bench-key-0123456789")?;
    let now: chrono::DateTime<chrono::Utc> = "2026-11-22T00:00:00Z".parse()?;
    let started = Instant::now();
    let reports = scan(
        store.as_ref(),
        &graph,
        &reader,
        &pipeline,
        &key,
        now,
        ScanOptions {
            dry_run: true,
            ..ScanOptions::default()
        },
    )
    .await?;
    let ours_s = started.elapsed().as_secs_f64();
    let c = &reports.first().context("the scan ran no rule")?.counts;
    anyhow::ensure!(
        c.inactive as u64 == streamed,
        "ours saw {} inactive rows, the baseline {streamed}",
        c.inactive
    );
    let ours = c.inactive as f64 / ours_s;
    println!(
        "ours: seen {} inactive {} excluded {} (staff) in {ours_s:.2}s = {ours:.0} rows/s (dry run)",
        c.seen, c.inactive, c.excluded
    );
    println!(
        "RESULT bench=scan ours={ours:.0} baseline={baseline:.0} ratio={:.2} rss_mb={}",
        ours / baseline,
        common::peak_rss_mb()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if std::env::var("LETHE_LOG").is_ok() {
        lethe::telemetry::init(false, tracing::Level::INFO);
    }
    let admin = std::env::var("LETHE_BENCH_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    let name = format!("lethe_bench_scan_{}", std::process::id());
    let store_path = std::env::temp_dir()
        .join(format!("{name}.db"))
        .display()
        .to_string();
    let result = run(&admin, &name, &store_path).await;
    let _ = common::mysql_exec(&admin, &[format!("DROP DATABASE IF EXISTS {name}")]).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{store_path}{suffix}"));
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scan bench failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
