//! DevOps records through a real `haivemind mcp` and the CLI: the incident lifecycle and
//! its timeline, the automatic broadcast, similar incidents, runbook versions, latest and
//! historical infrastructure state, configuration drift with a diff, playbook validation,
//! search by category, and clear refusals of bad input.

mod common;

use common::Scratch;
use serde_json::{Value, json};

fn found_in(mcp: &mut common::McpProcess, query: &str, category: &str, id: &str) -> bool {
    let found = mcp.ok(
        "search_memories",
        json!({"query": query, "category": category, "semantic": false}),
    );
    found["memories"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == id)
}

#[test]
fn incidents_move_through_their_lifecycle_with_a_timeline_and_find_their_past() {
    let scratch = Scratch::new();
    let mut mcp = scratch.mcp();
    let first = mcp.ok(
        "record_incident",
        json!({"title": "elastic3 ran out of JVM heap", "description": "search timeouts, GC pauses of 30 s",
               "severity": "medium", "affected_systems": ["elastic3"],
               "resolution": "raised -Xmx to 16g and added a node",
               "lessons_learned": "watch heap above 85%"}),
    );
    assert_eq!(first["status"], "resolved");
    assert_eq!(
        first["broadcast_id"],
        Value::Null,
        "medium is not broadcast"
    );
    let id = first["incident_id"].as_str().unwrap().to_string();

    // A new one like it is told how the last one ended.
    let second = mcp.ok(
        "record_incident",
        json!({"title": "elastic3 JVM heap exhausted again", "description": "GC pauses, search timeouts",
               "severity": "critical", "affected_systems": ["elastic3", "kibana"]}),
    );
    assert_eq!(second["status"], "open");
    let similar = &second["similar_incidents"][0];
    assert_eq!(similar["incident_id"], id.as_str(), "{second}");
    assert_eq!(similar["resolution"], "raised -Xmx to 16g and added a node");
    // A critical incident is broadcast to the fleet at once.
    let broadcast = second["broadcast_id"]
        .as_str()
        .expect("a broadcast")
        .to_string();
    let broadcasts = mcp.ok("get_broadcasts", json!({"severity": "critical"}));
    assert_eq!(
        broadcasts["broadcasts"][0]["broadcast_id"],
        broadcast.as_str()
    );
    assert!(
        broadcasts["broadcasts"][0]["message"]
            .as_str()
            .unwrap()
            .contains("elastic3 JVM heap exhausted again")
    );

    let open = second["incident_id"].as_str().unwrap().to_string();
    mcp.ok(
        "update_incident",
        json!({"incident_id": open, "status": "investigating", "note": "heap at 97%"}),
    );
    // Forward moves may skip a state.
    mcp.ok(
        "update_incident",
        json!({"incident_id": open, "status": "resolved",
                                      "resolution": "rolled back the mapping change"}),
    );
    let closed = mcp.ok(
        "update_incident",
        json!({"incident_id": open, "status": "closed"}),
    );
    let timeline: Vec<&str> = closed["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(timeline, ["open", "investigating", "resolved", "closed"]);
    assert_eq!(closed["timeline"][1]["note"], "heap at 97%");
    assert_eq!(closed["resolution"], "rolled back the mapping change");

    // Going back is refused unless it is an explicit reopening.
    let back = mcp.tool_error(
        "update_incident",
        json!({"incident_id": open, "status": "investigating"}),
    );
    assert_eq!(back["field"], "status");
    assert!(
        back["message"].as_str().unwrap().contains("reopen"),
        "{back}"
    );
    let reopened = mcp.ok(
        "update_incident",
        json!({"incident_id": open, "status": "investigating", "reopen": true}),
    );
    assert_eq!(reopened["status"], "investigating");
    let bad = mcp.tool_error(
        "update_incident",
        json!({"incident_id": open, "status": "fixed"}),
    );
    assert_eq!(bad["field"], "status");
    let bad = mcp.tool_error(
        "record_incident",
        json!({"title": "x", "description": "y", "severity": "sev1"}),
    );
    assert_eq!(bad["field"], "severity");
    let bad = mcp.tool_error(
        "record_incident",
        json!({"title": "  ", "description": "y", "severity": "low"}),
    );
    assert_eq!(bad["field"], "title");

    // Lists, by status, severity and system.
    let by = |mcp: &mut common::McpProcess, filter: Value| -> Vec<String> {
        mcp.ok("list_incidents", filter)["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["incident_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        by(&mut mcp, json!({"status": "investigating"})),
        [open.as_str()]
    );
    assert_eq!(by(&mut mcp, json!({"severity": "medium"})), [id.as_str()]);
    assert_eq!(by(&mut mcp, json!({"system": "kibana"})), [open.as_str()]);
    assert_eq!(by(&mut mcp, json!({"system": "elastic3"})).len(), 2);
    assert!(found_in(&mut mcp, "JVM heap", "incidents", &open));

    // The CLI lists them too.
    let listed = scratch.json(&["incidents", "--system", "elastic3"]);
    assert_eq!(listed["total"], 2);
    mcp.finish();
}

#[test]
fn runbooks_state_configs_and_playbooks_are_structured_memories() {
    let scratch = Scratch::new();
    let mut mcp = scratch.mcp();
    let incident = mcp.ok(
        "record_incident",
        json!({"title": "nginx 502s on proxy2", "description": "upstream timeouts", "severity": "low",
               "affected_systems": ["nginx"]}),
    )["incident_id"]
        .as_str()
        .unwrap()
        .to_string();
    let runbook = mcp.ok(
        "generate_runbook",
        json!({"title": "Restart nginx safely", "system": "nginx",
               "procedure": "1. Check the config with nginx -t\n2. Drain proxy2 from the pool\n3. systemctl reload nginx",
               "prerequisites": ["root on the proxy"], "expected_outcome": "no 502s"}),
    );
    assert_eq!(
        runbook["steps"],
        json!([
            "Check the config with nginx -t",
            "Drain proxy2 from the pool",
            "systemctl reload nginx"
        ])
    );
    assert_eq!(runbook["addresses_incidents"], json!([incident]));
    assert_eq!(runbook["version"], 1);
    let again = mcp.ok(
        "generate_runbook",
        json!({"title": "restart nginx safely", "system": "nginx",
               "procedure": "- nginx -t\n- systemctl reload nginx"}),
    );
    assert_eq!(
        again["runbook_id"], runbook["runbook_id"],
        "same title and system: a new version"
    );
    assert_eq!(again["version"], 2);
    assert_eq!(again["new_version_of_existing"], true);
    let id = runbook["runbook_id"].as_str().unwrap();
    assert!(found_in(&mut mcp, "reload nginx", "runbooks", id));
    let bad = mcp.tool_error(
        "generate_runbook",
        json!({"title": "t", "system": "s", "procedure": " "}),
    );
    assert_eq!(bad["field"], "procedure");

    // Infrastructure state: latest per machine, and one machine's history.
    for (machine, kind, data) in [
        ("proxy1", "packages", json!({"nginx": "1.24"})),
        ("proxy2", "packages", json!({"nginx": "1.24"})),
        ("proxy1", "services", json!({"nginx": "running"})),
        ("proxy1", "packages", json!({"nginx": "1.26"})),
    ] {
        mcp.ok(
            "track_infrastructure_state",
            json!({"machine_id": machine, "state_type": kind, "state_data": data}),
        );
    }
    let latest = mcp.ok(
        "get_infrastructure_state",
        json!({"state_type": "packages"}),
    );
    let versions: Vec<(String, String)> = latest["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["machine_id"].as_str().unwrap().into(),
                s["state_data"]["nginx"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(versions.len(), 2, "{latest}");
    assert!(versions.contains(&("proxy1".into(), "1.26".into())));
    assert!(versions.contains(&("proxy2".into(), "1.24".into())));
    let history = mcp.ok(
        "get_infrastructure_state",
        json!({"machine_id": "proxy1", "history": true}),
    );
    assert_eq!(history["total"], 3);
    assert_eq!(history["states"][0]["state_data"]["nginx"], "1.26");
    assert!(found_in(
        &mut mcp,
        "proxy1",
        "infrastructure",
        history["states"][0]["id"].as_str().unwrap()
    ));
    let bad = mcp.tool_error("get_infrastructure_state", json!({"history": true}));
    assert_eq!(bad["field"], "machine_id");

    // Configuration drift.
    let v1 = "worker_processes auto;\nworker_connections 1024;\nkeepalive_timeout 65;\n";
    let v2 = "worker_processes auto;\nworker_connections 4096;\nkeepalive_timeout 65;\n";
    let first = mcp.ok(
        "sync_infrastructure_config",
        json!({"config_name": "nginx-main", "config_type": "nginx",
        "config_content": v1, "target_machines": ["proxy1", "proxy2"]}),
    );
    assert_eq!(first["version"], 1);
    let same = mcp.ok(
        "sync_infrastructure_config",
        json!({"config_name": "nginx-main", "config_type": "nginx",
        "config_content": v1, "target_machines": ["proxy1", "proxy2"]}),
    );
    assert_eq!(same["new_version"], false);
    let second = mcp.ok(
        "sync_infrastructure_config",
        json!({"config_name": "nginx-main", "config_type": "nginx",
        "config_content": v2, "target_machines": ["proxy2"]}),
    );
    assert_eq!(second["version"], 2);
    let drift = mcp.ok("get_config_drift", json!({"config_name": "nginx-main"}));
    assert_eq!(drift["drifted"], json!(["proxy1"]));
    assert_eq!(drift["in_sync"], json!(["proxy2"]));
    let diff = drift["machines"][0]["diff"].as_str().unwrap();
    assert!(
        diff.contains("-worker_connections 1024;") && diff.contains("+worker_connections 4096;"),
        "{diff}"
    );
    assert!(
        !diff.contains("-keepalive_timeout"),
        "only the change: {diff}"
    );
    let missing = mcp.tool_error("get_config_drift", json!({"config_name": "nope"}));
    assert_eq!(missing["field"], "config_name");
    let cli = scratch.json(&["drift", "nginx-main"]);
    assert_eq!(cli["machines"][0]["drifted"], true);
    assert!(found_in(
        &mut mcp,
        "worker_connections",
        "deployments",
        second["config_id"].as_str().unwrap()
    ));

    // Playbooks: validated, versioned by name.
    let playbook = "- hosts: proxies\n  become: true\n  tasks:\n    - name: reload nginx\n      service: {name: nginx, state: reloaded}\n";
    let stored = mcp.ok(
        "upload_playbook",
        json!({"playbook_name": "reload-nginx", "playbook_content": playbook,
        "target_systems": ["proxy1", "proxy2"], "variables": {"retries": 3}}),
    );
    assert_eq!(stored["version"], 1);
    assert_eq!(stored["playbook_type"], "ansible");
    assert!(found_in(
        &mut mcp,
        "reload nginx",
        "runbooks",
        stored["playbook_id"].as_str().unwrap()
    ));
    let broken = mcp.tool_error(
        "upload_playbook",
        json!({"playbook_name": "broken",
        "playbook_content": "- hosts: proxies\n  tasks:\n    - name: x\n   bad: [unclosed\n"}),
    );
    assert_eq!(broken["field"], "playbook_content");
    assert!(
        broken["message"].as_str().unwrap().contains("line "),
        "{broken}"
    );
    let shell = mcp.tool_error(
        "upload_playbook",
        json!({"playbook_name": "s", "playbook_type": "shell",
        "playbook_content": "#!/bin/sh\necho 'unterminated\n"}),
    );
    assert!(
        shell["message"].as_str().unwrap().contains("line 2"),
        "{shell}"
    );
    let kind = mcp.tool_error(
        "upload_playbook",
        json!({"playbook_name": "k", "playbook_type": "puppet",
        "playbook_content": "x"}),
    );
    assert_eq!(kind["field"], "playbook_type");
    let v2 = mcp.ok(
        "upload_playbook",
        json!({"playbook_name": "reload-nginx",
        "playbook_content": playbook.replace("reloaded", "restarted")}),
    );
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["playbook_id"], stored["playbook_id"]);
    mcp.finish();
}
