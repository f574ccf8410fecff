//! The environment variables a pipeline reads its secrets from, derived from the pipeline
//! itself so the list `lethe init` writes cannot drift from what `lethe run` reads.

use super::{Pipeline, StageSettings};

/// One environment variable a deployment may set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    /// Its name, e.g. `LETHE_TARGET_EDX_URL`.
    pub name: String,
    /// What it holds, and an example value where that helps.
    pub what: String,
    /// Whether `lethe run` refuses to start (or a stage refuses to work) without it.
    pub required: bool,
}

fn var(name: impl Into<String>, what: impl Into<String>, required: bool) -> EnvVar {
    EnvVar {
        name: name.into(),
        what: what.into(),
        required,
    }
}

/// Every environment variable `pipeline` reads, required ones first, each once.
pub fn environment(pipeline: &Pipeline) -> Vec<EnvVar> {
    let mut vars = vec![var(
        crate::pii::HASH_KEY_ENV,
        "a stable random secret of 16+ characters: the keyed hashes that find a user after \
         erasure (never change it once retirements exist)",
        true,
    )];
    vars.push(var(
        "LETHE_STORE_URL",
        "the store, e.g. postgres://lethe:…@db.internal/lethe (overrides [store] url)",
        pipeline.store_url.is_none(),
    ));
    if let Some(source) = &pipeline.source {
        vars.push(var(
            super::SOURCE_URL_ENV,
            format!(
                "the database holding {} (e.g. mysql://lethe:…@host/db), read-only is enough",
                source.table
            ),
            source.url.is_none(),
        ));
    }
    for target in &pipeline.targets {
        vars.push(var(
            target.url_env(),
            format!(
                "target {}: the database to delete from, e.g. mysql://lethe:…@host/db",
                target.name
            ),
            target.url.is_none(),
        ));
    }
    for stage in &pipeline.stages {
        match &stage.settings {
            StageSettings::Sarbacane(_) => {
                vars.push(var(
                    super::SARBACANE_ACCOUNT_ENV,
                    "Sarbacane's account id",
                    true,
                ));
                vars.push(var(super::SARBACANE_KEY_ENV, "Sarbacane's API key", true));
            }
            StageSettings::Http(http) => {
                if let Some(name) = http.secret_var() {
                    vars.push(var(
                        name,
                        format!("stage {}: the credential of {}", stage.state, http.name),
                        true,
                    ));
                }
            }
            _ => {}
        }
    }
    if pipeline.email.is_some() {
        vars.push(var(
            super::SMTP_USERNAME_ENV,
            "the SMTP login, if the server wants one",
            false,
        ));
        vars.push(var(
            super::SMTP_PASSWORD_ENV,
            "the SMTP password, if the server wants one",
            false,
        ));
        vars.push(var(super::SMTP_HOST_ENV, "overrides [email] host", false));
    }
    for service in &pipeline.services {
        vars.push(var(
            service.secret_env(),
            format!(
                "service {}: its webhook signing secret (whsec_…), if it has a webhook_url",
                service.name
            ),
            service.webhook_url.is_some(),
        ));
    }
    vars.push(var(
        super::API_WEBHOOK_SECRET_ENV,
        "the signing secret (whsec_…) of activity reports POSTed to /v1/activity",
        false,
    ));
    vars.push(var(
        super::API_WORKOS_SECRET_ENV,
        "the secret WorkOS signs its events to /v1/activity with, if WorkOS reports activity",
        false,
    ));
    vars.push(var(
        super::CONSOLE_SECRET_ENV,
        "signs console sessions (32+ random characters); unset, sessions end when lethe restarts",
        false,
    ));
    let mut seen = std::collections::HashSet::new();
    vars.retain(|v| seen.insert(v.name.clone()));
    vars.sort_by_key(|v| !v.required);
    vars
}

/// An environment file (`NAME=value` lines, as `docker --env-file` and systemd's
/// `EnvironmentFile` read) with every variable commented out and explained.
pub fn env_file(vars: &[EnvVar]) -> String {
    let mut text = String::from(
        "# Secrets of this deployment. Keep this file out of version control; fill in the\n\
         # values, uncomment the lines and load it into lethe's environment (e.g.\n\
         # `set -a; . ./lethe.env; set +a`, docker --env-file, systemd EnvironmentFile).\n",
    );
    for v in vars {
        let need = if v.required { "required" } else { "optional" };
        text.push_str(&format!("\n# {need}: {}\n# {}=\n", v.what, v.name));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edx() -> Pipeline {
        let (_, pipeline) = crate::config::Config::from_texts(
            "states.toml",
            crate::config::preset::EDX_STATES,
            "pipeline.toml",
            crate::config::preset::EDX_PIPELINE,
        )
        .expect("the edX preset parses");
        pipeline
    }

    #[test]
    fn the_edx_preset_names_every_secret_it_reads() {
        let names: Vec<String> = environment(&edx()).into_iter().map(|v| v.name).collect();
        for expected in [
            "LETHE_HASH_KEY",
            "LETHE_SOURCE_URL",
            "LETHE_TARGET_EDX_URL",
            "LETHE_SARBACANE_ACCOUNT_ID",
            "LETHE_SARBACANE_API_KEY",
            "LETHE_SMTP_PASSWORD",
            "LETHE_SERVICE_JOANIE_SECRET",
            "LETHE_SERVICE_ASHLEY_SECRET",
        ] {
            assert!(
                names.contains(&expected.to_string()),
                "{expected}: {names:?}"
            );
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }

    #[test]
    fn required_come_first_and_the_file_comments_every_one_out() {
        let vars = environment(&edx());
        let first_optional = vars.iter().position(|v| !v.required).unwrap_or(vars.len());
        assert!(vars[first_optional..].iter().all(|v| !v.required));
        // The preset's store is SQLite in the file: LETHE_STORE_URL is optional there.
        assert!(
            vars.iter()
                .any(|v| v.name == "LETHE_STORE_URL" && !v.required)
        );
        let text = env_file(&vars);
        for v in &vars {
            assert!(text.contains(&format!("\n# {}=\n", v.name)), "{}", v.name);
        }
        assert!(
            text.lines().all(|l| l.is_empty() || l.starts_with('#')),
            "every line is a comment"
        );
    }
}
