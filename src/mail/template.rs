//! Email templates: `templates/<locale>/<name>.toml` with `subject`, `text` and `html`,
//! variables written `{{ name }}`. Everything is parsed and checked at start: an unknown or
//! unset variable is a config error naming the file, the part and the variable.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The variables a template may use.
pub const VARIABLES: &[&str] = &[
    "username",
    "site_name",
    "deletion_date",
    "days_left",
    "login_url",
    "support_email",
];

/// Variables whose values come from `[email]` and must not be empty when used.
const FROM_CONFIG: &[&str] = &["site_name", "login_url", "support_email"];

/// Why templates cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A file is missing or unreadable.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file does not parse or uses what is not allowed.
    #[error("{file}: {problem}")]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong.
        problem: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Var(String),
}

/// One part of a template, parsed.
#[derive(Debug, Clone, PartialEq)]
struct Part(Vec<Piece>);

impl Part {
    fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            pieces.push(Piece::Text(rest[..start].to_string()));
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| "a {{ is never closed with }}".to_string())?;
            let name = after[..end].trim();
            if !VARIABLES.contains(&name) {
                return Err(format!(
                    "unknown variable {{{{ {name} }}}} (known: {})",
                    VARIABLES.join(", ")
                ));
            }
            pieces.push(Piece::Var(name.to_string()));
            rest = &after[end + 2..];
        }
        pieces.push(Piece::Text(rest.to_string()));
        Ok(Part(pieces))
    }

    fn variables(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            Piece::Var(v) => Some(v.as_str()),
            Piece::Text(_) => None,
        })
    }

    fn render(&self, vars: &Vars, escape: bool) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(v) => {
                    let value = vars.get(v);
                    if escape {
                        out.push_str(&html_escape(value));
                    } else {
                        out.push_str(value);
                    }
                }
            }
        }
        out
    }
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The values of one message's variables.
#[derive(Debug, Clone, Default)]
pub struct Vars(BTreeMap<&'static str, String>);

impl Vars {
    /// Sets a variable; `name` must be one of [`VARIABLES`].
    pub fn set(&mut self, name: &'static str, value: impl Into<String>) -> &mut Self {
        self.0.insert(name, value.into());
        self
    }

    fn get(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or("")
    }
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// Subject line (one line).
    pub subject: String,
    /// Plain-text part.
    pub text: String,
    /// HTML part.
    pub html: String,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateFile {
    subject: String,
    text: String,
    html: String,
}

/// One template in one locale.
#[derive(Debug, Clone, PartialEq)]
struct Template {
    subject: Part,
    text: Part,
    html: Part,
}

impl Template {
    fn variables(&self) -> BTreeSet<&str> {
        self.subject
            .variables()
            .chain(self.text.variables())
            .chain(self.html.variables())
            .collect()
    }
}

/// The templates a pipeline uses, in every locale found, checked.
#[derive(Debug, Clone)]
pub struct Templates {
    default_locale: String,
    /// (locale, name) → template.
    loaded: BTreeMap<(String, String), Template>,
}

impl Templates {
    /// Loads `names` from every locale directory under `dir`. Each name must exist in
    /// `default_locale`; other locales are optional and fall back to it. Variables taken
    /// from config (`site_name`, `login_url`, `support_email`) must be set when used.
    pub fn load(
        dir: &Path,
        default_locale: &str,
        names: &[&str],
        config_values: &Vars,
    ) -> Result<Self, TemplateError> {
        let mut loaded = BTreeMap::new();
        let mut locales: Vec<String> = std::fs::read_dir(dir)
            .map_err(|source| TemplateError::Read {
                file: dir.display().to_string(),
                source,
            })?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        locales.sort();
        for name in names {
            let required: PathBuf = dir.join(default_locale).join(format!("{name}.toml"));
            if !required.is_file() {
                return Err(TemplateError::Invalid {
                    file: required.display().to_string(),
                    problem: format!(
                        "missing: template {name:?} is used by a stage and the default locale {default_locale:?} must have it"
                    ),
                });
            }
            for locale in &locales {
                let path = dir.join(locale).join(format!("{name}.toml"));
                if !path.is_file() {
                    continue;
                }
                let file = path.display().to_string();
                let text =
                    std::fs::read_to_string(&path).map_err(|source| TemplateError::Read {
                        file: file.clone(),
                        source,
                    })?;
                let invalid = |problem: String| TemplateError::Invalid {
                    file: file.clone(),
                    problem,
                };
                let parsed: TemplateFile =
                    toml::from_str(&text).map_err(|e| invalid(e.to_string().trim().into()))?;
                let part = |label: &str, text: &str| {
                    Part::parse(text).map_err(|p| invalid(format!("{label}: {p}")))
                };
                let template = Template {
                    subject: part("subject", &parsed.subject)?,
                    text: part("text", &parsed.text)?,
                    html: part("html", &parsed.html)?,
                };
                if parsed.subject.contains('\n') {
                    return Err(invalid("subject: must be one line".into()));
                }
                if let Some(unset) = template
                    .variables()
                    .into_iter()
                    .find(|v| FROM_CONFIG.contains(v) && config_values.get(v).trim().is_empty())
                {
                    return Err(invalid(format!(
                        "uses {{{{ {unset} }}}} but email.{unset} is not set in pipeline.toml"
                    )));
                }
                loaded.insert((locale.clone(), name.to_string()), template);
            }
        }
        Ok(Self {
            default_locale: default_locale.to_string(),
            loaded,
        })
    }

    /// Renders `name` in `locale` (or the default locale when that locale has no such
    /// template); returns the locale used. Every variable is filled: missing values render
    /// as empty only for `username`, which a source may lack.
    pub fn render(
        &self,
        name: &str,
        locale: Option<&str>,
        vars: &Vars,
    ) -> Option<(String, Rendered)> {
        let pick = |l: &str| {
            self.loaded
                .get(&(l.to_string(), name.to_string()))
                .map(|t| (l.to_string(), t))
        };
        let (used, template) = locale
            .map(normalize_locale)
            .and_then(|l| pick(&l))
            .or_else(|| pick(&self.default_locale))?;
        Some((
            used,
            Rendered {
                subject: template.subject.render(vars, false).trim().to_string(),
                text: template.text.render(vars, false),
                html: template.html.render(vars, true),
            },
        ))
    }

    /// The locales that have `name`.
    pub fn locales_of(&self, name: &str) -> Vec<&str> {
        self.loaded
            .keys()
            .filter(|(_, n)| n == name)
            .map(|(l, _)| l.as_str())
            .collect()
    }
}

/// `fr-FR`, `fr_FR` and `FR` all pick the `fr` templates.
fn normalize_locale(locale: &str) -> String {
    locale
        .split(['-', '_'])
        .next()
        .unwrap_or(locale)
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        let mut v = Vars::default();
        v.set("username", "<b>ann</b>")
            .set("site_name", "Site")
            .set("deletion_date", "2026-12-22")
            .set("days_left", "30")
            .set("login_url", "https://example.org/login")
            .set("support_email", "help@example.org");
        v
    }

    #[test]
    fn parts_fill_every_variable_and_escape_html_only() {
        let part = Part::parse("Hi {{ username }}, {{days_left}} days").unwrap();
        assert_eq!(part.render(&vars(), false), "Hi <b>ann</b>, 30 days");
        assert_eq!(
            part.render(&vars(), true),
            "Hi &lt;b&gt;ann&lt;/b&gt;, 30 days"
        );
    }

    #[test]
    fn unknown_and_unclosed_variables_are_refused() {
        let err = Part::parse("Hi {{ usrname }}").unwrap_err();
        assert!(err.contains("unknown variable {{ usrname }}"), "{err}");
        assert!(
            Part::parse("Hi {{ username")
                .unwrap_err()
                .contains("never closed")
        );
    }

    #[test]
    fn locales_fall_back_to_the_default() {
        let dir = std::env::temp_dir().join(format!("lethe-tpl-{}", std::process::id()));
        for (locale, subject) in [("en", "Your account"), ("fr", "Votre compte")] {
            std::fs::create_dir_all(dir.join(locale)).unwrap();
            std::fs::write(
                dir.join(locale).join("warning.toml"),
                format!(
                    "subject = \"{subject} on {{{{ site_name }}}}\"\ntext = \"t\"\nhtml = \"h\"\n"
                ),
            )
            .unwrap();
        }
        let t = Templates::load(&dir, "en", &["warning"], &vars()).unwrap();
        assert_eq!(
            t.render("warning", Some("fr-FR"), &vars())
                .unwrap()
                .1
                .subject,
            "Votre compte on Site"
        );
        let (used, r) = t.render("warning", Some("de"), &vars()).unwrap();
        assert_eq!(
            (used.as_str(), r.subject.as_str()),
            ("en", "Your account on Site")
        );
        assert_eq!(t.locales_of("warning"), ["en", "fr"]);
        // A variable from config that is not set is an error at load, naming it.
        let err = Templates::load(&dir, "en", &["warning"], &Vars::default()).unwrap_err();
        assert!(
            err.to_string().contains("email.site_name is not set"),
            "{err}"
        );
        // A template the default locale lacks is an error.
        let err = Templates::load(&dir, "en", &["deleted"], &vars()).unwrap_err();
        assert!(err.to_string().contains("deleted.toml: missing"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
