//! `haivemind bench hybrid`: store with embedding, hybrid search with query embedding, and
//! the vector index's recall@10 against an exact scan, at each corpus size.
//!
//! Embedding 100,000 notes with the real model would take the better part of an hour on two
//! cores, so the corpus's vectors are made from a pool of 1,000 real note vectors: each
//! memory gets a pool vector mixed with a second one and noise, then normalised. That keeps
//! the geometry of real vectors (clusters, not uniform noise), which is what the scan's cost
//! and the quantised index's recall depend on. Everything that is timed uses the real model:
//! `store_memory` embeds its note, and every search embeds its (never repeated) query.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use haivemind_core::embedder::EmbedError;
use haivemind_core::{Embedder, NewMemory};
use haivemind_store::{Fusion, SearchQuery, Store, StoreOptions};
use serde_json::json;

use crate::bench::{
    Corpus, Rng, ScratchDir, TextSource, fill, latency_row, print_latency_table, summarize,
};

const POOL: usize = 1_000;

/// The real model, or (while the corpus is filled) vectors made from a pool of real ones.
struct BenchEmbedder {
    real: haivemind_embed::MiniLm,
    pool: Vec<Vec<f32>>,
    synthesise: AtomicBool,
    state: AtomicU64,
}

impl BenchEmbedder {
    fn synthetic(&self) -> Vec<f32> {
        let next = || {
            let mut x = self.state.load(Ordering::Relaxed);
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.state.store(x, Ordering::Relaxed);
            x
        };
        let a = &self.pool[(next() % POOL as u64) as usize];
        let b = &self.pool[(next() % POOL as u64) as usize];
        let mut v: Vec<f32> = a
            .iter()
            .zip(b)
            .map(|(x, y)| {
                let noise = ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.05;
                0.7 * x + 0.3 * y + noise
            })
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }
}

impl Embedder for BenchEmbedder {
    fn model_id(&self) -> &str {
        self.real.model_id()
    }
    fn dimensions(&self) -> usize {
        self.real.dimensions()
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if !self.synthesise.load(Ordering::Relaxed) {
            return self.real.embed(texts);
        }
        Ok(texts.iter().map(|_| self.synthetic()).collect())
    }
}

/// Runs the hybrid benchmark and prints its table.
pub fn run(
    config: &haivemind_core::Config,
    sizes: &[usize],
    queries: usize,
    backend: crate::locomo::Backend,
    json_output: bool,
) -> Result<()> {
    let model_dir = &config.model_dir();
    let real = haivemind_embed::MiniLm::load(model_dir)
        .with_context(|| format!("cannot load the model from {}", model_dir.display()))?;
    let text = TextSource::new(Corpus::Zipf);
    let mut rng = Rng(0xC0FF_EE00_D15E_A5E5);
    eprintln!("embedding a pool of {POOL} real notes...");
    let pool_notes: Vec<String> = (0..POOL).map(|i| text.note(&mut rng, i)).collect();
    let refs: Vec<&str> = pool_notes.iter().map(String::as_str).collect();
    let pool = real.embed(&refs).map_err(|e| anyhow::anyhow!(e))?;
    let embedder = Arc::new(BenchEmbedder {
        real,
        pool,
        synthesise: AtomicBool::new(false),
        state: AtomicU64::new(0x2545_F491_4F6C_DD1D),
    });

    let guard = ScratchDir::create("bench-hybrid")?;
    let path = guard.0.join("haivemind.sqlite3");
    let open = |fusion: Fusion| -> Result<Store> {
        let options = StoreOptions {
            embedder: Some(Arc::clone(&embedder) as Arc<dyn Embedder>),
            fusion,
            ..StoreOptions::new(&path, "bench")
        };
        Ok(match backend {
            crate::locomo::Backend::Sqlite => Store::open(options)?,
            crate::locomo::Backend::Postgres => {
                Store::open_postgres(options, crate::node::open_hub_database(config, None)?)?
            }
        })
    };
    let store = open(Fusion::default())?;
    if !store.holds_nothing()? {
        bail!("bench hybrid --backend postgres needs an empty database");
    }
    // Vector ranking alone, for recall: the full-text side weighs nothing and no
    // neighbour borrows a score. No similarity floor: it is compared with an exact scan
    // of every vector.
    let vectors_only = open(Fusion {
        full_text_weight: 0.0,
        min_similarity: -1.0,
        neighbour_weight: 0.0,
        ..Fusion::default()
    })?;

    let mut rows = Vec::new();
    let mut recalls = Vec::new();
    let mut seen_queries = HashSet::new();
    let mut filled = 0usize;
    for &size in sizes {
        let count = size.saturating_sub(filled);
        eprintln!("filling to {size} memories...");
        embedder.synthesise.store(true, Ordering::Relaxed);
        fill(&store, &text, &mut rng, filled, count)?;
        embedder.synthesise.store(false, Ordering::Relaxed);
        filled = store.stats()?.live;
        store.warm_vector_index()?;
        vectors_only.warm_vector_index()?;

        let notes: Vec<String> = (0..100)
            .map(|i| text.note(&mut rng, 20_000_000 + filled + i))
            .collect();
        // The model alone on the same notes, to show what the store adds.
        let mut embeds = Vec::new();
        for note in &notes {
            let start = Instant::now();
            embedder
                .embed(&[note.as_str()])
                .map_err(|e| anyhow::anyhow!(e))?;
            embeds.push(start.elapsed());
        }
        let mut stores = Vec::new();
        for note in notes {
            let start = Instant::now();
            store.create(NewMemory::new(note))?;
            stores.push(start.elapsed());
        }
        // The memories just stored carry real vectors; the exact scan must know them too.
        let mut fresh_queries = || fresh_query(&text, &mut rng, &mut seen_queries);
        let mut plain = Vec::new();
        let mut filtered = Vec::new();
        for i in 0..queries {
            let mut query = SearchQuery::new(fresh_queries());
            if i % 2 == 1 {
                query.filter.user_id = Some(format!("user{}", i % 10));
            }
            let start = Instant::now();
            let results = store.search(&query)?;
            let took = start.elapsed();
            if results.mode != haivemind_store::SearchMode::Hybrid {
                bail!("the benchmark store is not searching in hybrid mode");
            }
            if i % 2 == 1 {
                &mut filtered
            } else {
                &mut plain
            }
            .push(took);
        }
        let recall = measure_recall(&vectors_only, &embedder, &mut fresh_queries, 50)?;
        recalls.push(json!({"memories": filled, "recall_at_10": recall}));
        for (metric, timing) in [
            ("embedding alone, the same notes", summarize(embeds)),
            ("store_memory incl. embedding", summarize(stores)),
            ("hybrid search incl. query embedding", summarize(plain)),
            (
                "hybrid search incl. query embedding, user_id filter",
                summarize(filtered),
            ),
        ] {
            rows.push(latency_row(filled, metric, &timing));
        }
    }
    let rss = crate::bench::peak_rss_kib(None);
    drop((store, vectors_only));
    // What an agent meets: `haivemind mcp` started on the same file, with the model.
    let served = match backend {
        crate::locomo::Backend::Sqlite => {
            let mut fresh_queries = || fresh_query(&text, &mut rng, &mut seen_queries);
            let served = measure_served(&guard.0, filled, queries, &mut fresh_queries)?;
            rows.extend(served.rows.iter().cloned());
            Some(served)
        }
        // The stdio server opens the configured backend; this benchmark's PostgreSQL
        // database is not it.
        crate::locomo::Backend::Postgres => None,
    };
    drop(guard);

    let summary = json!({
        "backend": format!("{backend:?}").to_lowercase(),
        "rows": rows,
        "vector_recall": recalls,
        "peak_rss_kib": rss,
        "served": served.as_ref().map(|s| json!({
            "initialize_ms": s.initialize_ms,
            "first_search_ms": s.first_search_ms,
            "restart_initialize_ms": s.restart_initialize_ms,
            "restart_first_search_ms": s.restart_first_search_ms,
            "restart_peak_rss_kib": s.restart_peak_rss_kib,
            "rss_kib": s.rss_kib,
            "peak_rss_kib": s.peak_rss_kib,
        })),
    });
    if json_output {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    print_latency_table(&rows, 2);
    println!();
    for r in &recalls {
        println!(
            "vector index recall@10 against an exact scan at {} memories: {:.4}",
            r["memories"],
            r["recall_at_10"].as_f64().unwrap_or_default()
        );
    }
    println!(
        "peak RSS of the bench process: {} MiB",
        rss.map(|k| k / 1024).unwrap_or(0)
    );
    if let Some(s) = &served {
        println!(
            "haivemind mcp on {filled} memories with the model: initialize answered {:.0} ms \
             after start, first search {:.1} ms; RSS after the searches {} MiB, peak {} MiB",
            s.initialize_ms,
            s.first_search_ms,
            s.rss_kib.map(|k| k / 1024).unwrap_or(0),
            s.peak_rss_kib.map(|k| k / 1024).unwrap_or(0),
        );
        println!(
            "started again (the vector index read from its file): initialize answered {:.0} ms \
             after start, first search {:.1} ms; peak RSS {} MiB",
            s.restart_initialize_ms,
            s.restart_first_search_ms,
            s.restart_peak_rss_kib.map(|k| k / 1024).unwrap_or(0),
        );
    }
    Ok(())
}

/// A query not asked before in this run: a repeat would be answered from the query-vector
/// cache, without the embedding every search is meant to include.
fn fresh_query(text: &TextSource, rng: &mut Rng, seen: &mut HashSet<String>) -> String {
    loop {
        let q = text.query(rng);
        if seen.insert(q.clone()) {
            return q;
        }
    }
}

/// What [`measure_served`] found.
struct Served {
    /// The first start on the file: every stored vector is read into the index (and the
    /// index is then written to its file).
    initialize_ms: f64,
    first_search_ms: f64,
    /// Every later start: the index is read from its file.
    restart_initialize_ms: f64,
    restart_first_search_ms: f64,
    restart_peak_rss_kib: Option<u64>,
    rss_kib: Option<u64>,
    peak_rss_kib: Option<u64>,
    rows: Vec<serde_json::Value>,
}

/// Starts `haivemind mcp` with the model on the benchmark's data directory (as an agent's
/// client would), and times: the start until `initialize` is answered, the first search
/// (which waits for the vector index if it is still loading), then `queries` searches through
/// `search_memories`, half with a `user_id` filter; and its memory after them. Then starts it
/// again and times the start and first search once more: the first start kept the vector
/// index in its file, which every later start reads.
fn measure_served(
    data_dir: &std::path::Path,
    memories: usize,
    queries: usize,
    fresh_query: &mut impl FnMut() -> String,
) -> Result<Served> {
    eprintln!("starting haivemind mcp on {memories} memories...");
    let started = Instant::now();
    let mut client = crate::stdio_client::StdioClient::start(data_dir, &json!({}))?;
    let initialize_ms = started.elapsed().as_secs_f64() * 1e3;
    let search = |client: &mut crate::stdio_client::StdioClient, arguments| {
        let start = Instant::now();
        let result = client.call("search_memories", arguments)?;
        if result["search_mode"] != "hybrid" {
            bail!("haivemind mcp is not searching in hybrid mode: {result}");
        }
        Ok::<_, anyhow::Error>(start.elapsed())
    };
    let first_search_ms = search(&mut client, json!({"query": fresh_query()}))?.as_secs_f64() * 1e3;
    let (mut plain, mut filtered) = (Vec::new(), Vec::new());
    for i in 0..queries {
        let mut arguments = json!({"query": fresh_query(), "limit": 10});
        if i % 2 == 1 {
            arguments["user_id"] = json!(format!("user{}", i % 10));
            filtered.push(search(&mut client, arguments)?);
        } else {
            plain.push(search(&mut client, arguments)?);
        }
    }
    let rss_kib = crate::bench::status_kib(Some(client.pid()), "VmRSS");
    let peak_rss_kib = crate::bench::peak_rss_kib(Some(client.pid()));
    client.finish()?;

    eprintln!("starting haivemind mcp again...");
    let started = Instant::now();
    let mut client = crate::stdio_client::StdioClient::start(data_dir, &json!({}))?;
    let restart_initialize_ms = started.elapsed().as_secs_f64() * 1e3;
    let restart_first_search_ms =
        search(&mut client, json!({"query": fresh_query()}))?.as_secs_f64() * 1e3;
    let restart_peak_rss_kib = crate::bench::peak_rss_kib(Some(client.pid()));
    client.finish()?;
    let rows = vec![
        latency_row(
            memories,
            "search_memories through stdio, hybrid",
            &summarize(plain),
        ),
        latency_row(
            memories,
            "search_memories through stdio, hybrid, user_id filter",
            &summarize(filtered),
        ),
    ];
    Ok(Served {
        initialize_ms,
        first_search_ms,
        restart_initialize_ms,
        restart_first_search_ms,
        restart_peak_rss_kib,
        rss_kib,
        peak_rss_kib,
        rows,
    })
}

/// Mean overlap of the store's vector top 10 with an exact `f32` scan over every stored
/// vector, over `count` queries.
fn measure_recall(
    store: &Store,
    embedder: &BenchEmbedder,
    fresh_query: &mut impl FnMut() -> String,
    count: usize,
) -> Result<f64> {
    let all = store.vector_snapshot()?;
    let mut total = 0.0;
    for _ in 0..count {
        let text = fresh_query();
        let query_vector = embedder
            .real
            .embed(&[text.as_str()])
            .map_err(|e| anyhow::anyhow!(e))?
            .remove(0);
        let mut exact: Vec<(f32, haivemind_core::MemoryId)> = all
            .iter()
            .map(|(id, v)| (v.iter().zip(&query_vector).map(|(a, b)| a * b).sum(), *id))
            .collect();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0));
        let truth: HashSet<_> = exact.iter().take(10).map(|(_, id)| *id).collect();
        let found = store.search(&SearchQuery::new(text))?;
        let hits = found
            .hits
            .iter()
            .take(10)
            .filter(|h| truth.contains(&h.memory.id))
            .count();
        total += hits as f64 / 10.0;
    }
    Ok(total / count as f64)
}
