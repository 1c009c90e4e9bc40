//! The connectors' HTTP: GET with headers and a time limit, through one shared `ureq`
//! agent (connections kept alive between the pages of a sync), over plain TCP or rustls
//! (ring, the webpki root certificates compiled in: nothing is downloaded).

use std::sync::OnceLock;
use std::time::Duration;

/// A whole response.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value (`name` lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The largest answer read: a page of a listing is far smaller.
const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("haivemind/", env!("CARGO_PKG_VERSION")))
            .build()
            .into()
    })
}

/// `GET url` with `headers`; fails on a network or protocol error, not on a status.
pub fn get(url: &str, headers: &[(&str, String)], timeout: Duration) -> Result<Response, String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "{:?} is not an http:// or https:// URL",
            haivemind_core::error::excerpt(url)
        ));
    }
    let mut request = agent()
        .get(url)
        .config()
        .timeout_global(Some(timeout))
        .build()
        .header("Accept", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let mut response = request
        .call()
        .map_err(|e| format!("GET {}: {e}", haivemind_core::error::excerpt(url)))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY_BYTES)
        .read_to_vec()
        .map_err(|e| format!("reading {}: {e}", haivemind_core::error::excerpt(url)))?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_are_fetched() {
        assert!(get("ftp://x", &[], Duration::from_secs(1)).is_err());
        let refused = get("http://127.0.0.1:1/", &[], Duration::from_secs(2)).unwrap_err();
        assert!(refused.contains("127.0.0.1"), "{refused}");
    }
}
