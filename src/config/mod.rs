//! states.toml and pipeline.toml: types, loading, environment overrides and validation.
//!
//! Every error names the file, the key, the bad value and what is allowed. Secrets never
//! come from these files: they are read from the environment (`LETHE_…`).

mod api;
mod duration;
mod email;
#[macro_use]
mod http;
mod call;
mod notice;
mod pipeline;
pub mod preset;
mod rule;
mod secrets;
mod service;
mod source;
mod stage;
mod stage_list;
mod states;
mod target;
mod template;

pub use api::{
    API_WEBHOOK_SECRET_ENV, API_WORKOS_SECRET_ENV, Api, ApiKey, CONSOLE_SECRET_ENV, DEFAULT_LISTEN,
    Scope,
};
pub use call::{HttpAuth, HttpSettings, LookupSettings, METHODS};
pub use duration::{HumanDuration, parse_duration};
pub use email::{Email, SMTP_HOST_ENV, SMTP_PASSWORD_ENV, SMTP_USERNAME_ENV, Tls, Undeliverable};
pub use http::{
    HttpLimits, NotifySettings, SARBACANE_ACCOUNT_ENV, SARBACANE_KEY_ENV, SarbacaneSettings,
    Secret, secret_env,
};
pub use notice::{NoticePolicy, Notices};
pub use pipeline::{DriverTuning, Pipeline, Policy, Stage};
pub use rule::{Rule, Select};
pub use secrets::{EnvVar, env_file, environment};
pub use service::Service;
pub use source::{SOURCE_URL_ENV, Source};
pub use stage::{
    EmailSettings, GraceSettings, HandlerKind, NoopSettings, SqlDeleteSettings, StageSettings,
    TemplateRole,
};
pub use target::{Link, LinkPolicy, Rules, Target, Value, env_key};
pub use template::{Escape, RenderError, Template, Values, Var, url_encoded};

use crate::domain::StateGraph;
use std::path::{Path, PathBuf};

/// A config problem: which file, which key, what is wrong and what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source} (give another path with --config / --states)")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown or mistyped key.
    #[error("{file}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// The parser's message, which includes line and column.
        message: String,
    },
    /// A key has a value that is not allowed.
    #[error("{file}: {key}{}: {problem}", value.as_ref().map(|v| format!(" = {v}")).unwrap_or_default())]
    Invalid {
        /// The file.
        file: String,
        /// The key, e.g. `stage[3].state`.
        key: String,
        /// The bad value as written (quoted when a string), if there is one.
        value: Option<String>,
        /// What is wrong and what is allowed.
        problem: String,
    },
}

impl crate::error::Classified for ConfigError {
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::Config
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The states, from states.toml.
    pub graph: StateGraph,
    /// Stages, policy, tuning, from pipeline.toml.
    pub pipeline: Pipeline,
    /// Where states.toml was read from.
    pub states_path: PathBuf,
    /// Where pipeline.toml was read from.
    pub pipeline_path: PathBuf,
}

impl Config {
    /// Reads and validates both files (the environment is applied by [`Config::with_env`]).
    pub fn load(states_path: &Path, pipeline_path: &Path) -> Result<Self, ConfigError> {
        let states_text = read(states_path)?;
        let pipeline_text = read(pipeline_path)?;
        Self::from_texts(
            &display_name(states_path),
            &states_text,
            &display_name(pipeline_path),
            &pipeline_text,
        )
        .map(|(graph, mut pipeline)| {
            // Templates are found beside pipeline.toml, wherever lethe runs from.
            if let Some(email) = &mut pipeline.email
                && email.templates.is_relative()
                && let Some(dir) = pipeline_path.parent()
            {
                email.templates = dir.join(&email.templates);
            }
            (graph, pipeline)
        })
        .map(|(graph, pipeline)| Config {
            graph,
            pipeline,
            states_path: states_path.to_path_buf(),
            pipeline_path: pipeline_path.to_path_buf(),
        })
    }

    /// [`Pipeline::apply_env`] on this config.
    pub fn with_env(mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        self.pipeline.apply_env(env)?;
        Ok(self)
    }

    /// Validates config given as text; `*_name` is used in messages. The environment is
    /// not read: see [`Pipeline::apply_env`].
    pub fn from_texts(
        states_name: &str,
        states_text: &str,
        pipeline_name: &str,
        pipeline_text: &str,
    ) -> Result<(StateGraph, Pipeline), ConfigError> {
        let graph = states::parse(states_name, states_text)?;
        let pipeline = pipeline::parse(pipeline_name, pipeline_text, &graph, states_name)?;
        Ok((graph, pipeline))
    }
}

/// `store.url` of a pipeline.toml's text (`file` names it in errors), read without
/// validating the rest; a file that is not TOML is an error, not "no URL".
pub fn store_url_in(file: &str, pipeline_text: &str) -> Result<Option<String>, ConfigError> {
    let value: toml::Value = toml::from_str(pipeline_text).map_err(|e| ConfigError::Syntax {
        file: file.to_string(),
        message: e.to_string(),
    })?;
    let url = value.get("store").and_then(|store| store.get("url"));
    match url {
        None => Ok(None),
        Some(toml::Value::String(url)) => Ok(Some(url.clone())),
        Some(_) => Err(ConfigError::Invalid {
            file: file.to_string(),
            key: "store.url".into(),
            value: None,
            problem: "expected a string (postgres://… or sqlite://FILE)".into(),
        }),
    }
}

/// The process environment, for [`Config::with_env`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// What errors about environment variables name as their file.
pub(crate) const ENVIRONMENT: &str = "environment";

/// Checks that `url` names a database lethe reads (MySQL/MariaDB, PostgreSQL, SQLite).
pub(crate) fn check_database_url(file: &str, key: &str, url: &str) -> Result<(), ConfigError> {
    crate::db::Dialect::from_url(url)
        .map(|_| ())
        .map_err(|p| invalid(file, key, Some(&crate::db::redact_url(url)), p))
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: display_name(path),
        source,
    })
}

fn display_name(path: &Path) -> String {
    let shown = path.display().to_string();
    shown
        .strip_prefix("./")
        .map(str::to_string)
        .unwrap_or(shown)
}

/// Parses TOML into `T`, turning parser errors into a `ConfigError` naming the file.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Syntax {
        file: file.to_string(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// Builds an `Invalid` error; `value` is shown quoted.
pub(crate) fn invalid(
    file: &str,
    key: impl Into<String>,
    value: Option<&str>,
    problem: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_string(),
        key: key.into(),
        value: value.map(|v| format!("{v:?}")),
        problem: problem.into(),
    }
}
