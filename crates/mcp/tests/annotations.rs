//! Every tool's annotations are true of what it does, checked by doing it: a tool marked
//! read-only changes nothing (the op log, the replicated state, the counts and every
//! local table stay as they were) whatever it is asked; a tool marked idempotent, called
//! again with the same arguments, changes nothing more; a tool that only adds is not
//! marked destructive when it removes or overwrites.

use std::sync::Arc;

use haivemind_core::security::Caller;
use haivemind_mcp::tools::catalogue;
use haivemind_mcp::{HaivemindServer, ServerContext};
use haivemind_store::{Store, StoreOptions};
use serde_json::{Map, Value, json};

struct Fleet {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    server: HaivemindServer,
    runtime: tokio::runtime::Runtime,
}

impl Fleet {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(Store::open(StoreOptions::new(dir.path().join("hv.sqlite3"), "m1")).unwrap());
        let server = HaivemindServer::new(
            Arc::clone(&store),
            ServerContext {
                data_dir: dir.path().to_path_buf(),
                started_at_ms: 0,
                transport: "http",
                agent_ttl_ms: 3_600_000,
                mcp_url: None,
                connectors: Map::new(),
                tool_profile: Default::default(),
                peer_health: None,
            },
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        Self {
            _dir: dir,
            store,
            server,
            runtime,
        }
    }

    fn call(&self, name: &str, arguments: Value) -> Result<Value, String> {
        let Value::Object(arguments) = arguments else {
            panic!("arguments must be an object");
        };
        self.runtime
            .block_on(
                self.server
                    .call_as(Caller::local(), Some("auditor".into()), name, arguments),
            )
            .map_err(|failure| format!("{failure:?}"))
    }

    fn ok(&self, name: &str, arguments: Value) -> Value {
        self.call(name, arguments.clone())
            .unwrap_or_else(|e| panic!("{name} {arguments}: {e}"))
    }

    /// Everything a call could change: the op log's version vector, the replicated state,
    /// the memory counts, and the rows of every table.
    fn fingerprint(&self) -> String {
        let tables = self.store.table_digest().unwrap();
        format!(
            "{:?}|{}|{}",
            self.store.version_vector().unwrap(),
            self.store.state_digest().unwrap(),
            tables
        )
    }
}

/// What a read-only tool is asked: every required field, with real ids where the field
/// names a record.
fn arguments_for(schema: &Map<String, Value>, ids: &Map<String, Value>) -> Value {
    let mut arguments = Map::new();
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for field in required {
        let value = ids.get(field).cloned().unwrap_or_else(|| {
            match schema
                .get("properties")
                .map(|p| &p[field]["type"])
                .and_then(Value::as_str)
            {
                Some("integer" | "number") => json!(1),
                Some("boolean") => json!(false),
                Some("array") => json!([]),
                Some("object") => json!({}),
                _ => json!("redis"),
            }
        });
        arguments.insert(field.to_string(), value);
    }
    Value::Object(arguments)
}

/// Tools whose repeat refreshes an agent's heartbeat (`last_seen`) and nothing else: a
/// timestamp of liveness, not state, so they are idempotent to a client that retries.
const HEARTBEATS: &[&str] = &["register_agent"];

#[test]
fn read_only_tools_change_nothing_and_idempotent_ones_nothing_more() {
    let fleet = Fleet::new();
    let memory = fleet.ok(
        "store_memory",
        json!({"content": "redis on cache7 evicts keys under memory pressure", "category": "infrastructure"}),
    );
    let memory_id = memory["id"].clone();
    let agent = fleet.ok(
        "register_agent",
        json!({"role": "devops", "capabilities": ["redis"], "agent_id": "auditor"}),
    );
    let task = fleet.ok(
        "delegate_task",
        json!({"task_description": "raise maxmemory on cache7", "target_agent": agent["agent_id"]}),
    );
    let task_id = task["task_id"].clone();
    let incident = fleet.ok(
        "record_incident",
        json!({"title": "cache7 evictions", "description": "keys evicted", "severity": "high",
               "affected_systems": ["cache7"]}),
    );
    let incident_id = incident["incident_id"].clone();
    for content in ["maxmemory 4gb", "maxmemory 8gb"] {
        fleet.ok(
            "sync_infrastructure_config",
            json!({"config_name": "redis.conf", "config_type": "redis", "config_content": content}),
        );
    }
    fleet.ok(
        "track_infrastructure_state",
        json!({"machine_id": "cache7", "state_type": "memory", "state_data": {"used": "7.5gb"}}),
    );
    fleet.ok(
        "broadcast_discovery",
        json!({"message": "cache7 maxmemory raised", "severity": "info"}),
    );
    let deleted = fleet.ok(
        "store_memory",
        json!({"content": "an old note about cache3"}),
    );
    fleet.ok("delete_memory", json!({"memory_id": deleted["id"]}));

    let mut ids = Map::new();
    ids.insert("memory_id".into(), memory_id.clone());
    ids.insert("task_id".into(), task_id.clone());
    ids.insert("incident_id".into(), incident_id.clone());
    ids.insert("config_name".into(), json!("redis.conf"));
    ids.insert("agent_id".into(), agent["agent_id"].clone());
    ids.insert("user_id".into(), json!("default"));
    ids.insert("machine_id".into(), json!("cache7"));

    let mut checked = 0;
    for entry in catalogue().filter(|e| e.read_only) {
        let tool = entry.tool();
        let arguments = arguments_for(&tool.input_schema, &ids);
        let before = fleet.fingerprint();
        let outcome = fleet.call(entry.name, arguments.clone());
        assert_eq!(
            fleet.fingerprint(),
            before,
            "{} is marked read-only but changed the store ({arguments}: {outcome:?})",
            entry.name
        );
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} read-only tools");

    // Idempotent writes: the second identical call changes nothing more. (Tools that write
    // agent files or reach Confluence and Jira are checked by their own suites.)
    let idempotent: Vec<(&str, Value)> = vec![
        (
            "register_agent",
            json!({"role": "devops", "capabilities": ["redis"], "agent_id": "auditor"}),
        ),
        (
            "claim_task",
            json!({"task_id": task_id, "agent_id": "auditor"}),
        ),
        (
            "update_task",
            json!({"task_id": task_id, "status": "in_progress", "agent_id": "auditor"}),
        ),
        (
            "complete_task",
            json!({"task_id": task_id, "result": "raised to 8gb", "agent_id": "auditor"}),
        ),
        (
            "update_incident",
            json!({"incident_id": incident_id, "status": "mitigated"}),
        ),
        (
            "sync_infrastructure_config",
            json!({"config_name": "redis.conf", "config_type": "redis", "config_content": "maxmemory 8gb"}),
        ),
        (
            "upload_playbook",
            json!({"playbook_name": "flush-cache", "playbook_content": "- hosts: cache\n  tasks: []\n", "playbook_type": "ansible"}),
        ),
        (
            "update_memory",
            json!({"memory_id": memory_id, "content": "redis on cache7 evicts keys; maxmemory is 8gb now"}),
        ),
        (
            "recover_deleted_memory",
            json!({"memory_id": deleted["id"]}),
        ),
        ("delete_memory", json!({"memory_id": deleted["id"]})),
        (
            "gdpr_delete_user_data",
            json!({"user_id": "someone-else", "confirm": true}),
        ),
    ];
    let mut wrong = Vec::new();
    for (name, arguments) in idempotent {
        let entry = catalogue().find(|e| e.name == name).unwrap();
        let first = fleet.call(name, arguments.clone());
        assert!(first.is_ok(), "{name} {arguments}: {first:?}");
        let after_first = fleet.fingerprint();
        let second = fleet.call(name, arguments.clone());
        let changed = fleet.fingerprint() != after_first;
        if HEARTBEATS.contains(&name) {
            // Only the heartbeat may move: the record is otherwise the same.
            let strip = |v: &Result<Value, String>| {
                let mut v = v.clone().unwrap_or_default();
                v["last_seen"] = Value::Null;
                v
            };
            assert_eq!(strip(&first), strip(&second), "{name}");
            assert!(entry.idempotent, "{name}");
            continue;
        }
        if entry.idempotent == changed {
            wrong.push(format!(
                "{name}: marked idempotent={} but a second identical call {} ({first:?} then {second:?})",
                entry.idempotent,
                if changed { "changed the store again" } else { "changed nothing" }
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Tools that only add are not destructive; those that remove or overwrite are. Only
    // the connectors reach an open world (Confluence, Jira).
    for entry in catalogue() {
        let open_world = entry.tool().annotations.and_then(|a| a.open_world_hint);
        assert_eq!(
            open_world,
            Some(entry.name.starts_with("fetch_from_") || entry.name == "sync_external_knowledge"),
            "{}",
            entry.name
        );
        let removes = entry.name.starts_with("delete_")
            || entry.name.contains("_delete_")
            || entry.name.starts_with("merge_")
            || entry.name == "update_memory";
        assert_eq!(
            entry.destructive,
            removes,
            "{}: destructive={} but it {}",
            entry.name,
            entry.destructive,
            if removes {
                "removes or overwrites"
            } else {
                "only adds"
            }
        );
    }
}
