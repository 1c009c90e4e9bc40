//! The sync service's client side: for every configured peer, pull what this node lacks
//! and push what the peer lacks, through the peer's `POST /api/sync`, right after local
//! writes (within about a second) and every `sync.sync_interval` (anti-entropy).
//!
//! Peers come from `sync.discovery.machines`. The exchange is idempotent and resumable, so
//! a cut-off or failed round is simply repeated at the next trigger.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use haivemind_core::Config;
use haivemind_core::time_format::now_ms;
use haivemind_store::{OpLogEntry, Store, VersionVector};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::events::EventHub;

/// One peer to replicate with.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its machine id.
    pub machine_id: String,
    /// `host:port` of its sync port.
    pub address: String,
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
}

/// Per-peer state shared with the status route.
pub type PeerStates = Arc<Mutex<BTreeMap<String, PeerState>>>;

/// The peers of `sync.discovery.machines` that have an address: `{"machine_id", "address"}`
/// objects, or `"host:port"` strings whose host is the machine id (port 8899 when absent).
pub fn configured_peers(config: &Config, me: &str) -> Vec<Peer> {
    let Some(machines) = config
        .sync
        .get("discovery")
        .and_then(|d| d.get("machines"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    machines
        .iter()
        .filter_map(|entry| match entry {
            Value::String(text) => {
                let host = text.rsplit_once(':').map_or(text.as_str(), |(h, _)| h);
                let address = if text.contains(':') {
                    text.clone()
                } else {
                    format!("{text}:8899")
                };
                Some(Peer {
                    machine_id: host.to_string(),
                    address,
                })
            }
            Value::Object(map) => Some(Peer {
                machine_id: map.get("machine_id")?.as_str()?.to_string(),
                address: map.get("address")?.as_str()?.to_string(),
            }),
            _ => None,
        })
        .filter(|peer| peer.machine_id != me)
        .collect()
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
    let output = match std::process::Command::new("tailscale")
        .args(["status", "--json"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
    {
        Ok(output) if output.status.success() => output,
        Ok(_) => {
            tracing::info!(
                "`tailscale status --json` failed; peers come from sync.discovery.machines only"
            );
            return Vec::new();
        }
        // No tailscale here: nothing to discover.
        Err(_) => return Vec::new(),
    };
    let Ok(status) = serde_json::from_slice::<Value>(&output.stdout) else {
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
    peers: Vec<Peer>,
    token: String,
    interval: Duration,
    states: PeerStates,
    events: Arc<EventHub>,
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
    pub(crate) fn new(
        store: Arc<Store>,
        peers: Vec<Peer>,
        token: String,
        interval: Duration,
        states: PeerStates,
        events: Arc<EventHub>,
    ) -> Self {
        Self {
            store,
            peers,
            token,
            interval,
            states,
            events,
            round_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// One round with every peer, side by side (one that hangs holds up no other); records
    /// the outcome per peer for `/api/status` and announces it to WebSocket subscribers.
    pub async fn round(&self) -> Vec<PeerOutcome> {
        let _one_at_a_time = self.round_lock.lock().await;
        let mut round = tokio::task::JoinSet::new();
        for peer in &self.peers {
            let (store, peer, token) = (Arc::clone(&self.store), peer.clone(), self.token.clone());
            round.spawn(async move {
                let outcome = tokio::time::timeout(ROUND_TIMEOUT, sync_with(&store, &peer, &token))
                    .await
                    .unwrap_or_else(|_| Err("timed out after 60 s".into()));
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
        let changed = Arc::clone(&self.events.changed);
        loop {
            self.round().await;
            tokio::select! {
                _ = changed.notified() => {}
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}

/// The longest one round with one peer may take.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);

/// One round with `peer`: pull until nothing is missing here, then push until nothing is
/// missing there. Returns the operations received and sent.
async fn sync_with(store: &Arc<Store>, peer: &Peer, token: &str) -> Result<(u64, u64), String> {
    let me = store.machine_id().to_string();
    let (mut received, mut sent) = (0u64, 0u64);
    let mut theirs: VersionVector;
    loop {
        let mine = blocking(store, |s| s.version_vector()).await?;
        let answer = post(
            peer,
            token,
            &json!({"machine_id": me, "seen": mine, "limit": 500}),
        )
        .await?;
        theirs = seen_of(&answer)?;
        let ops = ops_of(&answer)?;
        received += ops.len() as u64;
        if !ops.is_empty() {
            blocking(store, move |s| s.apply_remote(&ops)).await?;
        }
        if answer["more"] != json!(true) {
            break;
        }
    }
    loop {
        let seen = theirs.clone();
        let ops = blocking(store, move |s| s.ops_after(&seen, 500)).await?;
        if ops.is_empty() {
            return Ok((received, sent));
        }
        sent += ops.len() as u64;
        let wire: Vec<Value> = ops.iter().map(OpLogEntry::to_wire).collect();
        let mine = blocking(store, |s| s.version_vector()).await?;
        let answer = post(
            peer,
            token,
            &json!({"machine_id": me, "seen": mine, "ops": wire, "limit": 1}),
        )
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

/// `GET /api/status` of the node at `address` (`host:port`), as `haivemind peers` asks its
/// own server.
pub async fn fetch_status(address: &str, token: &str) -> Result<Value, String> {
    let peer = Peer {
        machine_id: String::new(),
        address: address.to_string(),
    };
    request(&peer, token, "GET", "/api/status", None).await
}

/// `POST /api/sync` to `peer` over plain HTTP/1.1; the answer's JSON.
async fn post(peer: &Peer, token: &str, body: &Value) -> Result<Value, String> {
    request(peer, token, "POST", "/api/sync", Some(body)).await
}

async fn request(
    peer: &Peer,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, String> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(&peer.address),
    )
    .await
    .map_err(|_| format!("connecting to {} timed out", peer.address))?
    .map_err(|e| format!("cannot connect to {}: {e}", peer.address))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        peer.address,
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the peer's answer is not HTTP")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap_or("");
    let mut payload = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        payload = dechunk(&payload);
    }
    if status != "200" {
        return Err(format!(
            "the peer answered {status}: {}",
            String::from_utf8_lossy(&payload)
                .chars()
                .take(300)
                .collect::<String>()
        ));
    }
    serde_json::from_slice(&payload).map_err(|e| format!("the peer's answer is not JSON: {e}"))
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
