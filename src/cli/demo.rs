//! `demo`: the whole pipeline on embedded SQLite, with progress bars (plain lines when
//! stdout is not a terminal), the report, and the commands to try next.

use super::failure::{Failure, Outcome};
use super::output::out;
use crate::demo::{Options, Progress};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

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

pub(crate) async fn demo(users: i64, dir: Option<PathBuf>, keep: bool, serve: bool) -> Outcome {
    let temporary = dir.is_none();
    let dir = dir.unwrap_or_else(temp_dir);
    let dir = match dir.is_absolute() {
        true => dir,
        false => std::env::current_dir()
            .map_err(|e| Failure::internal(format!("the current directory: {e}")))?
            .join(dir),
    };
    out!("lethe demo: {users} synthetic users in {}", dir.display());
    let bars = Bars {
        terminal: std::io::stdout().is_terminal(),
        current: Mutex::new(None),
    };
    let options = Options {
        users,
        dir: dir.clone(),
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
    out!("");
    out!("{}", finished.report.render());
    let paths = &finished.paths;
    let flags = format!(
        "--store {} --config {} --states {}",
        paths.store_url,
        paths.pipeline.display(),
        paths.states.display()
    );
    let kept = keep || serve || !temporary;
    if kept {
        let cast = crate::demo::Cast::new(users);
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
            "  curl -H 'X-API-Key: {}' {}/v1/stats",
            finished.auditor_key,
            finished.api_url
        );
        out!("Ctrl-C stops it.");
        let _ = tokio::signal::ctrl_c().await;
    }
    finished.stop().await;
    if !kept {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
