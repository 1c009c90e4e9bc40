//! Embedding memories: on write, in batches for memories that lack a vector of the loaded
//! model (after an import, a model change, or writes by a process without the model), and
//! for queries, with a small cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::db::params;

use crate::{Store, StoreError, vectors};

/// How many memories [`Store::embed_missing`] embeds per batch, and per write transaction.
const BATCH: usize = 32;

/// How many of the loaded model's vectors the store holds, against its memories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorCoverage {
    /// Memories (live or soft-deleted) with a vector of the loaded model.
    pub embedded: usize,
    /// Memories still without one: found by full-text only until embedded.
    pub missing: usize,
}

/// How far [`Store::embed_missing`] has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingProgress {
    /// Memories looked at so far.
    pub done: usize,
    /// Memories that lacked a vector when the run began.
    pub total: usize,
    /// Memories that could not be embedded (their text made the model fail).
    pub failed: usize,
}

/// Recent query texts and their vectors: agents repeat queries, and embedding one costs
/// more than the rest of a search.
#[derive(Default)]
pub(crate) struct QueryVectorCache {
    entries: Mutex<HashMap<String, Arc<[f32]>>>,
}

impl QueryVectorCache {
    const CAPACITY: usize = 512;

    fn get(&self, text: &str) -> Option<Arc<[f32]>> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(text)
            .cloned()
    }

    fn put(&self, text: &str, vector: Arc<[f32]>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= Self::CAPACITY {
            // Forgetting everything at once is crude but bounded, and cheap next to an embed.
            entries.clear();
        }
        entries.insert(text.to_string(), vector);
    }
}

impl Store {
    /// Vectors for `texts` from the loaded model, or `None` without a model or when the
    /// model fails (logged: the memories are stored anyway and embedded later).
    pub(crate) fn embed_for_write(&self, texts: &[&str]) -> Option<Vec<Vec<f32>>> {
        let embedder = self.embedder.as_deref()?;
        let started = std::time::Instant::now();
        let embedded = embedder.embed(texts);
        haivemind_core::timings::EMBEDDING.observe("write", started.elapsed());
        match embedded {
            Ok(vectors) if vectors.len() == texts.len() => Some(vectors),
            Ok(vectors) => {
                tracing::warn!(
                    asked = texts.len(),
                    got = vectors.len(),
                    "the model returned the wrong number of vectors; embedding later"
                );
                None
            }
            Err(error) => {
                tracing::warn!(%error, "could not embed; the memory is stored and embedded later");
                None
            }
        }
    }

    /// The query's vector, from the cache when the same text was asked recently.
    pub(crate) fn query_vector(&self, text: &str) -> Result<Option<Arc<[f32]>>, StoreError> {
        let Some(embedder) = self.embedder.as_deref() else {
            return Ok(None);
        };
        if let Some(vector) = self.query_vectors.get(text) {
            return Ok(Some(vector));
        }
        let started = std::time::Instant::now();
        let embedded = embedder.embed(&[text]);
        haivemind_core::timings::EMBEDDING.observe("query", started.elapsed());
        let mut vectors = embedded.map_err(|e| StoreError::Embedding(e.to_string()))?;
        let vector: Arc<[f32]> = vectors
            .pop()
            .ok_or_else(|| StoreError::Embedding("the model returned no vector".into()))?
            .into();
        self.query_vectors.put(text, Arc::clone(&vector));
        Ok(Some(vector))
    }

    /// Loads the vectors written since the index last looked, so that the next search does
    /// not have to. Without a model, does nothing.
    pub fn warm_vector_index(&self) -> Result<(), StoreError> {
        if self.pgvector() {
            return Ok(()); // pgvector ranks in the database: nothing to hold here
        }
        match &self.vectors {
            Some(index) => index.catch_up(&self.reader()?),
            None => Ok(()),
        }
    }

    /// Writes the vector index to its file beside the database (`<file>-vectors`), so that
    /// the next start reads it instead of every stored vector, when at least
    /// a thousand rows were read from the database since the file was last read or written.
    /// Returns whether it was written; without a model, or on PostgreSQL, it never is.
    pub fn save_vector_index(&self) -> Result<bool, StoreError> {
        let Some(index) = self.vectors.as_ref().filter(|_| !self.pgvector()) else {
            return Ok(false);
        };
        index.save_snapshot(&self.reader()?, crate::vectors::SNAPSHOT_AFTER_ROWS)
    }

    /// Removes the vector index's file after memories were removed for good: it holds their
    /// codes, a likeness of their text. A running index writes a new one without them.
    pub(crate) fn remove_vector_file(&self) {
        if self.postgres().is_some() {
            return; // No file beside a hub's database.
        }
        if let Some(index) = &self.vectors {
            index.file_outdated();
        }
        let file = crate::vectors::snapshot_path(&self.path);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(
                %error,
                path = %file.display(),
                "could not remove the vector index file after a removal"
            ),
        }
    }

    /// Every live memory's id and stored vector of the loaded model, for measuring the
    /// index against an exact scan (`haivemind bench hybrid`).
    #[doc(hidden)]
    pub fn vector_snapshot(&self) -> Result<Vec<(haivemind_core::MemoryId, Vec<f32>)>, StoreError> {
        let Some(embedder) = self.embedder.as_deref() else {
            return Ok(Vec::new());
        };
        let reader = self.reader()?;
        let mut statement = reader.prepare(
            "SELECT m.id, v.vector FROM memory_vectors v JOIN memories m ON m.rowid = v.memory_rowid
             WHERE v.model_id = ?1 AND m.deleted_at IS NULL",
        )?;
        let mut out = Vec::new();
        statement.for_each_row([embedder.model_id()], |row| {
            let id: String = row.get(0)?;
            let blob: Vec<u8> = row.get(1)?;
            let id = haivemind_core::MemoryId::parse("id", &id)
                .map_err(|e| crate::db::DbError::conversion(0, e.to_string()))?;
            if let Some(vector) = vectors::from_blob(&blob, embedder.dimensions()) {
                out.push((id, vector));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// How many memories have a vector of the loaded model; `None` without a model.
    pub fn vector_coverage(&self) -> Result<Option<VectorCoverage>, StoreError> {
        let Some(embedder) = self.embedder.as_deref() else {
            return Ok(None);
        };
        let reader = self.reader()?;
        let (memories, embedded): (i64, i64) = reader.query_row(
            "SELECT (SELECT count(*) FROM memories),
                    (SELECT count(*) FROM memory_vectors WHERE model_id = ?1)",
            [embedder.model_id()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        let embedded = embedded.max(0) as usize;
        Ok(Some(VectorCoverage {
            embedded,
            missing: (memories.max(0) as usize).saturating_sub(embedded),
        }))
    }

    /// Embeds every memory that lacks a vector of the loaded model (new here through import
    /// or replication, or embedded by an earlier model), in batches, each written in its own
    /// short transaction. Safe to run while the store is in use, and to stop at any point:
    /// the next run picks up where this one ended. Reports progress after each batch.
    pub fn embed_missing(
        &self,
        mut progress: impl FnMut(EmbeddingProgress),
    ) -> Result<EmbeddingProgress, StoreError> {
        let Some(embedder) = self.embedder.clone() else {
            return Ok(EmbeddingProgress {
                done: 0,
                total: 0,
                failed: 0,
            });
        };
        // Every vector row belongs to one memory (a unique, cascading foreign key), so as
        // many vectors of the model as memories means none is missing. Two counts on
        // indexes answer that; the search for the missing ones below probes every
        // memory's vector row, which at 100k memories is two reads of both tables, run
        // at every start just as the first searches arrive.
        if self
            .vector_coverage()?
            .is_some_and(|coverage| coverage.missing == 0)
        {
            let nothing = EmbeddingProgress {
                done: 0,
                total: 0,
                failed: 0,
            };
            progress(nothing);
            return Ok(nothing);
        }
        let model_id = embedder.model_id().to_string();
        const MISSING: &str = "FROM memories m WHERE NOT EXISTS (
                 SELECT 1 FROM memory_vectors v WHERE v.memory_rowid = m.rowid AND v.model_id = ?1)";
        let total: i64 = self.reader()?.query_row(
            &format!("SELECT count(*) {MISSING}"),
            [&model_id],
            |row| row.get(0),
        )?;
        let mut state = EmbeddingProgress {
            done: 0,
            total: total.max(0) as usize,
            failed: 0,
        };
        progress(state);
        let mut after = 0i64;
        loop {
            let batch: Vec<(i64, String)> = {
                let reader = self.reader()?;
                let mut statement = reader.prepare_cached(&format!(
                    "SELECT m.rowid, m.content {MISSING} AND m.rowid > ?2 ORDER BY m.rowid LIMIT ?3"
                ))?;
                statement
                    .query_map(params![model_id, after, BATCH as i64], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })?
                    .collect::<Result<_, _>>()?
            };
            let Some(&(last, _)) = batch.last() else {
                break;
            };
            after = last;
            let texts: Vec<&str> = batch.iter().map(|(_, c)| c.as_str()).collect();
            let started = std::time::Instant::now();
            let outcome = embedder.embed(&texts);
            haivemind_core::timings::EMBEDDING.observe("batch", started.elapsed());
            let embedded = match outcome {
                Ok(vectors) if vectors.len() == texts.len() => {
                    vectors.into_iter().map(Some).collect()
                }
                // One bad text should not keep the rest of its batch from being embedded.
                _ => texts
                    .iter()
                    .map(|text| embedder.embed(&[text]).ok().and_then(|mut v| v.pop()))
                    .collect::<Vec<_>>(),
            };
            self.write(|tx, _| {
                // Only if the memory still holds the text that was embedded: a
                // concurrent update has already stored the newer text's vector.
                let mut current =
                    tx.prepare_cached("SELECT 1 FROM memories WHERE rowid = ?1 AND content = ?2")?;
                for ((rowid, content), vector) in batch.iter().zip(&embedded) {
                    if let Some(vector) = vector
                        && current.exists(params![rowid, content])?
                    {
                        vectors::put(tx, *rowid, &model_id, vector)?;
                    }
                }
                Ok(())
            })?;
            let failed = embedded.iter().filter(|v| v.is_none()).count();
            if failed > 0 {
                tracing::warn!(failed, "some memories could not be embedded");
            }
            state.failed += failed;
            state.done += batch.len();
            progress(state);
        }
        Ok(state)
    }
}
