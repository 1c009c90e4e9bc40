//! Every lifecycle path of a memory: create, read, update with history, soft delete,
//! recover, hard delete, bulk delete, purge, GDPR export and erase, import, merge.

mod common;

use common::{memory, scratch, scratch_with};
use haivemind_core::memory::json;
use haivemind_core::{Confidentiality, MemoryId, MemoryPatch, Scope};
use haivemind_store::{
    DuplicateQuery, ImportOutcome, MemoryFilter, OpKind, SearchQuery, StoreError,
};
use serde_json::json;

#[test]
fn a_stored_memory_reads_back_with_every_field_and_exact_metadata() {
    let s = scratch();
    let metadata = json!({
        "nested": {"list": [1, 2.5, true, null, "x", {"deep": [[]]}]},
        "big": 9007199254740993u64,
        "neg": -1.5e-7,
        "unicode": "héllo ☃"
    });
    let mut new = memory("nginx on proxy2 returns 502 after reload");
    new.category = "infrastructure".into();
    new.context = Some("found during deploy".into());
    new.tags = vec!["nginx".into(), "proxy2".into()];
    new.metadata = metadata.as_object().unwrap().clone();
    new.user_id = "lance".into();
    new.project = Some("edge".into());
    new.agent_id = Some("claude-1".into());
    new.scope = Scope::TeamGlobal;
    new.confidentiality = Confidentiality::Internal;
    let stored = s.store.create(new).unwrap();
    let read = s.store.get(stored.id).unwrap();
    assert_eq!(read, stored);
    assert_eq!(serde_json::Value::Object(read.metadata.clone()), metadata);
    assert_eq!(read.machine_id, "test-machine");
    assert_eq!(read.version, 1);
    let rendered = json::to_json(&read);
    assert_eq!(rendered["metadata"], metadata);
    assert_eq!(rendered["scope"], "team-global");
    assert_eq!(rendered["confidentiality_level"], "internal");
}

#[test]
fn bad_input_names_the_field() {
    let s = scratch();
    let err = s.store.create(memory("   ")).unwrap_err();
    assert_eq!(err.to_string(), "content: must not be empty");
    let mut bad = memory("x");
    bad.category = "infra".into();
    let err = s.store.create(bad).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("category: unknown value \"infra\""),
        "{err}"
    );
    assert!(err.is_caller_error());
    let err = s
        .store
        .create(memory(&"x".repeat(64 * 1024 + 1)))
        .unwrap_err();
    assert!(
        err.to_string().starts_with("content: is 65537 bytes"),
        "{err}"
    );
    let missing = MemoryId::generate();
    assert!(
        matches!(s.store.get(missing), Err(StoreError::MemoryNotFound { id }) if id == missing)
    );
}

#[test]
fn updates_bump_the_version_and_keep_history() {
    let s = scratch();
    let m = s.store.create(memory("ES heap at 80%")).unwrap();
    let patch = MemoryPatch {
        content: Some("ES heap at 95%".into()),
        tags: Some(vec!["es".into()]),
        ..MemoryPatch::default()
    };
    let updated = s.store.update(m.id, patch, Some("agent-7")).unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(updated.content, "ES heap at 95%");
    assert!(updated.updated_at_ms >= m.updated_at_ms);
    assert_eq!(updated.created_at_ms, m.created_at_ms);
    let history = s.store.history(m.id).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].action, "update");
    assert_eq!(history[1].agent_id.as_deref(), Some("agent-7"));
    assert_eq!(
        history[1].changes["content"],
        json!({"from": "ES heap at 80%", "to": "ES heap at 95%"})
    );
    assert_eq!(
        history[1].changes["tags"],
        json!({"from": [], "to": ["es"]})
    );
    // Setting the same values again changes nothing and records nothing.
    let same = MemoryPatch {
        content: Some("ES heap at 95%".into()),
        ..MemoryPatch::default()
    };
    assert_eq!(s.store.update(m.id, same, None).unwrap().version, 2);
    assert_eq!(s.store.history(m.id).unwrap().len(), 2);
    // The old text is no longer found, the new one is.
    assert_eq!(s.store.search(&SearchQuery::new("95")).unwrap().total, 1);
    assert_eq!(s.store.search(&SearchQuery::new("80")).unwrap().total, 0);
}

#[test]
fn soft_deleted_memories_vanish_from_every_read_until_recovered() {
    let s = scratch();
    let m = s
        .store
        .create(memory("redis eviction storm on cache1"))
        .unwrap();
    let deleted = s.store.soft_delete(m.id, Some("stale".into())).unwrap();
    assert!(deleted.deletion.is_some());
    assert!(matches!(
        s.store.get(m.id),
        Err(StoreError::MemoryDeleted { .. })
    ));
    assert_eq!(
        s.store
            .search(&SearchQuery::new("redis eviction"))
            .unwrap()
            .total,
        0
    );
    let recent = s.store.recent(&haivemind_store::RecentQuery {
        filter: MemoryFilter::default(),
        hours: 24,
        limit: 10,
    });
    assert!(recent.unwrap().is_empty());
    assert!(matches!(
        s.store.update(
            m.id,
            MemoryPatch {
                content: Some("x".into()),
                ..Default::default()
            },
            None
        ),
        Err(StoreError::MemoryDeleted { .. })
    ));
    let (listed, total) = s
        .store
        .list_deleted(&MemoryFilter::default(), 10, 0)
        .unwrap();
    assert_eq!(total, 1);
    assert_eq!(
        listed[0].deletion.as_ref().unwrap().reason.as_deref(),
        Some("stale")
    );
    let recovered = s.store.recover(m.id).unwrap();
    assert!(recovered.deletion.is_none());
    assert_eq!(s.store.get(m.id).unwrap().content, m.content);
    assert_eq!(
        s.store.search(&SearchQuery::new("eviction")).unwrap().total,
        1
    );
    assert!(matches!(
        s.store.recover(m.id),
        Err(StoreError::NotDeleted { .. })
    ));
}

#[test]
fn hard_delete_removes_content_everywhere_and_cannot_be_undone() {
    let s = scratch();
    let secret = "the root password hint is bluefinch";
    let m = s.store.create(memory(secret)).unwrap();
    s.store
        .update(
            m.id,
            MemoryPatch {
                // The history now holds the old text as "from": it must go too.
                content: Some("the hint was bluefinch-ish".into()),
                tags: Some(vec!["x".into()]),
                ..Default::default()
            },
            None,
        )
        .unwrap();
    s.store.hard_delete(m.id, Some("leaked".into())).unwrap();
    assert!(matches!(s.store.get(m.id), Err(StoreError::Erased { .. })));
    assert_eq!(
        s.store
            .search(&SearchQuery::new("bluefinch"))
            .unwrap()
            .total,
        0
    );
    assert!(
        matches!(s.store.history(m.id), Err(StoreError::Erased { .. })),
        "no history is left to read"
    );
    let ops = s.store.ops_since(0, 100).unwrap();
    assert_eq!(ops.last().unwrap().op, OpKind::HardDelete);
    for op in &ops {
        assert!(
            !op.payload.to_string().contains("bluefinch"),
            "op {op:?} still holds content"
        );
    }
    // An old copy arriving later (a backup, a peer) does not bring it back.
    assert_eq!(s.store.import(m.clone()).unwrap(), ImportOutcome::Erased);
    assert!(s.store.get(m.id).is_err());
    assert!(matches!(
        s.store.recover(m.id),
        Err(StoreError::Erased { .. })
    ));
    // No table of either backend holds the text any more.
    for table in haivemind_store::tables::TABLES {
        s.store
            .read_rows::<StoreError>(table, |cells| {
                assert!(
                    !format!("{cells:?}").contains("bluefinch"),
                    "{} still holds erased text",
                    table.name
                );
                Ok(())
            })
            .unwrap();
    }
    if common::on_postgres() {
        return; // Below: SQLite's own files.
    }
    // And the files no longer hold the text, even while the store is open.
    let wal_now = std::fs::read(s.dir.path().join("hv.sqlite3-wal")).unwrap_or_default();
    assert!(
        !wal_now.windows(9).any(|w| w == b"bluefinch"),
        "WAL still holds erased text while open"
    );
    drop(s.store);
    let bytes = std::fs::read(s.dir.path().join("hv.sqlite3")).unwrap();
    let wal = std::fs::read(s.dir.path().join("hv.sqlite3-wal")).unwrap_or_default();
    let needle = b"bluefinch";
    assert!(!bytes.windows(needle.len()).any(|w| w == needle));
    assert!(
        !wal.windows(needle.len()).any(|w| w == needle),
        "WAL still holds erased text"
    );
}

#[test]
fn bulk_delete_counts_first_and_deletes_only_with_confirm() {
    let s = scratch();
    for i in 0..7 {
        let mut m = memory(&format!("old deployment note {i}"));
        m.category = "deployments".into();
        s.store.create(m).unwrap();
    }
    s.store.create(memory("keep me")).unwrap();
    let filter = MemoryFilter {
        category: Some("deployments".into()),
        ..MemoryFilter::default()
    };
    let dry = s.store.bulk_delete(&filter, false, None, false).unwrap();
    assert_eq!((dry.matched, dry.deleted), (7, 0));
    assert_eq!(s.store.stats().unwrap().live, 8);
    let done = s
        .store
        .bulk_delete(&filter, false, Some("cleanup".into()), true)
        .unwrap();
    assert_eq!((done.matched, done.deleted), (7, 7));
    let stats = s.store.stats().unwrap();
    assert_eq!((stats.live, stats.deleted), (1, 7));
    let err = s
        .store
        .bulk_delete(&MemoryFilter::default(), true, None, true)
        .unwrap_err();
    assert!(err.to_string().starts_with("filters:"), "{err}");
    let hard = s.store.bulk_delete(&filter, true, None, true).unwrap();
    assert_eq!(
        hard.deleted, 0,
        "soft-deleted memories are not live, so not matched"
    );
}

#[test]
fn purge_removes_soft_deleted_memories_past_the_recovery_window() {
    let s = scratch_with(|o| o.recover_days = 0);
    let gone = s.store.create(memory("to be purged")).unwrap();
    let live = s.store.create(memory("still here")).unwrap();
    s.store.soft_delete(gone.id, None).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(s.store.purge_expired().unwrap(), 1);
    assert!(matches!(
        s.store.get(gone.id),
        Err(StoreError::Erased { .. })
    ));
    assert!(s.store.get(live.id).is_ok());
    let kept = scratch();
    let m = kept.store.create(memory("recent delete")).unwrap();
    kept.store.soft_delete(m.id, None).unwrap();
    assert_eq!(kept.store.purge_expired().unwrap(), 0);
    assert!(kept.store.recover(m.id).is_ok());
}

#[test]
fn gdpr_export_and_erase_cover_all_of_a_users_memories() {
    let s = scratch();
    for text in [
        "alice likes rust",
        "alice's laptop is mbp-7",
        "alice deleted this",
    ] {
        let mut m = memory(text);
        m.user_id = "alice".into();
        m.confidentiality = Confidentiality::Pii;
        s.store.create(m).unwrap();
    }
    s.store.create(memory("bob's note")).unwrap();
    let last = s.store.search(&SearchQuery::new("deleted")).unwrap().hits[0]
        .memory
        .id;
    s.store.soft_delete(last, None).unwrap();
    let export = s.store.export_user("alice").unwrap();
    assert_eq!(
        export.memories.len(),
        3,
        "soft-deleted memories are the user's data too"
    );
    let csv = haivemind_store::csv_of_memories(export.memories.iter().map(|(m, _)| m));
    assert_eq!(csv.lines().count(), 4);
    assert!(csv.starts_with("id,content,category"));
    assert!(csv.contains("alice's laptop is mbp-7"));
    assert!(matches!(
        s.store.erase_user("alice", false),
        Err(StoreError::ConfirmRequired { .. })
    ));
    assert_eq!(s.store.erase_user("alice", true).unwrap(), 3);
    assert!(s.store.export_user("alice").unwrap().memories.is_empty());
    assert_eq!(s.store.stats().unwrap().live, 1);
    let erase_ops = s
        .store
        .ops_since(0, 100)
        .unwrap()
        .into_iter()
        .filter(|op| op.op == OpKind::Erase)
        .count();
    assert_eq!(erase_ops, 3);
}

#[test]
fn import_keeps_ids_and_is_idempotent() {
    let source = scratch();
    let m = source.store.create(memory("imported knowledge")).unwrap();
    let target = scratch();
    assert_eq!(
        target.store.import(m.clone()).unwrap(),
        ImportOutcome::Created
    );
    assert_eq!(
        target.store.import(m.clone()).unwrap(),
        ImportOutcome::AlreadyPresent
    );
    let read = target.store.get(m.id).unwrap();
    assert_eq!(read.created_at_ms, m.created_at_ms);
    assert_eq!(read.machine_id, "test-machine");
}

#[test]
fn duplicates_are_found_and_merged() {
    let s = scratch();
    let a = s
        .store
        .create(memory("Elasticsearch on elastic3 ran out of JVM heap"))
        .unwrap();
    let mut b = memory("elasticsearch on elastic3 ran out of jvm heap!");
    b.tags = vec!["es".into()];
    b.metadata = json!({"ticket": "OPS-1"}).as_object().unwrap().clone();
    let b = s.store.create(b).unwrap();
    s.store.create(memory("nginx reload fixed proxy2")).unwrap();
    let groups = s
        .store
        .find_duplicates(&DuplicateQuery {
            threshold: 0.9,
            filter: MemoryFilter::default(),
            limit: 10,
        })
        .unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].keep, a.id);
    assert_eq!(groups[0].duplicates, vec![b.id]);
    let outcome = s.store.merge(a.id, &[b.id], None).unwrap();
    assert_eq!(outcome.kept.tags, vec!["es"]);
    assert_eq!(outcome.kept.metadata["ticket"], "OPS-1");
    assert!(matches!(
        s.store.get(b.id),
        Err(StoreError::MemoryDeleted { .. })
    ));
    let (deleted, _) = s
        .store
        .list_deleted(&MemoryFilter::default(), 10, 0)
        .unwrap();
    assert_eq!(
        deleted[0].deletion.as_ref().unwrap().reason,
        Some(format!("merged into {}", a.id))
    );
    let err = s.store.merge(a.id, &[a.id], None).unwrap_err();
    assert!(err.to_string().starts_with("duplicate_ids[0]"), "{err}");
}

#[test]
fn every_change_lands_in_the_op_log_with_increasing_stamps() {
    let s = scratch();
    let m = s.store.create(memory("first")).unwrap();
    s.store
        .update(
            m.id,
            MemoryPatch {
                content: Some("second".into()),
                ..Default::default()
            },
            None,
        )
        .unwrap();
    s.store.soft_delete(m.id, None).unwrap();
    s.store.recover(m.id).unwrap();
    let mut private = memory("only here");
    private.scope = Scope::Private;
    s.store.create(private).unwrap();
    let mut confidential = memory("secret here");
    confidential.confidentiality = Confidentiality::Confidential;
    s.store.create(confidential).unwrap();
    let ops = s.store.ops_since(0, 100).unwrap();
    let kinds: Vec<OpKind> = ops.iter().map(|op| op.op).collect();
    assert_eq!(
        kinds,
        [
            OpKind::Create,
            OpKind::Update,
            OpKind::SoftDelete,
            OpKind::Recover,
            OpKind::Create,
            OpKind::Create
        ]
    );
    assert!(ops.windows(2).all(|w| w[0].stamp < w[1].stamp));
    assert!(ops.iter().all(|op| op.stamp.origin == "test-machine"));
    assert_eq!(ops[1].payload["content"], "second");
    assert_eq!(ops[1].payload["version"], 2);
    let shareable: Vec<bool> = ops.iter().map(|op| op.shareable).collect();
    assert_eq!(shareable, [true, true, true, true, false, false]);
    assert_eq!(s.store.ops_since(ops[3].seq, 100).unwrap().len(), 2);
}

#[test]
fn merge_refuses_to_cross_users_or_lower_protection_and_names_the_argument() {
    let s = scratch();
    let keep = s.store.create(memory("deploy notes for shop")).unwrap();
    let mut other_user = memory("deploy notes for shop");
    other_user.user_id = "bob".into();
    let other_user = s.store.create(other_user).unwrap();
    let mut secret = memory("deploy notes for shop");
    secret.confidentiality = Confidentiality::Pii;
    let secret = s.store.create(secret).unwrap();
    let err = s.store.merge(keep.id, &[other_user.id], None).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("duplicate_ids[0]: belongs to user \"bob\""),
        "{err}"
    );
    let err = s.store.merge(keep.id, &[secret.id], None).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("duplicate_ids[0]: is project-shared / pii"),
        "{err}"
    );
    // The other way round is fine: the normal memory folds into the protected one.
    assert!(s.store.merge(secret.id, &[keep.id], None).is_ok());
    let err = s
        .store
        .merge(MemoryId::generate(), &[secret.id], None)
        .unwrap_err();
    assert!(err.to_string().starts_with("keep_id: memory"), "{err}");
    let fresh = s.store.create(memory("another")).unwrap();
    let err = s
        .store
        .merge(secret.id, &[fresh.id, fresh.id], None)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "duplicate_ids[1]: repeats duplicate_ids[0]"
    );
}

#[test]
fn removals_always_replicate_even_for_memories_restricted_later() {
    let s = scratch();
    let m = s
        .store
        .create(memory("was shared, then marked pii"))
        .unwrap();
    s.store
        .update(
            m.id,
            MemoryPatch {
                confidentiality: Some(Confidentiality::Pii),
                ..Default::default()
            },
            None,
        )
        .unwrap();
    s.store.hard_delete(m.id, None).unwrap();
    let ops = s.store.ops_since(0, 10).unwrap();
    assert!(ops[0].shareable, "the create was shared");
    assert_eq!(
        ops[1].op,
        haivemind_store::OpKind::Withdraw,
        "the pii version never leaves: peers are told to drop their copy"
    );
    assert!(
        ops[1].payload.get("content").is_none(),
        "without the content"
    );
    assert!(
        ops[2].shareable,
        "so peers holding the old copy must learn of the removal"
    );
}

#[test]
fn a_purge_leaves_recovered_memories_alone() {
    let s = scratch_with(|o| o.recover_days = 0);
    let m = s.store.create(memory("deleted then recovered")).unwrap();
    s.store.soft_delete(m.id, None).unwrap();
    s.store.recover(m.id).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(s.store.purge_expired().unwrap(), 0);
    assert!(s.store.get(m.id).is_ok());
}
