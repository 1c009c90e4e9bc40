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
    let store = open(options).expect("open store");
    Scratch { dir, store }
}

/// Which backend this run of the suite tests: `HAIVEMIND_TEST_BACKEND=postgres` runs it on
/// PostgreSQL (`scripts/test` runs it both ways), else SQLite.
pub fn on_postgres() -> bool {
    std::env::var("HAIVEMIND_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// Opens a store on the backend under test. On PostgreSQL, each distinct `options.path`
/// is a database of its own on the server at `HAIVEMIND_TEST_DATABASE_URL` (made on first
/// use), so opening the same path twice gives two handles on one store, as with a file.
pub fn open(options: StoreOptions) -> Result<Store, haivemind_store::StoreError> {
    if !on_postgres() {
        return Store::open(options);
    }
    use std::hash::{Hash, Hasher};
    let admin_url = std::env::var("HAIVEMIND_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("HAIVEMIND_TEST_BACKEND=postgres needs HAIVEMIND_TEST_DATABASE_URL (scripts/test sets both)")
    });
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    options.path.hash(&mut hasher);
    let name = format!("hv_store_{:016x}", hasher.finish());
    let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls).expect("connect");
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .expect("look up the database")
        .is_some();
    if !exists {
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create the test database");
    }
    let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
    let settings = haivemind_core::storage_config::PostgresConfig {
        url: Some(haivemind_core::storage_config::DatabaseUrl::parse(&url).unwrap()),
        pool_size: 8,
        sslmode: haivemind_core::storage_config::SslMode::Disable,
        ..Default::default()
    };
    let database = haivemind_store_postgres::Database::open(&settings)?;
    Store::open_postgres(options, database)
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
