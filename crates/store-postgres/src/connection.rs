//! Connections: one pool per frontend, TLS as `storage.postgres.sslmode` says, and the
//! answer to "is pgvector here?".

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use haivemind_core::storage_config::{PostgresConfig, SslMode};
use postgres::config::Host;
use r2d2_postgres::PostgresConnectionManager;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::PostgresError;

/// The pool's connection manager.
pub type Manager = PostgresConnectionManager<MakeRustlsConnect>;

/// A pooled connection, returned to the pool when dropped.
pub type Connection = r2d2::PooledConnection<Manager>;

/// How vectors are ranked on this database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorRanking {
    /// By pgvector's HNSW index (cosine), in the database.
    Pgvector,
    /// By the engine's in-process index, fed from the database: the extension is not
    /// installed and this user may not create it.
    InProcess,
}

impl VectorRanking {
    /// What `haivemind status` and the start-up line say.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Pgvector => "pgvector (HNSW, cosine) in PostgreSQL",
            Self::InProcess => "in-process index fed from PostgreSQL (pgvector is not installed)",
        }
    }
}

/// A hub's database: a pool of connections, and what it was found to offer.
#[derive(Clone)]
pub struct Database {
    pool: PoolOffRuntime,
    target: Arc<str>,
    vector_ranking: VectorRanking,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("target", &self.target)
            .field("vector_ranking", &self.vector_ranking)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Connects (waiting at most `connect_timeout_secs` for the first connection), brings
    /// the schema up to date, and finds out whether pgvector ranks vectors here.
    pub fn open(config: &PostgresConfig) -> Result<Self, PostgresError> {
        let url = config.url.as_ref().ok_or_else(|| {
            PostgresError::Config("url is not set (or set HAIVEMIND_DATABASE_URL)".into())
        })?;
        // tokio-postgres's own parse errors may quote the text; ours name the rule only.
        let mut pg_config = postgres::Config::from_str(url.expose()).map_err(|_| {
            PostgresError::Config(format!(
                "url {} is not a valid libpq URL (postgres://user:password@host:5432/dbname)",
                url.redacted()
            ))
        })?;
        let target = target_of(&pg_config);
        let timeout = Duration::from_secs(config.connect_timeout_secs);
        pg_config
            .connect_timeout(timeout)
            .application_name("haivemind")
            .ssl_mode(match config.sslmode {
                SslMode::Disable => postgres::config::SslMode::Disable,
                SslMode::Prefer => postgres::config::SslMode::Prefer,
                SslMode::Require | SslMode::VerifyFull => postgres::config::SslMode::Require,
            });
        let tls = MakeRustlsConnect::new(tls_config(config.ca_file.as_deref())?);
        let pool = r2d2::Pool::builder()
            .max_size(config.pool_size)
            .min_idle(Some(1))
            .connection_timeout(timeout)
            // A connection the database dropped (a restart) is found out before use.
            .test_on_check_out(true)
            .error_handler(Box::new(LogConnectionErrors {
                target: target.clone(),
            }))
            .build(PostgresConnectionManager::new(pg_config, tls))
            .map_err(|error| PostgresError::Unavailable {
                target: target.clone(),
                reason: error.to_string(),
            })?;
        let mut database = Self {
            pool: PoolOffRuntime(Some(pool)),
            target: target.into(),
            vector_ranking: VectorRanking::InProcess,
        };
        let mut connection = database.connection()?;
        crate::schema::migrate(&mut connection)?;
        database.vector_ranking = crate::schema::vector_ranking(&mut connection)?;
        Ok(database)
    }

    /// A connection from the pool, or `Unavailable` after `connect_timeout_secs`.
    pub fn connection(&self) -> Result<Connection, PostgresError> {
        self.pool.get().map_err(|error| PostgresError::Unavailable {
            target: self.target.to_string(),
            reason: error.to_string(),
        })
    }

    /// `host:port/dbname`, for logs and status: never the user or password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// How vectors are ranked here.
    pub fn vector_ranking(&self) -> VectorRanking {
        self.vector_ranking
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i32, PostgresError> {
        crate::schema::version(&mut self.connection()?)
    }
}

fn target_of(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let dbname = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{dbname}")
}

/// rustls trusting `ca_file` when given, else the compiled-in web roots. The certificate and
/// the host name are always checked: unlike libpq's `require`, no mode accepts an unchecked
/// certificate, since that would let anyone on the path read the memory.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, PostgresError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<_, _>>())
                .map_err(|e| PostgresError::Config(format!("ca_file {}: {e}", path.display())))?;
            if certificates.is_empty() {
                return Err(PostgresError::Config(format!(
                    "ca_file {}: holds no PEM certificate",
                    path.display()
                )));
            }
            for certificate in certificates {
                roots.add(certificate).map_err(|e| {
                    PostgresError::Config(format!(
                        "ca_file {}: not a usable trust anchor: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PostgresError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The pool, dropped where a blocking client may close: the synchronous `postgres` client
/// drives a runtime of its own, which cannot start inside an async task, so the last
/// handle dropped in one (a server shutting down) is dropped on a thread of its own.
#[derive(Clone)]
struct PoolOffRuntime(Option<r2d2::Pool<Manager>>);

impl PoolOffRuntime {
    fn get(&self) -> Result<r2d2::PooledConnection<Manager>, r2d2::Error> {
        self.0.as_ref().expect("the pool lives until drop").get()
    }
}

impl Drop for PoolOffRuntime {
    fn drop(&mut self) {
        let Some(pool) = self.0.take() else { return };
        if tokio_in_scope() {
            let _ = std::thread::spawn(move || drop(pool)).join();
        }
    }
}

/// Whether this thread is inside an async runtime (where blocking clients must not close).
fn tokio_in_scope() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

/// r2d2 reports connection failures here; they go to the log once each, without the URL.
#[derive(Debug)]
struct LogConnectionErrors {
    target: String,
}

impl r2d2::HandleError<postgres::Error> for LogConnectionErrors {
    fn handle_error(&self, error: postgres::Error) {
        tracing::warn!(database = %self.target, %error, "cannot connect to the database");
    }
}
