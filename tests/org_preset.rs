//! The shipped org preset end to end, as an operator runs it: `lethe init --preset org`,
//! its pipeline.toml pointed at the test's services (nothing else changes), then
//! `migrate`, `check --connect`, `scan` and `run --once` against a MariaDB application
//! database of organisations, a wiremock Elasticsearch and a wiremock WorkOS. Every
//! dissolved organisation and each row that depends on it go (a nullable audit link is set
//! to NULL), the index and the identity provider are called once per organisation, the
//! others are untouched; the cool-off holds every deletion back (its end is shifted in the
//! store, not slept); an organisation no longer dissolved, whether at the end of the
//! cool-off or before the retry of a failed deletion, is ABORTED and keeps its rows.

mod common;

use common::operator::Operator;

use common::target::Fixture;
use common::{Kind, TestDb, exec, scalar};
use lethe::sql::Dialect;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Organisations 1..=ORGS; a blast-radius share of 10% lets the scan open five.
const ORGS: i64 = 60;
/// Organisations 1..=WITH_ROWS have members, grants, courses, enrollments and audit rows.
const WITH_ROWS: i64 = 10;
/// Dissolved and retired.
const RETIRED: [i64; 3] = [2, 3, 4];
/// Dissolved at the scan, no longer when the rule is re-checked.
const UNDISSOLVED: [i64; 2] = [5, 6];
/// The platform's own organisation: dissolved, but excluded.
const PLATFORM: i64 = 1;
/// The one the identity provider no longer has (its lookup answers 404).
const NOT_IN_IDP: i64 = 4;

fn ddl() -> Vec<String> {
    [
        "CREATE TABLE organisation (id BIGINT PRIMARY KEY, name VARCHAR(100) NOT NULL, \
         contact_email VARCHAR(200) NULL, is_platform TINYINT NOT NULL DEFAULT 0, \
         created_at DATETIME NOT NULL, updated_at DATETIME NULL, dissolved_at DATETIME NULL)",
        "CREATE TABLE users (id BIGINT PRIMARY KEY, email VARCHAR(200) NOT NULL)",
        "CREATE TABLE org_member (id BIGINT PRIMARY KEY, organisation_id BIGINT NOT NULL, \
         user_id BIGINT NOT NULL, role VARCHAR(20) NOT NULL, \
         FOREIGN KEY (organisation_id) REFERENCES organisation (id), \
         FOREIGN KEY (user_id) REFERENCES users (id))",
        "CREATE TABLE org_member_grant (id BIGINT PRIMARY KEY, member_id BIGINT NOT NULL, \
         permission VARCHAR(50) NOT NULL, FOREIGN KEY (member_id) REFERENCES org_member (id))",
        "CREATE TABLE org_course (id BIGINT PRIMARY KEY, organisation_id BIGINT NOT NULL, \
         title VARCHAR(100) NOT NULL, FOREIGN KEY (organisation_id) REFERENCES organisation (id))",
        "CREATE TABLE course_enrollment (id BIGINT PRIMARY KEY, course_id BIGINT NOT NULL, \
         user_id BIGINT NOT NULL, FOREIGN KEY (course_id) REFERENCES org_course (id), \
         FOREIGN KEY (user_id) REFERENCES users (id))",
        // What an organisation did stays in the log without it: the link is nullable.
        "CREATE TABLE audit_log (id BIGINT PRIMARY KEY, organisation_id BIGINT NULL, \
         user_id BIGINT NULL, action VARCHAR(50) NOT NULL, \
         FOREIGN KEY (organisation_id) REFERENCES organisation (id), \
         FOREIGN KEY (user_id) REFERENCES users (id))",
    ]
    .map(String::from)
    .to_vec()
}

fn seed() -> Vec<String> {
    let orgs: Vec<String> = (1..=ORGS)
        .map(|o| {
            let dissolved = o == PLATFORM || RETIRED.contains(&o) || UNDISSOLVED.contains(&o);
            format!(
                "({o}, 'Org {o}', 'contact{o}@org{o}.example', {}, '2020-01-01 00:00:00', \
                 '2025-06-01 00:00:00', {})",
                i32::from(o == PLATFORM),
                if dissolved {
                    "'2026-01-01 00:00:00'"
                } else {
                    "NULL"
                }
            )
        })
        .collect();
    let users: Vec<String> = (1..=20)
        .map(|u| format!("({u}, 'user{u}@example.org')"))
        .collect();
    let (mut members, mut grants, mut courses, mut enrollments, mut audit) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for o in 1..=WITH_ROWS {
        for k in 0..2 {
            let member = o * 10 + k;
            members.push(format!("({member}, {o}, {}, 'admin')", (o + k) % 20 + 1));
            grants.push(format!("({member}, {member}, 'manage_courses')"));
            courses.push(format!("({member}, {o}, 'Course {member}')"));
            enrollments.push(format!("({member}, {member}, {})", (o + k + 5) % 20 + 1));
            audit.push(format!("({member}, {o}, {}, 'created')", k + 1));
        }
    }
    vec![
        format!(
            "INSERT INTO organisation (id, name, contact_email, is_platform, created_at, \
             updated_at, dissolved_at) VALUES {}",
            orgs.join(", ")
        ),
        format!("INSERT INTO users VALUES {}", users.join(", ")),
        format!("INSERT INTO org_member VALUES {}", members.join(", ")),
        format!("INSERT INTO org_member_grant VALUES {}", grants.join(", ")),
        format!("INSERT INTO org_course VALUES {}", courses.join(", ")),
        format!(
            "INSERT INTO course_enrollment VALUES {}",
            enrollments.join(", ")
        ),
        format!("INSERT INTO audit_log VALUES {}", audit.join(", ")),
    ]
}

/// The deployment's directory, removed at the end.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `lethe init --preset org` into a fresh directory, as an operator starts.
fn init() -> (Dir, PathBuf) {
    let root = std::env::temp_dir().join(format!("lethe-org-preset-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let deployment = root.join("deploy");
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .current_dir(&root)
        .args(["init", "--preset", "org"])
        .arg(&deployment)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in [
        "LETHE_TARGET_APP_URL",
        "LETHE_HTTP_SEARCH_TOKEN",
        "LETHE_HTTP_IDP_TOKEN",
    ] {
        assert!(stdout.contains(secret), "{stdout}");
    }
    (Dir(root), deployment)
}

/// The written pipeline.toml, pointed at the test's services; nothing else changes (the
/// 7-day cool-off stays: the test shifts the store's clock instead of waiting).
fn point_at(deployment: &std::path::Path, search: &str, idp: &str) {
    let file = deployment.join("pipeline.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let replaced = [
        ("https://search.example.org:9200", search),
        ("https://api.workos.com", idp),
    ];
    let text = replaced.into_iter().fold(text, |text, (from, to)| {
        assert!(text.contains(from), "pipeline.toml no longer has {from:?}");
        text.replace(from, to)
    });
    std::fs::write(file, text).unwrap();
}

async fn count(url: &str, sql: &str) -> i64 {
    scalar(url, sql.to_string()).await
}

/// `text` with every run of spaces as one (the CLI's tables align their columns).
fn squeeze(text: &str) -> String {
    text.split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `a, b, c` for an SQL `IN`.
fn list(ids: &[i64]) -> String {
    ids.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Organisation 7's row, then its members, their grants, its courses, their enrollments
/// and its audit rows.
async fn owned_by_7(url: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for sql in [
        "SELECT COUNT(*) FROM organisation WHERE id = 7",
        "SELECT COUNT(*) FROM org_member WHERE organisation_id = 7",
        "SELECT COUNT(*) FROM org_member_grant WHERE id IN (70, 71)",
        "SELECT COUNT(*) FROM org_course WHERE organisation_id = 7",
        "SELECT COUNT(*) FROM course_enrollment WHERE id IN (70, 71)",
        "SELECT COUNT(*) FROM audit_log WHERE organisation_id = 7",
    ] {
        out.push(count(url, sql).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_org_preset_retires_dissolved_organisations_and_all_they_own() {
    let app = Fixture::with(Dialect::MySql, &ddl(), &seed(), Default::default()).await;
    let store = TestDb::new(Kind::Postgres).await;

    // Elasticsearch: the organisation's documents, by query; its probe counts documents.
    let search = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/catalog/_delete_by_query"))
        .and(query_param("conflicts", "proceed"))
        .and(header("authorization", "ApiKey search-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"deleted": 4})))
        .expect(RETIRED.len() as u64)
        .mount(&search)
        .await;
    Mock::given(method("GET"))
        .and(path("/catalog/_count"))
        .and(header("authorization", "ApiKey search-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"count": 9})))
        .mount(&search)
        .await;
    // WorkOS: each organisation found by its external id (ours), then deleted by its own.
    let idp = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/organizations"))
        .and(header("authorization", "Bearer idp-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": []})))
        .mount(&idp)
        .await;
    for o in RETIRED {
        let lookup = if o == NOT_IN_IDP {
            ResponseTemplate::new(404).set_body_json(serde_json::json!({"message": "Not found"}))
        } else {
            ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "object": "organization", "id": format!("org_0{o}"), "external_id": o.to_string()
            }))
        };
        Mock::given(method("GET"))
            .and(path(format!("/organizations/external_id/{o}")))
            .and(header("authorization", "Bearer idp-key"))
            .respond_with(lookup)
            .expect(1)
            .mount(&idp)
            .await;
        Mock::given(method("DELETE"))
            .and(path(format!("/organizations/org_0{o}")))
            .and(header("authorization", "Bearer idp-key"))
            .respond_with(ResponseTemplate::new(204))
            .expect(u64::from(o != NOT_IN_IDP))
            .mount(&idp)
            .await;
    }

    let (_dir, deployment) = init();
    point_at(&deployment, &search.uri(), &idp.uri());
    let op = Operator {
        dir: deployment,
        env: vec![
            ("LETHE_HASH_KEY", "test-key-0123456789".into()),
            ("LETHE_STORE_URL", store.url.clone()),
            ("LETHE_SOURCE_URL", app.url.clone()),
            ("LETHE_TARGET_APP_URL", app.url.clone()),
            ("LETHE_HTTP_SEARCH_TOKEN", "search-key".into()),
            ("LETHE_HTTP_IDP_TOKEN", "idp-key".into()),
        ],
    };
    op.ok(&["migrate"]);
    let check = op.ok(&["check", "--connect"]);
    for line in [
        "stage RETIRING_SEARCH (http): reachable: probe answered HTTP 200",
        "stage RETIRING_IDP (http): reachable: probe answered HTTP 200",
        "notice dissolved: no notice required, cool-off 7d",
        "config valid",
    ] {
        assert!(check.contains(line), "{line}\n{check}");
    }
    assert!(
        check.contains(
            "nullified columns to review (rows kept; are these only actors?): audit_log.organisation_id"
        ),
        "{check}"
    );
    // What retiring organisation 2 does, row by row: two of each below it go, its audit
    // rows stay unlinked.
    let plan = op.ok(&["plan", "2"]);
    let lines: Vec<String> = plan.lines().map(squeeze).collect();
    for line in [
        "course_enrollment.course_id delete 2",
        "org_course.organisation_id delete 2",
        "org_member_grant.member_id delete 2",
        "org_member.organisation_id delete 2",
        "audit_log.organisation_id nullify 2",
    ] {
        assert!(lines.iter().any(|l| l == line), "{line}\n{plan}");
    }

    let before = |table: &str| format!("SELECT COUNT(*) FROM {table}");
    let totals: Vec<(&str, i64)> = {
        let mut out = Vec::new();
        for table in [
            "organisation",
            "users",
            "org_member",
            "org_member_grant",
            "org_course",
            "course_enrollment",
            "audit_log",
        ] {
            out.push((table, count(&app.url, &before(table)).await));
        }
        out
    };

    // The scan opens every dissolved organisation but the platform's own.
    let scan = op.ok(&["scan"]);
    assert!(scan.contains("enqueued 5"), "{scan}");
    assert_eq!(op.stats()["PENDING"], 5, "{}", op.stats());

    // During the cool-off: organisation 5 is no longer dissolved (the application undid
    // it), organisation 4 was touched (its updated_at, the activity column, cancels nothing).
    exec(
        &app.url,
        &[
            "UPDATE organisation SET dissolved_at = NULL WHERE id = 5",
            "UPDATE organisation SET updated_at = NOW() WHERE id = 4",
        ],
    )
    .await;
    op.ok(&["run", "--once"]);
    let stats = op.stats();
    assert_eq!(stats["PENDING"], 4, "{stats}");
    assert_eq!(stats["ABORTED"], 1, "{stats}");
    let waiting = op.ok(&["audit", "--subject", "2"]);
    assert!(waiting.contains("grace period until"), "{waiting}");
    // Nothing was deleted or called: the cool-off holds.
    assert_eq!(
        count(&app.url, "SELECT COUNT(*) FROM organisation").await,
        ORGS
    );
    let calls = |requests: Vec<wiremock::Request>| {
        requests
            .into_iter()
            .filter(|r| !r.url.path().ends_with("/_count") && r.url.path() != "/organizations")
            .collect::<Vec<_>>()
    };
    assert!(calls(search.received_requests().await.unwrap()).is_empty());
    assert!(calls(idp.received_requests().await.unwrap()).is_empty());

    // The cool-off passes (shifted in SQL, not slept); meanwhile organisation 6 is no
    // longer dissolved either. The next run re-checks the rule, deletes, calls the index
    // and the identity provider.
    exec(
        &app.url,
        &["UPDATE organisation SET dissolved_at = NULL WHERE id = 6"],
    )
    .await;
    exec(
        &store.url,
        &[
            "UPDATE retirement SET created_at = created_at - interval '8 days', due_at = now() \
           WHERE state = 'PENDING'",
        ],
    )
    .await;
    op.ok(&["run", "--once"]);
    let stats = op.stats();
    assert_eq!(stats["COMPLETE"], 3, "{stats}");
    assert_eq!(stats["ABORTED"], 2, "{stats}");

    // The aborted ones say why, and keep everything.
    for o in UNDISSOLVED {
        let audit = op.ok(&["audit", "--subject", &o.to_string()]);
        assert!(
            audit.contains("no longer matches rule dissolved"),
            "{o}: {audit}"
        );
        assert!(audit.contains("ABORTED"), "{o}: {audit}");
    }
    let kept = list(&UNDISSOLVED);
    assert_eq!(
        count(
            &app.url,
            &format!("SELECT COUNT(*) FROM organisation WHERE id IN ({kept})")
        )
        .await,
        2
    );
    for table in ["org_member", "org_course", "audit_log"] {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE organisation_id IN ({kept})");
        assert_eq!(count(&app.url, &sql).await, 4, "{table}");
    }

    // The retired organisations and every row below them are gone; the audit log keeps
    // their rows without the link.
    let gone = list(&RETIRED);
    for sql in [
        format!("SELECT COUNT(*) FROM organisation WHERE id IN ({gone})"),
        format!("SELECT COUNT(*) FROM org_member WHERE organisation_id IN ({gone})"),
        format!("SELECT COUNT(*) FROM org_course WHERE organisation_id IN ({gone})"),
        format!("SELECT COUNT(*) FROM audit_log WHERE organisation_id IN ({gone})"),
        // Grants and enrollments of orgs 2..=4 have ids 20..=41 (o * 10 + k).
        "SELECT COUNT(*) FROM org_member_grant WHERE id BETWEEN 20 AND 41".to_string(),
        "SELECT COUNT(*) FROM course_enrollment WHERE id BETWEEN 20 AND 41".to_string(),
    ] {
        assert_eq!(count(&app.url, &sql).await, 0, "{sql}");
    }
    assert_eq!(
        count(
            &app.url,
            "SELECT COUNT(*) FROM audit_log WHERE organisation_id IS NULL AND id BETWEEN 20 AND 41"
        )
        .await,
        6,
        "the audit rows of the retired organisations stay, unlinked"
    );
    // Everything else is untouched: each table lost exactly the retired rows (two per
    // organisation of each dependent table), users and the audit log none.
    let retired = RETIRED.len() as i64;
    for (table, total) in totals {
        let lost = match table {
            "organisation" => retired,
            "users" | "audit_log" => 0,
            _ => 2 * retired,
        };
        assert_eq!(
            count(&app.url, &before(table)).await,
            total - lost,
            "{table}"
        );
    }
    assert_eq!(
        count(
            &app.url,
            &format!("SELECT COUNT(*) FROM organisation WHERE id = {PLATFORM}")
        )
        .await,
        1,
        "the platform's organisation is excluded"
    );
    assert_eq!(
        count(
            &app.url,
            "SELECT COUNT(*) FROM audit_log WHERE organisation_id IS NOT NULL"
        )
        .await,
        2 * (WITH_ROWS - retired)
    );

    // The index was asked once per retired organisation, by its id; the identity
    // provider looked each up once and deleted those it had.
    let bodies: BTreeSet<String> = calls(search.received_requests().await.unwrap())
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            body["query"]["term"]["organisation_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let expected: BTreeSet<String> = RETIRED.iter().map(i64::to_string).collect();
    assert_eq!(bodies, expected);

    // Done: the store holds no name or address of theirs, and a new scan finds nothing.
    assert_eq!(
        count(
            &store.url,
            "SELECT COUNT(*) FROM retirement WHERE email IS NOT NULL OR username IS NOT NULL"
        )
        .await,
        0
    );
    for o in RETIRED {
        let audit = op.ok(&["audit", "--subject", &o.to_string()]);
        for step in ["RETIRING_DB", "RETIRING_SEARCH", "RETIRING_IDP", "COMPLETE"] {
            assert!(audit.contains(step), "{o}: {step}\n{audit}");
        }
    }
    let again = op.ok(&["scan"]);
    assert!(again.contains("enqueued 0"), "{again}");

    // The deleting stage re-checks the rule too. Organisation 7 is dissolved and opened,
    // its cool-off passes, but its deletion fails (a trigger refuses it, as a failing
    // database would) and is rolled back; before the retry the application undoes the
    // dissolution: RETIRING_DB cancels it and nothing of it goes.
    exec(
        &app.url,
        &[
            "UPDATE organisation SET dissolved_at = NOW() WHERE id = 7",
            "CREATE TRIGGER hold_org_7 BEFORE DELETE ON organisation FOR EACH ROW \
             BEGIN IF OLD.id = 7 THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'held'; END IF; END",
        ],
    )
    .await;
    let scan = op.ok(&["scan"]);
    assert!(scan.contains("enqueued 1"), "{scan}");
    exec(
        &store.url,
        &[
            "UPDATE retirement SET created_at = created_at - interval '8 days', due_at = now() \
           WHERE state = 'PENDING'",
        ],
    )
    .await;
    op.ok(&["run", "--once"]);
    let held = squeeze(&op.ok(&["audit", "--subject", "7"]));
    assert!(held.contains("PENDING RETIRING_DB done"), "{held}");
    assert!(
        held.contains("RETIRING_DB RETIRING_DB retry")
            && held.contains("the transaction was rolled back; nothing was deleted"),
        "{held}"
    );
    assert_eq!(owned_by_7(&app.url).await, [1, 2, 2, 2, 2, 2]);
    exec(
        &app.url,
        &[
            "UPDATE organisation SET dissolved_at = NULL WHERE id = 7",
            "DROP TRIGGER hold_org_7",
        ],
    )
    .await;
    exec(
        &store.url,
        &["UPDATE retirement SET due_at = now() WHERE state = 'RETIRING_DB'"],
    )
    .await;
    op.ok(&["run", "--once"]);
    let audit = squeeze(&op.ok(&["audit", "--subject", "7"]));
    assert!(
        audit.contains("RETIRING_DB ABORTED cancel")
            && audit.contains("no longer matches rule dissolved"),
        "{audit}"
    );
    assert_eq!(owned_by_7(&app.url).await, [1, 2, 2, 2, 2, 2]);
    let stats = op.stats();
    assert_eq!(stats["ABORTED"], 3, "{stats}");

    // Nothing of 5, 6 or 7 reached the index or the identity provider.
    search.verify().await;
    idp.verify().await;
}
