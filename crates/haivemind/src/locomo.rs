//! `haivemind bench locomo`: the retrieval benchmark of SPEC section 10, through the public
//! interface (a real `haivemind mcp` over stdio), on any LoCoMo-format file.
//!
//! One memory per dialog turn, content `"<speaker>: <text>"`, `user_id` the conversation's
//! `sample_id`, `metadata.dia_id` the turn's id. Every question of categories 1-4 with
//! evidence is a query with its `user_id`; the gold answers are its evidence turn ids
//! (forms like `D:11:26`, `D30:05` and `D8:6; D9:17` are normalised). Reported: recall@5,
//! recall@10, hit@10, MRR and nDCG@10, overall and per category, with store and search
//! latency.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::stdio_client::StdioClient;

const CATEGORY_NAMES: [&str; 5] = [
    "multi-hop",
    "temporal",
    "open-domain",
    "single-hop",
    "adversarial",
];

/// `D<session>:<turn>` with leading zeros and stray colons removed, or `None` when `raw`
/// names no turn.
fn normalize_dia_id(raw: &str) -> Option<String> {
    let digits: Vec<u32> = raw
        .trim()
        .trim_start_matches('D')
        .split(':')
        .filter(|part| !part.is_empty())
        .map(|part| part.trim().parse().ok())
        .collect::<Option<Vec<u32>>>()?;
    match digits.as_slice() {
        [session, turn] => Some(format!("D{session}:{turn}")),
        _ => None,
    }
}

fn gold_ids(evidence: &Value) -> HashSet<String> {
    evidence
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .flat_map(|entry| {
            entry
                .split([';', ','])
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter_map(|id| normalize_dia_id(&id))
        .collect()
}

#[derive(Default, Clone)]
struct Scores {
    questions: usize,
    recall_at_5: f64,
    recall_at_10: f64,
    hit_at_10: f64,
    reciprocal_rank: f64,
    ndcg_at_10: f64,
    /// How many memories came back, summed: what a floor on similarity cuts.
    returned: usize,
}

impl Scores {
    fn add(&mut self, ranked: &[String], gold: &HashSet<String>) {
        let found_within = |k: usize| {
            ranked
                .iter()
                .take(k)
                .filter(|id| gold.contains(*id))
                .count()
        };
        let total = gold.len() as f64;
        self.questions += 1;
        self.returned += ranked.len();
        self.recall_at_5 += found_within(5) as f64 / total;
        self.recall_at_10 += found_within(10) as f64 / total;
        self.hit_at_10 += f64::from(u8::from(found_within(10) > 0));
        if let Some(rank) = ranked.iter().position(|id| gold.contains(id)) {
            self.reciprocal_rank += 1.0 / (rank + 1) as f64;
        }
        let dcg: f64 = ranked
            .iter()
            .take(10)
            .enumerate()
            .filter(|(_, id)| gold.contains(*id))
            .map(|(i, _)| 1.0 / ((i + 2) as f64).log2())
            .sum();
        let ideal: f64 = (0..gold.len().min(10))
            .map(|i| 1.0 / ((i + 2) as f64).log2())
            .sum();
        self.ndcg_at_10 += if ideal > 0.0 { dcg / ideal } else { 0.0 };
    }

    fn merge(&mut self, other: &Scores) {
        self.questions += other.questions;
        self.recall_at_5 += other.recall_at_5;
        self.recall_at_10 += other.recall_at_10;
        self.hit_at_10 += other.hit_at_10;
        self.reciprocal_rank += other.reciprocal_rank;
        self.ndcg_at_10 += other.ndcg_at_10;
        self.returned += other.returned;
    }

    fn recall_at_10(&self) -> f64 {
        self.recall_at_10 / self.questions.max(1) as f64
    }

    fn mean(&self) -> Value {
        let n = self.questions.max(1) as f64;
        json!({
            "questions": self.questions,
            "recall@5": self.recall_at_5 / n,
            "recall@10": self.recall_at_10 / n,
            "hit@10": self.hit_at_10 / n,
            "mrr": self.reciprocal_rank / n,
            "ndcg@10": self.ndcg_at_10 / n,
            "returned": self.returned as f64 / n,
        })
    }
}

fn percentiles(samples: Vec<Duration>) -> Value {
    let timing = crate::bench::summarize(samples);
    json!({"p50_ms": timing.p50_ms, "p99_ms": timing.p99_ms, "samples": timing.count})
}

/// The dialog turns of a conversation, session by session: the arrays under its
/// `session_<n>` keys (the `session_<n>_date_time` keys hold strings).
fn dialog_turns(conversation: &serde_json::Map<String, Value>) -> impl Iterator<Item = &Value> {
    conversation
        .iter()
        .filter(|(key, _)| key.starts_with("session_"))
        .filter_map(|(_, turns)| turns.as_array())
        .flatten()
}

/// Stores every dialog turn of every sample as a memory; returns each store's latency.
fn store_turns(client: &mut StdioClient, samples: &[Value]) -> Result<Vec<Duration>> {
    let mut store_times = Vec::new();
    for sample in samples {
        let user = sample["sample_id"]
            .as_str()
            .context("a sample has no sample_id")?;
        let Some(conversation) = sample["conversation"].as_object() else {
            bail!("sample {user} has no conversation");
        };
        for turn in dialog_turns(conversation) {
            let (Some(speaker), Some(said), Some(dia_id)) = (
                turn["speaker"].as_str(),
                turn["text"].as_str(),
                turn["dia_id"].as_str(),
            ) else {
                continue;
            };
            let Some(dia_id) = normalize_dia_id(dia_id) else {
                continue;
            };
            let start = Instant::now();
            client.call(
                "store_memory",
                json!({"content": format!("{speaker}: {said}"), "category": "conversation",
                           "user_id": user, "metadata": {"dia_id": dia_id}}),
            )?;
            store_times.push(start.elapsed());
        }
    }

    Ok(store_times)
}

struct Evaluation {
    overall: Scores,
    by_category: BTreeMap<u64, Scores>,
    search_times: Vec<Duration>,
    search_mode: String,
    /// Per conversation (each is one user): what a change does to each, not only on average.
    by_conversation: BTreeMap<String, Scores>,
    /// Per conversation and category.
    by_conversation_category: BTreeMap<(String, u64), Scores>,
}

/// Asks every question of categories 1-4 that has evidence, and scores the answers.
fn evaluate(client: &mut StdioClient, samples: &[Value], semantic: bool) -> Result<Evaluation> {
    let mut overall = Scores::default();
    let mut by_category: BTreeMap<u64, Scores> = BTreeMap::new();
    let mut by_conversation: BTreeMap<String, Scores> = BTreeMap::new();
    let mut by_conversation_category: BTreeMap<(String, u64), Scores> = BTreeMap::new();
    let mut search_times = Vec::new();
    let mut search_mode = String::new();
    for sample in samples {
        let user = sample["sample_id"].as_str().unwrap_or_default();
        for qa in sample["qa"].as_array().into_iter().flatten() {
            let category = qa["category"].as_u64().unwrap_or(0);
            let gold = gold_ids(&qa["evidence"]);
            let Some(question) = qa["question"].as_str() else {
                continue;
            };
            if !(1..=4).contains(&category) || gold.is_empty() {
                continue;
            }
            let start = Instant::now();
            let found = client.call(
                "search_memories",
                json!({"query": question, "user_id": user, "limit": 10, "semantic": semantic}),
            );
            search_times.push(start.elapsed());
            let found = match found {
                Ok(found) => found,
                // A question with no searchable word is a miss, not a failed benchmark.
                Err(error) if error.to_string().contains("must contain at least one word") => {
                    json!({"memories": []})
                }
                Err(error) => return Err(error),
            };
            if let Some(mode) = found["search_mode"].as_str() {
                search_mode = mode.to_string();
            }
            let ranked: Vec<String> = found["memories"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["metadata"]["dia_id"].as_str().map(str::to_string))
                .collect();
            overall.add(&ranked, &gold);
            by_category.entry(category).or_default().add(&ranked, &gold);
            by_conversation
                .entry(user.to_string())
                .or_default()
                .add(&ranked, &gold);
            by_conversation_category
                .entry((user.to_string(), category))
                .or_default()
                .add(&ranked, &gold);
        }
    }
    Ok(Evaluation {
        overall,
        by_category,
        by_conversation,
        by_conversation_category,
        search_times,
        search_mode,
    })
}

/// Adds `count` memories of 50 other users to the store in `data_dir`, each two of the
/// file's turns joined: text like the questions' own, so the words' document frequencies
/// and match lists grow as they would in a larger store of such conversations.
fn add_padding(data_dir: &Path, samples: &[Value], count: usize) -> Result<()> {
    let turns: Vec<String> = samples
        .iter()
        .flat_map(|sample| {
            sample["conversation"]
                .as_object()
                .into_iter()
                .flat_map(dialog_turns)
                .filter_map(|turn| {
                    Some(format!(
                        "{}: {}",
                        turn["speaker"].as_str()?,
                        turn["text"].as_str()?
                    ))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if turns.len() < 2 {
        bail!("--pad needs a file with turns to make padding from");
    }
    let store = haivemind_store::Store::open(haivemind_store::StoreOptions::new(
        data_dir.join("haivemind.sqlite3"),
        "bench",
    ))?;
    let mut added = 0;
    while added < count {
        let batch: Vec<haivemind_core::NewMemory> = (added..count.min(added + 2_000))
            .map(|i| {
                let first = &turns[i.wrapping_mul(7_919) % turns.len()];
                let second = &turns[(i.wrapping_mul(104_729) + 13) % turns.len()];
                let mut memory = haivemind_core::NewMemory::new(format!("{first} / {second}"));
                memory.user_id = format!("padding-{}", i % 50);
                memory
            })
            .collect();
        added += batch.len();
        store.create_batch(batch)?;
        eprintln!("padding: {added} of {count}");
    }
    Ok(())
}

/// One fusion setting of a sweep: the `search.*` keys it sets.
#[derive(Debug, Clone, PartialEq)]
struct Setting {
    fusion: String,
    full_text_weight: f64,
    vector_weight: f64,
    rank_constant: f64,
    depth: usize,
    min_similarity: f64,
    neighbour_weight: f64,
}

impl Setting {
    fn rrf(full_text_weight: f64, vector_weight: f64, rank_constant: f64) -> Self {
        Self {
            fusion: "rrf".into(),
            full_text_weight,
            vector_weight,
            rank_constant,
            depth: 50,
            min_similarity: haivemind_core::config::DEFAULT_MIN_SIMILARITY,
            neighbour_weight: 0.0,
        }
    }

    /// One row of `$HAIVEMIND_SWEEP`: "fusion,full_text_weight,vector_weight,
    /// rank_constant,depth[,min_similarity[,neighbour_weight]]".
    fn parse(row: &str) -> Option<Self> {
        let v: Vec<&str> = row.split(',').map(str::trim).collect();
        Some(Self {
            fusion: v.first()?.to_string(),
            full_text_weight: v.get(1)?.parse().ok()?,
            vector_weight: v.get(2)?.parse().ok()?,
            rank_constant: v.get(3)?.parse().ok()?,
            depth: v.get(4)?.parse().ok()?,
            min_similarity: v
                .get(5)
                .map_or(Some(haivemind_core::config::DEFAULT_MIN_SIMILARITY), |f| {
                    f.parse().ok()
                })?,
            neighbour_weight: v.get(6).map_or(Some(0.0), |f| f.parse().ok())?,
        })
    }

    fn as_config(&self) -> Value {
        json!({"search": {"fusion": self.fusion, "full_text_weight": self.full_text_weight,
                          "vector_weight": self.vector_weight, "rank_constant": self.rank_constant,
                          "fusion_depth": self.depth, "min_similarity": self.min_similarity,
                          "neighbour_weight": self.neighbour_weight}})
    }
}

/// The grid a sweep runs: `$HAIVEMIND_SWEEP`, or the built-in one.
fn sweep_settings() -> Vec<Setting> {
    std::env::var("HAIVEMIND_SWEEP")
        .ok()
        .map(|grid| grid.split(';').filter_map(Setting::parse).collect())
        .unwrap_or_else(|| {
            let mut grid = vec![Setting::rrf(1.0, 0.0, 60.0), Setting::rrf(0.0, 1.0, 60.0)];
            for k in [2.0, 5.0, 20.0, 60.0] {
                for vector_weight in [0.5, 0.7, 1.0] {
                    grid.push(Setting::rrf(1.0, vector_weight, k));
                }
            }
            for vector_weight in [0.5, 1.0, 2.0, 4.0] {
                grid.push(Setting {
                    fusion: "convex".into(),
                    rank_constant: 0.0,
                    ..Setting::rrf(1.0, vector_weight, 0.0)
                });
            }
            // Neighbours lending to the best, on the reciprocal-rank settings near the
            // defaults.
            for k in [2.0, 5.0] {
                for vector_weight in [0.5, 0.7, 1.0] {
                    for neighbour_weight in [0.3, 0.5] {
                        grid.push(Setting {
                            neighbour_weight,
                            ..Setting::rrf(1.0, vector_weight, k)
                        });
                    }
                }
            }
            grid
        })
}

/// Asks every question under one setting (`None`: the configured defaults).
fn evaluate_setting(
    data_dir: &Path,
    samples: &[Value],
    setting: Option<&Setting>,
) -> Result<Evaluation> {
    let settings = setting.map_or_else(|| json!({}), Setting::as_config);
    let mut client = StdioClient::start(data_dir, &settings)?;
    let evaluation = evaluate(&mut client, samples, true)?;
    client.finish()?;
    Ok(evaluation)
}

fn describe(setting: &Setting) -> String {
    let Setting {
        fusion,
        full_text_weight,
        vector_weight,
        rank_constant,
        depth,
        min_similarity,
        neighbour_weight,
    } = setting;
    format!(
        "{fusion} {full_text_weight}/{vector_weight} k={rank_constant} depth={depth} floor={min_similarity} neighbours={neighbour_weight}"
    )
}

/// Runs the questions once per fusion setting against the same stored turns, and prints
/// how each setting scores: how the defaults of `search.*` were chosen.
fn sweep_fusion(data_dir: &Path, samples: &[Value], json_output: bool) -> Result<()> {
    let mut rows = Vec::new();
    if !json_output {
        println!(
            "| fusion | full_text_weight | vector_weight | rank_constant | fusion_depth | min_similarity | neighbour_weight | recall@5 | recall@10 | hit@10 | MRR | nDCG@10 | results per question |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    }
    for setting in sweep_settings() {
        let evaluation = evaluate_setting(data_dir, samples, Some(&setting))?;
        let m = evaluation.overall.mean();
        let f = |key: &str| m[key].as_f64().unwrap_or(0.0);
        if !json_output {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} |",
                setting.fusion,
                setting.full_text_weight,
                setting.vector_weight,
                setting.rank_constant,
                setting.depth,
                setting.min_similarity,
                setting.neighbour_weight,
                f("recall@5"),
                f("recall@10"),
                f("hit@10"),
                f("mrr"),
                f("ndcg@10"),
                f("returned")
            );
        }
        let mut row = setting.as_config()["search"].clone();
        row["overall"] = m.clone();
        row["by_conversation"] = evaluation
            .by_conversation
            .iter()
            .map(|(user, scores)| (user.clone(), scores.mean()))
            .collect::<serde_json::Map<_, _>>()
            .into();
        rows.push(row);
    }
    if json_output {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}

/// One held-out conversation of [`leave_one_out`].
#[derive(Debug, Clone, PartialEq)]
struct Fold {
    held_out: String,
    /// The index of the setting that scored best on the other conversations.
    chosen: usize,
    /// Recall@10 on the held-out conversation: of the chosen setting, of the defaults.
    chosen_recall: f64,
    default_recall: f64,
}

/// For each conversation: the setting (by index into `per_setting`) with the best recall@10
/// over the questions of every other conversation (the first on a tie), and how it and the
/// defaults score on the held-out one. No score of the held-out conversation takes part in
/// choosing its setting (its turns are in the store throughout, as the others' are).
fn leave_one_out(
    per_setting: &[BTreeMap<String, Scores>],
    defaults: &BTreeMap<String, Scores>,
) -> Vec<Fold> {
    defaults
        .keys()
        .map(|held_out| {
            let tuned_on = |scores: &BTreeMap<String, Scores>| {
                let mut merged = Scores::default();
                for (_, s) in scores.iter().filter(|(user, _)| *user != held_out) {
                    merged.merge(s);
                }
                merged.recall_at_10()
            };
            let mut chosen = 0;
            for (i, scores) in per_setting.iter().enumerate() {
                if tuned_on(scores) > tuned_on(&per_setting[chosen]) {
                    chosen = i;
                }
            }
            let recall_on = |scores: &BTreeMap<String, Scores>| {
                scores.get(held_out).map_or(0.0, Scores::recall_at_10)
            };
            Fold {
                held_out: held_out.clone(),
                chosen,
                chosen_recall: per_setting.get(chosen).map_or(0.0, recall_on),
                default_recall: recall_on(defaults),
            }
        })
        .collect()
}

/// `bench locomo --folds`: leave-one-conversation-out over the sweep's grid, with
/// multi-hop and open-domain questions reported apart.
fn folds(data_dir: &Path, samples: &[Value], json_output: bool) -> Result<()> {
    let settings = sweep_settings();
    if settings.is_empty() {
        bail!("HAIVEMIND_SWEEP holds no setting");
    }
    eprintln!(
        "asking every question under the defaults and {} settings...",
        settings.len()
    );
    let defaults = evaluate_setting(data_dir, samples, None)?;
    let mut evaluations = Vec::new();
    for (i, setting) in settings.iter().enumerate() {
        eprintln!(
            "setting {} of {}: {}",
            i + 1,
            settings.len(),
            describe(setting)
        );
        evaluations.push(evaluate_setting(data_dir, samples, Some(setting))?);
    }
    let per_setting: Vec<BTreeMap<String, Scores>> = evaluations
        .iter()
        .map(|e| e.by_conversation.clone())
        .collect();
    let folds = leave_one_out(&per_setting, &defaults.by_conversation);
    // Multi-hop is category 1, open-domain 3.
    let category_recall = |evaluation: &Evaluation, user: &str, category: u64| {
        evaluation
            .by_conversation_category
            .get(&(user.to_string(), category))
            .map_or(0.0, Scores::recall_at_10)
    };
    let mut rows = Vec::new();
    for fold in &folds {
        let chosen = &evaluations[fold.chosen];
        rows.push(json!({
            "held_out": fold.held_out,
            "questions": defaults.by_conversation.get(&fold.held_out).map_or(0, |s| s.questions),
            "chosen_setting": describe(&settings[fold.chosen]),
            "recall@10": fold.chosen_recall,
            "default_recall@10": fold.default_recall,
            "multi_hop_recall@10": category_recall(chosen, &fold.held_out, 1),
            "default_multi_hop_recall@10": category_recall(&defaults, &fold.held_out, 1),
            "open_domain_recall@10": category_recall(chosen, &fold.held_out, 3),
            "default_open_domain_recall@10": category_recall(&defaults, &fold.held_out, 3),
        }));
    }
    let mean = |key: &str| {
        rows.iter()
            .map(|r| r[key].as_f64().unwrap_or(0.0))
            .sum::<f64>()
            / rows.len().max(1) as f64
    };
    let summary = json!({
        "folds": rows,
        "mean_held_out_recall@10": mean("recall@10"),
        "mean_default_recall@10": mean("default_recall@10"),
        "folds_worse_than_default": folds.iter().filter(|f| f.chosen_recall < f.default_recall).count(),
    });
    if json_output {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "| held-out conversation | questions | setting chosen on the others | recall@10 | defaults | multi-hop | defaults | open-domain | defaults |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let f = |key: &str| r[key].as_f64().unwrap_or(0.0);
        println!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            r["held_out"].as_str().unwrap_or_default(),
            r["questions"],
            r["chosen_setting"].as_str().unwrap_or_default(),
            f("recall@10"),
            f("default_recall@10"),
            f("multi_hop_recall@10"),
            f("default_multi_hop_recall@10"),
            f("open_domain_recall@10"),
            f("default_open_domain_recall@10"),
        );
    }
    println!();
    println!(
        "mean held-out recall@10: {:.3} (the defaults on the same folds: {:.3}); folds where the tuned setting scores below the defaults: {}",
        mean("recall@10"),
        mean("default_recall@10"),
        summary["folds_worse_than_default"]
    );
    Ok(())
}

/// Runs the benchmark on `data` in a scratch data directory and prints the results.
/// What the benchmark ranks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `semantic=true`: full-text and vectors fused.
    Hybrid,
    /// `semantic=false`: BM25 tiers only.
    FullText,
    /// `semantic=true` with the full-text weight at 0: vector similarity alone.
    Vectors,
}

/// Which store a benchmark measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// A SQLite file in a scratch directory.
    Sqlite,
    /// The empty PostgreSQL database at `HAIVEMIND_DATABASE_URL`.
    Postgres,
}

/// What `bench locomo` does besides one evaluation under the configured settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// One evaluation.
    None,
    /// One evaluation per setting of a grid (`--sweep`).
    Sweep,
    /// Leave one conversation out over the grid (`--folds`).
    Folds,
}

pub fn run(
    data: &Path,
    mode: Mode,
    tuning: Tuning,
    pad: usize,
    backend: Backend,
    json_output: bool,
) -> Result<()> {
    if pad > 0 && (mode != Mode::FullText || tuning != Tuning::None || backend != Backend::Sqlite) {
        bail!("--pad measures full-text search on SQLite: use it with --mode full-text alone");
    }
    let semantic = mode != Mode::FullText;
    // Settings from the environment (HAIVEMIND_SEARCH__*) still apply on top of these.
    let mut settings = match mode {
        Mode::Vectors => json!({"search": {"full_text_weight": 0.0, "vector_weight": 1.0}}),
        Mode::Hybrid | Mode::FullText => json!({}),
    };
    if backend == Backend::Postgres {
        if tuning != Tuning::None {
            bail!("--sweep and --folds run on the default SQLite backend only");
        }
        if std::env::var_os("HAIVEMIND_DATABASE_URL").is_none() {
            bail!("--backend postgres needs HAIVEMIND_DATABASE_URL naming an empty database");
        }
        settings["storage"] = json!({"backend": "postgres"});
    }
    let text =
        std::fs::read_to_string(data).with_context(|| format!("cannot read {}", data.display()))?;
    let samples: Vec<Value> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a LoCoMo JSON list", data.display()))?;
    let scratch = crate::bench::ScratchDir::create("locomo")?;
    if pad > 0 {
        // Nothing to embed: the padding has no vectors, and full-text needs none.
        settings["embedding"] = json!({"enabled": false});
    }
    let mut client = StdioClient::start(&scratch.0, &settings)?;
    let store_times = store_turns(&mut client, &samples)?;
    if pad > 0 {
        add_padding(&scratch.0, &samples, pad)?;
    }
    match tuning {
        Tuning::None => {}
        Tuning::Sweep => {
            client.finish()?;
            return sweep_fusion(&scratch.0, &samples, json_output);
        }
        Tuning::Folds => {
            client.finish()?;
            return folds(&scratch.0, &samples, json_output);
        }
    }
    let Evaluation {
        overall,
        by_category,
        search_times,
        search_mode,
        ..
    } = evaluate(&mut client, &samples, semantic)?;
    client.finish()?;

    let categories: BTreeMap<String, Value> = by_category
        .iter()
        .map(|(c, s)| {
            let name = CATEGORY_NAMES
                .get((*c as usize).saturating_sub(1))
                .copied()
                .unwrap_or("other");
            (format!("{c} {name}"), s.mean())
        })
        .collect();
    let summary = json!({
        "data": data.display().to_string(),
        "backend": format!("{backend:?}").to_lowercase(),
        "mode": format!("{mode:?}").to_lowercase(),
        "memories": store_times.len(),
        "padding": pad,
        "search_mode": search_mode,
        "overall": overall.mean(),
        "by_category": categories,
        "store_memory": percentiles(store_times),
        "search_memories": percentiles(search_times),
    });
    if json_output {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "{} memories{}, {} questions, ranking {:?}, search_mode {}",
        summary["memories"],
        if pad > 0 {
            format!(" and {pad} of other users")
        } else {
            String::new()
        },
        overall.questions,
        mode,
        search_mode
    );
    println!();
    println!("| set | questions | recall@5 | recall@10 | hit@10 | MRR | nDCG@10 |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let row = |name: &str, v: &Value| {
        println!(
            "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            v["questions"],
            v["recall@5"].as_f64().unwrap_or(0.0),
            v["recall@10"].as_f64().unwrap_or(0.0),
            v["hit@10"].as_f64().unwrap_or(0.0),
            v["mrr"].as_f64().unwrap_or(0.0),
            v["ndcg@10"].as_f64().unwrap_or(0.0)
        );
    };
    row("all", &summary["overall"]);
    for (name, value) in &categories {
        row(name, value);
    }
    println!();
    println!(
        "store_memory p50 {:.2} ms, p99 {:.2} ms; search_memories p50 {:.2} ms, p99 {:.2} ms (stdio round trips)",
        summary["store_memory"]["p50_ms"].as_f64().unwrap_or(0.0),
        summary["store_memory"]["p99_ms"].as_f64().unwrap_or(0.0),
        summary["search_memories"]["p50_ms"].as_f64().unwrap_or(0.0),
        summary["search_memories"]["p99_ms"].as_f64().unwrap_or(0.0)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_ids_are_normalised() {
        assert_eq!(normalize_dia_id("D1:3").as_deref(), Some("D1:3"));
        assert_eq!(normalize_dia_id("D:11:26").as_deref(), Some("D11:26"));
        assert_eq!(normalize_dia_id("D30:05").as_deref(), Some("D30:5"));
        assert_eq!(normalize_dia_id("D"), None);
        let gold = gold_ids(&json!(["D8:6; D9:17", "D", "D1:3"]));
        assert_eq!(
            gold,
            HashSet::from(["D8:6".to_string(), "D9:17".into(), "D1:3".into()])
        );
    }

    #[test]
    fn metrics_follow_their_definitions() {
        let gold: HashSet<String> = ["a".to_string(), "b".into()].into();
        let ranked: Vec<String> = ["x", "a", "y", "z", "w", "v", "b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut scores = Scores::default();
        scores.add(&ranked, &gold);
        let mean = scores.mean();
        assert_eq!(mean["recall@5"], 0.5);
        assert_eq!(mean["recall@10"], 1.0);
        assert_eq!(mean["hit@10"], 1.0);
        assert_eq!(mean["mrr"], 0.5);
        let dcg = 1.0 / 3f64.log2() + 1.0 / 8f64.log2();
        let ideal = 1.0 + 1.0 / 3f64.log2();
        assert!((mean["ndcg@10"].as_f64().unwrap() - dcg / ideal).abs() < 1e-12);
    }

    /// Scores of `questions` questions with recall@10 `recall` each.
    fn scores(questions: usize, recall: f64) -> Scores {
        Scores {
            questions,
            recall_at_10: recall * questions as f64,
            ..Scores::default()
        }
    }

    #[test]
    fn each_fold_is_tuned_without_its_held_out_conversation() {
        let conversation = |a: f64, b: f64, c: f64| -> BTreeMap<String, Scores> {
            [("a", a), ("b", b), ("c", c)]
                .into_iter()
                .map(|(user, recall)| (user.to_string(), scores(10, recall)))
                .collect()
        };
        // Setting 1 is best on a and b together but far worse on c; counting c would
        // choose setting 0 for every fold.
        let per_setting = vec![
            conversation(0.50, 0.50, 0.90),
            conversation(0.60, 0.60, 0.10),
        ];
        let defaults = conversation(0.55, 0.40, 0.80);
        let folds = leave_one_out(&per_setting, &defaults);
        let chosen: Vec<(&str, usize)> = folds
            .iter()
            .map(|f| (f.held_out.as_str(), f.chosen))
            .collect();
        // Held out a: b+c give 0.70 vs 0.35, so setting 0; likewise for b; for c, a+b give
        // 0.50 vs 0.60, so setting 1, which scores 0.10 on c.
        assert_eq!(chosen, [("a", 0), ("b", 0), ("c", 1)]);
        assert_eq!(folds[2].chosen_recall, 0.10);
        assert_eq!(folds[2].default_recall, 0.80);
        assert_eq!(folds[0].chosen_recall, 0.50);
        // Scores merge by question, not by conversation.
        let mut merged = scores(10, 1.0);
        merged.merge(&scores(30, 0.0));
        assert_eq!(merged.recall_at_10(), 0.25);
    }
}
