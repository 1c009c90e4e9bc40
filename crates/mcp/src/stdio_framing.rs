//! Newline-delimited JSON-RPC over stdin and stdout, with one addition to rmcp's transport:
//! a line that is not JSON at all gets a JSON-RPC parse error (-32700, id null) instead of
//! silence, so a client with a framing bug learns what is wrong.
//!
//! One task owns stdin and one owns stdout. Lines that are JSON go to rmcp unchanged; rmcp's
//! own answers and our parse errors are written to stdout a whole line at a time, so frames
//! never interleave. Nothing else ever writes to stdout.

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// The answer to a line that is not JSON. It has no id, so the id is null, as JSON-RPC 2.0
/// prescribes; a response is never answered, so this cannot start an error storm.
fn parse_error(detail: &str) -> String {
    json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {
            "code": -32700,
            "message": format!("parse error: each line must be one JSON-RPC message in JSON: {detail}"),
        }
    })
    .to_string()
}

fn invalid(id: &serde_json::Value, code: i32, problem: &str) -> String {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": code, "message": format!("invalid request: {problem}") }
    })
    .to_string()
}

/// What to answer for one JSON line instead of passing it on, if anything. The line is
/// parsed once, as the message type rmcp reads; only a line that fails that is looked at as
/// plain JSON, to find its id. Notifications and responses are left to rmcp, since nothing
/// may answer them.
fn refusal(line: &[u8]) -> Result<Option<String>, serde_json::Error> {
    use rmcp::model::{ClientJsonRpcMessage, ClientRequest, JsonRpcRequest};
    let parse_failure = match serde_json::from_slice::<ClientJsonRpcMessage>(line) {
        // rmcp reads a tools/call it cannot parse as an unknown method; name the field.
        Ok(ClientJsonRpcMessage::Request(JsonRpcRequest {
            id,
            request: ClientRequest::CustomRequest(custom),
            ..
        })) => {
            let problem = tool_call_problem(&json!(custom.method), custom.params.as_ref());
            return Ok(problem.map(|p| invalid(&json!(id), -32602, &p)));
        }
        Ok(_) => return Ok(None),
        Err(error) => error,
    };
    let value: serde_json::Value = serde_json::from_slice(line)?;
    let Some(id) = value
        .get("id")
        .filter(|id| id.is_string() || id.is_number())
    else {
        return Ok(None);
    };
    let Some(method) = value.get("method") else {
        return Ok(None);
    };
    // Bad tools/call params are invalid params (-32602); any other request that does not
    // parse is an invalid request (-32600).
    Ok(Some(match tool_call_problem(method, value.get("params")) {
        Some(problem) => invalid(id, -32602, &problem),
        None => invalid(id, -32600, &parse_failure.to_string()),
    }))
}

/// What is wrong with the params of a `tools/call`, the request agents send most, named
/// by field. rmcp would otherwise answer "method not found" for a call without a name.
fn tool_call_problem(
    method: &serde_json::Value,
    params: Option<&serde_json::Value>,
) -> Option<String> {
    if method.as_str() != Some("tools/call") {
        return None;
    }
    let Some(serde_json::Value::Object(params)) = params else {
        return Some("params: must be an object with name and arguments".into());
    };
    if !params.get("name").is_some_and(serde_json::Value::is_string) {
        return Some("params.name: is required and must be the tool's name as a string".into());
    }
    match params.get("arguments") {
        None | Some(serde_json::Value::Null) | Some(serde_json::Value::Object(_)) => None,
        Some(_) => Some("params.arguments: must be an object".into()),
    }
}

/// Copies JSON lines from `input` to `to_protocol`; answers non-JSON lines on `errors`.
pub(crate) async fn read_frames(
    input: impl AsyncRead + Unpin,
    mut to_protocol: impl AsyncWrite + Unpin,
    errors: mpsc::UnboundedSender<String>,
) -> std::io::Result<()> {
    let mut input = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).await? == 0 {
            break;
        }
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match refusal(body) {
            Ok(Some(frame)) => {
                let _ = errors.send(frame);
            }
            Ok(None) => {
                to_protocol.write_all(body).await?;
                to_protocol.write_all(b"\n").await?;
                to_protocol.flush().await?;
            }
            Err(error) => {
                tracing::warn!(%error, "answered a line that is not JSON with a parse error");
                let _ = errors.send(parse_error(&error.to_string()));
            }
        }
    }
    // End of input: closing our side tells rmcp the client is gone.
    to_protocol.shutdown().await
}

/// Writes rmcp's lines and our error lines to `output`, whole lines at a time, until both
/// sources are finished.
pub(crate) async fn write_frames(
    from_protocol: impl AsyncRead + Unpin,
    mut errors: mpsc::UnboundedReceiver<String>,
    mut output: impl AsyncWrite + Unpin,
) -> std::io::Result<()> {
    let mut from_protocol = BufReader::new(from_protocol);
    let mut line = Vec::new();
    let mut protocol_open = true;
    let mut errors_open = true;
    while protocol_open || errors_open {
        tokio::select! {
            read = from_protocol.read_until(b'\n', &mut line), if protocol_open => {
                if read? == 0 {
                    protocol_open = false;
                } else {
                    output.write_all(&line).await?;
                    output.flush().await?;
                    line.clear();
                }
            }
            error = errors.recv(), if errors_open => match error {
                Some(frame) => {
                    output.write_all(frame.as_bytes()).await?;
                    output.write_all(b"\n").await?;
                    output.flush().await?;
                }
                None => errors_open = false,
            },
        }
    }
    output.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn json_passes_through_and_garbage_gets_a_parse_error() {
        let input: &[u8] = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\"}\r\n\n{not json\n\xff\xfe\n[1]\n{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"tools/call\",\"params\":5}\n";
        let mut forwarded = Vec::new();
        let (sender, mut receiver) = mpsc::unbounded_channel();
        read_frames(input, &mut forwarded, sender).await.unwrap();
        assert_eq!(
            String::from_utf8(forwarded).unwrap(),
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\"}\n[1]\n"
        );
        for _ in 0..2 {
            let frame: serde_json::Value =
                serde_json::from_str(&receiver.recv().await.unwrap()).unwrap();
            assert_eq!(frame["error"]["code"], -32700);
            assert!(frame["id"].is_null());
        }
        let frame: serde_json::Value =
            serde_json::from_str(&receiver.recv().await.unwrap()).unwrap();
        assert_eq!(frame["error"]["code"], -32602);
        assert_eq!(
            frame["error"]["message"],
            "invalid request: params: must be an object with name and arguments"
        );
        assert_eq!(frame["id"], 9);
        assert!(
            frame["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("invalid request:")
        );
        assert!(receiver.recv().await.is_none());
    }

    #[tokio::test]
    async fn writer_emits_whole_lines_from_both_sources_until_both_end() {
        let (sender, receiver) = mpsc::unbounded_channel();
        sender.send("{\"e\":1}".to_string()).unwrap();
        drop(sender);
        let protocol: &[u8] = b"{\"a\":1}\n{\"b\":2}\n";
        let mut out = Vec::new();
        write_frames(protocol, receiver, &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        assert_eq!(lines, ["{\"a\":1}", "{\"b\":2}", "{\"e\":1}"]);
    }
}
