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

/// The real embedding model, loaded once per test binary. `scripts/test` fetches it and sets
/// `HAIVEMIND_MODEL_DIR`; without it these tests cannot say anything, so they fail loudly.
pub fn model() -> std::sync::Arc<haivemind_embed::MiniLm> {
    static MODEL: std::sync::OnceLock<std::sync::Arc<haivemind_embed::MiniLm>> =
        std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = std::env::var_os("HAIVEMIND_MODEL_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| {
                    std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".local/share/haivemind/models/all-MiniLM-L6-v2")
                });
            let model = haivemind_embed::MiniLm::load(&dir).unwrap_or_else(|e| {
                panic!("these tests need the model (run scripts/fetch-model): {e}")
            });
            std::sync::Arc::new(model)
        })
        .clone()
}

/// A store on a fresh temp file with the real model loaded.
pub fn scratch_with_model() -> Scratch {
    scratch_with(|options| options.embedder = Some(model()))
}
