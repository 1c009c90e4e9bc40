//! hAIveMind's MCP surface: the tools and resources agents use, over the memory engine.
//!
//! [`HaivemindServer`] implements rmcp's `ServerHandler`: `tools/list` comes from the
//! catalogue in [`tools`], and `tools/call` parses the arguments into the tool's input type,
//! makes one engine call on a blocking thread, and answers with a JSON object as
//! `structuredContent` and the same JSON as text. [`serve_stdio`] runs it over stdin/stdout.
//!
//! Each tool is a thin translation of one engine call: input types and result shapes live
//! here, behaviour lives in `haivemind-store`. Errors are mapped in one place,
//! [`error::ToolError::into_result`]: caller mistakes become tool errors that name the field
//! and the rule; an unknown tool is a JSON-RPC error; internal failures are logged and
//! answered with a generic message.
//!
//! This is the only crate that knows MCP.
#![deny(missing_docs)]

mod arguments;
pub mod error;
pub mod jsonrpc;
mod push;
pub mod render;
mod resources;
mod server;
mod stdio_framing;
pub mod tools;

/// The latency histograms (moved to `haivemind-core`, where the engine and the sync
/// service record into them too).
pub use haivemind_core::timings;

pub use push::BROADCASTS_URI;
pub use server::{
    HaivemindServer, PeerHealth, ServeError, ServerContext, serve_lines, serve_stdio,
};
