//! Every configuration key, in one place: the typed sections' keys come from
//! [`Config`]'s own fields (its defaults, serialised), the free-form sections' (`sync`,
//! `connectors`, `claudeops`, read by the sync service, the connectors and the agent
//! registry) from [`FREE_FORM_KEYS`]. `config/config.example.json` must show exactly
//! these ([`documented_keys`]; a test compares them), and a key in a free-form section
//! that nothing reads is reported when the config loads instead of being silently ignored.

use serde_json::{Map, Value};

use crate::ConfigError;
use crate::config::Config;

/// What a free-form key's value must be (`null` always means "not set").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    /// A number above 0 (seconds).
    Positive,
    /// A number of 0 or more.
    NonNegative,
    /// A whole number of 0 or more (milliseconds).
    Count,
    Text,
    List,
    Object,
    /// `sync.discovery.machines`: a list, or the seed's object keyed by machine id.
    Machines,
}

impl Kind {
    fn accepts(self, value: &Value) -> bool {
        let number = value.as_f64();
        match self {
            _ if value.is_null() => return true,
            Kind::Positive => return number.is_some_and(|n| n > 0.0),
            Kind::NonNegative => return number.is_some_and(|n| n >= 0.0),
            Kind::Count => return value.as_u64().is_some(),
            _ => {}
        }
        matches!(
            (self, value),
            (_, Value::Null)
                | (Kind::Bool, Value::Bool(_))
                | (Kind::Text, Value::String(_))
                | (Kind::List, Value::Array(_))
                | (Kind::Object, Value::Object(_))
                | (Kind::Machines, Value::Array(_) | Value::Object(_))
        )
    }

    fn rule(self) -> &'static str {
        match self {
            Kind::Bool => "must be true or false",
            Kind::Positive => "must be a number above 0",
            Kind::NonNegative => "must be a number of 0 or more",
            Kind::Count => "must be a whole number of 0 or more",
            Kind::Text => "must be a string",
            Kind::List => "must be a list",
            Kind::Object => "must be an object",
            Kind::Machines => {
                "must be a list of machines, or an object keyed by machine id (docs/SYNC.md)"
            }
        }
    }
}

/// The keys of the free-form sections that hAIveMind reads, with what each must hold.
/// Their meanings are in the README's configuration table.
const FREE_FORM_KEYS: &[(&str, Kind)] = &[
    ("sync.discovery.machines", Kind::Machines),
    ("sync.discovery.tailscale", Kind::Bool),
    ("sync.sync_interval", Kind::Positive),
    ("sync.max_clock_skew_secs", Kind::Positive),
    ("sync.compact_removed_after_days", Kind::NonNegative),
    ("sync.security.whitelist_only", Kind::Bool),
    ("sync.security.verify_certificates", Kind::Bool),
    ("claudeops.agent_registry.agent_ttl", Kind::Positive),
    ("connectors.confluence.url", Kind::Text),
    ("connectors.confluence.credentials.username", Kind::Text),
    ("connectors.confluence.credentials.token", Kind::Text),
    ("connectors.confluence.spaces", Kind::List),
    ("connectors.confluence.space_category_mapping", Kind::Object),
    ("connectors.confluence.retry_pause_ms", Kind::Count),
    ("connectors.jira.url", Kind::Text),
    ("connectors.jira.credentials.username", Kind::Text),
    ("connectors.jira.credentials.token", Kind::Text),
    ("connectors.jira.projects", Kind::List),
    ("connectors.jira.cloud", Kind::Bool),
    ("connectors.jira.retry_pause_ms", Kind::Count),
];

/// Keys accepted so the seed's configs load, and left out of the example: `server.port`
/// (the seed's name for `server.sync_port`), the seed's ChromaDB and Redis settings (the
/// embedded store and the PostgreSQL hub replace them) and its replication groups (what
/// replicates follows each memory's visibility).
const SEED_KEYS: &[&str] = &[
    "server.port",
    "storage.chromadb",
    "storage.redis",
    "memory.machine_groups",
    "memory.sharing_rules",
];

/// At most this many unread keys are named when a config loads; the rest are counted.
const MAX_NAMED_UNREAD_KEYS: usize = 20;

/// Every key a config file may set, dotted (`security.tls.cert_file`), sorted: the typed
/// sections' fields and the free-form sections' read keys, without the seed's names.
pub fn documented_keys() -> Vec<String> {
    let mut keys = Vec::new();
    if let Ok(Value::Object(sections)) = serde_json::to_value(Config::default()) {
        for (name, value) in &sections {
            if !matches!(name.as_str(), "sync" | "connectors" | "claudeops") {
                leaf_keys(name, value, &mut keys);
            }
        }
    }
    keys.retain(|key| !SEED_KEYS.contains(&key.as_str()));
    keys.extend(FREE_FORM_KEYS.iter().map(|(key, _)| key.to_string()));
    keys.sort();
    keys
}

/// The dotted paths of `value`'s leaves under `path`: anything but a non-empty object.
fn leaf_keys(path: &str, value: &Value, keys: &mut Vec<String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, inner) in map {
                leaf_keys(&format!("{path}.{key}"), inner, keys);
            }
        }
        _ => keys.push(path.to_string()),
    }
}

/// Checks the free-form sections: a read key holding the wrong kind of value is an
/// error naming it; keys nothing reads (typos, the seed's Redis-era settings) come back
/// as notices to log, at most [`MAX_NAMED_UNREAD_KEYS`] of them named.
pub(crate) fn check_free_form(config: &Config) -> Result<Vec<String>, ConfigError> {
    let mut unread = Vec::new();
    for (name, section) in [
        ("sync", &config.sync),
        ("connectors", &config.connectors),
        ("claudeops", &config.claudeops),
    ] {
        check_object(name, section, &mut unread)?;
    }
    let mut notices: Vec<String> = unread
        .iter()
        .take(MAX_NAMED_UNREAD_KEYS)
        .map(|key| format!("config key {key} is not read by hAIveMind; it is ignored"))
        .collect();
    if unread.len() > MAX_NAMED_UNREAD_KEYS {
        notices.push(format!(
            "{} more config keys are not read by hAIveMind; they are ignored",
            unread.len() - MAX_NAMED_UNREAD_KEYS
        ));
    }
    for (key, set) in [
        ("storage.chromadb", config.storage.chromadb.is_some()),
        ("storage.redis", config.storage.redis.is_some()),
        (
            "memory.machine_groups",
            !config.memory.machine_groups.is_empty(),
        ),
        (
            "memory.sharing_rules",
            !config.memory.sharing_rules.is_empty(),
        ),
    ] {
        if set {
            notices.push(format!(
                "{key} is the seed's setting: it is accepted and not used (docs/MIGRATING.md)"
            ));
        }
    }
    Ok(notices)
}

fn check_object(
    path: &str,
    map: &Map<String, Value>,
    unread: &mut Vec<String>,
) -> Result<(), ConfigError> {
    for (key, value) in map {
        // Keys are the user's own text: bounded, and without control characters (a line
        // break would forge a log line), before they are named in a log line.
        let key: String = key.chars().filter(|c| !c.is_control()).take(64).collect();
        let path = format!("{path}.{key}");
        if let Some((_, kind)) = FREE_FORM_KEYS.iter().find(|(known, _)| *known == path) {
            if !kind.accepts(value) {
                return Err(ConfigError::Invalid {
                    key: path,
                    rule: kind.rule().into(),
                });
            }
            continue;
        }
        let prefix = format!("{path}.");
        if FREE_FORM_KEYS
            .iter()
            .any(|(known, _)| known.starts_with(&prefix))
        {
            match value {
                Value::Object(inner) => check_object(&path, inner, unread)?,
                Value::Null => {}
                _ => {
                    return Err(ConfigError::Invalid {
                        key: path,
                        rule: "must be an object".into(),
                    });
                }
            }
            continue;
        }
        unread.push(path);
    }
    Ok(())
}
