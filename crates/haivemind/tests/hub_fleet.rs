//! A team hub on a real PostgreSQL: several `haivemind serve` frontends on one database,
//! each with its own machine id, and SQLite edges replicating with them through `/api/sync`.

mod common;

use common::database::{ScratchDatabase, Server};
use common::fleet::{FleetNode, fleet_of, wait_for};
use serde_json::{Value, json};

/// Makes `node` a frontend of the hub on `database` (its own machine id stays).
fn join_hub(node: &mut FleetNode, database: &ScratchDatabase) {
    let config_path = node.scratch.config_path();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["storage"] = json!({"backend": "postgres", "postgres": {"pool_size": 4}});
    node.scratch.write_config(&config.to_string());
    node.env
        .push(("HAIVEMIND_DATABASE_URL".into(), database.url.clone()));
}

/// One MCP session on a node, with a token made through that node's config (on a hub
/// frontend, the token lives in the database).
struct Session<'a> {
    node: &'a FleetNode,
    token: String,
    id: String,
    next: std::cell::Cell<u64>,
}

impl<'a> Session<'a> {
    fn open(node: &'a FleetNode, token: &str, client: &str) -> Self {
        let id = node.served().initialize_as(token, client);
        Session {
            node,
            token: token.to_string(),
            id,
            next: 2.into(),
        }
    }

    fn call(&self, tool: &str, arguments: Value) -> Value {
        let id = self.next.get();
        self.next.set(id + 1);
        self.node
            .served()
            .tool(&self.token, &self.id, id, tool, arguments)
    }

    fn ok(&self, tool: &str, arguments: Value) -> Value {
        let result = self.call(tool, arguments.clone());
        assert_eq!(result["isError"], false, "{tool} {arguments}: {result}");
        result["structuredContent"].clone()
    }
}

fn with_command_env(node: &FleetNode) -> std::process::Command {
    let mut command = node.command();
    command.envs(node.env.iter().map(|(k, v)| (k, v)));
    command
}

fn token_for(node: &FleetNode, role: &str) -> String {
    let output = with_command_env(node)
        .args(["token", "create", "--role", role])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string()
}

fn ids_found(session: &Session<'_>, query: &str, semantic: bool) -> Vec<String> {
    session.ok(
        "search_memories",
        json!({"query": query, "semantic": semantic}),
    )["memories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn two_frontends_and_an_edge_share_one_memory_and_converge_to_one_digest() {
    let database = ScratchDatabase::new(Server::Pgvector);
    let mut nodes = fleet_of(&["hub-a", "hub-b", "edge"], 1);
    for node in &mut nodes[..2] {
        join_hub(node, &database);
    }
    for node in &mut nodes {
        node.env.push((
            "HAIVEMIND_MODEL_DIR".into(),
            common::model_dir().display().to_string(),
        ));
        node.start();
    }
    let (hub_a, hub_b, edge) = (&nodes[0], &nodes[1], &nodes[2]);

    // One token, made with the hub's config, is accepted by every frontend at once.
    let token = token_for(hub_a, "admin");
    let on_a = Session::open(hub_a, &token, "writer");
    let on_b = Session::open(hub_b, &token, "reader");

    // Its live events reach clients of the other frontend: each frontend's watcher reads
    // the one op log.
    let mut socket = common::fleet::websocket(hub_b, "edge", Some(common::fleet::FLEET_TOKEN))
        .expect("a WebSocket on hub-b");

    // A write through one frontend is found through the other at once, by words and by
    // meaning.
    let stored = on_a.ok(
        "store_memory",
        json!({"content": "the payments database fails over to db-replica-2 when db-main stalls"}),
    );
    let id = stored["id"].as_str().unwrap().to_string();
    assert_eq!(
        ids_found(&on_b, "payments failover replica", false),
        vec![id.clone()]
    );
    let event = common::fleet::next_event(&mut socket, "memory_created");
    assert_eq!(event["memory_id"], id.as_str());
    assert_eq!(event["origin"], "hub-a");
    assert!(
        ids_found(
            &on_b,
            "what happens when the primary SQL server hangs",
            true
        )
        .contains(&id)
    );

    // The edge writes too; everything converges to one state digest, the hub's computed on
    // PostgreSQL and the edge's on SQLite.
    edge.store("the edge cache on pop-fra1 is warmed at 05:00", &[]);
    wait_for("hub and edge to converge", || {
        common::fleet::fleet_converged(&nodes, 2)
    });
    // The hub's version vector covers both frontends' writes and the edge's.
    let status = hub_b.status();
    let origins: Vec<String> = status["vector_clock"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    for origin in ["hub-a", "edge"] {
        assert!(origins.contains(&origin.to_string()), "{origins:?}");
    }

    // A memory the edge keeps private never reaches the hub.
    let private = edge.store(
        "the edge's local root password hint",
        &["--scope", "machine-local"],
    );
    let rows = |needle: &str| -> i64 {
        database
            .client()
            .query_one(
                "SELECT (SELECT count(*) FROM memories WHERE content LIKE '%' || $1 || '%')
                      + (SELECT count(*) FROM op_log WHERE payload LIKE '%' || $1 || '%')",
                &[&needle],
            )
            .unwrap()
            .get(0)
    };
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(rows("root password hint"), 0, "{private} left the edge");

    // An erasure on the edge reaches the hub's rows, vectors and op log.
    edge.tool(
        "delete_memory",
        json!({"memory_id": id, "hard_delete": true, "reason": "wrong runbook"}),
    );
    wait_for("the removal to reach the hub", || rows("db-replica-2") == 0);
    let vectors: i64 = database
        .client()
        .query_one(
            "SELECT count(*) FROM memory_vectors v JOIN memories m ON m.rowid = v.memory_rowid
             WHERE m.id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(vectors, 0);
    assert!(ids_found(&on_a, "payments failover replica", false).is_empty());
    // The edge's private memory counts there only; the shared state is one.
    wait_for("hub and edge to converge after the removal", || {
        let statuses: Vec<Value> = nodes.iter().map(FleetNode::status).collect();
        statuses[0]["memory_count"] == 1
            && statuses
                .iter()
                .all(|s| s["state_digest"] == statuses[0]["state_digest"])
    });
}

#[test]
fn claims_through_two_frontends_at_once_have_one_winner() {
    let database = ScratchDatabase::new(Server::Pgvector);
    let mut nodes = fleet_of(&["hub-a", "hub-b"], 1);
    for node in &mut nodes {
        join_hub(node, &database);
        node.start();
    }
    let token = token_for(&nodes[0], "agent");
    let lead = Session::open(&nodes[0], &token, "lead");
    for round in 0..5 {
        let task = lead.ok(
            "delegate_task",
            json!({"task_description": format!("rotate the TLS certificates, batch {round}"),
                   "required_capabilities": ["nowhere"]}),
        )["task_id"]
            .as_str()
            .unwrap()
            .to_string();
        let barrier = std::sync::Barrier::new(2);
        let answers: Vec<Value> = std::thread::scope(|scope| {
            let handles: Vec<_> = [("w1", &nodes[0]), ("w2", &nodes[1])]
                .into_iter()
                .map(|(name, node)| {
                    let (barrier, token, task) = (&barrier, &token, &task);
                    scope.spawn(move || {
                        let session = Session::open(node, token, name);
                        barrier.wait();
                        session.call("claim_task", json!({"task_id": task}))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<&Value> = answers
            .iter()
            .filter(|a| a["isError"] == false && a["structuredContent"]["status"] == "accepted")
            .collect();
        // Both frontends read the one task: a single holder, the same on both.
        let seen_a = lead.ok("get_task", json!({"task_id": task}));
        let on_b = Session::open(&nodes[1], &token, "observer");
        let seen_b = on_b.ok("get_task", json!({"task_id": task}));
        assert_eq!(seen_a["assigned_to"], seen_b["assigned_to"]);
        let holder = seen_a["assigned_to"].as_str().unwrap().to_string();
        let claims = seen_a["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "claim")
            .count();
        assert_eq!(claims, 1, "one claim recorded: {seen_a}");
        assert_eq!(winners.len(), 1, "round {round}: one winner: {answers:?}");
        assert_eq!(
            winners[0]["structuredContent"]["assigned_to"],
            holder.as_str()
        );
        assert!(
            holder.starts_with("w1@") || holder.starts_with("w2@"),
            "{holder}"
        );
    }
}

#[test]
fn a_frontend_killed_mid_write_loses_no_acknowledged_write() {
    let database = ScratchDatabase::new(Server::Pgvector);
    let mut nodes = fleet_of(&["hub-a", "hub-b"], 1);
    for node in &mut nodes {
        join_hub(node, &database);
        node.start();
    }
    let token = token_for(&nodes[0], "agent");
    let acknowledged = std::sync::Mutex::new(Vec::<String>::new());
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let session = Session::open(&nodes[0], &token, "writer");
            for i in 0.. {
                // The kill cuts a request off mid-way: the client's read fails, or its
                // answer stops short. Either way the write is not acknowledged.
                let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let response = nodes[0].served().call_tool(
                        &token,
                        &session.id,
                        i + 10,
                        "store_memory",
                        json!({"content": format!("deploy log line {i} for the checkout service")}),
                    );
                    (response.status == 200)
                        .then(|| response.rpc(i + 10)["result"]["structuredContent"]["id"].clone())
                        .and_then(|id| id.as_str().map(str::to_string))
                }));
                let Ok(Some(id)) = sent else { break };
                acknowledged.lock().unwrap().push(id);
            }
        });
        wait_for("some writes", || acknowledged.lock().unwrap().len() >= 20);
        let pid = nodes[0].served().child.id();
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        writer.join().unwrap();
    });
    let acknowledged = acknowledged.into_inner().unwrap();
    assert!(acknowledged.len() >= 20);
    let reader = Session::open(&nodes[1], &token, "reader");
    for id in &acknowledged {
        let found = reader.call("retrieve_memory", json!({"memory_id": id}));
        assert_eq!(
            found["isError"], false,
            "acknowledged {id} is lost: {found}"
        );
    }
}

/// A PostgreSQL of this test's own (`scripts/postgres`), which it stops and starts again.
struct OwnServer {
    dir: String,
    url: String,
}

impl OwnServer {
    fn script() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres")
    }

    fn start() -> Self {
        let output = std::process::Command::new(Self::script())
            .arg("start")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let printed = String::from_utf8(output.stdout).unwrap();
        let mut lines = printed.lines();
        OwnServer {
            dir: lines.next().unwrap().to_string(),
            url: lines.next().unwrap().to_string(),
        }
    }

    fn run(&self, what: &str) {
        let status = std::process::Command::new(Self::script())
            .args([what, &self.dir])
            .status()
            .unwrap();
        assert!(status.success(), "scripts/postgres {what}");
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new(Self::script())
            .args(["stop", &self.dir])
            .status();
    }
}

fn health(node: &FleetNode) -> u16 {
    common::http::Request::new("GET", "/health")
        .send(&node.served().sync_address)
        .status
}

#[test]
fn a_database_outage_is_answered_503_and_loses_no_acknowledged_write() {
    let server = OwnServer::start();
    let database = ScratchDatabase {
        admin_url: server.url.clone(),
        name: "postgres".into(),
        url: server.url.clone(),
    };
    let mut nodes = fleet_of(&["hub-a"], 1);
    join_hub(&mut nodes[0], &database);
    nodes[0].start();
    let node = &nodes[0];
    let token = token_for(node, "agent");
    let session = Session::open(node, &token, "writer");
    let mut acknowledged = Vec::new();
    let mut store = |i: u32| -> Option<String> {
        let response = node.served().call_tool(
            &token,
            &session.id,
            u64::from(i) + 100,
            "store_memory",
            json!({"content": format!("outage drill write {i}")}),
        );
        if response.status != 200 {
            assert_eq!(response.status, 503, "{}", response.text());
            assert!(
                response.text().contains("database_unavailable"),
                "{}",
                response.text()
            );
            return None;
        }
        response.rpc(u64::from(i) + 100)["result"]["structuredContent"]["id"]
            .as_str()
            .map(str::to_string)
    };
    for i in 0..10 {
        acknowledged.push(store(i).expect("the database is up"));
    }

    server.run("halt");
    wait_for("the frontend to notice the outage", || health(node) == 503);
    let during: Vec<Option<String>> = (10..15).map(&mut store).collect();
    assert!(
        during.iter().all(Option::is_none),
        "nothing is acknowledged while the database is down: {during:?}"
    );
    let refused = common::http::Request::new("GET", "/api/status")
        .bearer(common::fleet::FLEET_TOKEN)
        .send(&node.served().sync_address);
    assert_eq!(refused.status, 503, "{}", refused.text());

    server.run("resume");
    wait_for("the frontend to reconnect by itself", || {
        health(node) == 200
    });
    for i in 15..25 {
        // The first call after the outage may still meet a connection the restart broke;
        // it is refused, not acknowledged, and the next one goes through.
        if let Some(id) = store(i).or_else(|| store(i + 1000)) {
            acknowledged.push(id);
        }
    }
    assert!(acknowledged.len() >= 19);
    for id in &acknowledged {
        let found = session.call("retrieve_memory", json!({"memory_id": id}));
        assert_eq!(
            found["isError"], false,
            "acknowledged {id} is lost: {found}"
        );
    }
}
