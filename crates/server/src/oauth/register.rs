//! `POST /register`: dynamic client registration (RFC 7591) of public clients, and the
//! redirect URI rules (exact, loopback ports aside: RFC 8252).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use haivemind_core::audit::AuditEvent;
use haivemind_core::error::excerpt;
use serde_json::{Value, json};

use super::*;
use crate::AppState;

/// Redirect URIs a client may register, and the length of each.
pub(super) const MAX_REDIRECT_URIS: usize = 8;
/// `client_name`'s longest accepted length.
pub(super) const MAX_CLIENT_NAME_BYTES: usize = 128;
/// An RFC 7591 error: `{"error", "error_description"}` with 400.
pub(super) fn registration_error(field: &str, rule: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({
            "error": if field == "redirect_uris" { "invalid_redirect_uri" } else { "invalid_client_metadata" },
            "error_description": format!("{field}: {rule}"),
        }),
    )
}

pub(super) async fn register(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let peer = peer_of(&request);
    if let Err(wait) = state
        .oauth
        .registrations
        .check(peer.as_deref().unwrap_or(""))
    {
        return json_response(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": "slow_down", "error_description": format!("too many registrations from this address; retry in {} s", wait.as_secs().max(1))}),
        );
    }
    let body = match crate::guard::read_body(request.into_body(), MAX_FORM_BYTES).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Ok(Value::Object(metadata)) = serde_json::from_slice::<Value>(&body) else {
        return registration_error("body", "must be a JSON object (RFC 7591 client metadata)");
    };
    let uris: Vec<String> = match metadata.get("redirect_uris") {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_REDIRECT_URIS => {
            let mut uris = Vec::new();
            for item in items {
                let Some(uri) = item.as_str() else {
                    return registration_error("redirect_uris", "each must be a string");
                };
                if let Err(rule) = check_redirect_uri(uri) {
                    return registration_error("redirect_uris", &rule);
                }
                uris.push(uri.to_string());
            }
            uris
        }
        _ => {
            return registration_error(
                "redirect_uris",
                &format!("must list 1 to {MAX_REDIRECT_URIS} URIs"),
            );
        }
    };
    let name = match metadata.get("client_name") {
        None | Some(Value::Null) => "unnamed client".to_string(),
        Some(Value::String(name))
            if !name.trim().is_empty()
                && name.len() <= MAX_CLIENT_NAME_BYTES
                && !name.chars().any(char::is_control) =>
        {
            name.trim().to_string()
        }
        _ => {
            return registration_error(
                "client_name",
                &format!(
                    "must be a non-blank string of at most {MAX_CLIENT_NAME_BYTES} bytes without control characters"
                ),
            );
        }
    };
    match metadata.get("token_endpoint_auth_method") {
        None | Some(Value::Null) => {}
        Some(Value::String(method)) if method == "none" => {}
        _ => {
            return registration_error(
                "token_endpoint_auth_method",
                "only public clients (\"none\") are registered; PKCE protects the code",
            );
        }
    }
    for (field, allowed) in [
        ("grant_types", &["authorization_code", "refresh_token"][..]),
        ("response_types", &["code"][..]),
    ] {
        match metadata.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items))
                if items
                    .iter()
                    .all(|i| i.as_str().is_some_and(|s| allowed.contains(&s))) => {}
            _ => {
                return registration_error(
                    field,
                    &format!("may only contain {}", allowed.join(", ")),
                );
            }
        }
    }
    let store = Arc::clone(&state.store);
    let made = tokio::task::spawn_blocking(move || store.register_oauth_client(&name, &uris)).await;
    let client = match made {
        Ok(Ok(client)) => client,
        Ok(Err(haivemind_store::StoreError::Invalid(invalid))) => {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "temporarily_unavailable", "error_description": invalid.to_string()}),
            );
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "cannot register an OAuth client");
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "server_error", "error_description": "the server failed; see its log"}),
            );
        }
        Err(error) => {
            tracing::error!(%error, "registration thread failed");
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "server_error", "error_description": "the server failed; see its log"}),
            );
        }
    };
    state.audit_refusal(
        peer.clone(),
        AuditEvent::new("oauth_client_registered")
            .with("client_id", client.id.clone())
            .with("client_name", excerpt(&client.name))
            .with("peer", peer),
    );
    json_response(
        StatusCode::CREATED,
        json!({
            "client_id": client.id,
            "client_id_issued_at": client.created_at_ms / 1000,
            "client_name": client.name,
            "redirect_uris": client.redirect_uris,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }),
    )
}

/// Whether `uri` may be registered: https anywhere; http only to a loopback address
/// (RFC 8252 §7.3); or a native app's private-use scheme (§7.1). Never a fragment, never
/// a scheme a browser would run.
pub(super) fn check_redirect_uri(uri: &str) -> Result<(), String> {
    if uri.len() > MAX_URI_BYTES {
        return Err(format!("each must be at most {MAX_URI_BYTES} bytes"));
    }
    if uri.contains('#') || uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain a fragment, spaces or control characters".into());
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(format!("{:?} is not an absolute URI", excerpt(uri)));
    };
    let scheme = scheme.to_ascii_lowercase();
    let valid_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !valid_scheme {
        return Err(format!("{:?} has no valid scheme", excerpt(uri)));
    }
    match scheme.as_str() {
        "https" => Ok(()),
        "http" if is_loopback(rest) => Ok(()),
        "http" => Err(
            "http is only accepted for a loopback address (127.0.0.1, [::1], localhost); use https"
                .into(),
        ),
        "javascript" | "data" | "file" | "blob" | "about" | "vbscript" | "ws" | "wss" | "ftp" => {
            Err(format!("the scheme {scheme} is not a redirect target"))
        }
        _ => Ok(()),
    }
}

/// Whether the part after `http:` names a loopback host.
pub(super) fn is_loopback(rest: &str) -> bool {
    let authority = rest
        .strip_prefix("//")
        .unwrap_or("")
        .split(['/', '?'])
        .next()
        .unwrap_or("");
    let host = authority
        .rsplit_once(':')
        .filter(|(h, port)| {
            !h.is_empty()
                && port.chars().all(|c| c.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']'))
        })
        .map_or(authority, |(h, _)| h);
    matches!(
        host.to_ascii_lowercase().as_str(),
        "127.0.0.1" | "[::1]" | "localhost"
    )
}

/// `uri` with the port of a loopback authority removed, for RFC 8252 §7.3 matching.
pub(super) fn without_loopback_port(uri: &str) -> String {
    let Some(rest) = uri.strip_prefix("http://") else {
        return uri.to_string();
    };
    if !is_loopback(&format!("//{rest}")) {
        return uri.to_string();
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = match authority.rsplit_once(':') {
        Some((h, port))
            if port.chars().all(|c| c.is_ascii_digit())
                && (h.ends_with(']') || !h.contains(':')) =>
        {
            h
        }
        _ => authority,
    };
    format!("http://{}{tail}", host.to_ascii_lowercase())
}

/// Whether `presented` is one of the client's registered redirect URIs: exactly, except
/// that a loopback URI may name any port.
pub(super) fn redirect_matches(client: &OAuthClient, presented: &str) -> bool {
    client.redirect_uris.iter().any(|registered| {
        registered == presented
            || (registered.starts_with("http://")
                && is_loopback(&registered["http:".len()..])
                && without_loopback_port(registered) == without_loopback_port(presented))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use haivemind_store::OAuthClient;

    fn client(uris: &[&str]) -> OAuthClient {
        OAuthClient {
            id: "hvc_1".into(),
            name: "c".into(),
            redirect_uris: uris.iter().map(|u| u.to_string()).collect(),
            created_at_ms: 0,
        }
    }

    #[test]
    fn redirect_uris_are_https_loopback_http_or_private_schemes() {
        for ok in [
            "https://claude.ai/api/mcp/auth_callback",
            "http://127.0.0.1:33418/callback",
            "http://localhost/cb",
            "http://[::1]:8000/cb",
            "vscode://vscode.github-authentication/did-authenticate",
            "com.example.app:/oauth2redirect",
        ] {
            assert!(check_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://evil.example/cb",
            "http://127.0.0.1.evil.example/cb",
            "javascript:alert(1)",
            "data:text/html,x",
            "https://a.example/cb#frag",
            "no-scheme",
            "https://a.example/ space",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirect_uris_match_exactly_but_loopback_ports_may_vary() {
        let c = client(&["http://127.0.0.1:3000/callback", "https://app.example/cb"]);
        assert!(redirect_matches(&c, "http://127.0.0.1:3000/callback"));
        assert!(redirect_matches(&c, "http://127.0.0.1:51234/callback"));
        assert!(redirect_matches(&c, "http://127.0.0.1/callback"));
        assert!(!redirect_matches(&c, "http://127.0.0.1:3000/other"));
        assert!(!redirect_matches(&c, "http://localhost:3000/callback"));
        assert!(!redirect_matches(&c, "https://app.example/cb/"));
        assert!(!redirect_matches(&c, "https://app.example:8443/cb"));
        assert!(redirect_matches(&c, "https://app.example/cb"));
    }
}
