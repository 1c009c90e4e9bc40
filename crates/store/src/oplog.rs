//! The operation log: one entry per change, stamped with a hybrid logical clock and the
//! machine that made it. Replication ships these entries; local state is their effect.
//!
//! Invariant: an entry is appended in the same transaction as the change it records, so
//! the log and the state never disagree, even across a crash.
//!
//! Payloads of memory operations carry the memory's whole state after the change (its
//! canonical JSON), so applying the newest entry per record is enough to converge. When a
//! memory is hard-deleted or erased, earlier payloads of that record are redacted, so its
//! content leaves the log too.

use crate::db::{OptionalExtension, Transaction, params};
use haivemind_core::time_format::now_ms;
use haivemind_core::{HlcStamp, HybridClock};
use serde_json::Value;

use crate::{Store, StoreError};

/// What an operation did to its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Created a record.
    Create,
    /// Changed a record.
    Update,
    /// Soft-deleted a record.
    SoftDelete,
    /// Undid a soft delete.
    Recover,
    /// Removed a record for good; leaves a tombstone.
    HardDelete,
    /// Removed a record under a GDPR request; leaves a tombstone.
    Erase,
    /// The record may no longer leave its machine (it became private, machine-local,
    /// confidential or pii): other machines drop their copies. No tombstone: it still
    /// exists where it was written, and comes back if it is shared again.
    Withdraw,
}

impl OpKind {
    /// The name stored in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Create => "create",
            OpKind::Update => "update",
            OpKind::SoftDelete => "soft_delete",
            OpKind::Recover => "recover",
            OpKind::HardDelete => "hard_delete",
            OpKind::Erase => "erase",
            OpKind::Withdraw => "withdraw",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "create" => OpKind::Create,
            "update" => OpKind::Update,
            "soft_delete" => OpKind::SoftDelete,
            "recover" => OpKind::Recover,
            "hard_delete" => OpKind::HardDelete,
            "erase" => OpKind::Erase,
            "withdraw" => OpKind::Withdraw,
            _ => return None,
        })
    }
}

/// One entry of the operation log.
#[derive(Debug, Clone, PartialEq)]
pub struct OpLogEntry {
    /// Local sequence number: the order entries were appended here.
    pub seq: i64,
    /// Globally unique id of the operation (a UUIDv7).
    pub op_id: String,
    /// When and where the change was made.
    pub stamp: HlcStamp,
    /// The kind of record changed (`memory`).
    pub record_kind: String,
    /// The record's id.
    pub record_id: String,
    /// What was done.
    pub op: OpKind,
    /// The record's state after the change, or `{}` for removals.
    pub payload: Value,
    /// Whether the change may be sent to other machines (scope and confidentiality allow it).
    pub shareable: bool,
    /// The record's vector, when it travels with the operation: not kept in the log, but
    /// attached when the operation is sent (see `Store::ops_after`).
    pub vector: Option<WireVector>,
}

/// A memory's vector as it travels, with the id of the model that made it: a receiver
/// holding vectors of the same model does not embed the text again.
#[derive(Debug, Clone, PartialEq)]
pub struct WireVector {
    /// The embedding model's id (`Embedder::model_id`).
    pub model_id: String,
    /// The unit vector.
    pub data: Vec<f32>,
}

/// The longest vector accepted from another machine.
const MAX_WIRE_DIMS: usize = 8_192;

impl WireVector {
    fn to_wire(&self) -> Value {
        use base64::Engine;
        serde_json::json!({
            "model_id": self.model_id,
            "dims": self.data.len(),
            "f32le": base64::engine::general_purpose::STANDARD.encode(crate::vectors::to_blob(&self.data)),
        })
    }

    fn from_wire(field: &str, value: &Value) -> Result<Self, haivemind_core::InvalidInput> {
        use base64::Engine;
        let invalid = || {
            haivemind_core::InvalidInput::new(
                format!("{field}.vector"),
                format!(
                    "must be {{model_id, dims (1-{MAX_WIRE_DIMS}), f32le: base64 of dims little-endian f32s}}"
                ),
            )
        };
        let model_id = value
            .get("model_id")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty() && m.len() <= 256)
            .ok_or_else(invalid)?;
        let dims = value
            .get("dims")
            .and_then(Value::as_u64)
            .filter(|d| (1..=MAX_WIRE_DIMS as u64).contains(d))
            .ok_or_else(invalid)? as usize;
        let bytes = value
            .get("f32le")
            .and_then(Value::as_str)
            .and_then(|text| base64::engine::general_purpose::STANDARD.decode(text).ok())
            .ok_or_else(invalid)?;
        let data = crate::vectors::from_blob(&bytes, dims).ok_or_else(invalid)?;
        if data.iter().any(|x| !x.is_finite()) {
            return Err(invalid());
        }
        Ok(Self {
            model_id: model_id.to_string(),
            data,
        })
    }
}

impl OpLogEntry {
    /// The entry as it travels between machines. The local `seq` and `shareable` stay
    /// home: only shareable entries travel.
    pub fn to_wire(&self) -> Value {
        let mut wire = serde_json::json!({
            "op_id": self.op_id,
            "hlc": self.stamp.time,
            "origin": self.stamp.origin,
            "record_kind": self.record_kind,
            "record_id": self.record_id,
            "op": self.op.as_str(),
            "payload": self.payload,
        });
        if let Some(vector) = &self.vector {
            wire["vector"] = vector.to_wire();
        }
        wire
    }

    /// Reads an entry sent by another machine; `field` names it in errors (`ops[3]`).
    pub fn from_wire(field: &str, value: &Value) -> Result<Self, haivemind_core::InvalidInput> {
        use haivemind_core::InvalidInput;
        let text = |key: &str| -> Result<String, InvalidInput> {
            value
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty() && s.len() <= 256)
                .map(str::to_string)
                .ok_or_else(|| {
                    InvalidInput::new(format!("{field}.{key}"), "must be a string of 1-256 bytes")
                })
        };
        let hlc = value
            .get("hlc")
            .and_then(Value::as_u64)
            .filter(|t| *t <= i64::MAX as u64)
            .ok_or_else(|| {
                InvalidInput::new(format!("{field}.hlc"), "must be a non-negative integer")
            })?;
        let op = text("op")?;
        let payload = value
            .get("payload")
            .filter(|p| p.is_object())
            .cloned()
            .ok_or_else(|| InvalidInput::new(format!("{field}.payload"), "must be an object"))?;
        Ok(OpLogEntry {
            seq: 0,
            op_id: text("op_id")?,
            stamp: HlcStamp::new(hlc, text("origin")?),
            record_kind: text("record_kind")?,
            record_id: text("record_id")?,
            op: OpKind::parse(&op).ok_or_else(|| {
                InvalidInput::new(format!("{field}.op"), format!("unknown operation {op:?}"))
            })?,
            payload,
            shareable: true,
            vector: match value.get("vector") {
                None | Some(Value::Null) => None,
                Some(vector) => Some(WireVector::from_wire(field, vector)?),
            },
        })
    }
}

pub(crate) struct NewOp<'a> {
    pub record_kind: &'a str,
    pub record_id: String,
    pub op: OpKind,
    pub payload: Value,
    pub shareable: bool,
}

/// Stamps and appends an operation inside `tx`, returning its stamp.
pub(crate) fn append(
    tx: &Transaction<'_>,
    clock: &mut HybridClock,
    origin: &str,
    new: NewOp<'_>,
) -> Result<HlcStamp, StoreError> {
    // Other processes may share this file: move past the newest stamp any of them wrote.
    // The transaction holds the write lock, so no stamp can be issued between this read and
    // the insert below.
    let newest: Option<i64> = tx
        .query_row(
            "SELECT coalesce(max(newest), 0) FROM (
                 SELECT max(hlc) AS newest FROM op_log
                 UNION ALL SELECT max(hlc) FROM op_log_floor) AS stamps",
            params![],
            |row| row.get(0),
        )
        .optional()?
        .flatten();
    if let Some(newest) = newest {
        clock.observe(newest as u64);
    }
    let time = clock.tick(now_ms().max(0) as u64);
    let stamp = HlcStamp::new(time, origin);
    tx.execute(
        "INSERT INTO op_log (op_id, hlc, origin, record_kind, record_id, op, payload, shareable)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            uuid::Uuid::now_v7().to_string(),
            time as i64,
            origin,
            new.record_kind,
            new.record_id,
            new.op.as_str(),
            new.payload.to_string(),
            new.shareable,
        ],
    )?;
    Ok(stamp)
}

/// Removes the content of every earlier entry about a record that is now gone for good.
pub(crate) fn redact(
    tx: &Transaction<'_>,
    record_kind: &str,
    record_id: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE op_log SET payload = '{\"redacted\":true}'
         WHERE record_kind = ?1 AND record_id = ?2 AND op NOT IN ('hard_delete', 'erase')",
        params![record_kind, record_id],
    )?;
    Ok(())
}

impl Store {
    /// Entries appended after local sequence number `after_seq`, oldest first, at most `limit`.
    pub fn ops_since(&self, after_seq: i64, limit: usize) -> Result<Vec<OpLogEntry>, StoreError> {
        let reader = self.reader()?;
        let mut statement = reader.prepare_cached(&format!(
            "SELECT {OP_COLUMNS} FROM op_log o WHERE o.seq > ?1 ORDER BY o.seq LIMIT ?2"
        ))?;
        read_entries(&mut statement, params![after_seq, limit as i64])
    }
}

/// The columns [`read_entries`] reads, from `op_log` aliased `o`.
pub(crate) const OP_COLUMNS: &str =
    "o.seq, o.op_id, o.hlc, o.origin, o.record_kind, o.record_id, o.op, o.payload, o.shareable";

/// Runs `statement` (selecting [`OP_COLUMNS`]) and parses its rows.
pub(crate) fn read_entries(
    statement: &mut crate::db::Statement<'_>,
    parameters: impl crate::db::Params,
) -> Result<Vec<OpLogEntry>, StoreError> {
    let rows = statement.query_map(parameters, |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
            row.get::<_, String>(5)?,
            row.get::<_, String>(6)?,
            row.get::<_, String>(7)?,
            row.get::<_, bool>(8)?,
        ))
    })?;
    let mut entries = Vec::new();
    for row in rows {
        let (seq, op_id, hlc, origin, record_kind, record_id, op, payload, shareable) = row?;
        let corrupt = |detail: String| StoreError::Corrupt {
            record: format!("op_log seq {seq}"),
            detail,
        };
        entries.push(OpLogEntry {
            seq,
            op_id,
            stamp: HlcStamp::new(hlc as u64, origin),
            record_kind,
            record_id,
            op: OpKind::parse(&op).ok_or_else(|| corrupt(format!("unknown op {op}")))?,
            payload: serde_json::from_str(&payload).map_err(|e| corrupt(e.to_string()))?,
            shareable,
            vector: None,
        });
    }
    Ok(entries)
}
