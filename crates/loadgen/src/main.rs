//! `haivemind-loadgen`: drives `retrieve_memory` over `/mcp` from many concurrent clients,
//! one keep-alive connection and one MCP session each, and reports calls/s and latency.
//!
//! It shares no code with the server: its HTTP/1.1 client is the few dozen lines below, so
//! what it measures is the server as any client sees it. `make-cert DIR` writes a
//! throw-away self-signed certificate for the TLS run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Parser)]
#[command(name = "haivemind-loadgen", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Store memories, then call retrieve_memory on random ones from every client.
    Run {
        /// `http://127.0.0.1:8900` or `https://…`.
        #[arg(long)]
        url: String,
        /// A bearer token with the agent role.
        #[arg(long, env = "HAIVEMIND_TOKEN")]
        token: String,
        /// Concurrent clients, one connection each.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// How long to measure, after a warm-up of a second.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Memories to store first.
        #[arg(long, default_value_t = 1000)]
        memories: usize,
        /// PEM certificate to trust for https.
        #[arg(long)]
        cafile: Option<std::path::PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Task lifecycles through MCP on one node: each client registers an agent, then
    /// delegates a task to it, claims it and completes it, as fast as it can.
    Tasks {
        /// `http://127.0.0.1:8900`.
        #[arg(long)]
        url: String,
        /// A bearer token with the agent role.
        #[arg(long, env = "HAIVEMIND_TOKEN")]
        token: String,
        /// Concurrent clients, one connection each.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// How long to measure, after a warm-up of a second.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Across two replicating nodes: delegate on one, time until the other shows the task;
    /// broadcast on one, time until the other's WebSocket announces it.
    Fleet {
        /// MCP URL of the delegating node.
        #[arg(long)]
        from: String,
        /// MCP URL of the receiving node.
        #[arg(long)]
        to: String,
        /// `host:port` of the receiving node's sync port (for its WebSocket).
        #[arg(long)]
        to_sync: String,
        /// The fleet token (admin on both nodes).
        #[arg(long, env = "HAIVEMIND_TOKEN")]
        token: String,
        /// The machine id to subscribe as (one the receiving node lists).
        #[arg(long, default_value = "alpha")]
        subscriber: String,
        /// How many of each.
        #[arg(long, default_value_t = 50)]
        rounds: usize,
    },
    /// Write cert.pem and key.pem for 127.0.0.1 and localhost into DIR.
    MakeCert {
        /// Where to write them.
        dir: std::path::PathBuf,
    },
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    stream: BufReader<Box<dyn Io>>,
    authority: String,
    token: String,
    session: Option<String>,
}

struct Target {
    host: String,
    port: u16,
    tls: Option<TlsConnector>,
}

impl Target {
    fn parse(url: &str, cafile: Option<&std::path::Path>) -> Result<Self> {
        let (scheme, rest) = url.split_once("://").context("the URL needs a scheme")?;
        let authority = rest.trim_end_matches('/');
        let (host, port) = authority.rsplit_once(':').context("the URL needs a port")?;
        let tls = match scheme {
            "http" => None,
            "https" => {
                let cafile = cafile.context("https needs --cafile")?;
                let mut roots = rustls::RootCertStore::empty();
                for certificate in CertificateDer::pem_file_iter(cafile)? {
                    roots.add(certificate?)?;
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(TlsConnector::from(Arc::new(config)))
            }
            other => bail!("unknown scheme {other}"),
        };
        Ok(Self {
            host: host.to_string(),
            port: port.parse()?,
            tls,
        })
    }

    async fn connect(&self, token: &str) -> Result<Connection> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(connector) => {
                let name = ServerName::try_from(self.host.clone())?;
                Box::new(connector.connect(name, tcp).await?)
            }
        };
        Ok(Connection {
            stream: BufReader::with_capacity(64 * 1024, stream),
            authority: format!("{}:{}", self.host, self.port),
            token: token.to_string(),
            session: None,
        })
    }
}

impl Connection {
    /// Posts one JSON-RPC message to /mcp; returns the status, the session header and the
    /// answer to `id` (from JSON or SSE).
    async fn post(
        &mut self,
        message: &Value,
        id: Option<u64>,
    ) -> Result<(u16, Option<String>, Option<Value>)> {
        let body = message.to_string();
        let mut head = format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
            self.authority,
            self.token,
            body.len()
        );
        if let Some(session) = &self.session {
            head.push_str(&format!(
                "Mcp-Session-Id: {session}\r\nMCP-Protocol-Version: 2025-06-18\r\n"
            ));
        }
        head.push_str("\r\n");
        head.push_str(&body);
        let stream = self.stream.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.flush().await?;
        let (status, headers) = self.read_head().await?;
        let session = headers
            .iter()
            .find(|(n, _)| n == "mcp-session-id")
            .map(|(_, v)| v.clone());
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let body = if chunked {
            self.read_chunked().await?
        } else {
            let mut body = vec![0; length.unwrap_or(0)];
            self.stream.read_exact(&mut body).await?;
            body
        };
        let text = String::from_utf8_lossy(&body);
        let answer = id.and_then(|id| {
            serde_json::from_str::<Value>(&text).ok().or_else(|| {
                text.lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
                    .find(|m| m["id"] == json!(id))
            })
        });
        Ok((status, session, answer))
    }

    async fn read_head(&mut self) -> Result<(u16, Vec<(String, String)>)> {
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if let Some((name, value)) = trimmed.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        Ok((status, headers))
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim(), 16)
                .with_context(|| format!("bad chunk size {line:?}"))?;
            if size == 0 {
                line.clear();
                self.stream.read_line(&mut line).await?;
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size + 2, 0);
            self.stream.read_exact(&mut body[start..]).await?;
            body.truncate(start + size);
        }
    }

    async fn initialize(&mut self) -> Result<()> {
        let (status, session, _) = self
            .post(
                &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "haivemind-loadgen", "version": "1"}}}),
                Some(0),
            )
            .await?;
        if status != 200 {
            bail!("initialize answered {status}");
        }
        self.session = Some(session.context("no Mcp-Session-Id")?);
        let (status, _, _) = self
            .post(
                &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                None,
            )
            .await?;
        if status != 202 {
            bail!("notifications/initialized answered {status}");
        }
        Ok(())
    }

    async fn call(&mut self, id: u64, name: &str, arguments: Value) -> Result<Value> {
        let (status, _, answer) = self
            .post(
                &json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                        "params": {"name": name, "arguments": arguments}}),
                Some(id),
            )
            .await?;
        if status != 200 {
            bail!("{name} answered HTTP {status}");
        }
        let answer = answer.with_context(|| format!("no answer to {name}"))?;
        let result = &answer["result"];
        if result["isError"] == json!(true) || result.is_null() {
            bail!("{name} failed: {answer}");
        }
        Ok(result["structuredContent"].clone())
    }
}

/// xorshift: the ids to fetch need only be spread, not unpredictable.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

#[allow(clippy::too_many_arguments)]
async fn run(
    url: String,
    token: String,
    clients: usize,
    seconds: u64,
    memories: usize,
    cafile: Option<std::path::PathBuf>,
    as_json: bool,
) -> Result<()> {
    let target = Arc::new(Target::parse(&url, cafile.as_deref())?);
    let mut setup = target.connect(&token).await?;
    setup.initialize().await?;
    let mut ids = Vec::with_capacity(memories);
    for i in 0..memories {
        let stored = setup
            .call(i as u64 + 1, "store_memory", json!({
                "content": format!("load test memory {i}: service {} restarted after a config change on host-{}", i % 37, i % 11),
                "category": "infrastructure", "tags": ["loadgen"]}))
            .await?;
        ids.push(
            stored["id"]
                .as_str()
                .context("store_memory gave no id")?
                .to_string(),
        );
    }
    let ids = Arc::new(ids);
    let warm_up = Instant::now() + Duration::from_secs(1);
    let end = warm_up + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for client in 0..clients {
        let target = Arc::clone(&target);
        let ids = Arc::clone(&ids);
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let mut connection = target.connect(&token).await?;
            connection.initialize().await?;
            let mut random = 0x9e37_79b9_7f4a_7c15u64 ^ (client as u64 + 1);
            let mut latencies = Vec::new();
            let mut id = 0u64;
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                id += 1;
                let memory = &ids[next_random(&mut random) as usize % ids.len()];
                let got = connection
                    .call(id, "retrieve_memory", json!({"memory_id": memory}))
                    .await?;
                if got["id"].as_str() != Some(memory.as_str()) {
                    bail!("retrieve_memory returned another memory");
                }
                if started >= warm_up {
                    latencies.push(started.elapsed());
                }
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    latencies.sort_unstable();
    let calls_per_second = latencies.len() as f64 / seconds as f64;
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    if as_json {
        println!(
            "{}",
            json!({"url": url, "clients": clients, "seconds": seconds, "calls": latencies.len(),
            "calls_per_second": calls_per_second, "p50_ms": p50, "p99_ms": p99})
        );
    } else {
        println!(
            "{url}: {clients} clients, {} calls in {seconds} s: {calls_per_second:.0} calls/s, p50 {p50:.2} ms, p99 {p99:.2} ms",
            latencies.len()
        );
    }
    Ok(())
}

/// Each client: register an agent, then delegate → claim → complete in a loop.
async fn tasks(url: String, token: String, clients: usize, seconds: u64) -> Result<()> {
    let target = Arc::new(Target::parse(&url, None)?);
    let warm_up = Instant::now() + Duration::from_secs(1);
    let end = warm_up + Duration::from_secs(seconds);
    let mut running = Vec::new();
    for client in 0..clients {
        let target = Arc::clone(&target);
        let token = token.clone();
        running.push(tokio::spawn(async move {
            let mut connection = target.connect(&token).await?;
            connection.initialize().await?;
            let agent = format!("loadgen-{client}");
            connection
                .call(
                    1,
                    "register_agent",
                    json!({"role": "worker_drone", "agent_id": agent,
                      "capabilities": ["load"]}),
                )
                .await?;
            let mut latencies = Vec::new();
            let mut id = 1u64;
            while Instant::now() < end {
                let started = Instant::now();
                id += 3;
                let task = connection
                    .call(
                        id,
                        "delegate_task",
                        json!({"task_description": format!("load task {id}"),
                          "target_agent": agent}),
                    )
                    .await?;
                let task_id = task["task_id"].as_str().context("no task_id")?.to_string();
                connection
                    .call(
                        id + 1,
                        "claim_task",
                        json!({"task_id": task_id, "agent_id": agent}),
                    )
                    .await?;
                let done = connection
                    .call(
                        id + 2,
                        "complete_task",
                        json!({"task_id": task_id, "agent_id": agent,
                          "result": "done"}),
                    )
                    .await?;
                if done["status"] != "completed" {
                    bail!("complete_task left the task {}", done["status"]);
                }
                if started >= warm_up {
                    latencies.push(started.elapsed());
                }
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in running {
        latencies.extend(task.await??);
    }
    latencies.sort_unstable();
    let per_second = latencies.len() as f64 / seconds as f64;
    println!(
        "{url}: {clients} clients, {} task lifecycles (delegate, claim, complete) in {seconds} s: {per_second:.0} tasks/s ({:.0} calls/s), lifecycle p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        per_second * 3.0,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );
    Ok(())
}

/// Delegate-to-visible and broadcast-to-WebSocket latency between two nodes.
async fn fleet(
    from: String,
    to: String,
    to_sync: String,
    token: String,
    subscriber: String,
    rounds: usize,
) -> Result<()> {
    use futures_util::{SinkExt, StreamExt};
    let sender = Target::parse(&from, None)?;
    let receiver = Target::parse(&to, None)?;
    let mut alpha = sender.connect(&token).await?;
    alpha.initialize().await?;
    let mut beta = receiver.connect(&token).await?;
    beta.initialize().await?;
    beta.call(
        1,
        "register_agent",
        json!({"role": "worker_drone", "agent_id": "bench-worker",
              "capabilities": ["bench"]}),
    )
    .await?;
    // The agent must reach the delegating node's roster first.
    let mut id = 10u64;
    loop {
        id += 1;
        let roster = alpha.call(id, "get_agent_roster", json!({})).await?;
        if roster["agents"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["agent_id"] == "bench-worker"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut delegations = Vec::new();
    for i in 0..rounds {
        let started = Instant::now();
        id += 1;
        let task = alpha
            .call(
                id,
                "delegate_task",
                json!({"task_description": format!("bench task {i}"),
                  "target_agent": "bench-worker"}),
            )
            .await?;
        let task_id = task["task_id"].as_str().context("no task_id")?.to_string();
        loop {
            id += 1;
            if beta
                .call(id, "get_task", json!({"task_id": task_id}))
                .await
                .is_ok()
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("task {task_id} never reached the other node");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        delegations.push(started.elapsed());
    }
    let mut request = format!("ws://{to_sync}/ws/{subscriber}").into_client_request()?;
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse()?);
    let tcp = TcpStream::connect(&to_sync).await?;
    let (mut socket, _) = tokio_tungstenite::client_async(request, tcp).await?;
    let mut broadcasts = Vec::new();
    for i in 0..rounds {
        let started = Instant::now();
        id += 1;
        let sent = alpha
            .call(
                id,
                "broadcast_discovery",
                json!({"message": format!("bench broadcast {i}"),
                  "severity": "info"}),
            )
            .await?;
        let wanted = sent["broadcast_id"].clone();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), socket.next())
                .await
                .context("no broadcast on the WebSocket within 30 s")?
                .context("the WebSocket closed")??;
            if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
                let event: Value = serde_json::from_str(text.as_str())?;
                if event["type"] == "broadcast" && event["broadcast_id"] == wanted {
                    break;
                }
            }
        }
        broadcasts.push(started.elapsed());
    }
    let _ = socket.close(None).await;
    let _ = socket.flush().await;
    delegations.sort_unstable();
    broadcasts.sort_unstable();
    println!(
        "delegate on one node -> get_task answers on the other, {rounds} tasks: p50 {:.0} ms, p99 {:.0} ms",
        percentile(&delegations, 0.50),
        percentile(&delegations, 0.99)
    );
    println!(
        "broadcast on one node -> event on the other's WebSocket, {rounds} broadcasts: p50 {:.0} ms, p99 {:.0} ms",
        percentile(&broadcasts, 0.50),
        percentile(&broadcasts, 0.99)
    );
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Tasks {
            url,
            token,
            clients,
            seconds,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(tasks(url, token, clients, seconds)),
        Command::Fleet {
            from,
            to,
            to_sync,
            token,
            subscriber,
            rounds,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(fleet(from, to, to_sync, token, subscriber, rounds)),
        Command::Run {
            url,
            token,
            clients,
            seconds,
            memories,
            cafile,
            json,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(run(url, token, clients, seconds, memories, cafile, json))
        }
        Command::MakeCert { dir } => {
            let certified =
                rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("cert.pem"), certified.cert.pem())?;
            std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem())?;
            println!("{}", dir.join("cert.pem").display());
            Ok(())
        }
    }
}
