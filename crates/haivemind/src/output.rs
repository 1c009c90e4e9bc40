//! Printing results: text for people by default, JSON with `--json`.

use haivemind_core::Memory;
use haivemind_core::memory::json::to_json;
use haivemind_core::time_format::ms_to_rfc3339;
use haivemind_store::{MemoryStats, SearchQuery, SearchResults, Store};
use serde_json::{Value, json};

/// `println!` that ignores a closed stdout (as in `haivemind search x | head -1`) instead of
/// panicking on it.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub struct Printer {
    pub json: bool,
}

fn one_line(text: &str, max_chars: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max_chars {
        flat
    } else {
        format!("{}…", flat.chars().take(max_chars).collect::<String>())
    }
}

impl Printer {
    fn emit(&self, value: &Value) {
        out!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    }

    /// A command's result: `value` with --json, else `text`.
    pub fn done(&self, value: Value, text: &str) {
        if self.json {
            self.emit(&value);
        } else {
            out!("{text}");
        }
    }

    pub fn memory(&self, memory: &Memory) {
        if self.json {
            return self.emit(&to_json(memory));
        }
        out!("id:           {}", memory.id);
        out!("category:     {}", memory.category);
        if !memory.tags.is_empty() {
            out!("tags:         {}", memory.tags.join(", "));
        }
        out!("user:         {}", memory.user_id);
        if let Some(project) = &memory.project {
            out!("project:      {project}");
        }
        out!("machine:      {}", memory.machine_id);
        out!(
            "scope:        {} / {}",
            memory.scope,
            memory.confidentiality
        );
        out!("created:      {}", ms_to_rfc3339(memory.created_at_ms));
        out!(
            "updated:      {} (version {})",
            ms_to_rfc3339(memory.updated_at_ms),
            memory.version
        );
        if let Some(context) = &memory.context {
            out!("context:      {context}");
        }
        if !memory.metadata.is_empty() {
            out!("metadata:     {}", Value::Object(memory.metadata.clone()));
        }
        out!("\n{}", memory.content);
    }

    pub fn memories(&self, memories: &[Memory]) {
        if self.json {
            let list: Vec<Value> = memories.iter().map(to_json).collect();
            return self.emit(&json!({"memories": list, "total": memories.len()}));
        }
        if memories.is_empty() {
            out!("no memories");
        }
        for m in memories {
            out!(
                "{}  {}  [{}]  {}",
                ms_to_rfc3339(m.created_at_ms),
                m.id,
                m.category,
                one_line(&m.content, 80)
            );
        }
    }

    pub fn search(&self, query: &SearchQuery, results: &SearchResults) {
        if self.json {
            return self.emit(&haivemind_mcp::render::search_results(query, results));
        }
        if let Some(note) = &results.note {
            eprintln!("note: {note}");
        }
        out!(
            "{} of {}{} matches ({})",
            results.hits.len(),
            results.total,
            if results.total_exact { "" } else { "+" },
            results.mode.as_str()
        );
        for hit in &results.hits {
            out!(
                "{:>7.3}  {}  [{}]  {}",
                hit.score,
                hit.memory.id,
                hit.memory.category,
                one_line(&hit.memory.content, 80)
            );
        }
    }

    pub fn stats(
        &self,
        store: &Store,
        stats: &MemoryStats,
        per_day: &std::collections::BTreeMap<i64, usize>,
    ) {
        if self.json {
            return self.emit(&haivemind_mcp::render::memory_stats(store, stats, per_day));
        }
        out!("memories: {} live, {} deleted", stats.live, stats.deleted);
        for (title, map) in [
            ("by category", &stats.by_category),
            ("by scope", &stats.by_scope),
            ("by confidentiality", &stats.by_confidentiality),
            ("by machine", &stats.by_machine),
            ("by user", &stats.by_user),
        ] {
            if map.is_empty() {
                continue;
            }
            let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k} {v}")).collect();
            out!("{title}: {}", parts.join(", "));
        }
        out!(
            "op log: {} entries; tombstones: {}; file: {} bytes",
            stats.op_log_entries,
            stats.tombstones,
            stats.database_bytes
        );
    }
}
