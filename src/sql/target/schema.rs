//! Reading a target's schema: foreign keys, column types, table engines, and the checks of
//! config names against them.

use crate::db::Dialect;
use crate::sql::plan::{Link, Plan, Rules};
use crate::sql::pool::{Pool, is_integer_type};
use sqlx::Row;
use std::collections::{HashMap, HashSet};

/// Every column of every table with its declared type, for validating config names.
pub(super) type Columns = HashMap<(String, String), String>;

pub(super) fn check_columns(
    dialect: Dialect,
    rules: &Rules,
    activity: &str,
    links: &[Link],
    columns: &Columns,
) -> Result<(), String> {
    let has = |t: &str, c: &str| columns.contains_key(&(t.to_string(), c.to_string()));
    if !columns.keys().any(|(t, _)| *t == rules.root_table) {
        return Err(format!("root table {} does not exist", rules.root_table));
    }
    for column in [rules.root_key.as_str(), activity] {
        if !has(&rules.root_table, column) {
            return Err(format!(
                "column {}.{column} does not exist",
                rules.root_table
            ));
        }
    }
    let key = (rules.root_table.clone(), rules.root_key.clone());
    if let Some(key_type) = columns.get(&key).filter(|ty| !is_integer_type(dialect, ty)) {
        return Err(format!(
            "{}.{} is {key_type}: subjects are retired by integer keys only (set root_key to an integer column)",
            rules.root_table, rules.root_key
        ));
    }
    for link in &rules.extra_links {
        for (t, cs) in [
            (&link.table, &link.columns),
            (&link.ref_table, &link.ref_columns),
        ] {
            if let Some(c) = cs.iter().find(|c| !has(t, c)) {
                return Err(format!(
                    "extra link {}: column {t}.{c} does not exist",
                    link.key()
                ));
            }
        }
    }
    for key in rules.policies.keys() {
        if let Some((t, cs)) = key.split_once('.')
            && let Some(c) = cs.split(',').find(|c| !has(t, c))
        {
            return Err(format!("{key}: column {t}.{c} does not exist"));
        }
    }
    let _ = links;
    Ok(())
}

/// On MySQL, a table the plan changes whose engine has no transactions (MyISAM) would keep
/// a failed batch's deletions: refused, naming the table.
pub(super) async fn check_transactional(
    pool: &Pool,
    plan: &Plan,
) -> Result<Option<String>, sqlx::Error> {
    let Pool::MySql(p) = pool else {
        return Ok(None);
    };
    let rows = sqlx::query(
        "SELECT CAST(TABLE_NAME AS CHAR) AS t, CAST(ENGINE AS CHAR) AS e FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'",
    )
    .fetch_all(p)
    .await?;
    let changed: HashSet<&str> = plan
        .steps
        .iter()
        .map(|s| s.table())
        .chain(std::iter::once(plan.root_table.as_str()))
        .collect();
    for row in rows {
        let table: String = row.try_get("t")?;
        let engine: Option<String> = row.try_get("e")?;
        if let Some(engine) = engine.filter(|e| !e.eq_ignore_ascii_case("InnoDB"))
            && changed.contains(table.as_str())
        {
            return Ok(Some(format!(
                "table {table} uses the {engine} engine, which cannot roll back: a failed batch would leave it half deleted (convert it to InnoDB)"
            )));
        }
    }
    Ok(None)
}

/// Reads every foreign key and every column of the target's schema. A key to a table of
/// another schema (another database on MySQL) is no link to the root: its `auth_user` is
/// someone else's, and following it would delete rows of other users with the same ids.
pub(super) async fn introspect(
    d: Dialect,
    pool: &Pool,
) -> Result<(Vec<Link>, Columns), sqlx::Error> {
    // (constraint, table, column, ref_table, ref_column, nullable) in constraint order.
    let mut fk_rows: Vec<(String, String, String, String, String, bool)> = Vec::new();
    let mut columns = Columns::new();
    match pool {
        Pool::MySql(p) => {
            for r in sqlx::query(
                "SELECT CAST(k.CONSTRAINT_NAME AS CHAR) AS c, CAST(k.TABLE_NAME AS CHAR) AS t, \
                 CAST(k.COLUMN_NAME AS CHAR) AS col, CAST(k.REFERENCED_TABLE_NAME AS CHAR) AS rt, \
                 CAST(k.REFERENCED_COLUMN_NAME AS CHAR) AS rc, CAST(c.IS_NULLABLE AS CHAR) AS n \
                 FROM information_schema.KEY_COLUMN_USAGE k JOIN information_schema.COLUMNS c \
                 ON c.TABLE_SCHEMA = k.TABLE_SCHEMA AND c.TABLE_NAME = k.TABLE_NAME AND c.COLUMN_NAME = k.COLUMN_NAME \
                 WHERE k.TABLE_SCHEMA = DATABASE() AND k.REFERENCED_TABLE_NAME IS NOT NULL \
                 AND k.REFERENCED_TABLE_SCHEMA = DATABASE() \
                 ORDER BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
            )
            .fetch_all(p)
            .await?
            {
                let n: String = r.try_get("n")?;
                fk_rows.push((r.try_get("c")?, r.try_get("t")?, r.try_get("col")?, r.try_get("rt")?, r.try_get("rc")?, n == "YES"));
            }
            for r in sqlx::query(
                "SELECT CAST(TABLE_NAME AS CHAR) AS t, CAST(COLUMN_NAME AS CHAR) AS c, \
                 CAST(DATA_TYPE AS CHAR) AS ty FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()",
            )
            .fetch_all(p)
            .await?
            {
                columns.insert((r.try_get("t")?, r.try_get("c")?), r.try_get("ty")?);
            }
        }
        Pool::Postgres(p) => {
            // pg_catalog rather than information_schema: it pairs the columns of composite
            // keys reliably.
            for r in sqlx::query(
                "SELECT con.conname::text AS c, cl.relname::text AS t, att.attname::text AS col, \
                 fcl.relname::text AS rt, fatt.attname::text AS rc, NOT att.attnotnull AS n \
                 FROM pg_constraint con \
                 CROSS JOIN LATERAL unnest(con.conkey, con.confkey) WITH ORDINALITY AS k(attnum, fattnum, ord) \
                 JOIN pg_class cl ON cl.oid = con.conrelid \
                 JOIN pg_class fcl ON fcl.oid = con.confrelid \
                 JOIN pg_namespace ns ON ns.oid = cl.relnamespace \
                 JOIN pg_namespace fns ON fns.oid = fcl.relnamespace \
                 JOIN pg_attribute att ON att.attrelid = con.conrelid AND att.attnum = k.attnum \
                 JOIN pg_attribute fatt ON fatt.attrelid = con.confrelid AND fatt.attnum = k.fattnum \
                 WHERE con.contype = 'f' AND ns.nspname = current_schema() AND fns.nspname = current_schema() \
                 ORDER BY cl.relname, con.conname, k.ord",
            )
            .fetch_all(p)
            .await?
            {
                fk_rows.push((r.try_get("c")?, r.try_get("t")?, r.try_get("col")?, r.try_get("rt")?, r.try_get("rc")?, r.try_get("n")?));
            }
            for r in sqlx::query(
                "SELECT table_name::text AS t, column_name::text AS c, data_type::text AS ty \
                 FROM information_schema.columns WHERE table_schema = current_schema()",
            )
            .fetch_all(p)
            .await?
            {
                columns.insert((r.try_get("t")?, r.try_get("c")?), r.try_get("ty")?);
            }
        }
        Pool::Sqlite(p) => {
            let tables: Vec<String> = sqlx::query(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .fetch_all(p)
            .await?
            .iter()
            .map(|r| r.try_get("name"))
            .collect::<Result<_, _>>()?;
            let mut pk: HashMap<String, String> = HashMap::new();
            let mut not_null: HashSet<(String, String)> = HashSet::new();
            for table in &tables {
                for r in sqlx::query(
                    "SELECT name, \"notnull\" AS nn, pk, type AS ty FROM pragma_table_info($1)",
                )
                .bind(table)
                .fetch_all(p)
                .await?
                {
                    let name: String = r.try_get("name")?;
                    if r.try_get::<i64, _>("nn")? != 0 {
                        not_null.insert((table.clone(), name.clone()));
                    }
                    if r.try_get::<i64, _>("pk")? == 1 {
                        pk.insert(table.clone(), name.clone());
                    }
                    columns.insert((table.clone(), name), r.try_get("ty")?);
                }
            }
            for table in &tables {
                for r in sqlx::query(
                    "SELECT id, \"table\" AS rt, \"from\" AS col, \"to\" AS rc FROM pragma_foreign_key_list($1) ORDER BY id, seq",
                )
                .bind(table)
                .fetch_all(p)
                .await?
                {
                    let id: i64 = r.try_get("id")?;
                    let rt: String = r.try_get("rt")?;
                    let col: String = r.try_get("col")?;
                    let rc: Option<String> = r.try_get("rc")?;
                    let rc = rc.or_else(|| pk.get(&rt).cloned()).unwrap_or_else(|| "rowid".into());
                    let nullable = !not_null.contains(&(table.clone(), col.clone()));
                    fk_rows.push((format!("{table}#{id}"), table.clone(), col, rt, rc, nullable));
                }
            }
        }
    }
    let _ = d;
    // Group the rows of each constraint into one link.
    let mut links: Vec<Link> = Vec::new();
    let mut last: Option<(String, String)> = None;
    for (constraint, table, column, ref_table, ref_column, nullable) in fk_rows {
        let key = (table.clone(), constraint);
        match (&last, links.last_mut()) {
            (Some(k), Some(link)) if *k == key => {
                link.columns.push(column);
                link.ref_columns.push(ref_column);
                link.nullable &= nullable;
            }
            _ => links.push(Link {
                table,
                columns: vec![column],
                ref_table,
                ref_columns: vec![ref_column],
                nullable,
            }),
        }
        last = Some(key);
    }
    Ok((links, columns))
}
