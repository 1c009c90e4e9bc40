//! `hv_bm25`: BM25 for FTS5 with document frequencies given by the caller.
//!
//! FTS5's own `bm25()` computes each query phrase's IDF by scanning that phrase's whole
//! document list, once per statement. The search runs several statements per query (one per
//! ranking tier), and the words that matter for speed are the common ones, whose lists are
//! long: that scan was most of a search's time. The search already knows every word's
//! document frequency (it plans tiers with them), so it passes them in, and this function
//! does only the per-row work.
//!
//! `hv_bm25(memories_fts, frequencies, phrase_words)`:
//! - `frequencies`: space-separated document frequency of each distinct query word;
//! - `phrase_words`: space-separated index into `frequencies` for each phrase of the match
//!   expression, in order (a word appears once per place it occurs in the expression).
//!
//! The score is FTS5's BM25 (k1 = 1.2, b = 0.75, whole-row length, column weights 1.0 for
//! content, 0.5 for context, 0.75 for tags), positive, higher is better. A word occurring
//! in several phrases counts once per row (FTS5's `bm25()` would count it once per phrase).
//! `hv_parts(memories_fts, frequencies, phrase_words)`, with the same arguments: each
//! distinct word's part of the row's score before its IDF, as a blob of little-endian
//! `f64`s (zero for a word the row does not hold; see [`parts_of`]). A caller that sees
//! every matching row this way counts the words' frequencies among those rows itself, and
//! scores them by those (`full_text_ranking.rs`, ranking within a filter).
//!
//! Phrases past those `phrase_words` lists, and columns past the three above (the
//! filter's `facets`, see `full_text_ranking.rs`), neither score nor count towards a row's length.

use std::ffi::{CStr, c_int, c_void};
use std::ptr;

use rusqlite::Connection;
use rusqlite::ffi;

use crate::StoreError;

const K1: f64 = 1.2;
const B: f64 = 0.75;
const COLUMN_WEIGHTS: [f64; 3] = [1.0, 0.5, 0.75];

/// Registers `hv_bm25` and `hv_parts` on `connection`.
pub(crate) fn register(connection: &Connection) -> Result<(), StoreError> {
    type Function = unsafe extern "C" fn(
        *const ffi::Fts5ExtensionApi,
        *mut ffi::Fts5Context,
        *mut ffi::sqlite3_context,
        c_int,
        *mut *mut ffi::sqlite3_value,
    );
    let functions: [(&CStr, Function); 2] = [(c"hv_bm25", hv_bm25), (c"hv_parts", hv_parts)];
    // SAFETY: `handle` is the live connection's database; the statement is prepared,
    // stepped and finalized here, and `api` is only used while the connection lives (FTS5
    // owns the fts5_api object for the lifetime of the database handle).
    unsafe {
        let db = connection.handle();
        let api = fts5_api(db)?;
        let create = (*api)
            .xCreateFunction
            .ok_or_else(|| missing("xCreateFunction"))?;
        for (name, function) in functions {
            let rc = create(api, name.as_ptr(), ptr::null_mut(), Some(function), None);
            if rc != ffi::SQLITE_OK {
                return Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                    ffi::Error::new(rc),
                    Some(format!("cannot register {}", name.to_string_lossy())),
                )));
            }
        }
    }
    Ok(())
}

fn missing(what: &str) -> StoreError {
    StoreError::Corrupt {
        record: "fts5 api".into(),
        detail: format!("{what} is not available"),
    }
}

/// The FTS5 API of a database, fetched the documented way: `SELECT fts5(?1)` with a
/// pointer bound as `fts5_api_ptr`.
unsafe fn fts5_api(db: *mut ffi::sqlite3) -> Result<*mut ffi::fts5_api, StoreError> {
    let mut api: *mut ffi::fts5_api = ptr::null_mut();
    let mut statement: *mut ffi::sqlite3_stmt = ptr::null_mut();
    let sql = c"SELECT fts5(?1)";
    // SAFETY: upheld by the caller (a live db handle); every pointer passed lives across
    // the calls, and the statement is finalized on every path.
    unsafe {
        let rc = ffi::sqlite3_prepare_v2(db, sql.as_ptr(), -1, &mut statement, ptr::null_mut());
        if rc != ffi::SQLITE_OK {
            return Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                ffi::Error::new(rc),
                None,
            )));
        }
        ffi::sqlite3_bind_pointer(
            statement,
            1,
            (&mut api as *mut *mut ffi::fts5_api).cast::<c_void>(),
            c"fts5_api_ptr".as_ptr(),
            None,
        );
        ffi::sqlite3_step(statement);
        ffi::sqlite3_finalize(statement);
    }
    if api.is_null() {
        return Err(missing("fts5_api"));
    }
    Ok(api)
}

/// What one statement's calls share: parsed arguments and collection statistics.
struct QueryStats {
    /// IDF of each distinct word.
    idf: Vec<f64>,
    /// For each phrase, the index of its word in `idf`.
    phrase_words: Vec<usize>,
    /// Average row length in tokens, over all columns.
    average_length: f64,
}

fn parse_list<T: std::str::FromStr>(text: &str) -> Option<Vec<T>> {
    text.split_ascii_whitespace()
        .map(|part| part.parse().ok())
        .collect()
}

/// FTS5's IDF: ln((N - n + 0.5) / (n + 0.5)), floored just above zero so that a word in
/// most rows still counts a little.
pub(crate) fn idf(rows: f64, frequency: f64) -> f64 {
    ((rows - frequency + 0.5) / (frequency + 0.5))
        .ln()
        .max(1e-6)
}

unsafe fn value_text(value: *mut ffi::sqlite3_value) -> Option<String> {
    // SAFETY: `value` is an argument SQLite passed to this call, valid for its duration.
    unsafe {
        let text = ffi::sqlite3_value_text(value);
        if text.is_null() {
            return None;
        }
        let length = usize::try_from(ffi::sqlite3_value_bytes(value)).ok()?;
        let bytes = std::slice::from_raw_parts(text, length);
        std::str::from_utf8(bytes).ok().map(str::to_string)
    }
}

unsafe extern "C" fn drop_stats(stats: *mut c_void) {
    if !stats.is_null() {
        // SAFETY: only ever called by SQLite with a pointer made by Box::into_raw below.
        drop(unsafe { Box::from_raw(stats.cast::<QueryStats>()) });
    }
}

/// Reads the arguments and collection statistics on the first row of a statement, and
/// keeps them as the query's auxiliary data for the rows after it.
unsafe fn query_stats(
    api: &ffi::Fts5ExtensionApi,
    fts: *mut ffi::Fts5Context,
    values: &[*mut ffi::sqlite3_value],
) -> Result<*const QueryStats, c_int> {
    // SAFETY: `fts` is the context of the current call; auxiliary data set here is owned
    // by FTS5 and freed through `drop_stats`.
    unsafe {
        let get = api.xGetAuxdata.ok_or(ffi::SQLITE_MISUSE)?;
        let existing = get(fts, 0);
        if !existing.is_null() {
            return Ok(existing.cast::<QueryStats>());
        }
        if values.len() != 2 {
            return Err(ffi::SQLITE_MISUSE);
        }
        let frequencies: Vec<f64> = value_text(values[0])
            .and_then(|t| parse_list(&t))
            .ok_or(ffi::SQLITE_MISMATCH)?;
        let phrase_words: Vec<usize> = value_text(values[1])
            .and_then(|t| parse_list(&t))
            .ok_or(ffi::SQLITE_MISMATCH)?;
        if phrase_words.iter().any(|&w| w >= frequencies.len()) {
            return Err(ffi::SQLITE_MISMATCH);
        }
        let mut rows: ffi::sqlite3_int64 = 0;
        check(api.xRowCount.ok_or(ffi::SQLITE_MISUSE)?(fts, &mut rows))?;
        let columns = scored_columns(api, fts)?;
        let mut total_tokens: ffi::sqlite3_int64 = 0;
        for column in 0..columns {
            let mut tokens: ffi::sqlite3_int64 = 0;
            check(api.xColumnTotalSize.ok_or(ffi::SQLITE_MISUSE)?(
                fts,
                column,
                &mut tokens,
            ))?;
            total_tokens += tokens;
        }
        let rows = rows.max(1) as f64;
        let stats = Box::new(QueryStats {
            idf: frequencies.iter().map(|&n| idf(rows, n)).collect(),
            phrase_words,
            average_length: (total_tokens as f64 / rows).max(1.0),
        });
        let raw = Box::into_raw(stats);
        let set = api.xSetAuxdata.ok_or(ffi::SQLITE_MISUSE)?;
        let rc = set(fts, raw.cast::<c_void>(), Some(drop_stats));
        if rc != ffi::SQLITE_OK {
            // On failure SQLite has already called the destructor.
            return Err(rc);
        }
        Ok(raw)
    }
}

/// How many of the table's columns take part in scoring: the first ones, up to one per
/// column weight.
///
/// # Safety
/// `fts` must be the context of the current call.
unsafe fn scored_columns(
    api: &ffi::Fts5ExtensionApi,
    fts: *mut ffi::Fts5Context,
) -> Result<c_int, c_int> {
    // SAFETY: the caller passes the current call's context.
    let columns = unsafe { api.xColumnCount.ok_or(ffi::SQLITE_MISUSE)?(fts) };
    Ok(columns.min(COLUMN_WEIGHTS.len() as c_int))
}

fn check(rc: c_int) -> Result<(), c_int> {
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rc)
    }
}

/// The statement's shared statistics, and how strongly the current row holds each
/// distinct word: the sum of its column weights over the word's instances in the row (the
/// largest such sum when the word is in several phrases), zero when it does not hold it.
unsafe fn word_frequencies<'a>(
    api: &ffi::Fts5ExtensionApi,
    fts: *mut ffi::Fts5Context,
    values: &[*mut ffi::sqlite3_value],
) -> Result<(&'a QueryStats, Vec<f64>), c_int> {
    // SAFETY: `query_stats` returns a pointer owned by FTS5 that stays valid for this
    // statement; the other calls use the current call's context.
    unsafe {
        let stats = &*query_stats(api, fts, values)?;
        let mut frequency = vec![0.0f64; stats.idf.len()];
        let mut per_phrase = vec![0.0f64; stats.phrase_words.len()];
        let mut instances: c_int = 0;
        check(api.xInstCount.ok_or(ffi::SQLITE_MISUSE)?(
            fts,
            &mut instances,
        ))?;
        let inst = api.xInst.ok_or(ffi::SQLITE_MISUSE)?;
        for i in 0..instances {
            let (mut phrase, mut column, mut offset) = (0, 0, 0);
            check(inst(fts, i, &mut phrase, &mut column, &mut offset))?;
            let weight = usize::try_from(column)
                .ok()
                .and_then(|c| COLUMN_WEIGHTS.get(c))
                .copied()
                .unwrap_or(0.0);
            if let Some(slot) = usize::try_from(phrase)
                .ok()
                .and_then(|p| per_phrase.get_mut(p))
            {
                *slot += weight;
            }
        }
        // A word occurring in several phrases of the expression counts once.
        for (phrase, weighted) in per_phrase.iter().enumerate() {
            let word = stats.phrase_words[phrase];
            frequency[word] = frequency[word].max(*weighted);
        }
        Ok((stats, frequency))
    }
}

/// A word's part of a row's BM25 score before its IDF, from how strongly the row holds
/// it (`weighted`, see [`word_frequencies`]) and the row's length norm.
fn part(weighted: f64, norm: f64) -> f64 {
    if weighted > 0.0 {
        (weighted * (K1 + 1.0)) / (weighted + norm)
    } else {
        0.0
    }
}

/// The current row's BM25 length norm: K1 * (1 - B + B * length / average length).
///
/// # Safety
/// `fts` must be the context of the current call.
unsafe fn length_norm(
    api: &ffi::Fts5ExtensionApi,
    fts: *mut ffi::Fts5Context,
    stats: &QueryStats,
) -> Result<f64, c_int> {
    // SAFETY: the caller passes the current call's context.
    unsafe {
        let mut length: f64 = 0.0;
        let columns = scored_columns(api, fts)?;
        let size = api.xColumnSize.ok_or(ffi::SQLITE_MISUSE)?;
        for column in 0..columns {
            let mut tokens: c_int = 0;
            check(size(fts, column, &mut tokens))?;
            length += f64::from(tokens);
        }
        Ok(K1 * (1.0 - B + B * length / stats.average_length))
    }
}

/// Each distinct word's [`part`] of the current row's score, as `hv_parts` returns them.
unsafe fn parts(
    api: &ffi::Fts5ExtensionApi,
    fts: *mut ffi::Fts5Context,
    values: &[*mut ffi::sqlite3_value],
) -> Result<Vec<u8>, c_int> {
    // SAFETY: passed on from the caller, which has the current call's context.
    unsafe {
        let (stats, frequency) = word_frequencies(api, fts, values)?;
        let norm = length_norm(api, fts, stats)?;
        Ok(frequency
            .iter()
            .flat_map(|&f| part(f, norm).to_le_bytes())
            .collect())
    }
}

/// The parts in a blob made by `hv_parts` for `words` distinct words; `None` when it does
/// not hold exactly that many.
pub(crate) fn parts_of(blob: &[u8], words: usize) -> Option<impl Iterator<Item = f64> + '_> {
    (blob.len() == words * 8).then(|| {
        blob.chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    })
}

/// The score of the current row.
unsafe fn score(
    api: &ffi::Fts5ExtensionApi,
    fts: *mut ffi::Fts5Context,
    values: &[*mut ffi::sqlite3_value],
) -> Result<f64, c_int> {
    // SAFETY: passed on from the caller, which has the current call's context; the
    // other calls use that context too.
    unsafe {
        let (stats, frequency) = word_frequencies(api, fts, values)?;
        let norm = length_norm(api, fts, stats)?;
        Ok(frequency
            .iter()
            .zip(&stats.idf)
            .map(|(&f, idf)| idf * part(f, norm))
            .sum())
    }
}

/// Runs `compute` for one call of an auxiliary function and hands SQLite its result.
///
/// # Safety
/// The arguments must be those SQLite passed to the auxiliary function.
unsafe fn answer<T>(
    api: *const ffi::Fts5ExtensionApi,
    fts: *mut ffi::Fts5Context,
    context: *mut ffi::sqlite3_context,
    count: c_int,
    values: *mut *mut ffi::sqlite3_value,
    compute: unsafe fn(
        &ffi::Fts5ExtensionApi,
        *mut ffi::Fts5Context,
        &[*mut ffi::sqlite3_value],
    ) -> Result<T, c_int>,
    give: unsafe fn(*mut ffi::sqlite3_context, T),
) {
    // A panic must not cross into C; there is none to expect here, but make sure.
    let outcome = std::panic::catch_unwind(|| {
        // SAFETY: SQLite passes a valid API, context and `count` argument values.
        unsafe {
            let values: &[*mut ffi::sqlite3_value] = match usize::try_from(count) {
                Ok(n) if n > 0 && !values.is_null() => std::slice::from_raw_parts(values, n),
                _ => &[],
            };
            compute(&*api, fts, values)
        }
    });
    // SAFETY: `context` is this call's result context.
    unsafe {
        match outcome {
            Ok(Ok(value)) => give(context, value),
            Ok(Err(code)) => ffi::sqlite3_result_error_code(context, code),
            Err(_) => ffi::sqlite3_result_error_code(context, ffi::SQLITE_INTERNAL),
        }
    }
}

/// An auxiliary function's C entry point, which hands SQLite's arguments to [`answer`]
/// with what computes the result and how SQLite takes it.
macro_rules! auxiliary_function {
    ($name:ident, $compute:expr, $give:expr) => {
        unsafe extern "C" fn $name(
            api: *const ffi::Fts5ExtensionApi,
            fts: *mut ffi::Fts5Context,
            context: *mut ffi::sqlite3_context,
            count: c_int,
            values: *mut *mut ffi::sqlite3_value,
        ) {
            // SAFETY: SQLite's own arguments, passed on.
            unsafe { answer(api, fts, context, count, values, $compute, $give) }
        }
    };
}

/// # Safety
/// `context` must be the current call's result context.
unsafe fn give_double(context: *mut ffi::sqlite3_context, value: f64) {
    // SAFETY: as the caller promises.
    unsafe { ffi::sqlite3_result_double(context, value) }
}

/// # Safety
/// `context` must be the current call's result context.
unsafe fn give_blob(context: *mut ffi::sqlite3_context, bytes: Vec<u8>) {
    let Ok(length) = c_int::try_from(bytes.len()) else {
        // SAFETY: as the caller promises.
        return unsafe { ffi::sqlite3_result_error_code(context, ffi::SQLITE_TOOBIG) };
    };
    // SAFETY: as the caller promises; SQLITE_TRANSIENT makes SQLite copy the bytes
    // before `bytes` is dropped.
    unsafe {
        ffi::sqlite3_result_blob(
            context,
            bytes.as_ptr().cast::<c_void>(),
            length,
            ffi::SQLITE_TRANSIENT(),
        )
    }
}

auxiliary_function!(hv_bm25, score, give_double);
auxiliary_function!(hv_parts, parts, give_blob);

#[cfg(test)]
mod tests {
    use super::*;

    /// A table shaped like `memories_fts` (content, context, tags) with three notes about
    /// a heap and elastic3, and `last` as the fourth.
    fn notes_table(last: &str) -> Connection {
        let connection = Connection::open_in_memory().unwrap();
        register(&connection).unwrap();
        connection
            .execute_batch(
                "CREATE VIRTUAL TABLE t USING fts5(content, context, tags);
                 INSERT INTO t VALUES ('heap heap on elastic3', NULL, 'es');
                 INSERT INTO t VALUES ('a long note that mentions the heap once among many words', 'x', '[]');
                 INSERT INTO t VALUES ('elastic3 disk', 'ctx heap', 'heap');",
            )
            .unwrap();
        connection
            .execute("INSERT INTO t VALUES (?1, NULL, NULL)", [last])
            .unwrap();
        connection
    }

    #[test]
    fn idf_matches_fts5() {
        assert!((idf(1000.0, 10.0) - (990.5f64 / 10.5).ln()).abs() < 1e-12);
        assert_eq!(
            idf(10.0, 10.0),
            1e-6,
            "a word in every row still counts a little"
        );
    }

    #[test]
    fn ranks_like_fts5_bm25_when_each_word_is_one_phrase() {
        let connection = notes_table("nothing relevant");
        let df = |word: &str| -> i64 {
            connection
                .query_row(
                    "SELECT count(*) FROM t WHERE t MATCH ?1",
                    [format!("\"{word}\"")],
                    |r| r.get(0),
                )
                .unwrap()
        };
        let frequencies = format!("{} {}", df("heap"), df("elastic3"));
        let ours: Vec<(i64, f64)> = connection
            .prepare("SELECT rowid, hv_bm25(t, ?1, '0 1') FROM t WHERE t MATCH '\"heap\" OR \"elastic3\"' ORDER BY rowid")
            .unwrap()
            .query_map([&frequencies], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let theirs: Vec<(i64, f64)> = connection
            .prepare("SELECT rowid, -bm25(t, 1.0, 0.5, 0.75) FROM t WHERE t MATCH '\"heap\" OR \"elastic3\"' ORDER BY rowid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ours.len(), 3);
        for ((rowid, a), (_, b)) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() < 1e-9, "row {rowid}: hv_bm25 {a} vs bm25 {b}");
        }
    }

    #[test]
    fn parts_weighed_by_idf_add_up_to_the_score() {
        let connection = notes_table("disk only");
        let rows: Vec<(f64, Vec<u8>)> = connection
            .prepare(
                "SELECT hv_bm25(t, '2 3 2', '0 1 2'), hv_parts(t, '2 3 2', '0 1 2') FROM t
                 WHERE t MATCH '\"heap\" OR \"elastic3\" OR \"disk\"' ORDER BY rowid",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 4);
        let idf = [idf(4.0, 2.0), idf(4.0, 3.0), idf(4.0, 2.0)];
        for (score, blob) in &rows {
            let parts: Vec<f64> = parts_of(blob, 3).unwrap().collect();
            assert_eq!(parts.len(), 3);
            let sum: f64 = parts.iter().zip(idf).map(|(p, i)| i * p).sum();
            assert_eq!(sum, *score);
        }
        // The last row holds "disk" alone; the first holds heap and elastic3 but not disk.
        let held =
            |blob: &[u8]| -> Vec<bool> { parts_of(blob, 3).unwrap().map(|p| p > 0.0).collect() };
        assert_eq!(held(&rows[0].1), [true, true, false]);
        assert_eq!(held(&rows[3].1), [false, false, true]);
        assert!(parts_of(&[0u8; 7], 1).is_none());
        assert!(parts_of(&rows[0].1, 2).is_none());
    }

    #[test]
    fn bad_arguments_are_an_sql_error_not_a_crash() {
        let connection = Connection::open_in_memory().unwrap();
        register(&connection).unwrap();
        connection
            .execute_batch(
                "CREATE VIRTUAL TABLE t USING fts5(content); INSERT INTO t VALUES ('heap');",
            )
            .unwrap();
        for (frequencies, phrases) in [("x", "0"), ("1", "5"), ("1", "")] {
            let result: rusqlite::Result<f64> = connection.query_row(
                "SELECT hv_bm25(t, ?1, ?2) FROM t WHERE t MATCH 'heap'",
                [frequencies, phrases],
                |r| r.get(0),
            );
            if phrases.is_empty() {
                // No phrase maps to a word: the row simply scores nothing.
                continue;
            }
            assert!(result.is_err(), "{frequencies:?} {phrases:?} should fail");
        }
    }
}
