//! A command's failure: its kind (which chooses the exit code and the prefix) and message.

use crate::error::{Classified, ErrorKind};

/// A command failure; printed as one line on stderr.
#[derive(Debug)]
pub(crate) struct Failure {
    /// Chooses the exit code.
    pub(crate) kind: ErrorKind,
    error: anyhow::Error,
}

/// What a command returns.
pub(crate) type Outcome = Result<(), Failure>;

impl Failure {
    /// A config or usage error (exit 2) with this message.
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message.into())
    }

    /// A rule refused (exit 3).
    pub(crate) fn refused(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Refused, message.into())
    }

    /// Something could not be reached (exit 1).
    pub(crate) fn unreachable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unreachable, message.into())
    }

    /// Something failed inside lethe (exit 1).
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message.into())
    }

    fn new(kind: ErrorKind, message: String) -> Self {
        Self {
            kind,
            error: anyhow::Error::msg(message),
        }
    }
}

impl<E: Classified> From<E> for Failure {
    fn from(e: E) -> Self {
        Self {
            kind: e.kind(),
            error: e.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefix = match self.kind {
            ErrorKind::NotFound => "not found",
            ErrorKind::Refused => "refused",
            _ => "error",
        };
        if self.kind.shows_causes() {
            write!(f, "{prefix}: {}", crate::db::chain(self.error.as_ref()))
        } else {
            write!(f, "{prefix}: {}", self.error)
        }
    }
}
