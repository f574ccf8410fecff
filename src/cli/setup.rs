//! `migrate` and `check`: the store's schema, and whether the configuration works.

use super::ctx::{Ctx, connect_source};
use super::failure::{Failure, Outcome};
use super::output::out;
use super::plan::print_plan_summary;
use crate::pii::HashKey;
use crate::store::{self, redact_url};

pub(crate) async fn migrate(ctx: &Ctx) -> Outcome {
    let config = ctx.config()?;
    ctx.store_migrating(&config, 2).await?;
    out!(
        "store {} is migrated; {} states synced from {}",
        redact_url(&ctx.store_url(Some(&config))?),
        config.graph.states().len(),
        config.states_path.display()
    );
    Ok(())
}

pub(crate) async fn check(ctx: &Ctx, connect: bool) -> Outcome {
    let config = ctx.config()?;
    let p = &config.pipeline;
    out!(
        "{}: {} states",
        config.states_path.display(),
        config.graph.states().len()
    );
    out!(
        "{}: {} stages",
        config.pipeline_path.display(),
        p.stages.len()
    );
    for stage in &p.stages {
        out!("  {:<20} -> {:<10} ok", stage.state, stage.kind.to_string());
    }
    out!(
        "policy: inactive_after={} grace_period={} max_attempts={} retry={}..{}{}",
        crate::config::HumanDuration(p.policy.inactive_after),
        crate::config::HumanDuration(p.policy.grace_period),
        p.policy.max_attempts,
        crate::config::HumanDuration(p.policy.retry.base),
        crate::config::HumanDuration(p.policy.retry.cap),
        if p.policy.paused { " PAUSED" } else { "" }
    );
    out!(
        "driver: batch_size={} concurrency={} lease={} poll_interval={}",
        p.driver.batch_size,
        p.driver.concurrency,
        crate::config::HumanDuration(p.driver.lease),
        crate::config::HumanDuration(p.driver.poll_interval)
    );
    for rule in &p.rules {
        let predicate = rule
            .predicate
            .as_deref()
            .map(|w| format!(" where {w:?}"))
            .unwrap_or_default();
        out!(
            "rule {}: select {} after {}{predicate} -> reason {}, every {}, at most {} or {:.2}% per scan{}",
            rule.name,
            rule.select,
            crate::config::HumanDuration(rule.after),
            rule.reason,
            crate::config::HumanDuration(rule.interval),
            rule.max_new_per_scan,
            100.0 * rule.max_new_share,
            if rule.enabled { "" } else { " (disabled)" }
        );
    }
    for policy in p.notices.all() {
        out!("notice {}: {}", policy.reason, policy.describe());
    }
    let templates = crate::stages::load_templates(p)?;
    // Some stage sends email (an email stage, or grace reminders): SMTP must work.
    let sends_mail = templates.is_some();
    if let Some(templates) = templates {
        for name in p.templates_used() {
            out!(
                "template {name}: ok in {}",
                templates.locales_of(&name).join(", ")
            );
        }
    }
    let url = ctx.store_url(Some(&config))?;
    out!("store: {}", redact_url(&url));
    for stage in &p.stages {
        let unset: Vec<String> = match &stage.settings {
            crate::config::StageSettings::Sarbacane(s) => [
                (s.account_id.is_none(), crate::config::SARBACANE_ACCOUNT_ENV),
                (s.api_key.is_none(), crate::config::SARBACANE_KEY_ENV),
            ]
            .iter()
            .filter(|(missing, _)| *missing)
            .map(|(_, var)| var.to_string())
            .collect(),
            crate::config::StageSettings::Http(s) if s.secret.is_none() => {
                s.secret_var().into_iter().collect()
            }
            _ => Vec::new(),
        };
        for var in unset {
            out!(
                "warning: {var} is not set: `lethe run` will refuse stage {}",
                stage.state
            );
        }
    }
    if HashKey::from_env().is_err() {
        out!(
            "warning: {} is not set: `lethe run` and `lethe enqueue` will refuse to start",
            crate::pii::HASH_KEY_ENV
        );
    }
    if connect {
        // Changes nothing: a missing SQLite file or schema fails here (exit 2).
        let store = store::open_existing(&url, 1).await?;
        store.next_due().await?;
        out!("store: reachable and migrated");
        if let Some(source) = &config.pipeline.source {
            let reader = connect_source(source, &p.rules).await?;
            let users = reader.count_users().await?;
            out!("source: reachable, {users} users in {}", source.table);
        }
        if let Some(email) = &config.pipeline.email {
            let reached = match crate::mail::Mailer::new(email) {
                Ok(mailer) => mailer.test_connection().await,
                Err(e) => Err(e),
            };
            match reached {
                Ok(()) => out!("smtp: reachable at {}:{}", email.host, email.port()),
                Err(e) if !sends_mail => out!(
                    "smtp: not usable ({}); no stage sends email, so [email] is not needed yet",
                    crate::db::chain(&e)
                ),
                Err(e) => return Err(e.into()),
            }
        }
        for target in &config.pipeline.targets {
            let connected = crate::sql::target::Target::connect(target).await?;
            print_plan_summary(&connected);
        }
        let mut unreachable = Vec::new();
        for reached in crate::stages::reach::reach_services(&config.pipeline).await {
            match reached.result {
                Ok(what) => out!("{}: reachable: {what}", reached.what),
                Err(why) => {
                    out!("{}: NOT reachable: {why}", reached.what);
                    unreachable.push(reached.what);
                }
            }
        }
        if !unreachable.is_empty() {
            return Err(Failure::unreachable(format!(
                "cannot reach {}",
                unreachable.join(", ")
            )));
        }
    }
    out!("config valid");
    Ok(())
}
