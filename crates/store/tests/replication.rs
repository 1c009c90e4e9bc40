//! The engine side of replication between real files: exchanging `ops_after` pages
//! converges, conflicts resolve the same way everywhere, removals win and stay, what may
//! not leave a machine never does, and exchanges are incremental and idempotent.

mod common;

use haivemind_core::{Confidentiality, MemoryPatch, NewMemory, Scope};
use haivemind_store::{Store, StoreOptions, VersionVector};
use serde_json::json;
use tempfile::TempDir;

struct Node {
    _dir: TempDir,
    store: Store,
}

impl std::ops::Deref for Node {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

fn node(machine: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(StoreOptions::new(dir.path().join("db.sqlite3"), machine)).unwrap();
    Node { _dir: dir, store }
}

/// Pulls everything `to` lacks from `from`, page by page; returns the records moved.
fn pull(from: &Store, to: &Store, page: usize) -> usize {
    let mut moved = 0;
    loop {
        let seen: VersionVector = to.version_vector().unwrap();
        let ops = from.ops_after(&seen, page).unwrap();
        if ops.is_empty() {
            return moved;
        }
        moved += ops.len();
        let outcome = to.apply_remote(&ops).unwrap();
        assert_eq!(
            outcome.already_known + outcome.logged + outcome.refused,
            ops.len()
        );
    }
}

fn sync(a: &Store, b: &Store) {
    pull(a, b, 50);
    pull(b, a, 50);
}

fn content_of(store: &Store, id: haivemind_core::MemoryId) -> Option<String> {
    store.get(id).ok().map(|m| m.content)
}

#[test]
fn writes_on_three_nodes_converge_through_relays() {
    let (a, b, c) = (node("alpha"), node("beta"), node("gamma"));
    for (i, n) in [&a, &b, &c].iter().enumerate() {
        for j in 0..20 {
            n.store
                .create(NewMemory::new(format!("note {j} from node {i}")))
                .unwrap();
        }
    }
    // a and c never talk directly: b relays.
    sync(&a, &b);
    sync(&b, &c);
    sync(&a, &b);
    let digests: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|n| n.store.state_digest().unwrap())
        .collect();
    assert_eq!(digests[0], digests[1]);
    assert_eq!(digests[1], digests[2]);
    assert_eq!(c.store.stats().unwrap().live, 60);
    // Nothing more to send anywhere.
    assert_eq!(pull(&a, &c, 50), 0);
}

#[test]
fn conflicting_updates_pick_the_same_winner_everywhere() {
    let (a, b) = (node("alpha"), node("beta"));
    let memory = a
        .store
        .create(NewMemory::new("nginx worker_connections is 1024"))
        .unwrap();
    sync(&a, &b);
    let patch = |text: &str| MemoryPatch {
        content: Some(text.into()),
        ..MemoryPatch::default()
    };
    a.store
        .update(memory.id, patch("raised to 2048 on alpha"), None)
        .unwrap();
    b.store
        .update(memory.id, patch("raised to 4096 on beta"), None)
        .unwrap();
    sync(&a, &b);
    let (on_a, on_b) = (
        content_of(&a.store, memory.id),
        content_of(&b.store, memory.id),
    );
    assert_eq!(on_a, on_b);
    assert!(on_a.unwrap().starts_with("raised to"));
    assert_eq!(
        a.store.state_digest().unwrap(),
        b.store.state_digest().unwrap()
    );
}

#[test]
fn removals_win_and_an_old_copy_cannot_bring_content_back() {
    let (a, b, late) = (node("alpha"), node("beta"), node("late"));
    let kept = a.store.create(NewMemory::new("stays")).unwrap();
    let gone = a
        .store
        .create(NewMemory::new("the old root password was hunter2"))
        .unwrap();
    sync(&a, &b);
    sync(&b, &late); // late holds a copy, then goes away
    a.store.hard_delete(gone.id, Some("leaked".into())).unwrap();
    sync(&a, &b);
    assert!(b.store.get(gone.id).is_err());
    // The late node comes back with its old copy and syncs both ways.
    sync(&late, &b);
    sync(&a, &b);
    for n in [&a, &b, &late] {
        assert!(n.store.get(gone.id).is_err());
        assert!(n.store.get(kept.id).is_ok());
    }
    assert_eq!(
        a.store.state_digest().unwrap(),
        late.store.state_digest().unwrap()
    );
    // The content is gone from every log too.
    for n in [&b, &late] {
        let ops = n.store.ops_since(0, 10_000).unwrap();
        assert!(
            !serde_json::to_string(&ops.iter().map(|o| &o.payload).collect::<Vec<_>>())
                .unwrap()
                .contains("hunter2")
        );
    }
}

#[test]
fn private_and_pii_memories_never_leave_and_are_refused_if_sent() {
    let (a, b) = (node("alpha"), node("beta"));
    let mut private = NewMemory::new("my private note");
    private.scope = Scope::Private;
    let mut pii = NewMemory::new("alice's phone is 555-0100");
    pii.confidentiality = Confidentiality::Pii;
    let private = a.store.create(private).unwrap();
    let pii = a.store.create(pii).unwrap();
    let shared = a.store.create(NewMemory::new("shared fact")).unwrap();
    let ops = a.store.ops_after(&VersionVector::new(), 100).unwrap();
    assert_eq!(ops.len(), 1, "only the shared memory leaves");
    sync(&a, &b);
    assert!(b.store.get(shared.id).is_ok());
    assert!(b.store.get(private.id).is_err() && b.store.get(pii.id).is_err());
    // A peer that sends a restricted memory anyway is refused.
    let mut forged = a.store.ops_since(0, 100).unwrap();
    for op in &mut forged {
        op.shareable = true;
        op.op_id = format!("forged-{}", op.op_id);
    }
    let outcome = b.store.apply_remote(&forged).unwrap();
    // The two restricted memories for what they are; the shared one's copy because beta
    // already holds an operation under its stamp.
    let mut fields: Vec<&str> = outcome.refusals.iter().map(|r| r.field.as_str()).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["hlc", "payload.scope", "payload.scope"],
        "{outcome:?}"
    );
    assert!(b.store.get(pii.id).is_err());
}

#[test]
fn exchanges_are_incremental_and_idempotent() {
    let (a, b) = (node("alpha"), node("beta"));
    let batch: Vec<NewMemory> = (0..2_000)
        .map(|i| NewMemory::new(format!("memory {i}")))
        .collect();
    a.store.create_batch(batch).unwrap();
    assert_eq!(pull(&a.store, &b.store, 500), 2_000);
    a.store.create(NewMemory::new("one more")).unwrap();
    assert_eq!(
        pull(&a.store, &b.store, 500),
        1,
        "one new write moves one record"
    );
    // Applying the same page again changes nothing.
    let again = a.store.ops_after(&VersionVector::new(), 10).unwrap();
    let outcome = b.store.apply_remote(&again).unwrap();
    assert_eq!(outcome.already_known, 10);
    assert_eq!(
        a.store.state_digest().unwrap(),
        b.store.state_digest().unwrap()
    );
}

#[test]
fn soft_delete_and_recover_replicate() {
    let (a, b) = (node("alpha"), node("beta"));
    let memory = a.store.create(NewMemory::new("flaky disk on db3")).unwrap();
    sync(&a, &b);
    a.store
        .soft_delete(memory.id, Some("replaced".into()))
        .unwrap();
    sync(&a, &b);
    assert!(b.store.get(memory.id).is_err());
    b.store.recover(memory.id).unwrap();
    sync(&a, &b);
    assert_eq!(
        content_of(&a.store, memory.id).as_deref(),
        Some("flaky disk on db3")
    );
    assert_eq!(
        a.store.state_digest().unwrap(),
        b.store.state_digest().unwrap()
    );
}

#[test]
fn a_memory_made_confidential_is_withdrawn_from_peers_and_returns_when_shared_again() {
    let (a, b) = (node("alpha"), node("beta"));
    let memory = a.store.create(NewMemory::new("vault is on db3")).unwrap();
    sync(&a, &b);
    assert!(b.store.get(memory.id).is_ok());
    let restrict = MemoryPatch {
        content: Some("vault unseal share: 7f3a...".into()),
        confidentiality: Some(Confidentiality::Confidential),
        ..MemoryPatch::default()
    };
    a.store.update(memory.id, restrict, None).unwrap();
    sync(&a, &b);
    assert!(b.store.get(memory.id).is_err(), "the peer dropped its copy");
    let ops = b.store.ops_since(0, 100).unwrap();
    assert!(
        !serde_json::to_string(&ops.iter().map(|o| &o.payload).collect::<Vec<_>>())
            .unwrap()
            .contains("unseal")
    );
    assert_eq!(
        a.store.state_digest().unwrap(),
        b.store.state_digest().unwrap()
    );
    let share = MemoryPatch {
        content: Some("vault moved to db4".into()),
        confidentiality: Some(Confidentiality::Normal),
        ..MemoryPatch::default()
    };
    a.store.update(memory.id, share, None).unwrap();
    sync(&a, &b);
    assert_eq!(
        content_of(&b.store, memory.id).as_deref(),
        Some("vault moved to db4")
    );
    assert_eq!(
        a.store.state_digest().unwrap(),
        b.store.state_digest().unwrap()
    );
}

/// A stand-in model that counts the texts it embeds.
struct CountingModel {
    id: &'static str,
    embedded: std::sync::atomic::AtomicUsize,
}

impl haivemind_core::Embedder for CountingModel {
    fn model_id(&self) -> &str {
        self.id
    }
    fn dimensions(&self) -> usize {
        4
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, haivemind_core::EmbedError> {
        self.embedded
            .fetch_add(texts.len(), std::sync::atomic::Ordering::SeqCst);
        Ok(texts
            .iter()
            .map(|text| {
                let raw: Vec<f32> = (0..4)
                    .map(|i| 1.0 + text.bytes().skip(i).step_by(4).map(f32::from).sum::<f32>())
                    .collect();
                let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
                raw.iter().map(|x| x / norm).collect()
            })
            .collect())
    }
}

fn node_with_model(machine: &str, model: &std::sync::Arc<CountingModel>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path().join("db.sqlite3"), machine);
    options.embedder = Some(model.clone());
    let store = common::open(options).unwrap();
    Node { _dir: dir, store }
}

fn model(id: &'static str) -> std::sync::Arc<CountingModel> {
    std::sync::Arc::new(CountingModel {
        id,
        embedded: 0.into(),
    })
}

fn embedded(model: &CountingModel) -> usize {
    model.embedded.load(std::sync::atomic::Ordering::SeqCst)
}

#[test]
fn vectors_travel_with_their_model_id_and_are_not_made_twice() {
    let (model_a, model_b, other) = (model("mini-v1"), model("mini-v1"), model("other-v2"));
    let a = node_with_model("alpha", &model_a);
    let b = node_with_model("beta", &model_b);
    let c = node_with_model("gamma", &other);
    let memory = a
        .create(NewMemory::new("redis maxmemory is 4gb on cache1"))
        .unwrap();
    assert_eq!(embedded(&model_a), 1);
    let sent = a.ops_after(&VersionVector::new(), 10).unwrap();
    let wire = sent[0].to_wire();
    assert_eq!(wire["vector"]["model_id"], "mini-v1");
    assert_eq!(wire["vector"]["dims"], 4);

    // Over the wire format, to the same model: stored, not embedded again.
    let received: Vec<_> = sent
        .iter()
        .map(|op| haivemind_store::OpLogEntry::from_wire("op", &op.to_wire()).unwrap())
        .collect();
    b.apply_remote(&received).unwrap();
    assert_eq!(embedded(&model_b), 0);
    assert_eq!(b.vector_snapshot().unwrap(), a.vector_snapshot().unwrap());
    assert_eq!(b.vector_coverage().unwrap().unwrap().missing, 0);

    // A text change carries the new text's vector.
    let patch = MemoryPatch {
        content: Some("redis maxmemory is 8gb on cache1".into()),
        ..MemoryPatch::default()
    };
    a.update(memory.id, patch, None).unwrap();
    pull(&a, &b, 10);
    assert_eq!(embedded(&model_b), 0);
    assert_eq!(b.vector_snapshot().unwrap(), a.vector_snapshot().unwrap());

    // Another model: the foreign vector is not used; this node embeds the text itself.
    pull(&a, &c, 10);
    assert_eq!(c.vector_coverage().unwrap().unwrap().missing, 1);
    c.embed_missing(|_| {}).unwrap();
    assert_eq!(embedded(&other), 1);
    assert_eq!(c.vector_coverage().unwrap().unwrap().missing, 0);

    // A malformed vector is refused with the field named.
    let mut bad = sent[0].to_wire();
    bad["vector"]["dims"] = json!(3);
    let error = haivemind_store::OpLogEntry::from_wire("ops[0]", &bad).unwrap_err();
    assert!(error.to_string().contains("ops[0].vector"), "{error}");
}

#[test]
fn compaction_keeps_removals_effective_for_nodes_that_were_away() {
    let (a, b, late) = (node("alpha"), node("beta"), node("latecomer"));
    let doomed = a
        .create(NewMemory::new("the old vpn key is abc123"))
        .unwrap();
    let kept = a
        .create(NewMemory::new("the vpn moved to wireguard"))
        .unwrap();
    let patch = MemoryPatch {
        content: Some("the old vpn key is abc123, rotated".into()),
        ..MemoryPatch::default()
    };
    a.update(doomed.id, patch, None).unwrap();
    // beta changes it too (its only write, so the newest stamp alpha holds from beta),
    // then goes away with its copy before the removal.
    sync(&a, &b);
    let patch = MemoryPatch {
        tags: Some(vec!["vpn".into()]),
        ..MemoryPatch::default()
    };
    b.update(doomed.id, patch, None).unwrap();
    sync(&a, &b);
    a.hard_delete(doomed.id, None).unwrap();
    let (vector, digest) = (a.version_vector().unwrap(), a.state_digest().unwrap());
    let entries = a.stats().unwrap().op_log_entries;

    // Nothing removed before the cut-off: nothing compacted.
    assert_eq!(a.compact_removed(0).unwrap(), 0);
    // The create and both updates of the removed record go; the removal stays.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(a.compact_removed(now + 1).unwrap(), 3);
    assert_eq!(a.stats().unwrap().op_log_entries, entries - 3);
    assert_eq!(a.version_vector().unwrap(), vector, "nothing looks unseen");
    assert_eq!(a.state_digest().unwrap(), digest);

    // A node that was never there learns of the removal, and one that was away drops its copy.
    pull(&a, &late, 50);
    assert_eq!(late.state_digest().unwrap(), digest);
    sync(&a, &b);
    assert_eq!(content_of(&b, doomed.id), None);
    assert_eq!(b.state_digest().unwrap(), digest);
    // beta's old copy cannot come back to alpha either.
    assert!(content_of(&a, doomed.id).is_none());
    assert!(content_of(&a, kept.id).is_some());

    // The clock keeps counting past what was compacted: a new write reaches beta.
    a.create(NewMemory::new("after compaction")).unwrap();
    assert!(a.version_vector().unwrap()["alpha"] > vector["alpha"]);
    assert_eq!(pull(&a, &b, 50), 1);
}

#[test]
fn concurrent_claims_replay_to_one_winner_on_every_node() {
    use haivemind_store::{NewAgent, NewTask, Priority, TaskStatus};
    let (a, b) = (node("alpha"), node("beta"));
    let ttl = 60_000;
    let agent = |id: &str| NewAgent {
        id: id.into(),
        role: "worker_drone".into(),
        capabilities: vec!["rust".into()],
        description: None,
    };
    a.register_agent(agent("a1"), ttl).unwrap();
    b.register_agent(agent("b1"), ttl).unwrap();
    let task = a
        .delegate_task(
            NewTask {
                description: "port the planner".into(),
                required_capabilities: vec!["wasm".into()],
                target_agent: None,
                priority: Priority::High,
                deadline_ms: None,
                created_by: Some("a1".into()),
            },
            ttl,
        )
        .unwrap();
    assert_eq!(task.status, TaskStatus::Pending);
    sync(&a, &b);
    // Apart, both claim; b1 first.
    assert_eq!(
        b.claim_task(&task.id, "b1").unwrap().assigned_to.as_deref(),
        Some("b1")
    );
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(
        a.claim_task(&task.id, "a1").unwrap().assigned_to.as_deref(),
        Some("a1")
    );
    sync(&a, &b);
    for n in [&a, &b] {
        let seen = n.task(&task.id).unwrap();
        assert_eq!(seen.assigned_to.as_deref(), Some("b1"));
        assert_eq!(seen.status, TaskStatus::Accepted);
        let losing = seen
            .history
            .iter()
            .find(|e| e.agent_id.as_deref() == Some("a1") && e.action == "claim")
            .unwrap();
        assert!(!losing.applied);
    }
    assert_eq!(a.state_digest().unwrap(), b.state_digest().unwrap());
    // The loser is told, and the winner finishes.
    assert!(a.complete_task(&task.id, "a1", "mine").is_err());
    b.complete_task(&task.id, "b1", "ported").unwrap();
    sync(&a, &b);
    assert_eq!(a.task(&task.id).unwrap().result.as_deref(), Some("ported"));
    assert_eq!(a.roster(false, ttl).unwrap().len(), 2);

    // A task nobody can do waits, and goes to the first agent that can when it registers.
    let waiting = a
        .delegate_task(
            NewTask {
                description: "tune the gc".into(),
                required_capabilities: vec!["jvm".into()],
                target_agent: None,
                priority: Priority::Normal,
                deadline_ms: None,
                created_by: None,
            },
            ttl,
        )
        .unwrap();
    assert_eq!(waiting.status, TaskStatus::Pending);
    let mut jvm = agent("j1");
    jvm.capabilities = vec!["jvm".into(), "rust".into()];
    a.register_agent(jvm, ttl).unwrap();
    let given = a.task(&waiting.id).unwrap();
    assert_eq!(
        (given.status, given.assigned_to.as_deref()),
        (TaskStatus::Assigned, Some("j1"))
    );
    // Agents not heard from within the time-to-live are inactive: listed only on request.
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(a.roster(false, 10).unwrap().is_empty());
    let all = a.roster(true, 10).unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|entry| !entry.active));
}

#[test]
fn an_older_change_arriving_after_a_withdrawal_does_not_bring_the_copy_back() {
    let (a, b, c) = (node("alpha"), node("beta"), node("gamma"));
    let memory = a.store.create(NewMemory::new("shared at first")).unwrap();
    sync(&a, &b);
    sync(&a, &c);
    // beta changes it; then, later, alpha makes it confidential (a withdrawal).
    b.store
        .update(
            memory.id,
            MemoryPatch {
                content: Some("changed on beta".into()),
                ..MemoryPatch::default()
            },
            None,
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    a.store
        .update(
            memory.id,
            MemoryPatch {
                confidentiality: Some(Confidentiality::Confidential),
                ..MemoryPatch::default()
            },
            None,
        )
        .unwrap();
    // gamma hears of the withdrawal first, then of beta's older change.
    pull(&a.store, &c.store, 50);
    assert!(c.store.get(memory.id).is_err(), "withdrawn on gamma");
    pull(&b.store, &c.store, 50);
    assert!(
        c.store.get(memory.id).is_err(),
        "an older change must not bring the withdrawn copy back"
    );
    pull(&a.store, &b.store, 50);
    assert!(b.store.get(memory.id).is_err(), "withdrawn on beta");
    assert_eq!(
        b.store.state_digest().unwrap(),
        c.store.state_digest().unwrap()
    );
    assert_eq!(
        a.store.state_digest().unwrap(),
        c.store.state_digest().unwrap()
    );
    assert_eq!(
        a.store.get(memory.id).unwrap().content,
        "shared at first",
        "alpha's confidential copy is its own"
    );
}
