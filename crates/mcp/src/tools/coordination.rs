//! Coordination tools: the agent roster, task delegation, broadcasts, and asking what one
//! agent knows (docs/COORDINATION.md).

use haivemind_core::Confidentiality;
use haivemind_core::security::Role;
use haivemind_core::time_format::{ms_to_rfc3339, now_ms, parse_rfc3339};
use haivemind_store::{
    MemoryFilter, NewAgent, NewBroadcast, NewTask, Priority, RosterEntry, SearchQuery, Task,
    TaskStatus,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ToolContext, ToolEntry, schema_of};
use crate::arguments::parse;
use crate::error::ToolError;

pub(super) const TOOLS: &[ToolEntry] = &[
    ToolEntry {
        name: "register_agent",
        description: "Join the collective: register this agent with its role (hive_mind, knowledge_seeker, \
                      memory_keeper, harvest_agent, code_weaver, sentinel_node, worker_drone, or your own) and \
                      capabilities, so tasks needing them are routed to it on any machine. Calling it again \
                      updates the registration. Every later call of this agent counts as a heartbeat.",
        read_only: false,
        destructive: false,
        idempotent: true,
        least_role: Role::Agent,
        schema: schema_of::<RegisterArgs>,
        handler: register_agent,
    },
    ToolEntry {
        name: "get_agent_roster",
        description: "The fleet's agents: id, machine, role, capabilities, last heartbeat, whether active, open \
                      tasks. Inactive agents only with include_inactive=true.",
        read_only: true,
        destructive: false,
        idempotent: true,
        least_role: Role::Readonly,
        schema: schema_of::<RosterArgs>,
        handler: get_agent_roster,
    },
    ToolEntry {
        name: "delegate_task",
        description: "Hand a task to another agent: to target_agent when named, else to the active agent holding \
                      every required capability (least loaded first), else it waits as pending until one \
                      appears. Answers with task_id, status and assigned_to. The task replicates to every machine.",
        read_only: false,
        destructive: false,
        idempotent: false,
        least_role: Role::Agent,
        schema: schema_of::<DelegateArgs>,
        handler: delegate_task,
    },
    ToolEntry {
        name: "get_my_tasks",
        description: "This agent's unfinished tasks, most urgent first, then oldest. Pending tasks it can do are \
                      given to it first. Claim one with claim_task before working on it.",
        read_only: false,
        destructive: false,
        idempotent: true,
        least_role: Role::Agent,
        schema: schema_of::<MyTasksArgs>,
        handler: get_my_tasks,
    },
    ToolEntry {
        name: "claim_task",
        description: "Accept a task (pending, or assigned to this agent). Claiming twice is harmless. If two agents \
                      claim one task on machines that could not talk, the earlier claim wins everywhere once they \
                      sync, and the task's history shows the other.",
        read_only: false,
        destructive: false,
        idempotent: true,
        least_role: Role::Agent,
        schema: schema_of::<ClaimArgs>,
        handler: claim_task,
    },
    ToolEntry {
        name: "update_task",
        description: "Move this agent's task to in_progress or failed (or cancel any unfinished task), with an \
                      optional note kept in its history.",
        read_only: false,
        destructive: false,
        idempotent: true,
        least_role: Role::Agent,
        schema: schema_of::<UpdateTaskArgs>,
        handler: update_task,
    },
    ToolEntry {
        name: "complete_task",
        description: "Finish this agent's claimed task with its result, which the delegating agent sees on any \
                      machine.",
        read_only: false,
        destructive: false,
        idempotent: true,
        least_role: Role::Agent,
        schema: schema_of::<CompleteArgs>,
        handler: complete_task,
    },
    ToolEntry {
        name: "get_task",
        description: "One task: its state, who holds it, its result, and every step of its history (including \
                      steps that did not apply, such as a losing claim).",
        read_only: true,
        destructive: false,
        idempotent: true,
        least_role: Role::Readonly,
        schema: schema_of::<TaskIdArgs>,
        handler: get_task,
    },
    ToolEntry {
        name: "list_tasks",
        description: "Every delegated task, newest first, optionally only of one status or one assigned agent \
                      (a board of the fleet's work; get_my_tasks is one agent's queue).",
        read_only: true,
        destructive: false,
        idempotent: true,
        least_role: Role::Readonly,
        schema: schema_of::<ListTasksArgs>,
        handler: list_tasks,
    },
    ToolEntry {
        name: "query_agent_knowledge",
        description: "Search only what one agent wrote: its memories, ranked like search_memories.",
        read_only: true,
        destructive: false,
        idempotent: true,
        least_role: Role::Readonly,
        schema: schema_of::<QueryAgentArgs>,
        handler: query_agent_knowledge,
    },
    ToolEntry {
        name: "broadcast_discovery",
        description: "Tell every agent of the fleet something now: stored as a memory (tag broadcast) and pushed at \
                      once to every node's WebSocket subscribers and connected MCP clients. Severity info, \
                      warning, error or critical. Confidential or pii content is refused: broadcasts leave the \
                      machine.",
        read_only: false,
        destructive: false,
        idempotent: false,
        least_role: Role::Agent,
        schema: schema_of::<BroadcastArgs>,
        handler: broadcast_discovery,
    },
    ToolEntry {
        name: "get_broadcasts",
        description: "Broadcasts from the whole fleet, newest first, optionally since a time and of one severity or \
                      category: for agents that poll.",
        read_only: true,
        destructive: false,
        idempotent: true,
        least_role: Role::Readonly,
        schema: schema_of::<GetBroadcastsArgs>,
        handler: get_broadcasts,
    },
];

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RegisterArgs {
    /// The agent's role: a seed role (hive_mind, knowledge_seeker, memory_keeper, harvest_agent,
    /// code_weaver, sentinel_node, worker_drone) or your own.
    role: String,
    /// What the agent can do, like ["elasticsearch_ops", "deployment"].
    #[serde(default)]
    capabilities: Vec<String>,
    /// What the agent is for.
    #[serde(default)]
    description: Option<String>,
    /// The agent's id; default: this client's name @ this machine.
    #[serde(default)]
    agent_id: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RosterArgs {
    /// Also list agents not seen within claudeops.agent_registry.agent_ttl.
    #[serde(default)]
    include_inactive: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DelegateArgs {
    /// What is to be done.
    task_description: String,
    /// Capabilities the agent must hold.
    #[serde(default)]
    required_capabilities: Vec<String>,
    /// Give it to this agent (an id from get_agent_roster).
    #[serde(default)]
    target_agent: Option<String>,
    /// low, normal (default), high or critical.
    #[serde(default)]
    priority: Option<String>,
    /// When it expires if not done: an RFC 3339 time, or seconds from now.
    #[serde(default)]
    deadline: Option<Value>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct MyTasksArgs {
    /// The agent; default: this client's name @ this machine.
    #[serde(default)]
    agent_id: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ClaimArgs {
    /// The task.
    task_id: String,
    /// The claiming agent; default: this client's name @ this machine.
    #[serde(default)]
    agent_id: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct UpdateTaskArgs {
    /// The task.
    task_id: String,
    /// in_progress, failed or cancelled.
    status: String,
    /// Kept in the task's history.
    #[serde(default)]
    note: Option<String>,
    /// The acting agent; default: this client's name @ this machine.
    #[serde(default)]
    agent_id: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CompleteArgs {
    /// The task.
    task_id: String,
    /// What came of it.
    result: String,
    /// The agent that did it; default: this client's name @ this machine.
    #[serde(default)]
    agent_id: Option<String>,
}

fn default_task_limit() -> u32 {
    100
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListTasksArgs {
    /// Only tasks in this state: pending, assigned, accepted, in_progress, completed, failed,
    /// cancelled or expired.
    #[serde(default)]
    status: Option<String>,
    /// Only tasks assigned to this agent.
    #[serde(default)]
    agent_id: Option<String>,
    /// How many, 1-500 (default 100).
    #[serde(default = "default_task_limit")]
    limit: u32,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TaskIdArgs {
    /// The task.
    task_id: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct QueryAgentArgs {
    /// The agent whose memories to search.
    agent_id: String,
    /// What to look for.
    query: String,
    /// Results, 1-100 (default 10).
    #[serde(default = "default_limit")]
    limit: u32,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BroadcastArgs {
    /// What every agent should know.
    message: String,
    /// The memory category (default global).
    #[serde(default, deserialize_with = "crate::arguments::category")]
    category: Option<String>,
    /// info (default), warning, error or critical.
    #[serde(default)]
    severity: Option<String>,
    /// Roles it is meant for (default: everyone).
    #[serde(default)]
    target_roles: Vec<String>,
    /// normal (default) or internal; confidential and pii are refused.
    #[serde(default)]
    confidentiality_level: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetBroadcastsArgs {
    /// Only broadcasts at or after this time (RFC 3339).
    #[serde(default)]
    since: Option<String>,
    /// Only this severity.
    #[serde(default)]
    severity: Option<String>,
    /// Only this category.
    #[serde(default, deserialize_with = "crate::arguments::category")]
    category: Option<String>,
    /// Results, 1-100 (default 20).
    #[serde(default = "default_broadcast_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    10
}

fn default_broadcast_limit() -> u32 {
    20
}

/// The acting agent: the one named, else this client's registry id.
fn acting_agent(cx: &ToolContext, named: Option<String>) -> Result<String, ToolError> {
    named
        .or_else(|| cx.registry_agent_id())
        .ok_or_else(|| ToolError::InvalidArguments {
            field: "agent_id".into(),
            rule: "is required: this client did not name itself at initialize".into(),
        })
}

/// A roster entry as tools show it.
pub fn roster_json(entry: &RosterEntry) -> Value {
    let a = &entry.agent;
    json!({
        "id": a.id,
        "agent_id": a.id,
        "machine_id": a.machine_id,
        "role": a.role,
        "capabilities": a.capabilities,
        "description": a.description,
        "registered_at": ms_to_rfc3339(a.registered_at_ms),
        "last_seen": ms_to_rfc3339(a.last_seen_ms),
        "active": entry.active,
        "open_tasks": entry.open_tasks,
    })
}

/// A task as tools show it.
pub fn task_json(task: &Task) -> Value {
    json!({
        "id": task.id,
        "task_id": task.id,
        "description": task.description,
        "required_capabilities": task.required_capabilities,
        "target_agent": task.target_agent,
        "assigned_to": task.assigned_to,
        "status": task.status.as_str(),
        "priority": task.priority.as_str(),
        "deadline": task.deadline_ms.map(ms_to_rfc3339),
        "created_by": task.created_by,
        "created_on": task.created_on,
        "created_at": ms_to_rfc3339(task.created_at_ms),
        "updated_at": ms_to_rfc3339(task.updated_at_ms),
        "result": task.result,
        "history": task.history.iter().map(|e| json!({
            "at": ms_to_rfc3339(e.at_ms),
            "machine_id": e.machine_id,
            "action": e.action,
            "agent_id": e.agent_id,
            "status": e.status,
            "note": e.note,
            "applied": e.applied,
        })).collect::<Vec<_>>(),
    })
}

fn register_agent(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: RegisterArgs = parse(arguments)?;
    let id = acting_agent(cx, args.agent_id)?;
    let role = args.role.trim().to_string();
    let entry = cx.store.register_agent(
        NewAgent {
            id,
            role: role.clone(),
            capabilities: args.capabilities,
            description: args.description,
        },
        cx.server.agent_ttl_ms,
    )?;
    let mut value = roster_json(&entry);
    value["known_role"] = json!(haivemind_store::KNOWN_ROLES.contains(&role.as_str()));
    Ok(value)
}

fn get_agent_roster(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: RosterArgs = parse(arguments)?;
    let roster = cx
        .store
        .roster(args.include_inactive, cx.server.agent_ttl_ms)?;
    Ok(json!({
        "agents": roster.iter().map(roster_json).collect::<Vec<_>>(),
        "total": roster.len(),
        "active": roster.iter().filter(|e| e.active).count(),
    }))
}

/// A deadline: an RFC 3339 time, or a number of seconds from now.
fn deadline_of(value: Option<&Value>) -> Result<Option<i64>, ToolError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(parse_rfc3339("deadline", text)?)),
        Some(Value::Number(seconds)) => seconds
            .as_f64()
            .filter(|s| *s > 0.0 && *s <= 10.0 * 365.0 * 86_400.0)
            .map(|s| Some(now_ms() + (s * 1000.0) as i64))
            .ok_or_else(|| ToolError::InvalidArguments {
                field: "deadline".into(),
                rule: "seconds from now must be positive and at most ten years".into(),
            }),
        Some(_) => Err(ToolError::InvalidArguments {
            field: "deadline".into(),
            rule: "must be an RFC 3339 time or a number of seconds from now".into(),
        }),
    }
}

fn delegate_task(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: DelegateArgs = parse(arguments)?;
    let priority = match &args.priority {
        Some(p) => Priority::parse("priority", p)?,
        None => Priority::Normal,
    };
    let task = cx.store.delegate_task(
        NewTask {
            description: args.task_description,
            required_capabilities: args.required_capabilities,
            target_agent: args.target_agent,
            priority,
            deadline_ms: deadline_of(args.deadline.as_ref())?,
            created_by: cx.registry_agent_id(),
        },
        cx.server.agent_ttl_ms,
    )?;
    Ok(task_json(&task))
}

fn get_my_tasks(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: MyTasksArgs = parse(arguments)?;
    let agent = acting_agent(cx, args.agent_id)?;
    let tasks = cx.store.tasks_of(&agent, cx.server.agent_ttl_ms)?;
    Ok(json!({
        "agent_id": agent,
        "tasks": tasks.iter().map(task_json).collect::<Vec<_>>(),
        "total": tasks.len(),
    }))
}

fn claim_task(cx: &ToolContext, arguments: Option<Map<String, Value>>) -> Result<Value, ToolError> {
    let args: ClaimArgs = parse(arguments)?;
    let agent = acting_agent(cx, args.agent_id)?;
    Ok(task_json(&cx.store.claim_task(&args.task_id, &agent)?))
}

fn update_task(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: UpdateTaskArgs = parse(arguments)?;
    let agent = acting_agent(cx, args.agent_id)?;
    let status = TaskStatus::parse("status", &args.status)?;
    Ok(task_json(&cx.store.update_task(
        &args.task_id,
        &agent,
        status,
        args.note,
    )?))
}

fn complete_task(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: CompleteArgs = parse(arguments)?;
    let agent = acting_agent(cx, args.agent_id)?;
    Ok(task_json(&cx.store.complete_task(
        &args.task_id,
        &agent,
        &args.result,
    )?))
}

fn list_tasks(cx: &ToolContext, arguments: Option<Map<String, Value>>) -> Result<Value, ToolError> {
    let args: ListTasksArgs = parse(arguments)?;
    if !(1..=500).contains(&args.limit) {
        return Err(ToolError::InvalidArguments {
            field: "limit".into(),
            rule: "must be 1-500".into(),
        });
    }
    let status = args
        .status
        .as_deref()
        .map(|s| TaskStatus::parse("status", s))
        .transpose()?;
    if let Some(agent) = &args.agent_id {
        haivemind_core::memory::check_name("agent_id", agent)?;
    }
    let tasks = cx
        .store
        .list_tasks(status, args.agent_id.as_deref(), args.limit as usize)?;
    Ok(json!({
        "tasks": tasks.iter().map(task_json).collect::<Vec<_>>(),
        "total": tasks.len(),
    }))
}

fn get_task(cx: &ToolContext, arguments: Option<Map<String, Value>>) -> Result<Value, ToolError> {
    let args: TaskIdArgs = parse(arguments)?;
    // Expiring overdue tasks writes: a readonly caller sees the task as stored.
    let task = if cx.caller.role == haivemind_core::security::Role::Readonly {
        cx.store.task_as_stored(&args.task_id)?
    } else {
        cx.store.task(&args.task_id)?
    };
    Ok(task_json(&task))
}

fn query_agent_knowledge(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: QueryAgentArgs = parse(arguments)?;
    haivemind_core::memory::check_name("agent_id", &args.agent_id)?;
    let query = SearchQuery {
        text: args.query,
        filter: MemoryFilter {
            agent_id: Some(args.agent_id.clone()),
            hide_restricted: cx.hide_restricted(),
            ..MemoryFilter::default()
        },
        limit: args.limit as usize,
        offset: 0,
        semantic: true,
    };
    let results = cx.store.search(&query)?;
    let mut value = crate::render::search_results(&query, &results);
    value["agent_id"] = json!(args.agent_id);
    Ok(value)
}

fn broadcast_discovery(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: BroadcastArgs = parse(arguments)?;
    let confidentiality = match &args.confidentiality_level {
        Some(level) => Confidentiality::parse("confidentiality_level", level)?,
        None => Confidentiality::Normal,
    };
    let memory = cx.store.broadcast(NewBroadcast {
        message: args.message,
        category: args.category,
        severity: args.severity.unwrap_or_else(|| "info".into()),
        target_roles: args.target_roles,
        confidentiality,
        agent_id: cx.memory_agent_id(),
    })?;
    let mut value = broadcast_json(&memory);
    value["delivered"] = json!(
        "stored; pushed to WebSocket subscribers and MCP clients of every node as it replicates"
    );
    Ok(value)
}

/// A broadcast as tools show it.
pub fn broadcast_json(m: &haivemind_core::Memory) -> Value {
    let meta = m.metadata.get("broadcast").cloned().unwrap_or(Value::Null);
    json!({
        "id": m.id.to_string(),
        "broadcast_id": m.id.to_string(),
        "message": m.content,
        "category": m.category,
        "severity": meta.get("severity"),
        "target_roles": meta.get("target_roles"),
        "from_agent": m.agent_id,
        "machine_id": m.machine_id,
        "created_at": ms_to_rfc3339(m.created_at_ms),
    })
}

fn get_broadcasts(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: GetBroadcastsArgs = parse(arguments)?;
    let since_ms = match &args.since {
        Some(text) => Some(parse_rfc3339("since", text)?),
        None => None,
    };
    let memories = cx.store.broadcasts(
        since_ms,
        args.severity.as_deref(),
        args.category,
        args.limit as usize,
        cx.hide_restricted(),
    )?;
    let broadcasts: Vec<Value> = memories.iter().map(broadcast_json).collect();
    Ok(json!({"broadcasts": broadcasts, "total": broadcasts.len()}))
}
