//! How failures reach an MCP client. Decided once, here, in an exhaustive match.

use haivemind_store::StoreError;
use rmcp::ErrorData;
use rmcp::model::CallToolResult;
use serde_json::json;

/// Why a tool call failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// No tool has this name.
    #[error("unknown tool \"{}\"", haivemind_core::error::excerpt(name))]
    UnknownTool {
        /// The name asked for.
        name: String,
    },
    /// The arguments do not fit the tool's input schema.
    #[error("{field}: {rule}")]
    InvalidArguments {
        /// The argument at fault.
        field: String,
        /// What is wrong with it.
        rule: String,
    },
    /// The caller's role does not allow this.
    #[error("{rule}")]
    Forbidden {
        /// The caller's role.
        role: haivemind_core::security::Role,
        /// What was refused and why, naming the role.
        rule: String,
    },
    /// The engine refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another system (Confluence, Jira) refused or failed; `code` says how.
    #[error("{message}")]
    External {
        /// `not_configured`, `authentication`, `upstream_failed` or `upstream_malformed`.
        code: &'static str,
        /// What happened, without credentials.
        message: String,
    },
}

impl From<haivemind_core::InvalidInput> for ToolError {
    fn from(input: haivemind_core::InvalidInput) -> Self {
        ToolError::InvalidArguments {
            field: input.field,
            rule: input.rule,
        }
    }
}

impl ToolError {
    /// Turns the failure into what the client sees: a tool error result the agent can read
    /// and act on, or a JSON-RPC error for calls that cannot be routed or that failed on
    /// our side.
    pub fn into_result(self, tool: &str) -> Result<CallToolResult, ErrorData> {
        let caller = |code: &str, field: Option<&str>, message: String| {
            Ok(CallToolResult::structured_error(json!({
                "error": { "code": code, "field": field, "message": message, "tool": tool }
            })))
        };
        match self {
            ToolError::UnknownTool { name } => {
                // The name is the caller's input: repeat no more than a short excerpt.
                let name = haivemind_core::error::excerpt(&name);
                Err(ErrorData::invalid_params(
                    format!("unknown tool \"{name}\"; tools/list names the available tools"),
                    Some(json!({ "tool": name })),
                ))
            }
            ToolError::Forbidden { role, rule } => Ok(CallToolResult::structured_error(json!({
                "error": { "code": "forbidden", "role": role.as_str(), "message": rule, "tool": tool }
            }))),
            ToolError::External { code, message } => caller(code, None, message),
            ToolError::InvalidArguments { field, rule } => {
                caller("invalid_argument", Some(&field), format!("{field}: {rule}"))
            }
            ToolError::Store(error) => match &error {
                StoreError::Invalid(input) => {
                    caller("invalid_argument", Some(&input.field), error.to_string())
                }
                StoreError::MemoryNotFound { .. } => {
                    caller("not_found", Some("memory_id"), error.to_string())
                }
                StoreError::MemoryDeleted { .. } => {
                    caller("deleted", Some("memory_id"), error.to_string())
                }
                StoreError::NotDeleted { .. } => {
                    caller("not_deleted", Some("memory_id"), error.to_string())
                }
                StoreError::Erased { .. } => caller("erased", Some("memory_id"), error.to_string()),
                StoreError::RecordNotFound { kind, .. } => caller(
                    "not_found",
                    Some(if *kind == "agent" {
                        "agent_id"
                    } else {
                        "task_id"
                    }),
                    error.to_string(),
                ),
                StoreError::Conflict(_) => caller("conflict", Some("task_id"), error.to_string()),
                StoreError::ConfirmRequired { .. } => {
                    caller("confirm_required", Some("confirm"), error.to_string())
                }
                StoreError::Unavailable(reason) => {
                    tracing::warn!(tool, %reason, "the database is unavailable");
                    Err(ErrorData::internal_error(
                        format!(
                            "{tool} cannot run now: the database is unavailable; try again shortly"
                        ),
                        Some(serde_json::json!({"retryable": true})),
                    ))
                }
                StoreError::Io { .. }
                | StoreError::SchemaTooNew { .. }
                | StoreError::Sqlite(_)
                | StoreError::Postgres(_)
                | StoreError::Embedding(_)
                | StoreError::Corrupt { .. } => {
                    tracing::error!(tool, error = %error, "tool failed");
                    Err(ErrorData::internal_error(
                        format!("{tool} failed on the server; see its log"),
                        None,
                    ))
                }
            },
        }
    }
}
