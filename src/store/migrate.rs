//! The embedded migrations and the check that a store has them all.

use super::StoreError;

/// Fails with [`StoreError::Behind`] when a migration of `migrator` is not in `applied`.
pub(crate) fn require_migrations(
    migrator: &sqlx::migrate::Migrator,
    applied: &[i64],
) -> Result<(), StoreError> {
    let missing: Vec<String> = migrator
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| format!("{} ({})", m.version, m.description))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else if applied.is_empty() {
        Err(StoreError::NotMigrated)
    } else {
        Err(StoreError::Behind {
            missing: missing.join(", "),
        })
    }
}

/// Reads the applied migration versions; a store without the migrations table has none.
pub(crate) fn applied_versions(
    result: Result<Vec<i64>, sqlx::Error>,
) -> Result<Vec<i64>, StoreError> {
    match result {
        Ok(versions) => Ok(versions),
        // Only a missing table means "not migrated" (PostgreSQL 42P01, SQLite "no such
        // table"); a refused permission or anything else is reported as it is.
        Err(sqlx::Error::Database(db))
            if db.code().as_deref() == Some("42P01") || db.message().contains("no such table") =>
        {
            Ok(Vec::new())
        }
        Err(source) => Err(StoreError::Query {
            context: "read the applied migrations",
            source,
        }),
    }
}

/// Applied migrations, in both backends.
pub(crate) const APPLIED_MIGRATIONS: &str = "SELECT version FROM _sqlx_migrations WHERE success";

/// The embedded migrations of one backend (`migrations/<dir>/`), in version order.
macro_rules! embedded_migrator {
    ($dir:literal) => {
        $crate::store::migrator_of(&[
            (
                1,
                "init",
                include_str!(concat!("../../migrations/", $dir, "/0001_init.sql")),
            ),
            (
                2,
                "claim index",
                include_str!(concat!("../../migrations/", $dir, "/0002_claim_index.sql")),
            ),
            (
                3,
                "notice",
                include_str!(concat!("../../migrations/", $dir, "/0003_notice.sql")),
            ),
            (
                4,
                "drop state index",
                include_str!(concat!(
                    "../../migrations/",
                    $dir,
                    "/0004_drop_state_index.sql"
                )),
            ),
            (
                5,
                "retirement key",
                include_str!(concat!(
                    "../../migrations/",
                    $dir,
                    "/0005_retirement_key.sql"
                )),
            ),
            (
                6,
                "event keys",
                include_str!(concat!("../../migrations/", $dir, "/0006_event_keys.sql")),
            ),
            (
                7,
                "claims",
                include_str!(concat!("../../migrations/", $dir, "/0007_claims.sql")),
            ),
            (
                8,
                "exclusion override",
                include_str!(concat!(
                    "../../migrations/",
                    $dir,
                    "/0008_exclusion_override.sql"
                )),
            ),
            (
                9,
                "service acks",
                include_str!(concat!("../../migrations/", $dir, "/0009_service_acks.sql")),
            ),
            (
                10,
                "public id",
                include_str!(concat!("../../migrations/", $dir, "/0010_public_id.sql")),
            ),
            (
                11,
                "rules",
                include_str!(concat!("../../migrations/", $dir, "/0011_rules.sql")),
            ),
            (
                12,
                "tasks",
                include_str!(concat!("../../migrations/", $dir, "/0012_tasks.sql")),
            ),
        ])
    };
}

pub(crate) use embedded_migrator;

/// Builds a migrator from embedded (version, description, SQL) triples.
pub(crate) fn migrator_of(
    migrations: &[(i64, &'static str, &'static str)],
) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    (*description).into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    /// `(version, description)` of each `NNNN_words.sql` in `migrations/<dir>/`, sorted.
    fn files_in(dir: &str) -> Vec<(i64, String)> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dir);
        let mut found: Vec<(i64, String)> = std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .map(|entry| entry.expect("a directory entry").file_name())
            .map(|name| {
                let name = name.to_string_lossy().into_owned();
                let stem = name
                    .strip_suffix(".sql")
                    .unwrap_or_else(|| panic!("migrations/{dir}/{name} is not a .sql file"));
                let (version, words) = stem.split_once('_').unwrap_or_else(|| {
                    panic!("migrations/{dir}/{name} is not named NNNN_description.sql")
                });
                let version = version.parse().unwrap_or_else(|_| {
                    panic!("migrations/{dir}/{name} does not start with a version number")
                });
                (version, words.replace('_', " "))
            })
            .collect();
        found.sort();
        found
    }

    fn embedded(migrator: &sqlx::migrate::Migrator) -> Vec<(i64, String)> {
        migrator
            .iter()
            .map(|m| (m.version, m.description.to_string()))
            .collect()
    }

    #[test]
    fn every_migration_file_is_embedded_and_every_embedded_one_has_its_file() {
        assert_eq!(
            embedded(&embedded_migrator!("postgres")),
            files_in("postgres"),
            "the embedded migrator list (store/migrate.rs) and migrations/postgres differ"
        );
        assert_eq!(
            embedded(&embedded_migrator!("sqlite")),
            files_in("sqlite"),
            "the embedded migrator list (store/migrate.rs) and migrations/sqlite differ"
        );
    }
}
