//! Newline-delimited JSON-RPC over stdin and stdout, with one addition to rmcp's transport:
//! each line is screened first ([`crate::jsonrpc::screen`], as HTTP's `/mcp` posts are), so a
//! line that is not JSON gets a parse error (-32700, id null) instead of silence.
//!
//! One task owns stdin and one owns stdout. Lines that are JSON go to rmcp unchanged; rmcp's
//! own answers and our parse errors are written to stdout a whole line at a time, so frames
//! never interleave. Nothing else ever writes to stdout.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::jsonrpc::{Screened, screen};

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
        match screen(body) {
            Screened::Answer(frame) => {
                let _ = errors.send(frame);
            }
            // rmcp reads it, or drops what cannot be answered (a malformed notification).
            Screened::Pass { .. } | Screened::Unanswerable(_) => {
                to_protocol.write_all(body).await?;
                to_protocol.write_all(b"\n").await?;
                to_protocol.flush().await?;
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
