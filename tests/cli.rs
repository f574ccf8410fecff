//! Each CLI command and its exit codes: 0 ok, 1 runtime failure, 2 usage or config error,
//! 3 not found or refused. Runs the binary on a SQLite store in a temp directory.

mod common;

use common::{STATES, config, noop_pipeline};
use lethe::domain::{Outcome, StageResult, plan_outcome};
use lethe::store::Applied;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

struct Workdir {
    dir: PathBuf,
}

impl Workdir {
    fn new(name: &str) -> Workdir {
        let dir = std::env::temp_dir().join(format!("lethe-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("states.toml"), STATES).unwrap();
        let w = Workdir { dir };
        w.make_source();
        w.write_pipeline(&noop_pipeline("", ""));
        w
    }

    /// A SQLite source of truth: users 1 to 40, 42 staff, 43 allow-listed by id, 44 by
    /// the domain of its email.
    fn make_source(&self) {
        let url = format!("sqlite://{}?mode=rwc", self.dir.join("source.db").display());
        let mut statements = vec![
            "CREATE TABLE auth_user (id INTEGER PRIMARY KEY, email TEXT, username TEXT, \
             last_login TEXT, date_joined TEXT NOT NULL, is_staff INTEGER NOT NULL DEFAULT 0, \
             is_superuser INTEGER NOT NULL DEFAULT 0)"
                .to_string(),
        ];
        for id in (1..=40).chain([43]) {
            statements.push(format!(
                "INSERT INTO auth_user (id, email, username, date_joined) \
                 VALUES ({id}, 'user{id}@example.org', 'user{id}', '2015-01-01 00:00:00')"
            ));
        }
        statements.push(
            "INSERT INTO auth_user (id, email, username, date_joined, is_staff) \
             VALUES (42, 'staff@example.org', 'staff', '2015-01-01 00:00:00', 1)"
                .into(),
        );
        statements.push(
            "INSERT INTO auth_user (id, email, username, date_joined) \
             VALUES (44, 'ops@staff.example.org', 'ops', '2015-01-01 00:00:00')"
                .into(),
        );
        // Outside any runtime a test may be in: a thread with its own.
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(common::exec(&url, &statements))
        })
        .join()
        .unwrap();
    }

    /// The `[source]` section of the test source.
    fn source_section(&self) -> String {
        format!(
            "\n[source]\nurl = \"sqlite://{}\"\nallow_ids = [43]\nallow_domains = [\"staff.example.org\"]\nmax_new_share = 1.0\n",
            self.dir.join("source.db").display()
        )
    }

    /// Writes pipeline.toml: `text` plus the test source.
    fn write_pipeline(&self, text: &str) {
        std::fs::write(
            self.dir.join("pipeline.toml"),
            format!("{text}{}", self.source_section()),
        )
        .unwrap();
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.dir.join("lethe.db").display())
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_lethe"))
            .current_dir(&self.dir)
            .args(args)
            .env("LETHE_HASH_KEY", "test-key-0123456789")
            .env("LETHE_OPERATOR", "alice")
            .env_remove("LETHE_STORE_URL")
            .env_remove("LETHE_SOURCE_URL")
            .env_remove("LETHE_SARBACANE_ACCOUNT_ID")
            .env_remove("LETHE_SARBACANE_API_KEY")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).unwrap()
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn check_accepts_the_shipped_preset_and_names_missing_secrets() {
    let w = Workdir::new("check");
    let root = common::repo_root();
    let out = w.ok(&[
        "check",
        "--config",
        root.join("pipeline.toml").to_str().unwrap(),
        "--states",
        root.join("states.toml").to_str().unwrap(),
    ]);
    assert!(
        out.contains("PENDING              -> email      ok")
            && out.contains("RETIRING_SARBACANE   -> sarbacane  ok")
            && out.contains("NOTIFIED             -> notify     ok")
            && out.contains("warning: LETHE_SARBACANE_API_KEY is not set"),
        "{out}"
    );
    assert!(
        out.contains("RETIRING_EDX         -> sql_delete ok")
            && out.contains("template warning: ok in en, fr")
            && out.contains("template reminder: ok in en, fr")
            && out.contains("config valid")
            && !out.contains("NOT IMPLEMENTED"),
        "{out}"
    );
    // run refuses to start without what the environment must give (here the source's URL,
    // the first one it needs) rather than skipping a stage.
    let err = w.fails(
        &[
            "run",
            "--once",
            "--config",
            root.join("pipeline.toml").to_str().unwrap(),
            "--states",
            root.join("states.toml").to_str().unwrap(),
        ],
        2,
    );
    assert!(err.contains("LETHE_SOURCE_URL"), "{err}");
}

#[test]
fn bad_config_and_usage_exit_2() {
    let w = Workdir::new("badconfig");
    std::fs::write(
        w.dir.join("pipeline.toml"),
        noop_pipeline("", "").replace("\"RETIRING_EDX\"", "\"RETIRNG_EDX\""),
    )
    .unwrap();
    let err = w.fails(&["check"], 2);
    assert!(err.contains("pipeline.toml: stage[3].state = \"RETIRNG_EDX\": no such state in states.toml (known: PENDING, WARNED"), "{err}");
    let err = w.fails(&["check", "--config", "missing.toml"], 2);
    assert!(err.contains("missing.toml: cannot read"), "{err}");
    w.fails(&["frobnicate"], 2);
    w.fails(&["abort", "1"], 2); // --reason is required
    let err = w.fails(&["status", "x", "--store", "mysql://h/db"], 2);
    assert!(err.contains("unsupported store URL"), "{err}");
}

#[test]
fn the_daemon_refuses_to_start_without_a_hash_key() {
    let w = Workdir::new("nokey");
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .current_dir(&w.dir)
        .args(["run", "--once"])
        .env_remove("LETHE_HASH_KEY")
        .env_remove("LETHE_STORE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("LETHE_HASH_KEY is not set"));
}

#[test]
fn enqueue_status_list_stats_run_and_audit() {
    let w = Workdir::new("flow");
    w.ok(&["migrate"]);
    std::fs::write(
        w.dir.join("subjects.csv"),
        "subject,email,username\n10,ten@example.org,ten\n11,eleven@example.org\n# a comment\n\n",
    )
    .unwrap();
    let out = w.ok(&[
        "enqueue",
        "1",
        "2",
        "--reason",
        "inactive",
        "--from-file",
        "subjects.csv",
    ]);
    assert!(out.contains("4 enqueued, 0 already open"), "{out}");
    let out = w.ok(&["enqueue", "2"]);
    assert!(out.contains("2: already open as #2"), "{out}");
    assert!(out.contains("0 enqueued, 1 already open"), "{out}");
    w.fails(&["enqueue", "3", "--reason", "bored"], 2);
    w.fails(&["enqueue"], 2);

    let stats = w.ok(&["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["PENDING"], 4);
    assert_eq!(stats["COMPLETE"], 0);

    let list = w.ok(&["list", "--state", "PENDING", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 4);
    w.fails(&["list", "--state", "NOPE"], 2);

    let status = w.ok(&["status", "ten@example.org"]);
    assert!(status.contains("subject      10"), "{status}");
    assert!(status.contains("state        PENDING"), "{status}");
    assert!(
        !status.contains("ten@example.org"),
        "status never prints the email"
    );
    w.fails(&["status", "999"], 3);
    w.fails(&["status", "#999"], 3);

    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .current_dir(&w.dir)
        .args(["run", "--once", "--json", "--log-json"])
        .env("LETHE_HASH_KEY", "test-key-0123456789")
        .env("LETHE_LOG", "trace")
        .env_remove("LETHE_STORE_URL")
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["applied"], 20);
    let logs = String::from_utf8(out.stderr).unwrap();
    assert!(logs.lines().count() >= 2, "{logs}");
    for line in logs.lines() {
        let _: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            !line.contains("@example.org"),
            "an email in the logs: {line}"
        );
        assert!(
            !line.contains("\"eleven\""),
            "a username in the logs: {line}"
        );
    }

    let status = w.ok(&["status", "10", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["retirement"]["state"], "COMPLETE");
    assert_eq!(status["retirement"]["subject"], serde_json::Value::Null);
    assert_eq!(status["events"].as_array().unwrap().len(), 6);

    let csv = w.ok(&[
        "audit",
        "--format",
        "csv",
        "--subject",
        "eleven@example.org",
    ]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 7, "{csv}");
    assert!(lines[0].starts_with("event_id,at,retirement_id"));
    assert!(
        lines[1].contains(",enqueued,0,operator:alice,"),
        "{}",
        lines[1]
    );
    let json = w.ok(&[
        "audit",
        "--format",
        "json",
        "--since",
        "2000-01-01",
        "--until",
        "2999-01-01",
    ]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 24);
    let table = w.ok(&["audit", "--subject", "1"]);
    assert_eq!(table.lines().count(), 7, "{table}");
    w.fails(&["audit", "--since", "yesterday"], 2);
    let none = w.ok(&["audit", "--json", "--since", "2999-01-01"]);
    assert_eq!(none.trim(), "[]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_and_abort_exit_codes() {
    let w = Workdir::new("ops");
    w.ok(&["migrate"]);
    w.ok(&["enqueue", "1", "2", "3"]);
    // Park subject 1 in ERRORED, as a failing handler would.
    let (graph, pipeline) = config(&noop_pipeline("", ""));
    let store = lethe::store::open(&w.url(), 1).await.unwrap();
    let now = chrono::Utc::now();
    let claimed = store
        .claim("t", now, Duration::from_secs(60), 1)
        .await
        .unwrap();
    let failed = Applied {
        relay: None,
        carried: Vec::new(),
        id: claimed[0].id,
        from_state: claimed[0].state.clone(),
        attempt: claimed[0].attempt,
        transition: plan_outcome(
            &graph,
            &pipeline.policy.retry,
            3,
            &claimed[0].state,
            claimed[0].attempt,
            &StageResult::new(Outcome::Fail {
                error: "protected: wiki_article.owner_id".into(),
            }),
            now,
            1,
        ),
    };
    assert_eq!(
        store.write_back("t", &[failed], now).await.unwrap().len(),
        1
    );

    let status = w.ok(&["status", "1"]);
    assert!(status.contains("state        ERRORED"), "{status}");
    assert!(
        status.contains("protected: wiki_article.owner_id"),
        "{status}"
    );

    let err = w.fails(&["resume", "2"], 3);
    assert!(
        err.contains("refused: retirement #2: it is in state PENDING, not ERRORED"),
        "{err}"
    );
    let err = w.fails(&["resume", "1", "--to", "COMPLETE"], 3);
    assert!(err.contains("not a working state"), "{err}");
    let err = w.fails(&["resume", "1", "--to", "NOPE"], 2);
    assert!(
        err.contains("--to \"NOPE\": no such state in ./states.toml (working states: PENDING, WARNED, RETIRING_EDX, RETIRING_SARBACANE, NOTIFIED)"),
        "{err}"
    );
    let out = w.ok(&["resume", "1"]);
    assert!(out.contains("#1: now PENDING"), "{out}");
    w.fails(&["resume", "42"], 3);

    let out = w.ok(&["abort", "#2", "--reason", "asked by the user"]);
    assert!(out.contains("#2: now ABORTED"), "{out}");
    let err = w.fails(&["abort", "#2", "--reason", "again"], 3);
    assert!(err.contains("already ended in state ABORTED"), "{err}");
    let history = w.ok(&["status", "#2", "--json"]);
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    let last = history["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["outcome"], "abort");
    assert_eq!(last["actor"], "operator:alice");
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .contains("asked by the user")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_state_with_open_retirements_is_refused_by_name() {
    let w = Workdir::new("states");
    w.ok(&["migrate"]);
    w.ok(&["enqueue", "1", "2"]);
    std::fs::write(
        w.dir.join("states.toml"),
        STATES.replace("\"PENDING\"", "\"QUEUED\""),
    )
    .unwrap();
    std::fs::write(
        w.dir.join("pipeline.toml"),
        noop_pipeline("", "").replace("\"PENDING\"", "\"QUEUED\""),
    )
    .unwrap();
    let err = w.fails(&["migrate"], 3);
    assert!(
        err.contains("no longer declares state PENDING, but 2 open retirement(s)"),
        "{err}"
    );
}

#[test]
fn touch_cancels_before_deletion_and_refuses_after() {
    let w = Workdir::new("touch");
    // RETIRING_EDX deletes: activity no longer cancels from there on.
    w.write_pipeline(&format!(
        "{}\n[[target]]\nname = \"edx\"\nurl = \"mysql://127.0.0.1:1/none\"\n",
        noop_pipeline("", "").replace(
            "state = \"RETIRING_EDX\"\nhandler = \"noop\"",
            "state = \"RETIRING_EDX\"\nhandler = \"sql_delete\"\ntarget = \"edx\""
        )
    ));
    w.ok(&["migrate"]);
    w.ok(&["enqueue", "1", "2"]);
    let out = w.ok(&["touch", "1"]);
    assert!(out.contains("cancelled: now ABORTED"), "{out}");
    let history = w.ok(&["status", "1"]);
    assert!(history.contains("active again at"), "{history}");
    // Deletion started for 2: recorded, not cancelled.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(common::exec(
        &format!("{}?mode=rw", w.url()),
        &["UPDATE retirement SET state = 'RETIRING_EDX' WHERE subject = '2'"],
    ));
    let err = w.fails(&["touch", "2"], 3);
    assert!(
        err.contains("not cancelled: deletion has started (state RETIRING_EDX)"),
        "{err}"
    );
    let out = w.ok(&["touch", "3", "--at", "2026-01-01"]);
    assert!(out.contains("no open retirement"), "{out}");
    w.fails(&["touch", "3", "--at", "2999-01-01"], 2);
    let err = w.fails(&["touch", "someone@example.org"], 2);
    assert!(!err.contains("someone"), "the email is not echoed: {err}");
    let err = w.fails(&["touch", "1e3"], 2);
    assert!(err.contains("subject: \"1e3\" is not a subject"), "{err}");
}

#[test]
fn check_names_a_broken_template_and_an_unreachable_smtp_server() {
    let w = Workdir::new("smtpcheck");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::create_dir_all(w.dir.join("templates/en")).unwrap();
    let email = format!(
        "[email]\nhost = \"127.0.0.1\"\nport = {closed}\ntls = \"none\"\nfrom = \"noreply@example.org\"\nsite_name = \"Site\"\ntimeout = \"2s\"\n"
    );
    std::fs::write(
        w.dir.join("pipeline.toml"),
        noop_pipeline("", &email).replacen(
            "state = \"PENDING\"\nhandler = \"noop\"",
            "state = \"PENDING\"\nhandler = \"email\"\ntemplate = \"warning\"",
            1,
        ),
    )
    .unwrap();
    // A template with a misspelt variable: a config error naming the file and the variable.
    std::fs::write(
        w.dir.join("templates/en/warning.toml"),
        "subject = \"Hello {{ usrname }}\"\ntext = \"t\"\nhtml = \"h\"\n",
    )
    .unwrap();
    let err = w.fails(&["check"], 2);
    assert!(
        err.contains("templates/en/warning.toml: subject: unknown variable {{ usrname }}"),
        "{err}"
    );
    // A variable whose value is not configured.
    std::fs::write(
        w.dir.join("templates/en/warning.toml"),
        "subject = \"Hello\"\ntext = \"{{ login_url }}\"\nhtml = \"h\"\n",
    )
    .unwrap();
    let err = w.fails(&["check"], 2);
    assert!(err.contains("email.login_url is not set"), "{err}");
    // Valid templates; the server is down: check --connect says so, exit 1.
    std::fs::write(
        w.dir.join("templates/en/warning.toml"),
        "subject = \"Hello {{ username }}\"\ntext = \"t\"\nhtml = \"h\"\n",
    )
    .unwrap();
    let out = w.ok(&["check"]);
    assert!(out.contains("template warning: ok in en"), "{out}");
    w.ok(&["migrate"]);
    let err = w.fails(&["check", "--connect"], 1);
    assert!(
        err.contains(&format!("cannot reach the SMTP server 127.0.0.1:{closed}")),
        "{err}"
    );
}

#[test]
fn enqueue_refuses_excluded_subjects_unless_overridden_for_one() {
    let w = Workdir::new("exclude");
    w.ok(&["migrate"]);
    // 42 is staff, 43 allow-listed by id, 44 by its email's domain: refused by name and
    // rule (exit 3); 1 is enqueued all the same.
    let out = w.run(&["enqueue", "1", "42", "43", "44", "--reason", "requested"]);
    assert_eq!(out.status.code(), Some(3));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stdout.contains("1 enqueued, 0 already open, 3 refused"),
        "{stdout}"
    );
    for line in [
        "refused: subject 42: excluded by source.exclude",
        "refused: subject 43: excluded by source.allow_ids",
        "refused: subject 44: excluded by source.allow_domains",
        "3 of 4 subject(s) are excluded",
    ] {
        assert!(stderr.contains(line), "{line}: {stderr}");
    }
    assert!(!stderr.contains("@"), "no email in messages: {stderr}");
    w.ok(&["status", "1"]);
    w.fails(&["status", "42"], 3);
    // An email allow-listed in the given file counts too.
    std::fs::write(w.dir.join("one.csv"), "5,someone@staff.example.org\n").unwrap();
    let err = w.fails(&["enqueue", "--from-file", "one.csv"], 3);
    assert!(
        err.contains("subject 5: excluded by source.allow_domains"),
        "{err}"
    );
    // The override: one subject at a time, stored and recorded.
    let err = w.fails(&["enqueue", "42", "43", "--override-exclusion"], 2);
    assert!(err.contains("one subject at a time (2 given)"), "{err}");
    let out = w.ok(&[
        "enqueue",
        "42",
        "--override-exclusion",
        "--reason",
        "requested",
    ]);
    assert!(out.contains("42: enqueued as #"), "{out}");
    let status: serde_json::Value =
        serde_json::from_str(&w.ok(&["status", "42", "--json"])).unwrap();
    assert_eq!(status["retirement"]["exclusion_override"], true);
    assert_eq!(status["events"][0]["actor"], "operator:alice");
    assert!(
        status["events"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("\"exclusion_override\":true"),
        "{status}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&w.ok(&["status", "1", "--json"])).unwrap();
    assert_eq!(status["retirement"]["exclusion_override"], false);
    // Without a source the check cannot run: enqueue fails rather than skip it.
    std::fs::write(w.dir.join("pipeline.toml"), noop_pipeline("", "")).unwrap();
    let err = w.fails(&["enqueue", "7"], 2);
    assert!(err.contains("no [source] is configured"), "{err}");
    w.fails(&["status", "7"], 3);
    w.ok(&["enqueue", "7", "--override-exclusion"]);
}

#[test]
fn enqueue_refuses_subjects_that_are_not_keys_and_writes_nothing() {
    let w = Workdir::new("keys");
    w.ok(&["migrate"]);
    for bad in [
        "1; drop table x",
        "-5",
        "99999999999999999999",
        "1e3",
        "0",
        " ",
    ] {
        let err = w.fails(&["enqueue", "3", "--", bad], 2);
        assert!(err.contains("argument 2: "), "{bad}: {err}");
        assert!(err.contains("is not a subject"), "{bad}: {err}");
    }
    std::fs::write(w.dir.join("bad.csv"), "1\n2\n-5\n").unwrap();
    let err = w.fails(&["enqueue", "--from-file", "bad.csv"], 2);
    assert!(err.contains("bad.csv:3: \"-5\" is not a subject"), "{err}");
    let long_email = format!("{}@example.org", "a".repeat(290));
    std::fs::write(w.dir.join("email.csv"), format!("1,{long_email}\n")).unwrap();
    let err = w.fails(&["enqueue", "--from-file", "email.csv"], 2);
    assert!(
        err.contains("email.csv:1: the email is 302 characters long (at most 254)"),
        "{err}"
    );
    assert!(!err.contains("aaaa"), "the email is not echoed: {err}");
    std::fs::write(
        w.dir.join("user.csv"),
        format!("1,a@example.org,{}\n", "u".repeat(151)),
    )
    .unwrap();
    let err = w.fails(&["enqueue", "--from-file", "user.csv"], 2);
    assert!(
        err.contains("username is 151 characters long (at most 150)"),
        "{err}"
    );
    // A 10 MB line is not echoed back.
    std::fs::write(w.dir.join("huge.csv"), "9".repeat(10 << 20)).unwrap();
    let err = w.fails(&["enqueue", "--from-file", "huge.csv"], 2);
    assert!(err.len() < 500, "{} bytes of error", err.len());
    assert!(err.contains("(10485760 characters)"), "{err}");
    let stats: serde_json::Value = serde_json::from_str(&w.ok(&["stats", "--json"])).unwrap();
    assert_eq!(stats["PENDING"], 0, "nothing was written");
    // Long input: counts, not a line per subject.
    let ids: Vec<String> = (1..=30).map(|i| i.to_string()).collect();
    let mut args = vec!["enqueue"];
    args.extend(ids.iter().map(String::as_str));
    let out = w.ok(&args);
    assert!(!out.contains("enqueued as"), "{out}");
    assert!(
        out.contains("30 enqueued, 0 already open, 0 refused"),
        "{out}"
    );
    // A subject is normalised: 007 is subject 7, already open.
    let out = w.ok(&["enqueue", "007"]);
    assert!(out.contains("7: already open"), "{out}");
}

#[test]
fn commands_other_than_migrate_and_run_change_no_schema_and_create_no_file() {
    let w = Workdir::new("readonly");
    let db = w.dir.join("lethe.db");
    let commands: [&[&str]; 9] = [
        &["stats"],
        &["status", "1"],
        &["list"],
        &["audit"],
        &["check", "--connect"],
        &["enqueue", "1"],
        &["resume", "1"],
        &["abort", "1", "--reason", "r"],
        &["touch", "1"],
    ];
    for args in commands {
        let err = w.fails(args, 2);
        assert!(
            err.contains("the store lethe.db does not exist: run `lethe migrate`"),
            "{args:?}: {err}"
        );
        assert!(!db.exists(), "{args:?} created the store file");
    }
    // An empty database: no schema, and nothing migrates it behind the operator's back.
    std::fs::write(&db, "").unwrap();
    for args in commands {
        let err = w.fails(args, 2);
        assert!(
            err.contains("the store has no lethe schema yet: run `lethe migrate` first"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
    w.ok(&["migrate"]);
    assert!(
        w.ok(&["check", "--connect"])
            .contains("store: reachable and migrated")
    );
    w.ok(&["stats"]);
    // A store behind this release (a migration not applied) is refused by version.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(common::exec(
        &w.url(),
        &["DELETE FROM _sqlx_migrations WHERE version = 8"],
    ));
    let err = w.fails(&["stats"], 2);
    assert!(
        err.contains("migration(s) 8 (exclusion override) not applied: run `lethe migrate`"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_fails_on_a_postgres_store_that_is_not_migrated() {
    let db = common::TestDb::new(common::Kind::Postgres).await;
    let w = Workdir::new("pgcheck");
    let err = w.fails(&["check", "--connect", "--store", &db.url], 2);
    assert!(
        err.contains("no lethe schema yet: run `lethe migrate`"),
        "{err}"
    );
    w.fails(&["stats", "--store", &db.url], 2);
    w.ok(&["migrate", "--store", &db.url]);
    w.ok(&["check", "--connect", "--store", &db.url]);
    assert!(!w.dir.join("lethe.db").exists());
}

#[test]
fn an_unreachable_database_fails_fast_naming_its_cause_once() {
    let w = Workdir::new("unreachable");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fails_fast = |args: &[&str]| {
        let started = std::time::Instant::now();
        let err = w.fails(args, 1);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{args:?} took {:?}",
            started.elapsed()
        );
        assert_eq!(
            err.to_lowercase().matches("connection refused").count(),
            1,
            "{args:?}: {err}"
        );
        assert!(!err.contains("pool timed out"), "{args:?}: {err}");
        err
    };
    // The store.
    let store = format!("postgres://postgres@127.0.0.1:{closed}/lethe");
    let err = fails_fast(&["stats", "--store", &store]);
    assert!(
        err.contains(&format!("cannot open the store at {store}")),
        "{err}"
    );
    fails_fast(&["migrate", "--store", &store]);
    // The source (enqueue checks exclusions there) and a target.
    w.ok(&["migrate"]);
    std::fs::write(
        w.dir.join("pipeline.toml"),
        format!(
            "{}\n[source]\nurl = \"mysql://root@127.0.0.1:{closed}/edxapp\"\n\n[[target]]\nname = \"edx\"\nurl = \"mysql://root@127.0.0.1:{closed}/edxapp\"\n",
            noop_pipeline("", "")
        ),
    )
    .unwrap();
    let err = fails_fast(&["enqueue", "1"]);
    assert!(err.contains("source: cannot connect to"), "{err}");
    fails_fast(&["plan", "1"]);
}

#[test]
fn scan_dry_run_lists_every_candidate_in_json_and_says_how_many_are_not_shown() {
    let w = Workdir::new("dryrun");
    w.ok(&["migrate"]);
    // Users 1 to 40 never logged in (42, 43, 44 are excluded).
    let out = w.ok(&["scan", "--dry-run"]);
    assert!(out.contains("would enqueue 40; first ids: [1, 2,"), "{out}");
    assert!(
        out.contains("20 more not shown: `lethe scan --dry-run --json` lists every candidate"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&w.ok(&["scan", "--dry-run", "--json"])).unwrap();
    let candidates = json["rules"][0]["candidates"].as_array().unwrap();
    assert_eq!(json["rules"][0]["rule"], "inactive", "{json}");
    assert_eq!(candidates.len(), 40, "{json}");
    assert_eq!(candidates[39]["id"], 40);
    assert_eq!(
        candidates[0]["why"],
        "never logged in since 2015-01-01 00:00:00"
    );
    let stats: serde_json::Value = serde_json::from_str(&w.ok(&["stats", "--json"])).unwrap();
    assert_eq!(stats["PENDING"], 0, "a dry run writes nothing");
}

#[test]
fn check_connect_reports_but_does_not_fail_an_unreachable_smtp_server_no_stage_uses() {
    let w = Workdir::new("smtpunused");
    w.ok(&["migrate"]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let email = format!(
        "[email]\nhost = \"127.0.0.1\"\nport = {closed}\ntls = \"none\"\nfrom = \"noreply@example.org\"\nsite_name = \"Site\"\ntimeout = \"2s\"\n"
    );
    // Only noop stages: nothing sends email.
    w.write_pipeline(&noop_pipeline("", &email));
    let out = w.ok(&["check", "--connect"]);
    assert!(
        out.contains("smtp: not usable (") && out.contains("no stage sends email"),
        "{out}"
    );
    assert!(out.contains("config valid"), "{out}");
}

#[test]
fn operator_events_name_the_os_account_without_user_or_lethe_operator() {
    let w = Workdir::new("actor");
    w.ok(&["migrate"]);
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .current_dir(&w.dir)
        .args(["enqueue", "1"])
        .env("LETHE_HASH_KEY", "test-key-0123456789")
        .env_remove("LETHE_OPERATOR")
        .env_remove("USER")
        .env_remove("LETHE_STORE_URL")
        .env_remove("LETHE_SOURCE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = Command::new("id").arg("-un").output().unwrap();
    let account = String::from_utf8(id.stdout).unwrap().trim().to_string();
    let status: serde_json::Value =
        serde_json::from_str(&w.ok(&["status", "1", "--json"])).unwrap();
    assert_eq!(status["events"][0]["actor"], format!("operator:{account}"));
    let help = w.ok(&["enqueue", "--help"]);
    assert!(
        help.contains("else $USER, else the OS account the process runs as"),
        "{help}"
    );
}

/// Starts `lethe run` in `w`, waits (bounded) for a log line containing `marker`, then
/// stops it with SIGTERM and returns its logs.
fn daemon_until(w: &Workdir, marker: &str) -> String {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .current_dir(&w.dir)
        .args(["run"])
        .env("LETHE_HASH_KEY", "test-key-0123456789")
        .env("LETHE_LOG", "info")
        .env_remove("LETHE_STORE_URL")
        .env_remove("LETHE_SOURCE_URL")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // A bound, not a wait: the daemon is killed if the marker has not come within a minute.
    let (done, watch) = std::sync::mpsc::channel::<()>();
    let pid = child.id().to_string();
    let watchdog = std::thread::spawn(move || {
        if watch.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    });
    let mut logs = String::new();
    // Lines arrive as the daemon writes them; the child is killed if the marker never comes.
    for line in std::io::BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        logs.push_str(&line);
        logs.push('\n');
        if line.contains(marker) {
            break;
        }
    }
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = child.wait().unwrap();
    let _ = done.send(());
    let _ = watchdog.join();
    assert!(logs.contains(marker), "no {marker:?} in: {logs} ({status})");
    logs
}

#[test]
fn a_restarted_daemon_scans_when_the_interval_since_the_last_scan_is_over() {
    let w = Workdir::new("scantimer");
    w.ok(&["migrate"]);
    // No scan recorded: the first daemon scans at once.
    let logs = daemon_until(&w, "scan finished");
    assert!(
        logs.contains("no scan recorded yet, scanning now"),
        "{logs}"
    );
    let scans = || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(common::scalar(
            &w.url(),
            "SELECT COUNT(*) FROM scan_run".into(),
        ))
    };
    assert_eq!(scans(), 1);
    // Restarted within the hour: it waits for the rest of it instead of scanning again.
    let logs = daemon_until(&w, "continuing from the last recorded scan");
    assert!(!logs.contains("scan finished"), "{logs}");
    assert_eq!(scans(), 1, "a restart does not rescan");
}

#[test]
fn ack_records_for_a_waiting_service_and_refuses_the_rest_with_exit_3() {
    let w = Workdir::new("ack");
    w.write_pipeline(&format!(
        "{}\n[[service]]\nname = \"joanie\"\n",
        noop_pipeline("", "").replace(
            "state = \"NOTIFIED\"\nhandler = \"noop\"",
            "state = \"NOTIFIED\"\nhandler = \"notify\"\nservices = [\"joanie\"]"
        )
    ));
    w.ok(&["migrate"]);
    w.ok(&["enqueue", "1", "2"]);
    let err = w.fails(&["ack", "1", "crm"], 3);
    assert!(
        err.contains("no [[service]] is named \"crm\" (configured: joanie)"),
        "{err}"
    );
    let err = w.fails(&["ack", "1", "joanie"], 3);
    assert!(
        err.contains("is in state PENDING, which does not await joanie"),
        "{err}"
    );
    // The driver runs the notify stage: 1 then awaits joanie, and the ack completes it.
    w.ok(&["run", "--once"]);
    let out = w.ok(&["ack", "1", "joanie"]);
    assert!(out.contains("joanie acknowledged"), "{out}");
    let out = w.ok(&["ack", "1", "joanie"]);
    assert!(out.contains("had acknowledged already"), "{out}");
    w.ok(&["run", "--once"]);
    let status = w.ok(&["status", "#1"]);
    assert!(status.contains("COMPLETE"), "{status}");
    assert!(status.contains("ack"), "{status}");
    w.fails(&["ack", "#1", "joanie"], 3);
}
