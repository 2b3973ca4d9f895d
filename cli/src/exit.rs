//! Exit codes and the one error type commands return.
//!
//! knockctl's exit codes are part of its scripting interface:
//!
//! | code | meaning                                                                       |
//! |------|-------------------------------------------------------------------------------|
//! | 0    | success (also: nothing to do, e.g. no ids on stdin; `watch` interrupted)      |
//! | 1    | failure: any other error (a 400/500 answer, a declined confirmation, …)       |
//! | 2    | usage: bad arguments, no ids, bulk deny without `--yes` when not on a terminal |
//! | 3    | not found (404): no such knock or room                                        |
//! | 4    | already decided (409 conflict)                                                |
//! | 5    | unauthorized (401, or no readable token file) or forbidden (403)              |
//! | 6    | knockd unreachable (connection refused, event stream lost)                    |
//!
//! With several ids, the code is the failed items' common code, or 1 when they differ.

use std::{fmt, process::ExitCode};

use knockd_shared::{ClientError, ErrorBody};

use crate::output::escape;

/// The exit-code table, as shown at the end of `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  failure (any other error)
  2  usage error (bad arguments; bulk deny without --yes when not on a terminal)
  3  not found (no such knock or room)
  4  already decided (conflict)
  5  unauthorized or forbidden (missing or bad admin token, missing power)
  6  knockd unreachable
With several ids, the exit code is the failures' common code, or 1 when they differ.";

/// A documented exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0
    Ok = 0,
    /// 1
    Failure = 1,
    /// 2
    Usage = 2,
    /// 3
    NotFound = 3,
    /// 4
    Conflict = 4,
    /// 5
    Forbidden = 5,
    /// 6
    Unreachable = 6,
}

impl Exit {
    /// The code for an API error body (bulk items carry no HTTP status).
    pub fn for_errcode(errcode: &str) -> Self {
        match errcode {
            "M_NOT_FOUND" => Self::NotFound,
            "M_CONFLICT" => Self::Conflict,
            "M_FORBIDDEN" | "M_UNAUTHORIZED" | "M_MISSING_TOKEN" | "M_UNKNOWN_TOKEN" => {
                Self::Forbidden
            }
            _ => Self::Failure,
        }
    }

    /// The code for an HTTP status and errcode.
    pub fn for_status(status: u16, errcode: &str) -> Self {
        match status {
            // 404 M_UNRECOGNIZED is a missing endpoint (wrong URL or an older knockd), not a
            // missing knock.
            404 if errcode == "M_UNRECOGNIZED" => Self::Failure,
            404 => Self::NotFound,
            409 => Self::Conflict,
            401 | 403 => Self::Forbidden,
            _ => Self::for_errcode(errcode),
        }
    }

    /// The common code of several failures, or `Failure` when they differ.
    pub fn combine(codes: impl IntoIterator<Item = Exit>) -> Exit {
        let mut codes = codes.into_iter();
        let Some(first) = codes.next() else { return Exit::Ok };
        if codes.all(|c| c == first) { first } else { Exit::Failure }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// Why a command failed: an exit code and a one-line message (empty: nothing more to say).
#[derive(Debug)]
pub struct CliError {
    /// The exit code.
    pub code: Exit,
    /// The message, printed as `knockctl: <message>`.
    pub message: String,
}

impl CliError {
    /// An error with a code and a message.
    pub fn new(code: Exit, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }

    /// A general failure (exit 1).
    pub fn failure(message: impl Into<String>) -> Self {
        Self::new(Exit::Failure, message)
    }

    /// A failure whose details were already printed.
    pub fn reported(code: Exit) -> Self {
        Self::new(code, "")
    }
}

/// `<error> (<errcode>)`, escaped to one line.
pub fn describe(body: &ErrorBody) -> String {
    format!("{} ({})", escape(&body.error), escape(&body.errcode))
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Unreachable { url, message } => Self::new(
                Exit::Unreachable,
                format!(
                    "cannot reach knockd at {url}: {} (is it running? see --url)",
                    escape(&message)
                ),
            ),
            ClientError::Api { status, body } => {
                let code = Exit::for_status(status, &body.errcode);
                let hint = match status {
                    401 => " (check --token-file or KNOCKCTL_TOKEN)",
                    _ => "",
                };
                Self::new(code, format!("{}{hint}", describe(&body)))
            }
            ClientError::Protocol(m) => {
                Self::failure(format!("unexpected answer from knockd: {}", escape(&m)))
            }
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_mapped() {
        assert_eq!(Exit::for_status(404, "M_NOT_FOUND"), Exit::NotFound);
        assert_eq!(Exit::for_status(404, "M_UNRECOGNIZED"), Exit::Failure);
        assert_eq!(Exit::for_status(409, "M_CONFLICT"), Exit::Conflict);
        assert_eq!(Exit::for_status(401, "M_UNKNOWN_TOKEN"), Exit::Forbidden);
        assert_eq!(Exit::for_status(500, "M_UNKNOWN"), Exit::Failure);
        assert_eq!(Exit::for_errcode("M_CONFLICT"), Exit::Conflict);
        assert_eq!(Exit::combine([Exit::NotFound, Exit::NotFound]), Exit::NotFound);
        assert_eq!(Exit::combine([Exit::NotFound, Exit::Conflict]), Exit::Failure);
    }
}
