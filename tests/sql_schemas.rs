//! A foreign key to a same-named table in another schema (another database on MariaDB) is
//! not a link to the target's root: those rows belong to other users with the same ids.

mod common;

use common::target::{Fixture, warned};
use common::{exec, mysql_admin_url, scalar};
use lethe::sql::Dialect;
use lethe::sql::target::{Subject, SubjectResult};

async fn a_key_into_another_schema_is_not_followed(dialect: Dialect) {
    let f = Fixture::new(dialect).await;
    let other = format!("lethe_t_other_{}", std::process::id());
    let (setup, teardown): (Vec<String>, Vec<String>) = match dialect {
        Dialect::MySql => (
            vec![
                format!("CREATE DATABASE {other}"),
                format!("CREATE TABLE {other}.auth_user (id INT PRIMARY KEY)"),
                format!("INSERT INTO {other}.auth_user VALUES (1)"),
            ],
            vec![format!("DROP DATABASE IF EXISTS {other}")],
        ),
        _ => (
            vec![
                format!("CREATE SCHEMA {other}"),
                format!("CREATE TABLE {other}.auth_user (id INT PRIMARY KEY)"),
                format!("INSERT INTO {other}.auth_user VALUES (1)"),
            ],
            vec![],
        ),
    };
    let admin = match dialect {
        Dialect::MySql => mysql_admin_url(),
        _ => f.url.clone(),
    };
    exec(&admin, &setup).await;
    exec(
        &f.url,
        &[
            format!(
                "CREATE TABLE crossref (id INT PRIMARY KEY, user_id INT NOT NULL, \
                 FOREIGN KEY (user_id) REFERENCES {other}.auth_user (id))"
            ),
            "INSERT INTO crossref VALUES (1, 1)".to_string(),
        ],
    )
    .await;
    let target = f.target().await;
    let report = target
        .retire(&[Subject {
            id: 1,
            active_after: warned(),
            check_exclusions: true,
            still_selected: None,
        }])
        .await
        .unwrap();
    let retired = matches!(report.subjects[&1], SubjectResult::Retired { .. });
    let kept = scalar(&f.url, "SELECT COUNT(*) FROM crossref".into()).await;
    if !teardown.is_empty() {
        // The key first: MariaDB refuses to drop a database another one points into.
        exec(&f.url, &["DROP TABLE crossref"]).await;
        exec(&admin, &teardown).await;
    }
    assert!(retired, "{:?}", report.subjects[&1]);
    assert_eq!(kept, 1, "the other schema's user 1 keeps its row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb() {
    a_key_into_another_schema_is_not_followed(Dialect::MySql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    a_key_into_another_schema_is_not_followed(Dialect::Postgres).await
}
