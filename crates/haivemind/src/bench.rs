//! `haivemind bench`: measures the engine and the stdio server on this machine, on a
//! synthetic corpus of DevOps notes, and prints a Markdown table for docs/BENCHMARKS.md.
//!
//! Everything runs in a scratch directory that is removed afterwards. Timings are wall
//! clock on whatever else the machine is doing: run it on an idle machine.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::stdio_client::StdioClient;
use haivemind_core::NewMemory;
use haivemind_store::{SearchQuery, Store, StoreOptions};
use serde_json::{Value, json};

const WORDS: &[&str] = &[
    "nginx",
    "proxy",
    "upstream",
    "timeout",
    "elasticsearch",
    "heap",
    "jvm",
    "shard",
    "replica",
    "postgres",
    "vacuum",
    "index",
    "redis",
    "eviction",
    "memory",
    "cache",
    "kafka",
    "consumer",
    "lag",
    "partition",
    "kubernetes",
    "pod",
    "crashloop",
    "node",
    "disk",
    "pressure",
    "cpu",
    "throttling",
    "deploy",
    "rollback",
    "canary",
    "certificate",
    "expired",
    "dns",
    "resolver",
    "latency",
    "p99",
    "grafana",
    "alert",
    "prometheus",
    "scrape",
    "terraform",
    "drift",
    "ansible",
    "playbook",
    "backup",
    "restore",
    "snapshot",
    "firewall",
    "port",
    "tls",
    "handshake",
    "oom",
    "killer",
    "swap",
    "inode",
    "logrotate",
    "cron",
    "systemd",
    "unit",
    "restart",
    "loop",
    "network",
    "packet",
    "loss",
    "mtu",
    "vpn",
    "tailscale",
    "ssh",
    "key",
    "rotation",
    "secret",
    "vault",
    "token",
    "quota",
    "rate",
    "limit",
    "queue",
    "backlog",
    "worker",
    "thread",
    "pool",
    "connection",
    "leak",
    "gc",
    "pause",
    "compaction",
    "wal",
    "fsync",
    "raid",
    "degraded",
];
const VERBS: &[&str] = &[
    "fixed by raising",
    "caused by",
    "after upgrading",
    "resolved with",
    "triggered when",
    "mitigated by restarting",
    "traced to",
    "worsened by",
    "stopped after tuning",
];

/// Which corpus to measure on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Corpus {
    /// Words drawn from a 5,000-word vocabulary with Zipf's law, as in real text: a few
    /// words are everywhere, most are rare. Queries are drawn the same way.
    Zipf,
    /// Every word from a 90-word DevOps vocabulary, uniformly: each query word is in about
    /// one note in six. A worst case for full-text search, not a typical one.
    Dense,
}

const SYLLABLES: &[&str] = &[
    "ka", "lo", "tri", "ven", "sor", "mu", "pel", "dax", "ri", "zon", "qua", "bel", "tor", "nim",
    "gra", "fex", "ul", "sha", "vo", "crin",
];

/// The Zipf corpus's vocabulary: the DevOps words first (the most frequent ranks), then
/// made-up words, 5,000 in all.
fn zipf_vocabulary() -> Vec<String> {
    let mut words: Vec<String> = WORDS.iter().map(|w| w.to_string()).collect();
    let mut n = 0usize;
    while words.len() < 5000 {
        let a = SYLLABLES[n % SYLLABLES.len()];
        let b = SYLLABLES[(n / SYLLABLES.len()) % SYLLABLES.len()];
        let c = SYLLABLES[(n / (SYLLABLES.len() * SYLLABLES.len())) % SYLLABLES.len()];
        words.push(format!("{a}{b}{c}"));
        n += 1;
    }
    words
}

/// Draws ranks with probability proportional to 1 / rank.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(size: usize) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=size)
            .map(|rank| {
                total += 1.0 / rank as f64;
                total
            })
            .collect();
        Self { cumulative }
    }

    fn draw(&self, rng: &mut Rng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let target = (rng.next() % 1_000_000_007) as f64 / 1_000_000_007.0 * total;
        self.cumulative
            .partition_point(|&c| c < target)
            .min(self.cumulative.len() - 1)
    }
}

/// Makes notes and queries for one corpus.
pub(crate) struct TextSource {
    corpus: Corpus,
    vocabulary: Vec<String>,
    zipf: Zipf,
}

impl TextSource {
    pub(crate) fn new(corpus: Corpus) -> Self {
        let vocabulary = zipf_vocabulary();
        let zipf = Zipf::new(vocabulary.len());
        Self {
            corpus,
            vocabulary,
            zipf,
        }
    }

    fn word(&self, rng: &mut Rng) -> String {
        match self.corpus {
            Corpus::Dense => rng.pick(WORDS).to_string(),
            Corpus::Zipf => self.vocabulary[self.zipf.draw(rng)].clone(),
        }
    }

    /// A note of about 40 tokens, like the ones agents store.
    pub(crate) fn note(&self, rng: &mut Rng, i: usize) -> String {
        let host = format!(
            "{}{}",
            rng.pick(&["web", "db", "elastic", "proxy", "cache", "kafka"]),
            rng.next() % 40
        );
        let mut text = format!("{} {} on {host}: ", self.word(rng), self.word(rng));
        for _ in 0..3 {
            text.push_str(&format!(
                "{} {} {} {} {}, ",
                self.word(rng),
                rng.pick(VERBS),
                self.word(rng),
                self.word(rng),
                self.word(rng)
            ));
        }
        text.push_str(&format!("ticket OPS-{i}"));
        text
    }

    /// A three-word query.
    pub(crate) fn query(&self, rng: &mut Rng) -> String {
        format!("{} {} {}", self.word(rng), self.word(rng), self.word(rng))
    }
}

/// A deterministic xorshift generator, so every run measures the same corpus.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

pub(crate) struct Timing {
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) count: usize,
}

pub(crate) fn summarize(mut samples: Vec<Duration>) -> Timing {
    samples.sort_unstable();
    Timing {
        p50_ms: percentile(&samples, 0.50),
        p99_ms: percentile(&samples, 0.99),
        count: samples.len(),
    }
}

/// A kibibyte figure from `/proc/<pid>/status` (this process when `pid` is `None`), such
/// as `VmHWM` (peak resident) or `VmRSS` (resident now).
pub(crate) fn status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".into(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find(|line| {
            line.strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':'))
        })?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub(crate) fn peak_rss_kib(pid: Option<u32>) -> Option<u64> {
    status_kib(pid, "VmHWM")
}

/// One row of a latency table: at how many memories, what, and its timing.
pub(crate) fn latency_row(memories: usize, metric: &str, timing: &Timing) -> Value {
    json!({"memories": memories, "metric": metric, "p50_ms": timing.p50_ms,
           "p99_ms": timing.p99_ms, "samples": timing.count})
}

/// Prints rows made by [`latency_row`] as a Markdown table, milliseconds to `decimals`.
pub(crate) fn print_latency_table(rows: &[Value], decimals: usize) {
    println!("| memories | operation | p50 ms | p99 ms | samples |");
    println!("|---:|---|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {} | {:.decimals$} | {:.decimals$} | {} |",
            row["memories"],
            row["metric"].as_str().unwrap_or_default(),
            row["p50_ms"].as_f64().unwrap_or_default(),
            row["p99_ms"].as_f64().unwrap_or_default(),
            row["samples"]
        );
    }
}

/// Fills `store` with `count` memories in batches, showing progress.
pub(crate) fn fill(
    store: &Store,
    text: &TextSource,
    rng: &mut Rng,
    from: usize,
    count: usize,
) -> Result<()> {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(count as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    let mut done = 0;
    while done < count {
        let batch: Vec<NewMemory> = (0..(count - done).min(2000))
            .map(|i| {
                let mut memory = NewMemory::new(text.note(rng, from + done + i));
                memory.user_id = format!("user{}", (from + done + i) % 10);
                memory
            })
            .collect();
        let n = batch.len();
        store.create_batch(batch)?;
        done += n;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

fn time_stores(store: &Store, text: &TextSource, rng: &mut Rng, count: usize) -> Result<Timing> {
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let memory = NewMemory::new(text.note(rng, 10_000_000 + i));
        let start = Instant::now();
        store.create(memory)?;
        samples.push(start.elapsed());
    }
    Ok(summarize(samples))
}

fn time_searches(
    store: &Store,
    text: &TextSource,
    rng: &mut Rng,
    count: usize,
    filtered: bool,
) -> Result<Timing> {
    let mut samples = Vec::with_capacity(count);
    let mut misses = 0;
    for _ in 0..count {
        let mut query = SearchQuery::new(text.query(rng));
        query.semantic = false;
        if filtered {
            query.filter.user_id = Some(format!("user{}", rng.next() % 10));
        }
        let start = Instant::now();
        let results = store.search(&query)?;
        samples.push(start.elapsed());
        if results.hits.is_empty() {
            misses += 1;
        }
    }
    if misses * 2 > count {
        bail!("{misses} of {count} benchmark queries found nothing: the corpus is broken");
    }
    Ok(summarize(samples))
}

/// Times `retrieve_memory` round trips through a real `haivemind mcp` child on `data_dir`.
fn time_stdio_retrieve(data_dir: &Path, id: &str, count: usize) -> Result<(Timing, Option<u64>)> {
    // This benchmark measures the engine without a model; `bench hybrid` measures with one.
    let mut client = StdioClient::start(data_dir, &json!({"embedding": {"enabled": false}}))?;
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        client.call("retrieve_memory", json!({"memory_id": id}))?;
        samples.push(start.elapsed());
    }
    let rss = peak_rss_kib(Some(client.pid()));
    client.finish()?;
    Ok((summarize(samples), rss))
}

/// A benchmark's scratch directory, removed when dropped, on success or error.
pub(crate) struct ScratchDir(pub(crate) std::path::PathBuf);

impl ScratchDir {
    pub(crate) fn create(purpose: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("haivemind-{purpose}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the engine benchmark at each corpus size and prints the results.
pub fn run(
    config: &haivemind_core::Config,
    sizes: &[usize],
    queries: usize,
    corpus: Corpus,
    backend: crate::locomo::Backend,
    json_output: bool,
) -> Result<()> {
    let text = TextSource::new(corpus);
    let guard = ScratchDir::create("bench")?;
    let scratch = guard.0.clone();
    let options = StoreOptions::new(scratch.join("haivemind.sqlite3"), "bench");
    let store = match backend {
        crate::locomo::Backend::Sqlite => Store::open(options)?,
        crate::locomo::Backend::Postgres => {
            let database = crate::node::open_hub_database(config, None)?;
            let store = Store::open_postgres(options, database)?;
            if !store.holds_nothing()? {
                anyhow::bail!("bench store --backend postgres needs an empty database");
            }
            store
        }
    };
    let on_postgres = backend == crate::locomo::Backend::Postgres;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut rows = Vec::new();
    let mut filled = 0;
    let empty_store = time_stores(&store, &text, &mut rng, 300)?;
    rows.push(latency_row(0, "store_memory (no embedding)", &empty_store));
    for &size in sizes {
        eprintln!("filling to {size} memories...");
        fill(
            &store,
            &text,
            &mut rng,
            filled,
            size.saturating_sub(filled + 300),
        )?;
        filled = store.stats()?.live;
        let stores = time_stores(&store, &text, &mut rng, 300)?;
        let searches = time_searches(&store, &text, &mut rng, queries, false)?;
        let filtered = time_searches(&store, &text, &mut rng, queries, true)?;
        for (metric, timing) in [
            ("store_memory (no embedding)", stores),
            ("full-text search", searches),
            ("full-text search, user_id filter", filtered),
        ] {
            rows.push(latency_row(filled, metric, &timing));
        }
        filled = store.stats()?.live;
    }
    let any_id = store
        .recent(&haivemind_store::RecentQuery {
            filter: Default::default(),
            hours: 24,
            limit: 1,
        })?
        .first()
        .map(|m| m.id.to_string())
        .context("no memory to retrieve")?;
    let postgres_bytes = on_postgres.then(|| store.stats().map(|s| s.database_bytes));
    drop(store);
    // The stdio round trip measures the MCP layer over the SQLite file; on PostgreSQL the
    // engine numbers above are the comparison.
    let server_rss = if on_postgres {
        None
    } else {
        let (retrieve, server_rss) = time_stdio_retrieve(&scratch, &any_id, 2000)?;
        rows.push(latency_row(
            filled,
            "retrieve_memory round trip over stdio",
            &retrieve,
        ));
        server_rss
    };
    let bench_rss = peak_rss_kib(None);
    let database_bytes = match postgres_bytes {
        Some(bytes) => bytes?,
        None => std::fs::metadata(scratch.join("haivemind.sqlite3"))
            .map(|m| m.len())
            .unwrap_or(0),
    };
    drop(guard);

    let summary = json!({
        "backend": format!("{backend:?}").to_lowercase(),
        "corpus": format!("{corpus:?}").to_lowercase(),
        "rows": rows,
        "peak_rss_kib": {"bench_process": bench_rss, "mcp_server": server_rss},
        "database_bytes": database_bytes,
    });
    if json_output {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "backend: {}, corpus: {}",
        format!("{backend:?}").to_lowercase(),
        format!("{corpus:?}").to_lowercase()
    );
    println!();
    print_latency_table(&rows, 3);
    println!();
    println!(
        "peak RSS: bench process (engine, {filled} memories) {} MiB; haivemind mcp server {} MiB; database file {:.1} MiB",
        bench_rss.map(|k| k / 1024).unwrap_or(0),
        server_rss.map(|k| k / 1024).unwrap_or(0),
        database_bytes as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

fn current_rss_kib() -> Option<u64> {
    status_kib(None, "VmRSS")
}

/// Measures the embedding model: load time, resident memory, and latency per text alone
/// and in batches.
pub fn run_embedder(model_dir: &Path, json_output: bool) -> Result<()> {
    use haivemind_core::Embedder;
    let before = current_rss_kib().unwrap_or(0);
    let start = Instant::now();
    let model = haivemind_embed::MiniLm::load(model_dir)
        .with_context(|| format!("cannot load the model from {}", model_dir.display()))?;
    let load_ms = start.elapsed().as_secs_f64() * 1000.0;
    let loaded_rss = current_rss_kib().unwrap_or(0);
    let text = TextSource::new(Corpus::Zipf);
    let mut rng = Rng(0x5EED);
    let notes: Vec<String> = (0..256).map(|i| text.note(&mut rng, i)).collect();
    let queries: Vec<String> = (0..256).map(|_| text.query(&mut rng)).collect();
    // Warm up: the first call starts the model's threads.
    model
        .embed(&[notes[0].as_str()])
        .map_err(|e| anyhow::anyhow!(e))?;
    let time_each = |texts: &[String]| -> Result<Timing> {
        let mut samples = Vec::with_capacity(texts.len());
        for t in texts {
            let start = Instant::now();
            model.embed(&[t.as_str()]).map_err(|e| anyhow::anyhow!(e))?;
            samples.push(start.elapsed());
        }
        Ok(summarize(samples))
    };
    let single_note = time_each(&notes)?;
    let single_query = time_each(&queries)?;
    let mut per_text_in_batch = Vec::new();
    for batch in notes.chunks(32) {
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        let start = Instant::now();
        model.embed(&refs).map_err(|e| anyhow::anyhow!(e))?;
        per_text_in_batch.push(start.elapsed() / refs.len() as u32);
    }
    let batched = summarize(per_text_in_batch);
    let peak = peak_rss_kib(None).unwrap_or(0);
    // How far the served vectors are from plain f32 ones, on the same texts (after reading
    // the peak memory, which would otherwise count the reference model too).
    let agreement = {
        let reference = haivemind_embed::MiniLm::load_fp32_reference(model_dir)
            .with_context(|| format!("cannot load the model from {}", model_dir.display()))?;
        let texts: Vec<&str> = notes.iter().chain(&queries).map(String::as_str).collect();
        let served = model.embed(&texts).map_err(|e| anyhow::anyhow!(e))?;
        let exact = reference.embed(&texts).map_err(|e| anyhow::anyhow!(e))?;
        let cosines: Vec<f32> = served
            .iter()
            .zip(&exact)
            .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum())
            .collect();
        let min = cosines.iter().copied().fold(f32::INFINITY, f32::min);
        let mean = cosines.iter().sum::<f32>() / cosines.len().max(1) as f32;
        (min, mean, cosines.len())
    };
    let summary = json!({
        "model": haivemind_embed::MODEL_ID,
        "engine": model.engine(),
        "cosine_to_f32": {"min": agreement.0, "mean": agreement.1, "texts": agreement.2},
        "load_ms": load_ms,
        "rss_kib": {"before_load": before, "after_load": loaded_rss, "peak": peak},
        "note_alone_ms": {"p50": single_note.p50_ms, "p99": single_note.p99_ms},
        "query_alone_ms": {"p50": single_query.p50_ms, "p99": single_query.p99_ms},
        "note_in_batch_of_32_ms": {"p50": batched.p50_ms, "p99": batched.p99_ms},
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    });
    if json_output {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "model {} ({}) loaded in {load_ms:.0} ms",
        haivemind_embed::MODEL_ID,
        model.engine()
    );
    println!(
        "cosine to plain f32 vectors over {} texts: min {:.5}, mean {:.5}",
        agreement.2, agreement.0, agreement.1
    );
    println!(
        "resident memory: {} MiB before load, {} MiB after, peak {} MiB",
        before / 1024,
        loaded_rss / 1024,
        peak / 1024
    );
    println!();
    println!("| what | p50 ms | p99 ms |");
    println!("|---|---:|---:|");
    println!(
        "| one note (~40 tokens) alone | {:.2} | {:.2} |",
        single_note.p50_ms, single_note.p99_ms
    );
    println!(
        "| one 3-word query alone | {:.2} | {:.2} |",
        single_query.p50_ms, single_query.p99_ms
    );
    println!(
        "| per note, batches of 32 | {:.2} | {:.2} |",
        batched.p50_ms, batched.p99_ms
    );
    Ok(())
}
