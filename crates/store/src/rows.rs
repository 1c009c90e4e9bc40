//! Reading memories out of SQLite rows, and writing them in.

use crate::db::{Connection, OptionalExtension, Row, Transaction, params};
use haivemind_core::memory::Deletion;
use haivemind_core::{Confidentiality, HlcStamp, Memory, MemoryId, Scope};
use rusqlite::types::Type;
use serde_json::{Map, Value};

use crate::StoreError;

/// The columns [`memory_from_row`] reads, in order, from a `memories` table aliased `m`.
pub(crate) const MEMORY_COLUMNS: &str = "m.id, m.content, m.category, m.context, m.tags, \
     m.metadata, m.user_id, m.project, m.machine_id, m.agent_id, m.scope, m.confidentiality, \
     m.created_at, m.updated_at, m.version, m.deleted_at, m.deleted_reason, m.deleted_by";

fn conversion(column: usize, detail: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        Type::Text,
        Box::new(std::io::Error::other(detail)),
    )
}

/// Reads a memory from a row selected with [`MEMORY_COLUMNS`] first.
pub(crate) fn memory_from_row(row: &Row<'_>) -> crate::db::Result<Memory> {
    let id: String = row.get(0)?;
    let id = MemoryId::parse("id", &id).map_err(|e| conversion(0, e.to_string()))?;
    let tags: String = row.get(4)?;
    let tags: Vec<String> =
        serde_json::from_str(&tags).map_err(|e| conversion(4, format!("tags: {e}")))?;
    let metadata: String = row.get(5)?;
    let metadata: Map<String, Value> =
        serde_json::from_str(&metadata).map_err(|e| conversion(5, format!("metadata: {e}")))?;
    let scope: String = row.get(10)?;
    let scope = Scope::parse("scope", &scope).map_err(|e| conversion(10, e.to_string()))?;
    let confidentiality: String = row.get(11)?;
    let confidentiality = Confidentiality::parse("confidentiality", &confidentiality)
        .map_err(|e| conversion(11, e.to_string()))?;
    let version: i64 = row.get(14)?;
    let deleted_at: Option<i64> = row.get(15)?;
    Ok(Memory {
        id,
        content: row.get(1)?,
        category: row.get(2)?,
        context: row.get(3)?,
        tags,
        metadata,
        user_id: row.get(6)?,
        project: row.get(7)?,
        machine_id: row.get(8)?,
        agent_id: row.get(9)?,
        scope,
        confidentiality,
        created_at_ms: row.get(12)?,
        updated_at_ms: row.get(13)?,
        version: u64::try_from(version).unwrap_or(1),
        deletion: match deleted_at {
            Some(at_ms) => Some(Deletion {
                at_ms,
                reason: row.get(16)?,
                by_machine: row.get::<_, Option<String>>(17)?.unwrap_or_default(),
            }),
            None => None,
        },
    })
}

fn json_text<T: serde::Serialize>(value: &T) -> String {
    // Serialising strings, lists of strings and JSON maps cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// The 20 column values of a memory row, in the order of `INSERT` and `UPDATE` below.
fn row_values(memory: &Memory, stamp: &HlcStamp) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value;
    let text = |s: &str| Value::Text(s.to_string());
    let optional = |s: Option<&str>| s.map_or(Value::Null, text);
    let deletion = memory.deletion.as_ref();
    vec![
        text(&memory.id.to_string()),
        text(&memory.content),
        text(&memory.category),
        optional(memory.context.as_deref()),
        Value::Text(json_text(&memory.tags)),
        Value::Text(json_text(&memory.metadata)),
        text(&memory.user_id),
        optional(memory.project.as_deref()),
        text(&memory.machine_id),
        optional(memory.agent_id.as_deref()),
        text(memory.scope.as_str()),
        text(memory.confidentiality.as_str()),
        Value::Integer(memory.created_at_ms),
        Value::Integer(memory.updated_at_ms),
        Value::Integer(i64::try_from(memory.version).unwrap_or(i64::MAX)),
        deletion.map_or(Value::Null, |d| Value::Integer(d.at_ms)),
        optional(deletion.and_then(|d| d.reason.as_deref())),
        optional(deletion.map(|d| d.by_machine.as_str())),
        Value::Integer(i64::try_from(stamp.time).unwrap_or(i64::MAX)),
        text(&stamp.origin),
    ]
}

/// A memory id read back from the database; one that does not parse is a damaged record.
pub(crate) fn parse_memory_id(text: &str) -> Result<MemoryId, StoreError> {
    MemoryId::parse("id", text).map_err(|e| StoreError::Corrupt {
        record: format!("memory {text}"),
        detail: e.to_string(),
    })
}

/// Inserts a new memory row with its tags; returns its rowid.
pub(crate) fn insert_memory(
    tx: &Transaction<'_>,
    memory: &Memory,
    stamp: &HlcStamp,
) -> Result<i64, StoreError> {
    let rowid: i64 = tx.prepare_cached(
        "INSERT INTO memories (id, content, category, context, tags, metadata, user_id, project,
             machine_id, agent_id, scope, confidentiality, created_at, updated_at, version,
             deleted_at, deleted_reason, deleted_by, hlc, hlc_origin)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)
         RETURNING rowid",
    )?
    .query_row(crate::db::params_from_iter(row_values(memory, stamp)), |row| row.get(0))?;
    write_tags(tx, rowid, &memory.tags)?;
    Ok(rowid)
}

/// Overwrites every field of an existing memory row (found by id) and its tags; returns
/// its rowid.
pub(crate) fn replace_memory(
    tx: &Transaction<'_>,
    memory: &Memory,
    stamp: &HlcStamp,
) -> Result<i64, StoreError> {
    let indexed_before: Option<IndexedFields> = tx
        .prepare_cached(
            "SELECT user_id, category, project, machine_id, agent_id, created_at,
                    confidentiality, deleted_at FROM memories WHERE id = ?1",
        )?
        .query_row([memory.id.to_string()], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
                row.get(6)?,
                row.get::<_, Option<i64>>(7)?.is_none(),
            ))
        })
        .optional()?;
    let rowid: i64 = tx
        .prepare_cached(
            "UPDATE memories SET content = ?2, category = ?3, context = ?4, tags = ?5, metadata = ?6,
                 user_id = ?7, project = ?8, machine_id = ?9, agent_id = ?10, scope = ?11,
                 confidentiality = ?12, created_at = ?13, updated_at = ?14, version = ?15,
                 deleted_at = ?16, deleted_reason = ?17, deleted_by = ?18, hlc = ?19, hlc_origin = ?20
             WHERE id = ?1 RETURNING rowid",
        )?
        .query_row(crate::db::params_from_iter(row_values(memory, stamp)), |row| row.get(0))?;
    tx.execute("DELETE FROM memory_tags WHERE memory_rowid = ?1", [rowid])?;
    write_tags(tx, rowid, &memory.tags)?;
    // pgvector filters in the database and holds no index of its own to tell.
    if !tx.pgvector() && indexed_before.is_some_and(|before| before != indexed_fields(memory)) {
        crate::vectors::renumber(tx, rowid)?;
    }
    Ok(rowid)
}

/// The fields of a memory that in-memory vector indexes filter on, as stored: user,
/// category, project, machine, agent, creation time, confidentiality, and whether it is
/// live. Indexes learn of a change to any of them when its vector is renumbered.
type IndexedFields = (
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    i64,
    String,
    bool,
);

fn indexed_fields(memory: &Memory) -> IndexedFields {
    (
        memory.user_id.clone(),
        memory.category.clone(),
        memory.project.clone(),
        memory.machine_id.clone(),
        memory.agent_id.clone(),
        memory.created_at_ms,
        memory.confidentiality.as_str().to_string(),
        memory.deletion.is_none(),
    )
}

fn write_tags(tx: &Transaction<'_>, rowid: i64, tags: &[String]) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO memory_tags (tag, memory_rowid) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )?;
    for tag in tags {
        insert.execute(params![tag, rowid])?;
    }
    Ok(())
}

/// The memory with this id, live or soft-deleted, read on `connection` (a reader, or a write
/// transaction when the answer must not change before the write).
pub(crate) fn memory_by_id(
    connection: &Connection,
    id: MemoryId,
) -> Result<Option<Memory>, StoreError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {MEMORY_COLUMNS} FROM memories m WHERE m.id = ?1"
    ))?;
    Ok(statement
        .query_row([id.to_string()], memory_from_row)
        .optional()?)
}

/// Why no memory has this id: it was removed for good (a tombstone says so), or it never
/// existed here.
pub(crate) fn absence(connection: &Connection, id: MemoryId) -> Result<StoreError, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT 1 FROM tombstones WHERE record_kind = 'memory' AND record_id = ?1",
    )?;
    let erased: Option<i64> = statement
        .query_row([id.to_string()], |row| row.get(0))
        .optional()?;
    Ok(match erased {
        Some(_) => StoreError::Erased { id },
        None => StoreError::MemoryNotFound { id },
    })
}
