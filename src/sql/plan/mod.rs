//! The deletion plan: which rows of which tables go, stay nullified, stay anonymized or
//! protect a subject, in an order the foreign keys accept. Pure: built from introspected
//! links and config rules, no I/O.

mod owners;
mod schedule;

use owners::{Owners, is_root_key};
use schedule::Dag;
use std::collections::BTreeSet;

// The rules are config: what the operator wrote, which the plan applies.
pub use crate::config::{Link, LinkPolicy as Policy, Rules, Value};

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
    /// Owner columns of `table` (links to the root key): a row here is deleted, or
    /// followed to its dependents, only when each of them is NULL or names a subject of
    /// the batch (invariant 5: another user's row is never deleted).
    pub guards: Vec<String>,
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

/// Rows that a deleting step keeps because they belong to a user who is not being retired
/// (one of `columns` links elsewhere), while their `step.link` column is NOT NULL and
/// cannot be reassigned: a subject with such rows fails before anything is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The rows reached from the subjects (the first hop without its guards).
    pub step: Step,
    /// The owner columns that keep them.
    pub columns: Vec<String>,
}

/// How rows behind a link to the root are treated when their table links to the root more
/// than once (what `check --connect` lists for review).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRule {
    /// `table.column`.
    pub link: String,
    /// Whether the column accepts NULL.
    pub nullable: bool,
    /// The rule, in words.
    pub rule: String,
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
    /// Kept rows that would fail their subject, checked after the protect checks.
    pub conflicts: Vec<Conflict>,
    /// Changes in execution order (dependents before what they depend on, and on each
    /// table its deletions before its updates, so an update only counts rows that stay);
    /// the root rows are deleted after the last one.
    pub steps: Vec<Step>,
    /// The rule of every link on a table with several links to the root.
    pub link_rules: Vec<LinkRule>,
    /// The placeholder account, if any (it is never retired itself).
    pub reassign_to: Option<i64>,
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
    /// A nullable column named like an owner is the table's only tie to the root: nulling
    /// it would keep the user's rows without their name.
    #[error(
        "{0}: a nullable column named like an owner is this table's only link to the root; nullifying it would keep the user's rows: list it under delete, nullify or anonymize in the target"
    )]
    OwnerUnclassified(String),
}

/// Deepest chain of deleting links followed below the root.
pub const MAX_DEPTH: usize = 8;

/// Column names that tie a row to its owner rather than to an actor.
pub const OWNER_COLUMNS: &[&str] = &["user_id", "student_id", "owner_id"];

fn is_owner(column: &str) -> bool {
    OWNER_COLUMNS.contains(&column)
}

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
    let owners = Owners::new(&all, rules);
    let mut planner = Planner {
        links: &all,
        rules,
        owners: &owners,
        dag: Dag::default(),
        protect: Vec::new(),
        conflicts: Vec::new(),
    };
    let mut stack = vec![rules.root_table.clone()];
    planner.visit(&mut Vec::new(), &mut stack)?;
    let Planner {
        dag,
        protect,
        conflicts,
        ..
    } = planner;
    Ok(Plan {
        root_table: rules.root_table.clone(),
        root_key: rules.root_key.clone(),
        protect,
        conflicts,
        steps: dag.schedule(),
        link_rules: owners.rules(rules)?,
        reassign_to: rules.reassign_to,
    })
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

struct Planner<'a> {
    links: &'a [Link],
    rules: &'a Rules,
    owners: &'a Owners<'a>,
    dag: Dag,
    protect: Vec<Step>,
    conflicts: Vec<Conflict>,
}

impl Planner<'_> {
    /// Plans everything that references the rows of `stack.last()` reached by `path`;
    /// returns the steps that must run before those rows are deleted.
    fn visit(
        &mut self,
        path: &mut Vec<Hop>,
        stack: &mut Vec<String>,
    ) -> Result<Vec<usize>, PlanError> {
        let parent = stack.last().cloned().unwrap_or_default();
        let mut before_parent = Vec::new();
        // Owner links first: their deletions are planned (and run) before actor links'.
        let mut children: Vec<&Link> = self
            .links
            .iter()
            .filter(|l| l.ref_table == parent)
            .collect();
        children.sort_by_key(|l| !(l.columns.len() == 1 && is_owner(&l.columns[0])));
        for link in children {
            let key = link.key();
            let via_root = is_root_key(link, self.rules);
            let policy = self
                .rules
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
                guards: self.owners.guards(&link.table, link, via_root),
            };
            let mut step_path = vec![hop.clone()];
            step_path.extend(path.iter().cloned());
            let unguarded = || {
                let mut p = step_path.clone();
                p[0].guards.clear();
                p
            };
            let step = |action, path| Step {
                link: key.clone(),
                action,
                path,
            };
            match policy {
                Policy::Protect => self.protect.push(step(Action::Protect, unguarded())),
                Policy::Nullify => {
                    if !link.nullable {
                        return Err(PlanError::NotNullable(key));
                    }
                    let columns = link.columns.clone();
                    before_parent.push(self.dag.add(step(Action::Nullify(columns), unguarded())));
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
                    before_parent.push(self.dag.add(step(Action::Anonymize(set), unguarded())));
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
                    path.insert(0, hop.clone());
                    let dependents = self.visit(path, stack)?;
                    path.remove(0);
                    stack.pop();
                    let delete = self.dag.add(step(Action::Delete, step_path.clone()));
                    for d in dependents {
                        self.dag.edge(d, delete);
                    }
                    before_parent.push(delete);
                    if hop.guards.is_empty() {
                        continue;
                    }
                    // Rows the guards kept still point at rows that go: free them.
                    let keep = if link.nullable {
                        Some(Action::Nullify(link.columns.clone()))
                    } else if let (true, Some(p)) = (via_root, self.rules.reassign_to) {
                        Some(Action::Anonymize(vec![(
                            link.columns[0].clone(),
                            Value::Int(p),
                        )]))
                    } else {
                        None
                    };
                    match keep {
                        Some(action) => {
                            let fix = self.dag.add(step(action, unguarded()));
                            self.dag.edge(delete, fix);
                            before_parent.push(fix);
                        }
                        None => self.conflicts.push(Conflict {
                            step: step(Action::Protect, unguarded()),
                            columns: hop.guards.clone(),
                        }),
                    }
                }
            }
        }
        Ok(before_parent)
    }
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

    #[test]
    fn a_nullable_owner_link_alone_must_be_classified() {
        let links = [link(
            "student_historicalcourseenrollment",
            "user_id",
            "auth_user",
            true,
        )];
        let err = build(&links, &rules()).unwrap_err();
        assert_eq!(
            err,
            PlanError::OwnerUnclassified("student_historicalcourseenrollment.user_id".into())
        );
        let mut r = rules();
        r.policies.insert(
            "student_historicalcourseenrollment.user_id".into(),
            Policy::Delete,
        );
        assert_eq!(order(&build(&links, &r).unwrap())[0].1, "delete");
        // Not named like an owner, or beside a NOT NULL link: an actor, nullified.
        assert!(build(&[link("t", "changed_by_id", "auth_user", true)], &rules()).is_ok());
    }

    #[test]
    fn updates_of_a_table_wait_for_its_deletions() {
        // A refresh token is its user's, and points at an access token that goes first.
        let links = vec![
            link("oauth2_provider_accesstoken", "user_id", "auth_user", false),
            link(
                "oauth2_provider_refreshtoken",
                "access_token_id",
                "oauth2_provider_accesstoken",
                true,
            ),
            link(
                "oauth2_provider_refreshtoken",
                "user_id",
                "auth_user",
                false,
            ),
        ];
        let plan = build(&links, &rules()).unwrap();
        assert_eq!(
            order(&plan),
            vec![
                ("oauth2_provider_refreshtoken.user_id".to_string(), "delete"),
                (
                    "oauth2_provider_refreshtoken.access_token_id".to_string(),
                    "nullify"
                ),
                ("oauth2_provider_accesstoken.user_id".to_string(), "delete"),
            ]
        );
    }

    #[test]
    fn a_row_linking_two_users_goes_only_with_both() {
        let links = vec![
            link("message", "sender_id", "auth_user", false),
            link("message", "recipient_id", "auth_user", true),
            link("standing", "user_id", "auth_user", false),
            link("standing", "changed_by_id", "auth_user", false),
        ];
        let plan = build(&links, &rules()).unwrap();
        let guards = |key: &str| {
            let s = plan
                .steps
                .iter()
                .find(|s| s.link == key && s.action == Action::Delete);
            s.map(|s| s.path[0].guards.clone())
        };
        assert_eq!(
            guards("message.sender_id"),
            Some(vec!["recipient_id".to_string()])
        );
        assert_eq!(guards("standing.user_id"), Some(vec![]));
        assert_eq!(
            guards("standing.changed_by_id"),
            Some(vec!["user_id".to_string()])
        );
        // sender_id is NOT NULL and there is no placeholder: its kept rows are a conflict.
        let conflicts: Vec<&str> = plan
            .conflicts
            .iter()
            .map(|c| c.step.link.as_str())
            .collect();
        assert_eq!(conflicts, ["message.sender_id", "standing.changed_by_id"]);
        let rules_of: Vec<(&str, &str)> = plan
            .link_rules
            .iter()
            .map(|r| (r.link.as_str(), r.rule.as_str()))
            .collect();
        assert!(
            rules_of.iter().any(|(l, r)| *l == "standing.changed_by_id"
                && r.contains("fails before anything is deleted")),
            "{rules_of:?}"
        );
        assert!(
            rules_of
                .iter()
                .any(|(l, r)| *l == "standing.user_id" && r.starts_with("delete: owner"))
        );
    }
}
