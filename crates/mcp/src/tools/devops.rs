//! DevOps tools: incidents, runbooks, infrastructure state, configuration drift and
//! playbooks (docs/DEVOPS.md). Each record is a memory; these tools give it structure.

use haivemind_core::Memory;
use haivemind_core::memory::json::to_json;
use haivemind_core::security::Role;
use haivemind_core::time_format::parse_rfc3339;
use haivemind_store::{IncidentQuery, NewIncident, NewPlaybook, NewRunbook};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ToolContext, ToolEntry, schema_of};
use crate::arguments::parse;
use crate::error::ToolError;

pub(super) const TOOLS: &[ToolEntry] = &[
    ToolEntry {
        name: "record_incident",
        description: "Record an incident (category incidents): title, description, severity low|medium|high|critical, \
                      affected systems, and the resolution and lessons if known. Answers with the most similar past \
                      incidents and their resolutions; a high or critical incident is broadcast to the fleet.",
        read_only: false,
        destructive: false,
        idempotent: false,
        least_role: Role::Agent,
        schema: schema_of::<RecordIncidentArgs>,
        handler: record_incident,
    },
    ToolEntry {
        name: "update_incident",
        description: "Move an incident along open → investigating → mitigated → resolved → closed (forward moves may \
                      skip states; going back needs reopen=true), with a resolution or note; every change joins its \
                      timeline.",
        read_only: false,
        destructive: false,
        idempotent: true,
        least_role: Role::Agent,
        schema: schema_of::<UpdateIncidentArgs>,
        handler: update_incident,
    },
    ToolEntry {
        name: "list_incidents",
        description: "Incidents, newest first, by status, severity, affected system or time.",
        read_only: true,
        destructive: false,
        idempotent: true,
        least_role: Role::Readonly,
        schema: schema_of::<ListIncidentsArgs>,
        handler: list_incidents,
    },
    ToolEntry {
        name: "generate_runbook",
        description: "Store a runbook (category runbooks) with its steps parsed from the procedure, linked to the \
                      incidents that hit its system. The same title and system makes a new version.",
        read_only: false,
        destructive: false,
        idempotent: false,
        least_role: Role::Agent,
        schema: schema_of::<RunbookArgs>,
        handler: generate_runbook,
    },
    ToolEntry {
        name: "track_infrastructure_state",
        description: "Record a machine's state of one type (packages, services, disk, versions...) as JSON; every \
                      record is kept, so the machine's history can be read back.",
        read_only: false,
        destructive: false,
        idempotent: false,
        least_role: Role::Agent,
        schema: schema_of::<TrackStateArgs>,
        handler: track_infrastructure_state,
    },
    ToolEntry {
        name: "get_infrastructure_state",
        description: "The latest state per machine (and state type), or with history=true every recorded state of \
                      one machine, newest first.",
        read_only: true,
        destructive: false,
        idempotent: true,
        least_role: Role::Readonly,
        schema: schema_of::<GetStateArgs>,
        handler: get_infrastructure_state,
    },
    ToolEntry {
        name: "sync_infrastructure_config",
        description: "Store a versioned snapshot of a configuration (sha256, the machines it applies to). It records \
                      what each machine should have; it never writes any machine's files.",
        read_only: false,
        destructive: false,
        idempotent: true,
        least_role: Role::Agent,
        schema: schema_of::<ConfigArgs>,
        handler: sync_infrastructure_config,
    },
    ToolEntry {
        name: "get_config_drift",
        description: "Which machines have another version of a configuration than the newest, with a unified diff \
                      from theirs to the newest.",
        read_only: true,
        destructive: false,
        idempotent: true,
        least_role: Role::Readonly,
        schema: schema_of::<DriftArgs>,
        handler: get_config_drift,
    },
    ToolEntry {
        name: "upload_playbook",
        description: "Store an ansible (YAML list of plays), shell or terraform playbook after checking it (an error \
                      names the line); the same name makes a new version.",
        read_only: false,
        destructive: false,
        idempotent: true,
        least_role: Role::Agent,
        schema: schema_of::<PlaybookArgs>,
        handler: upload_playbook,
    },
];

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RecordIncidentArgs {
    /// Short title.
    title: String,
    /// What happened, what was seen.
    description: String,
    /// low, medium, high or critical.
    severity: String,
    /// Systems affected, like ["elastic3", "proxy2"].
    #[serde(default)]
    affected_systems: Vec<String>,
    /// How it was resolved, if it already was.
    #[serde(default)]
    resolution: Option<String>,
    /// What to remember next time.
    #[serde(default)]
    lessons_learned: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct UpdateIncidentArgs {
    /// The incident.
    incident_id: String,
    /// open, investigating, mitigated, resolved or closed.
    #[serde(default)]
    status: Option<String>,
    /// How it was resolved.
    #[serde(default)]
    resolution: Option<String>,
    /// A note for the timeline.
    #[serde(default)]
    note: Option<String>,
    /// Reopen a resolved or closed incident (to open or investigating).
    #[serde(default)]
    reopen: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListIncidentsArgs {
    /// Only this status.
    #[serde(default)]
    status: Option<String>,
    /// Only this severity.
    #[serde(default)]
    severity: Option<String>,
    /// Only incidents that affected this system.
    #[serde(default)]
    system: Option<String>,
    /// Only incidents recorded at or after this time (RFC 3339).
    #[serde(default)]
    since: Option<String>,
    /// At most this many (default 50).
    #[serde(default = "default_limit")]
    limit: u32,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RunbookArgs {
    /// The runbook's title.
    title: String,
    /// The steps: numbered or bulleted lines, or sentences.
    procedure: String,
    /// The system it is for.
    system: String,
    /// What must hold first.
    #[serde(default)]
    prerequisites: Vec<String>,
    /// What success looks like.
    #[serde(default)]
    expected_outcome: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TrackStateArgs {
    /// The machine.
    machine_id: String,
    /// What kind of state: packages, services, disk, kernel, ...
    state_type: String,
    /// The state, as any JSON.
    state_data: Value,
    /// Extra tags.
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetStateArgs {
    /// One machine.
    #[serde(default)]
    machine_id: Option<String>,
    /// One state type.
    #[serde(default)]
    state_type: Option<String>,
    /// Every recorded state of machine_id, newest first.
    #[serde(default)]
    history: bool,
    /// At most this many (default 50).
    #[serde(default = "default_limit")]
    limit: u32,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ConfigArgs {
    /// The configuration's name, like nginx-main.
    config_name: String,
    /// Its kind: nginx, systemd, yaml, ...
    config_type: String,
    /// Its full text.
    config_content: String,
    /// The machines that should have this version.
    #[serde(default)]
    target_machines: Vec<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DriftArgs {
    /// The configuration's name.
    config_name: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PlaybookArgs {
    /// The playbook's name.
    playbook_name: String,
    /// Its text.
    playbook_content: String,
    /// ansible (default), shell or terraform.
    #[serde(default)]
    playbook_type: Option<String>,
    /// Systems it runs against.
    #[serde(default)]
    target_systems: Vec<String>,
    /// Its variables.
    #[serde(default)]
    variables: Map<String, Value>,
    /// Extra tags.
    #[serde(default)]
    tags: Vec<String>,
}

fn default_limit() -> u32 {
    50
}

/// A record: the memory's fields, then its structure under `key` spread over them (a
/// record's `version` and `machine_id` are the record's; the memory's own are kept as
/// `memory_version` and `recorded_on`), and its id also under `id_key`.
fn record(memory: &Memory, key: &str, id_key: &str) -> Value {
    let mut value = to_json(memory);
    value["memory_version"] = json!(memory.version);
    value["recorded_on"] = json!(memory.machine_id);
    if let Some(structure) = memory.metadata.get(key).and_then(Value::as_object) {
        for (k, v) in structure {
            if k != "id" {
                value[k.as_str()] = v.clone();
            }
        }
    }
    value[id_key] = json!(memory.id.to_string());
    value
}

fn incident_json(memory: &Memory) -> Value {
    record(memory, "incident", "incident_id")
}

fn record_incident(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: RecordIncidentArgs = parse(arguments)?;
    let recorded = cx.store.record_incident(NewIncident {
        title: args.title,
        description: args.description,
        severity: args.severity,
        affected_systems: args.affected_systems,
        resolution: args.resolution,
        lessons_learned: args.lessons_learned,
        agent_id: cx.memory_agent_id(),
    })?;
    let mut value = incident_json(&recorded.incident);
    value["similar_incidents"] = recorded
        .similar
        .iter()
        .map(|(m, score)| {
            let meta = &m.metadata["incident"];
            json!({
                "incident_id": m.id.to_string(),
                "title": meta["title"],
                "severity": meta["severity"],
                "status": meta["status"],
                "resolution": meta["resolution"],
                "lessons_learned": meta["lessons_learned"],
                "score": score,
            })
        })
        .collect();
    value["broadcast_id"] = json!(recorded.broadcast.map(|b| b.id.to_string()));
    Ok(value)
}

fn update_incident(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: UpdateIncidentArgs = parse(arguments)?;
    let agent = cx.memory_agent_id();
    let memory = cx.store.update_incident(
        &args.incident_id,
        args.status.as_deref(),
        args.resolution,
        args.note,
        args.reopen,
        agent.as_deref(),
    )?;
    Ok(incident_json(&memory))
}

fn list_incidents(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: ListIncidentsArgs = parse(arguments)?;
    let incidents = cx.store.list_incidents(&IncidentQuery {
        status: args.status,
        severity: args.severity,
        system: args.system,
        since_ms: args
            .since
            .as_deref()
            .map(|t| parse_rfc3339("since", t))
            .transpose()?,
        limit: args.limit as usize,
    })?;
    let visible: Vec<Value> = incidents
        .iter()
        .filter(|m| cx.check_readable(m).is_ok())
        .map(incident_json)
        .collect();
    Ok(json!({"total": visible.len(), "incidents": visible}))
}

fn generate_runbook(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: RunbookArgs = parse(arguments)?;
    let (memory, replaced) = cx.store.generate_runbook(NewRunbook {
        title: args.title,
        procedure: args.procedure,
        system: args.system,
        prerequisites: args.prerequisites,
        expected_outcome: args.expected_outcome,
        agent_id: cx.memory_agent_id(),
    })?;
    let mut value = record(&memory, "runbook", "runbook_id");
    value["new_version_of_existing"] = json!(replaced);
    Ok(value)
}

fn track_infrastructure_state(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: TrackStateArgs = parse(arguments)?;
    let memory = cx.store.track_infrastructure_state(
        &args.machine_id,
        &args.state_type,
        args.state_data,
        args.tags,
        cx.memory_agent_id(),
    )?;
    Ok(record(&memory, "infra_state", "state_id"))
}

fn get_infrastructure_state(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: GetStateArgs = parse(arguments)?;
    let states = cx.store.infrastructure_state(
        args.machine_id.as_deref(),
        args.state_type.as_deref(),
        args.history,
        args.limit as usize,
    )?;
    let visible: Vec<Value> = states
        .iter()
        .filter(|m| cx.check_readable(m).is_ok())
        .map(|m| record(m, "infra_state", "state_id"))
        .collect();
    Ok(json!({"total": visible.len(), "states": visible}))
}

fn sync_infrastructure_config(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: ConfigArgs = parse(arguments)?;
    let (memory, new_version) = cx.store.sync_infrastructure_config(
        &args.config_name,
        &args.config_type,
        &args.config_content,
        &args.target_machines,
        cx.memory_agent_id(),
    )?;
    let mut value = record(&memory, "config", "config_id");
    value["new_version"] = json!(new_version);
    Ok(value)
}

fn get_config_drift(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: DriftArgs = parse(arguments)?;
    let drift = cx.store.config_drift(&args.config_name)?;
    cx.check_readable(&drift.newest)?;
    let newest = &drift.newest.metadata["config"];
    let machines: Vec<Value> = drift
        .machines
        .iter()
        .map(|m| {
            json!({
                "machine_id": m.machine_id,
                "version": m.version,
                "sha256": m.sha256,
                "drifted": m.drifted,
                "diff": m.diff,
            })
        })
        .collect();
    Ok(json!({
        "config_name": args.config_name,
        "newest_version": newest["version"],
        "newest_sha256": newest["sha256"],
        "newest_config_id": drift.newest.id.to_string(),
        "drifted": drift.machines.iter().filter(|m| m.drifted).map(|m| m.machine_id.clone()).collect::<Vec<_>>(),
        "in_sync": drift.machines.iter().filter(|m| !m.drifted).map(|m| m.machine_id.clone()).collect::<Vec<_>>(),
        "machines": machines,
    }))
}

fn upload_playbook(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: PlaybookArgs = parse(arguments)?;
    let (memory, replaced) = cx.store.upload_playbook(NewPlaybook {
        name: args.playbook_name,
        content: args.playbook_content,
        playbook_type: args.playbook_type.unwrap_or_else(|| "ansible".into()),
        target_systems: args.target_systems,
        variables: args.variables,
        tags: args.tags,
        agent_id: cx.memory_agent_id(),
    })?;
    let mut value = record(&memory, "playbook", "playbook_id");
    value["new_version_of_existing"] = json!(replaced);
    Ok(value)
}
