//! The file: migrations on an existing file, reopening, and concurrent writers.

mod common;

use std::sync::Arc;

use common::memory;
use haivemind_store::{SearchQuery, Store, StoreError, StoreOptions, migrations};

#[test]
fn reopening_an_existing_file_keeps_everything_and_migrates_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/hv.sqlite3");
    let id = {
        let store = Store::open(StoreOptions::new(&path, "m")).unwrap();
        store.create(memory("survives a restart")).unwrap().id
    };
    let store = Store::open(StoreOptions::new(&path, "m")).unwrap();
    assert_eq!(store.get(id).unwrap().content, "survives a restart");
    assert_eq!(
        store.stats().unwrap().schema_version,
        migrations::SCHEMA_VERSION
    );
    assert_eq!(store.search(&SearchQuery::new("restart")).unwrap().total, 1);
}

#[test]
fn a_file_from_a_newer_binary_is_refused_not_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hv.sqlite3");
    drop(Store::open(StoreOptions::new(&path, "m")).unwrap());
    {
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection.pragma_update(None, "user_version", 999).unwrap();
    }
    let err = Store::open(StoreOptions::new(&path, "m")).err().unwrap();
    assert!(matches!(err, StoreError::SchemaTooNew { found: 999, .. }));
    assert!(err.to_string().contains("hv.sqlite3"), "{err}");
}

#[test]
fn a_fresh_file_is_migrated_from_version_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hv.sqlite3");
    {
        // An empty database someone created by hand: version 0.
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch("CREATE TABLE unrelated (x)")
            .unwrap();
    }
    let store = Store::open(StoreOptions::new(&path, "m")).unwrap();
    store.create(memory("works")).unwrap();
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, migrations::SCHEMA_VERSION);
}

#[test]
fn eight_threads_and_eight_handles_write_four_thousand_memories_each_way() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hv.sqlite3");
    // One shared handle, eight threads.
    let shared = Arc::new(Store::open(StoreOptions::new(&path, "m")).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&shared);
            std::thread::spawn(move || {
                for i in 0..500 {
                    store
                        .create(memory(&format!("shared writer {t} note {i}")))
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    // Eight handles on the same file, as separate processes would have.
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let store = Store::open(StoreOptions::new(&path, format!("proc{t}"))).unwrap();
                for i in 0..500 {
                    store
                        .create(memory(&format!("separate writer {t} note {i}")))
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let stats = shared.stats().unwrap();
    assert_eq!(stats.live, 8000);
    assert_eq!(stats.op_log_entries, 8000);
    for t in 0..8 {
        assert_eq!(stats.by_machine[&format!("proc{t}")], 500);
    }
    let separate = shared.search(&SearchQuery::new("separate")).unwrap();
    assert_eq!(
        (separate.total, separate.total_exact),
        (1000, false),
        "counting stops at 1000"
    );
    let ops = shared.ops_since(0, 10_000).unwrap();
    let mut stamps: Vec<_> = ops.iter().map(|op| op.stamp.time).collect();
    let before = stamps.len();
    stamps.sort_unstable();
    stamps.dedup();
    assert_eq!(stamps.len(), before, "every stamp on one file is unique");
    let integrity: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}
