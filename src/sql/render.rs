//! SQL text for a plan's steps, per dialect. Identifiers are quoted with the dialect's
//! rules; subject ids and anonymized values are always bound parameters.

use super::dialect::Dialect;
use super::plan::{Action, Hop, Plan, Step, Value};

/// A statement and the values to bind before the subject ids (anonymized values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// SQL text with placeholders.
    pub sql: String,
    /// Values bound first, in order; the `n` subject ids follow.
    pub leading: Vec<Value>,
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

/// `FROM t0 JOIN t1 … WHERE <subjects match>` for the step's path, and the expression that
/// yields the subject id of each row. Placeholders for ids start at `first`.
fn joined(d: Dialect, plan: &Plan, path: &[Hop], first: usize, n: usize) -> (String, String) {
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
    let condition = format!("{subject} IN ({})", d.params(first, n));
    (format!("{from} WHERE {condition}"), subject)
}

/// `cols IN (SELECT … )` nesting for the path from hop `i` up, for PostgreSQL and SQLite.
fn nested(d: Dialect, plan: &Plan, path: &[Hop], i: usize, first: usize, n: usize) -> String {
    let hop = &path[i];
    let inner = if i + 1 < path.len() {
        format!(
            "SELECT {} FROM {} WHERE {}",
            cols(d, None, &hop.ref_columns).trim_matches(|c| c == '(' || c == ')'),
            d.quote(&hop.ref_table),
            nested(d, plan, path, i + 1, first, n)
        )
    } else if refs_root_key(plan, hop) {
        return format!(
            "{} IN ({})",
            cols(d, None, &hop.columns),
            d.params(first, n)
        );
    } else {
        format!(
            "SELECT {} FROM {} WHERE {} IN ({})",
            cols(d, None, &hop.ref_columns).trim_matches(|c| c == '(' || c == ')'),
            d.quote(&plan.root_table),
            d.quote(&plan.root_key),
            d.params(first, n)
        )
    };
    format!("{} IN ({inner})", cols(d, None, &hop.columns))
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
                let (from, _) = joined(d, plan, &step.path, 1, n);
                Rendered {
                    sql: format!("DELETE t0 FROM {from}"),
                    leading: Vec::new(),
                }
            } else {
                let (assignments, leading) = set_clause(d, Some("t0"), &set, 1);
                let (from, _) = joined(d, plan, &step.path, 1 + leading.len(), n);
                let (tables, condition) = from.split_once(" WHERE ").unwrap_or((&from, "1 = 0"));
                Rendered {
                    sql: format!("UPDATE {tables} SET {assignments} WHERE {condition}"),
                    leading,
                }
            }
        }
        Dialect::MySql | Dialect::Postgres | Dialect::Sqlite => {
            let table = d.quote(step.table());
            if deleting {
                Rendered {
                    sql: format!(
                        "DELETE FROM {table} WHERE {}",
                        nested(d, plan, &step.path, 0, 1, n)
                    ),
                    leading: Vec::new(),
                }
            } else {
                let (assignments, leading) = set_clause(d, None, &set, 1);
                let condition = nested(d, plan, &step.path, 0, 1 + leading.len(), n);
                Rendered {
                    sql: format!("UPDATE {table} SET {assignments} WHERE {condition}"),
                    leading,
                }
            }
        }
    }
}

/// The subjects (root keys) that have rows behind a step: for protect checks.
pub fn subjects_with_rows(d: Dialect, plan: &Plan, step: &Step, n: usize) -> String {
    let (from, subject) = joined(d, plan, &step.path, 1, n);
    format!(
        "SELECT DISTINCT {} AS subject FROM {from}",
        d.bigint(&subject)
    )
}

/// Rows behind a step per subject (`subject`, `n`): what each subject's event records.
pub fn rows_per_subject(d: Dialect, plan: &Plan, step: &Step, n: usize) -> String {
    let (from, subject) = joined(d, plan, &step.path, 1, n);
    format!(
        "SELECT {} AS subject, COUNT(*) AS n FROM {from} GROUP BY {subject}",
        d.bigint(&subject)
    )
}

/// Rows behind a step for each subject, for `lethe plan`.
pub fn count_rows(d: Dialect, plan: &Plan, step: &Step, n: usize) -> String {
    let (from, _) = joined(d, plan, &step.path, 1, n);
    format!("SELECT COUNT(*) FROM {from}")
}

/// Locks the root rows and reads their activity column (FOR UPDATE where supported).
pub fn lock_roots(d: Dialect, plan: &Plan, activity_column: &str, n: usize) -> String {
    let lock = match d {
        Dialect::Sqlite => "",
        Dialect::MySql | Dialect::Postgres => " FOR UPDATE",
    };
    format!(
        "SELECT {subject} AS subject, {activity} AS activity FROM {root} WHERE {key} IN ({ids}){lock}",
        subject = d.bigint(&d.quote(&plan.root_key)),
        key = d.quote(&plan.root_key),
        activity = d.quote(activity_column),
        root = d.quote(&plan.root_table),
        ids = d.params(1, n),
    )
}

/// Deletes the root rows.
pub fn delete_roots(d: Dialect, plan: &Plan, n: usize) -> String {
    format!(
        "DELETE FROM {} WHERE {} IN ({})",
        d.quote(&plan.root_table),
        d.quote(&plan.root_key),
        d.params(1, n)
    )
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
    fn protect_checks_name_the_subjects() {
        let p = plan();
        let sql = subjects_with_rows(
            Dialect::Postgres,
            &p,
            find(&p, "courseware_studentmodulehistory.student_module_id"),
            1,
        );
        assert_eq!(
            sql,
            "SELECT DISTINCT CAST(t1.\"student_id\" AS BIGINT) AS subject FROM \"courseware_studentmodulehistory\" AS t0 \
             JOIN \"courseware_studentmodule\" AS t1 ON t0.\"student_module_id\" = t1.\"id\" WHERE t1.\"student_id\" IN ($1)"
        );
        assert_eq!(
            lock_roots(Dialect::MySql, &p, "last_login", 2),
            "SELECT CAST(`id` AS SIGNED) AS subject, `last_login` AS activity FROM `auth_user` WHERE `id` IN (?, ?) FOR UPDATE"
        );
    }
}
