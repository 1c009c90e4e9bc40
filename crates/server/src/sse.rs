//! The legacy HTTP+SSE transport (MCP 2024-11-05), which the seed served and which
//! `claude mcp add --transport sse haivemind http://host:8900/sse` still uses.
//!
//! `GET /sse` opens a stream whose first event, `endpoint`, names where to post:
//! `/messages?session_id=…`. Each `POST` there carries one JSON-RPC message and gets
//! `202 Accepted`; answers travel back on the stream as `message` events. Behind the shim
//! the session is an ordinary newline-delimited MCP session (the same code as stdio), run
//! as the token that opened the stream; a post with another token is refused. The session
//! ends when the client closes the stream.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use haivemind_core::audit::AuditEvent;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use haivemind_mcp::jsonrpc::Screened;

use crate::AppState;
use crate::guard::{caller_of, read_body, refusal};

/// One open SSE session.
pub(crate) struct SseSession {
    owner: String,
    input: tokio::sync::Mutex<DuplexStream>,
}

/// The open sessions by id.
#[derive(Default)]
pub(crate) struct SseSessions(Mutex<HashMap<String, Arc<SseSession>>>);

impl SseSessions {
    fn get(&self, id: &str) -> Option<Arc<SseSession>> {
        self.0.lock().ok()?.get(id).cloned()
    }

    /// How many are open.
    pub(crate) fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// Removes the session when its stream is dropped, which closes the session's input and
/// so ends the MCP session behind it.
struct SessionGuard {
    id: String,
    state: Arc<AppState>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Ok(mut sessions) = self.state.sse_sessions.0.lock() {
            sessions.remove(&self.id);
        }
        tracing::debug!(session = %self.id, "SSE session closed");
    }
}

const PIPE_BYTES: usize = 1 << 20;

/// Open SSE streams a token may hold at once; each costs two tasks and up to two pipes.
const MAX_SSE_SESSIONS_PER_TOKEN: usize = 16;

/// 128 random bits in hex: a session id must not be guessable, even though a post must
/// also carry the token that opened the session.
fn session_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `GET /sse`.
pub(crate) async fn connect(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let Some(caller) = caller_of(request.extensions()) else {
        return refusal(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "not authenticated",
        );
    };
    let open = state
        .sse_sessions
        .0
        .lock()
        .map(|sessions| {
            sessions
                .values()
                .filter(|s| s.owner == caller.token_id)
                .count()
        })
        .unwrap_or(0);
    if open >= MAX_SSE_SESSIONS_PER_TOKEN {
        return refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_sessions",
            format!(
                "this token has {MAX_SSE_SESSIONS_PER_TOKEN} open SSE streams; close one first"
            ),
        );
    }
    let Some(id) = session_id() else {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_randomness",
            "the system's random source failed; try again",
        );
    };
    let (client_input, server_input) = tokio::io::duplex(PIPE_BYTES);
    let (server_output, client_output) = tokio::io::duplex(PIPE_BYTES);
    let server = state.mcp.clone().with_caller(caller.clone());
    tokio::spawn(async move {
        if let Err(error) = haivemind_mcp::serve_lines(server, server_input, server_output).await {
            tracing::debug!(%error, "SSE session ended");
        }
    });
    let (events, receiver) = tokio::sync::mpsc::channel::<Event>(64);
    let endpoint = format!("/messages?session_id={id}");
    let _ = events
        .send(Event::default().event("endpoint").data(endpoint))
        .await;
    tokio::spawn(async move {
        let mut lines = BufReader::new(client_output).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if events
                .send(Event::default().event("message").data(line))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    if let Ok(mut sessions) = state.sse_sessions.0.lock() {
        sessions.insert(
            id.clone(),
            Arc::new(SseSession {
                owner: caller.token_id.clone(),
                input: tokio::sync::Mutex::new(client_input),
            }),
        );
    }
    state.audit(
        AuditEvent::new("session_opened")
            .with("transport", "sse")
            .with("token_id", caller.token_id)
            .with("token_name", caller.name),
    );
    let guard = SessionGuard {
        id,
        state: Arc::clone(&state),
    };
    let stream = ReceiverStream::new(receiver).map(move |event| {
        let _alive = &guard;
        Ok::<_, Infallible>(event)
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[derive(Deserialize)]
pub(crate) struct SessionQuery {
    session_id: Option<String>,
    #[serde(rename = "sessionId")]
    session_id_camel: Option<String>,
}

/// `POST /messages?session_id=…`.
pub(crate) async fn message(
    State(state): State<Arc<AppState>>,
    Query(query): Query<SessionQuery>,
    request: Request,
) -> Response {
    let Some(caller) = caller_of(request.extensions()) else {
        return refusal(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "not authenticated",
        );
    };
    let Some(id) = query.session_id.or(query.session_id_camel) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "missing_session_id",
            "session_id: required; use the endpoint the /sse stream announced",
        );
    };
    let Some(session) = state.sse_sessions.get(&id) else {
        return refusal(
            StatusCode::NOT_FOUND,
            "unknown_session",
            "no open SSE session has this id (it closed, or the server restarted); connect to /sse again",
        );
    };
    if session.owner != caller.token_id {
        state.audit(
            AuditEvent::new("request_denied")
                .with("reason", "session_of_another_token")
                .with("token_id", caller.token_id)
                .with("path", "/messages"),
        );
        return refusal(
            StatusCode::FORBIDDEN,
            "session_of_another_token",
            "this SSE session was opened with another token",
        );
    }
    let body: Body = request.into_body();
    let bytes = match read_body(body, state.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    // One message per line behind the shim: re-serialise so a pretty-printed body cannot
    // split into several lines.
    let message: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(_) => {
            // The same JSON-RPC parse error stdio and /mcp give (the rest of the screening
            // happens behind the shim, where stdio's does).
            let frame = match haivemind_mcp::jsonrpc::screen(&bytes) {
                Screened::Answer(frame) | Screened::Unanswerable(frame) => frame,
                Screened::Pass { .. } => String::new(),
            };
            return (
                StatusCode::BAD_REQUEST,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                frame,
            )
                .into_response();
        }
    };
    let mut line = message.to_string();
    line.push('\n');
    let mut input = session.input.lock().await;
    if input.write_all(line.as_bytes()).await.is_err() {
        return refusal(
            StatusCode::NOT_FOUND,
            "unknown_session",
            "the SSE session has ended; connect to /sse again",
        );
    }
    (StatusCode::ACCEPTED, "Accepted").into_response()
}
