//! The hub's schema, versioned like the SQLite file's: `haivemind_schema` records each
//! migration applied. All of [`migrate`] runs in one transaction under an advisory lock,
//! so frontends starting together on an empty database apply each migration once (the
//! others wait, then find nothing to do), and a failed migration leaves nothing behind.
//!
//! The tables mirror the SQLite schema (`haivemind-store`'s `migrations.rs`) column for
//! column, so both backends hold the same records and one engine's rules read both. What
//! differs is what each database does best: full-text in a generated `tsvector` column
//! with a GIN index (SQLite: an FTS5 table kept by triggers), identities for sequences,
//! `boolean` for flags, and a `NOTIFY` on every op-log entry so every frontend hears of
//! every write at once (SQLite: each process polls the file).
//!
//! Every text column compares byte by byte (`COLLATE "C"`), as SQLite's do, so ordered
//! reads and digests come out the same on both backends whatever the database's locale.
//!
//! Invariant: a migration, once released, never changes. New needs get a new migration.

use crate::PostgresError;
use crate::connection::{Connection, VectorRanking};

/// Any fixed number; frontends of one database agree on it.
const MIGRATION_LOCK: i64 = 0x6861_6976_656d_696e; // "haivemin"

/// The channel every op-log entry is announced on, with its `seq` as the payload.
pub const OP_LOG_CHANNEL: &str = "haivemind_op_log";

const MIGRATIONS: &[&str] = &[
    MIGRATION_1_SCHEMA,
    MIGRATION_2_OAUTH,
    MIGRATION_3_USER_TIMELINE,
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

const MIGRATION_1_SCHEMA: &str = r#"
CREATE TABLE memories (
    rowid               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                  text COLLATE "C" NOT NULL UNIQUE,
    content             text COLLATE "C" NOT NULL,
    category            text COLLATE "C" NOT NULL,
    context             text COLLATE "C",
    tags                text COLLATE "C" NOT NULL DEFAULT '[]',
    metadata            text COLLATE "C" NOT NULL DEFAULT '{}',
    user_id             text COLLATE "C" NOT NULL,
    project             text COLLATE "C",
    machine_id          text COLLATE "C" NOT NULL,
    agent_id            text COLLATE "C",
    scope               text COLLATE "C" NOT NULL,
    confidentiality     text COLLATE "C" NOT NULL,
    created_at          bigint NOT NULL,
    updated_at          bigint NOT NULL,
    version             bigint NOT NULL,
    deleted_at          bigint,
    deleted_reason      text COLLATE "C",
    deleted_by          text COLLATE "C",
    hlc                 bigint NOT NULL,
    hlc_origin          text COLLATE "C" NOT NULL,
    search              tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', content), 'A')
        || setweight(to_tsvector('english', coalesce(context, '')), 'B')
        || setweight(to_tsvector('english', tags), 'B')
    ) STORED
);
CREATE INDEX memories_live_created ON memories (created_at DESC) WHERE deleted_at IS NULL;
CREATE INDEX memories_user_created ON memories (user_id, created_at DESC);
CREATE INDEX memories_category ON memories (category);
CREATE INDEX memories_deleted ON memories (deleted_at) WHERE deleted_at IS NOT NULL;
CREATE INDEX memories_search ON memories USING gin (search);

CREATE TABLE memory_tags (
    tag          text COLLATE "C" NOT NULL,
    memory_rowid bigint NOT NULL REFERENCES memories (rowid) ON DELETE CASCADE,
    PRIMARY KEY (tag, memory_rowid)
);
CREATE INDEX memory_tags_memory ON memory_tags (memory_rowid);

CREATE TABLE memory_history (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    memory_id   text COLLATE "C" NOT NULL,
    version     bigint NOT NULL,
    action      text COLLATE "C" NOT NULL,
    changed_at  bigint NOT NULL,
    machine_id  text COLLATE "C" NOT NULL,
    agent_id    text COLLATE "C",
    changes     text COLLATE "C" NOT NULL
);
CREATE INDEX memory_history_memory ON memory_history (memory_id, seq);

CREATE TABLE tombstones (
    record_kind text COLLATE "C" NOT NULL,
    record_id   text COLLATE "C" NOT NULL,
    hlc         bigint NOT NULL,
    hlc_origin  text COLLATE "C" NOT NULL,
    erased_at   bigint NOT NULL,
    reason      text COLLATE "C",
    PRIMARY KEY (record_kind, record_id)
);

CREATE TABLE op_log (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    op_id       text COLLATE "C" NOT NULL UNIQUE,
    hlc         bigint NOT NULL,
    origin      text COLLATE "C" NOT NULL,
    record_kind text COLLATE "C" NOT NULL,
    record_id   text COLLATE "C" NOT NULL,
    op          text COLLATE "C" NOT NULL,
    payload     text COLLATE "C" NOT NULL,
    shareable   bigint NOT NULL,
    UNIQUE (origin, hlc)
);
CREATE INDEX op_log_hlc ON op_log (hlc);
CREATE INDEX op_log_record ON op_log (record_kind, record_id);

CREATE TABLE op_log_floor (
    origin text COLLATE "C" PRIMARY KEY,
    hlc    bigint NOT NULL
);

CREATE FUNCTION haivemind_announce_op() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('haivemind_op_log', NEW.seq::text);
    RETURN NULL;
END;
$$;
CREATE TRIGGER op_log_announce AFTER INSERT ON op_log
    FOR EACH ROW EXECUTE FUNCTION haivemind_announce_op();

CREATE TABLE memory_vectors (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    memory_rowid bigint NOT NULL UNIQUE REFERENCES memories (rowid) ON DELETE CASCADE,
    model_id     text COLLATE "C" NOT NULL,
    vector       bytea NOT NULL
);
CREATE INDEX memory_vectors_model_seq ON memory_vectors (model_id, seq);

CREATE TABLE api_tokens (
    id           text COLLATE "C" PRIMARY KEY,
    name         text COLLATE "C" NOT NULL,
    role         text COLLATE "C" NOT NULL,
    digest       bytea NOT NULL UNIQUE,
    created_at   bigint NOT NULL,
    last_used_at bigint,
    revoked_at   bigint
);

CREATE TABLE agents (
    id            text COLLATE "C" PRIMARY KEY,
    machine_id    text COLLATE "C" NOT NULL,
    role          text COLLATE "C" NOT NULL,
    capabilities  text COLLATE "C" NOT NULL,
    description   text COLLATE "C",
    registered_at bigint NOT NULL,
    last_seen     bigint NOT NULL,
    hlc           bigint NOT NULL,
    hlc_origin    text COLLATE "C" NOT NULL
);

CREATE TABLE tasks (
    id                    text COLLATE "C" PRIMARY KEY,
    description           text COLLATE "C" NOT NULL,
    required_capabilities text COLLATE "C" NOT NULL,
    target_agent          text COLLATE "C",
    assigned_to           text COLLATE "C",
    status                text COLLATE "C" NOT NULL,
    priority              text COLLATE "C" NOT NULL,
    priority_rank         bigint NOT NULL,
    deadline              bigint,
    created_by            text COLLATE "C",
    created_on            text COLLATE "C" NOT NULL,
    created_at            bigint NOT NULL,
    updated_at            bigint NOT NULL,
    result                text COLLATE "C",
    history               text COLLATE "C" NOT NULL,
    hlc                   bigint NOT NULL,
    hlc_origin            text COLLATE "C" NOT NULL
);
CREATE INDEX tasks_assigned ON tasks (assigned_to, status);
CREATE INDEX tasks_status ON tasks (status, created_at);

CREATE TABLE connector_checkpoints (
    source   text COLLATE "C" PRIMARY KEY,
    last_run bigint NOT NULL
);
"#;

/// OAuth 2.1 grants and a tool profile per token: the SQLite file's migration 7, in this
/// dialect.
const MIGRATION_2_OAUTH: &str = r#"
ALTER TABLE api_tokens ADD COLUMN tool_profile text COLLATE "C";
ALTER TABLE api_tokens ADD COLUMN parent_id text COLLATE "C";
ALTER TABLE api_tokens ADD COLUMN client_id text COLLATE "C";
ALTER TABLE api_tokens ADD COLUMN grant_id text COLLATE "C";
ALTER TABLE api_tokens ADD COLUMN audience text COLLATE "C";
ALTER TABLE api_tokens ADD COLUMN expires_at bigint;
CREATE INDEX api_tokens_parent ON api_tokens (parent_id);
CREATE TABLE oauth_clients (
    id            text COLLATE "C" PRIMARY KEY,
    name          text COLLATE "C" NOT NULL,
    redirect_uris text COLLATE "C" NOT NULL,
    created_at    bigint NOT NULL
);
CREATE TABLE oauth_refresh_tokens (
    digest       bytea PRIMARY KEY,
    grant_id     text COLLATE "C" NOT NULL,
    client_id    text COLLATE "C" NOT NULL,
    parent_id    text COLLATE "C" NOT NULL,
    role         text COLLATE "C" NOT NULL,
    audience     text COLLATE "C" NOT NULL,
    tool_profile text COLLATE "C",
    created_at   bigint NOT NULL,
    expires_at   bigint NOT NULL,
    used_at      bigint,
    revoked_at   bigint
);
CREATE INDEX oauth_refresh_grant ON oauth_refresh_tokens (grant_id);
CREATE INDEX oauth_refresh_parent ON oauth_refresh_tokens (parent_id);
"#;

/// A user's memories in the order they were written, both ways, with `rowid` as the
/// tie-break: hybrid search steps from a result to the memory written just before and just
/// after it by the row value `(created_at, rowid)`. The SQLite file's migration 9.
const MIGRATION_3_USER_TIMELINE: &str = r#"
DROP INDEX memories_user_created;
CREATE INDEX memories_user_created ON memories (user_id, created_at, rowid);
"#;

/// Brings the database up to [`SCHEMA_VERSION`], then makes pgvector's column when the
/// extension can be had. Safe to run from many frontends at once.
pub(crate) fn migrate(connection: &mut Connection) -> Result<(), PostgresError> {
    let mut transaction = connection.transaction()?;
    transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    let fresh = transaction
        .query_one("SELECT to_regclass('haivemind_schema') IS NULL", &[])?
        .get::<_, bool>(0);
    if fresh {
        transaction.batch_execute(
            "CREATE TABLE haivemind_schema (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )?;
    }
    let found: i32 = transaction
        .query_one(
            "SELECT coalesce(max(version), 0) FROM haivemind_schema",
            &[],
        )?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(PostgresError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for version in found + 1..=SCHEMA_VERSION {
        tracing::info!(
            from = version - 1,
            to = version,
            "migrating database schema"
        );
        transaction.batch_execute(MIGRATIONS[(version - 1) as usize])?;
        transaction.execute(
            "INSERT INTO haivemind_schema (version) VALUES ($1)",
            &[&version],
        )?;
    }
    add_pgvector(&mut transaction)?;
    transaction.commit()?;
    Ok(())
}

/// pgvector, when the server has it and this user may create it (or it exists): the
/// `embedding` column beside the stored `f32` bytes. The bytes stay the ground truth (they
/// replicate and migrate); the column is what HNSW ranks.
fn add_pgvector(transaction: &mut postgres::Transaction<'_>) -> Result<(), PostgresError> {
    let available = transaction
        .query_opt(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'",
            &[],
        )?
        .is_some();
    if !available {
        return Ok(());
    }
    // A refusal (no privilege) must not spoil the migration: try it in a savepoint.
    let mut savepoint = transaction.transaction()?;
    match savepoint.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS vector;
         ALTER TABLE memory_vectors ADD COLUMN IF NOT EXISTS embedding vector;",
    ) {
        Ok(()) => savepoint.commit()?,
        Err(error) => {
            tracing::warn!(%error, "pgvector is installed but cannot be used by this user; ranking vectors in process");
            savepoint.rollback()?;
        }
    }
    Ok(())
}

/// pgvector when the `embedding` column exists (the extension was created), else in process.
pub(crate) fn vector_ranking(connection: &mut Connection) -> Result<VectorRanking, PostgresError> {
    let has_column = connection
        .query_opt(
            "SELECT 1 FROM information_schema.columns
             WHERE table_schema = current_schema()
               AND table_name = 'memory_vectors' AND column_name = 'embedding'",
            &[],
        )?
        .is_some();
    Ok(if has_column {
        VectorRanking::Pgvector
    } else {
        VectorRanking::InProcess
    })
}

/// The version recorded in `haivemind_schema`.
pub(crate) fn version(connection: &mut Connection) -> Result<i32, PostgresError> {
    Ok(connection
        .query_one(
            "SELECT coalesce(max(version), 0) FROM haivemind_schema",
            &[],
        )?
        .get(0))
}
