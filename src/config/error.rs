//! Configuration errors, worded for the operator who has to fix them.

use std::path::PathBuf;

use super::Origin;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting's value breaks a rule.
    #[error("invalid configuration: {key} = {value:?} (from {origin}): {rule}")]
    Invalid {
        /// The setting.
        key: &'static str,
        /// Its value as given (secrets redacted).
        value: String,
        /// Where the value came from.
        origin: Origin,
        /// The rule it breaks.
        rule: String,
    },
    /// The configuration file cannot be read or parsed.
    #[error("invalid configuration file {}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}
