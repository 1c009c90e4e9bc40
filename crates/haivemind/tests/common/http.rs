//! A minimal HTTP/1.1 client over a plain or TLS socket, written for these tests so every
//! header (Host, Origin, Content-Length) is exactly what the test says, and a running
//! `haivemind serve` to point it at.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// One response, read to the end.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The JSON-RPC message answering `id`, from a JSON body or from SSE `data:` lines.
    pub fn rpc(&self, id: u64) -> Value {
        let text = self.text();
        if let Ok(value) = serde_json::from_str::<Value>(&text) {
            return value;
        }
        text.lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
            .find(|message| message["id"] == json!(id))
            .unwrap_or_else(|| panic!("no answer to request {id} in: {text}"))
    }
}

/// A request to send.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl<'a> Request<'a> {
    pub fn new(method: &'a str, path: &'a str) -> Self {
        Self {
            method,
            path,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    pub fn json(mut self, value: &Value) -> Self {
        self.body = value.to_string().into_bytes();
        self.header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream")
    }

    /// Sends `bytes` as the body, as they are.
    pub fn raw_body(mut self, bytes: &[u8]) -> Self {
        self.body = bytes.to_vec();
        self
    }

    fn has(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// Writes the request and reads the whole response (the connection is closed after).
    pub fn send_on(self, mut stream: impl Read + Write, authority: &str) -> Response {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        if !self.has("host") {
            head.push_str(&format!("Host: {authority}\r\n"));
        }
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !self.has("content-length") {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("Connection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).expect("write head");
        // A server may answer (413, 401) before reading the body and close; that is fine.
        let _ = stream.write_all(&self.body);
        let _ = stream.flush();
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        parse(&raw)
    }

    /// Sends over plain TCP to `address` (`127.0.0.1:port`).
    pub fn send(self, address: &str) -> Response {
        let stream = TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        self.send_on(stream, address)
    }
}

fn parse(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&raw[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = end + 2;
        let stop = (start + size).min(raw.len());
        out.extend_from_slice(&raw[start..stop]);
        raw = &raw[(stop + 2).min(raw.len())..];
    }
    out
}

/// A running `haivemind serve`.
pub struct Served {
    pub child: Child,
    /// Its log, kept (the last [`KEPT_LOG_LINES`] lines) unless a test sent it elsewhere,
    /// and shown only when the test fails: expected warnings (no model, peers not up yet)
    /// would otherwise flood the test command's output.
    log: Option<Arc<Mutex<VecDeque<String>>>>,
    /// The thread that reads it: joined before the log is shown, so its last lines are in.
    log_reader: Option<std::thread::JoinHandle<()>>,
    /// `127.0.0.1:port` of the MCP port.
    pub address: String,
    /// `http://127.0.0.1:port` or `https://…`.
    pub url: String,
    pub sync_address: String,
}

impl Served {
    /// Starts `haivemind serve` on free ports and waits until it listens.
    pub fn start(command: Command) -> Self {
        Self::start_on(command, 0)
    }

    /// Starts `haivemind serve` with its sync port on `sync_port` (0: any free port).
    pub fn start_on(command: Command, sync_port: u16) -> Self {
        Self::start_logging(command, sync_port, Stdio::piped())
    }

    /// Starts `haivemind serve` with its log (stderr) going to `stderr`.
    pub fn start_logging(command: Command, sync_port: u16, stderr: Stdio) -> Self {
        let sync_port = sync_port.to_string();
        Self::start_with(
            command,
            &["serve", "--mcp-port", "0", "--sync-port", &sync_port],
            stderr,
            true,
        )
    }

    /// Starts `haivemind serve` on the ports its config names, logging at the config's
    /// `logging.level` (no RUST_LOG).
    pub fn start_as_configured(command: Command) -> Self {
        Self::start_with(command, &["serve"], Stdio::piped(), false)
    }

    fn start_with(mut command: Command, args: &[&str], stderr: Stdio, quiet: bool) -> Self {
        if quiet {
            command.env("RUST_LOG", "warn");
        }
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn haivemind serve");
        let log = child.stderr.take().map(|stderr| {
            let kept = Arc::new(Mutex::new(VecDeque::new()));
            let writer = Arc::clone(&kept);
            let reader = std::thread::spawn(move || {
                // Bytes, not lines of UTF-8: a reader that stopped at a bad byte would leave
                // the pipe to fill and the server to block.
                let mut stderr = BufReader::new(stderr);
                let mut line = Vec::new();
                while matches!(stderr.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                    let text: String = String::from_utf8_lossy(&line)
                        .trim_end()
                        .chars()
                        .take(2_000)
                        .collect();
                    line.clear();
                    let mut kept = writer.lock().unwrap_or_else(|e| e.into_inner());
                    if kept.len() == KEPT_LOG_LINES {
                        kept.pop_front();
                    }
                    kept.push_back(text);
                }
            });
            (kept, reader)
        });
        let (log, log_reader) = match log {
            Some((kept, reader)) => (Some(kept), Some(reader)),
            None => (None, None),
        };
        let stdout = child.stdout.take().expect("stdout");
        let (sender, receiver) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = sender.send(line);
            }
        });
        let mut mcp = None;
        let mut sync = None;
        while mcp.is_none() || sync.is_none() {
            let Ok(line) = receiver.recv_timeout(Duration::from_secs(60)) else {
                let _ = child.kill();
                let _ = child.wait();
                if let Some(reader) = log_reader {
                    let _ = reader.join();
                }
                panic!(
                    "haivemind serve did not announce its ports; its log:\n{}",
                    kept_lines(log.as_ref())
                );
            };
            if let Some(url) = line.strip_prefix("listening mcp ") {
                mcp = Some(url.to_string());
            } else if let Some(url) = line.strip_prefix("listening sync ") {
                sync = Some(url.to_string());
            }
        }
        let url = mcp.unwrap();
        let address = url.split("://").nth(1).unwrap().to_string();
        let sync_address = sync.unwrap().split("://").nth(1).unwrap().to_string();
        Self {
            child,
            log,
            log_reader,
            address,
            url,
            sync_address,
        }
    }

    /// What the server has logged so far (its last lines), when the test did not send its
    /// log elsewhere.
    pub fn log(&self) -> String {
        kept_lines(self.log.as_ref())
    }

    pub fn send(&self, request: Request<'_>) -> Response {
        request.send(&self.address)
    }

    /// Opens an MCP session with `token`: initialize, then `notifications/initialized`.
    /// Returns the session id.
    pub fn initialize(&self, token: &str) -> String {
        self.initialize_as(token, "http-test")
    }

    /// Sends `initialize` as the client named `client`; returns the answer, whatever it is.
    pub fn try_initialize(&self, token: &str, client: &str) -> Response {
        self.send(Request::new("POST", "/mcp").bearer(token).json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": client, "version": "1"}}
        })))
    }

    /// Opens an MCP session as the client named `client` (its agent id is `client@machine`).
    pub fn initialize_as(&self, token: &str, client: &str) -> String {
        let response = self.try_initialize(token, client);
        assert_eq!(response.status, 200, "initialize: {}", response.text());
        let session = response
            .header("mcp-session-id")
            .expect("a session id")
            .to_string();
        let ack = self.send(
            Request::new("POST", "/mcp")
                .bearer(token)
                .header("Mcp-Session-Id", &session)
                .header("MCP-Protocol-Version", "2025-06-18")
                .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})),
        );
        assert_eq!(ack.status, 202, "initialized: {}", ack.text());
        session
    }

    /// Calls a tool in `session`; returns the HTTP response.
    pub fn call_tool(
        &self,
        token: &str,
        session: &str,
        id: u64,
        name: &str,
        arguments: Value,
    ) -> Response {
        self.send(
            Request::new("POST", "/mcp")
                .bearer(token)
                .header("Mcp-Session-Id", session)
                .header("MCP-Protocol-Version", "2025-06-18")
                .json(&json!({
                    "jsonrpc": "2.0", "id": id, "method": "tools/call",
                    "params": {"name": name, "arguments": arguments}
                })),
        )
    }

    /// Calls a tool and returns its result object (`structuredContent`, `isError`).
    pub fn tool(&self, token: &str, session: &str, id: u64, name: &str, arguments: Value) -> Value {
        let response = self.call_tool(token, session, id, name, arguments);
        assert_eq!(response.status, 200, "{name}: {}", response.text());
        response.rpc(id)["result"].clone()
    }

    /// Stops the server with SIGTERM and waits for it.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// The kept lines of a server's log, one per line.
fn kept_lines(log: Option<&Arc<Mutex<VecDeque<String>>>>) -> String {
    log.map_or_else(String::new, |kept| {
        let kept = kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter().cloned().collect::<Vec<_>>().join("\n")
    })
}

/// How much of a server's log a test keeps to show if it fails.
const KEPT_LOG_LINES: usize = 400;

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.log_reader.take() {
            let _ = reader.join();
        }
        if std::thread::panicking() && self.log.is_some() {
            eprintln!(
                "--- the log of haivemind serve on {} ---\n{}",
                self.address,
                self.log()
            );
        }
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost, made here: its PEM files in
/// `dir`, and the certificate's DER for a client to trust.
pub fn throwaway_certificate(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("make a certificate");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).expect("write cert.pem");
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("write key.pem");
    (cert_path, key_path, certified.cert.der().to_vec())
}

/// A TLS connection to `address` that trusts only the certificate `certificate_der`, not
/// yet handshaken (the first read or write does it).
pub fn tls_client(
    address: &str,
    certificate_der: Vec<u8>,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(certificate_der)).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let socket = std::net::TcpStream::connect(address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    rustls::StreamOwned::new(connection, socket)
}

/// A port that was free a moment ago, for servers whose peers must know it in advance.
///
/// It is taken below the kernel's ephemeral range, so no server started with port 0 (by
/// this test or another running beside it) can take it while its owner is down or not yet
/// started, and never twice in one test process.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|l| l.parse().ok()))
        .unwrap_or(32_768);
    let (low, high) = if ephemeral_low > 12_000 {
        (ephemeral_low - 10_000, ephemeral_low - 1)
    } else {
        (ephemeral_low + 30_000, 65_000)
    };
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(1)
        ^ std::process::id().rotate_left(16);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..10_000 {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let port = (low + seed % (high - low)) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
    panic!("no free port between {low} and {high}");
}
