//! `get_context`: what an agent starting work should know, packed to a token budget
//! (the engine's `Store::context`).

use haivemind_core::security::Role;
use haivemind_store::ContextQuery;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ToolContext, ToolEntry, schema_of};
use crate::arguments::parse;
use crate::error::ToolError;

pub(super) const TOOLS: &[ToolEntry] = &[ToolEntry {
    name: "get_context",
    description: "What you should know before starting work, in one call: open incidents, your open tasks, the \
                  memories most relevant to `query` (and `project`), and the newest ones, packed as text into at \
                  most max_tokens tokens (counted with the embedding model's tokenizer). Call it at the start \
                  of a task.",
    read_only: true,
    destructive: false,
    idempotent: true,
    least_role: Role::Readonly,
    schema: schema_of::<GetContextArgs>,
    handler: get_context,
}];

fn default_max_tokens() -> usize {
    2000
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetContextArgs {
    /// What you are about to work on, in words.
    #[serde(default)]
    query: Option<String>,
    /// Only memories of this project.
    #[serde(default)]
    project: Option<String>,
    /// The budget in tokens, 50-32000 (default 2000).
    #[serde(default = "default_max_tokens")]
    max_tokens: usize,
}

fn get_context(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: GetContextArgs = parse(arguments)?;
    // The engine checks the budget (and the project), naming the field.
    let pack = cx.store.context(&ContextQuery {
        query: args.query,
        project: args.project,
        agent_id: cx.registry_agent_id(),
        max_tokens: args.max_tokens,
        hide_restricted: cx.hide_restricted(),
    })?;
    Ok(json!({
        "context": pack.text,
        "memories": pack.memories.iter().map(|m| json!({
            "id": m.id.to_string(),
            "category": m.category,
        })).collect::<Vec<_>>(),
        "tokens": pack.tokens,
        "max_tokens": args.max_tokens,
        "counted_with": pack.counted_with,
        "left_out": pack.left_out,
    }))
}
