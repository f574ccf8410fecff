//! The `lethe` command line: parsing, dispatch, output formatting and exit codes. One file
//! per group of commands; each only parses its arguments, calls a use case (`ops`,
//! `daemon`, the store's reads) and prints.
//!
//! Exit codes: 0 ok, 1 runtime failure, 2 usage or config error, 3 not found or refused
//! (from [`crate::error::ErrorKind::exit_code`]).

mod audit;
mod ctx;
mod demo;
mod enqueue;
mod failure;
mod init;
mod inspect;
mod operate;
mod output;
mod plan;
mod run;
mod scan;
mod serve;
mod setup;

use crate::domain::OperatorAction;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ctx::Ctx;
use failure::Outcome;
use std::path::PathBuf;
use std::process::ExitCode;

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
pub(crate) struct Global {
    /// Store URL (postgres://… or sqlite://FILE); overrides pipeline.toml's store.url.
    #[arg(long, global = true, env = "LETHE_STORE_URL", hide_env_values = true)]
    pub(crate) store: Option<String>,
    /// pipeline.toml
    #[arg(long, global = true, default_value = "./pipeline.toml")]
    pub(crate) config: PathBuf,
    /// states.toml
    #[arg(long, global = true, default_value = "./states.toml")]
    pub(crate) states: PathBuf,
    /// Print data as JSON.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Logs as one JSON object per line.
    #[arg(long, global = true, env = "LETHE_LOG_JSON")]
    pub(crate) log_json: bool,
    /// Who is acting, recorded in events of operator commands as `operator:NAME`: this
    /// flag, else $LETHE_OPERATOR, else $USER, else the OS account the process runs as
    /// (its uid in /etc/passwd, or `id -un`).
    #[arg(long, global = true, env = "LETHE_OPERATOR")]
    pub(crate) actor: Option<String>,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Print a fresh random key once, and the `[[api_key]]` lines that hold its hash.
    New {
        /// Who holds it (the actor of its writes: `api:NAME`).
        name: String,
        /// operator, auditor or service:NAME.
        #[arg(long)]
        scope: String,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// See the whole pipeline at work on synthetic users, with nothing to install: an
    /// SQLite edX source, an SMTP server, Sarbacane and two downstream services in-process.
    /// Or on real services: --source (MariaDB), --store (PostgreSQL), --smtp (a catcher).
    Demo(demo::DemoArgs),
    /// Write a new deployment's states.toml, pipeline.toml, templates/ and lethe.env (every
    /// secret, commented) from a preset, and print what to fill in.
    Init {
        /// Where (default: the current directory).
        dir: Option<PathBuf>,
        /// Which preset.
        #[arg(long, default_value = "edx",
              value_parser = clap::builder::PossibleValuesParser::new(
                  crate::config::preset::Preset::ALL.map(|(name, _)| name)))]
        preset: String,
        /// Overwrite existing files (never lethe.env, which may hold secrets).
        #[arg(long)]
        force: bool,
    },
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
        /// Serve the API here too (default: `[api] listen`, served when `[api]` is set).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Serve the REST API without running the driver.
    Serve {
        /// Address and port (default: `[api] listen`, else 127.0.0.1:8100).
        #[arg(long)]
        listen: Option<String>,
    },
    /// API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Scan the source by each selection rule and open retirements (blast-radius guarded).
    Scan {
        /// Write nothing: show the counts and the first candidates.
        #[arg(long)]
        dry_run: bool,
        /// Consider at most this many candidates (per rule).
        #[arg(long)]
        limit: Option<usize>,
        /// Run only this [[rule]] (default: every enabled rule, in order).
        #[arg(long)]
        rule: Option<String>,
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
    /// Record that a downstream service deleted its copy of a retired user (the notify
    /// stage waits for every service's acknowledgement).
    Ack {
        /// The retirement: `#ID`, the subject id or the email.
        target: String,
        /// The service, as named by its [[service]] entry.
        service: String,
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
pub(crate) enum Format {
    Table,
    Csv,
    Json,
}

/// Parses the command line, runs the command, and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // The demo prints its own progress: its logs are only the warnings.
    let level = match cli.command {
        Command::Demo { .. } => tracing::Level::WARN,
        _ => tracing::Level::INFO,
    };
    crate::telemetry::init(cli.global.log_json, level);
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
        Err(failure) => {
            eprintln!("{failure}");
            ExitCode::from(failure.kind.exit_code())
        }
    }
}

async fn dispatch(cli: Cli) -> Outcome {
    let ctx = Ctx { global: cli.global };
    match cli.command {
        Command::Demo(args) => demo::demo(args, ctx.global.store.clone()).await,
        Command::Init { dir, preset, force } => init::init(dir, &preset, force),
        Command::Migrate => setup::migrate(&ctx).await,
        Command::Check { connect } => setup::check(&ctx, connect).await,
        Command::Run { once, listen } => run::run(&ctx, once, listen).await,
        Command::Serve { listen } => serve::serve(&ctx, listen).await,
        Command::Key {
            command: KeyCommand::New { name, scope },
        } => serve::key_new(&name, &scope),
        Command::Enqueue {
            subjects,
            reason,
            from_file,
            override_exclusion,
        } => enqueue::enqueue(&ctx, subjects, &reason, from_file, override_exclusion).await,
        Command::Status { target } => inspect::status(&ctx, &target).await,
        Command::List { state, limit } => inspect::list(&ctx, state, limit).await,
        Command::Stats => inspect::stats(&ctx).await,
        Command::Scan {
            dry_run,
            limit,
            rule,
        } => scan::scan(&ctx, dry_run, limit, rule).await,
        Command::Plan { subject } => plan::plan(&ctx, &subject).await,
        Command::Resume { target, to } => {
            operate::operate(&ctx, &target, OperatorAction::Resume { to }).await
        }
        Command::Abort { target, reason } => {
            operate::operate(&ctx, &target, OperatorAction::Abort { reason }).await
        }
        Command::Touch { subject, at } => operate::touch(&ctx, &subject, at).await,
        Command::Ack { target, service } => operate::ack(&ctx, &target, &service).await,
        Command::Audit {
            since,
            until,
            format,
            subject,
            limit,
        } => audit::audit(&ctx, since, until, format, subject, limit).await,
    }
}
