//! `cargo bench --bench driver`: 100,000 retirements through 5 working states with a noop
//! handler on PostgreSQL, timed two ways in fresh databases:
//!
//! - ours: `Driver::run_once` (claim, handler, fenced write-back, per batch);
//! - baseline: the same fenced, set-based UPDATE + event INSERT per batch issued directly,
//!   without the claim and the driver: the floor the driver's write path can reach.
//!
//! The admin URL comes from `LETHE_BENCH_PG_URL` (default: local `test` database); each run
//! creates `lethe_bench_<pid>` and `lethe_bench_<pid>_baseline` and drops each once its
//! phase is done (or on error, panic or Ctrl-C).
//! `LETHE_BENCH_CONCURRENCY` overrides the batches in flight (default 3, see `CONCURRENCY`).
//! The last line printed is the machine-readable `RESULT ...` line.

mod common;

use anyhow::{Context, anyhow, bail, ensure};
use chrono::{DateTime, Utc};
use lethe::clock::{Clock, SystemClock};
use lethe::config::{Config, Pipeline};
use lethe::domain::StateGraph;
use lethe::driver::Driver;
use lethe::store::{EnqueueOutcome, NewRetirement, PgStore, Store, redact_url};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool, Row};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tokio::sync::watch;
use tokio::task::JoinSet;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const SUBJECTS: usize = 100_000;
const WORKING: [&str; 5] = ["S1", "S2", "S3", "S4", "S5"];
const TRANSITIONS: usize = SUBJECTS * WORKING.len();
const BATCH: usize = 1_000;
const OWNER: &str = "bench-owner";
/// Batches in flight, for both sides (the baseline runs as many write-backs at once, so
/// neither gets more database parallelism). On the 2-core machine, 3 runs of each: ours
/// averaged 23.5k (2), 24.2k (3), 22.6k (4) transitions/s; PostgreSQL saturates both cores,
/// so the spread is mostly noise, and 3 keeps a write-back running while the driver claims.
const CONCURRENCY: usize = 3;

/// The write-back of src/store/postgres.rs, except that a non-final row keeps its lease
/// (owner and attempt) instead of clearing it: that stands in for the next claim, so the
/// next state's fence matches without an extra write. Same columns, same event.
const BASELINE_WRITE_BACK: &str = "WITH input AS ( \
       SELECT * FROM UNNEST($3::bigint[], $4::text[], $5::int[], $6::text[], $7::timestamptz[], \
         $8::int[], $9::text[], $10::text[], $11::bool[], $12::timestamptz[], $13::text[], $14::text[]) \
       AS u(id, from_state, fence_attempt, to_state, due_at, attempt, last_error, failed_state, \
         ends, warned_at, outcome, detail)), \
     changed AS ( \
       UPDATE retirement r SET state = i.to_state, due_at = i.due_at, attempt = i.attempt, \
         last_error = i.last_error, failed_state = i.failed_state, \
         warned_at = COALESCE(i.warned_at, r.warned_at), \
         lease_owner = CASE WHEN i.ends THEN NULL ELSE $2 END, \
         lease_until = CASE WHEN i.ends THEN NULL ELSE r.lease_until END, \
         updated_at = $1, ended_at = CASE WHEN i.ends THEN $1 ELSE NULL END, \
         subject = CASE WHEN i.ends THEN NULL ELSE r.subject END, \
         email = CASE WHEN i.ends THEN NULL ELSE r.email END, \
         username = CASE WHEN i.ends THEN NULL ELSE r.username END \
       FROM input i \
       WHERE r.id = i.id AND r.state = i.from_state AND r.lease_owner = $2 AND r.attempt = i.fence_attempt \
       RETURNING r.id), \
     events AS ( \
       INSERT INTO retirement_event (retirement_id, at, actor, from_state, to_state, outcome, attempt, detail) \
       SELECT i.id, $1, 'driver:' || $2, i.from_state, i.to_state, i.outcome, i.fence_attempt, i.detail \
       FROM input i JOIN changed c ON c.id = i.id) \
     SELECT id FROM changed";

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("driver bench: cannot start tokio: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(result) => {
            println!("{result}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("driver bench failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Creates the databases, runs both phases, drops the databases whatever happened.
async fn run() -> anyhow::Result<String> {
    let admin_url = std::env::var("LETHE_BENCH_PG_URL").unwrap_or_else(|_| DEFAULT_URL.into());
    let concurrency = match std::env::var("LETHE_BENCH_CONCURRENCY") {
        Ok(text) => text
            .parse::<usize>()
            .context("LETHE_BENCH_CONCURRENCY must be a whole number")?,
        Err(_) => CONCURRENCY,
    };
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url)
        .await
        .with_context(|| format!("connect to {}", redact_url(&admin_url)))?;
    let pid = std::process::id();
    let ours_db = format!("lethe_bench_{pid}");
    let base_db = format!("lethe_bench_{pid}_baseline");
    println!(
        "driver bench: {SUBJECTS} retirements x {} states = {TRANSITIONS} transitions, batch {BATCH}, concurrency {concurrency}, on {}",
        WORKING.len(),
        redact_url(&admin_url)
    );
    let mut created = Vec::new();
    let mut outcome = Ok(String::new());
    for db in [&ours_db, &base_db] {
        if let Err(error) = admin_exec(&admin, &format!("CREATE DATABASE {db}")).await {
            outcome = Err(error);
            break;
        }
        created.push(db.clone());
    }
    if outcome.is_ok() {
        let ours_url = database_url(&admin_url, &ours_db);
        let base_url = database_url(&admin_url, &base_db);
        // A task, so a panic still reaches the cleanup below; Ctrl-C too.
        let phases = tokio::spawn(phases(
            admin.clone(),
            (ours_db.clone(), ours_url),
            base_url,
            concurrency,
        ));
        let abort = phases.abort_handle();
        outcome = tokio::select! {
            joined = phases => joined.unwrap_or_else(|e| Err(anyhow!("the bench panicked: {e}"))),
            _ = tokio::signal::ctrl_c() => {
                abort.abort();
                Err(anyhow!("interrupted"))
            }
        };
    }
    for db in created {
        let drop = format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)");
        if let Err(error) = admin_exec(&admin, &drop).await {
            eprintln!("driver bench: could not drop {db}: {error:#}");
        }
    }
    outcome
}

async fn admin_exec(admin: &PgPool, sql: &str) -> anyhow::Result<()> {
    // Identifiers built from our pid only, so the text is safe to send as is.
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(admin)
        .await
        .with_context(|| format!("run {sql}"))?;
    Ok(())
}

/// `admin_url` with its database replaced by `db`, query string kept.
fn database_url(admin_url: &str, db: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{db}?{query}"),
        None => format!("{server}/{db}"),
    }
}

async fn phases(
    admin: PgPool,
    (ours_db, ours_url): (String, String),
    base_url: String,
    concurrency: usize,
) -> anyhow::Result<String> {
    let pipeline_toml = format!(
        "[driver]\nbatch_size = {BATCH}\nconcurrency = {concurrency}\nlease = \"5m\"\npoll_interval = \"50ms\"\n{}",
        WORKING
            .iter()
            .map(|s| format!("[[stage]]\nstate = \"{s}\"\nhandler = \"noop\"\n"))
            .collect::<String>()
    );
    let (graph, pipeline) = Config::from_texts(
        "states.toml",
        &common::states_toml(&["S1", "S2", "S3", "S4", "S5"]),
        "pipeline.toml",
        &pipeline_toml,
    )?;
    let ours = ours(&ours_url, &graph, &pipeline).await?;
    // Dropped now so its autovacuum cannot steal CPU from the baseline.
    admin_exec(&admin, &format!("DROP DATABASE {ours_db} WITH (FORCE)")).await?;
    let baseline = baseline(&base_url, &graph, concurrency).await?;
    let ratio = ours / baseline;
    let rss_mb = common::peak_rss_mb();
    println!("peak RSS (VmHWM): {rss_mb} MB");
    Ok(format!(
        // The baseline is the physical limit of the write path: the raw fenced UPDATE.
        "RESULT bench=driver ours={:.0} baseline={:.0} ratio={ratio:.2} limit={:.0} ratio_limit={ratio:.2} rss_mb={rss_mb}",
        ours, baseline, baseline
    ))
}

/// Opens a store on `url` with the schema and states; returns it and the enqueued ids.
async fn prepare(
    phase: &str,
    url: &str,
    graph: &StateGraph,
    connections: u32,
) -> anyhow::Result<(Arc<PgStore>, Vec<i64>)> {
    let store = Arc::new(PgStore::connect(url, connections).await?);
    store.migrate().await?;
    store.sync_states(graph).await?;
    let new: Vec<NewRetirement> = (0..SUBJECTS)
        .map(|i| NewRetirement {
            subject: format!("subject-{i}"),
            email: None,
            username: None,
            reason: "inactive".into(),
            subject_hash: format!("h{i}"),
            email_hash: None,
            locale: None,
            rule: None,
        })
        .collect();
    let started = Instant::now();
    let outcomes = store
        .enqueue(graph.initial(), &new, "cli", SystemClock.now())
        .await?;
    let ids = outcomes
        .into_iter()
        .map(|o| match o {
            EnqueueOutcome::Created(id) => Ok(id),
            EnqueueOutcome::AlreadyOpen(id) => Err(anyhow!("retirement {id} already open")),
        })
        .collect::<anyhow::Result<Vec<i64>>>()?;
    println!(
        "{phase}: enqueued {} in {:.2}s (setup, not timed)",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
    Ok((store, ids))
}

/// The driver: `run_once` over everything due; returns transitions per second.
async fn ours(url: &str, graph: &StateGraph, pipeline: &Pipeline) -> anyhow::Result<f64> {
    // One connection per batch in flight, one for the claim loop, one spare.
    let connections = pipeline.driver.concurrency as u32 + 2;
    let (store, _ids) = prepare("ours", url, graph, connections).await?;
    let handlers = lethe::stages::build(pipeline).await?;
    let driver = Arc::new(Driver::new(
        store.clone(),
        graph.clone(),
        pipeline.policy.clone(),
        pipeline.driver.clone(),
        handlers,
        OWNER.into(),
        Arc::new(SystemClock),
    ));
    checkpoint(store.pool()).await;
    // Kept alive for the whole run: a dropped sender would read as a shutdown.
    let (_stop, shutdown) = watch::channel(false);
    let started = Instant::now();
    let report = driver.run_once(shutdown).await?;
    let elapsed = started.elapsed();
    let rate = TRANSITIONS as f64 / elapsed.as_secs_f64();
    println!(
        "ours: {} transitions in {:.2}s = {rate:.0} transitions/s (claimed {}, applied {}, lost {}, released {})",
        report.applied,
        elapsed.as_secs_f64(),
        report.claimed,
        report.applied,
        report.lost,
        report.released
    );
    ensure!(
        report.applied == TRANSITIONS as u64 && report.lost == 0,
        "the driver applied {} transitions ({} lost), expected {TRANSITIONS}",
        report.applied,
        report.lost
    );
    verify("ours", store.pool()).await?;
    store.pool().close().await;
    Ok(rate)
}

/// The raw fenced write-backs, state by state, batch by batch; returns transitions per second.
async fn baseline(url: &str, graph: &StateGraph, concurrency: usize) -> anyhow::Result<f64> {
    let (store, ids) = prepare("baseline", url, graph, concurrency as u32 + 1).await?;
    let pool = store.pool().clone();
    // Setup, not timed: every row leased to OWNER at attempt 1, as a claim leaves it.
    let started = Instant::now();
    let leased = sqlx::query(
        "UPDATE retirement SET lease_owner = $1, attempt = 1, \
         lease_until = now() + interval '5 minutes', due_at = now() + interval '5 minutes'",
    )
    .bind(OWNER)
    .execute(&pool)
    .await
    .context("lease the baseline rows")?
    .rows_affected();
    ensure!(leased == SUBJECTS as u64, "leased {leased} rows");
    // The lease UPDATE left a dead version of every row; ours starts without them.
    sqlx::query("VACUUM ANALYZE retirement")
        .execute(&pool)
        .await
        .context("vacuum the baseline rows")?;
    println!(
        "baseline: leased {leased} rows in {:.2}s (setup, not timed)",
        started.elapsed().as_secs_f64()
    );
    checkpoint(&pool).await;
    let chunks: Arc<Vec<Vec<i64>>> = Arc::new(ids.chunks(BATCH).map(<[i64]>::to_vec).collect());
    // Same batches in flight as the driver, so neither side gets more database parallelism.
    let started = Instant::now();
    for (k, from) in WORKING.iter().enumerate() {
        let to = WORKING.get(k + 1).copied().unwrap_or(graph.complete());
        let ends = graph.ends(to);
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = JoinSet::new();
        for _ in 0..concurrency {
            let (pool, chunks, next) = (pool.clone(), chunks.clone(), next.clone());
            let (from, to) = (from.to_string(), to.to_string());
            workers.spawn(async move {
                let mut applied = 0usize;
                while let Some(chunk) = chunks.get(next.fetch_add(1, Ordering::Relaxed)) {
                    applied += write_back(&pool, chunk, &from, &to, ends).await?;
                }
                anyhow::Ok(applied)
            });
        }
        let mut applied = 0;
        while let Some(joined) = workers.join_next().await {
            applied += joined.context("a baseline worker panicked")??;
        }
        ensure!(
            applied == SUBJECTS,
            "baseline {from} -> {to}: {applied} rows passed the fence, expected {SUBJECTS}"
        );
    }
    let elapsed = started.elapsed();
    let rate = TRANSITIONS as f64 / elapsed.as_secs_f64();
    println!(
        "baseline: {TRANSITIONS} transitions in {:.2}s = {rate:.0} transitions/s",
        elapsed.as_secs_f64()
    );
    verify("baseline", &pool).await?;
    Ok(rate)
}

/// One batch of the baseline: `from` -> `to` for `ids`; returns the rows that passed the fence.
async fn write_back(
    pool: &PgPool,
    ids: &[i64],
    from: &str,
    to: &str,
    ends: bool,
) -> anyhow::Result<usize> {
    let now: DateTime<Utc> = SystemClock.now();
    let n = ids.len();
    let due: Option<DateTime<Utc>> = (!ends).then_some(now);
    // A non-final row keeps attempt 1 so the next state's fence (attempt = 1) matches.
    let attempt = if ends { 0 } else { 1 };
    let none_text: Vec<Option<&str>> = vec![None; n];
    let rows = sqlx::query(BASELINE_WRITE_BACK)
        .bind(now)
        .bind(OWNER)
        .bind(ids)
        .bind(vec![from; n])
        .bind(vec![1i32; n])
        .bind(vec![to; n])
        .bind(vec![due; n])
        .bind(vec![attempt; n])
        .bind(&none_text)
        .bind(&none_text)
        .bind(vec![ends; n])
        .bind(vec![None::<DateTime<Utc>>; n])
        .bind(vec!["done"; n])
        .bind(vec!["{}"; n])
        .fetch_all(pool)
        .await
        .with_context(|| format!("baseline write-back {from} -> {to}"))?;
    Ok(rows.len())
}

/// Flushes the setup's dirty pages so neither timed phase pays for the other's checkpoint;
/// needs superuser, so a refusal is only reported.
async fn checkpoint(pool: &PgPool) {
    if let Err(error) = sqlx::query("CHECKPOINT").execute(pool).await {
        println!("(no CHECKPOINT before the timed phase: {error})");
    }
}

/// Checks that every retirement went through every state and ended COMPLETE.
async fn verify(phase: &str, pool: &PgPool) -> anyhow::Result<()> {
    let done: i64 = sqlx::query("SELECT COUNT(*) FROM retirement_event WHERE outcome = 'done'")
        .fetch_one(pool)
        .await?
        .try_get(0)?;
    let row = sqlx::query(
        "SELECT COUNT(*) FILTER (WHERE state = 'COMPLETE' AND ended_at IS NOT NULL AND subject IS NULL), \
         COUNT(*) FROM retirement",
    )
    .fetch_one(pool)
    .await?;
    let (complete, total): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    println!(
        "{phase}: verified {done} 'done' events (expected {TRANSITIONS}), {complete}/{total} retirements COMPLETE and erased (expected {SUBJECTS})"
    );
    if done != TRANSITIONS as i64 || complete != SUBJECTS as i64 || total != SUBJECTS as i64 {
        bail!("{phase}: verification failed");
    }
    Ok(())
}
