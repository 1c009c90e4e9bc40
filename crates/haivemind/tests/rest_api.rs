//! The REST API under the dashboard (`/api/v1`), over real HTTP against `haivemind serve`:
//! the same roles, limits and errors as the MCP tools, admin-only token routes, the live
//! event socket that signs in by its first message, the page's headers, and same-origin
//! requests.

mod common;

use std::time::{Duration, Instant};

use common::Scratch;
use common::http::{Request, Served};
use serde_json::{Value, json};

fn api<'a>(method: &'a str, path: &'a str, token: &str) -> Request<'a> {
    Request::new(method, path).bearer(token)
}

#[test]
fn memories_go_through_the_tools_rules_with_each_tokens_role() {
    let scratch = Scratch::new();
    let admin = scratch.create_token("admin", Some("root"));
    let agent = scratch.create_token("agent", Some("laptop"));
    let readonly = scratch.create_token("readonly", Some("viewer"));
    let server = Served::start(scratch.command());

    let me = server.send(api("GET", "/api/v1/me", &readonly)).json();
    assert_eq!(me["role"], "readonly");
    assert_eq!(me["may"]["write"], false);
    assert_eq!(me["may"]["read_restricted"], false);

    // Readonly may not write: the tool's own refusal, as 403.
    let refused =
        server.send(api("POST", "/api/v1/memories", &readonly).json(&json!({"content": "no"})));
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "forbidden");
    assert_eq!(refused.json()["error"]["tool"], "store_memory");

    let stored =
        server.send(api("POST", "/api/v1/memories", &agent).json(
            &json!({"content": "Postgres vacuum runs at 02:00 on db-1", "tags": ["postgres"]}),
        ));
    assert_eq!(stored.status, 200, "{}", stored.text());
    let memory = stored.json();
    let id = memory["id"].as_str().unwrap().to_string();
    assert_eq!(memory["agent_id"], "laptop", "authored by the token's name");

    // Mistakes name the field.
    for (request, field) in [
        (
            api("POST", "/api/v1/memories", &agent).json(&json!({"content": 5})),
            "content",
        ),
        (
            api("POST", "/api/v1/memories", &agent).json(&json!({"content": "x", "colour": "red"})),
            "colour",
        ),
        (
            api("POST", "/api/v1/memories", &agent).raw_body(b"{not json"),
            "body",
        ),
        (
            api("GET", "/api/v1/memories?q=x&limit=ten", &agent),
            "limit",
        ),
        (api("GET", "/api/v1/memories?q=x&bogus=1", &agent), "bogus"),
        (
            api("GET", "/api/v1/memories?q=x&limit=1000", &agent),
            "limit",
        ),
        (
            api("GET", "/api/v1/memories/not-a-uuid", &agent),
            "memory_id",
        ),
    ] {
        let answer = server.send(request);
        assert_eq!(answer.status, 400, "{field}: {}", answer.text());
        assert_eq!(answer.json()["error"]["field"], field, "{}", answer.text());
    }

    // Search, history, update, and the REST answer equals the tool's.
    let found = server
        .send(api(
            "GET",
            "/api/v1/memories?q=vacuum&semantic=false",
            &readonly,
        ))
        .json();
    assert_eq!(found["memories"][0]["id"], id.as_str(), "{found}");
    let patched = server.send(
        api("PATCH", &format!("/api/v1/memories/{id}"), &agent)
            .json(&json!({"content": "Postgres vacuum runs at 03:00 on db-1"})),
    );
    assert_eq!(patched.json()["version"], 2, "{}", patched.text());
    let history = server
        .send(api(
            "GET",
            &format!("/api/v1/memories/{id}/history"),
            &readonly,
        ))
        .json();
    assert_eq!(
        history["history"][1]["changes"]["content"]["to"],
        "Postgres vacuum runs at 03:00 on db-1"
    );
    let mismatched = server.send(
        api("PATCH", &format!("/api/v1/memories/{id}"), &agent)
            .json(&json!({"memory_id": "01a22e24-2b75-77d2-b6a5-d6f01734f6b3"})),
    );
    assert_eq!(mismatched.status, 400);
    assert_eq!(mismatched.json()["error"]["field"], "memory_id");

    // Readonly never sees confidential memories, here as over MCP.
    let secret = server
        .send(api("POST", "/api/v1/memories", &agent).json(
            &json!({"content": "vacuum password is hunter2", "confidentiality_level": "confidential"}),
        ))
        .json();
    let secret_id = secret["id"].as_str().unwrap();
    let hidden = server.send(api(
        "GET",
        &format!("/api/v1/memories/{secret_id}"),
        &readonly,
    ));
    assert_eq!(hidden.status, 403, "{}", hidden.text());
    let listed = server
        .send(api(
            "GET",
            "/api/v1/memories?q=vacuum&semantic=false",
            &readonly,
        ))
        .text();
    assert!(
        !listed.contains("hunter2") && !listed.contains(secret_id),
        "{listed}"
    );
    let recent = server.send(api("GET", "/api/v1/recent", &readonly)).text();
    assert!(!recent.contains("hunter2"), "{recent}");
    assert!(
        server
            .send(api(
                "GET",
                "/api/v1/memories?q=vacuum&semantic=false",
                &agent
            ))
            .text()
            .contains(secret_id)
    );

    // Soft delete, 410, recover; hard delete is the admin's alone.
    let deleted = server.send(api(
        "DELETE",
        &format!("/api/v1/memories/{id}?reason=old"),
        &agent,
    ));
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    let gone = server.send(api("GET", &format!("/api/v1/memories/{id}"), &agent));
    assert_eq!(gone.status, 410);
    assert_eq!(gone.json()["error"]["code"], "deleted");
    let listed_deleted = server
        .send(api("GET", "/api/v1/memories/deleted", &agent))
        .text();
    assert!(listed_deleted.contains(&id), "{listed_deleted}");
    let recovered = server.send(api(
        "POST",
        &format!("/api/v1/memories/{id}/recover"),
        &agent,
    ));
    assert_eq!(recovered.status, 200, "{}", recovered.text());
    let hard = format!("/api/v1/memories/{id}?hard_delete=true");
    assert_eq!(server.send(api("DELETE", &hard, &agent)).status, 403);
    assert_eq!(server.send(api("DELETE", &hard, &admin)).status, 200);
    let erased = server.send(api("GET", &format!("/api/v1/memories/{id}"), &agent));
    assert_eq!(erased.status, 410, "{}", erased.text());

    // Coordination and DevOps are the tools too.
    let task = server
        .send(
            api("POST", "/api/v1/tasks", &agent).json(&json!({"task_description": "rotate keys"})),
        )
        .json();
    let board = server
        .send(api("GET", "/api/v1/tasks?status=pending", &readonly))
        .json();
    assert_eq!(board["tasks"][0]["id"], task["id"], "{board}");
    let bad_state = server.send(api("GET", "/api/v1/tasks?status=sleeping", &readonly));
    assert_eq!(bad_state.json()["error"]["field"], "status");
    let incident = server
        .send(api("POST", "/api/v1/incidents", &agent).json(&json!({
            "title": "db-1 disk full", "description": "WAL filled the disk", "severity": "critical",
        })))
        .json();
    let incident_id = incident["incident_id"].as_str().unwrap();
    let moved = server.send(
        api("PATCH", &format!("/api/v1/incidents/{incident_id}"), &agent)
            .json(&json!({"status": "investigating", "note": "looking"})),
    );
    assert_eq!(moved.json()["status"], "investigating", "{}", moved.text());
    let readonly_move = server.send(
        api(
            "PATCH",
            &format!("/api/v1/incidents/{incident_id}"),
            &readonly,
        )
        .json(&json!({"status": "resolved"})),
    );
    assert_eq!(readonly_move.status, 403);

    // Tool and route timings reach /metrics, on the MCP port too.
    let metrics = server.send(api("GET", "/api/v1/metrics", &readonly)).text();
    assert!(
        metrics
            .contains("haivemind_tool_duration_seconds_bucket{tool=\"store_memory\",le=\"+Inf\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "haivemind_http_request_duration_seconds_count{route=\"POST /api/v1/memories\"}"
        ),
        "{metrics}"
    );
    server.stop();
}

#[test]
fn tokens_and_the_audit_log_are_for_admins_and_revocation_takes_effect() {
    let scratch = Scratch::new();
    let admin = scratch.create_token("admin", Some("root"));
    let agent = scratch.create_token("agent", Some("laptop"));
    let server = Served::start(scratch.command());

    for (method, path) in [
        ("GET", "/api/v1/tokens"),
        ("POST", "/api/v1/tokens"),
        ("GET", "/api/v1/audit"),
        ("DELETE", "/api/v1/tokens/tok_x"),
    ] {
        let answer = server.send(api(method, path, &agent).json(&json!({"role": "admin"})));
        assert_eq!(answer.status, 403, "{method} {path}: {}", answer.text());
    }
    let invalid = server.send(api("POST", "/api/v1/tokens", &admin).json(&json!({"role": "god"})));
    assert_eq!(invalid.json()["error"]["field"], "role");
    let made = server.send(
        api("POST", "/api/v1/tokens", &admin).json(&json!({"role": "readonly", "name": "wall"})),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    let made = made.json();
    let secret = made["token"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!(
        server.send(api("GET", "/api/v1/me", &secret)).json()["role"],
        "readonly"
    );
    let listed = server.send(api("GET", "/api/v1/tokens", &admin)).text();
    assert!(
        listed.contains(&id) && !listed.contains(&secret),
        "never a secret: {listed}"
    );

    let unknown = server.send(api("DELETE", "/api/v1/tokens/tok_nobody", &admin));
    assert_eq!(
        (unknown.status, unknown.json()["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{}",
        unknown.text()
    );
    let revoked = server.send(api("DELETE", &format!("/api/v1/tokens/{id}"), &admin));
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = server.send(api("GET", "/api/v1/me", &secret)).status;
        if status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "the revoked token still works");
        std::thread::sleep(Duration::from_millis(100));
    }

    let audit = server
        .send(api("GET", "/api/v1/audit?limit=50", &admin))
        .json();
    let events: Vec<&str> = audit["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|line| line["event"].as_str())
        .collect();
    assert!(
        events.contains(&"token_created") && events.contains(&"token_revoked"),
        "{events:?}"
    );
    assert!(!audit.to_string().contains(&secret));
    let too_many = server.send(api("GET", "/api/v1/audit?limit=100000", &admin));
    assert_eq!(too_many.json()["error"]["field"], "limit");
    server.stop();
}

#[test]
fn the_page_is_served_safely_and_its_own_origin_is_accepted() {
    let scratch = Scratch::new();
    let agent = scratch.create_token("agent", None);
    let server = Served::start(scratch.command());

    let page = server.send(Request::new("GET", "/"));
    assert_eq!(page.status, 200);
    assert!(page.text().contains("name=\"token\""), "the sign-in form");
    assert!(!page.text().contains("<script>"), "no inline script");
    let csp = page
        .header("content-security-policy")
        .unwrap_or_default()
        .to_string();
    for rule in [
        "script-src 'self'",
        "frame-ancestors 'none'",
        "default-src 'none'",
    ] {
        assert!(csp.contains(rule), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    for asset in ["/assets/app.js", "/assets/app.css", "/assets/icon.svg"] {
        assert_eq!(
            server.send(Request::new("GET", asset)).status,
            200,
            "{asset}"
        );
    }
    let script = server.send(Request::new("GET", "/assets/app.js")).text();
    assert!(!script.contains("innerHTML") && !script.contains("localStorage.setItem"));

    // The page's own origin is accepted on the API and on /mcp; another origin is not, and
    // no answer carries a CORS header.
    let own = format!("http://{}", server.address);
    let from_page = server.send(api("GET", "/api/v1/me", &agent).header("Origin", &own));
    assert_eq!(from_page.status, 200, "{}", from_page.text());
    assert!(from_page.header("access-control-allow-origin").is_none());
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}}});
    let mcp = server.send(
        api("POST", "/mcp", &agent)
            .header("Origin", &own)
            .header("Accept", "application/json, text/event-stream")
            .json(&initialize),
    );
    assert_eq!(mcp.status, 200, "{}", mcp.text());
    for foreign in ["http://evil.example", &format!("http://{}:1", "127.0.0.1")] {
        let refused = server.send(api("GET", "/api/v1/me", &agent).header("Origin", foreign));
        assert_eq!(refused.status, 403, "{foreign}");
        assert_eq!(refused.json()["error"]["code"], "origin_not_allowed");
    }
    let rebound = server.send(
        api("GET", "/api/v1/me", &agent)
            .header("Host", "evil.example")
            .header("Origin", "http://evil.example"),
    );
    assert_eq!(rebound.status, 403);
    server.stop();
}

#[test]
fn the_event_socket_signs_in_by_its_first_message_and_ends_when_the_token_is_revoked() {
    use tungstenite::client::IntoClientRequest;
    let scratch = Scratch::new();
    let admin = scratch.create_token("admin", Some("root"));
    let watcher = scratch.create_token("readonly", Some("wall"));
    let server = Served::start(scratch.command());
    let open = |first: &str| {
        let request = format!("ws://{}/api/v1/events", server.address)
            .into_client_request()
            .unwrap();
        let stream = std::net::TcpStream::connect(&server.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut socket = tungstenite::client(request, stream).unwrap().0;
        socket
            .send(tungstenite::Message::Text(first.to_string().into()))
            .unwrap();
        socket
    };
    // None when the socket ends; why is printed, so a failure below says how it ended.
    let next = |socket: &mut tungstenite::WebSocket<std::net::TcpStream>| -> Option<Value> {
        loop {
            match socket.read() {
                Ok(tungstenite::Message::Text(text)) => {
                    let event = serde_json::from_str(&text).ok();
                    if event.is_none() {
                        eprintln!("the socket sent text that is not JSON: {text}");
                    }
                    return event;
                }
                Ok(tungstenite::Message::Close(frame)) => {
                    eprintln!("the socket closed: {frame:?}");
                    return None;
                }
                Err(error) => {
                    eprintln!("the socket ended with an error: {error}");
                    return None;
                }
                Ok(_) => {}
            }
        }
    };

    let mut wrong = open(r#"{"type":"auth","token":"hv_wrong"}"#);
    let refusal = next(&mut wrong).expect("a refusal");
    assert_eq!(refusal["type"], "error", "{refusal}");
    assert!(next(&mut wrong).is_none(), "closed after the refusal");
    let mut silent = open(r#"{"type":"ping"}"#);
    assert_eq!(
        next(&mut silent).unwrap()["type"],
        "error",
        "a first message that is not auth"
    );

    let mut socket = open(&json!({"type": "auth", "token": watcher}).to_string());
    let hello = next(&mut socket).unwrap();
    assert_eq!(
        (hello["type"].as_str(), hello["role"].as_str()),
        (Some("hello"), Some("readonly"))
    );
    let stored = server
        .send(
            api("POST", "/api/v1/memories", &admin)
                .json(&json!({"content": "live over the socket"})),
        )
        .json();
    let created = next(&mut socket).unwrap();
    assert_eq!(created["type"], "memory_created", "{created}");
    assert_eq!(created["memory_id"], stored["id"]);
    assert!(
        created.get("content").is_none(),
        "events carry ids, not memory text"
    );

    let tokens = server.send(api("GET", "/api/v1/tokens", &admin)).json();
    let id = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "wall")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    server.send(api("DELETE", &format!("/api/v1/tokens/{id}"), &admin));
    let ended = loop {
        match next(&mut socket) {
            Some(event) if event["type"] == "signed_out" => break true,
            Some(event) => eprintln!("before signed_out: {event}"),
            None => break false,
        }
    };
    assert!(
        ended,
        "the socket says signed_out when its token is revoked"
    );
    server.stop();
}

/// `haivemind --remote URL <command>` runs on the server through `POST /api/v1/tools/{name}`,
/// with the token from `$HAIVEMIND_TOKEN`, and never opens a local data directory.
#[test]
fn the_cli_runs_against_a_remote_server_with_the_token_from_the_environment() {
    let scratch = Scratch::new();
    let agent = scratch.create_token("agent", Some("laptop"));
    let readonly = scratch.create_token("readonly", Some("viewer"));
    let server = Served::start(scratch.command());
    // Another machine: its own empty HOME and data directory.
    let elsewhere = Scratch::new();
    let remote = |token: Option<&str>, args: &[&str]| {
        let mut command = elsewhere.command();
        command.args(["--remote", &server.url]);
        if let Some(token) = token {
            command.env("HAIVEMIND_TOKEN", token);
        }
        command.args(args).output().expect("run haivemind --remote")
    };
    let json_of = |output: std::process::Output| -> Value {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let stored = json_of(remote(
        Some(&agent),
        &[
            "--json",
            "store",
            "--project",
            "billing",
            "-t",
            "db,pg",
            "billing's pg replica lags when vacuum runs; schedule it at night",
        ],
    ));
    let id = stored["id"].as_str().unwrap().to_string();
    assert_eq!(stored["project"], "billing");
    assert_eq!(stored["agent_id"], "laptop", "written as the token");
    let found = json_of(remote(
        Some(&agent),
        &["--json", "search", "vacuum replica", "--full-text"],
    ));
    assert_eq!(found["memories"][0]["id"], id.as_str(), "{found}");
    let text = remote(Some(&agent), &["get", &id]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("schedule it at night"));
    let pack = json_of(remote(
        Some(&agent),
        &[
            "--json",
            "context",
            "--project",
            "billing",
            "--query",
            "replica lag",
        ],
    ));
    assert!(
        pack["context"].as_str().unwrap().contains("vacuum"),
        "{pack}"
    );
    let status = json_of(remote(Some(&agent), &["--json", "status"]));
    assert_eq!(status["me"]["role"], "agent");
    assert_eq!(status["machine"]["machine_id"], "e2e-machine");
    let stats = json_of(remote(Some(&agent), &["--json", "stats"]));
    assert_eq!(stats["total_memories"], 1, "{stats}");

    // The server's rules hold: a readonly token cannot write; errors say why.
    let refused = remote(Some(&readonly), &["store", "not allowed"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let no_token = remote(None, &["search", "x"]);
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("HAIVEMIND_TOKEN"));
    let wrong = remote(Some("hv_wrong"), &["search", "x"]);
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"));
    let local_only = remote(Some(&agent), &["export"]);
    let why = String::from_utf8_lossy(&local_only.stderr);
    assert!(
        !local_only.status.success() && why.contains("this machine's data directory"),
        "{why}"
    );
    assert!(
        !elsewhere.data_dir().join("memories.sqlite3").exists()
            && std::fs::read_dir(elsewhere.data_dir()).map_or(true, |mut d| d.next().is_none()),
        "--remote never opens a local store"
    );
    // An admin manages the server's tokens from another machine.
    let admin = scratch.create_token("admin", Some("root"));
    let made = remote(
        Some(&admin),
        &[
            "token",
            "create",
            "--role",
            "readonly",
            "--name",
            "wall display",
        ],
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let secret = String::from_utf8_lossy(&made.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    assert!(secret.starts_with("hv_"), "{secret}");
    let listed = json_of(remote(Some(&admin), &["--json", "token", "list"]));
    assert!(listed.to_string().contains("wall display") && !listed.to_string().contains(&secret));
    let revoked = json_of(remote(
        Some(&admin),
        &["--json", "token", "revoke", "wall display"],
    ));
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let not_admin = remote(Some(&agent), &["token", "list"]);
    assert!(String::from_utf8_lossy(&not_admin.stderr).contains("403"));

    let unknown = server.send(api("POST", "/api/v1/tools/no_such_tool", &agent).json(&json!({})));
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    server.stop();
}
