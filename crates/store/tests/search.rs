//! Full-text search: ranking, filters inside the query, paging, recent memories.

mod common;

use common::{memory, scratch};
use haivemind_core::MemoryPatch;
use haivemind_core::memory::MAX_NAME_BYTES;
use haivemind_core::time_format::now_ms;
use haivemind_store::{MemoryFilter, RecentQuery, SearchMode, SearchQuery};

fn query(text: &str, adjust: impl FnOnce(&mut SearchQuery)) -> SearchQuery {
    let mut q = SearchQuery::new(text);
    adjust(&mut q);
    q
}

#[test]
fn ranks_the_best_match_first_and_says_it_is_full_text() {
    let s = scratch();
    s.store
        .create(memory("grafana dashboard for proxy latency"))
        .unwrap();
    let best = s
        .store
        .create(memory(
            "elasticsearch heap exhausted on elastic3; raised Xmx to 16g",
        ))
        .unwrap();
    s.store.create(memory("heap of laundry")).unwrap();
    let results = s.store.search(&SearchQuery::new("elastic3 heap")).unwrap();
    assert_eq!(results.hits[0].memory.id, best.id);
    assert_eq!(results.total, 2);
    assert!(results.hits[0].score > results.hits[1].score);
    assert_eq!(results.mode, SearchMode::FullText);
    assert!(
        results
            .note
            .as_deref()
            .unwrap()
            .contains("no embedding model")
    );
    let plain = s
        .store
        .search(&query("heap", |q| q.semantic = false))
        .unwrap();
    assert_eq!(
        plain.note, None,
        "asking for full-text only needs no excuse"
    );
}

#[test]
fn memories_holding_every_word_rank_before_those_holding_some() {
    let s = scratch();
    // A note that repeats one word scores high on that word alone...
    s.store
        .create(memory("heap heap heap heap heap heap"))
        .unwrap();
    s.store
        .create(memory("elastic3 elastic3 elastic3 elastic3"))
        .unwrap();
    // ...but the one with both words is what the person asked for.
    let both = s
        .store
        .create(memory(
            "a long note that mentions elastic3 once and heap once, among many other words",
        ))
        .unwrap();
    let results = s.store.search(&SearchQuery::new("elastic3 heap")).unwrap();
    assert_eq!(results.hits[0].memory.id, both.id);
    assert_eq!(
        results.hits.len(),
        3,
        "memories with only some of the words still follow"
    );
    assert_eq!((results.total, results.total_exact), (3, true));
    // Paging across the tier boundary neither repeats nor skips.
    let mut q = SearchQuery::new("elastic3 heap");
    q.limit = 1;
    let ids: Vec<_> = (0..3)
        .map(|offset| {
            q.offset = offset;
            s.store.search(&q).unwrap().hits[0].memory.id
        })
        .collect();
    assert_eq!(ids[0], both.id);
    assert_ne!(ids[1], ids[2]);
    q.offset = 3;
    assert!(s.store.search(&q).unwrap().hits.is_empty());
}

#[test]
fn query_syntax_is_never_interpreted() {
    let s = scratch();
    s.store
        .create(memory("a NOT b: \"quoted\" -minus *star"))
        .unwrap();
    for text in ["NOT", "\"quoted", "b:", "-minus", "*star", "AND OR NEAR("] {
        assert!(s.store.search(&SearchQuery::new(text)).is_ok(), "{text}");
    }
    let err = s.store.search(&SearchQuery::new("?!")).unwrap_err();
    assert_eq!(err.to_string(), "query: must contain at least one word");
}

#[test]
fn filters_apply_before_the_limit_so_pages_stay_full() {
    let s = scratch();
    // 200 strong matches for another user would starve a post-filter.
    for i in 0..200 {
        let mut m = memory(&format!("disk full disk full disk full on db{i}"));
        m.user_id = "noisy".into();
        s.store.create(m).unwrap();
    }
    for i in 0..15 {
        let mut m = memory(&format!("disk nearly full on web{i}"));
        m.user_id = "quiet".into();
        m.tags = vec!["web".into(), if i % 2 == 0 { "even" } else { "odd" }.into()];
        m.project = Some("shop".into());
        m.category = "monitoring".into();
        s.store.create(m).unwrap();
    }
    let page = s
        .store
        .search(&query("disk full", |q| {
            q.filter.user_id = Some("quiet".into());
            q.limit = 10;
        }))
        .unwrap();
    assert_eq!(page.hits.len(), 10);
    assert_eq!(page.total, 15);
    assert!(page.hits.iter().all(|h| h.memory.user_id == "quiet"));
    let second = s
        .store
        .search(&query("disk full", |q| {
            q.filter.user_id = Some("quiet".into());
            q.limit = 10;
            q.offset = 10;
        }))
        .unwrap();
    assert_eq!(second.hits.len(), 5);
    assert_eq!(second.total, 15);
    let first_ids: Vec<_> = page.hits.iter().map(|h| h.memory.id).collect();
    assert!(
        second
            .hits
            .iter()
            .all(|h| !first_ids.contains(&h.memory.id))
    );
    let check = |adjust: &dyn Fn(&mut MemoryFilter), expected: usize| {
        let mut q = SearchQuery::new("disk");
        q.limit = 100;
        adjust(&mut q.filter);
        assert_eq!(
            s.store.search(&q).unwrap().total,
            expected,
            "{:?}",
            q.filter
        );
    };
    check(&|f| f.tags = vec!["web".into()], 15);
    check(&|f| f.tags = vec!["web".into(), "even".into()], 8);
    check(&|f| f.project = Some("shop".into()), 15);
    check(&|f| f.category = Some("monitoring".into()), 15);
    check(&|f| f.category = Some("global".into()), 200);
    check(&|f| f.machine_id = Some("test-machine".into()), 215);
    check(&|f| f.machine_id = Some("elsewhere".into()), 0);
    check(&|f| f.since_ms = Some(now_ms() + 60_000), 0);
    check(&|f| f.until_ms = Some(now_ms() + 60_000), 215);
    check(&|f| f.until_ms = Some(0), 0);
}

#[test]
fn bad_paging_and_filters_are_refused_with_the_field_named() {
    let s = scratch();
    let err = s.store.search(&query("x", |q| q.limit = 0)).unwrap_err();
    assert_eq!(err.to_string(), "limit: must be between 1 and 100");
    let err = s
        .store
        .search(&query("x", |q| q.offset = 1_000_000))
        .unwrap_err();
    assert!(err.to_string().starts_with("offset:"));
    let err = s
        .store
        .search(&query("x", |q| q.filter.category = Some("nope".into())))
        .unwrap_err();
    assert!(err.to_string().starts_with("category: unknown value"));
    let err = s
        .store
        .search(&query("x", |q| {
            q.filter.since_ms = Some(10);
            q.filter.until_ms = Some(5);
        }))
        .unwrap_err();
    assert_eq!(err.to_string(), "since: must not be after until");
}

#[test]
fn recent_memories_come_newest_first_within_the_window() {
    let s = scratch();
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut m = memory(&format!("event {i}"));
        m.category = if i % 2 == 0 { "agent" } else { "global" }.into();
        ids.push(s.store.create(m).unwrap().id);
    }
    let recent = s
        .store
        .recent(&RecentQuery {
            filter: MemoryFilter::default(),
            hours: 24,
            limit: 3,
        })
        .unwrap();
    let got: Vec<_> = recent.iter().map(|m| m.id).collect();
    assert_eq!(got, vec![ids[4], ids[3], ids[2]]);
    let agents = s
        .store
        .recent(&RecentQuery {
            filter: MemoryFilter {
                category: Some("agent".into()),
                ..Default::default()
            },
            hours: 1,
            limit: 10,
        })
        .unwrap();
    assert_eq!(agents.len(), 3);
    let err = s
        .store
        .recent(&RecentQuery {
            filter: MemoryFilter::default(),
            hours: 0,
            limit: 10,
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "hours: must be at least 1");
}

#[test]
fn user_and_project_filters_hold_for_any_name_and_follow_updates() {
    let s = scratch();
    // Names that are prefixes of each other, differ only in case, hold quotes, spaces,
    // FTS5 syntax or non-ASCII, or are as long as a name may be: each must select exactly
    // its own memories, with the full-text index narrowing the search by them.
    let long = "n".repeat(MAX_NAME_BYTES);
    let users = [
        "al",
        "alice",
        "Alice",
        "a \"quoted\" NEAR(x) user*",
        "ünïcødé ✓ed",
        long.as_str(),
    ];
    // Each user's project is named after the user, as long as a name may be at most.
    let project_of = |user: &str| -> String {
        let mut project = format!("{user} project");
        project.truncate(MAX_NAME_BYTES);
        project
    };
    for (i, user) in users.iter().enumerate() {
        for j in 0..=i {
            let mut m = memory(&format!("rotated the backup key on host{j}"));
            m.user_id = user.to_string();
            m.project = (j % 2 == 0).then(|| project_of(user));
            s.store.create(m).unwrap();
        }
    }
    let search = |user: Option<&str>, project: Option<&str>| {
        let mut q = SearchQuery::new("backup key");
        q.limit = 100;
        q.filter.user_id = user.map(str::to_string);
        q.filter.project = project.map(str::to_string);
        s.store.search(&q).unwrap()
    };
    for (i, user) in users.iter().enumerate() {
        let found = search(Some(user), None);
        assert_eq!(found.total, i + 1, "{user}");
        assert!(
            found.hits.iter().all(|h| h.memory.user_id == *user),
            "{user}"
        );
        let project = project_of(user);
        let in_project = search(Some(user), Some(&project));
        assert_eq!(in_project.total, i / 2 + 1, "{user}");
        assert!(
            in_project
                .hits
                .iter()
                .all(|h| h.memory.project.as_deref() == Some(project.as_str()))
        );
    }
    // A memory moved to another project is found under the new one only, and one whose
    // project is cleared under none.
    let moved = search(Some("alice"), Some("alice project")).hits[0]
        .memory
        .id;
    s.store
        .update(
            moved,
            MemoryPatch {
                project: Some(Some("elsewhere".into())),
                ..Default::default()
            },
            None,
        )
        .unwrap();
    assert_eq!(search(Some("alice"), Some("alice project")).total, 0);
    assert_eq!(search(None, Some("elsewhere")).hits[0].memory.id, moved);
    s.store
        .update(
            moved,
            MemoryPatch {
                project: Some(None),
                ..Default::default()
            },
            None,
        )
        .unwrap();
    assert_eq!(search(None, Some("elsewhere")).total, 0);
    assert_eq!(search(Some("alice"), None).total, 2);
    // A name longer than any memory may carry finds nothing, and is no error.
    let too_long = "n".repeat(MAX_NAME_BYTES + 1);
    assert_eq!(search(Some(&too_long), None).total, 0);
    assert_eq!(search(None, Some(&too_long)).total, 0);
}
