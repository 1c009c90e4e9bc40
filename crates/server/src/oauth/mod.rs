//! OAuth 2.1 for remote MCP clients, as the MCP authorization spec (2025-11-25) asks: the
//! MCP port is both the protected resource and its own authorization server.
//!
//! - `/.well-known/oauth-protected-resource[/mcp|/sse]` (RFC 9728) names the resource and
//!   this server as its authorization server; a 401 from a guarded route points there.
//! - `/.well-known/oauth-authorization-server` (RFC 8414).
//! - `POST /register`: dynamic client registration (RFC 7591), public clients only.
//! - `GET /authorize`: the consent page. The person approves by typing an existing
//!   hAIveMind token into the field `token`; the request's parameters travel as hidden
//!   inputs and are checked again on `POST /authorize`, which redirects with `code` and
//!   `state`. Codes live a minute, in memory, and are used once.
//! - `POST /token`: the code (with its PKCE S256 verifier) or a refresh token for an access
//!   token bound to the resource (RFC 8707) and at most the approving token's role.
//!
//! The grants themselves (clients, access and refresh tokens) are the engine's
//! (`haivemind_store::oauth`); this module is the HTTP face and the checks of each request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use haivemind_core::security::{Caller, Role};
use haivemind_store::{GrantRequest, OAuthClient, Refreshed};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::{RateLimiter, authority_of, blocking_here};

mod authorize;
mod register;
mod token;

/// How long a code may wait to be exchanged.
const CODE_TTL: Duration = Duration::from_secs(60);
/// Codes waiting at once; past this the oldest are dropped.
const MAX_PENDING_CODES: usize = 1_000;
/// How long an access token works.
pub(crate) const ACCESS_TTL_MS: i64 = 3_600_000;
/// How long a grant can be refreshed.
const REFRESH_TTL_MS: i64 = 30 * 24 * 3_600_000;
/// The largest form or registration body read.
const MAX_FORM_BYTES: usize = 16 * 1024;
const MAX_URI_BYTES: usize = 512;
/// What the OAuth routes keep between requests.
pub(crate) struct OAuthState {
    /// `https` when the MCP port serves TLS.
    scheme: &'static str,
    codes: Mutex<HashMap<String, PendingCode>>,
    /// Registrations per peer address: registering needs no token.
    registrations: RateLimiter,
}

impl OAuthState {
    pub(crate) fn new(tls: bool) -> Self {
        Self {
            scheme: if tls { "https" } else { "http" },
            codes: Mutex::new(HashMap::new()),
            registrations: RateLimiter::per_address(20, 20),
        }
    }
}

/// An approval waiting for its code to be exchanged.
struct PendingCode {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    audience: String,
    role: Role,
    approver: Caller,
    issued: Instant,
}

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/.well-known/oauth-protected-resource",
            get(protected_resource),
        )
        .route(
            "/.well-known/oauth-protected-resource/{*path}",
            get(protected_resource),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(authorization_server),
        )
        .route("/register", post(register::register))
        .route(
            "/authorize",
            get(authorize::consent).post(authorize::approve),
        )
        .route("/token", post(token::token))
}

/// `scheme://host:port` of this server as the request named it (the Host guard has
/// already accepted that name).
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    format!("{}://{host}", state.oauth.scheme)
}

/// Which resource a request path belongs to: `/mcp`, `/sse`, or the whole server.
fn resource_path(path: &str) -> &'static str {
    if path == "/mcp" || path.starts_with("/mcp/") {
        "/mcp"
    } else if path == "/sse" || path.starts_with("/messages") {
        "/sse"
    } else {
        ""
    }
}

/// The protected-resource metadata URL a 401 on `path` names.
pub(crate) fn resource_metadata_url(state: &AppState, headers: &HeaderMap, path: &str) -> String {
    format!(
        "{}/.well-known/oauth-protected-resource{}",
        base_url(state, headers),
        resource_path(path)
    )
}

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn protected_resource(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let base = base_url(&state, request.headers());
    let suffix = request
        .uri()
        .path()
        .strip_prefix("/.well-known/oauth-protected-resource")
        .unwrap_or("");
    let path = match suffix {
        "" | "/" => "",
        "/mcp" => "/mcp",
        "/sse" => "/sse",
        _ => {
            return crate::guard::refusal(
                StatusCode::NOT_FOUND,
                "not_found",
                "this server protects /mcp and /sse",
            );
        }
    };
    json_response(
        StatusCode::OK,
        json!({
            "resource": format!("{base}{path}"),
            "authorization_servers": [base],
            "bearer_methods_supported": ["header"],
            "resource_name": "hAIveMind",
        }),
    )
}

async fn authorization_server(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let base = base_url(&state, &headers);
    json_response(
        StatusCode::OK,
        json!({
            "issuer": base,
            "authorization_endpoint": format!("{base}/authorize"),
            "token_endpoint": format!("{base}/token"),
            "registration_endpoint": format!("{base}/register"),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": ["readonly", "agent", "admin"],
        }),
    )
}

fn peer_of(request: &Request) -> Option<String> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// 32 random bytes, base64url: an authorization code. `None` if the system has no
/// randomness to give (logged).
fn random_code() -> Option<String> {
    let mut bytes = [0u8; 32];
    if let Err(error) = getrandom::fill(&mut bytes) {
        tracing::error!(%error, "no randomness for an authorization code");
        return None;
    }
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Codes are kept by digest, so a memory dump does not hold usable codes.
fn code_key(code: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(code.as_bytes()))
}
