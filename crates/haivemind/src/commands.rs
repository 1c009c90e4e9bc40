//! What each command does: load config, open the engine, make the call, print the result.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use haivemind_core::memory::json::{from_json, to_json};
use haivemind_core::time_format::{now_ms, parse_optional_rfc3339};
use haivemind_core::{Confidentiality, Config, MemoryId, NewMemory, Scope};
use haivemind_store::{ImportOutcome, MemoryFilter, RecentQuery, SearchQuery, Store};
use serde_json::{Value, json};

use crate::cli::{BenchCommand, Cli, Command, RecentArgs, SearchArgs, StoreArgs};
use crate::node::{
    compact_cutoff_ms, open, open_audit, open_requiring_model, open_serving, open_with_model,
    spawn_hourly_purge,
};
use crate::output::Printer;

pub fn run(cli: Cli) -> Result<()> {
    if matches!(cli.command, Command::Doctor) && cli.remote.is_none() {
        // The doctor reports a config that does not load as a failed check.
        let printer = Printer { json: cli.json };
        if crate::doctor::run(Config::load(), &printer) {
            return Ok(());
        }
        bail!("doctor: at least one check failed (above)");
    }
    let config = Config::load()?;
    if tracing_subscriber::EnvFilter::try_new(&config.logging.level).is_err() {
        bail!(haivemind_core::ConfigError::Invalid {
            key: "logging.level".into(),
            rule: format!(
                "\"{}\" is not a log filter (like info, warn, or haivemind_store=debug)",
                config.logging.level
            ),
        });
    }
    init_logging(
        &config,
        matches!(cli.command, Command::Mcp | Command::Serve(_)),
    );
    for notice in &config.notices {
        tracing::warn!("{notice}");
    }
    let printer = Printer { json: cli.json };
    if let Some(url) = &cli.remote
        && !matches!(cli.command, Command::Install { .. })
    {
        return crate::remote::run(url, &printer, cli.command);
    }
    match cli.command {
        Command::Mcp => serve_mcp(&config),
        Command::Serve(args) => crate::serve::run(config, args),
        Command::Token { action } => crate::tokens::run(&config, &printer, action),
        Command::Peers => peers(&config, &printer),
        Command::Install {
            location,
            force,
            tool,
        } => {
            // A server already running here is what a newcomer who ran scripts/run means
            // to connect to: say how, beside the stdio registration.
            let serving = config
                .data_dir()
                .join("serve.pid")
                .exists()
                .then(|| crate::probe::local_url(&config, config.server.mcp_port));
            crate::install::run(&printer, location, force, cli.remote, &tool, serving)
        }
        Command::Incidents {
            status,
            severity,
            system,
            limit,
        } => crate::devops::incidents(&config, &printer, status, severity, system, limit),
        Command::Drift { name } => crate::devops::drift(&config, &printer, &name),
        Command::Agents { all } => crate::coordination::agents(&config, &printer, all),
        Command::Tasks {
            id,
            status,
            agent,
            limit,
        } => crate::coordination::tasks(&config, &printer, id, status, agent, limit),
        Command::Broadcast {
            message,
            severity,
            category,
        } => crate::coordination::broadcast(&config, &printer, message, &severity, category),
        Command::Store(args) => store(&open_with_model(&config)?.0, &printer, args),
        Command::Search(args) => search(&open_with_model(&config)?.0, &printer, args),
        Command::Context {
            hook: true,
            max_tokens,
            ..
        } => {
            crate::hook::session_start(&config, max_tokens);
            Ok(())
        }
        Command::Context {
            query,
            project,
            agent,
            max_tokens,
            hook: false,
        } => {
            let store = open_with_model(&config)?.0;
            let pack = store.context(&haivemind_store::ContextQuery {
                query,
                project,
                agent_id: agent,
                max_tokens,
                hide_restricted: false,
            })?;
            printer.done(
                json!({
                    "context": pack.text,
                    "memories": pack.memories.iter().map(|m| m.id.to_string()).collect::<Vec<_>>(),
                    "tokens": pack.tokens,
                    "max_tokens": max_tokens,
                    "counted_with": pack.counted_with,
                    "left_out": pack.left_out,
                }),
                pack.text.trim_end(),
            );
            Ok(())
        }
        Command::Get { id } => {
            let memory = open(&config)?.get(MemoryId::parse("id", &id)?)?;
            printer.memory(&memory);
            Ok(())
        }
        Command::Recent(args) => recent(&open(&config)?, &printer, args),
        Command::Delete { id, hard, reason } => {
            let store = open(&config)?;
            let id = MemoryId::parse("id", &id)?;
            if hard {
                store.hard_delete(id, reason)?;
            } else {
                store.soft_delete(id, reason)?;
            }
            audit_cli(
                &config,
                haivemind_core::audit::AuditEvent::new("memory_deleted")
                    .with("memory_id", id.to_string())
                    .with("hard_delete", hard),
            );
            printer.done(
                json!({"id": id.to_string(), "deleted": true, "hard_delete": hard}),
                &format!(
                    "deleted {id}{}",
                    if hard { " for good" } else { " (recoverable)" }
                ),
            );
            Ok(())
        }
        Command::Recover { id } => {
            let memory = open(&config)?.recover(MemoryId::parse("id", &id)?)?;
            audit_cli(
                &config,
                haivemind_core::audit::AuditEvent::new("memory_recovered")
                    .with("memory_id", memory.id.to_string()),
            );
            printer.memory(&memory);
            Ok(())
        }
        Command::Stats => {
            let store = open(&config)?;
            printer.stats(&store, &store.stats()?, &store.created_per_day()?);
            Ok(())
        }
        Command::Status => status(&config, &printer),
        Command::Export { output } => export(&open(&config)?, &printer, output.as_deref()),
        Command::Import {
            source,
            key,
            title,
            jql,
            issue_types,
            limit,
            format,
        } => match (source.as_str(), key) {
            ("confluence" | "jira", Some(key)) => crate::connectors::import(
                &config,
                &printer,
                &source,
                &key,
                title.as_deref(),
                jql.as_deref(),
                &issue_types,
                limit,
            ),
            (_, Some(key)) => Err(anyhow::anyhow!(
                "import {source} {key}: the source is `confluence` or `jira` (or give only a JSON-lines file)"
            )),
            (_, None) => crate::import_files::run(
                &open_with_model(&config)?.0,
                &printer,
                std::path::Path::new(&source),
                format.as_deref(),
            ),
        },
        Command::Backup { file } => {
            let store = open(&config)?;
            let manifest = store.backup_to(&file)?;
            printer.done(
                manifest.to_json(),
                &format!(
                    "backed up {} memories ({} deleted) of {} to {}; state digest {}",
                    manifest.memories,
                    manifest.deleted,
                    manifest.machine_id,
                    file.display(),
                    manifest.state_digest
                ),
            );
            Ok(())
        }
        Command::Restore { file, force } => {
            if config.storage.backend != haivemind_core::storage_config::StorageBackend::Sqlite {
                bail!(haivemind_core::InvalidInput::new(
                    "storage.backend",
                    "a PostgreSQL hub is restored with PostgreSQL's own tools (docs/HUB.md)"
                ));
            }
            let manifest = haivemind_store::backup::restore(&file, &config.database_path(), force)?;
            if manifest.machine_id != config.machine_id() {
                tracing::warn!(
                    backup = %manifest.machine_id,
                    here = %config.machine_id(),
                    "the backup was taken on another machine id; this node will write as {}: set machine_id to {} to continue as that node",
                    config.machine_id(),
                    manifest.machine_id
                );
            }
            printer.done(
                manifest.to_json(),
                &format!(
                    "restored {} memories of {} (backed up {}) into {}; digests verified. Start `haivemind serve`: its peers send what happened since.",
                    manifest.memories,
                    manifest.machine_id,
                    haivemind_core::time_format::ms_to_rfc3339(manifest.created_at_ms),
                    config.database_path().display()
                ),
            );
            Ok(())
        }
        Command::Reload => crate::serve::signal_reload(&config, &printer),
        Command::Doctor => {
            if crate::doctor::run(Ok(config), &printer) {
                Ok(())
            } else {
                bail!("doctor: at least one check failed (above)")
            }
        }
        Command::Reindex => reindex(&config, &printer),
        Command::Migrate { to, from } => crate::migrate::run(&config, &printer, to, from),
        Command::Bench { what } => match what {
            BenchCommand::Store {
                sizes,
                queries,
                corpus,
                backend,
            } => crate::bench::run(&config, &sizes, queries, corpus, backend, printer.json),
            BenchCommand::Embedder => crate::bench::run_embedder(&config.model_dir(), printer.json),
            BenchCommand::Tools => crate::bench_tools::run(&config.model_dir(), printer.json),
            BenchCommand::Hybrid {
                sizes,
                queries,
                backend,
            } => crate::bench_hybrid::run(&config, &sizes, queries, backend, printer.json),
            BenchCommand::Locomo {
                data,
                mode,
                sweep,
                folds,
                pad,
                backend,
            } => {
                let tuning = match (sweep, folds) {
                    (true, _) => crate::locomo::Tuning::Sweep,
                    (_, true) => crate::locomo::Tuning::Folds,
                    _ => crate::locomo::Tuning::None,
                };
                crate::locomo::run(&data, mode, tuning, pad, backend, printer.json)
            }
        },
        Command::Purge => {
            let store = open(&config)?;
            let purged = store.purge_expired()?;
            let compacted = store.compact_removed(compact_cutoff_ms(&config))?;
            printer.done(
                json!({"purged": purged, "compacted_op_log_entries": compacted}),
                &format!(
                    "purged {purged} memories; compacted {compacted} op-log entries of removed records"
                ),
            );
            Ok(())
        }
    }
}

type FilterSetter = Box<dyn Fn(&str) -> std::result::Result<(), String> + Send + Sync>;

/// Replaces the log filter of a running server (`logging.level` on reload).
static LOG_FILTER: std::sync::OnceLock<FilterSetter> = std::sync::OnceLock::new();

/// Sets the log filter to `level` (a `logging.level`); `false` when RUST_LOG fixed it.
pub(crate) fn set_log_level(level: &str) -> std::result::Result<bool, String> {
    match LOG_FILTER.get() {
        Some(set) => set(&format!("{level},rmcp=warn")).map(|()| true),
        None => Ok(false),
    }
}

fn init_logging(config: &Config, stdio_protocol: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| std::env::var("HAIVEMIND_LOG").ok())
        .unwrap_or_else(|| {
            // CLI commands print their own results; only the server narrates by default.
            if stdio_protocol {
                // rmcp narrates every session at info; that is debugging detail here.
                if config.logging.level.contains("rmcp") {
                    config.logging.level.clone()
                } else {
                    format!("{},rmcp=warn", config.logging.level)
                }
            } else {
                "warn".into()
            }
        });
    // Logs always go to stderr: in stdio mode stdout carries protocol frames only. The
    // filter can be replaced later (`haivemind reload`), unless RUST_LOG fixed it.
    let fixed =
        std::env::var_os("RUST_LOG").is_some() || std::env::var_os("HAIVEMIND_LOG").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(false);
    macro_rules! install {
        ($builder:expr) => {{
            let builder = $builder;
            let handle = builder.reload_handle();
            // `try_init` also reports a `log` logger set elsewhere; the filter handle
            // works whenever the subscriber is ours, which a failed reload would say.
            let _ = builder.try_init();
            if !fixed {
                let _ = LOG_FILTER.set(Box::new(move |level: &str| {
                    let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
                    handle.reload(filter).map_err(|e| e.to_string())
                }));
            }
        }};
    }
    match config.logging.format {
        haivemind_core::config::LogFormat::Text => install!(builder.with_filter_reloading()),
        haivemind_core::config::LogFormat::Json => {
            install!(builder.json().with_filter_reloading())
        }
    }
}

fn reindex(config: &Config, printer: &Printer) -> Result<()> {
    let store = open_requiring_model(config).context("cannot reindex")?;
    let model = store.embedder_model().unwrap_or_default().to_string();
    let bar = progress_bar(0, "embedding");
    let outcome = store.embed_missing(|progress| {
        bar.set_length(progress.total as u64);
        bar.set_position(progress.done as u64);
    })?;
    bar.finish_and_clear();
    printer.done(
        json!({"model": model, "embedded": outcome.done - outcome.failed, "failed": outcome.failed}),
        &format!(
            "embedded {} memories with {model}{}",
            outcome.done - outcome.failed,
            if outcome.failed > 0 {
                format!("; {} could not be embedded (see the log)", outcome.failed)
            } else {
                String::new()
            }
        ),
    );
    Ok(())
}

fn serve_mcp(config: &Config) -> Result<()> {
    let store = open_serving(config)?;
    let purged = store.purge_expired()?;
    tracing::info!(
        machine_id = store.machine_id(),
        database = %store.path().display(),
        storage = store.storage_description().0,
        purged,
        search = match store.embedder_model() {
            Some(_) => "hybrid (full-text + vectors)",
            None => "full-text only",
        },
        model = store.embedder_model().unwrap_or("none"),
        "hAIveMind MCP server on stdio"
    );
    let server = haivemind_mcp::HaivemindServer::new(
        Arc::clone(&store),
        haivemind_mcp::ServerContext {
            data_dir: config.data_dir(),
            started_at_ms: now_ms(),
            transport: "stdio",
            agent_ttl_ms: config.agent_ttl_ms(),
            mcp_url: None,
            connectors: config.connectors.clone(),
            tool_profile: config.mcp.tool_profile,
            peer_health: None,
        },
    )
    .with_caller(haivemind_core::security::Caller::local())
    .with_audit(open_audit(config));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let index_owner = Arc::clone(&store);
    runtime.block_on(async move {
        spawn_hourly_purge(&store, config);
        // Fleet broadcasts reach this client as they land in the file (written by this
        // process, by `haivemind serve` replicating, or by the CLI).
        let events = Arc::new(haivemind_sync::EventHub::default());
        let head = haivemind_sync::op_log_head(&store).await;
        let watcher = tokio::spawn(haivemind_sync::watch(
            Arc::clone(&store),
            Arc::clone(&events),
            head,
        ));
        let announcer = tokio::spawn(haivemind_server::announce_broadcasts(
            events,
            server.clone(),
        ));
        let served = haivemind_mcp::serve_stdio(server).await;
        watcher.abort();
        announcer.abort();
        served
    })?;
    // Clients close stdin when a session ends: the index is kept for the next one.
    crate::node::save_vector_index(&index_owner);
    tracing::info!("client closed stdin; stopping");
    Ok(())
}

fn store(store: &Store, printer: &Printer, args: StoreArgs) -> Result<()> {
    let mut new = NewMemory::new(args.content);
    new.category = args.category;
    new.context = args.context;
    new.tags = args.tags;
    new.user_id = args.user;
    new.project = args.project;
    new.scope = Scope::parse("scope", &args.scope)?;
    new.confidentiality = Confidentiality::parse("confidentiality", &args.confidentiality)?;
    if let Some(metadata) = args.metadata {
        match serde_json::from_str::<Value>(&metadata) {
            Ok(Value::Object(map)) => new.metadata = map,
            _ => bail!(haivemind_core::InvalidInput::new(
                "metadata",
                "must be a JSON object, like '{\"ticket\": \"OPS-1\"}'"
            )),
        }
    }
    let memory = store.create(new)?;
    printer.done(to_json(&memory), &format!("stored {}", memory.id));
    Ok(())
}

fn search(store: &Store, printer: &Printer, args: SearchArgs) -> Result<()> {
    let query = SearchQuery {
        text: args.query,
        filter: MemoryFilter {
            agent_id: None,
            category: args.category,
            user_id: args.user,
            project: args.project,
            tags: args.tags,
            machine_id: args.machine,
            since_ms: parse_optional_rfc3339("since", args.since.as_deref())?,
            until_ms: parse_optional_rfc3339("until", args.until.as_deref())?,
            hide_restricted: false,
        },
        limit: args.limit,
        offset: args.offset,
        semantic: !args.full_text,
    };
    printer.search(&query, &store.search(&query)?);
    Ok(())
}

fn recent(store: &Store, printer: &Printer, args: RecentArgs) -> Result<()> {
    let memories = store.recent(&RecentQuery {
        filter: MemoryFilter {
            category: args.category,
            user_id: args.user,
            ..MemoryFilter::default()
        },
        hours: args.hours,
        limit: args.limit,
    })?;
    printer.memories(&memories);
    Ok(())
}

fn status(config: &Config, printer: &Printer) -> Result<()> {
    let (store, problem) = open_with_model(config)?;
    let stats = store.stats()?;
    let coverage = store.vector_coverage()?;
    let live_tokens = store
        .list_tokens()?
        .iter()
        .filter(|t| t.revoked_at_ms.is_none())
        .count()
        + usize::from(config.security.api_token.is_some())
        + config.security.token_files.len();
    let tls = config.security.tls.cert_file.is_some();
    let scheme = if tls { "https" } else { "http" };
    let configured_peers = haivemind_sync::configured_peers(config, store.machine_id()).len();
    let (sync_address, live) = running_server_status(config)?;
    let (sync_json, sync_text) = match live {
        Ok(server) => (
            json!({"server": "running", "address": sync_address, "state_digest": server["state_digest"], "peers": server["peers"], "connected_websockets": server["connected_websockets"]}),
            format!(
                "\nsync:        serving on {sync_address}, state {}…, {} peer(s), {} WebSocket(s){}",
                short_digest(&server),
                server["peers"].as_array().map_or(0, Vec::len),
                server["connected_websockets"],
                peer_lines(&server)
            ),
        ),
        Err(problem) => (
            json!({"server": if problem.starts_with("haivemind ") { "running" } else { "unreachable" }, "address": sync_address, "problem": problem, "configured_peers": configured_peers, "state_digest": store.state_digest()?}),
            format!(
                "\nsync:        {problem}; {configured_peers} configured peer(s); state {}…",
                store.state_digest()?.chars().take(12).collect::<String>()
            ),
        ),
    };
    let value = json!({
        "machine_id": store.machine_id(),
        "version": haivemind_core::VERSION,
        "data_dir": config.data_dir().display().to_string(),
        "database": store.path().display().to_string(),
        "storage": {"backend": store.storage_description().0, "vector_ranking": store.storage_description().1},
        "schema_version": stats.schema_version,
        "memory_count": stats.live,
        "deleted_count": stats.deleted,
        "op_log_entries": stats.op_log_entries,
        "semantic_search": store.embedder_model().is_some(),
        "search_mode": if store.embedder_model().is_some() { "hybrid" } else { "full_text" },
        "embedding_model": store.embedder_model(),
        "semantic_search_unavailable_because": problem,
        "vectors": coverage.map(|c| json!({"embedded": c.embedded, "missing": c.missing})),
        "serve": {
            "mcp": format!("{scheme}://{}:{}/mcp", config.server.host, config.server.mcp_port),
            "tls": tls,
            "live_tokens": live_tokens,
            "audit_log": config.logging.audit_enabled.then(|| config.audit_log_path().display().to_string()),
        },
        "sync": sync_json,
    });
    let text = format!(
        "machine:     {}\nversion:     {}\ndatabase:    {} {} (schema {})\nmemories:    {} live, {} deleted\nop log:      {} entries\nsearch:      {}",
        store.machine_id(),
        haivemind_core::VERSION,
        store.storage_description().0,
        store.path().display(),
        stats.schema_version,
        stats.live,
        stats.deleted,
        stats.op_log_entries,
        match (store.embedder_model(), coverage, &problem) {
            (Some(model), Some(c), _) => format!(
                "hybrid (full-text + {model}); {} memories embedded, {} not yet{}",
                c.embedded,
                c.missing,
                if c.missing > 0 {
                    " (run `haivemind reindex`)"
                } else {
                    ""
                }
            ),
            (_, _, Some(problem)) => format!("full-text only: {problem}"),
            _ => "full-text only".into(),
        }
    ) + &format!("\nvectors:     {}", store.storage_description().1)
        + &format!(
            "\nserve:       {scheme}://{}:{}/mcp; {live_tokens} live token(s){}\naudit log:   {}",
            config.server.host,
            config.server.mcp_port,
            if live_tokens == 0 {
                " (make one: haivemind token create --role agent)"
            } else {
                ""
            },
            if config.logging.audit_enabled {
                config.audit_log_path().display().to_string()
            } else {
                "off".into()
            }
        )
        + &sync_text;
    printer.done(value, &text);
    Ok(())
}

fn short_digest(status: &Value) -> String {
    status["state_digest"]
        .as_str()
        .unwrap_or("")
        .chars()
        .take(12)
        .collect()
}

pub(crate) fn progress_bar(length: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(length),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{what} {{bar:40}} {{pos}}/{{len}} ({{per_sec}}, eta {{eta}})"
    )) {
        bar.set_style(style);
    }
    bar
}

fn export(store: &Store, printer: &Printer, output: Option<&Path>) -> Result<()> {
    let total = {
        let stats = store.stats()?;
        (stats.live + stats.deleted) as u64
    };
    let sink: Box<dyn Write> = match output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut sink = BufWriter::new(sink);
    let bar = progress_bar(total, "exporting");
    let mut write_error = None;
    let count = store.for_each_memory(|memory| {
        if write_error.is_none()
            && let Err(e) = writeln!(sink, "{}", to_json(memory))
        {
            write_error = Some(e);
        }
        bar.inc(1);
        Ok(())
    })?;
    bar.finish_and_clear();
    if let Some(e) = write_error {
        return Err(e).context("cannot write the export");
    }
    sink.flush().context("cannot write the export")?;
    drop(sink);
    if output.is_some() || printer.json {
        eprintln!("exported {count} memories");
    }
    Ok(())
}

pub(crate) fn import(store: &Store, printer: &Printer, file: &Path) -> Result<()> {
    let open_file =
        || std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()));
    let lines = BufReader::new(open_file()?).lines().count() as u64;
    let bar = progress_bar(lines, "importing");
    let (mut created, mut present, mut erased) = (0usize, 0usize, 0usize);
    let mut failures: Vec<String> = Vec::new();
    for (index, line) in BufReader::new(open_file()?).lines().enumerate() {
        bar.inc(1);
        let line = line.with_context(|| format!("cannot read {}", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let number = index + 1;
        let outcome = serde_json::from_str::<Value>(&line)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(|value| from_json(&value, store.machine_id()).map_err(|e| e.to_string()))
            .and_then(|memory| store.import(memory).map_err(|e| e.to_string()));
        match outcome {
            Ok(ImportOutcome::Created) => created += 1,
            Ok(ImportOutcome::AlreadyPresent) => present += 1,
            Ok(ImportOutcome::Erased) => erased += 1,
            Err(message) => failures.push(format!("line {number}: {message}")),
        }
    }
    bar.finish_and_clear();
    if created > 0 && store.embedder_model().is_some() {
        // Embedding in batches after the import is several times faster than one by one.
        let bar = progress_bar(0, "embedding");
        store.embed_missing(|progress| {
            bar.set_length(progress.total as u64);
            bar.set_position(progress.done as u64);
        })?;
        bar.finish_and_clear();
    }
    printer.done(
        json!({
            "imported": created, "already_present": present, "erased_here": erased,
            "failed": failures.len(), "errors": failures.iter().take(20).collect::<Vec<_>>(),
        }),
        &format!(
            "imported {created}, already present {present}, permanently deleted here {erased}, failed {}",
            failures.len()
        ),
    );
    if !failures.is_empty() {
        for failure in failures.iter().take(20) {
            eprintln!("{failure}");
        }
        bail!(haivemind_core::InvalidInput::new(
            file.display().to_string(),
            format!(
                "{} of {} lines could not be imported (fix them and import again: memories already present are skipped)",
                failures.len(),
                lines
            )
        ));
    }
    Ok(())
}

/// Records a CLI action in the audit log, as the local user.
fn audit_cli(config: &Config, event: haivemind_core::audit::AuditEvent) {
    if let Some(audit) = open_audit(config) {
        audit.record(event.with("token_id", "local").with("transport", "cli"));
    }
}

/// Asks the running server (this config's sync port) for its `/api/status`, with
/// `HAIVEMIND_TOKEN` or the fleet token. Returns the address asked and the answer.
fn running_server_status(config: &Config) -> Result<(String, Result<Value, String>)> {
    let port = config.server.sync_port.unwrap_or(config.server.port);
    let host = crate::probe::local_host(config);
    let tls = config.security.tls.cert_file.is_some();
    let address = format!("{}{host}:{port}", if tls { "https://" } else { "" });
    let token = std::env::var("HAIVEMIND_TOKEN")
        .ok()
        .or_else(|| config.security.api_token.clone());
    let live = match &token {
        Some(token) => {
            let connector = if tls {
                Some(haivemind_sync::peer_connector(config)?)
            } else {
                None
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime
                .block_on(haivemind_sync::fetch_status(&address, token, connector))
                .map_err(|error| {
                    if error.contains("401") {
                        format!(
                            "the server on {address} refused the token (HAIVEMIND_TOKEN, else security.api_token): {error}"
                        )
                    } else {
                        format!("no server answered on {address}: {error}")
                    }
                })
        }
        // Without a token the server will not show its sync state, but whether one is
        // running at all is open to anyone: say which it is.
        None => Err(
            match crate::probe::health(
                &format!("{}/health", crate::probe::local_url(config, port)),
                std::time::Duration::from_secs(3),
            )
            .ok()
            .and_then(|(value, _)| value["version"].as_str().map(str::to_string))
            {
                Some(version) => format!(
                    "haivemind {version} is serving on {address}, but shows its sync state only to a token: set HAIVEMIND_TOKEN to one of its tokens (`haivemind token create --role readonly`), or security.api_token"
                ),
                None => format!(
                    "no server answered on {address} (and no token is set: HAIVEMIND_TOKEN or security.api_token)"
                ),
            },
        ),
    };
    Ok((address, live))
}

/// One line per peer of a server's `/api/status`: last sync, lag, counts, last error.
fn peer_lines(status: &Value) -> String {
    let mut text = String::new();
    for p in status["peers"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            "\n  {:<20} last sync {:<26} lag {:>7} s  sent {:>6}  received {:>6}{}",
            p["machine_id"].as_str().unwrap_or("?"),
            p["last_sync"].as_str().unwrap_or("never"),
            p["lag_seconds"]
                .as_f64()
                .map_or("-".into(), |l| format!("{l:.1}")),
            p["sent"],
            p["received"],
            p["last_error"]
                .as_str()
                .map_or(String::new(), |e| format!("  error: {e}"))
        ));
    }
    text
}

/// `haivemind peers`: the running server's view of each peer, or the configured peers when
/// no server answers.
fn peers(config: &Config, printer: &Printer) -> Result<()> {
    let me = config.machine_id();
    let configured = haivemind_sync::configured_peers(config, &me);
    let (_address, live) = running_server_status(config)?;
    let configured_json: Vec<Value> = configured
        .iter()
        .map(|p| json!({"machine_id": p.machine_id, "address": p.address}))
        .collect();
    match live {
        Ok(status) => {
            let peers = status["peers"].as_array().map_or(0, Vec::len);
            let mut text = format!(
                "{} (state {}…): {} peer(s)",
                status["machine_id"].as_str().unwrap_or("?"),
                short_digest(&status),
                peers
            ) + &peer_lines(&status);
            if peers == 0 && !configured.is_empty() {
                text.push_str("\n  (no round finished yet)");
            }
            printer.done(
                json!({"server": "running", "status": status, "configured": configured_json}),
                &text,
            );
        }
        Err(problem) => {
            let mut text = format!("{problem}; configured peers:");
            for p in &configured {
                text.push_str(&format!("\n  {:<20} {}", p.machine_id, p.address));
            }
            if configured.is_empty() {
                text.push_str(" none (sync.discovery.machines)");
            }
            printer.done(
                json!({"server": "unreachable", "problem": problem, "configured": configured_json}),
                &text,
            );
        }
    }
    Ok(())
}
