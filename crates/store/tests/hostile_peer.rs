//! What a peer holding the fleet token can and cannot do through `apply_remote`: it can
//! spoil only what it could legitimately write. Memories that never leave this machine are
//! out of its reach, its stamps cannot drag this node's clock, and what it sends obeys the
//! rules a local write obeys, each refusal reported with the field at fault.

mod common;

use haivemind_core::hlc::pack;
use haivemind_core::{Confidentiality, MemoryId, NewMemory, Scope};
use haivemind_store::{OpLogEntry, Store, StoreOptions, VersionVector};
use serde_json::{Value, json};
use tempfile::TempDir;

struct Node {
    _dir: TempDir,
    store: Store,
}

fn node_with(machine: &str, change: impl FnOnce(&mut StoreOptions)) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path().join("db.sqlite3"), machine);
    change(&mut options);
    let store = common::open(options).unwrap();
    Node { _dir: dir, store }
}

fn node(machine: &str) -> Node {
    node_with(machine, |_| {})
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// An operation as a peer would put it on the wire.
fn forged(origin: &str, hlc: u64, record_id: &str, op: &str, payload: Value) -> OpLogEntry {
    OpLogEntry::from_wire(
        "op",
        &json!({
            "op_id": uuid::Uuid::now_v7().to_string(),
            "hlc": hlc,
            "origin": origin,
            "record_kind": "memory",
            "record_id": record_id,
            "op": op,
            "payload": payload,
        }),
    )
    .unwrap()
}

/// A shareable memory's JSON, as an honest peer's payload would carry it.
fn shareable_payload(id: &str, content: &str) -> Value {
    json!({
        "id": id, "content": content, "category": "global", "tags": [], "metadata": {},
        "user_id": "default", "machine_id": "mallory", "scope": "team-global",
        "confidentiality_level": "normal", "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:00:00.000Z", "version": 9
    })
}

fn refused_field(store: &Store, op: OpLogEntry) -> String {
    let outcome = store.apply_remote(std::slice::from_ref(&op)).unwrap();
    assert_eq!(outcome.refused, 1, "{outcome:?}");
    assert_eq!(outcome.logged, 0, "{outcome:?}");
    let refusal = &outcome.refusals[0];
    assert_eq!(refusal.op_id, op.op_id);
    refusal.field.clone()
}

#[test]
fn a_peer_cannot_touch_a_memory_that_never_leaves_this_machine() {
    let b = node("beta");
    let mut kept = Vec::new();
    for (scope, level) in [
        (Scope::Private, Confidentiality::Normal),
        (Scope::MachineLocal, Confidentiality::Normal),
        (Scope::TeamGlobal, Confidentiality::Confidential),
        (Scope::ProjectShared, Confidentiality::Pii),
    ] {
        let mut new = NewMemory::new(format!("kept here: {scope:?} {level:?}"));
        new.scope = scope;
        new.confidentiality = level;
        kept.push(b.store.create(new).unwrap());
    }
    let later = pack(now_ms() + 1_000, 0);
    let head_before = b.store.op_log_head().unwrap();
    for memory in &kept {
        let id = memory.id.to_string();
        for (op, hlc, payload) in [
            (
                "update",
                later,
                shareable_payload(&id, "overwritten by a peer"),
            ),
            ("hard_delete", later, json!({"reason": "forged"})),
            ("erase", 1, json!({})),
            ("withdraw", later, json!({})),
        ] {
            let field = refused_field(&b.store, forged("mallory", hlc, &id, op, payload));
            assert_eq!(field, "record_id", "{op} on {:?}", memory.scope);
        }
        let after = b.store.get(memory.id).unwrap();
        assert_eq!(&after, memory, "the local record is untouched");
    }
    assert_eq!(
        b.store.op_log_head().unwrap(),
        head_before,
        "no refused operation reached the log"
    );
}

#[test]
fn a_node_set_up_anew_under_its_old_id_gets_its_own_writes_back() {
    let a = node("alpha");
    let b = node("beta");
    let written = a.store.create(NewMemory::new("alpha wrote this")).unwrap();
    b.store
        .apply_remote(&a.store.ops_after(&VersionVector::new(), 10).unwrap())
        .unwrap();
    // alpha's disk is replaced; it starts empty with the same machine id.
    let fresh = node("alpha");
    let back = b
        .store
        .ops_after(&fresh.store.version_vector().unwrap(), 10)
        .unwrap();
    let outcome = fresh.store.apply_remote(&back).unwrap();
    assert_eq!(outcome.refused, 0, "{outcome:?}");
    assert_eq!(
        fresh.store.get(written.id).unwrap().content,
        "alpha wrote this"
    );
    fresh
        .store
        .create(NewMemory::new("alpha's next write"))
        .unwrap();
    assert!(
        fresh.store.version_vector().unwrap()["alpha"] > back[0].stamp.time,
        "its next stamp is past what it got back"
    );
}

#[test]
fn stamps_far_ahead_are_refused_and_never_move_the_clock() {
    let b = node("beta");
    let year_2100_ms = 4_102_444_800_000;
    for hlc in [pack(year_2100_ms, 0), i64::MAX as u64] {
        let id = MemoryId::generate().to_string();
        let op = forged(
            "mallory",
            hlc,
            &id,
            "create",
            shareable_payload(&id, "from the future"),
        );
        let outcome = b.store.apply_remote(&[op]).unwrap();
        assert_eq!(outcome.refused, 1);
        assert_eq!(outcome.refusals[0].field, "hlc");
        assert!(
            outcome.refusals[0]
                .reason
                .contains("sync.max_clock_skew_secs"),
            "{:?}",
            outcome.refusals[0]
        );
    }
    // A peer a minute ahead is within the default five minutes.
    let id = MemoryId::generate().to_string();
    let minute_ahead = forged(
        "honest",
        pack(now_ms() + 60_000, 0),
        &id,
        "create",
        shareable_payload(&id, "a minute ahead"),
    );
    assert_eq!(b.store.apply_remote(&[minute_ahead]).unwrap().logged, 1);
    // This node's next write is stamped by its own clock, not by the refused stamps.
    b.store.create(NewMemory::new("a local write")).unwrap();
    let own = b.store.version_vector().unwrap()["beta"];
    let own_wall = own >> 16;
    assert!(own > 0 && (own as i64) > 0, "stamps stay positive");
    assert!(
        own_wall < now_ms() + 120_000,
        "the clock was dragged ahead: {own_wall}"
    );
    // The bound is configurable: a node allowing one second refuses the minute ahead.
    let strict = node_with("gamma", |o| o.max_clock_skew_ms = 1_000);
    let id = MemoryId::generate().to_string();
    let op = forged(
        "honest",
        pack(now_ms() + 60_000, 0),
        &id,
        "create",
        shareable_payload(&id, "a minute ahead"),
    );
    assert_eq!(refused_field(&strict.store, op), "hlc");
}

#[test]
fn a_second_operation_under_a_used_stamp_is_refused() {
    let (a, b) = (node("alpha"), node("beta"));
    let memory = a.store.create(NewMemory::new("the real text")).unwrap();
    let ops = a.store.ops_after(&VersionVector::new(), 10).unwrap();
    b.store.apply_remote(&ops).unwrap();
    // Same origin and stamp, another id and text: some nodes would hold one, some the
    // other, and none would ever ask for the one it lacks.
    let mut twin = ops[0].clone();
    twin.op_id = "a-twin".into();
    twin.op = haivemind_store::OpKind::Update;
    twin.payload["content"] = json!("a rival text");
    assert_eq!(refused_field(&b.store, twin), "hlc");
    assert_eq!(b.store.get(memory.id).unwrap().content, "the real text");
}

#[test]
fn replicated_memories_obey_the_rules_of_local_writes() {
    let b = node("beta");
    let big = "x".repeat(3 << 20);
    type Breakage<'a> = Box<dyn Fn(&mut Value) + 'a>;
    let cases: Vec<(&str, Breakage)> = vec![
        ("payload.content", Box::new(|p| p["content"] = json!(big))),
        (
            "payload.category",
            Box::new(|p| p["category"] = json!("nonsense")),
        ),
        (
            "payload.tags[0]",
            Box::new(|p| p["tags"] = json!(["t".repeat(500)])),
        ),
        (
            "payload.user_id",
            Box::new(|p| p["user_id"] = json!("u".repeat(10_000))),
        ),
        (
            "payload.metadata",
            Box::new(|p| p["metadata"] = json!({"blob": "m".repeat(3 << 20)})),
        ),
        (
            "payload.deletion_reason",
            Box::new(|p| {
                p["deleted_at"] = json!("2026-01-02T00:00:00.000Z");
                p["deletion_reason"] = json!("r".repeat(70_000));
            }),
        ),
        (
            "payload.id",
            Box::new(|p| p["id"] = json!(MemoryId::generate().to_string())),
        ),
    ];
    let mut batch = Vec::new();
    let mut expected = Vec::new();
    for (field, change) in &cases {
        let id = MemoryId::generate().to_string();
        let mut payload = shareable_payload(&id, "a fact");
        change(&mut payload);
        let op = forged("mallory", pack(now_ms(), 0), &id, "create", payload);
        expected.push((op.op_id.clone(), field.to_string()));
        batch.push(op);
    }
    // A hard delete whose reason is too long, of a memory the peer may remove.
    let removable = MemoryId::generate().to_string();
    let reason = forged(
        "mallory",
        pack(now_ms(), 0),
        &removable,
        "hard_delete",
        json!({"reason": "r".repeat(70_000)}),
    );
    expected.push((reason.op_id.clone(), "payload.reason".into()));
    batch.push(reason);
    // One good operation among them, with a key no memory has.
    let good = MemoryId::generate().to_string();
    let mut payload = shareable_payload(&good, "a good fact");
    payload["smuggled"] = json!("s".repeat(100_000));
    batch.push(forged(
        "mallory",
        pack(now_ms(), 0),
        &good,
        "create",
        payload,
    ));

    let outcome = b.store.apply_remote(&batch).unwrap();
    assert_eq!(outcome.refused, expected.len(), "{outcome:?}");
    assert_eq!(outcome.logged, 1);
    let reported: Vec<(String, String)> = outcome
        .refusals
        .iter()
        .map(|r| (r.op_id.clone(), r.field.clone()))
        .collect();
    assert_eq!(reported, expected);
    for refusal in &outcome.refusals {
        assert!(refusal.reason.len() < 400, "{refusal:?}");
    }
    assert_eq!(b.store.stats().unwrap().live, 1);
    // What is logged, and relayed onwards, is the memory alone.
    let relayed = b.store.ops_after(&VersionVector::new(), 10).unwrap();
    assert_eq!(relayed.len(), 1);
    assert!(relayed[0].payload.get("smuggled").is_none());
    assert_eq!(relayed[0].payload["content"], "a good fact");
}

#[test]
fn replicated_agents_and_tasks_obey_the_coordination_limits() {
    let b = node("beta");
    let op = |record_kind: &str, record_id: &str, payload: Value| {
        OpLogEntry::from_wire(
            "op",
            &json!({
                "op_id": uuid::Uuid::now_v7().to_string(),
                "hlc": pack(now_ms(), 0), "origin": "mallory",
                "record_kind": record_kind, "record_id": record_id, "op": "create",
                "payload": payload,
            }),
        )
        .unwrap()
    };
    let cases = [
        (
            op(
                "agent",
                "a@m",
                json!({"action": "register", "role": "r", "description": "d".repeat(100_000)}),
            ),
            "payload.description",
        ),
        (
            op(
                "agent",
                "a@m",
                json!({"action": "register", "role": "r", "capabilities": vec!["c"; 65]}),
            ),
            "payload.capabilities",
        ),
        (
            op("task", "task_1", json!({"action": "take_over_the_world"})),
            "payload.action",
        ),
        (
            op(
                "task",
                "task_1",
                json!({"action": "complete", "agent_id": "a", "result": "r".repeat(70_000)}),
            ),
            "payload.result",
        ),
        (
            op("widget", "w", json!({"action": "register"})),
            "record_kind",
        ),
        (
            op("agent", "a@m", json!({"action": "register"})),
            "payload.role",
        ),
        (
            op(
                "task",
                "task_1",
                json!({"action": "status", "agent_id": "a"}),
            ),
            "payload.status",
        ),
    ];
    for (op, field) in cases {
        assert_eq!(refused_field(&b.store, op), field);
    }
    let upper = MemoryId::generate().to_string().to_uppercase();
    let shouted = forged(
        "mallory",
        pack(now_ms(), 0),
        &upper,
        "hard_delete",
        json!({"reason": null}),
    );
    assert_eq!(refused_field(&b.store, shouted), "record_id");
    let fine = op(
        "agent",
        "a@m",
        json!({"action": "register", "role": "builder", "capabilities": ["rust"],
               "smuggled": "s".repeat(100_000)}),
    );
    assert_eq!(b.store.apply_remote(&[fine]).unwrap().logged, 1);
    assert_eq!(b.store.agent("a@m").unwrap().role, "builder");
    // A sign of life dated in the far future counts as its operation's own time.
    let forever = op(
        "agent",
        "b@m",
        json!({"action": "register", "role": "ghost", "at": i64::MAX}),
    );
    assert_eq!(b.store.apply_remote(&[forever]).unwrap().logged, 1);
    assert!(b.store.agent("b@m").unwrap().last_seen_ms <= now_ms() as i64 + 1_000);
    // Only the keys a registration has are logged and relayed.
    let relayed = b.store.ops_after(&VersionVector::new(), 10).unwrap();
    let builder: Vec<&OpLogEntry> = relayed.iter().filter(|o| o.record_id == "a@m").collect();
    assert_eq!(builder.len(), 1);
    assert_eq!(
        builder[0].payload,
        json!({"action": "register", "role": "builder", "capabilities": ["rust"]})
    );
}
