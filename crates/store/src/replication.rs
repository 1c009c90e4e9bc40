//! The engine side of replication: what this node has seen (a version vector), the
//! shareable operations another node lacks (in pages), applying operations that came from
//! other nodes (last writer wins per record, tombstones win over everything older), and a
//! digest of the replicated state that two nodes share exactly when they hold the same
//! replicated data.
//!
//! Transport, peers and scheduling live elsewhere; this module only guarantees that
//! exchanging `ops_after` pages in both directions, in any order, any number of times,
//! converges.
//!
//! Rules:
//! - Each node's own operations carry strictly increasing HLC stamps, so "the operations of
//!   origin O with a stamp above v" is exactly what a node that has seen O up to v lacks.
//!   Pages are ordered by stamp, so every page holds, per origin, a prefix of what is
//!   missing, and a cut-off exchange resumes where it stopped.
//! - An applied remote operation is appended to the local log with its original id, stamp
//!   and origin, so it is relayed onwards (A learns C's writes through B) and applying it
//!   twice is a no-op.
//! - A memory's state is the payload of its operation with the highest stamp; a tombstone
//!   (hard delete or erasure) ends the record for good: no operation, older or newer, brings
//!   it back.
//! - Only shareable operations leave a node, and a received operation is admitted only by
//!   the rules in [`Store::admit`]: a shareable payload that obeys the local write rules,
//!   stamped at most `sync.max_clock_skew_secs` ahead, never about a
//!   local record that may not leave this machine. The rules hold against a misbehaving
//!   peer: it can spoil only what it could legitimately write.

use std::collections::BTreeMap;

use crate::db::{OptionalExtension, Transaction, params};
use haivemind_core::audit::AuditEvent;
use haivemind_core::memory::check_reason;
use haivemind_core::memory::json::{from_json, to_json};
use haivemind_core::{HlcStamp, InvalidInput, Memory, MemoryId};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::memories::shareable;
use crate::oplog::{OP_COLUMNS, OpKind, OpLogEntry, WireVector, read_entries, redact};
use crate::rows::{insert_memory, replace_memory};
use crate::{Store, StoreError};

/// The newest stamp seen from each origin.
pub type VersionVector = BTreeMap<String, u64>;

/// A received operation admitted here: what to log, and the memory it sets, if any.
struct Admitted {
    payload: Value,
    memory: Option<Memory>,
}

/// The most refusals one [`ApplyOutcome`] lists (all are counted).
pub const MAX_LISTED_REFUSALS: usize = 100;

/// One received operation that was not applied, and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The operation's id, as the peer sent it (at most 256 bytes).
    pub op_id: String,
    /// The machine it claims to come from (at most 256 bytes).
    pub origin: String,
    /// The field at fault (`hlc`, `payload.content`, `record_id`, ...).
    pub field: String,
    /// The rule broken, in words, never repeating more than a short excerpt of the input.
    pub reason: String,
}

/// What applying a batch of remote operations did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Operations in the batch.
    pub received: usize,
    /// New here and written to the log (relayed onwards from now on).
    pub logged: usize,
    /// Of those, the ones that changed a record's state (the others were older than it).
    pub changed: usize,
    /// Already in the log: sent twice, or learnt through another peer.
    pub already_known: usize,
    /// Refused: see [`Store::admit`] for the rules.
    pub refused: usize,
    /// The first [`MAX_LISTED_REFUSALS`] refusals, each with its reason.
    pub refusals: Vec<Refusal>,
}

/// Whether this node holds memory `record_id` as one that may not leave it.
fn held_here_only(tx: &Transaction<'_>, record_id: &str) -> Result<bool, StoreError> {
    let local: Option<(String, String)> = tx
        .query_row(
            "SELECT scope, confidentiality FROM memories WHERE id = ?1",
            [record_id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    Ok(local.is_some_and(|(scope, confidentiality)| {
        !crate::memories::shareable_levels(&scope, &confidentiality)
    }))
}

/// Whether memory `record_id` was ever shared (a shareable operation about it is logged):
/// then the fleet knows it, and may legitimately have removed it.
fn shared_once(tx: &Transaction<'_>, record_id: &str) -> Result<bool, StoreError> {
    let found: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM op_log WHERE record_kind = 'memory' AND record_id = ?1 AND shareable = 1 LIMIT 1",
            [record_id],
            |row| row.get(0),
        )
        .optional()?;
    Ok(found.is_some())
}

/// The stamp of memory `record_id`'s tombstone, if it has one.
fn tombstone_of(tx: &Transaction<'_>, record_id: &str) -> Result<Option<HlcStamp>, StoreError> {
    Ok(tx
        .query_row(
            "SELECT hlc, hlc_origin FROM tombstones WHERE record_kind = 'memory' AND record_id = ?1",
            [record_id],
            |row| {
                Ok(HlcStamp::new(
                    row.get::<_, i64>(0)? as u64,
                    row.get::<_, String>(1)?,
                ))
            },
        )
        .optional()?)
}

/// Records `op`'s removal as the memory's tombstone. A later removal of the same record
/// only moves the stamp, so every node keeps the same (highest) one. Leaves the memory's
/// row, if any, alone. Returns whether the tombstone changed.
fn keep_tombstone(tx: &Transaction<'_>, op: &OpLogEntry) -> Result<bool, StoreError> {
    match tombstone_of(tx, &op.record_id)? {
        None => {
            tx.execute(
                "INSERT INTO tombstones (record_kind, record_id, hlc, hlc_origin, erased_at, reason)
                 VALUES ('memory', ?1, ?2, ?3, ?4, NULL)",
                params![
                    op.record_id,
                    op.stamp.time as i64,
                    op.stamp.origin,
                    haivemind_core::time_format::now_ms()
                ],
            )?;
            Ok(true)
        }
        Some(existing) if op.stamp > existing => {
            tx.execute(
                "UPDATE tombstones SET hlc = ?2, hlc_origin = ?3 WHERE record_kind = 'memory' AND record_id = ?1",
                params![op.record_id, op.stamp.time as i64, op.stamp.origin],
            )?;
            Ok(true)
        }
        Some(_) => Ok(false),
    }
}

/// Whether a withdrawal of memory `record_id` stamped after `stamp` is in the log.
fn withdrawn_after(
    tx: &Transaction<'_>,
    record_id: &str,
    stamp: &HlcStamp,
) -> Result<bool, StoreError> {
    let found: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM op_log
             WHERE record_kind = 'memory' AND record_id = ?1 AND op = 'withdraw'
               AND (hlc > ?2 OR (hlc = ?2 AND origin > ?3))
             LIMIT 1",
            params![record_id, stamp.time as i64, stamp.origin],
            |row| row.get(0),
        )
        .optional()?;
    Ok(found.is_some())
}

impl ApplyOutcome {
    /// The audit event for the refusals of operations received from `peer` (None when
    /// nothing was refused): named fields only, the count and the first refusal's ids.
    pub fn refusal_event(&self, peer: &str, via: &str) -> Option<AuditEvent> {
        let first = self.refusals.first()?;
        Some(
            AuditEvent::new("sync_refused")
                .with("peer_machine_id", peer)
                .with("via", via)
                .with("refused", self.refused)
                .with("first_op_id", first.op_id.clone())
                .with("first_origin", first.origin.clone())
                .with("first_field", first.field.clone()),
        )
    }

    /// One bounded line for the log about what was refused, if anything.
    pub fn refusal_summary(&self) -> Option<String> {
        let first = self.refusals.first()?;
        Some(format!(
            "{} refused; the first, {}: {}: {}",
            self.refused, first.op_id, first.field, first.reason
        ))
    }

    fn refuse(&mut self, op: &OpLogEntry, problem: InvalidInput) {
        self.refused += 1;
        if self.refusals.len() < MAX_LISTED_REFUSALS {
            self.refusals.push(Refusal {
                op_id: op.op_id.clone(),
                origin: op.stamp.origin.clone(),
                field: problem.field,
                reason: problem.rule,
            });
        }
    }
}

impl Store {
    /// The newest stamp this node holds from each origin.
    pub fn version_vector(&self) -> Result<VersionVector, StoreError> {
        let reader = self.reader()?;
        let mut vector = VersionVector::new();
        // Compacted entries still count as seen (see `compact_removed`).
        for sql in [
            "SELECT origin, max(hlc) FROM op_log GROUP BY origin",
            "SELECT origin, hlc FROM op_log_floor",
        ] {
            let mut statement = reader.prepare_cached(sql)?;
            let rows = statement.query_map(params![], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
            })?;
            for row in rows {
                let (origin, hlc) = row?;
                let seen = vector.entry(origin).or_insert(0);
                *seen = (*seen).max(hlc);
            }
        }
        Ok(vector)
    }

    /// Compacts removed records: deletes the op-log entries of every record removed (hard
    /// delete or erasure) before `removed_before_ms`, except the removal operations. Those
    /// earlier entries are already redacted (content-free) and can change nothing, since
    /// the tombstone beats them; the removal operation and the tombstone stay for good, so
    /// any node, however long it was away, still learns of the removal, and no old copy,
    /// backup or export can bring the record back. Returns the entries deleted.
    pub fn compact_removed(&self, removed_before_ms: i64) -> Result<usize, StoreError> {
        const DOOMED: &str = "o.op NOT IN ('hard_delete', 'erase') AND EXISTS (
            SELECT 1 FROM tombstones t
            WHERE t.record_kind = o.record_kind AND t.record_id = o.record_id AND t.erased_at < ?1)";
        self.write(|tx, _clock| {
            tx.execute(
                &format!(
                    "INSERT INTO op_log_floor (origin, hlc)
                     SELECT o.origin, max(o.hlc) FROM op_log o WHERE {DOOMED} GROUP BY o.origin
                     ON CONFLICT (origin) DO UPDATE SET hlc = CASE
                         WHEN excluded.hlc > op_log_floor.hlc THEN excluded.hlc
                         ELSE op_log_floor.hlc END"
                ),
                [removed_before_ms],
            )?;
            Ok(tx.execute(
                &format!(
                    "DELETE FROM op_log WHERE seq IN (SELECT o.seq FROM op_log o WHERE {DOOMED})"
                ),
                [removed_before_ms],
            )?)
        })
    }

    /// The local sequence number of the newest op-log entry (0 when empty): it moves
    /// with every write, local or replicated, so a watcher knows when to push.
    pub fn op_log_head(&self) -> Result<i64, StoreError> {
        let reader = self.reader()?;
        Ok(reader.query_row(
            "SELECT coalesce(max(seq), 0) FROM op_log",
            params![],
            |row| row.get(0),
        )?)
    }

    /// Up to `limit` shareable operations that a node which has seen `seen` lacks, oldest
    /// stamp first. An empty page means it lacks nothing.
    pub fn ops_after(
        &self,
        seen: &VersionVector,
        limit: usize,
    ) -> Result<Vec<OpLogEntry>, StoreError> {
        let seen_json = serde_json::to_string(seen).map_err(|e| StoreError::Corrupt {
            record: "version vector".into(),
            detail: e.to_string(),
        })?;
        let reader = self.reader()?;
        // The peer's version vector, a JSON object of origin to newest stamp, as a table.
        let (seen_table, seen_stamp) = match reader.dialect() {
            crate::db::Dialect::Sqlite => ("json_each(?1) v ON v.key = o.origin", "v.value"),
            crate::db::Dialect::Postgres => (
                "jsonb_each_text(CAST(?1 AS jsonb)) AS v(key, value) ON v.key COLLATE \"C\" = o.origin",
                "CAST(v.value AS bigint)",
            ),
        };
        let mut statement = reader.prepare_cached(&format!(
            "SELECT {OP_COLUMNS} FROM op_log o LEFT JOIN {seen_table}
             WHERE o.shareable = 1 AND o.hlc > coalesce({seen_stamp}, -1)
             ORDER BY o.hlc, o.origin LIMIT ?2"
        ))?;
        let mut entries = read_entries(&mut statement, params![seen_json, limit as i64])?;
        // The vector travels with the operation that carries the text it was made from: a
        // record's current vector goes with each of its operations whose text is still the
        // record's text (an older text's vector is gone; a receiver embeds it if it must).
        let mut vector_of = reader.prepare_cached(
            "SELECT v.model_id, v.vector FROM memories m JOIN memory_vectors v ON v.memory_rowid = m.rowid
             WHERE m.id = ?1 AND m.content = ?2",
        )?;
        for entry in &mut entries {
            let Some(content) = entry.payload.get("content").and_then(|c| c.as_str()) else {
                continue;
            };
            let found: Option<(String, Vec<u8>)> = vector_of
                .query_row(params![entry.record_id, content], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()?;
            entry.vector = found.and_then(|(model_id, blob)| {
                let data = crate::vectors::from_blob(&blob, blob.len() / 4)?;
                Some(WireVector { model_id, data })
            });
        }
        Ok(entries)
    }

    /// Applies operations received from another node, in one transaction. Each operation
    /// is first admitted by [`Store::admit`]; the ones it refuses are reported, one by one,
    /// in [`ApplyOutcome::refusals`], and change nothing here.
    pub fn apply_remote(&self, ops: &[OpLogEntry]) -> Result<ApplyOutcome, StoreError> {
        let mut outcome = ApplyOutcome {
            received: ops.len(),
            ..ApplyOutcome::default()
        };
        let mut forgotten_rowids = Vec::new();
        // Memories given a new vector here: the index replaces theirs when it catches up,
        // so they must not be forgotten after it did.
        let mut revectored = Vec::new();
        let now_wall_ms = haivemind_core::time_format::now_ms().max(0) as u64;
        self.write(|tx, clock| {
            for op in ops {
                let known: Option<i64> = tx
                    .query_row(
                        "SELECT seq FROM op_log WHERE op_id = ?1",
                        [&op.op_id],
                        |row| row.get(0),
                    )
                    .optional()?;
                if known.is_some() {
                    outcome.already_known += 1;
                    continue;
                }
                let admitted = match self.admit(tx, op, now_wall_ms)? {
                    Ok(admitted) => admitted,
                    Err(problem) => {
                        outcome.refuse(op, problem);
                        continue;
                    }
                };
                if op.record_kind == "memory" && held_here_only(tx, &op.record_id)? {
                    if matches!(op.op, OpKind::HardDelete | OpKind::Erase)
                        && shared_once(tx, &op.record_id)?
                    {
                        // The fleet removes for good a memory it knew, which this node
                        // has made private meanwhile: the removal is logged and its
                        // tombstone kept, so every node agrees on the fleet's record; the
                        // private copy stays, untouched.
                        clock.observe(op.stamp.time);
                        self.log_remote(tx, op, &admitted.payload)?;
                        outcome.logged += 1;
                        keep_tombstone(tx, op)?;
                        continue;
                    }
                    // A peer still holds a shared copy this node has made private: say
                    // again that it is withdrawn, so the fleet drops its copies.
                    if admitted.memory.is_some() {
                        self.withdraw_again(tx, clock, op)?;
                    }
                    outcome.refuse(
                        op,
                        InvalidInput::new(
                            "record_id",
                            "names a memory that may not leave this machine: no peer may change or remove it",
                        ),
                    );
                    continue;
                }
                clock.observe(op.stamp.time);
                self.log_remote(tx, op, &admitted.payload)?;
                outcome.logged += 1;
                let Some(memory) = admitted.memory else {
                    if op.record_kind != "memory" {
                        // Coordination records: the operation joins the record's log, and
                        // the record's state is replayed from all of them.
                        crate::coordination::replay(tx, &op.record_kind, &op.record_id)?;
                        outcome.changed += 1;
                        continue;
                    }
                    if self.apply_effect(tx, op, None, &mut forgotten_rowids)? {
                        outcome.changed += 1;
                    }
                    continue;
                };
                if self.apply_effect(tx, op, Some(memory), &mut forgotten_rowids)? {
                    outcome.changed += 1;
                    if let Some(rowid) = self.keep_vector(tx, op)? {
                        revectored.push(rowid);
                    }
                }
            }
            Ok(())
        })?;
        forgotten_rowids.retain(|rowid| !revectored.contains(rowid));
        if let Some(index) = &self.vectors {
            index.forget(&forgotten_rowids);
        }
        // A memory removed for good (or withdrawn) here: the index's file holds its codes.
        // A vector dropped because a peer changed the text is no reason to rewrite it.
        let removed = ops
            .iter()
            .any(|op| matches!(op.op, OpKind::HardDelete | OpKind::Erase | OpKind::Withdraw));
        if removed && !forgotten_rowids.is_empty() {
            self.remove_vector_file();
        }
        Ok(outcome)
    }

    /// Decides whether a peer's operation may be applied here, by the rules that hold
    /// against any peer, honest or not:
    /// - only shareable operations travel, and each names its origin (this node's own
    ///   included: a node restored from a backup or set up anew under its old id gets its
    ///   own writes back from its peers);
    /// - no stamp further ahead of this node's clock than `max_clock_skew_ms`, so no peer
    ///   drags the clock (and with it every later local write) into the future, and no
    ///   second operation under a stamp its origin already used;
    /// - no operation touches a local record that may not leave this machine (it can never
    ///   have come from a peer);
    /// - the record obeys the rules a local write obeys ([`MemoryRules::check_memory`],
    ///   the coordination limits), so what a peer sends is what a local client could write.
    ///
    /// Returns what to log (the payload in its canonical form, so nothing a peer adds
    /// beside the fields rides along) and the memory to apply, or the first rule broken.
    ///
    /// [`MemoryRules::check_memory`]: haivemind_core::memory::MemoryRules::check_memory
    fn admit(
        &self,
        tx: &Transaction<'_>,
        op: &OpLogEntry,
        now_wall_ms: u64,
    ) -> Result<Result<Admitted, InvalidInput>, StoreError> {
        if !op.shareable {
            return Ok(Err(InvalidInput::new(
                "shareable",
                "the operation may not leave the machine that made it",
            )));
        }
        if op.stamp.origin.trim().is_empty() {
            return Ok(Err(InvalidInput::new(
                "origin",
                "must name the machine that made the operation",
            )));
        }
        let ahead_ms = op.stamp.wall_ms().saturating_sub(now_wall_ms);
        if ahead_ms > self.max_clock_skew_ms {
            return Ok(Err(InvalidInput::new(
                "hlc",
                format!(
                    "is stamped {} s ahead of this node's clock, more than sync.max_clock_skew_secs ({} s)",
                    ahead_ms / 1000,
                    self.max_clock_skew_ms / 1000
                ),
            )));
        }
        // One origin never stamps two operations alike (its clock only moves forward), and
        // what a node lacks is found by stamp: a second operation under a stamp already
        // logged would reach some nodes and never others.
        let clash: Option<String> = tx
            .query_row(
                "SELECT op_id FROM op_log WHERE origin = ?1 AND hlc = ?2 LIMIT 1",
                params![op.stamp.origin, op.stamp.time as i64],
                |row| row.get(0),
            )
            .optional()?;
        if clash.is_some() {
            return Ok(Err(InvalidInput::new(
                "hlc",
                "another operation of this origin already has this stamp",
            )));
        }
        match op.record_kind.as_str() {
            "agent" | "task" => {
                return Ok(crate::coordination::check_remote_op(
                    &op.record_kind,
                    &op.record_id,
                    &op.payload,
                )
                .map(|payload| Admitted {
                    payload,
                    memory: None,
                }));
            }
            "memory" => {}
            other => {
                return Ok(Err(InvalidInput::new(
                    "record_kind",
                    format!(
                        "unknown record kind \"{}\": memory, agent or task",
                        haivemind_core::error::excerpt(other)
                    ),
                )));
            }
        }
        match MemoryId::parse("record_id", &op.record_id) {
            // Ids are compared as text: only the canonical form names the record.
            Ok(id) if id.to_string() == op.record_id => {}
            Ok(_) => {
                return Ok(Err(InvalidInput::new(
                    "record_id",
                    "must be a UUID in its canonical form (lower-case, hyphenated)",
                )));
            }
            Err(problem) => return Ok(Err(problem)),
        }
        let admitted = match op.op {
            OpKind::HardDelete | OpKind::Erase => {
                let reason = match op.payload.get("reason") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(reason)) => Some(reason.as_str()),
                    Some(_) => {
                        return Ok(Err(InvalidInput::new("payload.reason", "must be a string")));
                    }
                };
                if let Some(reason) = reason
                    && let Err(problem) = check_reason("payload.reason", reason)
                {
                    return Ok(Err(problem));
                }
                Admitted {
                    payload: json!({ "reason": reason }),
                    memory: None,
                }
            }
            OpKind::Withdraw => Admitted {
                payload: json!({}),
                memory: None,
            },
            _ if op.payload.get("redacted").is_some() => Admitted {
                payload: json!({ "redacted": true }),
                memory: None,
            },
            _ => {
                let memory = match from_json(&op.payload, &op.stamp.origin) {
                    Ok(memory) => memory,
                    Err(problem) => return Ok(Err(problem.within("payload"))),
                };
                if memory.id.to_string() != op.record_id {
                    return Ok(Err(InvalidInput::new(
                        "payload.id",
                        "must be the operation's record_id",
                    )));
                }
                if !shareable(&memory) {
                    return Ok(Err(InvalidInput::new(
                        "payload.scope",
                        "the memory may not leave the machine that wrote it (its scope or confidentiality keeps it there)",
                    )));
                }
                if let Err(problem) = self.rules.check_memory(&memory) {
                    return Ok(Err(problem.within("payload")));
                }
                Admitted {
                    payload: to_json(&memory),
                    memory: Some(memory),
                }
            }
        };
        Ok(Ok(admitted))
    }

    /// Logs a new withdrawal of `op`'s memory, stamped after `op`, when the memory was shared
    /// once (so peers know it) and no withdrawal after `op` is logged yet: a peer that
    /// changed the memory after this node made it private would otherwise keep the shared
    /// copy for good. `op` passed the skew bound, so the clock moves no further than that.
    fn withdraw_again(
        &self,
        tx: &Transaction<'_>,
        clock: &mut haivemind_core::HybridClock,
        op: &OpLogEntry,
    ) -> Result<(), StoreError> {
        if !shared_once(tx, &op.record_id)? || withdrawn_after(tx, &op.record_id, &op.stamp)? {
            return Ok(());
        }
        clock.observe(op.stamp.time);
        crate::oplog::append(
            tx,
            clock,
            &self.machine_id,
            crate::oplog::NewOp {
                record_kind: "memory",
                record_id: op.record_id.clone(),
                op: OpKind::Withdraw,
                payload: json!({}),
                shareable: true,
            },
        )?;
        Ok(())
    }

    /// Appends a received operation to the local log with its original id, stamp and
    /// origin, which is what relays it onwards.
    fn log_remote(
        &self,
        tx: &Transaction<'_>,
        op: &OpLogEntry,
        payload: &Value,
    ) -> Result<(), StoreError> {
        tx.execute(
            "INSERT INTO op_log (op_id, hlc, origin, record_kind, record_id, op, payload, shareable)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)",
            params![
                op.op_id,
                op.stamp.time as i64,
                op.stamp.origin,
                op.record_kind,
                op.record_id,
                op.op.as_str(),
                payload.to_string(),
            ],
        )?;
        Ok(())
    }

    /// Stores the vector that came with `op` (which just set its record's text), unless this
    /// node embeds with another model: then its own vector is made in the background.
    /// Returns the memory's rowid when a vector was stored.
    fn keep_vector(
        &self,
        tx: &Transaction<'_>,
        op: &OpLogEntry,
    ) -> Result<Option<i64>, StoreError> {
        let Some(vector) = &op.vector else {
            return Ok(None);
        };
        if let Some(embedder) = &self.embedder
            && (embedder.model_id() != vector.model_id
                || embedder.dimensions() != vector.data.len())
        {
            return Ok(None);
        }
        let Some(content) = op.payload.get("content").and_then(|c| c.as_str()) else {
            return Ok(None);
        };
        let rowid: Option<i64> = tx
            .query_row(
                "SELECT rowid FROM memories WHERE id = ?1 AND content = ?2",
                params![op.record_id, content],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(rowid) = rowid {
            crate::vectors::put(tx, rowid, &vector.model_id, &vector.data)?;
        }
        Ok(rowid)
    }

    /// Makes the record's state follow `op` if `op` is the newest word on it. Returns
    /// whether the state changed.
    fn apply_effect(
        &self,
        tx: &Transaction<'_>,
        op: &OpLogEntry,
        memory: Option<Memory>,
        forgotten_rowids: &mut Vec<i64>,
    ) -> Result<bool, StoreError> {
        if tombstone_of(tx, &op.record_id)?.is_some() {
            // Gone for good: only a later removal moves the tombstone's stamp.
            if matches!(op.op, OpKind::HardDelete | OpKind::Erase) && keep_tombstone(tx, op)? {
                return Ok(true);
            }
            redact(tx, "memory", &op.record_id)?;
            return Ok(false);
        }
        // The local copy: its rowid, the stamp of its state, and its text.
        let current: Option<(i64, HlcStamp, String)> = tx
            .query_row(
                "SELECT rowid, hlc, hlc_origin, content FROM memories WHERE id = ?1",
                [&op.record_id],
                |row| {
                    Ok((
                        row.get(0)?,
                        HlcStamp::new(row.get::<_, i64>(1)? as u64, row.get::<_, String>(2)?),
                        row.get(3)?,
                    ))
                },
            )
            .optional()?;
        // Removes the local copy and its history (its vector goes by ON DELETE CASCADE).
        let mut drop_copy = |rowid: i64| -> Result<(), StoreError> {
            tx.execute("DELETE FROM memories WHERE rowid = ?1", [rowid])?;
            forgotten_rowids.push(rowid);
            Ok(())
        };
        match op.op {
            OpKind::HardDelete | OpKind::Erase => {
                if let Some((rowid, _, _)) = current {
                    drop_copy(rowid)?;
                }
                tx.execute(
                    "DELETE FROM memory_history WHERE memory_id = ?1",
                    [&op.record_id],
                )?;
                keep_tombstone(tx, op)?;
                redact(tx, "memory", &op.record_id)?;
                Ok(true)
            }
            OpKind::Withdraw => {
                let Some((rowid, stamp, _)) = current else {
                    return Ok(false);
                };
                if stamp >= op.stamp {
                    return Ok(false);
                }
                drop_copy(rowid)?;
                tx.execute(
                    "DELETE FROM memory_history WHERE memory_id = ?1",
                    [&op.record_id],
                )?;
                Ok(true)
            }
            OpKind::Create | OpKind::Update | OpKind::SoftDelete | OpKind::Recover => {
                let Some(memory) = memory else {
                    // A redacted payload: its record was removed where it came from, and the
                    // removal is on its way; nothing to show meanwhile.
                    return Ok(false);
                };
                if current
                    .as_ref()
                    .is_some_and(|(_, stamp, _)| *stamp >= op.stamp)
                {
                    return Ok(false);
                }
                // A withdrawal leaves no copy to compare with: its logged operation is the
                // marker. An older change that arrives after it (from another peer) must not
                // bring the shared copy back.
                if current.is_none() && withdrawn_after(tx, &op.record_id, &op.stamp)? {
                    return Ok(false);
                }
                match current {
                    Some((rowid, _, old_content)) => {
                        replace_memory(tx, &memory, &op.stamp)?;
                        if old_content != memory.content {
                            // The vector described the old text; embed_missing makes a new one.
                            tx.execute(
                                "DELETE FROM memory_vectors WHERE memory_rowid = ?1",
                                [rowid],
                            )?;
                            forgotten_rowids.push(rowid);
                        }
                    }
                    None => {
                        insert_memory(tx, &memory, &op.stamp)?;
                    }
                }
                let mut details = Map::new();
                details.insert("from_machine".into(), json!(op.stamp.origin));
                details.insert("op".into(), json!(op.op.as_str()));
                self.record_history(
                    tx,
                    &memory,
                    "replicate",
                    memory.agent_id.as_deref(),
                    details,
                )?;
                Ok(true)
            }
        }
    }

    /// A digest of the replicated state: every shareable memory's id, stamp and deletion
    /// state, every tombstone, and every agent's and task's newest stamp. Two nodes have equal digests exactly when they hold the
    /// same replicated data.
    pub fn state_digest(&self) -> Result<String, StoreError> {
        let reader = self.reader()?;
        let mut hasher = Sha256::new();
        let mut memories = reader.prepare_cached(
            "SELECT id, hlc, hlc_origin, deleted_at IS NOT NULL FROM memories
             WHERE scope IN ('project-shared', 'user-global', 'team-global')
               AND confidentiality IN ('normal', 'internal')
               AND NOT EXISTS (SELECT 1 FROM tombstones t
                               WHERE t.record_kind = 'memory' AND t.record_id = memories.id)
             ORDER BY id",
        )?;
        let rows = memories.query_map(params![], |row| {
            Ok(format!(
                "m|{}|{}|{}|{}\n",
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, bool>(3)? as u8
            ))
        })?;
        for line in rows {
            hasher.update(line?.as_bytes());
        }
        let mut tombstones = reader.prepare_cached(
            "SELECT record_kind, record_id, hlc, hlc_origin FROM tombstones ORDER BY record_kind, record_id",
        )?;
        let rows = tombstones.query_map(params![], |row| {
            Ok(format!(
                "t|{}|{}|{}|{}\n",
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, String>(3)?
            ))
        })?;
        for line in rows {
            hasher.update(line?.as_bytes());
        }
        // Agents and tasks: each is the replay of its operations, so its newest stamp
        // stands for its state (in a fleet, every node replays the same operations).
        for (tag, table) in [("a", "agents"), ("k", "tasks")] {
            let mut records = reader.prepare_cached(&format!(
                "SELECT id, hlc, hlc_origin FROM {table} ORDER BY id"
            ))?;
            let rows = records.query_map(params![], |row| {
                Ok(format!(
                    "{tag}|{}|{}|{}\n",
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?
                ))
            })?;
            for line in rows {
                hasher.update(line?.as_bytes());
            }
        }
        Ok(hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }
}
