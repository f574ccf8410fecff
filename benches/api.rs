//! `cargo bench --bench api`: 1,000,000 retirements in a local PostgreSQL store, 100,000 of
//! them handed to joanie and not acknowledged. Clients walk
//! `GET /v1/users?service=joanie&deletion_status=to_delete&limit=1000` page by page (offset)
//! over TCP, a few at once, to the end of the list.
//!
//! Baseline in the same run: the same SQL the store runs for that page, issued directly
//! through sqlx with the same concurrency (no HTTP, no JSON). One untimed walk of each warms
//! PostgreSQL's buffers; then three rounds of each, alternating; the best of each is compared. The last line is the `RESULT ...` line.

mod common;

use anyhow::Context;
use lethe::api::ApiState;
use lethe::clock::SystemClock;
use lethe::config::Config;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RETIREMENTS: i64 = 1_000_000;
const HANDED: i64 = 100_000;
const PAGE: i64 = 1000;
const CLIENTS: usize = 4;
const ROUNDS: usize = 3;
const KEY: &str = "bench-key-joanie";

fn pipeline() -> String {
    use sha2::Digest;
    let hash: String = sha2::Sha256::digest(KEY.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        r#"
[[stage]]
state = "PENDING"
handler = "noop"
[[stage]]
state = "NOTIFIED"
handler = "notify"
services = ["joanie"]
[[service]]
name = "joanie"
[[api_key]]
name = "joanie"
scope = "service:joanie"
sha256 = "{hash}"
"#
    )
}

/// The SQL `Store::users` runs for a service's page, as the baseline issues it (the API
/// then reads the page's ack rows by id).
const BASELINE_SQL: &str = "SELECT id, public_id, subject, subject_hash, reason, state, due_at, attempt, \
     lease_owner, lease_until, last_error, failed_state, warned_at, created_at, updated_at, ended_at, \
     exclusion_override, email, username FROM (SELECT retirement_id, created_at AS handed \
     FROM service_ack WHERE service = $1 AND status = $2 \
     ORDER BY created_at, retirement_id LIMIT $3 OFFSET $4) a \
     JOIN retirement r ON r.id = a.retirement_id ORDER BY a.handed, a.retirement_id";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or_default()
}

/// Walks every page with `CLIENTS` at once (client k takes pages k, k + CLIENTS...);
/// returns the latencies and the wall time.
async fn walk<F, Fut>(fetch: F) -> anyhow::Result<(Vec<Duration>, Duration)>
where
    F: Fn(i64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<usize>> + Send,
{
    let pages = HANDED / PAGE;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..CLIENTS as i64 {
        let fetch = fetch.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut page = client;
            while page < pages {
                let at = Instant::now();
                let rows = fetch(page * PAGE).await?;
                latencies.push(at.elapsed());
                anyhow::ensure!(rows == PAGE as usize, "page {page}: {rows} rows");
                page += CLIENTS as i64;
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined??);
    }
    let wall = started.elapsed();
    all.sort();
    Ok((all, wall))
}

async fn bench() -> anyhow::Result<()> {
    let admin = std::env::var("LETHE_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = "lethe_bench_api";
    let root = &admin[..admin.rfind('/').context("a database in the URL")?];
    let url = format!("{root}/{name}");
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
    }
    let (graph, pipeline) = Config::from_texts(
        "states.toml",
        &common::states_toml(&["PENDING", "NOTIFIED"]),
        "pipeline.toml",
        &pipeline(),
    )?;
    let store = lethe::store::open(&url, 16).await?;
    store.migrate().await?;
    store.sync_states(&graph).await?;
    let pool = sqlx::PgPool::connect(&url).await?;
    let loading = Instant::now();
    sqlx::query(
        "INSERT INTO retirement (subject, email, username, subject_hash, email_hash, reason, state, attempt, created_at, updated_at) \
         SELECT i::text, 'user' || i || '@example.org', 'user' || i, md5(i::text), md5('e' || i), 'inactive', \
                CASE WHEN i % 10 = 0 THEN 'NOTIFIED' ELSE 'PENDING' END, 0, \
                now() - (($1 - i) || ' seconds')::interval, now() \
         FROM generate_series(1, $1) AS i",
    )
    .bind(RETIREMENTS)
    .execute(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO service_ack (retirement_id, service, status, created_at) \
         SELECT id, 'joanie', 'to_delete', created_at FROM retirement WHERE state = 'NOTIFIED'",
    )
    .execute(&pool)
    .await?;
    // As autovacuum leaves a table at rest (the index-only scans need the visibility map).
    sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
    println!(
        "loaded {RETIREMENTS} retirements, {HANDED} handed to joanie, in {:.1}s",
        loading.elapsed().as_secs_f64()
    );

    let state = Arc::new(ApiState::new(
        store,
        Arc::new(pipeline),
        graph,
        Arc::new(SystemClock),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(lethe::api::serve(
        listener,
        state,
        axum::Router::new(),
        async {
            let _ = stopped.await;
        },
    ));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()?;

    let api = move |offset: i64| {
        let client = client.clone();
        async move {
            let url = format!(
                "http://{address}/v1/users?service=joanie&deletion_status=to_delete&limit={PAGE}&offset={offset}"
            );
            let response = client.get(url).header("x-api-key", KEY).send().await?;
            anyhow::ensure!(response.status() == 200, "HTTP {}", response.status());
            let users: Vec<serde_json::Value> = response.json().await?;
            Ok(users.len())
        }
    };
    let direct = {
        let pool = pool.clone();
        move |offset: i64| {
            let pool = pool.clone();
            async move {
                let rows = sqlx::query(BASELINE_SQL)
                    .bind("joanie")
                    .bind("to_delete")
                    .bind(PAGE)
                    .bind(offset)
                    .fetch_all(&pool)
                    .await?;
                Ok(rows.len())
            }
        }
    };
    let (mut best_ours, mut best_base) = (0f64, 0f64);
    let mut every: Vec<Duration> = Vec::new();
    let mut base_every: Vec<Duration> = Vec::new();
    let pages = (HANDED / PAGE) as f64;
    // One untimed walk of each first: the load left PostgreSQL's buffers cold, and
    // whichever side ran first would pay for warming them for both.
    let (cold, _) = walk(direct.clone()).await?;
    let (cold_api, _) = walk(api.clone()).await?;
    println!(
        "warm-up walk (not counted): sqlx p99 {:.1} ms, then API p99 {:.1} ms",
        percentile(&cold, 0.99).as_secs_f64() * 1e3,
        percentile(&cold_api, 0.99).as_secs_f64() * 1e3
    );
    for round in 1..=ROUNDS {
        let (latencies, wall) = walk(api.clone()).await?;
        let ours = pages / wall.as_secs_f64();
        let p99 = percentile(&latencies, 0.99);
        let (base_latencies, base_wall) = walk(direct.clone()).await?;
        let base = pages / base_wall.as_secs_f64();
        println!(
            "round {round}: API {ours:.1} requests/s (p50 {:.1} ms, p99 {:.1} ms); sqlx {base:.1} queries/s (p50 {:.1} ms, p99 {:.1} ms)",
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            percentile(&base_latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&base_latencies, 0.99).as_secs_f64() * 1e3
        );
        base_every.extend(base_latencies);
        best_ours = best_ours.max(ours);
        best_base = best_base.max(base);
        every.extend(latencies);
    }
    let _ = stop.send(());
    let _ = server.await;
    drop(pool);
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await?;
    }
    every.sort();
    base_every.sort();
    let p99 = percentile(&every, 0.99);
    println!(
        "p99 over the three rounds: API {:.1} ms, sqlx {:.1} ms",
        p99.as_secs_f64() * 1e3,
        percentile(&base_every, 0.99).as_secs_f64() * 1e3
    );
    println!("peak RSS: {} MB", common::peak_rss_mb());
    println!(
        "RESULT bench=api ours={best_ours:.1} baseline={best_base:.1} ratio={:.2} p99_ms={:.1}",
        best_ours / best_base,
        p99.as_secs_f64() * 1e3
    );
    Ok(())
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
