//! Reading memories back: full-text search with filters, recent memories, single lookups.
//!
//! Filters are part of the SQL, never applied after a `LIMIT`, so a page is full whenever
//! enough memories match.

use crate::db::params_from_iter;
use haivemind_core::{InvalidInput, Memory, MemoryId};
use rusqlite::types::Value as SqlValue;

pub(crate) use crate::full_text::QueryTerms;
use crate::rows::{MEMORY_COLUMNS, memory_from_row};
use crate::{Store, StoreError};

/// The most results one page may hold.
pub const MAX_LIMIT: usize = 100;
/// The deepest offset a page may start at.
pub const MAX_OFFSET: usize = 10_000;
/// When every word of a query is common, only this many of the newest matching memories
/// are ranked.
pub const COMMON_QUERY_CANDIDATES: usize = 5_000;
/// A filter on a user or project letting at most this many memories through is ranked in
/// one statement (`one_pass_ranking`): scoring that many costs a few milliseconds at most.
pub const ONE_PASS_MAX: usize = 20_000;
/// Matches are counted exactly up to this many; past it `total` is this number and
/// `total_exact` is false. Counting every match of a common word costs more than the search.
pub const MAX_COUNTED: usize = 1_000;

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
    /// Written by this agent.
    pub agent_id: Option<String>,
    /// Created at or after, epoch milliseconds.
    pub since_ms: Option<i64>,
    /// Created before, epoch milliseconds.
    pub until_ms: Option<i64>,
    /// Leave out confidential and pii memories (what a `readonly` caller may not see).
    pub hide_restricted: bool,
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
        if let Some(agent) = &self.agent_id {
            push(" AND m.agent_id = ?", SqlValue::Text(agent.clone()));
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
        if self.hide_restricted {
            sql.push_str(" AND m.confidentiality NOT IN ('confidential', 'pii')");
        }
    }
}

/// Which memories to read: an SQL condition over alias `m` with its parameters, a filter,
/// an order and a page. Read through a reader, or inside a write transaction so that what
/// is changed is exactly what was read.
pub(crate) struct Selection<'a> {
    pub(crate) condition: &'static str,
    pub(crate) params: Vec<SqlValue>,
    pub(crate) filter: &'a MemoryFilter,
    pub(crate) order: &'static str,
    pub(crate) limit: usize,
    pub(crate) offset: usize,
}

impl<'a> Selection<'a> {
    pub(crate) fn new(condition: &'static str, filter: &'a MemoryFilter) -> Self {
        Self {
            condition,
            params: Vec::new(),
            filter,
            order: "m.rowid",
            limit: 500,
            offset: 0,
        }
    }

    pub(crate) fn read(
        &self,
        connection: &crate::db::Connection<'_>,
    ) -> Result<Vec<Memory>, StoreError> {
        let mut sql = format!(
            "SELECT {MEMORY_COLUMNS} FROM memories m WHERE {}",
            self.condition
        );
        let mut params = self.params.clone();
        self.filter.to_sql(&mut sql, &mut params);
        sql.push_str(&format!(" ORDER BY {} LIMIT ? OFFSET ?", self.order));
        params.push(SqlValue::Integer(self.limit as i64));
        params.push(SqlValue::Integer(self.offset as i64));
        let mut statement = connection.prepare_cached(&sql)?;
        let memories = statement
            .query_map(params_from_iter(params), memory_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(memories)
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
    /// How many memories match in all, across pages, counted up to [`MAX_COUNTED`].
    pub total: usize,
    /// Whether `total` is exact; false when more than [`MAX_COUNTED`] match.
    pub total_exact: bool,
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
        let reader = self.reader()?;
        match crate::rows::memory_by_id(&reader, id)? {
            Some(memory) if memory.deletion.is_none() => Ok(memory),
            Some(_) => Err(StoreError::MemoryDeleted { id }),
            None => Err(crate::rows::absence(&reader, id)?),
        }
    }

    /// Searches live memories. Until an embedding model is loaded, every search is
    /// full-text and the result says so.
    ///
    /// Ranking comes in tiers, each by BM25 (`hv_bm25`, see `ranking.rs`): memories holding
    /// every word of the query, then all words but one, and so on (for up to six words;
    /// past that, straight to the last tier), and last memories holding a single word. A
    /// tier runs only while the page is not full. Before that, each word's document
    /// frequency decides its part (`TermPlan`): a word in more than an eighth of all
    /// memories (and in more than 1,000) is dropped when other words remain, and a word in
    /// more than one in fifty cannot alone admit a memory to the last tier. When every
    /// word is that common, only the 5,000 newest matching memories are ranked. Scoring
    /// costs time per matching memory, and common words add little to BM25, so a query
    /// with a common word does not score most of the store. A filter on a user or project
    /// of at most [`ONE_PASS_MAX`] memories is ranked in the same order in one statement
    /// over its memories alone (see `full_text_ranking.rs`).
    pub fn search(&self, query: &SearchQuery) -> Result<SearchResults, StoreError> {
        check_page(query.limit, query.offset)?;
        query.filter.check(self)?;
        let terms = QueryTerms::parse(&query.text)
            .ok_or_else(|| InvalidInput::new("query", "must contain at least one word"))?;
        let window = query.offset + query.limit;
        if query.semantic && self.vectors.is_some() {
            return self.hybrid_search(query, &terms, window);
        }
        let note = (query.semantic && self.embedder.is_none()).then(|| {
            "semantic search is unavailable: no embedding model is loaded, so results are full-text only"
                .to_string()
        });
        let (ranked, counted) = self.full_text_ranking(&terms, &query.filter, window)?;
        Ok(SearchResults {
            hits: ranked.into_iter().skip(query.offset).collect(),
            total: counted.min(MAX_COUNTED),
            total_exact: counted <= MAX_COUNTED,
            mode: SearchMode::FullText,
            note,
        })
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
        self.list_where(&Selection {
            order: "m.created_at DESC, m.rowid DESC",
            limit: query.limit,
            ..Selection::new("m.deleted_at IS NULL", &filter)
        })
    }

    /// Memories matching `selection`, read through a pooled reader.
    pub(crate) fn list_where(&self, selection: &Selection<'_>) -> Result<Vec<Memory>, StoreError> {
        let reader = self.reader()?;
        selection.read(&reader)
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
