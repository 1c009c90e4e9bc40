//! The tool catalogue: every tool's name, description, input schema, annotations and handler.
//!
//! A handler takes the raw arguments, parses them into its input type (which also gives the
//! schema), makes one engine call, and renders a JSON object. Handlers are synchronous and
//! run on a blocking thread, because the engine blocks on SQLite.

mod connectors;
mod context;
mod coordination;
mod devops;
mod memory;
mod onboarding;

pub use coordination::{broadcast_json, roster_json, task_json};

use std::sync::Arc;

use haivemind_core::audit::{AuditEvent, AuditLog};
use haivemind_core::config::ToolProfile;
use haivemind_core::security::{Caller, Role};
use haivemind_store::Store;
use rmcp::handler::server::tool::schema_for_input;
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde_json::{Map, Value};

use crate::ServerContext;
use crate::error::ToolError;

/// What a handler may use: the engine, the server's facts, and who is calling.
pub struct ToolContext {
    /// The memory engine.
    pub store: Arc<Store>,
    /// Facts about this server.
    pub server: Arc<ServerContext>,
    /// The calling agent, from the client's name, when known.
    pub agent_id: Option<String>,
    /// Who is calling, and with what rights.
    pub caller: Caller,
    /// Where deletions, erasures and refusals are recorded, when auditing is on.
    pub audit: Option<Arc<AuditLog>>,
}

impl ToolContext {
    fn audit(&self, event: AuditEvent) {
        if let Some(audit) = &self.audit {
            audit.record(
                event
                    .with("token_id", self.caller.token_id.clone())
                    .with("token_name", self.caller.name.clone())
                    .with("role", self.caller.role.as_str())
                    .with("transport", self.server.transport),
            );
        }
    }

    /// Refuses a memory the caller may not read. The refusal names the role, so a readonly
    /// agent learns why instead of seeing a "not found" that would hide the rule.
    pub(crate) fn check_readable(&self, memory: &haivemind_core::Memory) -> Result<(), ToolError> {
        if memory.confidentiality.may_leave_machine() || self.caller.role.may_read_restricted() {
            return Ok(());
        }
        Err(ToolError::Forbidden {
            role: self.caller.role,
            rule: format!(
                "memory {} is {} and role {} may not read confidential or pii memories",
                memory.id,
                memory.confidentiality.as_str(),
                self.caller.role
            ),
        })
    }

    /// Whether reads must leave out confidential and pii memories.
    pub(crate) fn hide_restricted(&self) -> bool {
        !self.caller.role.may_read_restricted()
    }

    /// This client's id in the agent roster: its name @ this machine.
    pub(crate) fn registry_agent_id(&self) -> Option<String> {
        let name = self.agent_id.as_deref()?;
        let id = format!("{name}@{}", self.store.machine_id());
        haivemind_core::memory::check_name("agent_id", &id)
            .is_ok()
            .then_some(id)
    }

    /// The author recorded on this client's memories: its roster id once it registered
    /// (so query_agent_knowledge finds them), else its name.
    pub(crate) fn memory_agent_id(&self) -> Option<String> {
        if let Some(id) = self.registry_agent_id()
            && self.store.agent(&id).is_ok()
        {
            return Some(id);
        }
        self.agent_id.clone()
    }
}

/// Why a call made through [`crate::HaivemindServer::call_as`] failed.
#[derive(Debug)]
pub enum CallFailure {
    /// The tool refused or failed.
    Tool(ToolError),
    /// The thread running the tool died (logged); nothing is known of the outcome.
    Panicked,
}

type Handler = fn(&ToolContext, Option<Map<String, Value>>) -> Result<Value, ToolError>;

/// One entry of the catalogue.
pub struct ToolEntry {
    /// The tool's name, as the seed named it.
    pub name: &'static str,
    /// What it does, for the agent choosing a tool.
    pub description: &'static str,
    /// Whether it only reads.
    pub read_only: bool,
    /// Whether it may remove or overwrite data.
    pub destructive: bool,
    /// Whether calling it twice with the same arguments does nothing more.
    pub idempotent: bool,
    /// The least role that may call it at all.
    pub least_role: Role,
    schema: fn() -> Arc<JsonObject>,
    handler: Handler,
}

impl ToolEntry {
    /// The tool as `tools/list` shows it.
    pub fn tool(&self) -> Tool {
        let mut annotations = ToolAnnotations::new();
        annotations.read_only_hint = Some(self.read_only);
        if !self.read_only {
            annotations.destructive_hint = Some(self.destructive);
            annotations.idempotent_hint = Some(self.idempotent);
        }
        // Only the connectors reach systems outside the collective (Confluence, Jira).
        annotations.open_world_hint = Some(
            connectors::TOOLS
                .iter()
                .any(|entry| entry.name == self.name),
        );
        Tool::new(self.name, self.description, (self.schema)()).with_annotations(annotations)
    }
}

/// The schema of input type `T`, as an MCP input schema.
fn schema_of<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    schema_for_input::<T>().unwrap_or_else(|error| {
        // Our input types are all structs, so this cannot happen; a test checks it.
        tracing::error!(error, "input schema is not an object");
        Arc::new(JsonObject::new())
    })
}

/// Every tool this server offers.
pub fn catalogue() -> impl Iterator<Item = &'static ToolEntry> {
    memory::TOOLS
        .iter()
        .chain(context::TOOLS)
        .chain(coordination::TOOLS)
        .chain(devops::TOOLS)
        .chain(connectors::TOOLS)
        .chain(onboarding::TOOLS)
}

/// Memory tools offered only in the `all` profile: bulk and GDPR work, duplicates,
/// transcripts, and the trash, which an agent rarely needs and a person does from the CLI
/// or the dashboard.
const BEYOND_CORE: &[&str] = &[
    "bulk_delete_memories",
    "gdpr_export_user_data",
    "gdpr_delete_user_data",
    "detect_duplicate_memories",
    "merge_duplicate_memories",
    "import_conversation",
    "list_deleted_memories",
];

/// The tools `tools/list` offers under `profile` (every tool still answers when called).
pub fn offered(profile: ToolProfile) -> impl Iterator<Item = &'static ToolEntry> {
    let named_in = |tools: &'static [ToolEntry], name: &str| tools.iter().any(|t| t.name == name);
    catalogue().filter(move |entry| {
        let core = (named_in(memory::TOOLS, entry.name) || named_in(context::TOOLS, entry.name))
            && !BEYOND_CORE.contains(&entry.name);
        match profile {
            ToolProfile::All => true,
            ToolProfile::Core => core,
            ToolProfile::Team => core || named_in(coordination::TOOLS, entry.name),
            ToolProfile::Devops => core || named_in(devops::TOOLS, entry.name),
        }
    })
}

/// Runs the tool `name` with `arguments`, if the caller's role allows it, and audits
/// refusals and every deletion.
pub fn call(
    context: &ToolContext,
    name: &str,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let entry = catalogue()
        .find(|entry| entry.name == name)
        .ok_or_else(|| ToolError::UnknownTool { name: name.into() })?;
    if let Err(refusal) = authorize(entry, context.caller.role, arguments.as_ref()) {
        context.audit(AuditEvent::new("access_denied").with("tool", name));
        return Err(refusal);
    }
    // Every call of a registered agent is a sign of life, written to the op log. A
    // readonly caller never writes, so its calls are none. A tool that writes names its
    // caller in `agent_id`; a reading tool's `agent_id` (query_agent_knowledge) names
    // whom it asks about, who did nothing.
    if context.caller.role != Role::Readonly {
        let named = arguments
            .as_ref()
            .filter(|_| !entry.read_only)
            .and_then(|a| a.get("agent_id"))
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(agent) = named.or_else(|| context.registry_agent_id())
            && let Err(error) = context.store.heartbeat(&agent)
        {
            tracing::warn!(%error, "could not record an agent heartbeat");
        }
    }
    let audited = AUDITED_TOOLS
        .contains(&name)
        .then(|| audit_fields(name, arguments.as_ref()));
    let outcome = (entry.handler)(context, arguments);
    match (&outcome, audited) {
        // A bulk delete without confirm only counts; nothing was deleted.
        (Ok(result), Some(_)) if result.get("confirmed") == Some(&Value::Bool(false)) => {}
        (Ok(result), Some(event)) => context.audit(with_outcome(event, result)),
        (Err(ToolError::Forbidden { .. }), _) => {
            context.audit(AuditEvent::new("access_denied").with("tool", name));
        }
        _ => {}
    }
    outcome
}

/// Tools whose successful calls the audit log records.
const AUDITED_TOOLS: &[&str] = &[
    "delete_memory",
    "bulk_delete_memories",
    "merge_duplicate_memories",
    "gdpr_delete_user_data",
    "gdpr_export_user_data",
    "recover_deleted_memory",
];

/// The rights a call needs: the tool's least role, and admin for anything that erases
/// (`hard_delete: true`).
fn authorize(
    entry: &ToolEntry,
    role: Role,
    arguments: Option<&Map<String, Value>>,
) -> Result<(), ToolError> {
    if role < entry.least_role {
        let why = match entry.least_role {
            Role::Admin => "it erases or deletes in bulk, which needs an admin token",
            Role::Agent if !entry.read_only => {
                "it changes memories, which needs an agent or admin token"
            }
            _ => "it reads confidential or pii memories, which needs an agent or admin token",
        };
        return Err(ToolError::Forbidden {
            role,
            rule: format!("role {role} may not call {}: {why}", entry.name),
        });
    }
    let hard = arguments
        .and_then(|a| a.get("hard_delete"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if hard && !role.may_erase() {
        return Err(ToolError::Forbidden {
            role,
            rule: format!(
                "role {role} may not call {} with hard_delete=true: erasing needs an admin token",
                entry.name
            ),
        });
    }
    Ok(())
}

/// What the audit log keeps of a call's arguments: ids and switches, never content,
/// reasons or user names (a user id may be a person's name; its digest still correlates).
fn audit_fields(tool: &str, arguments: Option<&Map<String, Value>>) -> AuditEvent {
    let mut event = AuditEvent::new(match tool {
        "gdpr_delete_user_data" => "user_erased",
        "gdpr_export_user_data" => "user_exported",
        "recover_deleted_memory" => "memory_recovered",
        "merge_duplicate_memories" => "memories_merged",
        _ => "memory_deleted",
    })
    .with("tool", tool);
    let Some(arguments) = arguments else {
        return event;
    };
    for key in ["memory_id", "keep_id", "hard_delete", "confirm", "category"] {
        if let Some(value) = arguments.get(key) {
            event = event.with(key, value.clone());
        }
    }
    if let Some(ids) = arguments.get("duplicate_ids") {
        event = event.with("duplicate_ids", ids.clone());
    }
    if let Some(user) = arguments.get("user_id").and_then(Value::as_str) {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(user.as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        event = event.with("user_id_sha256", hex);
    }
    event
}

fn with_outcome(mut event: AuditEvent, result: &Value) -> AuditEvent {
    for key in ["deleted", "matched", "erased", "merged_ids", "total"] {
        if let Some(value) = result.get(key) {
            event = event.with(key, value.clone());
        }
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_an_object_schema_and_a_unique_name() {
        let mut names = std::collections::BTreeSet::new();
        for entry in catalogue() {
            assert!(names.insert(entry.name), "duplicate tool {}", entry.name);
            let schema = schema_for_input_checked(entry);
            assert_eq!(
                schema.get("type").and_then(Value::as_str),
                Some("object"),
                "{}",
                entry.name
            );
        }
    }

    fn schema_for_input_checked(entry: &ToolEntry) -> Arc<JsonObject> {
        (entry.schema)()
    }

    #[test]
    fn roles_gate_tools() {
        let find = |name: &str| catalogue().find(|e| e.name == name).unwrap();
        let hard: Map<String, Value> = serde_json::from_str(r#"{"hard_delete": true}"#).unwrap();
        assert!(authorize(find("search_memories"), Role::Readonly, None).is_ok());
        assert!(authorize(find("store_memory"), Role::Readonly, None).is_err());
        assert!(authorize(find("store_memory"), Role::Agent, None).is_ok());
        assert!(authorize(find("gdpr_export_user_data"), Role::Readonly, None).is_err());
        assert!(authorize(find("delete_memory"), Role::Agent, None).is_ok());
        assert!(authorize(find("delete_memory"), Role::Agent, Some(&hard)).is_err());
        assert!(authorize(find("delete_memory"), Role::Admin, Some(&hard)).is_ok());
        assert!(authorize(find("gdpr_delete_user_data"), Role::Agent, None).is_err());
        assert!(authorize(find("bulk_delete_memories"), Role::Agent, None).is_err());
        for entry in catalogue() {
            assert!(
                entry.read_only == (entry.least_role == Role::Readonly)
                    || entry.name == "gdpr_export_user_data",
                "{}",
                entry.name
            );
        }
    }

    #[test]
    fn audit_fields_keep_ids_not_content() {
        let arguments: Map<String, Value> = serde_json::from_str(
            r#"{"memory_id": "m1", "reason": "secret reason", "user_id": "alice", "content": "x"}"#,
        )
        .unwrap();
        let event = audit_fields("delete_memory", Some(&arguments));
        let text = serde_json::to_string(event.fields()).unwrap();
        assert!(text.contains("m1"));
        assert!(!text.contains("secret reason") && !text.contains("alice"));
    }

    #[test]
    fn profiles_grow_from_core_and_all_offers_every_tool() {
        let names = |p| offered(p).map(|e| e.name).collect::<Vec<_>>();
        let (core, team, devops, all) = (
            names(ToolProfile::Core),
            names(ToolProfile::Team),
            names(ToolProfile::Devops),
            names(ToolProfile::All),
        );
        for must in [
            "store_memory",
            "search_memories",
            "get_context",
            "retrieve_memory",
        ] {
            assert!(core.contains(&must), "{must}");
        }
        assert!(!core.contains(&"gdpr_delete_user_data") && !core.contains(&"delegate_task"));
        assert!(team.contains(&"delegate_task") && !team.contains(&"record_incident"));
        assert!(devops.contains(&"record_incident") && !devops.contains(&"delegate_task"));
        for name in &core {
            assert!(team.contains(name) && devops.contains(name), "{name}");
        }
        assert_eq!(all.len(), catalogue().count());
        assert!(core.len() < team.len() && team.len() < all.len() && devops.len() < all.len());
    }

    #[test]
    fn read_only_tools_are_not_marked_destructive() {
        for entry in catalogue() {
            assert!(!(entry.read_only && entry.destructive), "{}", entry.name);
            let tool = entry.tool();
            let annotations = tool.annotations.unwrap();
            assert_eq!(annotations.read_only_hint, Some(entry.read_only));
        }
    }
}
