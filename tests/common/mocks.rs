//! wiremock stand-ins for the HTTP services the shipped pipeline talks to.
#![allow(dead_code)]

use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Sarbacane with one list and one blacklist readable with `api_key`, and every DELETE
/// answered 200 (mount failures with a higher priority in front of it).
pub async fn sarbacane(api_key: &str) -> MockServer {
    let server = MockServer::start().await;
    for (at, id) in [("/v1/lists", "l1"), ("/v1/blacklists", "b1")] {
        Mock::given(method("GET"))
            .and(path(at))
            .and(header("apikey", api_key))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([{"id": id}])))
            .mount(&server)
            .await;
    }
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

/// A downstream service receiving lethe's webhooks on `POST /hook` with 204.
pub async fn webhook_receiver() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    server
}
