//! What a hostile client or peer could do to a serving node, each tried on real HTTP on
//! loopback, and the limit that now stops it: session slots freed when sessions end,
//! malformed messages answered alike on every transport, no unbounded echo of input into
//! answers or logs, bounded metadata and reasons, readonly calls that write nothing,
//! owner-only files, and sync operations refused one by one with their reasons.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use common::Scratch;
use common::fleet::FLEET_TOKEN;
use common::http::{Request, Served};
use serde_json::{Value, json};

fn op_log_entries(scratch: &Scratch) -> i64 {
    let connection =
        rusqlite::Connection::open(scratch.data_dir().join("haivemind.sqlite3")).unwrap();
    connection
        .query_row("SELECT count(*) FROM op_log", [], |row| row.get(0))
        .unwrap()
}

/// A server whose rate limit lets one agent token (`name`) open sessions by the dozen,
/// with `extra` config keys (`"key": value,` or empty) beside it.
fn many_sessions_server(name: &str, extra: &str) -> (Scratch, String, Served) {
    let scratch = Scratch::new();
    scratch.write_config(&format!(
        r#"{{{extra} "security": {{"rate_limit": {{"requests_per_minute": 6000, "burst": 1000}}}}}}"#
    ));
    let agent = scratch.create_token("agent", Some(name));
    let server = Served::start(scratch.command());
    (scratch, agent, server)
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn sessions_ended_with_delete_free_their_slots() {
    let (_scratch, agent, server) = many_sessions_server("cycler", "");
    // More open/close cycles than one token may hold sessions at once (64).
    for _ in 0..70 {
        let session = server.initialize(&agent);
        let ended = server.send(
            Request::new("DELETE", "/mcp")
                .bearer(&agent)
                .header("Mcp-Session-Id", &session)
                .header("MCP-Protocol-Version", "2025-06-18"),
        );
        assert_eq!(ended.status, 204, "{}", ended.text());
    }
    let session = server.initialize(&agent);
    let stats = server.tool(&agent, &session, 2, "get_memory_stats", json!({}));
    assert_eq!(stats["isError"], json!(false));
}

#[test]
fn concurrent_initializes_cannot_pass_the_session_cap_together() {
    let (_scratch, agent, server) = many_sessions_server("eager", "");
    for _ in 0..60 {
        server.initialize(&agent);
    }
    let opened: Vec<u16> = std::thread::scope(|scope| {
        let attempts: Vec<_> = (0..20)
            .map(|_| scope.spawn(|| server.try_initialize(&agent, "eager").status))
            .collect();
        attempts.into_iter().map(|a| a.join().unwrap()).collect()
    });
    let granted = opened.iter().filter(|s| **s == 200).count();
    assert_eq!(granted, 4, "{opened:?}");
    assert!(opened.iter().all(|s| *s == 200 || *s == 429), "{opened:?}");
}

#[test]
fn sessions_that_end_idle_free_their_slots() {
    let (_scratch, agent, server) =
        many_sessions_server("forgetful", r#""server": {"session_idle_secs": 1},"#);
    for _ in 0..64 {
        server.initialize(&agent);
    }
    let full = server.try_initialize(&agent, "forgetful");
    assert_eq!(full.status, 429, "{}", full.text());
    assert_eq!(full.json()["error"]["code"], "too_many_sessions");
    // rmcp ends them after a second of silence; their slots go with them at once (not
    // only when this server's own table forgets them, after twice the idle time).
    std::thread::sleep(std::time::Duration::from_millis(1_600));
    let session = server.initialize(&agent);
    let stats = server.tool(&agent, &session, 2, "get_memory_stats", json!({}));
    assert_eq!(stats["isError"], json!(false));
}

#[test]
fn malformed_messages_get_the_same_json_rpc_answers_over_http_and_stdio() {
    let scratch = Scratch::new();
    let agent = scratch.create_token("agent", Some("sloppy"));
    let server = Served::start(scratch.command());
    let garbage = server.send(
        Request::new("POST", "/mcp")
            .bearer(&agent)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream")
            .raw_body(b"{this is not json"),
    );
    assert_eq!(garbage.status, 400, "{}", garbage.text());
    assert_eq!(garbage.json()["error"]["code"], -32700);
    assert!(garbage.json()["id"].is_null());

    let session = server.initialize(&agent);
    let without_params = server.send(
        Request::new("POST", "/mcp")
            .bearer(&agent)
            .header("Mcp-Session-Id", &session)
            .header("MCP-Protocol-Version", "2025-06-18")
            .json(&json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call"})),
    );
    let over_http = without_params.json();
    assert_eq!(without_params.status, 400, "{over_http}");
    assert_eq!(over_http["error"]["code"], -32602, "{over_http}");
    assert_eq!(over_http["id"], 5);

    let mut mcp = scratch.mcp();
    mcp.send_line(r#"{"jsonrpc":"2.0","id":5,"method":"tools/call"}"#);
    let over_stdio = mcp.next_frame();
    assert_eq!(over_stdio["error"], over_http["error"]);
    mcp.send_line("{this is not json");
    assert_eq!(mcp.next_frame()["error"], garbage.json()["error"]);
    mcp.finish();
}

#[test]
fn no_caller_input_is_echoed_or_logged_in_full() {
    let scratch = Scratch::new();
    let readonly = scratch.create_token("readonly", Some("curious"));
    let log = scratch.dir.path().join("serve.log");
    let server = Served::start_logging(
        scratch.command(),
        0,
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let session = server.initialize(&readonly);
    let name = "n".repeat(1 << 20);
    for id in 2..5 {
        let answer = server.call_tool(&readonly, &session, id, &name, json!({}));
        let text = answer.text();
        assert!(text.len() < 2_000, "{} bytes answered", text.len());
        assert!(text.contains("unknown tool"), "{text}");
    }
    let bad_id = server.tool(
        &readonly,
        &session,
        6,
        "retrieve_memory",
        json!({"memory_id": "i".repeat(1 << 20)}),
    );
    assert!(bad_id.to_string().len() < 2_000);
    server.stop();
    let logged = std::fs::metadata(&log).unwrap().len();
    assert!(logged < 20_000, "the log grew by {logged} bytes");
}

#[test]
fn metadata_and_reasons_have_limits_that_name_the_field() {
    let scratch = Scratch::new();
    let agent = scratch.create_token("agent", Some("writer"));
    let server = Served::start(scratch.command());
    let session = server.initialize(&agent);
    let huge = server.tool(
        &agent,
        &session,
        2,
        "store_memory",
        json!({"content": "a fact", "metadata": {"blob": "m".repeat(3 << 20)}}),
    );
    assert_eq!(huge["isError"], json!(true));
    assert_eq!(huge["structuredContent"]["error"]["field"], "metadata");
    let stored = server.tool(
        &agent,
        &session,
        3,
        "store_memory",
        json!({"content": "a fact", "metadata": {"small": true}}),
    );
    let id = stored["structuredContent"]["id"].clone();
    let long_reason = server.tool(
        &agent,
        &session,
        4,
        "delete_memory",
        json!({"memory_id": id, "reason": "r".repeat(70_000)}),
    );
    assert_eq!(long_reason["isError"], json!(true));
    assert_eq!(long_reason["structuredContent"]["error"]["field"], "reason");
    let short_reason = server.tool(
        &agent,
        &session,
        5,
        "delete_memory",
        json!({"memory_id": id, "reason": "superseded"}),
    );
    assert_eq!(short_reason["isError"], json!(false));
}

#[test]
fn a_readonly_caller_never_writes_not_even_a_heartbeat() {
    let scratch = Scratch::new();
    let agent = scratch.create_token("agent", Some("worker"));
    let readonly = scratch.create_token("readonly", Some("dashboard"));
    let server = Served::start(scratch.command());
    // An agent named "watcher" registers, then stays quiet long enough for its next sign
    // of life to be due (its last one is moved back in the file).
    let as_agent = server.initialize_as(&agent, "watcher");
    let registered = server.tool(
        &agent,
        &as_agent,
        2,
        "register_agent",
        json!({"role": "sentinel_node"}),
    );
    assert_eq!(registered["isError"], json!(false), "{registered}");
    let agent_id = registered["structuredContent"]["agent"]["id"]
        .as_str()
        .or_else(|| registered["structuredContent"]["id"].as_str())
        .unwrap()
        .to_string();
    let make_due = || {
        let connection =
            rusqlite::Connection::open(scratch.data_dir().join("haivemind.sqlite3")).unwrap();
        connection
            .execute("UPDATE agents SET last_seen = 0", [])
            .unwrap();
    };
    // A task whose deadline passes: reading it must not expire it (a write) for readonly.
    let task = server.tool(
        &agent,
        &as_agent,
        3,
        "delegate_task",
        json!({"task_description": "rotate the certificates", "deadline": 1}),
    );
    assert_eq!(task["isError"], json!(false), "{task}");
    let task_id = task["structuredContent"]["task_id"]
        .as_str()
        .or_else(|| task["structuredContent"]["id"].as_str())
        .or_else(|| task["structuredContent"]["task"]["id"].as_str())
        .unwrap()
        .to_string();
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    make_due();
    let before = op_log_entries(&scratch);
    let as_readonly = server.initialize_as(&readonly, "watcher");
    for (id, tool, arguments) in [
        (2, "search_memories", json!({"query": "anything"})),
        (3, "get_agent_roster", json!({})),
        (
            4,
            "query_agent_knowledge",
            json!({"agent_id": agent_id, "query": "anything"}),
        ),
        (5, "get_task", json!({"task_id": task_id})),
    ] {
        let answer = server.tool(&readonly, &as_readonly, id, tool, arguments);
        assert_eq!(answer["isError"], json!(false), "{tool}: {answer}");
    }
    assert_eq!(op_log_entries(&scratch), before, "a readonly call wrote");
    // The same calls by the agent itself write a sign of life and the expiry: the checks
    // above can fail.
    server.tool(&agent, &as_agent, 4, "get_agent_roster", json!({}));
    assert_eq!(op_log_entries(&scratch), before + 1);
    let expired = server.tool(
        &agent,
        &as_agent,
        5,
        "get_task",
        json!({"task_id": task_id}),
    );
    assert_eq!(op_log_entries(&scratch), before + 2, "{expired}");
}

#[test]
fn the_data_directory_and_database_are_owner_only() {
    let scratch = Scratch::new();
    scratch.json(&["store", "a first fact"]);
    let data = scratch.data_dir();
    let database = data.join("haivemind.sqlite3");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&database), 0o600);
    // Files from an older version, open to everyone, are tightened at start, with a word
    // in the log.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log = scratch.dir.path().join("serve.log");
    let server = Served::start_logging(
        scratch.command(),
        0,
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&database), 0o600);
    for side in [
        "haivemind.sqlite3-wal",
        "haivemind.sqlite3-shm",
        "audit.log",
    ] {
        let path = data.join(side);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{side}");
        }
    }
    server.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("owner-only"), "{text}");
}

#[test]
fn a_websocket_subscriber_cannot_make_the_server_buffer_a_huge_message() {
    use tungstenite::client::IntoClientRequest;
    let scratch = Scratch::new();
    let readonly = scratch.create_token("readonly", Some("watcher"));
    let server = Served::start(scratch.command());
    let open = || {
        let mut request = format!("ws://{}/ws/watcher", server.sync_address)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "Authorization",
            format!("Bearer {readonly}").parse().unwrap(),
        );
        let stream = std::net::TcpStream::connect(&server.sync_address).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        tungstenite::client(request, stream)
            .map_err(|_| ())
            .unwrap()
            .0
    };
    let mut socket = open();
    let hello = socket.read().unwrap();
    assert!(hello.to_string().contains("hello"), "{hello}");
    let _ = socket.send(tungstenite::Message::Text("x".repeat(1 << 20).into()));
    let closed = loop {
        match socket.read() {
            Ok(tungstenite::Message::Close(_)) | Err(_) => break true,
            Ok(_) => continue,
        }
    };
    assert!(closed);
    // The server is unharmed: a new subscriber is answered.
    let mut again = open();
    again.read().unwrap();
    again
        .send(tungstenite::Message::Text(r#"{"type":"ping"}"#.into()))
        .unwrap();
    let pong = loop {
        let frame = again.read().unwrap().to_string();
        if frame.contains("pong") {
            break frame;
        }
    };
    assert!(pong.contains("pong"));
}

#[test]
fn a_peer_gets_each_refused_operation_back_with_its_reason_and_the_refusal_is_audited() {
    let scratch = Scratch::new();
    scratch.write_config(&json!({"security": {"api_token": FLEET_TOKEN}}).to_string());
    let private = scratch.json(&["store", "beta's own secret", "--scope", "private"]);
    let private_id = private["id"].as_str().unwrap().to_string();
    let server = Served::start(scratch.command());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let op = |op_id: &str, hlc: u64, record_id: &str, op: &str, payload: Value| {
        json!({"op_id": op_id, "hlc": hlc, "origin": "mallory", "record_kind": "memory",
               "record_id": record_id, "op": op, "payload": payload})
    };
    let fresh = "0190f5a0-0000-7000-8000-000000000001".to_string();
    let body = json!({"machine_id": "mallory", "ops": [
        op("overwrite", (now_ms + 1_000) << 16, &private_id, "update",
           json!({"id": private_id, "content": "taken over", "scope": "team-global"})),
        op("erase", 1, &private_id, "erase", json!({})),
        op("future", (4_102_444_800_000u64) << 16, &fresh, "create",
           json!({"id": fresh, "content": "from 2100"})),
        op("huge", now_ms << 16, &fresh, "create",
           json!({"id": fresh, "content": "x".repeat(70_000)})),
    ]});
    let answer = Request::new("POST", "/api/sync")
        .bearer(FLEET_TOKEN)
        .json(&body)
        .send(&server.sync_address);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let applied = answer.json()["applied"].clone();
    assert_eq!(applied["refused"], 4, "{applied}");
    let reported: Vec<(String, String)> = applied["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["op_id"].as_str().unwrap().to_string(),
                r["field"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        reported,
        [
            ("overwrite".to_string(), "record_id".to_string()),
            ("erase".into(), "record_id".into()),
            ("future".into(), "hlc".into()),
            ("huge".into(), "payload.content".into()),
        ]
    );
    server.stop();
    let kept = scratch.json(&["get", &private_id]);
    assert_eq!(kept["content"], "beta's own secret");
    let audit = std::fs::read_to_string(scratch.data_dir().join("audit.log")).unwrap();
    let refused: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "sync_refused")
        .collect();
    assert_eq!(refused.len(), 1, "{audit}");
    assert_eq!(refused[0]["refused"], 4);
    assert_eq!(refused[0]["peer_machine_id"], "mallory");
    assert!(!audit.contains("taken over") && !audit.contains(FLEET_TOKEN));
}
