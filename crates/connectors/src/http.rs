//! A small blocking HTTP/1.1 client for the connectors: GET with headers, over plain TCP or
//! rustls (ring, the webpki root certificates compiled in: nothing is downloaded), with
//! timeouts. One connection per request.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

pub use haivemind_core::http1::Response;

/// A URL split for a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Whether it is https.
    pub tls: bool,
    /// The host.
    pub host: String,
    /// The port.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Target {
    /// Parses `http://host[:port]/path?query` or `https://…`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("{url:?} is not an http:// or https:// URL"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => (
                host.trim_start_matches('[').trim_end_matches(']'),
                port.parse::<u16>()
                    .map_err(|_| format!("{url:?} has a bad port"))?,
            ),
            _ => (authority, if tls { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        Ok(Self {
            tls,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .unwrap_or_else(|_| {
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("TLS 1.3 with ring")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
            });
        Arc::new(config)
    }))
}

/// `GET url` with `headers`; fails on a network or protocol error, not on a status.
pub fn get(url: &str, headers: &[(&str, String)], timeout: Duration) -> Result<Response, String> {
    let target = Target::parse(url)?;
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .map_err(|e| format!("cannot connect to {}:{}: {e}", target.host, target.port))?;
    tcp.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut stream: Box<dyn Stream> = if target.tls {
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| format!("{}: {e}", target.host))?;
        let connection = rustls::ClientConnection::new(tls_config(), name)
            .map_err(|e| format!("TLS with {}: {e}", target.host))?;
        Box::new(rustls::StreamOwned::new(connection, tcp))
    } else {
        Box::new(tcp)
    };
    let host = if (target.tls && target.port == 443) || (!target.tls && target.port == 80) {
        target.host.clone()
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nUser-Agent: haivemind/{}\r\nConnection: close\r\n",
        target.path,
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("sending to {host}: {e}"))?;
    let mut raw = Vec::new();
    if let Err(error) = stream.read_to_end(&mut raw)
        && (raw.is_empty() || error.kind() != std::io::ErrorKind::UnexpectedEof)
    {
        return Err(format!("reading from {host}: {error}"));
    }
    haivemind_core::http1::parse_response(&raw)
        .ok_or_else(|| format!("{host} answered something that is not HTTP"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_host_port_and_path() {
        let t = Target::parse("https://wiki.example.com/rest/api/content?spaceKey=OPS").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port),
            (true, "wiki.example.com", 443)
        );
        assert_eq!(t.path, "/rest/api/content?spaceKey=OPS");
        let t = Target::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((t.tls, t.port, t.path.as_str()), (false, 8080, "/"));
        assert!(Target::parse("ftp://x").is_err());
    }
}
