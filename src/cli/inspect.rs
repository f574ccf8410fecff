//! `status`, `list`, `stats`: what the store holds.

use super::ctx::Ctx;
use super::failure::{Failure, Outcome};
use super::output::{json, out, print_table, time};
use crate::store::Retirement;

fn subject_shown(r: &Retirement) -> String {
    r.subject.clone().unwrap_or_else(|| {
        format!(
            "(erased, hash {})",
            &r.subject_hash[..12.min(r.subject_hash.len())]
        )
    })
}

pub(crate) async fn status(ctx: &Ctx, target: &str) -> Outcome {
    let store = ctx.store(None, 1).await?;
    let key = crate::pii::HashKey::from_env().ok();
    let r = crate::ops::find(store.as_ref(), target, key.as_ref()).await?;
    let events = store.history(r.id).await?;
    if ctx.global.json {
        out!(
            "{}",
            serde_json::json!({ "retirement": r, "events": events })
        );
        return Ok(());
    }
    out!("retirement   #{}", r.id);
    out!("subject      {}", subject_shown(&r));
    out!("reason       {}", r.reason);
    out!(
        "state        {}{}",
        r.state,
        if r.ended_at.is_some() { " (ended)" } else { "" }
    );
    out!("due at       {}", time(r.due_at));
    out!("attempt      {}", r.attempt);
    if let Some(owner) = &r.lease_owner {
        out!("lease        {owner} until {}", time(r.lease_until));
    }
    if let Some(state) = &r.failed_state {
        out!("failed in    {state}");
    }
    out!("last error   {}", r.last_error.as_deref().unwrap_or("-"));
    out!("warned at    {}", time(r.warned_at));
    out!("created at   {}", time(Some(r.created_at)));
    out!("ended at     {}", time(r.ended_at));
    out!("history:");
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                time(Some(e.at)),
                e.from_state.clone().unwrap_or_else(|| "-".into()),
                e.to_state.clone(),
                e.outcome.clone(),
                e.attempt.to_string(),
                e.actor.clone(),
                e.detail.clone(),
            ]
        })
        .collect();
    print_table(
        &["at", "from", "to", "outcome", "attempt", "actor", "detail"],
        &rows,
    );
    Ok(())
}

fn retirement_rows(list: &[Retirement]) -> Vec<Vec<String>> {
    list.iter()
        .map(|r| {
            vec![
                format!("#{}", r.id),
                subject_shown(r),
                r.state.clone(),
                time(r.due_at),
                r.attempt.to_string(),
                r.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect()
}

pub(crate) async fn list(ctx: &Ctx, state: Option<String>, limit: i64) -> Outcome {
    if let (Some(state), Ok(config)) = (&state, ctx.config())
        && !config.graph.contains(state)
    {
        return Err(Failure::config(format!(
            "--state {}: no such state (known: {})",
            crate::ops::shown(state),
            config.graph.names().join(", ")
        )));
    }
    let store = ctx.store(None, 1).await?;
    let filter = crate::store::ListFilter {
        state,
        limit: limit.max(0),
        ..Default::default()
    };
    let list = store.list(&filter).await?;
    if ctx.global.json {
        out!("{}", json(&list));
    } else {
        print_table(
            &["id", "subject", "state", "due", "attempt", "last error"],
            &retirement_rows(&list),
        );
    }
    Ok(())
}

pub(crate) async fn stats(ctx: &Ctx) -> Outcome {
    let config = ctx.config().ok();
    let store = ctx.store(None, 1).await?;
    let counts = crate::ops::stats(store.as_ref(), config.as_ref().map(|c| &c.graph)).await?;
    if ctx.global.json {
        let map: serde_json::Map<String, serde_json::Value> =
            counts.into_iter().map(|(s, n)| (s, n.into())).collect();
        out!("{}", serde_json::Value::Object(map));
    } else {
        let rows: Vec<Vec<String>> = counts
            .into_iter()
            .map(|(s, n)| vec![s, n.to_string()])
            .collect();
        print_table(&["state", "count"], &rows);
    }
    Ok(())
}
