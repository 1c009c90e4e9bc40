//! The CLI: every command in text and JSON, export/import round trips, config errors.

mod common;

use common::Scratch;
use serde_json::json;

#[test]
fn store_search_get_recent_delete_recover_in_json() {
    let scratch = Scratch::new();
    let stored = scratch.json(&[
        "store",
        "Postgres replica lag on db2 fixed by raising wal_keep_size",
        "--category",
        "incidents",
        "--tags",
        "postgres,db2",
        "--metadata",
        r#"{"ticket":"OPS-9","n":[1,2]}"#,
        "--user",
        "ops",
        "--project",
        "core",
        "--scope",
        "team-global",
        "--confidentiality",
        "internal",
    ]);
    let id = stored["id"].as_str().unwrap().to_string();
    assert_eq!(stored["metadata"], json!({"ticket": "OPS-9", "n": [1, 2]}));
    assert_eq!(stored["machine_id"], "e2e-machine");
    let found = scratch.json(&[
        "search",
        "replica lag",
        "--tags",
        "db2",
        "--category",
        "incidents",
    ]);
    assert_eq!(found["total"], 1);
    assert_eq!(found["memories"][0]["id"], id.as_str());
    assert_eq!(scratch.json(&["get", &id])["content"], stored["content"]);
    assert_eq!(
        scratch.json(&["recent", "--hours", "1"])["memories"][0]["id"],
        id.as_str()
    );
    scratch.json(&["delete", &id, "--reason", "test"]);
    assert_eq!(scratch.json(&["search", "replica"])["total"], 0);
    assert_eq!(scratch.json(&["recover", &id])["deleted"], false);
    let stats = scratch.json(&["stats"]);
    assert_eq!(stats["total_memories"], 1);
    assert_eq!(stats["by_category"]["incidents"], 1);
    let status = scratch.json(&["status"]);
    assert_eq!(status["machine_id"], "e2e-machine");
    assert_eq!(status["memory_count"], 1);
    assert_eq!(status["search_mode"], "full_text");
}

#[test]
fn text_output_is_for_people() {
    let scratch = Scratch::new();
    let output = scratch.run(&["store", "grafana alert for disk on web1"]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with("stored "), "{text}");
    let search = String::from_utf8(scratch.run(&["search", "disk"]).stdout).unwrap();
    assert!(search.contains("1 of 1 matches (full_text)"), "{search}");
    assert!(
        search.contains("grafana alert for disk on web1"),
        "{search}"
    );
    let status = String::from_utf8(scratch.run(&["status"]).stdout).unwrap();
    assert!(status.contains("full-text only"), "{status}");
}

#[test]
fn bad_input_exits_2_with_the_field_named() {
    let scratch = Scratch::new();
    let cases: &[(&[&str], &str)] = &[
        (&["store", ""], "content: must not be empty"),
        (
            &["store", "x", "--category", "infra"],
            "category: unknown value \"infra\"",
        ),
        (
            &["store", "x", "--scope", "public"],
            "scope: unknown value \"public\"",
        ),
        (
            &["store", "x", "--metadata", "[1]"],
            "metadata: must be a JSON object",
        ),
        (&["get", "nope"], "id: \"nope\" is not a UUID"),
        (
            &["search", "x", "--limit", "1000"],
            "limit: must be between 1 and 100",
        ),
        (
            &["get", "01a2187d-2960-74db-bb09-8a9051b9f64f"],
            "not found",
        ),
    ];
    for (args, message) in cases {
        let output = scratch.run(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn a_bad_config_stops_start_up_naming_the_key() {
    let scratch = Scratch::new();
    scratch.write_config(r#"{"memory": {"max_content_bytez": 100}}"#);
    let output = scratch.run(&["stats"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr.contains("max_content_bytez"), "{stderr}");
    scratch.write_config(r#"{"memory": {"max_content_bytes": 10}}"#);
    let stderr = String::from_utf8_lossy(&scratch.run(&["mcp"]).stderr).to_string();
    assert!(
        stderr.contains("memory.max_content_bytes: must be at least 1024"),
        "{stderr}"
    );
    scratch.write_config("{}");
    let output = scratch
        .command()
        .env("HAIVEMIND_MEMORY__RECOVER_DAYS", "soon")
        .arg("stats")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("memory.recover_days"));
    scratch.write_config(r#"{"logging": {"level": "very=loud=please"}}"#);
    let stderr = String::from_utf8_lossy(&scratch.run(&["stats"]).stderr).to_string();
    assert!(stderr.contains("logging.level"), "{stderr}");
    scratch.write_config(r#"{"memory": {"max_content_bytes": 2048, "categories": ["ml"]}}"#);
    assert!(
        scratch
            .run(&["store", "model drift", "-c", "ml"])
            .status
            .success()
    );
    let too_big = "x".repeat(3000);
    let output = scratch.run(&["store", &too_big]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("limit of 2048"));
}

#[test]
fn export_then_import_round_trips_every_memory_idempotently() {
    let source = Scratch::new();
    source.json(&[
        "store",
        "alpha fact",
        "--metadata",
        r#"{"deep":{"a":[true,null]}}"#,
        "--tags",
        "a",
    ]);
    let gone = source.json(&["store", "soft deleted fact"]);
    source.json(&["delete", gone["id"].as_str().unwrap()]);
    let file = source.dir.path().join("export.jsonl");
    let output = source.run(&["export", "--output", file.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 2);

    let target = Scratch::new();
    let first = target.json(&["import", file.to_str().unwrap()]);
    assert_eq!(first["imported"], 2);
    let again = target.json(&["import", file.to_str().unwrap()]);
    assert_eq!(
        (again["imported"].clone(), again["already_present"].clone()),
        (json!(0), json!(2))
    );
    let stats = target.json(&["stats"]);
    assert_eq!(
        (
            stats["total_memories"].clone(),
            stats["deleted_memories"].clone()
        ),
        (json!(1), json!(1))
    );
    let found = target.json(&["search", "alpha"]);
    assert_eq!(
        found["memories"][0]["metadata"],
        json!({"deep": {"a": [true, null]}})
    );
    assert_eq!(found["memories"][0]["machine_id"], "e2e-machine");

    let bad = target.dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"content\": \"fine\"}\nnot json\n{\"content\": \"\"}\n",
    )
    .unwrap();
    let output = target.run(&["import", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("line 2: not JSON"), "{stderr}");
    assert!(
        stderr.contains("line 3: content: must not be empty"),
        "{stderr}"
    );
    assert_eq!(
        target.json(&["search", "fine"])["total"],
        1,
        "good lines are imported"
    );
}

#[test]
fn help_documents_every_command() {
    let scratch = Scratch::new();
    let help = String::from_utf8(scratch.run(&["--help"]).stdout).unwrap();
    for command in [
        "mcp", "store", "search", "get", "recent", "delete", "recover", "stats", "status",
        "export", "import", "purge",
    ] {
        assert!(help.contains(command), "--help does not mention {command}");
    }
}

/// What users already have imports as it is: the official MCP memory server's graph (one
/// memory per entity) and Claude Code transcripts (one per exchange, with the session's
/// project), each told apart by its records; importing again changes nothing; a changed
/// entity is updated in place.
#[test]
fn the_memory_servers_graph_and_claude_code_transcripts_import_once() {
    let scratch = Scratch::new();
    let graph = scratch.dir.path().join("memory.jsonl");
    let lines = [
        json!({"type": "entity", "name": "cache7", "entityType": "server",
               "observations": ["runs redis 7.2", "evicts keys under memory pressure"]}),
        json!({"type": "entity", "name": "Ana", "entityType": "person", "observations": ["on call for caches"]}),
        json!({"type": "relation", "from": "Ana", "to": "cache7", "relationType": "operates"}),
    ];
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&graph, text.join("\n") + "\nnot a record\n").unwrap();
    let first = scratch.json(&["import", graph.to_str().unwrap()]);
    assert_eq!(first["format"], "memory-server", "{first}");
    assert_eq!(
        (first["imported"].as_u64(), first["skipped_lines"].as_u64()),
        (Some(2), Some(1))
    );
    let again = scratch.json(&["import", graph.to_str().unwrap()]);
    assert_eq!(
        (again["imported"].as_u64(), again["unchanged"].as_u64()),
        (Some(0), Some(2))
    );
    let found = scratch.json(&["search", "redis evicts keys", "--full-text"]);
    let hit = &found["memories"][0];
    assert!(
        hit["content"]
            .as_str()
            .unwrap()
            .contains("Ana operates cache7"),
        "{found}"
    );
    assert_eq!(hit["metadata"]["source"]["system"], "mcp-memory-server");

    let mut changed = text.clone();
    changed[1] = json!({"type": "entity", "name": "Ana", "entityType": "person",
                        "observations": ["on call for caches", "moved to the database team"]})
    .to_string();
    std::fs::write(&graph, changed.join("\n")).unwrap();
    let updated = scratch.json(&["import", graph.to_str().unwrap()]);
    assert_eq!(updated["updated"], 1, "{updated}");

    let projects = scratch.dir.path().join("claude-projects");
    let session_dir = projects.join("-home-ana-payments-api");
    std::fs::create_dir_all(&session_dir).unwrap();
    let transcript = [
        json!({"type": "user", "sessionId": "5e1d", "uuid": "u1", "timestamp": "2026-11-02T10:00:00Z",
               "cwd": "/home/ana/payments-api", "message": {"role": "user", "content": "why do stripe webhooks fail since monday?"}}),
        json!({"type": "assistant", "sessionId": "5e1d", "uuid": "a1", "message": {"role": "assistant",
               "content": [{"type": "text", "text": "The webhook signing secret was rotated on monday; update STRIPE_WEBHOOK_SECRET."},
                           {"type": "tool_use", "id": "t", "name": "Bash", "input": {"command": "env"}}]}}),
        json!({"type": "user", "sessionId": "5e1d", "uuid": "u2", "cwd": "/home/ana/payments-api",
               "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "SECRET=hunter2"}]}}),
    ];
    let transcript: Vec<String> = transcript.iter().map(|l| l.to_string()).collect();
    std::fs::write(session_dir.join("5e1d.jsonl"), transcript.join("\n")).unwrap();
    let imported = scratch.json(&["import", projects.to_str().unwrap()]);
    assert_eq!(
        (imported["format"].as_str(), imported["imported"].as_u64()),
        (Some("claude-code"), Some(1)),
        "{imported}"
    );
    let found = scratch.json(&[
        "search",
        "stripe webhook secret",
        "--full-text",
        "--project",
        "payments-api",
    ]);
    let hit = &found["memories"][0];
    let content = hit["content"].as_str().unwrap();
    assert!(content.contains("signing secret was rotated"), "{found}");
    assert!(
        !content.contains("hunter2"),
        "tool output is not imported: {content}"
    );
    assert_eq!(hit["category"], "conversation");
    let twice = scratch.json(&["import", projects.to_str().unwrap()]);
    assert_eq!(twice["unchanged"], 1, "{twice}");

    let garbage = scratch.dir.path().join("notes.txt");
    std::fs::write(&garbage, "just some notes\n").unwrap();
    let refused = scratch.run(&["import", garbage.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--format"));
}
