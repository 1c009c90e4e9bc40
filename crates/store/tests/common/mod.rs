//! Shared set-up for the engine's integration tests: a store on a fresh temp file.
#![allow(dead_code)]

use haivemind_core::NewMemory;
use haivemind_store::{Store, StoreOptions};
use tempfile::TempDir;

pub struct Scratch {
    pub dir: TempDir,
    pub store: Store,
}

pub fn scratch() -> Scratch {
    scratch_with(|_| {})
}

pub fn scratch_with(adjust: impl FnOnce(&mut StoreOptions)) -> Scratch {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = StoreOptions::new(dir.path().join("hv.sqlite3"), "test-machine");
    adjust(&mut options);
    let store = Store::open(options).expect("open store");
    Scratch { dir, store }
}

pub fn memory(content: &str) -> NewMemory {
    NewMemory::new(content)
}
