//! docker/: the runtime stage of the Dockerfile copies every file the image's configuration
//! needs (the states.toml and pipeline.toml its ENTRYPOINT names, the templates pipeline.toml
//! uses, resolved as the container resolves them, through the real loaders), and
//! compose.yaml runs lethe with flags and variables that exist.

mod common;

use clap::{CommandFactory, Parser};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// One instruction: its keyword (upper case) and the rest of its line.
fn instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        // Comments may sit between continued lines too.
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (keyword, rest) = l.trim().split_once(char::is_whitespace).unwrap_or((&l, ""));
            (keyword.to_ascii_uppercase(), rest.trim().to_string())
        })
        .collect()
}

/// The words of an instruction: its JSON (exec) form, else split on white space.
fn words(rest: &str) -> Vec<String> {
    match rest.starts_with('[') {
        true => serde_json::from_str(rest).unwrap_or_else(|e| panic!("{rest}: {e}")),
        false => rest.split_whitespace().map(str::to_string).collect(),
    }
}

/// What the last (runtime) stage of a Dockerfile puts in its image from the build context.
struct Runtime {
    /// Image path → context path, each file.
    files: BTreeMap<PathBuf, PathBuf>,
    /// The ENTRYPOINT's words.
    entrypoint: Vec<String>,
    /// The CMD's words.
    cmd: Vec<String>,
    /// The last WORKDIR.
    workdir: PathBuf,
}

/// Every file under `path` (itself if a file), relative to it.
fn walk(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![PathBuf::new()];
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.unwrap();
        let name = PathBuf::from(entry.file_name());
        match entry.path().is_dir() {
            true => files.extend(walk(&entry.path()).into_iter().map(|f| name.join(f))),
            false => files.push(name),
        }
    }
    files
}

/// The runtime stage of `dockerfile`, its COPY sources read under `context`, with Docker's
/// rules: a directory's contents are copied (not the directory), into a destination that
/// is a directory when it ends with `/` or there are several sources.
fn runtime(dockerfile: &str, context: &Path) -> Runtime {
    let all = instructions(dockerfile);
    let start = all.iter().rposition(|(k, _)| k == "FROM").expect("a FROM");
    let mut stage = Runtime {
        files: BTreeMap::new(),
        entrypoint: Vec::new(),
        cmd: Vec::new(),
        workdir: PathBuf::from("/"),
    };
    for (keyword, rest) in &all[start + 1..] {
        match keyword.as_str() {
            "WORKDIR" => stage.workdir = stage.workdir.join(rest),
            "ENTRYPOINT" => stage.entrypoint = words(rest),
            "CMD" => stage.cmd = words(rest),
            "COPY" | "ADD" => {
                let mut args = words(rest);
                // Files from another stage (the binary) are not the context's.
                if args.iter().any(|a| a.starts_with("--from")) {
                    continue;
                }
                args.retain(|a| !a.starts_with("--"));
                let dest = args.pop().expect("a destination");
                let into_dir = dest.ends_with('/') || args.len() > 1;
                let dest = stage.workdir.join(&dest);
                for source in &args {
                    let from = context.join(source);
                    let is_dir = from.is_dir();
                    for file in walk(&from) {
                        let at = match (is_dir, into_dir) {
                            (true, _) => dest.join(&file),
                            (false, true) => dest.join(from.file_name().unwrap()),
                            (false, false) => dest.clone(),
                        };
                        let source = match file.as_os_str().is_empty() {
                            true => from.clone(),
                            false => from.join(&file),
                        };
                        stage.files.insert(at, source);
                    }
                }
            }
            _ => {}
        }
    }
    stage
}

/// The value of `--flag` in `args` (`--flag V` or `--flag=V`).
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .enumerate()
        .find_map(|(i, a)| match a.strip_prefix(name) {
            Some("") => args.get(i + 1).map(String::as_str),
            Some(v) => v.strip_prefix('='),
            None => None,
        })
}

/// A directory that is removed at the end.
struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the image's configuration needs and the runtime stage does not copy, as the
/// container resolves it; empty when the image is complete.
fn missing(dockerfile: &str) -> Vec<String> {
    let stage = runtime(dockerfile, &common::repo_root());
    // The image's files laid out under a temporary root, so the real loaders resolve
    // paths (templates beside pipeline.toml) as they will in the container.
    static ROOTS: AtomicU32 = AtomicU32::new(0);
    let root = Root(std::env::temp_dir().join(format!(
        "lethe-image-{}-{}",
        std::process::id(),
        ROOTS.fetch_add(1, Ordering::Relaxed)
    )));
    let _ = std::fs::remove_dir_all(&root.0);
    for (at, from) in &stage.files {
        let file = root.0.join(at.strip_prefix("/").unwrap());
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::copy(from, &file)
            .unwrap_or_else(|e| panic!("{} -> {}: {e}", from.display(), file.display()));
    }
    let inside = |path: &Path| {
        root.0
            .join(stage.workdir.join(path).strip_prefix("/").unwrap())
    };
    let shown = |text: String| text.replace(&root.0.display().to_string(), "");
    let args: Vec<String> = stage.entrypoint.iter().chain(&stage.cmd).cloned().collect();
    let mut missing = Vec::new();
    let states = inside(Path::new(flag(&args, "--states").unwrap_or("states.toml")));
    let pipeline = inside(Path::new(
        flag(&args, "--config").unwrap_or("pipeline.toml"),
    ));
    for file in [&states, &pipeline] {
        if !file.is_file() {
            missing.push(shown(format!("{}: not copied", file.display())));
        }
    }
    if !missing.is_empty() {
        return missing;
    }
    let config = match lethe::config::Config::load(&states, &pipeline) {
        Ok(config) => config,
        Err(e) => return vec![shown(e.to_string())],
    };
    let Some(email) = &config.pipeline.email else {
        return missing;
    };
    // An absolute templates directory is the container's path.
    let templates = match email.templates.starts_with(&root.0) {
        true => email.templates.clone(),
        false => inside(&email.templates),
    };
    if !templates.is_dir() {
        missing.push(shown(format!(
            "templates {}: not copied",
            templates.display()
        )));
    }
    if let Err(e) = lethe::stages::load_templates(&config.pipeline) {
        missing.push(shown(format!("templates: {e}")));
    }
    // Every locale the repository ships, each template the stages use.
    let shipped = common::repo_root().join("templates");
    for locale in std::fs::read_dir(&shipped).unwrap() {
        let locale = locale.unwrap().file_name();
        for name in config.pipeline.templates_used() {
            let file = templates.join(&locale).join(format!("{name}.toml"));
            if shipped.join(&locale).join(format!("{name}.toml")).is_file() && !file.is_file() {
                missing.push(shown(format!("template {}: not copied", file.display())));
            }
        }
    }
    missing
}

fn read(path: &str) -> String {
    std::fs::read_to_string(common::repo_root().join(path)).unwrap()
}

#[test]
fn the_image_has_every_file_its_configuration_needs() {
    assert_eq!(missing(&read("docker/Dockerfile")), Vec::<String>::new());
    let stage = runtime(&read("docker/Dockerfile"), &common::repo_root());
    // The default command parses, and a non-root user runs it.
    let args: Vec<&String> = stage.entrypoint.iter().chain(&stage.cmd).collect();
    lethe::cli::Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let users: Vec<(String, String)> = instructions(&read("docker/Dockerfile"))
        .into_iter()
        .filter(|(k, _)| k == "USER")
        .collect();
    assert!(
        users.last().is_some_and(|(_, u)| u != "root" && u != "0"),
        "{users:?}"
    );
    let all = instructions(&read("docker/Dockerfile"));
    assert!(
        all.iter()
            .any(|(k, v)| k == "HEALTHCHECK" && v.contains("/healthz"))
    );
}

#[test]
fn the_check_fails_on_the_old_image_without_templates() {
    let old = r#"
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin lethe

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/lethe lethe && mkdir -p /var/lib/lethe /etc/lethe \
    && chown lethe /var/lib/lethe
COPY --from=build /src/target/release/lethe /usr/local/bin/lethe
COPY states.toml pipeline.toml /etc/lethe/
USER lethe
WORKDIR /var/lib/lethe
ENTRYPOINT ["lethe", "--config", "/etc/lethe/pipeline.toml", "--states", "/etc/lethe/states.toml"]
CMD ["run"]
"#;
    let missing = missing(old);
    assert!(
        missing
            .iter()
            .any(|m| m.starts_with("templates /etc/lethe/templates: not copied")),
        "{missing:?}"
    );
    assert!(
        missing
            .iter()
            .any(|m| m.contains("/etc/lethe/templates/fr/warning.toml")),
        "{missing:?}"
    );
    // A directory's contents are copied, not the directory: templates/ into /etc/lethe/
    // puts en/ and fr/ beside pipeline.toml, where nothing looks for them.
    let flattened = old.replace(
        "COPY states.toml pipeline.toml /etc/lethe/",
        "COPY states.toml pipeline.toml /etc/lethe/\nCOPY templates/ /etc/lethe/",
    );
    assert!(!self::missing(&flattened).is_empty());
    let no_states = old.replace("COPY states.toml pipeline.toml", "COPY pipeline.toml");
    assert_eq!(
        self::missing(&no_states),
        ["/etc/lethe/states.toml: not copied"]
    );
}

/// The lines of service `name` in compose.yaml (indented under `services:`).
fn service<'a>(compose: &'a str, name: &str) -> Vec<&'a str> {
    compose
        .lines()
        .skip_while(|l| l.trim_end() != format!("  {name}:"))
        .skip(1)
        .take_while(|l| l.trim().is_empty() || l.starts_with("   ") || l.starts_with('#'))
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect()
}

/// The items of block sequence `key` among `lines`, or its mapping's `KEY: value` pairs.
fn block<'a>(lines: &[&'a str], key: &str) -> Vec<&'a str> {
    let Some(at) = lines.iter().position(|l| l.trim() == format!("{key}:")) else {
        return Vec::new();
    };
    let indent = lines[at].len() - lines[at].trim_start().len();
    lines[at + 1..]
        .iter()
        .take_while(|l| l.len() - l.trim_start().len() > indent)
        .map(|l| l.trim())
        .collect()
}

fn unquoted(item: &str) -> String {
    item.trim_start_matches("- ")
        .trim()
        .trim_matches('"')
        .to_string()
}

#[test]
fn compose_runs_lethe_with_flags_and_variables_that_exist() {
    let compose = read("docker/compose.yaml");
    let lethe = service(&compose, "lethe");
    assert!(
        lethe
            .iter()
            .any(|l| l.trim() == "dockerfile: docker/Dockerfile")
    );
    let stage = runtime(&read("docker/Dockerfile"), &common::repo_root());
    let command: Vec<String> = block(&lethe, "command").into_iter().map(unquoted).collect();
    assert_eq!(command.first().map(String::as_str), Some("demo"));
    let args: Vec<String> = stage
        .entrypoint
        .iter()
        .cloned()
        .chain(command.clone())
        .collect();
    lethe::cli::Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));

    // Every LETHE_ variable it sets is read by a flag of the command it runs.
    let cli = lethe::cli::Cli::command();
    let demo = cli.find_subcommand("demo").unwrap();
    let read_by: Vec<String> = cli
        .get_arguments()
        .chain(demo.get_arguments())
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    let environment = block(&lethe, "environment");
    let set: Vec<&str> = environment
        .iter()
        .filter_map(|l| l.split_once(':').map(|(k, _)| k))
        .filter(|k| k.starts_with("LETHE_"))
        .collect();
    assert!(set.contains(&"LETHE_DEMO_SOURCE_URL") && set.contains(&"LETHE_STORE_URL"));
    for variable in set {
        assert!(
            read_by.iter().any(|e| e == variable),
            "{variable}: {read_by:?}"
        );
    }

    // The API listens on the port compose publishes, and mail goes to mailpit's SMTP port.
    let listen = flag(&command, "--listen").unwrap();
    let port = listen.rsplit_once(':').unwrap().1;
    let published: Vec<String> = block(&lethe, "ports").into_iter().map(unquoted).collect();
    assert!(
        published.iter().any(|p| p.ends_with(&format!(":{port}"))),
        "{published:?}"
    );
    assert_eq!(flag(&command, "--smtp"), Some("mailpit:1025"));
    for needed in ["postgres", "mariadb", "mailpit"] {
        assert!(!service(&compose, needed).is_empty(), "{needed}");
    }
    // The test services on the addresses the tests use.
    for (name, published) in [
        ("postgres", "127.0.0.1:5432:5432"),
        ("mariadb", "127.0.0.1:3306:3306"),
    ] {
        let ports: Vec<String> = block(&service(&compose, name), "ports")
            .into_iter()
            .map(unquoted)
            .collect();
        assert_eq!(ports, [published], "{name}");
    }
}
