//! The sync service's client side: for every configured peer, pull what this node lacks
//! and push what the peer lacks, through the peer's `POST /api/sync`, right after local
//! writes (within about a second) and every `sync.sync_interval` (anti-entropy).
//!
//! Peers come from `sync.discovery.machines`. The exchange is idempotent and resumable, so
//! a cut-off or failed round is simply repeated at the next trigger.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use haivemind_core::Config;
use haivemind_core::audit::AuditLog;
use haivemind_core::time_format::now_ms;
use haivemind_store::{OpLogEntry, Store, VersionVector};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

use crate::events::EventHub;

/// One peer to replicate with.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its machine id.
    pub machine_id: String,
    /// `host:port` of its sync port.
    pub address: String,
    /// Whether it is reached over TLS: an `https://` address, or, without a scheme, when
    /// this node serves TLS itself (a fleet is configured alike).
    pub tls: bool,
}

impl Peer {
    /// A peer at `address` (`host:port`, optionally `http://` or `https://` in front).
    pub fn at(machine_id: impl Into<String>, address: &str, serves_tls: bool) -> Self {
        let (address, tls) = if let Some(rest) = address.strip_prefix("https://") {
            (rest, true)
        } else if let Some(rest) = address.strip_prefix("http://") {
            (rest, false)
        } else {
            (address, serves_tls)
        };
        Self {
            machine_id: machine_id.into(),
            address: address.trim_end_matches('/').to_string(),
            tls,
        }
    }
}

/// How replication with one peer is going, for `/api/status`.
#[derive(Debug, Clone, Default)]
pub struct PeerState {
    /// When the last round completed, epoch milliseconds.
    pub last_sync_ms: Option<i64>,
    /// The last round's error, if it failed.
    pub last_error: Option<String>,
    /// Operations received from it, in total.
    pub received: u64,
    /// Operations sent to it, in total.
    pub sent: u64,
    /// Rounds run with it.
    pub rounds: u64,
    /// Rounds that failed.
    pub failures: u64,
    /// Rounds that failed since the last one that did not.
    pub failures_in_a_row: u32,
    /// While it keeps failing: no round before this (backoff).
    pub retry_at: Option<std::time::Instant>,
}

/// Per-peer state shared with the status route.
pub type PeerStates = Arc<Mutex<BTreeMap<String, PeerState>>>;

/// The peers of `sync.discovery.machines` that have an address: `{"machine_id", "address"}`
/// objects, `"host"` / `"host:port"` strings whose host is the machine id, or, as in the
/// seed, an object keyed by machine id whose entries give an `address` or a `tailscale_ip`.
/// A missing port is this node's sync port (a fleet uses one port).
pub fn configured_peers(config: &Config, me: &str) -> Vec<Peer> {
    let Some(machines) = config.sync.get("discovery").and_then(|d| d.get("machines")) else {
        return Vec::new();
    };
    let serves_tls = config.security.tls.cert_file.is_some();
    let port = config.server.sync_port.unwrap_or(config.server.port);
    let with_port = |host: &str| -> String {
        let bare = host
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        if bare.contains(':') && !bare.starts_with('[') || bare.contains("]:") {
            host.to_string()
        } else {
            format!("{host}:{port}")
        }
    };
    let peers: Vec<Peer> = match machines {
        Value::Array(entries) => entries
            .iter()
            .filter_map(|entry| match entry {
                Value::String(text) => {
                    let host = text
                        .trim_start_matches("https://")
                        .trim_start_matches("http://");
                    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
                    Some(Peer::at(host, &with_port(text), serves_tls))
                }
                Value::Object(map) => Some(Peer::at(
                    map.get("machine_id")?.as_str()?,
                    &with_port(map.get("address")?.as_str()?),
                    serves_tls,
                )),
                _ => None,
            })
            .collect(),
        Value::Object(by_id) => by_id
            .iter()
            .filter_map(|(id, entry)| {
                let host = entry
                    .get("address")
                    .or_else(|| entry.get("tailscale_ip"))?
                    .as_str()?;
                Some(Peer::at(id.as_str(), &with_port(host), serves_tls))
            })
            .collect(),
        _ => Vec::new(),
    };
    peers
        .into_iter()
        .filter(|peer| peer.machine_id != me)
        .collect()
}

/// How long `tailscale status --json` may take: discovery runs at start and on every
/// reload, and a hung command must not hold either up.
const TAILSCALE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of its output read: a tailnet's status is kilobytes.
const TAILSCALE_MAX_OUTPUT: u64 = 16 * 1024 * 1024;

/// `tailscale status --json`'s output; `None` when it failed or ran past
/// [`TAILSCALE_TIMEOUT`] (then it is killed); an error when there is no such command.
fn tailscale_status() -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut child = std::process::Command::new("tailscale")
        .args(["status", "--json"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut pipe = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(pipe) = pipe.as_mut() {
            let _ = pipe.take(TAILSCALE_MAX_OUTPUT).read_to_end(&mut out);
        }
        out
    });
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait()? {
            Some(status) => break Some(status),
            None if started.elapsed() > TAILSCALE_TIMEOUT => break None,
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return Ok(None);
    };
    let out = reader.join().unwrap_or_default();
    Ok(status.success().then_some(out))
}

/// Peers Tailscale knows (`tailscale status --json`), when the `tailscale` command exists
/// and `sync.discovery.tailscale` is not false: each online peer's host name is its machine
/// id, its first Tailscale IPv4 address (else IPv6) with this node's sync port its address.
/// Machines already configured keep their configured address.
pub fn tailscale_peers(config: &Config, me: &str, sync_port: u16) -> Vec<Peer> {
    let enabled = config
        .sync
        .get("discovery")
        .and_then(|d| d.get("tailscale"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    if !enabled {
        return Vec::new();
    }
    let stdout = match tailscale_status() {
        Ok(Some(stdout)) => stdout,
        Ok(None) => {
            tracing::info!(
                "`tailscale status --json` failed or took over {TAILSCALE_TIMEOUT:?}; peers come from sync.discovery.machines only"
            );
            return Vec::new();
        }
        // No tailscale here: nothing to discover.
        Err(_) => return Vec::new(),
    };
    let Ok(status) = serde_json::from_slice::<Value>(&stdout) else {
        tracing::warn!("`tailscale status --json` printed something that is not JSON; ignored");
        return Vec::new();
    };
    let Some(peers) = status.get("Peer").and_then(Value::as_object) else {
        return Vec::new();
    };
    peers
        .values()
        .filter(|peer| peer.get("Online").and_then(Value::as_bool).unwrap_or(false))
        .filter_map(|peer| {
            let name = peer.get("HostName")?.as_str()?.trim();
            let ips: Vec<&str> = peer
                .get("TailscaleIPs")?
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let ip = ips
                .iter()
                .find(|ip| !ip.contains(':'))
                .or_else(|| ips.first())?;
            let address = if ip.contains(':') {
                format!("[{ip}]:{sync_port}")
            } else {
                format!("{ip}:{sync_port}")
            };
            (!name.is_empty() && name != me).then(|| Peer {
                machine_id: name.to_string(),
                address,
                tls: config.security.tls.cert_file.is_some(),
            })
        })
        .collect()
}

/// Configured peers, then Tailscale's that are not configured.
pub fn discover_peers(config: &Config, me: &str, sync_port: u16) -> Vec<Peer> {
    let mut peers = configured_peers(config, me);
    for found in tailscale_peers(config, me, sync_port) {
        if !peers.iter().any(|p| p.machine_id == found.machine_id) {
            peers.push(found);
        }
    }
    peers
}

/// `sync.sync_interval` in seconds (default 30).
pub fn sync_interval(config: &Config) -> Duration {
    let seconds = config
        .sync
        .get("sync_interval")
        .and_then(Value::as_f64)
        .filter(|s| *s > 0.0)
        .unwrap_or(30.0);
    Duration::from_secs_f64(seconds)
}

/// The client side of the sync service: the peers, the fleet token, and how each peer is
/// doing. Rounds run one at a time (a trigger during a round waits for it, then runs its own).
pub struct SyncService {
    store: Arc<Store>,
    /// The peers and the fleet token, replaced whole on reload ([`SyncService::reconfigure`]).
    fleet: std::sync::RwLock<(Vec<Peer>, String)>,
    interval: Duration,
    states: PeerStates,
    events: Arc<EventHub>,
    /// For peers reached over TLS.
    connector: Option<TlsConnector>,
    audit: Option<Arc<AuditLog>>,
    round_lock: tokio::sync::Mutex<()>,
}

/// How one peer's part of a round went.
#[derive(Debug, Clone)]
pub struct PeerOutcome {
    /// The peer.
    pub machine_id: String,
    /// Operations received from it and sent to it, or why the round failed.
    pub result: Result<(u64, u64), String>,
}

impl SyncService {
    /// A service replicating `store` with `peers`, authenticating with the fleet `token`,
    /// recording into `states` and announcing to `events`; `connector` for TLS peers.
    pub fn new(
        store: Arc<Store>,
        peers: Vec<Peer>,
        token: String,
        interval: Duration,
        states: PeerStates,
        events: Arc<EventHub>,
        connector: Option<TlsConnector>,
    ) -> Self {
        Self {
            store,
            fleet: std::sync::RwLock::new((peers, token)),
            interval,
            states,
            events,
            connector,
            audit: None,
            round_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Replicates with `peers`, authenticating with `token`, from the next round on (a
    /// config reload). A peer no longer listed keeps its last state in `/api/status` until
    /// the next restart.
    pub fn reconfigure(&self, peers: Vec<Peer>, token: String) {
        if let Ok(mut fleet) = self.fleet.write() {
            *fleet = (peers, token);
        }
    }

    /// The peers replicated with now.
    pub fn peers(&self) -> Vec<Peer> {
        self.fleet.read().map(|f| f.0.clone()).unwrap_or_default()
    }

    /// Records the operations peers send that this node refuses (`sync_refused`) in `audit`.
    pub fn with_audit(mut self, audit: Option<Arc<AuditLog>>) -> Self {
        self.audit = audit;
        self
    }

    /// One round with every peer, side by side (one that hangs holds up no other); records
    /// the outcome per peer for `/api/status` and announces it to WebSocket subscribers.
    ///
    /// A peer whose last rounds failed is left alone for a while (1 s after the first
    /// failure, doubling, at most `sync.sync_interval`), unless `forced` (trigger-sync).
    pub async fn round(&self, forced: bool) -> Vec<PeerOutcome> {
        let _one_at_a_time = self.round_lock.lock().await;
        let mut round = tokio::task::JoinSet::new();
        let now = std::time::Instant::now();
        let (peers, token) = self.fleet.read().map(|f| f.clone()).unwrap_or_default();
        for peer in &peers {
            let resting = !forced
                && self
                    .states
                    .lock()
                    .map(|states| {
                        states
                            .get(&peer.machine_id)
                            .and_then(|s| s.retry_at)
                            .is_some_and(|at| at > now)
                    })
                    .unwrap_or(false);
            if resting {
                continue;
            }
            let (store, peer) = (Arc::clone(&self.store), peer.clone());
            let link = Link {
                audit: self.audit.clone(),
                ..Link::new(peer.clone(), token.clone(), self.connector.clone())
            };
            round.spawn(async move {
                let started = std::time::Instant::now();
                let outcome = tokio::time::timeout(ROUND_TIMEOUT, sync_with(&store, &link))
                    .await
                    .unwrap_or_else(|_| Err("timed out after 60 s".into()));
                haivemind_core::timings::SYNC_ROUNDS.observe(&peer.machine_id, started.elapsed());
                (peer, outcome)
            });
        }
        let mut outcomes = Vec::new();
        while let Some(joined) = round.join_next().await {
            let Ok((peer, outcome)) = joined else {
                continue;
            };
            self.record(&peer, &outcome);
            outcomes.push(PeerOutcome {
                machine_id: peer.machine_id,
                result: outcome,
            });
        }
        outcomes.sort_by(|a, b| a.machine_id.cmp(&b.machine_id));
        outcomes
    }

    fn record(&self, peer: &Peer, outcome: &Result<(u64, u64), String>) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let state = states.entry(peer.machine_id.clone()).or_default();
        state.rounds += 1;
        match outcome {
            Ok((received, sent)) => {
                state.last_sync_ms = Some(now_ms());
                state.last_error = None;
                state.failures_in_a_row = 0;
                state.retry_at = None;
                state.received += received;
                state.sent += sent;
                if received + sent > 0 {
                    self.events.publish(json!({
                        "type": "sync",
                        "machine_id": self.store.machine_id(),
                        "peer": peer.machine_id,
                        "received": received,
                        "sent": sent,
                    }));
                }
            }
            Err(error) => {
                state.failures += 1;
                state.failures_in_a_row += 1;
                let backoff = Duration::from_secs(1 << (state.failures_in_a_row - 1).min(16));
                state.retry_at = Some(std::time::Instant::now() + backoff.min(self.interval));
                // Once per new error, not once per round, while a peer stays down.
                if state.last_error.as_deref() != Some(error.as_str()) {
                    tracing::warn!(peer = %peer.machine_id, %error, "sync failed");
                    self.events.publish(json!({
                        "type": "sync_failed",
                        "machine_id": self.store.machine_id(),
                        "peer": peer.machine_id,
                        "error": error,
                    }));
                }
                state.last_error = Some(error.clone());
            }
        }
    }

    /// Runs rounds until the task is aborted: after every change to the op log (local
    /// writes, and replicated ones, which is what relays them onwards) and every
    /// `sync.sync_interval` (anti-entropy).
    pub async fn run(self: Arc<Self>) {
        let changed = self.events.changed();
        loop {
            self.round(false).await;
            // The next anti-entropy round, or sooner when a resting peer's backoff ends.
            let mut wake = tokio::time::Instant::now() + self.interval;
            if let Ok(states) = self.states.lock()
                && let Some(retry) = states.values().filter_map(|s| s.retry_at).min()
            {
                wake = wake.min(tokio::time::Instant::from_std(retry));
            }
            tokio::select! {
                _ = changed.notified() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

/// The largest answer read from a peer. A page is about 2 MiB of JSON plus one operation
/// (whose memory is at most `memory.max_content_bytes`, 16 MiB at the most).
const MAX_ANSWER_BYTES: usize = 40 << 20;

/// Roughly the most JSON one pushed page carries, well below a receiver's default
/// `server.max_body_bytes` (4 MiB); a page always carries at least one operation.
const MAX_PUSH_BYTES: usize = 1 << 20;

/// The longest one round with one peer may take.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);

/// One round with `peer`: pull until nothing is missing here, then push until nothing is
/// missing there. Returns the operations received and sent.
async fn sync_with(store: &Arc<Store>, link: &Link) -> Result<(u64, u64), String> {
    let me = store.machine_id().to_string();
    let (mut received, mut sent) = (0u64, 0u64);
    let mut theirs: VersionVector;
    loop {
        let mine = blocking(store, |s| s.version_vector()).await?;
        let answer = link
            .post(&json!({"machine_id": me, "seen": mine, "limit": 500}))
            .await?;
        theirs = seen_of(&answer)?;
        let ops = ops_of(&answer)?;
        received += ops.len() as u64;
        if ops.is_empty() {
            break;
        }
        let applied = blocking(store, move |s| s.apply_remote(&ops)).await?;
        let peer = &link.peer.machine_id;
        if let (Some(audit), Some(event)) = (&link.audit, applied.refusal_event(peer, "pull")) {
            audit.record(event);
        }
        if let Some(summary) = applied.refusal_summary() {
            tracing::warn!(%peer, "refused operations from a peer: {summary}");
        }
        if answer["more"] != json!(true) {
            break;
        }
        if applied.logged == 0 && applied.already_known == 0 {
            // Every operation of the page was refused, so what this node has seen did not
            // move and the peer would send the same page again.
            return Err(format!(
                "the peer sent only operations this node refuses ({} in a page)",
                applied.refused
            ));
        }
    }
    loop {
        let seen = theirs.clone();
        let ops = blocking(store, move |s| s.ops_after(&seen, 500)).await?;
        if ops.is_empty() {
            return Ok((received, sent));
        }
        let mut wire: Vec<Value> = Vec::new();
        let mut bytes = 0;
        for op in &ops {
            let entry = op.to_wire();
            bytes += haivemind_core::memory::json_size(&entry);
            if !wire.is_empty() && bytes > MAX_PUSH_BYTES {
                break;
            }
            wire.push(entry);
        }
        sent += wire.len() as u64;
        let mine = blocking(store, |s| s.version_vector()).await?;
        let answer = link
            .post(&json!({"machine_id": me, "seen": mine, "ops": wire, "limit": 1}))
            .await?;
        let next = seen_of(&answer)?;
        if next == theirs {
            return Err("the peer accepted none of the operations sent".into());
        }
        theirs = next;
    }
}

async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    work: impl FnOnce(&Store) -> Result<T, haivemind_store::StoreError> + Send + 'static,
) -> Result<T, String> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || work(&store))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

fn seen_of(answer: &Value) -> Result<VersionVector, String> {
    serde_json::from_value(answer["seen"].clone())
        .map_err(|_| "the peer's answer has no `seen`".into())
}

fn ops_of(answer: &Value) -> Result<Vec<OpLogEntry>, String> {
    answer["ops"]
        .as_array()
        .ok_or("the peer's answer has no `ops`")?
        .iter()
        .enumerate()
        .map(|(i, op)| OpLogEntry::from_wire(&format!("ops[{i}]"), op).map_err(|e| e.to_string()))
        .collect()
}

/// `GET /api/status` of the node at `address` (`host:port`, `https://` for TLS), as
/// `haivemind peers` asks its own server.
pub async fn fetch_status(
    address: &str,
    token: &str,
    connector: Option<TlsConnector>,
) -> Result<Value, String> {
    let link = Link::new(Peer::at("", address, false), token.to_string(), connector);
    link.request("GET", "/api/status", None).await
}

/// How to reach one peer: its address, the fleet token, and TLS when it serves TLS. The
/// requests of one round share one connection (HTTP/1.1 keep-alive, by hyper's client).
struct Link {
    peer: Peer,
    token: String,
    connector: Option<TlsConnector>,
    audit: Option<Arc<AuditLog>>,
    /// The round's open connection, between requests.
    open: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
}

/// A connection to a peer, plain or TLS.
trait Connection: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Connection for T {}

impl Link {
    fn new(peer: Peer, token: String, connector: Option<TlsConnector>) -> Self {
        Self {
            peer,
            token,
            connector,
            audit: None,
            open: tokio::sync::Mutex::new(None),
        }
    }

    /// `POST /api/sync`; the answer's JSON.
    async fn post(&self, body: &Value) -> Result<Value, String> {
        self.request("POST", "/api/sync", Some(body)).await
    }

    async fn connect(&self) -> Result<Box<dyn Connection>, String> {
        let address = &self.peer.address;
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(address),
        )
        .await
        .map_err(|_| format!("connecting to {address} timed out"))?
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
        if !self.peer.tls {
            return Ok(Box::new(tcp));
        }
        let connector = self.connector.as_ref().ok_or_else(|| {
            format!("{address} is reached over TLS, but no TLS client is set up (security.tls)")
        })?;
        let host = address
            .rsplit_once(':')
            .map_or(address.as_str(), |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host} is not a valid TLS server name: {e}"))?;
        let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
            .await
            .map_err(|_| format!("the TLS handshake with {address} timed out"))?
            .map_err(|e| format!("TLS with {address} failed: {e}"))?;
        Ok(Box::new(tls))
    }

    /// A new HTTP/1.1 connection; hyper drives it on a task of its own until the sender
    /// is dropped or the peer closes it.
    async fn handshake(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = self.connect().await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP with {} failed: {e}", self.peer.address))?;
        let address = self.peer.address.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%address, %error, "connection to a peer ended");
            }
        });
        Ok(sender)
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let body = Bytes::from(body.map(Value::to_string).unwrap_or_default());
        let mut open = self.open.lock().await;
        let (mut sender, kept) = match open.take() {
            Some(sender) if !sender.is_closed() => (sender, true),
            _ => (self.handshake().await?, false),
        };
        let response = match sender
            .send_request(self.build(method, path, body.clone())?)
            .await
        {
            Ok(response) => response,
            // The peer closed the kept connection as the request went out (an idle
            // timeout): once more on a new one. Both requests are safe to repeat: a page
            // pulled again is the same page; operations pushed again are already known.
            Err(error)
                if kept
                    && (error.is_canceled()
                        || error.is_closed()
                        || error.is_incomplete_message()) =>
            {
                sender = self.handshake().await?;
                sender
                    .send_request(self.build(method, path, body)?)
                    .await
                    .map_err(|e| e.to_string())?
            }
            Err(error) => return Err(error.to_string()),
        };
        let status = response.status();
        // A peer's answer is bounded: reading stops at the limit.
        let payload = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    format!(
                        "the peer's answer is larger than {} MiB",
                        MAX_ANSWER_BYTES >> 20
                    )
                } else {
                    error.to_string()
                }
            })?
            .to_bytes();
        *open = Some(sender);
        if status != hyper::StatusCode::OK {
            return Err(format!(
                "the peer answered {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&payload)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ));
        }
        serde_json::from_slice(&payload).map_err(|e| format!("the peer's answer is not JSON: {e}"))
    }

    fn build(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<hyper::Request<Full<Bytes>>, String> {
        hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.peer.address)
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| format!("cannot make a request to {}: {e}", self.peer.address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What the fake peer does with each request it reads on a connection.
    #[derive(Clone, Copy)]
    enum Behaviour {
        /// Answers `{"n": <request number>}` and keeps the connection open.
        KeepAlive,
        /// Answers with `Connection: close`, then closes the connection.
        CloseAfterEach,
        /// Answers, then closes the connection without a word (an idle timeout that
        /// meets the next request on the way).
        VanishAfterEach,
        /// Answers 200 with a body one byte past the limit.
        Huge,
        /// Answers 401.
        Refuse,
    }

    /// Appends what `socket` has to `buffer`; false once it is closed.
    async fn read_more(socket: &mut tokio::net::TcpStream, buffer: &mut Vec<u8>) -> bool {
        let mut chunk = [0u8; 4096];
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                buffer.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// A peer on loopback, hand-written so each test decides exactly what goes on the wire;
    /// returns its address and how many connections it accepted.
    async fn fake_peer(behaviour: Behaviour) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("an address").to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        tokio::spawn(async move {
            let requests = Arc::new(AtomicUsize::new(0));
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let requests = Arc::clone(&requests);
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    loop {
                        // The head, then as many body bytes as it declares.
                        let head_end = loop {
                            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                                break end + 4;
                            }
                            if !read_more(&mut socket, &mut buffer).await {
                                return;
                            }
                        };
                        let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        while buffer.len() < head_end + length {
                            if !read_more(&mut socket, &mut buffer).await {
                                return;
                            }
                        }
                        assert!(head.contains("authorization: bearer fleet-token"), "{head}");
                        buffer.drain(..head_end + length);
                        let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
                        let (status, body) = match behaviour {
                            Behaviour::Huge => {
                                let mut body = vec![b' '; MAX_ANSWER_BYTES + 1];
                                body[0] = b'{';
                                *body.last_mut().expect("not empty") = b'}';
                                ("200 OK", body)
                            }
                            Behaviour::Refuse => ("401 Unauthorized", b"no such token".to_vec()),
                            _ => ("200 OK", format!("{{\"n\": {n}}}").into_bytes()),
                        };
                        let says_close = matches!(behaviour, Behaviour::CloseAfterEach);
                        let close = says_close || matches!(behaviour, Behaviour::VanishAfterEach);
                        let answer = format!(
                            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
                            body.len(),
                            if says_close {
                                "Connection: close\r\n"
                            } else {
                                ""
                            }
                        );
                        if socket.write_all(answer.as_bytes()).await.is_err()
                            || socket.write_all(&body).await.is_err()
                        {
                            return;
                        }
                        if close {
                            let _ = socket.shutdown().await;
                            return;
                        }
                    }
                });
            }
        });
        (address, connections)
    }

    fn link(address: &str) -> Link {
        Link::new(Peer::at("peer", address, false), "fleet-token".into(), None)
    }

    #[tokio::test]
    async fn the_pages_of_a_round_share_one_connection() {
        let (address, connections) = fake_peer(Behaviour::KeepAlive).await;
        let link = link(&address);
        for n in 1..=3 {
            let answer = link.post(&json!({"page": n})).await.expect("an answer");
            assert_eq!(answer["n"], n);
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_peer_that_closes_between_pages_is_reached_again() {
        for behaviour in [Behaviour::CloseAfterEach, Behaviour::VanishAfterEach] {
            let (address, connections) = fake_peer(behaviour).await;
            let link = link(&address);
            for n in 1..=3 {
                let answer = link.post(&json!({"page": n})).await.expect("an answer");
                assert_eq!(answer["n"], n);
            }
            assert_eq!(connections.load(Ordering::SeqCst), 3);
        }
    }

    #[tokio::test]
    async fn an_answer_past_the_limit_or_a_refusal_is_an_error_that_says_so() {
        let (address, _) = fake_peer(Behaviour::Huge).await;
        let error = link(&address)
            .post(&json!({}))
            .await
            .expect_err("too large");
        assert_eq!(error, "the peer's answer is larger than 40 MiB");

        let (address, _) = fake_peer(Behaviour::Refuse).await;
        let error = link(&address).post(&json!({})).await.expect_err("refused");
        assert_eq!(error, "the peer answered 401: no such token");
    }
}
