//! The context pack (`Store::context`): what fits the budget, in which order, and what a
//! readonly caller never gets.

mod common;

use haivemind_core::{Confidentiality, NewMemory};
use haivemind_store::{ContextQuery, NewIncident};

fn pack(
    store: &haivemind_store::Store,
    query: Option<&str>,
    max_tokens: usize,
    hide: bool,
) -> haivemind_store::ContextPack {
    store
        .context(&ContextQuery {
            query: query.map(str::to_string),
            project: None,
            agent_id: None,
            max_tokens,
            hide_restricted: hide,
        })
        .unwrap()
}

#[test]
fn the_pack_puts_the_relevant_first_and_keeps_to_its_budget() {
    let scratch = common::scratch();
    let store = &scratch.store;
    let relevant = store
        .create(NewMemory::new(
            "Kafka consumer lag on stream-3 came from a slow partition rebalance",
        ))
        .unwrap();
    for i in 0..40 {
        store
            .create(NewMemory::new(format!(
                "Unrelated note number {i} about lunch menus and parking"
            )))
            .unwrap();
    }
    store
        .record_incident(NewIncident {
            title: "stream-3 consumer lag".into(),
            description: "lag above 1M messages".into(),
            severity: "critical".into(),
            affected_systems: vec!["stream-3".into()],
            resolution: None,
            lessons_learned: None,
            agent_id: None,
        })
        .unwrap();

    let big = pack(store, Some("kafka consumer lag rebalance"), 4000, false);
    let first = big.text.lines().nth(1).unwrap_or_default();
    assert!(
        first.contains(&relevant.id.to_string()),
        "relevant first:\n{}",
        big.text
    );
    assert!(
        big.text.contains("## Open incidents")
            && big.text.contains("[critical, open] stream-3 consumer lag")
    );
    assert!(big.text.contains("## Recent memories"));
    assert_eq!(big.memories[0].id, relevant.id);

    for budget in [60, 120] {
        let small = pack(store, Some("kafka consumer lag rebalance"), budget, false);
        assert!(small.tokens <= budget, "{} > {budget}", small.tokens);
        assert!(small.left_out > 0, "a small budget leaves lines out");
        assert!(small.text.len() < big.text.len());
        assert_eq!(small.counted_with, "estimate", "no model in this store");
        assert!(
            small.tokens >= haivemind_core::embedder::estimate_tokens(&small.text) / 2,
            "the count describes the text"
        );
    }
    let error = store
        .context(&ContextQuery {
            max_tokens: 10,
            ..ContextQuery::default()
        })
        .unwrap_err();
    assert!(error.to_string().contains("max_tokens"), "{error}");
}

#[test]
fn a_readonly_pack_leaves_out_confidential_memories() {
    let scratch = common::scratch();
    let store = &scratch.store;
    let mut secret = NewMemory::new("The vault unseal keys for prod are held by Dana");
    secret.confidentiality = Confidentiality::Confidential;
    let secret = store.create(secret).unwrap();
    let open = pack(store, Some("vault unseal keys"), 2000, false);
    assert!(open.text.contains(&secret.id.to_string()));
    let hidden = pack(store, Some("vault unseal keys"), 2000, true);
    assert!(
        !hidden.text.contains("unseal") && hidden.memories.is_empty(),
        "{}",
        hidden.text
    );
}
