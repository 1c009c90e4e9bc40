//! The replication exchange over real HTTP between two `haivemind serve` processes: the
//! test carries pages between them the way the sync service will, and checks that the
//! nodes converge to one `state_digest`, that what may not leave a node never does, and
//! that only the fleet (admin) token of a listed machine may replicate.

mod common;

use common::Scratch;
use common::fleet::{
    FLEET_TOKEN, FleetNode, fleet_config, fleet_converged, fleet_of, next_event, wait_for,
    websocket,
};
use common::http::{Request, Served};
use serde_json::{Value, json};

struct Node {
    scratch: Scratch,
    server: Served,
    machine: &'static str,
}

fn node(machine: &'static str, config: Value) -> Node {
    let scratch = Scratch::new();
    scratch.write_config(&config.to_string());
    let mut command = scratch.command();
    command.env("HAIVEMIND_MACHINE_ID", machine);
    let server = Served::start(command);
    Node {
        scratch,
        server,
        machine,
    }
}

impl Node {
    fn store(&self, content: &str, extra: &[&str]) {
        let mut command = self.scratch.command();
        command.env("HAIVEMIND_MACHINE_ID", self.machine);
        let output = command
            .args(["store", content])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn status(&self) -> Value {
        let response = Request::new("GET", "/api/status")
            .bearer(FLEET_TOKEN)
            .send(&self.server.sync_address);
        assert_eq!(response.status, 200, "{}", response.text());
        response.json()
    }

    fn exchange(&self, body: Value, token: &str) -> common::http::Response {
        Request::new("POST", "/api/sync")
            .bearer(token)
            .json(&body)
            .send(&self.server.sync_address)
    }
}

/// Moves everything `to` lacks from `from`, a page at a time; returns the operations moved.
fn carry(from: &Node, to: &Node) -> usize {
    let mut moved = 0;
    loop {
        let seen = to.status()["vector_clock"].clone();
        let page = from.exchange(
            json!({"machine_id": to.machine, "seen": seen, "limit": 7}),
            FLEET_TOKEN,
        );
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        let ops = page["ops"].as_array().unwrap().clone();
        moved += ops.len();
        let applied = to.exchange(
            json!({"machine_id": from.machine, "ops": ops, "limit": 1}),
            FLEET_TOKEN,
        );
        assert_eq!(applied.status, 200, "{}", applied.text());
        assert_eq!(applied.json()["applied"]["refused"], 0);
        if page["more"] == json!(false) {
            return moved;
        }
    }
}

#[test]
fn two_nodes_converge_over_http_and_keep_what_may_not_leave() {
    let config = json!({"security": {"api_token": FLEET_TOKEN}});
    let alpha = node("alpha", config.clone());
    let beta = node("beta", config);
    for i in 0..12 {
        alpha.store(&format!("alpha learned fact {i}"), &[]);
        beta.store(&format!("beta learned fact {i}"), &[]);
    }
    alpha.store("alpha's private scratch note", &["--scope", "private"]);
    alpha.store(
        "carol's home address is 12 Elm St",
        &["--confidentiality", "pii"],
    );
    assert_ne!(
        alpha.status()["state_digest"],
        beta.status()["state_digest"]
    );

    assert_eq!(carry(&alpha, &beta), 12);
    assert_eq!(carry(&beta, &alpha), 12);
    let (a, b) = (alpha.status(), beta.status());
    assert_eq!(a["state_digest"], b["state_digest"]);
    assert_eq!(b["memory_count"], 24);
    assert_eq!(
        a["memory_count"], 26,
        "the private and pii memories stay on alpha"
    );
    // Nothing more to move: the exchange is incremental.
    assert_eq!(carry(&alpha, &beta), 0);
    alpha.store("one more from alpha", &[]);
    assert_eq!(carry(&alpha, &beta), 1);
    assert_eq!(
        alpha.status()["state_digest"],
        beta.status()["state_digest"]
    );

    // Look in beta's file, not only its API.
    let database = beta.scratch.data_dir().join("haivemind.sqlite3");
    let connection = rusqlite::Connection::open(&database).unwrap();
    let leaked: i64 = connection
        .query_row(
            "SELECT (SELECT count(*) FROM memories WHERE content LIKE '%Elm St%' OR content LIKE '%scratch note%')
                  + (SELECT count(*) FROM op_log WHERE payload LIKE '%Elm St%' OR payload LIKE '%scratch note%')",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(leaked, 0);
}

#[test]
fn only_the_fleet_token_of_a_listed_machine_may_replicate() {
    let config = json!({
        "security": {"api_token": FLEET_TOKEN},
        "sync": {"discovery": {"machines": [{"machine_id": "beta", "address": "127.0.0.1:1"}, "gamma:8899"]}}
    });
    let alpha = node("alpha", config);
    let agent = alpha.scratch.create_token("agent", None);
    let body = json!({"machine_id": "beta", "seen": {}});
    assert_eq!(
        Request::new("POST", "/api/sync")
            .json(&body)
            .send(&alpha.server.sync_address)
            .status,
        401
    );
    let as_agent = alpha.exchange(body.clone(), &agent);
    assert_eq!(as_agent.status, 403);
    assert_eq!(as_agent.json()["error"]["code"], "forbidden");
    assert_eq!(alpha.exchange(body, FLEET_TOKEN).status, 200);
    assert_eq!(
        alpha
            .exchange(json!({"machine_id": "gamma"}), FLEET_TOKEN)
            .status,
        200
    );
    let stranger = alpha.exchange(json!({"machine_id": "mallory"}), FLEET_TOKEN);
    assert_eq!(stranger.status, 403);
    assert_eq!(stranger.json()["error"]["code"], "machine_not_listed");
    let bad = alpha.exchange(
        json!({"machine_id": "beta", "ops": [{"op_id": "x"}]}),
        FLEET_TOKEN,
    );
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("ops[0].")
    );
    let audit = std::fs::read_to_string(alpha.scratch.data_dir().join("audit.log")).unwrap();
    assert!(audit.contains("\"sync_denied\"") && audit.contains("\"sync_exchange\""));
    assert!(!audit.contains(FLEET_TOKEN));
}

#[test]
fn three_serving_nodes_replicate_on_their_own_and_survive_a_sigkill() {
    use common::http::free_port;
    let ports = [
        ("alpha", free_port()),
        ("beta", free_port()),
        ("gamma", free_port()),
    ];
    let start = |scratch: &Scratch, machine: &'static str, port: u16| {
        let mut command = scratch.command();
        command.env("HAIVEMIND_MACHINE_ID", machine);
        Served::start_on(command, port)
    };
    let mut nodes: Vec<Node> = ports
        .iter()
        .map(|(machine, port)| {
            let scratch = Scratch::new();
            scratch.write_config(&fleet_config(machine, &ports).to_string());
            let server = start(&scratch, machine, *port);
            Node {
                scratch,
                server,
                machine,
            }
        })
        .collect();
    for (i, n) in nodes.iter().enumerate() {
        for j in 0..5 {
            n.store(&format!("fact {j} learned on node {i}"), &[]);
        }
    }
    let converged = |nodes: &[Node], count: u64| {
        let statuses: Vec<Value> = nodes.iter().map(Node::status).collect();
        statuses
            .iter()
            .all(|s| s["memory_count"] == count && s["state_digest"] == statuses[0]["state_digest"])
    };
    wait_for("three nodes to converge", || converged(&nodes, 15));
    // `haivemind peers` asks the running server. A peer that was not up yet when alpha started is retried after a short backoff.
    let mut shown = Value::Null;
    wait_for("alpha to have synced with both peers", || {
        let mut asking = nodes[0].scratch.command();
        asking
            .env("HAIVEMIND_MACHINE_ID", "alpha")
            .env("HAIVEMIND_SERVER__SYNC_PORT", ports[0].1.to_string());
        shown = common::run_json(asking, &["peers"]);
        shown["status"]["peers"].as_array().is_some_and(|peers| {
            peers.len() == 2 && peers.iter().all(|p| p["last_sync"].is_string())
        })
    });
    assert_eq!(shown["server"], "running", "{shown}");
    let names: Vec<&str> = shown["status"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["machine_id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["beta", "gamma"]);
    // `haivemind status` carries the same view.
    let mut asking = nodes[0].scratch.command();
    asking
        .env("HAIVEMIND_MACHINE_ID", "alpha")
        .env("HAIVEMIND_SERVER__SYNC_PORT", ports[0].1.to_string());
    let status = common::run_json(asking, &["status"]);
    assert_eq!(status["sync"]["server"], "running", "{status}");
    assert_eq!(status["sync"]["peers"].as_array().unwrap().len(), 2);
    assert_eq!(
        status["sync"]["state_digest"],
        nodes[0].status()["state_digest"]
    );

    // gamma dies hard; alpha and beta keep writing, and alpha erases a memory.
    let gamma = nodes.pop().unwrap();
    let Node {
        scratch: gamma_scratch,
        mut server,
        ..
    } = gamma;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    nodes[0].store("written while gamma was down", &[]);
    nodes[1].store("beta also wrote while gamma was down", &[]);
    let doomed = {
        let mut command = nodes[0].scratch.command();
        command.env("HAIVEMIND_MACHINE_ID", "alpha");
        let found = common::run_json(
            command,
            &[
                "search",
                "fact 0 learned on node 2",
                "--full-text",
                "--limit",
                "1",
            ],
        );
        found["memories"][0]["id"].as_str().unwrap().to_string()
    };
    let mut command = nodes[0].scratch.command();
    command.env("HAIVEMIND_MACHINE_ID", "alpha");
    assert!(
        command
            .args(["delete", &doomed, "--hard"])
            .output()
            .unwrap()
            .status
            .success()
    );
    wait_for("alpha and beta to converge", || converged(&nodes, 16));
    wait_for("alpha to report gamma down", || {
        nodes[0].status()["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["machine_id"] == "gamma" && p["last_error"].is_string())
    });

    // gamma comes back with its old copy of the erased memory, and catches up.
    let server = start(&gamma_scratch, "gamma", ports[2].1);
    nodes.push(Node {
        scratch: gamma_scratch,
        server,
        machine: "gamma",
    });
    wait_for("gamma to catch up", || converged(&nodes, 16));
    let mut command = nodes[2].scratch.command();
    command.env("HAIVEMIND_MACHINE_ID", "gamma");
    let output = command.args(["get", &doomed]).output().unwrap();
    assert!(
        !output.status.success(),
        "the erased memory stays gone on gamma"
    );
}

#[test]
fn peers_are_found_through_tailscale_when_it_is_there() {
    use common::http::free_port;
    // Both nodes use one sync port, on two loopback addresses, as two tailnet machines would.
    let port = free_port();
    let beta_scratch = Scratch::new();
    beta_scratch.write_config(
        &json!({"server": {"host": "127.0.0.2"}, "security": {"api_token": FLEET_TOKEN},
                "sync": {"discovery": {"tailscale": false}}})
        .to_string(),
    );
    let mut command = beta_scratch.command();
    command.env("HAIVEMIND_MACHINE_ID", "beta");
    let beta = Node {
        server: Served::start_on(command, port),
        scratch: beta_scratch,
        machine: "beta",
    };

    let alpha_scratch = Scratch::new();
    alpha_scratch.write_config(
        &json!({"security": {"api_token": FLEET_TOKEN}, "sync": {"sync_interval": 1}}).to_string(),
    );
    // A stand-in `tailscale` on PATH that prints what `tailscale status --json` prints.
    let bin = alpha_scratch.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let status = json!({
        "Self": {"HostName": "alpha", "TailscaleIPs": ["127.0.0.1"], "Online": true},
        "Peer": {
            "nodekey:1": {"HostName": "beta", "TailscaleIPs": ["127.0.0.2", "fd7a:115c:a1e0::2"], "Online": true},
            "nodekey:2": {"HostName": "laptop-asleep", "TailscaleIPs": ["127.0.0.3"], "Online": false}
        }
    });
    let script = bin.join("tailscale");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1 $2\" = \"status --json\" ] || exit 2\ncat <<'JSON'\n{status}\nJSON\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut command = alpha_scratch.command();
    command.env("HAIVEMIND_MACHINE_ID", "alpha").env(
        "PATH",
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    let alpha = Node {
        server: Served::start_on(command, port),
        scratch: alpha_scratch,
        machine: "alpha",
    };

    alpha.store("alpha's fact", &[]);
    beta.store("beta's fact", &[]);
    wait_for(
        "alpha and beta to converge through Tailscale discovery",
        || {
            let (a, b) = (alpha.status(), beta.status());
            a["memory_count"] == 2
                && b["memory_count"] == 2
                && a["state_digest"] == b["state_digest"]
        },
    );
    let peers = alpha.status()["peers"].clone();
    let names: Vec<&str> = peers
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["machine_id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["beta"], "online tailnet peers only");
}

#[test]
fn live_events_trigger_sync_and_metrics_on_the_sync_port() {
    let mut nodes = fleet_of(&["alpha", "beta"], 3600);
    for node in &mut nodes {
        node.start();
    }
    let (alpha, beta) = (&nodes[0], &nodes[1]);

    // Only a token gets a socket, and only for a listed machine (or this one).
    match websocket(beta, "alpha", None) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    match websocket(beta, "mallory", Some(FLEET_TOKEN)) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    let mut socket = websocket(beta, "alpha", Some(FLEET_TOKEN)).unwrap();
    let hello = next_event(&mut socket, "hello");
    assert_eq!(hello["machine_id"], "beta");
    assert_eq!(beta.status()["connected_websockets"], 1);

    // A private memory on alpha is never announced, not even on alpha's own socket; the
    // shared one that follows is, on alpha and (once replicated) on beta.
    let mut own = websocket(alpha, "alpha", Some(FLEET_TOKEN)).unwrap();
    next_event(&mut own, "hello");
    alpha.store("alpha's private scratch note", &["--scope", "private"]);
    let shared = alpha.store("alpha learned that the cache is cold at 6am", &[]);
    let created = next_event(&mut own, "memory_created");
    assert_eq!(created["memory_id"], shared.as_str());
    let replicated = next_event(&mut socket, "memory_created");
    assert_eq!(replicated["memory_id"], shared.as_str());
    assert_eq!(replicated["origin"], "alpha");
    assert_eq!(replicated["machine_id"], "beta");
    let synced = next_event(&mut own, "sync");
    assert_eq!(synced["peer"], "beta");

    // Ping, both ways of asking.
    socket
        .send(tungstenite::Message::Text(r#"{"type":"ping"}"#.into()))
        .unwrap();
    next_event(&mut socket, "pong");
    socket
        .send(tungstenite::Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    next_event(&mut socket, "<pong frame>");

    // Metrics, in Prometheus's text format.
    let metrics = Request::new("GET", "/metrics")
        .bearer(FLEET_TOKEN)
        .send(&beta.served().sync_address);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = metrics.text();
    for line in [
        "haivemind_memories 1",
        "haivemind_websocket_connections 1",
        "haivemind_peer_up{peer=\"alpha\"} 1",
        "# TYPE haivemind_sync_ops_received_total counter",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing in\n{text}"
        );
    }
    assert_eq!(
        Request::new("GET", "/metrics")
            .send(&beta.served().sync_address)
            .status,
        401
    );

    // trigger-sync: a round now, with each peer's result; readonly may not.
    let agent = alpha.scratch.create_token("agent", None);
    let triggered = Request::new("POST", "/api/trigger-sync")
        .bearer(&agent)
        .send(&alpha.served().sync_address);
    assert_eq!(triggered.status, 200, "{}", triggered.text());
    let triggered = triggered.json();
    assert_eq!(triggered["peers"][0]["machine_id"], "beta");
    assert_eq!(triggered["peers"][0]["ok"], true);
    let readonly = alpha.scratch.create_token("readonly", None);
    assert_eq!(
        Request::new("POST", "/api/trigger-sync")
            .bearer(&readonly)
            .send(&alpha.served().sync_address)
            .status,
        403
    );
    drop(socket);
    nodes[1].kill();
    let failed = Request::new("POST", "/api/trigger-sync")
        .bearer(&agent)
        .send(&nodes[0].served().sync_address)
        .json();
    assert_eq!(failed["peers"][0]["ok"], false, "{failed}");
    assert!(failed["peers"][0]["error"].is_string());

    // An agent sees the peers' health in get_machine_context (what /hv-status reports).
    let alpha = nodes[0].served();
    let session = alpha.initialize(&agent);
    let context = alpha.tool(&agent, &session, 2, "get_machine_context", json!({}));
    let peers = &context["structuredContent"]["peers"];
    assert_eq!(peers[0]["machine_id"], "beta", "{context}");
    assert!(peers[0]["last_error"].is_string(), "{context}");
    assert!(peers[0]["rounds"].as_u64().unwrap() >= 1, "{context}");
}

#[test]
fn a_fleet_converges_through_a_sigkill_mid_sync_a_partition_a_conflict_and_an_erasure() {
    let mut nodes = fleet_of(&["alpha", "beta", "gamma"], 1);
    for node in &mut nodes {
        node.start();
    }

    // Concurrent writes on all three.
    std::thread::scope(|scope| {
        for node in &nodes {
            scope.spawn(move || {
                for j in 0..10 {
                    node.store(&format!("{} learned fact {j}", node.machine), &[]);
                }
            });
        }
    });
    let contested = nodes[0].store("the deploy target is blue", &[]);
    nodes[1].store("carol prefers the night shift", &["--user", "carol"]);
    let mut expected = 32;
    wait_for("three nodes to converge", || {
        fleet_converged(&nodes, expected)
    });

    // 5,000 memories on alpha; gamma is killed while they stream in.
    let file = nodes[0].scratch.dir.path().join("bulk.jsonl");
    let lines: String = (0..5_000)
        .map(|i| format!("{}\n", json!({"content": format!("bulk runbook line {i}")})))
        .collect();
    std::fs::write(&file, lines).unwrap();
    let importer = nodes[0]
        .command()
        .args(["import", file.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    expected += 5_000;
    let mut seen_on_gamma = 0;
    wait_for("gamma to be mid-way through the bulk", || {
        seen_on_gamma = nodes[2].status()["memory_count"].as_u64().unwrap();
        seen_on_gamma > 500
    });
    nodes[2].kill();
    assert!(
        seen_on_gamma < expected,
        "gamma was killed mid-sync ({seen_on_gamma} of {expected})"
    );
    assert!(importer.wait_with_output().unwrap().status.success());

    // The partition: gamma is down. It changes the contested memory offline (through its
    // own stdio MCP server), and meanwhile alpha and beta write, alpha changes the same
    // memory later, and alpha erases carol's data.
    let mut offline = common::McpProcess::start(nodes[2].command());
    offline.ok(
        "update_memory",
        json!({"memory_id": contested, "content": "the deploy target is green (gamma, offline)"}),
    );
    offline.finish();
    std::thread::sleep(std::time::Duration::from_millis(50));
    nodes[0].tool(
        "update_memory",
        json!({"memory_id": contested, "content": "the deploy target is red (alpha, later)"}),
    );
    nodes[0].store("alpha wrote during the partition", &[]);
    nodes[1].store("beta wrote during the partition", &[]);
    expected += 2;
    let erased = nodes[0].tool(
        "gdpr_delete_user_data",
        json!({"user_id": "carol", "confirm": true}),
    );
    assert_eq!(erased["erased"], 1, "{erased}");
    expected -= 1;
    wait_for("alpha and beta to converge", || {
        fleet_converged([&nodes[0], &nodes[1]], expected)
    });

    // Incremental: with 5,000 synced, one new write is one record in the exchange.
    let before = nodes[1].status()["vector_clock"].clone();
    nodes[0].store("one more after the bulk", &[]);
    expected += 1;
    let page = Request::new("POST", "/api/sync")
        .bearer(FLEET_TOKEN)
        .json(&json!({"machine_id": "beta", "seen": before, "limit": 1000}))
        .send(&nodes[0].served().sync_address)
        .json();
    assert_eq!(page["ops"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["more"], false);

    // gamma returns with its offline change and its old copy of carol's memory.
    nodes[2].start();
    wait_for("the fleet to converge after the partition", || {
        fleet_converged(&nodes, expected)
    });
    for node in &nodes {
        assert_eq!(
            node.content_of(&contested).as_deref(),
            Some("the deploy target is red (alpha, later)"),
            "the later write wins on {}",
            node.machine
        );
        assert_eq!(
            node.rows_containing("night shift"),
            0,
            "carol's erased memory is gone from {}'s file",
            node.machine
        );
        for machine in ["alpha", "beta", "gamma"] {
            let found = common::run_json(
                node.command(),
                &[
                    "search",
                    &format!("{machine} learned fact 9"),
                    "--full-text",
                ],
            );
            assert!(
                found["memories"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["content"] == format!("{machine} learned fact 9")),
                "{machine}'s acknowledged write reached {}",
                node.machine
            );
        }
    }
}

#[test]
fn a_node_whose_clock_is_an_hour_ahead_still_converges_and_loses_no_later_write() {
    let library = std::env::var("HAIVEMIND_TEST_FAKETIME").unwrap_or_else(|_| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        root.join("target/faketime/libfaketime.so.1")
            .display()
            .to_string()
    });
    assert!(
        std::path::Path::new(&library).is_file(),
        "this test shifts a node's clock with libfaketime: run scripts/fetch-faketime (scripts/test does)"
    );
    let mut nodes = fleet_of(&["alpha", "beta"], 1);
    // alpha knows beta runs an hour ahead and accepts up to two hours of skew; with the
    // default five minutes it would refuse beta's operations (tested in the store's
    // hostile-peer tests and below, over HTTP).
    let config_path = nodes[0].scratch.config_path();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["sync"]["max_clock_skew_secs"] = json!(7200);
    nodes[0].scratch.write_config(&config.to_string());
    nodes[1].env = vec![
        ("LD_PRELOAD".into(), library),
        ("FAKETIME".into(), "+1h".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ];
    for node in &mut nodes {
        node.start();
    }
    // beta's server really runs an hour ahead: its stamps say so.
    let shared = nodes[0].store("the build cache lives on nfs2", &[]);
    wait_for("beta to receive alpha's write", || {
        fleet_converged(&nodes, 1)
    });
    nodes[1].tool(
        "update_memory",
        json!({"memory_id": shared, "content": "the build cache moved to nfs3 (beta, clock ahead)"}),
    );
    let beta_stamp = nodes[1].status()["vector_clock"]["beta"].as_u64().unwrap();
    let wall_ms = |stamp: u64| stamp >> 16;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        wall_ms(beta_stamp) > now_ms + 3_000_000,
        "beta stamps an hour ahead"
    );
    wait_for("alpha to receive beta's change", || {
        nodes[0].content_of(&shared).as_deref()
            == Some("the build cache moved to nfs3 (beta, clock ahead)")
    });
    // alpha changes it afterwards, with a wall clock an hour behind beta's stamp: its
    // hybrid clock has moved past the stamp it received, so its later write still wins.
    nodes[0].tool(
        "update_memory",
        json!({"memory_id": shared, "content": "the build cache is back on nfs2 (alpha, later)"}),
    );
    nodes[0].store("alpha's next fact", &[]);
    nodes[1].store("beta's next fact", &[]);
    wait_for("the two nodes to converge", || fleet_converged(&nodes, 3));
    for node in &nodes {
        assert_eq!(
            node.content_of(&shared).as_deref(),
            Some("the build cache is back on nfs2 (alpha, later)"),
            "on {}",
            node.machine
        );
    }
}

#[test]
fn peers_replicate_over_tls_and_refuse_a_certificate_they_do_not_trust() {
    let mut nodes = fleet_of(&["alpha", "beta", "gamma"], 1);
    // alpha and beta share the fleet's certificate; gamma has one of its own.
    let (fleet_cert, fleet_key, _) =
        common::http::throwaway_certificate(nodes[0].scratch.dir.path());
    let (own_cert, own_key, _) = common::http::throwaway_certificate(nodes[2].scratch.dir.path());
    for (node, cert, key) in [
        (&nodes[0], &fleet_cert, &fleet_key),
        (&nodes[1], &fleet_cert, &fleet_key),
        (&nodes[2], &own_cert, &own_key),
    ] {
        let path = node.scratch.config_path();
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config["security"]["tls"] = json!({"cert_file": cert, "key_file": key});
        std::fs::write(&path, config.to_string()).unwrap();
    }
    for node in &mut nodes {
        node.start();
        assert!(node.served().url.starts_with("https://"));
    }
    // Over TLS, through the CLI, which asks its own server as a peer would.
    let status = |node: &FleetNode| {
        let mut command = node.command();
        command.env("HAIVEMIND_SERVER__SYNC_PORT", node.port.to_string());
        let shown = common::run_json(command, &["peers"]);
        assert_eq!(shown["server"], "running", "{shown}");
        shown["status"].clone()
    };
    for node in &nodes {
        node.store(&format!("{} serves tls", node.machine), &[]);
    }
    wait_for("alpha and beta to converge over TLS", || {
        let (a, b) = (status(&nodes[0]), status(&nodes[1]));
        a["memory_count"] == 2 && b["memory_count"] == 2 && a["state_digest"] == b["state_digest"]
    });
    wait_for("alpha to refuse gamma's certificate", || {
        status(&nodes[0])["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| {
                p["machine_id"] == "gamma"
                    && p["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("certificate"))
            })
    });
    assert_eq!(
        status(&nodes[2])["memory_count"],
        1,
        "nothing crossed the untrusted link"
    );
}

#[test]
fn a_peer_that_sends_a_forbidden_operation_is_refused_op_by_op_and_audited() {
    let mut nodes = fleet_of(&["alpha", "beta"], 1);
    for node in &mut nodes {
        node.start();
    }
    nodes[0].store("an honest fact", &[]);
    wait_for("beta to receive the first fact", || {
        fleet_converged(&nodes, 1)
    });
    // A buggy or hostile alpha: an operation in its log that no local write could make
    // (a category beta does not know), followed by an honest write.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let forged_id = "0190f5a0-0000-7000-8000-0000000000aa";
    let payload = json!({"id": forged_id, "content": "smuggled", "category": "contraband"});
    let connection =
        rusqlite::Connection::open(nodes[0].scratch.data_dir().join("haivemind.sqlite3")).unwrap();
    connection
        .execute(
            "INSERT INTO op_log (op_id, hlc, origin, record_kind, record_id, op, payload, shareable)
             VALUES ('forged-op', ?1, 'alpha', 'memory', ?2, 'create', ?3, 1)",
            rusqlite::params![now_ms << 16, forged_id, payload.to_string()],
        )
        .unwrap();
    nodes[0].store("a later honest fact", &[]);
    wait_for("beta to receive the later fact", || {
        nodes[1].status()["memory_count"] == 2
    });
    let audit = nodes[1].scratch.data_dir().join("audit.log");
    wait_for("beta to audit the refusal", || {
        std::fs::read_to_string(&audit).is_ok_and(|text| text.contains("sync_refused"))
    });
    let text = std::fs::read_to_string(&audit).unwrap();
    let refused: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["event"] == "sync_refused")
        .unwrap();
    assert_eq!(refused["peer_machine_id"], "alpha");
    assert_eq!(refused["first_op_id"], "forged-op");
    assert_eq!(refused["first_field"], "payload.category");
    assert!(!text.contains("smuggled"));
    assert!(nodes[1].content_of(forged_id).is_none());
    // Beta keeps syncing with alpha: the refusal did not wedge the rounds.
    nodes[0].store("a third honest fact", &[]);
    wait_for("beta to receive the third fact", || {
        nodes[1].status()["memory_count"] == 3
    });
}
