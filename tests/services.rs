//! A missing service stops the tests at once with one line naming it and what to do.

mod common;

use common::services::{Service, reachable, require};
use std::process::Command;
use std::time::{Duration, Instant};

const PROBE: &str = "LETHE_TEST_SERVICES_PROBE";

/// Run by the test below in a child process: needs PostgreSQL, which the child's
/// environment points at a port nothing listens on. Does nothing in a normal run.
#[test]
fn probe_needs_postgres() {
    if std::env::var(PROBE).is_ok() {
        let _ = require(Service::Postgres);
        unreachable!("require returns only when PostgreSQL is reachable");
    }
}

#[test]
fn a_missing_service_stops_the_process_with_one_line_per_missing_service() {
    let started = Instant::now();
    let out = Command::new(std::env::current_exe().expect("this test binary"))
        .args(["probe_needs_postgres", "--exact"])
        .env(PROBE, "1")
        .env(
            Service::Postgres.env(),
            "postgres://postgres@127.0.0.1:1/test",
        )
        .env(Service::MariaDb.env(), "mysql://root@127.0.0.1:2/test")
        .output()
        .expect("run the probe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "fails fast");
    for (service, env) in [
        ("PostgreSQL", "LETHE_TEST_PG_URL"),
        ("MariaDB", "LETHE_TEST_MYSQL_URL"),
    ] {
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(service)).collect();
        assert_eq!(lines.len(), 1, "one line for {service}: {stderr}");
        assert!(
            lines[0].contains(env) && lines[0].contains("docker compose"),
            "{}",
            lines[0]
        );
    }
}

#[test]
fn the_local_services_are_reachable_and_a_closed_port_is_not() {
    for service in [Service::Postgres, Service::MariaDb] {
        assert_eq!(reachable(service, &service.url()), Ok(()), "{service:?}");
    }
    let closed = reachable(Service::Postgres, "postgres://u:secret@127.0.0.1:1/db");
    let line = closed.expect_err("nothing listens on port 1");
    assert!(line.contains("127.0.0.1:1"), "{line}");
    assert!(
        !line.contains("secret"),
        "no password in the message: {line}"
    );
}
