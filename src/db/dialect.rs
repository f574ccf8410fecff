//! SQL dialects of the databases lethe reads and deletes from: identifier quoting and
//! parameter placeholders.

/// A relational database family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// MySQL and MariaDB.
    MySql,
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

impl Dialect {
    /// The dialect of a connection URL.
    pub fn from_url(url: &str) -> Result<Self, String> {
        if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Ok(Dialect::MySql)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Dialect::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Dialect::Sqlite)
        } else {
            Err("unsupported database URL (allowed: mysql://…, postgres://…, sqlite://FILE)".into())
        }
    }

    /// Quotes an identifier (table or column name) with the dialect's rules.
    pub fn quote(self, ident: &str) -> String {
        match self {
            Dialect::MySql => format!("`{}`", ident.replace('`', "``")),
            Dialect::Postgres | Dialect::Sqlite => format!("\"{}\"", ident.replace('"', "\"\"")),
        }
    }

    /// The placeholder of the `n`th (1-based) bound parameter.
    pub fn param(self, n: usize) -> String {
        match self {
            Dialect::MySql => "?".into(),
            Dialect::Postgres | Dialect::Sqlite => format!("${n}"),
        }
    }

    /// `expr` cast to a 64-bit integer, so ids decode alike whatever their column type.
    pub fn bigint(self, expr: &str) -> String {
        match self {
            Dialect::MySql => format!("CAST({expr} AS SIGNED)"),
            Dialect::Postgres => format!("CAST({expr} AS BIGINT)"),
            Dialect::Sqlite => expr.to_string(),
        }
    }

    /// `count` placeholders starting at parameter `first`, comma separated.
    pub fn params(self, first: usize, count: usize) -> String {
        (first..first + count)
            .map(|n| self.param(n))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_escaped_per_dialect() {
        assert_eq!(Dialect::MySql.quote("auth_user"), "`auth_user`");
        assert_eq!(Dialect::MySql.quote("we`ird"), "`we``ird`");
        assert_eq!(Dialect::Postgres.quote("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(Dialect::Sqlite.quote("t"), "\"t\"");
    }

    #[test]
    fn placeholders_follow_the_dialect() {
        assert_eq!(Dialect::MySql.params(1, 3), "?, ?, ?");
        assert_eq!(Dialect::Postgres.params(2, 2), "$2, $3");
        assert_eq!(Dialect::from_url("mariadb://h/db"), Ok(Dialect::MySql));
        assert!(Dialect::from_url("oracle://x").is_err());
    }
}
