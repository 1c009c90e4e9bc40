//! Reading memories back: full-text search with filters, recent memories, single lookups.
//!
//! Filters are part of the SQL, never applied after a `LIMIT`, so a page is full whenever
//! enough memories match.

use crate::db::{OptionalExtension, params, params_from_iter};
use haivemind_core::{InvalidInput, Memory, MemoryId};
use rusqlite::types::Value as SqlValue;

pub(crate) use crate::full_text::QueryTerms;
use crate::full_text::{MAX_TIERED_WORDS, all_of, any_of, at_least, but_not};
use crate::rows::{MEMORY_COLUMNS, memory_from_row};
use crate::{Store, StoreError};

/// The most results one page may hold.
pub const MAX_LIMIT: usize = 100;
/// The deepest offset a page may start at.
pub const MAX_OFFSET: usize = 10_000;
/// When every word of a query is common, only this many of the newest matching memories
/// are ranked.
pub const COMMON_QUERY_CANDIDATES: usize = 5_000;
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

/// The arguments of `hv_bm25` for one query: each kept word's document frequency, and
/// which word each phrase of an expression is.
struct Scoring {
    words: Vec<String>,
    frequencies: String,
    /// When set, only memories with a rowid at least this large are ranked.
    rowid_floor: Option<i64>,
}

impl Scoring {
    fn new(plan: &TermPlan, rowid_floor: Option<i64>) -> Self {
        let frequencies = plan
            .kept
            .iter()
            .map(|w| plan.frequency(w).to_string())
            .collect::<Vec<_>>()
            .join(" ");
        Self {
            words: plan.kept.clone(),
            frequencies,
            rowid_floor,
        }
    }

    /// For each quoted word of `expression`, in order, its index among the kept words.
    fn phrase_words(&self, expression: &str) -> Result<String, StoreError> {
        let mut indices = Vec::new();
        for word in expression.split('"').skip(1).step_by(2) {
            let index =
                self.words
                    .iter()
                    .position(|w| w == word)
                    .ok_or_else(|| StoreError::Corrupt {
                        record: "search plan".into(),
                        detail: format!(
                            "expression word \"{word}\" is not among the query's words"
                        ),
                    })?;
            indices.push(index.to_string());
        }
        Ok(indices.join(" "))
    }
}

/// Which words of a query take part in which ranking tier.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TermPlan {
    /// Words a first-tier memory must all hold: every word but the ubiquitous ones, and but
    /// the ones no memory holds.
    pub(crate) kept: Vec<String>,
    /// Words of which a second-tier memory must hold at least one: the kept words that are
    /// not common, or all kept words when every one is common.
    pub(crate) selective: Vec<String>,
    /// Every word's document frequency, as counted (capped for ubiquitous words).
    frequencies: Vec<(String, usize)>,
    /// Whether every kept word is common, so that even the first tier may be large.
    pub(crate) all_common: bool,
    /// About how many memories the store holds (its largest rowid), as the plan saw it.
    pub(crate) documents: usize,
}

impl TermPlan {
    pub(crate) fn new(frequencies: &[(String, usize)], ubiquitous: usize, common: usize) -> Self {
        let words_where = |keep: &dyn Fn(usize) -> bool| -> Vec<String> {
            frequencies
                .iter()
                .filter(|(_, df)| keep(*df))
                .map(|(w, _)| w.clone())
                .collect()
        };
        let mut kept = words_where(&|df| df > 0 && df <= ubiquitous);
        if kept.is_empty() {
            kept = words_where(&|df| df > 0);
        }
        if kept.is_empty() {
            kept = frequencies.iter().map(|(w, _)| w.clone()).collect();
        }
        let mut selective: Vec<String> = frequencies
            .iter()
            .filter(|(w, df)| *df <= common && kept.contains(w))
            .map(|(w, _)| w.clone())
            .collect();
        let all_common = selective.is_empty();
        if all_common {
            selective = kept.clone();
        }
        Self {
            kept,
            selective,
            frequencies: frequencies.to_vec(),
            all_common,
            documents: 0,
        }
    }

    pub(crate) fn frequency(&self, word: &str) -> usize {
        self.frequencies
            .iter()
            .find(|(w, _)| w == word)
            .map_or(0, |(_, df)| *df)
    }
}

/// A bounded cache of document frequencies, forgotten as the store grows.
#[derive(Default)]
pub(crate) struct TermFrequencyCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, (usize, usize)>>,
}

impl TermFrequencyCache {
    const CAPACITY: usize = 10_000;

    /// Only words at least this frequent are cached: counting a rare word is cheap, and a
    /// rare word's count changes most, relative to itself, as memories arrive.
    const MIN_CACHED: usize = 100;

    pub(crate) fn get(&self, word: &str, documents: usize) -> Option<usize> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (frequency, seen_at) = *entries.get(word)?;
        // Each memory added since can change the count by one at most: trust the cached
        // count while that bound stays within a tenth of it.
        (seen_at.abs_diff(documents) * 10 <= frequency).then_some(frequency)
    }

    pub(crate) fn put(&self, word: &str, frequency: usize, documents: usize) {
        if frequency < Self::MIN_CACHED {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= Self::CAPACITY {
            entries.clear();
        }
        entries.insert(word.to_string(), (frequency, documents));
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
    /// with a common word does not score most of the store.
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

    /// The best `window` memories by full-text rank, best first, and how many match in all
    /// (counted up to one past [`MAX_COUNTED`]).
    pub(crate) fn full_text_ranking(
        &self,
        terms: &QueryTerms,
        filter: &MemoryFilter,
        window: usize,
    ) -> Result<(Vec<SearchHit>, usize), StoreError> {
        if self.dialect() == crate::db::Dialect::Postgres {
            return self.full_text_ranking_postgres(terms, filter, window);
        }
        let plan = self.plan_terms(terms)?;
        let kept: Vec<&str> = plan.kept.iter().map(String::as_str).collect();
        let selective: Vec<&str> = plan.selective.iter().map(String::as_str).collect();
        // A query made only of common words says little and matches much of the store;
        // scoring all of it would take tens of milliseconds. Rank the newest matches only.
        let rowid_floor = if plan.all_common {
            self.recent_match_floor(&any_of(&kept))?
        } else {
            None
        };
        let scoring = Scoring::new(&plan, rowid_floor);
        let mut ranked = self.rank_full_text(&all_of(&kept), &scoring, filter, window)?;
        // Then memories holding fewer and fewer of the words, each tier only while the page
        // is not full: most queries never reach the costly last tier of single words.
        let mut better = all_of(&kept);
        let middle_tiers = if kept.len() <= MAX_TIERED_WORDS {
            kept.len() - 1
        } else {
            1
        };
        for k in (2..=middle_tiers).rev() {
            if ranked.len() >= window {
                break;
            }
            let tier = at_least(k, &kept);
            let found = self.rank_full_text(
                &but_not(&tier, &better),
                &scoring,
                filter,
                window - ranked.len(),
            )?;
            ranked.extend(found);
            better = tier;
        }
        if ranked.len() < window && kept.len() > 1 {
            let last = but_not(&any_of(&selective), &better);
            let found = self.rank_full_text(&last, &scoring, filter, window - ranked.len())?;
            ranked.extend(found);
        }
        // Count what the tiers can return: memories holding two or more of the kept words
        // (all of them, past the tiered word limit), or any selective word.
        let countable = match kept.len() {
            1 => any_of(&kept),
            n if n <= MAX_TIERED_WORDS => {
                format!("({}) OR ({})", at_least(2, &kept), any_of(&selective))
            }
            _ => format!("({}) OR ({})", all_of(&kept), any_of(&selective)),
        };
        let counted = self.count_full_text(&countable, filter)?;
        Ok((ranked, counted))
    }

    /// Decides which words take part in which tier, from their document frequencies.
    pub(crate) fn plan_terms(&self, terms: &QueryTerms) -> Result<TermPlan, StoreError> {
        let reader = self.reader()?;
        // The largest rowid approximates the number of memories in O(1); thresholds need
        // no more precision than that.
        let documents: i64 = reader.query_row(
            "SELECT coalesce(max(rowid), 0) FROM memories",
            params![],
            |row| row.get(0),
        )?;
        let documents = documents.max(0) as usize;
        let ubiquitous = (documents / 8).max(1_000);
        let common = (documents / 50).max(500);
        let mut frequencies = Vec::with_capacity(terms.words.len());
        for word in &terms.words {
            frequencies.push((
                word.clone(),
                self.document_frequency(&reader, word, ubiquitous + 1, documents)?,
            ));
        }
        Ok(TermPlan {
            documents,
            ..TermPlan::new(&frequencies, ubiquitous, common)
        })
    }

    /// How many memories hold `word`, counted no further than `cap`. Cached, since the
    /// words people search for repeat, and common words are the costly ones to count.
    fn document_frequency(
        &self,
        reader: &crate::db::Connection<'_>,
        word: &str,
        cap: usize,
        documents: usize,
    ) -> Result<usize, StoreError> {
        if let Some(known) = self.term_frequencies.get(word, documents) {
            return Ok(known);
        }
        // The word reaches each index only as a parameter: quoted as one FTS5 phrase, or
        // through plainto_tsquery.
        let (sql, bound) = match reader.dialect() {
            crate::db::Dialect::Sqlite => (
                "SELECT count(*) FROM (SELECT 1 FROM memories_fts WHERE memories_fts MATCH ?1 LIMIT ?2)",
                format!("\"{word}\""),
            ),
            crate::db::Dialect::Postgres => (
                "SELECT count(*) FROM (SELECT 1 FROM memories
                     WHERE search @@ plainto_tsquery('english', ?1) LIMIT ?2) AS hits",
                word.to_string(),
            ),
        };
        let mut statement = reader.prepare_cached(sql)?;
        let frequency: i64 = statement.query_row(
            params_from_iter([SqlValue::Text(bound), SqlValue::Integer(cap as i64)]),
            |row| row.get(0),
        )?;
        let frequency = frequency.max(0) as usize;
        self.term_frequencies.put(word, frequency, documents);
        Ok(frequency)
    }

    fn full_text_from(
        expression: &str,
        filter: &MemoryFilter,
        rowid_floor: Option<i64>,
    ) -> (String, Vec<SqlValue>) {
        let mut conditions = String::new();
        let mut params = vec![SqlValue::Text(expression.to_string())];
        if let Some(floor) = rowid_floor {
            conditions.push_str(" AND memories_fts.rowid >= ?");
            params.push(SqlValue::Integer(floor));
        }
        filter.to_sql(&mut conditions, &mut params);
        (
            format!(
                // CROSS JOIN keeps the full-text index as the outer loop: with a filter on an
                // indexed column the planner would otherwise scan, say, every memory of a
                // user and test each against the index.
                "FROM memories_fts CROSS JOIN memories m ON m.rowid = memories_fts.rowid
                 WHERE memories_fts MATCH ? AND m.deleted_at IS NULL{conditions}"
            ),
            params,
        )
    }

    /// The best `limit` live memories matching `expression` and `filter`, best first.
    fn rank_full_text(
        &self,
        expression: &str,
        scoring: &Scoring,
        filter: &MemoryFilter,
        limit: usize,
    ) -> Result<Vec<SearchHit>, StoreError> {
        let (from, filter_params) = Self::full_text_from(expression, filter, scoring.rowid_floor);
        let mut params = vec![
            SqlValue::Text(scoring.frequencies.clone()),
            SqlValue::Text(scoring.phrase_words(expression)?),
        ];
        params.extend(filter_params);
        params.push(SqlValue::Integer(limit as i64));
        let reader = self.reader()?;
        // BM25 with the document frequencies the plan already counted (see ranking.rs);
        // content counts most, context and tags help. Only (rowid, score) pairs are
        // sorted; whole rows are read for the winners alone.
        let mut statement = reader.prepare_cached(&format!(
            "SELECT {MEMORY_COLUMNS}, ranked.score FROM (
                 SELECT m.rowid AS hit, hv_bm25(memories_fts, ?, ?) AS score {from}
                 ORDER BY score DESC, m.rowid LIMIT ?
             ) AS ranked JOIN memories m ON m.rowid = ranked.hit
             ORDER BY ranked.score DESC, m.rowid"
        ))?;
        let hits = statement
            .query_map(params_from_iter(params), |row| {
                Ok(SearchHit {
                    memory: memory_from_row(row)?,
                    score: row.get(18)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(hits)
    }

    /// The rowid of the [`COMMON_QUERY_CANDIDATES`]th newest memory matching `expression`, or
    /// `None` when fewer match.
    fn recent_match_floor(&self, expression: &str) -> Result<Option<i64>, StoreError> {
        let reader = self.reader()?;
        let mut statement = reader.prepare_cached(
            "SELECT rowid FROM memories_fts WHERE memories_fts MATCH ?1 ORDER BY rowid DESC LIMIT 1 OFFSET ?2",
        )?;
        Ok(statement
            .query_row(
                params_from_iter([
                    SqlValue::Text(expression.to_string()),
                    SqlValue::Integer(COMMON_QUERY_CANDIDATES as i64 - 1),
                ]),
                |row| row.get(0),
            )
            .optional()?)
    }

    /// How many live memories match, counting no further than one past [`MAX_COUNTED`].
    fn count_full_text(
        &self,
        expression: &str,
        filter: &MemoryFilter,
    ) -> Result<usize, StoreError> {
        let (from, mut params) = Self::full_text_from(expression, filter, None);
        params.push(SqlValue::Integer(MAX_COUNTED as i64 + 1));
        let reader = self.reader()?;
        let mut statement =
            reader.prepare_cached(&format!("SELECT count(*) FROM (SELECT 1 {from} LIMIT ?)"))?;
        let count: i64 = statement.query_row(params_from_iter(params), |row| row.get(0))?;
        Ok(count as usize)
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

#[cfg(test)]
mod tests {
    use super::TermPlan;

    fn plan(frequencies: &[(&str, usize)]) -> TermPlan {
        let frequencies: Vec<(String, usize)> = frequencies
            .iter()
            .map(|(w, df)| (w.to_string(), *df))
            .collect();
        TermPlan::new(&frequencies, 250, 20)
    }

    #[test]
    fn ubiquitous_and_absent_words_are_dropped_while_others_remain() {
        let p = plan(&[("the", 900), ("heap", 5), ("typo", 0), ("elastic3", 3)]);
        assert_eq!(p.kept, ["heap", "elastic3"]);
        assert_eq!(p.selective, ["heap", "elastic3"]);
    }

    #[test]
    fn common_words_must_co_occur_with_a_selective_one() {
        let p = plan(&[("nginx", 100), ("proxy2", 4)]);
        assert_eq!(p.kept, ["nginx", "proxy2"]);
        assert_eq!(p.selective, ["proxy2"]);
    }

    #[test]
    fn a_query_of_only_common_or_only_ubiquitous_words_keeps_them_all() {
        let p = plan(&[("nginx", 100), ("proxy", 90)]);
        assert_eq!(p.selective, ["nginx", "proxy"]);
        assert!(p.all_common);
        assert!(!plan(&[("nginx", 100), ("proxy2", 4)]).all_common);
        let p = plan(&[("a", 900), ("b", 800)]);
        assert_eq!(p.kept, ["a", "b"]);
        let p = plan(&[("zz", 0)]);
        assert_eq!(p.kept, ["zz"]);
    }
}
