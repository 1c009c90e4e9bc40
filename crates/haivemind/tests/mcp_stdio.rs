//! `haivemind mcp` over stdio, driven by a raw line client: the tool surface end to end,
//! bad input, malformed frames, and stdout purity.

mod common;

use common::Scratch;
use serde_json::json;

#[test]
fn tools_list_has_schemas_and_annotations() {
    let scratch = Scratch::new();
    let mut mcp = scratch.mcp();
    let tools = mcp.request("tools/list", json!({}))["result"]["tools"].clone();
    let names: Vec<&str> = tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for expected in [
        "store_memory",
        "retrieve_memory",
        "search_memories",
        "get_recent_memories",
        "update_memory",
        "delete_memory",
        "recover_deleted_memory",
        "list_deleted_memories",
        "bulk_delete_memories",
        "get_memory_stats",
        "detect_duplicate_memories",
        "merge_duplicate_memories",
        "gdpr_export_user_data",
        "gdpr_delete_user_data",
        "import_conversation",
        "get_machine_context",
    ] {
        assert!(names.contains(&expected), "missing tool {expected}");
    }
    let store = tools
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "store_memory")
        .unwrap();
    assert_eq!(store["inputSchema"]["type"], "object");
    assert_eq!(store["inputSchema"]["required"], json!(["content"]));
    assert_eq!(store["annotations"]["readOnlyHint"], false);
    let search = tools
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "search_memories")
        .unwrap();
    assert_eq!(search["annotations"]["readOnlyHint"], true);
    let delete = tools
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "delete_memory")
        .unwrap();
    assert_eq!(delete["annotations"]["destructiveHint"], true);
    mcp.finish();
}

#[test]
fn a_memory_lives_through_store_search_update_delete_and_recover() {
    let scratch = Scratch::new();
    let mut mcp = scratch.mcp();
    let metadata =
        json!({"ticket": "OPS-7", "hosts": ["proxy2", {"port": 443}], "ok": false, "n": 1.5});
    let stored = mcp.ok(
        "store_memory",
        json!({
            "content": "nginx on proxy2 returned 502 until the upstream keepalive was raised",
            "category": "incidents", "tags": ["nginx", "proxy2"], "metadata": metadata,
            "project": "edge", "context": "on call", "scope": "team-global",
            "confidentiality_level": "internal", "user_id": "ops"
        }),
    );
    let id = stored["id"].as_str().unwrap().to_string();
    assert_eq!(stored["metadata"], metadata);
    assert_eq!(stored["machine_id"], "e2e-machine");
    assert_eq!(stored["agent_id"], "e2e-harness");
    for field in [
        "category",
        "context",
        "tags",
        "user_id",
        "project",
        "scope",
        "confidentiality_level",
        "created_at",
        "updated_at",
        "version",
    ] {
        assert!(stored.get(field).is_some(), "missing {field}");
    }
    assert_eq!(mcp.ok("retrieve_memory", json!({"memory_id": id})), stored);

    let found = mcp.ok(
        "search_memories",
        json!({"query": "proxy2 502", "tags": ["nginx"]}),
    );
    assert_eq!(found["total"], 1);
    assert_eq!(found["memories"][0]["id"], id.as_str());
    assert_eq!(found["memories"][0]["metadata"], metadata);
    assert!(found["memories"][0]["score"].is_number());
    assert_eq!(found["search_mode"], "full_text");

    let updated = mcp.ok(
        "update_memory",
        json!({"memory_id": id, "content": "nginx 502 on proxy2: raise keepalive_requests"}),
    );
    assert_eq!(updated["version"], 2);
    let cleared = mcp.ok(
        "update_memory",
        json!({"memory_id": id, "context": null, "project": null}),
    );
    assert_eq!(
        (cleared["context"].clone(), cleared["project"].clone()),
        (json!(null), json!(null)),
        "null clears"
    );
    let kept = mcp.ok("update_memory", json!({"memory_id": id, "tags": ["nginx"]}));
    assert_eq!(
        kept["content"], updated["content"],
        "fields left out stay as they are"
    );
    let history = mcp.ok("get_memory_history", json!({"memory_id": id}));
    assert_eq!(
        history["history"][1]["changes"]["content"]["from"],
        stored["content"]
    );

    let deleted = mcp.ok("delete_memory", json!({"memory_id": id, "reason": "test"}));
    assert_eq!(deleted["recoverable"], true);
    assert_eq!(
        mcp.ok("search_memories", json!({"query": "proxy2"}))["total"],
        0
    );
    assert_eq!(
        mcp.tool_error("retrieve_memory", json!({"memory_id": id}))["code"],
        "deleted"
    );
    let listed = mcp.ok("list_deleted_memories", json!({}));
    assert_eq!(listed["total"], 1);
    let recovered = mcp.ok("recover_deleted_memory", json!({"memory_id": id}));
    assert_eq!(recovered["deleted"], false);
    assert_eq!(
        mcp.ok("get_recent_memories", json!({"hours": 1}))["memories"][0]["id"],
        id.as_str()
    );

    mcp.ok(
        "delete_memory",
        json!({"memory_id": id, "hard_delete": true}),
    );
    assert_eq!(
        mcp.tool_error("retrieve_memory", json!({"memory_id": id}))["code"],
        "erased"
    );
    assert_eq!(
        mcp.tool_error("recover_deleted_memory", json!({"memory_id": id}))["code"],
        "erased"
    );
    mcp.finish();
}

#[test]
fn bad_input_gets_an_error_naming_the_field_and_the_server_keeps_serving() {
    let scratch = Scratch::new();
    let mut mcp = scratch.mcp();
    let check = |mcp: &mut common::McpProcess,
                 tool: &str,
                 args: serde_json::Value,
                 field: &str,
                 words: &str| {
        let error = mcp.tool_error(tool, args);
        assert_eq!(error["field"], field, "{error}");
        let message = error["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{field}: ")), "{message}");
        assert!(message.contains(words), "{message} should mention {words}");
    };
    check(
        &mut mcp,
        "store_memory",
        json!({"content": ""}),
        "content",
        "must not be empty",
    );
    check(
        &mut mcp,
        "store_memory",
        json!({"content": "x".repeat(70_000)}),
        "content",
        "65536",
    );
    check(
        &mut mcp,
        "store_memory",
        json!({}),
        "content",
        "is required",
    );
    check(
        &mut mcp,
        "store_memory",
        json!({"content": 5}),
        "content",
        "invalid type",
    );
    check(
        &mut mcp,
        "store_memory",
        json!({"content": "x", "category": "infra"}),
        "category",
        "expected one of",
    );
    check(
        &mut mcp,
        "store_memory",
        json!({"content": "x", "scope": "public"}),
        "scope",
        "machine-local",
    );
    check(
        &mut mcp,
        "store_memory",
        json!({"content": "x", "confidentiality_level": "secret"}),
        "confidentiality_level",
        "pii",
    );
    check(
        &mut mcp,
        "store_memory",
        json!({"content": "x", "tags": "a,b"}),
        "tags",
        "invalid type",
    );
    check(
        &mut mcp,
        "store_memory",
        json!({"content": "x", "metadata": [1]}),
        "metadata",
        "invalid type",
    );
    check(
        &mut mcp,
        "store_memory",
        json!({"content": "x", "catgory": "global"}),
        "catgory",
        "unknown field",
    );
    check(
        &mut mcp,
        "retrieve_memory",
        json!({"memory_id": "not-a-uuid"}),
        "memory_id",
        "not a UUID",
    );
    check(
        &mut mcp,
        "search_memories",
        json!({"query": "x", "limit": 0}),
        "limit",
        "between 1 and 100",
    );
    check(
        &mut mcp,
        "search_memories",
        json!({"query": "x", "limit": "ten"}),
        "limit",
        "invalid type",
    );
    check(
        &mut mcp,
        "search_memories",
        json!({"query": "x", "since": "yesterday"}),
        "since",
        "RFC 3339",
    );
    check(
        &mut mcp,
        "gdpr_export_user_data",
        json!({"user_id": "a", "format": "xml"}),
        "format",
        "json, csv",
    );
    check(
        &mut mcp,
        "gdpr_delete_user_data",
        json!({"user_id": "a"}),
        "confirm",
        "must be true",
    );
    let missing = mcp.tool_error(
        "retrieve_memory",
        json!({"memory_id": "01a2187d-2960-74db-bb09-8a9051b9f64f"}),
    );
    assert_eq!(missing["code"], "not_found");

    // Protocol-level mistakes get JSON-RPC errors.
    let unknown_tool = mcp.request(
        "tools/call",
        json!({"name": "no_such_tool", "arguments": {}}),
    );
    assert_eq!(unknown_tool["error"]["code"], -32602);
    assert!(
        unknown_tool["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no_such_tool")
    );
    let unknown_method = mcp.request("no/such/method", json!({}));
    assert_eq!(unknown_method["error"]["code"], -32601);
    let nameless = mcp.request("tools/call", json!({"arguments": {}}));
    assert!(
        nameless["error"]["message"]
            .as_str()
            .unwrap()
            .contains("params.name"),
        "{nameless}"
    );
    mcp.send_line("{this is not json");
    let parse_error = mcp.next_frame();
    assert_eq!(parse_error["error"]["code"], -32700);
    assert!(parse_error["id"].is_null());

    // And after all that, it still works.
    let stored = mcp.ok("store_memory", json!({"content": "still serving"}));
    assert_eq!(
        mcp.ok("retrieve_memory", json!({"memory_id": stored["id"]}))["content"],
        "still serving"
    );
    mcp.finish();
}

#[test]
fn bulk_delete_gdpr_duplicates_conversation_stats_and_resources() {
    let scratch = Scratch::new();
    let mut mcp = scratch.mcp();
    for i in 0..3 {
        mcp.ok(
            "store_memory",
            json!({"content": format!("deploy {i} of shop went fine"), "category": "deployments"}),
        );
    }
    let preview = mcp.ok("bulk_delete_memories", json!({"category": "deployments"}));
    assert_eq!(
        (preview["matched"].clone(), preview["deleted"].clone()),
        (json!(3), json!(0))
    );
    let done = mcp.ok(
        "bulk_delete_memories",
        json!({"category": "deployments", "confirm": true}),
    );
    assert_eq!(done["deleted"], 3);
    assert_eq!(
        mcp.tool_error("bulk_delete_memories", json!({"confirm": true}))["field"],
        "filters"
    );

    mcp.ok(
        "store_memory",
        json!({"content": "carol uses zsh", "user_id": "carol", "confidentiality_level": "pii"}),
    );
    let export = mcp.ok("gdpr_export_user_data", json!({"user_id": "carol"}));
    assert_eq!(export["total"], 1);
    assert_eq!(export["memories"][0]["history"][0]["action"], "create");
    let csv = mcp.ok(
        "gdpr_export_user_data",
        json!({"user_id": "carol", "format": "csv"}),
    );
    assert!(csv["csv"].as_str().unwrap().contains("carol uses zsh"));
    assert_eq!(
        mcp.ok(
            "gdpr_delete_user_data",
            json!({"user_id": "carol", "confirm": true})
        )["erased"],
        1
    );
    assert_eq!(
        mcp.ok("gdpr_export_user_data", json!({"user_id": "carol"}))["total"],
        0
    );

    let a = mcp.ok(
        "store_memory",
        json!({"content": "Redis on cache1 evicts keys under memory pressure"}),
    );
    let b = mcp.ok(
        "store_memory",
        json!({"content": "redis on cache1 evicts keys under memory pressure", "tags": ["redis"]}),
    );
    let groups = mcp.ok("detect_duplicate_memories", json!({"threshold": 0.9}));
    assert_eq!(groups["total"], 1);
    assert_eq!(groups["groups"][0]["keep_id"], a["id"]);
    let merged = mcp.ok(
        "merge_duplicate_memories",
        json!({"keep_id": a["id"], "duplicate_ids": [b["id"]]}),
    );
    assert_eq!(merged["memory"]["tags"], json!(["redis"]));

    let conversation = mcp.ok(
        "import_conversation",
        json!({"conversation_text": "Alice: elastic3 is out of heap\nBob: raise Xmx to 16g\nAlice: done", "title": "es heap", "tags": ["es"]}),
    );
    assert_eq!(conversation["stored"], 3);
    let turns = mcp.ok(
        "search_memories",
        json!({"query": "Xmx", "category": "conversation"}),
    );
    assert_eq!(turns["memories"][0]["content"], "Bob: raise Xmx to 16g");
    assert_eq!(
        turns["memories"][0]["metadata"]["conversation_id"],
        conversation["conversation_id"]
    );

    let stats = mcp.ok("get_memory_stats", json!({}));
    assert_eq!(stats["total_memories"], 4);
    assert_eq!(stats["by_category"]["conversation"], 3);
    let context = mcp.ok("get_machine_context", json!({}));
    assert_eq!(context["machine_id"], "e2e-machine");
    assert_eq!(context["memory_count"], 4);

    let resources = mcp.request("resources/list", json!({}))["result"]["resources"].clone();
    let uris: Vec<&str> = resources
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["uri"].as_str())
        .collect();
    assert_eq!(
        uris,
        [
            "haivemind://instructions",
            "haivemind://machine-context",
            "haivemind://broadcasts"
        ]
    );
    let instructions = mcp.request("resources/read", json!({"uri": "haivemind://instructions"}));
    assert!(
        instructions["result"]["contents"][0]["text"]
            .as_str()
            .unwrap()
            .contains("search_memories")
    );
    let machine = mcp.request(
        "resources/read",
        json!({"uri": "haivemind://machine-context"}),
    );
    let machine: serde_json::Value =
        serde_json::from_str(machine["result"]["contents"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(machine["machine_id"], "e2e-machine");
    let missing = mcp.request("resources/read", json!({"uri": "haivemind://nope"}));
    assert!(
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .contains("haivemind://nope")
    );
    mcp.finish();
}

#[test]
fn memories_survive_a_restart_of_the_server() {
    let scratch = Scratch::new();
    let mut first = scratch.mcp();
    let stored = first.ok("store_memory", json!({"content": "kept across restarts"}));
    first.finish();
    let mut second = scratch.mcp();
    assert_eq!(
        second.ok("retrieve_memory", json!({"memory_id": stored["id"]}))["content"],
        "kept across restarts"
    );
    second.finish();
}

#[test]
fn a_tool_profile_trims_tools_list_and_hidden_tools_still_answer() {
    let scratch = Scratch::new();
    scratch.write_config(r#"{"mcp": {"tool_profile": "core"}}"#);
    let mut mcp = scratch.mcp();
    let tools = mcp.request("tools/list", json!({}))["result"]["tools"].clone();
    let names: Vec<&str> = tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for expected in [
        "store_memory",
        "search_memories",
        "get_context",
        "update_memory",
    ] {
        assert!(
            names.contains(&expected),
            "core lacks {expected}: {names:?}"
        );
    }
    for hidden in ["delegate_task", "record_incident", "gdpr_delete_user_data"] {
        assert!(!names.contains(&hidden), "core offers {hidden}");
    }
    // Called by name, a tool outside the profile still works.
    let task = mcp.ok(
        "delegate_task",
        json!({"task_description": "rotate the certificates"}),
    );
    assert_eq!(task["status"], "pending", "{task}");

    let unknown = Scratch::new();
    unknown.write_config(r#"{"mcp": {"tool_profile": "everything"}}"#);
    let output = unknown.run(&["status"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("mcp.tool_profile"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
