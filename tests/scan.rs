//! Scanning the source: inactivity (never-logged-in users counted from sign-up), exclusions,
//! allow-lists, idempotence, the blast-radius guard and keyset paging under deletions.

mod common;

use chrono::{DateTime, Utc};
use common::{Kind, TestDb, config, exec, key, noop_pipeline};
use lethe::config::{Config, Source};
use lethe::driver::scan::{ScanOptions, scan};
use lethe::sql::source::SourceReader;

/// A MariaDB database with a small auth_user, dropped at the end.
struct Users {
    url: String,
    name: String,
}

impl Users {
    async fn new() -> Users {
        let name = format!(
            "lethe_scan_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        exec(
            &common::mysql_admin_url(),
            &[&format!("CREATE DATABASE {name}")],
        )
        .await;
        let root = common::mysql_admin_url();
        let url = format!("{}/{name}", &root[..root.rfind('/').unwrap()]);
        exec(
            &url,
            &["CREATE TABLE auth_user (id INT PRIMARY KEY AUTO_INCREMENT, username VARCHAR(150) NOT NULL, \
               email VARCHAR(254) NOT NULL, is_staff TINYINT NOT NULL DEFAULT 0, is_superuser TINYINT NOT NULL DEFAULT 0, \
               last_login DATETIME(6) NULL, date_joined DATETIME(6) NOT NULL)"],
        )
        .await;
        // id: (last_login, date_joined, staff, superuser, email)
        let rows = [
            (1, Some("2015-01-01"), "2014-01-01", 0, 0, "old@example.org"),
            (
                2,
                Some("2026-01-01"),
                "2014-01-01",
                0,
                0,
                "recent@example.org",
            ),
            (3, None, "2015-06-01", 0, 0, "never@example.org"),
            (4, None, "2026-06-01", 0, 0, "newcomer@example.org"),
            (
                5,
                Some("2015-01-01"),
                "2014-01-01",
                1,
                0,
                "staff@example.org",
            ),
            (
                6,
                Some("2015-01-01"),
                "2014-01-01",
                0,
                1,
                "root@example.org",
            ),
            (
                7,
                Some("2015-01-01"),
                "2014-01-01",
                0,
                0,
                "keep@partner.org",
            ),
            (8, Some("2015-01-01"), "2014-01-01", 0, 0, "dpo@example.org"),
            (
                9,
                Some("2015-01-01"),
                "2014-01-01",
                0,
                0,
                "allowed-id@example.org",
            ),
            (
                10,
                Some("2016-01-01"),
                "2014-01-01",
                0,
                0,
                "old2@example.org",
            ),
        ];
        let mut inserts = Vec::new();
        for (id, login, joined, staff, su, email) in rows {
            let login = login
                .map(|l| format!("'{l}'"))
                .unwrap_or_else(|| "NULL".into());
            inserts.push(format!(
                "INSERT INTO auth_user VALUES ({id}, 'u{id}', '{email}', {staff}, {su}, {login}, '{joined}')"
            ));
        }
        let refs: Vec<&str> = inserts.iter().map(String::as_str).collect();
        exec(&url, &refs).await;
        Users { url, name }
    }

    fn source(&self, extra: &str) -> Source {
        let text = format!(
            "{}\n[source]\nurl = \"{}\"\nallow_ids = [9]\nallow_emails = [\"DPO@example.org\"]\nallow_domains = [\"partner.org\"]\n{extra}\n",
            noop_pipeline("", ""),
            self.url
        );
        let (_, pipeline) =
            Config::from_texts("states.toml", common::STATES, "pipeline.toml", &text).unwrap();
        pipeline.source.unwrap()
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(exec(
                &common::mysql_admin_url(),
                &[&format!("DROP DATABASE IF EXISTS {name}")],
            ));
        })
        .join();
    }
}

fn now() -> DateTime<Utc> {
    "2026-11-22T10:00:00Z".parse().unwrap()
}

/// One scan at `now()`, optionally dry.
async fn run_scan(
    store: &std::sync::Arc<dyn lethe::store::Store>,
    graph: &lethe::domain::StateGraph,
    reader: &SourceReader,
    source: &Source,
    pipeline: &lethe::config::Pipeline,
    dry_run: bool,
) -> lethe::driver::scan::ScanReport {
    let options = ScanOptions {
        dry_run,
        ..ScanOptions::default()
    };
    // The source as the test set it, and its one implicit rule.
    let mut pipeline = pipeline.clone();
    pipeline.rules = vec![lethe::config::Rule::implicit(
        source,
        pipeline.policy.inactive_after,
    )];
    pipeline.source = Some(source.clone());
    let mut reports = scan(
        store.as_ref(),
        graph,
        reader,
        &pipeline,
        &key(),
        now(),
        options,
    )
    .await
    .unwrap();
    assert_eq!(reports.len(), 1);
    reports.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_finds_inactive_users_and_respects_exclusions() {
    let users = Users::new().await;
    // A tiny table: the default share limit (5% of all users) would refuse any scan.
    let source = users.source("max_new_share = 1.0");
    let reader = SourceReader::connect(&source).await.unwrap();
    let db = TestDb::new(Kind::Sqlite).await;
    let (graph, pipeline) = config(&noop_pipeline("", ""));
    let store = db.store(&graph).await;

    let dry = run_scan(&store, &graph, &reader, &source, &pipeline, true).await;
    // Inactive: 1, 3 (never logged in, joined 2015), 5, 6, 7, 8, 9, 10; excluded: 5, 6 (staff,
    // superuser), 7 (domain), 8 (email), 9 (id).
    assert_eq!(
        (dry.counts.seen, dry.counts.inactive, dry.counts.excluded),
        (10, 8, 5)
    );
    assert_eq!(dry.first, vec![1, 3, 10]);
    // Every candidate, with why: the last login, or the sign-up of who never logged in.
    let why: Vec<(i64, String)> = dry.candidates.iter().map(|c| (c.id, c.why())).collect();
    let why: Vec<(i64, &str)> = why.iter().map(|(id, w)| (*id, w.as_str())).collect();
    assert_eq!(
        why,
        [
            (1, "inactive since 2015-01-01 00:00:00"),
            (3, "never logged in since 2015-06-01 00:00:00"),
            (10, "inactive since 2016-01-01 00:00:00"),
        ]
    );
    assert_eq!(
        store.stats().await.unwrap(),
        vec![],
        "a dry run writes nothing"
    );

    let report = run_scan(&store, &graph, &reader, &source, &pipeline, false).await;
    assert_eq!((report.counts.enqueued, report.counts.already_open), (3, 0));
    assert_eq!(
        store.stats().await.unwrap(),
        vec![("PENDING".to_string(), 3)]
    );
    let r = store
        .find(&lethe::store::Lookup::subject("3", None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.reason, "inactive");

    // Idempotent: the same scan again opens nothing new.
    // source.inactive_after overrides the policy: after 20 years, nobody here is inactive.
    let strict = users.source("max_new_share = 1.0\ninactive_after = \"7300d\"");
    let none = run_scan(&store, &graph, &reader, &strict, &pipeline, true).await;
    assert_eq!(none.counts.inactive, 0);

    let again = run_scan(&store, &graph, &reader, &source, &pipeline, false).await;
    assert_eq!((again.counts.enqueued, again.counts.already_open), (0, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blast_radius_guard_enqueues_nothing_and_says_why() {
    let users = Users::new().await;
    let db = TestDb::new(Kind::Sqlite).await;
    let (graph, pipeline) = config(&noop_pipeline("", ""));
    let store = db.store(&graph).await;
    let source = users.source("max_new_per_scan = 2\nmax_new_share = 1.0");
    let reader = SourceReader::connect(&source).await.unwrap();
    let report = run_scan(&store, &graph, &reader, &source, &pipeline, false).await;
    assert_eq!(report.counts.enqueued, 0);
    let why = report.counts.refused.unwrap();
    assert!(
        why.contains("3 new candidates exceed source.max_new_per_scan = 2 by 1"),
        "{why}"
    );
    assert_eq!(store.stats().await.unwrap(), vec![]);

    let source = users.source("max_new_share = 0.2");
    let report = run_scan(&store, &graph, &reader, &source, &pipeline, false).await;
    let why = report.counts.refused.unwrap();
    assert!(
        why.contains("max_new_share = 20.00% (2 users) by 1"),
        "{why}"
    );
    assert_eq!(store.stats().await.unwrap(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_paging_neither_skips_nor_repeats_while_rows_are_deleted() {
    let users = Users::new().await;
    let source = users.source("batch_size = 2");
    let reader = SourceReader::connect(&source).await.unwrap();
    let cutoff = "2021-11-22T00:00:00".parse().unwrap();
    let rule = lethe::config::Rule::implicit(&source, std::time::Duration::from_secs(86_400));
    let first = reader
        .candidates_page(&rule, i64::MIN, i64::MAX, cutoff, 2, false)
        .await
        .unwrap();
    assert_eq!(first.iter().map(|u| u.id).collect::<Vec<_>>(), vec![1, 3]);
    // Rows before and after the cursor disappear between pages.
    exec(&users.url, &["DELETE FROM auth_user WHERE id IN (1, 5)"]).await;
    let mut seen: Vec<i64> = first.iter().map(|u| u.id).collect();
    let mut after = 3;
    loop {
        let page = reader
            .candidates_page(&rule, after, i64::MAX, cutoff, 2, false)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.id;
        seen.extend(page.iter().map(|u| u.id));
    }
    assert_eq!(seen, vec![1, 3, 6, 7, 8, 9, 10]);
}

/// What connecting to a source that must be refused says.
async fn connect_error(source: &lethe::config::Source) -> String {
    match SourceReader::connect(source).await {
        Ok(_) => panic!("the source was accepted"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_source_column_is_named() {
    let users = Users::new().await;
    let source = users.source("last_login_column = \"last_seen\"");
    let err = connect_error(&source).await;
    assert!(
        err.contains("column auth_user.last_seen does not work"),
        "{err}"
    );
    let source = users.source("table = \"users\"");
    let err = connect_error(&source).await;
    assert!(err.contains("table users does not work"), "{err}");
    // A text key would be cast to numbers (MySQL makes 'abc' 0): refused by name.
    let source = users.source("id_column = \"username\"");
    let err = connect_error(&source).await;
    assert!(
        err.contains(
            "column auth_user.username is varchar: subjects are read by integer keys only"
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_activity_keeps_a_subject_out_until_a_new_inactivity_period() {
    let users = Users::new().await;
    let source = users.source("max_new_share = 1.0");
    let reader = SourceReader::connect(&source).await.unwrap();
    let db = TestDb::new(Kind::Sqlite).await;
    let (graph, pipeline) = config(&noop_pipeline("", ""));
    let store = db.store(&graph).await;
    // User 1 was active a year ago somewhere the source does not see (`lethe touch`);
    // user 3's reported activity is older than the inactivity period.
    store
        .record_activity(&key().subject("1"), now() - chrono::Duration::days(365))
        .await
        .unwrap();
    store
        .record_activity(&key().subject("3"), now() - chrono::Duration::days(2000))
        .await
        .unwrap();
    let report = run_scan(&store, &graph, &reader, &source, &pipeline, false).await;
    assert_eq!((report.counts.enqueued, report.counts.excluded), (2, 6));
    assert!(
        store
            .find(&lethe::store::Lookup::subject("1", None))
            .await
            .unwrap()
            .is_none()
    );
    // An older report does not move the recorded activity back.
    store
        .record_activity(&key().subject("1"), now() - chrono::Duration::days(3000))
        .await
        .unwrap();
    let again = run_scan(&store, &graph, &reader, &source, &pipeline, true).await;
    assert_eq!(again.counts.excluded, 6);
}
