//! The MCP server: rmcp's `ServerHandler` over the tool catalogue and the resources.

use std::path::PathBuf;
use std::sync::Arc;

use haivemind_core::VERSION;
use haivemind_core::audit::AuditLog;
use haivemind_core::security::Caller;
use haivemind_store::Store;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, InitializeResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, ServerCapabilities,
    ServerConfig,
};
// Fleet broadcasts reach session clients (2025-03-26 to 2025-11-25) as
// `notifications/message`, which SEP-2577 deprecates; 2026-07-28 clients get them through
// `subscriptions/listen` on `haivemind://broadcasts` instead (`push.rs`).
#[allow(deprecated)]
use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam, SetLevelRequestParams};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, ServiceExt};

use crate::push::{BROADCASTS_URI, Listeners, subscribable};
use crate::resources::{
    INSTRUCTIONS, INSTRUCTIONS_URI, MACHINE_CONTEXT_URI, SHORT_INSTRUCTIONS, machine_context,
};
use crate::stdio_framing;
use crate::timings::Timings;
use crate::tools::{self, ToolContext};

/// Facts about this server that tools report.
#[derive(Debug, Clone)]
pub struct ServerContext {
    /// The data directory.
    pub data_dir: PathBuf,
    /// When the server started, epoch milliseconds.
    pub started_at_ms: i64,
    /// `stdio` or `http`.
    pub transport: &'static str,
    /// An agent not heard from for this long is inactive
    /// (`claudeops.agent_registry.agent_ttl`).
    pub agent_ttl_ms: i64,
    /// This server's MCP URL as remote agents reach it (HTTP only), for the `.mcp.json`
    /// entry the onboarding tools hand out.
    pub mcp_url: Option<String>,
    /// The `connectors` section of the configuration (Confluence, Jira).
    pub connectors: serde_json::Map<String, serde_json::Value>,
    /// Which tools `tools/list` offers (`mcp.tool_profile`).
    pub tool_profile: haivemind_core::config::ToolProfile,
    /// How replication with each peer is going, when this server replicates
    /// (`haivemind serve`); `get_machine_context` reports it.
    pub peer_health: Option<PeerHealth>,
}

/// Reads the replication peers' state: a JSON array of `{machine_id, last_sync,
/// lag_seconds, last_error, ...}`, as `/api/status` shows it.
#[derive(Clone)]
pub struct PeerHealth(pub Arc<dyn Fn() -> serde_json::Value + Send + Sync>);

impl std::fmt::Debug for PeerHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerHealth")
    }
}

/// The MCP server over one memory engine. Cheap to clone: one per connection is fine.
#[derive(Clone)]
pub struct HaivemindServer {
    store: Arc<Store>,
    context: Arc<ServerContext>,
    caller: Option<Caller>,
    audit: Option<Arc<AuditLog>>,
    /// Every client session, shared by all the clones, for [`HaivemindServer::announce`].
    clients: Arc<std::sync::Mutex<Vec<Peer<RoleServer>>>>,
    /// How long each tool's calls take, shared by all the clones (for `/metrics`).
    timings: Arc<Timings>,
    /// Clients subscribed to `haivemind://broadcasts`, shared by all the clones.
    listeners: Arc<Listeners>,
}

impl HaivemindServer {
    /// A server over `store` whose callers are whoever each HTTP request was authenticated
    /// as (a [`Caller`] in the request's extensions). A request without one is refused.
    pub fn new(store: Arc<Store>, context: ServerContext) -> Self {
        Self {
            store,
            context: Arc::new(context),
            caller: None,
            audit: None,
            clients: Arc::default(),
            timings: Arc::default(),
            listeners: Arc::default(),
        }
    }

    /// Sends a fleet broadcast (an event of `haivemind_sync`'s change feed with `type`
    /// `broadcast`) to every connected session as a `notifications/message` whose level is
    /// the broadcast's severity and whose data is the event, and tells every subscriber of
    /// `haivemind://broadcasts` (a listen stream or a subscribed session) that it changed.
    /// Sessions that ended are forgotten.
    #[allow(deprecated)]
    pub async fn announce(&self, event: serde_json::Value) {
        let level = match event.get("severity").and_then(|s| s.as_str()) {
            Some("critical") => LoggingLevel::Critical,
            Some("error") => LoggingLevel::Error,
            Some("warning") => LoggingLevel::Warning,
            _ => LoggingLevel::Info,
        };
        let clients: Vec<Peer<RoleServer>> = match self.clients.lock() {
            Ok(mut clients) => {
                clients.retain(|peer| !peer.is_transport_closed());
                clients.clone()
            }
            Err(_) => return,
        };
        for client in clients {
            let message = LoggingMessageNotificationParam::new(level, event.clone())
                .with_logger("haivemind.broadcast");
            if let Err(error) = client.notify_logging_message(message).await {
                tracing::debug!(%error, "a client missed a broadcast");
            }
        }
        self.listeners.broadcast_arrived().await;
    }

    /// Every call comes from `caller`: the local user over stdio, or the token that
    /// opened a legacy SSE session.
    pub fn with_caller(mut self, caller: Caller) -> Self {
        self.caller = Some(caller);
        self
    }

    /// Records deletions, erasures and refusals in `audit`.
    pub fn with_audit(mut self, audit: Option<Arc<AuditLog>>) -> Self {
        self.audit = audit;
        self
    }

    /// How long each tool's calls took, by tool name.
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Runs tool `name` for `caller`, exactly as `tools/call` would (same role checks,
    /// limits, audit and timings), for a transport other than MCP: the REST API. The
    /// failure is the tool's own, for the transport to render.
    pub async fn call_as(
        &self,
        caller: Caller,
        agent_id: Option<String>,
        name: &str,
        arguments: serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Value, tools::CallFailure> {
        self.run_tool(agent_id, caller, name, Some(arguments))
            .await
            .map_err(|error| {
                tracing::error!(%error, "a tool call's thread failed");
                tools::CallFailure::Panicked
            })?
            .map_err(tools::CallFailure::Tool)
    }

    /// Runs a tool on a blocking thread (the engine blocks), timing it for `/metrics`.
    async fn run_tool(
        &self,
        agent_id: Option<String>,
        caller: Caller,
        name: &str,
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Result<serde_json::Value, crate::error::ToolError>, tokio::task::JoinError> {
        let tool_context = self.tool_context(agent_id, caller);
        let tool = name.to_string();
        let timings = Arc::clone(&self.timings);
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let outcome = tools::call(&tool_context, &tool, arguments);
            // Unknown names are the caller's words: not a key of the timings table.
            if !matches!(outcome, Err(crate::error::ToolError::UnknownTool { .. })) {
                timings.observe(&tool, started.elapsed());
            }
            outcome
        })
        .await
    }

    fn tool_context(&self, agent_id: Option<String>, caller: Caller) -> ToolContext {
        ToolContext {
            store: Arc::clone(&self.store),
            server: Arc::clone(&self.context),
            agent_id,
            caller,
            audit: self.audit.clone(),
        }
    }

    /// Who sent this request: the fixed caller of this server, else the one the HTTP layer
    /// authenticated. With neither, the least-privileged answer is to refuse.
    fn caller_of(&self, extensions: &rmcp::model::Extensions) -> Result<Caller, ErrorData> {
        if let Some(caller) = &self.caller {
            return Ok(caller.clone());
        }
        extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Caller>())
            .cloned()
            .ok_or_else(|| {
                tracing::error!("an MCP request reached the tools without an authenticated caller");
                ErrorData::internal_error("request is not authenticated", None)
            })
    }
}

/// The agent id recorded on memories: the client's self-declared name, trimmed and cut to
/// the longest id the engine accepts. A name the client got wrong is not the caller's
/// argument, so it must never make a tool call fail.
fn agent_id_from_client_name(name: &str) -> Option<String> {
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    let mut end = name.len().min(haivemind_core::memory::MAX_NAME_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    Some(name[..end].to_string())
}

fn internal(detail: impl std::fmt::Display) -> ErrorData {
    tracing::error!(%detail, "request failed");
    ErrorData::internal_error("the server failed; see its log", None)
}

impl ServerHandler for HaivemindServer {
    #[allow(deprecated)]
    fn get_info(&self) -> ServerConfig {
        InitializeResult::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_logging()
                .build(),
        )
        .with_server_info(Implementation::new("haivemind", VERSION))
        .with_instructions(SHORT_INSTRUCTIONS)
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        if let Ok(mut clients) = self.clients.lock() {
            clients.retain(|peer| !peer.is_transport_closed());
            clients.push(context.peer);
        }
    }

    /// Accepted so clients that set a level do not see an error; broadcasts are sent at
    /// every level, since an agent asked to be part of the collective.
    #[allow(deprecated)]
    async fn set_level(
        &self,
        _request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Ok(())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        // A token may carry its own profile (`token create --profile`); else the config's.
        let profile = self
            .caller_of(&context.extensions)
            .ok()
            .and_then(|caller| caller.tool_profile)
            .unwrap_or(self.context.tool_profile);
        Ok(ListToolsResult::with_all_items(
            tools::offered(profile).map(|entry| entry.tool()).collect(),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // Handshake-era sessions name the client once at initialize; 2026-07-28 requests
        // carry it in their own _meta, and for those rmcp's peer info is a placeholder
        // naming rmcp itself, so the request's own word wins.
        let agent_id = context
            .meta
            .client_info()
            .map(|info| info.name)
            .or_else(|| {
                context
                    .peer
                    .peer_info()
                    .map(|info| info.client_info.name.clone())
            })
            .and_then(|name| agent_id_from_client_name(&name));
        let caller = self.caller_of(&context.extensions)?;
        let name = request.name.to_string();
        let arguments = request.arguments;
        let outcome = self
            .run_tool(agent_id, caller, &name, arguments)
            .await
            .map_err(internal)?;
        match outcome {
            Ok(value) => Ok(CallToolResult::structured(value).into()),
            Err(error) => error.into_result(&name).map(Into::into),
        }
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new(INSTRUCTIONS_URI, "instructions")
                .with_title("How to use hAIveMind")
                .with_description(
                    "How an agent should search, store and share in the collective memory",
                )
                .with_mime_type("text/markdown"),
            Resource::new(MACHINE_CONTEXT_URI, "machine-context")
                .with_title("This machine")
                .with_description(
                    "Machine id, host, version, data location and memory count of this server",
                )
                .with_mime_type("application/json"),
            Resource::new(BROADCASTS_URI, "broadcasts")
                .with_title("Fleet broadcasts")
                .with_description(
                    "The newest broadcasts to every agent; subscribe to be told when one arrives",
                )
                .with_mime_type("application/json"),
        ]))
    }

    fn accepted_subscription_filter(
        &self,
        requested: &rmcp::model::SubscriptionFilter,
    ) -> Option<rmcp::model::SubscriptionFilter> {
        Some(Listeners::accept(requested))
    }

    async fn listen(&self, context: rmcp::service::SubscriptionContext) -> Result<(), ErrorData> {
        self.listeners.listen(context).await;
        Ok(())
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: rmcp::model::SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        if !subscribable(&request.uri) {
            return Err(ErrorData::resource_not_found(
                format!(
                    "uri: only {BROADCASTS_URI} can be subscribed to, not \"{}\"",
                    haivemind_core::error::excerpt(&request.uri)
                ),
                None,
            ));
        }
        self.listeners.subscribe(context.peer);
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        _request: rmcp::model::UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.listeners.unsubscribe(&context.peer);
        Ok(())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri.as_str();
        let contents = match uri {
            INSTRUCTIONS_URI => ResourceContents::TextResourceContents {
                uri: uri.into(),
                mime_type: Some("text/markdown".into()),
                text: INSTRUCTIONS.into(),
                meta: None,
            },
            BROADCASTS_URI => {
                let caller = self.caller_of(&context.extensions)?;
                let value = self
                    .call_as(caller, None, "get_broadcasts", serde_json::Map::new())
                    .await
                    .map_err(|failure| {
                        tracing::warn!(?failure, "reading the broadcasts resource failed");
                        ErrorData::internal_error("the broadcasts could not be read", None)
                    })?;
                ResourceContents::TextResourceContents {
                    uri: uri.into(),
                    mime_type: Some("application/json".into()),
                    text: value.to_string(),
                    meta: None,
                }
            }
            MACHINE_CONTEXT_URI => {
                let tool_context = self.tool_context(None, self.caller_of(&context.extensions)?);
                let value = tokio::task::spawn_blocking(move || machine_context(&tool_context))
                    .await
                    .map_err(internal)?
                    .map_err(internal)?;
                ResourceContents::TextResourceContents {
                    uri: uri.into(),
                    mime_type: Some("application/json".into()),
                    text: value.to_string(),
                    meta: None,
                }
            }
            other => {
                return Err(ErrorData::resource_not_found(
                    format!(
                        "uri: unknown resource \"{}\"; expected {INSTRUCTIONS_URI}, {MACHINE_CONTEXT_URI} or {BROADCASTS_URI}",
                        haivemind_core::error::excerpt(other)
                    ),
                    None,
                ));
            }
        };
        Ok(ReadResourceResult::new(vec![contents]).into())
    }
}

/// Why the stdio server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The client never completed the handshake.
    #[error("MCP handshake failed: {0}")]
    Handshake(String),
    /// The session ended abnormally.
    #[error("MCP session failed: {0}")]
    Session(String),
}

/// Serves MCP over stdin and stdout until the client closes stdin.
pub async fn serve_stdio(server: HaivemindServer) -> Result<(), ServeError> {
    serve_lines(server, tokio::io::stdin(), tokio::io::stdout()).await
}

/// Serves MCP over any pair of byte streams carrying newline-delimited JSON-RPC.
pub async fn serve_lines(
    server: HaivemindServer,
    input: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    output: impl tokio::io::AsyncWrite + Unpin + Send + 'static,
) -> Result<(), ServeError> {
    const PIPE_BYTES: usize = 1 << 20;
    let (to_protocol, protocol_input) = tokio::io::duplex(PIPE_BYTES);
    let (protocol_output, from_protocol) = tokio::io::duplex(PIPE_BYTES);
    let (errors, error_frames) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(stdio_framing::read_frames(input, to_protocol, errors));
    let writer = tokio::spawn(stdio_framing::write_frames(
        from_protocol,
        error_frames,
        output,
    ));
    let session = async {
        let running = server
            .serve((protocol_input, protocol_output))
            .await
            .map_err(|e| ServeError::Handshake(e.to_string()))?;
        running
            .waiting()
            .await
            .map_err(|e| ServeError::Session(e.to_string()))?;
        Ok::<(), ServeError>(())
    };
    let outcome = session.await;
    // The session has dropped its end of the output pipe; let the writer drain every answer
    // already produced before returning.
    reader.abort();
    match writer.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not write to stdout"),
        Err(e) => tracing::warn!(error = %e, "stdout writer stopped"),
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::agent_id_from_client_name;

    #[test]
    fn client_names_become_valid_agent_ids() {
        assert_eq!(
            agent_id_from_client_name("  claude-code "),
            Some("claude-code".into())
        );
        assert_eq!(agent_id_from_client_name("   "), None);
        let long = "é".repeat(200);
        let id = agent_id_from_client_name(&long).unwrap();
        assert!(id.len() <= 256 && id.chars().all(|c| c == 'é'));
    }
}
