//! Helpers shared by the benchmarks.
#![allow(dead_code)]

use anyhow::Context;
use sqlx::Connection;

/// Peak resident set size of this process, in MB (VmHWM).
pub fn peak_rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

/// Runs statements on a MySQL/MariaDB database, naming the one that fails.
pub async fn mysql_exec(url: &str, statements: &[String]) -> anyhow::Result<()> {
    let mut conn = sqlx::MySqlConnection::connect(url).await?;
    for s in statements {
        sqlx::query(sqlx::AssertSqlSafe(s.clone()))
            .execute(&mut conn)
            .await
            .with_context(|| s.clone())?;
    }
    Ok(())
}

/// The MariaDB admin URL of the benchmarks.
pub fn mysql_admin_url() -> String {
    std::env::var("LETHE_BENCH_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// A states.toml with these working states in order and the three end states.
pub fn states_toml(working: &[&str]) -> String {
    let mut text: String = working
        .iter()
        .map(|name| format!("[[state]]\nname = \"{name}\"\n"))
        .collect();
    for (name, role) in [
        ("COMPLETE", "complete"),
        ("ERRORED", "errored"),
        ("ABORTED", "aborted"),
    ] {
        text.push_str(&format!(
            "[[state]]\nname = \"{name}\"\nrole = \"{role}\"\n"
        ));
    }
    text
}
