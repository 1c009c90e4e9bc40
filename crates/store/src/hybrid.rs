//! Hybrid search: the full-text ranking and the vector ranking of one query, each taken
//! to a fixed depth under the same filters, fused by weighted reciprocal rank.
//!
//! Filters are applied inside each ranking, before its cut-off: the vector scan applies
//! every filter but tags as it scans, the database checks each candidate again (and tags),
//! and when tags leave too few the memories carrying them are ranked directly instead. So
//! a filter never starves the page, in either ranking.

use std::collections::HashMap;

use crate::db::{Connection, OptionalExtension, params_from_iter};
use haivemind_core::MemoryId;
use rusqlite::types::Value as SqlValue;

use crate::rows::{memory_by_id, parse_memory_id};
use crate::search::{MAX_COUNTED, QueryTerms, SearchHit, SearchMode, SearchQuery, SearchResults};
use crate::vectors::{self, VectorIndex};
use crate::{MemoryFilter, Store, StoreError};

/// How the two rankings' results are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FusionMethod {
    /// Weighted reciprocal rank: a memory at rank `r` (from 1) of a ranking earns
    /// `weight / (rank_constant + r)` from it.
    ReciprocalRank,
    /// Weighted sum of scores: the full-text score divided by the best full-text score of
    /// the query, and the cosine similarity, which every candidate gets from its vector.
    Convex,
}

/// How hybrid search fuses its two rankings; memories are ordered by the sum of what they
/// earn from each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fusion {
    /// How scores are combined.
    pub method: FusionMethod,
    /// The weight of the full-text ranking.
    pub full_text_weight: f64,
    /// The weight of the vector ranking.
    pub vector_weight: f64,
    /// The rank offset `k`: larger values flatten the difference between top ranks.
    pub rank_constant: f64,
    /// How deep each ranking goes before fusion (at least the requested page's end).
    pub depth: usize,
    /// The vector ranking keeps only memories at least this similar (cosine) to the query.
    pub min_similarity: f32,
    /// What the memories written just before and just after one of the
    /// [`NEIGHBOURS_OF_BEST`] best-fused memories, by the same user, earn from it: this
    /// times its fused score. 0 turns neighbours off.
    pub neighbour_weight: f64,
}

/// How many of the best-fused memories lend to their neighbours.
pub const NEIGHBOURS_OF_BEST: usize = 10;

impl Default for Fusion {
    fn default() -> Self {
        Self {
            method: FusionMethod::ReciprocalRank,
            full_text_weight: 1.0,
            vector_weight: 0.7,
            rank_constant: 2.0,
            depth: 50,
            min_similarity: haivemind_core::config::DEFAULT_MIN_SIMILARITY as f32,
            neighbour_weight: haivemind_core::config::DEFAULT_NEIGHBOUR_WEIGHT,
        }
    }
}

/// How many candidates the quantised scan proposes per wanted result: enough that exact
/// rescoring restores the exact order, and that an ordinary filter leaves enough standing.
const OVERSCAN: usize = 8;
const MIN_CANDIDATES: usize = 400;
/// The same under a tag filter, which the scan cannot apply itself: checking a candidate
/// against the database costs two rowid lookups, far less than listing every memory that
/// passes it, so propose enough that tags passing one memory in ten still leave a full
/// ranking.
const FILTERED_OVERSCAN: usize = 20;
const MIN_FILTERED_CANDIDATES: usize = 1_000;
/// How many candidates per wanted result are rescored exactly.
const RESCORED: usize = 2;

impl Store {
    pub(crate) fn hybrid_search(
        &self,
        query: &SearchQuery,
        terms: &QueryTerms,
        window: usize,
    ) -> Result<SearchResults, StoreError> {
        let depth = window.max(self.fusion.depth);
        let started = std::time::Instant::now();
        // The full-text ranking needs nothing from the query's embedding or the vector
        // ranking that follows it: run the two sides at once, on two cores when there are
        // two, so the search waits for the slower side rather than for both in turn.
        let full_text_ranking = || {
            let ranking = self.full_text_ranking(terms, &query.filter, depth);
            (ranking, started.elapsed())
        };
        let vector_side = || {
            let (Some(index), Some(query_vector)) =
                (&self.vectors, self.query_vector(&query.text)?)
            else {
                return Err(StoreError::Embedding("no embedding model is loaded".into()));
            };
            let embedded = started.elapsed();
            let (hits, any_vector) =
                self.vector_ranking(index, &query_vector, &query.filter, depth)?;
            Ok((index, query_vector, hits, any_vector, embedded))
        };
        let (full_text, vectors) = std::thread::scope(|scope| {
            // Without a thread (the system refused one), one after the other.
            let Ok(full_text) = std::thread::Builder::new().spawn_scoped(scope, full_text_ranking)
            else {
                return (full_text_ranking(), vector_side());
            };
            let vectors = vector_side();
            let full_text = match full_text.join() {
                Ok(done) => done,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            (full_text, vectors)
        });
        let (ranking, full_text_ms) = full_text;
        let (index, query_vector, vector_hits, any_vector, embedded) = vectors?;
        let (text_hits, counted) = ranking?;
        tracing::debug!(
            full_text_ms = full_text_ms.as_secs_f64() * 1e3,
            embed_ms = embedded.as_secs_f64() * 1e3,
            both_sides_ms = started.elapsed().as_secs_f64() * 1e3,
            "hybrid search"
        );

        let mut fused = self.fuse(index, &query_vector, &text_hits, &vector_hits)?;
        if self.fusion.neighbour_weight > 0.0 {
            self.lend_to_neighbours(&mut fused, &query.filter)?;
        }
        let candidates = fused.len();
        let mut order: Vec<(MemoryId, f64)> = fused.into_iter().collect();
        // Ties (rare with two rankings) go to the newer memory: ids are UUIDv7.
        order.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));

        let mut known: HashMap<MemoryId, haivemind_core::Memory> = text_hits
            .into_iter()
            .map(|hit| (hit.memory.id, hit.memory))
            .collect();
        let reader = self.reader()?;
        let mut hits = Vec::with_capacity(query.limit);
        for (id, score) in order.into_iter().skip(query.offset).take(query.limit) {
            let memory = match known.remove(&id) {
                Some(memory) => memory,
                None => match memory_by_id(&reader, id)? {
                    Some(memory)
                        if memory.deletion.is_none()
                            && (!query.filter.hide_restricted
                                || memory.confidentiality.may_leave_machine()) =>
                    {
                        memory
                    }
                    // Deleted (or made confidential, for a caller that may not see that)
                    // between the ranking and now.
                    _ => continue,
                },
            };
            hits.push(SearchHit { memory, score });
        }
        let not_embedded = if self.pgvector() {
            !any_vector
        } else {
            index.len() == 0
        };
        Ok(SearchResults {
            hits,
            // What either ranking supports: the full-text matches (counted up to
            // MAX_COUNTED) and the memories at least `min_similarity` similar (to the
            // fusion's depth), merged.
            total: candidates.max(counted.min(MAX_COUNTED)),
            total_exact: candidates < depth && counted <= MAX_COUNTED,
            mode: SearchMode::Hybrid,
            note: not_embedded.then(|| {
                "no memory has been embedded by the loaded model yet, so the ranking is full-text only; run `haivemind reindex`".to_string()
            }),
        })
    }

    /// Adds to `fused` the memories written just before and just after each of the
    /// [`NEIGHBOURS_OF_BEST`] best by the same user (and passing `filter`), each earning
    /// `neighbour_weight` times that memory's score. A conversation's answer is often the
    /// turn after the one that matches the question's words, and a note's context the
    /// note before it: on LoCoMo this lifts recall@10 on conversations the weight was
    /// never tuned on (docs/BENCHMARKS.md).
    fn lend_to_neighbours(
        &self,
        fused: &mut HashMap<MemoryId, f64>,
        filter: &MemoryFilter,
    ) -> Result<(), StoreError> {
        let mut best: Vec<(MemoryId, f64)> = fused.iter().map(|(id, s)| (*id, *s)).collect();
        best.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
        best.truncate(NEIGHBOURS_OF_BEST);
        let reader = self.reader()?;
        let mut written = reader
            .prepare_cached("SELECT user_id, created_at, rowid FROM memories WHERE id = ?1")?;
        for (id, score) in best {
            let Some((user, created, rowid)) = written
                .query_row(params_from_iter([SqlValue::Text(id.to_string())]), |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })
                .optional()?
            else {
                continue;
            };
            // (created_at, rowid) orders memories written in the same millisecond too, and
            // as a row value it is one range of the (user_id, created_at) index: an OR of
            // the two cases made SQLite sort every memory of the user (150 ms at 100k).
            for (beyond, order) in [("<", "DESC"), (">", "ASC")] {
                let mut sql = format!(
                    "SELECT m.id FROM memories m WHERE m.deleted_at IS NULL AND m.user_id = ?
                     AND (m.created_at, m.rowid) {beyond} (?, ?)"
                );
                let mut params = vec![
                    SqlValue::Text(user.clone()),
                    SqlValue::Integer(created),
                    SqlValue::Integer(rowid),
                ];
                filter.to_sql(&mut sql, &mut params);
                sql.push_str(&format!(
                    " ORDER BY m.created_at {order}, m.rowid {order} LIMIT 1"
                ));
                let neighbour: Option<String> = reader
                    .prepare_cached(&sql)?
                    .query_row(params_from_iter(params), |row| row.get(0))
                    .optional()?;
                if let Some(neighbour) = neighbour {
                    *fused.entry(parse_memory_id(&neighbour)?).or_default() +=
                        self.fusion.neighbour_weight * score;
                }
            }
        }
        Ok(())
    }

    /// Each memory of either ranking with its fused score (see [`Fusion`]).
    fn fuse(
        &self,
        index: &VectorIndex,
        query_vector: &[f32],
        text_hits: &[SearchHit],
        vector_hits: &[(MemoryId, f32)],
    ) -> Result<HashMap<MemoryId, f64>, StoreError> {
        let fusion = self.fusion;
        let mut fused: HashMap<MemoryId, f64> = HashMap::new();
        match fusion.method {
            FusionMethod::ReciprocalRank => {
                for (rank, hit) in text_hits.iter().enumerate() {
                    *fused.entry(hit.memory.id).or_default() +=
                        fusion.full_text_weight / (fusion.rank_constant + rank as f64 + 1.0);
                }
                for (rank, (id, _)) in vector_hits.iter().enumerate() {
                    *fused.entry(*id).or_default() +=
                        fusion.vector_weight / (fusion.rank_constant + rank as f64 + 1.0);
                }
            }
            FusionMethod::Convex => {
                let best = text_hits.iter().map(|h| h.score).fold(0.0, f64::max);
                let mut cosines: HashMap<MemoryId, f32> = vector_hits.iter().copied().collect();
                let unscored: Vec<MemoryId> = text_hits
                    .iter()
                    .map(|h| h.memory.id)
                    .filter(|id| !cosines.contains_key(id))
                    .collect();
                cosines.extend(self.cosines(index, &unscored, query_vector)?);
                for hit in text_hits {
                    if best > 0.0 {
                        *fused.entry(hit.memory.id).or_default() +=
                            fusion.full_text_weight * hit.score / best;
                    }
                }
                for (id, cosine) in cosines {
                    *fused.entry(id).or_default() += fusion.vector_weight * f64::from(cosine);
                }
            }
        }
        Ok(fused)
    }

    /// The `depth` live memories passing `filter` whose vectors are most similar to `query`
    /// and at least `min_similarity` similar, most similar first, with their cosine
    /// similarity; and whether any candidate had a vector before the floor (on pgvector,
    /// the only sign that the loaded model has embedded anything).
    fn vector_ranking(
        &self,
        index: &VectorIndex,
        query: &[f32],
        filter: &MemoryFilter,
        depth: usize,
    ) -> Result<(Vec<(MemoryId, f32)>, bool), StoreError> {
        if query.len() != index.dims() {
            return Err(StoreError::Embedding(format!(
                "the model made a vector of {} dimensions for the query, not {}",
                query.len(),
                index.dims()
            )));
        }
        let reader = self.reader()?;
        let mut ranked = if self.pgvector() {
            let candidates = self.pgvector_nearest(
                &reader,
                index.model_id(),
                index.dims(),
                query,
                filter,
                depth * RESCORED,
            )?;
            self.exact_passing(&reader, index, &candidates, filter, query, depth)?
        } else {
            self.scanned_ranking(&reader, index, query, filter, depth)?
        };
        let any_vector = !ranked.is_empty();
        ranked.retain(|(_, cosine)| *cosine >= self.fusion.min_similarity);
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
        ranked.truncate(depth);
        Ok((ranked, any_vector))
    }

    /// The best candidates of this process's index scan for `query`, checked and rescored
    /// exactly by [`Store::exact_passing`].
    fn scanned_ranking(
        &self,
        reader: &Connection,
        index: &VectorIndex,
        query: &[f32],
        filter: &MemoryFilter,
        depth: usize,
    ) -> Result<Vec<(MemoryId, f32)>, StoreError> {
        index.catch_up(reader)?;
        // The scan applies every part of the filter but tags itself, so only a tag filter
        // needs more candidates than an unfiltered search to leave a full ranking.
        let wanted = if filter.tags.is_empty() {
            (depth * OVERSCAN).max(MIN_CANDIDATES)
        } else {
            (depth * FILTERED_OVERSCAN).max(MIN_FILTERED_CANDIDATES)
        };
        let scan_started = std::time::Instant::now();
        let candidates = index.nearest(query, filter, wanted);
        let scanned = scan_started.elapsed();
        let mut ranked = self.exact_passing(reader, index, &candidates, filter, query, depth)?;
        if ranked.len() < depth && candidates.len() == wanted && !filter.tags.is_empty() {
            // The tags left too few standing: score just the memories that carry them. A
            // tag filter that strict passes few.
            let eligible = eligible_rowids(reader, filter)?;
            let candidates = index.nearest_among(query, &eligible, wanted);
            ranked = self.exact_passing(reader, index, &candidates, filter, query, depth)?;
        }
        tracing::debug!(
            scan_ms = scanned.as_secs_f64() * 1e3,
            check_ms = (scan_started.elapsed() - scanned).as_secs_f64() * 1e3,
            "vector ranking"
        );
        Ok(ranked)
    }

    /// Of `candidates` (vector `seq`s, best first by quantised score), those still current
    /// whose memory is live and passes `filter`, with their exact cosine similarity from
    /// the stored `f32` vector: the database's word on each, in one statement per
    /// `depth * RESCORED` candidates, until that many have passed.
    ///
    /// The quantised order is close to exact: rescoring the best few exactly restores the
    /// exact top `depth` (docs/BENCHMARKS.md measures recall against an exact scan).
    fn exact_passing(
        &self,
        reader: &Connection,
        index: &VectorIndex,
        candidates: &[i64],
        filter: &MemoryFilter,
        query: &[f32],
        depth: usize,
    ) -> Result<Vec<(MemoryId, f32)>, StoreError> {
        let mut ranked = Vec::new();
        for chunk in candidates.chunks((depth * RESCORED).max(1)) {
            // CROSS JOIN keeps the seq lookups as the outer loop: with a filter on an
            // indexed column the planner would otherwise walk, say, every memory of a user
            // and probe each against all the seqs (measured: 100 ms instead of 1 at 20k).
            let mut sql = format!(
                "SELECT m.id, v.vector FROM memory_vectors v
                 CROSS JOIN memories m ON m.rowid = v.memory_rowid
                 WHERE v.seq IN ({}) AND m.deleted_at IS NULL",
                vec!["?"; chunk.len()].join(",")
            );
            let mut params: Vec<SqlValue> =
                chunk.iter().map(|&seq| SqlValue::Integer(seq)).collect();
            filter.to_sql(&mut sql, &mut params);
            ranked.extend(scored_rows(
                reader,
                true,
                &sql,
                params,
                index.dims(),
                query,
            )?);
            if ranked.len() >= depth * RESCORED {
                break;
            }
        }
        Ok(ranked)
    }

    /// The cosine similarity to `query` of each of these memories that has a vector.
    fn cosines(
        &self,
        index: &VectorIndex,
        ids: &[MemoryId],
        query: &[f32],
    ) -> Result<Vec<(MemoryId, f32)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = vec!["?"; ids.len()].join(",");
        let sql = format!(
            "SELECT m.id, v.vector FROM memories m
             JOIN memory_vectors v ON v.memory_rowid = m.rowid AND v.model_id = ?
             WHERE m.id IN ({placeholders})"
        );
        let mut params = vec![SqlValue::Text(index.model_id().to_string())];
        params.extend(ids.iter().map(|id| SqlValue::Text(id.to_string())));
        scored_rows(&self.reader()?, false, &sql, params, index.dims(), query)
    }
}

/// The rowids of every live memory passing `filter`.
fn eligible_rowids(reader: &Connection, filter: &MemoryFilter) -> Result<Vec<i64>, StoreError> {
    let mut sql = "SELECT m.rowid FROM memories m WHERE m.deleted_at IS NULL".to_string();
    let mut params = Vec::new();
    filter.to_sql(&mut sql, &mut params);
    let mut statement = reader.prepare_cached(&sql)?;
    let rowids = statement
        .query_map(params_from_iter(params), |row| row.get(0))?
        .collect::<Result<Vec<i64>, _>>()?;
    Ok(rowids)
}

/// Runs `sql`, which selects a memory id and a stored vector, and scores each vector
/// against `query`.
fn scored_rows(
    reader: &Connection,
    cached: bool,
    sql: &str,
    params: Vec<SqlValue>,
    dims: usize,
    query: &[f32],
) -> Result<Vec<(MemoryId, f32)>, StoreError> {
    // Statements of a repeating shape are cached; those with values inlined are not, so
    // as not to push the cached ones out.
    let mut statement = if cached {
        reader.prepare_cached(sql)?
    } else {
        reader.prepare(sql)?
    };
    let mut scored = Vec::new();
    statement.for_each_row(params_from_iter(params), |row| {
        let id: String = row.get(0)?;
        let vector = row.with_blob(1, |blob| vectors::from_blob(blob, dims))?;
        if let Some(vector) = vector {
            let id = parse_memory_id(&id)
                .map_err(|e| crate::db::DbError::conversion(0, e.to_string()))?;
            scored.push((id, vectors::dot(&vector, query)));
        }
        Ok(())
    })?;
    Ok(scored)
}
