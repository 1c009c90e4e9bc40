//! Bounded fuzzing on stable Rust (proptest): every decoder that reads input from outside
//! gets random and mutated input, and must answer with a value or a named error, never a
//! panic, a hang or an unbounded answer. Targets: the JSON-RPC screening every transport
//! uses, the sync payload decoder and the apply path, the HTML and ADF converters of the
//! connectors, the playbook validators and the config loader.
//!
//! Each target runs a fixed number of cases (`HAIVEMIND_FUZZ_CASES`, default 1024), so the
//! suite takes seconds in `scripts/test`; set it higher for a longer hunt. A failure is
//! shrunk and its seed saved under `proptest-regressions/`, which is kept in the
//! repository: every crash found is replayed first from then on, as a regression test.

use haivemind_core::hlc::pack;
use haivemind_mcp::jsonrpc::{Screened, screen};
use haivemind_store::{OpLogEntry, Store, StoreOptions};
use proptest::prelude::*;
use serde_json::{Value, json};

fn cases() -> u32 {
    std::env::var("HAIVEMIND_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024)
}

/// Any JSON value, nested a few levels, with the strings decoders look for mixed in.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z_/]{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "tools/call",
            "initialize",
            "memory",
            "agent",
            "task",
            "create",
            "update",
            "erase",
            "hard_delete",
            "withdraw",
            "register",
            "complete",
            "paragraph",
            "text",
            "doc",
            "bulletList",
            "listItem",
            "codeBlock",
            "team-global",
            "private",
            "pii",
        ])
        .prop_map(|s| Value::String(s.to_string())),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "jsonrpc",
                    "id",
                    "method",
                    "params",
                    "name",
                    "arguments",
                    "op_id",
                    "hlc",
                    "origin",
                    "record_kind",
                    "record_id",
                    "op",
                    "payload",
                    "vector",
                    "type",
                    "content",
                    "text",
                    "attrs",
                    "marks",
                    "action",
                    "scope",
                    "tags",
                    "metadata",
                    "category",
                    "user_id",
                    "deleted_at",
                    "model_id",
                    "dims",
                    "f32le",
                ]),
                inner,
                0..6,
            )
            .prop_map(|map| Value::Object(
                map.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 500,
        ..ProptestConfig::default()
    })]

    #[test]
    fn json_rpc_screening_answers_every_message(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        value in any_json(),
    ) {
        for message in [bytes, value.to_string().into_bytes()] {
            match screen(&message) {
                Screened::Pass { .. } => {}
                Screened::Answer(frame) | Screened::Unanswerable(frame) => {
                    let frame: Value = serde_json::from_str(&frame).expect("frames are JSON");
                    let code = frame["error"]["code"].as_i64().unwrap();
                    prop_assert!([-32700, -32600, -32602].contains(&code), "{frame}");
                    prop_assert!(frame.to_string().len() < 2_048, "{frame}");
                }
            }
        }
    }

    #[test]
    fn sync_operations_decode_or_name_the_field_and_apply_without_harm(
        mutations in prop::collection::vec((0usize..8, any_json()), 1..5),
        garbage in any_json(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions::new(dir.path().join("db"), "beta")).unwrap();
        let mut private = haivemind_core::NewMemory::new("beta keeps this");
        private.scope = haivemind_core::Scope::Private;
        let private = store.create(private).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let id = private.id.to_string();
        let mut op = json!({
            "op_id": "op-1", "hlc": pack(now, 0), "origin": "mallory",
            "record_kind": "memory", "record_id": id, "op": "update",
            "payload": {"id": id, "content": "changed", "scope": "team-global"},
        });
        const KEYS: [&str; 8] =
            ["op_id", "hlc", "origin", "record_kind", "record_id", "op", "payload", "vector"];
        for (key, value) in &mutations {
            op[KEYS[*key]] = value.clone();
        }
        let mut decoded = Vec::new();
        for (i, candidate) in [op, garbage].iter().enumerate() {
            match OpLogEntry::from_wire(&format!("ops[{i}]"), candidate) {
                Ok(entry) => decoded.push(entry),
                Err(error) => prop_assert!(error.field.starts_with(&format!("ops[{i}]")), "{error}"),
            }
        }
        let outcome = store.apply_remote(&decoded).unwrap();
        prop_assert_eq!(outcome.received, decoded.len());
        prop_assert_eq!(store.get(private.id).unwrap(), private);
        for refusal in &outcome.refusals {
            prop_assert!(refusal.reason.len() < 1_024, "{:?}", refusal);
        }
    }

    #[test]
    fn html_and_adf_convert_to_bounded_text(html in ".{0,600}", tags in prop::collection::vec(
        prop::sample::select(vec!["<p>", "</p>", "<br/>", "<li>", "<ul>", "</ul>", "<script>",
            "</script>", "<![CDATA[", "]]>", "&amp;", "&#x41;", "&#99999999;", "<!--", "-->",
            "<ac:structured-macro ac:name=\"code\">", "<table><tr><td>", "&"]), 0..30),
        adf in any_json(),
    ) {
        let mixed: String = tags.concat() + &html;
        for input in [html.as_str(), mixed.as_str()] {
            let text = haivemind_connectors::text::html_to_text(input);
            prop_assert!(text.len() <= input.len() * 4 + 16, "{} -> {} bytes", input.len(), text.len());
            let _ = haivemind_connectors::text::decode_entities(input);
        }
        let text = haivemind_connectors::text::adf_to_text(&adf);
        prop_assert!(text.len() <= adf.to_string().len() * 4 + 16);
    }

    #[test]
    fn playbooks_validate_or_name_a_line(
        kind in prop::sample::select(vec!["ansible", "shell", "terraform", "kubernetes", "other"]),
        lines in prop::collection::vec(prop_oneof![
            ".{0,30}".boxed(),
            prop::sample::select(vec!["---", "- hosts: all", "  tasks:", "    - name: x",
                "#!/bin/bash", "set -euo pipefail", "resource \"a\" \"b\" {", "}", "{", "\t- x",
                "  - name: [unclosed", "key: 'quote", "rm -rf /", "EOF", "<<EOF"])
                .prop_map(str::to_string).boxed(),
        ], 0..20),
    ) {
        let content = lines.join("\n");
        if let Err(error) = haivemind_store::validate_playbook(kind, &content) {
            prop_assert!(error.to_string().len() < 2_048, "{error}");
        }
    }

    #[test]
    fn the_config_loader_names_what_it_refuses(config in any_json(), raw in ".{0,200}") {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        for text in [config.to_string(), raw] {
            std::fs::write(&path, &text).unwrap();
            if let Err(error) = haivemind_core::Config::load_from(Some(&path), &[]) {
                prop_assert!(!error.to_string().is_empty());
            }
        }
    }
}
