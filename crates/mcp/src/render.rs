//! Result shapes shared by the MCP tools and the CLI's `--json`, so the two never drift.

use haivemind_core::memory::json::to_json;
use haivemind_core::time_format::ms_to_rfc3339;
use haivemind_store::{MemoryStats, SearchQuery, SearchResults, Store};
use serde_json::{Value, json};

/// `{memories: [...memory, score], total, total_exact, limit, offset, query, search_mode,
/// note?}`.
pub fn search_results(query: &SearchQuery, results: &SearchResults) -> Value {
    let memories: Vec<Value> = results
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
    let mut out = json!({
        "memories": memories,
        "total": results.total,
        "total_exact": results.total_exact,
        "limit": query.limit,
        "offset": query.offset,
        "query": query.text,
        "search_mode": results.mode.as_str(),
    });
    if let (Some(note), Value::Object(map)) = (&results.note, &mut out) {
        map.insert("note".into(), json!(note));
    }
    out
}

/// Counts of what `store` holds, with how it can search.
/// `per_day` is [`Store::created_per_day`].
pub fn memory_stats(
    store: &Store,
    stats: &MemoryStats,
    per_day: &std::collections::BTreeMap<i64, usize>,
) -> Value {
    let search_modes = match store.embedder_model() {
        Some(model) => json!({ "full_text": true, "semantic": true, "model": model }),
        None => json!({ "full_text": true, "semantic": false, "model": null }),
    };
    json!({
        "total_memories": stats.live,
        "deleted_memories": stats.deleted,
        "by_category": stats.by_category,
        "by_scope": stats.by_scope,
        "by_confidentiality_level": stats.by_confidentiality,
        "by_machine": stats.by_machine,
        "by_user": stats.by_user,
        "oldest_memory_at": stats.oldest_ms.map(ms_to_rfc3339),
        "newest_memory_at": stats.newest_ms.map(ms_to_rfc3339),
        "op_log_entries": stats.op_log_entries,
        "tombstones": stats.tombstones,
        "schema_version": stats.schema_version,
        "database_bytes": stats.database_bytes,
        "machine_id": store.machine_id(),
        "search_modes": search_modes,
        "created_per_day": per_day
            .iter()
            .map(|(day, count)| json!({
                "day": ms_to_rfc3339(day * 86_400_000).get(..10),
                "count": count,
            }))
            .collect::<Vec<_>>(),
    })
}

/// An API token as tools, the REST API and the CLI show it: never its secret.
pub fn token_json(record: &haivemind_store::TokenRecord) -> Value {
    json!({
        "id": record.id,
        "name": record.name,
        "role": record.role.as_str(),
        "created_at": ms_to_rfc3339(record.created_at_ms),
        "last_used_at": record.last_used_ms.map(ms_to_rfc3339),
        "revoked_at": record.revoked_at_ms.map(ms_to_rfc3339),
        "tool_profile": record.tool_profile.map(|p| p.as_str()),
        "oauth": record.oauth.as_ref().map(|o| json!({
            "approved_by": o.parent_id,
            "client_id": o.client_id,
            "grant_id": o.grant_id,
            "audience": o.audience,
            "expires_at": ms_to_rfc3339(o.expires_at_ms),
        })),
    })
}
