//! TLS to peers, with rustls (ring), trusting the fleet's certificates.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use haivemind_core::Config;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

/// Why the TLS client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file of trusted certificates could not be read or holds none that can be used.
    #[error("security.tls: {path}: {detail}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// rustls refused the configuration.
    #[error("TLS to peers cannot be set up: {0}")]
    Config(String),
}

/// The TLS client for peers: trusting `security.tls.ca_file`, else this node's own
/// `cert_file`; `sync.security.verify_certificates: false` accepts any certificate.
pub fn peer_connector(config: &Config) -> Result<TlsConnector, TlsError> {
    let verify = config
        .sync
        .get("security")
        .and_then(|s| s.get("verify_certificates"))
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    if !verify {
        tracing::warn!(
            "sync.security.verify_certificates is false: peers' certificates are not checked, so an impostor could pose as a peer"
        );
    }
    let trusted = config.security.tls.ca_file.as_deref().or(config
        .security
        .tls
        .cert_file
        .as_deref());
    connector(trusted, verify)
}

/// A connector for talking to peers over TLS, trusting the PEM certificates in
/// `trusted` (`security.tls.ca_file`, else the node's own `cert_file`); with `verify` false
/// (`sync.security.verify_certificates: false`) any certificate is accepted, which only
/// encrypts: it does not stop an impostor.
fn connector(trusted: Option<&Path>, verify: bool) -> Result<TlsConnector, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = if verify {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(path) = trusted {
            let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<_, _>>())
                .map_err(|e| TlsError::File {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                })?;
            for certificate in certificates {
                roots.add(certificate).map_err(|e| TlsError::File {
                    path: path.to_path_buf(),
                    detail: format!("not a usable trust anchor: {e}"),
                })?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Accepts every certificate (signatures are still checked, so the session is encrypted
/// with the key of the certificate shown): `sync.security.verify_certificates: false`.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
