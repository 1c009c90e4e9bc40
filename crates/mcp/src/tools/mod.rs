//! The tool catalogue: every tool's name, description, input schema, annotations and handler.
//!
//! A handler takes the raw arguments, parses them into its input type (which also gives the
//! schema), makes one engine call, and renders a JSON object. Handlers are synchronous and
//! run on a blocking thread, because the engine blocks on SQLite.

mod memory;

use std::sync::Arc;

use haivemind_store::Store;
use rmcp::handler::server::tool::schema_for_input;
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde_json::{Map, Value};

use crate::ServerContext;
use crate::error::ToolError;

/// What a handler may use: the engine, the server's facts, and who is calling.
pub struct ToolContext {
    /// The memory engine.
    pub store: Arc<Store>,
    /// Facts about this server.
    pub server: Arc<ServerContext>,
    /// The calling agent, from the client's name, when known.
    pub agent_id: Option<String>,
}

type Handler = fn(&ToolContext, Option<Map<String, Value>>) -> Result<Value, ToolError>;

/// One entry of the catalogue.
pub struct ToolEntry {
    /// The tool's name, as the seed named it.
    pub name: &'static str,
    /// What it does, for the agent choosing a tool.
    pub description: &'static str,
    /// Whether it only reads.
    pub read_only: bool,
    /// Whether it may remove or overwrite data.
    pub destructive: bool,
    /// Whether calling it twice with the same arguments does nothing more.
    pub idempotent: bool,
    schema: fn() -> Arc<JsonObject>,
    handler: Handler,
}

impl ToolEntry {
    /// The tool as `tools/list` shows it.
    pub fn tool(&self) -> Tool {
        let mut annotations = ToolAnnotations::new();
        annotations.read_only_hint = Some(self.read_only);
        if !self.read_only {
            annotations.destructive_hint = Some(self.destructive);
            annotations.idempotent_hint = Some(self.idempotent);
        }
        annotations.open_world_hint = Some(false);
        Tool::new(self.name, self.description, (self.schema)()).with_annotations(annotations)
    }
}

/// The schema of input type `T`, as an MCP input schema.
fn schema_of<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    schema_for_input::<T>().unwrap_or_else(|error| {
        // Our input types are all structs, so this cannot happen; a test checks it.
        tracing::error!(error, "input schema is not an object");
        Arc::new(JsonObject::new())
    })
}

/// Every tool this server offers.
pub fn catalogue() -> &'static [ToolEntry] {
    memory::TOOLS
}

/// Runs the tool `name` with `arguments`.
pub fn call(
    context: &ToolContext,
    name: &str,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let entry = catalogue()
        .iter()
        .find(|entry| entry.name == name)
        .ok_or_else(|| ToolError::UnknownTool { name: name.into() })?;
    (entry.handler)(context, arguments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_an_object_schema_and_a_unique_name() {
        let mut names = std::collections::BTreeSet::new();
        for entry in catalogue() {
            assert!(names.insert(entry.name), "duplicate tool {}", entry.name);
            let schema = schema_for_input_checked(entry);
            assert_eq!(
                schema.get("type").and_then(Value::as_str),
                Some("object"),
                "{}",
                entry.name
            );
        }
    }

    fn schema_for_input_checked(entry: &ToolEntry) -> Arc<JsonObject> {
        (entry.schema)()
    }

    #[test]
    fn read_only_tools_are_not_marked_destructive() {
        for entry in catalogue() {
            assert!(!(entry.read_only && entry.destructive), "{}", entry.name);
            let tool = entry.tool();
            let annotations = tool.annotations.unwrap();
            assert_eq!(annotations.read_only_hint, Some(entry.read_only));
        }
    }
}
