//! hAIveMind's HTTP services: remote MCP on port 8900.
//!
//! - `/mcp`: MCP streamable HTTP, by rmcp's service: sessions for protocol versions up to
//!   2025-11-25 (idle ones expire after `server.session_idle_secs`; a request naming a
//!   session the server does not know gets 404, which tells the client to initialise
//!   again), and the stateless 2026-07-28 protocol.
//! - `/sse` + `/messages`: the legacy HTTP+SSE transport, a thin shim in [`sse`].
//! - `/health`: liveness, without a token.
//!
//! Every request passes the guards of [`guard`] (network allowlist, body size, Host and
//! Origin, bearer token, rate limit, time limit) before it reaches MCP, and the MCP tools
//! then apply the token's role. The transports are thin: behaviour lives in
//! `haivemind-mcp` and the engine.
#![deny(missing_docs)]

mod auth;
mod dashboard;
mod guard;
mod listener;
mod metrics;
mod oauth;
mod reload;
mod rest;
mod sse;
mod sync_routes;
mod tls;
mod websocket;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use haivemind_core::audit::{AuditEvent, AuditLog};
use haivemind_core::security::{Caller, Network};
use haivemind_core::{Config, VERSION};
use haivemind_mcp::HaivemindServer;
use haivemind_mcp::jsonrpc::Screened;
use haivemind_store::Store;
use rmcp::transport::streamable_http_server::session::local::{LocalSessionManager, SessionConfig};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;

pub use auth::{AuthFailure, Authenticator, RateLimiter, TokenSourceError};
use haivemind_sync::{EventHub, PeerStates, SyncService, discover_peers, sync_interval};
pub use listener::{Listener, ServeError, TlsSwitch};
pub use reload::{ReloadError, Reloaded};
pub use tls::{TlsError, acceptor as tls_acceptor};

/// Why the HTTP services could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A configured token could not be read.
    #[error(transparent)]
    Tokens(#[from] TokenSourceError),
    /// The allowlist is invalid (also caught when the config loads).
    #[error(transparent)]
    Networks(#[from] haivemind_core::InvalidInput),
}

/// Failed authentications an address may make at once, and per minute after that, before
/// it gets 429 instead of 401.
const FAILED_AUTH_BURST: u32 = 30;
const FAILED_AUTH_PER_MINUTE: u32 = 60;

/// What every handler and guard shares.
pub(crate) struct AppState {
    mcp: HaivemindServer,
    store: Arc<Store>,
    auth: Authenticator,
    /// `security.rate_limit`'s limiter, replaced on reload.
    limiter: std::sync::RwLock<Option<Arc<RateLimiter>>>,
    /// Failed authentications per peer address.
    failure_limiter: RateLimiter,
    /// Audit lines for refusals, per peer address.
    refusal_audit_limiter: RateLimiter,
    networks: Vec<Network>,
    origin_policy: guard::OriginPolicy,
    max_body_bytes: usize,
    request_timeout: Duration,
    audit: Option<Arc<AuditLog>>,
    audit_auth_failures: bool,
    audit_sync_events: bool,
    /// With `sync.security.whitelist_only`, the machines allowed to replicate.
    listed_machines: Option<Vec<String>>,
    /// How replication with each peer is going.
    peer_states: PeerStates,
    /// Live events for `/ws/{machine_id}`, fed by the op-log watcher.
    events: Arc<EventHub>,
    /// The sync service, once `spawn_sync` started it (for `/api/trigger-sync`).
    sync_service: std::sync::OnceLock<Arc<SyncService>>,
    sse_sessions: sse::SseSessions,
    /// The minute each token was last noted as used.
    token_minutes: Mutex<HashMap<String, i64>>,
    /// Which token opened each `/mcp` session, and when the session was last used.
    session_owners: Mutex<SessionOwners>,
    session_idle: Duration,
    /// rmcp's own table of open `/mcp` sessions: the truth about which are still open.
    mcp_sessions: Arc<LocalSessionManager>,
    /// Why the hub's database cannot be reached, while it cannot (probed every second on
    /// PostgreSQL; always `None` on SQLite): requests are answered 503 meanwhile.
    storage_down: Arc<Mutex<Option<String>>>,
    /// How long requests take, by method and route (for `/metrics`).
    route_timings: haivemind_mcp::timings::Timings,
    /// Pending OAuth codes and the registration limit.
    oauth: oauth::OAuthState,
}

impl AppState {
    pub(crate) fn audit(&self, event: AuditEvent) {
        if let Some(audit) = &self.audit {
            audit.record(event);
        }
    }

    /// Audits a refusal unless this peer's refusals already filled their share of the log
    /// this minute: the request is refused either way, but a flood cannot rotate older
    /// evidence out of the log.
    pub(crate) fn audit_refusal(&self, peer: Option<String>, event: AuditEvent) {
        let key = peer.clone().unwrap_or_default();
        if self.refusal_audit_limiter.check(&key).is_ok() {
            self.audit(event);
        }
    }

    /// Audits a token's use and stamps its `last_used` once per token per minute, so the
    /// log shows which tokens are active without a line per request.
    fn note_token_use(&self, caller: &Caller, peer: Option<&str>, path: &str) {
        let minute = haivemind_core::time_format::now_ms() / 60_000;
        let fresh = self
            .token_minutes
            .lock()
            .map(|mut seen| seen.insert(caller.token_id.clone(), minute) != Some(minute))
            .unwrap_or(false);
        if !fresh {
            return;
        }
        self.audit(
            AuditEvent::new("token_used")
                .with("token_id", caller.token_id.clone())
                .with("token_name", caller.name.clone())
                .with("role", caller.role.as_str())
                .with("peer", peer)
                .with("path", path),
        );
        if caller.token_id.starts_with("tok_") {
            let store = Arc::clone(&self.store);
            let id = caller.token_id.clone();
            // The time of this use, not the minute's start (which could come before the
            // token was made); noted once a minute.
            let at = haivemind_core::time_format::now_ms();
            tokio::task::spawn_blocking(move || {
                if let Err(error) = store.touch_token(&id, at) {
                    tracing::warn!(%error, "could not record token use");
                }
            });
        }
    }
}

/// The remote MCP application: routes and guards, ready to serve.
pub struct McpApp {
    state: Arc<AppState>,
    router: Router,
    health: Router,
    cancel: tokio_util::sync::CancellationToken,
}

impl McpApp {
    /// Builds the application over `store` with `config`'s security settings.
    pub fn new(
        store: Arc<Store>,
        config: &Config,
        audit: Option<Arc<AuditLog>>,
    ) -> Result<Self, SetupError> {
        let peer_states = PeerStates::default();
        let peer_health = {
            let peer_states = Arc::clone(&peer_states);
            haivemind_mcp::PeerHealth(Arc::new(move || {
                serde_json::Value::Array(sync_routes::peer_list(&peer_states))
            }))
        };
        let mcp = HaivemindServer::new(
            Arc::clone(&store),
            haivemind_mcp::ServerContext {
                data_dir: config.data_dir(),
                started_at_ms: haivemind_core::time_format::now_ms(),
                transport: "http",
                agent_ttl_ms: config.agent_ttl_ms(),
                mcp_url: Some(public_mcp_url(config)),
                connectors: config.connectors.clone(),
                tool_profile: config.mcp.tool_profile,
                peer_health: Some(peer_health),
            },
        )
        .with_audit(audit.clone());
        let auth = Authenticator::new(Arc::clone(&store), config)?;
        if auth.require_auth() && !auth.has_tokens() {
            tracing::warn!(
                "no token exists yet: every request but /health will get 401; make one with `haivemind token create --role agent`"
            );
        }
        let mut session_manager = LocalSessionManager::default();
        let mut session_config = SessionConfig::default();
        session_config.keep_alive = Some(Duration::from_secs(config.server.session_idle_secs));
        session_manager.session_config = session_config;
        let sessions = Arc::new(session_manager);
        let state = Arc::new(AppState {
            mcp: mcp.clone(),
            store,
            auth,
            limiter: std::sync::RwLock::new(
                RateLimiter::new(&config.security.rate_limit).map(Arc::new),
            ),
            failure_limiter: RateLimiter::per_address(FAILED_AUTH_PER_MINUTE, FAILED_AUTH_BURST),
            refusal_audit_limiter: RateLimiter::per_address(
                FAILED_AUTH_PER_MINUTE,
                FAILED_AUTH_BURST,
            ),
            networks: config.security.networks()?,
            origin_policy: guard::OriginPolicy {
                hosts: allowed_hosts(config),
                origins: config.security.allowed_origins.clone(),
            },
            max_body_bytes: config.server.max_body_bytes,
            request_timeout: Duration::from_secs(config.server.request_timeout_secs),
            audit,
            audit_auth_failures: config.logging.log_auth_failures,
            audit_sync_events: config.logging.log_sync_events,
            listed_machines: listed_machines(config),
            peer_states,
            events: Arc::new(EventHub::default()),
            sync_service: std::sync::OnceLock::new(),
            sse_sessions: sse::SseSessions::default(),
            token_minutes: Mutex::new(HashMap::new()),
            session_owners: Mutex::new(SessionOwners::default()),
            session_idle: Duration::from_secs(config.server.session_idle_secs),
            mcp_sessions: Arc::clone(&sessions),
            storage_down: Arc::default(),
            route_timings: Default::default(),
            oauth: oauth::OAuthState::new(config.security.tls.cert_file.is_some()),
        });
        // Host and Origin are checked by our own guard, before authentication, with the
        // same rules for /mcp and /sse; rmcp's copies of those checks are turned off.
        let http_config = StreamableHttpServerConfig::default()
            .disable_allowed_hosts()
            .disable_allowed_origins()
            .with_max_request_body_bytes(config.server.max_body_bytes);
        let cancel = http_config.cancellation_token.clone();
        let factory_server = mcp;
        let service =
            StreamableHttpService::new(move || Ok(factory_server.clone()), sessions, http_config);
        let mcp_route = Router::new()
            .route_service("/mcp", service)
            .layer(axum::middleware::from_fn(session_deleted_is_no_content))
            .layer(from_fn_with_state(Arc::clone(&state), session_owner))
            .layer(from_fn_with_state(Arc::clone(&state), screen_message));
        let guarded = mcp_route
            .route("/sse", get(sse::connect))
            .route("/messages", post(sse::message))
            .route("/messages/", post(sse::message))
            .merge(rest::routes())
            .layer(from_fn_with_state(Arc::clone(&state), guard::time_limit))
            .layer(from_fn_with_state(
                Arc::clone(&state),
                guard::storage_available,
            ))
            .layer(from_fn_with_state(Arc::clone(&state), guard::authenticate))
            .layer(from_fn_with_state(
                Arc::clone(&state),
                guard::host_and_origin,
            ));
        let sync_guarded = Router::new()
            .route("/api/status", get(sync_routes::status))
            .route("/api/sync", post(sync_routes::exchange))
            .route("/api/trigger-sync", post(sync_routes::trigger))
            .route("/ws/{machine_id}", get(websocket::subscribe))
            .route("/metrics", get(metrics::render))
            .layer(from_fn_with_state(Arc::clone(&state), guard::time_limit))
            .layer(from_fn_with_state(
                Arc::clone(&state),
                guard::storage_available,
            ))
            .layer(from_fn_with_state(Arc::clone(&state), guard::authenticate));
        // The page, its event socket and the OAuth endpoints need no bearer header (the
        // socket signs in by its first message, the consent form by its `token` field),
        // but the same Host and Origin rules.
        let page = dashboard::routes()
            .route("/api/v1/events", get(dashboard::events))
            .merge(oauth::routes())
            .layer(from_fn_with_state(
                Arc::clone(&state),
                guard::host_and_origin,
            ));
        let health_only = with_health_and_outer_guards(sync_guarded, &state);
        let router = with_health_and_outer_guards(guarded.merge(page), &state)
            .layer(axum::middleware::from_fn(dashboard::security_headers))
            .layer(from_fn_with_state(Arc::clone(&state), timed));
        Ok(Self {
            state: Arc::clone(&state),
            router,
            health: health_only,
            cancel,
        })
    }

    /// The routes, for serving or for tests.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The sync port: `/health`, `/api/status` and the replication exchange `/api/sync`.
    pub fn health_router(&self) -> Router {
        self.health.clone()
    }

    /// Starts the background work of the sync port: the op-log watcher (live events for
    /// `/ws/{machine_id}`) and, when there are peers and a fleet token, the sync service
    /// (pull and push with every peer after each write and every `sync.sync_interval`).
    /// The tasks run until aborted. Call it before the ports are announced: the watcher
    /// starts at the op log's end as read here, so every write made after this returns
    /// becomes an event.
    ///
    /// Fails when peers are reached over TLS and the trusted certificates cannot be read.
    pub async fn spawn_sync(
        &self,
        config: &Config,
        sync_port: u16,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, haivemind_sync::TlsError> {
        let head = haivemind_sync::op_log_head(&self.state.store).await;
        let mut tasks = vec![
            tokio::spawn(haivemind_sync::watch(
                Arc::clone(&self.state.store),
                Arc::clone(&self.state.events),
                head,
            )),
            tokio::spawn(announce_broadcasts(
                Arc::clone(&self.state.events),
                self.state.mcp.clone(),
            )),
        ];
        if self.state.store.postgres().is_some() {
            tasks.push(tokio::spawn(probe_storage(Arc::clone(&self.state))));
        }
        let peers = discover_peers(config, self.state.store.machine_id(), sync_port);
        if peers.is_empty() {
            return Ok(tasks);
        }
        let Some(token) = config.security.api_token.clone() else {
            tracing::warn!(
                "sync.discovery.machines lists peers but security.api_token (the fleet token) is not set: not replicating"
            );
            return Ok(tasks);
        };
        let connector = if peers.iter().any(|p| p.tls) {
            Some(haivemind_sync::peer_connector(config)?)
        } else {
            None
        };
        let names: Vec<&str> = peers.iter().map(|p| p.machine_id.as_str()).collect();
        tracing::info!(peers = ?names, "replicating with peers");
        let service = Arc::new(
            SyncService::new(
                Arc::clone(&self.state.store),
                peers,
                token,
                sync_interval(config),
                Arc::clone(&self.state.peer_states),
                Arc::clone(&self.state.events),
                connector,
            )
            .with_audit(self.state.audit.clone()),
        );
        let _ = self.state.sync_service.set(Arc::clone(&service));
        tasks.push(tokio::spawn(service.run()));
        Ok(tasks)
    }

    /// Ends every MCP session (at shutdown).
    pub fn close_sessions(&self) {
        self.cancel.cancel();
    }
}

/// Passes every broadcast of the change feed to the MCP clients connected to `mcp`, until
/// the task is aborted (used by `haivemind serve`, and by `haivemind mcp` for its client).
pub async fn announce_broadcasts(events: Arc<EventHub>, mcp: HaivemindServer) {
    let mut receiver = events.subscribe_quietly();
    loop {
        match receiver.recv().await {
            Ok(event) => {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&event) else {
                    continue;
                };
                if event["type"] == "broadcast" {
                    mcp.announce(event).await;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The machines of `sync.discovery.machines` when `sync.security.whitelist_only` (default
/// true once any machine is listed) restricts replication to them. An entry is
/// `{"machine_id": …}`, a `"host"` / `"host:port"` string whose host is the id, or, as in
/// the seed, an object keyed by machine id.
fn listed_machines(config: &Config) -> Option<Vec<String>> {
    let discovery = config.sync.get("discovery")?;
    let machines = discovery.get("machines")?;
    let ids: Vec<String> = match machines {
        serde_json::Value::Array(entries) => entries
            .iter()
            .filter_map(|entry| match entry {
                serde_json::Value::String(text) => Some(
                    text.rsplit_once(':')
                        .map_or(text.as_str(), |(h, _)| h)
                        .to_string(),
                ),
                serde_json::Value::Object(map) => map
                    .get("machine_id")
                    .and_then(|m| m.as_str())
                    .map(str::to_string),
                _ => None,
            })
            .collect(),
        serde_json::Value::Object(map) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    if ids.is_empty() {
        return None;
    }
    let whitelist_only = config
        .sync
        .get("security")
        .and_then(|s| s.get("whitelist_only"))
        .and_then(|w| w.as_bool())
        .unwrap_or(true);
    whitelist_only.then_some(ids)
}

/// This server's `/mcp` URL for agents on other machines: its bound host, or its machine id
/// when bound to every address.
fn public_mcp_url(config: &Config) -> String {
    let scheme = if config.security.tls.cert_file.is_some() {
        "https"
    } else {
        "http"
    };
    let host = match config.server.host.as_str() {
        "0.0.0.0" | "::" => config.machine_id(),
        host if host.contains(':') => format!("[{host}]"),
        host => host.to_string(),
    };
    format!("{scheme}://{host}:{}/mcp", config.server.mcp_port)
}

/// Host names accepted on `/mcp` and `/sse`: loopback names, this machine's id and host
/// name, the bound address, and `security.allowed_hosts`. IP literals are always accepted.
fn allowed_hosts(config: &Config) -> Vec<String> {
    let mut hosts = vec!["localhost".to_string()];
    hosts.push(config.machine_id());
    hosts.push(haivemind_core::config::host_name());
    hosts.push(config.server.host.clone());
    hosts.extend(config.security.allowed_hosts.iter().cloned());
    hosts.sort();
    hosts.dedup();
    hosts
}

/// Binds each `/mcp` session to the token that opened it: a request naming a session
/// another token opened gets 403, so a leaked or guessed session id is worth nothing
/// without its token. (Each request still runs with its own token's role.)
async fn session_owner(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        return next.run(request).await;
    };
    let named = request
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Only an initialize opens a session; stateless (2026-07-28) requests open none, so
    // a token at its session cap can still make them.
    let opening = named.is_none()
        && request.method() == axum::http::Method::POST
        && request
            .extensions()
            .get::<Screened>()
            .is_some_and(|s| matches!(s, Screened::Pass { initialize: true }));
    // The lock is held in these blocks alone, never across an await. An opening request
    // reserves its slot under the lock, so concurrent ones cannot pass the cap together.
    let verdict = match state.session_owners.lock() {
        Err(_) => SessionVerdict::Go(None),
        Ok(mut owners) => {
            // Twice the idle time: a session kept alive by its GET stream alone is not
            // forgotten here before rmcp ends it.
            owners.prune(state.session_idle * 2);
            match &named {
                Some(session) => {
                    let owner = owners.sessions.get_mut(session).map(|entry| {
                        entry.1 = std::time::Instant::now();
                        entry.0.clone()
                    });
                    if owner.is_some_and(|owner| owner != caller.token_id) {
                        SessionVerdict::Foreign
                    } else {
                        SessionVerdict::Go(None)
                    }
                }
                None if opening => match owners.reserve(&caller.token_id) {
                    Some(slot) => SessionVerdict::Go(Some(slot)),
                    None => SessionVerdict::AtCap,
                },
                None => SessionVerdict::Go(None),
            }
        }
    };
    let reserved = match verdict {
        SessionVerdict::Go(slot) => slot,
        SessionVerdict::Foreign => {
            state.audit(
                AuditEvent::new("request_denied")
                    .with("reason", "session_of_another_token")
                    .with("token_id", caller.token_id)
                    .with("path", "/mcp"),
            );
            return guard::refusal(
                StatusCode::FORBIDDEN,
                "session_of_another_token",
                "this MCP session was opened with another token",
            );
        }
        SessionVerdict::AtCap => {
            // Sessions rmcp has ended (idle, or its worker gone) free their slots here too;
            // what was opened or used since the look is kept.
            let looked_at = std::time::Instant::now();
            let open: std::collections::HashSet<String> = state
                .mcp_sessions
                .sessions
                .read()
                .await
                .keys()
                .map(ToString::to_string)
                .collect();
            let slot = state.session_owners.lock().ok().and_then(|mut owners| {
                owners.sessions.retain(|id, (_, seen)| {
                    open.contains(id) || *seen >= looked_at || SessionOwners::is_reservation(id)
                });
                owners.reserve(&caller.token_id)
            });
            match slot {
                Some(slot) => Some(slot),
                None => {
                    return guard::refusal(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too_many_sessions",
                        format!(
                            "this token has {MAX_SESSIONS_PER_TOKEN} open MCP sessions; end one (DELETE /mcp) or let one go idle"
                        ),
                    );
                }
            }
        }
    };
    let deleting = request.method() == axum::http::Method::DELETE;
    let response = next.run(request).await;
    if let Some(slot) = reserved {
        return remember_opened(&state, &slot, caller.token_id, response);
    }
    // A session its client ended frees its slot at once.
    if deleting
        && (response.status().is_success() || response.status() == StatusCode::NOT_FOUND)
        && let Some(session) = named
        && let Ok(mut owners) = state.session_owners.lock()
    {
        owners.sessions.remove(&session);
    }
    response
}

/// Screens each JSON post to `/mcp` as stdio screens each line
/// ([`haivemind_mcp::jsonrpc::screen`]): a malformed message gets 400 with its JSON-RPC
/// error (-32700, -32600 or -32602) rather than rmcp's 415 or "method not found". What
/// passes goes on with its screening noted, for [`session_owner`].
async fn screen_message(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let is_json = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
        });
    if request.method() != axum::http::Method::POST || !is_json {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let bytes = match guard::read_body(body, state.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let screened = haivemind_mcp::jsonrpc::screen(&bytes);
    match screened {
        Screened::Answer(frame) | Screened::Unanswerable(frame) => (
            StatusCode::BAD_REQUEST,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            frame,
        )
            .into_response(),
        Screened::Pass { .. } => {
            parts.extensions.insert(screened);
            next.run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(bytes),
            ))
            .await
        }
    }
}

/// Turns the slot reserved for an opening request into the session `response` announces,
/// or frees it when none was opened.
fn remember_opened(state: &AppState, slot: &str, token_id: String, response: Response) -> Response {
    let opened = response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok());
    if let Ok(mut owners) = state.session_owners.lock() {
        owners.sessions.remove(slot);
        if let Some(opened) = opened {
            owners
                .sessions
                .insert(opened.to_string(), (token_id, std::time::Instant::now()));
        }
    }
    response
}

/// What [`session_owner`] decided under its lock.
enum SessionVerdict {
    /// Go on, with the slot reserved for an opening request.
    Go(Option<String>),
    Foreign,
    AtCap,
}

/// The prefix of a reserved slot's key (a session id never has a space).
const RESERVED: &str = "reserved ";

/// Open MCP sessions a token may hold at once (a session costs a task and buffers).
const MAX_SESSIONS_PER_TOKEN: usize = 64;

/// `/mcp` sessions by id: the token that opened each, and when it was last used.
#[derive(Default)]
struct SessionOwners {
    sessions: HashMap<String, (String, std::time::Instant)>,
    pruned: Option<std::time::Instant>,
    reservations: u64,
}

impl SessionOwners {
    /// Reserves a slot for a session `token_id` is opening, unless it holds the most it
    /// may; the key stands in for the session until its id is known.
    fn reserve(&mut self, token_id: &str) -> Option<String> {
        if self.count_of(token_id) >= MAX_SESSIONS_PER_TOKEN {
            return None;
        }
        self.reservations += 1;
        let slot = format!("{RESERVED}{}", self.reservations);
        self.sessions.insert(
            slot.clone(),
            (token_id.to_string(), std::time::Instant::now()),
        );
        Some(slot)
    }

    fn is_reservation(id: &str) -> bool {
        id.starts_with(RESERVED)
    }

    /// Forgets sessions idle past their expiry (rmcp has ended them), at most once a
    /// second, so the scan costs nothing per request.
    fn prune(&mut self, idle: Duration) {
        let now = std::time::Instant::now();
        if self
            .pruned
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        {
            return;
        }
        self.pruned = Some(now);
        self.sessions
            .retain(|_, (_, seen)| now.duration_since(*seen) < idle);
    }

    fn count_of(&self, token_id: &str) -> usize {
        self.sessions
            .values()
            .filter(|(t, _)| t == token_id)
            .count()
    }
}

/// `/health` beside `routes`, and the guards every route of a port passes first: the
/// network allowlist, then the body size.
fn with_health_and_outer_guards(routes: Router<Arc<AppState>>, state: &Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .merge(routes)
        .fallback(not_found)
        .layer(from_fn_with_state(Arc::clone(state), guard::body_size))
        .layer(from_fn_with_state(
            Arc::clone(state),
            guard::allowed_network,
        ))
        .layer(axum::middleware::from_fn(guard::close_after_refused_body))
        .with_state(Arc::clone(state))
}

/// Records how long each request to a known route took, by method and route pattern.
async fn timed(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| format!("{} {}", request.method(), path.as_str()));
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    if let Some(route) = route {
        state.route_timings.observe(&route, started.elapsed());
    }
    response
}

/// rmcp answers a session's `DELETE` with 202; the official Python client expects 200 or
/// 204 and logs a failure otherwise. The session is gone either way: say 204.
async fn session_deleted_is_no_content(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let deleting = request.method() == axum::http::Method::DELETE;
    let response = next.run(request).await;
    if deleting && response.status() == StatusCode::ACCEPTED {
        return StatusCode::NO_CONTENT.into_response();
    }
    response
}

/// Every second, whether the hub's database answers; the change is logged once each way.
async fn probe_storage(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let store = Arc::clone(&state.store);
        let probed = tokio::task::spawn_blocking(move || store.check_storage()).await;
        let problem = match probed {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(haivemind_core::error::excerpt(&error.to_string())),
            Err(error) => Some(error.to_string()),
        };
        let Ok(mut down) = state.storage_down.lock() else {
            continue;
        };
        match (&*down, &problem) {
            (None, Some(problem)) => {
                tracing::error!(%problem, "the database is unavailable; answering 503 until it is back")
            }
            (Some(_), None) => tracing::info!("the database is back"),
            _ => {}
        }
        *down = problem;
    }
}

impl AppState {
    /// Why the database cannot be reached, if it cannot.
    pub(crate) fn storage_down(&self) -> Option<String> {
        self.storage_down.lock().ok().and_then(|down| down.clone())
    }
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    if let Some(reason) = state.storage_down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "2")],
            axum::Json(json!({
                "status": "unavailable",
                "reason": reason,
                "machine_id": state.store.machine_id(),
                "version": VERSION,
            })),
        )
            .into_response();
    }
    axum::Json(json!({
        "status": "ok",
        "machine_id": state.store.machine_id(),
        "version": VERSION,
        // For a peer's `haivemind doctor`, which reports the clock offset.
        "time": haivemind_core::time_format::ms_to_rfc3339(haivemind_core::time_format::now_ms()),
        "sse_sessions": state.sse_sessions.len(),
    }))
    .into_response()
}

async fn not_found() -> Response {
    guard::refusal(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see docs/HTTP.md for the routes of each port",
    )
}
