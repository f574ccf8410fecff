//! What `check --connect` asks of the HTTP services: a cheap, authenticated request to
//! each (Sarbacane's lists, an http stage's token and probe, a webhook URL answering).

use super::{HttpHandler, SarbacaneHandler};
use crate::config::{HttpLimits, Pipeline, StageSettings};
use crate::http::{Call, Client};

/// One service tried: what it is, and what it answered or why it could not be reached.
#[derive(Debug)]
pub struct Reached {
    /// `stage RETIRING_SARBACANE (sarbacane)`, `service joanie`…
    pub what: String,
    /// What was reached, or why not.
    pub result: Result<String, String>,
}

/// Tries every HTTP service of `pipeline`, one after the other.
pub async fn reach_services(pipeline: &Pipeline) -> Vec<Reached> {
    let mut reached = Vec::new();
    for stage in &pipeline.stages {
        let what = format!("stage {} ({})", stage.state, stage.kind);
        let result = match &stage.settings {
            StageSettings::Sarbacane(settings) => match SarbacaneHandler::new(settings.clone()) {
                Ok(handler) => handler.lists().await.map(|lists| {
                    format!(
                        "{} lists and {} blacklists readable",
                        lists.lists.len(),
                        lists.blacklists.len()
                    )
                }),
                Err(e) => Err(e.to_string()),
            },
            StageSettings::Http(settings) => match HttpHandler::new((**settings).clone()) {
                Ok(handler) => handler.reach().await,
                Err(e) => Err(e.to_string()),
            },
            _ => continue,
        };
        reached.push(Reached { what, result });
    }
    for service in &pipeline.services {
        let Some(url) = &service.webhook_url else {
            continue;
        };
        let result = match (
            Client::new(&service.name, HttpLimits::default(), Vec::new()),
            url::Url::parse(url),
        ) {
            (Ok(client), Ok(url)) => client
                .send(&Call::new(reqwest::Method::GET, url))
                .await
                .map(|reply| format!("the webhook URL answers (HTTP {} to a GET)", reply.status))
                .map_err(|e| e.what),
            (Err(e), _) => Err(e.to_string()),
            (_, Err(e)) => Err(format!("webhook_url: {e}")),
        };
        reached.push(Reached {
            what: format!("service {}", service.name),
            result,
        });
    }
    reached
}
