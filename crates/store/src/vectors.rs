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
//!
//! On SQLite the index is also kept in a file beside the database ([`snapshot`]): a start
//! reads it and then only the rows written since, instead of every stored vector.

mod snapshot;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use haivemind_core::Confidentiality;

use crate::db::{Connection, OptionalExtension, Transaction, params};
use crate::vector_scan::{Kernel, QueryCodes, TopK, code_sum};
use crate::{MemoryFilter, StoreError};

/// Serialises a vector as little-endian `f32`s.
pub(crate) fn to_blob(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Reads a vector written by [`to_blob`]; `None` when its length is not `dims` floats.
pub(crate) fn from_blob(blob: &[u8], dims: usize) -> Option<Vec<f32>> {
    (blob.len() == dims * 4).then(|| floats_of(blob).collect())
}

/// The little-endian `f32`s of a stored vector (a trailing partial one is ignored).
fn floats_of(blob: &[u8]) -> impl Iterator<Item = f32> + '_ {
    blob.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
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

/// Gives a memory's vector a new `seq` (the same vector, written again), so that every
/// in-memory index, in this process or another, reads the memory's fields again at its
/// next catch-up.
pub(crate) fn renumber(tx: &Transaction<'_>, memory_rowid: i64) -> Result<(), StoreError> {
    let stored: Option<(String, Vec<u8>)> = tx
        .prepare_cached("SELECT model_id, vector FROM memory_vectors WHERE memory_rowid = ?1")?
        .query_row(params![memory_rowid], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    if let Some((model_id, blob)) = stored
        && let Some(vector) = from_blob(&blob, blob.len() / 4)
    {
        put(tx, memory_rowid, &model_id, &vector)?;
    }
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
    let mut codes = vec![0; vector.len()];
    let scale = quantise_into(vector, &mut codes);
    (codes, scale)
}

/// Writes `values` as `i8` codes into `codes`; returns the scale (`x ≈ code * scale`).
/// Plain loops over slices, which the compiler turns into vector instructions: this runs
/// for every stored vector when the index loads, and at 100k memories it was the largest
/// part of that load written as iterators over the stored bytes.
fn quantise_into(values: &[f32], codes: &mut [i8]) -> f32 {
    // Eight running maxima instead of one, so the loop need not wait on itself.
    let mut lanes = [0f32; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            let x = x.abs();
            *lane = if x > *lane { x } else { *lane };
        }
    }
    for (lane, x) in lanes.iter_mut().zip(chunks.remainder()) {
        let x = x.abs();
        *lane = if x > *lane { x } else { *lane };
    }
    let largest = lanes.iter().fold(0f32, |m, &x| if x > m { x } else { m });
    if !(largest > 0.0 && largest.is_finite()) {
        codes.fill(0);
        return 0.0;
    }
    let scale = largest / 127.0;
    let inverse = 127.0 / largest;
    for (code, x) in codes.iter_mut().zip(values) {
        // |y| <= 127, since `largest` bounds every |x|. Adding 1.5 * 2^23 leaves y rounded
        // to the nearest integer (ties to even) in the low bits of the sum's mantissa:
        // float adds and integer subtracts, four or eight values per instruction, where
        // `f32::round` is a call per value without SSE4.1 and `as i32` checks each value
        // for saturation. A NaN (a stored vector with one) leaves low bits of zero.
        const ROUNDER: f32 = 12_582_912.0;
        let y = x * inverse;
        let bits = (y + ROUNDER).to_bits() as i32;
        *code = bits.wrapping_sub(ROUNDER.to_bits() as i32) as i8;
    }
    scale
}

/// The in-memory index of one model's vectors.
pub(crate) struct VectorIndex {
    model_id: String,
    dims: usize,
    state: RwLock<Slots>,
    /// Held while reading new rows, so two searches do not both load the same rows.
    catching_up: Mutex<()>,
    /// Where the index is kept on disk, if anywhere (SQLite only).
    snapshot: Option<PathBuf>,
    /// Whether the first load has looked for the file (later rebuilds read the database).
    snapshot_tried: AtomicBool,
    /// Held while the file is written: the background thread, the hourly save and a
    /// server's stop may try at once, and would share a temporary file.
    saving: Mutex<()>,
}

pub(crate) use snapshot::path_beside as snapshot_path;

/// What the scan filters on without asking the database: the fields of a memory that
/// [`MemoryFilter`] compares by equality or range (names interned), whether it may be
/// shown to a restricted caller, and whether it is live. Tags stay in the database.
///
/// They are read with the vector. A change to any of them renumbers the memory's vector
/// row (see `rows::replace_memory`), which is how every index, in any process, learns of it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Facets {
    user: u32,
    category: u32,
    /// 0 when the memory has none.
    project: u32,
    machine: u32,
    /// 0 when the memory has none.
    agent: u32,
    created_at_ms: i64,
    restricted: bool,
    live: bool,
}

/// Interned names: the same name always gets the same number; 0 stands for none.
#[derive(Default)]
struct Names {
    numbers: HashMap<String, u32>,
}

impl Names {
    fn number(&mut self, name: Option<&str>) -> u32 {
        let Some(name) = name else { return 0 };
        if let Some(&number) = self.numbers.get(name) {
            return number;
        }
        let number = u32::try_from(self.numbers.len() + 1).unwrap_or(u32::MAX);
        self.numbers.insert(name.to_string(), number);
        number
    }

    /// `Ok(None)` when `name` is not asked for; `Err(())` when no vector's memory has it.
    fn lookup(&self, name: Option<&String>) -> Result<Option<u32>, ()> {
        match name {
            None => Ok(None),
            Some(name) => self.numbers.get(name).map(|&n| Some(n)).ok_or(()),
        }
    }
}

/// The part of a [`MemoryFilter`] the scan applies itself.
struct ScanFilter {
    user: Option<u32>,
    category: Option<u32>,
    project: Option<u32>,
    machine: Option<u32>,
    agent: Option<u32>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    hide_restricted: bool,
}

impl ScanFilter {
    /// `None` when the filter names a value no indexed memory has: nothing can match.
    fn new(filter: &MemoryFilter, names: &Names) -> Option<Self> {
        Some(Self {
            user: names.lookup(filter.user_id.as_ref()).ok()?,
            category: names.lookup(filter.category.as_ref()).ok()?,
            project: names.lookup(filter.project.as_ref()).ok()?,
            machine: names.lookup(filter.machine_id.as_ref()).ok()?,
            agent: names.lookup(filter.agent_id.as_ref()).ok()?,
            since_ms: filter.since_ms,
            until_ms: filter.until_ms,
            hide_restricted: filter.hide_restricted,
        })
    }

    #[inline]
    fn admits(&self, facets: &Facets) -> bool {
        let is = |wanted: Option<u32>, has: u32| wanted.is_none_or(|w| w == has);
        facets.live
            && is(self.user, facets.user)
            && is(self.category, facets.category)
            && is(self.project, facets.project)
            && is(self.machine, facets.machine)
            && is(self.agent, facets.agent)
            && self
                .since_ms
                .is_none_or(|since| facets.created_at_ms >= since)
            && self
                .until_ms
                .is_none_or(|until| facets.created_at_ms < until)
            && !(self.hide_restricted && facets.restricted)
    }
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
    /// Per slot: the sum of its codes (for the VNNI kernel).
    sums: Vec<i32>,
    /// Per slot: what the scan filters on.
    facets: Vec<Facets>,
    names: Names,
    /// `dims` codes per slot.
    codes: Vec<i8>,
    /// The vector being inserted, decoded from its stored bytes (kept to reuse its space).
    decoded: Vec<f32>,
    vacant: usize,
    last_recount: Option<Instant>,
    /// Rows read from the database since the index was last read from or written to its
    /// file: what a new file would save the next start.
    unsaved: usize,
}

/// How often the index compares its size with the table's, to notice vectors that other
/// processes removed.
const RECOUNT_EVERY: Duration = Duration::from_secs(30);

/// Slots scored per call of the kernel.
const BATCH: usize = 256;

/// From how many slots a scan is split between two threads.
const SPLIT_FROM: usize = 16_384;

/// Rows read from the database since the file was read or written from which writing it
/// again is worth its cost (reading a thousand rows at a start costs a few milliseconds;
/// writing the file at 100k, tens).
pub(crate) const SNAPSHOT_AFTER_ROWS: usize = 1_000;

/// How many threads this process may run at once.
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

impl VectorIndex {
    pub(crate) fn new(model_id: &str, dims: usize) -> Self {
        Self {
            model_id: model_id.to_string(),
            dims,
            state: RwLock::new(Slots::default()),
            catching_up: Mutex::new(()),
            snapshot: None,
            snapshot_tried: AtomicBool::new(false),
            saving: Mutex::new(()),
        }
    }

    /// The index, kept in the file at `path` as well.
    pub(crate) fn with_snapshot(mut self, path: PathBuf) -> Self {
        self.snapshot = Some(path);
        self
    }

    /// Writes the index to its file when at least `min_unsaved` rows were read from the
    /// database since the file was last read or written; `Ok(false)` when it was not
    /// written (no file for this backend, or too little new).
    ///
    /// Only vectors whose rows are in the database now are written: a vector another
    /// process removed (an erasure, say) stays in a running index until its recount, and
    /// must not come back through the file. A memory removed for good while the file is
    /// being written (a new tombstone) may have been looked for before the file was there:
    /// the file is removed again.
    pub(crate) fn save_snapshot(
        &self,
        reader: &Connection,
        min_unsaved: usize,
    ) -> Result<bool, StoreError> {
        let Some(path) = &self.snapshot else {
            return Ok(false);
        };
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let _one_at_a_time = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let last_seq = {
            let slots = self.state.read().unwrap_or_else(|p| p.into_inner());
            if slots.unsaved < min_unsaved.max(1) {
                return Ok(false);
            }
            slots.last_seq
        };
        let tombstones = |reader: &Connection| -> Result<i64, StoreError> {
            Ok(reader
                .prepare_cached("SELECT count(*) FROM tombstones")?
                .query_row(params![], |row| row.get(0))?)
        };
        let removed_before = tombstones(reader)?;
        let mut stored = std::collections::HashSet::new();
        reader
            .prepare_cached("SELECT seq FROM memory_vectors WHERE model_id = ?1 AND seq <= ?2")?
            .for_each_row(params![self.model_id, last_seq], |row| {
                stored.insert(row.get::<_, i64>(0)?);
                Ok(())
            })?;
        // Written under the read lock (searches go on; a catch-up waits some milliseconds),
        // flushed to disk and put in place after it. Rows past `last_seq` that a catch-up
        // reads meanwhile are left to the next start's catch-up.
        let (pending, unsaved) = {
            let slots = self.state.read().unwrap_or_else(|p| p.into_inner());
            let pending =
                snapshot::write(path, &self.model_id, self.dims, &slots, last_seq, |slot| {
                    stored.contains(&slots.seqs[slot])
                })
                .map_err(io)?;
            (pending, slots.unsaved)
        };
        let written = pending.written;
        pending.commit(path).map_err(io)?;
        if tombstones(reader)? != removed_before {
            std::fs::remove_file(path).map_err(io)?;
            return Ok(false);
        }
        let mut slots = self.state.write().unwrap_or_else(|p| p.into_inner());
        slots.unsaved = slots.unsaved.saturating_sub(unsaved);
        drop(slots);
        tracing::debug!(
            vectors = written,
            ms = started.elapsed().as_secs_f64() * 1e3,
            path = %path.display(),
            "vector index written to its file"
        );
        Ok(true)
    }

    /// Marks the file as due to be written again at the next save (it was removed).
    pub(crate) fn file_outdated(&self) {
        let mut slots = self.state.write().unwrap_or_else(|p| p.into_inner());
        slots.unsaved = slots.unsaved.max(SNAPSHOT_AFTER_ROWS);
    }

    /// The index as its file holds it, if the file is there, well formed, made for this
    /// model, and its newest vector is still that row of this database (see [`snapshot`]).
    fn load_snapshot(&self, reader: &Connection) -> Result<Option<Slots>, StoreError> {
        let Some(path) = &self.snapshot else {
            return Ok(None);
        };
        if !path.exists() {
            return Ok(None);
        }
        let started = Instant::now();
        let loaded = match snapshot::read(path, &self.model_id, self.dims) {
            Ok(loaded) => loaded,
            Err(snapshot::Unusable(why)) => {
                tracing::info!(path = %path.display(), why, "not using the vector index file; loading the index from the database");
                return Ok(None);
            }
        };
        if let Some((slot, memory_rowid)) = loaded.newest {
            let seq = loaded.slots.seqs[slot];
            let row: Option<(i64, Vec<u8>)> = reader
                .prepare_cached(
                    "SELECT memory_rowid, vector FROM memory_vectors WHERE seq = ?1 AND model_id = ?2",
                )?
                .query_row(params![seq, self.model_id], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()?;
            let same = row.is_some_and(|(rowid, blob)| {
                rowid == memory_rowid
                    && from_blob(&blob, self.dims).is_some_and(|vector| {
                        let (codes, scale) = quantise(&vector);
                        let held = &loaded.slots.codes[slot * self.dims..(slot + 1) * self.dims];
                        codes == held && scale.to_bits() == loaded.slots.scales[slot].to_bits()
                    })
            });
            if !same {
                tracing::info!(path = %path.display(), "the vector index file is not of this database's vectors; loading the index from the database");
                return Ok(None);
            }
        }
        tracing::debug!(
            vectors = loaded.slots.seqs.len(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "vector index read from its file"
        );
        Ok(Some(loaded.slots))
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
            if slots.seqs.is_empty()
                && !self.snapshot_tried.swap(true, Ordering::Relaxed)
                && let Some(loaded) = self.load_snapshot(reader)?
            {
                *slots = loaded;
            }
            let held = slots.seqs.len() - slots.vacant;
            // Vectors removed elsewhere (or ours, once a quarter of the slots are vacant)
            // are dropped by starting again; cheaper than tracking every removal.
            if held > stored as usize + stored as usize / 8 + 64
                || slots.vacant > slots.seqs.len() / 4 + 64
            {
                tracing::debug!(held, stored, "rebuilding the vector index");
                *slots = Slots::default();
            }
            if slots.seqs.is_empty() {
                // A first load: room for every stored vector at once, rather than copying
                // the codes (tens of MB at 100k) each time they outgrow their space.
                let stored = usize::try_from(stored).unwrap_or(0);
                slots.codes.reserve_exact(stored * self.dims);
                slots.seqs.reserve_exact(stored);
                slots.scales.reserve_exact(stored);
                slots.sums.reserve_exact(stored);
                slots.facets.reserve_exact(stored);
                slots.slot_of_memory.reserve(stored);
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
            "SELECT v.seq, v.memory_rowid, v.vector, m.user_id, m.category, m.project,
                    m.machine_id, m.agent_id, m.created_at, m.confidentiality, m.deleted_at
             FROM memory_vectors v JOIN memories m ON m.rowid = v.memory_rowid
             WHERE v.model_id = ?1 AND v.seq > ?2 ORDER BY v.seq LIMIT 4096",
        )?;
        let mut after = last_seq;
        let started = Instant::now();
        loop {
            // Rows go straight into the slots (no copy of each vector or name on the way):
            // at 100k memories this load is what the first search after a start waits for.
            let mut slots = self.state.write().unwrap_or_else(|p| p.into_inner());
            let mut last_read = after;
            statement.for_each_row(params![self.model_id, after], |row| {
                let seq: i64 = row.get(0)?;
                last_read = last_read.max(seq);
                slots.unsaved += 1;
                let memory_rowid: i64 = row.get(1)?;
                let slots = &mut *slots;
                let names = &mut slots.names;
                let facets = Facets {
                    user: row.with_text(3, |t| names.number(t))?,
                    category: row.with_text(4, |t| names.number(t))?,
                    project: row.with_text(5, |t| names.number(t))?,
                    machine: row.with_text(6, |t| names.number(t))?,
                    agent: row.with_text(7, |t| names.number(t))?,
                    created_at_ms: row.get(8)?,
                    restricted: row.with_text(9, |t| {
                        !t.and_then(|t| Confidentiality::parse("confidentiality", t).ok())
                            .is_some_and(Confidentiality::may_leave_machine)
                    })?,
                    live: row.get::<_, Option<i64>>(10)?.is_none(),
                };
                let stored = row.with_blob(2, |blob| {
                    slots.insert(seq, memory_rowid, blob, facets, self.dims)
                })?;
                if !stored {
                    tracing::warn!(seq, "skipping a stored vector of the wrong length");
                }

                Ok(())
            })?;
            slots.last_seq = slots.last_seq.max(last_read);
            if last_read == after {
                break;
            }
            after = last_read;
        }
        if after > last_seq {
            tracing::debug!(
                read_up_to = after,
                ms = started.elapsed().as_secs_f64() * 1e3,
                "vector index caught up"
            );
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

    /// The `seq`s of the `n` live vectors most similar to `query` by quantised dot product
    /// whose memories pass `filter`, best first. Every part of the filter but tags is
    /// applied here, in the scan, so a selective filter costs less, not more; the caller
    /// checks tags (and everything else once more) against the database.
    pub(crate) fn nearest(&self, query: &[f32], filter: &MemoryFilter, n: usize) -> Vec<i64> {
        let query = QueryCodes::new(quantise(query).0);
        let slots = self.state.read().unwrap_or_else(|p| p.into_inner());
        let Some(scan) = ScanFilter::new(filter, &slots.names) else {
            return Vec::new();
        };
        let admitted = |slot: &usize| slots.seqs[*slot] != 0 && scan.admits(&slots.facets[*slot]);
        let len = slots.seqs.len();
        // The scan is bound by memory bandwidth (38 MB at 100k), which a second core
        // nearly doubles; below a few thousand slots a thread costs more than it saves.
        let top = if len >= SPLIT_FROM && cores() > 1 {
            let half = len / 2;
            std::thread::scope(|scope| {
                let second_half = || slots.best(self.dims, &query, (half..len).filter(admitted), n);
                let second = std::thread::Builder::new().spawn_scoped(scope, second_half);
                let mut top = slots.best(self.dims, &query, (0..half).filter(admitted), n);
                match second.map(|thread| thread.join()) {
                    Ok(Ok(other)) => top.merge(other),
                    Ok(Err(panic)) => std::panic::resume_unwind(panic),
                    // The system refused a thread: this one scans the second half too.
                    Err(_) => top.merge(second_half()),
                }
                top
            })
        } else {
            slots.best(self.dims, &query, (0..len).filter(admitted), n)
        };
        slots.seqs_of(top)
    }

    /// Like [`VectorIndex::nearest`], among the vectors of these memories only, with no
    /// filter: for filters the scan cannot apply itself (tags), whose passing memories the
    /// database lists.
    pub(crate) fn nearest_among(&self, query: &[f32], memory_rowids: &[i64], n: usize) -> Vec<i64> {
        let query = QueryCodes::new(quantise(query).0);
        let slots = self.state.read().unwrap_or_else(|p| p.into_inner());
        let candidates = memory_rowids.iter().filter_map(|rowid| {
            slots
                .slot_of_memory
                .get(rowid)
                .copied()
                .filter(|&slot| slots.seqs[slot] != 0 && slots.facets[slot].live)
        });
        slots.seqs_of(slots.best(self.dims, &query, candidates, n))
    }
}

impl Slots {
    /// The `n` best of these slots by quantised score.
    fn best(
        &self,
        dims: usize,
        query: &QueryCodes,
        candidates: impl Iterator<Item = usize>,
        n: usize,
    ) -> TopK {
        let kernel = Kernel::best();
        let mut top = TopK::new(n);
        let mut batch: Vec<u32> = Vec::with_capacity(BATCH);
        let mut dots = [0i32; BATCH];
        let mut score = |batch: &mut Vec<u32>| {
            kernel.dots(&self.codes, &self.sums, dims, batch, query, &mut dots);
            for (&slot, &dot) in batch.iter().zip(&dots) {
                top.offer(dot as f32 * self.scales[slot as usize], slot);
            }
            batch.clear();
        };
        for slot in candidates {
            // Slots are `u32`: four billion vectors is far past what one index holds.
            batch.push(slot as u32);
            if batch.len() == BATCH {
                score(&mut batch);
            }
        }
        score(&mut batch);
        top
    }

    /// The `seq`s of these slots, best first.
    fn seqs_of(&self, top: TopK) -> Vec<i64> {
        top.into_sorted()
            .into_iter()
            .map(|slot| self.seqs[slot as usize])
            .collect()
    }

    /// Puts a stored vector (little-endian `f32`s) into the memory's slot, quantised on
    /// the way; `false` (and nothing changes) when it is not `dims` floats long.
    fn insert(
        &mut self,
        seq: i64,
        memory_rowid: i64,
        blob: &[u8],
        facets: Facets,
        dims: usize,
    ) -> bool {
        if blob.len() != dims * 4 {
            return false;
        }
        let slot = match self.slot_of_memory.get(&memory_rowid) {
            Some(&slot) => slot,
            None => {
                let slot = self.seqs.len();
                self.seqs.push(0);
                self.scales.push(0.0);
                self.sums.push(0);
                self.facets.push(Facets::default());
                self.codes.resize(self.codes.len() + dims, 0);
                self.slot_of_memory.insert(memory_rowid, slot);
                slot
            }
        };
        // Decoded into a buffer first (a copy on little-endian machines): the blob SQLite
        // hands over need not be aligned for f32.
        self.decoded.clear();
        self.decoded.extend(floats_of(blob));
        let codes = &mut self.codes[slot * dims..(slot + 1) * dims];
        let scale = quantise_into(&self.decoded, codes);
        self.sums[slot] = code_sum(codes);
        self.seqs[slot] = seq;
        self.scales[slot] = scale;
        self.facets[slot] = facets;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(values: &[f32]) -> Vec<f32> {
        let norm = values.iter().map(|x| x * x).sum::<f32>().sqrt();
        values.iter().map(|x| x / norm).collect()
    }

    /// A stored vector and its memory's fields, as a test writes them.
    struct StoredVector {
        seq: i64,
        memory_rowid: i64,
        vector: Vec<f32>,
        user: String,
        project: Option<String>,
        confidentiality: String,
        live: bool,
    }

    fn stored(seq: i64, memory_rowid: i64, user: &str, vector: &[f32]) -> StoredVector {
        StoredVector {
            seq,
            memory_rowid,
            vector: unit(vector),
            user: user.to_string(),
            project: None,
            confidentiality: "normal".to_string(),
            live: true,
        }
    }

    impl Slots {
        fn put(&mut self, stored: &StoredVector, dims: usize) {
            let facets = Facets {
                user: self.names.number(Some(&stored.user)),
                category: self.names.number(Some("global")),
                project: self.names.number(stored.project.as_deref()),
                machine: self.names.number(Some("m1")),
                agent: 0,
                created_at_ms: stored.seq * 1000,
                restricted: !Confidentiality::parse("c", &stored.confidentiality)
                    .is_ok_and(Confidentiality::may_leave_machine),
                live: stored.live,
            };
            let blob = to_blob(&stored.vector);
            assert!(self.insert(stored.seq, stored.memory_rowid, &blob, facets, dims));
        }
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
        let query = QueryCodes::new(q_codes);
        for v in &vectors {
            let (codes, scale) = quantise(v);
            let mut out = [0i32];
            Kernel::best().dots(&codes, &[code_sum(&codes)], 384, &[0], &query, &mut out);
            let approximate = out[0] as f32 * scale * q_scale;
            assert!((approximate - dot(v, &vectors[0])).abs() < 0.01);
        }
    }

    #[test]
    fn codes_are_the_values_rounded_on_a_scale_of_127() {
        let values: Vec<f32> = (0..389)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let (codes, scale) = quantise(&values);
        let largest = values.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert_eq!(scale, largest / 127.0);
        for (code, x) in codes.iter().zip(&values) {
            let expected = (x * (127.0 / largest)).round_ties_even();
            assert_eq!(f32::from(*code), expected, "{x}");
        }
        assert!(codes.contains(&-127) || codes.contains(&127));
        // A stored vector with a NaN in it: that value becomes 0, the rest still count.
        let mut broken = values.clone();
        broken[5] = f32::NAN;
        let (broken_codes, _) = quantise(&broken);
        assert_eq!(broken_codes[5], 0);
        assert_eq!(broken_codes[6], codes[6]);
        assert_eq!(quantise(&[0.0; 8]), (vec![0; 8], 0.0));
    }

    #[test]
    fn the_scan_ranks_by_similarity_and_skips_vacant_slots() {
        let index = VectorIndex::new("m", 3);
        {
            let mut slots = index.state.write().unwrap();
            slots.put(&stored(1, 10, "u", &[1.0, 0.0, 0.0]), 3);
            slots.put(&stored(2, 11, "u", &[0.9, 0.1, 0.0]), 3);
            slots.put(&stored(3, 12, "u", &[0.0, 1.0, 0.0]), 3);
        }
        let all = MemoryFilter::default();
        assert_eq!(index.nearest(&unit(&[1.0, 0.05, 0.0]), &all, 2), [1, 2]);
        index.forget(&[10]);
        assert_eq!(index.nearest(&unit(&[1.0, 0.05, 0.0]), &all, 5), [2, 3]);
        assert_eq!(index.len(), 2);
        // A memory's new vector takes its old slot.
        index
            .state
            .write()
            .unwrap()
            .put(&stored(4, 12, "u", &[1.0, 0.0, 0.0]), 3);
        assert_eq!(index.nearest(&unit(&[1.0, 0.0, 0.0]), &all, 1), [4]);
        assert_eq!(index.len(), 2);
        // Among given memories only; forgotten and unknown ones are skipped.
        assert_eq!(
            index.nearest_among(&unit(&[1.0, 0.0, 0.0]), &[10, 11, 99], 5),
            [2]
        );
    }

    #[test]
    fn the_scan_applies_the_filter_itself() {
        let index = VectorIndex::new("m", 3);
        {
            let mut slots = index.state.write().unwrap();
            slots.put(&stored(1, 10, "ann", &[1.0, 0.0, 0.0]), 3);
            slots.put(&stored(2, 11, "bob", &[0.99, 0.01, 0.0]), 3);
            slots.put(&stored(3, 12, "ann", &[0.0, 1.0, 0.0]), 3);
            let mut private = stored(4, 13, "ann", &[0.98, 0.02, 0.0]);
            private.confidentiality = "pii".to_string();
            private.project = Some("infra".to_string());
            slots.put(&private, 3);
            let mut deleted = stored(5, 14, "ann", &[1.0, 0.0, 0.0]);
            deleted.live = false;
            slots.put(&deleted, 3);
        }
        let query = unit(&[1.0, 0.0, 0.0]);
        let filter = |f: fn(&mut MemoryFilter)| {
            let mut filter = MemoryFilter::default();
            f(&mut filter);
            index.nearest(&query, &filter, 10)
        };
        // Soft-deleted memories are never proposed.
        assert_eq!(filter(|_| {}), [1, 2, 4, 3]);
        assert_eq!(filter(|f| f.user_id = Some("ann".into())), [1, 4, 3]);
        assert_eq!(filter(|f| f.user_id = Some("bob".into())), [2]);
        // A name no indexed memory has matches nothing.
        assert!(filter(|f| f.user_id = Some("eve".into())).is_empty());
        assert_eq!(filter(|f| f.project = Some("infra".into())), [4]);
        assert_eq!(
            filter(|f| {
                f.user_id = Some("ann".into());
                f.hide_restricted = true;
            }),
            [1, 3]
        );
        assert_eq!(filter(|f| f.since_ms = Some(2000)), [2, 4, 3]);
        assert_eq!(filter(|f| f.until_ms = Some(2000)), [1]);
        // A renumbered row (the memory moved to another user) moves its slot with it.
        index
            .state
            .write()
            .unwrap()
            .put(&stored(6, 11, "ann", &[0.99, 0.01, 0.0]), 3);
        assert!(filter(|f| f.user_id = Some("bob".into())).is_empty());
        assert_eq!(filter(|f| f.user_id = Some("ann".into())), [1, 6, 4, 3]);
    }

    #[test]
    fn a_scan_split_between_threads_finds_what_one_thread_finds() {
        // More slots than SPLIT_FROM, so `nearest` splits; the expected order comes from
        // scoring every slot here, one by one.
        let dims = 16;
        let mut seed = 11u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let index = VectorIndex::new("m", dims);
        let count = SPLIT_FROM + 3_001;
        {
            let mut slots = index.state.write().unwrap();
            for i in 0..count as i64 {
                let vector: Vec<f32> = (0..dims).map(|_| next()).collect();
                let user = if i % 3 == 0 { "ann" } else { "bob" };
                slots.put(&stored(i + 1, i + 100, user, &vector), dims);
            }
        }
        let query = unit(&(0..dims).map(|_| next()).collect::<Vec<_>>());
        let query_codes = QueryCodes::new(quantise(&query).0);
        let slots = index.state.read().unwrap();
        let mut expected: Vec<(f32, i64, bool)> = (0..count)
            .map(|slot| {
                let codes = &slots.codes[slot * dims..(slot + 1) * dims];
                let dot: i32 = codes
                    .iter()
                    .zip(&query_codes.codes)
                    .map(|(&a, &b)| i32::from(a) * i32::from(b))
                    .sum();
                let ann = slots.facets[slot].user == slots.names.numbers["ann"];
                (dot as f32 * slots.scales[slot], slots.seqs[slot], ann)
            })
            .collect();
        drop(slots);
        expected.sort_by(|a, b| b.0.total_cmp(&a.0));
        let best = |only_ann: bool| -> Vec<i64> {
            expected
                .iter()
                .filter(|e| !only_ann || e.2)
                .take(500)
                .map(|e| e.1)
                .collect()
        };
        assert_eq!(
            index.nearest(&query, &MemoryFilter::default(), 500),
            best(false)
        );
        let ann = MemoryFilter {
            user_id: Some("ann".into()),
            ..MemoryFilter::default()
        };
        assert_eq!(index.nearest(&query, &ann, 500), best(true));
    }
}
