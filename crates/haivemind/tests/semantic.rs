//! Semantic search through the real binary: hybrid over MCP with the real model, the
//! server without a model, a damaged model refused by name, and `haivemind reindex`.

mod common;

use std::process::Stdio;

use common::{McpProcess, Scratch, model_dir, run_json};
use serde_json::json;

const ES: &str = "Elasticsearch on elastic3 ran out of JVM memory and the node left the cluster";
const OTHERS: &[&str] = &[
    "nginx on proxy2 returned 502 after the upstream pool was drained for deploys",
    "postgres replication lag on db3 reached four minutes during the nightly vacuum",
    "kafka broker 2 lost its controller role after a zookeeper session timeout",
    "disk on backup1 filled up because log rotation was disabled by a config typo",
];

#[test]
fn hybrid_search_over_mcp_finds_a_paraphrase_first() {
    let scratch = Scratch::new();
    let mut mcp = McpProcess::start(scratch.command_with_model());
    for text in OTHERS.iter().chain([&ES]) {
        mcp.ok(
            "store_memory",
            json!({"content": text, "category": "incidents"}),
        );
    }
    let found = mcp.ok("search_memories", json!({"query": "ES heap blew up"}));
    assert_eq!(found["search_mode"], "hybrid");
    assert_eq!(found["memories"][0]["content"], ES, "{found:#}");
    assert!(found.get("note").is_none_or(|n| n.is_null()), "{found:#}");

    // get_context packs the paraphrase's match first, counted with the model's tokenizer.
    let context = mcp.ok(
        "get_context",
        json!({"query": "ES heap blew up", "max_tokens": 120}),
    );
    assert!(
        context["context"]
            .as_str()
            .unwrap()
            .lines()
            .nth(1)
            .is_some_and(|line| line.contains("Elasticsearch on elastic3")),
        "{context:#}"
    );
    assert!(context["tokens"].as_u64().unwrap() <= 120, "{context:#}");
    assert!(
        context["counted_with"]
            .as_str()
            .unwrap()
            .starts_with("all-MiniLM-L6-v2"),
        "{context:#}"
    );
    assert!(context["left_out"].as_u64().unwrap() > 0, "{context:#}");
    let cli = run_json(
        scratch.command_with_model(),
        &["context", "--query", "ES heap blew up"],
    );
    assert_eq!(cli["memories"][0], context["memories"][0]["id"], "{cli:#}");

    let keywords = mcp.ok(
        "search_memories",
        json!({"query": "ES heap blew up", "semantic": false}),
    );
    assert_eq!(keywords["search_mode"], "full_text");
    assert!(
        keywords["memories"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["content"] != ES)
    );
    // Filters hold in hybrid mode too.
    let none = mcp.ok(
        "search_memories",
        json!({"query": "ES heap blew up", "category": "security"}),
    );
    assert_eq!(none["memories"], json!([]));
    mcp.finish();
}

#[test]
fn without_the_model_the_server_runs_full_text_and_says_so() {
    let scratch = Scratch::new();
    let missing = scratch.dir.path().join("no-model-here");
    let output = scratch
        .command()
        .env("HAIVEMIND_MODEL_DIR", &missing)
        .arg("mcp")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // (It exits once stdin closes, before any handshake; what matters is what it said.)
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("full-text only"), "{log}");
    assert!(log.contains("scripts/fetch-model"), "{log}");

    let mut command = scratch.command();
    command.env("HAIVEMIND_MODEL_DIR", &missing);
    let status = run_json(command, &["status"]);
    assert_eq!(status["search_mode"], "full_text");
    assert!(
        status["semantic_search_unavailable_because"]
            .as_str()
            .unwrap()
            .contains("no-model-here")
    );

    let mut command = scratch.command();
    command.env("HAIVEMIND_MODEL_DIR", &missing);
    let mut mcp = McpProcess::start(command);
    mcp.ok("store_memory", json!({"content": ES}));
    let found = mcp.ok("search_memories", json!({"query": "elastic3 memory"}));
    assert_eq!(found["search_mode"], "full_text");
    assert!(
        found["note"]
            .as_str()
            .unwrap()
            .contains("no embedding model")
    );
    mcp.finish();
}

#[test]
fn a_damaged_model_is_an_error_that_names_the_file() {
    let scratch = Scratch::new();
    let damaged = scratch.dir.path().join("damaged-model");
    std::fs::create_dir_all(&damaged).unwrap();
    for name in ["config.json", "tokenizer.json"] {
        std::fs::copy(model_dir().join(name), damaged.join(name)).unwrap();
    }
    std::fs::write(damaged.join("model.safetensors"), b"not the weights").unwrap();
    for args in [&["status"][..], &["mcp"][..]] {
        let output = scratch
            .command()
            .env("HAIVEMIND_MODEL_DIR", &damaged)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} ran on a damaged model");
        let message = String::from_utf8_lossy(&output.stderr);
        assert!(message.contains("model.safetensors"), "{message}");
        assert!(message.contains("sha256"), "{message}");
        assert!(message.contains("scripts/fetch-model"), "{message}");
    }
}

#[test]
fn reindex_embeds_memories_stored_without_the_model() {
    let scratch = Scratch::new();
    for text in OTHERS.iter().chain([&ES]) {
        let mut command = scratch.command();
        command.env("HAIVEMIND_EMBEDDING__ENABLED", "false");
        run_json(command, &["store", text]);
    }
    let status = run_json(scratch.command_with_model(), &["status"]);
    assert_eq!(status["search_mode"], "hybrid");
    assert_eq!(status["vectors"], json!({"embedded": 0, "missing": 5}));

    let reindexed = run_json(scratch.command_with_model(), &["reindex"]);
    assert_eq!(reindexed["embedded"], 5);
    assert_eq!(reindexed["failed"], 0);
    let status = run_json(scratch.command_with_model(), &["status"]);
    assert_eq!(status["vectors"], json!({"embedded": 5, "missing": 0}));
    let found = run_json(scratch.command_with_model(), &["search", "ES heap blew up"]);
    assert_eq!(found["search_mode"], "hybrid");
    assert_eq!(found["memories"][0]["content"], ES);

    // Without a model, reindex has nothing to work with and says why.
    let output = scratch
        .command()
        .env("HAIVEMIND_MODEL_DIR", scratch.dir.path().join("none"))
        .arg("reindex")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("fetch-model"));
}
