//! DevOps records: incidents with a lifecycle and a timeline, versioned runbooks with parsed
//! steps, infrastructure state per machine, versioned configuration snapshots and their
//! drift, and validated playbooks (docs/DEVOPS.md).
//!
//! Every record is a memory in its seed category, with its structure under one metadata key
//! (`incident`, `runbook`, `infra_state`, `config`, `playbook`), so search, replication,
//! history and confidentiality apply to them unchanged. Queries read that structure with
//! SQLite's JSON functions.

use crate::db::params_from_iter;
use haivemind_core::time_format::now_ms;
use haivemind_core::{InvalidInput, Memory, MemoryId, MemoryPatch, NewMemory};
use rusqlite::types::Value as SqlValue;
use serde_json::{Map, Value, json};

use crate::rows::{MEMORY_COLUMNS, memory_from_row};
use crate::{MemoryFilter, NewBroadcast, SearchQuery, Store, StoreError};

/// Incident severities, least first.
pub const INCIDENT_SEVERITIES: &[&str] = &["low", "medium", "high", "critical"];
/// Incident states, in lifecycle order.
pub const INCIDENT_STATES: &[&str] = &["open", "investigating", "mitigated", "resolved", "closed"];
/// Playbook types.
pub const PLAYBOOK_TYPES: &[&str] = &["ansible", "shell", "terraform"];

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), InvalidInput> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(InvalidInput::new(
            field,
            format!(
                "unknown value {value:?}, expected one of {}",
                allowed.join(", ")
            ),
        ))
    }
}

fn required(field: &str, text: &str, max: usize) -> Result<String, InvalidInput> {
    let text = text.trim();
    if text.is_empty() {
        return Err(InvalidInput::new(field, "must not be empty"));
    }
    if text.len() > max {
        return Err(InvalidInput::new(
            field,
            format!("must be at most {max} bytes"),
        ));
    }
    Ok(text.to_string())
}

fn names(field: &str, values: &[String]) -> Result<Vec<String>, InvalidInput> {
    let mut out: Vec<String> = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let value = value.trim();
        haivemind_core::memory::check_name(&format!("{field}[{i}]"), value)?;
        if !out.iter().any(|v| v == value) {
            out.push(value.to_string());
        }
    }
    Ok(out)
}

/// Tags for names that make valid tags (systems, machines), skipping the rest.
fn tags_for(base: &[&str], names: &[String]) -> Vec<String> {
    let mut tags: Vec<String> = base.iter().map(|t| (*t).to_string()).collect();
    for name in names {
        let tag = name.to_lowercase();
        if haivemind_core::memory::check_name("tags", &tag).is_ok() && !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    tags
}

/// What `record_incident` is given.
#[derive(Debug, Clone)]
pub struct NewIncident {
    /// Short title.
    pub title: String,
    /// What happened.
    pub description: String,
    /// low, medium, high or critical.
    pub severity: String,
    /// Systems affected.
    pub affected_systems: Vec<String>,
    /// How it was resolved, if it already was.
    pub resolution: Option<String>,
    /// What to remember.
    pub lessons_learned: Option<String>,
    /// The recording agent.
    pub agent_id: Option<String>,
}

/// A recorded incident, its similar past incidents, and the broadcast it caused.
#[derive(Debug, Clone)]
pub struct RecordedIncident {
    /// The incident's memory.
    pub incident: Memory,
    /// Past incidents most like it, with their similarity score.
    pub similar: Vec<(Memory, f32)>,
    /// The broadcast a high or critical incident sends.
    pub broadcast: Option<Memory>,
}

fn incident_text(meta: &Value) -> String {
    let field = |k: &str| meta.get(k).and_then(Value::as_str).unwrap_or("");
    let mut text = format!(
        "Incident ({}, {}): {}\n\n{}",
        field("severity"),
        field("status"),
        field("title"),
        field("description")
    );
    let systems: Vec<&str> = meta["affected_systems"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !systems.is_empty() {
        text.push_str(&format!("\n\nAffected systems: {}", systems.join(", ")));
    }
    if !field("resolution").is_empty() {
        text.push_str(&format!("\nResolution: {}", field("resolution")));
    }
    if !field("lessons_learned").is_empty() {
        text.push_str(&format!("\nLessons learned: {}", field("lessons_learned")));
    }
    text
}

fn timeline_entry(status: &str, note: Option<&str>, agent: Option<&str>) -> Value {
    json!({
        "at": haivemind_core::time_format::ms_to_rfc3339(now_ms()),
        "status": status,
        "note": note,
        "agent_id": agent,
    })
}

/// What a list of records is filtered by.
#[derive(Debug, Clone, Default)]
pub struct IncidentQuery {
    /// Only this status.
    pub status: Option<String>,
    /// Only this severity.
    pub severity: Option<String>,
    /// Only incidents affecting this system.
    pub system: Option<String>,
    /// Only incidents recorded at or after this time.
    pub since_ms: Option<i64>,
    /// At most this many, newest first.
    pub limit: usize,
}

impl Store {
    fn records(
        &self,
        condition: &str,
        params: Vec<SqlValue>,
        limit: usize,
    ) -> Result<Vec<Memory>, StoreError> {
        let reader = self.reader()?;
        let sql = format!(
            "SELECT {MEMORY_COLUMNS} FROM memories m WHERE m.deleted_at IS NULL AND {condition}
             ORDER BY m.created_at DESC, m.rowid DESC LIMIT {}",
            limit.clamp(1, 1_000)
        );
        let mut statement = reader.prepare_cached(&sql)?;
        let rows = statement.query_map(params_from_iter(params), memory_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn record_by_id(&self, key: &str, id: &str, field: &str) -> Result<Memory, StoreError> {
        let memory_id = MemoryId::parse(field, id)?;
        let memory = self.get(memory_id)?;
        if memory.metadata.get(key).is_none() {
            return Err(InvalidInput::new(
                field,
                format!("{id} is a memory, but not a {key} record"),
            )
            .into());
        }
        Ok(memory)
    }

    /// Records an incident (status open, or resolved when a resolution is given), finds the
    /// most similar past incidents, and broadcasts it when high or critical.
    pub fn record_incident(&self, new: NewIncident) -> Result<RecordedIncident, StoreError> {
        let title = required("title", &new.title, 500)?;
        let description = required("description", &new.description, 32_768)?;
        let severity = new.severity.trim().to_lowercase();
        one_of("severity", &severity, INCIDENT_SEVERITIES)?;
        let systems = names("affected_systems", &new.affected_systems)?;
        let status = if new.resolution.is_some() {
            "resolved"
        } else {
            "open"
        };
        let meta = json!({
            "title": title,
            "description": description,
            "severity": severity,
            "status": status,
            "affected_systems": systems,
            "resolution": new.resolution,
            "lessons_learned": new.lessons_learned,
            "timeline": [timeline_entry(status, Some("recorded"), new.agent_id.as_deref())],
        });
        let mut memory = NewMemory::new(incident_text(&meta));
        memory.category = "incidents".into();
        memory.tags = tags_for(&["incident", &severity], &systems);
        memory.metadata.insert("incident".into(), meta);
        memory.agent_id = new.agent_id.clone();
        // The similar past incidents are looked up before this one exists.
        let found = self.search(&SearchQuery {
            text: format!("{title} {description} {}", systems.join(" ")),
            filter: MemoryFilter {
                category: Some("incidents".into()),
                ..MemoryFilter::default()
            },
            limit: 3,
            offset: 0,
            semantic: true,
        })?;
        let similar = found
            .hits
            .into_iter()
            .filter(|hit| hit.memory.metadata.get("incident").is_some())
            .map(|hit| (hit.memory, hit.score as f32))
            .collect();
        let incident = self.create(memory)?;
        let broadcast = match severity.as_str() {
            "critical" | "high" => Some(
                self.broadcast(NewBroadcast {
                    message: format!(
                        "{severity} incident: {title}{} (incident {})",
                        if systems.is_empty() {
                            String::new()
                        } else {
                            format!(" on {}", systems.join(", "))
                        },
                        incident.id
                    ),
                    category: Some("incidents".into()),
                    severity: if severity == "critical" {
                        "critical"
                    } else {
                        "error"
                    }
                    .into(),
                    target_roles: Vec::new(),
                    confidentiality: incident.confidentiality,
                    agent_id: new.agent_id,
                })?,
            ),
            _ => None,
        };
        Ok(RecordedIncident {
            incident,
            similar,
            broadcast,
        })
    }

    /// Moves an incident along its lifecycle (open → investigating → mitigated → resolved →
    /// closed; forward moves may skip states; going back needs `reopen`, to `open` or
    /// `investigating`), adding to its timeline; a note or resolution alone is recorded too.
    pub fn update_incident(
        &self,
        incident_id: &str,
        status: Option<&str>,
        resolution: Option<String>,
        note: Option<String>,
        reopen: bool,
        agent_id: Option<&str>,
    ) -> Result<Memory, StoreError> {
        let memory = self.record_by_id("incident", incident_id, "incident_id")?;
        let mut meta = memory.metadata["incident"].clone();
        let current = meta["status"].as_str().unwrap_or("open").to_string();
        let position = |s: &str| INCIDENT_STATES.iter().position(|x| *x == s);
        let next = match status {
            None => current.clone(),
            Some(asked) => {
                let asked = asked.trim().to_lowercase();
                one_of("status", &asked, INCIDENT_STATES)?;
                let (from, to) = (
                    position(&current).unwrap_or(0),
                    position(&asked).unwrap_or(0),
                );
                if to < from && !reopen {
                    return Err(InvalidInput::new(
                        "status",
                        format!(
                            "cannot go from {current} back to {asked}; reopening is explicit: pass reopen: true"
                        ),
                    )
                    .into());
                }
                if reopen && !(to < from && matches!(asked.as_str(), "open" | "investigating")) {
                    return Err(InvalidInput::new(
                        "reopen",
                        format!(
                            "reopens a {current} incident to open or investigating, not to {asked}"
                        ),
                    )
                    .into());
                }
                asked
            }
        };
        if next == current && resolution.is_none() && note.is_none() {
            return Ok(memory);
        }
        if let Some(resolution) = &resolution {
            meta["resolution"] = json!(required("resolution", resolution, 32_768)?);
        }
        if let Some(note) = &note {
            required("note", note, 16_384)?;
        }
        meta["status"] = json!(next);
        let entry = timeline_entry(
            &next,
            note.as_deref()
                .or(if reopen { Some("reopened") } else { None }),
            agent_id,
        );
        if let Some(timeline) = meta["timeline"].as_array_mut() {
            timeline.push(entry);
        }
        let mut metadata = memory.metadata.clone();
        let content = incident_text(&meta);
        metadata.insert("incident".into(), meta);
        self.update(
            memory.id,
            MemoryPatch {
                content: Some(content),
                metadata: Some(metadata),
                ..MemoryPatch::default()
            },
            agent_id,
        )
    }

    /// Incidents, newest first.
    pub fn list_incidents(&self, query: &IncidentQuery) -> Result<Vec<Memory>, StoreError> {
        if let Some(status) = &query.status {
            one_of("status", status, INCIDENT_STATES)?;
        }
        if let Some(severity) = &query.severity {
            one_of("severity", severity, INCIDENT_SEVERITIES)?;
        }
        self.records(
            "m.category = 'incidents' AND json_extract(m.metadata, '$.incident.title') IS NOT NULL
             AND (CAST(?1 AS TEXT) IS NULL OR json_extract(m.metadata, '$.incident.status') = ?1)
             AND (CAST(?2 AS TEXT) IS NULL OR json_extract(m.metadata, '$.incident.severity') = ?2)
             AND (CAST(?3 AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM json_each(m.metadata, '$.incident.affected_systems') s
                                        WHERE lower(s.value) = lower(?3)))
             AND (CAST(?4 AS BIGINT) IS NULL OR m.created_at >= ?4)",
            vec![
                query.status.clone().map_or(SqlValue::Null, SqlValue::Text),
                query.severity.clone().map_or(SqlValue::Null, SqlValue::Text),
                query.system.clone().map_or(SqlValue::Null, SqlValue::Text),
                query.since_ms.map_or(SqlValue::Null, SqlValue::Integer),
            ],
            query.limit,
        )
    }
}

/// What `generate_runbook` is given.
#[derive(Debug, Clone)]
pub struct NewRunbook {
    /// Its title; with `system`, what versions it.
    pub title: String,
    /// The procedure, as numbered or bulleted lines or plain sentences.
    pub procedure: String,
    /// The system it is for.
    pub system: String,
    /// What must hold first.
    pub prerequisites: Vec<String>,
    /// What success looks like.
    pub expected_outcome: Option<String>,
    /// The writing agent.
    pub agent_id: Option<String>,
}

/// The steps of a procedure: one per numbered or bulleted line, else one per line, else one
/// per sentence; numbering and bullets removed.
pub fn parse_steps(procedure: &str) -> Vec<String> {
    let strip = |line: &str| -> String {
        let mut line = line.trim();
        for prefix in ["- ", "* ", "• "] {
            if let Some(rest) = line.strip_prefix(prefix) {
                line = rest;
            }
        }
        let lower = line.to_lowercase();
        if lower.starts_with("step ")
            && let Some((_, rest)) = line.split_once([':', '.'])
        {
            line = rest;
        } else {
            let digits = line.chars().take_while(char::is_ascii_digit).count();
            if digits > 0 && line[digits..].starts_with(['.', ')', ':']) {
                line = &line[digits + 1..];
            }
        }
        line.trim().to_string()
    };
    let lines: Vec<String> = procedure
        .lines()
        .map(strip)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.len() > 1 {
        return lines;
    }
    procedure
        .split_inclusive(['.', ';'])
        .map(|s| s.trim().trim_end_matches([';']).trim().to_string())
        .filter(|s| s.len() > 1)
        .collect()
}

impl Store {
    /// Stores a runbook with its steps, linked to the incidents that affected its system. A
    /// runbook with the same title and system is a new version of it (the old text stays
    /// in its history). Returns the runbook and whether it replaced an earlier version.
    pub fn generate_runbook(&self, new: NewRunbook) -> Result<(Memory, bool), StoreError> {
        let title = required("title", &new.title, 500)?;
        let procedure = required("procedure", &new.procedure, 65_536)?;
        let system = required("system", &new.system, 256)?;
        let steps = parse_steps(&procedure);
        if steps.is_empty() {
            return Err(InvalidInput::new("procedure", "has no steps").into());
        }
        let incidents: Vec<String> = self
            .list_incidents(&IncidentQuery {
                system: Some(system.clone()),
                limit: 50,
                ..IncidentQuery::default()
            })?
            .iter()
            .map(|m| m.id.to_string())
            .collect();
        let existing = self.records(
            "m.category = 'runbooks' AND lower(json_extract(m.metadata, '$.runbook.title')) = lower(?1)
             AND lower(json_extract(m.metadata, '$.runbook.system')) = lower(?2)",
            vec![SqlValue::Text(title.clone()), SqlValue::Text(system.clone())],
            1,
        )?;
        let version = existing
            .first()
            .and_then(|m| m.metadata["runbook"]["version"].as_u64())
            .unwrap_or(0)
            + 1;
        let meta = json!({
            "title": title,
            "system": system,
            "steps": steps,
            "prerequisites": new.prerequisites,
            "expected_outcome": new.expected_outcome,
            "addresses_incidents": incidents,
            "version": version,
        });
        let mut text = format!("Runbook: {title} ({system}), version {version}\n");
        if !new.prerequisites.is_empty() {
            text.push_str(&format!(
                "\nPrerequisites: {}\n",
                new.prerequisites.join("; ")
            ));
        }
        for (i, step) in steps.iter().enumerate() {
            text.push_str(&format!("\n{}. {step}", i + 1));
        }
        if let Some(outcome) = &new.expected_outcome {
            text.push_str(&format!("\n\nExpected outcome: {outcome}"));
        }
        match existing.into_iter().next() {
            Some(old) => {
                let mut metadata = old.metadata.clone();
                metadata.insert("runbook".into(), meta);
                let memory = self.update(
                    old.id,
                    MemoryPatch {
                        content: Some(text),
                        metadata: Some(metadata),
                        ..MemoryPatch::default()
                    },
                    new.agent_id.as_deref(),
                )?;
                Ok((memory, true))
            }
            None => {
                let mut memory = NewMemory::new(text);
                memory.category = "runbooks".into();
                memory.tags = tags_for(&["runbook"], std::slice::from_ref(&system));
                memory.metadata.insert("runbook".into(), meta);
                memory.agent_id = new.agent_id;
                Ok((self.create(memory)?, false))
            }
        }
    }

    /// Records a machine's state of one type (a new entry each time: its history).
    pub fn track_infrastructure_state(
        &self,
        machine_id: &str,
        state_type: &str,
        state_data: Value,
        tags: Vec<String>,
        agent_id: Option<String>,
    ) -> Result<Memory, StoreError> {
        haivemind_core::memory::check_name("machine_id", machine_id.trim())?;
        haivemind_core::memory::check_name("state_type", state_type.trim())?;
        if state_data.is_null() {
            return Err(InvalidInput::new("state_data", "is required").into());
        }
        let compact = state_data.to_string();
        let shown: String = compact.chars().take(4_000).collect();
        let mut memory = NewMemory::new(format!(
            "{} state of {}: {shown}",
            state_type.trim(),
            machine_id.trim()
        ));
        memory.category = "infrastructure".into();
        let mut all_tags = tags_for(&["infrastructure-state"], &[machine_id.trim().to_string()]);
        for tag in names("tags", &tags)? {
            if !all_tags.contains(&tag) {
                all_tags.push(tag);
            }
        }
        memory.tags = all_tags;
        memory.metadata.insert(
            "infra_state".into(),
            json!({"machine_id": machine_id.trim(), "state_type": state_type.trim(), "state_data": state_data}),
        );
        memory.agent_id = agent_id;
        self.create(memory)
    }

    /// The latest state per machine and state type (optionally of one machine or type), or
    /// with `history`, every recorded state of `machine_id`, newest first.
    pub fn infrastructure_state(
        &self,
        machine_id: Option<&str>,
        state_type: Option<&str>,
        history: bool,
        limit: usize,
    ) -> Result<Vec<Memory>, StoreError> {
        let params = vec![
            machine_id.map_or(SqlValue::Null, |m| SqlValue::Text(m.to_string())),
            state_type.map_or(SqlValue::Null, |t| SqlValue::Text(t.to_string())),
        ];
        const MATCHES: &str = "m.category = 'infrastructure'
             AND json_extract(m.metadata, '$.infra_state.machine_id') IS NOT NULL
             AND (CAST(?1 AS TEXT) IS NULL OR json_extract(m.metadata, '$.infra_state.machine_id') = ?1)
             AND (CAST(?2 AS TEXT) IS NULL OR json_extract(m.metadata, '$.infra_state.state_type') = ?2)";
        if history {
            if machine_id.is_none() {
                return Err(InvalidInput::new("machine_id", "is required for a history").into());
            }
            return self.records(MATCHES, params, limit);
        }
        self.records(
            &format!(
                "{MATCHES} AND m.rowid IN (
                   SELECT rowid FROM (
                     SELECT m.rowid, row_number() OVER (
                       PARTITION BY json_extract(m.metadata, '$.infra_state.machine_id'),
                                    json_extract(m.metadata, '$.infra_state.state_type')
                       ORDER BY m.created_at DESC, m.rowid DESC) AS newest
                     FROM memories m WHERE m.deleted_at IS NULL AND {MATCHES})
                   WHERE newest = 1)"
            ),
            params,
            limit,
        )
    }
}

/// One machine's place relative to the newest version of a configuration.
#[derive(Debug, Clone)]
pub struct MachineDrift {
    /// The machine.
    pub machine_id: String,
    /// The version it was last given.
    pub version: u64,
    /// That version's sha256.
    pub sha256: String,
    /// Whether it differs from the newest version.
    pub drifted: bool,
    /// A unified diff from its version to the newest, when it differs.
    pub diff: Option<String>,
}

/// The drift of one configuration.
#[derive(Debug, Clone)]
pub struct ConfigDrift {
    /// The newest snapshot.
    pub newest: Memory,
    /// Every machine any snapshot was meant for.
    pub machines: Vec<MachineDrift>,
}

fn config_meta(memory: &Memory) -> &Value {
    &memory.metadata["config"]
}

impl Store {
    fn config_versions(&self, name: &str) -> Result<Vec<Memory>, StoreError> {
        self.records(
            "m.category = 'deployments' AND json_extract(m.metadata, '$.config.config_name') = ?1",
            vec![SqlValue::Text(name.to_string())],
            1_000,
        )
    }

    /// Stores a snapshot of a configuration for `target_machines`: a new version when its
    /// content or targets changed, else the current one unchanged. Nothing is written to
    /// any machine: this records what each machine should have.
    pub fn sync_infrastructure_config(
        &self,
        name: &str,
        config_type: &str,
        content: &str,
        target_machines: &[String],
        agent_id: Option<String>,
    ) -> Result<(Memory, bool), StoreError> {
        let name = name.trim();
        haivemind_core::memory::check_name("config_name", name)?;
        haivemind_core::memory::check_name("config_type", config_type.trim())?;
        if content.trim().is_empty() {
            return Err(InvalidInput::new("config_content", "must not be empty").into());
        }
        let targets = names("target_machines", target_machines)?;
        let digest = sha256_hex(content);
        let versions = self.config_versions(name)?;
        if let Some(latest) = versions.first() {
            let meta = config_meta(latest);
            let same_targets = meta["target_machines"] == json!(targets);
            if meta["sha256"] == json!(digest) && same_targets {
                return Ok((latest.clone(), false));
            }
        }
        let version = versions
            .iter()
            .filter_map(|m| config_meta(m)["version"].as_u64())
            .max()
            .unwrap_or(0)
            + 1;
        let mut memory = NewMemory::new(content.to_string());
        memory.category = "deployments".into();
        memory.context = Some(format!(
            "configuration {name} ({}) version {version}{}",
            config_type.trim(),
            if targets.is_empty() {
                String::new()
            } else {
                format!(" for {}", targets.join(", "))
            }
        ));
        memory.tags = tags_for(&["config"], &targets);
        memory.metadata.insert(
            "config".into(),
            json!({
                "config_name": name,
                "config_type": config_type.trim(),
                "sha256": digest,
                "version": version,
                "target_machines": targets,
            }),
        );
        memory.agent_id = agent_id;
        Ok((self.create(memory)?, true))
    }

    /// Which machines differ from the newest version of `name`, with a unified diff each.
    /// A machine has the newest version that was meant for it.
    pub fn config_drift(&self, name: &str) -> Result<ConfigDrift, StoreError> {
        let versions = self.config_versions(name.trim())?;
        let Some(newest) = versions
            .iter()
            .max_by_key(|m| config_meta(m)["version"].as_u64().unwrap_or(0))
            .cloned()
        else {
            return Err(InvalidInput::new(
                "config_name",
                format!(
                    "no configuration {name:?} was stored (sync_infrastructure_config stores one)"
                ),
            )
            .into());
        };
        let mut machines: std::collections::BTreeMap<String, &Memory> = Default::default();
        for snapshot in &versions {
            for machine in config_meta(snapshot)["target_machines"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                let version = config_meta(snapshot)["version"].as_u64().unwrap_or(0);
                let entry = machines.entry(machine.to_string()).or_insert(snapshot);
                if config_meta(entry)["version"].as_u64().unwrap_or(0) < version {
                    *entry = snapshot;
                }
            }
        }
        let newest_sha = config_meta(&newest)["sha256"].clone();
        let newest_version = config_meta(&newest)["version"].as_u64().unwrap_or(0);
        let drift = machines
            .into_iter()
            .map(|(machine_id, snapshot)| {
                let meta = config_meta(snapshot);
                let version = meta["version"].as_u64().unwrap_or(0);
                let drifted = meta["sha256"] != newest_sha;
                let diff = drifted.then(|| {
                    similar::TextDiff::from_lines(&snapshot.content, &newest.content)
                        .unified_diff()
                        .context_radius(3)
                        .header(
                            &format!("{name} v{version} ({machine_id})"),
                            &format!("{name} v{newest_version} (newest)"),
                        )
                        .to_string()
                });
                MachineDrift {
                    machine_id,
                    version,
                    sha256: meta["sha256"].as_str().unwrap_or("").to_string(),
                    drifted,
                    diff,
                }
            })
            .collect();
        Ok(ConfigDrift {
            newest,
            machines: drift,
        })
    }
}

/// What `upload_playbook` is given.
#[derive(Debug, Clone)]
pub struct NewPlaybook {
    /// Its name; what versions it.
    pub name: String,
    /// Its text.
    pub content: String,
    /// ansible, shell or terraform.
    pub playbook_type: String,
    /// Systems it runs against.
    pub target_systems: Vec<String>,
    /// Its variables.
    pub variables: Map<String, Value>,
    /// Extra tags.
    pub tags: Vec<String>,
    /// The uploading agent.
    pub agent_id: Option<String>,
}

fn invalid_line(line: usize, rule: impl std::fmt::Display) -> InvalidInput {
    InvalidInput::new("playbook_content", format!("line {line}: {rule}"))
}

/// Checks a playbook's text for its type; the error names the line.
pub fn validate_playbook(playbook_type: &str, content: &str) -> Result<(), InvalidInput> {
    match playbook_type {
        "ansible" => {
            let documents = yaml_rust2::YamlLoader::load_from_str(content).map_err(|e| {
                invalid_line(
                    e.marker().line(),
                    format!(
                        "not valid YAML: {} (column {})",
                        e.info(),
                        e.marker().col() + 1
                    ),
                )
            })?;
            let Some(plays) = documents.first().and_then(|d| d.as_vec()) else {
                return Err(invalid_line(
                    1,
                    "an Ansible playbook is a YAML list of plays (each with hosts)",
                ));
            };
            for (i, play) in plays.iter().enumerate() {
                let Some(map) = play.as_hash() else {
                    return Err(InvalidInput::new(
                        format!("playbook_content[{i}]"),
                        "each play must be a mapping",
                    ));
                };
                let has = |key: &str| map.contains_key(&yaml_rust2::Yaml::String(key.into()));
                if !has("hosts")
                    && !has("import_playbook")
                    && !has("ansible.builtin.import_playbook")
                {
                    return Err(InvalidInput::new(
                        format!("playbook_content[{i}]"),
                        "each play needs hosts (or import_playbook)",
                    ));
                }
            }
            Ok(())
        }
        "shell" => validate_shell(content),
        "terraform" => validate_terraform(content),
        other => Err(InvalidInput::new(
            "playbook_type",
            format!("unknown value {other:?}, expected one of ansible, shell, terraform"),
        )),
    }
}

/// Shell: quotes closed on every line they open, and if/fi, do/done, case/esac balanced.
fn validate_shell(content: &str) -> Result<(), InvalidInput> {
    let mut open_blocks: Vec<(&str, usize)> = Vec::new();
    let mut quote: Option<(char, usize)> = None;
    for (index, line) in content.lines().enumerate() {
        let number = index + 1;
        let mut escaped = false;
        let mut code = String::new();
        for c in line.chars() {
            match quote {
                Some((q, _)) => {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' && q == '"' {
                        escaped = true;
                    } else if c == q {
                        quote = None;
                    }
                }
                None => {
                    if escaped {
                        escaped = false;
                        continue;
                    }
                    match c {
                        '\\' => escaped = true,
                        '\'' | '"' => quote = Some((c, number)),
                        '#' if code.is_empty() || code.ends_with(char::is_whitespace) => break,
                        _ => code.push(c),
                    }
                }
            }
        }
        for word in code.split(|c: char| c.is_whitespace() || c == ';') {
            match word {
                "if" => open_blocks.push(("if", number)),
                "do" => open_blocks.push(("do", number)),
                "case" => open_blocks.push(("case", number)),
                "fi" | "done" | "esac" => {
                    let opener = match word {
                        "fi" => "if",
                        "done" => "do",
                        _ => "case",
                    };
                    match open_blocks.pop() {
                        Some((open, _)) if open == opener => {}
                        Some((open, at)) => {
                            return Err(invalid_line(
                                number,
                                format!("{word} closes the {open} opened on line {at}"),
                            ));
                        }
                        None => {
                            return Err(invalid_line(number, format!("{word} without {opener}")));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if let Some((q, at)) = quote {
        return Err(invalid_line(
            at,
            format!("the {q} quote opened here is never closed"),
        ));
    }
    if let Some((open, at)) = open_blocks.pop() {
        let closer = match open {
            "if" => "fi",
            "do" => "done",
            _ => "esac",
        };
        return Err(invalid_line(
            at,
            format!("this {open} is never closed with {closer}"),
        ));
    }
    Ok(())
}

/// Terraform: braces and brackets balanced (outside strings and comments), and at least one
/// top-level block.
fn validate_terraform(content: &str) -> Result<(), InvalidInput> {
    let mut stack: Vec<(char, usize)> = Vec::new();
    let mut blocks = 0;
    for (index, line) in content.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim_start();
        if stack.is_empty()
            && [
                "resource",
                "module",
                "variable",
                "provider",
                "terraform",
                "data",
                "output",
                "locals",
            ]
            .iter()
            .any(|b| trimmed.starts_with(b))
        {
            blocks += 1;
        }
        let mut in_string = false;
        let mut escaped = false;
        let chars: Vec<char> = line.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            if in_string {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_string = false;
                }
                continue;
            }
            match c {
                '"' => in_string = true,
                '#' => break,
                '/' if chars.get(i + 1) == Some(&'/') => break,
                '{' | '[' | '(' => stack.push((c, number)),
                '}' | ']' | ')' => {
                    let opener = match c {
                        '}' => '{',
                        ']' => '[',
                        _ => '(',
                    };
                    match stack.pop() {
                        Some((open, _)) if open == opener => {}
                        Some((open, at)) => {
                            return Err(invalid_line(
                                number,
                                format!("{c} does not match the {open} opened on line {at}"),
                            ));
                        }
                        None => {
                            return Err(invalid_line(
                                number,
                                format!("{c} without a matching {opener}"),
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        if in_string {
            return Err(invalid_line(number, "a string is not closed on this line"));
        }
    }
    if let Some((open, at)) = stack.pop() {
        return Err(invalid_line(at, format!("this {open} is never closed")));
    }
    if blocks == 0 {
        return Err(invalid_line(
            1,
            "no resource, module, variable, provider, terraform, data, output or locals block",
        ));
    }
    Ok(())
}

impl Store {
    /// Validates and stores a playbook; one with the same name is a new version of it.
    /// Returns it and whether it replaced an earlier version.
    pub fn upload_playbook(&self, new: NewPlaybook) -> Result<(Memory, bool), StoreError> {
        let name = new.name.trim().to_string();
        haivemind_core::memory::check_name("playbook_name", &name)?;
        let playbook_type = new.playbook_type.trim().to_lowercase();
        one_of("playbook_type", &playbook_type, PLAYBOOK_TYPES)?;
        if new.content.trim().is_empty() {
            return Err(InvalidInput::new("playbook_content", "must not be empty").into());
        }
        validate_playbook(&playbook_type, &new.content)?;
        let systems = names("target_systems", &new.target_systems)?;
        let existing = self.records(
            "m.category = 'runbooks' AND json_extract(m.metadata, '$.playbook.playbook_name') = ?1",
            vec![SqlValue::Text(name.clone())],
            1,
        )?;
        let version = existing
            .first()
            .and_then(|m| m.metadata["playbook"]["version"].as_u64())
            .unwrap_or(0)
            + 1;
        let meta = json!({
            "playbook_name": name,
            "playbook_type": playbook_type,
            "target_systems": systems,
            "variables": new.variables,
            "sha256": sha256_hex(&new.content),
            "version": version,
        });
        let context = format!("{playbook_type} playbook {name}, version {version}");
        match existing.into_iter().next() {
            Some(old)
                if old.content == new.content
                    && old.metadata["playbook"]["target_systems"] == json!(systems) =>
            {
                Ok((old, false))
            }
            Some(old) => {
                let mut metadata = old.metadata.clone();
                metadata.insert("playbook".into(), meta);
                let memory = self.update(
                    old.id,
                    MemoryPatch {
                        content: Some(new.content),
                        context: Some(Some(context)),
                        metadata: Some(metadata),
                        ..MemoryPatch::default()
                    },
                    new.agent_id.as_deref(),
                )?;
                Ok((memory, true))
            }
            None => {
                let mut memory = NewMemory::new(new.content);
                memory.category = "runbooks".into();
                memory.context = Some(context);
                let mut tags = tags_for(&["playbook", &playbook_type], &systems);
                for tag in names("tags", &new.tags)? {
                    if !tags.contains(&tag) {
                        tags.push(tag);
                    }
                }
                memory.tags = tags;
                memory.metadata.insert("playbook".into(), meta);
                memory.agent_id = new.agent_id;
                Ok((self.create(memory)?, false))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_come_from_numbers_bullets_lines_or_sentences() {
        assert_eq!(
            parse_steps("1. Stop nginx\n2) Rotate the logs\n- Start nginx\nStep 4: check"),
            ["Stop nginx", "Rotate the logs", "Start nginx", "check"]
        );
        assert_eq!(
            parse_steps("Drain the node. Restart elasticsearch; wait for green."),
            [
                "Drain the node.",
                "Restart elasticsearch",
                "wait for green."
            ]
        );
    }

    #[test]
    fn bad_playbooks_name_the_line() {
        let error = validate_playbook(
            "ansible",
            "- hosts: web\n  tasks:\n    - name: x\n   bad: [\n",
        )
        .unwrap_err();
        assert!(error.rule.starts_with("line "), "{error}");
        assert!(validate_playbook("ansible", "- hosts: web\n  tasks: []\n").is_ok());
        assert!(validate_playbook("ansible", "hosts: web\n").is_err());
        let error =
            validate_playbook("shell", "#!/bin/sh\nif true; then\n  echo 'hi\nfi\n").unwrap_err();
        assert!(error.rule.starts_with("line 3:"), "{error}");
        let error = validate_playbook("shell", "for x in a b; do\n  echo $x\n").unwrap_err();
        assert!(error.rule.starts_with("line 1:"), "{error}");
        assert!(
            validate_playbook(
                "shell",
                "set -e\nif [ -f x ]; then echo \"a # b\"; fi # done\n"
            )
            .is_ok()
        );
        let error =
            validate_playbook("terraform", "resource \"a\" \"b\" {\n  x = [1, 2\n}\n").unwrap_err();
        assert!(error.rule.starts_with("line 3:"), "{error}");
        assert!(validate_playbook("terraform", "resource \"a\" \"b\" {\n  x = \"{\"\n}\n").is_ok());
    }
}
