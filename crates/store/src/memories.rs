//! Changing memories: create, update, soft delete, recover, hard delete, bulk delete,
//! purge, GDPR erase, import and merge. Each change is one transaction that writes the row,
//! its history entry and its op-log entry together.

use crate::db::{OptionalExtension, Transaction, params};
use haivemind_core::memory::{Confidentiality, Deletion, Scope, json};
use haivemind_core::time_format::now_ms;
use haivemind_core::{HybridClock, InvalidInput, Memory, MemoryId, MemoryPatch, NewMemory};
use serde_json::{Map, Value, json};

use crate::oplog::{self, NewOp, OpKind};
use crate::rows::{absence, insert_memory, memory_by_id, replace_memory};
use crate::search::{MemoryFilter, Selection, check_page};
use crate::{Store, StoreError};

const DAY_MS: i64 = 86_400_000;

/// One entry of a memory's update history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// The version the memory had after this change.
    pub version: u64,
    /// `create`, `update`, `delete`, `recover`, `merge` or `import`.
    pub action: String,
    /// When, epoch milliseconds.
    pub changed_at_ms: i64,
    /// The machine that made the change.
    pub machine_id: String,
    /// The agent that made it, if known.
    pub agent_id: Option<String>,
    /// For each changed field, `{"from": old, "to": new}`; other details for other actions.
    pub changes: Map<String, Value>,
}

/// What a bulk delete did, or would do.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkDeleteOutcome {
    /// How many live memories matched the filters.
    pub matched: usize,
    /// How many were deleted (0 on a dry run).
    pub deleted: usize,
    /// Whether they were removed for good.
    pub hard: bool,
}

/// What importing one memory did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    /// It was new and is now stored.
    Created,
    /// A memory with its id was already here; nothing changed.
    AlreadyPresent,
    /// Its id was permanently deleted here; it stays deleted.
    Erased,
}

/// What merging duplicates did.
#[derive(Debug, Clone)]
pub struct MergeOutcome {
    /// The kept memory, with the duplicates' tags and metadata folded in.
    pub kept: Memory,
    /// The duplicates, now soft-deleted.
    pub merged_ids: Vec<MemoryId>,
}

fn protection(level: haivemind_core::Confidentiality) -> u8 {
    use haivemind_core::Confidentiality::*;
    match level {
        Normal => 0,
        Internal => 1,
        Confidential => 2,
        Pii => 3,
    }
}

/// Refuses to fold `duplicate` into `kept` when that would move its tags and metadata to
/// another user or to a less protected memory (which could then leave the machine, or
/// outlive the owner's erasure request).
fn check_mergeable(field: &str, kept: &Memory, duplicate: &Memory) -> Result<(), InvalidInput> {
    if duplicate.user_id != kept.user_id {
        return Err(InvalidInput::new(
            field,
            format!(
                "belongs to user \"{}\" but keep_id belongs to \"{}\"; only one user's memories can be merged",
                duplicate.user_id, kept.user_id
            ),
        ));
    }
    let less_protected = protection(kept.confidentiality) < protection(duplicate.confidentiality)
        || (kept.scope.may_leave_machine() && !duplicate.scope.may_leave_machine());
    if less_protected {
        return Err(InvalidInput::new(
            field,
            format!(
                "is {} / {} but keep_id is {} / {}; keep the more protected memory instead",
                duplicate.scope, duplicate.confidentiality, kept.scope, kept.confidentiality
            ),
        ));
    }
    Ok(())
}

pub(crate) fn shareable(memory: &Memory) -> bool {
    memory.scope.may_leave_machine() && memory.confidentiality.may_leave_machine()
}

/// [`shareable`] for a stored row's scope and confidentiality; a value this build does not
/// know never leaves.
pub(crate) fn shareable_levels(scope: &str, confidentiality: &str) -> bool {
    Scope::parse("scope", scope).is_ok_and(Scope::may_leave_machine)
        && Confidentiality::parse("confidentiality_level", confidentiality)
            .is_ok_and(Confidentiality::may_leave_machine)
}

/// A deletion reason, when given, is free text of bounded size.
fn check_optional_reason(reason: Option<&str>) -> Result<(), InvalidInput> {
    reason.map_or(Ok(()), |reason| {
        haivemind_core::memory::check_reason("reason", reason)
    })
}

fn change(changes: &mut Map<String, Value>, field: &str, from: Value, to: Value) {
    if from != to {
        changes.insert(field.into(), json!({ "from": from, "to": to }));
    }
}

impl Store {
    /// Runs `work` in one immediate (write-locking) transaction with this node's clock.
    pub(crate) fn write<T>(
        &self,
        work: impl FnOnce(&Transaction<'_>, &mut HybridClock) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.transact(|tx| {
            let mut clock = self.clock.lock().unwrap_or_else(|p| p.into_inner());
            work(tx, &mut clock)
        })
    }

    pub(crate) fn log(
        &self,
        tx: &Transaction<'_>,
        clock: &mut HybridClock,
        memory: &Memory,
        op: OpKind,
    ) -> Result<haivemind_core::HlcStamp, StoreError> {
        let record_id = memory.id.to_string();
        let may_leave = shareable(memory);
        // A memory that was shared and may no longer leave this machine must disappear
        // from the others: that change travels, without the content, as a withdrawal.
        let withdrawn = !may_leave
            && op == OpKind::Update
            && tx
                .query_row(
                    "SELECT 1 FROM op_log WHERE record_kind = 'memory' AND record_id = ?1 AND shareable = 1 LIMIT 1",
                    [&record_id],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
        let (op, payload, shareable) = if withdrawn {
            (OpKind::Withdraw, json!({}), true)
        } else {
            (op, json::to_json(memory), may_leave)
        };
        oplog::append(
            tx,
            clock,
            &self.machine_id,
            NewOp {
                record_kind: "memory",
                record_id,
                op,
                payload,
                shareable,
            },
        )
    }

    pub(crate) fn record_history(
        &self,
        tx: &Transaction<'_>,
        memory: &Memory,
        action: &str,
        agent_id: Option<&str>,
        changes: Map<String, Value>,
    ) -> Result<(), StoreError> {
        tx.prepare_cached(
            "INSERT INTO memory_history (memory_id, version, action, changed_at, machine_id, agent_id, changes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            memory.id.to_string(),
            memory.version as i64,
            action,
            memory.updated_at_ms,
            self.machine_id,
            agent_id,
            Value::Object(changes).to_string(),
        ])?;
        Ok(())
    }

    /// Stores a new memory written on this machine.
    pub fn create(&self, new: NewMemory) -> Result<Memory, StoreError> {
        self.create_batch(vec![new])?
            .pop()
            .ok_or_else(|| StoreError::Corrupt {
                record: "create".into(),
                detail: "a batch of one stored nothing".into(),
            })
    }

    /// Stores several memories in one transaction: all or none. Much faster than one
    /// [`Store::create`] per memory for imports and bulk writes.
    pub fn create_batch(&self, news: Vec<NewMemory>) -> Result<Vec<Memory>, StoreError> {
        let now = now_ms();
        let mut memories = Vec::with_capacity(news.len());
        for mut new in news {
            new.validate(&self.rules)?;
            memories.push(Memory {
                id: MemoryId::generate(),
                content: new.content,
                category: new.category,
                context: new.context,
                tags: new.tags,
                metadata: new.metadata,
                user_id: new.user_id,
                project: new.project,
                machine_id: self.machine_id.clone(),
                agent_id: new.agent_id,
                scope: new.scope,
                confidentiality: new.confidentiality,
                created_at_ms: now,
                updated_at_ms: now,
                version: 1,
                deletion: None,
            });
        }
        // Embedding takes milliseconds per text: do it before taking the write lock.
        let contents: Vec<&str> = memories.iter().map(|m| m.content.as_str()).collect();
        let embedded = self.embed_for_write(&contents);
        self.write(|tx, clock| {
            for (i, memory) in memories.iter().enumerate() {
                let stamp = self.log(tx, clock, memory, OpKind::Create)?;
                let rowid = insert_memory(tx, memory, &stamp)?;
                if let (Some(vectors), Some(model)) = (&embedded, self.embedder_model()) {
                    crate::vectors::put(tx, rowid, model, &vectors[i])?;
                }
                self.record_history(tx, memory, "create", memory.agent_id.as_deref(), Map::new())?;
            }
            Ok(())
        })?;
        Ok(memories)
    }

    fn current_live(&self, tx: &Transaction<'_>, id: MemoryId) -> Result<Memory, StoreError> {
        match memory_by_id(tx, id)? {
            Some(memory) if memory.deletion.is_none() => Ok(memory),
            Some(_) => Err(StoreError::MemoryDeleted { id }),
            None => Err(absence(tx, id)?),
        }
    }

    /// Changes the given fields of a live memory; the old values go to its history.
    pub fn update(
        &self,
        id: MemoryId,
        mut patch: MemoryPatch,
        agent_id: Option<&str>,
    ) -> Result<Memory, StoreError> {
        patch.validate(&self.rules)?;
        let new_vector = patch
            .content
            .as_deref()
            .and_then(|content| self.embed_for_write(&[content]))
            .and_then(|mut v| v.pop());
        self.write(|tx, clock| {
            let old = self.current_live(tx, id)?;
            let mut new = old.clone();
            let mut changes = Map::new();
            if let Some(content) = patch.content {
                change(&mut changes, "content", json!(old.content), json!(content));
                new.content = content;
            }
            if let Some(category) = patch.category {
                change(
                    &mut changes,
                    "category",
                    json!(old.category),
                    json!(category),
                );
                new.category = category;
            }
            if let Some(context) = patch.context {
                change(&mut changes, "context", json!(old.context), json!(context));
                new.context = context;
            }
            if let Some(tags) = patch.tags {
                change(&mut changes, "tags", json!(old.tags), json!(tags));
                new.tags = tags;
            }
            if let Some(metadata) = patch.metadata {
                change(
                    &mut changes,
                    "metadata",
                    Value::Object(old.metadata.clone()),
                    Value::Object(metadata.clone()),
                );
                new.metadata = metadata;
            }
            if let Some(project) = patch.project {
                change(&mut changes, "project", json!(old.project), json!(project));
                new.project = project;
            }
            if let Some(scope) = patch.scope {
                change(
                    &mut changes,
                    "scope",
                    json!(old.scope.as_str()),
                    json!(scope.as_str()),
                );
                new.scope = scope;
            }
            if let Some(level) = patch.confidentiality {
                change(
                    &mut changes,
                    "confidentiality_level",
                    json!(old.confidentiality.as_str()),
                    json!(level.as_str()),
                );
                new.confidentiality = level;
            }
            if changes.is_empty() {
                // Same values again: nothing to record, and the version stays.
                return Ok(old);
            }
            new.version = old.version + 1;
            new.updated_at_ms = now_ms().max(old.updated_at_ms);
            let stamp = self.log(tx, clock, &new, OpKind::Update)?;
            let rowid = replace_memory(tx, &new, &stamp)?;
            if new.content != old.content {
                match (&new_vector, self.embedder_model()) {
                    (Some(vector), Some(model)) => crate::vectors::put(tx, rowid, model, vector)?,
                    // The old text's vector would find the memory by what it no longer says;
                    // without a new one, full-text finds it until it is embedded again.
                    _ => {
                        tx.execute(
                            "DELETE FROM memory_vectors WHERE memory_rowid = ?1",
                            [rowid],
                        )?;
                    }
                }
            }
            self.record_history(tx, &new, "update", agent_id, changes)?;
            Ok(new)
        })
    }

    /// Hides a memory from every read and search; [`Store::recover`] brings it back within
    /// `memory.recover_days`.
    pub fn soft_delete(&self, id: MemoryId, reason: Option<String>) -> Result<Memory, StoreError> {
        check_optional_reason(reason.as_deref())?;
        self.write(|tx, clock| self.soft_delete_in(tx, clock, id, reason))
    }

    fn soft_delete_in(
        &self,
        tx: &Transaction<'_>,
        clock: &mut HybridClock,
        id: MemoryId,
        reason: Option<String>,
    ) -> Result<Memory, StoreError> {
        let mut memory = self.current_live(tx, id)?;
        let now = now_ms().max(memory.updated_at_ms);
        memory.deletion = Some(Deletion {
            at_ms: now,
            reason: reason.clone(),
            by_machine: self.machine_id.clone(),
        });
        memory.updated_at_ms = now;
        memory.version += 1;
        let stamp = self.log(tx, clock, &memory, OpKind::SoftDelete)?;
        replace_memory(tx, &memory, &stamp)?;
        let mut details = Map::new();
        details.insert("reason".into(), json!(reason));
        self.record_history(tx, &memory, "delete", None, details)?;
        Ok(memory)
    }

    /// Undoes a soft delete.
    pub fn recover(&self, id: MemoryId) -> Result<Memory, StoreError> {
        self.write(|tx, clock| {
            let mut memory = match memory_by_id(tx, id)? {
                Some(memory) => memory,
                None => return Err(absence(tx, id)?),
            };
            if memory.deletion.is_none() {
                return Err(StoreError::NotDeleted { id });
            }
            memory.deletion = None;
            memory.updated_at_ms = now_ms().max(memory.updated_at_ms);
            memory.version += 1;
            let stamp = self.log(tx, clock, &memory, OpKind::Recover)?;
            replace_memory(tx, &memory, &stamp)?;
            self.record_history(tx, &memory, "recover", None, Map::new())?;
            Ok(memory)
        })
    }

    /// Removes a memory (live or soft-deleted) for good: its row, history, index entries and
    /// the content of its earlier op-log entries. A tombstone keeps any peer's old copy from
    /// bringing it back.
    pub fn hard_delete(&self, id: MemoryId, reason: Option<String>) -> Result<(), StoreError> {
        check_optional_reason(reason.as_deref())?;
        self.write(|tx, clock| {
            let memory = match memory_by_id(tx, id)? {
                Some(memory) => memory,
                None => return Err(absence(tx, id)?),
            };
            self.remove_in(tx, clock, &memory, OpKind::HardDelete, reason.as_deref())
        })?;
        self.scrub_write_ahead_log();
        Ok(())
    }

    /// After removing content for good: copy the write-ahead log into the database file and
    /// truncate it, so erased text does not linger in old WAL frames. Best effort: a reader
    /// still holding an older snapshot keeps the log until the next removal or checkpoint.
    fn scrub_write_ahead_log(&self) {
        let Some(connection) = self.sqlite_writer() else {
            return; // PostgreSQL: its own vacuum and WAL recycling keep nothing readable.
        };
        if let Err(error) = connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::warn!(%error, "could not checkpoint the write-ahead log after a removal");
        }
        drop(connection);
        self.remove_vector_file();
    }

    fn remove_in(
        &self,
        tx: &Transaction<'_>,
        clock: &mut HybridClock,
        memory: &Memory,
        op: OpKind,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let id = memory.id.to_string();
        let stamp = oplog::append(
            tx,
            clock,
            &self.machine_id,
            NewOp {
                record_kind: "memory",
                record_id: id.clone(),
                op,
                payload: json!({ "reason": reason }),
                // A removal carries no content, and every machine that ever received the
                // memory must learn of it, even if the memory was restricted later.
                shareable: true,
            },
        )?;
        let rowid: Option<i64> = tx
            .query_row(
                "DELETE FROM memories WHERE id = ?1 RETURNING rowid",
                [&id],
                |row| row.get(0),
            )
            .optional()?;
        // The row's vector went with it (ON DELETE CASCADE); the index's copy goes now.
        if let (Some(rowid), Some(index)) = (rowid, &self.vectors) {
            index.forget(&[rowid]);
        }
        tx.execute("DELETE FROM memory_history WHERE memory_id = ?1", [&id])?;
        tx.execute(
            "INSERT INTO tombstones (record_kind, record_id, hlc, hlc_origin, erased_at, reason)
             VALUES ('memory', ?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (record_kind, record_id) DO UPDATE SET hlc = excluded.hlc,
                 hlc_origin = excluded.hlc_origin, erased_at = excluded.erased_at,
                 reason = excluded.reason",
            params![id, stamp.time as i64, stamp.origin, now_ms(), reason],
        )?;
        oplog::redact(tx, "memory", &id)
    }

    /// Soft-deleted memories matching `filter`, most recently deleted first, and their count.
    pub fn list_deleted(
        &self,
        filter: &MemoryFilter,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<Memory>, usize), StoreError> {
        check_page(limit, offset)?;
        filter.check(self)?;
        let memories = self.list_where(&Selection {
            order: "m.deleted_at DESC, m.rowid DESC",
            limit,
            offset,
            ..Selection::new("m.deleted_at IS NOT NULL", filter)
        })?;
        let total = self.count_where("m.deleted_at IS NOT NULL", filter)?;
        Ok((memories, total))
    }

    /// Deletes every live memory matching `filter`. Without `confirm` it only counts them.
    /// An empty filter is refused: deleting everything takes explicit filters.
    pub fn bulk_delete(
        &self,
        filter: &MemoryFilter,
        hard: bool,
        reason: Option<String>,
        confirm: bool,
    ) -> Result<BulkDeleteOutcome, StoreError> {
        filter.check(self)?;
        check_optional_reason(reason.as_deref())?;
        if filter.is_empty() {
            return Err(InvalidInput::new(
                "filters",
                "name at least one of category, user_id, project, tags, machine, since, until",
            )
            .into());
        }
        let matched = self.count_where("m.deleted_at IS NULL", filter)?;
        if !confirm {
            return Ok(BulkDeleteOutcome {
                matched,
                deleted: 0,
                hard,
            });
        }
        // Each batch is read inside the transaction that deletes it, so a memory changed
        // or recovered meanwhile is judged by its current state.
        let mut deleted = 0;
        loop {
            let count = self.write(|tx, clock| {
                let batch = Selection::new("m.deleted_at IS NULL", filter).read(tx)?;
                for memory in &batch {
                    if hard {
                        self.remove_in(tx, clock, memory, OpKind::HardDelete, reason.as_deref())?;
                    } else {
                        self.soft_delete_in(tx, clock, memory.id, reason.clone())?;
                    }
                }
                Ok(batch.len())
            })?;
            if count == 0 {
                break;
            }
            deleted += count;
        }
        if hard && deleted > 0 {
            self.scrub_write_ahead_log();
        }
        Ok(BulkDeleteOutcome {
            matched,
            deleted,
            hard,
        })
    }

    /// Hard-deletes soft-deleted memories older than `memory.recover_days`. Returns how many.
    pub fn purge_expired(&self) -> Result<usize, StoreError> {
        let cutoff = now_ms() - i64::from(self.recover_days) * DAY_MS;
        let reason = format!("purged {} days after deletion", self.recover_days);
        let everything = MemoryFilter::default();
        let mut purged = 0;
        loop {
            let count = self.write(|tx, clock| {
                let batch = Selection {
                    params: vec![rusqlite::types::Value::Integer(cutoff)],
                    ..Selection::new("m.deleted_at IS NOT NULL AND m.deleted_at < ?", &everything)
                }
                .read(tx)?;
                for memory in &batch {
                    self.remove_in(tx, clock, memory, OpKind::HardDelete, Some(&reason))?;
                }
                Ok(batch.len())
            })?;
            if count == 0 {
                if purged > 0 {
                    self.scrub_write_ahead_log();
                }
                return Ok(purged);
            }
            purged += count;
        }
    }

    /// Erases every memory of `user_id`, live or soft-deleted, for good (GDPR article 17).
    /// Refused without `confirm`. Returns how many were erased.
    pub fn erase_user(&self, user_id: &str, confirm: bool) -> Result<usize, StoreError> {
        haivemind_core::memory::check_name("user_id", user_id)?;
        if !confirm {
            return Err(StoreError::ConfirmRequired {
                action: format!("erase every memory of user \"{user_id}\" for good"),
            });
        }
        let filter = MemoryFilter {
            user_id: Some(user_id.to_string()),
            ..MemoryFilter::default()
        };
        let mut erased = 0;
        loop {
            let count = self.write(|tx, clock| {
                let batch = Selection::new("1 = 1", &filter).read(tx)?;
                for memory in &batch {
                    self.remove_in(tx, clock, memory, OpKind::Erase, Some("gdpr erasure"))?;
                }
                Ok(batch.len())
            })?;
            if count == 0 {
                if erased > 0 {
                    self.scrub_write_ahead_log();
                }
                return Ok(erased);
            }
            erased += count;
        }
    }

    /// Stores a memory exported elsewhere, keeping its id, times and author. A memory whose
    /// id is already here, or was permanently deleted here, is left as it is.
    pub fn import(&self, mut memory: Memory) -> Result<ImportOutcome, StoreError> {
        let mut check = NewMemory {
            content: memory.content.clone(),
            category: memory.category.clone(),
            context: memory.context.clone(),
            tags: memory.tags.clone(),
            metadata: memory.metadata.clone(),
            user_id: memory.user_id.clone(),
            project: memory.project.clone(),
            agent_id: memory.agent_id.clone(),
            scope: memory.scope,
            confidentiality: memory.confidentiality,
        };
        check.validate(&self.rules)?;
        haivemind_core::memory::check_name("machine_id", &memory.machine_id)?;
        check_optional_reason(memory.deletion.as_ref().and_then(|d| d.reason.as_deref()))?;
        memory.tags = check.tags;
        self.write(|tx, clock| {
            if memory_by_id(tx, memory.id)?.is_some() {
                return Ok(ImportOutcome::AlreadyPresent);
            }
            if matches!(absence(tx, memory.id)?, StoreError::Erased { .. }) {
                return Ok(ImportOutcome::Erased);
            }
            let stamp = self.log(tx, clock, &memory, OpKind::Create)?;
            insert_memory(tx, &memory, &stamp)?;
            self.record_history(
                tx,
                &memory,
                "import",
                memory.agent_id.as_deref(),
                Map::new(),
            )?;
            Ok(ImportOutcome::Created)
        })
    }

    /// Folds duplicates into `keep_id`: their tags join its tags, their metadata keys fill
    /// gaps in its metadata (its own values win), and they are soft-deleted with a reason
    /// that names the kept memory.
    pub fn merge(
        &self,
        keep_id: MemoryId,
        duplicate_ids: &[MemoryId],
        agent_id: Option<&str>,
    ) -> Result<MergeOutcome, StoreError> {
        if duplicate_ids.is_empty() {
            return Err(InvalidInput::new("duplicate_ids", "must name at least one memory").into());
        }
        if let Some(i) = duplicate_ids.iter().position(|id| *id == keep_id) {
            return Err(InvalidInput::new(
                format!("duplicate_ids[{i}]"),
                "must differ from keep_id",
            )
            .into());
        }
        for (j, id) in duplicate_ids.iter().enumerate() {
            if let Some(i) = duplicate_ids[..j].iter().position(|earlier| earlier == id) {
                return Err(InvalidInput::new(
                    format!("duplicate_ids[{j}]"),
                    format!("repeats duplicate_ids[{i}]"),
                )
                .into());
            }
        }
        self.write(|tx, clock| {
            // Name the argument at fault: merge has two id arguments, not one memory_id.
            let named = |field: String, error: StoreError| {
                if matches!(
                    error,
                    StoreError::MemoryNotFound { .. }
                        | StoreError::MemoryDeleted { .. }
                        | StoreError::Erased { .. }
                ) {
                    StoreError::Invalid(InvalidInput::new(field, error.to_string()))
                } else {
                    error
                }
            };
            let kept = self
                .current_live(tx, keep_id)
                .map_err(|e| named("keep_id".into(), e))?;
            let mut merged = kept.clone();
            let mut duplicates = Vec::new();
            for (i, id) in duplicate_ids.iter().enumerate() {
                let field = format!("duplicate_ids[{i}]");
                let duplicate = self
                    .current_live(tx, *id)
                    .map_err(|e| named(field.clone(), e))?;
                check_mergeable(&field, &kept, &duplicate)?;
                for tag in &duplicate.tags {
                    if !merged.tags.contains(tag) {
                        merged.tags.push(tag.clone());
                    }
                }
                for (key, value) in &duplicate.metadata {
                    merged
                        .metadata
                        .entry(key.clone())
                        .or_insert_with(|| value.clone());
                }
                duplicates.push(duplicate.id);
            }
            merged.tags = haivemind_core::memory::normalize_tags(&merged.tags)?;
            // Gathered metadata may outgrow the limit: the merged memory obeys the rules
            // every memory does, or every peer would refuse it.
            self.rules.check_memory(&merged)?;
            let mut changes = Map::new();
            change(&mut changes, "tags", json!(kept.tags), json!(merged.tags));
            change(
                &mut changes,
                "metadata",
                Value::Object(kept.metadata.clone()),
                Value::Object(merged.metadata.clone()),
            );
            changes.insert(
                "merged_ids".into(),
                json!(
                    duplicates
                        .iter()
                        .map(|id| id.to_string())
                        .collect::<Vec<_>>()
                ),
            );
            merged.version += 1;
            merged.updated_at_ms = now_ms().max(kept.updated_at_ms);
            let stamp = self.log(tx, clock, &merged, OpKind::Update)?;
            replace_memory(tx, &merged, &stamp)?;
            self.record_history(tx, &merged, "merge", agent_id, changes)?;
            for id in &duplicates {
                self.soft_delete_in(tx, clock, *id, Some(format!("merged into {keep_id}")))?;
            }
            Ok(MergeOutcome {
                kept: merged,
                merged_ids: duplicates,
            })
        })
    }

    /// The update history of a memory (live or soft-deleted), oldest first.
    pub fn history(&self, id: MemoryId) -> Result<Vec<HistoryEntry>, StoreError> {
        let reader = self.reader()?;
        if memory_by_id(&reader, id)?.is_none() {
            return Err(absence(&reader, id)?);
        }
        let mut statement = reader.prepare_cached(
            "SELECT version, action, changed_at, machine_id, agent_id, changes
             FROM memory_history WHERE memory_id = ?1 ORDER BY seq",
        )?;
        let rows = statement.query_map([id.to_string()], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, Option<String>>(4)?,
                row.get::<_, String>(5)?,
            ))
        })?;
        let mut entries = Vec::new();
        for row in rows {
            let (version, action, changed_at_ms, machine_id, agent_id, changes) = row?;
            let changes = match serde_json::from_str(&changes) {
                Ok(Value::Object(map)) => map,
                _ => {
                    return Err(StoreError::Corrupt {
                        record: format!("history of {id}"),
                        detail: "changes is not a JSON object".into(),
                    });
                }
            };
            entries.push(HistoryEntry {
                version: version as u64,
                action,
                changed_at_ms,
                machine_id,
                agent_id,
                changes,
            });
        }
        Ok(entries)
    }
}
