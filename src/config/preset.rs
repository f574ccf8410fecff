//! The shipped configurations, built into the binary: `lethe init` writes them and
//! `lethe demo` runs one, wherever the binary is (no checkout needed).

/// One file of a preset: its path relative to the deployment's directory, and its text.
pub type PresetFile = (&'static str, &'static str);

/// The email templates shipped with every preset (en and fr).
pub const TEMPLATES: &[PresetFile] = &[
    (
        "templates/en/warning.toml",
        include_str!("../../templates/en/warning.toml"),
    ),
    (
        "templates/en/reminder.toml",
        include_str!("../../templates/en/reminder.toml"),
    ),
    (
        "templates/en/deleted.toml",
        include_str!("../../templates/en/deleted.toml"),
    ),
    (
        "templates/fr/warning.toml",
        include_str!("../../templates/fr/warning.toml"),
    ),
    (
        "templates/fr/reminder.toml",
        include_str!("../../templates/fr/reminder.toml"),
    ),
    (
        "templates/fr/deleted.toml",
        include_str!("../../templates/fr/deleted.toml"),
    ),
    (
        "templates/en/confirm_account.toml",
        include_str!("../../templates/en/confirm_account.toml"),
    ),
    (
        "templates/en/confirm_account_reminder.toml",
        include_str!("../../templates/en/confirm_account_reminder.toml"),
    ),
    (
        "templates/en/deleted_unverified.toml",
        include_str!("../../templates/en/deleted_unverified.toml"),
    ),
    (
        "templates/en/deletion_requested.toml",
        include_str!("../../templates/en/deletion_requested.toml"),
    ),
    (
        "templates/fr/confirm_account.toml",
        include_str!("../../templates/fr/confirm_account.toml"),
    ),
    (
        "templates/fr/confirm_account_reminder.toml",
        include_str!("../../templates/fr/confirm_account_reminder.toml"),
    ),
    (
        "templates/fr/deleted_unverified.toml",
        include_str!("../../templates/fr/deleted_unverified.toml"),
    ),
    (
        "templates/fr/deletion_requested.toml",
        include_str!("../../templates/fr/deletion_requested.toml"),
    ),
];

/// The edX preset's states.toml (the repository's own).
pub const EDX_STATES: &str = include_str!("../../states.toml");
/// The edX preset's pipeline.toml (the repository's own).
pub const EDX_PIPELINE: &str = include_str!("../../pipeline.toml");
/// The generic preset's states.toml.
pub const GENERIC_STATES: &str = include_str!("../../presets/generic/states.toml");
/// The generic preset's pipeline.toml.
pub const GENERIC_PIPELINE: &str = include_str!("../../presets/generic/pipeline.toml");
/// The org preset's states.toml.
pub const ORG_STATES: &str = include_str!("../../presets/org/states.toml");
/// The org preset's pipeline.toml.
pub const ORG_PIPELINE: &str = include_str!("../../presets/org/pipeline.toml");

/// A named preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Open edX: auth_user, the edX MySQL database, Sarbacane, Joanie and Ashley.
    Edx,
    /// A users table with the common column names, one SQL target, one HTTP service.
    Generic,
    /// A second deployment that retires dissolved organisations (another root table):
    /// every row depending on one, a search index and an identity provider; no email.
    Org,
}

impl Preset {
    /// Every preset, by name.
    pub const ALL: [(&'static str, Preset); 3] = [
        ("edx", Preset::Edx),
        ("generic", Preset::Generic),
        ("org", Preset::Org),
    ];

    /// The preset called `name`.
    pub fn named(name: &str) -> Option<Preset> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }

    /// Its files: states.toml, pipeline.toml, then the templates (every preset ships them;
    /// one without email, such as org, uses none until an email stage is added).
    pub fn files(self) -> Vec<PresetFile> {
        let (states, pipeline) = match self {
            Preset::Edx => (EDX_STATES, EDX_PIPELINE),
            Preset::Generic => (GENERIC_STATES, GENERIC_PIPELINE),
            Preset::Org => (ORG_STATES, ORG_PIPELINE),
        };
        let mut files = vec![("states.toml", states), ("pipeline.toml", pipeline)];
        files.extend_from_slice(TEMPLATES);
        files
    }
    /// What an operator fills in before the first run, beyond the secrets.
    pub fn checklist(self) -> &'static [&'static str] {
        match self {
            Preset::Edx => &[
                "pipeline.toml [email]: host, from, site_name, login_url, support_email",
                "pipeline.toml [source]: exclude (who is never retired) and the allow-lists",
                "pipeline.toml [policy]: inactive_after and grace_period your policy states",
                "pipeline.toml [[target]] edx: protect, and reassign_to if actor columns are NOT NULL",
                "pipeline.toml [[service]]: the downstream services that keep a copy (joanie, ashley)",
                "pipeline.toml [api] and [[api_key]]: `lethe key new NAME --scope service:NAME` per service",
                "templates/: the wording of the warning, reminder and deleted emails (en, fr)",
            ],
            Preset::Generic => &[
                "pipeline.toml [source]: your users table and its column names, exclude",
                "pipeline.toml [[target]] app: root_table and protect",
                "pipeline.toml the RETIRING_CRM http stage: your service's URLs, or remove it and its state",
                "pipeline.toml [email]: host, from, site_name, login_url, support_email",
                "pipeline.toml [[service]] and [[api_key]]: `lethe key new NAME --scope service:NAME`",
                "templates/: the wording of the warning, reminder and deleted emails (en, fr)",
            ],
            Preset::Org => &[
                "pipeline.toml [store]: a store of its own, not the users' deployment's",
                "pipeline.toml [source]: your organisations table and its column names, exclude",
                "pipeline.toml [[rule]] dissolved: the `where` that marks an organisation to retire",
                "pipeline.toml [notice.dissolved]: the cool-off before anything is deleted",
                "pipeline.toml [[target]] app: root_table and protect (`lethe check --connect` lists what goes)",
                "pipeline.toml the RETIRING_SEARCH and RETIRING_IDP http stages: your services' URLs, or remove them and their states",
            ],
        }
    }
}
