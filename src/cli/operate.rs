//! `resume`, `abort`, `touch`, `ack`: operator actions on one retirement.

use super::ctx::Ctx;
use super::failure::{Failure, Outcome};
use super::output::{json, out};
use crate::domain::OperatorAction;
use crate::ops::{OperateError, Touched};
use crate::store::Retirement;
use chrono::Utc;

/// What an operator action on one retirement needs: the config, the store, the hash key
/// (to find a retirement by email) if set, the time and who acts.
struct Acting {
    config: crate::config::Config,
    store: std::sync::Arc<dyn crate::store::Store>,
    key: Option<crate::pii::HashKey>,
    now: chrono::DateTime<Utc>,
    actor: String,
}

async fn acting(ctx: &Ctx) -> Result<Acting, Failure> {
    let config = ctx.config()?;
    let store = ctx.store(Some(&config), 1).await?;
    Ok(Acting {
        config,
        store,
        key: crate::pii::HashKey::from_env().ok(),
        now: crate::domain::truncate_micros(Utc::now()),
        actor: ctx.actor(),
    })
}

pub(crate) async fn operate(ctx: &Ctx, target: &str, action: OperatorAction) -> Outcome {
    let Acting {
        config,
        store,
        key,
        now,
        actor,
    } = acting(ctx).await?;
    let done = crate::ops::operate(
        store.as_ref(),
        &config.graph,
        target,
        key.as_ref(),
        &action,
        &actor,
        now,
    )
    .await
    .map_err(|e| match e {
        OperateError::UnknownState { state, working } => Failure::config(format!(
            "--to {state}: no such state in {} (working states: {working})",
            config.states_path.display()
        )),
        other => other.into(),
    })?;
    print_applied(ctx, &done, "", "");
    Ok(())
}

fn print_applied(ctx: &Ctx, r: &Retirement, prefix: &str, verb: &str) {
    if ctx.global.json {
        out!("{}", json(r));
    } else {
        out!("{prefix}#{}{verb}: now {}", r.id, r.state);
    }
}

pub(crate) async fn touch(ctx: &Ctx, subject: &str, at: Option<String>) -> Outcome {
    let now = crate::domain::truncate_micros(Utc::now());
    let at = at
        .map(|a| crate::ops::parse_time("--at", &a))
        .transpose()?
        .unwrap_or(now);
    let subject = crate::ops::check_activity(subject, at, "--at", now)?;
    let config = ctx.config()?;
    let key = ctx.hash_key()?;
    let store = ctx.store(Some(&config), 1).await?;
    let actor = ctx.actor();
    let touched = crate::ops::touch(
        store.as_ref(),
        &config.graph,
        config.pipeline.notice_states(),
        &key,
        subject,
        at,
        &actor,
        now,
    )
    .await
    .map_err(|e| match e {
        OperateError::Refused { id, why } => Failure::refused(format!(
            "activity recorded; retirement #{id} not cancelled: {why}"
        )),
        other => other.into(),
    })?;
    match touched {
        Touched::NoneOpen => out!("activity recorded; no open retirement"),
        Touched::Cancelled(r) => print_applied(ctx, &r, "activity recorded; ", " cancelled"),
    }
    Ok(())
}

pub(crate) async fn ack(ctx: &Ctx, target: &str, service: &str) -> Outcome {
    let Acting {
        config,
        store,
        key,
        now,
        actor,
    } = acting(ctx).await?;
    let acked = crate::ops::ack(
        store.as_ref(),
        &config.pipeline,
        target,
        key.as_ref(),
        service,
        &actor,
        now,
    )
    .await?;
    let (id, already) = match acked {
        crate::ops::Acked::Recorded(id) => (id, None),
        crate::ops::Acked::Already(id, at) => (id, Some(at)),
    };
    if ctx.global.json {
        out!(
            "{}",
            serde_json::json!({ "id": id, "service": service, "already_acked_at": already })
        );
    } else {
        match already {
            None => out!("#{id}: {service} acknowledged"),
            Some(at) => out!(
                "#{id}: {service} had acknowledged already at {}",
                super::output::time(Some(at))
            ),
        }
    }
    Ok(())
}
