//! Asking a haivemind's open `/health` which version answers and what its clock says:
//! `status` and `peers` (is a server running here?), `install` (where to register it) and
//! `doctor` (are the ports ours? how are the peers?). The probe sends no token, so the
//! certificate is not verified: a self-signed node, or a peer under a private CA, answers
//! as well as any.

use std::time::Duration;

use haivemind_core::Config;
use serde_json::Value;

/// The most of a `/health` answer read.
const MAX_HEALTH_BYTES: u64 = 64 * 1024;

/// This node's server as a client on this machine reaches it: a wildcard bind is asked on
/// loopback, an IPv6 address in brackets.
pub(crate) fn local_host(config: &Config) -> String {
    match config.server.host.as_str() {
        "0.0.0.0" | "::" => "127.0.0.1".to_string(),
        host if host.contains(':') => format!("[{host}]"),
        host => host.to_string(),
    }
}

/// `scheme://host:port` of this node's server on `port`.
pub(crate) fn local_url(config: &Config, port: u16) -> String {
    let scheme = if config.security.tls.cert_file.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}:{port}", local_host(config))
}

/// `GET url` (a `/health`): its JSON and its `Date` header.
pub(crate) fn health(url: &str, timeout: Duration) -> Result<(Value, Option<String>), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .disable_verification(true)
                .build(),
        )
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
    let date = response
        .headers()
        .get("date")
        .and_then(|d| d.to_str().ok())
        .map(str::to_string);
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_HEALTH_BYTES)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    let value =
        serde_json::from_str(&body).map_err(|_| "not a haivemind /health answer".to_string())?;
    Ok((value, date))
}
