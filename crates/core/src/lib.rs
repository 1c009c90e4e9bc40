//! hAIveMind's shared vocabulary: what a memory is, how the fleet orders changes, how the
//! server is configured, and the seam through which an embedding model plugs into the engine.
//!
//! - [`memory`]: [`Memory`], its [`Scope`] and [`Confidentiality`], the validated
//!   [`NewMemory`] and [`MemoryPatch`] inputs, and the built-in categories.
//! - [`hlc`]: the hybrid logical clock ([`HlcStamp`], [`HybridClock`]) that stamps every change.
//! - [`config`]: [`Config`], loaded from `config/config.json` and `HAIVEMIND_*` variables.
//! - [`embedder`]: the [`Embedder`] trait the engine calls to turn text into vectors.
//!
//! Architecture invariant: this crate does no IO beyond reading the config file, appending
//! to the audit log and keeping private files private ([`private_files`]), and knows
//! nothing of SQLite, MCP, HTTP or async runtimes.
#![deny(missing_docs)]

pub mod audit;
pub mod config;
pub mod config_keys;
pub mod embedder;
pub mod error;
pub mod hlc;
pub mod memory;
pub mod private_files;
pub mod security;
pub mod storage_config;
pub mod time_format;
pub mod timings;

pub use config::Config;
pub use embedder::{EmbedError, Embedder};
pub use error::{ConfigError, InvalidInput};
pub use hlc::{HlcStamp, HybridClock};
pub use memory::{
    BUILTIN_CATEGORIES, Confidentiality, Deletion, Memory, MemoryId, MemoryPatch, MemoryRules,
    NewMemory, Scope,
};

/// The version of hAIveMind, as reported by `/health`, `status` and the MCP server info.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
