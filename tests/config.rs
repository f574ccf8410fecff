//! Config validation: every error names the file, the key, the bad value and what is allowed.

mod common;

use common::{STATES, noop_pipeline};
use lethe::config::Config;

fn pipeline_error(pipeline: &str) -> String {
    Config::from_texts("states.toml", STATES, "pipeline.toml", pipeline)
        .unwrap_err()
        .to_string()
}

fn states_error(states: &str) -> String {
    Config::from_texts(
        "states.toml",
        states,
        "pipeline.toml",
        &noop_pipeline("", ""),
    )
    .unwrap_err()
    .to_string()
}

#[tokio::test]
async fn the_shipped_edx_preset_is_valid() {
    let root = common::repo_root();
    let config = Config::load(&root.join("states.toml"), &root.join("pipeline.toml")).unwrap();
    assert_eq!(config.graph.initial(), "PENDING");
    assert_eq!(config.pipeline.driver.max_lost_leases, 24);
    let (_, default) = common::config(&noop_pipeline("", ""));
    assert_eq!(default.driver.max_lost_leases, 9, "3 x max_attempts");
    assert_eq!(config.pipeline.stages.len(), 6);
    let kinds: Vec<String> = config
        .pipeline
        .stages
        .iter()
        .map(|s| s.kind.to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "email",
            "grace",
            "sql_delete",
            "sarbacane",
            "notify",
            "email"
        ]
    );
    // Every stage of the preset has its handler: building stops only at what the
    // environment must give (the source's URL first), naming it.
    let err = lethe::stages::build(&config.pipeline)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(!err.contains("not implemented"), "{err}");
    assert!(err.contains("LETHE_SOURCE_URL"), "{err}");
}

#[test]
fn every_built_in_preset_is_valid_and_the_edx_one_is_the_repositorys() {
    use lethe::config::preset::{self, Preset};
    let root = common::repo_root();
    for (name, kind) in Preset::ALL {
        let files = kind.files();
        let text = |file: &str| files.iter().find(|(p, _)| *p == file).unwrap().1;
        let (graph, pipeline) = Config::from_texts(
            "states.toml",
            text("states.toml"),
            "pipeline.toml",
            text("pipeline.toml"),
        )
        .unwrap_or_else(|e| panic!("preset {name}: {e}"));
        assert_eq!(pipeline.stages.len(), graph.working().len(), "{name}");
        assert_eq!(files.len(), 2 + preset::TEMPLATES.len());
    }
    let shipped = std::fs::read_to_string(root.join("pipeline.toml")).unwrap();
    assert_eq!(preset::EDX_PIPELINE, shipped);
}

#[test]
fn email_and_grace_settings_are_checked() {
    let email = "[email]\nfrom = \"noreply@example.org\"\ntls = \"none\"\n";
    let with = |pending: &str, warned: &str, extra: &str| {
        noop_pipeline("", extra)
            .replacen(
                "state = \"PENDING\"\nhandler = \"noop\"",
                &format!("state = \"PENDING\"\n{pending}"),
                1,
            )
            .replacen(
                "state = \"WARNED\"\nhandler = \"noop\"",
                &format!("state = \"WARNED\"\n{warned}"),
                1,
            )
    };
    let noop = "handler = \"noop\"";
    let grace = "handler = \"grace\"\nrecheck = false";
    let err = pipeline_error(&with(
        "handler = \"email\"\ntemplate = \"warning\"",
        noop,
        "",
    ));
    assert!(err.contains("needs an [email] section"), "{err}");
    let err = pipeline_error(&with("handler = \"email\"", noop, email));
    assert!(err.contains("missing field `template`"), "{err}");
    let err = pipeline_error(&with(
        noop,
        "handler = \"grace\"\nreminders = [\"30d\"]\nrecheck = false",
        email,
    ));
    assert!(err.contains("reminders = \"30d\": a reminder is sent this long before the end of the grace period, which is 30d"), "{err}");
    let err = pipeline_error(&with(noop, "handler = \"grace\"", email));
    assert!(
        err.contains("recheck = \"true\": re-checking activity needs a [source]"),
        "{err}"
    );
    let err = pipeline_error(&with(
        noop,
        grace,
        &email.replace("noreply@example.org", "not an address"),
    ));
    assert!(
        err.contains("email.from = \"not an address\": not an address"),
        "{err}"
    );
    pipeline_error(&with(
        noop,
        "handler = \"grace\"\nrecheck = false\nreminder = [\"7d\"]",
        email,
    ))
    .contains("stage[2].reminder: unknown setting for handler grace (allowed: reminders, reminder_template, recheck)")
    .then_some(())
    .expect("a misspelt grace setting is refused");
}

#[test]
fn a_stage_for_an_unknown_state_names_file_key_value_and_known_states() {
    let text = noop_pipeline("", "").replace("\"RETIRING_EDX\"", "\"RETIRNG_EDX\"");
    assert_eq!(
        pipeline_error(&text),
        "pipeline.toml: stage[3].state = \"RETIRNG_EDX\": no such state in states.toml (known: PENDING, WARNED, RETIRING_EDX, RETIRING_SARBACANE, NOTIFIED, COMPLETE, ERRORED, ABORTED)"
    );
}

#[test]
fn stage_problems_are_named() {
    let base = noop_pipeline("", "");
    let cases = [
        (
            base.replacen("handler = \"noop\"", "handler = \"emial\"", 1),
            "stage[1].handler = \"emial\": unknown handler kind (known: email, grace, sql_delete, sarbacane, http, notify, noop)",
        ),
        (
            format!("{base}[[stage]]\nstate = \"COMPLETE\"\nhandler = \"noop\"\n"),
            "stage[6].state = \"COMPLETE\": COMPLETE is an end state and takes no stage",
        ),
        (
            format!("{base}[[stage]]\nstate = \"WARNED\"\nhandler = \"noop\"\n"),
            "stage[6].state = \"WARNED\": WARNED already has a stage (stage[2])",
        ),
        (
            base.replacen("[[stage]]\nstate = \"WARNED\"\nhandler = \"noop\"\n", "", 1),
            "state WARNED has no stage",
        ),
        (
            base.replacen("state = \"PENDING\"\n", "", 1),
            "stage[1].state: missing",
        ),
        (
            base.replacen("state = \"PENDING\"", "state = 3", 1),
            "stage[1].state: expected a string",
        ),
        (
            base.replacen(
                "handler = \"noop\"",
                "handler = \"noop\"\ndelay = \"fast\"",
                1,
            ),
            "stage[1].delay: \"fast\"",
        ),
        (
            base.replacen(
                "handler = \"noop\"",
                "handler = \"noop\"\ncolour = \"red\"",
                1,
            ),
            "stage[1].colour: unknown setting for handler noop (allowed: delay)",
        ),
    ];
    for (text, expected) in cases {
        let err = pipeline_error(&text);
        assert!(err.starts_with("pipeline.toml: "), "{err}");
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
}

#[test]
fn policy_and_driver_values_are_checked() {
    let cases = [
        (
            noop_pipeline("", "batch_size = 0"),
            "driver.batch_size: 0 is out of range (allowed: 1 to 10000)",
        ),
        (
            noop_pipeline("", "concurrency = 500"),
            "driver.concurrency: 500 is out of range (allowed: 1 to 64)",
        ),
        (
            noop_pipeline("", "lease = \"10ms\""),
            "driver.lease = \"10ms\": must be at least 1s",
        ),
        (
            noop_pipeline("", "shutdown_grace = \"10ms\""),
            "driver.shutdown_grace = \"10ms\": must be at least 100ms",
        ),
        (
            noop_pipeline("", "max_lost_leases = 0"),
            "driver.max_lost_leases: 0 is out of range (allowed: 1 to 10000)",
        ),
        (
            noop_pipeline("", "lease = \"5 minutes\""),
            "unknown unit \" minutes\"",
        ),
        (
            noop_pipeline("", "").replace("max_attempts = 3", "max_attempts = 0"),
            "policy.max_attempts: 0 is out of range (allowed: 1 to 1000)",
        ),
        (
            noop_pipeline("", "").replace("retry_cap = \"1h\"", "retry_cap = \"10s\""),
            "policy.retry_cap = \"10s\": must be at least policy.retry_base (1m)",
        ),
        (
            noop_pipeline("", "").replace("[policy]", "[policy]\ninactive_after = \"2h\""),
            "policy.inactive_after = \"2h\": must be at least 1d",
        ),
        (
            format!("[store]\nurl = \"mysql://x/y\"\n{}", noop_pipeline("", "")),
            "store.url = \"mysql://x/y\": unsupported store URL",
        ),
        (
            format!("[sauce]\nx = 1\n{}", noop_pipeline("", "")),
            "unknown field `sauce`",
        ),
        (
            noop_pipeline("", "").replace("[policy]", "[policy]\npased = true"),
            "unknown field `pased`",
        ),
        ("stage = [".to_string(), "pipeline.toml: TOML parse error"),
    ];
    for (text, expected) in cases {
        let err = pipeline_error(&text);
        assert!(err.starts_with("pipeline.toml: "), "{err}");
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
}

#[test]
fn states_problems_are_named() {
    let cases = [
        (String::new(), "states.toml: state: no state declared"),
        (
            STATES.replace("\"PENDING\"", "\"pending\""),
            "states.toml: state[1].name = \"pending\": a state name is 1 to 64 upper-case letters",
        ),
        (
            STATES.replace("\"WARNED\"", "\"PENDING\""),
            "state[2].name = \"PENDING\": declared twice (first at state[1])",
        ),
        (
            STATES.replace("role = \"errored\"", "role = \"complete\""),
            "state[7].role = \"complete\": already the role of COMPLETE",
        ),
        (
            STATES.replace("role = \"aborted\"\n", ""),
            "no state has role = \"aborted\"",
        ),
        (
            STATES.replace("role = \"errored\"", "role = \"broken\""),
            "unknown variant `broken`, expected one of `complete`, `errored`, `aborted`",
        ),
    ];
    for (text, expected) in cases {
        let err = states_error(&text);
        assert!(err.starts_with("states.toml: "), "{err}");
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
}

#[test]
fn stages_follow_the_order_of_states_toml() {
    let mut text = noop_pipeline("", "");
    text = text.replacen(
        "[[stage]]\nstate = \"PENDING\"\nhandler = \"noop\"\n",
        "",
        1,
    );
    text.push_str("[[stage]]\nstate = \"PENDING\"\nhandler = \"noop\"\n");
    let (_, pipeline) = Config::from_texts("states.toml", STATES, "pipeline.toml", &text).unwrap();
    assert_eq!(pipeline.stages[0].state, "PENDING");
}

#[test]
fn a_targets_placeholder_account_is_allow_listed_and_its_exclusions_follow_the_users_table() {
    let text = format!(
        "{}[source]\nallow_ids = [3]\n[[target]]\nname = \"edx\"\nreassign_to = 7\n[[target]]\nname = \"forum\"\nroot_table = \"forum_user\"\n",
        noop_pipeline("", "")
    );
    let (_, pipeline) = common::config(&text);
    let source = pipeline.source.as_ref().unwrap();
    assert_eq!(source.allow_ids, [3, 7]);
    // The edX target shares the source's users table: its transaction re-checks them.
    assert!(pipeline.targets[0].exclusions.is_some());
    assert!(pipeline.targets[1].exclusions.is_none());
    assert!(
        pipeline_error(&text.replace("reassign_to = 7", "reassign_to = 0"))
            .contains("target[1].reassign_to = \"0\""),
        "{}",
        pipeline_error(&text.replace("reassign_to = 7", "reassign_to = 0"))
    );
}

#[test]
fn the_environment_applies_only_when_asked_and_is_checked() {
    let text = format!(
        "{}[source]\nurl = \"sqlite://users.db\"\n[[target]]\nname = \"edx\"\nurl = \"sqlite://edx.db\"\n[email]\nfrom = \"noreply@example.org\"\n",
        noop_pipeline("", "")
    );
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    let (_, parsed) = common::config(&text);
    let mut pipeline = parsed.clone();
    // Parsing alone never reads the process environment.
    assert_eq!(pipeline.targets[0].url.as_deref(), Some("sqlite://edx.db"));
    pipeline
        .apply_env(&env(&[
            ("LETHE_TARGET_EDX_URL", "mysql://root@127.0.0.1/edx"),
            ("LETHE_SOURCE_URL", "mysql://root@127.0.0.1/users"),
            ("LETHE_SMTP_HOST", "smtp.example.org"),
            ("LETHE_SMTP_USERNAME", "lethe"),
            ("LETHE_SMTP_PASSWORD", "secret"),
        ]))
        .unwrap();
    assert_eq!(
        pipeline.targets[0].url.as_deref(),
        Some("mysql://root@127.0.0.1/edx")
    );
    let source = pipeline.source.as_ref().unwrap();
    assert_eq!(source.url.as_deref(), Some("mysql://root@127.0.0.1/users"));
    let email = pipeline.email.as_ref().unwrap();
    assert_eq!(email.host, "smtp.example.org");
    assert_eq!(email.password.as_deref(), Some("secret"));

    let err = parsed
        .clone()
        .apply_env(&env(&[("LETHE_TARGET_EDX_URL", "oracle://u:pw@h/db")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("environment: LETHE_TARGET_EDX_URL = \"oracle://u:***@h/db\": unsupported"),
        "{err}"
    );
    let err = parsed
        .clone()
        .apply_env(&env(&[("LETHE_SMTP_USERNAME", "lethe")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("set both LETHE_SMTP_USERNAME and LETHE_SMTP_PASSWORD"),
        "{err}"
    );
}

#[test]
fn absurd_durations_are_refused_naming_the_key() {
    for (policy, driver, key) in [
        ("", "lease = \"99999d\"", "lease = \"99999d\""),
        ("grace_period = \"40000d\"", "", "grace_period = \"40000d\""),
    ] {
        let err = pipeline_error(&noop_pipeline(policy, driver));
        assert!(err.contains(key) && err.contains("at most 36500d"), "{err}");
    }
}

#[test]
fn names_that_would_share_a_secret_are_refused() {
    let err = pipeline_error(&format!(
        "{}[[service]]\nname = \"a-b\"\n[[service]]\nname = \"a_b\"\n",
        noop_pipeline("", "")
    ));
    assert!(
        err.contains("service[2].name = \"a_b\": its secret would be LETHE_SERVICE_A_B_SECRET, as service a-b's"),
        "{err}"
    );
    let http = |state: &str, name: &str| {
        format!(
            "state = \"{state}\"\nhandler = \"http\"\nname = \"{name}\"\nurl = \"https://x.org/{{{{ subject }}}}\""
        )
    };
    let text = noop_pipeline("", "")
        .replace(
            "state = \"RETIRING_EDX\"\nhandler = \"noop\"",
            &http("RETIRING_EDX", "crm"),
        )
        .replace(
            "state = \"RETIRING_SARBACANE\"\nhandler = \"noop\"",
            &http("RETIRING_SARBACANE", "CRM"),
        );
    let err = pipeline_error(&text);
    assert!(
        err.contains("stage for RETIRING_SARBACANE.name = \"CRM\": the http stage for RETIRING_EDX has this name already"),
        "{err}"
    );
}

#[test]
fn a_service_cannot_share_a_name_with_one_of_lethes_own_stages() {
    let text = noop_pipeline("", "").replace(
        "state = \"RETIRING_SARBACANE\"\nhandler = \"noop\"",
        "state = \"RETIRING_SARBACANE\"\nhandler = \"sarbacane\"",
    );
    let err = pipeline_error(&format!("{text}[[service]]\nname = \"Sarbacane\"\n"));
    assert!(
        err.contains("service[1].name = \"Sarbacane\": the stage for RETIRING_SARBACANE is listed as sarbacane already"),
        "{err}"
    );
}

#[test]
fn the_store_url_of_a_pipeline_read_alone_is_an_error_when_the_file_is_not_toml() {
    use lethe::config::store_url_in;
    assert_eq!(
        store_url_in("p.toml", "[store]\nurl = \"sqlite://x.db\"\n").unwrap(),
        Some("sqlite://x.db".to_string())
    );
    assert_eq!(store_url_in("p.toml", "[policy]\n").unwrap(), None);
    let broken = store_url_in("p.toml", "[store\nurl = 1")
        .unwrap_err()
        .to_string();
    assert!(broken.starts_with("p.toml:"), "{broken}");
    let typed = store_url_in("p.toml", "[store]\nurl = 5\n")
        .unwrap_err()
        .to_string();
    assert!(typed.contains("store.url"), "{typed}");

    // A reading command on a broken pipeline.toml says so, instead of opening the default.
    let dir = std::env::temp_dir().join(format!("lethe-store-url-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pipeline.toml"), "[store\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
        .current_dir(&dir)
        .arg("stats")
        .env_remove("LETHE_STORE_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let created_default = dir.join("lethe.db").exists();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pipeline.toml"), "{stderr}");
    assert!(!created_default, "no default store opened");
}

#[test]
fn rules_and_notice_policies_are_checked_against_each_other() {
    let with = |extra: &str| format!("{}\n[source]\n{extra}", noop_pipeline("", ""));
    let err = pipeline_error(&with("[[rule]]\nname = \"stale\"\n"));
    assert!(
        err.starts_with("pipeline.toml: rule[1].reason = \"stale\": no notice policy for this reason: add [notice.stale]"),
        "{err}"
    );
    let err = pipeline_error(&with(
        "[[rule]]\nname = \"inactive\"\n[[rule]]\nname = \"Inactive\"\n",
    ));
    assert!(
        err.starts_with(
            "pipeline.toml: rule[2].name = \"Inactive\": rule[1] has this name already"
        ),
        "{err}"
    );
    // A required notice needs its template and a stage that records it.
    let err = pipeline_error(&with("[notice.stale]\ngrace_period = \"7d\"\n"));
    assert!(err.contains("notice.stale.template"), "{err}");
    let err = pipeline_error(&with(
        "[notice.stale]\ntemplate = \"warning\"\ngrace_period = \"7d\"\n",
    ));
    assert!(err.contains("notice.stale.required"), "{err}");
    let err = pipeline_error(&with(
        "[notice.requested]\nrequired = false\ngrace_period = \"7d\"\n",
    ));
    assert!(
        err.contains("notice.requested.grace_period") && err.contains("cool_off"),
        "{err}"
    );
    let err = pipeline_error(&with("[notice.inactive]\ncool_off = \"7d\"\n"));
    assert!(err.contains("notice.inactive.cool_off"), "{err}");
    // Another reason's reminders name their own template (not the inactivity wording).
    let err = pipeline_error(&with(
        "[notice.requested]\nrequired = false\nreminders = [\"1d\"]\n",
    ));
    assert!(err.contains("notice.requested.reminders"), "{err}");
    // A rule whose reason needs a notice in a pipeline that never sends one.
    let err = pipeline_error(&with("[[rule]]\nname = \"inactive\"\n"));
    assert!(
        err.contains("rule[1].reason = \"inactive\": this reason requires a notice"),
        "{err}"
    );
    // A rule without a [source] to select from.
    let err = pipeline_error(&format!(
        "{}\n[[rule]]\nname = \"x\"\n",
        noop_pipeline("", "")
    ));
    assert!(err.contains("rule[1]") && err.contains("[source]"), "{err}");
}

#[test]
fn a_template_a_reasons_policy_names_must_exist() {
    let root = common::repo_root();
    let text = std::fs::read_to_string(root.join("pipeline.toml"))
        .unwrap()
        .replace(
            "deleted_template = \"deleted_unverified\"",
            "deleted_template = \"deleted_unconfirmed\"",
        )
        .replace(
            "host = \"localhost\"",
            &format!(
                "host = \"localhost\"\ntemplates = \"{}\"",
                root.join("templates").display()
            ),
        );
    let states = std::fs::read_to_string(root.join("states.toml")).unwrap();
    let (_, pipeline) = Config::from_texts("states.toml", &states, "pipeline.toml", &text).unwrap();
    let err = lethe::stages::load_templates(&pipeline)
        .unwrap_err()
        .to_string();
    assert!(err.contains("deleted_unconfirmed"), "{err}");
}

#[tokio::test]
async fn a_rules_predicate_on_an_unknown_column_is_refused_at_start_by_name() {
    // MariaDB: SQLite reads an unknown double-quoted name as a string and accepts it.
    let db = common::target::Fixture::new(lethe::sql::Dialect::MySql).await;
    let text = format!(
        "{}\n[source]\nurl = \"{}\"\n[[rule]]\nname = \"inactive\"\nreason = \"stale\"\nwhere = \"no_such_column = 1\"\n\
         [[rule]]\nname = \"unverified\"\nselect = \"unverified\"\n\
         [notice.unverified]\nrequired = false\n[notice.stale]\nrequired = false\n",
        noop_pipeline("", ""),
        db.url
    );
    let (_, pipeline) = common::config(&text);
    let source = pipeline.source.clone().unwrap();
    let err = lethe::sql::source::SourceReader::connect_for(&source, &pipeline.rules)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("the `where` of rule \"inactive\" (\"no_such_column = 1\") does not work"),
        "{err}"
    );
    // The verified column is checked when a rule reads it.
    let mut renamed = source.clone();
    renamed.verified_column = "confirmed".into();
    let err = lethe::sql::source::SourceReader::connect_for(&renamed, &pipeline.rules[1..])
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("source.verified_column auth_user.confirmed"),
        "{err}"
    );
}
