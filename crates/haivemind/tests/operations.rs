//! Running a node for years: `haivemind backup` while `serve` takes writes and `restore`
//! into a fresh data directory; `haivemind doctor` finding what an operator must fix.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::Scratch;
use common::http::{Request, Served};
use serde_json::{Value, json};

fn json_of(output: std::process::Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn a_backup_taken_while_serving_restores_into_an_empty_data_directory() {
    let scratch = Scratch::new();
    let token = scratch.create_token("agent", Some("writer"));
    let server = Arc::new(Served::start(scratch.command()));
    let writing = Arc::new(AtomicBool::new(true));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (server, writing, written, token) = (
            Arc::clone(&server),
            Arc::clone(&writing),
            Arc::clone(&written),
            token.clone(),
        );
        std::thread::spawn(move || {
            while writing.load(Ordering::Relaxed) {
                let n = written.load(Ordering::Relaxed);
                let answer = server.send(
                    Request::new("POST", "/api/v1/memories")
                        .bearer(&token)
                        .json(&json!({"content": format!("written while backing up, number {n}")})),
                );
                assert_eq!(answer.status, 200, "{}", answer.text());
                written.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while written.load(Ordering::Relaxed) < 20 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let file = scratch.dir.path().join("node.hvbackup");
    let manifest = json_of(scratch.run(&["--json", "backup", file.to_str().unwrap()]));
    writing.store(false, Ordering::Relaxed);
    writer.join().unwrap();
    let total = written.load(Ordering::Relaxed) as u64;
    let memories = manifest["memories"].as_u64().unwrap();
    assert!(memories >= 20 && memories <= total, "{manifest} of {total}");
    assert_eq!(manifest["machine_id"], "e2e-machine");
    assert!(manifest["state_digest"].as_str().unwrap().len() >= 32);

    // Another machine (an empty data directory) gets exactly the backup.
    let fresh = Scratch::new();
    let restored = json_of(fresh.run(&["--json", "restore", file.to_str().unwrap()]));
    assert_eq!(restored["state_digest"], manifest["state_digest"]);
    let stats = json_of(fresh.run(&["--json", "stats"]));
    assert_eq!(stats["total_memories"].as_u64(), Some(memories));
    let again = fresh.run(&["restore", file.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let forced = json_of(fresh.run(&["--json", "restore", "--force", file.to_str().unwrap()]));
    assert_eq!(forced["memories"], manifest["memories"]);
    // A backup is never written over an existing file.
    let over = scratch.run(&["backup", file.to_str().unwrap()]);
    assert_eq!(
        over.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&over.stderr)
    );
    drop(server);
}

fn checks(output: &std::process::Output) -> Vec<Value> {
    let value: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    value["checks"].as_array().unwrap().clone()
}

fn status_of<'a>(checks: &'a [Value], name: &str) -> Vec<&'a str> {
    checks
        .iter()
        .filter(|c| c["name"] == name)
        .map(|c| c["status"].as_str().unwrap())
        .collect()
}

#[test]
fn doctor_reports_each_check_with_a_fix_and_fails_on_what_must_be_fixed() {
    // A new node: nothing made yet, no model, no peers. Warnings, no failure.
    let scratch = Scratch::new();
    let (mcp_port, sync_port) = (common::http::free_port(), common::http::free_port());
    scratch.write_config(
        &json!({"server": {"mcp_port": mcp_port, "sync_port": sync_port}}).to_string(),
    );
    let output = scratch.run(&["--json", "doctor"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let found = checks(&output);
    for name in [
        "config",
        "data_dir",
        "database",
        "model",
        "mcp_port",
        "sync_port",
        "tls",
        "peers",
        "disk",
        "wal",
    ] {
        assert!(!status_of(&found, name).is_empty(), "{name} in {found:?}");
    }
    assert_eq!(status_of(&found, "data_dir"), ["warn"]);
    assert_eq!(status_of(&found, "mcp_port"), ["ok"]);
    assert!(
        found
            .iter()
            .all(|c| c["status"] == "ok" || c["fix"].is_string()),
        "{found:?}"
    );

    // A port another program holds, an expired certificate, a damaged database: failures.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", mcp_port)).unwrap();
    let params = {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        params
    };
    let key = rcgen::KeyPair::generate().unwrap();
    let expired = params.self_signed(&key).unwrap();
    let cert = scratch.dir.path().join("expired.pem");
    let key_file = scratch.dir.path().join("key.pem");
    std::fs::write(&cert, expired.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    scratch.write_config(
        &json!({"server": {"mcp_port": mcp_port, "sync_port": sync_port},
                "security": {"tls": {"cert_file": cert, "key_file": key_file}}})
        .to_string(),
    );
    std::fs::create_dir_all(scratch.data_dir()).unwrap();
    std::fs::write(
        scratch.data_dir().join("haivemind.sqlite3"),
        b"SQLite format 3\0 and then garbage, not a database page in sight..........",
    )
    .unwrap();
    let output = scratch.run(&["--json", "doctor"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "any failed check fails the command"
    );
    let found = checks(&output);
    assert_eq!(status_of(&found, "mcp_port"), ["fail"], "{found:?}");
    assert_eq!(status_of(&found, "tls"), ["fail"], "{found:?}");
    assert_eq!(status_of(&found, "database"), ["fail"], "{found:?}");
    let tls = found.iter().find(|c| c["name"] == "tls").unwrap();
    assert!(
        tls["detail"]
            .as_str()
            .unwrap()
            .contains("expired on 2020-01-01"),
        "{tls}"
    );
    drop(squatter);

    // A config that does not load is itself the failed check, named.
    scratch.write_config(r#"{"server": {"mcp_port": "eighty"}}"#);
    let output = scratch.run(&["doctor"]);
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("fail") && text.contains("server.mcp_port"),
        "{text}"
    );
}

#[test]
fn doctor_finds_a_running_server_and_its_peer_with_version_and_clock() {
    let peer = Scratch::new();
    let peer_server = Served::start(peer.command());
    let scratch = Scratch::new();
    let (mcp_port, sync_port) = (common::http::free_port(), common::http::free_port());
    scratch.write_config(
        &json!({
            "server": {"mcp_port": mcp_port, "sync_port": sync_port},
            "security": {"api_token": "fleet-token-0123456789abcdef"},
            "sync": {"discovery": {"machines": [{"machine_id": "peer-node", "address": peer_server.sync_address}]}},
        })
        .to_string(),
    );
    let server = Served::start_as_configured(scratch.command());
    let output = scratch.run(&["--json", "doctor"]);
    let found = checks(&output);
    let mcp = found.iter().find(|c| c["name"] == "mcp_port").unwrap();
    assert_eq!(mcp["status"], "ok", "{found:?}");
    assert!(
        mcp["detail"]
            .as_str()
            .unwrap()
            .contains("haivemind serve's"),
        "{mcp}"
    );
    let peer_check = found
        .iter()
        .find(|c| c["name"] == "peer peer-node")
        .unwrap();
    assert_eq!(peer_check["status"], "ok", "{peer_check}");
    assert!(
        peer_check["detail"]
            .as_str()
            .unwrap()
            .contains("clock offset"),
        "{peer_check}"
    );
    drop(server);
    drop(peer_server);
}

/// `status` and `peers` without a token say that a server is running and what to set,
/// rather than that no server answered; `token list` never shows a use before creation.
#[test]
fn status_without_a_token_names_the_running_server_and_what_to_set() {
    let scratch = Scratch::new();
    let (mcp_port, sync_port) = (common::http::free_port(), common::http::free_port());
    scratch.write_config(
        &json!({"server": {"mcp_port": mcp_port, "sync_port": sync_port}}).to_string(),
    );
    let token = scratch.create_token("agent", Some("first"));
    let server = Served::start_as_configured(scratch.command());
    for command in ["status", "peers"] {
        let output = scratch.run(&[command]);
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            text.contains("is serving on") && text.contains("HAIVEMIND_TOKEN"),
            "{command}: {text}"
        );
    }
    let project = scratch.dir.path().join("project");
    std::fs::create_dir_all(project.join(".git")).unwrap();
    let mut install = scratch.command();
    install.current_dir(&project).arg("install");
    let installed = install.output().unwrap();
    let said = String::from_utf8_lossy(&installed.stdout);
    assert!(
        said.contains(&format!("install --remote http://127.0.0.1:{mcp_port}")),
        "install mentions the running server: {said}"
    );
    let used = server.send(Request::new("GET", "/api/v1/me").bearer(&token));
    assert_eq!(used.status, 200);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let listed = json_of(scratch.run(&["--json", "token", "list"]));
    let first = &listed["tokens"][0];
    let created = first["created_at"].as_str().unwrap();
    let last_used = first["last_used_at"].as_str().expect("noted");
    assert!(last_used >= created, "{first}");
    drop(server);
}

/// The shipped alert rules pass `promtool check rules`, the Grafana dashboard is valid
/// JSON, and every metric either names is one a real server exports.
#[test]
fn the_alert_rules_and_the_dashboard_name_metrics_that_exist() {
    let scratch = Scratch::new();
    let token = scratch.create_token("readonly", Some("prometheus"));
    let server = Served::start(scratch.command());
    let metrics = Request::new("GET", "/metrics")
        .bearer(&token)
        .send(&server.sync_address);
    assert_eq!(metrics.status, 200, "{}", metrics.text());
    let families: Vec<String> = metrics
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    for needed in [
        "haivemind_embedding_duration_seconds",
        "haivemind_sync_round_duration_seconds",
        "haivemind_tool_duration_seconds",
    ] {
        assert!(
            families.iter().any(|f| f == needed),
            "{needed} in {families:?}"
        );
    }
    let root = common::python::workspace_root().join("docs/ops");
    let rules = root.join("prometheus-alerts.yml");
    let checked = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool (Debian's prometheus package; scripts/test installs it)");
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut expressions: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(expressions.len() >= 10);
    expressions.push(std::fs::read_to_string(&rules).unwrap());
    for text in &expressions {
        let mut rest = text.as_str();
        while let Some(at) = rest.find("haivemind_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            if name == "haivemind" || name.ends_with('_') {
                continue;
            }
            assert!(
                families.iter().any(|f| f == family),
                "{name} (in {}) is not a metric /metrics exports",
                haivemind_core::error::excerpt(text)
            );
        }
    }
}

/// `haivemind reload` (SIGHUP) applies new token files and rate limits in place while an
/// open MCP session goes on; a config that fails is refused with the reason and the
/// running one stays.
#[test]
fn reload_applies_tokens_and_limits_in_place_and_refuses_a_broken_config() {
    let scratch = Scratch::new();
    let (mcp_port, sync_port) = (common::http::free_port(), common::http::free_port());
    let old_file = scratch.dir.path().join("old.token");
    let new_file = scratch.dir.path().join("new.token");
    std::fs::write(&old_file, "hv_old_token_from_a_file_0123456789").unwrap();
    std::fs::write(&new_file, "hv_new_token_from_a_file_0123456789").unwrap();
    let config = |file: &std::path::Path, burst: u32, peers: &[&str], level: &str| {
        let machines: Vec<Value> = peers
            .iter()
            .map(|p| json!({"machine_id": p, "address": "127.0.0.1:1"}))
            .collect();
        json!({
            "server": {"mcp_port": mcp_port, "sync_port": sync_port},
            "security": {"token_files": [{"path": file, "role": "agent"}],
                         "api_token": "fleet-token-0123456789abcdef",
                         "rate_limit": {"requests_per_minute": 60, "burst": burst}},
            "sync": {"discovery": {"machines": machines}},
            "logging": {"level": level},
        })
        .to_string()
    };
    scratch.write_config(&config(&old_file, 1000, &["alpha"], "warn"));
    let stored = scratch.create_token("agent", Some("stays"));
    // A stand-in `tailscale` on the server's PATH that prints the tailnet of tailnet.json.
    let bin = scratch.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let tailnet = scratch.dir.path().join("tailnet.json");
    std::fs::write(&tailnet, r#"{"Peer": {}}"#).unwrap();
    let stub = bin.join("tailscale");
    std::fs::write(&stub, format!("#!/bin/sh\ncat '{}'\n", tailnet.display())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut command = scratch.command();
    command.env(
        "PATH",
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    let server = Served::start_as_configured(command);
    let session = server.initialize(&stored);
    let me = |token: &str| {
        server
            .send(Request::new("GET", "/api/v1/me").bearer(token))
            .status
    };
    assert_eq!(me("hv_old_token_from_a_file_0123456789"), 200);
    assert_eq!(me("hv_new_token_from_a_file_0123456789"), 401);

    scratch.write_config(&config(&new_file, 3, &["alpha", "beta"], "error"));
    let outcome = json_of(scratch.run(&["--json", "reload"]));
    assert_eq!(outcome["outcome"], "applied", "{outcome}");
    let applied = outcome["applied"].to_string();
    for expected in [
        "rate limit",
        "replication peers: alpha, beta",
        "log level error",
    ] {
        assert!(applied.contains(expected), "{expected} in {outcome}");
    }
    assert_eq!(
        me("hv_old_token_from_a_file_0123456789"),
        401,
        "the old file's token is gone"
    );
    // The new limit: three at once for this token, then 429.
    let statuses: Vec<u16> = (0..4)
        .map(|_| me("hv_new_token_from_a_file_0123456789"))
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429], "{statuses:?}");
    // The session opened before the reload still answers.
    let listed = server.tool(&stored, &session, 9, "get_memory_stats", json!({}));
    assert_eq!(listed["isError"], false, "{listed}");

    // A machine that joined the tailnet is found by the next reload, config unchanged.
    std::fs::write(
        &tailnet,
        json!({"Peer": {"nodekey:1": {"HostName": "delta", "TailscaleIPs": ["127.0.0.1"], "Online": true}}})
            .to_string(),
    )
    .unwrap();
    let outcome = json_of(scratch.run(&["--json", "reload"]));
    assert!(
        outcome["applied"]
            .to_string()
            .contains("replication peers: alpha, beta, delta"),
        "{outcome}"
    );

    // A token file that cannot be read: refused, nothing changes.
    scratch.write_config(&config(
        &scratch.dir.path().join("missing.token"),
        3,
        &["alpha", "beta"],
        "error",
    ));
    let refused = scratch.run(&["reload"]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("token_files[0]") && why.contains("keeps the running one"),
        "{why}"
    );
    std::thread::sleep(std::time::Duration::from_millis(3100));
    assert_eq!(
        me("hv_new_token_from_a_file_0123456789"),
        200,
        "the running config stayed"
    );
    // A config that does not parse: refused too.
    scratch.write_config("{ not json");
    let refused = scratch.run(&["reload"]);
    assert!(!refused.status.success());
    drop(server);
}

/// Whether a TLS handshake with `address` succeeds when only `certificate_der` is trusted.
fn tls_handshake(address: &str, certificate_der: &[u8]) -> Result<(), std::io::Error> {
    let mut stream = common::http::tls_client(address, certificate_der.to_vec());
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(())
}

/// `haivemind reload` re-reads the certificate files: new connections get the new
/// certificate; a key that does not load is refused and the running certificate stays.
#[test]
fn reload_swaps_the_tls_certificate_for_new_connections() {
    let scratch = Scratch::new();
    let make = |name: &str| {
        let dir = scratch.dir.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        common::http::throwaway_certificate(&dir)
    };
    let (cert_a, key_a, der_a) = make("a");
    let (cert_b, key_b, der_b) = make("b");
    let (cert, key) = (
        scratch.dir.path().join("cert.pem"),
        scratch.dir.path().join("key.pem"),
    );
    std::fs::copy(&cert_a, &cert).unwrap();
    std::fs::copy(&key_a, &key).unwrap();
    let (mcp_port, sync_port) = (common::http::free_port(), common::http::free_port());
    scratch.write_config(
        &json!({
            "server": {"mcp_port": mcp_port, "sync_port": sync_port},
            "security": {"tls": {"cert_file": cert, "key_file": key}},
        })
        .to_string(),
    );
    let server = Served::start_as_configured(scratch.command());
    assert!(server.url.starts_with("https://"), "{}", server.url);
    tls_handshake(&server.address, &der_a).expect("the first certificate is served");
    assert!(tls_handshake(&server.address, &der_b).is_err());

    std::fs::copy(&cert_b, &cert).unwrap();
    std::fs::copy(&key_b, &key).unwrap();
    let outcome = json_of(scratch.run(&["--json", "reload"]));
    assert_eq!(outcome["outcome"], "applied", "{outcome}");
    assert!(
        outcome["applied"].to_string().contains("TLS certificate"),
        "{outcome}"
    );
    tls_handshake(&server.address, &der_b).expect("new connections get the new certificate");
    assert!(
        tls_handshake(&server.address, &der_a).is_err(),
        "the old certificate is no longer served"
    );

    std::fs::write(&key, "not a key").unwrap();
    let refused = scratch.run(&["reload"]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("keeps the running one"), "{why}");
    tls_handshake(&server.address, &der_b).expect("the running certificate stays");
    let health = Request::new("GET", "/health").send_on(
        common::http::tls_client(&server.address, der_b.clone()),
        &server.address,
    );
    assert_eq!(health.status, 200);
}
