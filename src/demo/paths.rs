//! Where the demo's files and databases are, and writing its configuration files.

use super::{DemoError, Options, io, overlay};
use crate::config::preset;
use std::path::PathBuf;

/// The demo's files.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Its directory.
    pub dir: PathBuf,
    /// The merged pipeline.toml.
    pub pipeline: PathBuf,
    /// states.toml (the shipped one).
    pub states: PathBuf,
    /// What the demo changed in the preset.
    pub overlay: PathBuf,
    /// The store's URL: `--store`, else an SQLite file in the directory.
    pub store_url: String,
    /// The source's URL: `--source` (MySQL/MariaDB), else an SQLite file in the directory.
    pub source_url: String,
    /// Where the built-in SMTP server writes its `.eml` files.
    pub mail: PathBuf,
}

impl Paths {
    pub(super) fn new(options: &Options) -> Paths {
        let dir = &options.dir;
        let sqlite = |file: &str| format!("sqlite://{}", dir.join(file).display());
        Paths {
            dir: dir.to_path_buf(),
            pipeline: dir.join("pipeline.toml"),
            states: dir.join("states.toml"),
            overlay: dir.join("overlay.toml"),
            store_url: options.store.clone().unwrap_or_else(|| sqlite("lethe.db")),
            source_url: options.source.clone().unwrap_or_else(|| sqlite("edx.db")),
            mail: dir.join("mail"),
        }
    }
}

/// `url` if it may be written into the demo's files and commands: not when it holds a
/// password (the demo then passes it in its own environment).
pub fn shown(url: &str) -> Option<&str> {
    (crate::db::redact_url(url) == url).then_some(url)
}

/// Refuses a `--dir` that holds something other than an earlier demo's files.
pub(super) fn check_dir(paths: &Paths) -> Result<(), DemoError> {
    // Only an empty directory or an earlier demo's: never a deployment's files.
    let used = std::fs::read_dir(&paths.dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if used && !paths.overlay.exists() {
        return Err(DemoError::Options(format!(
            "--dir {}: not empty and not an earlier demo's (no overlay.toml): choose another",
            paths.dir.display()
        )));
    }
    Ok(())
}

/// Writes the demo's configuration files; an earlier demo's files in `dir` are replaced.
pub(super) fn write_files(paths: &Paths, overlay: &str) -> Result<(), DemoError> {
    let dir = &paths.dir;
    check_dir(paths)?;
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    for stale in [
        "lethe.db",
        "lethe.db-wal",
        "lethe.db-shm",
        "edx.db",
        "edx.db-wal",
        "edx.db-shm",
    ] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let _ = std::fs::remove_dir_all(&paths.mail);
    std::fs::create_dir_all(&paths.mail).map_err(io("creating the mail directory"))?;
    let pipeline = overlay::merged_pipeline(overlay)?;
    let mut files: Vec<(&str, &str)> =
        vec![("overlay.toml", overlay), ("pipeline.toml", &pipeline)];
    files.extend(
        preset::Preset::Edx
            .files()
            .into_iter()
            .filter(|(p, _)| *p != "pipeline.toml"),
    );
    for (path, text) in files {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        std::fs::write(&file, text).map_err(io(format!("writing {}", file.display())))?;
    }
    Ok(())
}
