//! Configuration: `config/config.json` with the seed's key names, every key optional, then
//! `HAIVEMIND_*` environment variables on top, then one validation pass.
//!
//! Where the file is: `$HAIVEMIND_CONFIG` if set (it must exist), else `./config/config.json`,
//! else `~/.config/haivemind/config.json`, else built-in defaults.
//!
//! Overrides: the stable variables `HAIVEMIND_DATA_DIR`, `HAIVEMIND_MODEL_DIR`,
//! `HAIVEMIND_MACHINE_ID`, `HAIVEMIND_API_TOKEN` and `HAIVEMIND_DATABASE_URL`, plus one generic form for any key:
//! `HAIVEMIND_MEMORY__MAX_CONTENT_BYTES=131072` sets `memory.max_content_bytes` (sections
//! and keys joined by `__`; the value is read as JSON when it parses, else as a string).
//!
//! An unknown key or a wrong type stops start-up with a message that names the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::ConfigError;
use crate::memory::{BUILTIN_CATEGORIES, MemoryRules};
use crate::security::{SecurityConfig, is_loopback_host};
pub use crate::storage_config::{StorageBackend, StorageConfig};

/// The whole configuration of one node. It serialises (defaults included) only so that
/// [`crate::config_keys`] can list every key; a serialised config would hold the token of
/// `security.api_token`, so one is never logged or sent.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This machine's id in the fleet. Defaults to the host name.
    pub machine_id: Option<String>,
    /// Listening addresses and limits.
    pub server: ServerConfig,
    /// Where data lives.
    pub storage: StorageConfig,
    /// The embedding model.
    pub embedding: EmbeddingConfig,
    /// How hybrid search fuses its rankings.
    pub search: SearchConfig,
    /// Memory model rules and lifecycle.
    pub memory: MemoryConfig,
    /// Logging and audit.
    pub logging: LoggingConfig,
    /// Replication between machines. Checked in full by the sync service.
    pub sync: Map<String, Value>,
    /// Tokens, TLS, networks, rate limits.
    pub security: SecurityConfig,
    /// Confluence and Jira. Checked in full by the connectors.
    pub connectors: Map<String, Value>,
    /// The seed's agent-coordination settings (`claudeops.agent_registry.agent_ttl`, ...).
    pub claudeops: Map<String, Value>,
    /// What MCP clients are offered.
    pub mcp: McpConfig,
    /// What loading changed or read differently, to log once logging is up (a seed
    /// setting read as ours, for instance).
    #[serde(skip)]
    pub notices: Vec<String>,
}

/// `server.*`: where the HTTP services listen.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind; loopback unless configured otherwise.
    pub host: String,
    /// The seed's key for the sync service's port.
    pub port: u16,
    /// Remote MCP port.
    pub mcp_port: u16,
    /// Sync service port (same as `port`; this name wins when both are set).
    pub sync_port: Option<u16>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How long a request may take to start its answer before it gets 503. Streamed
    /// answers (an MCP tool call's event stream, SSE) are not cut once started: a write
    /// cut off mid-way would leave the agent unsure whether it landed.
    pub request_timeout_secs: u64,
    /// How long an MCP session may sit idle before the server forgets it; a client that
    /// then uses it gets 404 and starts a new one.
    pub session_idle_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8899,
            mcp_port: 8900,
            sync_port: None,
            max_body_bytes: 4 * 1024 * 1024,
            request_timeout_secs: 30,
            session_idle_secs: 30 * 60,
        }
    }
}

/// `embedding.*`: the local sentence-embedding model.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddingConfig {
    /// Whether to load the model at all; false runs full-text only, without a warning.
    pub enabled: bool,
    /// The model's folder; `$HAIVEMIND_MODEL_DIR` overrides it.
    pub model_dir: Option<PathBuf>,
}

impl Default for EmbeddingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            model_dir: None,
        }
    }
}

/// `mcp.*`: what MCP clients are offered.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// Which tools `tools/list` shows: `core`, `team`, `devops` or `all` (the default).
    pub tool_profile: ToolProfile,
}

/// A set of tools offered in `tools/list`: every tool list costs an agent's context on
/// every session, so an agent that only remembers and recalls can be shown only that.
/// Tools outside the profile still answer when called by name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolProfile {
    /// Remember and recall: the memory tools an agent uses every day, and get_context.
    Core,
    /// Core, and working with other agents: the roster, tasks and broadcasts.
    Team,
    /// Core, and the DevOps records: incidents, runbooks, infrastructure state, drift.
    Devops,
    /// Every tool.
    #[default]
    All,
}

impl ToolProfile {
    /// The profile's name in config.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolProfile::Core => "core",
            ToolProfile::Team => "team",
            ToolProfile::Devops => "devops",
            ToolProfile::All => "all",
        }
    }

    /// The profile named `text`, or why not (naming `field`).
    pub fn parse(field: &str, text: &str) -> Result<Self, crate::InvalidInput> {
        Self::ALL
            .into_iter()
            .find(|profile| profile.as_str() == text.trim())
            .ok_or_else(|| {
                crate::InvalidInput::new(
                    field,
                    format!(
                        "unknown tool profile {:?}: use core, team, devops or all",
                        crate::error::excerpt(text)
                    ),
                )
            })
    }

    /// Every profile, smallest first.
    pub const ALL: [ToolProfile; 4] = [
        ToolProfile::Core,
        ToolProfile::Team,
        ToolProfile::Devops,
        ToolProfile::All,
    ];
}

/// `search.*`: how `semantic=true` (hybrid) search fuses the full-text and the vector
/// ranking. Each ranking goes `fusion_depth` deep; a memory at rank `r` earns
/// `weight / (rank_constant + r)` from it. The defaults were tuned on the LoCoMo dev split
/// (docs/BENCHMARKS.md); a weight of 0 turns one side off.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// `rrf` (weighted reciprocal rank) or `convex` (weighted sum of normalised scores).
    pub fusion: String,
    /// Weight of the full-text (BM25) ranking.
    pub full_text_weight: f64,
    /// Weight of the vector ranking.
    pub vector_weight: f64,
    /// The reciprocal-rank constant `k`.
    pub rank_constant: f64,
    /// How many results of each ranking are fused.
    pub fusion_depth: usize,
    /// The least cosine similarity at which the vector ranking supports a memory: below
    /// it, a memory comes back only if full-text matches it. Without a floor every memory
    /// is "similar" to any query, and an unrelated question returned the whole store.
    pub min_similarity: f64,
    /// What the memories written just before and after one of the ten best-fused, by the
    /// same user, earn from it: this times its score (0: off).
    pub neighbour_weight: f64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            fusion: "rrf".into(),
            full_text_weight: 1.0,
            vector_weight: 0.7,
            rank_constant: 2.0,
            fusion_depth: 50,
            min_similarity: DEFAULT_MIN_SIMILARITY,
            neighbour_weight: DEFAULT_NEIGHBOUR_WEIGHT,
        }
    }
}

/// `search.neighbour_weight` when not set: on LoCoMo dev, leave-one-conversation-out chose
/// a neighbour weight on every fold (docs/BENCHMARKS.md).
pub const DEFAULT_NEIGHBOUR_WEIGHT: f64 = 0.3;

/// `search.min_similarity` when not set. On the LoCoMo dev split no floor up to 0.35 cost
/// any conversation recall@10 (0.4 did), but a short paraphrase scores lower than dialogue
/// turns do: "ES heap blew up" is 0.25 from the note it means. Text of another subject
/// scores under 0.1 (docs/BENCHMARKS.md).
pub const DEFAULT_MIN_SIMILARITY: f64 = 0.2;

/// `sync.max_clock_skew_secs` when not set.
pub const DEFAULT_MAX_CLOCK_SKEW_SECS: f64 = 300.0;
/// The largest `sync.max_clock_skew_secs` accepted: a day.
const MAX_CLOCK_SKEW_SECS_LIMIT: f64 = 86_400.0;

/// `memory.*`: rules of the memory model and its lifecycle.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// The largest content accepted, in bytes.
    pub max_content_bytes: usize,
    /// The largest metadata object accepted, as compact JSON, in bytes.
    pub max_metadata_bytes: usize,
    /// How long soft-deleted memories can be recovered before they are purged.
    pub recover_days: u32,
    /// Categories beyond the built-in ones.
    pub categories: Vec<String>,
    /// The seed's machine groups, for narrowing what replicates where.
    pub machine_groups: BTreeMap<String, Value>,
    /// The seed's sharing rules, for narrowing what replicates where.
    pub sharing_rules: BTreeMap<String, Value>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            max_content_bytes: 64 * 1024,
            max_metadata_bytes: crate::memory::DEFAULT_MAX_METADATA_BYTES,
            recover_days: 30,
            categories: Vec::new(),
            machine_groups: BTreeMap::new(),
            sharing_rules: BTreeMap::new(),
        }
    }
}

/// `logging.*`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// A `tracing` filter (`info`, `haivemind_store=debug`); `RUST_LOG` wins when set.
    pub level: String,
    /// Whether the audit log is written.
    pub audit_enabled: bool,
    /// Whether authentication failures are audited.
    pub log_auth_failures: bool,
    /// Whether sync sessions are audited.
    pub log_sync_events: bool,
    /// Audit log size before rotation, like `100MB`.
    pub max_log_size: String,
    /// How log lines are written to stderr: `text` for people, or `json` (one object per
    /// line) for collectors.
    pub format: LogFormat,
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-12-01T00:00:00Z  WARN target: message field=value`.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`.
    Json,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
            audit_enabled: true,
            log_auth_failures: true,
            log_sync_events: true,
            max_log_size: "100MB".into(),
        }
    }
}

/// Variables with a fixed meaning, and the key each sets.
const NAMED_VARIABLES: &[(&str, &[&str])] = &[
    ("HAIVEMIND_DATA_DIR", &["storage", "data_dir"]),
    ("HAIVEMIND_MODEL_DIR", &["embedding", "model_dir"]),
    ("HAIVEMIND_MACHINE_ID", &["machine_id"]),
    ("HAIVEMIND_API_TOKEN", &["security", "api_token"]),
    ("HAIVEMIND_DATABASE_URL", &["storage", "postgres", "url"]),
];

impl Config {
    /// `claudeops.agent_registry.agent_ttl` in milliseconds (seconds in the file; default
    /// 900): an agent not heard from for this long is inactive and gets no new tasks.
    pub fn agent_ttl_ms(&self) -> i64 {
        self.claudeops
            .get("agent_registry")
            .and_then(|r| r.get("agent_ttl"))
            .and_then(Value::as_f64)
            .filter(|s| *s > 0.0)
            .map_or(900_000, |s| (s * 1000.0) as i64)
    }

    /// Finds, reads and validates the configuration, with overrides from the process
    /// environment.
    pub fn load() -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let path = match std::env::var_os("HAIVEMIND_CONFIG") {
            Some(path) => Some(PathBuf::from(path)),
            None => default_config_path(),
        };
        Self::load_from(path.as_deref(), &env)
    }

    /// Reads the file at `path` (if any), applies the `HAIVEMIND_*` entries of `env`, and
    /// validates the result.
    pub fn load_from(path: Option<&Path>, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let shown_path = path.map(Path::to_path_buf).unwrap_or_default();
        let mut tree = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                if text.trim().is_empty() {
                    // An empty file is a config with no settings, not a syntax error.
                    Value::Object(Map::new())
                } else {
                    serde_json::from_str::<Value>(&without_comments(&text)).map_err(|e| {
                        ConfigError::Parse {
                            path: path.to_path_buf(),
                            key: ".".into(),
                            message: format!("not valid JSON: {e}"),
                        }
                    })?
                }
            }
            None => Value::Object(Map::new()),
        };
        if !tree.is_object() {
            return Err(ConfigError::Parse {
                path: shown_path,
                key: ".".into(),
                message: "must be a JSON object".into(),
            });
        }
        apply_env(&mut tree, env)?;
        let mut config: Config =
            serde_path_to_error::deserialize(tree).map_err(|e| ConfigError::Parse {
                path: shown_path,
                key: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        if let Some(notice) = config.security.adopt_seed_origins() {
            config.notices.push(notice);
        }
        config.validate()?;
        let unread = crate::config_keys::check_free_form(&config)?;
        config.notices.extend(unread);
        Ok(config)
    }

    /// Checks every rule that a type alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, rule: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                rule: rule.into(),
            })
        };
        self.storage.validate()?;
        if self.memory.max_content_bytes < 1024 {
            return invalid("memory.max_content_bytes", "must be at least 1024");
        }
        if self.memory.recover_days == 0 {
            return invalid(
                "memory.recover_days",
                "must be at least 1 (0 would turn every soft delete into a hard delete)",
            );
        }
        if self.memory.max_content_bytes > 16 * 1024 * 1024 {
            return invalid(
                "memory.max_content_bytes",
                "must be at most 16777216 (16 MiB)",
            );
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.memory.max_metadata_bytes) {
            return invalid(
                "memory.max_metadata_bytes",
                "must be between 1024 and 16777216 (16 MiB)",
            );
        }
        if let Some(skew) = self.sync.get("max_clock_skew_secs")
            && !skew
                .as_f64()
                .is_some_and(|s| (1.0..=MAX_CLOCK_SKEW_SECS_LIMIT).contains(&s))
        {
            return invalid(
                "sync.max_clock_skew_secs",
                "must be a number of seconds between 1 and 86400",
            );
        }
        // After the checks with more to say about their key.
        crate::config_keys::check_free_form(self)?;
        for (i, category) in self.memory.categories.iter().enumerate() {
            let valid = !category.is_empty()
                && category.len() <= 64
                && category
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if !valid {
                return invalid(
                    &format!("memory.categories[{i}]"),
                    "must be 1-64 characters of a-z, 0-9, '_' or '-'",
                );
            }
        }
        if let Some(id) = &self.machine_id
            && (id.trim().is_empty() || id.len() > 128)
        {
            return invalid("machine_id", "must be 1-128 bytes and not blank");
        }
        if self.server.host.trim().is_empty() {
            return invalid("server.host", "must not be empty");
        }
        if self.server.max_body_bytes < 1024 {
            return invalid("server.max_body_bytes", "must be at least 1024");
        }
        if self.server.request_timeout_secs == 0 {
            return invalid("server.request_timeout_secs", "must be at least 1");
        }
        if self.server.session_idle_secs == 0 {
            return invalid("server.session_idle_secs", "must be at least 1");
        }
        self.security.validate().map_err(|e| ConfigError::Invalid {
            key: e.field,
            rule: e.rule,
        })?;
        if !self.security.require_auth && !is_loopback_host(&self.server.host) {
            return invalid(
                "security.require_auth",
                "may only be false while server.host is a loopback address (127.0.0.1, ::1, localhost)",
            );
        }
        crate::audit::parse_size("logging.max_log_size", &self.logging.max_log_size).map_err(
            |e| ConfigError::Invalid {
                key: e.field,
                rule: e.rule,
            },
        )?;
        let search = &self.search;
        if !["rrf", "convex"].contains(&search.fusion.as_str()) {
            return invalid("search.fusion", "must be \"rrf\" or \"convex\"");
        }
        for (key, weight) in [
            ("search.full_text_weight", search.full_text_weight),
            ("search.vector_weight", search.vector_weight),
        ] {
            if !(0.0..=100.0).contains(&weight) {
                return invalid(key, "must be between 0 and 100");
            }
        }
        if search.full_text_weight == 0.0 && search.vector_weight == 0.0 {
            return invalid(
                "search.vector_weight",
                "and search.full_text_weight must not both be 0",
            );
        }
        if !(0.0..=10_000.0).contains(&search.rank_constant) {
            return invalid("search.rank_constant", "must be between 0 and 10000");
        }
        if !(1..=1_000).contains(&search.fusion_depth) {
            return invalid("search.fusion_depth", "must be between 1 and 1000");
        }
        if !(0.0..=10.0).contains(&search.neighbour_weight) {
            return invalid("search.neighbour_weight", "must be between 0 and 10");
        }
        if !(-1.0..=1.0).contains(&search.min_similarity) {
            return invalid(
                "search.min_similarity",
                "must be a cosine similarity between -1 and 1",
            );
        }
        Ok(())
    }

    /// The rules memories obey on this node.
    pub fn memory_rules(&self) -> MemoryRules {
        let mut categories: Vec<String> =
            BUILTIN_CATEGORIES.iter().map(|c| c.to_string()).collect();
        for extra in &self.memory.categories {
            if !categories.contains(extra) {
                categories.push(extra.clone());
            }
        }
        MemoryRules {
            max_content_bytes: self.memory.max_content_bytes,
            categories,
            max_metadata_bytes: self.memory.max_metadata_bytes,
        }
    }

    /// How far ahead of this node's clock a replicated operation's stamp may be, in
    /// milliseconds: `sync.max_clock_skew_secs` (default 300, checked at load). Operations
    /// stamped further ahead are refused, so no peer can drag this node's clock forward.
    pub fn max_clock_skew_ms(&self) -> u64 {
        let seconds = self
            .sync
            .get("max_clock_skew_secs")
            .and_then(Value::as_f64)
            .unwrap_or(DEFAULT_MAX_CLOCK_SKEW_SECS);
        (seconds * 1000.0) as u64
    }

    /// The data directory: configured, else `~/.local/share/haivemind`.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.storage.data_dir {
            return dir.clone();
        }
        home_dir().join(".local/share/haivemind")
    }

    /// The audit log inside the data directory.
    pub fn audit_log_path(&self) -> PathBuf {
        self.data_dir().join("audit.log")
    }

    /// The audit log's rotation size, from `logging.max_log_size` (checked at load).
    pub fn audit_log_max_bytes(&self) -> u64 {
        crate::audit::parse_size("logging.max_log_size", &self.logging.max_log_size)
            .unwrap_or(100 << 20)
    }

    /// The SQLite file inside the data directory.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir().join("haivemind.sqlite3")
    }

    /// The embedding model's folder: configured (`embedding.model_dir`,
    /// `HAIVEMIND_MODEL_DIR`), else `~/.local/share/haivemind/models/all-MiniLM-L6-v2`, where
    /// `scripts/fetch-model` puts it.
    pub fn model_dir(&self) -> PathBuf {
        if let Some(dir) = &self.embedding.model_dir {
            return dir.clone();
        }
        home_dir().join(".local/share/haivemind/models/all-MiniLM-L6-v2")
    }

    /// This machine's id: configured, else the host name.
    pub fn machine_id(&self) -> String {
        if let Some(id) = &self.machine_id {
            return id.trim().to_string();
        }
        host_name()
    }
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `text` with its `//` and `/* */` comments blanked out (outside strings), so a config
/// file can explain itself; line and column numbers of errors stay true.
pub fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let (mut in_string, mut escaped) = (false, false);
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                    out.push(' ');
                }
            }
            ('/', Some('*')) => {
                chars.next();
                out.push_str("  ");
                let mut star = false;
                for c in chars.by_ref() {
                    out.push(if c == '\n' { '\n' } else { ' ' });
                    if star && c == '/' {
                        break;
                    }
                    star = c == '*';
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The config file read when `HAIVEMIND_CONFIG` is not set: `config/config.json` in the
/// current directory, else the one in the user's config directory, if either exists.
pub fn default_config_path() -> Option<PathBuf> {
    let local = PathBuf::from("config/config.json");
    if local.is_file() {
        return Some(local);
    }
    let user = home_dir().join(".config/haivemind/config.json");
    user.is_file().then_some(user)
}

/// The host name, from the kernel, else `$HOSTNAME`, else `localhost`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn apply_env(tree: &mut Value, env: &[(String, String)]) -> Result<(), ConfigError> {
    let mut entries: Vec<&(String, String)> = env
        .iter()
        .filter(|(name, _)| name.starts_with("HAIVEMIND_"))
        .collect();
    entries.sort();
    for (name, raw) in entries {
        let path: Vec<String> =
            if let Some((_, path)) = NAMED_VARIABLES.iter().find(|(var, _)| var == name) {
                path.iter().map(|s| s.to_string()).collect()
            } else if name.contains("__") {
                name["HAIVEMIND_".len()..]
                    .split("__")
                    .map(|part| part.to_ascii_lowercase())
                    .collect()
            } else {
                // Other HAIVEMIND_* variables (HAIVEMIND_CONFIG, HAIVEMIND_TOKEN,
                // HAIVEMIND_LOG, connector tokens) belong to the features that read them.
                continue;
            };
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Env {
                var: name.clone(),
                message: "has an empty key segment".into(),
            });
        }
        let is_path_like = NAMED_VARIABLES.iter().any(|(var, _)| var == name);
        let value = if is_path_like {
            Value::String(raw.clone())
        } else {
            serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone()))
        };
        set_path(tree, &path, value).map_err(|message| ConfigError::Env {
            var: name.clone(),
            message,
        })?;
    }
    Ok(())
}

fn set_path(tree: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let mut node = tree;
    for (depth, key) in path.iter().enumerate() {
        let Value::Object(map) = node else {
            return Err(format!("{} is not an object", path[..depth].join(".")));
        };
        if depth + 1 == path.len() {
            map.insert(key.clone(), value);
            return Ok(());
        }
        node = map
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_configs_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for file in ["config/config.example.json", "packaging/config.json"] {
            let config = Config::load_from(Some(&root.join(file)), &[])
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(config.server.mcp_port, 8900, "{file}");
        }
    }

    #[test]
    fn comments_are_blanked_outside_strings() {
        let text = "// a comment\n{\"url\": \"http://x//y\", /* block\n over lines */ \"a\": \"q\\\"//\" // end\n}";
        let value: Value = serde_json::from_str(&without_comments(text)).unwrap();
        assert_eq!(value["url"], "http://x//y");
        assert_eq!(value["a"], "q\"//");
        assert_eq!(without_comments(text).lines().count(), text.lines().count());
    }

    fn load(json: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_from(Some(&path), &env)
    }

    #[test]
    fn the_seeds_tailscale_origin_is_read_as_the_tailnet_allowlist() {
        let config = load(
            r#"{"security": {"allowed_origins": ["tailscale", "https://app.example.com"],
                             "allowed_networks": ["loopback"]}}"#,
            &[],
        )
        .expect("the seed's setting no longer stops start-up");
        assert_eq!(config.security.allowed_origins, ["https://app.example.com"]);
        assert_eq!(config.security.allowed_networks, ["loopback", "tailscale"]);
        let tailnet: std::net::IpAddr = "100.101.102.103".parse().unwrap();
        assert!(
            config
                .security
                .networks()
                .unwrap()
                .iter()
                .any(|n| n.contains(tailnet))
        );
        assert_eq!(config.notices.len(), 1, "{:?}", config.notices);
        assert!(config.notices[0].contains("allowed_networks"));

        let open = load(
            r#"{"security": {"allowed_origins": ["Tailscale"], "allowed_networks": []}}"#,
            &[],
        )
        .unwrap();
        assert!(
            open.security.allowed_networks.is_empty(),
            "an open server stays open"
        );
        assert!(load("{}", &[]).unwrap().notices.is_empty());
        assert!(
            load(
                r#"{"security": {"allowed_origins": ["app.example.com"]}}"#,
                &[]
            )
            .is_err(),
            "other origins without a scheme are still refused"
        );
    }

    #[test]
    fn the_database_url_comes_from_the_environment_and_never_shows() {
        let url = "postgres://hub:hunter2@db.example:5432/haivemind";
        let config = load(
            r#"{"storage": {"backend": "postgres", "postgres": {"url": "postgres://old@x/y", "pool_size": 4}}}"#,
            &[("HAIVEMIND_DATABASE_URL", url)],
        )
        .unwrap();
        assert_eq!(config.storage.backend, StorageBackend::Postgres);
        let chosen = config.storage.postgres.url.as_ref().unwrap();
        assert_eq!(chosen.expose(), url);
        assert_eq!(config.storage.postgres.pool_size, 4);
        assert!(!format!("{config:?}").contains("hunter2"));

        let error = load(
            "{}",
            &[("HAIVEMIND_DATABASE_URL", "mysql://root:hunter2@db/x")],
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("storage.postgres.url"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");

        let error = load(r#"{"storage": {"backend": "postgres"}}"#, &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("storage.postgres.url"), "{error}");
        for bad in [
            r#"{"storage": {"backend": "mysql"}}"#,
            r#"{"storage": {"postgres": {"pool_size": 0}}}"#,
            r#"{"storage": {"postgres": {"sslmode": "allow"}}}"#,
        ] {
            let error = load(bad, &[]).unwrap_err().to_string();
            assert!(error.contains("storage."), "{bad}: {error}");
        }
    }

    #[test]
    fn every_key_is_optional() {
        let config = load("{}", &[]).unwrap();
        assert_eq!(config.memory.max_content_bytes, 65536);
        assert_eq!(config.memory.recover_days, 30);
        assert_eq!(config.server.mcp_port, 8900);
    }

    #[test]
    fn clock_skew_and_metadata_limits_have_defaults_and_bounds() {
        let config = load("{}", &[]).unwrap();
        assert_eq!(config.max_clock_skew_ms(), 300_000);
        assert_eq!(config.memory_rules().max_metadata_bytes, 65_536);
        let config = load(r#"{"sync": {"max_clock_skew_secs": 10}}"#, &[]).unwrap();
        assert_eq!(config.max_clock_skew_ms(), 10_000);
        for bad in [r#""soon""#, "0", "1e9"] {
            let err = load(
                &format!(r#"{{"sync": {{"max_clock_skew_secs": {bad}}}}}"#),
                &[],
            )
            .unwrap_err();
            assert!(
                err.to_string().contains("sync.max_clock_skew_secs"),
                "{err}"
            );
        }
        let err = load(r#"{"memory": {"max_metadata_bytes": 10}}"#, &[]).unwrap_err();
        assert!(
            err.to_string().contains("memory.max_metadata_bytes"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_key_is_named() {
        let err = load(r#"{"memory": {"max_content_byte": 5}}"#, &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("memory"), "{text}");
        assert!(text.contains("max_content_byte"), "{text}");
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let err = load(r#"{"memory": {"recover_days": "soon"}}"#, &[]).unwrap_err();
        assert!(err.to_string().contains("memory.recover_days"), "{err}");
    }

    #[test]
    fn a_bad_value_names_the_key_and_rule() {
        let err = load(r#"{"memory": {"max_content_bytes": 10}}"#, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "memory.max_content_bytes: must be at least 1024"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = load(
            r#"{"memory": {"max_content_bytes": 2048}, "machine_id": "from-file"}"#,
            &[
                ("HAIVEMIND_MEMORY__MAX_CONTENT_BYTES", "4096"),
                ("HAIVEMIND_MACHINE_ID", "from-env"),
                ("HAIVEMIND_DATA_DIR", "/tmp/hv"),
            ],
        )
        .unwrap();
        assert_eq!(config.memory.max_content_bytes, 4096);
        assert_eq!(config.machine_id(), "from-env");
        assert_eq!(config.data_dir(), PathBuf::from("/tmp/hv"));
    }

    #[test]
    fn a_generic_override_of_an_unknown_key_is_an_error() {
        let err = load("{}", &[("HAIVEMIND_MEMORY__NOPE", "1")]).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn extra_categories_extend_the_builtin_ones() {
        let config = load(r#"{"memory": {"categories": ["ml-models"]}}"#, &[]).unwrap();
        let rules = config.memory_rules();
        assert!(rules.check_category("ml-models").is_ok());
        assert!(rules.check_category("global").is_ok());
        let err = load(r#"{"memory": {"categories": ["Bad Name"]}}"#, &[]).unwrap_err();
        assert!(err.to_string().starts_with("memory.categories[0]"), "{err}");
    }

    #[test]
    fn the_shipped_example_config_is_valid_and_all_defaults() {
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/config.example.json");
        let config = Config::load_from(Some(&example), &[]).unwrap();
        let defaults = Config::default();
        assert_eq!(
            config.memory.max_content_bytes,
            defaults.memory.max_content_bytes
        );
        assert_eq!(config.memory.recover_days, defaults.memory.recover_days);
        assert_eq!(config.server.max_body_bytes, defaults.server.max_body_bytes);
        assert_eq!(config.logging.level, defaults.logging.level);
        assert_eq!(config.storage.backend, defaults.storage.backend);
        assert_eq!(
            config.storage.postgres.pool_size,
            defaults.storage.postgres.pool_size
        );
        assert_eq!(
            config.storage.postgres.sslmode,
            defaults.storage.postgres.sslmode
        );
        assert_eq!(
            config.storage.postgres.connect_timeout_secs,
            defaults.storage.postgres.connect_timeout_secs
        );
    }

    #[test]
    fn an_empty_file_means_no_settings() {
        let config = load(" \n", &[]).unwrap();
        assert_eq!(config.memory.recover_days, 30);
        let err = load("{", &[]).unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }

    #[test]
    fn a_neighbour_weight_out_of_range_is_refused_with_the_key_named() {
        for weight in ["-0.1", "10.5"] {
            let err = load(
                &format!(r#"{{"search": {{"neighbour_weight": {weight}}}}}"#),
                &[],
            )
            .unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("search.neighbour_weight: must be between 0 and 10"),
                "{err}"
            );
        }
        let off = load(r#"{"search": {"neighbour_weight": 0}}"#, &[]).unwrap();
        assert_eq!(off.search.neighbour_weight, 0.0);
    }

    #[test]
    fn zero_recover_days_is_refused() {
        let err = load(r#"{"memory": {"recover_days": 0}}"#, &[]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("memory.recover_days: must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn an_environment_error_without_a_file_names_only_the_key() {
        let env = vec![(
            "HAIVEMIND_MEMORY__RECOVER_DAYS".to_string(),
            "soon".to_string(),
        )];
        let err = Config::load_from(None, &env).unwrap_err();
        assert!(
            err.to_string().starts_with("memory.recover_days: "),
            "{err}"
        );
    }

    #[test]
    fn a_missing_named_file_is_an_error() {
        let err = Config::load_from(Some(Path::new("/nonexistent/config.json")), &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
    }
}
