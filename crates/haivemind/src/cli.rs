//! Command-line flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// hAIveMind: collective memory for AI agents, over MCP.
///
/// Data lives in one SQLite file under $HAIVEMIND_DATA_DIR (default
/// ~/.local/share/haivemind). Configuration comes from $HAIVEMIND_CONFIG,
/// ./config/config.json or ~/.config/haivemind/config.json, then HAIVEMIND_* variables.
#[derive(Debug, Parser)]
#[command(name = "haivemind", version, about, long_about)]
pub struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Run the command on the hAIveMind server at this URL (like https://hive:8900)
    /// instead of this machine's data directory, with the token in $HAIVEMIND_TOKEN: store,
    /// search, context, get, recent, delete, recover, stats, status, peers, incidents,
    /// drift, agents, tasks, broadcast, and token (with an admin token). With install,
    /// registers that server.
    #[arg(long, global = true, env = "HAIVEMIND_REMOTE", value_name = "URL")]
    pub remote: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve MCP over stdin/stdout, for Claude Code and other agents on this machine.
    Mcp,
    /// Serve remote MCP over HTTP (`/mcp`, legacy `/sse`, `/health`) for agents on other
    /// machines, behind tokens (`haivemind token create`), the network allowlist and, when
    /// security.tls is set, TLS. Prints `listening mcp URL` on stdout once ready.
    Serve(ServeArgs),
    /// Show the replication peers and how syncing with each is going, as the running
    /// `haivemind serve` reports it (asks the sync port with $HAIVEMIND_TOKEN, else the
    /// fleet token security.api_token).
    Peers,
    /// List incidents (record_incident), newest first.
    Incidents {
        /// Only this status: open, investigating, mitigated, resolved, closed.
        #[arg(long)]
        status: Option<String>,
        /// Only this severity: low, medium, high, critical.
        #[arg(long)]
        severity: Option<String>,
        /// Only incidents that affected this system.
        #[arg(long)]
        system: Option<String>,
        /// How many (at most 1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show which machines differ from the newest version of a configuration
    /// (sync_infrastructure_config), with a unified diff each.
    Drift {
        /// The configuration's name.
        name: String,
    },
    /// List the fleet's agents (registered with register_agent on any machine): role,
    /// capabilities, last heartbeat, open tasks.
    Agents {
        /// Also agents not heard from within claudeops.agent_registry.agent_ttl.
        #[arg(long)]
        all: bool,
    },
    /// List delegated tasks, newest first, or show one with its history.
    Tasks {
        /// Show this task in full.
        id: Option<String>,
        /// Only tasks in this state: pending, assigned, accepted, in_progress, completed,
        /// failed, cancelled, expired.
        #[arg(long)]
        status: Option<String>,
        /// Only tasks held by this agent.
        #[arg(long)]
        agent: Option<String>,
        /// How many to list (at most 500).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Broadcast a discovery to every agent of the fleet (stored as a memory tagged
    /// broadcast; pushed to WebSocket subscribers and MCP clients as it replicates).
    Broadcast {
        /// The message.
        message: String,
        /// info, warning, error or critical.
        #[arg(long, default_value = "info")]
        severity: String,
        /// The memory category.
        #[arg(long, default_value = "global")]
        category: String,
    },
    /// Install hAIveMind for an agent tool: the hv-* slash commands (and remember, recall),
    /// a marked section in CLAUDE.md (AGENTS.md for Cursor and Codex) and the server in
    /// .mcp.json. Re-running changes only what is outdated; files you edited are kept and
    /// reported unless --force. `clean` removes only what was installed and is unchanged,
    /// in both the project and the home directory.
    Install {
        /// personal (~/.claude), project (the current directory), or clean; default: the
        /// project when the current directory is one (.git, .claude, CLAUDE.md or
        /// .mcp.json), else personal.
        location: Option<String>,
        /// Replace files you edited.
        #[arg(long)]
        force: bool,
        /// The agent tool: claude, cursor (.cursor/commands) or codex (~/.codex/prompts).
        #[arg(long, default_value = "claude")]
        tool: String,
    },
    /// Make, list and revoke the tokens HTTP clients present as `Authorization: Bearer`.
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
    /// Store a memory.
    Store(StoreArgs),
    /// Search memories by keywords (and by meaning once a model is loaded).
    Search(SearchArgs),
    /// Print what an agent starting work should know (the get_context tool): open
    /// incidents, an agent's open tasks, the memories most relevant to --query and
    /// --project, and the newest ones, packed into at most --max-tokens tokens
    Context {
        /// What the work is about.
        #[arg(long)]
        query: Option<String>,
        /// Only memories of this project.
        #[arg(long)]
        project: Option<String>,
        /// Include this agent's open tasks (its roster id, like claude-code@laptop).
        #[arg(long)]
        agent: Option<String>,
        /// The budget in tokens (50-32000), counted with the model's tokenizer.
        #[arg(long, default_value_t = 2000)]
        max_tokens: usize,
        /// Run as a Claude Code SessionStart hook (what `haivemind install` registers):
        /// read the hook's JSON on stdin, take the project from its `cwd` (the enclosing
        /// git repository's name), and answer with the pack as the hook's
        /// `additionalContext`. Never fails the session: on any error it prints nothing,
        /// logs why to stderr and exits 0.
        #[arg(long)]
        hook: bool,
    },
    /// Show one memory.
    Get {
        /// The memory's id.
        id: String,
    },
    /// Show the newest memories.
    Recent(RecentArgs),
    /// Delete a memory (soft by default; recoverable for memory.recover_days).
    Delete {
        /// The memory's id.
        id: String,
        /// Remove it for good, everywhere.
        #[arg(long)]
        hard: bool,
        /// Why it is deleted.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Bring back a soft-deleted memory.
    Recover {
        /// The memory's id.
        id: String,
    },
    /// Count memories by category, scope, machine and user.
    Stats,
    /// Show this node: machine id, version, data location, counts, search capability.
    Status,
    /// Make the running `haivemind serve` read its configuration again (as SIGHUP and
    /// `systemctl reload haivemind` do): tokens of the config and its token files, the TLS
    /// certificate, rate limits, peers and the fleet token, the log level change in place;
    /// open sessions stay. A config that fails validation is refused with the reason and
    /// the running one stays. Prints what changed and what waits for a restart.
    Reload,
    /// Check this node the way an operator would: config, data directory permissions,
    /// database integrity, model files and digests, ports (free or ours), TLS certificate
    /// expiry, each peer (reachable, version, clock offset), disk space, WAL size. Each
    /// check is ok, warn or fail with a fix; exits non-zero when any fails. With --json:
    /// {"status", "checks": [{"name", "status", "detail", "fix"?}]}.
    Doctor,
    /// Write every memory as JSON lines (to stdout, or --output).
    Export {
        /// The file to write; stdout when absent.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Import memories: a JSON-lines file written by `export` (or by hand), the official MCP
    /// memory server's memory.jsonl (one memory per entity, with its observations and
    /// relations), Claude Code session transcripts (a .jsonl file, or a directory of them
    /// like ~/.claude/projects/<project>: one memory per exchange), or Confluence and Jira.
    /// Importing the same file again changes nothing.
    Import {
        /// A file or a directory of .jsonl transcripts; or `confluence` or `jira`, followed
        /// by the space or project key to import from the configured server (connectors.*).
        source: String,
        /// With `confluence`: the space key; with `jira`: the project key.
        key: Option<String>,
        /// Confluence: only the page with this title.
        #[arg(long)]
        title: Option<String>,
        /// Jira: more JQL, ANDed with the project.
        #[arg(long)]
        jql: Option<String>,
        /// Jira: only these issue types (repeatable), like --issue-type Bug.
        #[arg(long = "issue-type")]
        issue_types: Vec<String>,
        /// At most this many pages or issues.
        #[arg(long)]
        limit: Option<usize>,
        /// The file's format: haivemind, memory-server or claude-code (default: told from
        /// its first records).
        #[arg(long, value_parser = ["haivemind", "memory-server", "claude-code"])]
        format: Option<String>,
    },
    /// Write a consistent copy of this node's store to FILE while `haivemind serve` goes on
    /// taking writes (SQLite's VACUUM INTO), with a manifest inside (version, machine id,
    /// counts, digests of the replicated state and of every table). The file is
    /// owner-only (0600) and never overwritten. A PostgreSQL hub is backed up with
    /// PostgreSQL's own tools (docs/HUB.md).
    Backup {
        /// The file to write (it must not exist).
        file: PathBuf,
    },
    /// Restore a backup into this node's data directory. Only into an empty one unless
    /// --force (then the old database is kept as haivemind.sqlite3.before-restore). The
    /// copy's digests must match its manifest before it is moved into place. Stop
    /// `haivemind serve` first; when it starts again its peers send it everything since
    /// the backup, erasures included.
    Restore {
        /// A file written by `haivemind backup`.
        file: PathBuf,
        /// Replace a database that holds data.
        #[arg(long)]
        force: bool,
    },
    /// Hard-delete soft-deleted memories older than memory.recover_days, and compact the op
    /// log of records removed more than sync.compact_removed_after_days (7) ago.
    Purge,
    /// Embed every memory that lacks a vector of the loaded model (after an import, a
    /// model change, or writes made without the model), with a progress bar. Safe to stop
    /// and run again; the server also does this in the background at start-up.
    Reindex,
    /// Copy this node's whole SQLite store into a hub's PostgreSQL database (--to), or a
    /// hub's database into this node's SQLite file (--from): memories, history, vectors,
    /// the op log, tombstones, agents, tasks, tokens and checkpoints. The target must be
    /// empty; the copy is proved by equal digests of every table. The URL defaults to
    /// storage.postgres.url / HAIVEMIND_DATABASE_URL (prefer those: a password on the
    /// command line is visible to other users in the process list).
    #[command(group(clap::ArgGroup::new("direction").required(true)))]
    Migrate {
        /// Copy into this PostgreSQL database (a libpq URL; empty for the configured one).
        #[arg(long, group = "direction", num_args = 0..=1, default_missing_value = "", value_name = "URL")]
        to: Option<String>,
        /// Copy from this PostgreSQL database into this node's SQLite file.
        #[arg(long, group = "direction", num_args = 0..=1, default_missing_value = "", value_name = "URL")]
        from: Option<String>,
    },
    /// Measure this machine: `store` (engine), `embedder`, `hybrid` or `locomo`.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

/// `haivemind serve` flags; each overrides its `server.*` key.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to bind (server.host; default 127.0.0.1). Binding beyond loopback without
    /// TLS sends tokens in clear text; the server warns.
    #[arg(long)]
    pub host: Option<String>,
    /// Remote MCP port (server.mcp_port; default 8900; 0 picks a free one).
    #[arg(long)]
    pub mcp_port: Option<u16>,
    /// Sync service port (server.sync_port; default 8899; 0 picks a free one).
    #[arg(long)]
    pub sync_port: Option<u16>,
}

/// `haivemind token` actions.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token. It is printed once, alone on the last line of stdout, and stored
    /// only as a digest.
    Create {
        /// admin (everything, including erasure), agent (read and write), or readonly
        /// (read, never confidential or pii memories).
        #[arg(long, value_parser = ["admin", "agent", "readonly"])]
        role: String,
        /// A name to recognise it by in `token list` and the audit log.
        #[arg(long)]
        name: Option<String>,
        /// The tools `tools/list` offers this token's clients: core, team, devops or all
        /// (default: `mcp.tool_profile`). Tools outside it still answer by name.
        #[arg(long, value_parser = ["core", "team", "devops", "all"])]
        profile: Option<String>,
    },
    /// List tokens (never their secrets): id, name, role, created, last used, revoked.
    List,
    /// Revoke a token by id (`tok_…`) or name; servers refuse it within a second.
    Revoke {
        /// The token's id or name.
        token: String,
    },
}

/// What `haivemind bench` measures.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Store, full-text search and stdio round-trip latency on a synthetic corpus (no model).
    Store {
        /// Corpus sizes to measure at, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
        sizes: Vec<usize>,
        /// Search queries per size.
        #[arg(long, default_value_t = 500)]
        queries: usize,
        /// Which synthetic corpus: zipf (realistic word frequencies) or dense (worst case).
        #[arg(long, value_enum, default_value = "zipf")]
        corpus: crate::bench::Corpus,
        /// The store to measure: a SQLite file in a scratch directory (default), or an
        /// empty PostgreSQL database named by HAIVEMIND_DATABASE_URL.
        #[arg(long, value_enum, default_value = "sqlite")]
        backend: crate::locomo::Backend,
    },
    /// The embedding model: load time, memory, latency per text.
    Embedder,
    /// What `tools/list` costs an agent's context under each tool profile, in tokens.
    Tools,
    /// Store with embedding, and hybrid search with query embedding, at each size; and the
    /// vector index's recall@10 against exact search.
    Hybrid {
        /// Corpus sizes to measure at, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
        sizes: Vec<usize>,
        /// Search queries per size.
        #[arg(long, default_value_t = 300)]
        queries: usize,
        /// The store to measure: a SQLite file in a scratch directory (default), or an
        /// empty PostgreSQL database named by HAIVEMIND_DATABASE_URL.
        #[arg(long, value_enum, default_value = "sqlite")]
        backend: crate::locomo::Backend,
    },
    /// Retrieval quality (SPEC section 10) on a LoCoMo-format file, through a real
    /// `haivemind mcp`.
    Locomo {
        /// The LoCoMo-format JSON file.
        #[arg(long, value_name = "FILE")]
        data: PathBuf,
        /// What to rank by: hybrid (semantic=true), full-text (semantic=false), or vectors
        /// alone (semantic=true with search.full_text_weight=0).
        #[arg(long, value_enum, default_value = "hybrid")]
        mode: crate::locomo::Mode,
        /// Store once, then ask every question under each fusion setting of a grid
        /// ($HAIVEMIND_SWEEP as "fusion,full_text_weight,vector_weight,rank_constant,
        /// depth[,min_similarity[,neighbour_weight]];..." or a built-in grid) and print a
        /// row per setting.
        #[arg(long)]
        sweep: bool,
        /// Leave one conversation out: for each conversation, choose the setting of the
        /// sweep's grid that scores best on the others, and score it on that one against
        /// the defaults. What the defaults would score on conversations never tuned on.
        #[arg(long, conflicts_with = "sweep")]
        folds: bool,
        /// Add this many memories of other users before the questions (each two of the
        /// file's turns joined), to time full-text search on a store of LoCoMo-like text at
        /// that size. Only with `--mode full-text`: they are not embedded.
        #[arg(long, value_name = "MEMORIES", default_value_t = 0)]
        pad: usize,
        /// The store to measure: a SQLite file in a scratch directory (default), or an
        /// empty PostgreSQL database named by HAIVEMIND_DATABASE_URL.
        #[arg(long, value_enum, default_value = "sqlite")]
        backend: crate::locomo::Backend,
    },
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The text to remember.
    pub content: String,
    /// The category.
    #[arg(long, short, default_value = "global")]
    pub category: String,
    /// Where it came from.
    #[arg(long)]
    pub context: Option<String>,
    /// Tags, comma-separated or repeated.
    #[arg(long, short, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// A JSON object of metadata.
    #[arg(long)]
    pub metadata: Option<String>,
    /// The owning user.
    #[arg(long, default_value = "default")]
    pub user: String,
    /// The project.
    #[arg(long)]
    pub project: Option<String>,
    /// Scope: machine-local, project-local, project-shared, user-global, team-global, private.
    #[arg(long, default_value = "project-shared")]
    pub scope: String,
    /// Confidentiality: normal, internal, confidential, pii.
    #[arg(long, default_value = "normal")]
    pub confidentiality: String,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// What to look for.
    pub query: String,
    /// Only this category.
    #[arg(long, short)]
    pub category: Option<String>,
    /// Only this user's memories.
    #[arg(long)]
    pub user: Option<String>,
    /// Only this project.
    #[arg(long)]
    pub project: Option<String>,
    /// Only memories with all these tags (comma-separated or repeated).
    #[arg(long, short, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Only memories written on this machine.
    #[arg(long)]
    pub machine: Option<String>,
    /// Only memories created at or after this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    pub since: Option<String>,
    /// Only memories created before this time.
    #[arg(long)]
    pub until: Option<String>,
    /// How many results.
    #[arg(long, short = 'n', default_value_t = 10)]
    pub limit: usize,
    /// How many results to skip.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// Keywords only, no semantic ranking.
    #[arg(long)]
    pub full_text: bool,
}

#[derive(Debug, Args)]
pub struct RecentArgs {
    /// How far back, in hours.
    #[arg(long, default_value_t = 24)]
    pub hours: u32,
    /// How many.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: usize,
    /// Only this category.
    #[arg(long, short)]
    pub category: Option<String>,
    /// Only this user's memories.
    #[arg(long)]
    pub user: Option<String>,
}
