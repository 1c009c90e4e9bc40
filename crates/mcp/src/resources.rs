//! The two resources: how an agent should use the collective, and this machine's context.

use haivemind_core::VERSION;
use haivemind_core::time_format::ms_to_rfc3339;
use serde_json::{Value, json};

use crate::error::ToolError;
use crate::tools::ToolContext;

/// The URI of the usage instructions.
pub const INSTRUCTIONS_URI: &str = "haivemind://instructions";
/// The URI of the machine context.
pub const MACHINE_CONTEXT_URI: &str = "haivemind://machine-context";

/// Sent as the server's `instructions` at initialize, so a new agent knows the basics.
pub const SHORT_INSTRUCTIONS: &str = "hAIveMind is the collective memory of your team's AI agents. \
Before starting work, search_memories for what others learned about the systems involved. \
When you learn something another agent would want (a fix, a cause, a system's state, a \
decision), store_memory it with a fitting category and tags. Mark secrets and personal data \
confidential or pii: they never leave this machine. New here? Call install_agent_commands once \
(it installs the /hv-* commands and this agent's CLAUDE.md section; over HTTP it returns the files \
to write), then register_agent with your role and capabilities, and check get_my_tasks. Read \
haivemind://instructions for more.";

/// The full text of `haivemind://instructions`.
pub const INSTRUCTIONS: &str = include_str!("instructions.md");

/// Facts about the machine this server runs on.
pub(crate) fn machine_context(cx: &ToolContext) -> Result<Value, ToolError> {
    let stats = cx.store.stats()?;
    Ok(json!({
        "machine_id": cx.store.machine_id(),
        "hostname": haivemind_core::config::host_name(),
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "version": VERSION,
        "data_dir": cx.server.data_dir.display().to_string(),
        "database": cx.store.path().display().to_string(),
        "memory_count": stats.live,
        "deleted_count": stats.deleted,
        "categories": cx.store.rules().categories,
        "max_content_bytes": cx.store.rules().max_content_bytes,
        "semantic_search": cx.store.embedder_model().is_some(),
        "embedding_model": cx.store.embedder_model(),
        "transport": cx.server.transport,
        "started_at": ms_to_rfc3339(cx.server.started_at_ms),
        // Over stdio nothing replicates; `haivemind serve` knows its peers.
        "peers": cx.server.peer_health.as_ref().map(|health| (health.0)()),
    }))
}
