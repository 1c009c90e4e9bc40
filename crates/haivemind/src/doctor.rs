//! `haivemind doctor [--json]`: what an operator checks first, each check `ok`, `warn` or
//! `fail` with what was found and how to fix it. Exits non-zero when any check fails.
//!
//! It only reads: the config, the data directory, the database (`PRAGMA quick_check`),
//! the model files (their pinned digests), the ports (free, or answered by a haivemind),
//! the TLS certificate's expiry, each peer's `/health` (version and clock offset), the
//! free disk space and the WAL's size.

use std::net::{TcpListener, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use haivemind_core::Config;
use serde_json::{Value, json};

use crate::output::Printer;
use crate::probe;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

struct Check {
    name: String,
    status: Status,
    detail: String,
    fix: Option<String>,
}

fn check(name: &str, status: Status, detail: impl Into<String>, fix: Option<&str>) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
        fix: fix.map(str::to_string),
    }
}

/// Runs every check with `config` (or reports why the config is not valid).
pub(crate) fn run(config: Result<Config, haivemind_core::ConfigError>, printer: &Printer) -> bool {
    let checks = match config {
        Err(error) => vec![check(
            "config",
            Status::Fail,
            error.to_string(),
            Some(
                "fix the key named (docs: config/config.example.json; HAIVEMIND_CONFIG names the file)",
            ),
        )],
        Ok(config) => {
            let mut checks = vec![check(
                "config",
                Status::Ok,
                match std::env::var_os("HAIVEMIND_CONFIG")
                    .map(std::path::PathBuf::from)
                    .or_else(haivemind_core::config::default_config_path)
                {
                    Some(path) if path.exists() => format!("{} is valid", path.display()),
                    _ => "no config file: every key has its default".into(),
                },
                None,
            )];
            for notice in &config.notices {
                checks.push(check("config", Status::Warn, notice.clone(), None));
            }
            checks.push(data_dir(&config));
            checks.push(database(&config));
            checks.push(model(&config));
            checks.extend(ports(&config));
            checks.extend(tls(&config));
            checks.extend(peers(&config));
            checks.push(disk(&config));
            checks.push(wal(&config));
            checks
        }
    };
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    let worst = checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
    let value = json!({
        "status": worst.as_str(),
        "checks": checks.iter().map(|c| {
            let mut entry = json!({"name": c.name, "status": c.status.as_str(), "detail": c.detail});
            if let Some(fix) = &c.fix {
                entry["fix"] = json!(fix);
            }
            entry
        }).collect::<Vec<Value>>(),
    });
    let mut text = String::new();
    for c in &checks {
        text.push_str(&format!(
            "{:<4}  {:<12} {}\n",
            c.status.as_str(),
            c.name,
            c.detail
        ));
        if let Some(fix) = &c.fix
            && c.status != Status::Ok
        {
            text.push_str(&format!("{:<4}  {:<12} fix: {fix}\n", "", ""));
        }
    }
    let (fails, warns) = (
        checks.iter().filter(|c| c.status == Status::Fail).count(),
        checks.iter().filter(|c| c.status == Status::Warn).count(),
    );
    text.push_str(&format!(
        "{} checks: {} ok, {warns} warn, {fails} fail",
        checks.len(),
        checks.len() - warns - fails
    ));
    printer.done(value, &text);
    !failed
}

fn data_dir(config: &Config) -> Check {
    let dir = config.data_dir();
    let Ok(meta) = std::fs::metadata(&dir) else {
        return check(
            "data_dir",
            Status::Warn,
            format!("{} does not exist yet", dir.display()),
            Some("it is made (0700) on the first start"),
        );
    };
    if !meta.is_dir() {
        return check(
            "data_dir",
            Status::Fail,
            format!("{} is not a directory", dir.display()),
            Some("point HAIVEMIND_DATA_DIR or storage.data_dir at a directory"),
        );
    }
    let probe = dir.join(".doctor-write-probe");
    let writable = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    if !writable {
        return check(
            "data_dir",
            Status::Fail,
            format!("{} is not writable by this user", dir.display()),
            Some("run as the directory's owner (the haivemind service user), or chown it"),
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return check(
            "data_dir",
            Status::Warn,
            format!(
                "{} is mode {mode:o}: other users may read memories",
                dir.display()
            ),
            Some(&format!("chmod 700 {}", dir.display())),
        );
    }
    check(
        "data_dir",
        Status::Ok,
        format!("{} (mode {mode:o})", dir.display()),
        None,
    )
}

fn database(config: &Config) -> Check {
    if config.storage.backend == haivemind_core::storage_config::StorageBackend::Postgres {
        return match crate::node::open(config) {
            Ok(store) => match store.stats() {
                Ok(stats) => check(
                    "database",
                    Status::Ok,
                    format!("PostgreSQL hub reachable; {} memories", stats.live),
                    None,
                ),
                Err(error) => check("database", Status::Fail, error.to_string(), None),
            },
            Err(error) => check(
                "database",
                Status::Fail,
                format!("{error:#}"),
                Some(
                    "check storage.postgres.url / HAIVEMIND_DATABASE_URL and that the server is up",
                ),
            ),
        };
    }
    let path = config.database_path();
    if !path.exists() {
        return check(
            "database",
            Status::Warn,
            format!("{} does not exist yet", path.display()),
            Some("it is made on the first start"),
        );
    }
    let outcome = (|| -> Result<(String, i64), rusqlite::Error> {
        let connection = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        connection.busy_timeout(Duration::from_secs(5))?;
        let verdict: String = connection.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        let version: i64 = connection.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        Ok((verdict, version))
    })();
    match outcome {
        Ok((verdict, version)) if verdict == "ok" => {
            let supported = haivemind_store::migrations::SCHEMA_VERSION;
            if version > supported {
                check(
                    "database",
                    Status::Fail,
                    format!(
                        "{}: schema {version} is newer than this binary's {supported}",
                        path.display()
                    ),
                    Some("upgrade haivemind"),
                )
            } else {
                check(
                    "database",
                    Status::Ok,
                    format!("{}: integrity ok, schema {version}", path.display()),
                    None,
                )
            }
        }
        Ok((verdict, _)) => check(
            "database",
            Status::Fail,
            format!(
                "{}: integrity check failed: {}",
                path.display(),
                haivemind_core::error::excerpt(&verdict)
            ),
            Some(
                "restore the last backup (`haivemind restore FILE --force`), then let peers fill in what happened since",
            ),
        ),
        Err(error) => check(
            "database",
            Status::Fail,
            format!("{}: {error}", path.display()),
            Some("is the file readable by this user? is it a haivemind database?"),
        ),
    }
}

fn model(config: &Config) -> Check {
    if !config.embedding.enabled {
        return check(
            "model",
            Status::Ok,
            "embedding.enabled is false: full-text search only",
            None,
        );
    }
    let dir = config.model_dir();
    match haivemind_embed::MiniLm::load(&dir) {
        Ok(_) => check(
            "model",
            Status::Ok,
            format!("{}: all-MiniLM-L6-v2, digests match", dir.display()),
            None,
        ),
        Err(haivemind_embed::LoadError::Missing { path }) => check(
            "model",
            Status::Warn,
            format!("{} is missing: search is full-text only", path.display()),
            Some("run scripts/fetch-model (or set HAIVEMIND_MODEL_DIR)"),
        ),
        Err(error) => check(
            "model",
            Status::Fail,
            format!("{}: {error}", dir.display()),
            Some("fetch it again with scripts/fetch-model"),
        ),
    }
}

fn ports(config: &Config) -> Vec<Check> {
    let host = config.server.host.clone();
    let sync_port = config.server.sync_port.unwrap_or(config.server.port);
    [
        ("mcp_port", config.server.mcp_port),
        ("sync_port", sync_port),
    ]
    .into_iter()
    .map(|(name, port)| {
        let address = format!(
            "{}:{port}",
            if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            }
        );
        let bound = address
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .map(|a| TcpListener::bind(a).is_ok());
        match bound {
            Some(true) => check(name, Status::Ok, format!("{address} is free"), None),
            None => check(
                name,
                Status::Fail,
                format!("{address} does not resolve"),
                Some("check server.host"),
            ),
            Some(false) => {
                let url = format!("{}/health", probe::local_url(config, port));
                match probe::health(&url, Duration::from_secs(3)) {
                    Ok((value, _)) if value["version"].is_string() => check(
                        name,
                        Status::Ok,
                        format!(
                            "{address} is haivemind serve's ({} {})",
                            value["machine_id"].as_str().unwrap_or("?"),
                            value["version"].as_str().unwrap_or("?")
                        ),
                        None,
                    ),
                    _ => check(
                        name,
                        Status::Fail,
                        format!("{address} is taken by another program"),
                        Some(&format!(
                            "stop it, or choose another port (server.{})",
                            if name == "mcp_port" {
                                "mcp_port"
                            } else {
                                "sync_port"
                            }
                        )),
                    ),
                }
            }
        }
    })
    .collect()
}

fn tls(config: &Config) -> Vec<Check> {
    let tls = &config.security.tls;
    let Some(cert) = &tls.cert_file else {
        let exposed = !matches!(
            config.server.host.as_str(),
            "127.0.0.1" | "::1" | "localhost"
        );
        return vec![check(
            "tls",
            if exposed { Status::Warn } else { Status::Ok },
            if exposed {
                format!(
                    "plain HTTP on {}: tokens cross the network in clear text",
                    config.server.host
                )
            } else {
                "off (loopback only)".into()
            },
            exposed.then_some("set security.tls.cert_file and key_file (PEM)"),
        )];
    };
    let pem = match std::fs::read_to_string(cert) {
        Ok(pem) => pem,
        Err(error) => {
            return vec![check(
                "tls",
                Status::Fail,
                format!("{}: {error}", cert.display()),
                Some("check security.tls.cert_file"),
            )];
        }
    };
    let mut checks = Vec::new();
    if let Some(key) = &tls.key_file
        && let Err(error) = std::fs::metadata(key)
    {
        checks.push(check(
            "tls",
            Status::Fail,
            format!("{}: {error}", key.display()),
            Some("check security.tls.key_file"),
        ));
    }
    match certificate_not_after(&pem) {
        Some(not_after_ms) => {
            let days = (not_after_ms - haivemind_core::time_format::now_ms()) / 86_400_000;
            let when = haivemind_core::time_format::ms_to_rfc3339(not_after_ms);
            let (status, detail) = if days < 0 {
                (
                    Status::Fail,
                    format!("{} expired on {when}", cert.display()),
                )
            } else if days < 14 {
                (
                    Status::Warn,
                    format!("{} expires in {days} days ({when})", cert.display()),
                )
            } else {
                (
                    Status::Ok,
                    format!("{} valid until {when} ({days} days)", cert.display()),
                )
            };
            checks.push(check(
                "tls",
                status,
                detail,
                (status != Status::Ok)
                    .then_some("renew the certificate; `haivemind reload` (or SIGHUP) picks it up"),
            ));
        }
        None => checks.push(check(
            "tls",
            Status::Fail,
            format!("{}: no certificate could be read", cert.display()),
            Some("security.tls.cert_file must hold a PEM certificate"),
        )),
    }
    checks
}

fn peers(config: &Config) -> Vec<Check> {
    let me = config.machine_id();
    let sync_port = config.server.sync_port.unwrap_or(config.server.port);
    let peers = haivemind_sync::discover_peers(config, &me, sync_port);
    if peers.is_empty() {
        return vec![check(
            "peers",
            Status::Ok,
            "none configured: this node replicates with no one",
            None,
        )];
    }
    let skew_ms = config.max_clock_skew_ms() as i64;
    peers
        .iter()
        .map(|peer| {
            let scheme = if peer.tls { "https" } else { "http" };
            let name = format!("peer {}", peer.machine_id);
            let asked = haivemind_core::time_format::now_ms();
            match probe::health(
                &format!("{scheme}://{}/health", peer.address),
                Duration::from_secs(5),
            ) {
                Ok((value, date)) => {
                    let answered = haivemind_core::time_format::now_ms();
                    let their = value["time"]
                        .as_str()
                        .and_then(|t| haivemind_core::time_format::parse_rfc3339("time", t).ok())
                        .or_else(|| date.as_deref().and_then(http_date_ms));
                    let offset = their.map(|t| t - (asked + answered) / 2);
                    let version = value["version"].as_str().unwrap_or("?");
                    let mut status = Status::Ok;
                    let mut notes = Vec::new();
                    if version != haivemind_core::VERSION {
                        status = Status::Warn;
                        notes.push(format!("version {version}, this node {}", haivemind_core::VERSION));
                    }
                    if let Some(offset) = offset {
                        if offset.abs() > skew_ms {
                            status = Status::Fail;
                        } else if offset.abs() > 5_000 {
                            status = status.max(Status::Warn);
                        }
                        notes.push(format!("clock offset {offset} ms"));
                    }
                    check(
                        &name,
                        status,
                        format!("{} answers ({})", peer.address, notes.join(", ")),
                        (status != Status::Ok).then_some(
                            "keep clocks in sync (NTP); a peer more than sync.max_clock_skew_secs ahead has its writes refused; run the same version on every node",
                        ),
                    )
                }
                Err(error) => check(
                    &name,
                    Status::Warn,
                    format!("{} does not answer: {}", peer.address, haivemind_core::error::excerpt(&error)),
                    Some("is it up, and is this node in its allowed networks? replication retries on its own"),
                ),
            }
        })
        .collect()
}

/// An HTTP `Date` (`Tue, 01 Dec 2026 00:05:02 GMT`) in epoch milliseconds.
fn http_date_ms(date: &str) -> Option<i64> {
    let parts: Vec<&str> = date.split_whitespace().collect();
    let [_, day, month, year, time, _] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)?
        + 1;
    let text = format!("{year}-{month:02}-{:02}T{time}Z", day.parse::<u32>().ok()?);
    haivemind_core::time_format::parse_rfc3339("date", &text).ok()
}

fn disk(config: &Config) -> Check {
    let dir = config.data_dir();
    let existing = dir
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("/"));
    let output = std::process::Command::new("df")
        .arg("-Pk")
        .arg(existing)
        .output();
    let free = output.ok().and_then(|o| {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let line = text.lines().nth(1)?.to_string();
        let fields: Vec<&str> = line.split_whitespace().collect();
        let total: u64 = fields.get(1)?.parse().ok()?;
        let available: u64 = fields.get(3)?.parse().ok()?;
        Some((total * 1024, available * 1024))
    });
    match free {
        None => check(
            "disk",
            Status::Warn,
            "free space unknown (df did not answer)",
            None,
        ),
        Some((total, available)) => {
            let percent = available as f64 * 100.0 / total.max(1) as f64;
            let mib = available / (1024 * 1024);
            let status = if mib < 256 || percent < 2.0 {
                Status::Fail
            } else if percent < 10.0 {
                Status::Warn
            } else {
                Status::Ok
            };
            check(
                "disk",
                status,
                format!("{mib} MiB free ({percent:.0}%) where {} lives", dir.display()),
                (status != Status::Ok).then_some("free space: a full disk stops every write (SQLite refuses them, nothing is half-written)"),
            )
        }
    }
}

fn wal(config: &Config) -> Check {
    let mut wal = config.database_path().into_os_string();
    wal.push("-wal");
    let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let mib = size / (1024 * 1024);
    let status = if mib >= 1024 {
        Status::Fail
    } else if mib >= 64 {
        Status::Warn
    } else {
        Status::Ok
    };
    check(
        "wal",
        status,
        format!("write-ahead log {mib} MiB"),
        (status != Status::Ok).then_some("a long-running reader holds checkpoints back: restart `haivemind serve` (the log is folded into the database then)"),
    )
}

/// The `notAfter` of the first certificate in `pem`, epoch milliseconds: a walk through
/// just enough DER (Certificate → TBSCertificate → Validity).
fn certificate_not_after(pem: &str) -> Option<i64> {
    use base64::Engine as _;
    let body: String = pem
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)?
        .split("-----END CERTIFICATE-----")
        .next()?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    let (_, certificate, _) = tlv(&der)?; // SEQUENCE Certificate
    let (_, mut tbs, _) = tlv(certificate)?; // SEQUENCE TBSCertificate
    let (tag, _, rest) = tlv(tbs)?;
    if tag == 0xa0 {
        tbs = rest; // [0] version
    }
    let (_, _, rest) = tlv(tbs)?; // serialNumber
    let (_, _, rest) = tlv(rest)?; // signature
    let (_, _, rest) = tlv(rest)?; // issuer
    let (_, validity, _) = tlv(rest)?; // validity
    let (_, _, rest) = tlv(validity)?; // notBefore
    let (tag, time, _) = tlv(rest)?; // notAfter
    let text = std::str::from_utf8(time).ok()?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i32 = text.get(0..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(0..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    let stamp = format!(
        "{year:04}-{}-{}T{}:{}:{}Z",
        rest.get(0..2)?,
        rest.get(2..4)?,
        rest.get(4..6)?,
        rest.get(6..8)?,
        rest.get(8..10)?
    );
    haivemind_core::time_format::parse_rfc3339("notAfter", &stamp).ok()
}

/// One DER element of `input`: its tag, its contents and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (length, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let bytes = (first & 0x7f) as usize;
        if bytes == 0 || bytes > 4 {
            return None;
        }
        let mut length = 0usize;
        for i in 0..bytes {
            length = (length << 8) | *input.get(2 + i)? as usize;
        }
        (length, 2 + bytes)
    };
    let end = header.checked_add(length)?;
    Some((tag, input.get(header..end)?, input.get(end..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_and_der_lengths_are_read() {
        assert_eq!(
            http_date_ms("Tue, 01 Dec 2026 00:05:02 GMT"),
            haivemind_core::time_format::parse_rfc3339("t", "2026-12-01T00:05:02Z").ok()
        );
        assert_eq!(http_date_ms("yesterday"), None);
        assert_eq!(
            tlv(&[0x30, 0x02, 1, 2, 9]),
            Some((0x30, &[1u8, 2][..], &[9u8][..]))
        );
        assert_eq!(
            tlv(&[0x30, 0x81, 0x01, 7]),
            Some((0x30, &[7u8][..], &[][..]))
        );
        assert_eq!(tlv(&[0x30, 0x05, 1]), None, "a length past the end");
        assert_eq!(certificate_not_after("not a pem"), None);
    }
}
