//! `plan SUBJECT`: the deletion plan of every target and the rows it would touch.

use super::ctx::Ctx;
use super::failure::{Failure, Outcome};
use super::output::{out, print_table};

/// What retiring a subject would do, in one line.
fn plan_verdict(result: &crate::sql::target::SubjectResult) -> String {
    use crate::sql::target::SubjectResult;
    match result {
        SubjectResult::Retired {
            already_gone: true, ..
        } => "nothing to delete: the subject is not in the target".to_string(),
        SubjectResult::Retired { .. } => "would be deleted".to_string(),
        SubjectResult::Protected(links) => format!(
            "the deletion would be refused: {}",
            SubjectResult::protected_reason(links)
        ),
        SubjectResult::Refused(why) => format!("the deletion would be refused: {why}"),
        SubjectResult::Active(at) => format!("active at {}", at.to_rfc3339()),
        SubjectResult::Excluded(why) => format!("the deletion would be refused: {why}"),
        SubjectResult::NoLongerSelected => {
            "the deletion would be cancelled: its rule no longer selects it".to_string()
        }
    }
}

/// Tables per policy, protected columns and nullified columns to review.
pub(crate) fn print_plan_summary(target: &crate::sql::target::Target) {
    use crate::sql::plan::Action;
    let plan = &target.plan;
    let mut by_action: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> =
        Default::default();
    for step in &plan.steps {
        by_action
            .entry(crate::sql::target::action_name(&step.action))
            .or_default()
            .insert(step.table());
    }
    out!(
        "target {} ({:?}): root {}.{}; {} statements per batch",
        target.name,
        target.dialect,
        plan.root_table,
        plan.root_key,
        plan.steps.len() + plan.protect.len() + plan.conflicts.len() + 2
    );
    for (action, tables) in &by_action {
        out!("  {action:<9} {} tables", tables.len());
    }
    let protected: Vec<&str> = plan.protect.iter().map(|s| s.link.as_str()).collect();
    out!("  protected columns: {}", protected.join(", "));
    let nullified: std::collections::BTreeSet<&str> = plan
        .steps
        .iter()
        .filter(|s| matches!(s.action, Action::Nullify(_)))
        .map(|s| s.link.as_str())
        .collect();
    out!(
        "  nullified columns to review (rows kept; are these only actors?): {}",
        nullified.into_iter().collect::<Vec<_>>().join(", ")
    );
    if !plan.link_rules.is_empty() {
        out!(
            "  tables linking to {} more than once (a row of a user who stays is never deleted):",
            plan.root_table
        );
        for rule in &plan.link_rules {
            let null = if rule.nullable { "NULL" } else { "NOT NULL" };
            out!("    {} ({null}): {}", rule.link, rule.rule);
        }
    }
}

/// `lethe plan SUBJECT`: the plan and the rows it would touch for one subject.
pub(crate) async fn plan(ctx: &Ctx, subject: &str) -> Outcome {
    let config = ctx.config()?;
    let id = crate::ops::parse_subject("the subject argument", subject)
        .map_err(|e| Failure::config(e.to_string()))?;
    if config.pipeline.targets.is_empty() {
        return Err(Failure::config(format!(
            "{}: no [[target]] is declared",
            config.pipeline_path.display()
        )));
    }
    let mut report = Vec::new();
    for target_config in &config.pipeline.targets {
        let target = crate::sql::target::Target::connect(target_config).await?;
        let preview = target.preview(id).await?;
        let verdict = plan_verdict(&preview.verdict);
        if !ctx.global.json {
            out!("target {}: {verdict}", target.name);
            print_plan_summary(&target);
            let table: Vec<Vec<String>> = preview
                .steps
                .iter()
                .map(|(link, action, n)| vec![link.clone(), action.clone(), n.to_string()])
                .collect();
            print_table(&["link", "action", "rows"], &table);
            if !preview.exact {
                out!("(rows each step matches; nothing would run while the deletion is refused)");
            }
        }
        report.push(serde_json::json!({
            "target": target.name,
            "verdict": verdict,
            "refused": !matches!(preview.verdict, crate::sql::target::SubjectResult::Retired { .. }),
            "exact": preview.exact,
            "steps": preview.steps.iter().map(|(link, action, n)| serde_json::json!({"link": link, "action": action, "rows": n})).collect::<Vec<_>>(),
        }));
    }
    if ctx.global.json {
        out!("{}", serde_json::Value::Array(report));
    }
    Ok(())
}
