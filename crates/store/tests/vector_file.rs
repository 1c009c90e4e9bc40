//! The vector index kept in a file beside the SQLite database: a start reads it and then only
//! the rows written since, finds what a load of every stored vector finds, never uses a file
//! of another database or a damaged one, and never brings back a memory removed for good.
//! SQLite only: a hub's frontends read PostgreSQL each time.

mod common;

use std::path::Path;
use std::sync::Arc;

use haivemind_core::embedder::EmbedError;
use haivemind_core::{Embedder, MemoryId, MemoryPatch, NewMemory};
use haivemind_store::{Fusion, SearchQuery, Store, StoreOptions};

const DIMS: usize = 48;

/// A bag of words hashed into 48 numbers: cheap enough for thousands of memories, and
/// memories sharing a query's words rank first, as with a real model.
struct Words;

impl Embedder for Words {
    fn model_id(&self) -> &str {
        "test-words/1"
    }
    fn dimensions(&self) -> usize {
        DIMS
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts
            .iter()
            .map(|text| {
                let mut vector = [0f32; DIMS];
                for word in text.split_whitespace() {
                    let hash = word.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                    });
                    vector[(hash % DIMS as u64) as usize] += 1.0 + (hash >> 60) as f32 * 0.1;
                }
                let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                vector.iter().map(|x| x / norm).collect()
            })
            .collect())
    }
}

const VOCABULARY: &[&str] = &[
    "nginx",
    "postgres",
    "kafka",
    "redis",
    "deploy",
    "rollback",
    "certificate",
    "dns",
    "latency",
    "disk",
    "memory",
    "cpu",
    "backup",
    "restore",
    "replica",
    "leader",
    "timeout",
    "vacuum",
    "index",
    "cache",
    "queue",
    "broker",
    "proxy",
    "upstream",
    "pod",
    "node",
    "cluster",
    "volume",
    "snapshot",
    "alert",
    "pager",
    "budget",
    "quota",
    "token",
    "secret",
    "vault",
    "ingress",
    "route",
    "shard",
    "schema",
];

/// Six words per note, chosen by a fixed sequence, and a word of its own (so that no two
/// notes tie): the same notes every run.
fn notes(count: usize, seed: u64) -> Vec<String> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|i| {
            let words: Vec<&str> = (0..6)
                .map(|_| VOCABULARY[(next() % VOCABULARY.len() as u64) as usize])
                .collect();
            format!("{} note{seed}x{i}", words.join(" "))
        })
        .collect()
}

/// A handle on the file at `path` ranking by vectors alone, so that what a search returns
/// is what the index proposed (after the exact check).
fn open(path: &Path) -> Store {
    Store::open(StoreOptions {
        embedder: Some(Arc::new(Words)),
        fusion: Fusion {
            full_text_weight: 0.0,
            min_similarity: -1.0,
            neighbour_weight: 0.0,
            ..Fusion::default()
        },
        ..StoreOptions::new(path, "test-machine")
    })
    .expect("open the store")
}

fn fill(store: &Store, users: &[&str], notes: Vec<String>) -> Vec<MemoryId> {
    let memories = notes
        .into_iter()
        .enumerate()
        .map(|(i, note)| NewMemory {
            user_id: users[i % users.len()].to_string(),
            ..NewMemory::new(note)
        })
        .collect();
    store
        .create_batch(memories)
        .expect("store")
        .into_iter()
        .map(|m| m.id)
        .collect()
}

fn file_of(database: &Path) -> std::path::PathBuf {
    let mut file = database.as_os_str().to_os_string();
    file.push("-vectors");
    file.into()
}

/// The ids each query finds, unfiltered and for each user.
fn answers(store: &Store, users: &[&str]) -> Vec<Vec<MemoryId>> {
    let mut answers = Vec::new();
    for query in notes(12, 99) {
        let query = query
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        for user in std::iter::once(None).chain(users.iter().map(Some)) {
            let mut search = SearchQuery::new(query.clone());
            search.filter.user_id = user.map(|u| u.to_string());
            let results = store.search(&search).expect("search");
            answers.push(results.hits.into_iter().map(|h| h.memory.id).collect());
        }
    }
    answers
}

const USERS: &[&str] = &["ann", "bob", "cyd"];

/// Loads the index as a start does, then saves it as the background thread does; whether
/// the file was written (the load read a thousand rows or more from the database).
fn load_and_save(store: &Store) -> bool {
    store.warm_vector_index().expect("load");
    store.save_vector_index().expect("save")
}

#[test]
fn a_start_reads_its_file_then_only_what_was_written_since_and_finds_the_same() {
    if common::on_postgres() {
        return; // The file is kept beside a SQLite database only.
    }
    let dir = tempfile::tempdir().expect("a temporary folder");
    let database = dir.path().join("hv.sqlite3");
    let first = open(&database);
    let ids = fill(&first, USERS, notes(1_500, 1));
    assert!(load_and_save(&first), "1,500 rows read: worth a file");
    assert!(file_of(&database).exists());
    assert!(
        !first.save_vector_index().expect("save"),
        "nothing new since"
    );

    // After the file: new memories, one moved to another category, one deleted.
    let later = fill(
        &first,
        USERS,
        vec!["zeppelin hangar inspection".to_string()],
    );
    let moved = ids[10];
    first
        .update(
            moved,
            MemoryPatch {
                category: Some("runbooks".into()),
                ..MemoryPatch::default()
            },
            None,
        )
        .expect("update");
    first.soft_delete(ids[11], None).expect("delete");
    drop(first);

    let from_file = open(&database);
    assert!(
        !load_and_save(&from_file),
        "loaded from the file: only the three rows since were read from the database"
    );
    let found = from_file
        .search(&SearchQuery::new("zeppelin hangar"))
        .expect("search");
    assert_eq!(
        found.hits[0].memory.id, later[0],
        "a memory written after the file"
    );
    let mut in_runbooks = SearchQuery::new("anything");
    in_runbooks.filter.category = Some("runbooks".into());
    let found = from_file.search(&in_runbooks).expect("search");
    assert_eq!(
        found.hits.iter().map(|h| h.memory.id).collect::<Vec<_>>(),
        vec![moved],
        "a memory whose category changed after the file is filtered by the new one"
    );

    std::fs::remove_file(file_of(&database)).expect("remove the file");
    let from_database = open(&database);
    assert!(load_and_save(&from_database), "loaded every row");
    let expected = answers(&from_database, USERS);
    assert_eq!(answers(&from_file, USERS), expected);
    assert!(
        expected.iter().flatten().all(|id| *id != ids[11]),
        "the deleted memory is found by neither"
    );
}

#[test]
fn a_file_of_another_database_or_a_damaged_one_is_not_used() {
    if common::on_postgres() {
        return; // The file is kept beside a SQLite database only.
    }
    let dir = tempfile::tempdir().expect("a temporary folder");
    let (one, other) = (
        dir.path().join("one.sqlite3"),
        dir.path().join("other.sqlite3"),
    );
    for (database, seed) in [(&one, 1), (&other, 2)] {
        let store = open(database);
        fill(&store, USERS, notes(1_200, seed));
        assert!(load_and_save(&store));
    }
    let expected = answers(&open(&other), USERS);

    std::fs::copy(file_of(&one), file_of(&other)).expect("copy the file");
    let store = open(&other);
    assert!(
        load_and_save(&store),
        "another database's file is not used: every row was read"
    );
    assert_eq!(answers(&store, USERS), expected);
    drop(store);

    let mut bytes = std::fs::read(file_of(&other)).expect("the file");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(file_of(&other), bytes).expect("damage the file");
    let store = open(&other);
    assert!(
        load_and_save(&store),
        "a damaged file is not used: every row was read"
    );
    assert_eq!(answers(&store, USERS), expected);
}

#[test]
fn a_memory_removed_for_good_never_comes_back_through_the_file() {
    if common::on_postgres() {
        return; // The file is kept beside a SQLite database only.
    }
    let dir = tempfile::tempdir().expect("a temporary folder");
    let database = dir.path().join("hv.sqlite3");
    let users = ["ann", "erin-erased"];
    let server = open(&database);
    fill(&server, &users, notes(1_200, 3));
    assert!(load_and_save(&server));

    // Another process (the CLI, without the model) erases a user: the file goes with them.
    let cli = Store::open(StoreOptions::new(&database, "test-machine")).expect("open");
    assert_eq!(cli.erase_user("erin-erased", true).expect("erase"), 600);
    assert!(
        !file_of(&database).exists(),
        "the file held the erased memories' codes"
    );

    // The server's index still holds them until its recount; a file it writes must not.
    fill(&server, &["ann"], notes(1_000, 4));
    assert!(load_and_save(&server));
    let bytes = std::fs::read(file_of(&database)).expect("the new file");
    assert!(!bytes.windows(11).any(|w| w == b"erin-erased"));
    drop(server);

    let restarted = open(&database);
    assert!(!load_and_save(&restarted), "loaded from the new file");
    let mut theirs = SearchQuery::new("nginx postgres kafka");
    theirs.filter.user_id = Some("erin-erased".into());
    assert!(restarted.search(&theirs).expect("search").hits.is_empty());
    let everyone = restarted
        .search(&SearchQuery::new("nginx postgres kafka"))
        .expect("search");
    assert!(everyone.hits.iter().all(|h| h.memory.user_id == "ann"));
}
