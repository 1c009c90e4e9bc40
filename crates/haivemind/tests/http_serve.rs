//! `haivemind serve` over real HTTP on loopback: every refusal the security rules promise,
//! roles, sessions that expire or vanish with a restart, TLS with a throw-away
//! certificate, and an audit log that records failures and never a token.

mod common;

use std::io::Read;
use std::time::Duration;

use common::Scratch;
use common::http::{Request, Served, throwaway_certificate, tls_client};
use serde_json::{Value, json};

fn token(scratch: &Scratch, role: &str, name: &str) -> String {
    scratch.create_token(role, Some(name))
}

fn audit_lines(scratch: &Scratch) -> Vec<Value> {
    let text = std::fs::read_to_string(scratch.data_dir().join("audit.log")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
        .collect()
}

fn initialize_body() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
           "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                      "clientInfo": {"name": "t", "version": "1"}}})
}

#[test]
fn tokens_roles_and_every_refusal_on_real_http() {
    let scratch = Scratch::new();
    scratch.write_config(
        r#"{"server": {"max_body_bytes": 65536},
            "security": {"rate_limit": {"requests_per_minute": 6000, "burst": 1000}}}"#,
    );
    let agent = token(&scratch, "agent", "builder");
    let readonly = token(&scratch, "readonly", "dashboard");
    let third = token(&scratch, "agent", "third");
    let server = Served::start(scratch.command());

    // /health needs no token.
    let health = server.send(Request::new("GET", "/health"));
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(health.json()["machine_id"], "e2e-machine");
    let sync_health = Request::new("GET", "/health").send(&server.sync_address);
    assert_eq!(sync_health.status, 200);

    // No token, a malformed header, an unknown token: 401 with a Bearer challenge.
    let none = server.send(Request::new("POST", "/mcp").json(&initialize_body()));
    assert_eq!(none.status, 401);
    assert!(
        none.header("www-authenticate")
            .unwrap()
            .starts_with("Bearer")
    );
    let basic = server.send(
        Request::new("POST", "/mcp")
            .header("Authorization", "Basic dXNlcjpwYXNz")
            .json(&initialize_body()),
    );
    assert_eq!(basic.status, 401);
    let wrong = server.send(
        Request::new("POST", "/mcp")
            .bearer("hv_not-a-real-token")
            .json(&initialize_body()),
    );
    assert_eq!(wrong.status, 401);
    assert!(
        wrong
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    assert_eq!(wrong.json()["error"]["code"], "unknown_token");
    let sse_without = server.send(Request::new("GET", "/sse"));
    assert_eq!(sse_without.status, 401);

    // A foreign Origin or a Host that is not ours: 403, even with a good token.
    let origin = server.send(
        Request::new("POST", "/mcp")
            .bearer(&agent)
            .header("Origin", "https://evil.example.com")
            .json(&initialize_body()),
    );
    assert_eq!(origin.status, 403);
    assert_eq!(origin.json()["error"]["code"], "origin_not_allowed");
    let host = server.send(
        Request::new("POST", "/mcp")
            .bearer(&agent)
            .header("Host", "rebind.evil.example.com:8900")
            .json(&initialize_body()),
    );
    assert_eq!(host.status, 403);
    assert_eq!(host.json()["error"]["code"], "host_not_allowed");

    // A body past server.max_body_bytes: 413, declared or not.
    let mut big = Request::new("POST", "/mcp")
        .bearer(&agent)
        .json(&initialize_body());
    big.body = vec![b' '; 70_000];
    assert_eq!(server.send(big).status, 413);

    // The agent token works end to end.
    let session = server.initialize(&agent);
    let stored = server.tool(
        &agent,
        &session,
        2,
        "store_memory",
        json!({"content": "proxy2 nginx worker_connections raised to 4096"}),
    );
    assert_eq!(stored["isError"], json!(false), "{stored}");
    let secret = server.tool(&agent, &session, 3, "store_memory",
        json!({"content": "the vault unseal key share lives on proxy2", "confidentiality_level": "confidential"}));
    let secret_id = secret["structuredContent"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Readonly: reads, but never writes and never sees confidential memories.
    let ro = server.initialize(&readonly);
    let refused = server.tool(&readonly, &ro, 4, "store_memory", json!({"content": "x"}));
    assert_eq!(refused["isError"], json!(true));
    assert_eq!(refused["structuredContent"]["error"]["code"], "forbidden");
    assert!(
        refused["structuredContent"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("readonly")
    );
    let found = server.tool(
        &readonly,
        &ro,
        5,
        "search_memories",
        json!({"query": "proxy2", "semantic": false}),
    );
    let contents: Vec<&str> = found["structuredContent"]["memories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["proxy2 nginx worker_connections raised to 4096"]);
    let hidden = server.tool(
        &readonly,
        &ro,
        6,
        "retrieve_memory",
        json!({"memory_id": secret_id}),
    );
    assert_eq!(hidden["isError"], json!(true));
    assert!(
        hidden["structuredContent"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("role readonly")
    );
    // The agent still sees it; an agent may not erase.
    let seen = server.tool(
        &agent,
        &session,
        7,
        "retrieve_memory",
        json!({"memory_id": secret_id}),
    );
    assert_eq!(seen["isError"], json!(false));
    let erase = server.tool(
        &agent,
        &session,
        8,
        "delete_memory",
        json!({"memory_id": secret_id, "hard_delete": true, "reason": "rotate"}),
    );
    assert_eq!(erase["isError"], json!(true));
    let soft = server.tool(
        &agent,
        &session,
        9,
        "delete_memory",
        json!({"memory_id": secret_id, "reason": "rotated the unseal key"}),
    );
    assert_eq!(soft["isError"], json!(false), "{soft}");

    let ro_stats = server.tool(&readonly, &ro, 25, "get_memory_stats", json!({}));
    assert!(ro_stats["structuredContent"].get("by_user").is_none());
    let agent_stats = server.tool(&agent, &session, 26, "get_memory_stats", json!({}));
    assert!(agent_stats["structuredContent"].get("by_user").is_some());

    // A memory that was pii once keeps those values in its history: readonly may read the
    // memory as it is now, but not the history.
    let once = server.tool(&agent, &session, 20, "store_memory",
        json!({"content": "ssh key passphrase for proxy2 is hunter2", "confidentiality_level": "pii"}));
    let once_id = once["structuredContent"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let redacted = server.tool(&agent, &session, 21, "update_memory",
        json!({"memory_id": once_id, "content": "proxy2 ssh key rotated", "confidentiality_level": "normal"}));
    assert_eq!(redacted["isError"], json!(false), "{redacted}");
    let now = server.tool(
        &readonly,
        &ro,
        22,
        "retrieve_memory",
        json!({"memory_id": once_id}),
    );
    assert_eq!(
        now["structuredContent"]["content"],
        "proxy2 ssh key rotated"
    );
    let history = server.tool(
        &readonly,
        &ro,
        23,
        "get_memory_history",
        json!({"memory_id": once_id}),
    );
    assert_eq!(history["isError"], json!(true), "{history}");
    assert!(!history.to_string().contains("hunter2"));
    let agent_history = server.tool(
        &agent,
        &session,
        24,
        "get_memory_history",
        json!({"memory_id": once_id}),
    );
    assert!(agent_history.to_string().contains("hunter2"));

    // A revoked token is refused within a second, without a restart.
    let revoked = scratch.run(&["token", "revoke", "dashboard"]);
    assert!(revoked.status.success());
    std::thread::sleep(Duration::from_millis(1200));
    let after = server.call_tool(
        &readonly,
        &ro,
        10,
        "search_memories",
        json!({"query": "proxy2"}),
    );
    assert_eq!(after.status, 401);

    // A session belongs to the token that opened it.
    let stolen = server.call_tool(
        &third,
        &session,
        12,
        "search_memories",
        json!({"query": "x"}),
    );
    assert_eq!(stolen.status, 403);
    assert_eq!(stolen.json()["error"]["code"], "session_of_another_token");

    // An unknown session: 404, the status that makes a client initialise again.
    let gone = server.call_tool(
        &agent,
        "no-such-session",
        11,
        "search_memories",
        json!({"query": "x"}),
    );
    assert_eq!(gone.status, 404);

    // The audit log has the failures and the deletion, and not one token.
    let audit = audit_lines(&scratch);
    let events: Vec<&str> = audit.iter().map(|e| e["event"].as_str().unwrap()).collect();
    for expected in [
        "token_created",
        "token_used",
        "auth_failed",
        "request_denied",
        "access_denied",
        "memory_deleted",
        "token_revoked",
    ] {
        assert!(events.contains(&expected), "no {expected} in {events:?}");
    }
    assert!(
        audit
            .iter()
            .any(|e| e["event"] == "request_denied" && e["reason"] == "body_too_large")
    );
    let reasons: Vec<&str> = audit
        .iter()
        .filter(|e| e["event"] == "auth_failed")
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"missing_token") && reasons.contains(&"unknown_token"),
        "{reasons:?}"
    );
    let deletion = audit
        .iter()
        .find(|e| e["event"] == "memory_deleted")
        .unwrap();
    assert_eq!(deletion["memory_id"], json!(secret_id));
    assert_eq!(deletion["token_name"], "builder");
    let whole = std::fs::read_to_string(scratch.data_dir().join("audit.log")).unwrap();
    for secret_text in [&agent, &readonly, &"hv_not-a-real-token".to_string()] {
        assert!(
            !whole.contains(secret_text.as_str()),
            "a token reached the audit log"
        );
    }
    assert!(!whole.contains("vault unseal") && !whole.contains("rotated the unseal key"));
    server.stop();
}

#[test]
fn rate_limit_answers_429_with_retry_after() {
    let scratch = Scratch::new();
    scratch
        .write_config(r#"{"security": {"rate_limit": {"requests_per_minute": 30, "burst": 3}}}"#);
    let agent = token(&scratch, "agent", "chatty");
    let other = token(&scratch, "agent", "quiet");
    let status = scratch.json(&["status"]);
    assert_eq!(status["serve"]["live_tokens"], 2);
    assert!(
        status["serve"]["audit_log"]
            .as_str()
            .unwrap()
            .ends_with("audit.log")
    );
    let listed = scratch.json(&["token", "list"]);
    assert_eq!(listed["total"], 2);
    assert!(
        !listed.to_string().contains(&agent),
        "token list never shows a secret"
    );
    let server = Served::start(scratch.command());
    let statuses: Vec<u16> = (0..6)
        .map(|_| {
            server
                .send(Request::new("POST", "/messages?session_id=x").bearer(&agent))
                .status
        })
        .collect();
    assert_eq!(&statuses[..3], &[404, 404, 404], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    let limited = server.send(Request::new("POST", "/messages?session_id=x").bearer(&agent));
    assert_eq!(limited.status, 429);
    let wait: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    // Limits are per token.
    assert_eq!(
        server
            .send(Request::new("POST", "/messages?session_id=x").bearer(&other))
            .status,
        404
    );
    assert!(
        audit_lines(&scratch)
            .iter()
            .any(|e| e["event"] == "rate_limited" && e["token_name"] == "chatty")
    );
    // Guessing tokens is limited per address, and so are the audit lines it writes.
    let guesses: Vec<u16> = (0..40)
        .map(|i| {
            server
                .send(Request::new("POST", "/mcp").bearer(&format!("hv_guess{i}")))
                .status
        })
        .collect();
    assert!(guesses[..30].iter().all(|s| *s == 401), "{guesses:?}");
    assert!(guesses[30..].iter().all(|s| *s == 429), "{guesses:?}");
    let failures = audit_lines(&scratch)
        .iter()
        .filter(|e| e["event"] == "auth_failed")
        .count();
    assert!(
        (30..=31).contains(&failures),
        "{failures} auth_failed lines"
    );
    // A good token from the same address still works.
    assert_eq!(
        server
            .send(Request::new("POST", "/messages?session_id=x").bearer(&other))
            .status,
        404
    );
}

#[test]
fn a_foreign_network_is_refused_before_anything_else() {
    let scratch = Scratch::new();
    scratch.write_config(r#"{"security": {"allowed_networks": ["10.0.0.0/8", "tailscale"]}}"#);
    let agent = token(&scratch, "agent", "a");
    let server = Served::start(scratch.command());
    for request in [
        Request::new("GET", "/health"),
        Request::new("POST", "/mcp")
            .bearer(&agent)
            .json(&initialize_body()),
        Request::new("GET", "/sse").bearer(&agent),
    ] {
        let response = server.send(request);
        assert_eq!(response.status, 403);
        assert_eq!(response.json()["error"]["code"], "network_not_allowed");
    }
    let audit = audit_lines(&scratch);
    assert!(
        audit
            .iter()
            .any(|e| e["event"] == "network_denied" && e["peer"] == "127.0.0.1")
    );
}

#[test]
fn idle_sessions_expire_and_restarts_lose_sessions_with_404() {
    let scratch = Scratch::new();
    scratch.write_config(r#"{"server": {"session_idle_secs": 1}}"#);
    let agent = token(&scratch, "agent", "a");
    let server = Served::start(scratch.command());
    let idle = server.initialize(&agent);
    let kept = server.initialize(&agent);
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(400));
        let alive = server.call_tool(&agent, &kept, 2, "get_memory_stats", json!({}));
        assert_eq!(alive.status, 200, "a session in use stays alive");
    }
    let expired = server.call_tool(&agent, &idle, 2, "get_memory_stats", json!({}));
    assert_eq!(expired.status, 404, "{}", expired.text());
    // A client that ends its session gets 204, and the session is gone.
    let ended = server.initialize(&agent);
    let deleted = server.send(
        Request::new("DELETE", "/mcp")
            .bearer(&agent)
            .header("Mcp-Session-Id", &ended)
            .header("MCP-Protocol-Version", "2025-06-18"),
    );
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    let after = server.call_tool(&agent, &ended, 3, "get_memory_stats", json!({}));
    assert_eq!(after.status, 404);
    server.stop();

    let restarted = Served::start(scratch.command());
    let lost = restarted.call_tool(&agent, &kept, 3, "get_memory_stats", json!({}));
    assert_eq!(lost.status, 404);
    // Initialising again just works.
    let fresh = restarted.initialize(&agent);
    let stats = restarted.tool(&agent, &fresh, 4, "get_memory_stats", json!({}));
    assert_eq!(stats["isError"], json!(false));
}

#[test]
fn legacy_sse_session_round_trip_and_ownership() {
    let scratch = Scratch::new();
    let agent = token(&scratch, "agent", "a");
    let intruder = token(&scratch, "agent", "b");
    let server = Served::start(scratch.command());
    let mut stream = std::net::TcpStream::connect(&server.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    use std::io::Write;
    write!(stream, "GET /sse HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {agent}\r\nAccept: text/event-stream\r\n\r\n", server.address).unwrap();
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    // Read the head and the endpoint event.
    let endpoint = loop {
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "stream closed; saw {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
        if let Some(line) = seen.lines().find_map(|l| l.strip_prefix("data: /messages")) {
            break format!("/messages{}", line.trim());
        }
    };
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("event: endpoint"));

    let post = |token: &str, body: Value| {
        server.send(Request::new("POST", &endpoint).bearer(token).json(&body))
    };
    assert_eq!(post(&agent, initialize_body()).status, 202);
    assert_eq!(
        post(
            &agent,
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
        )
        .status,
        202
    );
    assert_eq!(
        post(
            &agent,
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "store_memory", "arguments": {"content": "sse shim stored this"}}})
        )
        .status,
        202
    );
    // Another token may not post into this session.
    assert_eq!(
        post(
            &intruder,
            json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
        )
        .status,
        403
    );
    let answer = loop {
        if let Some(message) = seen
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find(|m| m["id"] == 2)
        {
            break message;
        }
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "stream closed; saw {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
    };
    assert_eq!(
        answer["result"]["structuredContent"]["content"],
        "sse shim stored this"
    );
    assert!(
        !seen.contains("\"id\":3"),
        "the intruder's request must not run"
    );
    drop(stream);
    std::thread::sleep(Duration::from_millis(300));
    let closed = post(
        &agent,
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list"}),
    );
    assert_eq!(closed.status, 404, "a closed stream ends its session");
}

#[test]
fn tls_with_a_throwaway_certificate() {
    let scratch = Scratch::new();
    let (cert, key, der) = throwaway_certificate(scratch.dir.path());
    scratch.write_config(
        &json!({"security": {"tls": {"cert_file": cert, "key_file": key}}}).to_string(),
    );
    let agent = token(&scratch, "agent", "a");
    let server = Served::start(scratch.command());
    assert!(server.url.starts_with("https://"), "{}", server.url);

    let health = Request::new("GET", "/health")
        .send_on(tls_client(&server.address, der.clone()), &server.address);
    assert_eq!(health.status, 200);
    let refused = Request::new("POST", "/mcp")
        .json(&initialize_body())
        .send_on(tls_client(&server.address, der.clone()), &server.address);
    assert_eq!(refused.status, 401);
    let initialized = Request::new("POST", "/mcp")
        .bearer(&agent)
        .json(&initialize_body())
        .send_on(tls_client(&server.address, der), &server.address);
    assert_eq!(initialized.status, 200);
    assert_eq!(
        initialized.rpc(1)["result"]["serverInfo"]["name"],
        "haivemind"
    );

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = std::net::TcpStream::connect(&server.address).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    use std::io::Write;
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/1.1 200"));
}

#[test]
fn bad_security_settings_stop_start_up_with_the_key_named() {
    let scratch = Scratch::new();
    for (config, key) in [
        (
            r#"{"security": {"allowed_networks": ["10.0.0.0/40"]}}"#,
            "security.allowed_networks[0]",
        ),
        (
            r#"{"security": {"tls": {"cert_file": "/nonexistent/cert.pem"}}}"#,
            "security.tls.key_file",
        ),
        (
            r#"{"security": {"require_auth": false}, "server": {"host": "0.0.0.0"}}"#,
            "security.require_auth",
        ),
        (
            r#"{"security": {"tls": {"cert_file": "/nonexistent/c.pem", "key_file": "/nonexistent/k.pem"}}}"#,
            "/nonexistent/c.pem",
        ),
    ] {
        scratch.write_config(config);
        let output = scratch.run(&["serve", "--mcp-port", "0", "--sync-port", "0"]);
        assert!(!output.status.success(), "{config}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "{config}: {stderr}");
    }
}

#[test]
fn a_refused_request_with_an_unread_body_closes_its_connection() {
    // The guards refuse before reading the body, so the connection cannot carry another
    // request; the client must be told rather than find out mid-request. (A keep-alive
    // request by hand: the test client asks for `Connection: close` itself.)
    use std::io::{Read, Write};
    let scratch = Scratch::new();
    let server = Served::start(scratch.command());
    let head_of = |request: &str| {
        let mut stream = std::net::TcpStream::connect(&server.address).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut buffer = vec![0u8; 4096];
        let read = stream.read(&mut buffer).unwrap();
        String::from_utf8_lossy(&buffer[..read]).to_ascii_lowercase()
    };
    let body = initialize_body().to_string();
    let refused = head_of(&format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer hv_wrong\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.address,
        body.len()
    ));
    assert!(refused.starts_with("http/1.1 401"), "{refused}");
    assert!(refused.contains("connection: close"), "{refused}");
    let kept = head_of(&format!(
        "GET /health HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.address
    ));
    assert!(kept.starts_with("http/1.1 200"), "{kept}");
    assert!(!kept.contains("connection: close"), "{kept}");
}
