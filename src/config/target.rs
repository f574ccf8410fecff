//! `[[target]]`: a relational database lethe deletes subjects from, and the rules its
//! deletion plan follows (root, per-link policies, extra links, the placeholder account).

use super::{ConfigError, invalid};
use serde::Deserialize;
use std::collections::BTreeMap;

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
pub enum LinkPolicy {
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
    pub policies: BTreeMap<String, LinkPolicy>,
    /// Links that have no foreign key.
    pub extra_links: Vec<Link>,
    /// The placeholder account that kept rows' NOT NULL actor columns are reassigned to
    /// (GitLab's "ghost" user); `None`: a subject with such rows fails instead.
    pub reassign_to: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TargetSection {
    name: String,
    url: Option<String>,
    #[serde(default = "default_root_table")]
    root_table: String,
    #[serde(default = "default_root_key")]
    root_key: String,
    #[serde(default = "default_activity_column")]
    activity_column: String,
    #[serde(default = "default_parallel_batches")]
    parallel_batches: usize,
    #[serde(default)]
    protect: Vec<String>,
    #[serde(default)]
    delete: Vec<String>,
    #[serde(default)]
    nullify: Vec<String>,
    #[serde(default)]
    anonymize: Vec<AnonymizeSection>,
    #[serde(default)]
    extra_link: Vec<ExtraLinkSection>,
    reassign_to: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnonymizeSection {
    link: String,
    set: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtraLinkSection {
    link: String,
    references: String,
    #[serde(default)]
    nullable: bool,
}

fn default_root_table() -> String {
    "auth_user".into()
}

fn default_root_key() -> String {
    "id".into()
}

fn default_activity_column() -> String {
    "last_login".into()
}

fn default_parallel_batches() -> usize {
    2
}

/// A relational database lethe deletes subjects from (`[[target]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Name stages refer to.
    pub name: String,
    /// Connection URL: `LETHE_TARGET_<NAME>_URL`, else `url` in the file.
    pub url: Option<String>,
    /// Column re-checked for activity inside the deleting transaction.
    pub activity_column: String,
    /// Deleting transactions at once on this target (deadlocked batches are rerun).
    pub parallel_batches: usize,
    /// Root, policies and extra links.
    pub rules: Rules,
    /// The source's exclusions (`exclude` and the allow-lists), re-checked inside the
    /// deleting transaction; set when the root table is the source's table (the same
    /// users table, as on edX).
    pub exclusions: Option<super::source::Source>,
}

impl Target {
    /// The environment variable that holds this target's URL.
    pub fn url_env(&self) -> String {
        env_key(&self.name, "URL")
    }
}

/// `LETHE_TARGET_<NAME>_<KEY>`, NAME upper-cased with non-alphanumerics as `_`.
pub fn env_key(name: &str, key: &str) -> String {
    super::secret_env("target", Some(name), key)
}

fn split_link(file: &str, key: &str, text: &str) -> Result<(String, Vec<String>), ConfigError> {
    match text.split_once('.') {
        Some((table, columns)) if !table.is_empty() && !columns.is_empty() => Ok((
            table.to_string(),
            columns.split(',').map(|c| c.trim().to_string()).collect(),
        )),
        _ => Err(invalid(file, key, Some(text), "expected table.column")),
    }
}

pub(super) fn parse_targets(
    file: &str,
    sections: Vec<TargetSection>,
) -> Result<Vec<Target>, ConfigError> {
    let mut targets: Vec<Target> = Vec::new();
    for (i, t) in sections.into_iter().enumerate() {
        let at = format!("target[{}]", i + 1);
        if t.name.is_empty() || targets.iter().any(|o| o.name == t.name) {
            return Err(invalid(
                file,
                format!("{at}.name"),
                Some(&t.name),
                "target names must be non-empty and unique",
            ));
        }
        if let Some(url) = &t.url {
            super::check_database_url(file, &format!("{at}.url"), url)?;
        }
        if t.parallel_batches == 0 {
            return Err(invalid(
                file,
                format!("{at}.parallel_batches"),
                Some("0"),
                "must be at least 1",
            ));
        }
        if let Some(p) = t.reassign_to.filter(|p| *p <= 0) {
            return Err(invalid(
                file,
                format!("{at}.reassign_to"),
                Some(&p.to_string()),
                "the placeholder account is a positive root key (an existing user that is never retired)",
            ));
        }
        let mut rules = Rules {
            root_table: t.root_table.clone(),
            root_key: t.root_key.clone(),
            reassign_to: t.reassign_to,
            ..Rules::default()
        };
        let mut add = |key: String, link: &str, policy: LinkPolicy| -> Result<(), ConfigError> {
            split_link(file, &key, link)?;
            if rules.policies.insert(link.to_string(), policy).is_some() {
                return Err(invalid(
                    file,
                    key,
                    Some(link),
                    "this link already has a policy in this target",
                ));
            }
            Ok(())
        };
        for (list, policy) in [
            (&t.protect, LinkPolicy::Protect),
            (&t.delete, LinkPolicy::Delete),
            (&t.nullify, LinkPolicy::Nullify),
        ] {
            let name = match policy {
                LinkPolicy::Protect => "protect",
                LinkPolicy::Delete => "delete",
                _ => "nullify",
            };
            for (j, link) in list.iter().enumerate() {
                add(format!("{at}.{name}[{}]", j + 1), link, policy.clone())?;
            }
        }
        for (j, a) in t.anonymize.iter().enumerate() {
            let key = format!("{at}.anonymize[{}]", j + 1);
            let mut set = Vec::new();
            for (column, value) in &a.set {
                let value = match value {
                    toml::Value::String(s) => Value::Text(s.clone()),
                    toml::Value::Integer(n) => Value::Int(*n),
                    other => {
                        return Err(invalid(
                            file,
                            format!("{key}.set.{column}"),
                            None,
                            format!(
                                "expected a string or an integer, found {}",
                                other.type_str()
                            ),
                        ));
                    }
                };
                set.push((column.clone(), value));
            }
            add(format!("{key}.link"), &a.link, LinkPolicy::Anonymize(set))?;
        }
        for (j, e) in t.extra_link.iter().enumerate() {
            let key = format!("{at}.extra_link[{}]", j + 1);
            let (table, columns) = split_link(file, &format!("{key}.link"), &e.link)?;
            let (ref_table, ref_columns) =
                split_link(file, &format!("{key}.references"), &e.references)?;
            rules.extra_links.push(Link {
                table,
                columns,
                ref_table,
                ref_columns,
                nullable: e.nullable,
            });
        }
        targets.push(Target {
            name: t.name,
            url: t.url,
            activity_column: t.activity_column,
            parallel_batches: t.parallel_batches,
            rules,
            exclusions: None,
        });
    }
    Ok(targets)
}
