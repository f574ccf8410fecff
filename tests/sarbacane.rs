//! The sarbacane stage against a wiremock Sarbacane: pages of lists, hard addresses,
//! not-found in its three forms, retries, timeouts and the request count per batch.

mod common;

use common::claimed;
use lethe::config::{HandlerKind, SarbacaneSettings, Secret, StageSettings};
use lethe::domain::Outcome;
use lethe::stages::{Handler, SarbacaneHandler};
use lethe::store::Claimed;
use serde_json::json;
use std::time::{Duration, Instant};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn settings(server: &MockServer, extra: &str) -> SarbacaneSettings {
    let text = format!(
        "url = \"{}/v1\"\nretry_delay = \"1ms\"\npage_size = 2\n{extra}",
        server.uri()
    );
    let StageSettings::Sarbacane(mut s) =
        StageSettings::parse(HandlerKind::Sarbacane, toml::from_str(&text).unwrap()).unwrap()
    else {
        panic!("sarbacane settings expected")
    };
    s.account_id = Some(Secret::new("acc-1"));
    s.api_key = Some(Secret::new("key-1"));
    s
}

/// Lists `l1..l3` over two pages and blacklists `b1`, `b2`; every call checks the auth.
async fn mount_lists(server: &MockServer) {
    let pages = [
        (
            "/v1/lists",
            "0",
            json!([{"id": "l1", "name": "A"}, {"id": "l2"}]),
        ),
        ("/v1/lists", "2", json!([{"id": "l3"}])),
        ("/v1/blacklists", "0", json!([{"id": "b1"}, {"id": "b2"}])),
        ("/v1/blacklists", "2", json!([])),
    ];
    for (at, offset, body) in pages {
        Mock::given(method("GET"))
            .and(path(at))
            .and(header("accountid", "acc-1"))
            .and(header("apikey", "key-1"))
            .and(query_param("offset", offset))
            .and(query_param("limit", "2"))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(server)
            .await;
    }
}

fn deletes(requests: &[Request]) -> Vec<(String, String)> {
    requests
        .iter()
        .filter(|r| r.method.as_str() == "DELETE")
        .map(|r| {
            let email = r
                .url
                .query_pairs()
                .find(|(k, _)| k == "email")
                .map(|(_, v)| v.to_string())
                .unwrap_or_default();
            (r.url.path().to_string(), email)
        })
        .collect()
}

#[tokio::test]
async fn removes_hard_addresses_everywhere_fetching_the_lists_once_per_batch() {
    let server = MockServer::start().await;
    mount_lists(&server).await;
    // l2 never had the contact (Sarbacane's 500), b2's complaints answer 404.
    Mock::given(method("DELETE"))
        .and(path("/v1/lists/l2/contacts"))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_json(json!({"message": "No contacts versions to delete"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/v1/blacklists/b2/complaints"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(header("apikey", "key-1"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let handler = SarbacaneHandler::new(settings(&server, "")).unwrap();
    let hard = ["a+b@x.org", "o'neil&co@x.org", "é=1 ?@x.org"];
    let batch: Vec<Claimed> = hard
        .iter()
        .enumerate()
        .map(|(i, e)| claimed(i as i64 + 1, Some(e)))
        .chain([claimed(9, None)])
        .collect();
    let results = handler.handle(&batch).await.unwrap();
    assert_eq!(results.len(), 4);
    for id in 1..=3 {
        let r = &results[&id];
        assert_eq!(r.outcome, Outcome::Done, "{id}: {r:?}");
        assert_eq!(
            r.detail,
            Some(json!({"lists": 2, "blacklists": 2, "lists_checked": 3, "blacklists_checked": 2}))
        );
    }
    assert_eq!(results[&9].outcome, Outcome::Done);
    assert!(
        results[&9].detail.as_ref().unwrap()["skipped"]
            .as_str()
            .unwrap()
            .contains("no email")
    );
    let requests = server.received_requests().await.unwrap();
    let sent = deletes(&requests);
    // L + 2B per user, each address exactly as it is (encoded on the wire, decoded here).
    assert_eq!(sent.len(), 3 * (3 + 2 * 2));
    for email in hard {
        let mine: Vec<&String> = sent
            .iter()
            .filter(|(_, e)| e == email)
            .map(|(p, _)| p)
            .collect();
        assert_eq!(mine.len(), 7, "{email}: {sent:?}");
        assert!(mine.contains(&&"/v1/blacklists/b1/unsubscribers".to_string()));
        assert!(mine.contains(&&"/v1/blacklists/b2/complaints".to_string()));
    }
    let gets = requests
        .iter()
        .filter(|r| r.method.as_str() == "GET")
        .count();
    assert_eq!(gets, 4, "two pages of lists and of blacklists");
    // A second batch within the TTL reads no list again.
    let again = handler
        .handle(&[claimed(10, Some("z@x.org"))])
        .await
        .unwrap();
    assert_eq!(again[&10].outcome, Outcome::Done);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.method.as_str() == "GET")
            .count(),
        4
    );
    assert_eq!(handler.requests_sent(), 4 + 4 * 7);
}

#[tokio::test]
async fn a_429_waits_for_retry_after_then_succeeds() {
    let server = MockServer::start().await;
    mount_lists(&server).await;
    Mock::given(method("DELETE"))
        .and(path("/v1/lists/l1/contacts"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let handler = SarbacaneHandler::new(settings(&server, "")).unwrap();
    let started = Instant::now();
    let results = handler
        .handle(&[claimed(1, Some("a@x.org"))])
        .await
        .unwrap();
    assert_eq!(results[&1].outcome, Outcome::Done, "{:?}", results[&1]);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    let sent = deletes(&server.received_requests().await.unwrap());
    assert_eq!(sent.len(), 8, "the 429 was sent again once");
}

#[tokio::test]
async fn server_errors_retry_other_4xx_fail_and_no_address_is_shown() {
    let server = MockServer::start().await;
    mount_lists(&server).await;
    Mock::given(method("DELETE"))
        .and(query_param("email", "busy@x.org"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"message": "oops"})))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(query_param("email", "bad@x.org"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"message": "invalid contact bad@x.org"})),
        )
        .mount(&server)
        .await;
    let handler = SarbacaneHandler::new(settings(&server, "retries = 1")).unwrap();
    let results = handler
        .handle(&[
            claimed(1, Some("busy@x.org")),
            claimed(2, Some("bad@x.org")),
        ])
        .await
        .unwrap();
    let Outcome::Retry { error } = &results[&1].outcome else {
        panic!("retry expected: {:?}", results[&1]);
    };
    assert_eq!(
        error,
        "sarbacane DELETE /lists/{id}/contacts: HTTP 500: oops"
    );
    let Outcome::Fail { error } = &results[&2].outcome else {
        panic!("fail expected: {:?}", results[&2]);
    };
    assert_eq!(
        error,
        "sarbacane DELETE /lists/{id}/contacts: HTTP 400: invalid contact <redacted>"
    );
    // A 500 is retried by the driver, not within the call; a 400 is never sent twice.
    let sent = deletes(&server.received_requests().await.unwrap());
    assert_eq!(sent.len(), 2);
}

#[tokio::test]
async fn a_timeout_is_a_retry_and_unreadable_lists_fail_the_batch() {
    let server = MockServer::start().await;
    mount_lists(&server).await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(500)))
        .mount(&server)
        .await;
    let handler = SarbacaneHandler::new(settings(&server, "timeout = \"100ms\"")).unwrap();
    let results = handler
        .handle(&[claimed(1, Some("slow@x.org"))])
        .await
        .unwrap();
    let Outcome::Retry { error } = &results[&1].outcome else {
        panic!("retry expected: {:?}", results[&1]);
    };
    assert!(error.starts_with("sarbacane: no reply within"), "{error}");
    assert!(!error.contains("slow@x.org"), "{error}");

    let broken = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"message": "bad key"})))
        .mount(&broken)
        .await;
    let handler = SarbacaneHandler::new(settings(&broken, "")).unwrap();
    let err = handler
        .handle(&[claimed(1, Some("a@x.org"))])
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "cannot read the lists: HTTP 401: bad key");
}

#[test]
fn missing_credentials_name_their_variable() {
    let mut s = SarbacaneSettings {
        api_key: None,
        ..settings_without_server()
    };
    s.account_id = Some(Secret::new("a"));
    let err = SarbacaneHandler::new(s).err().unwrap();
    assert!(err.to_string().contains("LETHE_SARBACANE_API_KEY"), "{err}");
}

fn settings_without_server() -> SarbacaneSettings {
    let StageSettings::Sarbacane(s) =
        StageSettings::parse(HandlerKind::Sarbacane, toml::Table::new()).unwrap()
    else {
        panic!("sarbacane settings expected")
    };
    s
}
