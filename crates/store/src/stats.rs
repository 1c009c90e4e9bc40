//! Counting what the store holds.

use std::collections::BTreeMap;

use crate::db::params;
use crate::{Store, StoreError, migrations};

/// What the store holds, for `get_memory_stats` and `haivemind stats`.
#[derive(Debug, Clone, Default)]
pub struct MemoryStats {
    /// Live (not deleted) memories.
    pub live: usize,
    /// Soft-deleted memories, still recoverable.
    pub deleted: usize,
    /// Live memories per category.
    pub by_category: BTreeMap<String, usize>,
    /// Live memories per scope.
    pub by_scope: BTreeMap<String, usize>,
    /// Live memories per confidentiality level.
    pub by_confidentiality: BTreeMap<String, usize>,
    /// Live memories per writing machine.
    pub by_machine: BTreeMap<String, usize>,
    /// Live memories per user.
    pub by_user: BTreeMap<String, usize>,
    /// Creation time of the oldest live memory, epoch milliseconds.
    pub oldest_ms: Option<i64>,
    /// Creation time of the newest live memory, epoch milliseconds.
    pub newest_ms: Option<i64>,
    /// Entries in the operation log.
    pub op_log_entries: usize,
    /// Permanently deleted records remembered so they never come back.
    pub tombstones: usize,
    /// The database's schema version.
    pub schema_version: i64,
    /// The database file's size in bytes (main file, without the WAL).
    pub database_bytes: u64,
}

/// How many days back [`Store::created_per_day`] reaches.
pub const CREATED_PER_DAY_DAYS: i64 = 30;
const DAY_MS: i64 = 86_400_000;

impl Store {
    /// Counts live and deleted memories, by category, scope, level, machine and user.
    pub fn stats(&self) -> Result<MemoryStats, StoreError> {
        let reader = self.reader()?;
        let count = |sql: &str| -> Result<usize, StoreError> {
            Ok(reader.query_row(sql, params![], |row| row.get::<_, i64>(0))? as usize)
        };
        let group = |column: &str| -> Result<BTreeMap<String, usize>, StoreError> {
            let mut statement = reader.prepare(&format!(
                "SELECT {column}, count(*) FROM memories WHERE deleted_at IS NULL GROUP BY {column}"
            ))?;
            let rows = statement.query_map(params![], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as usize))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        };
        let (oldest_ms, newest_ms) = reader.query_row(
            "SELECT min(created_at), max(created_at) FROM memories WHERE deleted_at IS NULL",
            params![],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok(MemoryStats {
            live: count("SELECT count(*) FROM memories WHERE deleted_at IS NULL")?,
            deleted: count("SELECT count(*) FROM memories WHERE deleted_at IS NOT NULL")?,
            by_category: group("category")?,
            by_scope: group("scope")?,
            by_confidentiality: group("confidentiality")?,
            by_machine: group("machine_id")?,
            by_user: group("user_id")?,
            oldest_ms,
            newest_ms,
            op_log_entries: count("SELECT count(*) FROM op_log")?,
            tombstones: count("SELECT count(*) FROM tombstones")?,
            schema_version: match self.dialect() {
                crate::db::Dialect::Sqlite => migrations::SCHEMA_VERSION,
                crate::db::Dialect::Postgres => haivemind_store_postgres::SCHEMA_VERSION.into(),
            },
            database_bytes: match self.dialect() {
                crate::db::Dialect::Sqlite => {
                    std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
                }
                crate::db::Dialect::Postgres => reader
                    .query_row(
                        "SELECT pg_database_size(current_database())",
                        params![],
                        |row| row.get::<_, i64>(0),
                    )?
                    .max(0) as u64,
            },
        })
    }

    /// Live memories created on each UTC day of the last [`CREATED_PER_DAY_DAYS`], keyed by
    /// days since the epoch (days without any are absent). Apart from [`Store::stats`],
    /// which `/metrics` and `/api/status` call on every scrape.
    pub fn created_per_day(&self) -> Result<BTreeMap<i64, usize>, StoreError> {
        let reader = self.reader()?;
        let first_day = haivemind_core::time_format::now_ms() / DAY_MS - (CREATED_PER_DAY_DAYS - 1);
        // Integer division floors on both backends for the non-negative times stored.
        let mut statement = reader.prepare(
            "SELECT created_at / 86400000 AS day, count(*) FROM memories
             WHERE deleted_at IS NULL AND created_at >= ?1 GROUP BY created_at / 86400000",
        )?;
        let rows = statement.query_map(params![first_day * DAY_MS], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)? as usize))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
