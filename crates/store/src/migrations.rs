//! Versioned schema migrations. The file's `PRAGMA user_version` is the number of migrations
//! applied; [`migrate`] applies the missing ones in order, each in its own transaction, and
//! refuses a file written by a newer binary.
//!
//! Invariant: a migration, once released, never changes. New needs get a new migration.

use rusqlite::Connection;

use crate::StoreError;

/// The migrations, in order. Index `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    MIGRATION_1_MEMORIES_FTS_OPLOG,
    MIGRATION_2_VECTORS,
    MIGRATION_3_API_TOKENS,
    MIGRATION_4_OP_LOG_FLOOR,
    MIGRATION_5_COORDINATION,
    MIGRATION_6_CONNECTOR_CHECKPOINTS,
    MIGRATION_7_OAUTH,
    MIGRATION_8_FULL_TEXT_FACETS,
    MIGRATION_9_USER_TIMELINE,
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const MIGRATION_1_MEMORIES_FTS_OPLOG: &str = r#"
CREATE TABLE memories (
    rowid               INTEGER PRIMARY KEY,
    id                  TEXT NOT NULL UNIQUE,
    content             TEXT NOT NULL,
    category            TEXT NOT NULL,
    context             TEXT,
    tags                TEXT NOT NULL DEFAULT '[]',
    metadata            TEXT NOT NULL DEFAULT '{}',
    user_id             TEXT NOT NULL,
    project             TEXT,
    machine_id          TEXT NOT NULL,
    agent_id            TEXT,
    scope               TEXT NOT NULL,
    confidentiality     TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    version             INTEGER NOT NULL,
    deleted_at          INTEGER,
    deleted_reason      TEXT,
    deleted_by          TEXT,
    hlc                 INTEGER NOT NULL,
    hlc_origin          TEXT NOT NULL
);
CREATE INDEX memories_live_created ON memories (created_at DESC) WHERE deleted_at IS NULL;
CREATE INDEX memories_user_created ON memories (user_id, created_at DESC);
CREATE INDEX memories_category ON memories (category);
CREATE INDEX memories_deleted ON memories (deleted_at) WHERE deleted_at IS NOT NULL;

CREATE TABLE memory_tags (
    tag          TEXT NOT NULL,
    memory_rowid INTEGER NOT NULL REFERENCES memories (rowid) ON DELETE CASCADE,
    PRIMARY KEY (tag, memory_rowid)
) WITHOUT ROWID;
CREATE INDEX memory_tags_memory ON memory_tags (memory_rowid);

CREATE TABLE memory_history (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    memory_id   TEXT NOT NULL,
    version     INTEGER NOT NULL,
    action      TEXT NOT NULL,
    changed_at  INTEGER NOT NULL,
    machine_id  TEXT NOT NULL,
    agent_id    TEXT,
    changes     TEXT NOT NULL
);
CREATE INDEX memory_history_memory ON memory_history (memory_id, seq);

CREATE TABLE tombstones (
    record_kind TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    hlc         INTEGER NOT NULL,
    hlc_origin  TEXT NOT NULL,
    erased_at   INTEGER NOT NULL,
    reason      TEXT,
    PRIMARY KEY (record_kind, record_id)
) WITHOUT ROWID;

CREATE TABLE op_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    op_id       TEXT NOT NULL UNIQUE,
    hlc         INTEGER NOT NULL,
    origin      TEXT NOT NULL,
    record_kind TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    op          TEXT NOT NULL,
    payload     TEXT NOT NULL,
    shareable   INTEGER NOT NULL
);
CREATE INDEX op_log_hlc ON op_log (hlc);
CREATE INDEX op_log_origin_hlc ON op_log (origin, hlc);
CREATE INDEX op_log_record ON op_log (record_kind, record_id);

CREATE VIRTUAL TABLE memories_fts USING fts5 (
    content, context, tags,
    content = 'memories',
    content_rowid = 'rowid',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
INSERT INTO memories_fts (memories_fts, rank) VALUES ('secure-delete', 1);

CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts (rowid, content, context, tags)
    VALUES (new.rowid, new.content, new.context, new.tags);
END;
CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content, context, tags)
    VALUES ('delete', old.rowid, old.content, old.context, old.tags);
END;
CREATE TRIGGER memories_fts_update AFTER UPDATE OF content, context, tags ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content, context, tags)
    VALUES ('delete', old.rowid, old.content, old.context, old.tags);
    INSERT INTO memories_fts (rowid, content, context, tags)
    VALUES (new.rowid, new.content, new.context, new.tags);
END;
"#;

/// One vector per memory, with the model that made it. `seq` grows with every write, so an
/// in-memory index (this process's or another's) catches up by reading rows past the last
/// `seq` it saw, and names a vector unambiguously even if a memory rowid is reused.
/// Vectors go with their memory (`ON DELETE CASCADE`): they are derived from its content.
const MIGRATION_2_VECTORS: &str = r#"
CREATE TABLE memory_vectors (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    memory_rowid INTEGER NOT NULL UNIQUE REFERENCES memories (rowid) ON DELETE CASCADE,
    model_id     TEXT NOT NULL,
    vector       BLOB NOT NULL
);
CREATE INDEX memory_vectors_model_seq ON memory_vectors (model_id, seq);
"#;

/// Brings the schema of `connection`'s file up to [`SCHEMA_VERSION`].
pub fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    loop {
        let transaction =
            connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = transaction.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                path: Default::default(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        let index = usize::try_from(version).map_err(|_| StoreError::Corrupt {
            record: "PRAGMA user_version".into(),
            detail: format!("negative schema version {version}"),
        })?;
        tracing::info!(
            from = version,
            to = version + 1,
            "migrating database schema"
        );
        transaction.execute_batch(MIGRATIONS[index])?;
        transaction.pragma_update(None, "user_version", version + 1)?;
        transaction.commit()?;
    }
}

/// Tokens for the HTTP services, stored as digests. Local to this node: not in the op log.
const MIGRATION_3_API_TOKENS: &str = r#"
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    digest       BLOB NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
"#;

/// The newest stamp per origin among op-log entries removed by compaction
/// (`Store::compact_removed`): the version vector and the clock keep counting from it, so
/// compaction never makes a node look as if it had seen less, nor reuse a stamp.
const MIGRATION_4_OP_LOG_FLOOR: &str = r#"
CREATE TABLE op_log_floor (
    origin TEXT PRIMARY KEY,
    hlc    INTEGER NOT NULL
);
"#;

/// The roster and delegated tasks (`coordination.rs`): caches of the replay of each
/// record's operations in the op log, rebuilt per record on every new operation.
const MIGRATION_5_COORDINATION: &str = r#"
CREATE TABLE agents (
    id            TEXT PRIMARY KEY,
    machine_id    TEXT NOT NULL,
    role          TEXT NOT NULL,
    capabilities  TEXT NOT NULL,
    description   TEXT,
    registered_at INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    hlc           INTEGER NOT NULL,
    hlc_origin    TEXT NOT NULL
);
CREATE TABLE tasks (
    id                    TEXT PRIMARY KEY,
    description           TEXT NOT NULL,
    required_capabilities TEXT NOT NULL,
    target_agent          TEXT,
    assigned_to           TEXT,
    status                TEXT NOT NULL,
    priority              TEXT NOT NULL,
    priority_rank         INTEGER NOT NULL,
    deadline              INTEGER,
    created_by            TEXT,
    created_on            TEXT NOT NULL,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    result                TEXT,
    history               TEXT NOT NULL,
    hlc                   INTEGER NOT NULL,
    hlc_origin            TEXT NOT NULL
);
CREATE INDEX tasks_assigned ON tasks (assigned_to, status);
CREATE INDEX tasks_status ON tasks (status, created_at);
"#;

/// When each connector source last synced completely, so the next sync asks only for what
/// changed. Local to this node: each node imports on its own schedule.
const MIGRATION_6_CONNECTOR_CHECKPOINTS: &str = r#"
CREATE TABLE connector_checkpoints (
    source   TEXT PRIMARY KEY,
    last_run INTEGER NOT NULL
);
"#;

/// OAuth 2.1 for remote MCP clients (`crates/server/src/oauth.rs`), and a tool profile per
/// token. An access token is an `api_tokens` row that names the token whose holder
/// approved it (`parent_id`), the client and grant it was issued to, the resource it is
/// for and when it expires; revoking the parent revokes it. Registered clients and refresh
/// tokens (digests, one family per grant, each used once) have their own tables. Local to
/// this node, like every token.
const MIGRATION_7_OAUTH: &str = r#"
ALTER TABLE api_tokens ADD COLUMN tool_profile TEXT;
ALTER TABLE api_tokens ADD COLUMN parent_id TEXT;
ALTER TABLE api_tokens ADD COLUMN client_id TEXT;
ALTER TABLE api_tokens ADD COLUMN grant_id TEXT;
ALTER TABLE api_tokens ADD COLUMN audience TEXT;
ALTER TABLE api_tokens ADD COLUMN expires_at INTEGER;
CREATE INDEX api_tokens_parent ON api_tokens (parent_id);
CREATE TABLE oauth_clients (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    redirect_uris TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE oauth_refresh_tokens (
    digest     BLOB PRIMARY KEY,
    grant_id   TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    parent_id  TEXT NOT NULL,
    role       TEXT NOT NULL,
    audience   TEXT NOT NULL,
    tool_profile TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    revoked_at INTEGER
);
CREATE INDEX oauth_refresh_grant ON oauth_refresh_tokens (grant_id);
CREATE INDEX oauth_refresh_parent ON oauth_refresh_tokens (parent_id);
"#;

/// Each memory's owner and project as words of the full-text index (`facets`, see
/// `full_text_ranking::facet_words`), so a search filtered by user or project intersects
/// the index's own lists instead of joining every match of a common word to its row to
/// test the filter (15 ms at 100k with fifty users). The tokens are only a shortcut: the filter is
/// still tested on the row, so a stemmed or colliding token can admit nothing it should
/// not. `'u' || hex(..) || '0'` is plain SQL (no function of ours in a trigger), the hex
/// keeps any name one token, and the final digit keeps the Porter stemmer off it. The
/// index is built again from the rows: on 100k memories that takes seconds, once.
const MIGRATION_8_FULL_TEXT_FACETS: &str = r#"
ALTER TABLE memories ADD COLUMN facets TEXT GENERATED ALWAYS AS (
    'u' || hex(user_id) || '0'
    || CASE WHEN project IS NULL THEN '' ELSE ' p' || hex(project) || '0' END
) VIRTUAL;
DROP TRIGGER memories_fts_insert;
DROP TRIGGER memories_fts_delete;
DROP TRIGGER memories_fts_update;
DROP TABLE memories_fts;
CREATE VIRTUAL TABLE memories_fts USING fts5 (
    content, context, tags, facets,
    content = 'memories',
    content_rowid = 'rowid',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
INSERT INTO memories_fts (memories_fts, rank) VALUES ('secure-delete', 1);
INSERT INTO memories_fts (memories_fts) VALUES ('rebuild');

CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts (rowid, content, context, tags, facets)
    VALUES (new.rowid, new.content, new.context, new.tags, new.facets);
END;
CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content, context, tags, facets)
    VALUES ('delete', old.rowid, old.content, old.context, old.tags, old.facets);
END;
CREATE TRIGGER memories_fts_update AFTER UPDATE OF content, context, tags, user_id, project ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content, context, tags, facets)
    VALUES ('delete', old.rowid, old.content, old.context, old.tags, old.facets);
    INSERT INTO memories_fts (rowid, content, context, tags, facets)
    VALUES (new.rowid, new.content, new.context, new.tags, new.facets);
END;
"#;

/// A user's memories in the order they were written, both ways: hybrid search looks up
/// the memory written just before and just after a result by `(created_at, rowid)`
/// (`hybrid.rs`). The index it replaces sorted `created_at` descending, so one direction
/// of that pair ran against it and SQLite sorted every memory of a millisecond (a batch
/// import writes thousands in one). Scanned backwards, this one still serves the newest
/// first.
const MIGRATION_9_USER_TIMELINE: &str = r#"
DROP INDEX memories_user_created;
CREATE INDEX memories_user_created ON memories (user_id, created_at);
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(connection: &Connection, expression: &str) -> Vec<i64> {
        let mut statement = connection
            .prepare("SELECT rowid FROM memories_fts WHERE memories_fts MATCH ?1 ORDER BY rowid")
            .unwrap();
        statement
            .query_map([expression], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn facets_reach_the_full_text_index_of_a_file_from_before_them() {
        let mut connection = Connection::open_in_memory().unwrap();
        for migration in &MIGRATIONS[..7] {
            connection.execute_batch(migration).unwrap();
        }
        connection.pragma_update(None, "user_version", 7).unwrap();
        let insert = |connection: &Connection,
                      id: &str,
                      content: &str,
                      user: &str,
                      project: Option<&str>| {
            connection
                .execute(
                    "INSERT INTO memories (id, content, category, user_id, project, machine_id,
                         scope, confidentiality, created_at, updated_at, version, hlc, hlc_origin)
                     VALUES (?1, ?2, 'global', ?3, ?4, 'm', 'machine-shared', 'normal', 0, 0, 1, 0, 'm')",
                    rusqlite::params![id, content, user, project],
                )
                .unwrap();
        };
        insert(&connection, "a", "heap exhausted", "alice", Some("search"));
        insert(&connection, "b", "heap tuned", "bob", None);
        migrate(&mut connection).unwrap();
        let version: i64 = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        // Rows from before the migration and after it are both in the rebuilt index.
        insert(&connection, "c", "heap again", "alice", None);
        assert_eq!(matches(&connection, "heap"), [1, 2, 3]);
        assert_eq!(
            matches(&connection, "heap AND facets:\"u616c6963650\""),
            [1, 3]
        );
        assert_eq!(matches(&connection, "facets:\"p7365617263680\""), [1]);
        // Moving a memory to another user moves its facet; deleting it removes it.
        connection
            .execute("UPDATE memories SET user_id = 'bob' WHERE id = 'c'", [])
            .unwrap();
        assert_eq!(matches(&connection, "facets:\"u626f620\""), [2, 3]);
        connection
            .execute("DELETE FROM memories WHERE id = 'b'", [])
            .unwrap();
        assert_eq!(matches(&connection, "facets:\"u626f620\""), [3]);
        connection
            .execute(
                "INSERT INTO memories_fts (memories_fts, rank) VALUES ('integrity-check', 1)",
                [],
            )
            .unwrap();
    }
}
