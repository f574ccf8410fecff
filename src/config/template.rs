//! Request templates of the http stage: `{{ variable }}` in a URL, a header or a JSON
//! body, each value escaped for where it stands (URL-encoded in a URL, JSON-escaped in a
//! body). Parsed with the config, so an unknown variable is a config error at start.

use serde::Deserialize;

/// A value a template can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `{{ subject }}`: the source's id of the user.
    Subject,
    /// `{{ email }}`.
    Email,
    /// `{{ username }}`.
    Username,
    /// `{{ reason }}`: why the retirement was opened.
    Reason,
    /// `{{ retirement_id }}`.
    RetirementId,
    /// `{{ lookup.id }}`: what the lookup request found.
    LookupId,
}

impl Var {
    /// Every variable, in the order errors list them.
    pub const ALL: [Var; 6] = [
        Var::Subject,
        Var::Email,
        Var::Username,
        Var::Reason,
        Var::RetirementId,
        Var::LookupId,
    ];

    /// The name written between the braces.
    pub fn name(self) -> &'static str {
        match self {
            Var::Subject => "subject",
            Var::Email => "email",
            Var::Username => "username",
            Var::Reason => "reason",
            Var::RetirementId => "retirement_id",
            Var::LookupId => "lookup.id",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == name)
    }
}

/// How a value is escaped where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// Percent-encoded as a URL component (everything but `A-Za-z0-9-._~`).
    Url,
    /// Escaped as the inside of a JSON string.
    Json,
    /// As it is (a header value; one with a line break is refused when sent).
    Plain,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Var),
}

/// Why a template cannot be rendered for a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderError {
    /// The subject has no value for this variable (no email...).
    Missing(Var),
    /// The value would change the URL's path (`.` or `..`, which URLs resolve).
    Unsafe(Var),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
    escape: Escape,
}

/// The values of one subject; a value that is `None` cannot be rendered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Values<'a> {
    /// The subject id.
    pub subject: &'a str,
    /// Its email, if known.
    pub email: Option<&'a str>,
    /// Its username, if known.
    pub username: Option<&'a str>,
    /// The reason.
    pub reason: &'a str,
    /// The retirement id.
    pub retirement_id: i64,
    /// What the lookup found.
    pub lookup_id: Option<&'a str>,
}

impl Values<'_> {
    /// Stand-ins of every variable, to check at load that a template gives a valid URL or
    /// JSON (digits where an id goes, so a template may leave an id unquoted).
    pub fn sample() -> Values<'static> {
        Values {
            subject: "1",
            email: Some("someone@example.org"),
            username: Some("someone"),
            reason: "inactive",
            retirement_id: 1,
            lookup_id: Some("1"),
        }
    }

    fn get(&self, var: Var) -> Option<String> {
        match var {
            Var::Subject => Some(self.subject.to_string()),
            Var::Email => self.email.map(str::to_string),
            Var::Username => self.username.map(str::to_string),
            Var::Reason => Some(self.reason.to_string()),
            Var::RetirementId => Some(self.retirement_id.to_string()),
            Var::LookupId => self.lookup_id.map(str::to_string),
        }
    }
}

impl Template {
    /// Parses `text`; the error names the variable at fault and the known ones. Only `{{`
    /// opens a variable (a JSON body ends objects with `}}`).
    pub fn parse(text: &str, escape: Escape) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| "a `{{` is not closed by `}}`".to_string())?;
            let name = after[..close].trim();
            let var = Var::parse(name).ok_or_else(|| {
                format!(
                    "unknown variable {{{{ {name} }}}} (known: {})",
                    Var::ALL.map(Var::name).join(", ")
                )
            })?;
            pieces.push(Piece::Var(var));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Self {
            source: text.to_string(),
            pieces,
            escape,
        })
    }

    /// The text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template uses `var`.
    pub fn uses(&self, var: Var) -> bool {
        self.pieces.contains(&Piece::Var(var))
    }

    /// The text with every variable replaced by its escaped value; `Err` names a variable
    /// whose value this subject lacks, or cannot go where it stands.
    pub fn render(&self, values: &Values) -> Result<String, RenderError> {
        let mut out = String::with_capacity(self.source.len() + 32);
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Var(var) => {
                    let value = values.get(*var).ok_or(RenderError::Missing(*var))?;
                    match self.escape {
                        // Encoded or not, a URL resolves these as "this" and "up" segments.
                        Escape::Url if value == "." || value == ".." => {
                            return Err(RenderError::Unsafe(*var));
                        }
                        Escape::Url => url_encode(&value, &mut out),
                        Escape::Json => json_escape(&value, &mut out),
                        Escape::Plain => out.push_str(&value),
                    }
                }
            }
        }
        Ok(out)
    }
}

/// `value` percent-encoded as a URL component (everything but `A-Za-z0-9-._~`).
pub fn url_encoded(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    url_encode(value, &mut out);
    out
}

fn url_encode(value: &str, out: &mut String) {
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
}

fn json_escape(value: &str, out: &mut String) {
    let quoted = serde_json::Value::String(value.to_string()).to_string();
    out.push_str(&quoted[1..quoted.len() - 1]);
}

/// Deserializes a URL template.
pub(crate) fn url_template<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Template, D::Error> {
    parsed(d, Escape::Url)
}

/// Deserializes an optional JSON body template.
pub(crate) fn body_template<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Template>, D::Error> {
    parsed(d, Escape::Json).map(Some)
}

/// Deserializes header templates, by header name.
pub(crate) fn header_templates<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<(String, Template)>, D::Error> {
    let table = std::collections::BTreeMap::<String, String>::deserialize(d)?;
    table
        .into_iter()
        .map(|(name, text)| {
            Template::parse(&text, Escape::Plain)
                .map(|t| (name.clone(), t))
                .map_err(|problem| {
                    serde::de::Error::custom(format!("header {name} = {text:?}: {problem}"))
                })
        })
        .collect()
}

fn parsed<'de, D: serde::Deserializer<'de>>(d: D, escape: Escape) -> Result<Template, D::Error> {
    let text = String::deserialize(d)?;
    Template::parse(&text, escape)
        .map_err(|problem| serde::de::Error::custom(format!("{text:?}: {problem}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values<'static> {
        Values {
            subject: "42",
            email: Some("o'neil&co+x@example.org"),
            username: Some("jo \"the\" user"),
            reason: "inactive",
            retirement_id: 7,
            lookup_id: None,
        }
    }

    #[test]
    fn values_are_escaped_for_where_they_stand() {
        let url = Template::parse(
            "https://x.org/u?email={{ email }}&r={{reason}}",
            Escape::Url,
        )
        .unwrap();
        assert_eq!(
            url.render(&values()).unwrap(),
            "https://x.org/u?email=o%27neil%26co%2Bx%40example.org&r=inactive"
        );
        let body = Template::parse(
            r#"{"name": "{{ username }}", "id": {{ subject }}}"#,
            Escape::Json,
        )
        .unwrap();
        let rendered = body.render(&values()).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&rendered).unwrap();
        assert_eq!(parsed["name"], "jo \"the\" user");
        assert_eq!(parsed["id"], 42);
        let header = Template::parse("r-{{ retirement_id }}", Escape::Plain).unwrap();
        assert_eq!(header.render(&values()).unwrap(), "r-7");
    }

    #[test]
    fn a_missing_value_is_named() {
        let url = Template::parse("https://x.org/{{ lookup.id }}", Escape::Url).unwrap();
        assert!(url.uses(Var::LookupId));
        assert!(!url.uses(Var::Email));
        assert_eq!(
            url.render(&values()),
            Err(RenderError::Missing(Var::LookupId))
        );
        let dots = Values {
            lookup_id: Some(".."),
            ..values()
        };
        assert_eq!(url.render(&dots), Err(RenderError::Unsafe(Var::LookupId)));
    }

    #[test]
    fn unknown_variables_and_unclosed_braces_are_refused() {
        let e = Template::parse("https://x.org/{{ emial }}", Escape::Url).unwrap_err();
        assert!(e.contains("{{ emial }}"), "{e}");
        assert!(e.contains("known: subject, email"), "{e}");
        assert!(
            Template::parse("{{ email", Escape::Url)
                .unwrap_err()
                .contains("not closed")
        );
        // JSON bodies close objects with `}}`: only `{{` opens a variable.
        let body = Template::parse(r#"{"q": {"id": "{{ subject }}"}}"#, Escape::Json).unwrap();
        assert_eq!(body.render(&values()).unwrap(), r#"{"q": {"id": "42"}}"#);
        assert_eq!(
            Template::parse("plain", Escape::Url)
                .unwrap()
                .render(&values())
                .unwrap(),
            "plain"
        );
    }
}
