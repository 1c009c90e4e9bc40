//! `/api/v1/…`: the REST API the dashboard uses, for scripts too (docs/openapi.yaml).
//!
//! Every memory, coordination and DevOps route is one MCP tool call made through
//! [`HaivemindServer::call_as`]: the same argument types, limits, role checks, audit and
//! errors as `tools/call`, so there is one rule source. A route only moves the path's id,
//! the query string and the JSON body into the tool's arguments. What no tool does (the
//! caller's own rights, tokens, the audit log's tail) is here, behind the same guards.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use haivemind_core::VERSION;
use haivemind_core::audit::AuditEvent;
use haivemind_core::security::{Caller, Role};
use haivemind_mcp::render::token_json;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::guard::refusal;

/// The routes under `/api/v1`, before the guards (which [`crate::McpApp::new`] adds).
pub(crate) fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/api/v1/me", get(me))
        .route("/api/v1/memories", get(list_memories).post(store_memory))
        .route("/api/v1/memories/deleted", get(deleted_memories))
        .route(
            "/api/v1/memories/{id}",
            get(retrieve_memory)
                .patch(update_memory)
                .delete(delete_memory),
        )
        .route("/api/v1/memories/{id}/history", get(memory_history))
        .route("/api/v1/memories/{id}/recover", post(recover_memory))
        .route("/api/v1/recent", get(recent_memories))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/agents", get(agents))
        .route("/api/v1/tasks", get(tasks).post(delegate_task))
        .route("/api/v1/tasks/{id}", get(task))
        .route("/api/v1/broadcasts", get(broadcasts).post(broadcast))
        .route("/api/v1/incidents", get(incidents).post(record_incident))
        .route(
            "/api/v1/incidents/{id}",
            axum::routing::patch(update_incident),
        )
        .route("/api/v1/runbooks", get(runbooks).post(generate_runbook))
        .route(
            "/api/v1/infrastructure",
            get(infrastructure).post(track_infrastructure),
        )
        .route("/api/v1/configs", post(sync_config))
        .route("/api/v1/drift", get(drift))
        .route(
            "/api/v1/sync",
            get(crate::sync_routes::status).post(crate::sync_routes::trigger),
        )
        .route("/api/v1/metrics", get(crate::metrics::render))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/api/v1/audit", get(audit_tail))
        .route("/api/v1/tools/{name}", post(named_tool))
}

type Params = Query<HashMap<String, String>>;

/// Query parameters that are numbers, switches or comma-separated lists in the tools'
/// arguments; every other parameter is passed on as text (and a name no tool knows is
/// refused by the tool, naming it).
const NUMBERS: &[&str] = &["limit", "offset", "hours"];
const SWITCHES: &[&str] = &["semantic", "include_inactive", "hard_delete", "history"];
const LISTS: &[&str] = &["tags"];

/// The tool arguments a query string stands for.
fn arguments_of(params: HashMap<String, String>) -> Result<Map<String, Value>, Box<Response>> {
    let mut arguments = Map::new();
    for (name, text) in params {
        let value = if NUMBERS.contains(&name.as_str()) {
            match text.parse::<u64>() {
                Ok(n) => json!(n),
                Err(_) => match text.parse::<f64>() {
                    Ok(x) if x.is_finite() => json!(x),
                    _ => return Err(Box::new(invalid(&name, "must be a number"))),
                },
            }
        } else if SWITCHES.contains(&name.as_str()) {
            match text.as_str() {
                "true" | "1" => Value::Bool(true),
                "false" | "0" => Value::Bool(false),
                _ => return Err(Box::new(invalid(&name, "must be true or false"))),
            }
        } else if LISTS.contains(&name.as_str()) {
            Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| Value::String(t.to_string()))
                    .collect(),
            )
        } else {
            Value::String(text)
        };
        arguments.insert(name, value);
    }
    Ok(arguments)
}

/// A JSON object body; anything else is refused, naming `body`.
fn object_of(body: &Bytes) -> Result<Map<String, Value>, Box<Response>> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Box::new(invalid("body", "must be a JSON object"))),
        Err(error) => Err(Box::new(invalid(
            "body",
            &format!(
                "is not valid JSON: {}",
                haivemind_core::error::excerpt(&error.to_string())
            ),
        ))),
    }
}

fn invalid(field: &str, rule: &str) -> Response {
    let body = json!({ "error": {
        "code": "invalid_argument",
        "field": field,
        "message": format!("{}: {rule}", haivemind_core::error::excerpt(field)),
    }});
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

fn caller(request_extensions: &axum::http::Extensions) -> Result<Caller, Box<Response>> {
    crate::guard::caller_of(request_extensions).ok_or_else(|| {
        Box::new(refusal(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "not authenticated",
        ))
    })
}

/// Calls tool `name` for the request's caller and answers with its JSON, or with its error
/// and the matching status.
async fn call(
    state: &AppState,
    caller: Caller,
    name: &str,
    arguments: Map<String, Value>,
) -> Response {
    // Memories written through the API name their author after the token.
    let agent = Some(caller.name.clone());
    match state.mcp.call_as(caller, agent, name, arguments).await {
        Ok(value) => axum::Json(value).into_response(),
        Err(failure) => {
            let (status, body) = failure.http(name);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (status, axum::Json(body)).into_response();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                // As the storage guard says it: the database is expected back shortly.
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("2"),
                );
            }
            response
        }
    }
}

/// A route whose tool takes the query string as its arguments.
async fn query_call(state: &AppState, request: Request, params: Params, tool: &str) -> Response {
    let caller = match caller(request.extensions()) {
        Ok(caller) => caller,
        Err(response) => return *response,
    };
    match arguments_of(params.0) {
        Ok(arguments) => call(state, caller, tool, arguments).await,
        Err(response) => *response,
    }
}

/// A route whose tool takes the JSON body as its arguments, with the path's id as `id_key`.
async fn body_call(
    state: &AppState,
    request: Request,
    id: Option<(&str, String)>,
    tool: &str,
) -> Response {
    let caller = match caller(request.extensions()) {
        Ok(caller) => caller,
        Err(response) => return *response,
    };
    // The body-size guard has already refused anything larger.
    let body = match crate::guard::read_body(request.into_body(), usize::MAX).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let mut arguments = match object_of(&body) {
        Ok(arguments) => arguments,
        Err(response) => return *response,
    };
    if let Some((key, id)) = id {
        if arguments
            .get(key)
            .is_some_and(|v| v.as_str() != Some(id.as_str()))
        {
            return invalid(key, "differs from the id in the path");
        }
        arguments.insert(key.to_string(), Value::String(id));
    }
    call(state, caller, tool, arguments).await
}

/// `GET /api/v1/me`: who the token is and what it may do.
async fn me(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let caller = match caller(request.extensions()) {
        Ok(caller) => caller,
        Err(response) => return *response,
    };
    let role = caller.role;
    axum::Json(json!({
        "token_id": caller.token_id,
        "name": caller.name,
        "role": role.as_str(),
        "may": {
            "read": true,
            "read_restricted": role.may_read_restricted(),
            "write": role.may_write(),
            "erase": role.may_erase(),
            "administer": role.may_administer(),
            "sync": role.may_write(),
        },
        "machine_id": state.store.machine_id(),
        "version": VERSION,
    }))
    .into_response()
}

/// `GET /api/v1/memories`: search with `q`, else the newest memories.
async fn list_memories(
    State(state): State<Arc<AppState>>,
    Query(mut params): Params,
    request: Request,
) -> Response {
    let searching = params.get("q").is_some_and(|q| !q.trim().is_empty());
    if let Some(q) = params.remove("q")
        && searching
    {
        params.insert("query".into(), q);
        return query_call(&state, request, Query(params), "search_memories").await;
    }
    params
        .entry("hours".into())
        .or_insert_with(|| BROWSE_HOURS.to_string());
    query_call(&state, request, Query(params), "get_recent_memories").await
}

/// How far back a listing without a query looks by default: ten years.
const BROWSE_HOURS: u32 = 24 * 365 * 10;

async fn store_memory(State(state): State<Arc<AppState>>, request: Request) -> Response {
    body_call(&state, request, None, "store_memory").await
}

async fn deleted_memories(
    State(state): State<Arc<AppState>>,
    params: Params,
    request: Request,
) -> Response {
    query_call(&state, request, params, "list_deleted_memories").await
}

async fn retrieve_memory(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    with_id(&state, request, "memory_id", id, "retrieve_memory").await
}

async fn memory_history(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    with_id(&state, request, "memory_id", id, "get_memory_history").await
}

async fn recover_memory(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    with_id(&state, request, "memory_id", id, "recover_deleted_memory").await
}

async fn task(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    with_id(&state, request, "task_id", id, "get_task").await
}

/// A tool whose only argument is the path's id.
async fn with_id(
    state: &AppState,
    request: Request,
    key: &str,
    id: String,
    tool: &str,
) -> Response {
    let caller = match caller(request.extensions()) {
        Ok(caller) => caller,
        Err(response) => return *response,
    };
    let mut arguments = Map::new();
    arguments.insert(key.to_string(), Value::String(id));
    call(state, caller, tool, arguments).await
}

async fn update_memory(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    body_call(&state, request, Some(("memory_id", id)), "update_memory").await
}

/// `DELETE /api/v1/memories/{id}?hard_delete=true&reason=…`.
async fn delete_memory(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(mut params): Params,
    request: Request,
) -> Response {
    if params.get("memory_id").is_some_and(|named| *named != id) {
        return invalid("memory_id", "differs from the id in the path");
    }
    params.insert("memory_id".into(), id);
    query_call(&state, request, Query(params), "delete_memory").await
}

async fn recent_memories(
    State(state): State<Arc<AppState>>,
    params: Params,
    request: Request,
) -> Response {
    query_call(&state, request, params, "get_recent_memories").await
}

async fn stats(State(state): State<Arc<AppState>>, params: Params, request: Request) -> Response {
    query_call(&state, request, params, "get_memory_stats").await
}

async fn agents(State(state): State<Arc<AppState>>, params: Params, request: Request) -> Response {
    query_call(&state, request, params, "get_agent_roster").await
}

async fn tasks(State(state): State<Arc<AppState>>, params: Params, request: Request) -> Response {
    query_call(&state, request, params, "list_tasks").await
}

async fn delegate_task(State(state): State<Arc<AppState>>, request: Request) -> Response {
    body_call(&state, request, None, "delegate_task").await
}

async fn broadcasts(
    State(state): State<Arc<AppState>>,
    params: Params,
    request: Request,
) -> Response {
    query_call(&state, request, params, "get_broadcasts").await
}

async fn broadcast(State(state): State<Arc<AppState>>, request: Request) -> Response {
    body_call(&state, request, None, "broadcast_discovery").await
}

/// `POST /api/v1/tools/{name}`: any tool of the catalogue by name, the JSON body as its
/// arguments, with the token's role, limits and audit as over MCP (`haivemind --remote`
/// calls the server this way).
async fn named_tool(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    // Tool names are short snake_case words; anything else is no tool, and is not echoed.
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        return refusal(
            StatusCode::NOT_FOUND,
            "unknown_tool",
            format!(
                "no tool is named {:?}; tools/list names them",
                haivemind_core::error::excerpt(&name)
            ),
        );
    }
    body_call(&state, request, None, &name).await
}

async fn incidents(
    State(state): State<Arc<AppState>>,
    params: Params,
    request: Request,
) -> Response {
    query_call(&state, request, params, "list_incidents").await
}

async fn record_incident(State(state): State<Arc<AppState>>, request: Request) -> Response {
    body_call(&state, request, None, "record_incident").await
}

async fn update_incident(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    body_call(
        &state,
        request,
        Some(("incident_id", id)),
        "update_incident",
    )
    .await
}

/// `GET /api/v1/runbooks`: runbooks and playbooks are memories of category `runbooks`.
async fn runbooks(
    State(state): State<Arc<AppState>>,
    Query(mut params): Params,
    request: Request,
) -> Response {
    params.insert("category".into(), "runbooks".into());
    params
        .entry("hours".into())
        .or_insert_with(|| BROWSE_HOURS.to_string());
    params.entry("limit".into()).or_insert_with(|| "100".into());
    query_call(&state, request, Query(params), "get_recent_memories").await
}

async fn generate_runbook(State(state): State<Arc<AppState>>, request: Request) -> Response {
    body_call(&state, request, None, "generate_runbook").await
}

async fn track_infrastructure(State(state): State<Arc<AppState>>, request: Request) -> Response {
    body_call(&state, request, None, "track_infrastructure_state").await
}

async fn sync_config(State(state): State<Arc<AppState>>, request: Request) -> Response {
    body_call(&state, request, None, "sync_infrastructure_config").await
}

async fn infrastructure(
    State(state): State<Arc<AppState>>,
    params: Params,
    request: Request,
) -> Response {
    query_call(&state, request, params, "get_infrastructure_state").await
}

async fn drift(State(state): State<Arc<AppState>>, params: Params, request: Request) -> Response {
    query_call(&state, request, params, "get_config_drift").await
}

/// The caller, if it may administer; else the refusal (audited, as tool refusals are).
fn administrator(state: &AppState, request: &Request, what: &str) -> Result<Caller, Box<Response>> {
    let caller = caller(request.extensions())?;
    if caller.role.may_administer() {
        return Ok(caller);
    }
    state.audit(
        AuditEvent::new("access_denied")
            .with("token_id", caller.token_id.clone())
            .with("role", caller.role.as_str())
            .with("route", what),
    );
    Err(Box::new(refusal(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "role {} may not {what}: it needs an admin token",
            caller.role
        ),
    )))
}

/// A store failure behind an admin route: the caller's mistake named, ours logged.
fn store_failure(error: haivemind_store::StoreError) -> Response {
    use haivemind_store::StoreError;
    match error {
        StoreError::Invalid(input) => invalid(&input.field, &input.rule),
        StoreError::RecordNotFound { .. } | StoreError::MemoryNotFound { .. } => {
            refusal(StatusCode::NOT_FOUND, "not_found", error.to_string())
        }
        StoreError::Unavailable(_) => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is unavailable; try again shortly",
        ),
        other => {
            tracing::error!(error = %other, "an admin route failed");
            refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the server failed; see its log",
            )
        }
    }
}

/// Runs a blocking engine call off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, haivemind_store::StoreError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(store_failure(error)),
        Err(error) => {
            tracing::error!(%error, "an admin route's thread failed");
            Err(refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the server failed; see its log",
            ))
        }
    }
}

/// `GET /api/v1/tokens` (admin): every token, never a secret.
async fn list_tokens(State(state): State<Arc<AppState>>, request: Request) -> Response {
    if let Err(response) = administrator(&state, &request, "list tokens") {
        return *response;
    }
    let store = Arc::clone(&state.store);
    match blocking(move || store.list_tokens()).await {
        Ok(tokens) => axum::Json(json!({
            "tokens": tokens.iter().map(token_json).collect::<Vec<_>>(),
            "total": tokens.len(),
        }))
        .into_response(),
        Err(response) => response,
    }
}

/// `POST /api/v1/tokens {role, name?}` (admin): a new token; its secret is in this answer
/// and nowhere else, ever.
async fn create_token(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let admin = match administrator(&state, &request, "create tokens") {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    let body = match crate::guard::read_body(request.into_body(), usize::MAX).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let arguments = match object_of(&body) {
        Ok(arguments) => arguments,
        Err(response) => return *response,
    };
    if let Some(unknown) = arguments
        .keys()
        .find(|k| !["role", "name", "tool_profile"].contains(&k.as_str()))
    {
        return invalid(
            unknown,
            "is not a field of a token; expected role, name and tool_profile",
        );
    }
    let Some(role) = arguments.get("role").and_then(Value::as_str) else {
        return invalid("role", "is required: admin, agent or readonly");
    };
    let role = match Role::parse("role", role) {
        Ok(role) => role,
        Err(error) => return invalid(&error.field, &error.rule),
    };
    let name = match arguments.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.clone()),
        Some(_) => return invalid("name", "must be a string"),
    };
    let profile = match arguments.get("tool_profile") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => {
            match haivemind_core::config::ToolProfile::parse("tool_profile", text) {
                Ok(profile) => Some(profile),
                Err(error) => return invalid(&error.field, &error.rule),
            }
        }
        Some(_) => return invalid("tool_profile", "must be core, team, devops or all"),
    };
    let store = Arc::clone(&state.store);
    let made =
        match blocking(move || store.create_token_with_profile(name.as_deref(), role, profile))
            .await
        {
            Ok(made) => made,
            Err(response) => return response,
        };
    state.audit(
        AuditEvent::new("token_created")
            .with("token_id", made.record.id.clone())
            .with("token_name", made.record.name.clone())
            .with("role", made.record.role.as_str())
            .with("by", admin.token_id),
    );
    let mut answer = token_json(&made.record);
    answer["token"] = json!(made.secret);
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

/// `DELETE /api/v1/tokens/{id}` (admin): servers refuse the token within a second.
async fn revoke_token(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let admin = match administrator(&state, &request, "revoke tokens") {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    let store = Arc::clone(&state.store);
    let revoked = match blocking(move || store.revoke_token(&id)).await {
        Ok(revoked) => revoked,
        Err(response) => return response,
    };
    state.audit(
        AuditEvent::new("token_revoked")
            .with("token_id", revoked.id.clone())
            .with("token_name", revoked.name.clone())
            .with("role", revoked.role.as_str())
            .with("by", admin.token_id),
    );
    axum::Json(token_json(&revoked)).into_response()
}

/// The most audit lines one answer carries, and the most of the log's end read for them.
const MAX_AUDIT_LINES: usize = 500;
const AUDIT_TAIL_BYTES: u64 = 512 * 1024;

/// `GET /api/v1/audit?limit=N` (admin): the newest lines of the audit log, newest first.
async fn audit_tail(
    State(state): State<Arc<AppState>>,
    Query(params): Params,
    request: Request,
) -> Response {
    if let Err(response) = administrator(&state, &request, "read the audit log") {
        return *response;
    }
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if (1..=MAX_AUDIT_LINES).contains(&n) => n,
        Some(_) => return invalid("limit", "must be 1-500"),
    };
    let Some(audit) = &state.audit else {
        return axum::Json(
            json!({"lines": [], "total": 0, "note": "the audit log is off (logging.audit_log)"}),
        )
        .into_response();
    };
    let path = audit.path().to_path_buf();
    let read = tokio::task::spawn_blocking(move || tail(&path, limit)).await;
    match read {
        Ok(Ok(lines)) => {
            let total = lines.len();
            axum::Json(json!({"lines": lines, "total": total})).into_response()
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "could not read the audit log");
            refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "could not read the audit log; see the server's log",
            )
        }
        Err(_) => refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed; see its log",
        ),
    }
}

/// The last `limit` JSON lines of `path`, newest first, reading at most its last
/// [`AUDIT_TAIL_BYTES`].
fn tail(path: &std::path::Path, limit: usize) -> std::io::Result<Vec<Value>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let length = file.metadata()?.len();
    let start = length.saturating_sub(AUDIT_TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(AUDIT_TAIL_BYTES).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        // The first line read may be cut.
        lines.remove(0);
    }
    Ok(lines
        .iter()
        .rev()
        .filter_map(|line| serde_json::from_str(line).ok())
        .take(limit)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_openapi_document() {
        let document = include_str!("../../../docs/openapi.yaml");
        let source = include_str!("rest.rs");
        let mut routes: Vec<&str> = source
            .split(".route(\n            \"")
            .skip(1)
            .chain(source.split(".route(\"").skip(1))
            .filter_map(|rest| rest.split('"').next())
            .filter(|path| path.starts_with("/api/v1/"))
            .collect();
        routes.push("/api/v1/events");
        assert!(routes.len() > 20, "{routes:?}");
        for route in routes {
            assert!(
                document.contains(&format!("\n  {route}:\n")),
                "docs/openapi.yaml does not describe {route}"
            );
        }
    }

    #[test]
    fn query_strings_become_typed_arguments() {
        let params: HashMap<String, String> = [
            ("limit", "5"),
            ("semantic", "false"),
            ("tags", "a, b,,c"),
            ("category", "runbooks"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let arguments = arguments_of(params).unwrap();
        assert_eq!(arguments["limit"], json!(5));
        assert_eq!(arguments["semantic"], json!(false));
        assert_eq!(arguments["tags"], json!(["a", "b", "c"]));
        assert_eq!(arguments["category"], json!("runbooks"));
    }

    #[test]
    fn a_bad_number_or_switch_is_refused_naming_the_parameter() {
        for (name, text) in [("limit", "ten"), ("semantic", "maybe")] {
            let params = HashMap::from([(name.to_string(), text.to_string())]);
            let response = arguments_of(params).unwrap_err();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name}");
        }
    }

    #[test]
    fn the_audit_tail_is_newest_first_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let lines: String = (0..10).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        std::fs::write(&path, format!("not json\n{lines}")).unwrap();
        let tail = tail(&path, 3).unwrap();
        assert_eq!(
            tail,
            vec![json!({"n": 9}), json!({"n": 8}), json!({"n": 7})]
        );
        assert!(tail_of_missing_file_is_empty(dir.path()));
    }

    fn tail_of_missing_file_is_empty(dir: &std::path::Path) -> bool {
        tail(&dir.join("absent.log"), 3).unwrap().is_empty()
    }
}
