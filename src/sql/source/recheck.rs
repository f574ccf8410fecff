//! Re-reading known subjects: last logins, whether a rule still (or an earlier rule also)
//! selects them, and the exclusions, one set-based query per thousand ids.

use super::{Rule, SourceError, SourceReader, selection};
use crate::sql::pool::{Pool, with_pool};
use chrono::NaiveDateTime;
use sqlx::Row;

impl SourceReader {
    /// The last login of each of `ids` that still exists (`None`: never logged in).
    pub async fn last_logins(
        &self,
        ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, Option<NaiveDateTime>>, SourceError> {
        let mut out = std::collections::HashMap::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(out);
        }
        let d = self.dialect;
        let c = &self.config;
        let sql = format!(
            "SELECT {id_expr} AS id, {last_login} AS last_login FROM {table} WHERE {id} IN ({params})",
            id_expr = d.bigint(&d.quote(&c.id_column)),
            last_login = d.quote(&c.last_login_column),
            table = d.quote(&c.table),
            id = d.quote(&c.id_column),
            params = d.params(1, ids.len()),
        );
        let rows = with_pool!(&self.pool, p => {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in ids {
                query = query.bind(*id);
            }
            query.fetch_all(p).await.and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        let at = r
                            .try_get::<Option<NaiveDateTime>, _>("last_login")
                            .or_else(|_| {
                                r.try_get::<Option<chrono::DateTime<chrono::Utc>>, _>("last_login")
                                    .map(|t| t.map(|t| t.naive_utc()))
                            })?;
                        Ok((r.try_get::<i64, _>("id")?, at))
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            })
        });
        for (id, at) in rows.map_err(|source| SourceError::Query {
            context: "re-reading the last login",
            source,
        })? {
            out.insert(id, at);
        }
        Ok(out)
    }

    /// Which of `ids` `rule` selects at `cutoff` (exclusions aside): an earlier rule's
    /// subjects are its own, whichever rule's timer runs first.
    pub async fn selected_by(
        &self,
        rule: &Rule,
        cutoff: NaiveDateTime,
        ids: &[i64],
    ) -> Result<std::collections::HashSet<i64>, SourceError> {
        let mut out = std::collections::HashSet::new();
        let d = self.dialect;
        let c = &self.config;
        for chunk in ids.chunks(1000) {
            let sql = format!(
                "SELECT {id_expr} AS id FROM {table} WHERE {id} IN ({params}) AND {selects}",
                id_expr = d.bigint(&d.quote(&c.id_column)),
                table = d.quote(&c.table),
                id = d.quote(&c.id_column),
                params = d.params(1, chunk.len()),
                selects = selection(d, c, rule, chunk.len() + 1),
            );
            let rows = with_pool!(&self.pool, p => {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for id in chunk {
                    query = query.bind(*id);
                }
                query.bind(cutoff).fetch_all(p).await.and_then(|rows| {
                    rows.iter().map(|r| r.try_get::<i64, _>("id")).collect::<Result<Vec<_>, _>>()
                })
            });
            out.extend(rows.map_err(|source| SourceError::Query {
                context: "checking the earlier rules' subjects",
                source,
            })?);
        }
        Ok(out)
    }

    /// Which of `subjects` (an id, and the condition from [`super::still_selected`] its
    /// rule must still meet) exist and no longer meet it: one query per condition.
    pub async fn no_longer_selected(
        &self,
        subjects: &[(i64, &str)],
    ) -> Result<std::collections::HashSet<i64>, SourceError> {
        let mut by_condition: std::collections::HashMap<&str, Vec<i64>> = Default::default();
        for (id, condition) in subjects {
            by_condition.entry(condition).or_default().push(*id);
        }
        let mut out = std::collections::HashSet::new();
        for (condition, ids) in by_condition {
            let flags = self
                .flags(
                    &ids,
                    condition,
                    "re-checking the rule that selected the subjects",
                )
                .await?;
            out.extend(
                flags
                    .into_iter()
                    .filter(|(_, (_, still))| !still)
                    .map(|(id, _)| id),
            );
        }
        Ok(out)
    }

    /// For each of `ids` that exists: its email and whether the exclusion predicate matches
    /// it (exclusions of hand-opened retirements).
    pub async fn exclusion_flags(
        &self,
        ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, (Option<String>, bool)>, SourceError> {
        let exclude = self.config.exclude.clone();
        self.flags(
            ids,
            &exclude,
            "checking the exclusions of enqueued subjects",
        )
        .await
    }

    /// For each of `ids` that exists: its email and whether `condition` holds of it, in one
    /// set-based query per thousand ids.
    async fn flags(
        &self,
        ids: &[i64],
        condition: &str,
        context: &'static str,
    ) -> Result<std::collections::HashMap<i64, (Option<String>, bool)>, SourceError> {
        let mut out = std::collections::HashMap::with_capacity(ids.len());
        let d = self.dialect;
        let c = &self.config;
        for chunk in ids.chunks(1000) {
            let sql = format!(
                "SELECT {id_expr} AS id, {email} AS email, \
                 CASE WHEN ({condition}) THEN 1 ELSE 0 END AS flag \
                 FROM {table} WHERE {id} IN ({params})",
                id_expr = d.bigint(&d.quote(&c.id_column)),
                email = d.quote(&c.email_column),
                table = d.quote(&c.table),
                id = d.quote(&c.id_column),
                params = d.params(1, chunk.len()),
            );
            let rows = with_pool!(&self.pool, p => {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for id in chunk {
                    query = query.bind(*id);
                }
                query.fetch_all(p).await.and_then(|rows| {
                    rows.iter()
                        .map(|r| {
                            let flag = r
                                .try_get::<i64, _>("flag")
                                .or_else(|_| r.try_get::<i32, _>("flag").map(i64::from))?;
                            Ok((
                                r.try_get::<i64, _>("id")?,
                                (r.try_get::<Option<String>, _>("email")?, flag != 0),
                            ))
                        })
                        .collect::<Result<Vec<_>, sqlx::Error>>()
                })
            });
            out.extend(rows.map_err(|source| SourceError::Query { context, source })?);
        }
        Ok(out)
    }

    /// Which of `subjects` (id, and the email given for it, if any) the exclusions keep
    /// out, by rule (`exclude`, `allow_ids`, `allow_emails`, `allow_domains`): one query for
    /// the predicate, then the allow-lists on the email the source holds and the one given.
    pub async fn exclusion_rules(
        &self,
        subjects: &[(i64, Option<&str>)],
    ) -> Result<std::collections::HashMap<i64, &'static str>, SourceError> {
        let ids: Vec<i64> = subjects.iter().map(|(id, _)| *id).collect();
        let flags = self.exclusion_flags(&ids).await?;
        let mut out = std::collections::HashMap::new();
        for &(id, given) in subjects {
            let (stored, excluded) = flags
                .get(&id)
                .map(|(email, excluded)| (email.as_deref(), *excluded))
                .unwrap_or((None, false));
            let rule = if excluded {
                Some("exclude")
            } else {
                self.config
                    .allow_rule(id, stored)
                    .or_else(|| self.config.allow_rule(id, given))
            };
            if let Some(rule) = rule {
                out.insert(id, rule);
            }
        }
        Ok(out)
    }
}
