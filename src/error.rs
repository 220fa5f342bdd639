//! How failures map onto exit statuses.
//!
//! Everything fails through `anyhow`, but the caller must tell bad input
//! (exit 2, nothing was changed) from a failed operation (exit 1, the message
//! names the host and step). Bad input is marked by wrapping it in
//! [`BadInput`] anywhere in the error chain.

use std::fmt;

/// Bad usage or bad input (inventory, PKI store, templates): exit status 2.
#[derive(Debug)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// Build an `anyhow::Error` that exits with status 2.
pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadInput(message.into()))
}

/// `plan --exit-code` found pending changes: exit status 3, not an error
/// message.
#[derive(Debug)]
pub struct ChangesPending;

impl fmt::Display for ChangesPending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("changes pending")
    }
}

impl std::error::Error for ChangesPending {}

/// The exit status for an error returned by [`crate::run`].
pub fn exit_code(error: &anyhow::Error) -> i32 {
    if error.chain().any(|cause| cause.is::<ChangesPending>()) {
        3
    } else if error.chain().any(|cause| cause.is::<BadInput>()) {
        2
    } else {
        1
    }
}
