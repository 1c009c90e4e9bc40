//! Backups taken while the store takes writes, restores that prove themselves, and a
//! restored node rejoining its fleet without bringing back what was erased since.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use haivemind_core::NewMemory;
use haivemind_store::backup::{read_manifest, restore};
use haivemind_store::{Store, StoreError, StoreOptions, VersionVector};

fn open(path: &std::path::Path, machine: &str) -> Store {
    Store::open(StoreOptions::new(path, machine)).unwrap()
}

fn pull(from: &Store, to: &Store) {
    loop {
        let seen: VersionVector = to.version_vector().unwrap();
        let ops = from.ops_after(&seen, 50).unwrap();
        if ops.is_empty() {
            return;
        }
        to.apply_remote(&ops).unwrap();
    }
}

fn sync(a: &Store, b: &Store) {
    pull(a, b);
    pull(b, a);
}

#[test]
fn a_backup_taken_during_writes_is_consistent_and_restores_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir.path().join("live.sqlite3"), "alpha"));
    for i in 0..200 {
        store
            .create(NewMemory::new(format!("before the backup {i}")))
            .unwrap();
    }
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (store, writing) = (Arc::clone(&store), Arc::clone(&writing));
        std::thread::spawn(move || {
            let mut written = 0;
            while writing.load(Ordering::Relaxed) {
                store
                    .create(NewMemory::new(format!("during the backup {written}")))
                    .unwrap();
                written += 1;
            }
            written
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    let backup = dir.path().join("alpha.hvbackup");
    let manifest = store.backup_to(&backup).unwrap();
    writing.store(false, Ordering::Relaxed);
    let during = writer.join().unwrap();
    assert!(during > 0, "the writer ran beside the backup");
    assert!(manifest.memories >= 200 && manifest.memories < 200 + during + 1);
    assert_eq!(manifest.machine_id, "alpha");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a backup is owner-only");
    }
    assert_eq!(read_manifest(&backup).unwrap(), manifest);
    assert!(
        matches!(store.backup_to(&backup), Err(StoreError::Invalid(_))),
        "a backup never overwrites"
    );

    let target = dir.path().join("restored/haivemind.sqlite3");
    let restored_manifest = restore(&backup, &target, false).unwrap();
    assert_eq!(restored_manifest, manifest);
    let restored = open(&target, "alpha");
    assert_eq!(restored.stats().unwrap().live, manifest.memories);
    assert_eq!(restored.state_digest().unwrap(), manifest.state_digest);
    assert_eq!(restored.table_digest().unwrap(), manifest.table_digest);
    drop(restored);

    // A database that holds data is replaced only with --force, and then kept aside.
    let refused = restore(&backup, &target, false).unwrap_err();
    assert!(refused.to_string().contains("--force"), "{refused}");
    restore(&backup, &target, true).unwrap();
    assert!(
        dir.path()
            .join("restored/haivemind.sqlite3.before-restore")
            .exists()
    );
}

#[test]
fn a_damaged_or_edited_backup_is_refused_and_nothing_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("live.sqlite3"), "alpha");
    let memory = store
        .create(NewMemory::new("the deploy key lives in vault"))
        .unwrap();
    let backup = dir.path().join("b.hvbackup");
    store.backup_to(&backup).unwrap();
    {
        let edit = rusqlite::Connection::open(&backup).unwrap();
        edit.execute(
            "UPDATE memories SET content = 'the deploy key is hunter2', hlc = hlc + 1 WHERE id = ?1",
            [memory.id.to_string()],
        )
        .unwrap();
    }
    let target = dir.path().join("restored.sqlite3");
    let error = restore(&backup, &target, false).unwrap_err();
    assert!(error.to_string().contains("do not match"), "{error}");
    assert!(!target.exists(), "nothing restored");

    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, b"not a database at all").unwrap();
    assert!(restore(&garbage, &target, false).is_err());
    assert!(!target.exists());
}

#[test]
fn a_restored_node_rejoins_without_resurrecting_what_was_erased_since() {
    let dir = tempfile::tempdir().unwrap();
    let alpha = open(&dir.path().join("alpha.sqlite3"), "alpha");
    let beta = open(&dir.path().join("beta.sqlite3"), "beta");
    let secret = alpha
        .create(NewMemory::new("the old root password was hunter2"))
        .unwrap();
    let kept = alpha.create(NewMemory::new("cache7 runs redis 7")).unwrap();
    sync(&alpha, &beta);
    let backup = dir.path().join("alpha.hvbackup");
    alpha.backup_to(&backup).unwrap();

    // After the backup: alpha erases the secret and writes more; beta hears of it.
    alpha.hard_delete(secret.id, None).unwrap();
    let later = alpha
        .create(NewMemory::new("cache7 moved to redis 8"))
        .unwrap();
    sync(&alpha, &beta);
    drop(alpha);

    // alpha's disk is lost; it is restored from the backup and syncs with beta.
    let restored_path = dir.path().join("new-disk/alpha.sqlite3");
    restore(&backup, &restored_path, false).unwrap();
    let alpha = open(&restored_path, "alpha");
    assert!(
        alpha.get(secret.id).is_ok(),
        "the backup predates the erasure"
    );
    sync(&alpha, &beta);
    assert!(
        alpha.get(secret.id).is_err(),
        "the erasure reached the restored node"
    );
    assert!(
        beta.get(secret.id).is_err(),
        "and the old copy did not come back to beta"
    );
    assert!(alpha.get(kept.id).is_ok());
    assert_eq!(
        alpha.get(later.id).unwrap().content,
        "cache7 moved to redis 8",
        "alpha's own writes since the backup came back from beta"
    );
    assert_eq!(alpha.state_digest().unwrap(), beta.state_digest().unwrap());
    // New writes on the restored node replicate as usual.
    let fresh = alpha.create(NewMemory::new("after the restore")).unwrap();
    sync(&alpha, &beta);
    assert!(beta.get(fresh.id).is_ok());
}
