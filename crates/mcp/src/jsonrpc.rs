//! Screening of one incoming JSON-RPC message before rmcp reads it, the same for every
//! transport (stdio lines, `/mcp` posts, the legacy `/messages` shim), so a malformed message
//! gets the same answer everywhere:
//! - not JSON: a parse error (-32700, id null);
//! - a request rmcp cannot read: invalid request (-32600), or invalid params (-32602) for a
//!   `tools/call` whose params are missing or wrong (rmcp alone would say "method not found");
//! - a message with no id that cannot be read: nothing can answer it (JSON-RPC forbids
//!   answering a notification); HTTP still owes a status, so it says invalid request.
//!
//! Answers never repeat the caller's input beyond a short excerpt.

use serde_json::{Value, json};

/// What to do with one incoming message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screened {
    /// Hand it to rmcp.
    Pass {
        /// Whether it is an `initialize` request, which opens a session.
        initialize: bool,
    },
    /// Answer with this JSON-RPC error frame instead.
    Answer(String),
    /// It cannot be read and has no id to answer; this frame (id null) is for transports
    /// that must answer every message (HTTP).
    Unanswerable(String),
}

fn error_frame(id: &Value, code: i32, message: String) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

/// The answer to a message that is not JSON. It has no id, so the id is null, as JSON-RPC
/// 2.0 prescribes; a response is never answered, so this cannot start an error storm.
fn parse_error(detail: &str) -> String {
    error_frame(
        &Value::Null,
        -32700,
        format!("parse error: each message must be one JSON-RPC message in JSON: {detail}"),
    )
}

fn invalid(id: &Value, code: i32, problem: &str) -> String {
    error_frame(id, code, format!("invalid request: {problem}"))
}

/// Screens one message. It is parsed once as the message type rmcp reads; only one that
/// fails that is looked at as plain JSON, to find its id.
pub fn screen(message: &[u8]) -> Screened {
    use rmcp::model::{ClientJsonRpcMessage, ClientRequest, JsonRpcRequest};
    let parse_failure = match serde_json::from_slice::<ClientJsonRpcMessage>(message) {
        // rmcp reads a tools/call it cannot parse as an unknown method; name the field.
        Ok(ClientJsonRpcMessage::Request(JsonRpcRequest {
            id,
            request: ClientRequest::CustomRequest(custom),
            ..
        })) => {
            return match tool_call_problem(&json!(custom.method), custom.params.as_ref()) {
                Some(problem) => Screened::Answer(invalid(&json!(id), -32602, &problem)),
                None => Screened::Pass { initialize: false },
            };
        }
        Ok(parsed) => {
            let initialize = matches!(
                parsed,
                ClientJsonRpcMessage::Request(JsonRpcRequest {
                    request: ClientRequest::InitializeRequest(_),
                    ..
                })
            );
            return Screened::Pass { initialize };
        }
        Err(error) => error,
    };
    let value: Value = match serde_json::from_slice(message) {
        Ok(value) => value,
        Err(error) => {
            tracing::warn!(%error, "answered a message that is not JSON with a parse error");
            return Screened::Answer(parse_error(&error.to_string()));
        }
    };
    let id = value
        .get("id")
        .filter(|id| id.is_string() || id.is_number());
    let (Some(id), Some(method)) = (id, value.get("method")) else {
        return Screened::Unanswerable(invalid(
            &Value::Null,
            -32600,
            "not a JSON-RPC 2.0 request, notification or response this server reads",
        ));
    };
    // Bad tools/call params are invalid params (-32602); any other request that does not
    // parse is an invalid request (-32600).
    Screened::Answer(match tool_call_problem(method, value.get("params")) {
        Some(problem) => invalid(id, -32602, &problem),
        None => invalid(id, -32600, &parse_failure.to_string()),
    })
}

/// What is wrong with the params of a `tools/call`, the request agents send most, named
/// by field. rmcp would otherwise answer "method not found" for a call without a name.
fn tool_call_problem(method: &Value, params: Option<&Value>) -> Option<String> {
    if method.as_str() != Some("tools/call") {
        return None;
    }
    let Some(Value::Object(params)) = params else {
        return Some("params: must be an object with name and arguments".into());
    };
    if !params.get("name").is_some_and(Value::is_string) {
        return Some("params.name: is required and must be the tool's name as a string".into());
    }
    match params.get("arguments") {
        None | Some(Value::Null) | Some(Value::Object(_)) => None,
        Some(_) => Some("params.arguments: must be an object".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(message: &str) -> Value {
        match screen(message.as_bytes()) {
            Screened::Answer(frame) | Screened::Unanswerable(frame) => {
                serde_json::from_str(&frame).unwrap()
            }
            passed => panic!("{message} passed: {passed:?}"),
        }
    }

    #[test]
    fn each_malformed_message_gets_its_json_rpc_code() {
        assert_eq!(answer("{not json")["error"]["code"], -32700);
        assert!(answer("{not json")["id"].is_null());
        let no_params = answer(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call"}"#);
        assert_eq!(no_params["error"]["code"], -32602);
        assert_eq!(no_params["id"], 7);
        let no_name = answer(r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{}}"#);
        assert_eq!(no_name["error"]["code"], -32602);
        assert_eq!(no_name["id"], "a");
        let bad = answer(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":5}"#);
        assert_eq!(bad["error"]["code"], -32600);
        assert_eq!(answer("[1]")["error"]["code"], -32600);
    }

    #[test]
    fn well_formed_messages_pass_and_initialize_is_told_apart() {
        assert_eq!(
            screen(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            Screened::Pass { initialize: false }
        );
        assert_eq!(
            screen(
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{}}}"#
            ),
            Screened::Pass { initialize: false }
        );
        let initialize = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
        assert_eq!(
            screen(initialize.as_bytes()),
            Screened::Pass { initialize: true }
        );
    }
}
