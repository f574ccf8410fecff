//! The `lethe` command line: parsing, dispatch, output formatting and exit codes.
//!
//! Exit codes: 0 ok, 1 runtime failure, 2 usage or config error, 3 not found or refused.

use crate::config::{Config, ConfigError};
use crate::domain::REASONS;
use crate::driver::{Driver, SystemClock, unique_owner};
use crate::pii::HashKey;
use crate::store::{
    self, ActionResult, AuditFilter, AuditRow, DEFAULT_STORE_URL, Lookup, OperatorAction,
    Retirement, Store, StoreError, redact_url,
};
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Prints a line to stdout, ignoring a closed pipe (`lethe audit | head`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// lethe retires inactive user accounts across many systems, safely and provably.
#[derive(Debug, Parser)]
#[command(name = "lethe", version, about)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// Store URL (postgres://… or sqlite://FILE); overrides pipeline.toml's store.url.
    #[arg(long, global = true, env = "LETHE_STORE_URL")]
    store: Option<String>,
    /// pipeline.toml
    #[arg(long, global = true, default_value = "./pipeline.toml")]
    config: PathBuf,
    /// states.toml
    #[arg(long, global = true, default_value = "./states.toml")]
    states: PathBuf,
    /// Print data as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Logs as one JSON object per line.
    #[arg(long, global = true, env = "LETHE_LOG_JSON")]
    log_json: bool,
    /// Who is acting, recorded in events of operator commands as `operator:NAME`: this
    /// flag, else $LETHE_OPERATOR, else $USER, else the OS account the process runs as
    /// (its uid in /etc/passwd, or `id -un`).
    #[arg(long, global = true, env = "LETHE_OPERATOR")]
    actor: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or upgrade the store schema and sync states.toml into it.
    Migrate,
    /// Validate the configuration (and, with --connect, reach the store and every SQL
    /// target and print their deletion plans).
    Check {
        /// Also connect to the store.
        #[arg(long)]
        connect: bool,
    },
    /// Run the driver daemon (SIGINT/SIGTERM stop it gracefully).
    Run {
        /// Process everything due now, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Scan the source for inactive users and open their retirements (blast-radius guarded).
    Scan {
        /// Write nothing: show the counts and the first candidates.
        #[arg(long)]
        dry_run: bool,
        /// Consider at most this many candidates.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Open retirements for subjects (source primary keys). Subjects that `source.exclude`
    /// or an allow-list keeps out are refused (exit 3), the others enqueued.
    Enqueue {
        /// Subject ids.
        subjects: Vec<String>,
        /// Why: inactive or requested.
        #[arg(long, default_value = "requested")]
        reason: String,
        /// A file of lines `subject[,email[,username]]` (`#` starts a comment).
        #[arg(long)]
        from_file: Option<PathBuf>,
        /// Enqueue this one subject even though `source.exclude` or an allow-list keeps it
        /// out (stored on the retirement and recorded in its event; needs no source).
        #[arg(long)]
        override_exclusion: bool,
    },
    /// Show one retirement and its whole history (`#ID` or `id:ID` for a retirement id;
    /// otherwise a subject id or email).
    Status {
        /// Subject id, email, or #retirement-id.
        target: String,
    },
    /// List retirements, newest first.
    List {
        /// Only this state.
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Count retirements per state.
    Stats,
    /// Show the deletion plan and the rows it would touch for one subject; changes nothing.
    Plan {
        /// Subject id (root key).
        subject: String,
    },
    /// Continue an errored retirement at the state that failed (or --to STATE).
    Resume {
        /// Subject id, email, or #retirement-id.
        target: String,
        /// State to continue at.
        #[arg(long)]
        to: Option<String>,
    },
    /// End an open retirement without finishing it.
    Abort {
        /// Subject id, email, or #retirement-id.
        target: String,
        /// Why (recorded in the event).
        #[arg(long)]
        reason: String,
    },
    /// Record that a subject was active: cancels its open retirement if no deletion has
    /// started, and keeps the scan from reopening one within the inactivity period.
    Touch {
        /// Subject id (the source's primary key).
        subject: String,
        /// When the activity happened (RFC 3339 or YYYY-MM-DD); now by default.
        #[arg(long)]
        at: Option<String>,
    },
    /// The audit trail: every event, oldest first.
    Audit {
        /// From this time (RFC 3339 or YYYY-MM-DD), inclusive.
        #[arg(long)]
        since: Option<String>,
        /// Until this time (RFC 3339 or YYYY-MM-DD), exclusive.
        #[arg(long)]
        until: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Only the retirements of this subject id or email (found after erasure by hash).
        #[arg(long)]
        subject: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = 100_000)]
        limit: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

/// A command failure and the exit code it maps to.
#[derive(Debug)]
enum Failure {
    /// Exit 2.
    Config(String),
    /// Exit 3.
    NotFound(String),
    /// Exit 3.
    Refused(String),
    /// Exit 1.
    Runtime(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e.to_string())
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadUrl { .. }
            | StoreError::NotMigrated
            | StoreError::Behind { .. }
            | StoreError::Missing { .. } => Failure::Config(e.to_string()),
            StoreError::StateInUse { .. } => Failure::Refused(e.to_string()),
            other => Failure::Runtime(other.into()),
        }
    }
}

impl From<crate::stages::BuildError> for Failure {
    fn from(e: crate::stages::BuildError) -> Self {
        use crate::sql::target::TargetError;
        match e {
            crate::stages::BuildError::Target(TargetError::Connect { .. })
            | crate::stages::BuildError::Mail(crate::mail::MailError::Unreachable { .. })
            | crate::stages::BuildError::Source(crate::sql::source::SourceError::Connect {
                ..
            }) => Failure::Runtime(e.into()),
            other => Failure::Config(other.to_string()),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

type Outcome = Result<(), Failure>;

/// Parses the command line, runs the command, and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    crate::telemetry::init(cli.global.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Err(Failure::NotFound(m)) => {
            eprintln!("not found: {m}");
            ExitCode::from(3)
        }
        Err(Failure::Refused(m)) => {
            eprintln!("refused: {m}");
            ExitCode::from(3)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("error: {}", crate::db::chain(e.as_ref()));
            ExitCode::from(1)
        }
    }
}

struct Ctx {
    global: Global,
}

impl Ctx {
    fn config(&self) -> Result<Config, Failure> {
        Ok(Config::load(&self.global.states, &self.global.config)?
            .with_env(&crate::config::process_env)?)
    }

    fn store_url(&self, config: Option<&Config>) -> String {
        self.global
            .store
            .clone()
            .or_else(|| config.and_then(|c| c.pipeline.store_url.clone()))
            .unwrap_or_else(|| DEFAULT_STORE_URL.to_string())
    }

    /// Opens, migrates and syncs the store (`migrate` and `run` only: they may change the
    /// schema, and create a SQLite file).
    async fn store_migrating(&self, config: &Config, pool: u32) -> Result<Arc<dyn Store>, Failure> {
        let store = store::open(&self.store_url(Some(config)), pool).await?;
        store.migrate().await?;
        store.sync_states(&config.graph).await?;
        Ok(store)
    }

    /// Opens an existing, migrated store without changing its schema (refusing one that is
    /// missing or behind: run `lethe migrate`); syncs states when a config is given.
    async fn store(&self, config: Option<&Config>, pool: u32) -> Result<Arc<dyn Store>, Failure> {
        let store = store::open_existing(&self.store_url(config), pool).await?;
        if let Some(config) = config {
            store.sync_states(&config.graph).await?;
        }
        Ok(store)
    }

    fn actor(&self) -> String {
        let name = self
            .global
            .actor
            .clone()
            .filter(|a| !a.trim().is_empty())
            .or_else(|| std::env::var("USER").ok().filter(|u| !u.trim().is_empty()))
            .or_else(crate::ops::os_account_name)
            .unwrap_or_else(|| "unknown".into());
        format!("operator:{name}")
    }

    fn hash_key(&self) -> Result<HashKey, Failure> {
        HashKey::from_env().map_err(|e| Failure::Config(e.to_string()))
    }

    /// Finds the retirement an operator means.
    async fn resolve(&self, store: &dyn Store, target: &str) -> Result<Retirement, Failure> {
        let key = HashKey::from_env().ok();
        let lookup = parse_target(target, key.as_ref())?;
        store.find(&lookup).await?.ok_or_else(|| {
            Failure::NotFound(format!("no retirement for {}", describe_target(target)))
        })
    }
}

fn describe_target(target: &str) -> String {
    if target.contains('@') {
        "that email".into()
    } else {
        crate::ops::shown(target)
    }
}

fn parse_target(target: &str, key: Option<&HashKey>) -> Result<Lookup, Failure> {
    let id = target
        .strip_prefix('#')
        .or_else(|| target.strip_prefix("id:"));
    match id {
        Some(digits) => digits.parse().map(Lookup::Id).map_err(|_| {
            Failure::Config(format!(
                "{}: a retirement id is #NUMBER or id:NUMBER",
                crate::ops::shown(target)
            ))
        }),
        None if target.trim().is_empty() => Failure::Config("empty subject".into()).into_err(),
        None => Ok(Lookup::subject(target.trim(), key)),
    }
}

impl Failure {
    fn into_err<T>(self) -> Result<T, Failure> {
        Err(self)
    }
}

async fn dispatch(cli: Cli) -> Outcome {
    let ctx = Ctx { global: cli.global };
    match cli.command {
        Command::Migrate => migrate(&ctx).await,
        Command::Check { connect } => check(&ctx, connect).await,
        Command::Run { once } => run(&ctx, once).await,
        Command::Enqueue {
            subjects,
            reason,
            from_file,
            override_exclusion,
        } => enqueue(&ctx, subjects, &reason, from_file, override_exclusion).await,
        Command::Status { target } => status(&ctx, &target).await,
        Command::List { state, limit } => list(&ctx, state, limit).await,
        Command::Stats => stats(&ctx).await,
        Command::Scan { dry_run, limit } => scan(&ctx, dry_run, limit).await,
        Command::Plan { subject } => plan(&ctx, &subject).await,
        Command::Resume { target, to } => {
            operate(&ctx, &target, OperatorAction::Resume { to }).await
        }
        Command::Abort { target, reason } => {
            operate(&ctx, &target, OperatorAction::Abort { reason }).await
        }
        Command::Touch { subject, at } => touch(&ctx, &subject, at).await,
        Command::Audit {
            since,
            until,
            format,
            subject,
            limit,
        } => audit(&ctx, since, until, format, subject, limit).await,
    }
}

async fn migrate(ctx: &Ctx) -> Outcome {
    let config = ctx.config()?;
    ctx.store_migrating(&config, 2).await?;
    out!(
        "store {} is migrated; {} states synced from {}",
        redact_url(&ctx.store_url(Some(&config))),
        config.graph.states().len(),
        config.states_path.display()
    );
    Ok(())
}

async fn check(ctx: &Ctx, connect: bool) -> Outcome {
    let config = ctx.config()?;
    let p = &config.pipeline;
    out!(
        "{}: {} states",
        config.states_path.display(),
        config.graph.states().len()
    );
    out!(
        "{}: {} stages",
        config.pipeline_path.display(),
        p.stages.len()
    );
    let mut pending = 0;
    for stage in &p.stages {
        let status = match stage.kind.pending_implementation() {
            None => "ok".to_string(),
            Some(issue) => {
                pending += 1;
                format!("NOT IMPLEMENTED YET (lands with {issue}); `lethe run` refuses this stage")
            }
        };
        out!(
            "  {:<20} -> {:<10} {status}",
            stage.state,
            stage.kind.to_string()
        );
    }
    out!(
        "policy: inactive_after={} grace_period={} max_attempts={} retry={}..{}{}",
        crate::config::HumanDuration(p.policy.inactive_after),
        crate::config::HumanDuration(p.policy.grace_period),
        p.policy.max_attempts,
        crate::config::HumanDuration(p.policy.retry.base),
        crate::config::HumanDuration(p.policy.retry.cap),
        if p.policy.paused { " PAUSED" } else { "" }
    );
    out!(
        "driver: batch_size={} concurrency={} lease={} poll_interval={}",
        p.driver.batch_size,
        p.driver.concurrency,
        crate::config::HumanDuration(p.driver.lease),
        crate::config::HumanDuration(p.driver.poll_interval)
    );
    let templates = crate::stages::load_templates(p)?;
    // Some stage sends email (an email stage, or grace reminders): SMTP must work.
    let sends_mail = templates.is_some();
    if let Some(templates) = templates {
        let mut names: Vec<&str> = p
            .stages
            .iter()
            .filter_map(|s| match &s.settings {
                crate::stages::StageSettings::Email(e) => Some(e.template.as_str()),
                crate::stages::StageSettings::Grace(g) if !g.reminders.is_empty() => {
                    Some(g.reminder_template.as_str())
                }
                _ => None,
            })
            .collect();
        names.dedup();
        for name in names {
            out!(
                "template {name}: ok in {}",
                templates.locales_of(name).join(", ")
            );
        }
    }
    let url = ctx.store_url(Some(&config));
    out!("store: {}", redact_url(&url));
    if HashKey::from_env().is_err() {
        out!(
            "warning: {} is not set: `lethe run` and `lethe enqueue` will refuse to start",
            crate::pii::HASH_KEY_ENV
        );
    }
    if connect {
        // Changes nothing: a missing SQLite file or schema fails here (exit 2).
        let store = store::open_existing(&url, 1).await?;
        store.next_due().await?;
        out!("store: reachable and migrated");
        if let Some(source) = &config.pipeline.source {
            let reader = connect_source(source).await?;
            let users = reader
                .count_users()
                .await
                .map_err(|e| Failure::Runtime(e.into()))?;
            out!("source: reachable, {users} users in {}", source.table);
        }
        if let Some(email) = &config.pipeline.email {
            let reached = match crate::mail::Mailer::new(email) {
                Ok(mailer) => mailer.test_connection().await,
                Err(e) => Err(e),
            };
            match reached {
                Ok(()) => out!("smtp: reachable at {}:{}", email.host, email.port()),
                Err(e) if !sends_mail => out!(
                    "smtp: not usable ({}); no stage sends email, so [email] is not needed yet",
                    crate::db::chain(&e)
                ),
                Err(e) => return Err(Failure::from(crate::stages::BuildError::from(e))),
            }
        }
        for target in &config.pipeline.targets {
            let connected = crate::sql::target::Target::connect(target)
                .await
                .map_err(|e| Failure::from(crate::stages::BuildError::from(e)))?;
            print_plan_summary(&connected);
        }
    }
    if pending > 0 {
        out!("config valid; {pending} stage(s) wait for handlers that have not landed yet");
    } else {
        out!("config valid");
    }
    Ok(())
}

/// What retiring a subject would do, in one line.
fn plan_verdict(result: &crate::sql::target::SubjectResult) -> String {
    use crate::sql::target::SubjectResult;
    match result {
        SubjectResult::Retired {
            already_gone: true, ..
        } => "nothing to delete: the subject is not in the target".to_string(),
        SubjectResult::Retired { .. } => "would be deleted".to_string(),
        SubjectResult::Protected(links) => format!(
            "the deletion would be refused: {}",
            SubjectResult::protected_reason(links)
        ),
        SubjectResult::Refused(why) => format!("the deletion would be refused: {why}"),
        SubjectResult::Active(at) => format!("active at {}", at.to_rfc3339()),
        SubjectResult::Excluded(why) => format!("the deletion would be refused: {why}"),
    }
}

/// Tables per policy, protected columns and nullified columns to review.
fn print_plan_summary(target: &crate::sql::target::Target) {
    use crate::sql::plan::Action;
    let plan = &target.plan;
    let mut by_action: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> =
        Default::default();
    for step in &plan.steps {
        by_action
            .entry(crate::sql::target::action_name(&step.action))
            .or_default()
            .insert(step.table());
    }
    out!(
        "target {} ({:?}): root {}.{}; {} statements per batch",
        target.name,
        target.dialect,
        plan.root_table,
        plan.root_key,
        plan.steps.len() + plan.protect.len() + plan.conflicts.len() + 2
    );
    for (action, tables) in &by_action {
        out!("  {action:<9} {} tables", tables.len());
    }
    let protected: Vec<&str> = plan.protect.iter().map(|s| s.link.as_str()).collect();
    out!("  protected columns: {}", protected.join(", "));
    let nullified: std::collections::BTreeSet<&str> = plan
        .steps
        .iter()
        .filter(|s| matches!(s.action, Action::Nullify(_)))
        .map(|s| s.link.as_str())
        .collect();
    out!(
        "  nullified columns to review (rows kept; are these only actors?): {}",
        nullified.into_iter().collect::<Vec<_>>().join(", ")
    );
    if !plan.link_rules.is_empty() {
        out!(
            "  tables linking to {} more than once (a row of a user who stays is never deleted):",
            plan.root_table
        );
        for rule in &plan.link_rules {
            let null = if rule.nullable { "NULL" } else { "NOT NULL" };
            out!("    {} ({null}): {}", rule.link, rule.rule);
        }
    }
}

fn no_source(config: &Config) -> Failure {
    Failure::Config(format!(
        "{}: no [source] section: nothing to scan",
        config.pipeline_path.display()
    ))
}

async fn connect_source(
    source: &crate::config::Source,
) -> Result<crate::sql::source::SourceReader, Failure> {
    use crate::sql::source::SourceError;
    crate::sql::source::SourceReader::connect(source)
        .await
        .map_err(|e| match e {
            SourceError::Connect { .. } | SourceError::Query { .. } => Failure::Runtime(e.into()),
            other => Failure::Config(other.to_string()),
        })
}

/// `lethe scan`: one scan of the source.
async fn scan(ctx: &Ctx, dry_run: bool, limit: Option<usize>) -> Outcome {
    let config = ctx.config()?;
    let source = config
        .pipeline
        .source
        .as_ref()
        .ok_or_else(|| no_source(&config))?;
    let key = ctx.hash_key()?;
    let reader = connect_source(source).await?;
    let store = ctx.store((!dry_run).then_some(&config), 2).await?;
    let now = crate::store::truncate_micros(Utc::now());
    let options = crate::driver::scan::ScanOptions { dry_run, limit };
    let report = crate::driver::scan::scan(
        store.as_ref(),
        &config.graph,
        &reader,
        source,
        &config.pipeline.policy,
        &key,
        now,
        options,
    )
    .await
    .map_err(|e| Failure::Runtime(e.into()))?;
    let c = &report.counts;
    if ctx.global.json {
        out!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        out!(
            "seen {} inactive {} excluded {} already open {} enqueued {}{}",
            c.seen,
            c.inactive,
            c.excluded,
            c.already_open,
            c.enqueued,
            if dry_run {
                " (dry run: nothing written)"
            } else {
                ""
            }
        );
        if dry_run {
            let new = report.candidates.len();
            out!("would enqueue {new}; first ids: {:?}", report.first);
            if new > report.first.len() {
                out!(
                    "{} more not shown: `lethe scan --dry-run --json` lists every candidate and why",
                    new - report.first.len()
                );
            }
        }
    }
    match &c.refused {
        Some(why) => Err(Failure::Refused(format!("blast-radius guard: {why}"))),
        None => Ok(()),
    }
}

/// `lethe plan SUBJECT`: the plan and the rows it would touch for one subject.
async fn plan(ctx: &Ctx, subject: &str) -> Outcome {
    let config = ctx.config()?;
    let id = crate::ops::parse_subject("the subject argument", subject)
        .map_err(|e| Failure::Config(e.to_string()))?;
    if config.pipeline.targets.is_empty() {
        return Err(Failure::Config(format!(
            "{}: no [[target]] is declared",
            config.pipeline_path.display()
        )));
    }
    let mut report = Vec::new();
    for target_config in &config.pipeline.targets {
        let target = crate::sql::target::Target::connect(target_config)
            .await
            .map_err(|e| Failure::from(crate::stages::BuildError::from(e)))?;
        let preview = target
            .preview(id)
            .await
            .map_err(|e| Failure::Runtime(e.into()))?;
        let verdict = plan_verdict(&preview.verdict);
        if !ctx.global.json {
            out!("target {}: {verdict}", target.name);
            print_plan_summary(&target);
            let table: Vec<Vec<String>> = preview
                .steps
                .iter()
                .map(|(link, action, n)| vec![link.clone(), action.clone(), n.to_string()])
                .collect();
            print_table(&["link", "action", "rows"], &table);
            if !preview.exact {
                out!("(rows each step matches; nothing would run while the deletion is refused)");
            }
        }
        report.push(serde_json::json!({
            "target": target.name,
            "verdict": verdict,
            "refused": !matches!(preview.verdict, crate::sql::target::SubjectResult::Retired { .. }),
            "exact": preview.exact,
            "steps": preview.steps.iter().map(|(link, action, n)| serde_json::json!({"link": link, "action": action, "rows": n})).collect::<Vec<_>>(),
        }));
    }
    if ctx.global.json {
        out!("{}", serde_json::Value::Array(report));
    }
    Ok(())
}

async fn run(ctx: &Ctx, once: bool) -> Outcome {
    let config = ctx.config()?;
    ctx.hash_key()?;
    let handlers = crate::stages::build(&config.pipeline).await?;
    let tuning = config.pipeline.driver.clone();
    let store = ctx
        .store_migrating(&config, tuning.concurrency as u32 * 2 + 2)
        .await?;
    let driver = Arc::new(Driver::new(
        store,
        config.graph.clone(),
        config.pipeline.policy.clone(),
        tuning,
        handlers,
        unique_owner(),
        Arc::new(SystemClock),
    ));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    if let (false, Some(source)) = (once, config.pipeline.source.clone()) {
        let reader = connect_source(&source).await?;
        let key = ctx.hash_key()?;
        let store = ctx.store(None, 2).await?;
        let graph = config.graph.clone();
        let policy = config.pipeline.policy.clone();
        let mut stop_scans = shutdown.clone();
        // The timer goes on from the last recorded scan: a restart does not rescan.
        let last = store.last_scan().await?;
        let delay = crate::driver::scan::first_scan_delay(last, source.scan_interval.0, Utc::now());
        match last {
            Some(at) => tracing::info!(
                last_scan = %at.to_rfc3339(),
                next_in_secs = delay.as_secs(),
                "scan timer: continuing from the last recorded scan"
            ),
            None => tracing::info!("scan timer: no scan recorded yet, scanning now"),
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop_scans.changed() => return,
            }
            loop {
                let now = crate::store::truncate_micros(Utc::now());
                let options = crate::driver::scan::ScanOptions::default();
                match crate::driver::scan::scan(
                    store.as_ref(),
                    &graph,
                    &reader,
                    &source,
                    &policy,
                    &key,
                    now,
                    options,
                )
                .await
                {
                    Ok(report) => {
                        if let Some(why) = report.counts.refused {
                            tracing::warn!(%why, "blast-radius guard refused the scan");
                        }
                    }
                    Err(error) => {
                        tracing::error!(%error, "scan failed; next try at the next interval")
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(source.scan_interval.0) => {}
                    _ = stop_scans.changed() => break,
                }
            }
        });
    }
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!(
            "shutdown requested: no new claims; in-flight batches finish or are released"
        );
        let _ = stop.send(true);
    });
    let report = if once {
        driver.run_once(shutdown).await
    } else {
        driver.run(shutdown).await
    }
    .map_err(|e| Failure::Runtime(e.into()))?;
    if ctx.global.json {
        out!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        out!(
            "claimed {} applied {} lost {} released {} {:?}",
            report.claimed,
            report.applied,
            report.lost,
            report.released,
            report.outcomes
        );
    }
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Reads `subject[,email[,username]]` lines, validating each (`FILE:LINE` in messages).
fn read_subject_file(path: &PathBuf) -> Result<Vec<crate::ops::Request>, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Config(format!("{}: cannot read: {e}", path.display())))?;
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() || (n == 0 && line.starts_with("subject")) {
            continue;
        }
        let mut fields = line.split(',').map(|f| f.trim().to_string());
        let subject = fields.next().unwrap_or_default();
        let email = fields.next().filter(|f| !f.is_empty());
        let username = fields.next().filter(|f| !f.is_empty());
        let at = format!("{}:{}", path.display(), n + 1);
        rows.push(crate::ops::request(&at, &subject, email, username).map_err(input_error)?);
    }
    Ok(rows)
}

fn input_error(e: crate::ops::InputError) -> Failure {
    Failure::Config(e.to_string())
}

/// Above this many subjects, `enqueue` prints counts instead of a line per subject.
const ECHO_AT_MOST: usize = 20;

async fn enqueue(
    ctx: &Ctx,
    subjects: Vec<String>,
    reason: &str,
    from_file: Option<PathBuf>,
    exclusion_override: bool,
) -> Outcome {
    use crate::ops::{EnqueueError, Opened};
    if !REASONS.contains(&reason) {
        return Err(Failure::Config(format!(
            "--reason {}: unknown reason (allowed: {})",
            crate::ops::shown(reason),
            REASONS.join(", ")
        )));
    }
    let key = ctx.hash_key()?;
    let mut rows = subjects
        .iter()
        .enumerate()
        .map(|(n, s)| crate::ops::request(&format!("argument {}", n + 1), s, None, None))
        .collect::<Result<Vec<_>, _>>()
        .map_err(input_error)?;
    if let Some(path) = &from_file {
        rows.extend(read_subject_file(path)?);
    }
    if rows.is_empty() {
        return Err(Failure::Config(EnqueueError::Empty.to_string()));
    }
    if exclusion_override && rows.len() > 1 {
        return Err(Failure::Config(
            EnqueueError::OverrideOfMany(rows.len()).to_string(),
        ));
    }
    let config = ctx.config()?;
    let reader = match (&config.pipeline.source, exclusion_override) {
        (_, true) => None,
        (None, false) => {
            return Err(Failure::Config(format!(
                "{}: {}",
                config.pipeline_path.display(),
                EnqueueError::NoSource
            )));
        }
        (Some(source), false) => Some(connect_source(source).await?),
    };
    let store = ctx.store(Some(&config), 2).await?;
    let now = crate::store::truncate_micros(Utc::now());
    let actor = ctx.actor();
    let input = crate::ops::Enqueue {
        requests: &rows,
        reason,
        exclusion_override,
        actor: &actor,
    };
    let opened = crate::ops::enqueue(
        store.as_ref(),
        &config.graph,
        reader.as_ref(),
        &key,
        input,
        now,
    )
    .await
    .map_err(|e| match e {
        EnqueueError::Store(e) => Failure::from(e),
        EnqueueError::Source(_) => Failure::Runtime(e.into()),
        other => Failure::Config(other.to_string()),
    })?;
    let count = |f: fn(&Opened) -> bool| opened.iter().filter(|(_, o)| f(o)).count();
    let created = count(|o| matches!(o, Opened::Created { .. }));
    let open = count(|o| matches!(o, Opened::AlreadyOpen { .. }));
    let refused: Vec<(i64, &str)> = opened
        .iter()
        .filter_map(|(s, o)| match o {
            Opened::Refused { why } => Some((*s, why.as_str())),
            _ => None,
        })
        .collect();
    if ctx.global.json {
        let rows: Vec<_> = opened
            .iter()
            .map(|(s, o)| serde_json::json!({ "subject": s.to_string(), "outcome": o }))
            .collect();
        out!("{}", serde_json::Value::Array(rows));
    } else {
        if opened.len() <= ECHO_AT_MOST {
            for (s, o) in &opened {
                match o {
                    Opened::Created { id } => out!("{s}: enqueued as #{id}"),
                    Opened::AlreadyOpen { id } => out!("{s}: already open as #{id}"),
                    Opened::Refused { why } => out!("{s}: refused, {why}"),
                }
            }
        }
        out!(
            "{created} enqueued, {open} already open, {} refused{}",
            refused.len(),
            if exclusion_override {
                " (exclusions overridden)"
            } else {
                ""
            }
        );
    }
    if refused.is_empty() {
        return Ok(());
    }
    for (subject, why) in refused.iter().take(ECHO_AT_MOST) {
        eprintln!("refused: subject {subject}: {why}");
    }
    if refused.len() > ECHO_AT_MOST {
        eprintln!(
            "refused: … and {} more (--json lists them all)",
            refused.len() - ECHO_AT_MOST
        );
    }
    Err(Failure::Refused(format!(
        "{} of {} subject(s) are excluded and were not enqueued (the others were); to retire one anyway: `lethe enqueue ID --override-exclusion`",
        refused.len(),
        opened.len()
    )))
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

fn subject_shown(r: &Retirement) -> String {
    r.subject.clone().unwrap_or_else(|| {
        format!(
            "(erased, hash {})",
            &r.subject_hash[..12.min(r.subject_hash.len())]
        )
    })
}

async fn status(ctx: &Ctx, target: &str) -> Outcome {
    let store = ctx.store(None, 1).await?;
    let r = ctx.resolve(store.as_ref(), target).await?;
    let events = store.history(r.id).await?;
    if ctx.global.json {
        out!(
            "{}",
            serde_json::json!({ "retirement": r, "events": events })
        );
        return Ok(());
    }
    out!("retirement   #{}", r.id);
    out!("subject      {}", subject_shown(&r));
    out!("reason       {}", r.reason);
    out!(
        "state        {}{}",
        r.state,
        if r.ended_at.is_some() { " (ended)" } else { "" }
    );
    out!("due at       {}", time(r.due_at));
    out!("attempt      {}", r.attempt);
    if let Some(owner) = &r.lease_owner {
        out!("lease        {owner} until {}", time(r.lease_until));
    }
    if let Some(state) = &r.failed_state {
        out!("failed in    {state}");
    }
    out!("last error   {}", r.last_error.as_deref().unwrap_or("-"));
    out!("warned at    {}", time(r.warned_at));
    out!("created at   {}", time(Some(r.created_at)));
    out!("ended at     {}", time(r.ended_at));
    out!("history:");
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                time(Some(e.at)),
                e.from_state.clone().unwrap_or_else(|| "-".into()),
                e.to_state.clone(),
                e.outcome.clone(),
                e.attempt.to_string(),
                e.actor.clone(),
                e.detail.clone(),
            ]
        })
        .collect();
    print_table(
        &["at", "from", "to", "outcome", "attempt", "actor", "detail"],
        &rows,
    );
    Ok(())
}

fn retirement_rows(list: &[Retirement]) -> Vec<Vec<String>> {
    list.iter()
        .map(|r| {
            vec![
                format!("#{}", r.id),
                subject_shown(r),
                r.state.clone(),
                time(r.due_at),
                r.attempt.to_string(),
                r.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect()
}

async fn list(ctx: &Ctx, state: Option<String>, limit: i64) -> Outcome {
    if let (Some(state), Ok(config)) = (&state, ctx.config())
        && !config.graph.contains(state)
    {
        return Err(Failure::Config(format!(
            "--state {}: no such state (known: {})",
            crate::ops::shown(state),
            config.graph.names().join(", ")
        )));
    }
    let store = ctx.store(None, 1).await?;
    let list = store.list(state.as_deref(), limit.max(0)).await?;
    if ctx.global.json {
        out!("{}", serde_json::to_string(&list).unwrap_or_default());
    } else {
        print_table(
            &["id", "subject", "state", "due", "attempt", "last error"],
            &retirement_rows(&list),
        );
    }
    Ok(())
}

async fn stats(ctx: &Ctx) -> Outcome {
    let config = ctx.config().ok();
    let store = ctx.store(None, 1).await?;
    let mut counts = store.stats().await?;
    if let Some(config) = &config {
        let order = |s: &str| {
            config
                .graph
                .names()
                .iter()
                .position(|n| *n == s)
                .unwrap_or(usize::MAX)
        };
        for name in config.graph.names() {
            if !counts.iter().any(|(s, _)| s == name) {
                counts.push((name.to_string(), 0));
            }
        }
        counts.sort_by_key(|(s, _)| order(s));
    }
    if ctx.global.json {
        let map: serde_json::Map<String, serde_json::Value> =
            counts.into_iter().map(|(s, n)| (s, n.into())).collect();
        out!("{}", serde_json::Value::Object(map));
    } else {
        let rows: Vec<Vec<String>> = counts
            .into_iter()
            .map(|(s, n)| vec![s, n.to_string()])
            .collect();
        print_table(&["state", "count"], &rows);
    }
    Ok(())
}

async fn operate(ctx: &Ctx, target: &str, action: OperatorAction) -> Outcome {
    let config = ctx.config()?;
    if let OperatorAction::Resume { to: Some(to) } = &action
        && !config.graph.contains(to)
    {
        return Err(Failure::Config(format!(
            "--to {}: no such state in {} (working states: {})",
            crate::ops::shown(to),
            config.states_path.display(),
            config.graph.working().join(", ")
        )));
    }
    let store = ctx.store(Some(&config), 1).await?;
    let found = ctx.resolve(store.as_ref(), target).await?;
    let now = crate::store::truncate_micros(Utc::now());
    let result = store
        .operate(&config.graph, found.id, &action, &ctx.actor(), now)
        .await?;
    report_action(ctx, result, found.id, ("", "", ""))
}

/// Prints an applied operator action or turns a refusal into exit 3; `words` are the
/// human line's prefix and the verbs after the id when applied and when refused.
fn report_action(
    ctx: &Ctx,
    result: ActionResult,
    id: i64,
    (prefix, applied, refused): (&str, &str, &str),
) -> Outcome {
    match result {
        ActionResult::Applied(r) => {
            if ctx.global.json {
                out!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else {
                out!("{prefix}#{}{applied}: now {}", r.id, r.state);
            }
            Ok(())
        }
        ActionResult::NotFound => Err(Failure::NotFound(format!("retirement #{id}"))),
        ActionResult::Refused(why) => Err(Failure::Refused(format!(
            "{prefix}retirement #{id}{refused}: {why}"
        ))),
    }
}

async fn touch(ctx: &Ctx, subject: &str, at: Option<String>) -> Outcome {
    let now = crate::store::truncate_micros(Utc::now());
    let at = at
        .map(|a| parse_time("--at", &a))
        .transpose()?
        .unwrap_or(now);
    if at > now {
        return Err(Failure::Config(format!(
            "--at {}: activity cannot be in the future",
            at.to_rfc3339()
        )));
    }
    if subject.contains('@') {
        return Err(Failure::Config(
            "an email is not a subject: give the subject id (the source's primary key)".into(),
        ));
    }
    let subject = crate::ops::parse_subject("subject", subject)
        .map_err(input_error)?
        .to_string();
    let subject = subject.as_str();
    let config = ctx.config()?;
    let key = ctx.hash_key()?;
    let store = ctx.store(Some(&config), 1).await?;
    store.record_activity(&key.subject(subject), at).await?;
    let open = store
        .find(&Lookup::subject(subject, Some(&key)))
        .await?
        .filter(|r| r.ended_at.is_none());
    let Some(open) = open else {
        out!("activity recorded; no open retirement");
        return Ok(());
    };
    let action = OperatorAction::Touch {
        at,
        cancellable: config.pipeline.notice_states(),
    };
    let result = store
        .operate(&config.graph, open.id, &action, &ctx.actor(), now)
        .await?;
    report_action(
        ctx,
        result,
        open.id,
        ("activity recorded; ", " cancelled", " not cancelled"),
    )
}

fn parse_time(flag: &str, text: &str) -> Result<DateTime<Utc>, Failure> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            Failure::Config(format!(
                "{flag} {}: expected RFC 3339 (2026-01-31T12:00:00Z) or YYYY-MM-DD",
                crate::ops::shown(text)
            ))
        })
}

async fn audit(
    ctx: &Ctx,
    since: Option<String>,
    until: Option<String>,
    format: Format,
    subject: Option<String>,
    limit: i64,
) -> Outcome {
    let since = since.map(|s| parse_time("--since", &s)).transpose()?;
    let until = until.map(|s| parse_time("--until", &s)).transpose()?;
    let key = HashKey::from_env().ok();
    let subject = subject
        .map(|s| parse_target(&s, key.as_ref()))
        .transpose()?;
    let store = ctx.store(None, 1).await?;
    let rows = store
        .audit(&AuditFilter {
            since,
            until,
            subject,
            limit: limit.max(0),
        })
        .await?;
    let format = if ctx.global.json {
        Format::Json
    } else {
        format
    };
    match format {
        Format::Json => out!("{}", serde_json::to_string(&rows).unwrap_or_default()),
        Format::Csv => {
            out!(
                "event_id,at,retirement_id,subject,subject_hash,reason,from_state,to_state,outcome,attempt,actor,detail"
            );
            for r in &rows {
                let cells = audit_cells(r);
                out!(
                    "{}",
                    cells
                        .iter()
                        .map(|c| csv_cell(c))
                        .collect::<Vec<_>>()
                        .join(",")
                );
            }
        }
        Format::Table => {
            let table: Vec<Vec<String>> = rows.iter().map(audit_cells).collect();
            print_table(
                &[
                    "event",
                    "at",
                    "retirement",
                    "subject",
                    "subject_hash",
                    "reason",
                    "from",
                    "to",
                    "outcome",
                    "attempt",
                    "actor",
                    "detail",
                ],
                &table,
            );
        }
    }
    Ok(())
}

fn audit_cells(r: &AuditRow) -> Vec<String> {
    let e = &r.event;
    vec![
        e.id.to_string(),
        e.at.to_rfc3339(),
        e.retirement_id.to_string(),
        r.subject.clone().unwrap_or_default(),
        r.subject_hash.clone(),
        r.reason.clone(),
        e.from_state.clone().unwrap_or_default(),
        e.to_state.clone(),
        e.outcome.clone(),
        e.attempt.to_string(),
        e.actor.clone(),
        e.detail.clone(),
    ]
}

fn csv_cell(cell: &str) -> String {
    if cell.contains([',', '"', '\n']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_string()
    }
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
