//! The team hub's database: PostgreSQL, shared by every `haivemind serve` frontend of a hub
//! (docs/HUB.md).
//!
//! This crate holds what is PostgreSQL's alone: connections (a pool, TLS by
//! `storage.postgres.sslmode`, the password kept out of every message), the schema and its
//! migrations (safe when several frontends start at once on an empty database), and whether
//! pgvector is there to rank vectors. The engine's rules stay in `haivemind-store`.

mod connection;
mod schema;

pub use connection::{Connection, Database, Manager, VectorRanking};
pub use schema::{OP_LOG_CHANNEL, SCHEMA_VERSION};

/// What went wrong talking to PostgreSQL. Messages never carry the database URL's
/// password: they name the host and database, and PostgreSQL's own reason.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The URL or the TLS settings cannot be used.
    #[error("storage.postgres: {0}")]
    Config(String),
    /// No connection could be made (or taken from the pool) in time: the database is down,
    /// unreachable, or refuses this user.
    #[error("the database {target} is unavailable: {reason}")]
    Unavailable {
        /// `host:port/dbname`, without credentials.
        target: String,
        /// Why, as PostgreSQL or the network said it.
        reason: String,
    },
    /// A statement failed.
    #[error("database error: {0}")]
    Query(#[from] postgres::Error),
    /// The database was migrated by a newer binary; this one must not touch it.
    #[error(
        "the database has schema version {found}, newer than this binary's {supported}: upgrade haivemind on this frontend"
    )]
    SchemaTooNew {
        /// The database's version.
        found: i32,
        /// The newest this binary knows.
        supported: i32,
    },
}

impl PostgresError {
    /// True when the database could not be reached, so a request should be answered with
    /// 503 (and tried again) rather than 500.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unavailable { .. } => true,
            Self::Query(error) => {
                error.is_closed()
                    || std::error::Error::source(error).is_some_and(|s| s.is::<std::io::Error>())
            }
            Self::Config(_) | Self::SchemaTooNew { .. } => false,
        }
    }
}
