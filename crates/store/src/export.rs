//! Exports: a user's data for GDPR requests (JSON or CSV), and every memory for backups.

use haivemind_core::memory::check_name;
use haivemind_core::time_format::ms_to_rfc3339;
use haivemind_core::{InvalidInput, Memory};

use crate::search::{MemoryFilter, Selection};
use crate::{HistoryEntry, Store, StoreError};

/// The formats a GDPR export comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON document with memories and their history.
    Json,
    /// One CSV row per memory.
    Csv,
}

impl ExportFormat {
    /// Parses the format given in input `field`.
    pub fn parse(field: &str, text: &str) -> Result<Self, InvalidInput> {
        match text {
            "json" => Ok(ExportFormat::Json),
            "csv" => Ok(ExportFormat::Csv),
            _ => Err(InvalidInput::new(
                field,
                format!(
                    "unknown value \"{}\", expected one of json, csv",
                    haivemind_core::error::excerpt(text)
                ),
            )),
        }
    }
}

/// Everything stored about one user.
#[derive(Debug, Clone)]
pub struct UserExport {
    /// The user.
    pub user_id: String,
    /// Their memories, live and soft-deleted, oldest first, each with its history.
    pub memories: Vec<(Memory, Vec<HistoryEntry>)>,
}

/// The CSV columns, one per field of the memory model.
const CSV_HEADER: &[&str] = &[
    "id",
    "content",
    "category",
    "context",
    "tags",
    "metadata",
    "user_id",
    "project",
    "machine_id",
    "agent_id",
    "scope",
    "confidentiality_level",
    "created_at",
    "updated_at",
    "version",
    "deleted_at",
];

/// Renders memories as CSV with a header row; tags are `;`-separated, metadata is JSON.
pub fn csv_of_memories<'a>(memories: impl IntoIterator<Item = &'a Memory>) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = writer.write_record(CSV_HEADER);
    for m in memories {
        let _ = writer.write_record([
            m.id.to_string(),
            m.content.clone(),
            m.category.clone(),
            m.context.clone().unwrap_or_default(),
            m.tags.join(";"),
            serde_json::Value::Object(m.metadata.clone()).to_string(),
            m.user_id.clone(),
            m.project.clone().unwrap_or_default(),
            m.machine_id.clone(),
            m.agent_id.clone().unwrap_or_default(),
            m.scope.as_str().to_string(),
            m.confidentiality.as_str().to_string(),
            ms_to_rfc3339(m.created_at_ms),
            ms_to_rfc3339(m.updated_at_ms),
            m.version.to_string(),
            m.deletion
                .as_ref()
                .map(|d| ms_to_rfc3339(d.at_ms))
                .unwrap_or_default(),
        ]);
    }
    let bytes = writer.into_inner().unwrap_or_default();
    String::from_utf8(bytes).unwrap_or_default()
}

impl Store {
    /// Everything stored about `user_id`, for a GDPR access request.
    pub fn export_user(&self, user_id: &str) -> Result<UserExport, StoreError> {
        check_name("user_id", user_id)?;
        let filter = MemoryFilter {
            user_id: Some(user_id.to_string()),
            ..MemoryFilter::default()
        };
        let mut memories = Vec::new();
        let mut offset = 0;
        loop {
            let page = self.list_where(&Selection {
                order: "m.created_at, m.rowid",
                limit: 1000,
                offset,
                ..Selection::new("1 = 1", &filter)
            })?;
            if page.is_empty() {
                break;
            }
            offset += page.len();
            for memory in page {
                let history = self.history(memory.id)?;
                memories.push((memory, history));
            }
        }
        Ok(UserExport {
            user_id: user_id.to_string(),
            memories,
        })
    }

    /// Calls `each` with every memory, live and soft-deleted, in id order, in pages, so an
    /// export of any size runs in bounded memory. Returns how many were visited.
    pub fn for_each_memory(
        &self,
        mut each: impl FnMut(&Memory) -> Result<(), StoreError>,
    ) -> Result<usize, StoreError> {
        let everything = MemoryFilter::default();
        let mut after = String::new();
        let mut visited = 0;
        loop {
            let page = self.list_where(&Selection {
                params: vec![rusqlite::types::Value::Text(after.clone())],
                order: "m.id",
                limit: 1000,
                ..Selection::new("m.id > ?", &everything)
            })?;
            let Some(last) = page.last() else {
                return Ok(visited);
            };
            after = last.id.to_string();
            for memory in &page {
                each(memory)?;
                visited += 1;
            }
        }
    }
}
