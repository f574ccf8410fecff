//! pipeline.toml: stages, policy, driver tuning and the store URL.

use super::stage::{HandlerKind, SqlDeleteSettings, StageSettings};
use super::target::{Target, TargetSection, parse_targets};
use super::{ConfigError, HumanDuration, invalid, parse_toml};
use crate::db::Backend;
use crate::domain::{RetrySchedule, StateGraph};
use serde::Deserialize;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    #[serde(default)]
    store: StoreSection,
    #[serde(default)]
    policy: PolicySection,
    #[serde(default)]
    driver: DriverSection,
    #[serde(default)]
    stage: Vec<toml::Table>,
    #[serde(default)]
    target: Vec<TargetSection>,
    source: Option<super::source::Source>,
    email: Option<super::email::Email>,
    #[serde(default)]
    service: Vec<super::Service>,
    api: Option<super::api::ApiSection>,
    #[serde(default)]
    api_key: Vec<super::api::ApiKeySection>,
    #[serde(default)]
    rule: Vec<super::rule::RuleSection>,
    #[serde(default)]
    notice: std::collections::BTreeMap<String, super::notice::NoticeSection>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StoreSection {
    url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PolicySection {
    inactive_after: HumanDuration,
    grace_period: HumanDuration,
    max_attempts: u32,
    retry_base: HumanDuration,
    retry_cap: HumanDuration,
    paused: bool,
}

impl Default for PolicySection {
    fn default() -> Self {
        Self {
            inactive_after: HumanDuration(Duration::from_secs(1825 * 86_400)),
            grace_period: HumanDuration(Duration::from_secs(30 * 86_400)),
            max_attempts: 8,
            retry_base: HumanDuration(Duration::from_secs(60)),
            retry_cap: HumanDuration(Duration::from_secs(6 * 3600)),
            paused: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DriverSection {
    batch_size: usize,
    concurrency: usize,
    lease: HumanDuration,
    poll_interval: HumanDuration,
    shutdown_grace: HumanDuration,
    max_lost_leases: Option<u32>,
}

impl Default for DriverSection {
    fn default() -> Self {
        Self {
            batch_size: 500,
            concurrency: 4,
            lease: HumanDuration(Duration::from_secs(300)),
            poll_interval: HumanDuration(Duration::from_secs(5)),
            shutdown_grace: HumanDuration(Duration::from_secs(20)),
            max_lost_leases: None,
        }
    }
}

/// Retention and retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// How long without a login before a subject is a candidate.
    pub inactive_after: Duration,
    /// Time between the warning and the first deletion.
    pub grace_period: Duration,
    /// Attempts per stage before a retirement is parked in the errored state.
    pub max_attempts: u32,
    /// Backoff between retries.
    pub retry: RetrySchedule,
    /// When true, the driver claims nothing (invariant 6).
    pub paused: bool,
}

/// How the driver batches and leases work.
#[derive(Debug, Clone, PartialEq)]
pub struct DriverTuning {
    /// Retirements claimed per batch.
    pub batch_size: usize,
    /// Batches in flight at once.
    pub concurrency: usize,
    /// Lease length; renewed while a handler runs.
    pub lease: Duration,
    /// How often to look for due work when no wake-up arrives.
    pub poll_interval: Duration,
    /// How long running handlers may finish after a shutdown signal before their batch is
    /// released (keep it under the service manager's kill timeout).
    pub shutdown_grace: Duration,
    /// The crash guard: claims in one state that never came back (the worker crashed or
    /// lost its lease) before the retirement is parked; handler failures count toward
    /// `policy.max_attempts` instead. Default 3 × `policy.max_attempts`.
    pub max_lost_leases: u32,
}

/// One stage: the state it serves and its handler.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// The working state this stage advances.
    pub state: String,
    /// The handler kind.
    pub kind: HandlerKind,
    /// The handler's validated settings.
    pub settings: StageSettings,
}

/// The validated pipeline.toml.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// Store URL from the file, if any (CLI and `LETHE_STORE_URL` take precedence).
    pub store_url: Option<String>,
    /// Policy.
    pub policy: Policy,
    /// Driver tuning.
    pub driver: DriverTuning,
    /// One stage per working state, in pipeline order.
    pub stages: Vec<Stage>,
    /// Relational targets.
    pub targets: Vec<Target>,
    /// The source of truth to scan, if configured.
    pub source: Option<super::source::Source>,
    /// The SMTP server and templates, if configured.
    pub email: Option<super::email::Email>,
    /// Downstream services that acknowledge deletions.
    pub services: Vec<super::Service>,
    /// The REST API: where it listens, its keys.
    pub api: super::Api,
    /// The selection rules, in order (the first to select a subject opens its retirement).
    pub rules: Vec<super::Rule>,
    /// Whether `rules` is the one rule built from `[source]` (no `[[rule]]` written).
    pub implicit_rule: bool,
    /// The notice policy of each reason.
    pub notices: super::Notices,
}

impl Stage {
    /// The name a deleting stage of lethe's own is listed under among a user's services
    /// (as Mork lists `edx` and `sarbacane`): a sql_delete stage's target, `sarbacane`, an
    /// http stage's name. Notify lists the services themselves.
    pub fn listed_as(&self) -> Option<&str> {
        match &self.settings {
            StageSettings::SqlDelete(SqlDeleteSettings { target }) => Some(target),
            StageSettings::Sarbacane(_) => Some("sarbacane"),
            StageSettings::Http(h) => Some(&h.name),
            _ => None,
        }
    }
}

impl Pipeline {
    /// The stage for `state`.
    pub fn stage(&self, state: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.state == state)
    }

    /// Applies the environment (`LETHE_SOURCE_URL`, `LETHE_TARGET_<NAME>_URL`,
    /// `LETHE_SMTP_*`, the stages' secrets) over the files: one explicit step, so a config parsed for a test or
    /// the demo never picks up what happens to be set in the shell.
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let source_url = env(super::SOURCE_URL_ENV);
        if let Some(url) = &source_url {
            super::check_database_url(super::ENVIRONMENT, super::SOURCE_URL_ENV, url)?;
        }
        if let (Some(source), Some(url)) = (&mut self.source, &source_url) {
            source.url = Some(url.clone());
        }
        for target in &mut self.targets {
            let var = target.url_env();
            if let Some(url) = env(&var) {
                super::check_database_url(super::ENVIRONMENT, &var, &url)?;
                target.url = Some(url);
            }
            if let (Some(exclusions), Some(url)) = (&mut target.exclusions, &source_url) {
                exclusions.url = Some(url.clone());
            }
        }
        if let Some(email) = &mut self.email {
            email.apply_env(env)?;
        }
        for stage in &mut self.stages {
            match &mut stage.settings {
                super::StageSettings::Sarbacane(settings) => settings.apply_env(env),
                super::StageSettings::Http(settings) => settings.apply_env(env),
                _ => {}
            }
        }
        for service in &mut self.services {
            service.apply_env(env);
        }
        self.api.apply_env(env);
        Ok(())
    }

    /// The templates the stages send (email templates, grace reminders, the notice
    /// policies' templates), sorted, once each.
    pub fn templates_used(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .stages
            .iter()
            .filter_map(|s| match &s.settings {
                super::StageSettings::Email(e) => Some(e.template.clone()),
                super::StageSettings::Grace(g) if !g.reminders.is_empty() => {
                    Some(g.reminder_template.clone())
                }
                _ => None,
            })
            .chain(self.notices.templates(&self.stages))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The rule called `name`.
    pub fn rule(&self, name: &str) -> Option<&super::Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// The working states before the first stage that deletes anything: the notice phase,
    /// where reported activity still cancels a retirement.
    pub fn notice_states(&self) -> Vec<String> {
        self.stages
            .iter()
            .take_while(|s| !s.kind.deletes())
            .map(|s| s.state.clone())
            .collect()
    }
}

fn check_range<T: PartialOrd + std::fmt::Display>(
    file: &str,
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(
            file,
            key,
            None,
            format!("{value} is out of range (allowed: {min} to {max})"),
        ));
    }
    Ok(())
}

fn check_min_duration(
    file: &str,
    key: &str,
    value: HumanDuration,
    min: Duration,
) -> Result<(), ConfigError> {
    if value.0 < min {
        return Err(invalid(
            file,
            key,
            Some(&value.to_string()),
            format!("must be at least {}", HumanDuration(min)),
        ));
    }
    Ok(())
}

/// Parses pipeline.toml and checks it against the states.
pub(super) fn parse(
    file: &str,
    text: &str,
    graph: &StateGraph,
    states_file: &str,
) -> Result<Pipeline, ConfigError> {
    let parsed: PipelineFile = parse_toml(file, text)?;
    if let Some(url) = &parsed.store.url {
        Backend::from_url(url).map_err(|problem| invalid(file, "store.url", Some(url), problem))?;
    }
    let p = &parsed.policy;
    check_range(file, "policy.max_attempts", p.max_attempts, 1, 1000)?;
    check_min_duration(
        file,
        "policy.inactive_after",
        p.inactive_after,
        Duration::from_secs(86_400),
    )?;
    check_min_duration(
        file,
        "policy.grace_period",
        p.grace_period,
        Duration::from_secs(1),
    )?;
    check_min_duration(
        file,
        "policy.retry_base",
        p.retry_base,
        Duration::from_millis(1),
    )?;
    if p.retry_cap < p.retry_base {
        return Err(invalid(
            file,
            "policy.retry_cap",
            Some(&p.retry_cap.to_string()),
            format!("must be at least policy.retry_base ({})", p.retry_base),
        ));
    }
    let d = &parsed.driver;
    check_range(file, "driver.batch_size", d.batch_size, 1, 10_000)?;
    check_range(file, "driver.concurrency", d.concurrency, 1, 64)?;
    check_min_duration(file, "driver.lease", d.lease, Duration::from_secs(1))?;
    check_min_duration(
        file,
        "driver.poll_interval",
        d.poll_interval,
        Duration::from_millis(10),
    )?;
    check_min_duration(
        file,
        "driver.shutdown_grace",
        d.shutdown_grace,
        Duration::from_millis(100),
    )?;
    let max_lost_leases = d.max_lost_leases.unwrap_or(3 * p.max_attempts);
    check_range(file, "driver.max_lost_leases", max_lost_leases, 1, 10_000)?;

    let targets = parse_targets(file, parsed.target)?;
    let stages = super::stage_list::parse_stages(file, parsed.stage, graph, states_file)?;
    for stage in &stages {
        if let StageSettings::SqlDelete(SqlDeleteSettings { target }) = &stage.settings
            && !targets.iter().any(|t| &t.name == target)
        {
            return Err(invalid(
                file,
                format!("stage for {}.target", stage.state),
                Some(target),
                format!(
                    "no [[target]] has this name (declared: {})",
                    targets
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    super::service::check_services(file, &parsed.service)?;
    // A downstream service and one of lethe's own deleting stages are listed side by side
    // in the API's service statuses: one name for both would let a service key read
    // every user as if it were lethe's own stage.
    for (i, service) in parsed.service.iter().enumerate() {
        let own = stages.iter().find_map(|stage| {
            stage
                .listed_as()
                .filter(|name| name.eq_ignore_ascii_case(&service.name))
                .map(|name| (stage.state.clone(), name.to_string()))
        });
        if let Some((state, name)) = own {
            return Err(invalid(
                file,
                format!("service[{}].name", i + 1),
                Some(&service.name),
                format!(
                    "the stage for {state} is listed as {name} already: a [[service]] needs a name of its own"
                ),
            ));
        }
    }
    let service_names: Vec<String> = parsed.service.iter().map(|s| s.name.clone()).collect();
    let api = super::api::parse_api(file, parsed.api, parsed.api_key, &service_names)?;
    // Two http stages answering to one name would share secrets and read as one in events.
    let http_names: Vec<(&str, &str)> = stages
        .iter()
        .filter_map(|stage| match &stage.settings {
            StageSettings::Http(h) => Some((stage.state.as_str(), h.name.as_str())),
            _ => None,
        })
        .collect();
    for (i, (state, name)) in http_names.iter().enumerate() {
        if let Some((first, _)) = http_names[..i]
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
        {
            return Err(invalid(
                file,
                format!("stage for {state}.name"),
                Some(name),
                format!(
                    "the http stage for {first} has this name already: names are unique, in any case"
                ),
            ));
        }
    }
    for stage in &stages {
        if let StageSettings::Notify(n) = &stage.settings
            && let Some(missing) = n
                .services
                .iter()
                .find(|name| !parsed.service.iter().any(|s| &s.name == *name))
        {
            return Err(invalid(
                file,
                format!("stage for {}.services", stage.state),
                Some(missing),
                format!(
                    "no [[service]] has this name (declared: {})",
                    parsed
                        .service
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    let mut source = parsed.source.map(|s| s.validate(file)).transpose()?;
    // A target's placeholder account is never selected nor enqueued.
    if let Some(source) = &mut source {
        for placeholder in targets.iter().filter_map(|t| t.rules.reassign_to) {
            if !source.allow_ids.contains(&placeholder) {
                source.allow_ids.push(placeholder);
            }
        }
    }
    let mut targets = targets;
    for target in &mut targets {
        target.exclusions = source
            .as_ref()
            .filter(|s| s.table == target.rules.root_table)
            .cloned();
    }
    let email = parsed.email.map(|e| e.validate(file)).transpose()?;
    super::stage_list::check_notice_stages(file, &stages, source.is_some(), email.is_some())?;
    let (rules, implicit_rule) =
        super::rule::parse_rules(file, parsed.rule, source.as_ref(), p.inactive_after.0)?;
    let rule_reasons: Vec<(String, crate::domain::Reason)> = rules
        .iter()
        .enumerate()
        .filter(|_| !implicit_rule)
        .map(|(i, r)| (format!("rule[{}]", i + 1), r.reason.clone()))
        .collect();
    let notices = super::notice::parse_notices(
        file,
        parsed.notice,
        &stages,
        p.grace_period.0,
        &rule_reasons,
        email.is_some(),
    )?;
    Ok(Pipeline {
        api,
        store_url: parsed.store.url,
        policy: Policy {
            inactive_after: p.inactive_after.0,
            grace_period: p.grace_period.0,
            max_attempts: p.max_attempts,
            retry: RetrySchedule {
                base: p.retry_base.0,
                cap: p.retry_cap.0,
            },
            paused: p.paused,
        },
        driver: DriverTuning {
            batch_size: d.batch_size,
            concurrency: d.concurrency,
            lease: d.lease.0,
            poll_interval: d.poll_interval.0,
            shutdown_grace: d.shutdown_grace.0,
            max_lost_leases,
        },
        stages,
        targets,
        source,
        email,
        services: parsed.service,
        rules,
        implicit_rule,
        notices,
    })
}
