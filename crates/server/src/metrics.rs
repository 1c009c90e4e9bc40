//! `GET /metrics`: the node's state in Prometheus's text exposition format (version 0.0.4),
//! for scraping beside `/api/status`.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use haivemind_core::VERSION;

use crate::AppState;

/// `GET /metrics`.
pub(crate) async fn render(State(state): State<Arc<AppState>>) -> Response {
    let store = Arc::clone(&state.store);
    let counts = tokio::task::spawn_blocking(move || store.stats()).await;
    let stats = match counts {
        Ok(Ok(stats)) => stats,
        Ok(Err(error)) => return failed(error),
        Err(error) => return failed(error),
    };
    let mut out = String::new();
    let machine = label(state.store.machine_id());
    gauge(
        &mut out,
        "haivemind_info",
        "This node: its machine id and version.",
        &[(
            format!("machine_id=\"{machine}\",version=\"{}\"", label(VERSION)),
            1.0,
        )],
    );
    gauge(
        &mut out,
        "haivemind_memories",
        "Live (not deleted) memories.",
        &[(String::new(), stats.live as f64)],
    );
    gauge(
        &mut out,
        "haivemind_memories_deleted",
        "Soft-deleted memories, still recoverable.",
        &[(String::new(), stats.deleted as f64)],
    );
    let by_category: Vec<(String, f64)> = stats
        .by_category
        .iter()
        .map(|(category, n)| (format!("category=\"{}\"", label(category)), *n as f64))
        .collect();
    gauge(
        &mut out,
        "haivemind_memories_by_category",
        "Live memories per category.",
        &by_category,
    );
    gauge(
        &mut out,
        "haivemind_op_log_entries",
        "Entries in the operation log.",
        &[(String::new(), stats.op_log_entries as f64)],
    );
    gauge(
        &mut out,
        "haivemind_tombstones",
        "Removed records remembered so that no peer can bring them back.",
        &[(String::new(), stats.tombstones as f64)],
    );
    gauge(
        &mut out,
        "haivemind_database_bytes",
        "Size of the SQLite file (without its WAL).",
        &[(String::new(), stats.database_bytes as f64)],
    );
    gauge(
        &mut out,
        "haivemind_websocket_connections",
        "Open /ws subscriptions.",
        &[(String::new(), state.events.subscribers() as f64)],
    );
    let peers = state
        .peer_states
        .lock()
        .map(|peers| peers.clone())
        .unwrap_or_default();
    let now = haivemind_core::time_format::now_ms();
    let per_peer =
        |value: &dyn Fn(&haivemind_sync::PeerState) -> Option<f64>| -> Vec<(String, f64)> {
            peers
                .iter()
                .filter_map(|(peer, s)| Some((format!("peer=\"{}\"", label(peer)), value(s)?)))
                .collect()
        };
    gauge(
        &mut out,
        "haivemind_peer_up",
        "1 when the last sync round with the peer succeeded.",
        &per_peer(&|s| Some(if s.last_error.is_none() { 1.0 } else { 0.0 })),
    );
    gauge(
        &mut out,
        "haivemind_peer_last_sync_age_seconds",
        "Seconds since the last successful sync round with the peer.",
        &per_peer(&|s| s.last_sync_ms.map(|at| (now - at) as f64 / 1000.0)),
    );
    counter(
        &mut out,
        "haivemind_sync_ops_received_total",
        "Operations received from the peer.",
        &per_peer(&|s| Some(s.received as f64)),
    );
    counter(
        &mut out,
        "haivemind_sync_ops_sent_total",
        "Operations sent to the peer.",
        &per_peer(&|s| Some(s.sent as f64)),
    );
    counter(
        &mut out,
        "haivemind_sync_rounds_total",
        "Sync rounds run with the peer.",
        &per_peer(&|s| Some(s.rounds as f64)),
    );
    counter(
        &mut out,
        "haivemind_sync_failures_total",
        "Sync rounds with the peer that failed.",
        &per_peer(&|s| Some(s.failures as f64)),
    );
    histograms(
        &mut out,
        "haivemind_tool_duration_seconds",
        "How long tool calls take (MCP and the REST API), by tool.",
        "tool",
        &state.mcp.timings().snapshot(),
    );
    histograms(
        &mut out,
        "haivemind_http_request_duration_seconds",
        "How long requests to the MCP port take, by method and route.",
        "route",
        &state.route_timings.snapshot(),
    );
    histograms(
        &mut out,
        "haivemind_embedding_duration_seconds",
        "How long the model takes to embed: write (a memory), query (a search), batch (catching up).",
        "kind",
        &haivemind_core::timings::EMBEDDING.snapshot(),
    );
    histograms(
        &mut out,
        "haivemind_sync_round_duration_seconds",
        "How long a sync round (pull and push) with the peer takes.",
        "peer",
        &haivemind_core::timings::SYNC_ROUNDS.snapshot(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

fn gauge(out: &mut String, name: &str, help: &str, samples: &[(String, f64)]) {
    family(out, name, "gauge", help, samples);
}

fn counter(out: &mut String, name: &str, help: &str, samples: &[(String, f64)]) {
    family(out, name, "counter", help, samples);
}

fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// A histogram family: cumulative `_bucket` samples with `le`, then `_sum` and `_count`,
/// one series per key.
fn histograms(
    out: &mut String,
    name: &str,
    help: &str,
    key: &str,
    series: &std::collections::BTreeMap<String, haivemind_mcp::timings::Histogram>,
) {
    use haivemind_mcp::timings::BUCKETS;
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (value, histogram) in series {
        let labels = format!("{key}=\"{}\"", label(value));
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(histogram.counts.iter()) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"+Inf\"}} {}",
            histogram.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", histogram.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", histogram.count);
    }
}

/// A label value escaped as the format asks (backslash, quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn failed(error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "metrics failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "the server failed; see its log\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_end_with_inf_sum_and_count() {
        let timings = haivemind_mcp::timings::Timings::default();
        timings.observe("search_memories", std::time::Duration::from_millis(3));
        timings.observe("search_memories", std::time::Duration::from_millis(30));
        let mut out = String::new();
        histograms(&mut out, "t_seconds", "Help.", "tool", &timings.snapshot());
        assert!(out.contains("# TYPE t_seconds histogram\n"), "{out}");
        assert!(
            out.contains("t_seconds_bucket{tool=\"search_memories\",le=\"0.005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("t_seconds_bucket{tool=\"search_memories\",le=\"0.05\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("t_seconds_bucket{tool=\"search_memories\",le=\"+Inf\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("t_seconds_count{tool=\"search_memories\"} 2\n"),
            "{out}"
        );
    }

    #[test]
    fn families_follow_the_exposition_format() {
        let mut out = String::new();
        gauge(
            &mut out,
            "x_total",
            "Help text.",
            &[
                (format!("peer=\"{}\"", label("a\"b")), 2.0),
                (String::new(), 1.5),
            ],
        );
        assert_eq!(
            out,
            "# HELP x_total Help text.\n# TYPE x_total gauge\nx_total{peer=\"a\\\"b\"} 2\nx_total 1.5\n"
        );
    }
}
