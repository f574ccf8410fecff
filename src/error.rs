//! One classification of failures, for exit codes today and HTTP statuses tomorrow.
//!
//! Every error type at a module boundary says which [`ErrorKind`] it is; the CLI and the
//! API map the kind, never the variants of another module's error.

/// What kind of failure an error is, from the point of view of whoever asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The configuration or the input is wrong: fix it and ask again.
    Config,
    /// The thing asked about does not exist.
    NotFound,
    /// Understood, and refused by a rule (a safety rule, a state that forbids it).
    Refused,
    /// A system lethe depends on (a database, SMTP, a source) cannot be reached or failed.
    Unreachable,
    /// A bug or an unexpected state of lethe itself.
    Internal,
}

impl ErrorKind {
    /// The process exit code: 2 config or usage, 3 not found or refused, 1 otherwise.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Config => 2,
            ErrorKind::NotFound | ErrorKind::Refused => 3,
            ErrorKind::Unreachable | ErrorKind::Internal => 1,
        }
    }

    /// The HTTP status an API answer carries for this kind.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Config => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::Refused => 409,
            ErrorKind::Unreachable => 503,
            ErrorKind::Internal => 500,
        }
    }

    /// Whether the message should carry its whole cause chain (failures of systems and
    /// bugs), rather than only its own text (input and rules, already self-explaining).
    pub fn shows_causes(self) -> bool {
        matches!(self, ErrorKind::Unreachable | ErrorKind::Internal)
    }
}

/// An error that knows its kind.
pub trait Classified: std::error::Error + Send + Sync + 'static {
    /// Which kind of failure this is.
    fn kind(&self) -> ErrorKind;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_the_documented_exit_codes_and_statuses() {
        let all = [
            ErrorKind::Config,
            ErrorKind::NotFound,
            ErrorKind::Refused,
            ErrorKind::Unreachable,
            ErrorKind::Internal,
        ];
        let codes: Vec<u8> = all.iter().map(|k| k.exit_code()).collect();
        assert_eq!(codes, [2, 3, 3, 1, 1]);
        let statuses: Vec<u16> = all.iter().map(|k| k.http_status()).collect();
        assert_eq!(statuses, [400, 404, 409, 503, 500]);
    }
}
