//! `cargo bench --bench sql_delete`: retire 10,000 typical users (about 100 rows each) of
//! the edX-like fixture on the local MariaDB through the sql_delete handler, batches of 500.
//! Baseline in the same run: the same plan, one user per transaction, one statement per
//! table (what per-user tools do at best). Limit, in the same run: the plan's per-table
//! DELETE/UPDATE statements for batches of the same size issued directly, one transaction
//! per batch, no lock, re-check, protect check or counting: the cost of the SQL alone. heavy_ms: one learner with 10,000
//! courseware_studentmodule rows and 20,000 history rows, alone.
//! The admin URL comes from `LETHE_BENCH_MYSQL_URL` (default: local `test` database).

#[path = "../tests/common/edx.rs"]
mod edx;

mod common;

use anyhow::Context;
use lethe::config::Config;
use lethe::sql::Dialect;
use lethe::sql::plan::{Action, Plan, Value};
use lethe::sql::render;
use lethe::sql::target::{Subject, Target};
use sqlx::Connection;
use std::time::Instant;

const USERS: i64 = 15_000;
const BASELINE_USERS: i64 = 1_000;
/// Users 1..=BASELINE_USERS go to the baseline, then OURS_USERS to lethe, the rest to the limit.
const OURS_USERS: i64 = 9_000;
const BATCH: usize = 500;
const CONCURRENCY: usize = 2;
const HEAVY: i64 = 99_999;

const STATES: &str = "[[state]]\nname = \"RETIRING\"\n[[state]]\nname = \"COMPLETE\"\nrole = \"complete\"\n\
[[state]]\nname = \"ERRORED\"\nrole = \"errored\"\n[[state]]\nname = \"ABORTED\"\nrole = \"aborted\"\n";

/// Typical users 1..=USERS with about 100 rows each, and the heavy learner, set-based.
fn seed() -> Vec<String> {
    let mut sql = vec![
        format!(
            "INSERT INTO auth_user SELECT seq, CONCAT('u', seq), CONCAT('u', seq, '@example.org'), 0, 0, \
             '2015-01-01', '2014-01-01', NULL FROM seq_1_to_{USERS}"
        ),
        format!(
            "INSERT INTO auth_user VALUES ({HEAVY}, 'heavy', 'heavy@example.org', 0, 0, '2015-01-01', '2014-01-01', NULL)"
        ),
        // 20 modules with 2 history rows each: 60 rows.
        format!("INSERT INTO courseware_studentmodule SELECT u.seq * 100 + k.seq, 'x', u.seq FROM seq_1_to_{USERS} u, seq_1_to_20 k"),
        format!(
            "INSERT INTO courseware_studentmodulehistory SELECT (m.id * 2) + h.seq, 'x', m.id \
             FROM courseware_studentmodule m, seq_0_to_1 h"
        ),
        // 3 enrollments with an attribute and an audit row each: 9 rows.
        format!("INSERT INTO student_courseenrollment SELECT u.seq * 10 + k.seq, 'x', u.seq FROM seq_1_to_{USERS} u, seq_1_to_3 k"),
        "INSERT INTO student_courseenrollmentattribute SELECT id, 'x', id FROM student_courseenrollment".into(),
        "INSERT INTO student_manualenrollmentaudit SELECT id, 'x', id, NULL FROM student_courseenrollment".into(),
        format!("INSERT INTO student_courseenrollmentallowed SELECT seq, 'x', CONCAT('u', seq, '@example.org') FROM seq_1_to_{USERS}"),
        // The heavy learner: 10,000 modules, 20,000 history rows.
        format!("INSERT INTO courseware_studentmodule SELECT {HEAVY} * 100000 + seq, 'x', {HEAVY} FROM seq_1_to_10000"),
        format!(
            "INSERT INTO courseware_studentmodulehistory SELECT m.id * 2 + h.seq, 'x', m.id \
             FROM courseware_studentmodule m, seq_0_to_1 h WHERE m.student_id = {HEAVY}"
        ),
    ];
    // One row in every other table with a NOT NULL user link (about 30 rows).
    for (table, links) in edx::TABLES {
        let Some((column, _, _)) = links
            .iter()
            .find(|(_, t, nullable)| *t == "auth_user" && !nullable)
        else {
            continue;
        };
        let skip = [
            "courseware_studentmodule",
            "student_courseenrollment",
            "experiments_experimentkeyvalue",
            "authtoken_token",
            "course_creators_coursecreator",
        ];
        if skip.contains(table) {
            continue;
        }
        let extra = links
            .iter()
            .filter(|(c, _, _)| c != column)
            .map(|_| ", NULL")
            .collect::<String>();
        let cols = std::iter::once("id, data".to_string())
            .chain(std::iter::once(column.to_string()))
            .chain(
                links
                    .iter()
                    .filter(|(c, _, _)| c != column)
                    .map(|(c, _, _)| c.to_string()),
            )
            .collect::<Vec<_>>()
            .join(", ");
        sql.push(format!(
            "INSERT INTO {table} ({cols}) SELECT seq, 'x', seq{extra} FROM seq_1_to_{USERS}"
        ));
    }
    sql
}

async fn rows_total(url: &str) -> anyhow::Result<i64> {
    let mut conn = sqlx::MySqlConnection::connect(url).await?;
    let mut total = 0;
    for table in edx::all_tables() {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&mut conn)
                .await?;
        total += n;
    }
    Ok(total)
}

fn subjects(ids: impl Iterator<Item = i64>) -> Vec<Subject> {
    let warned = Some("2020-01-01T00:00:00Z".parse().expect("time"));
    ids.map(|id| Subject {
        id,
        active_after: warned,
        check_exclusions: true,
        still_selected: None,
    })
    .collect()
}

async fn run(admin: &str, name: &str) -> anyhow::Result<()> {
    let root = &admin[..admin.rfind('/').context("a database in the URL")?];
    let url = format!("{root}/{name}");
    common::mysql_exec(admin, &[format!("CREATE DATABASE {name}")]).await?;
    common::mysql_exec(&url, &edx::ddl(Dialect::MySql)).await?;
    let started = Instant::now();
    common::mysql_exec(&url, &seed()).await?;
    let total = rows_total(&url).await?;
    println!(
        "sql_delete bench: fixture of {} tables, {USERS} typical users + 1 heavy, {total} rows, seeded in {:.1}s (not timed)",
        edx::all_tables().len(),
        started.elapsed().as_secs_f64()
    );
    let pipeline_text = format!(
        "[[stage]]\nstate = \"RETIRING\"\nhandler = \"sql_delete\"\ntarget = \"edx\"\n{}",
        edx::target_toml(&url)
    );
    let (_, pipeline) = Config::from_texts("states.toml", STATES, "pipeline.toml", &pipeline_text)?;
    let target = Target::connect(&pipeline.targets[0]).await?;
    println!(
        "plan: {} statements per batch",
        target.plan.steps.len() + target.plan.protect.len() + 2
    );

    // The heavy learner first, on a quiet database (before a million deletions leave
    // InnoDB purge work behind).
    let started = Instant::now();
    let report = target.retire(&subjects(std::iter::once(HEAVY))).await?;
    let heavy_ms = started.elapsed().as_millis();
    anyhow::ensure!(
        report.subjects[&HEAVY].deleted_now(),
        "heavy learner not retired"
    );
    println!("heavy learner: 10,000 modules + 20,000 history rows in {heavy_ms} ms");

    // Baseline, on users 1..=BASELINE_USERS: one user per transaction.
    let started = Instant::now();
    for id in 1..=BASELINE_USERS {
        let report = target.retire(&subjects(std::iter::once(id))).await?;
        anyhow::ensure!(
            report.subjects[&id].deleted_now(),
            "baseline: user {id} not retired"
        );
    }
    let baseline = BASELINE_USERS as f64 / started.elapsed().as_secs_f64();
    println!(
        "baseline: {BASELINE_USERS} users one per transaction in {:.2}s = {baseline:.0} users/s",
        started.elapsed().as_secs_f64()
    );

    // The limit, before ours (ours then runs on the database the limit's deletions left).
    let limit_ids: Vec<i64> = (BASELINE_USERS + OURS_USERS + 1..=USERS).collect();
    let raw = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(CONCURRENCY as u32)
        .connect(&url)
        .await?;
    let check = raw.clone();
    let plan = std::sync::Arc::new(target.plan.clone());
    let limit = batches(&limit_ids, move |chunk| {
        let (raw, plan) = (raw.clone(), plan.clone());
        async move { raw_batch(&raw, &plan, &chunk).await.map(|()| chunk.len()) }
    })
    .await?;
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM auth_user WHERE id BETWEEN ? AND ?")
        .bind(limit_ids[0])
        .bind(USERS)
        .fetch_one(&check)
        .await?;
    anyhow::ensure!(left == 0, "limit: {left} users left");
    println!(
        "limit: {} users, the plan's statements alone, batches of {BATCH}, {CONCURRENCY} at once = {limit:.0} users/s",
        limit_ids.len()
    );

    // Ours: the rest in batches.
    let ours_ids: Vec<i64> = (BASELINE_USERS + 1..=BASELINE_USERS + OURS_USERS).collect();
    // Batches in flight at once, as the driver runs them (driver.concurrency).
    let target = std::sync::Arc::new(target);
    let ours = batches(&ours_ids, move |chunk| {
        let target = target.clone();
        async move {
            let report = target.retire(&subjects(chunk.iter().copied())).await?;
            Ok(report.subjects.values().filter(|r| r.deleted_now()).count())
        }
    })
    .await?;
    println!(
        "ours: {} users in batches of {BATCH}, {CONCURRENCY} at once = {ours:.0} users/s",
        ours_ids.len()
    );

    let left = rows_total(&url).await?;
    println!("rows left: {left} (the kept, nullified rows of others only)");
    println!("peak RSS: {} MB", common::peak_rss_mb());
    println!(
        "RESULT bench=sql_delete ours={ours:.0} baseline={baseline:.0} ratio={:.2} limit={limit:.0} ratio_limit={:.2} heavy_ms={heavy_ms}",
        ours / baseline,
        ours / limit
    );
    Ok(())
}

/// Runs `batch` over `ids` in chunks of `BATCH`, `CONCURRENCY` at once; users per second.
async fn batches<F, Fut>(ids: &[i64], batch: F) -> anyhow::Result<f64>
where
    F: Fn(Vec<i64>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<usize>> + Send,
{
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let chunks: std::sync::Arc<Vec<Vec<i64>>> =
        std::sync::Arc::new(ids.chunks(BATCH).map(<[i64]>::to_vec).collect());
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (batch, next, chunks) = (batch.clone(), next.clone(), chunks.clone());
        workers.spawn(async move {
            let mut done = 0;
            while let Some(chunk) =
                chunks.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
            {
                done += batch(chunk.clone()).await?;
            }
            anyhow::Ok(done)
        });
    }
    let mut done = 0;
    while let Some(joined) = workers.join_next().await {
        done += joined??;
    }
    anyhow::ensure!(done == ids.len(), "{done} of {} users retired", ids.len());
    Ok(ids.len() as f64 / started.elapsed().as_secs_f64())
}

/// One batch of the limit: the plan's statements for `ids` in one transaction, nothing else.
async fn raw_batch(pool: &sqlx::MySqlPool, plan: &Plan, ids: &[i64]) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let statements = plan
        .steps
        .iter()
        .filter(|step| !matches!(step.action, Action::Protect))
        .map(|step| render::step(Dialect::MySql, plan, step, ids.len()))
        .chain(std::iter::once(render::delete_roots(
            Dialect::MySql,
            plan,
            ids.len(),
        )));
    for rendered in statements {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(rendered.sql));
        for value in &rendered.leading {
            query = match value {
                Value::Int(n) => query.bind(*n),
                Value::Text(t) => query.bind(t.clone()),
                Value::Null => query.bind(None::<i64>),
            };
        }
        for _ in 0..rendered.id_lists {
            for id in ids {
                query = query.bind(*id);
            }
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if std::env::var("LETHE_LOG").is_ok() {
        lethe::telemetry::init(false, tracing::Level::INFO);
    }
    let admin = std::env::var("LETHE_BENCH_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    let name = format!("lethe_bench_del_{}", std::process::id());
    let result = run(&admin, &name).await;
    let _ = common::mysql_exec(&admin, &[format!("DROP DATABASE IF EXISTS {name}")]).await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sql_delete bench failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
