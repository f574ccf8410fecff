//! The deletion plan: which rows of which tables go, stay nullified, stay anonymized or
//! protect a subject, in an order the foreign keys accept. Pure: built from introspected
//! links and config rules, no I/O.

use std::collections::{BTreeMap, BTreeSet};

/// A link from rows of `table` to rows of `ref_table` (a foreign key, or an extra link
/// from config such as `student_courseenrollmentallowed.email -> auth_user.email`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Link {
    /// Referencing table.
    pub table: String,
    /// Referencing columns.
    pub columns: Vec<String>,
    /// Referenced table.
    pub ref_table: String,
    /// Referenced columns (the primary key or another unique column).
    pub ref_columns: Vec<String>,
    /// Whether every referencing column accepts NULL.
    pub nullable: bool,
}

impl Link {
    /// `table.col` (or `table.col1,col2` for a composite link), as config names it.
    pub fn key(&self) -> String {
        format!("{}.{}", self.table, self.columns.join(","))
    }
}

/// What to do with the rows behind one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Delete them (and, first, what depends on them).
    Delete,
    /// Keep them, set the link to NULL (actor columns of other users' rows).
    Nullify,
    /// Never touch: a subject with such rows fails with `protected: table.column`.
    Protect,
    /// Keep them, set these columns to these values (and the link to NULL unless it is
    /// among them).
    Anonymize(Vec<(String, Value)>),
}

/// A value an anonymized column is set to; bound as a parameter, never spliced into SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A string.
    Text(String),
}

/// Config for a plan: the root and the per-link policies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Root table (edX: `auth_user`).
    pub root_table: String,
    /// Root key column (edX: `id`).
    pub root_key: String,
    /// Policy per `table.column`, overriding the defaults (delete for NOT NULL links,
    /// nullify for nullable ones).
    pub policies: BTreeMap<String, Policy>,
    /// Links that have no foreign key.
    pub extra_links: Vec<Link>,
}

/// One hop of the path from a step's table up to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// Referencing table.
    pub table: String,
    /// Referencing columns.
    pub columns: Vec<String>,
    /// Referenced table.
    pub ref_table: String,
    /// Referenced columns.
    pub ref_columns: Vec<String>,
}

/// What a step does to its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// DELETE the rows.
    Delete,
    /// UPDATE … SET link columns = NULL.
    Nullify(Vec<String>),
    /// UPDATE … SET columns = values.
    Anonymize(Vec<(String, Value)>),
    /// Check only: rows here protect the subject.
    Protect,
}

/// One statement of the plan: `action` on the rows of `path[0].table` reached from the
/// subjects through `path` (first hop first, the last hop references the root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The link config names this step by (`table.column`).
    pub link: String,
    /// What to do.
    pub action: Action,
    /// From the step's table up to the root.
    pub path: Vec<Hop>,
}

impl Step {
    /// The table this step changes.
    pub fn table(&self) -> &str {
        &self.path[0].table
    }
}

/// The ordered statements that retire subjects from one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Root table.
    pub root_table: String,
    /// Root key column.
    pub root_key: String,
    /// Protect checks, run first.
    pub protect: Vec<Step>,
    /// Changes in execution order (dependents before what they depend on); the root rows
    /// are deleted after the last one.
    pub steps: Vec<Step>,
}

impl Plan {
    /// Tables whose rows the plan deletes, the root included.
    pub fn deleted_tables(&self) -> BTreeSet<&str> {
        self.steps
            .iter()
            .filter(|s| s.action == Action::Delete)
            .map(Step::table)
            .chain(std::iter::once(self.root_table.as_str()))
            .collect()
    }
}

/// Why no plan can be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A config rule names a link that does not exist.
    #[error("{key}: no such link to {root} (known links: {known})")]
    UnknownLink {
        /// The key as configured.
        key: String,
        /// The root table.
        root: String,
        /// Links that exist.
        known: String,
    },
    /// Deleting along a cycle cannot be ordered.
    #[error(
        "cycle of deleting links: {0}; give one of these columns the policy nullify or protect"
    )]
    Cycle(String),
    /// A NOT NULL link cannot be nullified.
    #[error(
        "{0}: cannot nullify a NOT NULL column; use delete, protect or anonymize (setting it to a placeholder)"
    )]
    NotNullable(String),
    /// The chain is too deep to be plausible.
    #[error("{0}: links nest deeper than {MAX_DEPTH} levels below the root")]
    TooDeep(String),
}

/// Deepest chain of deleting links followed below the root.
pub const MAX_DEPTH: usize = 8;

/// Builds the plan from every link of the schema (introspected) plus the rules.
pub fn build(links: &[Link], rules: &Rules) -> Result<Plan, PlanError> {
    let mut all: Vec<Link> = links.to_vec();
    all.extend(rules.extra_links.iter().cloned());
    all.sort();
    all.dedup();
    let reachable = reachable_keys(&all, &rules.root_table);
    if let Some(key) = rules.policies.keys().find(|k| !reachable.contains(*k)) {
        return Err(PlanError::UnknownLink {
            key: key.clone(),
            root: rules.root_table.clone(),
            known: reachable.iter().cloned().collect::<Vec<_>>().join(", "),
        });
    }
    let mut plan = Plan {
        root_table: rules.root_table.clone(),
        root_key: rules.root_key.clone(),
        protect: Vec::new(),
        steps: Vec::new(),
    };
    let mut stack = vec![rules.root_table.clone()];
    visit(&all, rules, &mut Vec::new(), &mut stack, &mut plan)?;
    Ok(plan)
}

/// Keys of links that reach the root through deleting links (those config may name).
fn reachable_keys(links: &[Link], root: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut frontier = vec![root.to_string()];
    let mut seen = BTreeSet::from([root.to_string()]);
    while let Some(table) = frontier.pop() {
        for link in links.iter().filter(|l| l.ref_table == table) {
            keys.insert(link.key());
            if seen.insert(link.table.clone()) {
                frontier.push(link.table.clone());
            }
        }
    }
    keys
}

/// Plans everything that references the rows of `stack.last()` reached by `path`
/// (post-order: dependents first).
fn visit(
    links: &[Link],
    rules: &Rules,
    path: &mut Vec<Hop>,
    stack: &mut Vec<String>,
    plan: &mut Plan,
) -> Result<(), PlanError> {
    let parent = stack.last().cloned().unwrap_or_default();
    for link in links.iter().filter(|l| l.ref_table == parent) {
        let key = link.key();
        let policy = rules
            .policies
            .get(&key)
            .cloned()
            .unwrap_or(if link.nullable {
                Policy::Nullify
            } else {
                Policy::Delete
            });
        let hop = Hop {
            table: link.table.clone(),
            columns: link.columns.clone(),
            ref_table: link.ref_table.clone(),
            ref_columns: link.ref_columns.clone(),
        };
        let mut step_path = vec![hop.clone()];
        step_path.extend(path.iter().cloned());
        let step = |action| Step {
            link: key.clone(),
            action,
            path: step_path.clone(),
        };
        match policy {
            Policy::Protect => plan.protect.push(step(Action::Protect)),
            Policy::Nullify => {
                if !link.nullable {
                    return Err(PlanError::NotNullable(key));
                }
                plan.steps.push(step(Action::Nullify(link.columns.clone())));
            }
            Policy::Anonymize(mut set) => {
                for column in &link.columns {
                    if !set.iter().any(|(c, _)| c == column) {
                        if !link.nullable {
                            return Err(PlanError::NotNullable(key));
                        }
                        set.push((column.clone(), Value::Null));
                    }
                }
                plan.steps.push(step(Action::Anonymize(set)));
            }
            Policy::Delete => {
                if let Some(at) = stack.iter().position(|t| *t == link.table) {
                    let mut cycle: Vec<String> = stack[at..].to_vec();
                    cycle.push(link.table.clone());
                    return Err(PlanError::Cycle(format!(
                        "{} (via {key})",
                        cycle.join(" -> ")
                    )));
                }
                if path.len() + 1 > MAX_DEPTH {
                    return Err(PlanError::TooDeep(key));
                }
                stack.push(link.table.clone());
                path.insert(0, hop);
                visit(links, rules, path, stack, plan)?;
                path.remove(0);
                stack.pop();
                plan.steps.push(step(Action::Delete));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(table: &str, column: &str, ref_table: &str, nullable: bool) -> Link {
        Link {
            table: table.into(),
            columns: vec![column.into()],
            ref_table: ref_table.into(),
            ref_columns: vec!["id".into()],
            nullable,
        }
    }

    fn rules() -> Rules {
        Rules {
            root_table: "auth_user".into(),
            root_key: "id".into(),
            ..Rules::default()
        }
    }

    fn order(plan: &Plan) -> Vec<(String, &'static str)> {
        plan.steps
            .iter()
            .map(|s| {
                let kind = match s.action {
                    Action::Delete => "delete",
                    Action::Nullify(_) => "nullify",
                    Action::Anonymize(_) => "anonymize",
                    Action::Protect => "protect",
                };
                (s.link.clone(), kind)
            })
            .collect()
    }

    #[test]
    fn children_go_before_parents_and_nullable_links_are_nullified() {
        let links = vec![
            link("courseware_studentmodule", "student_id", "auth_user", false),
            link(
                "courseware_studentmodulehistory",
                "student_module_id",
                "courseware_studentmodule",
                false,
            ),
            link("student_courseenrollment", "user_id", "auth_user", false),
            link(
                "student_manualenrollmentaudit",
                "enrolled_by_id",
                "auth_user",
                true,
            ),
            link("unrelated", "thing_id", "elsewhere", false),
        ];
        let plan = build(&links, &rules()).unwrap();
        let steps = order(&plan);
        let pos = |k: &str| steps.iter().position(|(l, _)| l == k).unwrap();
        assert!(
            pos("courseware_studentmodulehistory.student_module_id")
                < pos("courseware_studentmodule.student_id")
        );
        assert_eq!(
            steps[pos("student_manualenrollmentaudit.enrolled_by_id")].1,
            "nullify"
        );
        assert_eq!(steps.len(), 4);
        let history = &plan.steps[pos("courseware_studentmodulehistory.student_module_id")];
        assert_eq!(history.path.len(), 2);
        assert_eq!(history.path[1].table, "courseware_studentmodule");
        assert!(plan.deleted_tables().contains("auth_user"));
    }

    #[test]
    fn config_overrides_defaults_and_protects() {
        let links = vec![
            link("wiki_article", "owner_id", "auth_user", true),
            link(
                "student_manualenrollmentaudit",
                "enrollment_id",
                "student_courseenrollment",
                true,
            ),
            link("student_courseenrollment", "user_id", "auth_user", false),
            link("forum_post", "author_id", "auth_user", true),
        ];
        let mut r = rules();
        r.policies
            .insert("wiki_article.owner_id".into(), Policy::Protect);
        r.policies.insert(
            "student_manualenrollmentaudit.enrollment_id".into(),
            Policy::Delete,
        );
        r.policies.insert(
            "forum_post.author_id".into(),
            Policy::Anonymize(vec![("body".into(), Value::Text("[deleted]".into()))]),
        );
        let plan = build(&links, &r).unwrap();
        assert_eq!(plan.protect.len(), 1);
        assert_eq!(plan.protect[0].link, "wiki_article.owner_id");
        let steps = order(&plan);
        assert!(steps.contains(&(
            "student_manualenrollmentaudit.enrollment_id".into(),
            "delete"
        )));
        let anon = plan
            .steps
            .iter()
            .find(|s| s.link == "forum_post.author_id")
            .unwrap();
        assert_eq!(
            anon.action,
            Action::Anonymize(vec![
                ("body".into(), Value::Text("[deleted]".into())),
                ("author_id".into(), Value::Null)
            ])
        );
    }

    #[test]
    fn unknown_links_cycles_and_not_null_nullify_are_refused() {
        let mut r = rules();
        r.policies.insert("nope.user_id".into(), Policy::Protect);
        let err = build(&[link("a", "user_id", "auth_user", false)], &r).unwrap_err();
        assert!(
            err.to_string()
                .contains("nope.user_id: no such link to auth_user (known links: a.user_id)"),
            "{err}"
        );

        let cycle = vec![
            link("a", "user_id", "auth_user", false),
            link("b", "a_id", "a", false),
            link("a", "b_id", "b", false),
        ];
        let err = build(&cycle, &rules()).unwrap_err();
        assert!(
            err.to_string().contains("a -> b -> a (via a.b_id)"),
            "{err}"
        );
        // A nullable link in the cycle breaks it by default.
        let mut broken = cycle.clone();
        broken[2].nullable = true;
        assert!(build(&broken, &rules()).is_ok());

        let mut r = rules();
        r.policies.insert("a.user_id".into(), Policy::Nullify);
        assert!(matches!(
            build(&[link("a", "user_id", "auth_user", false)], &r),
            Err(PlanError::NotNullable(_))
        ));
    }

    #[test]
    fn self_references_are_nullified_or_refused() {
        let root_self = link("auth_user", "referrer_id", "auth_user", true);
        let plan = build(std::slice::from_ref(&root_self), &rules()).unwrap();
        assert_eq!(
            order(&plan),
            vec![("auth_user.referrer_id".to_string(), "nullify")]
        );
        let mut strict = root_self;
        strict.nullable = false;
        let err = build(&[strict], &rules()).unwrap_err();
        assert!(matches!(err, PlanError::Cycle(_)), "{err}");
    }

    #[test]
    fn extra_links_join_the_graph() {
        let mut r = rules();
        r.extra_links.push(Link {
            table: "student_courseenrollmentallowed".into(),
            columns: vec!["email".into()],
            ref_table: "auth_user".into(),
            ref_columns: vec!["email".into()],
            nullable: false,
        });
        let plan = build(&[], &r).unwrap();
        assert_eq!(plan.steps[0].path[0].ref_columns, ["email"]);
        assert_eq!(plan.steps[0].action, Action::Delete);
    }
}
