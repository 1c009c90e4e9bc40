//! The checks every request passes before it reaches a handler, outermost first: the peer's
//! network, the body size, Host and Origin (against DNS rebinding), the bearer token, the
//! token's rate, and the time a handler may take. Each refusal is a JSON error with the
//! status the HTTP and MCP specs prescribe, and each is audited.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use haivemind_core::audit::AuditEvent;
use haivemind_core::security::Caller;
use serde_json::json;

use crate::AppState;

/// A JSON error response: `{"error": {"code", "message"}}`.
pub(crate) fn refusal(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "error": { "code": code, "message": message.into() } });
    (status, axum::Json(body)).into_response()
}

/// A request path as the audit log keeps it: at most 128 bytes, so a client cannot make
/// its refusals fill the log faster.
pub(crate) fn short_path(path: &str) -> String {
    let mut end = path.len().min(128);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    path[..end].to_string()
}

fn peer(request: &Request) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

/// Refuses peers outside `security.allowed_networks` with 403.
pub(crate) async fn allowed_network(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if !state.networks.is_empty() {
        let address = peer(&request).map(|p| p.ip());
        let allowed = address.is_some_and(|ip| state.networks.iter().any(|n| n.contains(ip)));
        if !allowed {
            state.audit_refusal(
                address.map(|a| a.to_string()),
                AuditEvent::new("network_denied")
                    .with("peer", address.map(|a| a.to_string()))
                    .with("path", short_path(request.uri().path())),
            );
            return refusal(
                StatusCode::FORBIDDEN,
                "network_not_allowed",
                "this address is not in security.allowed_networks",
            );
        }
    }
    next.run(request).await
}

/// Closes the connection after a refusal of a request whose body was sent: the guards
/// refuse before reading bodies, so the connection holds unread bytes and cannot serve
/// another request. `Connection: close` tells the client so, instead of letting it send
/// its next request into a connection that is about to close.
pub(crate) async fn close_after_refused_body(request: Request, next: Next) -> Response {
    let has_body = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() != "0")
        || request.headers().contains_key(header::TRANSFER_ENCODING);
    let mut response = next.run(request).await;
    if has_body && (response.status().is_client_error() || response.status().is_server_error()) {
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    response
}

/// Refuses a declared body larger than `server.max_body_bytes` with 413 before reading it.
/// Bodies without a length are cut at the same size while they are read.
pub(crate) async fn body_size(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > state.max_body_bytes as u64) {
        state.audit_refusal(
            peer(&request).map(|p| p.ip().to_string()),
            AuditEvent::new("request_denied")
                .with("reason", "body_too_large")
                .with("peer", peer(&request).map(|p| p.ip().to_string()))
                .with("path", short_path(request.uri().path())),
        );
        return too_large(state.max_body_bytes);
    }
    next.run(request).await
}

pub(crate) fn too_large(limit: usize) -> Response {
    refusal(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request bodies may be at most {limit} bytes (server.max_body_bytes)"),
    )
}

/// Refuses a `Host` that is not ours and an `Origin` that is not listed, with 403: a web
/// page on another site must not be able to drive a server on this machine or network.
pub(crate) async fn host_and_origin(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    if let Some(problem) = state.origin_policy.check(headers) {
        state.audit_refusal(
            peer(&request).map(|p| p.ip().to_string()),
            AuditEvent::new("request_denied")
                .with("reason", problem.0)
                .with("peer", peer(&request).map(|p| p.ip().to_string()))
                .with("path", short_path(request.uri().path())),
        );
        return refusal(StatusCode::FORBIDDEN, problem.0, problem.1);
    }
    next.run(request).await
}

/// Accepted `Host` and `Origin` values.
pub(crate) struct OriginPolicy {
    /// Host names accepted besides IP literals.
    pub hosts: Vec<String>,
    /// Listed origins; any other `Origin` is refused.
    pub origins: Vec<String>,
}

impl OriginPolicy {
    fn check(&self, headers: &HeaderMap) -> Option<(&'static str, String)> {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !self.host_allowed(host) {
            return Some((
                "host_not_allowed",
                format!(
                    "Host {host:?} is not a name of this server; add it to security.allowed_hosts"
                ),
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            if !same_origin(origin, host) && !self.origin_allowed(origin) {
                return Some((
                    "origin_not_allowed",
                    format!(
                        "Origin {origin:?} may not call this server; add it to security.allowed_origins"
                    ),
                ));
            }
        }
        None
    }

    /// An IP literal can never be a rebinding attack (the browser's origin is that very
    /// address), so any is accepted; names must be listed.
    fn host_allowed(&self, host: &str) -> bool {
        let name = host_without_port(host);
        if name.is_empty() {
            return false;
        }
        if name.parse::<IpAddr>().is_ok() {
            return true;
        }
        self.hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(host) || allowed.eq_ignore_ascii_case(name))
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        let origin = without_default_port(origin);
        self.origins.iter().any(|allowed| {
            let allowed = without_default_port(allowed);
            let allowed = allowed.as_str();
            let origin = origin.as_str();
            if allowed == origin {
                return true;
            }
            if let Some(prefix) = allowed.strip_suffix(":*") {
                // `http://localhost:*` matches `http://localhost` and `http://localhost:3000`.
                return origin == prefix
                    || origin
                        .strip_prefix(prefix)
                        .and_then(|rest| rest.strip_prefix(':'))
                        .is_some_and(|port| port.chars().all(|c| c.is_ascii_digit()));
            }
            // An entry without a port matches that scheme and host on any port.
            !allowed[allowed.find("://").map_or(0, |i| i + 3)..].contains(':')
                && origin
                    .strip_prefix(allowed)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
        })
    }
}

/// Whether `origin` is the page this server itself served: its host and port are the
/// request's `Host`, which the check before has already found to be a name of this server
/// (so a rebound name never gets here). The dashboard's own calls carry such an Origin.
fn same_origin(origin: &str, host: &str) -> bool {
    let origin = without_default_port(origin);
    ["http://", "https://"].iter().any(|scheme| {
        origin.strip_prefix(scheme).is_some_and(|authority| {
            authority.eq_ignore_ascii_case(host)
                || without_default_port(&format!("{scheme}{host}"))
                    .strip_prefix(scheme)
                    .is_some_and(|bare| authority.eq_ignore_ascii_case(bare))
        })
    })
}

/// `https://a.example:443` is `https://a.example`: browsers leave the default port out.
fn without_default_port(origin: &str) -> String {
    for (scheme, port) in [("https://", ":443"), ("http://", ":80")] {
        if origin.starts_with(scheme)
            && let Some(bare) = origin.strip_suffix(port)
        {
            return bare.to_string();
        }
    }
    origin.to_string()
}

fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// Demands a valid bearer token (401 with `WWW-Authenticate: Bearer` otherwise), applies
/// the token's rate limit (429 with `Retry-After`), and hands the [`Caller`] to handlers.
pub(crate) async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let address = peer(&request).map(|p| p.ip().to_string());
    let path = short_path(request.uri().path());
    let caller = match state.auth.authenticate(
        request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
        request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok()),
    ) {
        Ok(caller) => caller,
        Err(failure) => {
            // Guessing tokens costs a guesser its address's budget, and the audit log at
            // most that many lines a minute per address, so a flood cannot rotate the
            // evidence away.
            if let Some(wait) = address
                .as_deref()
                .and_then(|ip| state.failure_limiter.check(ip).err())
            {
                return too_many(wait, "too many failed authentications from this address");
            }
            if state.audit_auth_failures {
                state.audit(
                    AuditEvent::new("auth_failed")
                        .with("reason", failure.as_str())
                        .with("peer", address)
                        .with("path", path.clone()),
                );
            }
            let mut response = refusal(
                StatusCode::UNAUTHORIZED,
                failure.as_str(),
                failure.message(),
            );
            // The challenge names where an MCP client discovers how to obtain a token
            // (RFC 9728), so OAuth clients can sign in without a token given by hand.
            let metadata = crate::oauth::resource_metadata_url(&state, request.headers(), &path);
            let error = match failure {
                crate::auth::AuthFailure::Missing => String::new(),
                _ => ", error=\"invalid_token\"".to_string(),
            };
            let challenge =
                format!("Bearer realm=\"haivemind\", resource_metadata=\"{metadata}\"{error}");
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
            return response;
        }
    };
    let limiter = state.limiter.read().ok().and_then(|l| l.clone());
    if let Some(limiter) = limiter
        && let Err(wait) = limiter.check(&caller.token_id)
    {
        state.audit_refusal(
            address.clone(),
            AuditEvent::new("rate_limited")
                .with("token_id", caller.token_id.clone())
                .with("token_name", caller.name.clone())
                .with("peer", address)
                .with("path", path),
        );
        return too_many(
            wait,
            &format!(
                "token {} made more requests than security.rate_limit allows",
                caller.name
            ),
        );
    }
    state.note_token_use(&caller, address.as_deref(), &path);
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// 429 with `Retry-After` in whole seconds (at least 1).
fn too_many(wait: Duration, why: &str) -> Response {
    let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let mut response = refusal(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("{why}; retry in {seconds} s"),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// Answers 503 when a handler takes longer than `server.request_timeout_secs` to start
/// its answer. A stream that has started (SSE) is not cut.
pub(crate) async fn time_limit(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let limit: Duration = state.request_timeout;
    let path = short_path(request.uri().path());
    let caller = caller_of(request.extensions());
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            state.audit(
                AuditEvent::new("request_timed_out")
                    .with("path", path)
                    .with("token_id", caller.map(|c| c.token_id)),
            );
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the request took longer than {} s (server.request_timeout_secs)",
                    limit.as_secs()
                ),
            )
        }
    }
}

/// The caller a guarded handler runs for.
pub(crate) fn caller_of(request_extensions: &axum::http::Extensions) -> Option<Caller> {
    request_extensions.get::<Caller>().cloned()
}

/// Reads at most `limit` bytes of `body`.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, Response> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(limit))
}

/// While the hub's database cannot be reached, every request but `/health` is answered
/// 503 with the reason, so a load balancer and a client both know to try again (and no
/// write is acknowledged that the database did not take).
pub(crate) async fn storage_available(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    match state.storage_down() {
        Some(reason) => {
            let mut response = refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                format!("the database is unavailable ({reason}); try again shortly"),
            );
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("2"),
            );
            response
        }
        None => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OriginPolicy {
        OriginPolicy {
            hosts: vec!["localhost".into(), "hive.example.ts.net".into()],
            origins: vec![
                "http://localhost:*".into(),
                "https://app.example.com".into(),
            ],
        }
    }

    #[test]
    fn hosts_are_ip_literals_or_listed_names() {
        let policy = policy();
        for ok in [
            "127.0.0.1:8900",
            "[::1]:8900",
            "100.64.1.2",
            "localhost:8900",
            "HIVE.example.ts.net",
        ] {
            assert!(policy.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example.com",
            "evil.example.com:8900",
            "",
            "localhost.evil.com",
        ] {
            assert!(!policy.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn origins_match_scheme_host_and_port_rules() {
        let policy = policy();
        for ok in [
            "http://localhost",
            "http://localhost:3000",
            "https://app.example.com",
            "https://app.example.com:8443",
        ] {
            assert!(policy.origin_allowed(ok), "{ok}");
        }
        for bad in [
            "https://localhost:3000",
            "http://localhost.evil.com",
            "https://app.example.com.evil.com",
            "null",
        ] {
            assert!(!policy.origin_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn the_servers_own_origin_is_accepted_and_other_ports_or_hosts_are_not() {
        let policy = OriginPolicy {
            hosts: vec!["localhost".into()],
            origins: vec![],
        };
        let check = |host: &str, origin: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
            policy.check(&headers).map(|(code, _)| code)
        };
        assert_eq!(check("127.0.0.1:8900", "http://127.0.0.1:8900"), None);
        assert_eq!(check("localhost:8900", "http://localhost:8900"), None);
        assert_eq!(check("localhost:443", "https://localhost"), None);
        assert_eq!(check("localhost", "http://localhost:80"), None);
        assert_eq!(
            check("127.0.0.1:8900", "http://127.0.0.1:9999"),
            Some("origin_not_allowed")
        );
        assert_eq!(
            check("127.0.0.1:8900", "http://evil.example:8900"),
            Some("origin_not_allowed")
        );
        // A rebound name fails on Host before its Origin (the same name) is looked at.
        assert_eq!(
            check("evil.example:8900", "http://evil.example:8900"),
            Some("host_not_allowed")
        );
    }
}
