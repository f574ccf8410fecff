//! The REST API in-process (tower `oneshot`) on both store backends, and once over TCP:
//! the auth matrix, Mork's JSON shapes, a consumer that pulls and acknowledges until the
//! list is empty while retirements keep arriving, stable paging, bad input.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{Kind, TestDb, config, exec, subjects};
use lethe::api::{ApiState, router};
use lethe::clock::{Clock, ManualClock};
use lethe::store::Store;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use tower::ServiceExt;

/// Keys by who holds them: (name, scope, key).
const KEYS: [(&str, &str, &str); 4] = [
    ("joanie", "service:joanie", "key-joanie"),
    ("ashley", "service:ashley", "key-ashley"),
    ("dpo", "auditor", "key-dpo"),
    ("ops", "operator", "key-ops"),
];

const WEBHOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const WORKOS_SECRET: &str = "workos-endpoint-secret";

fn pipeline() -> String {
    let mut text = String::from("[api]\nlisten = \"127.0.0.1:0\"\n");
    text.push_str(&common::api_keys(&KEYS));
    text.push_str(common::SERVICE_STAGES);
    text.push_str(
        r#"[source]
table = "auth_user"
"#,
    );
    text
}

struct Api {
    _db: TestDb,
    store: Arc<dyn Store>,
    app: axum::Router,
    clock: Arc<ManualClock>,
    url: String,
}

/// A SQLite source of truth: users 1 to 5, and 42 who is staff.
async fn source() -> (TestDb, lethe::sql::source::SourceReader) {
    let db = TestDb::new(Kind::Sqlite).await;
    let url = format!("{}?mode=rwc", db.url);
    let mut statements = vec![
        "CREATE TABLE auth_user (id INTEGER PRIMARY KEY, email TEXT, username TEXT, \
         last_login TEXT, date_joined TEXT NOT NULL, is_staff INTEGER NOT NULL DEFAULT 0, \
         is_superuser INTEGER NOT NULL DEFAULT 0)"
            .to_string(),
        "INSERT INTO auth_user (id, email, username, date_joined, is_staff) \
         VALUES (42, 'staff@example.org', 'staff', '2015-01-01 00:00:00', 1)"
            .to_string(),
    ];
    for id in [7, 8] {
        statements.push(format!(
            "INSERT INTO auth_user (id, email, username, date_joined) \
             VALUES ({id}, 'twin@example.org', 'twin{id}', '2015-01-01 00:00:00')"
        ));
    }
    for id in 1..=5 {
        statements.push(format!(
            "INSERT INTO auth_user (id, email, username, date_joined) \
             VALUES ({id}, 'user{id}@example.org', 'user{id}', '2015-01-01 00:00:00')"
        ));
    }
    exec(&url, &statements).await;
    let (_, pipeline) = config(&pipeline());
    let mut settings = pipeline.source.unwrap();
    settings.url = Some(url);
    let reader = lethe::sql::source::SourceReader::connect(&settings)
        .await
        .unwrap();
    (db, reader)
}

impl Api {
    async fn new(kind: Kind) -> Api {
        Self::with_source(kind, None).await
    }

    async fn with_source(kind: Kind, source: Option<lethe::sql::source::SourceReader>) -> Api {
        let db = TestDb::new(kind).await;
        let (graph, mut pipeline) = config(&pipeline());
        pipeline.api.webhook_secret = Some(lethe::config::Secret::new(WEBHOOK_SECRET));
        pipeline.api.workos_secret = Some(lethe::config::Secret::new(WORKOS_SECRET));
        let store = db.store(&graph).await;
        let clock = Arc::new(ManualClock::new(common::t0()));
        let state = Arc::new(
            ApiState::new(store.clone(), Arc::new(pipeline), graph, clock.clone())
                .with_source(source.map(Arc::new))
                .with_hash_key(Some(common::key())),
        );
        Api {
            url: db.url.clone(),
            _db: db,
            store,
            app: router(state),
            clock,
        }
    }

    /// Opens retirements for subjects `from..to`, hands them to both services (state
    /// NOTIFIED, an ack row each) and returns their ids.
    async fn notified(&self, from: u32, to: u32) -> Vec<i64> {
        let now = self.clock.now();
        let ids: Vec<i64> = self
            .store
            .enqueue("PENDING", &subjects(from, to), "test", now)
            .await
            .unwrap()
            .into_iter()
            .map(|o| match o {
                lethe::store::EnqueueOutcome::Created(id) => id,
                other => panic!("{other:?}"),
            })
            .collect();
        let list: Vec<String> = ids.iter().map(i64::to_string).collect();
        exec(
            &self.url,
            &[format!(
                "UPDATE retirement SET state = 'NOTIFIED' WHERE id IN ({})",
                list.join(", ")
            )],
        )
        .await;
        self.store
            .await_acks(&ids, &["joanie".into(), "ashley".into()], now)
            .await
            .unwrap();
        // Each batch a second older than the next: oldest first is a real order.
        self.clock.advance(chrono::Duration::seconds(1));
        ids
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        let body = match body {
            Some(b) => {
                request = request.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let response = self
            .app
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    async fn get(&self, uri: &str, key: &str) -> (StatusCode, Value) {
        self.call(Method::GET, uri, Some(key), None).await
    }

    async fn ack(&self, public_id: &str, service: &str, key: &str) -> (StatusCode, Value) {
        self.call(
            Method::PATCH,
            &format!("/v1/users/{public_id}/status/{service}"),
            Some(key),
            Some(json!({"deletion_status": "deleted"})),
        )
        .await
    }

    async fn public_id(&self, id: i64) -> String {
        self.store
            .find(&lethe::store::Lookup::Id(id))
            .await
            .unwrap()
            .unwrap()
            .public_id
    }
}

async fn every_route_checks_the_key_and_its_scope(kind: Kind) {
    let api = Api::new(kind).await;
    let ids = api.notified(1, 3).await;
    let user = api.public_id(ids[0]).await;
    let patch = format!("/v1/users/{user}/status/joanie");
    let keys = [
        None,
        Some("nope"),
        Some("key-joanie"),
        Some("key-ashley"),
        Some("key-dpo"),
        Some("key-ops"),
    ];
    // Expected status per key, in the order of `keys`.
    let matrix: Vec<(Method, String, [u16; 6])> = vec![
        (
            Method::GET,
            "/v1/users?service=joanie".into(),
            [401, 401, 200, 403, 200, 200],
        ),
        // A service key learns no other service's name, even a wrong one.
        (
            Method::GET,
            "/v1/users?service=crm".into(),
            [401, 401, 403, 403, 422, 422],
        ),
        (
            Method::GET,
            "/v1/users".into(),
            [401, 401, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            format!("/v1/users/{user}/status/joanie"),
            [401, 401, 200, 403, 200, 200],
        ),
        (
            Method::GET,
            format!("/v1/users/{user}?service=ashley"),
            [401, 401, 403, 200, 200, 200],
        ),
        (Method::GET, "/__heartbeat__".into(), [200; 6]),
        (Method::GET, "/__lbheartbeat__".into(), [200; 6]),
        (Method::GET, "/healthz".into(), [200; 6]),
        (Method::GET, "/readyz".into(), [200; 6]),
    ];
    for (method, uri, expected) in &matrix {
        for (key, want) in keys.iter().zip(expected) {
            let (status, body) = api.call(method.clone(), uri, *key, None).await;
            assert_eq!(
                status.as_u16(),
                *want,
                "{method} {uri} with {key:?}: {body}"
            );
            if *want == 401 {
                assert_eq!(body, json!({"detail": "Missing or invalid API key"}));
            }
        }
    }
    // Writes: the auditor and the other service are refused, nothing is written.
    for (key, want) in [("key-dpo", 403), ("key-ashley", 403), ("nope", 401)] {
        let (status, _) = api.ack(&user, "joanie", key).await;
        assert_eq!(status.as_u16(), want, "{key}");
    }
    assert!(
        api.store
            .acks(ids[0])
            .await
            .unwrap()
            .iter()
            .all(|a| !a.acked)
    );
    let (status, body) = api
        .call(
            Method::PATCH,
            &patch,
            Some("key-joanie"),
            Some(json!({"deletion_status": "deleted"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api
        .ack(&api.public_id(ids[1]).await, "joanie", "key-ops")
        .await;
    assert_eq!(status, 200, "{body}");
    let events = api.store.history(ids[0]).await.unwrap();
    let ack = events.iter().find(|e| e.outcome == "ack").unwrap();
    assert_eq!(ack.actor, "api:joanie", "the key is the actor");
}

async fn a_mork_client_pulls_and_acknowledges(kind: Kind) {
    let api = Api::new(kind).await;
    let ids = api.notified(1, 4).await;
    let (status, users) = api
        .get(
            "/v1/users?service=joanie&deletion_status=to_delete&limit=10",
            "key-joanie",
        )
        .await;
    assert_eq!(status, 200);
    let users = users.as_array().unwrap();
    assert_eq!(users.len(), 3);
    let first = &users[0];
    let mut keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "created_at",
            "edx_user_id",
            "email",
            "id",
            "reason",
            "service_statuses",
            "updated_at",
            "username"
        ]
    );
    assert_eq!(first["edx_user_id"], 1);
    assert_eq!(first["email"], "user1@example.org");
    assert_eq!(first["username"], "user1");
    assert_eq!(first["reason"], "gdpr");
    assert_eq!(first["created_at"], "2026-11-22T10:00:00");
    assert_eq!(
        first["service_statuses"],
        json!([
            {"service_name": "ashley", "status": "to_delete"},
            {"service_name": "edx", "status": "deleted"},
            {"service_name": "joanie", "status": "to_delete"},
            {"service_name": "sarbacane", "status": "deleted"},
        ])
    );
    let id = first["id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    let (status, body) = api.ack(&id, "joanie", "key-joanie").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"id": id, "service_name": "joanie", "status": "deleted"})
    );
    // Acknowledging again answers the same (a consumer that retries is safe).
    assert_eq!(api.ack(&id, "joanie", "key-joanie").await.1, body);
    let (_, status_body) = api
        .get(&format!("/v1/users/{id}/status/joanie"), "key-joanie")
        .await;
    assert_eq!(status_body, body);
    // The 32-digit spelling Mork accepts finds the same user.
    let simple = id.replace('-', "");
    let (status, user) = api.get(&format!("/v1/users/{simple}"), "key-ops").await;
    assert_eq!(
        (status.as_u16(), user["id"].as_str()),
        (200, Some(id.as_str()))
    );
    let (_, left) = api
        .get(
            "/v1/users?service=joanie&deletion_status=to_delete",
            "key-joanie",
        )
        .await;
    assert_eq!(left.as_array().unwrap().len(), 2);
    let (_, done) = api
        .get(
            "/v1/users?service=joanie&deletion_status=deleted",
            "key-joanie",
        )
        .await;
    assert_eq!(done.as_array().unwrap().len(), 1);
    // Filters match exactly, not as substrings (Mork's ILIKE).
    let (_, one) = api
        .get("/v1/users?email=user2@example.org", "key-ops")
        .await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    let (_, none) = api.get("/v1/users?email=user", "key-ops").await;
    assert_eq!(none, json!([]));
    // An aborted retirement leaves the services' lists.
    let (status, _) = api
        .call(
            Method::POST,
            &format!("/v1/retirements/{}/abort", ids[2]),
            Some("key-ops"),
            Some(json!({"reason": "test"})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, left) = api
        .get(
            "/v1/users?service=joanie&deletion_status=to_delete",
            "key-joanie",
        )
        .await;
    assert_eq!(left.as_array().unwrap().len(), 1);
    // lethe's own stages: edx is deleted for all of them; none is still deleting.
    let (_, deleting) = api
        .get("/v1/users?service=edx&deletion_status=deleting", "key-ops")
        .await;
    assert_eq!(deleting, json!([]));
    let (_, deleted) = api
        .get("/v1/users?service=edx&deletion_status=deleted", "key-ops")
        .await;
    assert_eq!(
        deleted.as_array().unwrap().len(),
        ids.len() - 1,
        "the aborted one is hidden"
    );
}

async fn a_consumer_walks_the_list_to_empty_while_retirements_arrive(kind: Kind) {
    let api = Api::new(kind).await;
    let mut expected: HashSet<String> = HashSet::new();
    for id in api.notified(1, 31).await {
        expected.insert(api.public_id(id).await);
    }
    let mut acked: Vec<String> = Vec::new();
    let mut rounds = 0;
    loop {
        let (status, page) = api
            .get(
                "/v1/users?service=joanie&deletion_status=to_delete&limit=7",
                "key-joanie",
            )
            .await;
        assert_eq!(status, 200);
        let page = page.as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        for user in &page {
            let id = user["id"].as_str().unwrap().to_string();
            assert_eq!(api.ack(&id, "joanie", "key-joanie").await.0, 200);
            acked.push(id);
        }
        rounds += 1;
        if rounds == 2 {
            for id in api.notified(100, 110).await {
                expected.insert(api.public_id(id).await);
            }
        }
        assert!(rounds < 50, "the list never empties");
    }
    let unique: HashSet<String> = acked.iter().cloned().collect();
    assert_eq!(unique.len(), acked.len(), "no user was served twice");
    assert_eq!(unique, expected, "no user was skipped");
}

async fn pages_stay_put_while_other_services_acknowledge(kind: Kind) {
    let api = Api::new(kind).await;
    let ids = api.notified(1, 21).await;
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let (_, page) = api
            .get(
                &format!("/v1/users?service=joanie&limit=6&offset={offset}"),
                "key-joanie",
            )
            .await;
        let page = page.as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        for user in &page {
            seen.push(user["id"].as_str().unwrap().to_string());
            // Ashley acknowledges as joanie walks: joanie's list does not move.
            let id = user["id"].as_str().unwrap();
            assert_eq!(api.ack(id, "ashley", "key-ashley").await.0, 200);
        }
        offset += page.len();
    }
    let mut expected = Vec::new();
    for id in &ids {
        expected.push(api.public_id(*id).await);
    }
    assert_eq!(seen, expected, "oldest first, then id, each once");
}

async fn bad_input_is_a_4xx_naming_the_problem(kind: Kind) {
    let api = Api::new(kind).await;
    let ids = api.notified(1, 2).await;
    let user = api.public_id(ids[0]).await;
    let cases: Vec<(Method, String, Option<Value>, u16, &str)> = vec![
        (Method::GET, "/v1/users?limit=0".into(), None, 422, "limit"),
        (
            Method::GET,
            "/v1/users?limit=1001".into(),
            None,
            422,
            "limit",
        ),
        (
            Method::GET,
            "/v1/users?offset=-1".into(),
            None,
            422,
            "offset",
        ),
        (
            Method::GET,
            "/v1/users?limit=ten".into(),
            None,
            422,
            "limit",
        ),
        (
            Method::GET,
            "/v1/users?service=crm".into(),
            None,
            422,
            "service",
        ),
        (
            Method::GET,
            "/v1/users?deletion_status=gone".into(),
            None,
            422,
            "deletion_status",
        ),
        (
            Method::GET,
            "/v1/users/not-a-uuid".into(),
            None,
            422,
            "user_id",
        ),
        (
            Method::GET,
            format!("/v1/users/{}", uuid::Uuid::new_v4()),
            None,
            404,
            "User not found",
        ),
        (
            Method::GET,
            format!("/v1/users/{user}/status/crm"),
            None,
            422,
            "service_name",
        ),
        (
            Method::PATCH,
            format!("/v1/users/{user}/status/joanie"),
            Some(json!({"deletion_status": "deleting"})),
            422,
            "deleted",
        ),
        (
            Method::PATCH,
            format!("/v1/users/{user}/status/joanie"),
            Some(json!({"status": "deleted"})),
            422,
            "deletion_status",
        ),
        (
            Method::PATCH,
            format!("/v1/users/{user}/status/edx"),
            Some(json!({"deletion_status": "deleted"})),
            422,
            "its own stage",
        ),
        (
            Method::GET,
            "/v2/nothing".into(),
            None,
            404,
            "no such route",
        ),
    ];
    for (method, uri, body, want, names) in cases {
        let (status, answer) = api.call(method.clone(), &uri, Some("key-ops"), body).await;
        assert_eq!(status.as_u16(), want, "{method} {uri}: {answer}");
        assert!(
            answer.to_string().contains(names),
            "{method} {uri}: {answer}"
        );
    }
    // A body that is not JSON at all.
    let request = Request::builder()
        .method(Method::PATCH)
        .uri(format!("/v1/users/{user}/status/joanie"))
        .header("x-api-key", "key-ops")
        .body(Body::from("{not json"))
        .unwrap();
    let response = api.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 422);
    assert!(
        api.store
            .acks(ids[0])
            .await
            .unwrap()
            .iter()
            .all(|a| !a.acked),
        "nothing written"
    );
}

async fn operators_open_list_inspect_abort_and_audit_retirements(kind: Kind) {
    let (_source_db, reader) = source().await;
    let api = Api::with_source(kind, Some(reader)).await;
    let inputs = json!({"subjects": ["1", "user2@example.org", "42", "999", "nobody@example.org", "abc", "1", "twin@example.org"]});
    for (key, want) in [("key-dpo", 403), ("key-joanie", 403)] {
        let (status, _) = api
            .call(
                Method::POST,
                "/v1/retirements",
                Some(key),
                Some(inputs.clone()),
            )
            .await;
        assert_eq!(status.as_u16(), want, "{key}");
    }
    let (status, body) = api
        .call(
            Method::POST,
            "/v1/retirements",
            Some("key-ops"),
            Some(inputs),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let results: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert_eq!(
        results,
        [
            "created",
            "created",
            "excluded",
            "not_found",
            "not_found",
            "invalid",
            "created",
            "ambiguous"
        ]
    );
    assert_eq!(body["results"][2]["why"], "excluded by source.exclude");
    assert_eq!(
        body["results"][0]["retirement_id"],
        body["results"][6]["retirement_id"]
    );
    let (_, again) = api
        .call(
            Method::POST,
            "/v1/retirements",
            Some("key-ops"),
            Some(json!({"subjects": ["2"], "reason": "inactive"})),
        )
        .await;
    assert_eq!(again["results"][0]["result"], "already_open");
    for (bad, names) in [
        (json!({"subjects": []}), "subjects"),
        (
            json!({"subjects": ["1"], "reason": "bored"}),
            "known reasons",
        ),
        (
            json!({"subjects": ["1"], "state": "COMPLETE"}),
            "working state",
        ),
        (json!({"subjects": ["1"], "colour": "red"}), "unknown field"),
    ] {
        let (status, body) = api
            .call(Method::POST, "/v1/retirements", Some("key-ops"), Some(bad))
            .await;
        assert_eq!(status, 422, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(names),
            "{body}"
        );
    }
    api.call(
        Method::POST,
        "/v1/retirements",
        Some("key-ops"),
        Some(json!({"subjects": ["3", "4", "5"]})),
    )
    .await;
    // Newest first, two per page, the cursor walking to the end.
    let (_, first) = api.get("/v1/retirements?limit=2", "key-dpo").await;
    let ids: Vec<i64> = first["retirements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] > ids[1]);
    let mut all = ids.clone();
    let mut cursor = first["next_cursor"].clone();
    while let Some(c) = cursor.as_i64() {
        let (_, page) = api
            .get(&format!("/v1/retirements?limit=2&cursor={c}"), "key-dpo")
            .await;
        all.extend(
            page["retirements"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_i64().unwrap()),
        );
        cursor = page["next_cursor"].clone();
    }
    assert_eq!(all.len(), 5, "{all:?}");
    let (_, pending) = api
        .get("/v1/retirements?state=PENDING&reason=requested", "key-dpo")
        .await;
    assert_eq!(pending["retirements"].as_array().unwrap().len(), 5);
    assert_eq!(
        api.get("/v1/retirements?state=NOPE", "key-dpo").await.0,
        422
    );
    assert_eq!(api.get("/v1/retirements", "key-joanie").await.0, 403);
    // One retirement: by number or by its UUID, with its history naming the key.
    let id = all[0];
    let (_, one) = api.get(&format!("/v1/retirements/{id}"), "key-dpo").await;
    assert_eq!(one["events"][0]["actor"], "api:ops");
    assert!(
        one["retirement"].get("email").is_none(),
        "operators' views carry no email"
    );
    let public = one["retirement"]["public_id"].as_str().unwrap().to_string();
    let (_, by_uuid) = api
        .get(&format!("/v1/retirements/{public}"), "key-dpo")
        .await;
    assert_eq!(by_uuid["retirement"]["id"], id);
    assert_eq!(api.get("/v1/retirements/99999", "key-dpo").await.0, 404);
    // Abort needs a reason and an operator; a second abort conflicts; resume needs ERRORED.
    let abort = format!("/v1/retirements/{id}/abort");
    assert_eq!(
        api.call(Method::POST, &abort, Some("key-ops"), Some(json!({})))
            .await
            .0,
        422
    );
    assert_eq!(
        api.call(
            Method::POST,
            &abort,
            Some("key-dpo"),
            Some(json!({"reason": "x"}))
        )
        .await
        .0,
        403
    );
    let (status, aborted) = api
        .call(
            Method::POST,
            &abort,
            Some("key-ops"),
            Some(json!({"reason": "asked twice"})),
        )
        .await;
    assert_eq!(status, 200, "{aborted}");
    assert_eq!(aborted["retirement"]["state"], "ABORTED");
    assert_eq!(
        api.call(
            Method::POST,
            &abort,
            Some("key-ops"),
            Some(json!({"reason": "again"}))
        )
        .await
        .0,
        409
    );
    let resume = format!("/v1/retirements/{}/resume", all[1]);
    let (status, body) = api.call(Method::POST, &resume, Some("key-ops"), None).await;
    assert_eq!(status, 409, "{body}");
    let (_, ready) = api.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        ready,
        json!({"status": "ready", "store": "ok", "source": "ok"})
    );
    let (_, stats) = api.get("/v1/stats", "key-dpo").await;
    assert_eq!(
        (stats["PENDING"].as_i64(), stats["ABORTED"].as_i64()),
        (Some(4), Some(1))
    );
    // The audit trail: JSON, and CSV for a client that asks for it.
    let (_, events) = api
        .get(&format!("/v1/audit?subject=%23{id}"), "key-dpo")
        .await;
    let outcomes: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["enqueued", "abort"]);
    let request = Request::builder()
        .uri("/v1/audit")
        .header("x-api-key", "key-dpo")
        .header("accept", "text/csv")
        .body(Body::empty())
        .unwrap();
    let response = api.app.clone().oneshot(request).await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let csv = String::from_utf8(
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(csv.starts_with("event_id,at,retirement_id"), "{csv}");
    assert_eq!(csv.lines().count(), 1 + 6, "{csv}");
    assert!(!csv.contains("@example.org"), "no email in the audit trail");
}

async fn task_status(api: &Api, id: &str) -> String {
    for _ in 0..500 {
        let (_, body) = api.get(&format!("/v1/tasks/{id}/status"), "key-ops").await;
        let status = body["status"].as_str().unwrap().to_string();
        if status == "SUCCESS" || status == "FAILURE" {
            eprintln!("task {id}: {body}");
            return status;
        }
        // The task runs on the runtime beside this test: let it.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("task {id} never finished");
}

async fn mork_tasks_scan_and_open_retirements(kind: Kind) {
    let (_source_db, reader) = source().await;
    let api = Api::with_source(kind, Some(reader)).await;
    let task = |body: Value| api.call(Method::POST, "/v1/tasks", Some("key-ops"), Some(body));
    let (status, created) = task(json!({"type": "email_inactive_users"})).await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["status"], "PENDING");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(task_status(&api, &id).await, "SUCCESS");
    let (_, stats) = api.get("/v1/stats", "key-ops").await;
    assert_eq!(
        stats["PENDING"], 0,
        "a dry run (Mork's default) opens nothing"
    );
    let (_, created) =
        task(json!({"type": "delete_user", "email": "user3@example.org", "dry_run": false})).await;
    assert_eq!(
        task_status(&api, created["id"].as_str().unwrap()).await,
        "SUCCESS"
    );
    let (_, list) = api.get("/v1/retirements?reason=requested", "key-ops").await;
    assert_eq!(list["retirements"].as_array().unwrap().len(), 1);
    assert_eq!(list["retirements"][0]["subject"], "3");
    let (_, missing) =
        task(json!({"type": "delete_user", "email": "nobody@example.org", "dry_run": false})).await;
    assert_eq!(
        task_status(&api, missing["id"].as_str().unwrap()).await,
        "FAILURE"
    );
    // The username sent must be the source's: it reaches the services' requests.
    let (_, wrong) = task(json!({"type": "email_user", "email": "user4@example.org", "username": "user5", "dry_run": false})).await;
    assert_eq!(
        task_status(&api, wrong["id"].as_str().unwrap()).await,
        "FAILURE"
    );
    for (bad, at) in [
        (
            json!({"type": "email_user", "email": "user1@example.org"}),
            "username",
        ),
        (json!({"type": "reboot"}), "type"),
        (json!({"dry_run": true}), "type"),
        (
            json!({"type": "delete_inactive_users", "limit": 0}),
            "limit",
        ),
    ] {
        let (status, body) = task(bad).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["detail"][0]["loc"][1], at, "{body}");
    }
    let (status, _) = api
        .call(
            Method::POST,
            "/v1/tasks",
            Some("key-joanie"),
            Some(json!({"type": "email_inactive_users"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, options) = api
        .call(Method::OPTIONS, "/v1/tasks", Some("key-ops"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(options["task_types"].as_array().unwrap().len(), 4);
    let (_, unknown) = api.get("/v1/tasks/whatever/status", "key-ops").await;
    assert_eq!(unknown, json!({"id": "whatever", "status": "PENDING"}));
    // Task states are the store's: another process over it (a restart) answers them.
    let (graph, pipeline) = config(&pipeline());
    let restarted = router(Arc::new(ApiState::new(
        api.store.clone(),
        Arc::new(pipeline),
        graph,
        api.clock.clone(),
    )));
    let status_of = |id: String| {
        let restarted = restarted.clone();
        async move {
            let request = Request::builder()
                .uri(format!("/v1/tasks/{id}/status"))
                .header("x-api-key", "key-dpo")
                .body(Body::empty())
                .unwrap();
            let response = restarted.oneshot(request).await.unwrap();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            serde_json::from_slice::<Value>(&bytes).unwrap()
        }
    };
    assert_eq!(status_of(id.clone()).await["status"], "SUCCESS");
    let failed = status_of(missing["id"].as_str().unwrap().to_string()).await;
    assert_eq!(failed["status"], "FAILURE");
    assert_eq!(failed["error"], "no user in the source has this email");
    // A task its process never finished is reported failed once it is plainly lost.
    let now = api.clock.now();
    let stuck = lethe::store::TaskRow {
        id: "stuck".into(),
        kind: "email_inactive_users".into(),
        status: "STARTED".into(),
        error: None,
        actor: "api:ops".into(),
        created_at: now,
        updated_at: now,
    };
    api.store
        .save_task(&stuck, now - chrono::Duration::days(30))
        .await
        .unwrap();
    assert_eq!(status_of("stuck".into()).await["status"], "STARTED");
    api.clock.advance(chrono::Duration::hours(7));
    let lost = status_of("stuck".into()).await;
    assert_eq!(lost["status"], "FAILURE");
    assert!(lost["error"].as_str().unwrap().starts_with("lost"));
}

async fn metrics_are_exposed_and_move_with_work(kind: Kind) {
    let api = Api::new(kind).await;
    api.notified(1, 4).await;
    let before = lethe::metrics::counter(
        "lethe_api_requests_total",
        &[("route", "/v1/users"), ("status", "200")],
    );
    api.get("/v1/users?service=joanie", "key-joanie").await;
    let after = lethe::metrics::counter(
        "lethe_api_requests_total",
        &[("route", "/v1/users"), ("status", "200")],
    );
    assert!(after > before, "the request was counted");
    let request = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let response = api.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = String::from_utf8(
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("lethe_retirements{state=\"NOTIFIED\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("lethe_api_requests_total{route=\"/v1/users\",status=\"200\"}"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE lethe_api_seconds histogram"),
        "{text}"
    );
    assert!(!text.contains("@example.org"), "no address in a label");
}

async fn activity_cancels_by_key_or_by_a_verified_signature(kind: Kind) {
    let api = Api::new(kind).await;
    let now = api.clock.now();
    api.store
        .enqueue("PENDING", &subjects(10, 13), "test", now)
        .await
        .unwrap();
    let post = |headers: Vec<(&'static str, String)>, body: String| {
        let mut request = Request::builder().method(Method::POST).uri("/v1/activity");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let app = api.app.clone();
        async move {
            let response = app
                .oneshot(request.body(Body::from(body)).unwrap())
                .await
                .unwrap();
            let status = response.status().as_u16();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            )
        }
    };
    let body = json!({"subject": "10"}).to_string();
    assert_eq!(post(vec![], body.clone()).await.0, 401);
    assert_eq!(
        post(vec![("x-api-key", "key-dpo".into())], body.clone())
            .await
            .0,
        403
    );
    let (status, answer) = post(vec![("x-api-key", "key-ops".into())], body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"], "cancelled");
    assert_eq!(answer["retirement"]["state"], "ABORTED");
    // Standard Webhooks, signed by the library receivers use.
    let webhook = standardwebhooks::Webhook::new(WEBHOOK_SECRET).unwrap();
    let body = json!({"subject": "11"}).to_string();
    let signed = |ts: i64, body: &str| {
        let signature = webhook.sign("msg_1", ts, body.as_bytes()).unwrap();
        vec![
            ("webhook-id", "msg_1".to_string()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", signature),
        ]
    };
    let stale = now.timestamp() - 3600;
    assert_eq!(post(signed(stale, &body), body.clone()).await.0, 401);
    let mut forged = signed(now.timestamp(), &body);
    forged[2].1 = webhook.sign("msg_1", now.timestamp(), b"{}").unwrap();
    assert_eq!(post(forged, body.clone()).await.0, 401);
    let (status, answer) = post(signed(now.timestamp(), &body), body.clone()).await;
    assert_eq!(
        (status, answer["result"].as_str()),
        (200, Some("cancelled")),
        "{answer}"
    );
    // WorkOS: a user.updated event whose user carries the subject as external_id.
    let workos = |body: &str, t: i64| {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(WORKOS_SECRET.as_bytes()).unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        vec![("workos-signature", format!("t={t}, v1={hex}"))]
    };
    let event = json!({"event": "user.updated", "data": {"id": "user_01", "external_id": "12"}, "created_at": now.to_rfc3339()}).to_string();
    let t = now.timestamp_millis();
    assert_eq!(
        post(workos(&event, t - 600_000), event.clone()).await.0,
        401,
        "outside 3 minutes"
    );
    let (status, answer) = post(workos(&event, t), event.clone()).await;
    assert_eq!(
        (status, answer["result"].as_str()),
        (200, Some("cancelled")),
        "{answer}"
    );
    for (ignored, why) in [
        (
            json!({"event": "session.created", "data": {"user_id": "user_01", "impersonator": {"email": "admin@x.org"}}}),
            "impersonated",
        ),
        (
            json!({"event": "session.created", "data": {"user_id": "user_01"}}),
            "external_id",
        ),
    ] {
        let ignored = ignored.to_string();
        let (status, answer) = post(workos(&ignored, t), ignored).await;
        assert_eq!(status, 200, "{answer}");
        assert!(answer["why"].as_str().unwrap().contains(why), "{answer}");
    }
    let other = json!({"event": "user.created", "data": {}}).to_string();
    let (status, answer) = post(workos(&other, t), other).await;
    assert_eq!((status, answer["result"].as_str()), (200, Some("ignored")));
    // Someone without an open retirement: recorded, so a scan leaves them alone.
    let (_, answer) = post(
        vec![("x-api-key", "key-ops".into())],
        json!({"subject": 99}).to_string(),
    )
    .await;
    assert_eq!(answer["result"], "recorded");
    for bad in [
        json!({"subject": "a@b.org"}),
        json!({"who": 1}),
        json!({"subject": "1", "at": "2999-01-01T00:00:00Z"}),
    ] {
        let (status, answer) = post(vec![("x-api-key", "key-ops".into())], bad.to_string()).await;
        assert_eq!(status, 422, "{answer}");
    }
    let (_, stats) = api.get("/v1/stats", "key-ops").await;
    assert_eq!(stats["ABORTED"], 3);
}

/// Every route the router serves, by method and path template.
const ROUTES: [(&str, &str); 21] = [
    ("get", "/v1/users"),
    ("get", "/v1/users/{id}"),
    ("get", "/v1/users/{id}/status/{service}"),
    ("patch", "/v1/users/{id}/status/{service}"),
    ("post", "/v1/tasks"),
    ("options", "/v1/tasks"),
    ("get", "/v1/tasks/{id}/status"),
    ("post", "/v1/retirements"),
    ("get", "/v1/retirements"),
    ("get", "/v1/retirements/{id}"),
    ("post", "/v1/retirements/{id}/resume"),
    ("post", "/v1/retirements/{id}/abort"),
    ("get", "/v1/stats"),
    ("get", "/v1/audit"),
    ("post", "/v1/activity"),
    ("get", "/__heartbeat__"),
    ("get", "/__lbheartbeat__"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_each_is_served() {
    let api = Api::new(Kind::Sqlite).await;
    let ids = api.notified(1, 2).await;
    let user = api.public_id(ids[0]).await;
    let (status, doc) = api.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    for (method, path) in ROUTES {
        if path == "/openapi.json" {
            continue;
        }
        assert!(
            documented.contains(&(method.to_string(), path.to_string())),
            "{method} {path} is served but not documented"
        );
    }
    // And every documented operation is served (not the fallback's 404, not a 405).
    for (method, path) in &documented {
        let uri = path.replace("{id}", &user).replace("{service}", "joanie");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let (status, body) = api
            .call(method.clone(), &uri, Some("key-ops"), Some(json!({})))
            .await;
        assert_ne!(status, 405, "{method} {uri}");
        assert!(
            !(status == 404 && body.to_string().contains("no such route")),
            "{method} {uri} is documented but not served"
        );
    }
    assert!(
        doc["components"]["schemas"]["User"]["properties"]["service_statuses"].is_object(),
        "{doc}"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["name"],
        "X-API-Key"
    );
}

async fn errored_users_read_where_they_failed_and_pages_stay_full(kind: Kind) {
    let api = Api::new(kind).await;
    let now = api.clock.now();
    let ids: Vec<i64> = api
        .store
        .enqueue("PENDING", &subjects(1, 6), "test", now)
        .await
        .unwrap()
        .into_iter()
        .map(|o| match o {
            lethe::store::EnqueueOutcome::Created(id) => id,
            other => panic!("{other:?}"),
        })
        .collect();
    let errored = |id: i64, at: &str, error: &str| {
        format!(
            "UPDATE retirement SET state = 'ERRORED', failed_state = '{at}', last_error = '{error}', due_at = NULL WHERE id = {id}"
        )
    };
    exec(
        &api.url,
        &[
            errored(
                ids[0],
                "RETIRING_EDX",
                "protected: wiki_article.owner_id (1 row)",
            ),
            errored(ids[1], "RETIRING_EDX", "timeout"),
            errored(ids[2], "PENDING", "smtp refused"),
        ],
    )
    .await;
    let subjects_of = |users: &Value| -> Vec<i64> {
        users
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["edx_user_id"].as_i64().unwrap())
            .collect()
    };
    let (_, protected) = api
        .get("/v1/users?service=edx&deletion_status=protected", "key-ops")
        .await;
    assert_eq!(subjects_of(&protected), [1]);
    let (_, any_protected) = api
        .get("/v1/users?deletion_status=protected", "key-ops")
        .await;
    assert_eq!(subjects_of(&any_protected), [1]);
    let (_, deleting) = api
        .get("/v1/users?service=edx&deletion_status=deleting", "key-ops")
        .await;
    assert_eq!(subjects_of(&deleting), [2]);
    // Errored before the stage: still to_delete; pages are full (the store did the cut).
    for offset in 0..3 {
        let (_, page) = api
            .get(
                &format!("/v1/users?service=edx&deletion_status=to_delete&limit=1&offset={offset}"),
                "key-ops",
            )
            .await;
        assert_eq!(page.as_array().unwrap().len(), 1, "offset {offset}: {page}");
    }
    let (_, all) = api
        .get("/v1/users?service=edx&deletion_status=to_delete", "key-ops")
        .await;
    assert_eq!(subjects_of(&all), [3, 4, 5]);
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod postgres { $( #[tokio::test] async fn $name() { super::$name(super::Kind::Postgres).await } )* }
        mod sqlite { $( #[tokio::test] async fn $name() { super::$name(super::Kind::Sqlite).await } )* }
    };
}

on_both_stores!(
    every_route_checks_the_key_and_its_scope,
    a_mork_client_pulls_and_acknowledges,
    a_consumer_walks_the_list_to_empty_while_retirements_arrive,
    pages_stay_put_while_other_services_acknowledge,
    bad_input_is_a_4xx_naming_the_problem,
    operators_open_list_inspect_abort_and_audit_retirements,
    mork_tasks_scan_and_open_retirements,
    metrics_are_exposed_and_move_with_work,
    activity_cancels_by_key_or_by_a_verified_signature,
    errored_users_read_where_they_failed_and_pages_stay_full,
);

#[tokio::test]
async fn the_api_answers_over_tcp_and_stops_with_the_signal() {
    let api = Api::new(Kind::Sqlite).await;
    api.notified(1, 3).await;
    let (graph, pipeline) = config(&pipeline());
    let state = Arc::new(ApiState::new(
        api.store.clone(),
        Arc::new(pipeline),
        graph,
        api.clock.clone(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(lethe::api::serve(
        listener,
        state,
        axum::Router::new(),
        async {
            let _ = stopped.await;
        },
    ));
    // reqwest is built without a crypto provider of its own (lethe installs ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let users: Value = client
        .get(format!(
            "http://{address}/v1/users?service=joanie&deletion_status=to_delete"
        ))
        .header("x-api-key", "key-joanie")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(users.as_array().unwrap().len(), 2);
    let beat = client
        .get(format!("http://{address}/__lbheartbeat__"))
        .send()
        .await
        .unwrap();
    assert_eq!(beat.status(), 200);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_each_sql_target_that_does_not_answer() {
    let db = TestDb::new(Kind::Sqlite).await;
    let (graph, mut pipeline) = config(&pipeline());
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut reachable = pipeline.targets[0].clone();
    reachable.url = Some(common::mysql_admin_url());
    let mut down = reachable.clone();
    down.name = "forum".into();
    down.url = Some(format!("mysql://root@127.0.0.1:{closed}/forum"));
    pipeline.targets = vec![reachable, down];
    let store = db.store(&graph).await;
    let state = ApiState::new(
        store,
        Arc::new(pipeline.clone()),
        graph,
        Arc::new(ManualClock::new(common::t0())),
    )
    .with_targets(&pipeline.targets);
    let app = router(Arc::new(state));
    let response = app
        .oneshot(
            Request::builder()
                .uri("/readyz")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body,
        json!({"status": "not ready", "store": "ok", "targets": {"edx": "ok", "forum": "unreachable"}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_streams_page_after_page_without_a_gap_or_a_repeat() {
    for kind in [Kind::Sqlite, Kind::Postgres] {
        let api = Api::new(kind).await;
        // 2,500 events, three pages of the stream; many share one timestamp.
        for chunk in [(1, 1001), (1001, 2001), (2001, 2501)] {
            api.store
                .enqueue(
                    "PENDING",
                    &subjects(chunk.0, chunk.1),
                    "test",
                    api.clock.now(),
                )
                .await
                .unwrap();
            api.clock.advance(chrono::Duration::seconds(1));
        }
        let (status, all) = api.get("/v1/audit", "key-dpo").await;
        assert_eq!(status, 200);
        let ids: Vec<i64> = all
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids.len(), 2500, "{kind:?}");
        let unique: HashSet<i64> = ids.iter().copied().collect();
        assert_eq!(unique.len(), 2500, "no event twice");
        let (_, some) = api.get("/v1/audit?limit=1500", "key-dpo").await;
        let first: Vec<i64> = some
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect();
        assert_eq!(first, ids[..1500], "the limit cuts the same order");
        let request = Request::builder()
            .uri("/v1/audit")
            .header("x-api-key", "key-dpo")
            .header("accept", "text/csv")
            .body(Body::empty())
            .unwrap();
        let response = api.app.clone().oneshot(request).await.unwrap();
        let csv = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .unwrap();
        let lines = String::from_utf8(csv.to_vec()).unwrap();
        assert_eq!(lines.lines().count(), 2501, "a header and a line per event");
        let (status, body) = api.get("/v1/audit?limit=1000001", "key-dpo").await;
        assert_eq!(status, 422, "{body}");
    }
}
