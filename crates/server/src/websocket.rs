//! `GET /ws/{machine_id}`: a WebSocket of live events — memories created, updated, deleted,
//! erased or withdrawn (locally or by replication), and sync rounds with peers.
//!
//! The path names the subscribing machine; with `sync.security.whitelist_only` it must be
//! listed in `sync.discovery.machines` or be this machine. Every frame the server sends is
//! a JSON text frame with a `type`. The server pings every [`PING_EVERY`] and closes a
//! connection that has sent nothing (not even a pong) for [`SILENT_LIMIT`]; a client may
//! ping too, with a WebSocket ping frame or a `{"type":"ping"}` text frame (answered with
//! `{"type":"pong"}`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use haivemind_core::VERSION;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::AppState;
use crate::guard::refusal;
use haivemind_sync::Subscription;

/// The largest message a subscriber may send (pings and `{"type":"ping"}` are tiny).
pub(crate) const MAX_INCOMING_BYTES: usize = 16 * 1024;

const PING_EVERY: Duration = Duration::from_secs(20);
const SILENT_LIMIT: Duration = Duration::from_secs(60);

/// `GET /ws/{machine_id}`.
pub(crate) async fn subscribe(
    State(state): State<Arc<AppState>>,
    Path(machine_id): Path<String>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if machine_id.trim().is_empty() || machine_id.len() > 128 {
        return refusal(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "machine_id must be 1-128 bytes",
        );
    }
    if let Some(listed) = &state.listed_machines
        && machine_id != state.store.machine_id()
        && !listed.iter().any(|m| m == &machine_id)
    {
        return refusal(
            StatusCode::FORBIDDEN,
            "machine_not_listed",
            format!(
                "machine {machine_id:?} is not in sync.discovery.machines (sync.security.whitelist_only)"
            ),
        );
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return not_a_websocket(&rejection),
    };
    let (events, subscription) = state.events.subscribe();
    let me = state.store.machine_id().to_string();
    // A subscriber only ever sends pings: a larger message closes the socket rather than
    // being buffered (tungstenite would accept 64 MiB).
    upgrade
        .max_message_size(MAX_INCOMING_BYTES)
        .max_frame_size(MAX_INCOMING_BYTES)
        .on_upgrade(move |socket| {
            let hello = json!({
                "type": "hello",
                "machine_id": me,
                "subscriber": machine_id,
                "version": VERSION,
            });
            stream(socket, events, subscription, hello, machine_id, None)
        })
        .into_response()
}

/// The answer to a request on a WebSocket route that is not an upgrade.
pub(crate) fn not_a_websocket(
    rejection: &axum::extract::ws::rejection::WebSocketUpgradeRejection,
) -> Response {
    refusal(
        StatusCode::BAD_REQUEST,
        "websocket_required",
        format!("this route is a WebSocket: {rejection}"),
    )
}

/// Whether a socket's credentials still hold (checked every [`RECHECK_EVERY`]).
pub(crate) type StillValid = Box<dyn Fn() -> bool + Send>;

const RECHECK_EVERY: Duration = Duration::from_secs(2);

/// Sends `hello`, then every event, until either side closes; pings and answers pings.
/// With `still_valid`, a socket whose token stops being valid is told
/// `{"type": "signed_out"}` and closed.
pub(crate) async fn stream(
    mut socket: WebSocket,
    mut events: tokio::sync::broadcast::Receiver<Arc<str>>,
    _subscription: Subscription,
    hello: Value,
    subscriber: String,
    still_valid: Option<StillValid>,
) {
    if socket
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut heard = tokio::time::Instant::now();
    let mut recheck = tokio::time::interval(RECHECK_EVERY);
    loop {
        tokio::select! {
            _ = recheck.tick(), if still_valid.is_some() => {
                if still_valid.as_ref().is_some_and(|valid| !valid()) {
                    let gone = json!({"type": "signed_out", "message": "the token was revoked"});
                    let _ = socket.send(Message::Text(gone.to_string().into())).await;
                    break;
                }
            }
            event = events.recv() => {
                let text: String = match event {
                    Ok(text) => text.to_string(),
                    Err(RecvError::Lagged(missed)) => {
                        json!({"type": "lagged", "missed": missed}).to_string()
                    }
                    Err(RecvError::Closed) => break,
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => {
                let Some(Ok(message)) = incoming else { break };
                heard = tokio::time::Instant::now();
                let reply = match message {
                    Message::Ping(payload) => Some(Message::Pong(payload)),
                    Message::Text(text) => {
                        let asked: Option<Value> = serde_json::from_str(text.as_str()).ok();
                        asked
                            .filter(|v| v["type"] == "ping")
                            .map(|_| Message::Text(json!({"type": "pong"}).to_string().into()))
                    }
                    Message::Close(_) => break,
                    _ => None,
                };
                if let Some(reply) = reply
                    && socket.send(reply).await.is_err()
                {
                    break;
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() > SILENT_LIMIT {
                    tracing::info!(subscriber, "closing a silent WebSocket");
                    break;
                }
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}
