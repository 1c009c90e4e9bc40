//! hAIveMind's sync service, the client side of replication: finding peers (configured and
//! Tailscale), running rounds of pull and push with each through its `POST /api/sync`
//! after every write and every `sync.sync_interval`, backing off from peers that fail, TLS
//! to peers, and the change feed that wakes the service and feeds live events.
//!
//! The engine side (version vectors, pages of operations, applying them) is
//! `haivemind_store::replication`; the HTTP routes other nodes call are in
//! `haivemind-server`. This crate knows HTTP only as a client of those routes.
#![deny(missing_docs)]

mod client;
mod events;
mod tls;

pub use client::{
    Peer, PeerOutcome, PeerState, PeerStates, SyncService, configured_peers, discover_peers,
    fetch_status, sync_interval, tailscale_peers,
};
pub use events::{EventHub, Subscription, op_log_head, watch};
pub use tls::{TlsError, peer_connector};
