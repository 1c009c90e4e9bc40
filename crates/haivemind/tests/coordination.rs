//! Agent coordination across two replicating `haivemind serve` nodes, through MCP over
//! HTTP: the roster, delegation by capability, claims, completion, broadcasts on the
//! WebSocket and in get_broadcasts, a task surviving SIGKILL, concurrent claims in a
//! partition, and deadlines.

mod common;

use common::fleet::{FLEET_TOKEN, FleetNode, fleet_of, next_event, wait_for, websocket};
use serde_json::{Value, json};

/// An MCP client session on one node, as one named agent.
struct Client<'a> {
    node: &'a FleetNode,
    token: String,
    session: String,
    next_id: std::cell::Cell<u64>,
}

impl<'a> Client<'a> {
    fn connect(node: &'a FleetNode, name: &str) -> Self {
        let token = node.scratch.create_token("agent", None);
        let session = node.served().initialize_as(&token, name);
        Client {
            node,
            token,
            session,
            next_id: 2.into(),
        }
    }

    fn result(&self, tool: &str, arguments: Value) -> Value {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.node
            .served()
            .tool(&self.token, &self.session, id, tool, arguments)
    }

    fn ok(&self, tool: &str, arguments: Value) -> Value {
        let result = self.result(tool, arguments.clone());
        assert_eq!(result["isError"], false, "{tool} {arguments}: {result}");
        result["structuredContent"].clone()
    }

    fn error(&self, tool: &str, arguments: Value) -> Value {
        let result = self.result(tool, arguments.clone());
        assert_eq!(
            result["isError"], true,
            "{tool} {arguments} should fail: {result}"
        );
        result["structuredContent"]["error"].clone()
    }
}

fn roster_ids(client: &Client<'_>) -> Vec<String> {
    client.ok("get_agent_roster", json!({}))["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn agents_tasks_and_broadcasts_travel_between_two_nodes() {
    let mut nodes = fleet_of(&["alpha", "beta"], 1);
    for node in &mut nodes {
        node.start();
    }
    let lead = Client::connect(&nodes[0], "lead");
    let worker = Client::connect(&nodes[1], "worker");

    let registered = worker.ok(
        "register_agent",
        json!({"role": "worker_drone", "capabilities": ["elasticsearch_ops", "deploy"],
               "description": "search cluster hands"}),
    );
    assert_eq!(registered["agent_id"], "worker@beta");
    assert_eq!(registered["known_role"], true);
    // Registering again changes nothing.
    assert_eq!(
        worker.ok(
            "register_agent",
            json!({"role": "worker_drone", "capabilities": ["elasticsearch_ops", "deploy"],
                   "description": "search cluster hands"}),
        )["registered_at"],
        registered["registered_at"]
    );
    lead.ok(
        "register_agent",
        json!({"role": "hive_mind", "capabilities": ["planning"]}),
    );
    wait_for("beta's agent in alpha's roster", || {
        roster_ids(&lead).contains(&"worker@beta".to_string())
    });
    let roster = lead.ok("get_agent_roster", json!({}));
    let on_alpha = roster["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_id"] == "worker@beta")
        .unwrap()
        .clone();
    assert_eq!(on_alpha["machine_id"], "beta");
    assert_eq!(on_alpha["active"], true);
    assert_eq!(
        on_alpha["capabilities"],
        json!(["elasticsearch_ops", "deploy"])
    );

    // Delegated on alpha by capability: routed to beta's agent.
    let task = lead.ok(
        "delegate_task",
        json!({"task_description": "reindex logs-2026.11 with 3 shards",
               "required_capabilities": ["elasticsearch_ops"], "priority": "high"}),
    );
    assert_eq!(task["assigned_to"], "worker@beta");
    assert_eq!(task["status"], "assigned");
    let task_id = task["task_id"].as_str().unwrap().to_string();
    wait_for("the task to reach beta's agent", || {
        worker.ok("get_my_tasks", json!({}))["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["task_id"] == task_id.as_str())
    });
    let claimed = worker.ok("claim_task", json!({"task_id": task_id}));
    let again = worker.ok("claim_task", json!({"task_id": task_id}));
    assert_eq!(claimed["status"], "accepted");
    assert_eq!(again, claimed, "claiming twice gives the same answer");
    let claims = again["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "claim")
        .count();
    assert_eq!(claims, 1, "the second claim wrote nothing");
    // Another agent cannot take it, and cannot complete it.
    let refused = lead.error("claim_task", json!({"task_id": task_id}));
    assert_eq!(refused["code"], "conflict", "{refused}");
    worker.ok(
        "update_task",
        json!({"task_id": task_id, "status": "in_progress", "note": "started"}),
    );
    let done = worker.ok(
        "complete_task",
        json!({"task_id": task_id, "result": "reindexed 41M docs in 12 min"}),
    );
    assert_eq!(done["status"], "completed");
    wait_for("alpha to see the result", || {
        let seen = lead.ok("get_task", json!({"task_id": task_id}));
        seen["status"] == "completed" && seen["result"] == "reindexed 41M docs in 12 min"
    });
    let bad = lead.error("update_task", json!({"task_id": task_id, "status": "done"}));
    assert_eq!(bad["field"], "status");

    // A critical broadcast on alpha reaches beta's WebSocket and get_broadcasts.
    let mut socket = websocket(&nodes[1], "alpha", Some(FLEET_TOKEN)).unwrap();
    next_event(&mut socket, "hello");
    let sent = lead.ok(
        "broadcast_discovery",
        json!({"message": "elastic3 ran out of heap: raise -Xmx to 16g",
               "category": "infrastructure", "severity": "critical"}),
    );
    let event = next_event(&mut socket, "broadcast");
    assert_eq!(event["broadcast_id"], sent["broadcast_id"]);
    assert_eq!(event["severity"], "critical");
    assert_eq!(event["origin"], "alpha");
    assert_eq!(
        event["message"],
        "elastic3 ran out of heap: raise -Xmx to 16g"
    );
    let polled = worker.ok("get_broadcasts", json!({"severity": "critical"}));
    assert_eq!(polled["total"], 1, "{polled}");
    assert_eq!(polled["broadcasts"][0]["from_agent"], "lead@alpha");
    let refused = lead.error(
        "broadcast_discovery",
        json!({"message": "root password is hunter2", "confidentiality_level": "confidential"}),
    );
    assert_eq!(refused["field"], "confidentiality_level");
    let bad = lead.error(
        "broadcast_discovery",
        json!({"message": "x", "severity": "apocalyptic"}),
    );
    assert_eq!(bad["field"], "severity");

    // What one agent knows: only its own memories.
    worker.ok(
        "store_memory",
        json!({"content": "elastic3 heap dumps live in /var/tmp/es", "category": "infrastructure"}),
    );
    lead.ok(
        "store_memory",
        json!({"content": "elastic3 is behind proxy2", "category": "infrastructure"}),
    );
    wait_for("beta's memory on alpha", || {
        let found = lead.ok(
            "query_agent_knowledge",
            json!({"agent_id": "worker@beta", "query": "elastic3"}),
        );
        found["total"] == 1
            && found["memories"][0]["content"] == "elastic3 heap dumps live in /var/tmp/es"
    });

    // The CLI shows the same records.
    let agents = common::run_json(nodes[0].command(), &["agents"]);
    assert_eq!(agents["total"], 2, "{agents}");
    let tasks = common::run_json(nodes[0].command(), &["tasks", "--status", "completed"]);
    assert_eq!(tasks["tasks"][0]["task_id"], task_id.as_str());
    let shown = common::run_json(nodes[0].command(), &["tasks", &task_id]);
    assert_eq!(shown["result"], "reindexed 41M docs in 12 min");
    let cli = common::run_json(
        nodes[1].command(),
        &[
            "broadcast",
            "beta's disks are 91% full",
            "--severity",
            "warning",
        ],
    );
    assert_eq!(cli["severity"], "warning");
    wait_for("the CLI's broadcast on alpha", || {
        lead.ok("get_broadcasts", json!({"severity": "warning"}))["broadcasts"][0]["message"]
            == "beta's disks are 91% full"
    });
    wait_for("one digest", || {
        let (a, b) = (nodes[0].status(), nodes[1].status());
        a["state_digest"] == b["state_digest"]
    });
}

#[test]
fn tasks_survive_sigkill_concurrent_claims_resolve_and_deadlines_expire() {
    let mut nodes = fleet_of(&["alpha", "beta"], 1);
    for node in &mut nodes {
        node.start();
    }
    let [alpha_node, beta_node] = &mut nodes[..] else {
        unreachable!("two nodes")
    };
    {
        let a = Client::connect(&*alpha_node, "a1");
        let b = Client::connect(&*beta_node, "b1");
        a.ok(
            "register_agent",
            json!({"role": "code_weaver", "capabilities": ["rust"]}),
        );
        b.ok(
            "register_agent",
            json!({"role": "code_weaver", "capabilities": ["rust"]}),
        );
        wait_for("both agents on both nodes", || {
            roster_ids(&a).len() == 2 && roster_ids(&b).len() == 2
        });
    }
    let alpha = Client::connect(&*alpha_node, "a1");
    let held = alpha.ok(
        "delegate_task",
        json!({"task_description": "bump tokio", "target_agent": "b1@beta"}),
    )["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Nobody can do this one yet: it waits.
    let contested = alpha.ok(
        "delegate_task",
        json!({"task_description": "port the planner to wasm", "required_capabilities": ["wasm"]}),
    );
    assert_eq!(contested["status"], "pending");
    assert_eq!(contested["assigned_to"], Value::Null);
    let contested = contested["task_id"].as_str().unwrap().to_string();
    wait_for("both tasks on beta", || {
        let b = Client::connect(&*beta_node, "b1");
        let task =
            |id: &str| b.result("get_task", json!({"task_id": id}))["structuredContent"].clone();
        task(&contested)["status"] == "pending" && task(&held)["assigned_to"] == "b1@beta"
    });

    // beta dies holding its assigned task and still has it after a restart.
    beta_node.kill();
    // Meanwhile (a partition), both agents claim the contested task: b1 on beta's file
    // through its own stdio server, first; then a1 on alpha.
    let mut offline = common::McpProcess::start(beta_node.command());
    let first = offline.ok(
        "claim_task",
        json!({"task_id": contested, "agent_id": "b1@beta"}),
    );
    assert_eq!(first["status"], "accepted");
    offline.finish();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = alpha.ok("claim_task", json!({"task_id": contested}));
    assert_eq!(second["assigned_to"], "a1@alpha", "alpha does not know yet");
    beta_node.start();
    let beta = Client::connect(&*beta_node, "b1");
    let kept = beta.ok("get_task", json!({"task_id": held}));
    assert_eq!(kept["status"], "assigned");
    assert_eq!(kept["assigned_to"], "b1@beta");
    assert_eq!(
        beta.ok("get_my_tasks", json!({}))["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["task_id"] == held.as_str())
            .count(),
        1
    );
    // One winner on both nodes: the earlier claim; the loser sees its claim in the history.
    wait_for(
        "the claim race to resolve the same way on both nodes",
        || {
            let on_alpha = alpha.ok("get_task", json!({"task_id": contested}));
            let on_beta = beta.ok("get_task", json!({"task_id": contested}));
            on_alpha["assigned_to"] == "b1@beta" && on_beta["assigned_to"] == "b1@beta"
        },
    );
    let history = alpha.ok("get_task", json!({"task_id": contested}))["history"].clone();
    let losing = history
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "claim" && e["agent_id"] == "a1@alpha")
        .unwrap()
        .clone();
    assert_eq!(losing["applied"], false, "{history}");
    let refused = alpha.error(
        "complete_task",
        json!({"task_id": contested, "result": "done by the loser"}),
    );
    assert_eq!(refused["code"], "conflict");

    // A deadline that passes moves the task to expired, everywhere.
    let brief = alpha.ok(
        "delegate_task",
        json!({"task_description": "answer within a second", "target_agent": "b1@beta", "deadline": 1}),
    )["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(std::time::Duration::from_millis(1_200));
    assert_eq!(
        alpha.ok("get_task", json!({"task_id": brief}))["status"],
        "expired"
    );
    wait_for("beta to see it expired", || {
        beta.ok("get_task", json!({"task_id": brief}))["status"] == "expired"
    });
    let late = beta.error("claim_task", json!({"task_id": brief}));
    assert_eq!(late["code"], "conflict");
    wait_for("one digest", || {
        let (a, b) = (alpha_node.status(), beta_node.status());
        a["state_digest"] == b["state_digest"]
    });
}

#[test]
fn a_broadcast_reaches_connected_mcp_clients_as_a_notification() {
    let mut nodes = fleet_of(&["alpha", "beta"], 1);
    for node in &mut nodes {
        node.start();
    }
    // An agent on beta, connected over stdio to a `haivemind mcp` on beta's file.
    let mut listener = common::McpProcess::start(nodes[1].command());
    let lead = Client::connect(&nodes[0], "lead");
    let sent = lead.ok(
        "broadcast_discovery",
        json!({"message": "proxy2's certificate expires tomorrow", "severity": "warning",
               "target_roles": ["sentinel_node"]}),
    );
    let notification = loop {
        let frame = listener.next_frame();
        if frame["method"] == "notifications/message" {
            break frame;
        }
    };
    assert_eq!(notification["params"]["level"], "warning");
    assert_eq!(notification["params"]["logger"], "haivemind.broadcast");
    let data = &notification["params"]["data"];
    assert_eq!(data["type"], "broadcast");
    assert_eq!(data["broadcast_id"], sent["broadcast_id"]);
    assert_eq!(data["message"], "proxy2's certificate expires tomorrow");
    assert_eq!(data["target_roles"], json!(["sentinel_node"]));
    assert_eq!(data["origin"], "alpha");
    listener.finish();
}
