//! The context pack: what an agent starting work should know, fitted to a token budget
//! (`get_context`, `haivemind context`, and the session-start hook).
//!
//! In order: the memories most relevant to the query (and project), the agent's open
//! tasks, open incidents (the three most severe), then the newest memories. Each part is
//! one line; lines are added while the budget holds, so a small budget keeps what matters
//! most to the work at hand. Tokens are counted with the embedding model's tokenizer when one is loaded,
//! else estimated at four bytes a token.

use haivemind_core::Memory;
use haivemind_core::embedder::estimate_tokens;
use haivemind_core::error::InvalidInput;

use crate::{IncidentQuery, MemoryFilter, RecentQuery, SearchQuery, Store, StoreError};

/// The smallest and largest budget a pack may be asked for.
pub const MIN_CONTEXT_TOKENS: usize = 50;
/// See [`MIN_CONTEXT_TOKENS`].
pub const MAX_CONTEXT_TOKENS: usize = 32_000;
/// The longest a memory's line may be, in bytes, so one long memory cannot fill a pack.
const LINE_BYTES: usize = 600;

/// One line of a pack, with the memory it shows (if it shows one).
type Line = (String, Option<Memory>);

/// What to pack.
#[derive(Debug, Clone, Default)]
pub struct ContextQuery {
    /// What the agent is about to work on.
    pub query: Option<String>,
    /// Only memories of this project (and ones of no project).
    pub project: Option<String>,
    /// The agent whose open tasks to include (its roster id).
    pub agent_id: Option<String>,
    /// The budget, in tokens.
    pub max_tokens: usize,
    /// Leave out confidential and pii memories (readonly callers).
    pub hide_restricted: bool,
}

/// A packed context.
#[derive(Debug, Clone)]
pub struct ContextPack {
    /// The text, ready to put before an agent.
    pub text: String,
    /// The memories the text draws on, in the order they appear.
    pub memories: Vec<Memory>,
    /// The text's size in tokens.
    pub tokens: usize,
    /// How the tokens were counted: the model's id, or `estimate`.
    pub counted_with: String,
    /// Lines left out because the budget was spent.
    pub left_out: usize,
}

impl Store {
    /// Packs what an agent starting work should know into at most `max_tokens` tokens.
    pub fn context(&self, query: &ContextQuery) -> Result<ContextPack, StoreError> {
        if !(MIN_CONTEXT_TOKENS..=MAX_CONTEXT_TOKENS).contains(&query.max_tokens) {
            return Err(InvalidInput::new(
                "max_tokens",
                format!("must be {MIN_CONTEXT_TOKENS}-{MAX_CONTEXT_TOKENS}"),
            )
            .into());
        }
        if let Some(project) = &query.project {
            haivemind_core::memory::check_name("project", project)?;
        }
        let filter = MemoryFilter {
            project: query.project.clone(),
            hide_restricted: query.hide_restricted,
            ..MemoryFilter::default()
        };
        let mut sections: Vec<(&str, Vec<Line>)> = Vec::new();

        let mut seen = std::collections::HashSet::new();
        if let Some(text) = query.query.as_deref().filter(|q| !q.trim().is_empty()) {
            let found = self.search(&SearchQuery {
                text: text.to_string(),
                filter: filter.clone(),
                limit: 20,
                offset: 0,
                semantic: true,
            })?;
            sections.push((
                "Relevant memories",
                found
                    .hits
                    .into_iter()
                    .filter(|hit| seen.insert(hit.memory.id))
                    .map(|hit| (memory_line(&hit.memory), Some(hit.memory)))
                    .collect(),
            ));
        }
        let mut incidents = self.list_incidents(&IncidentQuery {
            limit: 50,
            ..IncidentQuery::default()
        })?;
        incidents.retain(|m| {
            let status = m.metadata["incident"]["status"].as_str().unwrap_or("open");
            !matches!(status, "resolved" | "closed")
                && (!query.hide_restricted || m.confidentiality.may_leave_machine())
        });
        incidents.sort_by_key(|m| severity_rank(m.metadata["incident"]["severity"].as_str()));
        sections.push((
            "Open incidents",
            incidents
                .into_iter()
                .take(3)
                .map(|m| {
                    let i = &m.metadata["incident"];
                    let line = format!(
                        "- [{}, {}] {} (affects {}; incident {})",
                        i["severity"].as_str().unwrap_or("?"),
                        i["status"].as_str().unwrap_or("open"),
                        i["title"].as_str().unwrap_or(""),
                        join(&i["affected_systems"]),
                        m.id
                    );
                    (line, Some(m))
                })
                .collect(),
        ));

        if let Some(agent) = &query.agent_id {
            let tasks = self.list_tasks(None, Some(agent), 100)?;
            sections.push((
                "Your open tasks",
                tasks
                    .iter()
                    .filter(|t| !t.status.is_final())
                    .take(10)
                    .map(|t| {
                        let line = format!(
                            "- [{}, {}] {} (task {})",
                            t.priority.as_str(),
                            t.status.as_str(),
                            cut(&t.description),
                            t.id
                        );
                        (line, None)
                    })
                    .collect(),
            ));
        }

        let recent = self.recent(&RecentQuery {
            filter,
            hours: 24 * 7,
            limit: 10,
        })?;
        sections.push((
            "Recent memories",
            recent
                .into_iter()
                .filter(|m| seen.insert(m.id))
                .map(|m| (memory_line(&m), Some(m)))
                .collect(),
        ));

        let count = |text: &str| {
            self.embedder
                .as_deref()
                .and_then(|e| e.count_tokens(text))
                .unwrap_or_else(|| estimate_tokens(text))
        };
        let counted_with = match self.embedder.as_deref() {
            Some(e) if e.count_tokens("").is_some() => e.model_id().to_string(),
            _ => "estimate".to_string(),
        };
        let mut text = String::new();
        let mut tokens = 0;
        let mut memories = Vec::new();
        let mut left_out = 0;
        for (heading, lines) in sections {
            if lines.is_empty() {
                continue;
            }
            let heading = format!("## {heading}\n");
            let heading_tokens = count(&heading);
            let mut wrote_heading = false;
            for (line, memory) in lines {
                let line = format!("{line}\n");
                let cost = count(&line) + if wrote_heading { 0 } else { heading_tokens };
                if tokens + cost > query.max_tokens {
                    left_out += 1;
                    continue;
                }
                if !wrote_heading {
                    text.push_str(&heading);
                    wrote_heading = true;
                }
                text.push_str(&line);
                tokens += cost;
                memories.extend(memory);
            }
        }
        Ok(ContextPack {
            text,
            memories,
            tokens,
            counted_with,
            left_out,
        })
    }
}

fn severity_rank(severity: Option<&str>) -> u8 {
    match severity {
        Some("critical") => 0,
        Some("high") => 1,
        Some("medium") => 2,
        _ => 3,
    }
}

fn join(list: &serde_json::Value) -> String {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".into())
}

/// At most [`LINE_BYTES`] of `text`, on one line.
fn cut(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.len() <= LINE_BYTES {
        return flat;
    }
    let mut end = LINE_BYTES;
    while !flat.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &flat[..end])
}

fn memory_line(memory: &Memory) -> String {
    format!(
        "- [{}] {} ({}, {})",
        memory.category,
        cut(&memory.content),
        haivemind_core::time_format::ms_to_rfc3339(memory.created_at_ms)
            .get(..10)
            .unwrap_or(""),
        memory.id
    )
}
