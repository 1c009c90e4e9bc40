//! Real processes: a server killed with SIGKILL mid-write loses no acknowledged memory, and
//! eight servers sharing one data directory lose nothing and corrupt nothing.

mod common;

use std::collections::HashSet;

use common::{McpProcess, Scratch};
use serde_json::{Value, json};

fn integrity(scratch: &Scratch) -> String {
    let connection =
        rusqlite::Connection::open(scratch.data_dir().join("haivemind.sqlite3")).unwrap();
    connection
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap()
}

#[test]
fn sigkill_mid_write_loses_no_acknowledged_memory() {
    let scratch = Scratch::new();
    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..3 {
        let mut mcp = scratch.mcp();
        // Pipeline far more writes than we wait for, so the kill lands mid-stream.
        for i in 0..600 {
            mcp.send_request(
                "tools/call",
                json!({"name": "store_memory", "arguments": {"content": format!("round {round} write {i}")}}),
            );
        }
        let wanted = 100 + round * 75;
        let mut seen = 0;
        while seen < wanted {
            let frame = mcp.next_frame();
            if let Some(id) = frame["result"]["structuredContent"]["id"].as_str() {
                acknowledged.push(id.to_string());
                seen += 1;
            }
        }
        mcp.child.kill().expect("SIGKILL");
        mcp.child.wait().unwrap();
    }
    assert_eq!(integrity(&scratch), "ok");
    let mut mcp = scratch.mcp();
    for id in &acknowledged {
        let result = mcp.call("retrieve_memory", json!({"memory_id": id}));
        assert_eq!(
            result["isError"],
            json!(false),
            "acknowledged memory {id} was lost: {result}"
        );
    }
    let stats = mcp.ok("get_memory_stats", json!({}));
    let total = stats["total_memories"].as_u64().unwrap() as usize;
    assert!(
        total >= acknowledged.len(),
        "{total} < {}",
        acknowledged.len()
    );
    assert_eq!(
        stats["op_log_entries"].as_u64().unwrap() as usize,
        total,
        "every stored memory has its op-log entry"
    );
    mcp.finish();
}

#[test]
fn eight_servers_on_one_data_dir_store_four_thousand_memories() {
    let scratch = Scratch::new();
    // No file yet: the eight servers also race to create and migrate it.
    let ids: Vec<Vec<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|writer| {
                let scratch = &scratch;
                scope.spawn(move || {
                    let mut mcp: McpProcess = scratch.mcp();
                    let mut ids = Vec::new();
                    for batch in 0..10 {
                        for i in 0..50 {
                            mcp.send_request(
                                "tools/call",
                                json!({"name": "store_memory", "arguments": {
                                    "content": format!("writer {writer} batch {batch} note {i}"),
                                    "tags": [format!("writer-{writer}")]
                                }}),
                            );
                        }
                        for _ in 0..50 {
                            let frame: Value = mcp.next_frame();
                            let result = &frame["result"];
                            assert_eq!(result["isError"], json!(false), "write failed: {frame}");
                            ids.push(
                                result["structuredContent"]["id"]
                                    .as_str()
                                    .unwrap()
                                    .to_string(),
                            );
                        }
                    }
                    mcp.finish();
                    ids
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: HashSet<&String> = ids.iter().flatten().collect();
    assert_eq!(all.len(), 4000, "ids are unique and none is missing");
    assert_eq!(integrity(&scratch), "ok");
    let mut mcp = scratch.mcp();
    let stats = mcp.ok("get_memory_stats", json!({}));
    assert_eq!(stats["total_memories"], 4000);
    let one_writer = mcp.ok(
        "search_memories",
        json!({"query": "writer", "tags": ["writer-3"], "limit": 1}),
    );
    assert_eq!(one_writer["total"], 500);
    mcp.finish();
}
