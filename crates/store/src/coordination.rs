//! Agent coordination: the fleet's roster of agents and the tasks delegated between them,
//! replicated like memories (docs/COORDINATION.md).
//!
//! Every change is an operation in the op log (`record_kind` `agent` or `task`, always
//! shareable), and a record's state is a **replay** of all its operations in stamp order:
//! each operation applies only if it fits the state the ones before it left (a claim of a
//! task someone else already claimed does nothing). Every node holds the same operations
//! after a sync, replays them in the same order, and so reaches the same state: two agents
//! claiming one task on two partitioned nodes end with the same winner everywhere (the
//! claim with the lower stamp), and the loser sees it in the task's history.
//!
//! The `agents` and `tasks` tables are caches of those replays, rebuilt per record on every
//! new operation, local or replicated.

use crate::db::{OptionalExtension, Transaction, params};
use haivemind_core::InvalidInput;
use haivemind_core::hlc::HybridClock;
use haivemind_core::time_format::now_ms;
use serde_json::{Value, json};

use crate::oplog::{self, NewOp, OpKind};
use crate::{Store, StoreError};

/// How often a busy agent's liveness is written to the op log (and so reaches the fleet).
const HEARTBEAT_EVERY_MS: i64 = 60_000;
/// The most tasks one listing returns.
const MAX_TASKS: usize = 500;
/// The longest agent description, in bytes.
pub const MAX_AGENT_DESCRIPTION_BYTES: usize = 4_096;
/// The longest task description or status note, in bytes.
pub const MAX_TASK_TEXT_BYTES: usize = 16_384;
/// The longest task result, in bytes.
pub const MAX_TASK_RESULT_BYTES: usize = 65_536;
/// The most capabilities an agent offers or a task requires.
pub const MAX_CAPABILITIES: usize = 64;
/// The largest coordination operation's payload, as JSON: every field at its limit fits.
const MAX_COORDINATION_PAYLOAD_BYTES: usize = 128 * 1024;

/// A registered agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    /// Its id: given at registration, else `{client name}@{machine}`.
    pub id: String,
    /// The machine it runs on.
    pub machine_id: String,
    /// Its role (`hive_mind`, `code_weaver`, ... or free-form).
    pub role: String,
    /// What it can do.
    pub capabilities: Vec<String>,
    /// What it is for.
    pub description: Option<String>,
    /// First registration, epoch milliseconds.
    pub registered_at_ms: i64,
    /// Last sign of life, epoch milliseconds.
    pub last_seen_ms: i64,
}

/// What `register_agent` is given.
#[derive(Debug, Clone)]
pub struct NewAgent {
    /// The agent's id.
    pub id: String,
    /// Its role.
    pub role: String,
    /// What it can do.
    pub capabilities: Vec<String>,
    /// What it is for.
    pub description: Option<String>,
}

/// The seed's agent roles; others are allowed too.
pub const KNOWN_ROLES: &[&str] = &[
    "hive_mind",
    "knowledge_seeker",
    "memory_keeper",
    "harvest_agent",
    "code_weaver",
    "sentinel_node",
    "worker_drone",
];

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    /// Waiting for an agent that can do it.
    Pending,
    /// Given to an agent, not yet accepted.
    Assigned,
    /// Accepted (claimed) by its agent.
    Accepted,
    /// Being worked on.
    InProgress,
    /// Done, with a result.
    Completed,
    /// Given up by its agent.
    Failed,
    /// Called off.
    Cancelled,
    /// Its deadline passed before it was done.
    Expired,
}

impl TaskStatus {
    /// The name used in tools and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Assigned => "assigned",
            TaskStatus::Accepted => "accepted",
            TaskStatus::InProgress => "in_progress",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::Expired => "expired",
        }
    }

    /// Reads a status name; `field` names the input in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self, InvalidInput> {
        Ok(match text {
            "pending" => TaskStatus::Pending,
            "assigned" => TaskStatus::Assigned,
            "accepted" => TaskStatus::Accepted,
            "in_progress" => TaskStatus::InProgress,
            "completed" => TaskStatus::Completed,
            "failed" => TaskStatus::Failed,
            "cancelled" => TaskStatus::Cancelled,
            "expired" => TaskStatus::Expired,
            _ => {
                return Err(InvalidInput::new(
                    field,
                    "must be one of pending, assigned, accepted, in_progress, completed, failed, cancelled, expired",
                ));
            }
        })
    }

    /// Whether nothing can happen to the task any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed
                | TaskStatus::Failed
                | TaskStatus::Cancelled
                | TaskStatus::Expired
        )
    }
}

/// How urgent a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Whenever.
    Low,
    /// The default.
    Normal,
    /// Soon.
    High,
    /// Now.
    Critical,
}

impl Priority {
    /// The name used in tools and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    /// Reads a priority name; `field` names the input in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self, InvalidInput> {
        Ok(match text {
            "low" => Priority::Low,
            "normal" => Priority::Normal,
            "high" => Priority::High,
            "critical" | "urgent" => Priority::Critical,
            _ => {
                return Err(InvalidInput::new(
                    field,
                    "must be one of low, normal, high, critical",
                ));
            }
        })
    }

    fn rank(self) -> i64 {
        self as i64
    }
}

/// One step of a task's history, applied or not.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEvent {
    /// When, epoch milliseconds (the operation's wall clock).
    pub at_ms: i64,
    /// The machine it was made on.
    pub machine_id: String,
    /// What was asked: create, assign, claim, status, complete, expire.
    pub action: String,
    /// The agent that asked, if any.
    pub agent_id: Option<String>,
    /// The status asked for (`status` actions) or reached.
    pub status: String,
    /// A note or the result.
    pub note: Option<String>,
    /// Whether it changed the task; a refused step (a second claim, a late update) stays in
    /// the history so its agent can see why.
    pub applied: bool,
}

/// A delegated task.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Its id.
    pub id: String,
    /// What is to be done.
    pub description: String,
    /// Capabilities an agent needs to be given it.
    pub required_capabilities: Vec<String>,
    /// The agent it was delegated to by name, if any.
    pub target_agent: Option<String>,
    /// The agent it is assigned to or claimed by.
    pub assigned_to: Option<String>,
    /// Where it is.
    pub status: TaskStatus,
    /// How urgent.
    pub priority: Priority,
    /// When it expires if not done, epoch milliseconds.
    pub deadline_ms: Option<i64>,
    /// The agent that delegated it.
    pub created_by: Option<String>,
    /// The machine it was delegated on.
    pub created_on: String,
    /// When, epoch milliseconds.
    pub created_at_ms: i64,
    /// When its state last changed.
    pub updated_at_ms: i64,
    /// The result, once completed (or the reason, once failed).
    pub result: Option<String>,
    /// Every step, in order.
    pub history: Vec<TaskEvent>,
}

/// What `delegate_task` is given.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// What is to be done.
    pub description: String,
    /// Capabilities an agent needs.
    pub required_capabilities: Vec<String>,
    /// Delegate to this agent by name.
    pub target_agent: Option<String>,
    /// How urgent.
    pub priority: Priority,
    /// Expire at, epoch milliseconds.
    pub deadline_ms: Option<i64>,
    /// The delegating agent.
    pub created_by: Option<String>,
}

/// An agent in the roster, with what the roster knows about it now.
#[derive(Debug, Clone, PartialEq)]
pub struct RosterEntry {
    /// The agent.
    pub agent: Agent,
    /// Seen within the agent time-to-live.
    pub active: bool,
    /// Tasks it holds that are not finished.
    pub open_tasks: usize,
}

fn check_text(field: &str, text: &str, max: usize) -> Result<(), InvalidInput> {
    if text.trim().is_empty() {
        return Err(InvalidInput::new(field, "must not be empty"));
    }
    if text.len() > max {
        return Err(InvalidInput::new(
            field,
            format!("must be at most {max} bytes"),
        ));
    }
    Ok(())
}

fn check_capabilities(field: &str, capabilities: &[String]) -> Result<Vec<String>, InvalidInput> {
    if capabilities.len() > MAX_CAPABILITIES {
        return Err(InvalidInput::new(
            field,
            format!("must list at most {MAX_CAPABILITIES} capabilities"),
        ));
    }
    let mut out = Vec::new();
    for (i, capability) in capabilities.iter().enumerate() {
        let capability = capability.trim();
        haivemind_core::memory::check_name(&format!("{field}[{i}]"), capability)?;
        if !out.iter().any(|c: &String| c == capability) {
            out.push(capability.to_string());
        }
    }
    Ok(out)
}

/// Checks an agent or task operation that came from a peer against the rules the local
/// write path applies to the same fields, so a replicated record obeys the limits a local
/// one does. Returns the payload with only the keys its action has (in the order sent), so
/// nothing a peer adds beside them is logged or relayed.
pub(crate) fn check_remote_op(
    kind: &str,
    record_id: &str,
    payload: &Value,
) -> Result<Value, InvalidInput> {
    haivemind_core::memory::check_name("record_id", record_id)?;
    let size = haivemind_core::memory::json_size(payload);
    if size > MAX_COORDINATION_PAYLOAD_BYTES {
        return Err(InvalidInput::new(
            "payload",
            format!("is {size} bytes, more than the limit of {MAX_COORDINATION_PAYLOAD_BYTES}"),
        ));
    }
    let optional_text = |key: &str| -> Result<Option<&str>, InvalidInput> {
        match payload.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(InvalidInput::new(
                format!("payload.{key}"),
                "must be a string",
            )),
        }
    };
    let name = |key: &str| -> Result<(), InvalidInput> {
        if let Some(value) = optional_text(key)? {
            haivemind_core::memory::check_name(&format!("payload.{key}"), value)?;
        }
        Ok(())
    };
    let bounded = |key: &str, max: usize| -> Result<(), InvalidInput> {
        if let Some(value) = optional_text(key)? {
            check_text(&format!("payload.{key}"), value, max)?;
        }
        Ok(())
    };
    let capabilities = |key: &str| -> Result<(), InvalidInput> {
        match payload.get(key) {
            None | Some(Value::Null) => Ok(()),
            Some(Value::Array(items)) => {
                let mut list = Vec::with_capacity(items.len().min(MAX_CAPABILITIES + 1));
                for (i, item) in items.iter().enumerate().take(MAX_CAPABILITIES + 1) {
                    let text = item.as_str().ok_or_else(|| {
                        InvalidInput::new(format!("payload.{key}[{i}]"), "must be a string")
                    })?;
                    list.push(text.to_string());
                }
                if items.len() > MAX_CAPABILITIES {
                    list.push(String::new());
                }
                check_capabilities(&format!("payload.{key}"), &list).map(|_| ())
            }
            Some(_) => Err(InvalidInput::new(
                format!("payload.{key}"),
                "must be a list of strings",
            )),
        }
    };
    let action = optional_text("action")?.unwrap_or_default();
    let known: &[&str] = match kind {
        "agent" => &["register", "heartbeat"],
        _ => &["create", "assign", "claim", "status", "complete", "expire"],
    };
    if !known.contains(&action) {
        return Err(InvalidInput::new(
            "payload.action",
            format!(
                "unknown {kind} action \"{}\", expected one of {}",
                haivemind_core::error::excerpt(action),
                known.join(", ")
            ),
        ));
    }
    // The fields each action cannot do without, as the local write path always sets them.
    let needed: &[&str] = match action {
        "register" => &["role"],
        "create" => &["description"],
        "assign" | "claim" | "complete" => &["agent_id"],
        "status" => &["agent_id", "status"],
        _ => &[],
    };
    for key in needed {
        if optional_text(key)?.is_none() {
            return Err(InvalidInput::new(
                format!("payload.{key}"),
                format!("is required for a {action} action"),
            ));
        }
    }
    match action {
        "register" => {
            name("machine_id")?;
            name("role")?;
            capabilities("capabilities")?;
            bounded("description", MAX_AGENT_DESCRIPTION_BYTES)?;
        }
        "create" => {
            bounded("description", MAX_TASK_TEXT_BYTES)?;
            capabilities("required_capabilities")?;
            name("target_agent")?;
            name("assigned_to")?;
            name("created_by")?;
            if let Some(priority) = optional_text("priority")? {
                Priority::parse("payload.priority", priority)?;
            }
        }
        _ => {
            name("agent_id")?;
            if let Some(status) = optional_text("status")? {
                TaskStatus::parse("payload.status", status)?;
            }
            bounded("note", MAX_TASK_TEXT_BYTES)?;
            bounded("result", MAX_TASK_RESULT_BYTES)?;
        }
    }
    for key in ["at", "deadline_ms"] {
        if payload
            .get(key)
            .is_some_and(|v| !v.is_null() && !v.is_i64())
        {
            return Err(InvalidInput::new(
                format!("payload.{key}"),
                "must be a whole number of epoch milliseconds",
            ));
        }
    }
    let keys: &[&str] = match action {
        "register" => &["machine_id", "role", "capabilities", "description", "at"],
        "heartbeat" => &["at"],
        "create" => &[
            "description",
            "required_capabilities",
            "target_agent",
            "assigned_to",
            "priority",
            "deadline_ms",
            "created_by",
        ],
        "assign" | "claim" => &["agent_id"],
        "status" => &["agent_id", "status", "note"],
        "complete" => &["agent_id", "result"],
        _ => &[],
    };
    let canonical: serde_json::Map<String, Value> = payload
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| *key == "action" || keys.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    Ok(Value::Object(canonical))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_string)
}

/// One operation of a record, as replay reads it.
struct RecordOp {
    hlc: u64,
    origin: String,
    payload: Value,
}

fn record_ops(tx: &Transaction<'_>, kind: &str, id: &str) -> Result<Vec<RecordOp>, StoreError> {
    let mut statement = tx.prepare_cached(
        "SELECT hlc, origin, payload FROM op_log WHERE record_kind = ?1 AND record_id = ?2
         ORDER BY hlc, origin",
    )?;
    let rows = statement.query_map(params![kind, id], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    let mut ops = Vec::new();
    for row in rows {
        let (hlc, origin, payload) = row?;
        let payload = serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt {
            record: format!("{kind} {id}"),
            detail: e.to_string(),
        })?;
        ops.push(RecordOp {
            hlc: hlc as u64,
            origin,
            payload,
        });
    }
    Ok(ops)
}

fn wall_ms(hlc: u64) -> i64 {
    (hlc >> 16) as i64
}

/// The agent its operations describe, and its newest stamp.
fn replay_agent(id: &str, ops: &[RecordOp]) -> Option<(Agent, u64, String)> {
    let mut agent: Option<Agent> = None;
    for op in ops {
        let at = op
            .payload
            .get("at")
            .and_then(Value::as_i64)
            .unwrap_or(wall_ms(op.hlc))
            // A sign of life is no later than its operation's stamp and not before 1970:
            // a peer cannot make an agent look alive for ever.
            .clamp(0, wall_ms(op.hlc).max(0));
        match op.payload.get("action").and_then(Value::as_str) {
            Some("register") => {
                let registered_at = agent.as_ref().map_or(at, |a| a.registered_at_ms);
                let last_seen = agent.as_ref().map_or(at, |a| a.last_seen_ms.max(at));
                agent = Some(Agent {
                    id: id.to_string(),
                    machine_id: text(&op.payload, "machine_id")
                        .unwrap_or_else(|| op.origin.clone()),
                    role: text(&op.payload, "role").unwrap_or_default(),
                    capabilities: strings(&op.payload["capabilities"]),
                    description: text(&op.payload, "description"),
                    registered_at_ms: registered_at,
                    last_seen_ms: last_seen,
                });
            }
            Some("heartbeat") => {
                if let Some(agent) = &mut agent {
                    agent.last_seen_ms = agent.last_seen_ms.max(at);
                }
            }
            _ => {}
        }
    }
    let last = ops.last()?;
    agent.map(|a| (a, last.hlc, last.origin.clone()))
}

/// The task its operations describe: each applies only if it fits the state before it.
fn replay_task(id: &str, ops: &[RecordOp]) -> Option<(Task, u64, String)> {
    let mut task: Option<Task> = None;
    for op in ops {
        let p = &op.payload;
        let action = p.get("action").and_then(Value::as_str).unwrap_or("");
        let at = wall_ms(op.hlc);
        let agent = text(p, "agent_id");
        let Some(current) = &mut task else {
            if action == "create" {
                let assigned_to = text(p, "assigned_to");
                task = Some(Task {
                    id: id.to_string(),
                    description: text(p, "description").unwrap_or_default(),
                    required_capabilities: strings(&p["required_capabilities"]),
                    target_agent: text(p, "target_agent"),
                    status: if assigned_to.is_some() {
                        TaskStatus::Assigned
                    } else {
                        TaskStatus::Pending
                    },
                    assigned_to,
                    priority: text(p, "priority")
                        .and_then(|t| Priority::parse("priority", &t).ok())
                        .unwrap_or(Priority::Normal),
                    deadline_ms: p.get("deadline_ms").and_then(Value::as_i64),
                    created_by: text(p, "created_by"),
                    created_on: op.origin.clone(),
                    created_at_ms: at,
                    updated_at_ms: at,
                    result: None,
                    history: Vec::new(),
                });
                if let Some(t) = &mut task {
                    let status = t.status.as_str().to_string();
                    t.history.push(TaskEvent {
                        at_ms: at,
                        machine_id: op.origin.clone(),
                        action: "create".into(),
                        agent_id: t.created_by.clone(),
                        status,
                        note: None,
                        applied: true,
                    });
                }
            }
            continue;
        };
        let holder = current.assigned_to.clone();
        let by_holder = agent.is_some() && agent == holder;
        let (next, note): (Option<(TaskStatus, Option<String>)>, Option<String>) = match action {
            "assign" if current.status == TaskStatus::Pending && agent.is_some() => {
                (Some((TaskStatus::Assigned, agent.clone())), None)
            }
            "claim"
                if matches!(current.status, TaskStatus::Pending | TaskStatus::Assigned)
                    && agent.is_some()
                    && (holder.is_none() || by_holder) =>
            {
                (Some((TaskStatus::Accepted, agent.clone())), None)
            }
            "status" => {
                let asked = text(p, "status").unwrap_or_default();
                let note = text(p, "note");
                let fits = match asked.as_str() {
                    "in_progress" => current.status == TaskStatus::Accepted && by_holder,
                    "failed" => {
                        matches!(
                            current.status,
                            TaskStatus::Accepted | TaskStatus::InProgress
                        ) && by_holder
                    }
                    "cancelled" => !current.status.is_final(),
                    _ => false,
                };
                let status = TaskStatus::parse("status", &asked).ok();
                (status.filter(|_| fits).map(|s| (s, holder.clone())), note)
            }
            "complete"
                if matches!(
                    current.status,
                    TaskStatus::Accepted | TaskStatus::InProgress
                ) && by_holder =>
            {
                (
                    Some((TaskStatus::Completed, holder.clone())),
                    text(p, "result"),
                )
            }
            "expire"
                if !current.status.is_final()
                    && current.deadline_ms.is_some_and(|deadline| at >= deadline) =>
            {
                (Some((TaskStatus::Expired, holder.clone())), None)
            }
            _ => (None, text(p, "note").or_else(|| text(p, "result"))),
        };
        let applied = next.is_some();
        if let Some((status, assigned_to)) = next {
            current.status = status;
            current.assigned_to = assigned_to;
            current.updated_at_ms = at;
            if matches!(status, TaskStatus::Completed | TaskStatus::Failed) {
                current.result = note.clone().or(current.result.take());
            }
        }
        current.history.push(TaskEvent {
            at_ms: at,
            machine_id: op.origin.clone(),
            action: action.to_string(),
            agent_id: agent,
            status: if applied {
                current.status.as_str().to_string()
            } else {
                text(p, "status").unwrap_or_else(|| current.status.as_str().to_string())
            },
            note,
            applied,
        });
    }
    let last = ops.last()?;
    task.map(|t| (t, last.hlc, last.origin.clone()))
}

/// Rebuilds the cached state of one agent or task from its operations.
pub(crate) fn replay(tx: &Transaction<'_>, kind: &str, id: &str) -> Result<(), StoreError> {
    let ops = record_ops(tx, kind, id)?;
    match kind {
        "agent" => {
            let Some((agent, hlc, origin)) = replay_agent(id, &ops) else {
                return Ok(());
            };
            tx.prepare_cached(
                "INSERT INTO agents
                 (id, machine_id, role, capabilities, description, registered_at, last_seen, hlc, hlc_origin)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (id) DO UPDATE SET machine_id = excluded.machine_id,
                     role = excluded.role, capabilities = excluded.capabilities,
                     description = excluded.description, registered_at = excluded.registered_at,
                     last_seen = excluded.last_seen, hlc = excluded.hlc,
                     hlc_origin = excluded.hlc_origin",
            )?
            .execute(params![
                agent.id,
                agent.machine_id,
                agent.role,
                json!(agent.capabilities).to_string(),
                agent.description,
                agent.registered_at_ms,
                agent.last_seen_ms,
                hlc as i64,
                origin
            ])?;
        }
        "task" => {
            let Some((task, hlc, origin)) = replay_task(id, &ops) else {
                return Ok(());
            };
            let history: Vec<Value> = task.history.iter().map(event_json).collect();
            tx.prepare_cached(
                "INSERT INTO tasks
                 (id, description, required_capabilities, target_agent, assigned_to, status, priority,
                  priority_rank, deadline, created_by, created_on, created_at, updated_at, result, history,
                  hlc, hlc_origin)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
                 ON CONFLICT (id) DO UPDATE SET description = excluded.description,
                     required_capabilities = excluded.required_capabilities,
                     target_agent = excluded.target_agent, assigned_to = excluded.assigned_to,
                     status = excluded.status, priority = excluded.priority,
                     priority_rank = excluded.priority_rank, deadline = excluded.deadline,
                     created_by = excluded.created_by, created_on = excluded.created_on,
                     created_at = excluded.created_at, updated_at = excluded.updated_at,
                     result = excluded.result, history = excluded.history, hlc = excluded.hlc,
                     hlc_origin = excluded.hlc_origin",
            )?
            .execute(params![
                task.id,
                task.description,
                json!(task.required_capabilities).to_string(),
                task.target_agent,
                task.assigned_to,
                task.status.as_str(),
                task.priority.as_str(),
                task.priority.rank(),
                task.deadline_ms,
                task.created_by,
                task.created_on,
                task.created_at_ms,
                task.updated_at_ms,
                task.result,
                Value::Array(history).to_string(),
                hlc as i64,
                origin
            ])?;
        }
        _ => {}
    }
    Ok(())
}

fn event_json(event: &TaskEvent) -> Value {
    json!({
        "at_ms": event.at_ms,
        "machine_id": event.machine_id,
        "action": event.action,
        "agent_id": event.agent_id,
        "status": event.status,
        "note": event.note,
        "applied": event.applied,
    })
}

/// The unfinished tasks held by the agent of `agents a`.
const OPEN_TASKS_OF_A: &str = "(SELECT count(*) FROM tasks t WHERE t.assigned_to = a.id
     AND t.status IN ('assigned', 'accepted', 'in_progress'))";

const AGENT_COLUMNS: &str =
    "id, machine_id, role, capabilities, description, registered_at, last_seen";

fn agent_of(row: &crate::db::Row<'_>) -> crate::db::Result<Agent> {
    let capabilities: String = row.get(3)?;
    Ok(Agent {
        id: row.get(0)?,
        machine_id: row.get(1)?,
        role: row.get(2)?,
        capabilities: serde_json::from_str::<Value>(&capabilities)
            .map(|v| strings(&v))
            .unwrap_or_default(),
        description: row.get(4)?,
        registered_at_ms: row.get(5)?,
        last_seen_ms: row.get(6)?,
    })
}

const TASK_COLUMNS: &str = "id, description, required_capabilities, target_agent, assigned_to, status, priority, deadline, created_by, created_on, created_at, updated_at, result, history";

fn task_of(row: &crate::db::Row<'_>) -> crate::db::Result<Task> {
    let required: String = row.get(2)?;
    let status: String = row.get(5)?;
    let priority: String = row.get(6)?;
    let history: String = row.get(13)?;
    let history = serde_json::from_str::<Value>(&history).unwrap_or(Value::Null);
    Ok(Task {
        id: row.get(0)?,
        description: row.get(1)?,
        required_capabilities: serde_json::from_str::<Value>(&required)
            .map(|v| strings(&v))
            .unwrap_or_default(),
        target_agent: row.get(3)?,
        assigned_to: row.get(4)?,
        status: TaskStatus::parse("status", &status).unwrap_or(TaskStatus::Pending),
        priority: Priority::parse("priority", &priority).unwrap_or(Priority::Normal),
        deadline_ms: row.get(7)?,
        created_by: row.get(8)?,
        created_on: row.get(9)?,
        created_at_ms: row.get(10)?,
        updated_at_ms: row.get(11)?,
        result: row.get(12)?,
        history: history
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .map(|e| TaskEvent {
                        at_ms: e["at_ms"].as_i64().unwrap_or(0),
                        machine_id: text(e, "machine_id").unwrap_or_default(),
                        action: text(e, "action").unwrap_or_default(),
                        agent_id: text(e, "agent_id"),
                        status: text(e, "status").unwrap_or_default(),
                        note: text(e, "note"),
                        applied: e["applied"].as_bool().unwrap_or(false),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    })
}

impl Store {
    fn coordination_op(
        &self,
        tx: &Transaction<'_>,
        clock: &mut HybridClock,
        kind: &'static str,
        id: &str,
        op: OpKind,
        payload: Value,
    ) -> Result<(), StoreError> {
        oplog::append(
            tx,
            clock,
            &self.machine_id,
            NewOp {
                record_kind: kind,
                record_id: id.to_string(),
                op,
                payload,
                shareable: true,
            },
        )?;
        replay(tx, kind, id)
    }

    fn agent_in(tx: &Transaction<'_>, id: &str) -> Result<Option<Agent>, StoreError> {
        Ok(tx
            .query_row(
                &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = ?1"),
                [id],
                agent_of,
            )
            .optional()?)
    }

    fn task_in(tx: &Transaction<'_>, id: &str) -> Result<Task, StoreError> {
        tx.query_row(
            &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"),
            [id],
            task_of,
        )
        .optional()?
        .ok_or_else(|| StoreError::RecordNotFound {
            kind: "task",
            id: id.to_string(),
        })
    }

    /// Registers `new` on this machine, or updates its registration (the same call twice
    /// changes nothing but its last sign of life). Pending tasks it can do are given to it.
    /// Returns it as the roster shows it, with its open tasks.
    pub fn register_agent(&self, new: NewAgent, ttl_ms: i64) -> Result<RosterEntry, StoreError> {
        haivemind_core::memory::check_name("agent_id", &new.id)?;
        haivemind_core::memory::check_name("role", new.role.trim())?;
        if let Some(description) = &new.description {
            check_text("description", description, MAX_AGENT_DESCRIPTION_BYTES)?;
        }
        let capabilities = check_capabilities("capabilities", &new.capabilities)?;
        self.write(|tx, clock| {
            let existing = Self::agent_in(tx, &new.id)?;
            let unchanged = existing.as_ref().is_some_and(|a| {
                a.machine_id == self.machine_id
                    && a.role == new.role.trim()
                    && a.capabilities == capabilities
                    && a.description == new.description
            });
            if unchanged {
                self.heartbeat_in(tx, clock, &new.id, true)?;
            } else {
                self.coordination_op(
                    tx,
                    clock,
                    "agent",
                    &new.id,
                    if existing.is_some() {
                        OpKind::Update
                    } else {
                        OpKind::Create
                    },
                    json!({
                        "action": "register",
                        "machine_id": self.machine_id,
                        "role": new.role.trim(),
                        "capabilities": capabilities,
                        "description": new.description,
                        "at": now_ms(),
                    }),
                )?;
            }
            self.assign_pending_in(tx, clock, &new.id, ttl_ms)?;
            let agent = Self::agent_in(tx, &new.id)?.ok_or_else(|| StoreError::Corrupt {
                record: format!("agent {}", new.id),
                detail: "not there after registration".into(),
            })?;
            let open: i64 = tx.query_row(
                &format!("SELECT {OPEN_TASKS_OF_A} FROM agents a WHERE a.id = ?1"),
                [&new.id],
                |row| row.get(0),
            )?;
            Ok(RosterEntry {
                agent,
                active: true,
                open_tasks: open as usize,
            })
        })
    }

    /// Notes that `agent_id` is alive. Written to the op log (so the fleet sees it) at most
    /// once a minute; returns whether it was. An unknown agent is ignored.
    pub fn heartbeat(&self, agent_id: &str) -> Result<bool, StoreError> {
        let due = {
            let reader = self.reader()?;
            reader
                .query_row(
                    "SELECT last_seen FROM agents WHERE id = ?1",
                    [agent_id],
                    |row| row.get::<_, i64>(0),
                )
                .optional()?
                .is_some_and(|seen| now_ms().saturating_sub(seen) >= HEARTBEAT_EVERY_MS)
        };
        if !due {
            return Ok(false);
        }
        self.write(|tx, clock| self.heartbeat_in(tx, clock, agent_id, false))
    }

    fn heartbeat_in(
        &self,
        tx: &Transaction<'_>,
        clock: &mut HybridClock,
        agent_id: &str,
        always: bool,
    ) -> Result<bool, StoreError> {
        let Some(agent) = Self::agent_in(tx, agent_id)? else {
            return Ok(false);
        };
        let now = now_ms();
        if !always && now.saturating_sub(agent.last_seen_ms) < HEARTBEAT_EVERY_MS {
            return Ok(false);
        }
        self.coordination_op(
            tx,
            clock,
            "agent",
            agent_id,
            OpKind::Update,
            json!({"action": "heartbeat", "at": now}),
        )?;
        Ok(true)
    }

    /// One agent.
    pub fn agent(&self, id: &str) -> Result<Agent, StoreError> {
        let reader = self.reader()?;
        reader
            .query_row(
                &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = ?1"),
                [id],
                agent_of,
            )
            .optional()?
            .ok_or_else(|| StoreError::RecordNotFound {
                kind: "agent",
                id: id.to_string(),
            })
    }

    /// Every agent of the fleet this node knows, active ones first (seen within `ttl_ms`),
    /// then by most recent sign of life; inactive ones only when asked.
    pub fn roster(
        &self,
        include_inactive: bool,
        ttl_ms: i64,
    ) -> Result<Vec<RosterEntry>, StoreError> {
        let reader = self.reader()?;
        let cutoff = now_ms() - ttl_ms;
        let mut statement = reader.prepare_cached(&format!(
            "SELECT {AGENT_COLUMNS}, {OPEN_TASKS_OF_A}
             FROM agents a WHERE ?1 OR a.last_seen >= ?2
             ORDER BY a.last_seen >= ?2 DESC, a.last_seen DESC, a.id"
        ))?;
        let rows = statement.query_map(params![include_inactive, cutoff], |row| {
            let agent = agent_of(row)?;
            let open: i64 = row.get(7)?;
            Ok(RosterEntry {
                active: agent.last_seen_ms >= cutoff,
                agent,
                open_tasks: open as usize,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The active agent that should get a task needing `required`: holding every
    /// capability, least loaded first, then most recently seen, then by id.
    fn route_in(
        tx: &Transaction<'_>,
        required: &[String],
        ttl_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let cutoff = now_ms() - ttl_ms;
        let mut statement = tx.prepare_cached(&format!(
            "SELECT {AGENT_COLUMNS}, {OPEN_TASKS_OF_A} AS load
             FROM agents a WHERE a.last_seen >= ?1
             ORDER BY load, a.last_seen DESC, a.id"
        ))?;
        let rows = statement.query_map([cutoff], agent_of)?;
        for agent in rows {
            let agent = agent?;
            if required.iter().all(|c| agent.capabilities.contains(c)) {
                return Ok(Some(agent.id));
            }
        }
        Ok(None)
    }

    /// Delegates a task: to `target_agent` when named (it must be registered), else to the
    /// active agent holding every required capability (least loaded, then most recently
    /// seen), else it stays pending until such an agent registers or asks for its tasks.
    pub fn delegate_task(&self, new: NewTask, ttl_ms: i64) -> Result<Task, StoreError> {
        check_text("task_description", &new.description, MAX_TASK_TEXT_BYTES)?;
        let required = check_capabilities("required_capabilities", &new.required_capabilities)?;
        if let Some(target) = &new.target_agent {
            haivemind_core::memory::check_name("target_agent", target)?;
        }
        if let Some(deadline) = new.deadline_ms
            && deadline <= now_ms()
        {
            return Err(InvalidInput::new("deadline", "must be in the future").into());
        }
        let id = format!("task_{}", uuid::Uuid::now_v7().simple());
        self.write(|tx, clock| {
            let assigned_to = match &new.target_agent {
                Some(target) => {
                    if Self::agent_in(tx, target)?.is_none() {
                        return Err(InvalidInput::new(
                            "target_agent",
                            format!(
                                "no agent {target:?} is registered (get_agent_roster lists them)"
                            ),
                        )
                        .into());
                    }
                    Some(target.clone())
                }
                None => Self::route_in(tx, &required, ttl_ms)?,
            };
            self.coordination_op(
                tx,
                clock,
                "task",
                &id,
                OpKind::Create,
                json!({
                    "action": "create",
                    "description": new.description,
                    "required_capabilities": required,
                    "target_agent": new.target_agent,
                    "assigned_to": assigned_to,
                    "priority": new.priority.as_str(),
                    "deadline_ms": new.deadline_ms,
                    "created_by": new.created_by,
                }),
            )?;
            Self::task_in(tx, &id)
        })
    }

    /// Gives `agent_id` the pending tasks it can do (it must be registered and active).
    fn assign_pending_in(
        &self,
        tx: &Transaction<'_>,
        clock: &mut HybridClock,
        agent_id: &str,
        ttl_ms: i64,
    ) -> Result<usize, StoreError> {
        let Some(agent) = Self::agent_in(tx, agent_id)? else {
            return Ok(0);
        };
        if agent.last_seen_ms < now_ms() - ttl_ms {
            return Ok(0);
        }
        let pending: Vec<Task> = {
            let mut statement = tx.prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'pending'
                   AND (target_agent IS NULL OR target_agent = ?1)
                 ORDER BY priority_rank DESC, created_at LIMIT 100"
            ))?;
            statement
                .query_map([agent_id], task_of)?
                .collect::<Result<_, _>>()?
        };
        let mut given = 0;
        for task in pending {
            if task
                .required_capabilities
                .iter()
                .all(|c| agent.capabilities.contains(c))
            {
                self.coordination_op(
                    tx,
                    clock,
                    "task",
                    &task.id,
                    OpKind::Update,
                    json!({"action": "assign", "agent_id": agent_id}),
                )?;
                given += 1;
            }
        }
        Ok(given)
    }

    /// Moves every unfinished task whose deadline has passed to expired. Returns how many.
    pub fn expire_overdue(&self) -> Result<usize, StoreError> {
        let now = now_ms();
        let due: i64 = self.reader()?.query_row(
            "SELECT count(*) FROM tasks WHERE deadline IS NOT NULL AND deadline <= ?1
               AND status IN ('pending', 'assigned', 'accepted', 'in_progress')",
            [now],
            |row| row.get(0),
        )?;
        if due == 0 {
            return Ok(0);
        }
        self.write(|tx, clock| {
            let ids: Vec<String> = {
                let mut statement = tx.prepare_cached(
                    "SELECT id FROM tasks WHERE deadline IS NOT NULL AND deadline <= ?1
                       AND status IN ('pending', 'assigned', 'accepted', 'in_progress')",
                )?;
                statement
                    .query_map([now], |row| row.get(0))?
                    .collect::<Result<_, _>>()?
            };
            for id in &ids {
                self.coordination_op(
                    tx,
                    clock,
                    "task",
                    id,
                    OpKind::Update,
                    json!({"action": "expire"}),
                )?;
            }
            Ok(ids.len())
        })
    }

    /// One task, with its history (deadlines are checked first, which may write).
    pub fn task(&self, id: &str) -> Result<Task, StoreError> {
        self.expire_overdue()?;
        self.task_as_stored(id)
    }

    /// One task as the file holds it, writing nothing: for readers that may not write
    /// (a task past its deadline shows its last state until a writer expires it).
    pub fn task_as_stored(&self, id: &str) -> Result<Task, StoreError> {
        let reader = self.reader()?;
        reader
            .query_row(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"),
                [id],
                task_of,
            )
            .optional()?
            .ok_or_else(|| StoreError::RecordNotFound {
                kind: "task",
                id: id.to_string(),
            })
    }

    /// The unfinished tasks of `agent_id`, most urgent first, then oldest; pending tasks it
    /// can do are given to it first.
    pub fn tasks_of(&self, agent_id: &str, ttl_ms: i64) -> Result<Vec<Task>, StoreError> {
        self.expire_overdue()?;
        let has_pending: bool = self.reader()?.query_row(
            "SELECT EXISTS (SELECT 1 FROM tasks WHERE status = 'pending')",
            params![],
            |row| row.get(0),
        )?;
        if has_pending {
            self.write(|tx, clock| self.assign_pending_in(tx, clock, agent_id, ttl_ms))?;
        }
        let reader = self.reader()?;
        let mut statement = reader.prepare_cached(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE assigned_to = ?1
               AND status IN ('assigned', 'accepted', 'in_progress')
             ORDER BY priority_rank DESC, created_at LIMIT {MAX_TASKS}"
        ))?;
        Ok(statement
            .query_map([agent_id], task_of)?
            .collect::<Result<_, _>>()?)
    }

    /// Tasks, newest first, optionally only of one status or one agent.
    pub fn list_tasks(
        &self,
        status: Option<TaskStatus>,
        agent_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Task>, StoreError> {
        self.expire_overdue()?;
        let reader = self.reader()?;
        let mut statement = reader.prepare_cached(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks
             WHERE (CAST(?1 AS TEXT) IS NULL OR status = ?1) AND (CAST(?2 AS TEXT) IS NULL OR assigned_to = ?2)
             ORDER BY created_at DESC LIMIT ?3"
        ))?;
        Ok(statement
            .query_map(
                params![
                    status.map(TaskStatus::as_str),
                    agent_id,
                    limit.min(MAX_TASKS) as i64
                ],
                task_of,
            )?
            .collect::<Result<_, _>>()?)
    }

    /// Applies a task action unless it is already done (the same call twice gives the same
    /// answer); refuses one that does not fit the task's state.
    fn act_on_task(
        &self,
        id: &str,
        agent_id: &str,
        payload: Value,
        done_already: impl Fn(&Task) -> bool,
        fits: impl Fn(&Task) -> Result<(), String>,
    ) -> Result<Task, StoreError> {
        haivemind_core::memory::check_name("agent_id", agent_id)?;
        self.expire_overdue()?;
        self.write(|tx, clock| {
            let task = Self::task_in(tx, id)?;
            if done_already(&task) {
                return Ok(task);
            }
            fits(&task).map_err(StoreError::Conflict)?;
            self.coordination_op(tx, clock, "task", id, OpKind::Update, payload)?;
            Self::task_in(tx, id)
        })
    }

    /// `agent_id` accepts the task (pending, or assigned to it).
    pub fn claim_task(&self, id: &str, agent_id: &str) -> Result<Task, StoreError> {
        self.act_on_task(
            id,
            agent_id,
            json!({"action": "claim", "agent_id": agent_id}),
            |task| {
                task.assigned_to.as_deref() == Some(agent_id)
                    && matches!(task.status, TaskStatus::Accepted | TaskStatus::InProgress)
            },
            |task| match (task.status, task.assigned_to.as_deref()) {
                (TaskStatus::Pending, _) => Ok(()),
                (TaskStatus::Assigned, Some(holder)) if holder == agent_id => Ok(()),
                (status, Some(holder)) => Err(format!(
                    "task {} is {} by {holder}; it cannot be claimed by {agent_id}",
                    task.id,
                    if status == TaskStatus::Assigned {
                        "assigned to"
                    } else {
                        "held"
                    }
                )),
                (status, None) => Err(format!(
                    "task {} is {}; it cannot be claimed",
                    task.id,
                    status.as_str()
                )),
            },
        )
    }

    /// `agent_id` moves its task to `status`: in_progress, failed or cancelled.
    pub fn update_task(
        &self,
        id: &str,
        agent_id: &str,
        status: TaskStatus,
        note: Option<String>,
    ) -> Result<Task, StoreError> {
        if !matches!(
            status,
            TaskStatus::InProgress | TaskStatus::Failed | TaskStatus::Cancelled
        ) {
            return Err(InvalidInput::new(
                "status",
                "must be in_progress, failed or cancelled (claim_task accepts, complete_task completes)",
            )
            .into());
        }
        if let Some(note) = &note {
            check_text("note", note, MAX_TASK_TEXT_BYTES)?;
        }
        self.act_on_task(
            id,
            agent_id,
            json!({"action": "status", "agent_id": agent_id, "status": status.as_str(), "note": note}),
            |task| task.status == status,
            |task| {
                let holder = task.assigned_to.as_deref();
                let fits = match status {
                    TaskStatus::InProgress => {
                        task.status == TaskStatus::Accepted && holder == Some(agent_id)
                    }
                    TaskStatus::Failed => {
                        matches!(task.status, TaskStatus::Accepted | TaskStatus::InProgress)
                            && holder == Some(agent_id)
                    }
                    _ => !task.status.is_final(),
                };
                if fits {
                    Ok(())
                } else {
                    Err(format!(
                        "task {} is {}{}: {agent_id} cannot move it to {}",
                        task.id,
                        task.status.as_str(),
                        holder.map_or(String::new(), |h| format!(" (held by {h})")),
                        status.as_str()
                    ))
                }
            },
        )
    }

    /// `agent_id` completes its task with `result`.
    pub fn complete_task(
        &self,
        id: &str,
        agent_id: &str,
        result: &str,
    ) -> Result<Task, StoreError> {
        check_text("result", result, MAX_TASK_RESULT_BYTES)?;
        self.act_on_task(
            id,
            agent_id,
            json!({"action": "complete", "agent_id": agent_id, "result": result}),
            |task| {
                task.status == TaskStatus::Completed
                    && task.assigned_to.as_deref() == Some(agent_id)
                    && task.result.as_deref() == Some(result)
            },
            |task| {
                let holder = task.assigned_to.as_deref();
                if matches!(task.status, TaskStatus::Accepted | TaskStatus::InProgress)
                    && holder == Some(agent_id)
                {
                    Ok(())
                } else {
                    Err(format!(
                        "task {} is {}{}: {agent_id} cannot complete it{}",
                        task.id,
                        task.status.as_str(),
                        holder.map_or(String::new(), |h| format!(" (held by {h})")),
                        if task.status == TaskStatus::Assigned {
                            " before claiming it"
                        } else {
                            ""
                        }
                    ))
                }
            },
        )
    }
}

/// Broadcast severities, least urgent first.
pub const SEVERITIES: &[&str] = &["info", "warning", "error", "critical"];

/// What `broadcast_discovery` is given.
#[derive(Debug, Clone)]
pub struct NewBroadcast {
    /// What every agent should know.
    pub message: String,
    /// The memory category (default `global`).
    pub category: Option<String>,
    /// One of [`SEVERITIES`].
    pub severity: String,
    /// Roles it is meant for (empty: everyone).
    pub target_roles: Vec<String>,
    /// Must be one that may leave the machine.
    pub confidentiality: haivemind_core::Confidentiality,
    /// The broadcasting agent.
    pub agent_id: Option<String>,
}

fn check_severity(field: &str, severity: &str) -> Result<(), InvalidInput> {
    if SEVERITIES.contains(&severity) {
        Ok(())
    } else {
        Err(InvalidInput::new(
            field,
            "must be one of info, warning, error, critical",
        ))
    }
}

impl Store {
    /// Stores a broadcast: a memory tagged `broadcast` and its severity, with
    /// `metadata.broadcast` = {severity, target_roles, from_agent, machine_id}. It
    /// replicates like any shared memory; the change feed of every node announces it.
    /// Content that may not leave the machine is refused.
    pub fn broadcast(&self, new: NewBroadcast) -> Result<haivemind_core::Memory, StoreError> {
        check_severity("severity", &new.severity)?;
        if !new.confidentiality.may_leave_machine() {
            return Err(InvalidInput::new(
                "confidentiality_level",
                format!(
                    "a broadcast goes to every machine of the fleet, and {} content may not leave this one; keep it with store_memory instead",
                    new.confidentiality.as_str()
                ),
            )
            .into());
        }
        for (i, role) in new.target_roles.iter().enumerate() {
            haivemind_core::memory::check_name(&format!("target_roles[{i}]"), role)?;
        }
        let mut memory = haivemind_core::NewMemory::new(new.message);
        if let Some(category) = new.category {
            memory.category = category;
        }
        memory.confidentiality = new.confidentiality;
        memory.tags = vec!["broadcast".into(), new.severity.clone()];
        memory.metadata.insert(
            "broadcast".into(),
            json!({
                "severity": new.severity,
                "target_roles": new.target_roles,
                "from_agent": new.agent_id,
                "machine_id": self.machine_id,
            }),
        );
        memory.agent_id = new.agent_id;
        self.create(memory)
    }

    /// Broadcasts, newest first: since a time (default the last week), of one severity or
    /// category.
    pub fn broadcasts(
        &self,
        since_ms: Option<i64>,
        severity: Option<&str>,
        category: Option<String>,
        limit: usize,
        hide_restricted: bool,
    ) -> Result<Vec<haivemind_core::Memory>, StoreError> {
        let mut tags = vec!["broadcast".to_string()];
        if let Some(severity) = severity {
            check_severity("severity", severity)?;
            tags.push(severity.to_string());
        }
        let hours = since_ms.map_or(24 * 7, |since| {
            (((now_ms() - since).max(0) / 3_600_000) + 1).min(u32::MAX as i64) as u32
        });
        self.recent(&crate::RecentQuery {
            filter: crate::MemoryFilter {
                category,
                tags,
                since_ms,
                hide_restricted,
                ..crate::MemoryFilter::default()
            },
            hours,
            limit,
        })
    }
}
