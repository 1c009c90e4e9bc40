//! OAuth 2.1 sign-in for remote MCP clients, end to end: the official MCP Python SDK's own
//! OAuth client provider (`mcp.client.auth.OAuthClientProvider`) discovers, registers,
//! passes the consent page (played by tests/interop/mcp_oauth_client.py), exchanges its
//! PKCE code, refreshes, and stores memories through a real `haivemind serve`; then the
//! script breaks every rule by hand (wrong verifier, reused code and refresh token,
//! foreign resource and Host, readonly approver, revoked approver).

mod common;

use std::process::Command;

use common::Scratch;
use common::http::{Request, Served};
use common::python::{python, workspace_root};

fn api<'a>(method: &'a str, path: &'a str, token: &str) -> Request<'a> {
    Request::new(method, path).bearer(token)
}

#[test]
fn the_official_sdk_signs_in_by_oauth_and_every_rule_of_the_flow_holds() {
    let scratch = Scratch::new();
    let agent = scratch.create_token("agent", Some("person-at-the-browser"));
    let readonly = scratch.create_token("readonly", Some("viewer"));
    let admin = scratch.create_token("admin", Some("root"));
    let server = Served::start(scratch.command());
    let output = Command::new(python())
        .arg(workspace_root().join("tests/interop/mcp_oauth_client.py"))
        .args(["--url", &server.url])
        .args(["--agent-token", &agent])
        .args(["--readonly-token", &readonly])
        .args(["--admin-token", &admin])
        .args(["--approver-name", "person-at-the-browser"])
        .output()
        .expect("run the Python OAuth client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("ok all OAuth checks"),
        "the OAuth flow failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The flow is audited: registration, approval, issue, refresh refusal; never a secret.
    let audit = server
        .send(api("GET", "/api/v1/audit?limit=500", &admin))
        .json();
    let events: Vec<&str> = audit["lines"]
        .as_array()
        .expect("audit lines")
        .iter()
        .filter_map(|line| line["event"].as_str())
        .collect();
    for expected in [
        "oauth_client_registered",
        "oauth_approved",
        "oauth_denied",
        "oauth_token_issued",
        "oauth_refresh_refused",
        "oauth_approval_refused",
    ] {
        assert!(events.contains(&expected), "{expected} in {events:?}");
    }
    assert!(
        !audit.to_string().contains(&agent),
        "no secret in the audit log"
    );

    // `token list` shows the grants with who approved them, revoked with their approver.
    let listed = scratch.run(&["token", "list", "--json"]);
    let listed: serde_json::Value =
        serde_json::from_slice(&listed.stdout).expect("token list --json");
    let grants: Vec<&serde_json::Value> = listed["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .filter(|t| t["oauth"].is_object())
        .collect();
    assert!(grants.len() >= 3, "{listed}");
    assert!(
        grants.iter().all(|t| t["oauth"]["client_id"]
            .as_str()
            .is_some_and(|c| c.starts_with("hvc_"))),
        "{listed}"
    );
    server.stop();
}

/// A token's own tool profile (`token create --profile`) decides what `tools/list` offers
/// its clients over HTTP; a token without one gets `mcp.tool_profile`; tools outside the
/// profile still answer by name.
#[test]
fn a_tokens_tool_profile_trims_tools_list_for_that_token_only() {
    let scratch = Scratch::new();
    let lean = scratch.run(&[
        "token",
        "create",
        "--role",
        "agent",
        "--name",
        "lean",
        "--profile",
        "core",
    ]);
    assert!(
        lean.status.success(),
        "{}",
        String::from_utf8_lossy(&lean.stderr)
    );
    let lean = String::from_utf8_lossy(&lean.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let full = scratch.create_token("agent", Some("full"));
    let server = Served::start(scratch.command());
    let names = |token: &str| -> Vec<String> {
        let session = server.initialize(token);
        let listed = server.send(
            Request::new("POST", "/mcp")
                .bearer(token)
                .header("Mcp-Session-Id", &session)
                .header("MCP-Protocol-Version", "2025-06-18")
                .json(&serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})),
        );
        listed.rpc(2)["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (lean_tools, full_tools) = (names(&lean), names(&full));
    assert!(
        lean_tools.contains(&"store_memory".to_string()),
        "{lean_tools:?}"
    );
    assert!(
        !lean_tools.contains(&"delegate_task".to_string()),
        "{lean_tools:?}"
    );
    assert!(
        full_tools.contains(&"delegate_task".to_string()),
        "{full_tools:?}"
    );
    assert!(lean_tools.len() * 2 < full_tools.len(), "{lean_tools:?}");
    let session = server.initialize(&lean);
    let task = server.tool(
        &lean,
        &session,
        3,
        "delegate_task",
        serde_json::json!({"task_description": "rotate the certificates"}),
    );
    assert_eq!(task["isError"], false, "{task}");
    let listed = scratch.run(&["token", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let lean_record = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "lean")
        .unwrap();
    assert_eq!(lean_record["tool_profile"], "core");
    server.stop();
}
