//! Knowledge imported from other systems (Confluence pages, Jira issues): one memory per
//! external record, found again by its source and id, so a re-import changes nothing and a
//! newer version replaces the text (the memory's history keeps the old one). Checkpoints
//! of each source's last run make the next sync incremental; they stay on this machine.

use crate::db::{OptionalExtension, params};
use haivemind_core::time_format::now_ms;
use haivemind_core::{Memory, MemoryPatch, NewMemory};
use serde_json::{Map, Value, json};

use crate::rows::{MEMORY_COLUMNS, memory_from_row};
use crate::{Store, StoreError};

/// One record of another system.
#[derive(Debug, Clone)]
pub struct ExternalDoc {
    /// `confluence` or `jira`.
    pub system: String,
    /// Its id there (a page id, an issue key).
    pub id: String,
    /// Its version there (a version number, an updated time): a change replaces the text.
    pub version: String,
    /// Its title.
    pub title: String,
    /// Its text, already plain.
    pub text: String,
    /// The memory category.
    pub category: String,
    /// Where to read it.
    pub url: Option<String>,
    /// More fields for `metadata.source` (space, key, type, status, ...).
    pub extra: Map<String, Value>,
    /// Tags.
    pub tags: Vec<String>,
    /// The project the memory belongs to, if any.
    pub project: Option<String>,
}

/// What an import did with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternalOutcome {
    /// A new memory.
    Created,
    /// A newer version replaced the memory's text.
    Updated,
    /// Already there at this version.
    Unchanged,
}

impl Store {
    /// Stores `doc` as a memory, or updates the one that holds an older version of it.
    pub fn upsert_external(
        &self,
        doc: ExternalDoc,
    ) -> Result<(Memory, ExternalOutcome), StoreError> {
        let existing: Option<Memory> = {
            let reader = self.reader()?;
            reader
                .query_row(
                    &format!(
                        "SELECT {MEMORY_COLUMNS} FROM memories m WHERE m.deleted_at IS NULL
                           AND json_extract(m.metadata, '$.source.system') = ?1
                           AND json_extract(m.metadata, '$.source.id') = ?2
                         ORDER BY m.rowid LIMIT 1"
                    ),
                    params![doc.system, doc.id],
                    memory_from_row,
                )
                .optional()?
        };
        let mut source = doc.extra.clone();
        source.insert("system".into(), json!(doc.system));
        source.insert("id".into(), json!(doc.id));
        source.insert("version".into(), json!(doc.version));
        source.insert("title".into(), json!(doc.title));
        source.insert("url".into(), json!(doc.url));
        let content = format!("{}\n\n{}", doc.title, doc.text);
        match existing {
            Some(memory)
                if memory.metadata["source"]["version"] == json!(doc.version)
                    && memory.content == content =>
            {
                Ok((memory, ExternalOutcome::Unchanged))
            }
            Some(memory) => {
                let mut metadata = memory.metadata.clone();
                metadata.insert("source".into(), Value::Object(source));
                let updated = self.update(
                    memory.id,
                    MemoryPatch {
                        content: Some(content),
                        category: Some(doc.category),
                        metadata: Some(metadata),
                        ..MemoryPatch::default()
                    },
                    None,
                )?;
                Ok((updated, ExternalOutcome::Updated))
            }
            None => {
                let mut memory = NewMemory::new(content);
                memory.category = doc.category;
                memory.tags = doc.tags;
                memory.project = doc.project;
                memory.context = Some(format!("imported from {}", doc.system));
                memory
                    .metadata
                    .insert("source".into(), Value::Object(source));
                Ok((self.create(memory)?, ExternalOutcome::Created))
            }
        }
    }

    /// When `source` (like `confluence:OPS`) last synced completely, epoch milliseconds.
    pub fn connector_checkpoint(&self, source: &str) -> Result<Option<i64>, StoreError> {
        let reader = self.reader()?;
        Ok(reader
            .query_row(
                "SELECT last_run FROM connector_checkpoints WHERE source = ?1",
                [source],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Records that `source` synced completely as of `at_ms` (default now).
    pub fn set_connector_checkpoint(
        &self,
        source: &str,
        at_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        self.write(|tx, _| {
            tx.execute(
                "INSERT INTO connector_checkpoints (source, last_run) VALUES (?1, ?2)
                 ON CONFLICT (source) DO UPDATE SET last_run = excluded.last_run",
                params![source, at_ms.unwrap_or_else(now_ms)],
            )?;
            Ok(())
        })
    }
}
