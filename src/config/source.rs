//! `[source]`: the table of users that is the source of truth, and how to scan it.

use super::{ConfigError, HumanDuration, invalid};
use serde::Deserialize;
use std::time::Duration;

/// The environment variable that overrides `source.url` (it may hold a password).
pub const SOURCE_URL_ENV: &str = "LETHE_SOURCE_URL";

/// The validated `[source]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Source {
    /// Connection URL (`LETHE_SOURCE_URL` overrides it).
    pub url: Option<String>,
    /// Users table.
    pub table: String,
    /// Primary key column (integer).
    pub id_column: String,
    /// Email column.
    pub email_column: String,
    /// Username column.
    pub username_column: String,
    /// Last login column; NULL means never logged in.
    pub last_login_column: String,
    /// Sign-up column, the activity of users who never logged in.
    pub date_joined_column: String,
    /// Whether the account confirmed its email (0 = never confirmed; edX's `is_active`,
    /// "not activated"): what `select = "unverified"` rules read.
    pub verified_column: String,
    /// Column holding the user's language (`en`, `fr`...), if the table has one.
    pub locale_column: Option<String>,
    /// How long without activity makes a user a candidate; `policy.inactive_after` when unset.
    pub inactive_after: Option<HumanDuration>,
    /// SQL predicate on the users table that excludes a user (staff, superusers...).
    /// Operator config, spliced into the scan query as written.
    pub exclude: String,
    /// Never selected: these ids.
    pub allow_ids: Vec<i64>,
    /// Never selected: these emails (case-insensitive).
    pub allow_emails: Vec<String>,
    /// Never selected: emails in these domains.
    pub allow_domains: Vec<String>,
    /// Time between two scans of the daemon.
    pub scan_interval: HumanDuration,
    /// Rows per page of the keyset scan.
    pub batch_size: usize,
    /// A scan that would enqueue more than this enqueues nothing.
    pub max_new_per_scan: u64,
    /// A scan that would enqueue more than this share of all users enqueues nothing.
    pub max_new_share: f64,
}

impl Default for Source {
    fn default() -> Self {
        Self {
            url: None,
            table: "auth_user".into(),
            id_column: "id".into(),
            email_column: "email".into(),
            username_column: "username".into(),
            last_login_column: "last_login".into(),
            date_joined_column: "date_joined".into(),
            verified_column: "is_active".into(),
            locale_column: None,
            inactive_after: None,
            exclude: "is_staff = 1 OR is_superuser = 1".into(),
            allow_ids: Vec::new(),
            allow_emails: Vec::new(),
            allow_domains: Vec::new(),
            scan_interval: HumanDuration(Duration::from_secs(3600)),
            batch_size: 5000,
            max_new_per_scan: 1000,
            max_new_share: 0.05,
        }
    }
}

impl Source {
    /// Checks values (`LETHE_SOURCE_URL` is applied by `Pipeline::apply_env`).
    pub(super) fn validate(mut self, file: &str) -> Result<Self, ConfigError> {
        if let Some(url) = &self.url {
            crate::db::Dialect::from_url(url)
                .map_err(|p| invalid(file, "source.url", Some(&crate::db::redact_url(url)), p))?;
        }
        if !(1..=100_000).contains(&self.batch_size) {
            return Err(invalid(
                file,
                "source.batch_size",
                None,
                format!("{} is out of range (allowed: 1 to 100000)", self.batch_size),
            ));
        }
        if !(self.max_new_share > 0.0 && self.max_new_share <= 1.0) {
            return Err(invalid(
                file,
                "source.max_new_share",
                None,
                format!(
                    "{} is out of range (allowed: above 0, at most 1)",
                    self.max_new_share
                ),
            ));
        }
        if let Some(after) = self.inactive_after
            && after.0 < Duration::from_secs(86_400)
        {
            return Err(invalid(
                file,
                "source.inactive_after",
                Some(&after.to_string()),
                "must be at least 1d",
            ));
        }
        if self.scan_interval.0 < Duration::from_secs(1) {
            return Err(invalid(
                file,
                "source.scan_interval",
                Some(&self.scan_interval.to_string()),
                "must be at least 1s",
            ));
        }
        for (key, value) in [
            ("source.table", &self.table),
            ("source.id_column", &self.id_column),
            ("source.email_column", &self.email_column),
            ("source.username_column", &self.username_column),
            ("source.last_login_column", &self.last_login_column),
            ("source.date_joined_column", &self.date_joined_column),
            ("source.verified_column", &self.verified_column),
        ] {
            if value.trim().is_empty() {
                return Err(invalid(
                    file,
                    key,
                    Some(value),
                    "must name a table or column",
                ));
            }
        }
        self.allow_emails = self
            .allow_emails
            .iter()
            .map(|e| e.trim().to_lowercase())
            .collect();
        self.allow_domains = self
            .allow_domains
            .iter()
            .map(|d| d.trim().trim_start_matches('@').to_lowercase())
            .collect();
        Ok(self)
    }

    /// Whether the allow-lists keep this user out of any scan.
    pub fn allowed(&self, id: i64, email: Option<&str>) -> bool {
        self.allow_rule(id, email).is_some()
    }

    /// The allow-list that keeps this user out (`allow_ids`, `allow_emails`,
    /// `allow_domains`), if any.
    pub fn allow_rule(&self, id: i64, email: Option<&str>) -> Option<&'static str> {
        if self.allow_ids.contains(&id) {
            return Some("allow_ids");
        }
        let email = email.map(|e| e.trim().to_lowercase())?;
        if self.allow_emails.contains(&email) {
            return Some("allow_emails");
        }
        email
            .rsplit_once('@')
            .is_some_and(|(_, domain)| self.allow_domains.iter().any(|d| d == domain))
            .then_some("allow_domains")
    }
}
