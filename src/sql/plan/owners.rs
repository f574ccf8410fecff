//! Which links of a table own its rows: the guards of invariant 5 and the rules
//! `check --connect` lists.

use super::{Link, LinkRule, PlanError, Policy, Rules, is_owner};
use std::collections::BTreeMap;

/// The single-column links of each table straight to the root key.
pub(super) struct Owners<'a> {
    root: &'a str,
    direct: BTreeMap<&'a str, Vec<&'a Link>>,
}

impl<'a> Owners<'a> {
    pub(super) fn new(links: &'a [Link], rules: &'a Rules) -> Self {
        let mut direct: BTreeMap<&str, Vec<&Link>> = BTreeMap::new();
        for link in links {
            if link.table != rules.root_table && is_root_key(link, rules) {
                direct.entry(link.table.as_str()).or_default().push(link);
            }
        }
        Owners {
            root: &rules.root_table,
            direct,
        }
    }

    /// The guards of a row of `table` reached through `via`: its owner-named root links
    /// (but `via`); when `via` is a root link not named like an owner on a table without
    /// such links, every other root link (a row linking two users goes only with both).
    pub(super) fn guards(&self, table: &str, via: &Link, via_root: bool) -> Vec<String> {
        if table == self.root {
            return Vec::new();
        }
        let direct = self.direct.get(table).map(Vec::as_slice).unwrap_or(&[]);
        let others = direct.iter().filter(|l| *l != &via);
        let owners: Vec<String> = others
            .clone()
            .filter(|l| is_owner(&l.columns[0]))
            .map(|l| l.columns[0].clone())
            .collect();
        let has_owner = direct.iter().any(|l| is_owner(&l.columns[0]));
        if via_root && !is_owner(&via.columns[0]) && !has_owner {
            others.map(|l| l.columns[0].clone()).collect()
        } else {
            owners
        }
    }

    /// Checks the owner rule (finding: nullable owner links were nullified silently) and
    /// describes every link of a table that links to the root more than once.
    pub(super) fn rules(&self, rules: &Rules) -> Result<Vec<LinkRule>, PlanError> {
        let mut out = Vec::new();
        for (table, direct) in &self.direct {
            for link in direct {
                let key = link.key();
                let configured = rules.policies.get(&key);
                if configured.is_none()
                    && link.nullable
                    && is_owner(&link.columns[0])
                    && direct.iter().all(|l| l.nullable)
                {
                    return Err(PlanError::OwnerUnclassified(key));
                }
                if direct.len() < 2 {
                    continue;
                }
                let guards = self.guards(table, link, true);
                let rule = match configured {
                    Some(Policy::Protect) => {
                        "protect: a subject with rows here is not deleted".to_string()
                    }
                    Some(Policy::Nullify) => "nullify: rows kept, column set to NULL".to_string(),
                    Some(Policy::Anonymize(_)) => {
                        "anonymize: rows kept, columns overwritten".to_string()
                    }
                    _ if !link.nullable || matches!(configured, Some(Policy::Delete)) => {
                        let kept = if guards.is_empty() {
                            String::new()
                        } else if link.nullable {
                            "; rows of other users are kept with this column set to NULL"
                                .to_string()
                        } else if let Some(p) = rules.reassign_to {
                            format!("; rows of other users are kept, this column reassigned to {p}")
                        } else {
                            "; a subject with rows of other users here fails before anything is deleted (set reassign_to on the target to keep them)".to_string()
                        };
                        if guards.is_empty() {
                            format!("delete: owner, the rows go with their user{kept}")
                        } else {
                            format!(
                                "delete only rows whose {} are retired too{kept}",
                                guards.join(", ")
                            )
                        }
                    }
                    _ => "nullify: rows kept, column set to NULL".to_string(),
                };
                out.push(LinkRule {
                    link: key,
                    nullable: link.nullable,
                    rule,
                });
            }
        }
        Ok(out)
    }
}

pub(super) fn is_root_key(link: &Link, rules: &Rules) -> bool {
    link.ref_table == rules.root_table
        && link.columns.len() == 1
        && link.ref_columns == [rules.root_key.clone()]
}
