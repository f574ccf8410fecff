//! The generic http stage against wiremock services: templates and escaping, a lookup
//! that finds or does not find the user, ok and gone statuses, static and OAuth2 auth
//! (token cached, fetched again after a 401), replies that are not what was expected, and
//! the config errors a template can make.

mod common;

use common::claimed;
use lethe::config::{HandlerKind, HttpSettings, Secret, StageSettings};
use lethe::domain::Outcome;
use lethe::stages::{Handler, HttpHandler};
use serde_json::json;
use wiremock::matchers::{body_string_contains, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn parse(text: &str) -> Result<HttpSettings, (String, String)> {
    match StageSettings::parse(HandlerKind::Http, toml::from_str(text).unwrap())? {
        StageSettings::Http(s) => Ok(*s),
        other => panic!("http settings expected, got {other:?}"),
    }
}

fn handler(text: &str, secret: Option<&str>) -> HttpHandler {
    let mut settings = parse(&format!("retry_delay = \"1ms\"\n{text}")).unwrap();
    settings.secret = secret.map(Secret::new);
    HttpHandler::new(settings).unwrap()
}

#[tokio::test]
async fn every_value_is_escaped_for_where_it_stands() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/crm/users/7/forget"))
        .and(header("authorization", "Bearer tok-1"))
        .and(header("x-retirement", "r-1"))
        .respond_with(ResponseTemplate::new(202))
        .mount(&server)
        .await;
    let h = handler(
        &format!(
            r#"name = "crm"
method = "POST"
url = "{}/crm/users/{{{{ subject }}}}/forget?email={{{{ email }}}}&reason={{{{ reason }}}}"
headers = {{ "X-Retirement" = "r-{{{{ retirement_id }}}}" }}
body = '{{"user": "{{{{ username }}}}", "email": "{{{{ email }}}}"}}'
ok = [202]
auth = {{ type = "bearer" }}"#,
            server.uri()
        ),
        Some("tok-1"),
    );
    let hard = "o'neil&co+1@x.org";
    let mut c = claimed(1, Some(hard));
    c.subject = "7".into();
    c.username = Some("jo \"the\" \\ user".into());
    let results = h.handle(&[c]).await.unwrap();
    let r = &results[&1];
    assert_eq!(r.outcome, Outcome::Done, "{r:?}");
    assert_eq!(r.detail, Some(json!({"service": "crm", "status": 202})));
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    let query: Vec<(String, String)> = sent.url.query_pairs().into_owned().collect();
    assert_eq!(
        query,
        vec![
            ("email".to_string(), hard.to_string()),
            ("reason".to_string(), "inactive".to_string())
        ]
    );
    assert!(sent.url.as_str().contains("o%27neil%26co%2B1%40x.org"));
    let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(body, json!({"user": "jo \"the\" \\ user", "email": hard}));
    assert_eq!(
        sent.headers.get("content-type").unwrap(),
        "application/json"
    );
}

fn keycloak(server: &MockServer) -> String {
    format!(
        r#"name = "keycloak"
url = "{0}/admin/realms/main/users/{{{{ lookup.id }}}}"
auth = {{ type = "oauth2", token_url = "{0}/realms/main/protocol/openid-connect/token", client_id = "lethe" }}
[lookup]
url = "{0}/admin/realms/main/users?email={{{{ email }}}}&exact=true"
pointer = "/0/id""#,
        server.uri()
    )
}

async fn mount_token(server: &MockServer, token: &str, times: u64) {
    Mock::given(method("POST"))
        .and(path("/realms/main/protocol/openid-connect/token"))
        .and(body_string_contains("grant_type=client_credentials"))
        .and(body_string_contains("client_id=lethe"))
        .and(body_string_contains("client_secret=s3cret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"access_token": token, "expires_in": 300, "token_type": "Bearer"}),
        ))
        .up_to_n_times(times)
        .mount(server)
        .await;
}

fn hits(requests: &[wiremock::Request], at: &str) -> usize {
    requests.iter().filter(|r| r.url.path() == at).count()
}

#[tokio::test]
async fn a_lookup_finds_the_id_or_says_the_user_is_gone_and_the_token_is_fetched_once() {
    let server = MockServer::start().await;
    mount_token(&server, "t1", 10).await;
    for (email, found) in [("a@x.org", json!([{"id": "kc-a"}])), ("b@x.org", json!([]))] {
        Mock::given(method("GET"))
            .and(path("/admin/realms/main/users"))
            .and(query_param("email", email))
            .and(query_param("exact", "true"))
            .and(header("authorization", "Bearer t1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(found))
            .mount(&server)
            .await;
    }
    Mock::given(method("DELETE"))
        .and(path("/admin/realms/main/users/kc-a"))
        .and(header("authorization", "Bearer t1"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let h = handler(&keycloak(&server), Some("s3cret"));
    let first = h
        .handle(&[claimed(1, Some("a@x.org")), claimed(2, Some("b@x.org"))])
        .await
        .unwrap();
    assert_eq!(
        first[&1].detail,
        Some(json!({"service": "keycloak", "status": 204, "lookup": "found"}))
    );
    assert_eq!(first[&2].outcome, Outcome::Done);
    assert_eq!(
        first[&2].detail.as_ref().unwrap()["lookup"],
        "not found: nothing to delete"
    );
    // A second batch reuses the cached token; a subject without email is skipped.
    let second = h
        .handle(&[claimed(3, Some("a@x.org")), claimed(4, None)])
        .await
        .unwrap();
    assert_eq!(second[&3].outcome, Outcome::Done);
    assert_eq!(second[&4].outcome, Outcome::Done);
    assert!(
        second[&4].detail.as_ref().unwrap()["skipped"]
            .as_str()
            .unwrap()
            .contains("{{ email }}")
    );
    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        hits(&requests, "/realms/main/protocol/openid-connect/token"),
        1
    );
    assert_eq!(hits(&requests, "/admin/realms/main/users/kc-a"), 2);
    assert_eq!(hits(&requests, "/admin/realms/main/users"), 3);
}

#[tokio::test]
async fn a_401_fetches_a_new_token_once_and_sends_again() {
    let server = MockServer::start().await;
    mount_token(&server, "old", 1).await;
    mount_token(&server, "new", 1).await;
    Mock::given(method("GET"))
        .and(path("/admin/realms/main/users"))
        .and(header("authorization", "Bearer old"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": "token expired"})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/admin/realms/main/users"))
        .and(header("authorization", "Bearer new"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([{"id": "kc-1"}])))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/admin/realms/main/users/kc-1"))
        .and(header("authorization", "Bearer new"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let h = handler(&keycloak(&server), Some("s3cret"));
    let results = h.handle(&[claimed(1, Some("a@x.org"))]).await.unwrap();
    assert_eq!(results[&1].outcome, Outcome::Done, "{:?}", results[&1]);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        hits(&requests, "/realms/main/protocol/openid-connect/token"),
        2
    );
    // A service that refuses every token: retried on the driver's schedule, not failed.
    let refusing = MockServer::start().await;
    mount_token(&refusing, "t", 10).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&refusing)
        .await;
    let h = handler(&keycloak(&refusing), Some("s3cret"));
    let results = h.handle(&[claimed(1, Some("a@x.org"))]).await.unwrap();
    let Outcome::Retry { error } = &results[&1].outcome else {
        panic!("retry expected: {:?}", results[&1]);
    };
    assert!(error.starts_with("keycloak lookup: HTTP 401"), "{error}");
    let requests = refusing.received_requests().await.unwrap();
    assert_eq!(hits(&requests, "/admin/realms/main/users"), 2);
}

#[tokio::test]
async fn ok_gone_and_refused_statuses_and_replies_that_are_not_json() {
    let server = MockServer::start().await;
    let reply =
        |status: u16, body: serde_json::Value| ResponseTemplate::new(status).set_body_json(body);
    for (subject, response) in [
        ("1", reply(404, json!({}))),
        ("2", reply(200, json!({}))),
        (
            "3",
            reply(400, json!({"message": "cannot delete a@x.org: locked"})),
        ),
        ("4", reply(500, json!({"message": "boom"}))),
    ] {
        Mock::given(method("DELETE"))
            .and(path(format!("/users/{subject}")))
            .respond_with(response)
            .mount(&server)
            .await;
    }
    let h = handler(
        &format!(
            "name = \"svc\"\nretries = 0\nurl = \"{}/users/{{{{ subject }}}}\"\nok = [204]\nauth = {{ type = \"header\", header = \"Authorization\", prefix = \"ApiKey \" }}",
            server.uri()
        ),
        Some("k"),
    );
    let batch: Vec<_> = (1..=4).map(|i| claimed(i, Some("a@x.org"))).collect();
    let results = h.handle(&batch).await.unwrap();
    assert_eq!(
        results[&1].detail,
        Some(json!({"service": "svc", "status": 404, "gone": true}))
    );
    let fail = |id: i64| match &results[&id].outcome {
        Outcome::Fail { error } => error.clone(),
        other => panic!("{id}: fail expected, got {other:?}"),
    };
    // 200 is not in `ok = [204]`: the service did something else.
    assert_eq!(fail(2), "svc DELETE /users/{{ subject }}: HTTP 200");
    assert_eq!(
        fail(3),
        "svc DELETE /users/{{ subject }}: HTTP 400: cannot delete <redacted>: locked"
    );
    assert!(
        matches!(&results[&4].outcome, Outcome::Retry { error } if error.ends_with("HTTP 500: boom"))
    );
    let requests = server.received_requests().await.unwrap();
    assert!(
        requests
            .iter()
            .all(|r| r.headers.get("authorization").unwrap() == "ApiKey k")
    );

    let html = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>sign in</html>"))
        .mount(&html)
        .await;
    let h = handler(
        &format!(
            "name = \"workos\"\nurl = \"{0}/user_management/users/{{{{ lookup.id }}}}\"\nauth = {{ type = \"bearer\" }}\n[lookup]\nurl = \"{0}/user_management/users?email={{{{ email }}}}\"\npointer = \"/data/0/id\"",
            html.uri()
        ),
        Some("sk"),
    );
    let results = h.handle(&[claimed(1, Some("a@x.org"))]).await.unwrap();
    assert_eq!(
        results[&1].outcome,
        Outcome::Fail {
            error: "workos lookup: HTTP 200 with a body that is not JSON; check lookup.url".into()
        }
    );
}

#[tokio::test]
async fn a_lookup_that_cannot_say_who_fails_instead_of_calling_the_user_gone() {
    let server = MockServer::start().await;
    for (email, reply) in [
        ("wrapped@x.org", json!({"error": "bad request"})),
        ("two@x.org", json!({"data": [{"id": "u1"}, {"id": "u2"}]})),
        ("dots@x.org", json!({"data": [{"id": ".."}]})),
        ("none@x.org", json!({"data": []})),
    ] {
        Mock::given(method("GET"))
            .and(path("/user_management/users"))
            .and(query_param("email", email))
            .respond_with(ResponseTemplate::new(200).set_body_json(reply))
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/user_management/users"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let h = handler(
        &format!(
            "name = \"workos\"\nurl = \"{0}/user_management/users/{{{{ lookup.id }}}}\"\n[lookup]\nurl = \"{0}/user_management/users?email={{{{ email }}}}\"\npointer = \"/data/0/id\"",
            server.uri()
        ),
        None,
    );
    let batch = [
        claimed(1, Some("wrapped@x.org")),
        claimed(2, Some("two@x.org")),
        claimed(3, Some("dots@x.org")),
        claimed(4, Some("none@x.org")),
        claimed(5, Some("other@x.org")),
    ];
    let results = h.handle(&batch).await.unwrap();
    let error = |id: i64| match &results[&id].outcome {
        Outcome::Fail { error } => error.clone(),
        other => panic!("{id}: fail expected, got {other:?}"),
    };
    assert_eq!(
        error(1),
        "workos lookup: the reply has nothing at /data/0/id; check lookup.pointer"
    );
    assert!(error(2).contains("2 users match, not one"), "{}", error(2));
    assert!(
        error(3).contains("would change the URL's path"),
        "{}",
        error(3)
    );
    assert_eq!(results[&4].outcome, Outcome::Done);
    // A 404 from the lookup is a wrong URL until `lookup.gone` says otherwise.
    assert!(
        error(5).starts_with("workos lookup: HTTP 404"),
        "{}",
        error(5)
    );
    let deletes = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "DELETE")
        .count();
    assert_eq!(deletes, 0);
}

#[test]
fn template_mistakes_are_config_errors_naming_the_key_and_value() {
    let err = |text: &str| parse(text).unwrap_err();
    let (key, problem) = err("name = \"kc\"\nurl = \"https://x.org/{{ emial }}\"");
    assert_eq!(key, "url");
    assert!(
        problem.contains("\"https://x.org/{{ emial }}\""),
        "{problem}"
    );
    assert!(
        problem.contains("unknown variable {{ emial }}"),
        "{problem}"
    );
    let (key, problem) = err("name = \"kc\"\nurl = \"{{ email }}/x\"");
    assert_eq!(key, "url");
    assert!(problem.contains("not a URL"), "{problem}");
    let (key, problem) = err("name = \"kc\"\nurl = \"https://x.org/{{ lookup.id }}\"");
    assert_eq!(key, "url");
    assert!(problem.contains("no [stage.lookup]"), "{problem}");
    let (key, problem) = err(
        "name = \"kc\"\nurl = \"https://x.org/{{ lookup.id }}\"\n[lookup]\nurl = \"https://x.org/?e={{ email }}\"\npointer = \"0/id\"",
    );
    assert_eq!(key, "lookup.pointer");
    assert!(
        problem.contains("\"0/id\" is not a JSON pointer"),
        "{problem}"
    );
    let (key, problem) =
        err("name = \"es\"\nurl = \"https://x.org/\"\nbody = '{\"id\": {{ email }}}'");
    assert_eq!(key, "body");
    assert!(problem.contains("not JSON"), "{problem}");
    let (key, _) = err("name = \"es\"\nmethod = \"BREW\"\nurl = \"https://x.org/\"");
    assert_eq!(key, "method");
    let (key, problem) =
        err("name = \"es\"\nurl = \"https://x.org/\"\nauth = { type = \"magic\" }");
    assert_eq!(key, "auth", "{problem}");
    let settings = parse("name = \"key_cloak\"\nurl = \"https://x.org/\"\nauth = { type = \"oauth2\", token_url = \"https://x.org/t\", client_id = \"c\" }").unwrap();
    assert_eq!(
        settings.secret_var().as_deref(),
        Some("LETHE_HTTP_KEY_CLOAK_CLIENT_SECRET")
    );
}

/// The commented `[[stage]]` examples of the shipped pipeline.toml, uncommented, by name.
fn shipped_examples() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(common::repo_root().join("pipeline.toml")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line) {
            (None, "# [[stage]]") => current = Some("[[stage]]\n".into()),
            (Some(block), line) if line.starts_with("# ") => {
                block.push_str(&line[2..]);
                block.push('\n');
            }
            (Some(_), _) => blocks.push(current.take().unwrap()),
            _ => {}
        }
    }
    blocks
        .into_iter()
        .map(|block| {
            let doc: toml::Table = toml::from_str(&block).unwrap();
            let mut stage = doc["stage"].as_array().unwrap()[0]
                .as_table()
                .unwrap()
                .clone();
            assert_eq!(stage.remove("handler").unwrap().as_str(), Some("http"));
            stage.remove("state");
            let name = stage["name"].as_str().unwrap().to_string();
            (name, toml::to_string(&stage).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn the_shipped_examples_parse_and_the_keycloak_one_works() {
    let examples = shipped_examples();
    let names: Vec<&str> = examples.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["keycloak", "workos", "search"]);
    for (name, text) in &examples {
        parse(text).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
    let server = MockServer::start().await;
    mount_token_at(&server, "/realms/main/protocol/openid-connect/token").await;
    Mock::given(method("GET"))
        .and(path("/admin/realms/main/users"))
        .and(query_param("email", "a+b@x.org"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([{"id": "u-1"}])))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/admin/realms/main/users/u-1"))
        .and(header("authorization", "Bearer t1"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/admin/realms/main/users/count"))
        .and(header("authorization", "Bearer t1"))
        .respond_with(ResponseTemplate::new(200).set_body_string("3"))
        .mount(&server)
        .await;
    let keycloak = examples[0]
        .1
        .replace("https://sso.example.org", &server.uri());
    let h = handler(&keycloak, Some("s3cret"));
    let results = h.handle(&[claimed(1, Some("a+b@x.org"))]).await.unwrap();
    assert_eq!(
        results[&1].detail,
        Some(json!({"service": "keycloak", "status": 204, "lookup": "found"}))
    );
    assert_eq!(
        h.reach().await.unwrap(),
        "token fetched; probe answered HTTP 200"
    );
    let down = handler(
        &examples[0]
            .1
            .replace("https://sso.example.org", "http://127.0.0.1:9"),
        Some("s3cret"),
    );
    let why = down.reach().await.unwrap_err();
    assert!(why.contains("cannot fetch a token"), "{why}");
}

async fn mount_token_at(server: &MockServer, at: &str) {
    Mock::given(method("POST"))
        .and(path(at))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "t1", "expires_in": 60})),
        )
        .mount(server)
        .await;
}
