//! The replication exchange over real HTTP between two `haivemind serve` processes: the
//! test carries pages between them the way the sync service will, and checks that the
//! nodes converge to one `state_digest`, that what may not leave a node never does, and
//! that only the fleet (admin) token of a listed machine may replicate.

mod common;

use common::Scratch;
use common::http::{Request, Served};
use serde_json::{Value, json};

const FLEET_TOKEN: &str = "fleet-token-0123456789abcdef";

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

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn fleet_config(me: &str, ports: &[(&str, u16)]) -> Value {
    let machines: Vec<Value> = ports
        .iter()
        .filter(|(m, _)| *m != me)
        .map(|(m, p)| json!({"machine_id": m, "address": format!("127.0.0.1:{p}")}))
        .collect();
    json!({
        "security": {"api_token": FLEET_TOKEN},
        "sync": {"sync_interval": 1, "discovery": {"machines": machines}}
    })
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
    let peers = nodes[0].status()["peers"].clone();
    assert_eq!(peers.as_array().unwrap().len(), 2, "{peers}");
    // `haivemind peers` asks the running server.
    let mut command = nodes[0].scratch.command();
    command
        .env("HAIVEMIND_MACHINE_ID", "alpha")
        .env("HAIVEMIND_SERVER__SYNC_PORT", ports[0].1.to_string());
    let shown = common::run_json(command, &["peers"]);
    assert_eq!(shown["server"], "running", "{shown}");
    let names: Vec<&str> = shown["status"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["machine_id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["beta", "gamma"]);
    assert!(shown["status"]["peers"][0]["last_sync"].is_string());

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
