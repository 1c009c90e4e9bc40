//! Full-text ranking on SQLite: which words of a query take part (`TermPlan`), and the
//! ranking itself, in one statement for a small filter (`one_pass_ranking`) or in tiers
//! (`tiered_ranking`), scored by `hv_bm25` (`ranking.rs`).

use crate::db::{OptionalExtension, params, params_from_iter};
use haivemind_core::memory::MAX_NAME_BYTES;
use rusqlite::types::Value as SqlValue;

use crate::full_text::{MAX_TIERED_WORDS, QueryTerms, all_of, any_of, at_least, but_not};
use crate::rows::{MEMORY_COLUMNS, memory_from_row};
use crate::search::{COMMON_QUERY_CANDIDATES, MAX_COUNTED, MemoryFilter, ONE_PASS_MAX, SearchHit};
use crate::{Store, StoreError};

/// The words of the full-text index's `facets` column (migration 8) that every memory
/// passing `filter` holds: its user's and its project's. Hex keeps any name one token, and
/// the trailing digit keeps the Porter stemmer from shortening it, so each matches the
/// column's SQL expression exactly. A name longer than any memory may carry matches
/// nothing and gets no word: the row test turns it away without the caller's bytes (twice
/// over, as hex) reaching FTS5.
fn facet_words(filter: &MemoryFilter) -> Vec<String> {
    let word = |prefix: char, name: &str| {
        let mut word = String::with_capacity(2 + 2 * name.len());
        word.push(prefix);
        for byte in name.bytes() {
            word.push_str(&format!("{byte:02x}"));
        }
        word.push('0');
        word
    };
    [('u', &filter.user_id), ('p', &filter.project)]
        .into_iter()
        .filter_map(|(prefix, name)| {
            let name = name.as_deref()?;
            (name.len() <= MAX_NAME_BYTES).then(|| word(prefix, name))
        })
        .collect()
}

/// `expression` narrowed to memories holding the filter's facet words. FTS5 then walks the
/// filter's own lists beside the words' instead of handing every match over to be tested
/// on its row; the row test stays, so this only saves time. The facet phrases come after
/// every word's, where `hv_bm25` does not score them.
fn with_facets(expression: &str, filter: &MemoryFilter) -> String {
    let facets = facet_words(filter);
    if facets.is_empty() {
        return expression.to_string();
    }
    let mut narrowed = format!("({expression})");
    for facet in facets {
        narrowed.push_str(&format!(" AND facets:\"{facet}\""));
    }
    narrowed
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

impl Store {
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
        // A query made only of common words says little and matches much of the store;
        // scoring all of it would take tens of milliseconds. Rank the newest matches only.
        let rowid_floor = if plan.all_common {
            self.recent_match_floor(&with_facets(&any_of(&kept), filter))?
        } else {
            None
        };
        if rowid_floor.is_none()
            && let Some(filtered) = self.small_filter(filter, plan.documents)?
        {
            return self.one_pass_ranking(&plan, filter, filtered, window);
        }
        let scoring = Scoring::new(&plan, rowid_floor);
        self.tiered_ranking(&plan, &scoring, filter, window)
    }

    /// About how many memories `filter` lets through, when it has facet words (a user, a
    /// project) and that is at most [`ONE_PASS_MAX`]: then ranking all of them that hold a
    /// query word costs less than running the tiers one statement after another. With both
    /// a user and a project, the smaller of the two counts.
    fn small_filter(
        &self,
        filter: &MemoryFilter,
        documents: usize,
    ) -> Result<Option<usize>, StoreError> {
        let reader = self.reader()?;
        let mut smallest: Option<usize> = None;
        for facet in &facet_words(filter) {
            let count = self.document_frequency(&reader, facet, ONE_PASS_MAX + 1, documents)?;
            smallest = Some(smallest.map_or(count, |s| s.min(count)));
        }
        Ok(smallest.filter(|&count| count <= ONE_PASS_MAX))
    }

    /// The tiers' ranking in one statement, scored by how common each word is among the
    /// `filtered` memories `filter` lets through rather than in the whole store: within one
    /// user's memories, a word every one of them holds (their host, a speaker's name) tells
    /// them apart no better than "the", however rare it is elsewhere (LoCoMo recall@10,
    /// held out, 0.698 -> 0.712; docs/BENCHMARKS.md).
    ///
    /// Every memory passing `filter` that holds a kept word is told its words' parts of the
    /// score (`hv_parts`); the words' frequencies are counted among those memories, and
    /// each is scored and ordered here as the tiers would order it (by how many words it
    /// holds, then by score; past [`MAX_TIERED_WORDS`], holding all of them or not). A
    /// memory the tiers would leave out (holding one common word only) is left out, and the
    /// count is exact. One difference, on purpose: past [`MAX_TIERED_WORDS`] the last tier's
    /// statement scores only the selective words, and this scores every kept word a memory
    /// holds (LoCoMo recall@10 0.596 against 0.594).
    fn one_pass_ranking(
        &self,
        plan: &TermPlan,
        filter: &MemoryFilter,
        filtered: usize,
        window: usize,
    ) -> Result<(Vec<SearchHit>, usize), StoreError> {
        let scoring = Scoring::new(plan, None);
        let kept: Vec<&str> = plan.kept.iter().map(String::as_str).collect();
        let expression = any_of(&kept);
        let (from, filter_params) = Self::full_text_from(&expression, filter, None);
        let mut params = vec![
            SqlValue::Text(scoring.frequencies.clone()),
            SqlValue::Text(scoring.phrase_words(&expression)?),
        ];
        params.extend(filter_params);
        let words = kept.len().min(63);
        let every_word: i64 = if words == 63 {
            i64::MAX
        } else {
            (1 << words) - 1
        };
        let selective: i64 = kept
            .iter()
            .take(63)
            .enumerate()
            .filter(|(_, w)| plan.selective.iter().any(|s| s == *w))
            .fold(0, |mask, (i, _)| mask | (1 << i));
        let tier_of = |held: i64| -> Option<u32> {
            let count = held.count_ones();
            let tiered = kept.len() <= MAX_TIERED_WORDS;
            let eligible = held & selective != 0 || (tiered && count >= 2) || held == every_word;
            match (eligible, tiered) {
                (false, _) => None,
                (true, true) => Some(count),
                (true, false) => Some(if held == every_word { 2 } else { 1 }),
            }
        };
        let reader = self.reader()?;
        let mut statement = reader.prepare_cached(&format!(
            "SELECT m.rowid, hv_parts(memories_fts, ?, ?) {from}"
        ))?;
        // Each eligible memory's tier, parts (one per kept word, side by side in `parts`)
        // and rowid; and how many memories hold each word.
        let mut eligible: Vec<(u32, usize, i64)> = Vec::new();
        let mut parts: Vec<f64> = Vec::new();
        let mut holding = vec![0usize; kept.len()];
        statement.for_each_row(params_from_iter(params), |row| {
            let start = parts.len();
            row.with_blob(1, |blob| match crate::ranking::parts_of(blob, kept.len()) {
                Some(row_parts) => {
                    parts.extend(row_parts);
                    Ok(())
                }
                None => Err(crate::db::DbError::conversion(
                    1,
                    "hv_parts gave a blob of the wrong length",
                )),
            })??;
            let mut held: i64 = 0;
            for (word, part) in parts[start..].iter().enumerate() {
                if *part > 0.0 {
                    holding[word] += 1;
                    if word < 63 {
                        held |= 1 << word;
                    }
                }
            }
            match tier_of(held) {
                Some(tier) => eligible.push((tier, start, row.get(0)?)),
                None => parts.truncate(start),
            }
            Ok(())
        })?;
        // The filter's size was counted before the rows were read: never let a word seem
        // to be held by more memories than there are.
        let filtered = holding.iter().copied().fold(filtered, usize::max) as f64;
        let idf: Vec<f64> = holding
            .iter()
            .map(|&n| crate::ranking::idf(filtered, n as f64))
            .collect();
        let mut ranked: Vec<(u32, f64, i64)> = eligible
            .into_iter()
            .map(|(tier, start, rowid)| {
                let score = parts[start..start + kept.len()]
                    .iter()
                    .zip(&idf)
                    .map(|(part, idf)| idf * part)
                    .sum();
                (tier, score, rowid)
            })
            .collect();
        let counted = ranked.len();
        let by_rank = |a: &(u32, f64, i64), b: &(u32, f64, i64)| {
            b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2))
        };
        if ranked.len() > window {
            ranked.select_nth_unstable_by(window, by_rank);
            ranked.truncate(window);
        }
        ranked.sort_unstable_by(by_rank);
        let mut read = reader.prepare_cached(&format!(
            "SELECT {MEMORY_COLUMNS} FROM memories m WHERE m.rowid = ?"
        ))?;
        let mut hits = Vec::with_capacity(ranked.len());
        for (_, score, rowid) in ranked {
            let memory = read.query_row(params![rowid], memory_from_row)?;
            hits.push(SearchHit { memory, score });
        }
        Ok((hits, counted))
    }

    /// The full-text ranking in tiers, each its own statement and each only while the page
    /// is not full: memories holding every kept word, then all but one, and so on.
    fn tiered_ranking(
        &self,
        plan: &TermPlan,
        scoring: &Scoring,
        filter: &MemoryFilter,
        window: usize,
    ) -> Result<(Vec<SearchHit>, usize), StoreError> {
        let kept: Vec<&str> = plan.kept.iter().map(String::as_str).collect();
        let selective: Vec<&str> = plan.selective.iter().map(String::as_str).collect();
        let mut ranked = self.rank_full_text(&all_of(&kept), scoring, filter, window)?;
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
                scoring,
                filter,
                window - ranked.len(),
            )?;
            ranked.extend(found);
            better = tier;
        }
        if ranked.len() < window && kept.len() > 1 {
            let last = but_not(&any_of(&selective), &better);
            let found = self.rank_full_text(&last, scoring, filter, window - ranked.len())?;
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
        let mut params = vec![SqlValue::Text(with_facets(expression, filter))];
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
}

#[cfg(test)]
mod tests {
    use super::{MemoryFilter, QueryTerms, Scoring, TermPlan};

    #[test]
    fn one_pass_ranks_and_counts_exactly_as_the_tiers_do() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(crate::StoreOptions::new(dir.path().join("s.sqlite3"), "m"))
            .unwrap();
        let vocabulary = [
            "disk", "heap", "proxy", "nginx", "cert", "expired", "rotate", "backup", "latency",
            "kafka", "lag", "deploy",
        ];
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        for _ in 0..300 {
            // Skewed towards the first words, so that some are common and some rare; some
            // memories repeat a word, so scores differ within a tier.
            let words: Vec<&str> = (0..1 + next() % 6)
                .map(|_| vocabulary[(next() % vocabulary.len()).min(next() % vocabulary.len())])
                .collect();
            // One user's memories only: the one-pass ranking counts the words' frequencies
            // among the filter's memories, the tiers in the whole store, and here the two
            // are the same.
            let mut memory = haivemind_core::NewMemory::new(words.join(" "));
            memory.user_id = "bob".into();
            store.create(memory).unwrap();
        }
        let filter = MemoryFilter {
            user_id: Some("bob".into()),
            ..Default::default()
        };
        let reader = store.reader().unwrap();
        let queries = [
            "deploy",
            "disk heap",
            "disk heap proxy nginx",
            "heap lag deploy unknownword",
            "cert expired rotate backup latency kafka lag",
            "disk heap proxy nginx cert expired rotate",
        ];
        let mut compared = 0;
        for query in queries {
            let terms = QueryTerms::parse(query).unwrap();
            let frequencies: Vec<(String, usize)> = terms
                .words
                .iter()
                .map(|w| {
                    let df = store
                        .document_frequency(&reader, w, 1_000_000, 300)
                        .unwrap();
                    (w.clone(), df)
                })
                .collect();
            // Thresholds from none common to most words common.
            for (ubiquitous, common) in [(1_000, 500), (150, 40), (60, 20), (40, 5)] {
                let plan = TermPlan::new(&frequencies, ubiquitous, common);
                let scoring = Scoring::new(&plan, None);
                for window in [3, 10, 1_000] {
                    let (tiered, tiered_count) = store
                        .tiered_ranking(&plan, &scoring, &filter, window)
                        .unwrap();
                    let (one_pass, one_pass_count) =
                        store.one_pass_ranking(&plan, &filter, 300, window).unwrap();
                    let summary = |hits: &[crate::SearchHit]| -> Vec<(String, String)> {
                        hits.iter()
                            .map(|h| (h.memory.id.to_string(), format!("{:.9}", h.score)))
                            .collect()
                    };
                    let context = format!("{query} {ubiquitous}/{common} window {window}");
                    if plan.kept.len() <= super::MAX_TIERED_WORDS {
                        assert_eq!(summary(&one_pass), summary(&tiered), "{context}");
                    } else if window == 1_000 {
                        // Past the tiered words, the last tier is scored on every word a
                        // memory holds rather than the selective ones only: the same
                        // memories, in the same tiers, ordered within the last one better.
                        let holds_all = |hits: &[crate::SearchHit]| -> Vec<String> {
                            hits.iter()
                                .take_while(|h| {
                                    plan.kept
                                        .iter()
                                        .all(|w| h.memory.content.contains(w.as_str()))
                                })
                                .map(|h| h.memory.id.to_string())
                                .collect()
                        };
                        assert_eq!(holds_all(&one_pass), holds_all(&tiered), "{context}");
                        let mut one_pass_ids = summary(&one_pass);
                        let mut tiered_ids = summary(&tiered);
                        one_pass_ids.iter_mut().for_each(|h| h.1.clear());
                        tiered_ids.iter_mut().for_each(|h| h.1.clear());
                        one_pass_ids.sort();
                        tiered_ids.sort();
                        assert_eq!(one_pass_ids, tiered_ids, "{context}");
                    }
                    assert_eq!(one_pass_count, tiered_count, "{context}");
                    assert!(one_pass.iter().all(|h| h.memory.user_id == "bob"));
                    compared += usize::from(!tiered.is_empty());
                }
            }
        }
        assert!(
            compared > 50,
            "too few non-empty rankings compared: {compared}"
        );
    }

    #[test]
    fn within_a_users_memories_a_word_they_all_hold_counts_for_little() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(crate::StoreOptions::new(dir.path().join("s.sqlite3"), "m"))
            .unwrap();
        let create = |content: &str, user: &str| {
            let mut memory = haivemind_core::NewMemory::new(content);
            memory.user_id = user.into();
            store.create(memory).unwrap().id
        };
        // bob's host is in nearly all his memories and nobody else's; kafka is in nearly
        // all of ann's and one of bob's.
        for n in 0..20 {
            create(&format!("web1 routine check {n}"), "bob");
        }
        let host_twice = create("web1 web1 restarted", "bob");
        let kafka = create("kafka lag grew overnight", "bob");
        for n in 0..200 {
            create(&format!("kafka partition note {n}"), "ann");
        }
        let terms = QueryTerms::parse("web1 kafka").unwrap();
        let bobs = MemoryFilter {
            user_id: Some("bob".into()),
            ..Default::default()
        };
        let (within, count) = store.full_text_ranking(&terms, &bobs, 5).unwrap();
        assert_eq!(count, 22, "every memory of bob's holds one of the words");
        assert_eq!(
            within[0].memory.id, kafka,
            "kafka is rare among bob's memories"
        );
        assert!(within.iter().all(|h| h.memory.user_id == "bob"));
        // Over the whole store (the tiers, no filter), kafka is the common word and the
        // host the rare one.
        let (everywhere, _) = store
            .full_text_ranking(&terms, &MemoryFilter::default(), 5)
            .unwrap();
        assert_eq!(everywhere[0].memory.id, host_twice);
    }

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
