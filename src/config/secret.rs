//! [`Secret`]: a password or token from the configuration (the relay's
//! `master_token`, the SMTP password), kept out of every `Debug` and error.

use std::fmt;

use serde::Deserialize;

/// A password or other secret from the configuration. Its `Debug` never
/// shows the value, so settings and mailers can be logged whole; the value
/// is reachable only through [`Secret::expose`], and no error message
/// includes it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}
