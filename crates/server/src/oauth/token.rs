//! `POST /token`: codes (with their PKCE verifier) and refresh tokens for access tokens.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use haivemind_core::audit::AuditEvent;
use haivemind_core::error::excerpt;
use serde_json::json;

use super::authorize::check_resource;
use super::*;
use crate::AppState;

/// An OAuth token-endpoint error (RFC 6749 §5.2).
pub(super) fn token_error(
    status: StatusCode,
    error: &str,
    description: impl Into<String>,
) -> Response {
    json_response(
        status,
        json!({"error": error, "error_description": description.into()}),
    )
}

pub(super) async fn token(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let peer = peer_of(&request);
    let headers = request.headers().clone();
    let body = match crate::guard::read_body(request.into_body(), MAX_FORM_BYTES).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let params: Vec<(String, String)> = form_urlencoded::parse(&body)
        .into_owned()
        .take(32)
        .collect();
    let get = |name: &str| param(&params, name).map(str::to_string);
    let Some(client_id) = get("client_id") else {
        return token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client_id: required (public clients name themselves)",
        );
    };
    let outcome = match get("grant_type").as_deref() {
        Some("authorization_code") => {
            exchange_code(&state, &headers, &client_id, &get).map_err(|r| *r)
        }
        Some("refresh_token") => refresh(&state, &headers, &client_id, &get).map_err(|r| *r),
        Some(other) => Err(token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!(
                "grant_type {:?}: use authorization_code or refresh_token",
                excerpt(other)
            ),
        )),
        None => Err(token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type: required",
        )),
    };
    match outcome {
        Ok((issued, grant_type)) => {
            let origin = issued.record.oauth.clone();
            state.audit(
                AuditEvent::new("oauth_token_issued")
                    .with("grant_type", grant_type)
                    .with("client_id", client_id)
                    .with("token_id", issued.record.id.clone())
                    .with("role", issued.record.role.as_str())
                    .with("approved_by", origin.as_ref().map(|o| o.parent_id.clone()))
                    .with("grant_id", origin.map(|o| o.grant_id))
                    .with("peer", peer),
            );
            json_response(
                StatusCode::OK,
                json!({
                    "access_token": issued.access_token,
                    "token_type": "Bearer",
                    "expires_in": issued.expires_in_secs,
                    "refresh_token": issued.refresh_token,
                    "scope": issued.record.role.as_str(),
                }),
            )
        }
        Err(response) => {
            if response.status() == StatusCode::BAD_REQUEST
                || response.status() == StatusCode::UNAUTHORIZED
            {
                state.audit_refusal(
                    peer.clone(),
                    AuditEvent::new("oauth_token_refused")
                        .with("client_id", excerpt(&client_id))
                        .with("peer", peer),
                );
            }
            response
        }
    }
}

pub(super) type Issued = (haivemind_store::IssuedGrant, &'static str);

pub(super) fn exchange_code(
    state: &AppState,
    headers: &HeaderMap,
    client_id: &str,
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Issued, Box<Response>> {
    let invalid = |why: &str| refused(StatusCode::BAD_REQUEST, "invalid_grant", why);
    let code = get("code")
        .ok_or_else(|| refused(StatusCode::BAD_REQUEST, "invalid_request", "code: required"))?;
    let verifier = get("code_verifier").ok_or_else(|| {
        refused(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "code_verifier: required (PKCE)",
        )
    })?;
    // Used once: the code is gone whatever happens next.
    let pending = state
        .oauth
        .codes
        .lock()
        .ok()
        .and_then(|mut codes| codes.remove(&code_key(&code)))
        .filter(|p| p.issued.elapsed() < CODE_TTL)
        .ok_or_else(|| invalid("code: unknown, expired or already used"))?;
    if pending.client_id != client_id {
        return Err(invalid("code: issued to another client"));
    }
    if get("redirect_uri").as_deref() != Some(pending.redirect_uri.as_str()) {
        return Err(invalid(
            "redirect_uri: must be the one the code was issued for",
        ));
    }
    let valid_verifier = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    if !valid_verifier || computed != pending.challenge {
        return Err(invalid("code_verifier: does not match the code_challenge"));
    }
    if let Some(resource) = get("resource") {
        let base = base_url(state, headers);
        if check_resource(state, &base, &resource).as_deref() != Ok(pending.audience.as_str()) {
            return Err(refused(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "resource: must be the one approved",
            ));
        }
    }
    // The approver may have been revoked in the minute since.
    if blocking_here(|| !approver_is_live(state, &pending.approver)) {
        return Err(invalid("the token that approved this code is revoked"));
    }
    let client_name = blocking_here(|| state.store.oauth_client(client_id))
        .ok()
        .flatten()
        .map_or_else(|| client_id.to_string(), |c| c.name);
    let request = GrantRequest {
        client_id: client_id.to_string(),
        client_name,
        parent_id: pending.approver.token_id.clone(),
        role: pending.role,
        audience: pending.audience,
        tool_profile: pending.approver.tool_profile,
        access_ttl_ms: ACCESS_TTL_MS,
        refresh_ttl_ms: REFRESH_TTL_MS,
    };
    blocking_here(|| state.store.issue_oauth_grant(&request))
        .map(|issued| (issued, "authorization_code"))
        .map_err(server_error)
}

pub(super) fn approver_is_live(state: &AppState, approver: &Caller) -> bool {
    if state.auth.is_configured(&approver.token_id) {
        return true;
    }
    state
        .store
        .live_token_digests()
        .map(|tokens| tokens.iter().any(|(t, _)| t.id == approver.token_id))
        .unwrap_or(false)
}

pub(super) fn refresh(
    state: &AppState,
    headers: &HeaderMap,
    client_id: &str,
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Issued, Box<Response>> {
    let secret = get("refresh_token").ok_or_else(|| {
        refused(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "refresh_token: required",
        )
    })?;
    let resource = match get("resource") {
        None => None,
        Some(resource) => {
            let base = base_url(state, headers);
            Some(check_resource(state, &base, &resource).map_err(|rule| {
                refused(
                    StatusCode::BAD_REQUEST,
                    "invalid_target",
                    format!("resource: {rule}"),
                )
            })?)
        }
    };
    let outcome = blocking_here(|| {
        state.store.refresh_oauth_grant(
            &secret,
            client_id,
            resource.as_deref(),
            |id| state.auth.is_configured(id),
            ACCESS_TTL_MS,
        )
    })
    .map_err(server_error)?;
    match outcome {
        Refreshed::Issued(issued) => Ok((*issued, "refresh_token")),
        Refreshed::Refused(reason) => {
            state.audit(
                AuditEvent::new("oauth_refresh_refused")
                    .with("reason", reason.as_str())
                    .with("client_id", excerpt(client_id)),
            );
            Err(refused(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                format!("refresh_token: {}", reason.as_str().replace('_', " ")),
            ))
        }
    }
}

pub(super) fn server_error(error: haivemind_store::StoreError) -> Box<Response> {
    tracing::error!(%error, "OAuth token endpoint failed");
    refused(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "the server failed; see its log",
    )
}

/// A token-endpoint error, boxed for `Result`s.
fn refused(status: StatusCode, error: &str, description: impl Into<String>) -> Box<Response> {
    Box::new(token_error(status, error, description))
}
