//! `init`: a new deployment's states.toml, pipeline.toml, templates/ and lethe.env, from a
//! built-in preset, and the checklist of what to fill in.

use super::failure::{Failure, Outcome};
use super::output::out;
use crate::config::{Config, preset::Preset};
use std::path::{Path, PathBuf};

/// The secrets file; `--force` never overwrites it (it may hold filled-in secrets).
const ENV_FILE: &str = "lethe.env";

pub(crate) fn init(dir: Option<PathBuf>, preset_name: &str, force: bool) -> Outcome {
    let preset = Preset::named(preset_name)
        .ok_or_else(|| Failure::config(format!("--preset {preset_name}: no such preset")))?;
    let dir = dir.unwrap_or_else(|| PathBuf::from("."));
    let files = preset.files();
    let states = files.iter().find(|(path, _)| *path == "states.toml");
    let pipeline = files.iter().find(|(path, _)| *path == "pipeline.toml");
    let (Some((_, states)), Some((_, pipeline))) = (states, pipeline) else {
        return Err(Failure::internal(format!(
            "preset {preset_name} has no states.toml or pipeline.toml"
        )));
    };
    let (_, parsed) = Config::from_texts("states.toml", states, "pipeline.toml", pipeline)
        .map_err(|e| Failure::internal(format!("preset {preset_name} does not parse: {e}")))?;
    let secrets = crate::config::environment(&parsed);
    let env_text = crate::config::env_file(&secrets);

    let existing: Vec<&str> = files
        .iter()
        .map(|(path, _)| *path)
        .chain([ENV_FILE])
        .filter(|path| dir.join(path).exists())
        .collect();
    if !existing.is_empty() && !force {
        return Err(Failure::refused(format!(
            "{}: {} already exist; nothing was written (--force overwrites all but {ENV_FILE})",
            dir.display(),
            existing.join(", ")
        )));
    }
    let mut written = Vec::new();
    for (path, text) in &files {
        write(&dir, path, text)?;
        written.push(*path);
    }
    let kept_env = dir.join(ENV_FILE).exists();
    if !kept_env {
        write_secret_file(&dir.join(ENV_FILE), &env_text)?;
        written.push(ENV_FILE);
    }
    out!(
        "wrote the {preset_name} preset to {}: {}",
        dir.display(),
        written.join(", ")
    );
    if kept_env {
        out!("kept the existing {ENV_FILE} (it may hold your secrets)");
    }
    out!("\nBefore the first run:");
    let required: Vec<&str> = secrets
        .iter()
        .filter(|v| v.required)
        .map(|v| v.name.as_str())
        .collect();
    let mut step = 1;
    out!(
        "  {step}. set the secrets in {ENV_FILE} (or your secret manager): {}",
        required.join(", ")
    );
    for item in preset.checklist() {
        step += 1;
        out!("  {step}. {item}");
    }
    let flags = flags_for(&dir);
    out!("\nThen, in this order:");
    for command in [
        "migrate",
        "check --connect",
        "scan --dry-run",
        "plan SUBJECT_ID",
        "run",
    ] {
        out!("  lethe{flags} {command}");
    }
    Ok(())
}

/// The `--config`/`--states` flags that point at `dir`'s files (none for the current
/// directory, lethe's default).
fn flags_for(dir: &Path) -> String {
    if dir == Path::new(".") {
        return String::new();
    }
    format!(
        " --config {} --states {}",
        dir.join("pipeline.toml").display(),
        dir.join("states.toml").display()
    )
}

/// Creates `file` readable by its owner only (it will hold secrets), never replacing one.
fn write_secret_file(file: &Path, text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let fail = |e: std::io::Error| Failure::unreachable(format!("{}: {e}", file.display()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut handle = options.open(file).map_err(fail)?;
    handle.write_all(text.as_bytes()).map_err(fail)
}

fn write(dir: &Path, path: &str, text: &str) -> Result<(), Failure> {
    let file = dir.join(path);
    let fail = |e: std::io::Error| Failure::unreachable(format!("{}: {e}", file.display()));
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    std::fs::write(&file, text).map_err(fail)
}
