//! The floors of ARCHITECTURE.md, checked: a module imports only modules on lower floors
//! (or itself). Reads every `crate::` path outside comments in `src/`; a new top-level
//! module fails here until it is given a floor.

use std::path::Path;

/// Top-level modules by floor, lowest first.
const FLOORS: &[&[&str]] = &[
    &["domain"],
    &["error"],
    &["clock", "db", "metrics", "pii", "telemetry"],
    &["config"],
    &["store", "sql", "mail", "http"],
    &["stages"],
    &["driver"],
    &["ops", "daemon"],
    &["api", "console"],
    // The demo runs the whole product, its API included.
    &["demo"],
    &["cli"],
];

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&module))
}

/// `crate::name` paths named on a line of code (comments skipped).
fn imports(line: &str) -> Vec<&str> {
    let code = line.split("//").next().unwrap_or("");
    code.match_indices("crate::")
        .map(|(at, m)| {
            let rest = &code[at + m.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// What breaks the floors in `files` (path under `src/`, text).
fn violations(files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in files {
        let module = path
            .split('/')
            .next()
            .unwrap_or(path)
            .trim_end_matches(".rs");
        if matches!(module, "lib" | "main") {
            continue;
        }
        let Some(own) = floor_of(module) else {
            found.push(format!(
                "src/{path}: module {module} has no floor in tests/floors.rs"
            ));
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            for import in imports(line) {
                if import == module {
                    continue;
                }
                match floor_of(import) {
                    Some(floor) if floor < own => {}
                    _ => found.push(format!(
                        "src/{path}:{}: {module} (floor {own}) imports crate::{import}",
                        n + 1
                    )),
                }
            }
        }
    }
    found
}

fn sources(dir: &Path, prefix: &str, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src is readable")
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().to_string();
        let path = entry.path();
        if path.is_dir() {
            sources(&path, &format!("{prefix}{name}/"), out);
        } else if name.ends_with(".rs") {
            let text = std::fs::read_to_string(&path).expect("source is readable");
            out.push((format!("{prefix}{name}"), text));
        }
    }
}

#[test]
fn every_module_imports_only_lower_floors() {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        "",
        &mut files,
    );
    assert!(files.len() > 20, "the sources were found");
    let found = violations(&files);
    assert!(found.is_empty(), "floors broken:\n{}", found.join("\n"));
}

#[test]
fn the_check_catches_an_upward_import() {
    let files = [
        (
            "domain/graph.rs".to_string(),
            "use crate::store::Claimed;\n".to_string(),
        ),
        (
            "config/pipeline.rs".to_string(),
            "use crate::domain::StateGraph; // crate::stages in a comment\nlet k: crate::stages::HandlerKind;\n".to_string(),
        ),
        (
            "stages/email.rs".to_string(),
            "use crate::driver::Clock;\nuse crate::stages::Handler;\n".to_string(),
        ),
        ("newthing/mod.rs".to_string(), String::new()),
    ];
    let found = violations(&files);
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(found[0].contains("domain (floor 0) imports crate::store"));
    assert!(found[1].starts_with("src/config/pipeline.rs:2:"));
    assert!(found[2].contains("stages (floor 5) imports crate::driver"));
    assert!(found[3].contains("module newthing has no floor"));
}
