//! `demo`: the whole pipeline on embedded SQLite (or on MariaDB, PostgreSQL and an SMTP
//! catcher), with progress bars (plain lines when stdout is not a terminal), the report,
//! and the commands to try next.

use super::failure::{Failure, Outcome};
use super::output::out;
use crate::db::redact_url;
use crate::demo::{Options, Progress, shown};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

/// `lethe demo`'s arguments (the store is the global `--store`).
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Users in the synthetic source (about 3% inactive).
    #[arg(long, default_value_t = 1000)]
    users: i64,
    /// Where to write its files (default: a fresh temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the temporary directory afterwards (a --dir is always kept).
    #[arg(long)]
    keep: bool,
    /// Leave the API serving the demo's store afterwards, until Ctrl-C (or SIGTERM).
    #[arg(long)]
    serve: bool,
    /// An empty MySQL/MariaDB database (mysql://USER@HOST/DB) to create the edX-like source
    /// in, instead of an SQLite file; refused (exit 3) when it already has an auth_user table.
    #[arg(
        long,
        value_name = "URL",
        env = "LETHE_DEMO_SOURCE_URL",
        hide_env_values = true
    )]
    source: Option<String>,
    /// Send the mail to this SMTP server (no TLS, no auth: a catcher such as mailpit) instead
    /// of the built-in one, which writes .eml files. Only the built-in server refuses the
    /// cast's moved-away mailbox, so with --smtp that user completes instead of ERRORED.
    #[arg(long, value_name = "HOST:PORT")]
    smtp: Option<String>,
    /// Where the demo's API listens, during the run and with --serve (default: a free port
    /// on 127.0.0.1; e.g. 0.0.0.0:8100 in a container).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

/// Progress bars on a terminal, a line per phase elsewhere.
struct Bars {
    terminal: bool,
    current: Mutex<Option<(String, ProgressBar, Instant, u64)>>,
}

impl Progress for Bars {
    fn start(&self, phase: &str, total: u64) {
        let bar = match self.terminal {
            true => ProgressBar::new(total),
            false => ProgressBar::hidden(),
        };
        if let Ok(style) = ProgressStyle::with_template("{msg:40} [{bar:30}] {pos}/{len} {elapsed}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(phase.to_string());
        if let Ok(mut current) = self.current.lock() {
            *current = Some((phase.to_string(), bar, Instant::now(), total));
        }
    }

    fn set(&self, done: u64) {
        if let Ok(current) = self.current.lock()
            && let Some((_, bar, _, _)) = current.as_ref()
        {
            bar.set_position(done);
        }
    }

    fn finish(&self) {
        if let Ok(mut current) = self.current.lock()
            && let Some((phase, bar, started, total)) = current.take()
        {
            bar.finish();
            if !self.terminal {
                out!(
                    "{phase}: {total} in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
}

/// A fresh directory under the system's temporary directory.
fn temp_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("lethe-demo-{}-{nanos:08x}", std::process::id()))
}

pub(crate) async fn demo(args: DemoArgs, store: Option<String>) -> Outcome {
    let DemoArgs {
        users,
        dir,
        keep,
        serve,
        source,
        smtp,
        listen,
    } = args;
    let temporary = dir.is_none();
    let dir = dir.unwrap_or_else(temp_dir);
    let dir = match dir.is_absolute() {
        true => dir,
        false => std::env::current_dir()
            .map_err(|e| Failure::internal(format!("the current directory: {e}")))?
            .join(dir),
    };
    out!("lethe demo: {users} synthetic users in {}", dir.display());
    for (what, url) in [("source", &source), ("store", &store)] {
        if let Some(url) = url {
            out!("  {what}: {}", redact_url(url));
        }
    }
    if let Some(smtp) = &smtp {
        out!("  mail to: {smtp}");
    }
    let bars = Bars {
        terminal: std::io::stdout().is_terminal(),
        current: Mutex::new(None),
    };
    let options = Options {
        source,
        store,
        smtp: smtp.clone(),
        listen,
        ..Options::new(users, dir.clone())
    };
    let finished = match crate::demo::run(&options, &bars).await {
        Ok(finished) => finished,
        Err(e) => {
            if temporary && !keep {
                let _ = std::fs::remove_dir_all(&dir);
            }
            return Err(e.into());
        }
    };
    let cast = crate::demo::Cast::new(users);
    out!("");
    out!("{}", finished.report.render());
    if smtp.is_some() {
        out!(
            "(With --smtp, user {} (the cast's moved-away mailbox) is refused only by the built-in SMTP server: here it completed.)",
            cast.refused
        );
        out!("");
    }
    let paths = &finished.paths;
    let flags = format!(
        "--store {} --config {} --states {}",
        shell_word(
            &shown(&paths.store_url).map_or_else(|| redact_url(&paths.store_url), str::to_string)
        ),
        shell_word(&paths.pipeline.display().to_string()),
        shell_word(&paths.states.display().to_string())
    );
    let kept = keep || serve || !temporary;
    if kept {
        out!(
            "The demo's files are in {} (overlay.toml says what it changed in the preset). Try:",
            dir.display()
        );
        out!("  lethe stats {flags}");
        out!("  lethe list --state ERRORED {flags}");
        // Ended retirements are found by the keyed hash of their subject.
        let key = format!("LETHE_HASH_KEY={}", crate::demo::HASH_KEY);
        out!("  {key} lethe status {} {flags}", cast.returning);
        if let Some(first) = cast.retired().first() {
            out!("  {key} lethe audit --subject {first} {flags}");
        }
        out!("  lethe plan {} {flags}", cast.protected);
        if shown(&paths.store_url).is_none() || shown(&paths.source_url).is_none() {
            out!(
                "(Passwords are written nowhere: put the store's back in --store, and give the source's URL as {}.)",
                crate::config::env_key("edx", "URL")
            );
        }
    } else {
        out!(
            "Rerun with --keep to keep the demo's files and explore them with lethe stats, list, status, audit and plan."
        );
    }
    if serve {
        out!("");
        out!(
            "The API is serving the demo's store at {}",
            finished.api_url
        );
        out!("  read-only (auditor) key: {}", finished.auditor_key);
        out!(
            "  the console: {}/ui (sign in with that key)",
            finished.api_url
        );
        out!(
            "  curl -H 'X-API-Key: {}' {}/v1/stats",
            finished.auditor_key,
            finished.api_url
        );
        out!("Ctrl-C (or SIGTERM, as `docker stop` sends) stops it.");
        let _ = crate::daemon::stop_on_signal().wait_for(|s| *s).await;
    }
    finished.stop().await;
    if !kept {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// `word` as one shell word: as is when it has nothing a shell reads, else single-quoted,
/// so a printed command can be pasted even when `--dir` has spaces or quotes in it.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:@%+=,".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn a_word_with_spaces_or_quotes_is_single_quoted() {
        assert_eq!(
            shell_word("/tmp/demo/pipeline.toml"),
            "/tmp/demo/pipeline.toml"
        );
        assert_eq!(shell_word("/tmp/my demo"), "'/tmp/my demo'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
