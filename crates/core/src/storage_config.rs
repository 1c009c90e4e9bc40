//! `storage.*`: which database holds the memory. SQLite (one file in the data directory)
//! is the embedded default; PostgreSQL is the team hub's (docs/HUB.md).
//!
//! The PostgreSQL URL may carry a password, so it is a [`DatabaseUrl`], whose `Debug` and
//! `Display` show it with the password replaced: a config printed in a log, a status page
//! or an error never carries it. `HAIVEMIND_DATABASE_URL` sets it without a file.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::ConfigError;

/// `storage.*`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `"sqlite"` (the default) or `"postgres"`.
    pub backend: StorageBackend,
    /// The data directory; `$HAIVEMIND_DATA_DIR`, else `~/.local/share/haivemind`. On a
    /// PostgreSQL hub it still holds the audit log.
    pub data_dir: Option<PathBuf>,
    /// `storage.postgres.*`, read when `backend` is `"postgres"`.
    pub postgres: PostgresConfig,
    /// The seed's ChromaDB settings; accepted and ignored, since the embedded store replaces it.
    pub chromadb: Option<Value>,
    /// The seed's Redis settings; accepted and ignored (the hub shares PostgreSQL instead).
    pub redis: Option<Value>,
}

/// Which database holds the memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// One SQLite file in the data directory.
    #[default]
    Sqlite,
    /// A PostgreSQL database shared by every frontend of a hub.
    Postgres,
}

impl StorageBackend {
    /// The name used in the config file and in status output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// `storage.postgres.*`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// A libpq URL (`postgres://user:password@host:5432/dbname`); `HAIVEMIND_DATABASE_URL`
    /// overrides it.
    pub url: Option<DatabaseUrl>,
    /// Connections each frontend keeps open, 1–256. Default 16.
    pub pool_size: u32,
    /// TLS to the database: `disable`, `prefer` (the default, as libpq's), `require`
    /// (encrypted, certificate checked against `ca_file` or the system's roots) or
    /// `verify-full` (the same, and it is an error when the server offers no TLS).
    pub sslmode: SslMode,
    /// PEM file of the certificate authority that signed the database's certificate.
    pub ca_file: Option<PathBuf>,
    /// Seconds to wait for a connection before answering 503. Default 5.
    pub connect_timeout_secs: u64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: None,
            pool_size: 16,
            sslmode: SslMode::Prefer,
            ca_file: None,
            connect_timeout_secs: 5,
        }
    }
}

/// `storage.postgres.sslmode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, else plain.
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is checked.
    Require,
    /// TLS or no connection; the certificate and the host name are checked.
    VerifyFull,
}

/// A database URL whose password never shows: `Debug` and `Display` print it as `***`.
/// [`DatabaseUrl::expose`] gives the whole URL to the one caller that connects.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct DatabaseUrl(String);

/// Serialised redacted, like `Display`: a serialised config never carries the password.
impl serde::Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

impl DatabaseUrl {
    /// Checks the scheme and that there is a host part.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let invalid = |rule: &str| ConfigError::Invalid {
            key: "storage.postgres.url".into(),
            rule: rule.into(),
        };
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| {
                invalid("must be a libpq URL starting with postgres:// or postgresql://")
            })?;
        if rest.is_empty() || rest.starts_with('/') && !rest.contains("host=") {
            return Err(invalid(
                "must name a host (postgres://user:password@host:5432/dbname)",
            ));
        }
        if url.len() > 4096 {
            return Err(invalid("must be at most 4096 bytes"));
        }
        if url.chars().any(char::is_control) {
            return Err(invalid("must not contain control characters"));
        }
        Ok(Self(url.to_string()))
    }

    /// The whole URL, password included: only for opening connections.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with the password (in the authority or a `password=` parameter) replaced.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let scheme_end = url.find("://").map_or(0, |i| i + 3);
        let authority_end = url[scheme_end..]
            .find(['/', '?'])
            .map_or(url.len(), |i| scheme_end + i);
        let mut shown = String::with_capacity(url.len());
        let authority = &url[scheme_end..authority_end];
        shown.push_str(&url[..scheme_end]);
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        shown.push_str(&userinfo[..colon]);
                        shown.push_str(":***");
                    }
                    None => shown.push_str(userinfo),
                }
                shown.push_str(&authority[at..]);
            }
            None => shown.push_str(authority),
        }
        let tail = &url[authority_end..];
        match tail.split_once('?') {
            Some((path, query)) => {
                shown.push_str(path);
                shown.push('?');
                let params: Vec<String> = query
                    .split('&')
                    .map(|param| match param.split_once('=') {
                        Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                            format!("{name}=***")
                        }
                        _ => param.to_string(),
                    })
                    .collect();
                shown.push_str(&params.join("&"));
            }
            None => shown.push_str(tail),
        }
        shown
    }
}

impl TryFrom<String> for DatabaseUrl {
    type Error = String;

    fn try_from(url: String) -> Result<Self, Self::Error> {
        // The message must not repeat the URL: it may hold a password.
        Self::parse(&url).map_err(|error| match error {
            ConfigError::Invalid { rule, .. } => rule,
            other => other.to_string(),
        })
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl StorageConfig {
    /// The rules a type alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, rule: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                rule: rule.into(),
            })
        };
        let postgres = &self.postgres;
        if !(1..=256).contains(&postgres.pool_size) {
            return invalid("storage.postgres.pool_size", "must be between 1 and 256");
        }
        if !(1..=300).contains(&postgres.connect_timeout_secs) {
            return invalid(
                "storage.postgres.connect_timeout_secs",
                "must be between 1 and 300 seconds",
            );
        }
        if self.backend == StorageBackend::Postgres && postgres.url.is_none() {
            return invalid(
                "storage.postgres.url",
                "is required when storage.backend is \"postgres\" (or set HAIVEMIND_DATABASE_URL)",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        for (url, shown) in [
            (
                "postgres://hub:s3cr%40t@db.example:5432/haivemind?sslmode=require",
                "postgres://hub:***@db.example:5432/haivemind?sslmode=require",
            ),
            (
                "postgresql://db.example/haivemind?user=hub&password=s3cr%40t",
                "postgresql://db.example/haivemind?user=hub&password=***",
            ),
            (
                "postgres://hub@db.example/haivemind",
                "postgres://hub@db.example/haivemind",
            ),
            (
                "postgres://hub:p@ss:word@db.example",
                "postgres://hub:***@db.example",
            ),
        ] {
            let url = DatabaseUrl::parse(url).unwrap();
            assert_eq!(url.redacted(), shown);
            assert!(!format!("{url:?} {url}").contains("s3cr"));
            assert!(!format!("{url:?}").contains("ss:word"));
        }
    }

    #[test]
    fn a_url_that_is_not_libpq_is_refused_without_repeating_it() {
        for bad in [
            "mysql://root:hunter2@db/x",
            "postgres://",
            "hunter2",
            "postgres://a\nb",
        ] {
            let error = DatabaseUrl::try_from(bad.to_string()).unwrap_err();
            assert!(!error.contains("hunter2"), "{error}");
        }
    }
}
