//! `cargo bench --bench http`: 10,000 retirements through the `sarbacane` handler, in the
//! driver's batches of 500, against an in-process HTTP/1.1 server over TCP that emulates
//! Sarbacane (3 lists, 2 blacklists, every response after 2 ms, keep-alive).
//!
//! Baseline in the same run: a bare reqwest client issuing exactly the same DELETE requests
//! (7 per user) with the same number in flight, all users at once, without lethe. Three
//! rounds of each, alternating; the best of each is compared. The last line printed is the
//! machine-readable `RESULT ...` line.

mod common;

use anyhow::{Context, ensure};
use lethe::config::{HandlerKind, Secret, StageSettings};
use lethe::domain::{Outcome, Reason};
use lethe::stages::{Handler, SarbacaneHandler};
use lethe::store::Claimed;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USERS: usize = 10_000;
const BATCH: usize = 500;
const CONCURRENCY: usize = 32;
const LATENCY: Duration = Duration::from_millis(2);
const LISTS: [&str; 3] = ["l1", "l2", "l3"];
const BLACKLISTS: [&str; 2] = ["b1", "b2"];
const ROUNDS: usize = 3;

/// Requests the emulated Sarbacane answered.
static ANSWERED: AtomicU64 = AtomicU64::new(0);

/// Serves one keep-alive connection: GET lists/blacklists (one page), DELETE anything.
async fn serve(mut socket: tokio::net::TcpStream) {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end);
        let line = head.lines().next().unwrap_or("");
        let body = if line.starts_with("GET /v1/lists") {
            page(&LISTS, line)
        } else if line.starts_with("GET /v1/blacklists") {
            page(&BLACKLISTS, line)
        } else {
            String::new()
        };
        tokio::time::sleep(LATENCY).await;
        ANSWERED.fetch_add(1, Ordering::Relaxed);
        let status = if body.is_empty() {
            "204 No Content"
        } else {
            "200 OK"
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if socket.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn page(ids: &[&str], line: &str) -> String {
    let first = !line.contains("offset=") || line.contains("offset=0");
    let items: Vec<String> = match first {
        true => ids
            .iter()
            .map(|id| format!("{{\"id\":\"{id}\"}}"))
            .collect(),
        false => Vec::new(),
    };
    format!("[{}]", items.join(","))
}

async fn start_server() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            tokio::spawn(serve(socket));
        }
    });
    Ok(format!("http://{addr}"))
}

fn claimed(id: usize) -> Claimed {
    Claimed {
        id: id as i64,
        subject: id.to_string(),
        email: Some(format!("user{id}+tag@example.org")),
        username: Some(format!("user{id}")),
        reason: Reason::INACTIVE,
        state: "RETIRING_SARBACANE".into(),
        attempt: 1,
        lost_leases: 0,
        warned_at: None,
        created_at: chrono::Utc::now(),
        locale: None,
        reminders_sent: 0,
        exclusion_override: false,
        rule: None,
    }
}

/// lethe: the handler, batch after batch; users per second and requests sent.
async fn ours(base: &str, users: &[Claimed]) -> anyhow::Result<(f64, u64)> {
    let text = format!("url = \"{base}/v1\"\nconcurrency = {CONCURRENCY}\n");
    let table: toml::Table = toml::from_str(&text)?;
    let StageSettings::Sarbacane(mut settings) =
        StageSettings::parse(HandlerKind::Sarbacane, table)
            .map_err(|(k, p)| anyhow::anyhow!("{k}: {p}"))?
    else {
        anyhow::bail!("not sarbacane settings");
    };
    settings.account_id = Some(Secret::new("bench"));
    settings.api_key = Some(Secret::new("bench-key"));
    let handler = SarbacaneHandler::new(settings)?;
    let started = Instant::now();
    for batch in users.chunks(BATCH) {
        let results = handler.handle(batch).await?;
        ensure!(results.len() == batch.len(), "missing results");
        ensure!(
            results.values().all(|r| r.outcome == Outcome::Done),
            "a removal failed: {:?}",
            results.values().find(|r| r.outcome != Outcome::Done)
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok((users.len() as f64 / elapsed, handler.requests_sent()))
}

/// Baseline: a bare reqwest client, the same 7 DELETEs per user, CONCURRENCY in flight.
async fn baseline(base: &str, users: &[Claimed]) -> anyhow::Result<f64> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()?;
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in users {
        let (client, permits) = (client.clone(), permits.clone());
        let email = c.email.clone().unwrap_or_default();
        let base = base.to_string();
        tasks.spawn(async move {
            let paths = LISTS.iter().map(|id| format!("lists/{id}/contacts")).chain(
                BLACKLISTS.iter().flat_map(|id| {
                    [
                        format!("blacklists/{id}/unsubscribers"),
                        format!("blacklists/{id}/complaints"),
                    ]
                }),
            );
            for p in paths {
                let mut url = reqwest::Url::parse(&format!("{base}/v1/{p}"))?;
                url.query_pairs_mut().append_pair("email", &email);
                let _slot = permits.acquire().await?;
                let reply = client
                    .delete(url)
                    .header("accountid", "bench")
                    .header("apikey", "bench-key")
                    .send()
                    .await?;
                ensure!(reply.status().is_success(), "status {}", reply.status());
                reply.bytes().await?;
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("baseline task")??;
    }
    Ok(users.len() as f64 / started.elapsed().as_secs_f64())
}

async fn bench() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let base = start_server().await?;
    let users: Vec<Claimed> = (1..=USERS).map(claimed).collect();
    let (mut best_ours, mut best_base, mut requests) = (0f64, 0f64, 0u64);
    for round in 1..=ROUNDS {
        let before = ANSWERED.load(Ordering::Relaxed);
        let (rate, sent) = ours(&base, &users).await?;
        let answered = ANSWERED.load(Ordering::Relaxed) - before;
        ensure!(answered == sent, "sent {sent}, answered {answered}");
        let base_rate = baseline(&base, &users).await?;
        println!(
            "round {round}: lethe {rate:.0} users/s ({sent} requests), bare reqwest {base_rate:.0} users/s"
        );
        best_ours = best_ours.max(rate);
        best_base = best_base.max(base_rate);
        requests = sent;
    }
    let per_user = requests as f64 / USERS as f64;
    let floor = (LISTS.len() + 2 * BLACKLISTS.len()) as f64;
    println!(
        "{USERS} users, {} lists, {} blacklists, {LATENCY:?} per response, {CONCURRENCY} in flight; \
         requests per user {per_user:.4} (floor {floor})",
        LISTS.len(),
        BLACKLISTS.len()
    );
    println!("peak RSS: {} MB", common::peak_rss_mb());
    println!(
        "RESULT bench=http ours={best_ours:.0} baseline={best_base:.0} ratio={:.2} requests_per_user={per_user:.4}",
        best_ours / best_base
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match bench().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
