//! The dashboard: one page at `/` whose files are compiled into the binary
//! (`crates/server/dashboard/`), and the headers that keep it safe.
//!
//! The page holds no data; it signs in with a token the person types, keeps it in
//! `sessionStorage`, and calls `/api/v1` with it as a bearer header. Its live view is the
//! WebSocket `/api/v1/events`, authenticated by the first message (a browser cannot set
//! headers on a WebSocket, and a token must never travel in a URL).

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use haivemind_core::VERSION;
use serde_json::json;

use crate::AppState;

const INDEX_HTML: &str = include_str!("../dashboard/index.html");
const APP_JS: &str = include_str!("../dashboard/app.js");
const APP_CSS: &str = include_str!("../dashboard/app.css");
const ICON_SVG: &str = include_str!("../dashboard/icon.svg");

/// No inline script or style, nothing from elsewhere, never in a frame.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// The dashboard's routes (no token needed: the files hold nothing secret).
pub(crate) fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/", axum::routing::get(index))
        .route("/assets/app.js", axum::routing::get(script))
        .route("/assets/app.css", axum::routing::get(style))
        .route("/assets/icon.svg", axum::routing::get(icon))
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

async fn icon() -> Response {
    asset("image/svg+xml", ICON_SVG)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // A new binary may ship new files under the same names.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Adds the page-safety headers to every answer of the MCP port: the CSP, no framing, no
/// MIME sniffing, no referrer. No CORS header is ever sent, so other origins' scripts
/// cannot read an answer.
pub(crate) async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    // A page with a policy of its own (the OAuth consent page) keeps it.
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// How long a new `/api/v1/events` socket may take to send its token.
const SIGN_IN_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// `GET /api/v1/events`: live events (as `/ws/{machine_id}` sends them) for the page. The
/// first message must be `{"type": "auth", "token": "…"}`; a wrong or late one closes the
/// socket. Once the token is revoked, the socket says `{"type": "signed_out"}` and closes.
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    extensions: axum::http::Extensions,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return crate::websocket::not_a_websocket(&rejection),
    };
    let address = extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|p| p.0.ip().to_string());
    upgrade
        .max_message_size(crate::websocket::MAX_INCOMING_BYTES)
        .max_frame_size(crate::websocket::MAX_INCOMING_BYTES)
        .on_upgrade(move |socket| signed_in_stream(state, socket, address))
        .into_response()
}

async fn signed_in_stream(
    state: Arc<AppState>,
    mut socket: axum::extract::ws::WebSocket,
    address: Option<String>,
) {
    use axum::extract::ws::Message;
    let first = tokio::time::timeout(SIGN_IN_WITHIN, socket.recv()).await;
    let token = match first {
        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .filter(|v| v["type"] == "auth")
            .and_then(|v| v["token"].as_str().map(str::to_string)),
        _ => None,
    };
    let header = token.map(|t| format!("Bearer {t}"));
    let caller = match state
        .auth
        // OAuth access tokens are for MCP clients: without a Host they are refused here.
        .authenticate(header.as_deref().map(str::as_bytes), None)
    {
        Ok(caller) => caller,
        Err(failure) => {
            let limited = address
                .as_deref()
                .is_some_and(|ip| state.failure_limiter.check(ip).is_err());
            let reason = if limited {
                "rate_limited"
            } else {
                failure.as_str()
            };
            let refusal = json!({"type": "error", "code": reason, "message": failure.message()});
            let _ = socket.send(Message::Text(refusal.to_string().into())).await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    };
    let (events, subscription) = state.events.subscribe();
    let hello = json!({
        "type": "hello",
        "machine_id": state.store.machine_id(),
        "role": caller.role.as_str(),
        "version": VERSION,
    });
    let still_signed_in = {
        let state = Arc::clone(&state);
        move || {
            state
                .auth
                .authenticate(header.as_deref().map(str::as_bytes), None)
                .is_ok()
        }
    };
    crate::websocket::stream(
        socket,
        events,
        subscription,
        hello,
        caller.name,
        Some(Box::new(still_signed_in)),
    )
    .await;
}
