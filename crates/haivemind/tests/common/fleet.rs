//! A fleet of `haivemind serve` nodes on loopback that replicate with each other, for the
//! sync and coordination tests: start, SIGKILL, restart, status, CLI and MCP calls, and a
//! WebSocket client (tungstenite) for `/ws/{machine_id}`.

use serde_json::{Value, json};

use super::Scratch;
use super::http::{Request, Served};

/// The fleet's shared token (`security.api_token`).
pub const FLEET_TOKEN: &str = "fleet-token-0123456789abcdef";

/// Polls `done` every 200 ms; fails the test after 60 s.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

pub fn fleet_config(me: &str, ports: &[(&str, u16)]) -> Value {
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

/// A serving node of a fleet on fixed sync ports, which can be killed and restarted.
pub struct FleetNode {
    pub scratch: Scratch,
    pub machine: &'static str,
    pub port: u16,
    /// Extra environment for its server (the clock-skew test shifts its clock).
    pub env: Vec<(String, String)>,
    pub server: Option<Served>,
}

impl FleetNode {
    pub fn new(machine: &'static str, ports: &[(&'static str, u16)], sync_interval: u64) -> Self {
        let scratch = Scratch::new();
        let mut config = fleet_config(machine, ports);
        config["sync"]["sync_interval"] = json!(sync_interval);
        scratch.write_config(&config.to_string());
        let port = ports.iter().find(|(m, _)| *m == machine).unwrap().1;
        FleetNode {
            scratch,
            machine,
            port,
            env: Vec::new(),
            server: None,
        }
    }

    pub fn command(&self) -> std::process::Command {
        let mut command = self.scratch.command();
        command.env("HAIVEMIND_MACHINE_ID", self.machine);
        command
    }

    pub fn start(&mut self) {
        let mut command = self.command();
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        self.server = Some(Served::start_on(command, self.port));
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        let mut server = self.server.take().expect("running");
        server.child.kill().unwrap();
        server.child.wait().unwrap();
    }

    pub fn served(&self) -> &Served {
        self.server.as_ref().expect("running")
    }

    pub fn status(&self) -> Value {
        let response = Request::new("GET", "/api/status")
            .bearer(FLEET_TOKEN)
            .send(&self.served().sync_address);
        assert_eq!(response.status, 200, "{}", response.text());
        response.json()
    }

    /// Stores `content` through the CLI; returns its id.
    pub fn store(&self, content: &str, extra: &[&str]) -> String {
        let mut args = vec!["store", content];
        args.extend_from_slice(extra);
        let stored = super::run_json(self.command(), &args);
        stored["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {stored}"))
            .to_string()
    }

    pub fn content_of(&self, id: &str) -> Option<String> {
        let output = self.command().args(["--json", "get", id]).output().unwrap();
        if !output.status.success() {
            return None;
        }
        let memory: Value = serde_json::from_slice(&output.stdout).unwrap();
        let memory = memory.get("memory").unwrap_or(&memory);
        Some(memory["content"].as_str().unwrap().to_string())
    }

    /// Calls an MCP tool over this node's HTTP port with a fresh admin token.
    pub fn tool(&self, name: &str, arguments: Value) -> Value {
        let token = self.scratch.create_token("admin", None);
        let server = self.served();
        let session = server.initialize(&token);
        let result = server.tool(&token, &session, 2, name, arguments.clone());
        assert_eq!(
            result["isError"],
            json!(false),
            "{name} {arguments}: {result}"
        );
        result["structuredContent"].clone()
    }

    /// Rows of this node's SQLite file (memories and op log) whose text contains `needle`.
    pub fn rows_containing(&self, needle: &str) -> i64 {
        let database = self.scratch.data_dir().join("haivemind.sqlite3");
        let connection = rusqlite::Connection::open(database).unwrap();
        connection
            .query_row(
                "SELECT (SELECT count(*) FROM memories WHERE content LIKE '%' || ?1 || '%')
                      + (SELECT count(*) FROM op_log WHERE payload LIKE '%' || ?1 || '%')",
                [needle],
                |row| row.get(0),
            )
            .unwrap()
    }
}

/// Whether every running node of `nodes` holds `count` memories and one state digest.
pub fn fleet_converged<'a>(nodes: impl IntoIterator<Item = &'a FleetNode>, count: u64) -> bool {
    let statuses: Vec<Value> = nodes.into_iter().map(FleetNode::status).collect();
    statuses
        .iter()
        .all(|s| s["memory_count"] == count && s["state_digest"] == statuses[0]["state_digest"])
}

pub fn fleet_of(names: &[&'static str], sync_interval: u64) -> Vec<FleetNode> {
    use super::http::free_port;
    let ports: Vec<(&'static str, u16)> = names.iter().map(|m| (*m, free_port())).collect();
    names
        .iter()
        .map(|m| FleetNode::new(m, &ports, sync_interval))
        .collect()
}

/// Opens `/ws/{subscriber}` on `node` with `token`.
pub fn websocket(
    node: &FleetNode,
    subscriber: &str,
    token: Option<&str>,
) -> Result<tungstenite::WebSocket<std::net::TcpStream>, tungstenite::Error> {
    use tungstenite::client::IntoClientRequest;
    let url = format!("ws://{}/ws/{subscriber}", node.served().sync_address);
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    }
    let stream = std::net::TcpStream::connect(&node.served().sync_address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    match tungstenite::client(request, stream) {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::HandshakeError::Failure(error)) => Err(error),
        Err(tungstenite::HandshakeError::Interrupted(_)) => {
            panic!("blocking handshake interrupted")
        }
    }
}

/// The next JSON text frame whose `type` is `wanted`, skipping others (failing on timeout).
pub fn next_event(socket: &mut tungstenite::WebSocket<std::net::TcpStream>, wanted: &str) -> Value {
    loop {
        match socket.read().expect("a frame before the timeout") {
            tungstenite::Message::Text(text) => {
                let event: Value = serde_json::from_str(text.as_str()).unwrap();
                if event["type"] == wanted {
                    return event;
                }
            }
            tungstenite::Message::Pong(_) if wanted == "<pong frame>" => return json!({}),
            _ => {}
        }
    }
}
