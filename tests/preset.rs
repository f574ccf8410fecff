//! The shipped edX preset end to end, as an operator runs it: `lethe check --connect`,
//! `lethe run --once` against the MariaDB edX fixture, a real SMTP server, wiremock
//! Sarbacane and a webhook receiver, then `lethe ack` for every service: every inactive
//! user reaches COMPLETE (one, stopped on a protected table, after an operator's
//! `resume`), their rows are gone, active and staff users are untouched.

mod common;

use common::operator::Operator;
use common::smtp::SmtpServer;
use common::target::Fixture;
use common::{Kind, TestDb, exec, mocks, repo_root, scalar};
use lethe::sql::Dialect;
use std::path::{Path, PathBuf};
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const ACTIVE: i64 = 200;

/// The shipped pipeline.toml, pointed at the test's services; nothing else changes.
fn preset(smtp_port: u16, sarbacane: &str, webhook: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("pipeline.toml")).unwrap();
    let replaced = [
        (
            "host = \"localhost\"\ntls = \"starttls\"",
            format!(
                "host = \"127.0.0.1\"\ntls = \"none\"\nport = {smtp_port}\ntemplates = \"{}\"",
                repo_root().join("templates").display()
            ),
        ),
        (
            "# url = \"https://sarbacaneapis.com/v1\"",
            format!("url = \"{sarbacane}/v1\""),
        ),
        (
            "# webhook_url = \"https://joanie.example.org/api/lethe/webhook\"",
            format!("webhook_url = \"{webhook}/hook\""),
        ),
    ];
    replaced.into_iter().fold(text, |text, (from, to)| {
        assert!(text.contains(from), "pipeline.toml no longer has {from:?}");
        text.replace(from, &to)
    })
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lethe-preset-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edx_preset_takes_every_inactive_user_to_complete() {
    let edx = Fixture::new(Dialect::MySql).await;
    // Users 1..=6 last logged in in 2019; nobody is protected here; 200 active users keep
    // the scan under the preset's blast-radius share; an inactive staff user is excluded.
    let active: Vec<String> = (1000..1000 + ACTIVE)
        .map(|i| format!("({i}, 'active{i}', 'active{i}@example.org', 0, 0, NOW(), NOW())"))
        .collect();
    exec(
        &edx.url,
        &[
            // The one table of the preset's rules the fixture lacks.
            "CREATE TABLE student_historicalcourseenrollment (id BIGINT PRIMARY KEY, \
             user_id BIGINT NULL, FOREIGN KEY (user_id) REFERENCES auth_user (id))"
                .to_string(),
            "DELETE FROM wiki_articlerevision".to_string(),
            "DELETE FROM wiki_article".to_string(),
            format!(
                "INSERT INTO auth_user (id, username, email, is_staff, is_superuser, last_login, date_joined) VALUES {}",
                active.join(", ")
            ),
            "INSERT INTO auth_user (id, username, email, is_staff, is_superuser, last_login, date_joined) \
             VALUES (900, 'staff', 'staff@example.org', 1, 0, '2019-01-01 00:00:00', '2018-01-01 00:00:00')"
                .to_string(),
            "INSERT INTO student_historicalcourseenrollment VALUES (1, 1), (2, 1), (3, 1000)"
                .to_string(),
        ],
    )
    .await;
    let store = TestDb::new(Kind::Postgres).await;
    let smtp = SmtpServer::start().await;
    let sarbacane = mocks::sarbacane("key-1").await;
    let joanie = mocks::webhook_receiver().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(405))
        .mount(&joanie)
        .await;

    let dir = temp_dir();
    write(
        &dir,
        "states.toml",
        &std::fs::read_to_string(repo_root().join("states.toml")).unwrap(),
    );
    write(
        &dir,
        "pipeline.toml",
        &preset(smtp.port(), &sarbacane.uri(), &joanie.uri()),
    );
    let op = Operator {
        dir,
        env: vec![
            ("LETHE_HASH_KEY", "test-key-0123456789".into()),
            ("LETHE_STORE_URL", store.url.clone()),
            ("LETHE_SOURCE_URL", edx.url.clone()),
            ("LETHE_TARGET_EDX_URL", edx.url.clone()),
            ("LETHE_SARBACANE_ACCOUNT_ID", "acc-1".into()),
            ("LETHE_SARBACANE_API_KEY", "key-1".into()),
            ("LETHE_SERVICE_JOANIE_SECRET", SECRET.into()),
        ],
    };
    op.ok(&["migrate"]);
    let check = op.ok(&["check", "--connect"]);
    for line in [
        "stage RETIRING_SARBACANE (sarbacane): reachable: 1 lists and 1 blacklists readable",
        "service joanie: reachable: the webhook URL answers (HTTP 405 to a GET)",
        "config valid",
    ] {
        assert!(check.contains(line), "{line}\n{check}");
    }

    // The scan opens the six inactive users and the warning goes out to each.
    let scan = op.ok(&["scan"]);
    assert!(scan.contains("enqueued 6"), "{scan}");
    let run = op.ok(&["run", "--once"]);
    assert_eq!(smtp.count(), 6, "one warning per inactive user: {run}");
    let stats =
        || -> serde_json::Value { serde_json::from_str(&op.ok(&["stats", "--json"])).unwrap() };
    assert_eq!(stats()["WARNED"], 6, "{}", stats());

    // The grace period passes (shifted in SQL, not slept), then the deletion runs through
    // edX and Sarbacane and the services are told.
    exec(
        &store.url,
        &["UPDATE retirement SET warned_at = warned_at - interval '31 days', due_at = now() WHERE state = 'WARNED'"],
    )
    .await;
    op.ok(&["run", "--once"]);
    // The fixture gave user 5 an API token, a table the preset protects: nothing of theirs
    // is deleted and an operator decides. Here they revoke the token and resume.
    let errored = op.ok(&["list", "--state", "ERRORED"]);
    assert!(
        errored.contains("protected: authtoken_token.user_id (1 row)"),
        "{errored}"
    );
    assert_eq!(stats()["NOTIFIED"], 5, "{}", stats());
    assert_eq!(
        scalar(
            &edx.url,
            "SELECT COUNT(*) FROM auth_user WHERE id = 5".into()
        )
        .await,
        1
    );
    exec(&edx.url, &["DELETE FROM authtoken_token WHERE user_id = 5"]).await;
    op.ok(&["resume", "5"]);
    op.ok(&["run", "--once"]);
    assert_eq!(stats()["NOTIFIED"], 6, "{}", stats());
    assert_eq!(
        scalar(
            &edx.url,
            "SELECT COUNT(*) FROM auth_user WHERE id BETWEEN 1 AND 6".into()
        )
        .await,
        0
    );
    for table in [
        "auth_userprofile",
        "student_courseenrollment",
        "user_api_userpreference",
    ] {
        let left = format!("SELECT COUNT(*) FROM {table} WHERE user_id BETWEEN 1 AND 6");
        assert_eq!(scalar(&edx.url, left).await, 0, "{table}");
    }
    assert_eq!(
        scalar(&edx.url, "SELECT COUNT(*) FROM auth_user".into()).await,
        ACTIVE + 1,
        "active and staff users stay"
    );
    let deletes = sarbacane
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "DELETE")
        .count();
    assert_eq!(
        deletes,
        6 * 3,
        "one list and one blacklist (unsubscribers, complaints)"
    );
    let hooks = joanie.received_requests().await.unwrap();
    let hooks: Vec<_> = hooks
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .collect();
    assert_eq!(hooks.len(), 6);
    let verifier = standardwebhooks::Webhook::new(SECRET).unwrap();
    for hook in &hooks {
        verifier.verify(&hook.body, &hook.headers).unwrap();
    }

    // Each service acknowledges; the next run completes every retirement.
    for subject in 1..=6 {
        for service in ["joanie", "ashley"] {
            let out = op.ok(&["ack", &subject.to_string(), service]);
            assert!(out.contains(&format!("{service} acknowledged")), "{out}");
        }
    }
    op.ok(&["run", "--once"]);
    let stats = stats();
    assert_eq!(stats["COMPLETE"], 6, "{stats}");
    // The PII is erased, the audit trail still answers by subject.
    assert_eq!(
        scalar(
            &store.url,
            "SELECT COUNT(*) FROM retirement WHERE email IS NOT NULL OR username IS NOT NULL"
                .into()
        )
        .await,
        0
    );
    let audit = op.ok(&["audit", "--subject", "3"]);
    assert!(audit.contains("COMPLETE"), "{audit}");
    assert!(audit.contains("joanie"), "{audit}");
}
