//! The sync port's JSON routes: `GET /api/status`, `POST /api/sync` (the replication
//! exchange, which other nodes' sync services call) and `POST /api/trigger-sync`.
//!
//! One exchange: the caller posts what it has seen (its version vector), the operations it
//! sends, and a page size; the server applies those operations, then answers with the
//! operations the caller lacks (one page, at most [`MAX_PAGE_BYTES`] of JSON), whether more
//! remain, and its own version vector, which tells the caller what to send next.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use haivemind_core::VERSION;
use haivemind_core::audit::AuditEvent;
use haivemind_core::security::Role;
use haivemind_store::{ApplyOutcome, OpLogEntry, VersionVector};
use serde_json::{Value, json};

use crate::AppState;
use crate::guard::{caller_of, read_body, refusal};

/// The most operations one answer carries.
const MAX_PAGE_OPS: usize = 1_000;
/// Roughly the most JSON one answer carries; a page stops at the operation that passes it.
const MAX_PAGE_BYTES: usize = 2 << 20;

/// `GET /api/status`.
pub(crate) async fn status(State(state): State<Arc<AppState>>) -> Response {
    let store = Arc::clone(&state.store);
    let peers = peer_list(&state.peer_states);
    let websockets = state.events.subscribers();
    let answer =
        tokio::task::spawn_blocking(move || -> Result<Value, haivemind_store::StoreError> {
            let stats = store.stats()?;
            Ok(json!({
                "machine_id": store.machine_id(),
                "version": VERSION,
                "memory_count": stats.live,
                "deleted_count": stats.deleted,
                "state_digest": store.state_digest()?,
                "vector_clock": store.version_vector()?,
                "op_log_entries": stats.op_log_entries,
                "tombstones": stats.tombstones,
                "peers": peers,
                "connected_websockets": websockets,
            }))
        })
        .await;
    match answer {
        Ok(Ok(value)) => axum::Json(value).into_response(),
        Ok(Err(error)) => internal(error),
        Err(error) => internal(error),
    }
}

/// How replication with each peer is going, as `/api/status` and `get_machine_context`
/// show it.
pub(crate) fn peer_list(peer_states: &haivemind_sync::PeerStates) -> Vec<Value> {
    let now = haivemind_core::time_format::now_ms();
    peer_states
        .lock()
        .map(|peers| {
            peers
                .iter()
                .map(|(machine_id, p)| {
                    json!({
                        "machine_id": machine_id,
                        "last_sync": p.last_sync_ms.map(haivemind_core::time_format::ms_to_rfc3339),
                        "lag_seconds": p.last_sync_ms.map(|at| (now - at) as f64 / 1000.0),
                        "last_error": p.last_error,
                        "received": p.received,
                        "sent": p.sent,
                        "rounds": p.rounds,
                        "failures": p.failures,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `POST /api/trigger-sync`: a round with every peer now; answers with each peer's result.
/// Agents and admins may ask (the `hv-sync force` command does); readonly tokens may not.
pub(crate) async fn trigger(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let Some(caller) = caller_of(request.extensions()) else {
        return refusal(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "not authenticated",
        );
    };
    if caller.role == Role::Readonly {
        return refusal(
            StatusCode::FORBIDDEN,
            "forbidden",
            "role readonly may not trigger a sync",
        );
    }
    let Some(service) = state.sync_service.get() else {
        return axum::Json(json!({
            "machine_id": state.store.machine_id(),
            "peers": [],
            "note": "no peers to sync with: list them in sync.discovery.machines (with security.api_token) or run Tailscale",
        }))
        .into_response();
    };
    let outcomes = service.round(true).await;
    let peers: Vec<Value> = outcomes
        .into_iter()
        .map(|outcome| match outcome.result {
            Ok((received, sent)) => json!({
                "machine_id": outcome.machine_id,
                "ok": true,
                "received": received,
                "sent": sent,
            }),
            Err(error) => json!({
                "machine_id": outcome.machine_id,
                "ok": false,
                "error": error,
            }),
        })
        .collect();
    axum::Json(json!({"machine_id": state.store.machine_id(), "peers": peers})).into_response()
}

fn internal(error: impl std::fmt::Display + 'static) -> Response {
    if let Some(haivemind_store::StoreError::Unavailable(reason)) =
        (&error as &dyn std::any::Any).downcast_ref::<haivemind_store::StoreError>()
    {
        tracing::warn!(%reason, "sync route: the database is unavailable");
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is unavailable; try again shortly",
        );
    }
    tracing::error!(%error, "sync route failed");
    refusal(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the server failed; see its log",
    )
}

/// `POST /api/sync`.
pub(crate) async fn exchange(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let Some(caller) = caller_of(request.extensions()) else {
        return refusal(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "not authenticated",
        );
    };
    if caller.role != Role::Admin {
        return refusal(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "role {} may not replicate: peers use the fleet token (security.api_token) or an admin token",
                caller.role
            ),
        );
    }
    let bytes = match read_body(request.into_body(), state.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(error) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "invalid_argument",
                format!("the body must be JSON: {error}"),
            );
        }
    };
    let parsed = parse_exchange(&body);
    let (machine_id, seen, ops, limit) = match parsed {
        Ok(parts) => parts,
        Err(error) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "invalid_argument",
                error.to_string(),
            );
        }
    };
    if let Some(listed) = &state.listed_machines
        && !listed.iter().any(|m| m == &machine_id)
    {
        state.audit(
            AuditEvent::new("sync_denied")
                .with("machine_id", machine_id.clone())
                .with("token_id", caller.token_id.clone()),
        );
        return refusal(
            StatusCode::FORBIDDEN,
            "machine_not_listed",
            format!(
                "machine {machine_id:?} is not in sync.discovery.machines (sync.security.whitelist_only)"
            ),
        );
    }
    let store = Arc::clone(&state.store);
    let received = ops.len();
    let answer = tokio::task::spawn_blocking(
        move || -> Result<(Value, ApplyOutcome), haivemind_store::StoreError> {
            let applied = store.apply_remote(&ops)?;
            let page = store.ops_after(&seen, limit + 1)?;
            let mut more = page.len() > limit;
            let mut out = Vec::new();
            let mut bytes = 0;
            for op in page.into_iter().take(limit) {
                let wire = op.to_wire();
                bytes += wire.to_string().len();
                out.push(wire);
                if bytes > MAX_PAGE_BYTES {
                    more = true;
                    break;
                }
            }
            let refusals: Vec<Value> = applied
                .refusals
                .iter()
                .map(|r| {
                    json!({"op_id": r.op_id, "origin": r.origin, "field": r.field, "reason": r.reason})
                })
                .collect();
            let value = json!({
                "machine_id": store.machine_id(),
                "seen": store.version_vector()?,
                "ops": out,
                "more": more,
                "applied": {
                    "received": applied.received,
                    "logged": applied.logged,
                    "changed": applied.changed,
                    "already_known": applied.already_known,
                    "refused": applied.refused,
                    "refusals": refusals,
                },
            });
            Ok((value, applied))
        },
    )
    .await;
    let (value, applied) = match answer {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => return internal(error),
        Err(error) => return internal(error),
    };
    // Always audited, whatever logging.log_sync_events says: a refused operation is a
    // peer breaking the rules, by a bug or on purpose.
    if let Some(event) = applied.refusal_event(&machine_id, "exchange") {
        state.audit(event.with("token_id", caller.token_id.clone()));
    }
    if let Some(summary) = applied.refusal_summary() {
        tracing::warn!(peer = %machine_id, "refused operations from a peer: {summary}");
    }
    if state.audit_sync_events {
        state.audit(
            AuditEvent::new("sync_exchange")
                .with("peer_machine_id", machine_id)
                .with("token_id", caller.token_id)
                .with("received", received)
                .with("sent", value["ops"].as_array().map_or(0, Vec::len)),
        );
    }
    axum::Json(value).into_response()
}

type Exchange = (String, VersionVector, Vec<OpLogEntry>, usize);

fn parse_exchange(body: &Value) -> Result<Exchange, haivemind_core::InvalidInput> {
    use haivemind_core::InvalidInput;
    let machine_id = body
        .get("machine_id")
        .and_then(Value::as_str)
        .filter(|m| !m.trim().is_empty() && m.len() <= 128)
        .ok_or_else(|| {
            InvalidInput::new(
                "machine_id",
                "is required: the calling machine's id (1-128 bytes)",
            )
        })?
        .to_string();
    let seen: VersionVector = match body.get("seen") {
        None | Some(Value::Null) => VersionVector::new(),
        Some(value) => serde_json::from_value(value.clone()).map_err(|_| {
            InvalidInput::new(
                "seen",
                "must be an object of machine id to the newest stamp seen from it",
            )
        })?,
    };
    let ops = match body.get("ops") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| OpLogEntry::from_wire(&format!("ops[{i}]"), item))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(InvalidInput::new("ops", "must be an array of operations")),
    };
    let limit = match body.get("limit") {
        None | Some(Value::Null) => 500,
        Some(value) => value
            .as_u64()
            .filter(|l| (1..=MAX_PAGE_OPS as u64).contains(l))
            .ok_or_else(|| {
                InvalidInput::new("limit", format!("must be between 1 and {MAX_PAGE_OPS}"))
            })? as usize,
    };
    Ok((machine_id, seen, ops, limit))
}
