//! The node's assembly: everything a command or `serve` needs before it can work — the
//! data directory made private, the engine opened on the configured database, the
//! embedding model loaded (or why not), the audit log, and the background jobs a
//! long-running node keeps (hourly purge and compaction, embedding what lacks a vector).
//! Every command goes through here, so a store is opened one way only.

use std::sync::Arc;

use anyhow::{Context, Result};
use haivemind_core::config::StorageBackend;
use haivemind_core::{Config, Embedder};
use haivemind_store::{Fusion, FusionMethod, Store, StoreOptions};
use serde_json::Value;

/// Opens the engine without the embedding model, for commands that never embed.
pub(crate) fn open(config: &Config) -> Result<Store> {
    open_store(config, None)
}

/// Opens the engine with the embedding model when it can be loaded (see [`load_model`]);
/// otherwise warns and opens it without, returning why semantic search is off.
pub(crate) fn open_with_model(config: &Config) -> Result<(Store, Option<String>)> {
    match load_model(config)? {
        Ok(model) => Ok((open_store(config, Some(model))?, None)),
        Err(problem) => {
            if config.embedding.enabled {
                tracing::warn!("semantic search is off, searches are full-text only: {problem}");
            }
            Ok((open_store(config, None)?, Some(problem)))
        }
    }
}

/// For a server (`serve`, `mcp`): opens the engine as [`open_with_model`] does, then
/// starts the background jobs of [`spawn_background_embedding`]. When the model is there,
/// it loads on a thread of its own while the store opens and its vector index loads on
/// another, so neither waits for the other: at 100k memories each takes about a third of
/// a second, and done one after the other the first search after `initialize` waited for
/// the index. A model that fails to load stops the server, as before.
pub(crate) fn open_serving(config: &Config) -> Result<Arc<Store>> {
    if !config.embedding.enabled || !haivemind_embed::MiniLm::is_fetched(&config.model_dir()) {
        let store = Arc::new(open_with_model(config)?.0);
        spawn_background_embedding(&store);
        return Ok(store);
    }
    let loading = Arc::new(LoadingModel::default());
    let loader = {
        let config = config.clone();
        std::thread::Builder::new()
            .name("load-model".into())
            .spawn(move || load_model(&config))
            .context("cannot start a thread to load the embedding model")?
    };
    let store = match open_store(config, Some(Arc::clone(&loading) as Arc<dyn Embedder>)) {
        Ok(store) => Arc::new(store),
        Err(error) => {
            loading.fail();
            let _ = loader.join();
            return Err(error);
        }
    };
    // Started before the model is in: loading the index needs only the model's id.
    spawn_background_embedding(&store);
    let loaded = match loader.join() {
        Ok(Ok(Ok(model))) if model.model_id() == haivemind_embed::MODEL_ID => Ok(model),
        Ok(Ok(Ok(model))) => Err(anyhow::anyhow!(
            "the embedding model loaded as {}, not {}",
            model.model_id(),
            haivemind_embed::MODEL_ID
        )),
        Ok(Ok(Err(problem))) => Err(anyhow::anyhow!("{problem}")),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(anyhow::anyhow!(
            "loading the embedding model failed unexpectedly"
        )),
    };
    match loaded {
        Ok(model) => {
            loading.finish(model);
            Ok(store)
        }
        Err(error) => {
            loading.fail();
            Err(error)
        }
    }
}

/// The embedding model while it loads: its id and length are known at once (they are
/// constants of the model crate), so the store can open and load its vector index;
/// embedding waits until the model is in, or fails if it never comes.
#[derive(Default)]
struct LoadingModel {
    model: std::sync::OnceLock<Option<Arc<dyn Embedder>>>,
}

impl LoadingModel {
    fn finish(&self, model: Arc<dyn Embedder>) {
        let _ = self.model.set(Some(model));
    }

    fn fail(&self) {
        let _ = self.model.set(None);
    }

    fn loaded(&self) -> Result<&Arc<dyn Embedder>, haivemind_core::EmbedError> {
        self.model.wait().as_ref().ok_or_else(|| {
            haivemind_core::EmbedError::Inference("the embedding model did not load".into())
        })
    }
}

impl Embedder for LoadingModel {
    fn model_id(&self) -> &str {
        haivemind_embed::MODEL_ID
    }

    fn dimensions(&self) -> usize {
        haivemind_embed::DIMENSIONS
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, haivemind_core::EmbedError> {
        self.loaded()?.embed(texts)
    }

    fn count_tokens(&self, text: &str) -> Option<usize> {
        self.loaded().ok()?.count_tokens(text)
    }
}

/// Opens the engine with the embedding model, or fails saying why it cannot be loaded:
/// for commands whose whole job is embedding.
pub(crate) fn open_requiring_model(config: &Config) -> Result<Store> {
    match load_model(config)? {
        Ok(model) => open_store(config, Some(model)),
        Err(problem) => anyhow::bail!("{problem}"),
    }
}

/// Opens this node's SQLite file whatever `storage.backend` says: for moving a store
/// between backends (`haivemind migrate`).
pub(crate) fn open_sqlite(config: &Config) -> Result<Store> {
    open_sqlite_store(config, None)
}

/// Opens (and migrates) a hub's PostgreSQL database: the configured one, or `url`.
pub(crate) fn open_hub_database(
    config: &Config,
    url: Option<&str>,
) -> Result<haivemind_store_postgres::Database> {
    let mut settings = config.storage.postgres.clone();
    if let Some(url) = url {
        settings.url = Some(haivemind_core::storage_config::DatabaseUrl::parse(url)?);
    }
    let database = haivemind_store_postgres::Database::open(&settings)?;
    tracing::info!(
        database = database.target(),
        vectors = database.vector_ranking().describe(),
        "connected to the hub's database"
    );
    Ok(database)
}

fn open_store(config: &Config, embedder: Option<Arc<dyn Embedder>>) -> Result<Store> {
    if config.storage.backend == StorageBackend::Postgres {
        make_data_dir_private(config)?;
        let database = open_hub_database(config, None)?;
        return Ok(Store::open_postgres(
            store_options(config, embedder),
            database,
        )?);
    }
    open_sqlite_store(config, embedder)
}

fn open_sqlite_store(config: &Config, embedder: Option<Arc<dyn Embedder>>) -> Result<Store> {
    make_data_dir_private(config)?;
    let path = config.database_path();
    Store::open(store_options(config, embedder))
        .with_context(|| format!("cannot open the memory database at {}", path.display()))
}

/// Opens the engine on a hub's PostgreSQL database: the configured one, or `url`.
pub(crate) fn open_hub_store(config: &Config, url: Option<&str>) -> Result<Store> {
    make_data_dir_private(config)?;
    let database = open_hub_database(config, url)?;
    Ok(Store::open_postgres(store_options(config, None), database)?)
}

/// The data directory holds the database (on SQLite), its WAL and the audit log: owner-only.
fn make_data_dir_private(config: &Config) -> Result<()> {
    let data_dir = config.data_dir();
    match haivemind_core::private_files::ensure_private_dir(&data_dir) {
        Ok(true) => tracing::warn!(
            path = %data_dir.display(),
            "the data directory was open to other users; it is now owner-only (0700)"
        ),
        Ok(false) => {}
        Err(error) => {
            return Err(error).with_context(|| {
                format!(
                    "cannot make the data directory {} private",
                    data_dir.display()
                )
            });
        }
    }
    Ok(())
}

fn store_options(config: &Config, embedder: Option<Arc<dyn Embedder>>) -> StoreOptions {
    StoreOptions {
        path: config.database_path(),
        machine_id: config.machine_id(),
        rules: config.memory_rules(),
        recover_days: config.memory.recover_days,
        max_clock_skew_ms: config.max_clock_skew_ms(),
        embedder,
        fusion: Fusion {
            method: match config.search.fusion.as_str() {
                "convex" => FusionMethod::Convex,
                _ => FusionMethod::ReciprocalRank,
            },
            full_text_weight: config.search.full_text_weight,
            vector_weight: config.search.vector_weight,
            rank_constant: config.search.rank_constant,
            depth: config.search.fusion_depth,
            min_similarity: config.search.min_similarity as f32,
            neighbour_weight: config.search.neighbour_weight,
        },
    }
}

/// Loads the embedding model, or says why semantic search is off: turned off in the
/// config, or not fetched. A model that is there but wrong or damaged is an error, since
/// running on would either hide the problem or make vectors no other node can compare with.
fn load_model(config: &Config) -> Result<Result<Arc<dyn Embedder>, String>> {
    if !config.embedding.enabled {
        return Ok(Err("embedding.enabled is false".into()));
    }
    let dir = config.model_dir();
    match haivemind_embed::MiniLm::load(&dir) {
        Ok(model) => Ok(Ok(Arc::new(model))),
        Err(haivemind_embed::LoadError::Missing { path }) => Ok(Err(format!(
            "no embedding model in {} ({} is missing; run scripts/fetch-model, or set HAIVEMIND_MODEL_DIR)",
            dir.display(),
            path.display()
        ))),
        Err(error) => Err(error).with_context(|| {
            format!(
                "cannot load the embedding model from {}; fetch it again with scripts/fetch-model, or set embedding.enabled to false for full-text search only",
                dir.display()
            )
        }),
    }
}

/// Removed records are compacted (`Store::compact_removed`) this many days after their
/// removal: `sync.compact_removed_after_days`, default 7.
pub(crate) fn compact_cutoff_ms(config: &Config) -> i64 {
    let days = config
        .sync
        .get("compact_removed_after_days")
        .and_then(Value::as_f64)
        .filter(|d| *d >= 0.0)
        .unwrap_or(7.0);
    haivemind_core::time_format::now_ms() - (days * 86_400_000.0) as i64
}

/// Every hour, on the current runtime: hard-deletes expired soft deletions, and compacts
/// the op log of records removed more than `sync.compact_removed_after_days` ago.
pub(crate) fn spawn_hourly_purge(store: &Arc<Store>, config: &Config) {
    let purge_store = Arc::clone(store);
    let config = config.clone();
    tokio::spawn(async move {
        let mut every_hour = tokio::time::interval(std::time::Duration::from_secs(3600));
        every_hour.tick().await;
        loop {
            every_hour.tick().await;
            let store = Arc::clone(&purge_store);
            let cutoff = compact_cutoff_ms(&config);
            let work = move || -> Result<(usize, usize), haivemind_store::StoreError> {
                let removed = (store.purge_expired()?, store.compact_removed(cutoff)?);
                // After the purge, which removes the file if it removed anything: a server
                // that is killed rather than stopped leaves a file at most an hour behind,
                // and the next start reads only the vectors written since.
                save_vector_index(&store);
                Ok(removed)
            };
            match tokio::task::spawn_blocking(work).await {
                Ok(Ok((purged, compacted))) if purged + compacted > 0 => {
                    tracing::info!(
                        purged,
                        compacted,
                        "purged expired deletions, compacted the op log"
                    )
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "purge failed"),
                _ => {}
            }
        }
    });
}

/// On a thread of its own: loads the vector index, then embeds the memories that lack a
/// vector of the loaded model, so the first search pays for neither.
fn spawn_background_embedding(store: &Arc<Store>) {
    if store.embedder_model().is_none() {
        return;
    }
    let store = Arc::clone(store);
    let spawned = std::thread::Builder::new()
        .name("embed-missing".into())
        .spawn(move || {
            // The index first: loading it takes most of a second at 100k memories, and the
            // first search would wait for it; embedding what lacks a vector can take far
            // longer, and searches pick its new vectors up as they go.
            if let Err(error) = store.warm_vector_index() {
                tracing::warn!(%error, "could not load the vector index");
            }
            // Loaded from every stored vector (no file yet, or one far behind): kept on
            // disk now, so the next start need not do it again.
            save_vector_index(&store);
            let mut reported = 0;
            let outcome = store.embed_missing(|p| {
                if p.total > 0
                    && (p.done == 0 || p.done >= reported + p.total / 10 || p.done >= p.total)
                {
                    reported = p.done;
                    tracing::info!(
                        done = p.done,
                        total = p.total,
                        "embedding memories that lack a vector"
                    );
                }
            });
            match outcome {
                Ok(p) if p.failed > 0 => {
                    tracing::warn!(failed = p.failed, "some memories could not be embedded")
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "background embedding stopped"),
            }
            if let Err(error) = store.warm_vector_index() {
                tracing::warn!(%error, "could not add new vectors to the index");
            }
            save_vector_index(&store);
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "could not start background embedding; run `haivemind reindex`");
    }
}

/// Keeps the vector index in its file beside the database when enough is new since the
/// file was read or written (`Store::save_vector_index`); a failure costs the next start
/// time, not data, so it is a warning.
pub(crate) fn save_vector_index(store: &Store) {
    match store.save_vector_index() {
        Ok(true) => tracing::debug!("vector index kept beside the database for the next start"),
        Ok(false) => {}
        Err(error) => tracing::warn!(
            %error,
            "could not keep the vector index beside the database; the next start reads every vector"
        ),
    }
}

/// The audit log, when `logging.audit_enabled`; a log that cannot be opened is reported
/// and auditing goes on without it rather than stopping the server.
pub(crate) fn open_audit(config: &Config) -> Option<Arc<haivemind_core::audit::AuditLog>> {
    if !config.logging.audit_enabled {
        return None;
    }
    match haivemind_core::audit::AuditLog::open(
        &config.audit_log_path(),
        config.audit_log_max_bytes(),
    ) {
        Ok(log) => Some(Arc::new(log)),
        Err(error) => {
            tracing::error!(%error, "audit log unavailable");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model that returns the same vector for every text.
    struct Fixed;

    impl Embedder for Fixed {
        fn model_id(&self) -> &str {
            "fixed"
        }
        fn dimensions(&self) -> usize {
            2
        }
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, haivemind_core::EmbedError> {
            Ok(texts.iter().map(|_| vec![0.6, 0.8]).collect())
        }
        fn count_tokens(&self, text: &str) -> Option<usize> {
            Some(text.split_whitespace().count())
        }
    }

    #[test]
    fn a_loading_model_names_the_model_at_once_and_embeds_once_it_is_in() {
        let loading = Arc::new(LoadingModel::default());
        // Known before the model is in (this would hang if it waited for it).
        assert_eq!(loading.model_id(), haivemind_embed::MODEL_ID);
        assert_eq!(loading.dimensions(), haivemind_embed::DIMENSIONS);
        let waiting = {
            let loading = Arc::clone(&loading);
            std::thread::spawn(move || loading.embed(&["disk full on web3", "two"]))
        };
        loading.finish(Arc::new(Fixed));
        let vectors = waiting.join().expect("thread").expect("embedded");
        assert_eq!(vectors, vec![vec![0.6, 0.8], vec![0.6, 0.8]]);
        assert_eq!(loading.count_tokens("three short words"), Some(3));
    }

    #[test]
    fn a_model_that_never_loads_fails_every_embedding_instead_of_waiting() {
        let loading = Arc::new(LoadingModel::default());
        let waiting = {
            let loading = Arc::clone(&loading);
            std::thread::spawn(move || loading.embed(&["anything"]))
        };
        loading.fail();
        let error = waiting.join().expect("thread").expect_err("no model");
        assert!(error.to_string().contains("did not load"), "{error}");
        assert_eq!(loading.count_tokens("anything"), None);
    }
}
