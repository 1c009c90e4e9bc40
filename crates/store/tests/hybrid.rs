//! Hybrid search with the real all-MiniLM-L6-v2: memories found by meaning, filters that
//! hold before ranking, vectors that follow updates and removals, model changes that never
//! mix vectors, and several handles on one file.

mod common;

use std::sync::Arc;

use common::{memory, model, scratch, scratch_with, scratch_with_model};
use haivemind_core::embedder::EmbedError;
use haivemind_core::{Embedder, MemoryPatch, NewMemory};
use haivemind_store::{MemoryFilter, SearchMode, SearchQuery, Store, StoreOptions};

/// Operations notes that share words with the queries below but not their meaning.
const DISTRACTORS: &[&str] = &[
    "nginx on proxy2 returned 502 after the upstream pool was drained for deploys",
    "postgres replication lag on db3 reached four minutes during the nightly vacuum",
    "kafka broker 2 lost its controller role after a zookeeper session timeout",
    "the certificate for api.example.com expires in twelve days; renewal ticket opened",
    "disk on backup1 filled up because log rotation was disabled by a config typo",
    "redis memory fragmentation ratio climbed to 1.8 on cache4 after the key migration",
    "deploy of billing-service 4.2 rolled back: health checks failed on two pods",
    "DNS resolution for internal services was slow because of a misconfigured resolver",
];

fn fill(store: &Store, texts: &[&str]) {
    store
        .create_batch(texts.iter().map(|t| memory(t)).collect())
        .expect("store");
}

/// Another handle on the scratch store's file, with the model: what a second process sees.
fn second_handle(s: &common::Scratch) -> Store {
    common::open(StoreOptions {
        embedder: Some(model()),
        ..StoreOptions::new(s.dir.path().join("hv.sqlite3"), "test-machine")
    })
    .unwrap()
}

fn search(store: &Store, text: &str) -> Vec<String> {
    let results = store.search(&SearchQuery::new(text)).expect("search");
    assert_eq!(results.mode, SearchMode::Hybrid);
    results.hits.into_iter().map(|h| h.memory.content).collect()
}

const ES: &str = "Elasticsearch on elastic3 ran out of JVM memory and the node left the cluster";

#[test]
fn a_paraphrase_with_no_shared_words_ranks_first() {
    let s = scratch_with_model();
    fill(&s.store, DISTRACTORS);
    s.store.create(memory(ES)).unwrap();
    let found = search(&s.store, "ES heap blew up");
    assert_eq!(found[0], ES, "{found:#?}");
    // Full-text alone cannot find it: none of the query's words are in it.
    let mut keywords = SearchQuery::new("ES heap blew up");
    keywords.semantic = false;
    let by_keyword = s.store.search(&keywords).unwrap();
    assert_eq!(by_keyword.mode, SearchMode::FullText);
    assert!(by_keyword.hits.iter().all(|h| h.memory.content != ES));
}

#[test]
fn filters_hold_before_ranking_so_a_selective_filter_still_fills_the_page() {
    let s = scratch_with_model();
    // 1,050 near-identical memories of user "a", and 12 of user "b" that match the query
    // worse than all of them (by meaning alone: they share no word with it, and are still
    // above the similarity floor): more than the vector scan's first 1,000 candidates
    // under a filter, so the filter must be applied before ranking, not after.
    let mut news: Vec<NewMemory> = (0..1_050)
        .map(|i| {
            let mut m = memory(&format!(
                "Elasticsearch ran out of JVM heap on node {i}, garbage collection stalled"
            ));
            m.user_id = "a".into();
            m
        })
        .collect();
    for i in 0..12 {
        let mut m = memory(&format!(
            "the java garbage collector paused search node {i} for ten seconds"
        ));
        m.user_id = "b".into();
        m.category = "project".into();
        m.tags = vec![format!("t{}", i % 2)];
        news.push(m);
    }
    s.store.create_batch(news).unwrap();
    let mut query = SearchQuery::new("elasticsearch heap exhausted");
    query.filter.user_id = Some("b".into());
    let results = s.store.search(&query).unwrap();
    assert_eq!(results.mode, SearchMode::Hybrid);
    assert_eq!(results.hits.len(), 10);
    assert!(results.hits.iter().all(|h| h.memory.user_id == "b"));

    query.filter = MemoryFilter {
        category: Some("project".into()),
        tags: vec!["t1".into()],
        ..MemoryFilter::default()
    };
    let results = s.store.search(&query).unwrap();
    assert_eq!(results.hits.len(), 6);
    assert!(results.hits.iter().all(|h| h.memory.tags == ["t1"]));

    // A time range that holds nothing returns nothing, whatever the vectors say.
    query.filter = MemoryFilter {
        until_ms: Some(1),
        ..MemoryFilter::default()
    };
    assert!(s.store.search(&query).unwrap().hits.is_empty());
}

#[test]
fn vectors_follow_updates_deletions_and_recovery() {
    let s = scratch_with_model();
    fill(&s.store, DISTRACTORS);
    let m = s
        .store
        .create(memory("the office coffee machine is broken again"))
        .unwrap();
    let patch = MemoryPatch {
        content: Some(ES.into()),
        ..MemoryPatch::default()
    };
    s.store.update(m.id, patch, None).unwrap();
    assert_eq!(search(&s.store, "ES heap blew up")[0], ES);
    // The stored vector is the new text's, not the old one's.
    let expected = model().embed(&[ES]).unwrap().remove(0);
    let (_, stored) = s
        .store
        .vector_snapshot()
        .unwrap()
        .into_iter()
        .find(|(id, _)| *id == m.id)
        .unwrap();
    let cosine: f32 = stored.iter().zip(&expected).map(|(a, b)| a * b).sum();
    assert!(cosine > 0.9999, "{cosine}");

    s.store.soft_delete(m.id, None).unwrap();
    assert!(!search(&s.store, "ES heap blew up").contains(&ES.to_string()));
    s.store.recover(m.id).unwrap();
    assert_eq!(search(&s.store, "ES heap blew up")[0], ES);
    s.store.hard_delete(m.id, None).unwrap();
    assert!(!search(&s.store, "ES heap blew up").contains(&ES.to_string()));
}

#[test]
fn another_handle_on_the_same_file_sees_new_vectors_and_removals() {
    let s = scratch_with_model();
    fill(&s.store, DISTRACTORS);
    let other = second_handle(&s);
    // The other handle builds its index now, before the memory exists.
    assert!(!search(&other, "ES heap blew up").contains(&ES.to_string()));
    let m = s.store.create(memory(ES)).unwrap();
    assert_eq!(search(&other, "ES heap blew up")[0], ES);
    s.store.hard_delete(m.id, None).unwrap();
    assert!(!search(&other, "ES heap blew up").contains(&ES.to_string()));
}

#[test]
fn a_memory_moved_to_another_category_is_found_under_it_in_every_handle() {
    // The scan filters on its own copy of each memory's fields: a change to them must reach
    // every index, this handle's and another's, or a filtered search by meaning would miss
    // the memory (the query shares no word with it, so only its vector can find it).
    let s = scratch_with_model();
    fill(&s.store, DISTRACTORS);
    let other = second_handle(&s);
    let m = s.store.create(memory(ES)).unwrap();
    let in_category = |store: &Store, category: &str| {
        let mut query = SearchQuery::new("ES heap blew up");
        query.filter.category = Some(category.into());
        let results = store.search(&query).unwrap();
        results.hits.iter().any(|h| h.memory.id == m.id)
    };
    for store in [&s.store, &other] {
        assert!(in_category(store, &m.category));
        assert!(!in_category(store, "project"));
    }
    let patch = MemoryPatch {
        category: Some("project".into()),
        ..MemoryPatch::default()
    };
    s.store.update(m.id, patch, None).unwrap();
    for store in [&s.store, &other] {
        assert!(in_category(store, "project"));
        assert!(!in_category(store, &m.category));
    }
    // A soft deletion made through one handle hides it from the other's scan too, and a
    // recovery brings it back.
    other.soft_delete(m.id, None).unwrap();
    assert!(!in_category(&s.store, "project"));
    other.recover(m.id).unwrap();
    assert!(in_category(&s.store, "project"));
}

/// The real model, except that it returns vectors one number short once told to.
struct ShortOnce(Arc<haivemind_embed::MiniLm>, std::sync::atomic::AtomicBool);

impl Embedder for ShortOnce {
    fn model_id(&self) -> &str {
        self.0.model_id()
    }
    fn dimensions(&self) -> usize {
        self.0.dimensions()
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut vectors = self.0.embed(texts)?;
        if self.1.load(std::sync::atomic::Ordering::Relaxed) {
            vectors.iter_mut().for_each(|v| {
                v.pop();
            });
        }
        Ok(vectors)
    }
}

#[test]
fn a_query_vector_of_the_wrong_length_is_an_error_not_a_crash() {
    let embedder = Arc::new(ShortOnce(model(), false.into()));
    let s =
        scratch_with(|options| options.embedder = Some(Arc::clone(&embedder) as Arc<dyn Embedder>));
    fill(&s.store, DISTRACTORS);
    assert!(search(&s.store, "kafka controller")[0].contains("kafka"));
    embedder.1.store(true, std::sync::atomic::Ordering::Relaxed);
    let error = s
        .store
        .search(&SearchQuery::new("certificate renewal"))
        .unwrap_err();
    assert!(error.to_string().contains("383 dimensions"), "{error}");
}

/// The real model under another id: what a model upgrade looks like to the store.
struct Renamed(Arc<haivemind_embed::MiniLm>);

impl Embedder for Renamed {
    fn model_id(&self) -> &str {
        "another-model/1"
    }
    fn dimensions(&self) -> usize {
        self.0.dimensions()
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.0.embed(texts)
    }
}

#[test]
fn a_model_change_never_mixes_vectors_and_reindexing_brings_them_back() {
    let s = scratch_with_model();
    fill(&s.store, DISTRACTORS);
    s.store.create(memory(ES)).unwrap();
    let path = s.dir.path().join("hv.sqlite3");
    let upgraded = common::open(StoreOptions {
        embedder: Some(Arc::new(Renamed(model()))),
        ..StoreOptions::new(&path, "test-machine")
    })
    .unwrap();
    let coverage = upgraded.vector_coverage().unwrap().unwrap();
    assert_eq!((coverage.embedded, coverage.missing), (0, 9));
    // Not yet embedded by the new model: found by full-text, never by the old vectors.
    let results = upgraded
        .search(&SearchQuery::new("ES heap blew up"))
        .unwrap();
    assert!(results.hits.iter().all(|h| h.memory.content != ES));
    let results = upgraded.search(&SearchQuery::new("elastic3 JVM")).unwrap();
    assert_eq!(results.hits[0].memory.content, ES);

    let mut reports = Vec::new();
    let outcome = upgraded.embed_missing(|p| reports.push(p)).unwrap();
    assert_eq!((outcome.done, outcome.total, outcome.failed), (9, 9, 0));
    assert_eq!(reports.first().map(|p| p.done), Some(0));
    assert_eq!(reports.last().map(|p| p.done), Some(9));
    let coverage = upgraded.vector_coverage().unwrap().unwrap();
    assert_eq!((coverage.embedded, coverage.missing), (9, 0));
    assert_eq!(search(&upgraded, "ES heap blew up")[0], ES);

    // One vector per memory: the old model's are gone, not kept beside the new ones.
    let vectors = haivemind_store::tables::TABLES
        .iter()
        .find(|t| t.name == "memory_vectors")
        .unwrap();
    let mut models: Vec<(String, i64)> = Vec::new();
    upgraded
        .read_rows::<haivemind_store::StoreError>(vectors, |cells| {
            let haivemind_store::tables::Cell::Text(model) = &cells[2] else {
                panic!("model_id is text: {cells:?}");
            };
            match models.iter_mut().find(|(m, _)| m == model) {
                Some((_, count)) => *count += 1,
                None => models.push((model.clone(), 1)),
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(models, [("another-model/1".to_string(), 9)]);
}

#[test]
fn memories_written_without_the_model_are_embedded_later() {
    let s = scratch();
    fill(&s.store, DISTRACTORS);
    s.store.create(memory(ES)).unwrap();
    let results = s
        .store
        .search(&SearchQuery::new("ES heap blew up"))
        .unwrap();
    assert_eq!(results.mode, SearchMode::FullText);
    assert!(results.note.unwrap().contains("no embedding model"));

    let with_model = common::open(StoreOptions {
        embedder: Some(model()),
        ..StoreOptions::new(s.dir.path().join("hv.sqlite3"), "test-machine")
    })
    .unwrap();
    let results = with_model
        .search(&SearchQuery::new("ES heap blew up"))
        .unwrap();
    assert!(results.note.unwrap().contains("reindex"));
    with_model.embed_missing(|_| {}).unwrap();
    assert_eq!(search(&with_model, "ES heap blew up")[0], ES);
    // Nothing left to do the second time.
    assert_eq!(with_model.embed_missing(|_| {}).unwrap().total, 0);
}

#[test]
fn a_batch_is_embedded_with_the_same_vectors_as_one_by_one() {
    let batch = scratch_with_model();
    fill(&batch.store, DISTRACTORS);
    let single = scratch_with(|o| o.embedder = Some(model()));
    for text in DISTRACTORS {
        single.store.create(memory(text)).unwrap();
    }
    let vectors = |store: &Store| {
        let mut all: Vec<Vec<f32>> = store
            .vector_snapshot()
            .unwrap()
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        all.sort_by(|a, b| a[0].total_cmp(&b[0]));
        all
    };
    let (a, b) = (vectors(&batch.store), vectors(&single.store));
    assert_eq!(a.len(), DISTRACTORS.len());
    for (x, y) in a.iter().zip(&b) {
        let cosine: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
        assert!(cosine > 0.9999, "batch padding changed a vector: {cosine}");
    }
}

#[test]
fn an_unrelated_question_finds_nothing_and_the_total_counts_what_is_supported() {
    let s = scratch_with_model();
    fill(&s.store, DISTRACTORS);
    s.store.create(memory(ES)).unwrap();
    let unrelated = s
        .store
        .search(&SearchQuery::new(
            "a good recipe for banana bread with walnuts",
        ))
        .unwrap();
    assert_eq!(unrelated.mode, SearchMode::Hybrid);
    let found: Vec<&str> = unrelated
        .hits
        .iter()
        .map(|h| h.memory.content.as_str())
        .collect();
    assert!(found.is_empty(), "nothing supports any of {found:#?}");
    assert_eq!(unrelated.total, 0);
    assert_eq!(
        unrelated.note, None,
        "every memory is embedded; none is similar enough"
    );

    // A question by meaning still finds its memory, and the total is no longer the store.
    let related = s
        .store
        .search(&SearchQuery::new("ES heap blew up"))
        .unwrap();
    assert_eq!(related.hits[0].memory.content, ES);
    assert_eq!(
        related.total,
        related.hits.len(),
        "every supported memory fits the page"
    );
    assert!(
        related.total < DISTRACTORS.len() + 1,
        "{} of {} memories are not all similar to the question",
        related.total,
        DISTRACTORS.len() + 1
    );
}

#[test]
fn the_memory_written_after_a_match_comes_back_with_it_for_its_user_only() {
    const QUESTION: &str = "Caroline: did you finally take the spring trip you were planning?";
    const ANSWER: &str = "Melanie: yes, at last, with both kids";
    const SECRET: &str = "Melanie: the alarm code for the house is 4417";
    const OTHER_USER: &str = "Bob: repotted the basil on the balcony";
    let lend = |weight: f64| {
        let s = scratch_with(|options| {
            options.embedder = Some(model());
            options.fusion.neighbour_weight = weight;
        });
        fill(&s.store, DISTRACTORS);
        let write = |content: &str, user: &str, secret: bool| {
            let mut m = memory(content);
            m.user_id = user.into();
            if secret {
                m.confidentiality = haivemind_core::Confidentiality::Confidential;
            }
            s.store.create(m).unwrap();
        };
        write(SECRET, "ann", true);
        write(QUESTION, "ann", false);
        // Another user's memory between the two turns is no one's neighbour here.
        write(OTHER_USER, "bob", false);
        write(ANSWER, "ann", false);
        s
    };
    let found = |s: &common::Scratch, hide_restricted: bool| -> Vec<String> {
        let mut q = SearchQuery::new("spring trip plans");
        q.filter.hide_restricted = hide_restricted;
        let results = s.store.search(&q).unwrap();
        assert_eq!(results.mode, SearchMode::Hybrid);
        results.hits.into_iter().map(|h| h.memory.content).collect()
    };
    // Neither words nor meaning bring the answer back on its own.
    let alone = lend(0.0);
    assert_eq!(
        found(&alone, false),
        [QUESTION],
        "{:#?}",
        found(&alone, false)
    );
    // Lent to by the matching turn before it, it comes back second; so does the turn
    // before, unless the caller may not see confidential memories. The other user's
    // memory, written in between, never does.
    let lent = lend(0.3);
    let all = found(&lent, false);
    assert_eq!(all[0], QUESTION, "{all:#?}");
    assert!(all.contains(&ANSWER.to_string()), "{all:#?}");
    assert!(all.contains(&SECRET.to_string()), "{all:#?}");
    assert!(!all.contains(&OTHER_USER.to_string()), "{all:#?}");
    let visible = found(&lent, true);
    assert_eq!(visible, [QUESTION, ANSWER], "{visible:#?}");
}
