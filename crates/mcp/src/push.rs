//! How fleet broadcasts reach connected clients, by the mechanism each protocol version
//! provides:
//!
//! - up to 2025-11-25 (sessions): a `notifications/message` (logger `haivemind.broadcast`,
//!   level from the severity) to every session, and `notifications/resources/updated` for
//!   `haivemind://broadcasts` to sessions that `resources/subscribe`d to it;
//! - 2026-07-28 (stateless, no logging): `notifications/resources/updated` for
//!   `haivemind://broadcasts` on each `subscriptions/listen` stream that asked for it. The
//!   client then reads the resource, which lists the newest broadcasts.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rmcp::model::{ResourceUpdatedNotificationParam, SubscriptionFilter};
use rmcp::service::{SubscriptionContext, SubscriptionSink};
use rmcp::{Peer, RoleServer};

/// The resource a client subscribes to for broadcasts.
pub const BROADCASTS_URI: &str = "haivemind://broadcasts";

/// The resources a client may subscribe to.
pub(crate) fn subscribable(uri: &str) -> bool {
    uri == BROADCASTS_URI
}

/// The clients waiting for broadcasts, shared by every clone of the server.
#[derive(Default)]
pub(crate) struct Listeners {
    next_id: AtomicU64,
    /// Open `subscriptions/listen` streams (2026-07-28).
    streams: Mutex<Vec<(u64, SubscriptionSink)>>,
    /// Sessions that subscribed with `resources/subscribe` (up to 2025-11-25).
    sessions: Mutex<Vec<Peer<RoleServer>>>,
}

impl Listeners {
    /// What of a `subscriptions/listen` filter is honoured: resource subscriptions to
    /// `haivemind://broadcasts`, nothing else.
    pub(crate) fn accept(requested: &SubscriptionFilter) -> SubscriptionFilter {
        let uris: Vec<String> = requested
            .resource_subscriptions
            .iter()
            .flatten()
            .filter(|uri| subscribable(uri))
            .cloned()
            .collect();
        SubscriptionFilter::builder()
            .resource_subscriptions(uris)
            .build()
    }

    /// Holds one listen stream open until the client ends it.
    pub(crate) async fn listen(&self, context: SubscriptionContext) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let wants_broadcasts = context
            .accepted()
            .resource_subscriptions
            .as_ref()
            .is_some_and(|uris| uris.iter().any(|u| u == BROADCASTS_URI));
        if wants_broadcasts && let Ok(mut streams) = self.streams.lock() {
            streams.push((id, context.sink().clone()));
        }
        context.cancelled().await;
        if let Ok(mut streams) = self.streams.lock() {
            streams.retain(|(other, _)| *other != id);
        }
    }

    /// Remembers a session's `resources/subscribe`.
    pub(crate) fn subscribe(&self, peer: Peer<RoleServer>) {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.retain(|p| !p.is_transport_closed());
            sessions.push(peer);
        }
    }

    /// Forgets a session's subscription.
    pub(crate) fn unsubscribe(&self, peer: &Peer<RoleServer>) {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.retain(|p| !p.is_transport_closed() && !same_peer(p, peer));
        }
    }

    /// Tells every subscriber that `haivemind://broadcasts` changed.
    pub(crate) async fn broadcast_arrived(&self) {
        let streams: Vec<SubscriptionSink> = self
            .streams
            .lock()
            .map(|s| s.iter().map(|(_, sink)| sink.clone()).collect())
            .unwrap_or_default();
        for sink in streams {
            if let Err(error) = sink.notify_resource_updated(BROADCASTS_URI).await {
                tracing::debug!(%error, "a listen stream missed a broadcast");
            }
        }
        let sessions: Vec<Peer<RoleServer>> = self
            .sessions
            .lock()
            .map(|mut s| {
                s.retain(|p| !p.is_transport_closed());
                s.clone()
            })
            .unwrap_or_default();
        for peer in sessions {
            let update = ResourceUpdatedNotificationParam::new(BROADCASTS_URI);
            if let Err(error) = peer.notify_resource_updated(update).await {
                tracing::debug!(%error, "a subscribed session missed a broadcast");
            }
        }
    }
}

/// Whether two handles reach the same session: clones of a session's peer share its
/// handshake record.
fn same_peer(a: &Peer<RoleServer>, b: &Peer<RoleServer>) -> bool {
    match (a.peer_info(), b.peer_info()) {
        (Some(a), Some(b)) => std::sync::Arc::ptr_eq(&a, &b),
        _ => false,
    }
}
