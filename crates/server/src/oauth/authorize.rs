//! `GET` and `POST /authorize`: the authorization request's checks and the consent page.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use haivemind_core::audit::AuditEvent;
use haivemind_core::error::excerpt;

use super::register::redirect_matches;
use super::*;
use crate::AppState;

/// `state` is echoed to the client, so its size is bounded.
pub(super) const MAX_STATE_BYTES: usize = 512;

/// An authorization request, checked.
pub(super) struct AuthorizationRequest {
    client: OAuthClient,
    redirect_uri: String,
    state: Option<String>,
    challenge: String,
    audience: String,
    /// The role asked for (`scope`), if any.
    scope_role: Option<Role>,
    /// Every parameter as received, for the consent form's hidden inputs.
    params: Vec<(String, String)>,
}

/// Why an authorization request fails: before the redirect URI is trusted the person sees
/// the error; after, the client is told by redirect (RFC 6749 §4.1.2.1).
pub(super) enum AuthorizationError {
    Page(StatusCode, String),
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
}

pub(super) fn check_authorization(
    state: &AppState,
    headers: &HeaderMap,
    params: Vec<(String, String)>,
) -> Result<AuthorizationRequest, AuthorizationError> {
    // A parameter given twice is refused (RFC 6749 §3.1), so no two readers of the
    // request can see different values.
    for (index, (key, _)) in params.iter().enumerate() {
        if params[..index].iter().any(|(k, _)| k == key) {
            return Err(AuthorizationError::Page(
                StatusCode::BAD_REQUEST,
                format!("the parameter {} is given more than once", excerpt(key)),
            ));
        }
    }
    let client_id = param(&params, "client_id").unwrap_or("");
    let client = match blocking_here(|| state.store.oauth_client(client_id)) {
        Ok(Some(client)) => client,
        Ok(None) => {
            return Err(AuthorizationError::Page(
                StatusCode::BAD_REQUEST,
                format!(
                    "client_id {:?} is not a registered client; the application must register first",
                    excerpt(client_id)
                ),
            ));
        }
        Err(error) => {
            tracing::error!(%error, "cannot read an OAuth client");
            return Err(AuthorizationError::Page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server failed; see its log".into(),
            ));
        }
    };
    let redirect_uri = param(&params, "redirect_uri").unwrap_or("");
    if !redirect_matches(&client, redirect_uri) {
        return Err(AuthorizationError::Page(
            StatusCode::BAD_REQUEST,
            "redirect_uri is not one the client registered".into(),
        ));
    }
    let redirect_uri = redirect_uri.to_string();
    let request_state = param(&params, "state").map(str::to_string);
    let fail = |error: &'static str, description: String| AuthorizationError::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: request_state.clone().filter(|s| s.len() <= MAX_STATE_BYTES),
        error,
        description,
    };
    if request_state
        .as_ref()
        .is_some_and(|s| s.len() > MAX_STATE_BYTES)
    {
        return Err(fail(
            "invalid_request",
            format!("state: at most {MAX_STATE_BYTES} bytes"),
        ));
    }
    if param(&params, "response_type") != Some("code") {
        return Err(fail(
            "unsupported_response_type",
            "response_type: must be code".into(),
        ));
    }
    let challenge = param(&params, "code_challenge").unwrap_or("");
    if param(&params, "code_challenge_method") != Some("S256") {
        return Err(fail(
            "invalid_request",
            "code_challenge_method: must be S256 (PKCE is required)".into(),
        ));
    }
    if challenge.len() != 43
        || !challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(fail(
            "invalid_request",
            "code_challenge: must be the 43-character base64url SHA-256 of the verifier".into(),
        ));
    }
    let base = base_url(state, headers);
    let audience = match param(&params, "resource") {
        None => format!("{base}/mcp"),
        Some(resource) => match check_resource(state, &base, resource) {
            Ok(audience) => audience,
            Err(rule) => return Err(fail("invalid_target", format!("resource: {rule}"))),
        },
    };
    let scope_role = match param(&params, "scope").map(str::trim) {
        None | Some("") => None,
        Some(scope) => {
            let mut best: Option<Role> = None;
            for word in scope.split_ascii_whitespace() {
                match Role::parse("scope", word) {
                    Ok(role) => best = best.max(Some(role)),
                    // Scopes this server does not define (offline_access, …) grant nothing.
                    Err(_) => continue,
                }
            }
            if best.is_none() {
                return Err(fail(
                    "invalid_scope",
                    "scope: name a role (readonly, agent or admin)".into(),
                ));
            }
            best
        }
    };
    Ok(AuthorizationRequest {
        client,
        redirect_uri,
        state: request_state,
        challenge: challenge.to_string(),
        audience,
        scope_role,
        params,
    })
}

/// The resource a token may be bound to: this server (as the request named it), its
/// `/mcp` or `/sse`. Returned without a trailing slash.
pub(super) fn check_resource(
    state: &AppState,
    base: &str,
    resource: &str,
) -> Result<String, String> {
    if resource.len() > MAX_URI_BYTES || resource.contains('#') {
        return Err("must be this server's URL without a fragment".into());
    }
    let prefix = format!("{}://", state.oauth.scheme);
    if !resource.starts_with(&prefix) || authority_of(resource) != authority_of(base) {
        return Err(format!("must be a resource of this server ({base}/mcp)"));
    }
    let path_start = resource[prefix.len()..]
        .find('/')
        .map_or(resource.len(), |i| i + prefix.len());
    match resource[path_start..].trim_end_matches('/') {
        "" => Ok(base.to_string()),
        "/mcp" => Ok(format!("{base}/mcp")),
        "/sse" => Ok(format!("{base}/sse")),
        _ => Err(format!("must be {base}, {base}/mcp or {base}/sse")),
    }
}

pub(super) fn error_redirect(error: AuthorizationError) -> Response {
    match error {
        AuthorizationError::Page(status, message) => consent_error_page(status, &message),
        AuthorizationError::Redirect {
            redirect_uri,
            state,
            error,
            description,
        } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("error", error);
            query.append_pair("error_description", &description);
            if let Some(state) = state {
                query.append_pair("state", &state);
            }
            redirect(&redirect_uri, &query.finish())
        }
    }
}

/// 303 to `uri` with `query` appended.
pub(super) fn redirect(uri: &str, query: &str) -> Response {
    let separator = if uri.contains('?') { '&' } else { '?' };
    let location = format!("{uri}{separator}{query}");
    match HeaderValue::from_str(&location) {
        Ok(value) => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            response.headers_mut().insert(header::LOCATION, value);
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(_) => consent_error_page(StatusCode::BAD_REQUEST, "the redirect URI cannot be used"),
    }
}

pub(super) fn query_params(request: &Request) -> Vec<(String, String)> {
    form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .take(64)
        .collect()
}

pub(super) async fn consent(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let params = query_params(&request);
    match check_authorization(&state, request.headers(), params) {
        Ok(checked) => consent_page(&checked, StatusCode::OK, None),
        Err(error) => error_redirect(error),
    }
}

pub(super) async fn approve(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let peer = peer_of(&request);
    let headers = request.headers().clone();
    let body = match crate::guard::read_body(request.into_body(), MAX_FORM_BYTES).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let mut params: Vec<(String, String)> = form_urlencoded::parse(&body)
        .into_owned()
        .take(64)
        .collect();
    let take = |params: &mut Vec<(String, String)>, name: &str| {
        params
            .iter()
            .position(|(k, _)| k == name)
            .map(|i| params.remove(i).1)
    };
    let secret = take(&mut params, "token").unwrap_or_default();
    let decision = take(&mut params, "decision").unwrap_or_default();
    let checked = match check_authorization(&state, &headers, params) {
        Ok(checked) => checked,
        Err(error) => return error_redirect(error),
    };
    if decision == "deny" {
        state.audit(
            AuditEvent::new("oauth_denied")
                .with("client_id", checked.client.id.clone())
                .with("peer", peer),
        );
        return error_redirect(AuthorizationError::Redirect {
            redirect_uri: checked.redirect_uri,
            state: checked.state,
            error: "access_denied",
            description: "the person declined".into(),
        });
    }
    let approver = blocking_here(|| state.auth.approver(&secret));
    let Some(approver) = approver else {
        if let Some(wait) = peer
            .as_deref()
            .and_then(|ip| state.failure_limiter.check(ip).err())
        {
            return consent_error_page(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "too many failed approvals from this address; retry in {} s",
                    wait.as_secs().max(1)
                ),
            );
        }
        state.audit_refusal(
            peer.clone(),
            AuditEvent::new("oauth_approval_refused")
                .with("reason", "unknown_token")
                .with("client_id", checked.client.id.clone())
                .with("peer", peer),
        );
        return consent_page(
            &checked,
            StatusCode::UNAUTHORIZED,
            Some(
                "That token is not valid (unknown, revoked, or itself issued by OAuth). Enter a token made with `haivemind token create`.",
            ),
        );
    };
    let role = checked
        .scope_role
        .map_or(approver.role, |asked| asked.min(approver.role));
    let Some(code) = random_code() else {
        return consent_error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the server failed; see its log",
        );
    };
    if let Ok(mut codes) = state.oauth.codes.lock() {
        codes.retain(|_, pending| pending.issued.elapsed() < CODE_TTL);
        if codes.len() >= MAX_PENDING_CODES
            && let Some(oldest) = codes
                .iter()
                .min_by_key(|(_, p)| p.issued)
                .map(|(k, _)| k.clone())
        {
            codes.remove(&oldest);
        }
        codes.insert(
            code_key(&code),
            PendingCode {
                client_id: checked.client.id.clone(),
                redirect_uri: checked.redirect_uri.clone(),
                challenge: checked.challenge.clone(),
                audience: checked.audience.clone(),
                role,
                approver: approver.clone(),
                issued: Instant::now(),
            },
        );
    }
    state.audit(
        AuditEvent::new("oauth_approved")
            .with("client_id", checked.client.id.clone())
            .with("client_name", excerpt(&checked.client.name))
            .with("token_id", approver.token_id.clone())
            .with("token_name", approver.name.clone())
            .with("role", role.as_str())
            .with("audience", excerpt(&checked.audience))
            .with("peer", peer),
    );
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("code", &code);
    if let Some(request_state) = &checked.state {
        query.append_pair("state", request_state);
    }
    redirect(&checked.redirect_uri, &query.finish())
}

/// HTML-escapes text for an element or a quoted attribute.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn page(status: StatusCode, body: &str, form_action_extra: Option<&str>) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>hAIveMind: authorize an application</title>\
         <link rel=\"stylesheet\" href=\"/assets/app.css\"></head>\
         <body><main class=\"consent\">{body}</main></body></html>"
    );
    // The approval form posts here and is then redirected to the client: the CSP's
    // form-action must allow that one origin too, or the browser stops the redirect.
    let csp = format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'{}; base-uri 'none'; frame-ancestors 'none'",
        form_action_extra
            .map(|origin| format!(" {origin}"))
            .unwrap_or_default()
    );
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

pub(super) fn consent_error_page(status: StatusCode, message: &str) -> Response {
    page(
        status,
        &format!(
            "<h1>This authorization cannot go on</h1><p role=\"alert\">{}</p>",
            escape(message)
        ),
        None,
    )
}

/// The origin (`scheme://authority`) of a redirect URI, for the CSP: only http(s) ones
/// can be named there; other schemes are allowed by scheme.
pub(super) fn csp_origin(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let authority = rest.split(['/', '?']).next()?;
    let clean = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c))
    };
    if !clean(scheme) || !clean(authority) || authority.is_empty() {
        return None;
    }
    Some(if scheme == "http" || scheme == "https" {
        format!("{scheme}://{authority}")
    } else {
        format!("{scheme}:")
    })
}

pub(super) fn consent_page(
    request: &AuthorizationRequest,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let asked = request
        .scope_role
        .map_or("your token's role".to_string(), |r| format!("the role {r}"));
    let hidden: String = request
        .params
        .iter()
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                escape(k),
                escape(v)
            )
        })
        .collect();
    let redirect_host =
        csp_origin(&request.redirect_uri).unwrap_or_else(|| request.redirect_uri.clone());
    let alert = error
        .map(|e| format!("<p role=\"alert\" class=\"error\">{}</p>", escape(e)))
        .unwrap_or_default();
    let body = format!(
        "<h1>Authorize {name}?</h1>\
         <p>The application <strong>{name}</strong> (client <code>{id}</code>) asks to use \
         hAIveMind at <code>{audience}</code> with {asked}, at most the role of the token you \
         enter. It will get an access token that lasts an hour and can be renewed for 30 \
         days; revoking your token revokes it.</p>\
         <p>After you decide, your browser returns to <code>{redirect}</code>.</p>\
         {alert}\
         <form method=\"post\" action=\"/authorize\">{hidden}\
         <label for=\"token\">Your hAIveMind token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required>\
         <button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\" formnovalidate>Deny</button>\
         </form>",
        name = escape(&request.client.name),
        id = escape(&request.client.id),
        audience = escape(&request.audience),
        asked = escape(&asked),
        redirect = escape(&redirect_host),
    );
    page(status, &body, csp_origin(&request.redirect_uri).as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_client_names_is_text() {
        assert_eq!(
            escape("<script>\"x\"&'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;"
        );
        assert_eq!(
            csp_origin("http://127.0.0.1:5000/cb?x=1").as_deref(),
            Some("http://127.0.0.1:5000")
        );
        assert_eq!(csp_origin("https://a b/"), None);
    }
}
