//! The change feed: one task watches the op log and turns every new operation, local or
//! replicated, into a live event for subscribers (the server's `/ws/{machine_id}`), and wakes the sync
//! service so new writes reach peers within a second.
//!
//! Events describe records that may leave this machine only (a private or confidential
//! memory's changes are never announced), and carry ids and stamps, never content
//! (subscribers that want the record ask for it with their own token and role) — except
//! broadcasts, whose message is meant for every agent of the fleet.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use haivemind_store::{OpKind, OpLogEntry, Store};
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};

/// How often the op log is looked at.
const POLL: Duration = Duration::from_millis(100);
/// Events a slow subscriber may fall behind by before it is told it missed some.
const BACKLOG: usize = 1_024;

/// Live events, and the wake-up call for the sync service.
pub struct EventHub {
    sender: broadcast::Sender<Arc<str>>,
    /// Notified whenever the op log moves.
    changed: Arc<Notify>,
    subscribers: AtomicUsize,
}

impl Default for EventHub {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(BACKLOG).0,
            changed: Arc::new(Notify::new()),
            subscribers: AtomicUsize::new(0),
        }
    }
}

impl EventHub {
    /// Sends `event` to every subscriber (none listening is fine).
    pub fn publish(&self, event: Value) {
        let _ = self.sender.send(Arc::from(event.to_string()));
    }

    /// A new subscription; counted in `connected_websockets` until the guard drops.
    pub fn subscribe(self: &Arc<Self>) -> (broadcast::Receiver<Arc<str>>, Subscription) {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        (
            self.sender.subscribe(),
            Subscription {
                hub: Arc::clone(self),
            },
        )
    }

    /// A subscription for the server's own use, not counted as a WebSocket.
    pub fn subscribe_quietly(&self) -> broadcast::Receiver<Arc<str>> {
        self.sender.subscribe()
    }

    /// Woken whenever the op log moves.
    pub(crate) fn changed(&self) -> Arc<Notify> {
        Arc::clone(&self.changed)
    }

    /// Open subscriptions.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }
}

/// Counts one subscriber while it lives.
pub struct Subscription {
    hub: Arc<EventHub>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The op log's end: where a watcher started now begins. Read on a blocking thread (the
/// PostgreSQL backend's client blocks); 0 if the store cannot be read.
pub async fn op_log_head(store: &Arc<Store>) -> i64 {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || store.op_log_head())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0)
}

/// Watches the op log after `after` until the task is aborted: publishes an event per new
/// shareable operation and wakes the sync service. History before `after` is not replayed
/// (`/api/sync` is how a node catches up).
///
/// `after` is read with [`op_log_head`] before anything can write (before the ports are
/// announced), not when this task first runs: a write landing between the two would
/// otherwise never become an event.
pub async fn watch(store: Arc<Store>, hub: Arc<EventHub>, after: i64) {
    let mut after = after;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        loop {
            let read_store = Arc::clone(&store);
            let batch = tokio::task::spawn_blocking(move || read_store.ops_since(after, 500))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let Some(last) = batch.last() else {
                break;
            };
            after = last.seq;
            hub.changed.notify_one();
            for op in batch.iter().filter(|op| op.shareable) {
                if let Some(event) = event_of(store.machine_id(), op) {
                    hub.publish(event);
                }
            }
            if batch.len() < 500 {
                break;
            }
        }
    }
}

/// The event announcing `op`, if it is worth one (a heartbeat is not).
fn event_of(machine_id: &str, op: &OpLogEntry) -> Option<Value> {
    let action = op.payload.get("action").and_then(Value::as_str);
    match op.record_kind.as_str() {
        "memory" => {
            let broadcast = op.payload.get("metadata").and_then(|m| m.get("broadcast"));
            if let (OpKind::Create, Some(broadcast)) = (op.op, broadcast) {
                // Broadcasts are meant for everyone: the message travels in the event.
                return Some(json!({
                    "type": "broadcast",
                    "machine_id": machine_id,
                    "memory_id": op.record_id,
                    "broadcast_id": op.record_id,
                    "origin": op.stamp.origin,
                    "hlc": op.stamp.time,
                    "message": op.payload.get("content"),
                    "category": op.payload.get("category"),
                    "severity": broadcast.get("severity"),
                    "target_roles": broadcast.get("target_roles"),
                    "from_agent": broadcast.get("from_agent"),
                }));
            }
            let kind = match op.op {
                OpKind::Create => "memory_created",
                OpKind::Update => "memory_updated",
                OpKind::SoftDelete => "memory_deleted",
                OpKind::Recover => "memory_recovered",
                OpKind::HardDelete => "memory_hard_deleted",
                OpKind::Erase => "memory_erased",
                OpKind::Withdraw => "memory_withdrawn",
            };
            Some(json!({
                "type": kind,
                "machine_id": machine_id,
                "record_kind": op.record_kind,
                "memory_id": op.record_id,
                "origin": op.stamp.origin,
                "hlc": op.stamp.time,
                "category": op.payload.get("category"),
            }))
        }
        "task" => {
            let kind = match action? {
                "create" => "task_created",
                "assign" => "task_assigned",
                "claim" => "task_claimed",
                "status" => "task_updated",
                "complete" => "task_completed",
                "expire" => "task_expired",
                _ => return None,
            };
            Some(json!({
                "type": kind,
                "machine_id": machine_id,
                "task_id": op.record_id,
                "origin": op.stamp.origin,
                "hlc": op.stamp.time,
                "agent_id": op.payload.get("agent_id").or_else(|| op.payload.get("assigned_to")),
                "status": op.payload.get("status"),
            }))
        }
        "agent" if action == Some("register") => Some(json!({
            "type": "agent_registered",
            "machine_id": machine_id,
            "agent_id": op.record_id,
            "origin": op.stamp.origin,
            "hlc": op.stamp.time,
            "role": op.payload.get("role"),
            "capabilities": op.payload.get("capabilities"),
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use haivemind_core::NewMemory;
    use haivemind_store::StoreOptions;

    /// `serve` reads the head, announces its ports, and only then may the watcher's task
    /// first run: a client's write in that gap is still announced, and history is not.
    #[tokio::test]
    async fn a_write_after_the_head_is_read_becomes_an_event_even_before_the_watcher_runs() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let store = Arc::new(
            Store::open(StoreOptions::new(dir.path().join("memory.db"), "node-a"))
                .expect("a new store"),
        );
        store
            .create(NewMemory::new("written before the start: history"))
            .expect("a write");
        let hub = Arc::new(EventHub::default());
        let mut events = hub.subscribe_quietly();

        let head = op_log_head(&store).await;
        let written = store
            .create(NewMemory::new("written as the ports were announced"))
            .expect("a write");
        let watcher = tokio::spawn(watch(Arc::clone(&store), Arc::clone(&hub), head));

        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("an event within 10 s")
            .expect("the hub is open");
        let event: Value = serde_json::from_str(&event).expect("events are JSON");
        // The first event is the new write's: the one before the head is not replayed.
        assert_eq!(event["type"], "memory_created");
        assert_eq!(event["memory_id"], written.id.to_string());
        watcher.abort();
    }
}
