//! Stage handlers: one file per handler kind. A handler receives a batch of claimed
//! retirements and returns one outcome per retirement; it must be idempotent.

mod email;
mod grace;
mod held;
mod http;
mod noop;
mod notify;
pub mod reach;
mod reasons;
mod sarbacane;
mod sql_delete;

pub use email::{EmailHandler, Notifier};
pub use grace::GraceHandler;
pub use held::Held;
pub use http::HttpHandler;
pub use noop::NoopHandler;
pub use notify::NotifyHandler;
pub use reasons::Reasons;
pub use sarbacane::{Lists, SarbacaneHandler};
pub use sql_delete::SqlDeleteHandler;

use crate::config::StageSettings;
use crate::domain::StageResult;
use crate::store::Claimed;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;

/// Handler failure for a whole batch (e.g. the target is unreachable): every retirement
/// of the batch is retried.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BatchError(pub String);

/// Where a handler hands over outcomes before its whole batch is done; the driver writes
/// them back within a flush window (fenced as usual), so a crash loses at most that window.
/// An outcome handed over is final: the handler leaves it out of its returned map.
#[derive(Clone, Default)]
pub struct Reporter(Option<tokio::sync::mpsc::UnboundedSender<(i64, StageResult)>>);

impl Reporter {
    /// A reporter nobody listens to: every outcome is given back to the handler.
    pub fn none() -> Self {
        Self(None)
    }

    /// A reporter feeding `tx` (the driver's side).
    pub fn new(tx: tokio::sync::mpsc::UnboundedSender<(i64, StageResult)>) -> Self {
        Self(Some(tx))
    }

    /// Hands `result` for retirement `id` over now; gives it back when nobody listens, and
    /// the handler then returns it in its map.
    pub fn report(&self, id: i64, result: StageResult) -> Result<(), StageResult> {
        match &self.0 {
            Some(tx) => tx.send((id, result)).map_err(|e| (e.0).1),
            None => Err(result),
        }
    }
}

/// Runs `work` on every item at once (the handler's client bounds what is in flight),
/// handing each result to `reporter` as it comes; returns those nobody took. A task that
/// panicked leaves its retirement without a result: the driver retries it.
pub(crate) async fn each_at_once<T, F, Fut>(
    items: Vec<(i64, T)>,
    reporter: &Reporter,
    work: F,
) -> HashMap<i64, StageResult>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = StageResult> + Send + 'static,
{
    let mut left = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (id, item) in items {
        let future = work(item);
        tasks.spawn(async move { (id, future.await) });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((id, result)) => {
                if let Err(result) = reporter.report(id, result) {
                    left.insert(id, result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "a stage task panicked; its retirement is retried")
            }
        }
    }
    left
}

/// The outcome of a reply that is neither ok nor gone, by the rule every delivery
/// follows (`domain::delivery_outcome`): transient ones and a refused credential (401,
/// 403: the stage's, not this subject's) come later, the rest are refused and fail.
pub(crate) fn refusal(
    class: crate::http::ReplyClass,
    status: u16,
    error: String,
) -> crate::domain::Outcome {
    use crate::domain::{Delivery, OnRefused, Outcome};
    let delivery = match class {
        crate::http::ReplyClass::Ok | crate::http::ReplyClass::Gone => Delivery::Done,
        crate::http::ReplyClass::Transient => Delivery::Later(error),
        _ if matches!(status, 401 | 403) => Delivery::Later(error),
        _ => Delivery::Refused(error),
    };
    match crate::domain::delivery_outcome(delivery, OnRefused::Fail) {
        Ok(_) => Outcome::Done,
        Err(outcome) => outcome,
    }
}

/// The code behind one stage.
#[async_trait]
pub trait Handler: Send + Sync {
    /// Works on the batch and returns a result per retirement id; a missing id is retried.
    async fn handle(&self, batch: &[Claimed]) -> Result<HashMap<i64, StageResult>, BatchError>;

    /// [`Handler::handle`], handing outcomes to `reporter` as they are decided (a handler
    /// whose batch takes long, like sending mail, overrides it); by default, all at the end.
    async fn handle_reporting(
        &self,
        batch: &[Claimed],
        reporter: &Reporter,
    ) -> Result<HashMap<i64, StageResult>, BatchError> {
        let _ = reporter;
        self.handle(batch).await
    }

    /// Whether a run of this stage is short and, in the common case, acts only on the
    /// store (it waits or re-reads): the driver then carries a relayed Done into it without
    /// a write-back and writes both outcomes at once, as the crash window barely grows.
    fn quick(&self) -> bool {
        false
    }
}

/// The handlers of a pipeline, by state.
pub type Handlers = HashMap<String, Arc<dyn Handler>>;

/// Why the handlers of a pipeline cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A target could not be reached or does not fit the config.
    #[error(transparent)]
    Target(#[from] crate::sql::target::TargetError),
    /// A template is missing or does not render.
    #[error(transparent)]
    Template(#[from] crate::mail::TemplateError),
    /// The SMTP settings do not work.
    #[error(transparent)]
    Mail(#[from] crate::mail::MailError),
    /// The source (for the grace re-check) cannot be used.
    #[error(transparent)]
    Source(#[from] crate::sql::source::SourceError),
    /// An HTTP client cannot be set up.
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// A stage needs a section the pipeline lacks.
    #[error("{0}")]
    Missing(String),
}

impl crate::error::Classified for BuildError {
    fn kind(&self) -> crate::error::ErrorKind {
        match self {
            BuildError::Target(e) => crate::error::Classified::kind(e),
            BuildError::Mail(e) => crate::error::Classified::kind(e),
            BuildError::Source(e) => crate::error::Classified::kind(e),
            BuildError::Http(e) => crate::error::Classified::kind(e),
            BuildError::Template(_) | BuildError::Missing(_) => crate::error::ErrorKind::Config,
        }
    }
}

/// The templates the stages of `pipeline` use, loaded and checked (a config error at start,
/// naming the template and the variable, rather than an email with a hole in it).
pub fn load_templates(
    pipeline: &crate::config::Pipeline,
) -> Result<Option<crate::mail::Templates>, BuildError> {
    let names = pipeline.templates_used();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let Some(email) = &pipeline.email else {
        return Ok(None);
    };
    if names.is_empty() {
        return Ok(None);
    }
    Ok(Some(crate::mail::Templates::load(
        &email.templates,
        &email.default_locale,
        &names,
        &Notifier::config_vars(email),
    )?))
}

/// What the stages are built from.
#[derive(Clone)]
pub struct BuildContext<'a> {
    /// The pipeline whose stages are built.
    pub pipeline: &'a crate::config::Pipeline,
    /// The clock the handlers read.
    pub clock: Arc<dyn crate::clock::Clock>,
    /// The store, for stages that keep their own records (notify's acknowledgements).
    pub store: Option<Arc<dyn crate::store::Store>>,
}

/// [`build_from`] on the system clock, without a store.
pub async fn build(pipeline: &crate::config::Pipeline) -> Result<Handlers, BuildError> {
    build_with(pipeline, Arc::new(crate::clock::SystemClock)).await
}

/// [`build_from`] on `clock`, without a store.
pub async fn build_with(
    pipeline: &crate::config::Pipeline,
    clock: Arc<dyn crate::clock::Clock>,
) -> Result<Handlers, BuildError> {
    build_from(BuildContext {
        pipeline,
        clock,
        store: None,
    })
    .await
}

/// Builds the handlers of the configured stages, connecting their targets, the source (for
/// grace re-checks) and loading the templates.
pub async fn build_from(ctx: BuildContext<'_>) -> Result<Handlers, BuildError> {
    let (pipeline, clock) = (ctx.pipeline, ctx.clock.clone());
    let reasons = Reasons::of(pipeline);
    let notifier = match (load_templates(pipeline)?, &pipeline.email) {
        (Some(templates), Some(email)) => Some(Arc::new(Notifier {
            mailer: crate::mail::Mailer::new(email)?,
            templates,
            config: email.clone(),
            clock: clock.clone(),
        })),
        _ => None,
    };
    // Grace re-reads activity; sql_delete re-reads the exclusions of targets whose
    // transaction cannot (their root table is not the source's).
    let needs_source = pipeline.stages.iter().any(|s| {
        matches!(&s.settings, StageSettings::Grace(g) if g.recheck)
            || matches!(&s.settings, StageSettings::SqlDelete(crate::config::SqlDeleteSettings { target })
                if pipeline.targets.iter().any(|t| &t.name == target && t.exclusions.is_none()))
    });
    let source = match (&pipeline.source, needs_source) {
        (Some(source), true) => Some(Arc::new(
            crate::sql::source::SourceReader::connect_for(source, &pipeline.rules).await?,
        )),
        _ => None,
    };
    let mut targets: HashMap<String, Arc<crate::sql::target::Target>> = HashMap::new();
    let mut handlers: Handlers = HashMap::new();
    for stage in &pipeline.stages {
        let handler: Arc<dyn Handler> = match &stage.settings {
            StageSettings::Noop(settings) => Arc::new(NoopHandler::new(settings.clone())),
            StageSettings::Email(settings) => {
                let notifier = notifier.clone().ok_or_else(|| {
                    BuildError::Missing(format!(
                        "stage {} sends email but pipeline.toml has no [email] section",
                        stage.state
                    ))
                })?;
                Arc::new(EmailHandler::new(
                    notifier,
                    settings.clone(),
                    reasons.clone(),
                ))
            }
            StageSettings::Grace(settings) => Arc::new(GraceHandler::new(
                settings.clone(),
                reasons.clone(),
                notifier.clone(),
                source.clone(),
                clock.clone(),
            )),
            StageSettings::SqlDelete(crate::config::SqlDeleteSettings { target }) => {
                let connected = match targets.get(target) {
                    Some(t) => t.clone(),
                    None => {
                        let config = pipeline
                            .targets
                            .iter()
                            .find(|t| &t.name == target)
                            .ok_or_else(|| crate::sql::target::TargetError::Config {
                                target: target.clone(),
                                problem: "no [[target]] has this name".into(),
                            })?;
                        let t = Arc::new(crate::sql::target::Target::connect(config).await?);
                        targets.insert(target.clone(), t.clone());
                        t
                    }
                };
                let recheck = (!connected.rechecks_exclusions())
                    .then(|| source.clone())
                    .flatten();
                Arc::new(SqlDeleteHandler::new(
                    connected,
                    reasons.clone(),
                    clock.clone(),
                    recheck,
                ))
            }
            StageSettings::Sarbacane(settings) => {
                Arc::new(SarbacaneHandler::new(settings.clone())?)
            }
            StageSettings::Http(settings) => Arc::new(HttpHandler::new((**settings).clone())?),
            StageSettings::Notify(settings) => {
                let store = ctx.store.clone().ok_or_else(|| {
                    BuildError::Missing(format!(
                        "stage {} (notify) records acknowledgements and needs the store",
                        stage.state
                    ))
                })?;
                Arc::new(NotifyHandler::new(
                    settings,
                    &pipeline.services,
                    store,
                    clock.clone(),
                )?)
            }
        };
        // Whatever a deleting stage does, the hold comes first (sql_delete checks it again).
        let handler: Arc<dyn Handler> = match stage.kind.deletes() {
            true => Arc::new(Held::new(handler, reasons.clone(), clock.clone())),
            false => handler,
        };
        handlers.insert(stage.state.clone(), handler);
    }
    Ok(handlers)
}
