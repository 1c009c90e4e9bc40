//! Reading memories back: full-text search with filters, recent memories, single lookups.
//!
//! Filters are part of the SQL, never applied after a `LIMIT`, so a page is full whenever
//! enough memories match.

use haivemind_core::{InvalidInput, Memory, MemoryId};
use rusqlite::types::Value as SqlValue;
use rusqlite::{OptionalExtension, params_from_iter};

use crate::full_text::match_expression;
use crate::rows::{MEMORY_COLUMNS, memory_from_row};
use crate::{Store, StoreError};

/// The most results one page may hold.
pub const MAX_LIMIT: usize = 100;
/// The deepest offset a page may start at.
pub const MAX_OFFSET: usize = 10_000;

/// Conditions a memory must meet, all of them, to be returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryFilter {
    /// Exactly this category.
    pub category: Option<String>,
    /// Exactly this user.
    pub user_id: Option<String>,
    /// Exactly this project.
    pub project: Option<String>,
    /// Every one of these tags.
    pub tags: Vec<String>,
    /// Written on this machine.
    pub machine_id: Option<String>,
    /// Created at or after, epoch milliseconds.
    pub since_ms: Option<i64>,
    /// Created before, epoch milliseconds.
    pub until_ms: Option<i64>,
}

impl MemoryFilter {
    /// Whether the filter lets everything through.
    pub fn is_empty(&self) -> bool {
        *self == MemoryFilter::default()
    }

    pub(crate) fn check(&self, store: &Store) -> Result<(), InvalidInput> {
        if let Some(category) = &self.category {
            store.rules().check_category(category)?;
        }
        if let (Some(since), Some(until)) = (self.since_ms, self.until_ms)
            && since > until
        {
            return Err(InvalidInput::new("since", "must not be after until"));
        }
        Ok(())
    }

    /// SQL conditions over the `memories` table aliased `m`, each starting with ` AND`, and
    /// their parameters in order.
    pub(crate) fn to_sql(&self, sql: &mut String, params: &mut Vec<SqlValue>) {
        let mut push = |condition: &str, value: SqlValue| {
            sql.push_str(condition);
            params.push(value);
        };
        if let Some(category) = &self.category {
            push(" AND m.category = ?", SqlValue::Text(category.clone()));
        }
        if let Some(user) = &self.user_id {
            push(" AND m.user_id = ?", SqlValue::Text(user.clone()));
        }
        if let Some(project) = &self.project {
            push(" AND m.project = ?", SqlValue::Text(project.clone()));
        }
        if let Some(machine) = &self.machine_id {
            push(" AND m.machine_id = ?", SqlValue::Text(machine.clone()));
        }
        if let Some(since) = self.since_ms {
            push(" AND m.created_at >= ?", SqlValue::Integer(since));
        }
        if let Some(until) = self.until_ms {
            push(" AND m.created_at < ?", SqlValue::Integer(until));
        }
        for tag in &self.tags {
            push(
                " AND EXISTS (SELECT 1 FROM memory_tags t WHERE t.memory_rowid = m.rowid AND t.tag = ?)",
                SqlValue::Text(tag.clone()),
            );
        }
    }
}

/// How a search was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchMode {
    /// BM25 over the full-text index only.
    FullText,
    /// Full-text and vector rankings fused.
    Hybrid,
}

impl SearchMode {
    /// The name reported to callers.
    pub fn as_str(self) -> &'static str {
        match self {
            SearchMode::FullText => "full_text",
            SearchMode::Hybrid => "hybrid",
        }
    }
}

/// A search request.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// The person's words.
    pub text: String,
    /// Conditions every hit meets.
    pub filter: MemoryFilter,
    /// Page size, 1 to [`MAX_LIMIT`].
    pub limit: usize,
    /// Hits to skip, up to [`MAX_OFFSET`].
    pub offset: usize,
    /// Whether to rank by meaning too (hybrid), when a model is loaded.
    pub semantic: bool,
}

impl SearchQuery {
    /// A query for `text` with no filters, the first 10 hits, semantic when possible.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            filter: MemoryFilter::default(),
            limit: 10,
            offset: 0,
            semantic: true,
        }
    }
}

/// One search result.
#[derive(Debug, Clone)]
pub struct SearchHit {
    /// The memory found.
    pub memory: Memory,
    /// Its relevance; higher is better, comparable only within one result list.
    pub score: f64,
}

/// A page of search results.
#[derive(Debug, Clone)]
pub struct SearchResults {
    /// The hits, best first.
    pub hits: Vec<SearchHit>,
    /// How many memories match in all, across pages.
    pub total: usize,
    /// How the ranking was made.
    pub mode: SearchMode,
    /// Why the mode differs from what was asked, when it does.
    pub note: Option<String>,
}

/// A request for the newest memories.
#[derive(Debug, Clone)]
pub struct RecentQuery {
    /// Conditions every memory meets.
    pub filter: MemoryFilter,
    /// How far back to look, in hours.
    pub hours: u32,
    /// How many to return, 1 to [`MAX_LIMIT`].
    pub limit: usize,
}

pub(crate) fn check_page(limit: usize, offset: usize) -> Result<(), InvalidInput> {
    if limit == 0 || limit > MAX_LIMIT {
        return Err(InvalidInput::new(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    if offset > MAX_OFFSET {
        return Err(InvalidInput::new(
            "offset",
            format!("must be at most {MAX_OFFSET}"),
        ));
    }
    Ok(())
}

impl Store {
    /// The live memory with this id.
    pub fn get(&self, id: MemoryId) -> Result<Memory, StoreError> {
        match self.get_any(id)? {
            Some(memory) if memory.deletion.is_none() => Ok(memory),
            Some(_) => Err(StoreError::MemoryDeleted { id }),
            None if self.is_erased(id)? => Err(StoreError::Erased { id }),
            None => Err(StoreError::MemoryNotFound { id }),
        }
    }

    /// The memory with this id, live or soft-deleted.
    pub(crate) fn get_any(&self, id: MemoryId) -> Result<Option<Memory>, StoreError> {
        let reader = self.reader()?;
        let mut statement = reader.prepare_cached(&format!(
            "SELECT {MEMORY_COLUMNS} FROM memories m WHERE m.id = ?1"
        ))?;
        Ok(statement
            .query_row([id.to_string()], memory_from_row)
            .optional()?)
    }

    pub(crate) fn is_erased(&self, id: MemoryId) -> Result<bool, StoreError> {
        let reader = self.reader()?;
        let found: Option<i64> = reader
            .query_row(
                "SELECT 1 FROM tombstones WHERE record_kind = 'memory' AND record_id = ?1",
                [id.to_string()],
                |row| row.get(0),
            )
            .optional()?;
        Ok(found.is_some())
    }

    /// Searches live memories. Until an embedding model is loaded, every search is
    /// full-text and the result says so.
    pub fn search(&self, query: &SearchQuery) -> Result<SearchResults, StoreError> {
        check_page(query.limit, query.offset)?;
        query.filter.check(self)?;
        let expression = match_expression(&query.text)
            .ok_or_else(|| InvalidInput::new("query", "must contain at least one word"))?;
        let note = match (query.semantic, self.embedder.is_some()) {
            (true, false) => Some(
                "semantic search is unavailable: no embedding model is loaded, so results are full-text only"
                    .to_string(),
            ),
            _ => None,
        };
        let (hits, total) = self.full_text_page(&expression, query)?;
        Ok(SearchResults {
            hits,
            total,
            mode: SearchMode::FullText,
            note,
        })
    }

    fn full_text_page(
        &self,
        expression: &str,
        query: &SearchQuery,
    ) -> Result<(Vec<SearchHit>, usize), StoreError> {
        let mut conditions = String::new();
        let mut params = vec![SqlValue::Text(expression.to_string())];
        query.filter.to_sql(&mut conditions, &mut params);
        let from = format!(
            "FROM memories_fts JOIN memories m ON m.rowid = memories_fts.rowid
             WHERE memories_fts MATCH ? AND m.deleted_at IS NULL{conditions}"
        );
        let reader = self.reader()?;
        // Content counts most; context and tags help. bm25() is lower-is-better, so negate.
        let mut page_params = params.clone();
        page_params.push(SqlValue::Integer(query.limit as i64));
        page_params.push(SqlValue::Integer(query.offset as i64));
        let mut statement = reader.prepare_cached(&format!(
            "SELECT {MEMORY_COLUMNS}, -bm25(memories_fts, 1.0, 0.5, 0.75) AS score {from}
             ORDER BY score DESC LIMIT ? OFFSET ?"
        ))?;
        let hits = statement
            .query_map(params_from_iter(page_params), |row| {
                Ok(SearchHit {
                    memory: memory_from_row(row)?,
                    score: row.get(18)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let total = if hits.len() < query.limit && (query.offset == 0 || !hits.is_empty()) {
            query.offset + hits.len()
        } else {
            let mut count = reader.prepare_cached(&format!("SELECT count(*) {from}"))?;
            count.query_row(params_from_iter(params), |row| row.get::<_, i64>(0))? as usize
        };
        Ok((hits, total))
    }

    /// The newest live memories, newest first.
    pub fn recent(&self, query: &RecentQuery) -> Result<Vec<Memory>, StoreError> {
        check_page(query.limit, 0)?;
        query.filter.check(self)?;
        if query.hours == 0 {
            return Err(InvalidInput::new("hours", "must be at least 1").into());
        }
        let mut filter = query.filter.clone();
        let window_start =
            haivemind_core::time_format::now_ms() - i64::from(query.hours) * 3_600_000;
        filter.since_ms = Some(
            filter
                .since_ms
                .map_or(window_start, |s| s.max(window_start)),
        );
        self.list_where(
            "m.deleted_at IS NULL",
            &filter,
            query.limit,
            0,
            "m.created_at DESC, m.rowid DESC",
        )
    }

    /// Memories matching `condition` (SQL over alias `m`) and `filter`, in `order`.
    pub(crate) fn list_where(
        &self,
        condition: &str,
        filter: &MemoryFilter,
        limit: usize,
        offset: usize,
        order: &str,
    ) -> Result<Vec<Memory>, StoreError> {
        let mut sql = format!("SELECT {MEMORY_COLUMNS} FROM memories m WHERE {condition}");
        let mut params = Vec::new();
        filter.to_sql(&mut sql, &mut params);
        sql.push_str(&format!(" ORDER BY {order} LIMIT ? OFFSET ?"));
        params.push(SqlValue::Integer(limit as i64));
        params.push(SqlValue::Integer(offset as i64));
        let reader = self.reader()?;
        let mut statement = reader.prepare_cached(&sql)?;
        let memories = statement
            .query_map(params_from_iter(params), memory_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(memories)
    }

    /// How many memories match `condition` and `filter`.
    pub(crate) fn count_where(
        &self,
        condition: &str,
        filter: &MemoryFilter,
    ) -> Result<usize, StoreError> {
        let mut sql = format!("SELECT count(*) FROM memories m WHERE {condition}");
        let mut params = Vec::new();
        filter.to_sql(&mut sql, &mut params);
        let reader = self.reader()?;
        let mut statement = reader.prepare_cached(&sql)?;
        let count: i64 = statement.query_row(params_from_iter(params), |row| row.get(0))?;
        Ok(count as usize)
    }
}
