//! The memory tools of the seed's API reference.

use haivemind_core::memory::json::to_json;
use haivemind_core::security::Role;
use haivemind_core::time_format::{ms_to_rfc3339, parse_optional_rfc3339};
use haivemind_core::{Confidentiality, Memory, MemoryId, MemoryPatch, NewMemory, Scope};
use haivemind_store::{
    ConversationImport, DuplicateQuery, ExportFormat, HistoryEntry, MemoryFilter, RecentQuery,
    SearchQuery, csv_of_memories,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ToolContext, ToolEntry, schema_of};
use crate::arguments::parse;
use crate::error::ToolError;

pub(super) static TOOLS: &[ToolEntry] = &[
    ToolEntry {
        name: "store_memory",
        description: "Store a memory in the collective: a fix, an incident, a fact about a system, a preference. \
                      Other agents can then find it by keyword (and by meaning once a model is loaded). \
                      Returns the stored memory with its id.",
        read_only: false,
        destructive: false,
        idempotent: false,
        least_role: Role::Agent,
        schema: schema_of::<StoreMemoryArgs>,
        handler: store_memory,
    },
    ToolEntry {
        name: "retrieve_memory",
        description: "Get one memory by its id, with every field.",
        read_only: true,
        destructive: false,
        idempotent: true,
        least_role: Role::Readonly,
        schema: schema_of::<MemoryIdArgs>,
        handler: retrieve_memory,
    },
    ToolEntry {
        name: "search_memories",
        description: "Search memories by keywords or meaning, with optional filters (category, user, project, tags, \
                      machine, time range) applied before ranking. semantic=true (default) ranks by meaning and keywords \
                      together when an embedding model is loaded; search_mode in the result says how the ranking was made. \
                      Returns {memories: [...memory, score], total}.",
        read_only: true,
        destructive: false,
        idempotent: true,
        least_role: Role::Readonly,
        schema: schema_of::<SearchArgs>,
        handler: search_memories,
    },
    ToolEntry {
        name: "get_recent_memories",
        description: "The newest memories of the last `hours` hours, newest first.",
        read_only: true,
        destructive: false,
        idempotent: true,
        least_role: Role::Readonly,
        schema: schema_of::<RecentArgs>,
        handler: get_recent_memories,
    },
    ToolEntry {
        name: "update_memory",
        description: "Change fields of a memory. Only the given fields change; the old values are kept in its history \
                      and its version goes up by one.",
        read_only: false,
        destructive: true,
        idempotent: true,
        least_role: Role::Agent,
        schema: schema_of::<UpdateArgs>,
        handler: update_memory,
    },
    ToolEntry {
        name: "delete_memory",
        description: "Delete a memory. By default a soft delete: hidden from every read and search, recoverable with \
                      recover_deleted_memory for memory.recover_days (30 by default). hard_delete=true removes its content \
                      for good and leaves a tombstone so no old copy can bring it back; it cannot be undone.",
        read_only: false,
        destructive: true,
        idempotent: true,
        least_role: Role::Agent,
        schema: schema_of::<DeleteArgs>,
        handler: delete_memory,
    },
    ToolEntry {
        name: "recover_deleted_memory",
        description: "Bring back a soft-deleted memory.",
        read_only: false,
        destructive: false,
        idempotent: true,
        least_role: Role::Agent,
        schema: schema_of::<MemoryIdArgs>,
        handler: recover_deleted_memory,
    },
    ToolEntry {
        name: "list_deleted_memories",
        description: "Soft-deleted memories that can still be recovered, most recently deleted first.",
        read_only: true,
        destructive: false,
        idempotent: true,
        least_role: Role::Readonly,
        schema: schema_of::<ListDeletedArgs>,
        handler: list_deleted_memories,
    },
    ToolEntry {
        name: "bulk_delete_memories",
        description: "Delete every memory matching the filters (at least one filter is required). Without confirm=true \
                      it only reports how many would be deleted.",
        read_only: false,
        destructive: true,
        idempotent: false,
        least_role: Role::Admin,
        schema: schema_of::<BulkDeleteArgs>,
        handler: bulk_delete_memories,
    },
    ToolEntry {
        name: "get_memory_stats",
        description: "Counts of memories: live and deleted, by category, scope, confidentiality level, machine and user.",
        read_only: true,
        destructive: false,
        idempotent: true,
        least_role: Role::Readonly,
        schema: schema_of::<NoArgs>,
        handler: get_memory_stats,
    },
    ToolEntry {
        name: "get_memory_history",
        description: "The update history of a memory: every change, who made it and when, with old and new values.",
        read_only: true,
        destructive: false,
        idempotent: true,
        least_role: Role::Readonly,
        schema: schema_of::<MemoryIdArgs>,
        handler: get_memory_history,
    },
    ToolEntry {
        name: "detect_duplicate_memories",
        description: "Find groups of memories that say the same thing (similarity at or above threshold, 0-1). Each group \
                      names the oldest memory as the one to keep.",
        read_only: true,
        destructive: false,
        idempotent: true,
        least_role: Role::Readonly,
        schema: schema_of::<DetectDuplicatesArgs>,
        handler: detect_duplicate_memories,
    },
    ToolEntry {
        name: "merge_duplicate_memories",
        description: "Merge duplicates into one memory: their tags and metadata join keep_id's, and they are \
                      soft-deleted with a reason naming keep_id.",
        read_only: false,
        destructive: true,
        idempotent: false,
        least_role: Role::Agent,
        schema: schema_of::<MergeArgs>,
        handler: merge_duplicate_memories,
    },
    ToolEntry {
        name: "gdpr_export_user_data",
        description: "Everything stored about a user (GDPR access request): every memory, including soft-deleted ones, \
                      with its history, as JSON or CSV.",
        read_only: true,
        destructive: false,
        idempotent: true,
        least_role: Role::Agent,
        schema: schema_of::<GdprExportArgs>,
        handler: gdpr_export_user_data,
    },
    ToolEntry {
        name: "gdpr_delete_user_data",
        description: "Erase every memory of a user for good, leaving tombstones so no old copy can bring them back \
                      (GDPR erasure). Requires confirm=true.",
        read_only: false,
        destructive: true,
        idempotent: true,
        least_role: Role::Admin,
        schema: schema_of::<GdprDeleteArgs>,
        handler: gdpr_delete_user_data,
    },
    ToolEntry {
        name: "import_conversation",
        description: "Store a conversation transcript as memories, one per turn (lines like 'Alice: ...'), or per \
                      paragraph when there are no speakers. All share metadata.conversation_id.",
        read_only: false,
        destructive: false,
        idempotent: false,
        least_role: Role::Agent,
        schema: schema_of::<ImportConversationArgs>,
        handler: import_conversation,
    },
    ToolEntry {
        name: "get_machine_context",
        description: "Facts about the machine this server runs on: machine id, host, OS, version, data location, \
                      memory count and search capabilities.",
        read_only: true,
        destructive: false,
        idempotent: true,
        least_role: Role::Readonly,
        schema: schema_of::<NoArgs>,
        handler: get_machine_context,
    },
];

const CATEGORY_HELP: &str = "One of project, conversation, agent, global, infrastructure, incidents, \
                             deployments, monitoring, runbooks, security, or a category configured in memory.categories.";

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct StoreMemoryArgs {
    /// The text to remember. Required, at most memory.max_content_bytes (64 KiB by default).
    content: String,
    #[doc = "The category (default global)."]
    #[schemars(description = CATEGORY_HELP)]
    #[serde(default, deserialize_with = "crate::arguments::category")]
    category: Option<String>,
    /// Where this came from: a task, a file, a conversation.
    #[serde(default)]
    context: Option<String>,
    /// Any JSON object; returned exactly as given.
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    /// Tags, at most 64 of at most 64 characters.
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// The owning user (default "default").
    #[serde(default)]
    user_id: Option<String>,
    /// The project it belongs to.
    #[serde(default)]
    project: Option<String>,
    /// Who may see it and how far it replicates (default project-shared).
    #[serde(default)]
    #[schemars(extend("enum" = ["machine-local", "project-local", "project-shared", "user-global", "team-global", "private", null]))]
    scope: Option<String>,
    /// How sensitive it is (default normal). confidential and pii never leave this machine.
    #[serde(default)]
    #[schemars(extend("enum" = ["normal", "internal", "confidential", "pii", null]))]
    confidentiality_level: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct MemoryIdArgs {
    /// The memory's id (a UUID).
    memory_id: String,
}

fn default_limit() -> u32 {
    10
}
fn default_true() -> bool {
    true
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    /// What to look for, in words.
    query: String,
    /// Only this category.
    #[serde(default, deserialize_with = "crate::arguments::category")]
    category: Option<String>,
    /// Only this user's memories.
    #[serde(default)]
    user_id: Option<String>,
    /// Only this project.
    #[serde(default)]
    project: Option<String>,
    /// Only memories carrying every one of these tags.
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// Only memories written on this machine id.
    #[serde(default)]
    machine: Option<String>,
    /// Only memories created at or after this time (RFC 3339).
    #[serde(default)]
    since: Option<String>,
    /// Only memories created before this time (RFC 3339).
    #[serde(default)]
    until: Option<String>,
    /// Results per page, 1-100 (default 10).
    #[serde(default = "default_limit")]
    limit: u32,
    /// Results to skip, for paging (default 0).
    #[serde(default)]
    offset: u32,
    /// Rank by meaning as well as keywords (default true); false is keywords only.
    #[serde(default = "default_true")]
    semantic: bool,
}

fn default_hours() -> u32 {
    24
}
fn default_recent_limit() -> u32 {
    20
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RecentArgs {
    /// Only this user's memories.
    #[serde(default)]
    user_id: Option<String>,
    /// Only this category.
    #[serde(default, deserialize_with = "crate::arguments::category")]
    category: Option<String>,
    /// How far back to look, in hours (default 24).
    #[serde(default = "default_hours")]
    hours: u32,
    /// How many, 1-100 (default 20).
    #[serde(default = "default_recent_limit")]
    limit: u32,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct UpdateArgs {
    /// The memory's id.
    memory_id: String,
    /// New text.
    #[serde(default)]
    content: Option<String>,
    /// New category.
    #[serde(default, deserialize_with = "crate::arguments::category")]
    category: Option<String>,
    /// New context; null clears it.
    #[serde(default, deserialize_with = "present")]
    context: Option<Option<String>>,
    /// New tags, replacing the old ones.
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// New metadata, replacing the old object.
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    /// New project; null clears it.
    #[serde(default, deserialize_with = "present")]
    project: Option<Option<String>>,
    /// New scope.
    #[serde(default)]
    #[schemars(extend("enum" = ["machine-local", "project-local", "project-shared", "user-global", "team-global", "private", null]))]
    scope: Option<String>,
    /// New confidentiality level.
    #[serde(default)]
    #[schemars(extend("enum" = ["normal", "internal", "confidential", "pii", null]))]
    confidentiality_level: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DeleteArgs {
    /// The memory's id.
    memory_id: String,
    /// Remove the content for good, leaving a tombstone (default false: soft delete).
    #[serde(default)]
    hard_delete: bool,
    /// Why it is deleted; kept with the deletion.
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListDeletedArgs {
    /// Only this user's memories.
    #[serde(default)]
    user_id: Option<String>,
    /// Only this category.
    #[serde(default, deserialize_with = "crate::arguments::category")]
    category: Option<String>,
    /// How many, 1-100 (default 20).
    #[serde(default = "default_recent_limit")]
    limit: u32,
    /// How many to skip (default 0).
    #[serde(default)]
    offset: u32,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BulkDeleteArgs {
    /// Only this category.
    #[serde(default, deserialize_with = "crate::arguments::category")]
    category: Option<String>,
    /// Only this user's memories.
    #[serde(default)]
    user_id: Option<String>,
    /// Only this project.
    #[serde(default)]
    project: Option<String>,
    /// Only memories carrying every one of these tags.
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// Only memories written on this machine id.
    #[serde(default)]
    machine: Option<String>,
    /// Only memories created at or after this time (RFC 3339).
    #[serde(default)]
    since: Option<String>,
    /// Only memories created before this time (RFC 3339).
    #[serde(default)]
    until: Option<String>,
    /// Remove for good instead of soft-deleting (default false).
    #[serde(default)]
    hard_delete: bool,
    /// Why they are deleted.
    #[serde(default)]
    reason: Option<String>,
    /// Must be true to delete; otherwise only the count is reported.
    #[serde(default)]
    confirm: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

fn default_threshold() -> f64 {
    0.9
}
fn default_group_limit() -> u32 {
    50
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DetectDuplicatesArgs {
    /// Similarity from 0 to 1 at or above which memories are duplicates (default 0.9).
    #[serde(default = "default_threshold")]
    threshold: f64,
    /// Only this user's memories.
    #[serde(default)]
    user_id: Option<String>,
    /// Only this category.
    #[serde(default, deserialize_with = "crate::arguments::category")]
    category: Option<String>,
    /// Only this project.
    #[serde(default)]
    project: Option<String>,
    /// The most groups to return (default 50).
    #[serde(default = "default_group_limit")]
    limit: u32,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct MergeArgs {
    /// The memory to keep.
    keep_id: String,
    /// The duplicates to fold into it.
    duplicate_ids: Vec<String>,
}

fn default_format() -> String {
    "json".into()
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GdprExportArgs {
    /// The user whose data to export.
    user_id: String,
    /// json (default) or csv.
    #[serde(default = "default_format")]
    #[schemars(extend("enum" = ["json", "csv"]))]
    format: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GdprDeleteArgs {
    /// The user whose data to erase.
    user_id: String,
    /// Must be true: erasure cannot be undone.
    #[serde(default)]
    confirm: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ImportConversationArgs {
    /// The transcript.
    conversation_text: String,
    /// A title for the conversation.
    #[serde(default)]
    title: Option<String>,
    /// The owning user (default "default").
    #[serde(default)]
    user_id: Option<String>,
    /// Tags for every stored turn.
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// The project.
    #[serde(default)]
    project: Option<String>,
}

/// Tells an argument given as null (`Some(None)`: clear it) from one left out (`None`:
/// keep it).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

fn memory_id(field: &str, text: &str) -> Result<MemoryId, ToolError> {
    Ok(MemoryId::parse(field, text)?)
}

fn time(field: &str, text: Option<&String>) -> Result<Option<i64>, ToolError> {
    Ok(parse_optional_rfc3339(field, text.map(String::as_str))?)
}

fn memories_json(memories: &[Memory]) -> Value {
    Value::Array(memories.iter().map(to_json).collect())
}

fn history_json(entries: &[HistoryEntry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| {
                json!({
                    "version": e.version,
                    "action": e.action,
                    "changed_at": ms_to_rfc3339(e.changed_at_ms),
                    "machine_id": e.machine_id,
                    "agent_id": e.agent_id,
                    "changes": Value::Object(e.changes.clone()),
                })
            })
            .collect(),
    )
}

fn store_memory(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: StoreMemoryArgs = parse(arguments)?;
    let mut new = NewMemory::new(args.content);
    if let Some(category) = args.category {
        new.category = category;
    }
    new.context = args.context;
    new.metadata = args.metadata.unwrap_or_default();
    new.tags = args.tags.unwrap_or_default();
    if let Some(user) = args.user_id {
        new.user_id = user;
    }
    new.project = args.project;
    new.agent_id = cx.memory_agent_id();
    if let Some(scope) = args.scope {
        new.scope = Scope::parse("scope", &scope)?;
    }
    if let Some(level) = args.confidentiality_level {
        new.confidentiality = Confidentiality::parse("confidentiality_level", &level)?;
    }
    let memory = cx.store.create(new)?;
    Ok(to_json(&memory))
}

fn retrieve_memory(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: MemoryIdArgs = parse(arguments)?;
    let memory = cx.store.get(memory_id("memory_id", &args.memory_id)?)?;
    cx.check_readable(&memory)?;
    Ok(to_json(&memory))
}

fn search_memories(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: SearchArgs = parse(arguments)?;
    let query = SearchQuery {
        text: args.query,
        filter: MemoryFilter {
            agent_id: None,
            category: args.category,
            user_id: args.user_id,
            project: args.project,
            tags: args.tags.unwrap_or_default(),
            machine_id: args.machine,
            since_ms: time("since", args.since.as_ref())?,
            until_ms: time("until", args.until.as_ref())?,
            hide_restricted: cx.hide_restricted(),
        },
        limit: args.limit as usize,
        offset: args.offset as usize,
        semantic: args.semantic,
    };
    let results = cx.store.search(&query)?;
    Ok(crate::render::search_results(&query, &results))
}

fn get_recent_memories(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: RecentArgs = parse(arguments)?;
    let memories = cx.store.recent(&RecentQuery {
        filter: MemoryFilter {
            category: args.category,
            user_id: args.user_id,
            hide_restricted: cx.hide_restricted(),
            ..MemoryFilter::default()
        },
        hours: args.hours,
        limit: args.limit as usize,
    })?;
    Ok(json!({
        "memories": memories_json(&memories),
        "total": memories.len(),
        "hours": args.hours,
    }))
}

fn update_memory(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: UpdateArgs = parse(arguments)?;
    let id = memory_id("memory_id", &args.memory_id)?;
    let patch = MemoryPatch {
        content: args.content,
        category: args.category,
        context: args.context,
        tags: args.tags,
        metadata: args.metadata,
        project: args.project,
        scope: args.scope.map(|s| Scope::parse("scope", &s)).transpose()?,
        confidentiality: args
            .confidentiality_level
            .map(|l| Confidentiality::parse("confidentiality_level", &l))
            .transpose()?,
    };
    let memory = cx.store.update(id, patch, cx.agent_id.as_deref())?;
    Ok(to_json(&memory))
}

fn delete_memory(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: DeleteArgs = parse(arguments)?;
    let id = memory_id("memory_id", &args.memory_id)?;
    if args.hard_delete {
        cx.store.hard_delete(id, args.reason.clone())?;
        Ok(json!({
            "id": id.to_string(), "deleted": true, "hard_delete": true,
            "recoverable": false, "reason": args.reason,
        }))
    } else {
        let memory = cx.store.soft_delete(id, args.reason.clone())?;
        Ok(json!({
            "id": id.to_string(), "deleted": true, "hard_delete": false,
            "recoverable": true, "reason": args.reason,
            "deleted_at": memory.deletion.as_ref().map(|d| ms_to_rfc3339(d.at_ms)),
        }))
    }
}

fn recover_deleted_memory(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: MemoryIdArgs = parse(arguments)?;
    let memory = cx.store.recover(memory_id("memory_id", &args.memory_id)?)?;
    Ok(to_json(&memory))
}

fn list_deleted_memories(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: ListDeletedArgs = parse(arguments)?;
    let filter = MemoryFilter {
        category: args.category,
        user_id: args.user_id,
        hide_restricted: cx.hide_restricted(),
        ..MemoryFilter::default()
    };
    let (memories, total) =
        cx.store
            .list_deleted(&filter, args.limit as usize, args.offset as usize)?;
    Ok(json!({ "memories": memories_json(&memories), "total": total }))
}

fn bulk_delete_memories(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: BulkDeleteArgs = parse(arguments)?;
    let filter = MemoryFilter {
        agent_id: None,
        category: args.category,
        user_id: args.user_id,
        project: args.project,
        tags: args.tags.unwrap_or_default(),
        machine_id: args.machine,
        since_ms: time("since", args.since.as_ref())?,
        until_ms: time("until", args.until.as_ref())?,
        hide_restricted: false,
    };
    let outcome = cx
        .store
        .bulk_delete(&filter, args.hard_delete, args.reason, args.confirm)?;
    let mut out = json!({
        "matched": outcome.matched,
        "deleted": outcome.deleted,
        "hard_delete": outcome.hard,
        "confirmed": args.confirm,
    });
    if !args.confirm
        && let Value::Object(map) = &mut out
    {
        map.insert(
            "message".into(),
            json!(format!(
                "{} memories match; call again with confirm=true to delete them",
                outcome.matched
            )),
        );
    }
    Ok(out)
}

fn get_memory_stats(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let _: NoArgs = parse(arguments)?;
    let stats = cx.store.stats()?;
    let per_day = cx.store.created_per_day()?;
    let mut rendered = crate::render::memory_stats(&cx.store, &stats, &per_day);
    if cx.hide_restricted()
        && let Value::Object(map) = &mut rendered
    {
        // User ids can be personal data (a user may exist only on pii memories).
        map.remove("by_user");
    }
    Ok(rendered)
}

fn get_memory_history(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: MemoryIdArgs = parse(arguments)?;
    let id = memory_id("memory_id", &args.memory_id)?;
    // Reading the memory first gives the same not-found and deleted answers as retrieve.
    let memory = cx.store.get(id)?;
    cx.check_readable(&memory)?;
    let history = cx.store.history(id)?;
    if cx.hide_restricted() && was_ever_restricted(&history) {
        // Earlier values were written while the memory was confidential or pii; the
        // history holds them, so it is refused as a whole rather than half-redacted.
        return Err(ToolError::Forbidden {
            role: cx.caller.role,
            rule: format!(
                "memory {id} was confidential or pii earlier and its history holds those values; role {} may not read confidential or pii memories",
                cx.caller.role
            ),
        });
    }
    Ok(
        json!({ "id": id.to_string(), "version": memory.version, "history": history_json(&history) }),
    )
}

/// Whether any entry of `history` shows the memory at a restricted level.
fn was_ever_restricted(history: &[HistoryEntry]) -> bool {
    let restricted = |level: Option<&Value>| {
        level
            .and_then(Value::as_str)
            .is_some_and(|l| l == "confidential" || l == "pii")
    };
    history.iter().any(|entry| {
        let change = entry.changes.get("confidentiality_level");
        restricted(change.and_then(|c| c.get("from")))
            || restricted(change.and_then(|c| c.get("to")))
            || restricted(entry.changes.get("confidentiality_level"))
    })
}

fn detect_duplicate_memories(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: DetectDuplicatesArgs = parse(arguments)?;
    let groups = cx.store.find_duplicates(&DuplicateQuery {
        threshold: args.threshold,
        filter: MemoryFilter {
            category: args.category,
            user_id: args.user_id,
            project: args.project,
            hide_restricted: cx.hide_restricted(),
            ..MemoryFilter::default()
        },
        limit: args.limit as usize,
    })?;
    let groups_json: Vec<Value> = groups
        .iter()
        .map(|g| {
            json!({
                "keep_id": g.keep.to_string(),
                "duplicate_ids": g.duplicates.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
                "similarity": g.similarity,
            })
        })
        .collect();
    Ok(json!({
        "groups": groups_json,
        "total": groups.len(),
        "threshold": args.threshold,
        "method": "word-set jaccard",
    }))
}

fn merge_duplicate_memories(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: MergeArgs = parse(arguments)?;
    let keep = memory_id("keep_id", &args.keep_id)?;
    let duplicates = args
        .duplicate_ids
        .iter()
        .enumerate()
        .map(|(i, id)| memory_id(&format!("duplicate_ids[{i}]"), id))
        .collect::<Result<Vec<_>, _>>()?;
    let outcome = cx.store.merge(keep, &duplicates, cx.agent_id.as_deref())?;
    Ok(json!({
        "memory": to_json(&outcome.kept),
        "merged_ids": outcome.merged_ids.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
    }))
}

fn gdpr_export_user_data(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: GdprExportArgs = parse(arguments)?;
    let format = ExportFormat::parse("format", &args.format)?;
    let export = cx.store.export_user(&args.user_id)?;
    let exported_at = ms_to_rfc3339(haivemind_core::time_format::now_ms());
    match format {
        ExportFormat::Json => {
            let memories: Vec<Value> = export
                .memories
                .iter()
                .map(|(memory, history)| {
                    let mut value = to_json(memory);
                    if let Value::Object(map) = &mut value {
                        map.insert("history".into(), history_json(history));
                    }
                    value
                })
                .collect();
            Ok(json!({
                "user_id": export.user_id, "format": "json", "exported_at": exported_at,
                "total": memories.len(), "memories": memories,
            }))
        }
        ExportFormat::Csv => Ok(json!({
            "user_id": export.user_id, "format": "csv", "exported_at": exported_at,
            "total": export.memories.len(),
            "csv": csv_of_memories(export.memories.iter().map(|(m, _)| m)),
        })),
    }
}

fn gdpr_delete_user_data(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: GdprDeleteArgs = parse(arguments)?;
    let erased = cx.store.erase_user(&args.user_id, args.confirm)?;
    Ok(json!({ "user_id": args.user_id, "erased": erased, "recoverable": false }))
}

fn import_conversation(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: ImportConversationArgs = parse(arguments)?;
    let imported = cx.store.import_conversation(ConversationImport {
        text: args.conversation_text,
        title: args.title,
        user_id: args.user_id.unwrap_or_else(|| "default".into()),
        tags: args.tags.unwrap_or_default(),
        project: args.project,
        agent_id: cx.agent_id.clone(),
    })?;
    Ok(json!({
        "conversation_id": imported.conversation_id,
        "stored": imported.memories.len(),
        "memory_ids": imported.memories.iter().map(|m| m.id.to_string()).collect::<Vec<_>>(),
    }))
}

fn get_machine_context(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let _: NoArgs = parse(arguments)?;
    crate::resources::machine_context(cx)
}
