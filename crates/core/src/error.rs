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

    /// The same error with its field named inside `parent` (`content` → `payload.content`).
    pub fn within(self, parent: &str) -> Self {
        Self {
            field: format!("{parent}.{}", self.field),
            rule: self.rule,
        }
    }
}

/// The most characters of a caller's input that an error message or a log line repeats.
pub const EXCERPT_CHARS: usize = 64;

/// At most [`EXCERPT_CHARS`] characters of `text`, marked when cut, so that no error or log
/// line grows with what a caller sent.
pub fn excerpt(text: &str) -> String {
    cut(text, EXCERPT_CHARS)
}

/// At most `max_chars` characters of `text`, marked when cut: for messages that embed
/// caller input somewhere inside (a parser's error), where [`excerpt`] would cut too soon.
pub fn cut(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_string(),
        Some((end, _)) => format!("{}… ({} bytes in all)", &text[..end], text.len()),
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

#[cfg(test)]
mod tests {
    #[test]
    fn an_excerpt_keeps_short_text_and_cuts_long_text_on_a_character() {
        assert_eq!(super::excerpt("short"), "short");
        let long = "é".repeat(1_000);
        let cut = super::excerpt(&long);
        assert!(cut.starts_with(&"é".repeat(super::EXCERPT_CHARS)));
        assert!(cut.ends_with("(2000 bytes in all)"), "{cut}");
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
