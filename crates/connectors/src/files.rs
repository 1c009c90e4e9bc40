//! What users already have, read from files: the official MCP memory server's knowledge
//! graph (`memory.jsonl`: entities, relations, observations) and Claude Code's session
//! transcripts (`~/.claude/projects/<project>/<session>.jsonl`).
//!
//! Each becomes [`ExternalDoc`]s, stored with `Store::upsert_external`: keyed by where they
//! came from, so importing the same file again changes nothing and a changed entity is
//! updated in place. Every line is hostile input: a line that is not what it should be is
//! counted and skipped, never fatal, and no text grows past the memory size limit.

use std::collections::BTreeMap;

use haivemind_store::ExternalDoc;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The most of one memory's text an import writes (the default `memory.max_content_bytes`
/// is 64 KiB; a memory this long is already more than an agent wants back).
const MAX_TEXT_BYTES: usize = 16 * 1024;

/// What a file held.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The memories to store.
    pub docs: Vec<ExternalDoc>,
    /// Lines that were not records of the format (1-based), at most 20.
    pub skipped: Vec<usize>,
    /// How many lines were skipped in all.
    pub skipped_total: usize,
}

impl Parsed {
    fn skip(&mut self, line: usize) {
        self.skipped_total += 1;
        if self.skipped.len() < 20 {
            self.skipped.push(line);
        }
    }
}

/// The formats [`detect`] tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// `haivemind export`'s memory lines.
    Haivemind,
    /// The official MCP memory server's `memory.jsonl`.
    MemoryServer,
    /// A Claude Code session transcript.
    ClaudeCode,
}

impl FileFormat {
    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Haivemind => "haivemind",
            FileFormat::MemoryServer => "memory-server",
            FileFormat::ClaudeCode => "claude-code",
        }
    }

    /// The format named `text`.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Haivemind, Self::MemoryServer, Self::ClaudeCode]
            .into_iter()
            .find(|f| f.as_str() == text)
    }
}

/// Which format a JSON-lines file is in, from its first records; `None` when no line is a
/// record of any.
pub fn detect(text: &str) -> Option<FileFormat> {
    for line in text.lines().filter(|l| !l.trim().is_empty()).take(50) {
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        match value["type"].as_str() {
            Some("entity" | "relation")
                if value.get("name").is_some() || value.get("from").is_some() =>
            {
                return Some(FileFormat::MemoryServer);
            }
            Some("user" | "assistant" | "summary" | "system")
                if value.get("sessionId").is_some() || value.get("leafUuid").is_some() =>
            {
                return Some(FileFormat::ClaudeCode);
            }
            _ => {}
        }
        if value.get("content").is_some_and(Value::is_string) {
            return Some(FileFormat::Haivemind);
        }
    }
    None
}

fn cut(text: &str) -> String {
    if text.len() <= MAX_TEXT_BYTES {
        return text.to_string();
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n[… cut at {MAX_TEXT_BYTES} bytes]", &text[..end])
}

/// A tag made of `text`: lower case, at most 64 characters, no spaces.
fn tag(text: &str) -> String {
    text.trim()
        .to_lowercase()
        .chars()
        .map(|c| if c.is_whitespace() { '-' } else { c })
        .take(64)
        .collect()
}

fn digest(text: &str) -> String {
    Sha256::digest(text.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Default)]
struct Entity {
    kind: String,
    observations: Vec<String>,
    relations: Vec<String>,
}

/// The official MCP memory server's graph: one memory per entity, with its type, its
/// observations and its relations (both directions), in the `global` category.
pub fn memory_server(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    let mut entities: BTreeMap<String, Entity> = BTreeMap::new();
    let mut relations: Vec<(String, String, String)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = match serde_json::from_str(line) {
            Ok(value) => value,
            Err(_) => {
                parsed.skip(index + 1);
                continue;
            }
        };
        let string = |key: &str| {
            value[key]
                .as_str()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        match value["type"].as_str() {
            Some("entity") => {
                let Some(name) = string("name") else {
                    parsed.skip(index + 1);
                    continue;
                };
                let entity = entities.entry(name).or_default();
                if let Some(kind) = string("entityType") {
                    entity.kind = kind;
                }
                for observation in value["observations"].as_array().into_iter().flatten() {
                    if let Some(o) = observation
                        .as_str()
                        .map(str::trim)
                        .filter(|o| !o.is_empty())
                    {
                        entity.observations.push(o.to_string());
                    }
                }
            }
            Some("relation") => match (string("from"), string("relationType"), string("to")) {
                (Some(from), Some(kind), Some(to)) => relations.push((from, kind, to)),
                _ => parsed.skip(index + 1),
            },
            _ => parsed.skip(index + 1),
        }
    }
    for (from, kind, to) in relations {
        entities
            .entry(from.clone())
            .or_default()
            .relations
            .push(format!("{from} {kind} {to}"));
        entities
            .entry(to.clone())
            .or_default()
            .relations
            .push(format!("{from} {kind} {to}"));
    }
    for (name, entity) in entities {
        let mut body = String::new();
        if !entity.kind.is_empty() {
            body.push_str(&format!("{name} is a {}.\n", entity.kind));
        }
        for observation in &entity.observations {
            body.push_str(&format!("- {observation}\n"));
        }
        if !entity.relations.is_empty() {
            body.push_str("Relations:\n");
            for relation in &entity.relations {
                body.push_str(&format!("- {relation}\n"));
            }
        }
        let body = cut(body.trim_end());
        let mut tags = vec!["memory-server".to_string()];
        if !entity.kind.is_empty() {
            tags.push(tag(&entity.kind));
        }
        let mut extra = Map::new();
        extra.insert("entity_type".into(), json!(entity.kind));
        parsed.docs.push(ExternalDoc {
            system: "mcp-memory-server".into(),
            version: digest(&body),
            id: name.clone(),
            title: name,
            text: body,
            category: "global".into(),
            url: None,
            extra,
            tags,
            project: None,
        });
    }
    parsed
}

/// The text blocks of a message's `content` (a string, or a list of blocks of which only
/// `text` ones are kept: tool calls, tool results, images and thinking are not knowledge).
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.trim().to_string(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join("\n\n"),
        _ => String::new(),
    }
}

/// The project a session ran in: the last part of its working directory.
fn project_of(cwd: &str) -> Option<String> {
    let name = cwd.trim_end_matches('/').rsplit('/').next()?.trim();
    let valid = haivemind_core::memory::check_name("project", name).is_ok();
    (valid && !name.is_empty()).then(|| name.to_string())
}

/// A Claude Code session transcript: one memory per exchange (a person's prompt and the
/// text of the answers to it, until the next prompt), and one per session summary, in the
/// `conversation` category, with the session's project and times.
pub fn claude_code(text: &str) -> Parsed {
    struct Exchange {
        id: String,
        session: String,
        at: String,
        project: Option<String>,
        prompt: String,
        answers: Vec<String>,
    }
    let mut parsed = Parsed::default();
    let mut exchanges: Vec<Exchange> = Vec::new();
    let mut summaries: Vec<(String, String)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            parsed.skip(index + 1);
            continue;
        };
        let kind = value["type"].as_str().unwrap_or("");
        if kind == "summary" {
            if let (Some(summary), Some(leaf)) =
                (value["summary"].as_str(), value["leafUuid"].as_str())
            {
                summaries.push((leaf.to_string(), summary.trim().to_string()));
            }
            continue;
        }
        // Commands' caveats and other injected lines are not the person's words.
        if value["isMeta"] == true || value["isSidechain"] == true {
            continue;
        }
        let said = text_of(&value["message"]["content"]);
        match kind {
            "user" if !said.is_empty() => exchanges.push(Exchange {
                id: value["uuid"].as_str().unwrap_or("").to_string(),
                session: value["sessionId"].as_str().unwrap_or("").to_string(),
                at: value["timestamp"].as_str().unwrap_or("").to_string(),
                project: value["cwd"].as_str().and_then(project_of),
                prompt: said,
                answers: Vec::new(),
            }),
            "assistant" if !said.is_empty() => {
                if let Some(last) = exchanges.last_mut() {
                    last.answers.push(said);
                }
            }
            "user" | "assistant" | "system" | "attachment" | "progress" => {}
            _ => parsed.skip(index + 1),
        }
    }
    for exchange in exchanges {
        if exchange.id.is_empty() || exchange.session.is_empty() {
            continue;
        }
        let body = cut(&format!(
            "Person: {}\n\nClaude: {}",
            exchange.prompt,
            if exchange.answers.is_empty() {
                "(no text answer)".to_string()
            } else {
                exchange.answers.join("\n\n")
            }
        ));
        let first_line: String = exchange
            .prompt
            .split_whitespace()
            .take(12)
            .collect::<Vec<_>>()
            .join(" ");
        let mut extra = Map::new();
        extra.insert("session_id".into(), json!(exchange.session));
        extra.insert("timestamp".into(), json!(exchange.at));
        parsed.docs.push(ExternalDoc {
            system: "claude-code".into(),
            id: exchange.id,
            version: digest(&body),
            title: format!(
                "Claude Code session {}: {first_line}",
                short(&exchange.session)
            ),
            text: body,
            category: "conversation".into(),
            url: None,
            extra,
            tags: vec!["claude-code".into(), "transcript".into()],
            project: exchange.project,
        });
    }
    for (leaf, summary) in summaries {
        let body = cut(&summary);
        parsed.docs.push(ExternalDoc {
            system: "claude-code".into(),
            id: format!("summary:{leaf}"),
            version: digest(&body),
            title: "Claude Code session summary".into(),
            text: body,
            category: "conversation".into(),
            url: None,
            extra: Map::new(),
            tags: vec!["claude-code".into(), "summary".into()],
            project: None,
        });
    }
    parsed
}

fn short(id: &str) -> &str {
    let end = id.char_indices().nth(8).map_or(id.len(), |(i, _)| i);
    &id[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_servers_graph_becomes_one_memory_per_entity() {
        let file = r#"{"type":"entity","name":"cache7","entityType":"server","observations":["runs redis 7","evicts keys under load"]}
{"type":"entity","name":"Ana","entityType":"person","observations":["owns the cache fleet"]}
{"type":"relation","from":"Ana","to":"cache7","relationType":"operates"}
not json
{"type":"relation","from":"Ana"}
"#;
        assert_eq!(detect(file), Some(FileFormat::MemoryServer));
        let parsed = memory_server(file);
        assert_eq!(parsed.skipped, vec![4, 5]);
        assert_eq!(parsed.docs.len(), 2);
        let cache = parsed.docs.iter().find(|d| d.id == "cache7").unwrap();
        assert!(cache.text.contains("cache7 is a server."));
        assert!(cache.text.contains("- evicts keys under load"));
        assert!(cache.text.contains("Ana operates cache7"), "{}", cache.text);
        assert_eq!(cache.tags, vec!["memory-server", "server"]);
        let again = memory_server(file);
        assert_eq!(
            again.docs[1].version, parsed.docs[1].version,
            "stable versions"
        );
    }

    #[test]
    fn a_transcript_becomes_exchanges_without_tool_noise() {
        let file = [
            json!({"type": "user", "sessionId": "0f2a9c41-aaaa", "uuid": "u1", "timestamp": "2026-11-02T10:00:00Z",
                   "cwd": "/home/ana/payments-api", "message": {"role": "user", "content": "why do webhooks fail?"}}),
            json!({"type": "assistant", "sessionId": "0f2a9c41-aaaa", "uuid": "a1",
                   "message": {"role": "assistant", "content": [
                       {"type": "thinking", "thinking": "secret reasoning"},
                       {"type": "text", "text": "The signing secret rotated."},
                       {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "env"}}]}}),
            json!({"type": "user", "sessionId": "0f2a9c41-aaaa", "uuid": "u2",
                   "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "AWS_KEY=x"}]}}),
            json!({"type": "user", "sessionId": "0f2a9c41-aaaa", "uuid": "m1", "isMeta": true,
                   "message": {"role": "user", "content": "Caveat: the messages below"}}),
            json!({"type": "summary", "summary": "Webhook signing secret rotation", "leafUuid": "a1"}),
        ]
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
        assert_eq!(detect(&file), Some(FileFormat::ClaudeCode));
        let parsed = claude_code(&file);
        assert_eq!(parsed.docs.len(), 2, "{:?}", parsed.docs);
        let exchange = &parsed.docs[0];
        assert_eq!(
            exchange.text,
            "Person: why do webhooks fail?\n\nClaude: The signing secret rotated."
        );
        assert_eq!(exchange.project.as_deref(), Some("payments-api"));
        assert!(!exchange.text.contains("AWS_KEY") && !exchange.text.contains("secret reasoning"));
        assert_eq!(parsed.docs[1].text, "Webhook signing secret rotation");
    }

    #[test]
    fn long_text_is_cut_and_export_lines_are_recognised() {
        let long = "x".repeat(MAX_TEXT_BYTES * 2);
        assert!(cut(&long).len() < MAX_TEXT_BYTES + 64);
        assert_eq!(
            detect(r#"{"id":"0192","content":"a memory"}"#),
            Some(FileFormat::Haivemind)
        );
        assert_eq!(detect("plain text\n"), None);
    }
}
