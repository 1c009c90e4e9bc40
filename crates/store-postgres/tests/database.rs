//! The hub's database layer against a real PostgreSQL: `scripts/test` starts two with
//! `scripts/postgres` (18 with pgvector, and Debian's 15 without it) and exports their URLs
//! as `HAIVEMIND_TEST_DATABASE_URL` and `HAIVEMIND_TEST_DATABASE_URL_PLAIN`. Each test
//! makes a database of its own on them, so tests run side by side.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use haivemind_core::storage_config::{DatabaseUrl, PostgresConfig, SslMode};
use haivemind_store_postgres::{
    Database, OP_LOG_CHANNEL, PostgresError, SCHEMA_VERSION, VectorRanking,
};
use postgres::fallible_iterator::FallibleIterator;

#[derive(Clone, Copy)]
enum Server {
    /// PostgreSQL 18 with pgvector.
    Pgvector,
    /// Debian's PostgreSQL 15, without pgvector.
    Plain,
}

fn server_url(server: Server) -> String {
    let variable = match server {
        Server::Pgvector => "HAIVEMIND_TEST_DATABASE_URL",
        Server::Plain => "HAIVEMIND_TEST_DATABASE_URL_PLAIN",
    };
    std::env::var(variable).unwrap_or_else(|_| {
        panic!(
            "{variable} is not set: run scripts/test, which starts PostgreSQL, or start one with scripts/postgres start and export its URL"
        )
    })
}

/// A database of this test's own, dropped at the end.
struct Scratch {
    admin_url: String,
    name: String,
    url: String,
}

impl Scratch {
    fn new(server: Server) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let admin_url = server_url(server);
        let name = format!(
            "hv_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls).unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let base = admin_url.rsplit_once('/').unwrap().0;
        let url = format!("{base}/{name}");
        Self {
            admin_url,
            name,
            url,
        }
    }

    fn config(&self) -> PostgresConfig {
        PostgresConfig {
            url: Some(DatabaseUrl::parse(&self.url).unwrap()),
            pool_size: 4,
            sslmode: SslMode::Disable,
            ca_file: None,
            connect_timeout_secs: 5,
        }
    }

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&self.admin_url, postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

#[test]
fn frontends_starting_together_on_an_empty_database_migrate_it_once() {
    let scratch = Scratch::new(Server::Pgvector);
    let frontends = 8;
    let barrier = Arc::new(Barrier::new(frontends));
    let opened: Vec<Result<Database, PostgresError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..frontends)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                let config = scratch.config();
                scope.spawn(move || {
                    barrier.wait();
                    Database::open(&config)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for database in &opened {
        let database = database.as_ref().expect("every frontend starts");
        assert_eq!(database.schema_version().unwrap(), SCHEMA_VERSION);
    }
    let applied: i64 = scratch
        .client()
        .query_one("SELECT count(*) FROM haivemind_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        applied,
        i64::from(SCHEMA_VERSION),
        "each migration applied once"
    );
}

#[test]
fn vectors_are_ranked_by_pgvector_where_it_is_installed_and_in_process_where_not() {
    let with = Scratch::new(Server::Pgvector);
    let database = Database::open(&with.config()).unwrap();
    assert_eq!(database.vector_ranking(), VectorRanking::Pgvector);
    let extension: String = with
        .client()
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(extension.starts_with("0.8"), "{extension}");

    let without = Scratch::new(Server::Plain);
    let database = Database::open(&without.config()).unwrap();
    assert_eq!(database.vector_ranking(), VectorRanking::InProcess);
    assert_eq!(database.schema_version().unwrap(), SCHEMA_VERSION);
    // Opening again is a no-op on either.
    assert_eq!(
        Database::open(&without.config()).unwrap().vector_ranking(),
        VectorRanking::InProcess
    );
}

#[test]
fn a_database_migrated_by_a_newer_binary_is_refused_untouched() {
    let scratch = Scratch::new(Server::Pgvector);
    Database::open(&scratch.config()).unwrap();
    scratch
        .client()
        .execute(
            "INSERT INTO haivemind_schema (version) VALUES ($1)",
            &[&(SCHEMA_VERSION + 5)],
        )
        .unwrap();
    let error = Database::open(&scratch.config()).unwrap_err();
    assert!(
        matches!(error, PostgresError::SchemaTooNew { found, .. } if found == SCHEMA_VERSION + 5),
        "{error}"
    );
}

#[test]
fn a_refused_or_absent_database_is_unavailable_and_no_message_carries_the_password() {
    let scratch = Scratch::new(Server::Pgvector);
    let mut config = scratch.config();
    let wrong = scratch
        .url
        .replacen("haivemind:", "haivemind:wrong-hunter2-", 1);
    config.url = Some(DatabaseUrl::parse(&wrong).unwrap());
    config.connect_timeout_secs = 2;
    let error = Database::open(&config).unwrap_err();
    assert!(error.is_unavailable(), "{error}");
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains(&scratch.name), "names the database: {shown}");

    // Nothing listens on this port.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    config.url =
        Some(DatabaseUrl::parse(&format!("postgres://hub:hunter2@127.0.0.1:{closed}/x")).unwrap());
    let error = Database::open(&config).unwrap_err();
    assert!(error.is_unavailable(), "{error}");
    assert!(!format!("{error} {error:?}").contains("hunter2"));
}

#[test]
fn tls_required_is_never_quietly_plain() {
    // The test servers offer no TLS: `require` and `verify-full` must refuse to connect,
    // `prefer` falls back to plain.
    let scratch = Scratch::new(Server::Pgvector);
    for (mode, connects) in [
        (SslMode::Require, false),
        (SslMode::VerifyFull, false),
        (SslMode::Prefer, true),
        (SslMode::Disable, true),
    ] {
        let mut config = scratch.config();
        config.sslmode = mode;
        config.connect_timeout_secs = 2;
        let opened = Database::open(&config);
        assert_eq!(opened.is_ok(), connects, "{mode:?}: {opened:?}");
    }
}

#[test]
fn every_op_log_entry_is_announced_to_every_listening_frontend() {
    let scratch = Scratch::new(Server::Pgvector);
    Database::open(&scratch.config()).unwrap();
    let mut listener = scratch.client();
    listener
        .batch_execute(&format!("LISTEN {OP_LOG_CHANNEL}"))
        .unwrap();
    let seq: i64 = scratch
        .client()
        .query_one(
            "INSERT INTO op_log (op_id, hlc, origin, record_kind, record_id, op, payload, shareable)
             VALUES ('op-1', 1, 'frontend-a', 'memory', 'm', 'create', '{}', 1) RETURNING seq",
            &[],
        )
        .unwrap()
        .get(0);
    let mut notifications = listener.notifications();
    let heard = notifications
        .timeout_iter(std::time::Duration::from_secs(5))
        .next()
        .unwrap()
        .expect("the insert is announced");
    assert_eq!(heard.channel(), OP_LOG_CHANNEL);
    assert_eq!(heard.payload(), seq.to_string());
}
