//! Full-text search on PostgreSQL: the same query words and the same tiers as on SQLite
//! (memories holding more of the words first), over the `search` tsvector column and its
//! GIN index.
//!
//! Each word reaches PostgreSQL only through `plainto_tsquery`, a parameter, never as
//! tsquery syntax. Within a tier, memories are scored BM25-like: each matched word adds its
//! inverse document frequency (counted as on SQLite, capped), and `ts_rank_cd` (which
//! rewards words close together and in the content rather than tags) breaks ties. Plain
//! `ts_rank` has no document frequency at all: a rare word would count no more than a
//! common one.

use crate::db::{Dialect, OptionalExtension, params_from_iter};
use crate::full_text::MAX_TIERED_WORDS;
use crate::rows::{MEMORY_COLUMNS, memory_from_row};
use crate::search::{COMMON_QUERY_CANDIDATES, MAX_COUNTED, MemoryFilter, QueryTerms, SearchHit};
use crate::{Store, StoreError};
use rusqlite::types::Value as SqlValue;

impl Store {
    /// [`Store::full_text_ranking`] on PostgreSQL.
    pub(crate) fn full_text_ranking_postgres(
        &self,
        terms: &QueryTerms,
        filter: &MemoryFilter,
        window: usize,
    ) -> Result<(Vec<SearchHit>, usize), StoreError> {
        debug_assert_eq!(self.dialect(), Dialect::Postgres);
        let plan = self.plan_terms(terms)?;
        let reader = self.reader()?;
        let kept = &plan.kept;
        let total = plan.documents.max(1) as f64;
        let position = |word: &String| kept.iter().position(|k| k == word).unwrap_or(0) + 1;
        let word = |i: usize| format!("plainto_tsquery('english', ?{i})");

        // Which memories are ranked at all, as on SQLite: those holding two or more of the
        // kept words (all of them, past the tiered word limit), or any selective one. A
        // common word alone admits nobody, so it cannot make the store's every row a
        // candidate to score.
        let mut admitting: Vec<String> = plan.selective.iter().map(|w| word(position(w))).collect();
        if kept.len() > MAX_TIERED_WORDS {
            admitting.push(format!(
                "({})",
                (1..=kept.len()).map(word).collect::<Vec<_>>().join(" && ")
            ));
        } else {
            for a in 1..=kept.len() {
                for b in a + 1..=kept.len() {
                    admitting.push(format!("({} && {})", word(a), word(b)));
                }
            }
        }
        let candidates = format!("({})", admitting.join(" || "));
        let any_word = format!(
            "({})",
            (1..=kept.len()).map(word).collect::<Vec<_>>().join(" || ")
        );

        // ?1..?k: the kept words; then their inverse document frequencies; then filters.
        let mut params: Vec<SqlValue> = kept.iter().map(|w| SqlValue::Text(w.clone())).collect();
        let mut matched = Vec::with_capacity(kept.len());
        let mut weighted = Vec::with_capacity(kept.len());
        for (i, kept_word) in kept.iter().enumerate() {
            let frequency = plan.frequency(kept_word) as f64;
            let idf = (1.0 + (total - frequency + 0.5) / (frequency + 0.5)).ln();
            params.push(SqlValue::Real(idf));
            let (word_param, idf_param) = (i + 1, kept.len() + i + 1);
            matched.push(format!(
                "(CASE WHEN m.search @@ {} THEN 1 ELSE 0 END)",
                word(word_param)
            ));
            weighted.push(format!(
                "(CASE WHEN m.search @@ {} THEN CAST(?{idf_param} AS float8) ELSE 0.0 END)",
                word(word_param)
            ));
        }
        // Only common words: rank the newest of their matches, as on SQLite.
        let mut newest_only = String::new();
        if plan.all_common {
            let floor: Option<i64> = reader
                .query_row(
                    &format!(
                        "SELECT rowid FROM memories m WHERE m.search @@ {candidates}
                         ORDER BY rowid DESC LIMIT 1 OFFSET {}",
                        COMMON_QUERY_CANDIDATES - 1
                    ),
                    params_from_iter(kept.iter().map(|w| SqlValue::Text(w.clone()))),
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(floor) = floor {
                newest_only = format!(" AND m.rowid >= {floor}");
            }
        }
        let mut conditions = String::new();
        filter.to_sql(&mut conditions, &mut params);
        let from = format!(
            "FROM memories m WHERE m.search @@ {candidates} AND m.deleted_at IS NULL{newest_only}{conditions}"
        );
        let mut ranked_params = params.clone();
        ranked_params.push(SqlValue::Integer(window as i64));
        let mut statement = reader.prepare(&format!(
            "SELECT {MEMORY_COLUMNS}, ranked.score FROM (
                 SELECT m.rowid AS hit, {matched} AS matched,
                        ({weighted} + ts_rank_cd(m.search, {any_word}))::float8 AS score
                 {from}
                 ORDER BY matched DESC, score DESC, m.rowid LIMIT ?
             ) AS ranked JOIN memories m ON m.rowid = ranked.hit
             ORDER BY ranked.matched DESC, ranked.score DESC, m.rowid",
            matched = matched.join(" + "),
            weighted = weighted.join(" + "),
        ))?;
        let hits = statement
            .query_map(params_from_iter(ranked_params), |row| {
                Ok(SearchHit {
                    memory: memory_from_row(row)?,
                    score: row.get(18)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        // The count names no weights: its parameters are the words, the filters, the cap.
        let mut count_params: Vec<SqlValue> =
            kept.iter().map(|w| SqlValue::Text(w.clone())).collect();
        count_params.extend(params.into_iter().skip(2 * kept.len()));
        count_params.push(SqlValue::Integer(MAX_COUNTED as i64 + 1));
        let counted: i64 = reader.query_row(
            &format!("SELECT count(*) FROM (SELECT 1 {from} LIMIT ?) AS hits"),
            params_from_iter(count_params),
            |row| row.get(0),
        )?;
        Ok((hits, counted.max(0) as usize))
    }
}
