//! Accepting connections: plain TCP or TLS, HTTP/1.1, with the peer's address attached to
//! every request for the network allowlist.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How long a client may take to send a request's headers, or to finish a TLS handshake.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why serving stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The TLS acceptor new connections use: shared with the server so a reload can put a
/// renewed certificate in place without closing the socket (connections already open keep
/// theirs).
#[derive(Clone)]
pub struct TlsSwitch(Arc<std::sync::RwLock<TlsAcceptor>>);

impl TlsSwitch {
    /// A switch holding `acceptor`.
    pub fn new(acceptor: TlsAcceptor) -> Self {
        Self(Arc::new(std::sync::RwLock::new(acceptor)))
    }

    /// Puts `acceptor` in place for the next connections.
    pub fn replace(&self, acceptor: TlsAcceptor) {
        if let Ok(mut current) = self.0.write() {
            *current = acceptor;
        }
    }

    fn current(&self) -> Option<TlsAcceptor> {
        self.0.read().ok().map(|a| a.clone())
    }
}

/// A bound socket, plain or TLS.
pub struct Listener {
    listener: TcpListener,
    tls: Option<TlsSwitch>,
}

impl Listener {
    /// Binds `host:port`.
    pub async fn bind(host: &str, port: u16, tls: Option<TlsSwitch>) -> Result<Self, ServeError> {
        let address = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|source| ServeError::Bind { address, source })?;
        Ok(Self { listener, tls })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves `router` until `shutdown` completes.
    pub async fn serve(self, router: Router, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Out of descriptors and the like: wait rather than spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let router = router.clone();
            let tls = self.tls.as_ref().and_then(TlsSwitch::current);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                        request.extensions_mut().insert(ConnectInfo(peer));
                        router.clone().oneshot(request)
                    });
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(true);
                let outcome = match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .with_upgrades()
                                    .await
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        }
                    }
                    None => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades()
                            .await
                    }
                };
                if let Err(error) = outcome {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
            });
        }
    }
}
