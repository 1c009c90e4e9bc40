//! The memory engine: memories with their history and deletion state, full-text search, and
//! the operation log, in one SQLite file.
//!
//! [`Store`] is the handle. [`Store::open`] creates or migrates the file (WAL mode, versioned
//! migrations in [`migrations`]). Every write runs in one transaction that changes the
//! memory, its history, its full-text index and appends its [`OpLogEntry`], so a crash loses
//! either the whole change or none of it. Reads use a small pool of read connections, so they
//! never wait for a writer.
//!
//! The engine takes an optional [`haivemind_core::Embedder`]. With one, every memory written
//! here is embedded before its write transaction starts (never while holding the write lock),
//! its vector is stored with the model's id, and search fuses full-text and vector rankings
//! ([`SearchMode::Hybrid`]); memories not yet embedded by this model (written elsewhere, or
//! before a model change) are found by full-text until [`Store::embed_missing`] reaches them.
//! With none, search answers from the full-text index and reports [`SearchMode::FullText`].
//!
//! Nothing here knows about MCP, HTTP or peers: results are engine types, errors are
//! [`StoreError`], and the edges translate both.
//!
//! ```no_run
//! use haivemind_core::{NewMemory, memory::MemoryRules};
//! use haivemind_store::{SearchQuery, Store, StoreOptions};
//!
//! let store = Store::open(StoreOptions::new("/tmp/hv.sqlite3", "laptop"))?;
//! let memory = store.create(NewMemory::new("Elasticsearch ran out of JVM heap on elastic3"))?;
//! let found = store.search(&SearchQuery::new("elastic heap"))?;
//! assert_eq!(found.hits[0].memory.id, memory.id);
//! # Ok::<(), haivemind_store::StoreError>(())
//! ```
#![deny(missing_docs)]

pub mod backup;
mod connection_pool;
mod context;
mod conversation;
mod coordination;
pub mod db;
mod devops;
mod duplicates;
mod embedding;
mod error;
mod export;
mod external;
mod full_text;
mod full_text_postgres;
mod full_text_ranking;
mod hybrid;
mod memories;
pub mod migrations;
mod oauth;
mod oplog;
mod ranking;
mod replication;
mod rows;
mod search;
mod stats;
pub mod tables;
mod tokens;
mod vector_scan;
mod vectors;
mod vectors_postgres;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use haivemind_core::memory::MemoryRules;
use haivemind_core::{Embedder, HybridClock};
use rusqlite::Connection;

pub use context::{ContextPack, ContextQuery, MAX_CONTEXT_TOKENS, MIN_CONTEXT_TOKENS};
pub use conversation::{ConversationImport, ImportedConversation, MAX_TRANSCRIPT_BYTES};
pub use coordination::{
    Agent, KNOWN_ROLES, NewAgent, NewBroadcast, NewTask, Priority, RosterEntry, SEVERITIES, Task,
    TaskEvent, TaskStatus,
};
pub use devops::{
    ConfigDrift, INCIDENT_SEVERITIES, INCIDENT_STATES, IncidentQuery, MachineDrift, NewIncident,
    NewPlaybook, NewRunbook, PLAYBOOK_TYPES, RecordedIncident, parse_steps, validate_playbook,
};
pub use duplicates::{DuplicateGroup, DuplicateQuery};
pub use embedding::{EmbeddingProgress, VectorCoverage};
pub use error::StoreError;
pub use export::{ExportFormat, UserExport, csv_of_memories};
pub use external::{ExternalDoc, ExternalOutcome};
pub use hybrid::{Fusion, FusionMethod};
pub use memories::{BulkDeleteOutcome, HistoryEntry, ImportOutcome, MergeOutcome};
pub use oauth::{
    GrantRequest, IssuedGrant, MAX_OAUTH_CLIENTS, OAuthClient, RefreshRefusal, Refreshed,
};
pub use oplog::{OpKind, OpLogEntry, WireVector};
pub use replication::{ApplyOutcome, MAX_LISTED_REFUSALS, Refusal, VersionVector};
pub use search::{MemoryFilter, RecentQuery, SearchHit, SearchMode, SearchQuery, SearchResults};
pub use stats::MemoryStats;
pub use tokens::{NewToken, OAuthOrigin, TOKEN_PREFIX, TokenRecord, token_digest};

use connection_pool::ReaderPool;

/// How to open a [`Store`].
#[derive(Clone)]
pub struct StoreOptions {
    /// The SQLite file; created with its parent directory when missing.
    pub path: PathBuf,
    /// This machine's id, stamped on every memory and op-log entry written here.
    pub machine_id: String,
    /// The rules new and changed memories must obey.
    pub rules: MemoryRules,
    /// How many days a soft-deleted memory stays recoverable.
    pub recover_days: u32,
    /// How far ahead of this node's clock a replicated operation may be stamped, in
    /// milliseconds (`sync.max_clock_skew_secs`); operations further ahead are refused.
    pub max_clock_skew_ms: u64,
    /// The embedding model, when one is loaded.
    pub embedder: Option<Arc<dyn Embedder>>,
    /// How hybrid search weighs full-text against vector ranks.
    pub fusion: Fusion,
}

impl StoreOptions {
    /// Options with the default rules and no embedder.
    pub fn new(path: impl Into<PathBuf>, machine_id: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            machine_id: machine_id.into(),
            rules: MemoryRules::default(),
            recover_days: 30,
            max_clock_skew_ms: 300_000,
            embedder: None,
            fusion: Fusion::default(),
        }
    }
}

/// Where the store's tables live.
enum Backend {
    /// One SQLite file: one writer connection behind a mutex, a pool of readers.
    Sqlite {
        writer: Mutex<Connection>,
        readers: ReaderPool,
    },
    /// A hub's PostgreSQL database, shared with other frontends.
    Postgres(haivemind_store_postgres::Database),
}

/// Any fixed number, the same in every frontend of a hub: the transaction-scoped advisory
/// lock every write takes, so writes are serialised across frontends as SQLite serialises
/// them in one file (stamps stay increasing, replays and claims see one order).
const HUB_WRITE_LOCK: i64 = 0x6876_5f77_7269_7465; // "hv_write"

/// The handle to one node's memory engine. Cheap to share behind an `Arc`; every method takes
/// `&self` and is safe to call from many threads. Methods block on SQLite, so async callers
/// run them on a blocking thread.
pub struct Store {
    path: PathBuf,
    machine_id: String,
    rules: MemoryRules,
    recover_days: u32,
    max_clock_skew_ms: u64,
    embedder: Option<Arc<dyn Embedder>>,
    /// The loaded model's vectors, when a model is loaded.
    vectors: Option<vectors::VectorIndex>,
    query_vectors: embedding::QueryVectorCache,
    fusion: Fusion,
    backend: Backend,
    clock: Mutex<HybridClock>,
    term_frequencies: full_text_ranking::TermFrequencyCache,
}

impl Store {
    /// Opens (creating if needed) the SQLite file and brings its schema up to date.
    pub fn open(options: StoreOptions) -> Result<Self, StoreError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        // A folder made here is the store's own (0700); one that exists may be shared and is
        // left as it is (the binary tightens its data directory itself).
        if let Some(parent) = options.path.parent()
            && !parent.as_os_str().is_empty()
            && !parent.exists()
        {
            haivemind_core::private_files::ensure_private_dir(parent).map_err(io(parent))?;
        }
        // The file holds memories, pii and token digests: owner-only. SQLite gives its WAL
        // and shared-memory files the database file's mode; older ones are tightened too.
        let mut tightened = haivemind_core::private_files::ensure_private_file(&options.path)
            .map_err(io(&options.path))?;
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut side = options.path.clone().into_os_string();
            side.push(suffix);
            let side = PathBuf::from(side);
            tightened |= haivemind_core::private_files::tighten_if_present(&side, 0o600)
                .map_err(io(&side))?;
        }
        if tightened {
            tracing::warn!(
                path = %options.path.display(),
                "the database was readable by other users; its files are now owner-only (0600)"
            );
        }
        let mut writer = connection_pool::open_connection(&options.path)?;
        migrations::migrate(&mut writer).map_err(|e| e.at(&options.path))?;
        let readers = ReaderPool::new(options.path.clone());
        let path = options.path.clone();
        Ok(Self::with_backend(
            options,
            path,
            Backend::Sqlite {
                writer: Mutex::new(writer),
                readers,
            },
        ))
    }

    /// The engine over `backend`, with everything but the backend from `options`.
    fn with_backend(options: StoreOptions, path: PathBuf, backend: Backend) -> Self {
        // The vector index is kept beside a SQLite file; a hub's frontends read PostgreSQL.
        let snapshot =
            matches!(backend, Backend::Sqlite { .. }).then(|| vectors::snapshot_path(&path));
        Self {
            path,
            machine_id: options.machine_id,
            rules: options.rules,
            recover_days: options.recover_days,
            max_clock_skew_ms: options.max_clock_skew_ms,
            vectors: options.embedder.as_deref().map(|e| {
                let index = vectors::VectorIndex::new(e.model_id(), e.dimensions());
                match snapshot {
                    Some(file) => index.with_snapshot(file),
                    None => index,
                }
            }),
            embedder: options.embedder,
            query_vectors: Default::default(),
            fusion: options.fusion,
            backend,
            clock: Mutex::new(HybridClock::new()),
            term_frequencies: Default::default(),
        }
    }

    /// The SQLite file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This machine's id.
    pub fn machine_id(&self) -> &str {
        &self.machine_id
    }

    /// The rules memories obey here.
    pub fn rules(&self) -> &MemoryRules {
        &self.rules
    }

    /// The loaded embedding model's id, if any.
    pub fn embedder_model(&self) -> Option<&str> {
        self.embedder.as_deref().map(|e| e.model_id())
    }

    /// Opens the engine on a hub's PostgreSQL database (already connected and migrated
    /// by `haivemind-store-postgres`). `options.path` is ignored.
    pub fn open_postgres(
        options: StoreOptions,
        database: haivemind_store_postgres::Database,
    ) -> Result<Self, StoreError> {
        let path = PathBuf::from(format!("postgres://{}", database.target()));
        let store = Self::with_backend(options, path, Backend::Postgres(database));
        store.index_vectors_in_postgres()?;
        Ok(store)
    }

    /// Which database the store is on.
    pub fn dialect(&self) -> db::Dialect {
        match self.backend {
            Backend::Sqlite { .. } => db::Dialect::Sqlite,
            Backend::Postgres(_) => db::Dialect::Postgres,
        }
    }

    /// Which backend holds the store, and how vectors are ranked on it, for status pages.
    pub fn storage_description(&self) -> (&'static str, &'static str) {
        match &self.backend {
            Backend::Sqlite { .. } => ("sqlite", "in-process index over the file's vectors"),
            Backend::Postgres(_) if self.pgvector() => {
                ("postgres", "pgvector (HNSW, cosine) in PostgreSQL")
            }
            Backend::Postgres(_) => (
                "postgres",
                "in-process index fed from PostgreSQL (pgvector is not installed there)",
            ),
        }
    }

    /// Whether vectors are ranked by pgvector: on PostgreSQL with the extension.
    pub(crate) fn pgvector(&self) -> bool {
        self.postgres().is_some_and(|database| {
            database.vector_ranking() == haivemind_store_postgres::VectorRanking::Pgvector
        })
    }

    /// Whether the database answers now (on SQLite, the file is always there): for health
    /// checks, which must not wait on a pool that cannot connect.
    pub fn check_storage(&self) -> Result<(), StoreError> {
        self.reader()?
            .query_row("SELECT 1", db::params![], |_| Ok(()))
            .map_err(StoreError::from)
    }

    /// The hub's database, when the store is on PostgreSQL.
    pub fn postgres(&self) -> Option<&haivemind_store_postgres::Database> {
        match &self.backend {
            Backend::Postgres(database) => Some(database),
            Backend::Sqlite { .. } => None,
        }
    }

    /// The SQLite writer connection, when the store is on SQLite.
    fn sqlite_writer(&self) -> Option<MutexGuard<'_, Connection>> {
        match &self.backend {
            // A panic while holding the lock cannot leave SQLite half-written (the
            // transaction rolls back on drop), so a poisoned lock is safe to keep using.
            Backend::Sqlite { writer, .. } => {
                Some(writer.lock().unwrap_or_else(|p| p.into_inner()))
            }
            Backend::Postgres(_) => None,
        }
    }

    /// A connection for reading.
    fn reader(&self) -> Result<db::Connection<'_>, StoreError> {
        match &self.backend {
            Backend::Sqlite { readers, .. } => Ok(db::Connection::sqlite_reader(readers.get()?)),
            Backend::Postgres(database) => Ok(db::Connection::postgres_pooled(
                database.connection()?,
                self.pgvector(),
            )),
        }
    }

    /// Runs `work` in one write transaction, the only writer at a time: SQLite's
    /// `BEGIN IMMEDIATE`, or on PostgreSQL a transaction holding the hub's write lock.
    pub(crate) fn transact<T>(
        &self,
        work: impl FnOnce(&db::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &self.backend {
            Backend::Sqlite { .. } => {
                let mut connection = self.sqlite_writer().expect("a SQLite store has a writer");
                let transaction = db::Connection::sqlite_transaction(
                    connection
                        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?,
                );
                let out = work(&transaction)?;
                transaction.commit()?;
                Ok(out)
            }
            Backend::Postgres(database) => {
                let mut connection = database.connection()?;
                let mut transaction = connection.transaction().map_err(db::DbError::from)?;
                transaction
                    .execute("SELECT pg_advisory_xact_lock($1)", &[&HUB_WRITE_LOCK])
                    .map_err(db::DbError::from)?;
                let transaction =
                    db::Connection::postgres_transaction(transaction, self.pgvector());
                let out = work(&transaction)?;
                transaction.commit()?;
                Ok(out)
            }
        }
    }
}
