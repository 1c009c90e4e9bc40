//! The team hub's PostgreSQL through the real binary: a store moved into a real database
//! and back loses nothing (`haivemind migrate`), on PostgreSQL with pgvector and without;
//! the database's password shows nowhere.

mod common;

use common::Scratch;
use common::database::{ScratchDatabase, Server};
use serde_json::{Value, json};

/// A node with one of everything a store holds: shared and local memories, an edited one
/// (history), a soft-deleted and a hard-deleted one (a tombstone), vectors, a token, an
/// agent and a delegated task.
fn populated_node() -> (Scratch, Value) {
    let node = Scratch::new();
    let store = |args: &[&str]| common::run_json(node.command_with_model(), args);
    let shared = store(&[
        "store",
        "nginx on web3 needs worker_connections 4096",
        "--tags",
        "nginx,web",
    ]);
    store(&[
        "store",
        "the lab printer's admin password is on the wiki",
        "--scope",
        "machine-local",
    ]);
    let edited = store(&["store", "elastic3 runs out of heap at 28 GB"]);
    let soft = store(&["store", "the old VPN endpoint is vpn1"]);
    let hard = store(&["store", "a customer's phone number, stored by mistake"]);
    node.json(&["delete", soft["id"].as_str().unwrap()]);
    node.json(&[
        "delete",
        hard["id"].as_str().unwrap(),
        "--hard",
        "--reason",
        "pii",
    ]);
    node.create_token("agent", Some("ci"));
    let mut mcp = node.mcp();
    mcp.ok(
        "update_memory",
        json!({"memory_id": edited["id"], "content": "elastic3 runs out of heap at 30 GB"}),
    );
    mcp.ok(
        "register_agent",
        json!({"role": "worker_drone", "capabilities": ["deploy"]}),
    );
    mcp.ok(
        "delegate_task",
        json!({"task_description": "roll nginx on web3", "required_capabilities": ["deploy"]}),
    );
    mcp.finish();
    let ids = json!({"shared": shared["id"], "edited": edited["id"], "soft": soft["id"], "hard": hard["id"]});
    (node, ids)
}

fn state_digest(node: &Scratch) -> String {
    node.json(&["status"])["sync"]["state_digest"]
        .as_str()
        .unwrap_or_else(|| panic!("status has a state digest"))
        .to_string()
}

fn moves_to_postgres_and_back(server: Server) {
    let (source, ids) = populated_node();
    let database = ScratchDatabase::new(server);
    let moved = source.json(&["migrate", "--to", &database.url]);
    let rows = &moved["rows"];
    assert_eq!(
        rows["memories"], 4,
        "the hard-deleted memory is gone: {moved}"
    );
    assert_eq!(rows["tombstones"], 1, "{moved}");
    assert_eq!(rows["api_tokens"], 1, "{moved}");
    assert_eq!(rows["agents"], 1, "{moved}");
    assert_eq!(rows["tasks"], 1, "{moved}");
    assert!(rows["memory_vectors"].as_u64().unwrap() >= 3, "{moved}");
    assert!(rows["memory_history"].as_u64().unwrap() >= 6, "{moved}");
    assert!(rows["op_log"].as_u64().unwrap() >= 8, "{moved}");

    // What landed is PostgreSQL's own to query: full-text by its GIN index, vectors.
    let mut client = database.client();
    let found: Vec<String> = client
        .query(
            "SELECT id FROM memories WHERE search @@ plainto_tsquery('english', 'nginx workers')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(found, vec![ids["shared"].as_str().unwrap().to_string()]);
    let embedded: i64 = match server {
        Server::Pgvector => client
            .query_one(
                "SELECT count(*) FROM memory_vectors WHERE embedding IS NOT NULL",
                &[],
            )
            .unwrap()
            .get(0),
        Server::Plain => client
            .query_one("SELECT count(*) FROM memory_vectors", &[])
            .unwrap()
            .get(0),
    };
    assert_eq!(embedded as u64, rows["memory_vectors"].as_u64().unwrap());
    if let Server::Pgvector = server {
        // The vectors are the same numbers: the memory is its own nearest neighbour.
        let nearest: String = client
            .query_one(
                "SELECT m.id FROM memory_vectors v JOIN memories m ON m.rowid = v.memory_rowid
                 ORDER BY v.embedding <=> (SELECT v2.embedding FROM memory_vectors v2
                     JOIN memories m2 ON m2.rowid = v2.memory_rowid WHERE m2.id = $1) LIMIT 1",
                &[&ids["shared"].as_str().unwrap()],
            )
            .unwrap()
            .get(0);
        assert_eq!(nearest, ids["shared"].as_str().unwrap());
    }

    // Into an empty node again: the same rows, the same replication state, and it works.
    let again = Scratch::new();
    let back = again.json(&["migrate", "--from", &database.url]);
    assert_eq!(back["digest"], moved["digest"]);
    assert_eq!(back["rows"], moved["rows"]);
    assert_eq!(state_digest(&again), state_digest(&source));
    let hits = common::run_json(
        again.command_with_model(),
        &["search", "web server connection limits"],
    );
    assert_eq!(hits["search_mode"], "hybrid", "{hits}");
    assert_eq!(hits["memories"][0]["id"], ids["shared"], "{hits}");
    let history = again.json(&["get", ids["edited"].as_str().unwrap()]);
    assert_eq!(history["content"], "elastic3 runs out of heap at 30 GB");
    assert!(
        !again
            .run(&["get", ids["hard"].as_str().unwrap()])
            .status
            .success()
    );
    again.json(&["recover", ids["soft"].as_str().unwrap()]);
    let tokens = again.json(&["token", "list"]);
    assert_eq!(tokens["tokens"][0]["name"], "ci", "{tokens}");
    let tasks = again.json(&["tasks"]);
    assert_eq!(
        tasks["tasks"][0]["description"], "roll nginx on web3",
        "{tasks}"
    );

    // Neither side is ever overwritten or merged into.
    let refused = source.run(&["migrate", "--to", &database.url]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("not empty"), "{message}");
    let refused = source.run(&["migrate", "--from", &database.url]);
    assert!(!refused.status.success());
}

#[test]
fn a_store_moves_to_postgres_with_pgvector_and_back_without_losing_a_row() {
    moves_to_postgres_and_back(Server::Pgvector);
}

#[test]
fn a_store_moves_to_postgres_without_pgvector_and_back_without_losing_a_row() {
    moves_to_postgres_and_back(Server::Plain);
}

#[test]
fn the_database_password_reaches_no_output_and_no_log() {
    let node = Scratch::new();
    node.json(&["store", "the hub's password must stay secret"]);
    let database = ScratchDatabase::new(Server::Pgvector);
    let password = database.password();

    // From the environment, as the docs advise; the output names the database only.
    let mut command = node.command();
    command
        .env("HAIVEMIND_DATABASE_URL", &database.url)
        .env("HAIVEMIND_LOG", "debug");
    let output = command.args(["migrate", "--to"]).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(shown.contains(&database.name), "{shown}");
    assert!(!shown.contains(&password), "{shown}");
    let audit = std::fs::read_to_string(node.data_dir().join("audit.log")).unwrap();
    assert!(audit.contains("store_migrated"), "{audit}");
    assert!(!audit.contains(&password), "{audit}");

    // A wrong password: a clear refusal, and neither password in it.
    let wrong = database.url.replacen(&password, "not-the-password-42", 1);
    let other = Scratch::new();
    let output = other.run(&["migrate", "--from", &wrong]);
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("unavailable"), "{message}");
    assert!(
        !message.contains("not-the-password-42") && !message.contains(&password),
        "{message}"
    );

    // A node of the hub: its status names the backend and the database, never the password.
    let hub = Scratch::new();
    hub.write_config(r#"{"storage": {"backend": "postgres"}}"#);
    let mut command = hub.command();
    command.env("HAIVEMIND_DATABASE_URL", &database.url);
    let output = command.args(["--json", "status"]).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown = String::from_utf8_lossy(&output.stdout).to_string();
    let status: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(status["storage"]["backend"], "postgres", "{status}");
    assert!(
        status["storage"]["vector_ranking"]
            .as_str()
            .unwrap()
            .starts_with("pgvector"),
        "{status}"
    );
    assert!(
        status["database"]
            .as_str()
            .unwrap()
            .contains(&database.name),
        "{status}"
    );
    assert_eq!(
        status["memory_count"], 1,
        "the migrated memory is there: {status}"
    );
    assert!(!shown.contains(&password), "{shown}");
    assert!(!String::from_utf8_lossy(&output.stderr).contains(&password));
}
