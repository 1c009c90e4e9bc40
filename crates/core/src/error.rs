//! Errors of the shared vocabulary: bad input a caller can fix, and bad configuration.

use std::path::PathBuf;

/// Input that breaks a rule of the memory model. The caller can fix it: the message names the
/// field and the rule, as in `content: must not be empty`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct InvalidInput {
    /// The input field at fault, with an index where it is inside a list (`tags[3]`).
    pub field: String,
    /// The rule it broke, in words.
    pub rule: String,
}

impl InvalidInput {
    /// Builds the error for `field` breaking `rule`.
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

/// `config file PATH: ` when the setting came from a file, nothing when from defaults and
/// environment alone.
fn source_prefix(path: &std::path::Path) -> String {
    if path.as_os_str().is_empty() {
        String::new()
    } else {
        format!("config file {}: ", path.display())
    }
}

/// A configuration that cannot be used. Every variant names the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid JSON, or a key is unknown or has the wrong type.
    #[error("{}{key}: {message}", source_prefix(path))]
    Parse {
        /// The file at fault.
        path: PathBuf,
        /// The dotted key at fault (`memory.max_content_bytes`), or `.` for the whole file.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// An environment variable that overrides a key holds a bad value or names no key.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable at fault.
        var: String,
        /// What is wrong with it.
        message: String,
    },
    /// A value parsed but breaks a rule (`memory.max_content_bytes: must be at least 1024`).
    #[error("{key}: {rule}")]
    Invalid {
        /// The dotted key at fault.
        key: String,
        /// The rule it breaks.
        rule: String,
    },
}
