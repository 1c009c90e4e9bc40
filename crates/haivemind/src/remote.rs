//! `haivemind --remote URL <command>`: the commands that make sense against another
//! machine's server, run there through its REST API (`POST /api/v1/tools/{name}`, the same
//! tools with the same rules as MCP), with the token in `$HAIVEMIND_TOKEN`.
//!
//! `token create|list|revoke` manage the server's tokens (an admin token is needed). The
//! commands that work on this machine's files (serve, mcp, export, import, purge, reindex,
//! migrate, bench) are refused with the list of those that work remotely.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use haivemind_core::error::excerpt;
use serde_json::{Map, Value, json};

use crate::cli::{Command, TokenCommand};
use crate::output::Printer;

/// What `--remote` runs, for the refusal of anything else.
const REMOTE_COMMANDS: &str = "store, search, context, get, recent, delete, recover, stats, status, \
                               peers, incidents, drift, agents, tasks, broadcast, token (admin tokens)";

/// The largest answer read from the server.
const MAX_ANSWER_BYTES: u64 = 32 * 1024 * 1024;

/// A server reached over HTTP(S) with a bearer token.
pub(crate) struct Remote {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Remote {
    /// The server at `url` (`https://hive:8900`, with or without `/mcp`), with the token
    /// from `$HAIVEMIND_TOKEN`.
    pub(crate) fn new(url: &str) -> Result<Self> {
        let url = url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!(
                "--remote: {:?} is not an http:// or https:// URL (like https://hive:8900)",
                excerpt(url)
            );
        }
        let base = url
            .trim_end_matches('/')
            .trim_end_matches("/mcp")
            .trim_end_matches('/')
            .to_string();
        let token = std::env::var("HAIVEMIND_TOKEN")
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .context(
                "--remote needs a token in $HAIVEMIND_TOKEN (one made on that server with `haivemind token create`)",
            )?;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(120)))
            .http_status_as_error(false)
            .user_agent(concat!("haivemind/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Self { base, token, agent })
    }

    /// Calls tool `name` with `arguments`; its structured result, or the server's error.
    pub(crate) fn call(&self, name: &str, arguments: Value) -> Result<Value> {
        let url = format!("{}/api/v1/tools/{name}", self.base);
        let response = self
            .agent
            .post(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .send_json(&arguments);
        self.answer(response)
    }

    /// `GET path` of the REST API.
    pub(crate) fn get(&self, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = self
            .agent
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .call();
        self.answer(response)
    }

    /// `POST path` of the REST API with a JSON body.
    fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = self
            .agent
            .post(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .send_json(body);
        self.answer(response)
    }

    /// `DELETE path` of the REST API.
    fn delete(&self, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = self
            .agent
            .delete(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .call();
        self.answer(response)
    }

    fn answer(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value> {
        let mut response =
            response.with_context(|| format!("no server answered at {}", self.base))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .with_context(|| format!("reading the answer of {}", self.base))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let message = body["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| excerpt(&text));
        match status {
            401 => bail!(
                "{} refused the token in $HAIVEMIND_TOKEN (HTTP 401): {message}",
                self.base
            ),
            _ => bail!("{} answered HTTP {status}: {message}", self.base),
        }
    }
}

/// Drops arguments that were not given, so the tool's own defaults apply.
fn arguments(pairs: Vec<(&str, Value)>) -> Value {
    let map: Map<String, Value> = pairs
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    Value::Object(map)
}

/// Runs `command` on the server at `url`.
pub(crate) fn run(url: &str, printer: &Printer, command: Command) -> Result<()> {
    let remote = Remote::new(url)?;
    let (value, text) = match command {
        Command::Store(args) => {
            let metadata = match &args.metadata {
                Some(text) => {
                    serde_json::from_str::<Value>(text).context("--metadata: not a JSON object")?
                }
                None => Value::Null,
            };
            let stored = remote.call(
                "store_memory",
                arguments(vec![
                    ("content", json!(args.content)),
                    ("category", json!(args.category)),
                    ("context", json!(args.context)),
                    ("tags", json!(args.tags)),
                    ("metadata", metadata),
                    ("user_id", json!(args.user)),
                    ("project", json!(args.project)),
                    ("scope", json!(args.scope)),
                    ("confidentiality_level", json!(args.confidentiality)),
                ]),
            )?;
            let text = format!("stored {}", stored["id"].as_str().unwrap_or("?"));
            (stored, text)
        }
        Command::Search(args) => {
            let found = remote.call(
                "search_memories",
                arguments(vec![
                    ("query", json!(args.query)),
                    ("category", json!(args.category)),
                    ("user_id", json!(args.user)),
                    ("project", json!(args.project)),
                    (
                        "tags",
                        if args.tags.is_empty() {
                            Value::Null
                        } else {
                            json!(args.tags)
                        },
                    ),
                    ("machine", json!(args.machine)),
                    ("since", json!(args.since)),
                    ("until", json!(args.until)),
                    ("limit", json!(args.limit)),
                    ("offset", json!(args.offset)),
                    ("semantic", json!(!args.full_text)),
                ]),
            )?;
            let text = memory_lines(&found["memories"]);
            (found, text)
        }
        Command::Context {
            query,
            project,
            max_tokens,
            hook,
            ..
        } => {
            if hook {
                crate::hook::session_start_remote(&remote, max_tokens);
                return Ok(());
            }
            let pack = remote.call(
                "get_context",
                arguments(vec![
                    ("query", json!(query)),
                    ("project", json!(project)),
                    ("max_tokens", json!(max_tokens)),
                ]),
            )?;
            let text = pack["context"]
                .as_str()
                .unwrap_or("")
                .trim_end()
                .to_string();
            (pack, text)
        }
        Command::Get { id } => {
            let memory = remote.call("retrieve_memory", json!({"memory_id": id}))?;
            let text = memory_text(&memory);
            (memory, text)
        }
        Command::Recent(args) => {
            let recent = remote.call(
                "get_recent_memories",
                arguments(vec![
                    ("hours", json!(args.hours)),
                    ("limit", json!(args.limit)),
                    ("category", json!(args.category)),
                    ("user_id", json!(args.user)),
                ]),
            )?;
            let text = memory_lines(&recent["memories"]);
            (recent, text)
        }
        Command::Delete { id, hard, reason } => {
            let deleted = remote.call(
                "delete_memory",
                arguments(vec![
                    ("memory_id", json!(id)),
                    ("hard_delete", json!(hard)),
                    ("reason", json!(reason)),
                ]),
            )?;
            let text = format!("{} {id}", if hard { "deleted for good" } else { "deleted" });
            (deleted, text)
        }
        Command::Recover { id } => {
            let recovered = remote.call("recover_deleted_memory", json!({"memory_id": id}))?;
            (recovered, format!("recovered {id}"))
        }
        Command::Stats => pretty(remote.call("get_memory_stats", json!({}))?),
        Command::Status => {
            let me = remote.get("/api/v1/me")?;
            let machine = remote.call("get_machine_context", json!({}))?;
            let text = format!(
                "{} at {}: haivemind {}, {} memories, semantic search {}; you are {} ({})",
                machine["machine_id"].as_str().unwrap_or("?"),
                remote.base,
                machine["version"].as_str().unwrap_or("?"),
                machine["memory_count"],
                if machine["semantic_search"] == true {
                    "on"
                } else {
                    "off"
                },
                me["name"].as_str().unwrap_or("?"),
                me["role"].as_str().unwrap_or("?"),
            );
            (
                json!({"server": remote.base, "me": me, "machine": machine}),
                text,
            )
        }
        Command::Peers => pretty(remote.get("/api/v1/sync")?),
        Command::Incidents {
            status,
            severity,
            system,
            limit,
        } => pretty(remote.call(
            "list_incidents",
            arguments(vec![
                ("status", json!(status)),
                ("severity", json!(severity)),
                ("system", json!(system)),
                ("limit", json!(limit)),
            ]),
        )?),
        Command::Drift { name } => {
            pretty(remote.call("get_config_drift", json!({"config_name": name}))?)
        }
        Command::Agents { all } => {
            pretty(remote.call("get_agent_roster", json!({"include_inactive": all}))?)
        }
        Command::Tasks { id: Some(id), .. } => {
            pretty(remote.call("get_task", json!({"task_id": id}))?)
        }
        Command::Tasks {
            id: None,
            status,
            agent,
            limit,
        } => pretty(remote.call(
            "list_tasks",
            arguments(vec![
                ("status", json!(status)),
                ("agent_id", json!(agent)),
                ("limit", json!(limit)),
            ]),
        )?),
        Command::Broadcast {
            message,
            severity,
            category,
        } => {
            let sent = remote.call(
                "broadcast_discovery",
                json!({"message": message, "severity": severity, "category": category}),
            )?;
            (sent, "broadcast sent".to_string())
        }
        Command::Token { action } => match action {
            TokenCommand::Create {
                role,
                name,
                profile,
            } => {
                let made = remote.post(
                    "/api/v1/tokens",
                    &arguments(vec![
                        ("role", json!(role)),
                        ("name", json!(name)),
                        ("tool_profile", json!(profile)),
                    ]),
                )?;
                eprintln!(
                    "created {} token {} ({}) on {}; it is shown once, below.",
                    made["role"].as_str().unwrap_or("?"),
                    made["id"].as_str().unwrap_or("?"),
                    made["name"].as_str().unwrap_or("?"),
                    remote.base
                );
                let secret = made["token"].as_str().unwrap_or("").to_string();
                (made, secret)
            }
            TokenCommand::List => pretty(remote.get("/api/v1/tokens")?),
            TokenCommand::Revoke { token } => {
                let revoked = remote.delete(&format!("/api/v1/tokens/{}", path_segment(&token)))?;
                let text = format!(
                    "revoked {} ({}) on {}",
                    revoked["id"].as_str().unwrap_or("?"),
                    revoked["name"].as_str().unwrap_or("?"),
                    remote.base
                );
                (revoked, text)
            }
        },
        other => bail!(
            "`{}` works on this machine's data directory only; with --remote these commands run on the server: {REMOTE_COMMANDS}",
            command_name(&other)
        ),
    };
    printer.done(value, &text);
    Ok(())
}

/// `text` as one URL path segment (a token's name may hold spaces).
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn pretty(value: Value) -> (Value, String) {
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    (value, text)
}

fn memory_text(memory: &Value) -> String {
    format!(
        "{}  [{}]  {}\n{}",
        memory["id"].as_str().unwrap_or("?"),
        memory["category"].as_str().unwrap_or("?"),
        memory["created_at"].as_str().unwrap_or(""),
        memory["content"].as_str().unwrap_or("")
    )
}

fn memory_lines(memories: &Value) -> String {
    let lines: Vec<String> = memories
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let content: String = m["content"]
                .as_str()
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let short: String = content.chars().take(100).collect();
            format!(
                "{}  [{}]  {short}",
                m["id"].as_str().unwrap_or("?"),
                m["category"].as_str().unwrap_or("?")
            )
        })
        .collect();
    if lines.is_empty() {
        "no memories".into()
    } else {
        lines.join("\n")
    }
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Mcp => "mcp",
        Command::Serve(_) => "serve",
        Command::Install { .. } => "install",
        Command::Export { .. } => "export",
        Command::Import { .. } => "import",
        Command::Purge => "purge",
        Command::Reindex => "reindex",
        Command::Migrate { .. } => "migrate",
        Command::Bench { .. } => "bench",
        Command::Backup { .. } => "backup",
        Command::Restore { .. } => "restore",
        Command::Doctor => "doctor",
        Command::Reload => "reload",
        _ => "this command",
    }
}
