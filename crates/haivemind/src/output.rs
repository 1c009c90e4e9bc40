//! Printing results: text for people by default, JSON with `--json`.

use haivemind_core::Memory;
use haivemind_core::memory::json::to_json;
use haivemind_core::time_format::ms_to_rfc3339;
use haivemind_store::{MemoryStats, SearchResults};
use serde_json::{Value, json};

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
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    }

    /// A command's result: `value` with --json, else `text`.
    pub fn done(&self, value: Value, text: &str) {
        if self.json {
            self.emit(&value);
        } else {
            println!("{text}");
        }
    }

    pub fn memory(&self, memory: &Memory) {
        if self.json {
            return self.emit(&to_json(memory));
        }
        println!("id:           {}", memory.id);
        println!("category:     {}", memory.category);
        if !memory.tags.is_empty() {
            println!("tags:         {}", memory.tags.join(", "));
        }
        println!("user:         {}", memory.user_id);
        if let Some(project) = &memory.project {
            println!("project:      {project}");
        }
        println!("machine:      {}", memory.machine_id);
        println!(
            "scope:        {} / {}",
            memory.scope, memory.confidentiality
        );
        println!("created:      {}", ms_to_rfc3339(memory.created_at_ms));
        println!(
            "updated:      {} (version {})",
            ms_to_rfc3339(memory.updated_at_ms),
            memory.version
        );
        if let Some(context) = &memory.context {
            println!("context:      {context}");
        }
        if !memory.metadata.is_empty() {
            println!("metadata:     {}", Value::Object(memory.metadata.clone()));
        }
        println!("\n{}", memory.content);
    }

    pub fn memories(&self, memories: &[Memory]) {
        if self.json {
            let list: Vec<Value> = memories.iter().map(to_json).collect();
            return self.emit(&json!({"memories": list, "total": memories.len()}));
        }
        if memories.is_empty() {
            println!("no memories");
        }
        for m in memories {
            println!(
                "{}  {}  [{}]  {}",
                ms_to_rfc3339(m.created_at_ms),
                m.id,
                m.category,
                one_line(&m.content, 80)
            );
        }
    }

    pub fn search(&self, results: &SearchResults) {
        if self.json {
            let list: Vec<Value> = results
                .hits
                .iter()
                .map(|hit| {
                    let mut value = to_json(&hit.memory);
                    if let Value::Object(map) = &mut value {
                        map.insert("score".into(), json!(hit.score));
                    }
                    value
                })
                .collect();
            return self.emit(&json!({
                "memories": list, "total": results.total, "total_exact": results.total_exact,
                "search_mode": results.mode.as_str(), "note": results.note,
            }));
        }
        if let Some(note) = &results.note {
            eprintln!("note: {note}");
        }
        println!(
            "{} of {}{} matches ({})",
            results.hits.len(),
            results.total,
            if results.total_exact { "" } else { "+" },
            results.mode.as_str()
        );
        for hit in &results.hits {
            println!(
                "{:>7.3}  {}  [{}]  {}",
                hit.score,
                hit.memory.id,
                hit.memory.category,
                one_line(&hit.memory.content, 80)
            );
        }
    }

    pub fn stats(&self, stats: &MemoryStats) {
        let value = json!({
            "total_memories": stats.live, "deleted_memories": stats.deleted,
            "by_category": stats.by_category, "by_scope": stats.by_scope,
            "by_confidentiality_level": stats.by_confidentiality,
            "by_machine": stats.by_machine, "by_user": stats.by_user,
            "oldest_memory_at": stats.oldest_ms.map(ms_to_rfc3339),
            "newest_memory_at": stats.newest_ms.map(ms_to_rfc3339),
            "op_log_entries": stats.op_log_entries, "tombstones": stats.tombstones,
            "database_bytes": stats.database_bytes,
        });
        if self.json {
            return self.emit(&value);
        }
        println!("memories: {} live, {} deleted", stats.live, stats.deleted);
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
            println!("{title}: {}", parts.join(", "));
        }
        println!(
            "op log: {} entries; tombstones: {}; file: {} bytes",
            stats.op_log_entries, stats.tombstones, stats.database_bytes
        );
    }
}
