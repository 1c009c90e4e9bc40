//! Databases of a test's own on the PostgreSQL servers `scripts/test` starts
//! (`scripts/postgres`): 18 with pgvector at `HAIVEMIND_TEST_DATABASE_URL`, Debian's 15
//! without it at `HAIVEMIND_TEST_DATABASE_URL_PLAIN`.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Which test server.
#[derive(Clone, Copy, Debug)]
pub enum Server {
    /// PostgreSQL 18 with pgvector.
    Pgvector,
    /// Debian's PostgreSQL 15, without pgvector.
    Plain,
}

/// An empty database, dropped (with its connections) at the end of the test.
pub struct ScratchDatabase {
    pub admin_url: String,
    pub name: String,
    pub url: String,
}

impl ScratchDatabase {
    pub fn new(server: Server) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let variable = match server {
            Server::Pgvector => "HAIVEMIND_TEST_DATABASE_URL",
            Server::Plain => "HAIVEMIND_TEST_DATABASE_URL_PLAIN",
        };
        let admin_url = std::env::var(variable).unwrap_or_else(|_| {
            panic!(
                "{variable} is not set: run scripts/test, which starts PostgreSQL, or start one with scripts/postgres start and export its URL"
            )
        });
        let name = format!(
            "hv_e2e_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls).expect("connect");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create the test database");
        let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
        Self {
            admin_url,
            name,
            url,
        }
    }

    /// A plain client on this database.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect")
    }

    /// The password in the URL, to check it never shows.
    pub fn password(&self) -> String {
        let after_scheme = self.url.split_once("://").unwrap().1;
        let userinfo = after_scheme.split_once('@').unwrap().0;
        userinfo.split_once(':').unwrap().1.to_string()
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if self.name == "postgres" {
            return; // a whole server of the test's own, stopped by its owner
        }
        if let Ok(mut admin) = postgres::Client::connect(&self.admin_url, postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}
