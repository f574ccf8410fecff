//! SQL text for a plan's steps, per dialect. Identifiers are quoted with the dialect's
//! rules; subject ids and anonymized values are always bound parameters.

use super::plan::{Action, Conflict, Hop, Plan, Step, Value};
use crate::db::Dialect;

/// A statement and its parameters: values bound first (anonymized values), then the
/// subject ids, `id_lists` times over (once per `IN (…)` list in the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// SQL text with placeholders.
    pub sql: String,
    /// Values bound first, in order; the ids follow.
    pub leading: Vec<Value>,
    /// How many times the `n` subject ids are bound after `leading`.
    pub id_lists: usize,
}

/// Hands out the placeholders of the id lists in text order.
struct Ids {
    d: Dialect,
    n: usize,
    next: usize,
    lists: usize,
}

impl Ids {
    fn new(d: Dialect, first: usize, n: usize) -> Self {
        Ids {
            d,
            n,
            next: first,
            lists: 0,
        }
    }

    fn list(&mut self) -> String {
        let text = self.d.params(self.next, self.n);
        self.next += self.n;
        self.lists += 1;
        text
    }

    fn done(self, sql: String, leading: Vec<Value>) -> Rendered {
        Rendered {
            sql,
            leading,
            id_lists: self.lists,
        }
    }
}

fn cols(d: Dialect, alias: Option<&str>, columns: &[String]) -> String {
    let one = |c: &String| match alias {
        Some(a) => format!("{a}.{}", d.quote(c)),
        None => d.quote(c),
    };
    match columns {
        [single] => one(single),
        many => format!("({})", many.iter().map(one).collect::<Vec<_>>().join(", ")),
    }
}

fn refs_root_key(plan: &Plan, hop: &Hop) -> bool {
    hop.ref_table == plan.root_table && hop.ref_columns == [plan.root_key.clone()]
}

/// ` AND (g IS NULL OR g IN (ids))` for each guard of a hop.
fn guards(d: Dialect, alias: Option<&str>, hop: &Hop, ids: &mut Ids) -> String {
    hop.guards
        .iter()
        .map(|g| {
            let c = cols(d, alias, std::slice::from_ref(g));
            format!(" AND ({c} IS NULL OR {c} IN ({}))", ids.list())
        })
        .collect()
}

/// `FROM t0 JOIN t1 … WHERE <subjects match>` for the step's path, and the expression that
/// yields the subject id of each row.
fn joined(d: Dialect, plan: &Plan, path: &[Hop], ids: &mut Ids) -> (String, String) {
    let mut from = format!("{} AS t0", d.quote(&path[0].table));
    let last = path.len() - 1;
    for (i, hop) in path.iter().enumerate() {
        if i == last && refs_root_key(plan, hop) {
            break;
        }
        let on: Vec<String> = hop
            .columns
            .iter()
            .zip(&hop.ref_columns)
            .map(|(c, r)| format!("t{i}.{} = t{}.{}", d.quote(c), i + 1, d.quote(r)))
            .collect();
        from.push_str(&format!(
            " JOIN {} AS t{} ON {}",
            d.quote(&hop.ref_table),
            i + 1,
            on.join(" AND ")
        ));
    }
    let subject = if refs_root_key(plan, &path[last]) {
        format!("t{last}.{}", d.quote(&path[last].columns[0]))
    } else {
        format!("t{}.{}", last + 1, d.quote(&plan.root_key))
    };
    let mut condition = format!("{subject} IN ({})", ids.list());
    for (i, hop) in path.iter().enumerate() {
        condition.push_str(&guards(d, Some(&format!("t{i}")), hop, ids));
    }
    (format!("{from} WHERE {condition}"), subject)
}

/// `cols IN (SELECT … )` nesting for the path from hop `i` up, for PostgreSQL and SQLite:
/// the condition on rows of `path[i].table`.
fn nested(d: Dialect, plan: &Plan, path: &[Hop], i: usize, ids: &mut Ids) -> String {
    let hop = &path[i];
    let condition = if i + 1 < path.len() {
        let inner = nested(d, plan, path, i + 1, ids);
        format!(
            "{} IN (SELECT {} FROM {} WHERE {inner})",
            cols(d, None, &hop.columns),
            cols(d, None, &hop.ref_columns).trim_matches(|c| c == '(' || c == ')'),
            d.quote(&hop.ref_table),
        )
    } else if refs_root_key(plan, hop) {
        format!("{} IN ({})", cols(d, None, &hop.columns), ids.list())
    } else {
        format!(
            "{} IN (SELECT {} FROM {} WHERE {} IN ({}))",
            cols(d, None, &hop.columns),
            cols(d, None, &hop.ref_columns).trim_matches(|c| c == '(' || c == ')'),
            d.quote(&plan.root_table),
            d.quote(&plan.root_key),
            ids.list()
        )
    };
    format!("{condition}{}", guards(d, None, hop, ids))
}

fn set_clause(
    d: Dialect,
    alias: Option<&str>,
    set: &[(String, Value)],
    first: usize,
) -> (String, Vec<Value>) {
    let mut leading = Vec::new();
    let mut parts = Vec::new();
    for (column, value) in set {
        let target = match alias {
            Some(a) => format!("{a}.{}", d.quote(column)),
            None => d.quote(column),
        };
        match value {
            Value::Null => parts.push(format!("{target} = NULL")),
            other => {
                leading.push(other.clone());
                parts.push(format!("{target} = {}", d.param(first + leading.len() - 1)));
            }
        }
    }
    (parts.join(", "), leading)
}

/// The statement for one step applied to `n` subject ids.
pub fn step(d: Dialect, plan: &Plan, step: &Step, n: usize) -> Rendered {
    let set: Vec<(String, Value)> = match &step.action {
        Action::Delete | Action::Protect => Vec::new(),
        Action::Nullify(columns) => columns.iter().map(|c| (c.clone(), Value::Null)).collect(),
        Action::Anonymize(set) => set.clone(),
    };
    let deleting = matches!(step.action, Action::Delete | Action::Protect);
    let direct = step.path.len() == 1 && refs_root_key(plan, &step.path[0]);
    match d {
        // MySQL/MariaDB, deeper levels: multi-table DML joins use indexes; IN-subqueries in
        // single-table DELETE/UPDATE may not (dependent subqueries scan the whole table).
        // Direct links to the root keep the single-table form, which deletes in place
        // (multi-table DELETE first collects the row ids in a temporary structure).
        Dialect::MySql if !direct => {
            if deleting {
                let mut ids = Ids::new(d, 1, n);
                let (from, _) = joined(d, plan, &step.path, &mut ids);
                ids.done(format!("DELETE t0 FROM {from}"), Vec::new())
            } else {
                let (assignments, leading) = set_clause(d, Some("t0"), &set, 1);
                let mut ids = Ids::new(d, 1 + leading.len(), n);
                let (from, _) = joined(d, plan, &step.path, &mut ids);
                let (tables, condition) = from.split_once(" WHERE ").unwrap_or((&from, "1 = 0"));
                let sql = format!("UPDATE {tables} SET {assignments} WHERE {condition}");
                ids.done(sql, leading)
            }
        }
        Dialect::MySql | Dialect::Postgres | Dialect::Sqlite => {
            let table = d.quote(step.table());
            if deleting {
                let mut ids = Ids::new(d, 1, n);
                let condition = nested(d, plan, &step.path, 0, &mut ids);
                ids.done(format!("DELETE FROM {table} WHERE {condition}"), Vec::new())
            } else {
                let (assignments, leading) = set_clause(d, None, &set, 1);
                let mut ids = Ids::new(d, 1 + leading.len(), n);
                let condition = nested(d, plan, &step.path, 0, &mut ids);
                let sql = format!("UPDATE {table} SET {assignments} WHERE {condition}");
                ids.done(sql, leading)
            }
        }
    }
}

/// Rows behind a step per subject (`subject`, `n`): what each subject's event records,
/// and which subjects a protect check stops.
pub fn rows_per_subject(d: Dialect, plan: &Plan, step: &Step, n: usize) -> Rendered {
    let mut ids = Ids::new(d, 1, n);
    let (from, subject) = joined(d, plan, &step.path, &mut ids);
    let sql = format!(
        "SELECT {} AS subject, COUNT(*) AS n FROM {from} GROUP BY {subject}",
        d.bigint(&subject)
    );
    ids.done(sql, Vec::new())
}

/// Rows of a conflict per subject (`subject`, `n`): rows reached from the subjects that
/// one of the conflict's owner columns ties to a user outside the batch.
pub fn conflicts_per_subject(d: Dialect, plan: &Plan, conflict: &Conflict, n: usize) -> Rendered {
    let mut ids = Ids::new(d, 1, n);
    let (from, subject) = joined(d, plan, &conflict.step.path, &mut ids);
    let kept: Vec<String> = conflict
        .columns
        .iter()
        .map(|g| {
            let c = format!("t0.{}", d.quote(g));
            format!("({c} IS NOT NULL AND {c} NOT IN ({}))", ids.list())
        })
        .collect();
    let sql = format!(
        "SELECT {} AS subject, COUNT(*) AS n FROM {from} AND ({}) GROUP BY {subject}",
        d.bigint(&subject),
        kept.join(" OR ")
    );
    ids.done(sql, Vec::new())
}

/// Locks the root rows and reads their activity column (FOR UPDATE where supported), and
/// with `exclusions` (the source's `exclude` predicate, spliced as configured, and its email
/// column) whether each row is excluded now and its email.
pub fn lock_roots(
    d: Dialect,
    plan: &Plan,
    activity_column: &str,
    exclusions: Option<(&str, &str)>,
    still_selected: &[&str],
    n: usize,
) -> Rendered {
    let lock = match d {
        Dialect::Sqlite => "",
        Dialect::MySql | Dialect::Postgres => " FOR UPDATE",
    };
    let excluded = exclusions
        .map(|(predicate, email)| {
            format!(
                ", CASE WHEN ({predicate}) THEN 1 ELSE 0 END AS excluded, {} AS email",
                d.quote(email)
            )
        })
        .unwrap_or_default();
    let still: String = still_selected
        .iter()
        .enumerate()
        .map(|(k, condition)| format!(", CASE WHEN ({condition}) THEN 1 ELSE 0 END AS still_{k}"))
        .collect();
    let mut ids = Ids::new(d, 1, n);
    let sql = format!(
        "SELECT {subject} AS subject, {activity} AS activity{excluded}{still} FROM {root} WHERE {key} IN ({list}){lock}",
        subject = d.bigint(&d.quote(&plan.root_key)),
        key = d.quote(&plan.root_key),
        activity = d.quote(activity_column),
        root = d.quote(&plan.root_table),
        list = ids.list(),
    );
    ids.done(sql, Vec::new())
}

/// Deletes the root rows.
pub fn delete_roots(d: Dialect, plan: &Plan, n: usize) -> Rendered {
    let mut ids = Ids::new(d, 1, n);
    let sql = format!(
        "DELETE FROM {} WHERE {} IN ({})",
        d.quote(&plan.root_table),
        d.quote(&plan.root_key),
        ids.list()
    );
    ids.done(sql, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::plan::{Link, Policy, Rules, build};

    fn plan() -> Plan {
        let links = vec![
            Link {
                table: "courseware_studentmodule".into(),
                columns: vec!["student_id".into()],
                ref_table: "auth_user".into(),
                ref_columns: vec!["id".into()],
                nullable: false,
            },
            Link {
                table: "courseware_studentmodulehistory".into(),
                columns: vec!["student_module_id".into()],
                ref_table: "courseware_studentmodule".into(),
                ref_columns: vec!["id".into()],
                nullable: false,
            },
            Link {
                table: "student_courseenrollmentallowed".into(),
                columns: vec!["email".into()],
                ref_table: "auth_user".into(),
                ref_columns: vec!["email".into()],
                nullable: false,
            },
            Link {
                table: "forum_post".into(),
                columns: vec!["author_id".into()],
                ref_table: "auth_user".into(),
                ref_columns: vec!["id".into()],
                nullable: true,
            },
        ];
        let mut rules = Rules {
            root_table: "auth_user".into(),
            root_key: "id".into(),
            ..Rules::default()
        };
        rules.policies.insert(
            "forum_post.author_id".into(),
            Policy::Anonymize(vec![("body".into(), Value::Text("[deleted]".into()))]),
        );
        build(&links, &rules).unwrap()
    }

    fn find<'a>(p: &'a Plan, link: &str) -> &'a Step {
        p.steps.iter().find(|s| s.link == link).unwrap()
    }

    #[test]
    fn mysql_uses_joins_for_deeper_levels() {
        let p = plan();
        let history = step(
            Dialect::MySql,
            &p,
            find(&p, "courseware_studentmodulehistory.student_module_id"),
            2,
        );
        assert_eq!(
            history.sql,
            "DELETE t0 FROM `courseware_studentmodulehistory` AS t0 JOIN `courseware_studentmodule` AS t1 \
             ON t0.`student_module_id` = t1.`id` WHERE t1.`student_id` IN (?, ?)"
        );
        let email = step(
            Dialect::MySql,
            &p,
            find(&p, "student_courseenrollmentallowed.email"),
            1,
        );
        assert_eq!(
            email.sql,
            "DELETE t0 FROM `student_courseenrollmentallowed` AS t0 JOIN `auth_user` AS t1 \
             ON t0.`email` = t1.`email` WHERE t1.`id` IN (?)"
        );
        let anon = step(Dialect::MySql, &p, find(&p, "forum_post.author_id"), 1);
        assert_eq!(
            anon.sql,
            "UPDATE `forum_post` SET `body` = ?, `author_id` = NULL WHERE `author_id` IN (?)"
        );
        assert_eq!(anon.leading, vec![Value::Text("[deleted]".into())]);
    }

    #[test]
    fn postgres_and_sqlite_nest_subqueries() {
        let p = plan();
        let history = step(
            Dialect::Postgres,
            &p,
            find(&p, "courseware_studentmodulehistory.student_module_id"),
            2,
        );
        assert_eq!(
            history.sql,
            "DELETE FROM \"courseware_studentmodulehistory\" WHERE \"student_module_id\" IN \
             (SELECT \"id\" FROM \"courseware_studentmodule\" WHERE \"student_id\" IN ($1, $2))"
        );
        let anon = step(Dialect::Sqlite, &p, find(&p, "forum_post.author_id"), 1);
        assert_eq!(
            anon.sql,
            "UPDATE \"forum_post\" SET \"body\" = $1, \"author_id\" = NULL WHERE \"author_id\" IN ($2)"
        );
    }

    #[test]
    fn protect_checks_count_per_subject() {
        let p = plan();
        let r = rows_per_subject(
            Dialect::Postgres,
            &p,
            find(&p, "courseware_studentmodulehistory.student_module_id"),
            1,
        );
        assert_eq!(
            r.sql,
            "SELECT CAST(t1.\"student_id\" AS BIGINT) AS subject, COUNT(*) AS n FROM \"courseware_studentmodulehistory\" AS t0 \
             JOIN \"courseware_studentmodule\" AS t1 ON t0.\"student_module_id\" = t1.\"id\" WHERE t1.\"student_id\" IN ($1) \
             GROUP BY t1.\"student_id\""
        );
        assert_eq!(
            lock_roots(Dialect::MySql, &p, "last_login", None, &[], 2).sql,
            "SELECT CAST(`id` AS SIGNED) AS subject, `last_login` AS activity FROM `auth_user` WHERE `id` IN (?, ?) FOR UPDATE"
        );
    }

    #[test]
    fn the_lock_re_checks_each_rule_condition_as_a_column_of_its_own() {
        let p = plan();
        let r = lock_roots(
            Dialect::Postgres,
            &p,
            "last_login",
            Some(("is_staff = 1", "email")),
            &["\"is_active\" = 0", "(org_id IS NULL)"],
            1,
        );
        assert_eq!(
            r.sql,
            "SELECT CAST(\"id\" AS BIGINT) AS subject, \"last_login\" AS activity, \
             CASE WHEN (is_staff = 1) THEN 1 ELSE 0 END AS excluded, \"email\" AS email, \
             CASE WHEN (\"is_active\" = 0) THEN 1 ELSE 0 END AS still_0, \
             CASE WHEN ((org_id IS NULL)) THEN 1 ELSE 0 END AS still_1 \
             FROM \"auth_user\" WHERE \"id\" IN ($1) FOR UPDATE"
        );
    }

    /// A standing row links its owner (`user_id`) and the staff member who changed it.
    fn standing_plan(reassign_to: Option<i64>) -> Plan {
        let link = |column: &str, nullable| Link {
            table: "student_userstanding".into(),
            columns: vec![column.into()],
            ref_table: "auth_user".into(),
            ref_columns: vec!["id".into()],
            nullable,
        };
        let rules = Rules {
            root_table: "auth_user".into(),
            root_key: "id".into(),
            reassign_to,
            ..Rules::default()
        };
        build(
            &[link("user_id", false), link("changed_by_id", false)],
            &rules,
        )
        .unwrap()
    }

    #[test]
    fn actor_links_delete_only_rows_whose_owners_go_too() {
        let p = standing_plan(None);
        let actor = find(&p, "student_userstanding.changed_by_id");
        assert_eq!(actor.action, Action::Delete);
        let r = step(Dialect::Postgres, &p, actor, 2);
        assert_eq!(
            r.sql,
            "DELETE FROM \"student_userstanding\" WHERE \"changed_by_id\" IN ($1, $2) \
             AND (\"user_id\" IS NULL OR \"user_id\" IN ($3, $4))"
        );
        assert_eq!(r.id_lists, 2);
        let owner = step(
            Dialect::MySql,
            &p,
            find(&p, "student_userstanding.user_id"),
            1,
        );
        assert_eq!(
            owner.sql,
            "DELETE FROM `student_userstanding` WHERE `user_id` IN (?)"
        );
        // The owner link deletes first, so a row whose owner and actor both go counts for
        // its owner.
        let order: Vec<&str> = p.steps.iter().map(|s| s.link.as_str()).collect();
        assert_eq!(
            order,
            [
                "student_userstanding.user_id",
                "student_userstanding.changed_by_id"
            ]
        );
        // NOT NULL and no placeholder: rows kept for other users fail their subject.
        assert_eq!(p.conflicts.len(), 1);
        let c = conflicts_per_subject(Dialect::MySql, &p, &p.conflicts[0], 1);
        assert_eq!(
            c.sql,
            "SELECT CAST(t0.`changed_by_id` AS SIGNED) AS subject, COUNT(*) AS n FROM `student_userstanding` AS t0 \
             WHERE t0.`changed_by_id` IN (?) AND ((t0.`user_id` IS NOT NULL AND t0.`user_id` NOT IN (?))) \
             GROUP BY t0.`changed_by_id`"
        );
        assert_eq!(c.id_lists, 2);
    }

    #[test]
    fn kept_rows_are_reassigned_to_the_placeholder() {
        let p = standing_plan(Some(99));
        assert!(p.conflicts.is_empty());
        let fix = p
            .steps
            .iter()
            .find(|s| matches!(s.action, Action::Anonymize(_)))
            .unwrap();
        let r = step(Dialect::Sqlite, &p, fix, 1);
        assert_eq!(
            r.sql,
            "UPDATE \"student_userstanding\" SET \"changed_by_id\" = $1 WHERE \"changed_by_id\" IN ($2)"
        );
        assert_eq!(r.leading, vec![Value::Int(99)]);
        assert_eq!(
            p.steps.last().unwrap().link,
            "student_userstanding.changed_by_id"
        );
    }
}
