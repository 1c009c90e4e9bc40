//! The example config shows every key there is, and only those; keys nothing reads are
//! reported; a read key of the wrong kind stops loading with its name.

use std::path::{Path, PathBuf};

use haivemind_core::ConfigError;
use haivemind_core::config::Config;
use haivemind_core::config_keys::documented_keys;
use serde_json::Value;

fn repository_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(name)
}

/// The example's keys: its leaves, where a documented key is a leaf whatever it holds (a
/// list of machines, a mapping of spaces).
fn example_keys(path: &str, value: &Value, documented: &[String], keys: &mut Vec<String>) {
    match value {
        Value::Object(map) if !map.is_empty() && !documented.iter().any(|k| k == path) => {
            for (key, inner) in map {
                let inner_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                example_keys(&inner_path, inner, documented, keys);
            }
        }
        _ => keys.push(path.to_string()),
    }
}

fn load(json: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, json).unwrap();
    Config::load_from(Some(&path), &[])
}

#[test]
fn the_example_config_shows_exactly_the_documented_keys() {
    let documented = documented_keys();
    for expected in [
        "server.sync_port",
        "security.rate_limit.burst",
        "storage.postgres.sslmode",
        "sync.discovery.machines",
        "sync.security.whitelist_only",
        "connectors.jira.cloud",
        "claudeops.agent_registry.agent_ttl",
    ] {
        assert!(
            documented.iter().any(|k| k == expected),
            "{expected} in {documented:?}"
        );
    }
    assert!(
        !documented.iter().any(|k| k == "server.port"),
        "the seed's name is not advertised"
    );
    let path = repository_file("config/config.example.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let example: Value = serde_json::from_str(&text).unwrap();
    let mut shown = Vec::new();
    example_keys("", &example, &documented, &mut shown);
    shown.sort();
    let missing: Vec<&String> = documented.iter().filter(|k| !shown.contains(k)).collect();
    let unknown: Vec<&String> = shown.iter().filter(|k| !documented.contains(k)).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "config.example.json lacks {missing:?} and shows keys that do not exist: {unknown:?}"
    );
    let config = Config::load_from(Some(&path), &[]).unwrap();
    assert!(config.notices.is_empty(), "{:?}", config.notices);
}

#[test]
fn every_documented_key_is_in_the_readme_table() {
    let readme = std::fs::read_to_string(repository_file("README.md")).unwrap();
    let missing: Vec<String> = documented_keys()
        .into_iter()
        .filter(|key| !readme.contains(&format!("`{key}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md's configuration table lacks {missing:?}"
    );
}

#[test]
fn keys_nothing_reads_are_named_when_the_config_loads() {
    let config = load(
        r#"{"sync": {"sync_intervall": 10, "discovery": {"machines": {"beta": {"tailscale_ip": "100.64.0.2"}}},
                     "security": {"whitelist_only": true, "max_sync_attempts": 3}},
            "claudeops": {"agent_registry": {"agent_ttl": 60}}}"#,
    )
    .unwrap();
    let notices = config.notices.join("\n");
    assert!(notices.contains("sync.sync_intervall"), "{notices}");
    assert!(
        notices.contains("sync.security.max_sync_attempts"),
        "{notices}"
    );
    assert!(!notices.contains("machines"), "{notices}");
    assert_eq!(config.agent_ttl_ms(), 60_000);

    let many: String = (0..30).map(|i| format!("\"k{i}\": 1,")).collect();
    let config = load(&format!(
        r#"{{"connectors": {{{many} "jira": {{"url": null}}}}}}"#
    ))
    .unwrap();
    assert_eq!(config.notices.len(), 21, "{:?}", config.notices);
    assert!(
        config.notices[20].starts_with("10 more config keys"),
        "{:?}",
        config.notices
    );
}

#[test]
fn a_read_key_of_the_wrong_kind_is_refused_with_its_name() {
    for (json, key) in [
        (r#"{"sync": {"sync_interval": "30"}}"#, "sync.sync_interval"),
        (r#"{"sync": {"sync_interval": 0}}"#, "sync.sync_interval"),
        (
            r#"{"connectors": {"jira": {"retry_pause_ms": 1.5}}}"#,
            "connectors.jira.retry_pause_ms",
        ),
        (
            r#"{"sync": {"discovery": {"machines": "beta"}}}"#,
            "sync.discovery.machines",
        ),
        (r#"{"sync": {"security": "strict"}}"#, "sync.security"),
        (
            r#"{"connectors": {"jira": {"cloud": "yes"}}}"#,
            "connectors.jira.cloud",
        ),
        (
            r#"{"claudeops": {"agent_registry": {"agent_ttl": [1]}}}"#,
            "claudeops.agent_registry.agent_ttl",
        ),
    ] {
        let err = load(json).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!("{key}: ")),
            "{json}: {err}"
        );
    }
}
