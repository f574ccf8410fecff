//! The README against the real command line: every `lethe …` (or `cargo run --release --
//! …`) line of its fenced code blocks names a subcommand that exists and only flags that
//! subcommand (or a global one) takes; and it has the sections the readers look for, in
//! their order. The checker is tested on a made-up snippet too, so it can fail.

use clap::CommandFactory;

const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
const CI_RUN: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run"));

/// One README line with something the command line does not know.
#[derive(Debug)]
struct Problem {
    /// 1-based line number in the text checked.
    line: usize,
    /// The line as written.
    text: String,
    /// What is unknown, one entry each.
    unknown: Vec<String>,
}

/// The command tree of the binary, globals propagated and `help` added, as clap parses.
fn cli() -> clap::Command {
    let mut command = lethe::cli::Cli::command();
    command.build();
    command
}

/// Every lethe command in the fenced code blocks of `text`, checked against `cli`.
fn check(text: &str, cli: &clap::Command) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut fence: Option<&str> = None;
    // A line ending in `\` continues on the next one; it is reported at its first line.
    let mut pending: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if let Some(marker) = fence {
            if trimmed.starts_with(marker) && trimmed.trim_start_matches(marker).trim().is_empty() {
                fence = None;
                pending = None;
                continue;
            }
        } else {
            for marker in ["```", "~~~"] {
                if trimmed.starts_with(marker) {
                    fence = Some(marker);
                }
            }
            continue;
        }
        let (line, joined) = match pending.take() {
            Some((line, before)) => (line, format!("{before} {trimmed}")),
            None => (index + 1, trimmed.to_string()),
        };
        if let Some(head) = joined.strip_suffix('\\') {
            pending = Some((line, head.to_string()));
            continue;
        }
        let mut unknown = Vec::new();
        for segment in split_commands(&joined) {
            if let Some(args) = lethe_args(&segment) {
                unknown.extend(check_args(cli, &args));
            }
        }
        if !unknown.is_empty() {
            problems.push(Problem {
                line,
                text: joined,
                unknown,
            });
        }
    }
    problems
}

/// Splits a shell line into commands (at `&&`, `||`, `;` and `|` outside quotes and
/// `[...]`), each a list of words; a `#` that starts a word outside quotes ends the line.
fn split_commands(line: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut depth = 0usize;
    let mut chars = line.chars().peekable();
    let end_word = |words: &mut Vec<String>, word: &mut String, in_word: &mut bool| {
        if *in_word {
            words.push(std::mem::take(word));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some('"') if c == '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            Some(_) => word.push(c),
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    in_word = true;
                }
                '\\' => {
                    if let Some(next) = chars.next() {
                        word.push(next);
                        in_word = true;
                    }
                }
                '#' if !in_word => break,
                c if c.is_whitespace() => end_word(&mut words, &mut word, &mut in_word),
                ';' | '|' | '&' if depth == 0 => {
                    end_word(&mut words, &mut word, &mut in_word);
                    if c == '&' && chars.peek() != Some(&'&') {
                        // A lone `&` (background) ends the command too.
                    } else if c != ';' && chars.peek() == Some(&c) {
                        chars.next();
                    }
                    commands.push(std::mem::take(&mut words));
                }
                _ => {
                    if c == '[' {
                        depth += 1;
                    } else if c == ']' {
                        depth = depth.saturating_sub(1);
                    }
                    word.push(c);
                    in_word = true;
                }
            },
        }
    }
    end_word(&mut words, &mut word, &mut in_word);
    commands.push(words);
    commands.retain(|c| !c.is_empty());
    commands
}

/// The arguments given to lethe when `words` is a lethe command (after an optional `$`
/// prompt and `NAME=value` environment prefixes): `lethe ARGS` or `cargo run … -- ARGS`.
fn lethe_args(words: &[String]) -> Option<Vec<String>> {
    let is_assignment = |w: &str| {
        w.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit())
        })
    };
    let start = words.iter().position(|w| w != "$" && !is_assignment(w))?;
    let words = &words[start..];
    match words.first().map(String::as_str) {
        Some("lethe") => Some(words[1..].to_vec()),
        Some("cargo") if words.get(1).map(String::as_str) == Some("run") => {
            let rest = words.iter().position(|w| w == "--");
            Some(rest.map(|at| words[at + 1..].to_vec()).unwrap_or_default())
        }
        _ => None,
    }
}

/// What `args` names that `cli` does not know: a subcommand, a `--flag` or a `-f`.
fn check_args(cli: &clap::Command, args: &[String]) -> Vec<String> {
    let mut unknown = Vec::new();
    let mut command = cli;
    let mut path = String::from("lethe");
    let mut asks_help = false;
    let mut only_positionals = false;
    let mut words = args.iter();
    while let Some(raw) = words.next() {
        // Optional notation: `[--limit N]`, `[--format table|csv|json]`.
        let word = raw.trim_start_matches('[').trim_end_matches(']');
        let word = word.trim_end_matches("...").trim_end_matches('…');
        if word.is_empty() {
            continue;
        }
        if !only_positionals && word == "--" {
            only_positionals = true;
            continue;
        }
        if !only_positionals && let Some(long) = word.strip_prefix("--") {
            let (name, inline_value) = match long.split_once('=') {
                Some((name, _)) => (name, true),
                None => (long, false),
            };
            match find_long(command, name) {
                None => unknown.push(format!("`--{name}` is not an option of `{path}`")),
                Some(arg) => {
                    asks_help |= matches!(name, "help" | "version");
                    if takes_value(arg) && !inline_value && !raw.ends_with(']') {
                        words.next();
                    }
                }
            }
            continue;
        }
        if !only_positionals
            && let Some(shorts) = word.strip_prefix('-')
            && shorts.starts_with(|c: char| c.is_ascii_alphabetic())
        {
            for (at, short) in shorts.char_indices() {
                if short == '=' {
                    break;
                }
                match command
                    .get_arguments()
                    .find(|a| a.get_short() == Some(short))
                {
                    None => unknown.push(format!("`-{short}` is not an option of `{path}`")),
                    Some(arg) => {
                        asks_help |= matches!(short, 'h' | 'V');
                        if takes_value(arg) {
                            if at + short.len_utf8() == shorts.len() && !raw.ends_with(']') {
                                words.next();
                            }
                            break;
                        }
                    }
                }
            }
            continue;
        }
        if command.has_subcommands() && !only_positionals {
            match command.find_subcommand(word) {
                Some(sub) => {
                    path = format!("{path} {}", sub.get_name());
                    command = sub;
                }
                None => {
                    let known: Vec<&str> =
                        command.get_subcommands().map(|c| c.get_name()).collect();
                    unknown.push(format!(
                        "`{path} {word}`: no such subcommand (known: {})",
                        known.join(", ")
                    ));
                    // Its flags cannot be checked against anything.
                    return unknown;
                }
            }
        }
        // Otherwise a positional value or a placeholder: not checked.
    }
    if command.has_subcommands() && !asks_help {
        unknown.push(format!("`{path}` needs a subcommand"));
    }
    unknown
}

fn find_long<'a>(command: &'a clap::Command, name: &str) -> Option<&'a clap::Arg> {
    command.get_arguments().find(|arg| {
        arg.get_long() == Some(name)
            || arg
                .get_all_aliases()
                .is_some_and(|aliases| aliases.contains(&name))
    })
}

fn takes_value(arg: &clap::Arg) -> bool {
    arg.get_action().takes_values()
}

fn report(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| {
            format!(
                "README.md:{}: {}\n    {}",
                p.line,
                p.text,
                p.unknown.join("\n    ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_lethe_command_of_the_readme_exists_with_its_flags() {
    let problems = check(README, &cli());
    assert!(
        problems.is_empty(),
        "{} README line(s) name what `lethe --help` does not have:\n{}",
        problems.len(),
        report(&problems)
    );
    // The check saw the commands at all (a README without fences would pass vacuously).
    let checked = README
        .lines()
        .filter(|l| l.trim_start().starts_with("lethe "))
        .count();
    assert!(checked >= 20, "only {checked} `lethe …` lines found");
}

#[test]
fn the_checker_reports_unknown_subcommands_and_flags_and_passes_good_lines() {
    let snippet = "\
Some prose: lethe frobnicate is not in a fence, so it is not checked.

```sh
lethe frobnicate 42
lethe list --state ERRORED --nope
lethe audit [--format table|csv|json] [--bogus N]   # two optional flags, one made up
lethe status 42 && lethe resume 42 --too STATE
$ LETHE_STORE_URL=sqlite://x.db lethe key
cargo run --release -- demo --users 300 --fast
```
";
    let problems = check(snippet, &cli());
    let all = report(&problems);
    for (line, expected) in [
        (4, "`lethe frobnicate`: no such subcommand"),
        (5, "`--nope` is not an option of `lethe list`"),
        (6, "`--bogus` is not an option of `lethe audit`"),
        (7, "`--too` is not an option of `lethe resume`"),
        (8, "`lethe key` needs a subcommand"),
        (9, "`--fast` is not an option of `lethe demo`"),
    ] {
        assert!(
            problems
                .iter()
                .any(|p| p.line == line && p.unknown.iter().any(|u| u.contains(expected))),
            "line {line} should report {expected:?}; got:\n{all}"
        );
    }
    assert_eq!(problems.len(), 6, "{all}");
    // --format's value `table|csv|json` is a value, not a pipe into `csv`.
    assert_eq!(problems[2].unknown.len(), 1, "{all}");

    let good = "\
```
$ LETHE_HASH_KEY=0123456789abcdef lethe --store sqlite://x.db status '#7'   # a comment
lethe list --state=ERRORED --limit 10 --json | jq -r '.[] | .id' | xargs echo
lethe key new joanie --scope service:joanie && lethe --help; lethe stats -h
lethe audit --since 2026-01-01 \\
    --format csv --subject 42 > audit.csv
lethe run [--once] [--listen ADDR]
cargo run --release -- --config ./pipeline.toml check --connect
cargo test --locked
```
";
    let problems = check(good, &cli());
    assert!(problems.is_empty(), "{}", report(&problems));
}

/// The body of the `## ` section whose heading starts with `title` (case-insensitive).
fn section<'a>(text: &'a str, title: &str) -> &'a str {
    let title = title.to_lowercase();
    let mut start: Option<usize> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if let Some(heading) = line.strip_prefix("## ") {
            match start {
                Some(start) => return &text[start..offset],
                None if heading.trim().to_lowercase().starts_with(&title) => {
                    start = Some(offset + line.len());
                }
                None => {}
            }
        }
        offset += line.len();
    }
    match start {
        Some(start) => &text[start..],
        None => panic!("README.md has no `## {title}` section"),
    }
}

#[test]
fn the_readme_has_the_readers_sections_in_order() {
    let headings: Vec<String> = README
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    let wanted = [
        "set up",
        "running it for real against open edx",
        "operator guide",
        "downstream-service guide",
        "operations",
    ];
    let mut at = 0;
    for title in wanted {
        match headings[at..].iter().position(|h| h.starts_with(title)) {
            Some(found) => at += found + 1,
            None => {
                panic!("no `## {title}` heading after the ones before it; headings: {headings:?}")
            }
        }
    }

    // First, one paragraph on what lethe is and who it is for.
    let intro = README
        .split("\n## ")
        .next()
        .unwrap_or_default()
        .trim_start_matches("# lethe");
    assert!(
        intro.split_whitespace().count() >= 40,
        "the README starts with a paragraph saying what lethe is and who it is for"
    );

    // The two set-up commands: the demo, and the test command .ci/run calls.
    let set_up = section(README, "set up");
    assert!(set_up.contains("cargo run --release -- demo"), "{set_up}");
    let test_commands: Vec<&str> = CI_RUN
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("cargo test"))
        .collect();
    assert!(!test_commands.is_empty(), ".ci/run runs no `cargo test`");
    for command in test_commands {
        assert!(
            set_up.contains(command),
            "Set up shows `{command}`, the test command .ci/run calls"
        );
    }
    for needed in [
        "PostgreSQL",
        "MariaDB",
        "docker compose -f docker/compose.yaml up -d",
    ] {
        assert!(set_up.contains(needed), "Set up says {needed}");
    }

    // The walk-through runs its commands in the order an operator does.
    let real = section(README, "running it for real");
    let mut from = 0;
    for command in [
        "lethe init",
        "lethe check --connect",
        "lethe scan --dry-run",
        "lethe plan",
        "lethe run",
    ] {
        match real[from..].find(command) {
            Some(found) => from += found + command.len(),
            None => panic!("the walk-through shows `{command}` after the commands before it"),
        }
    }
    for topic in [
        "source",
        "SMTP",
        "target",
        "Sarbacane",
        "service",
        "API key",
        "environment",
    ] {
        assert!(
            real.to_lowercase().contains(&topic.to_lowercase()),
            "the walk-through covers {topic}"
        );
    }

    let operator = section(README, "operator guide");
    for command in [
        "status", "list", "resume", "abort", "touch", "ack", "audit", "ERRORED",
    ] {
        assert!(
            operator.contains(command),
            "the operator guide covers {command}"
        );
    }
    let operations = section(README, "operations");
    for topic in ["/metrics", "PostgreSQL", "migrat", "at least once"] {
        assert!(
            operations.to_lowercase().contains(&topic.to_lowercase()),
            "operations covers {topic}"
        );
    }
}
