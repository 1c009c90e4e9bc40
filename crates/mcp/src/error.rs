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

impl crate::tools::CallFailure {
    /// The failure as a REST API answers it: an HTTP status and
    /// `{"error": {"code", "field", "message", "tool"}}`, with the same codes, fields and
    /// messages an MCP client gets in its tool error (internal failures are logged and
    /// answered with a generic message).
    pub fn http(self, tool: &str) -> (u16, serde_json::Value) {
        let error = match self {
            crate::tools::CallFailure::Tool(error) => error,
            crate::tools::CallFailure::Panicked => {
                return (
                    500,
                    error_body(
                        "internal",
                        None,
                        "the server failed; see its log".into(),
                        tool,
                    ),
                );
            }
        };
        match error.into_result(tool) {
            Ok(result) => {
                let body = result.structured_content.unwrap_or_default();
                let code = body["error"]["code"].as_str().unwrap_or("invalid_argument");
                (status_of(code), body)
            }
            Err(error) => {
                let retryable = error
                    .data
                    .as_ref()
                    .and_then(|d| d.get("retryable"))
                    .is_some_and(|r| r == true);
                let (status, code) = if retryable {
                    (503, "database_unavailable")
                } else if error.code == rmcp::model::ErrorCode::INVALID_PARAMS {
                    (404, "unknown_tool")
                } else {
                    (500, "internal")
                };
                (
                    status,
                    error_body(code, None, error.message.to_string(), tool),
                )
            }
        }
    }
}

fn error_body(code: &str, field: Option<&str>, message: String, tool: &str) -> serde_json::Value {
    json!({ "error": { "code": code, "field": field, "message": message, "tool": tool } })
}

/// The HTTP status of a tool error's code.
fn status_of(code: &str) -> u16 {
    match code {
        "forbidden" => 403,
        "not_found" => 404,
        "deleted" | "erased" => 410,
        "conflict" | "not_deleted" => 409,
        "not_configured" => 501,
        "authentication" | "upstream_failed" | "upstream_malformed" => 502,
        _ => 400,
    }
}

impl ToolError {
    /// Turns the failure into what the client sees: a tool error result the agent can read
    /// and act on, or a JSON-RPC error for calls that cannot be routed or that failed on
    /// our side.
    pub fn into_result(self, tool: &str) -> Result<CallToolResult, ErrorData> {
        let caller = |code: &str, field: Option<&str>, message: String| {
            Ok(CallToolResult::structured_error(error_body(
                code, field, message, tool,
            )))
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
