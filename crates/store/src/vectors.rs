//! Memory vectors: stored in `memory_vectors` with the id of the model that made them, and
//! scanned from an in-memory index.
//!
//! The index holds every vector of the loaded model quantised to `i8` (a scale per vector),
//! a quarter of the `f32` size, so that an exact scan over 100,000 memories reads 38 MB and
//! takes a few milliseconds. The scan only proposes candidates: the best few hundred by
//! quantised score are checked against the database (live, filters, still current) and
//! scored again exactly from their stored `f32` vectors. So quantisation can only reorder
//! candidates near the cut-off, never return a stale or filtered memory.
//!
//! Several processes may share one database file. The index catches up before each search
//! by reading the rows whose `seq` is past the last one it saw; vectors removed by another
//! process stay in the index until a periodic recount rebuilds it, and are dropped at
//! verification meanwhile.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::db::{Connection, Transaction, params};

use crate::StoreError;

/// Serialises a vector as little-endian `f32`s.
pub(crate) fn to_blob(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Reads a vector written by [`to_blob`]; `None` when its length is not `dims` floats.
pub(crate) fn from_blob(blob: &[u8], dims: usize) -> Option<Vec<f32>> {
    if blob.len() != dims * 4 {
        return None;
    }
    Some(
        blob.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// Stores (or replaces) the vector of the memory at `memory_rowid`. Replacing gives the row
/// a new `seq`, which is how indexes learn of it.
pub(crate) fn put(
    tx: &Transaction<'_>,
    memory_rowid: i64,
    model_id: &str,
    vector: &[f32],
) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM memory_vectors WHERE memory_rowid = ?1")?
        .execute(params![memory_rowid])?;
    if tx.pgvector() {
        tx.prepare_cached(
            "INSERT INTO memory_vectors (memory_rowid, model_id, vector, embedding)
             VALUES (?1, ?2, ?3, CAST(?4 AS text)::vector)",
        )?
        .execute(params![
            memory_rowid,
            model_id,
            to_blob(vector),
            pgvector_literal(vector)
        ])?;
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT INTO memory_vectors (memory_rowid, model_id, vector) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![memory_rowid, model_id, to_blob(vector)])?;
    Ok(())
}

/// pgvector's text form of a vector: `[0.1,0.2,…]`.
pub(crate) fn pgvector_literal(vector: &[f32]) -> String {
    let values: Vec<String> = vector.iter().map(f32::to_string).collect();
    format!("[{}]", values.join(","))
}

/// A model id as an SQL string literal (it names pgvector's partial index, which the
/// planner matches only against a literal).
pub(crate) fn model_literal(model_id: &str) -> String {
    format!("'{}'", model_id.replace('\'', "''"))
}

/// The name of pgvector's index for one model's vectors.
pub(crate) fn hnsw_index_name(model_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(model_id.as_bytes());
    let short: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("memory_vectors_hnsw_{short}")
}

/// The dot product of two unit vectors: their cosine similarity.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `vector` as `i8` codes and the scale that turns them back (`x ≈ code * scale`).
fn quantise(vector: &[f32]) -> (Vec<i8>, f32) {
    let largest = vector.iter().fold(0f32, |m, x| m.max(x.abs()));
    if largest == 0.0 {
        return (vec![0; vector.len()], 0.0);
    }
    let scale = largest / 127.0;
    let codes = vector
        .iter()
        .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (codes, scale)
}

/// The in-memory index of one model's vectors.
pub(crate) struct VectorIndex {
    model_id: String,
    dims: usize,
    state: RwLock<Slots>,
    /// Held while reading new rows, so two searches do not both load the same rows.
    catching_up: Mutex<()>,
}

#[derive(Default)]
struct Slots {
    /// The largest `seq` read so far.
    last_seq: i64,
    /// Which slot holds each memory's vector.
    slot_of_memory: HashMap<i64, usize>,
    /// Per slot: the vector's `seq`, or 0 when the slot is vacant.
    seqs: Vec<i64>,
    /// Per slot: the scale of its codes.
    scales: Vec<f32>,
    /// `dims` codes per slot.
    codes: Vec<i8>,
    vacant: usize,
    last_recount: Option<Instant>,
}

/// How often the index compares its size with the table's, to notice vectors that other
/// processes removed.
const RECOUNT_EVERY: Duration = Duration::from_secs(30);

impl VectorIndex {
    pub(crate) fn new(model_id: &str, dims: usize) -> Self {
        Self {
            model_id: model_id.to_string(),
            dims,
            state: RwLock::new(Slots::default()),
            catching_up: Mutex::new(()),
        }
    }

    pub(crate) fn model_id(&self) -> &str {
        &self.model_id
    }

    pub(crate) fn dims(&self) -> usize {
        self.dims
    }

    /// How many vectors the index holds.
    pub(crate) fn len(&self) -> usize {
        let slots = self.state.read().unwrap_or_else(|p| p.into_inner());
        slots.seqs.len() - slots.vacant
    }

    /// Reads the vectors written since the last call (by any process) into the index.
    pub(crate) fn catch_up(&self, reader: &Connection) -> Result<(), StoreError> {
        let _one_at_a_time = self.catching_up.lock().unwrap_or_else(|p| p.into_inner());
        let recount_due = {
            let slots = self.state.read().unwrap_or_else(|p| p.into_inner());
            slots
                .last_recount
                .is_none_or(|at| at.elapsed() >= RECOUNT_EVERY)
        };
        if recount_due {
            let stored: i64 = reader
                .prepare_cached("SELECT count(*) FROM memory_vectors WHERE model_id = ?1")?
                .query_row([&self.model_id], |row| row.get(0))?;
            let mut slots = self.state.write().unwrap_or_else(|p| p.into_inner());
            let held = slots.seqs.len() - slots.vacant;
            // Vectors removed elsewhere (or ours, once a quarter of the slots are vacant)
            // are dropped by starting again; cheaper than tracking every removal.
            if held > stored as usize + stored as usize / 8 + 64
                || slots.vacant > slots.seqs.len() / 4 + 64
            {
                tracing::debug!(held, stored, "rebuilding the vector index");
                *slots = Slots::default();
            }
            slots.last_recount = Some(Instant::now());
        }
        // Read after the recount, which may have started the index again from nothing.
        let last_seq = self
            .state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .last_seq;
        let mut statement = reader.prepare_cached(
            "SELECT seq, memory_rowid, vector FROM memory_vectors
             WHERE model_id = ?1 AND seq > ?2 ORDER BY seq LIMIT 4096",
        )?;
        let mut after = last_seq;
        loop {
            let rows = statement
                .query_map(params![self.model_id, after], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, Vec<u8>>(2)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let Some(&(last, _, _)) = rows.last() else {
                break;
            };
            let mut slots = self.state.write().unwrap_or_else(|p| p.into_inner());
            for (seq, memory_rowid, blob) in rows {
                let Some(vector) = from_blob(&blob, self.dims) else {
                    tracing::warn!(seq, "skipping a stored vector of the wrong length");
                    continue;
                };
                slots.insert(seq, memory_rowid, &vector, self.dims);
            }
            slots.last_seq = slots.last_seq.max(last);
            after = last;
        }
        Ok(())
    }

    /// Vacates the slots of memories removed by this process.
    pub(crate) fn forget(&self, memory_rowids: &[i64]) {
        let mut slots = self.state.write().unwrap_or_else(|p| p.into_inner());
        for rowid in memory_rowids {
            if let Some(slot) = slots.slot_of_memory.remove(rowid)
                && slots.seqs[slot] != 0
            {
                slots.seqs[slot] = 0;
                slots.vacant += 1;
            }
        }
    }

    /// The `seq`s of the `n` vectors most similar to `query` by quantised dot product, best
    /// first.
    pub(crate) fn nearest(&self, query: &[f32], n: usize) -> Vec<i64> {
        let (query_codes, _) = quantise(query);
        let slots = self.state.read().unwrap_or_else(|p| p.into_inner());
        let mut scored: Vec<(f32, usize)> = Vec::with_capacity(slots.seqs.len());
        let mut dots = vec![0i32; slots.seqs.len()];
        dot_i8_all(&slots.codes, self.dims, &query_codes, &mut dots);
        for (slot, dot) in dots.iter().enumerate() {
            if slots.seqs[slot] != 0 {
                scored.push((*dot as f32 * slots.scales[slot], slot));
            }
        }
        best(scored, n)
            .into_iter()
            .map(|slot| slots.seqs[slot])
            .collect()
    }
}

impl VectorIndex {
    /// Like [`VectorIndex::nearest`], among the vectors of these memories only.
    pub(crate) fn nearest_among(&self, query: &[f32], memory_rowids: &[i64], n: usize) -> Vec<i64> {
        let (query_codes, _) = quantise(query);
        let slots = self.state.read().unwrap_or_else(|p| p.into_inner());
        let mut scored: Vec<(f32, usize)> = Vec::with_capacity(memory_rowids.len());
        let mut dot = [0i32];
        for rowid in memory_rowids {
            if let Some(&slot) = slots.slot_of_memory.get(rowid)
                && slots.seqs[slot] != 0
            {
                let codes = &slots.codes[slot * self.dims..(slot + 1) * self.dims];
                dot_i8_all(codes, self.dims, &query_codes, &mut dot);
                scored.push((dot[0] as f32 * slots.scales[slot], slot));
            }
        }
        best(scored, n)
            .into_iter()
            .map(|slot| slots.seqs[slot])
            .collect()
    }
}

/// The slots of the `n` highest scores, highest first.
fn best(mut scored: Vec<(f32, usize)>, n: usize) -> Vec<usize> {
    let n = n.min(scored.len());
    if n == 0 {
        return Vec::new();
    }
    let by_score_desc = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0);
    if n < scored.len() {
        scored.select_nth_unstable_by(n - 1, by_score_desc);
        scored.truncate(n);
    }
    scored.sort_unstable_by(by_score_desc);
    scored.into_iter().map(|(_, slot)| slot).collect()
}

impl Slots {
    fn insert(&mut self, seq: i64, memory_rowid: i64, vector: &[f32], dims: usize) {
        let (codes, scale) = quantise(vector);
        let slot = match self.slot_of_memory.get(&memory_rowid) {
            Some(&slot) => slot,
            None => {
                let slot = self.seqs.len();
                self.seqs.push(0);
                self.scales.push(0.0);
                self.codes.resize(self.codes.len() + dims, 0);
                self.slot_of_memory.insert(memory_rowid, slot);
                slot
            }
        };
        self.seqs[slot] = seq;
        self.scales[slot] = scale;
        self.codes[slot * dims..(slot + 1) * dims].copy_from_slice(&codes);
    }
}

/// `out[i]` = dot product of row `i` of `matrix` (rows of `dims` codes) with `query`.
fn dot_i8_all(matrix: &[i8], dims: usize, query: &[i8], out: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { dot_i8_all_avx2(matrix, dims, query, out) };
        return;
    }
    dot_i8_all_portable(matrix, dims, query, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8_all_avx2(matrix: &[i8], dims: usize, query: &[i8], out: &mut [i32]) {
    // The same loop, compiled with AVX2 enabled so that it vectorises to 32 lanes.
    dot_i8_all_portable(matrix, dims, query, out);
}

#[inline(always)]
fn dot_i8_all_portable(matrix: &[i8], dims: usize, query: &[i8], out: &mut [i32]) {
    for (row, dot) in matrix.chunks_exact(dims).zip(out.iter_mut()) {
        *dot = row
            .iter()
            .zip(query)
            .map(|(&a, &b)| i32::from(i16::from(a) * i16::from(b)))
            .sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(values: &[f32]) -> Vec<f32> {
        let norm = values.iter().map(|x| x * x).sum::<f32>().sqrt();
        values.iter().map(|x| x / norm).collect()
    }

    #[test]
    fn blobs_round_trip_and_wrong_lengths_are_refused() {
        let v = unit(&[0.5, -1.25, 3.0]);
        assert_eq!(from_blob(&to_blob(&v), 3).unwrap(), v);
        assert!(from_blob(&to_blob(&v), 4).is_none());
    }

    #[test]
    fn quantised_dot_products_stay_close_to_exact_ones() {
        // Pseudo-random unit vectors in 384 dimensions, as the model makes them.
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let vectors: Vec<Vec<f32>> = (0..50)
            .map(|_| unit(&(0..384).map(|_| next()).collect::<Vec<_>>()))
            .collect();
        let (q_codes, q_scale) = quantise(&vectors[0]);
        for v in &vectors {
            let (codes, scale) = quantise(v);
            let mut out = [0i32];
            dot_i8_all(&codes, 384, &q_codes, &mut out);
            let approximate = out[0] as f32 * scale * q_scale;
            assert!((approximate - dot(v, &vectors[0])).abs() < 0.01);
        }
    }

    #[test]
    fn the_scan_ranks_by_similarity_and_skips_vacant_slots() {
        let index = VectorIndex::new("m", 3);
        {
            let mut slots = index.state.write().unwrap();
            slots.insert(1, 10, &unit(&[1.0, 0.0, 0.0]), 3);
            slots.insert(2, 11, &unit(&[0.9, 0.1, 0.0]), 3);
            slots.insert(3, 12, &unit(&[0.0, 1.0, 0.0]), 3);
        }
        let seqs = |c: Vec<i64>| c;
        assert_eq!(seqs(index.nearest(&unit(&[1.0, 0.05, 0.0]), 2)), [1, 2]);
        index.forget(&[10]);
        assert_eq!(seqs(index.nearest(&unit(&[1.0, 0.05, 0.0]), 5)), [2, 3]);
        assert_eq!(index.len(), 2);
        // A memory's new vector takes its old slot.
        index
            .state
            .write()
            .unwrap()
            .insert(4, 12, &unit(&[1.0, 0.0, 0.0]), 3);
        assert_eq!(seqs(index.nearest(&unit(&[1.0, 0.0, 0.0]), 1)), [4]);
        assert_eq!(index.len(), 2);
        // Among given memories only; forgotten and unknown ones are skipped.
        assert_eq!(
            index.nearest_among(&unit(&[1.0, 0.0, 0.0]), &[10, 11, 99], 5),
            [2]
        );
    }
}
