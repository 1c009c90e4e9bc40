//! The engine's errors, split like milli's: what the caller can fix, and what is ours.

use std::path::{Path, PathBuf};

use haivemind_core::{InvalidInput, MemoryId};

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The caller's input breaks a rule; the message names the field.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// No live memory has this id.
    #[error("memory {id} not found")]
    MemoryNotFound {
        /// The id asked for.
        id: MemoryId,
    },
    /// The memory exists but is soft-deleted, so it cannot be changed until recovered.
    #[error("memory {id} is deleted; recover it first")]
    MemoryDeleted {
        /// The id asked for.
        id: MemoryId,
    },
    /// Asked to recover a memory that is not deleted.
    #[error("memory {id} is not deleted")]
    NotDeleted {
        /// The id asked for.
        id: MemoryId,
    },
    /// The memory was hard-deleted or erased and can never come back.
    #[error("memory {id} was permanently deleted")]
    Erased {
        /// The id asked for.
        id: MemoryId,
    },
    /// No agent, task or token has this id.
    #[error("{kind} {id} not found")]
    RecordNotFound {
        /// `agent`, `task` or `token`.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The change does not fit the record's state (a task completed, claimed by another).
    #[error("{0}")]
    Conflict(String),
    /// A destructive request without `confirm: true`.
    #[error("confirm: must be true to {action}")]
    ConfirmRequired {
        /// What would have happened.
        action: String,
    },
    /// The database file or directory could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The path at fault.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The schema is newer than this binary understands.
    #[error(
        "{path}: schema version {found} is newer than this binary's {supported}; upgrade haivemind"
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The file's schema version.
        found: i64,
        /// The newest version this binary knows.
        supported: i64,
    },
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("database error: {0}")]
    Postgres(#[from] postgres::Error),
    /// The hub's database cannot be reached now; the request may be tried again.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The embedding model failed on a query.
    #[error("the embedding model failed: {0}")]
    Embedding(String),
    /// A stored value could not be read back (a bug or a damaged file).
    #[error("corrupt record {record}: {detail}")]
    Corrupt {
        /// Which record.
        record: String,
        /// What was wrong.
        detail: String,
    },
}

impl StoreError {
    /// Whether the caller caused this and can fix it, so its message may be shown as is.
    pub fn is_caller_error(&self) -> bool {
        match self {
            StoreError::Invalid(_)
            | StoreError::MemoryNotFound { .. }
            | StoreError::MemoryDeleted { .. }
            | StoreError::NotDeleted { .. }
            | StoreError::Erased { .. }
            | StoreError::RecordNotFound { .. }
            | StoreError::Conflict(_)
            | StoreError::ConfirmRequired { .. } => true,
            StoreError::Io { .. }
            | StoreError::SchemaTooNew { .. }
            | StoreError::Sqlite(_)
            | StoreError::Postgres(_)
            | StoreError::Unavailable(_)
            | StoreError::Embedding(_)
            | StoreError::Corrupt { .. } => false,
        }
    }

    pub(crate) fn at(self, path: &Path) -> Self {
        match self {
            StoreError::SchemaTooNew {
                found, supported, ..
            } => StoreError::SchemaTooNew {
                path: path.to_path_buf(),
                found,
                supported,
            },
            other => other,
        }
    }
}

impl From<crate::db::DbError> for StoreError {
    fn from(error: crate::db::DbError) -> Self {
        use crate::db::DbError;
        match error {
            DbError::Sqlite(error) => StoreError::Sqlite(error),
            DbError::Postgres(error) => {
                if error.is_closed()
                    || std::error::Error::source(&error).is_some_and(|s| s.is::<std::io::Error>())
                {
                    StoreError::Unavailable(error.to_string())
                } else {
                    StoreError::Postgres(error)
                }
            }
            DbError::NoRows => StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows),
            DbError::Conversion { column, detail } => StoreError::Corrupt {
                record: format!("column {column}"),
                detail,
            },
        }
    }
}

impl From<haivemind_store_postgres::PostgresError> for StoreError {
    fn from(error: haivemind_store_postgres::PostgresError) -> Self {
        use haivemind_store_postgres::PostgresError;
        match error {
            PostgresError::Query(error) => crate::db::DbError::Postgres(error).into(),
            PostgresError::Unavailable { .. } => StoreError::Unavailable(error.to_string()),
            PostgresError::SchemaTooNew { found, supported } => StoreError::SchemaTooNew {
                path: Default::default(),
                found: found.into(),
                supported: supported.into(),
            },
            PostgresError::Config(detail) => StoreError::Unavailable(detail),
        }
    }
}
