//! `haivemind serve`: remote MCP on `server.mcp_port`; `/health`, `/api/status` and the
//! replication exchange on the sync port.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use haivemind_core::Config;
use haivemind_core::security::is_loopback_host;
use haivemind_server::{Listener, McpApp, TlsSwitch, tls_acceptor};
use serde_json::json;

use crate::cli::ServeArgs;
use crate::node::{open_audit, open_serving, save_vector_index, spawn_hourly_purge};

/// `println!` that ignores a closed stdout.
fn announce(line: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// The flags that override the config file, kept so a reload applies them again.
#[derive(Clone)]
struct Overrides {
    host: Option<String>,
    mcp_port: Option<u16>,
    sync_port: Option<u16>,
}

impl Overrides {
    fn apply(&self, config: &mut Config) -> Result<()> {
        if let Some(host) = &self.host {
            config.server.host = host.clone();
        }
        if let Some(port) = self.mcp_port {
            config.server.mcp_port = port;
        }
        if let Some(port) = self.sync_port {
            config.server.sync_port = Some(port);
        }
        // The flags may have moved the server off loopback: check the rules again.
        config.validate()?;
        Ok(())
    }
}

pub fn run(mut config: Config, args: ServeArgs) -> Result<()> {
    let overrides = Overrides {
        host: args.host,
        mcp_port: args.mcp_port,
        sync_port: args.sync_port,
    };
    overrides.apply(&mut config)?;
    let tls = match (
        &config.security.tls.cert_file,
        &config.security.tls.key_file,
    ) {
        (Some(cert), Some(key)) => Some(TlsSwitch::new(tls_acceptor(cert, key)?)),
        _ => None,
    };
    let host = config.server.host.clone();
    if tls.is_none() && !is_loopback_host(&host) {
        tracing::warn!(
            host,
            "serving plain HTTP beyond loopback: tokens cross the network in clear text; set security.tls.cert_file and key_file"
        );
    }
    let store = open_serving(&config)?;
    let purged = store.purge_expired()?;
    let audit = open_audit(&config);
    let app = McpApp::new(Arc::clone(&store), &config, audit)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mcp = Listener::bind(&host, config.server.mcp_port, tls.clone()).await?;
        let sync_port = config.server.sync_port.unwrap_or(config.server.port);
        let sync = Listener::bind(&host, sync_port, tls.clone()).await?;
        let mcp_address = mcp.local_addr()?;
        let sync_address = sync.local_addr()?;
        if mcp_address.port() == sync_address.port() {
            bail!("server.mcp_port and server.sync_port must differ");
        }
        tracing::info!(
            machine_id = store.machine_id(),
            database = %store.path().display(),
            storage = store.storage_description().0,
            vectors = store.storage_description().1,
            purged,
            search = if store.embedder_model().is_some() { "hybrid" } else { "full-text only" },
            tls = mcp.is_tls(),
            "hAIveMind serving remote MCP on {scheme}://{mcp_address}/mcp (legacy SSE on /sse), the dashboard on {scheme}://{mcp_address}/"
        );
        // Reloads are taken (SIGHUP caught, the pid file written) before the ports are
        // announced: whoever waits for the announcement may reload at once.
        let mut hangups = hangups();
        let pid_file = PidFile::write(&config);
        // The op-log watcher (live events), the sync service behind the sync port and the
        // metrics probes start before the ports are announced too: a client that writes the
        // moment it reads the announcement must get its event.
        let background = app.spawn_sync(&config, sync_address.port()).await?;
        announce(&format!("listening mcp {scheme}://{mcp_address}"));
        announce(&format!("listening sync {scheme}://{sync_address}"));
        spawn_hourly_purge(&store, &config);
        let (stop, _) = tokio::sync::watch::channel(false);
        let stopped = |mut receiver: tokio::sync::watch::Receiver<bool>| async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        };
        let mcp_task = tokio::spawn(mcp.serve(app.router(), stopped(stop.subscribe())));
        // The sync port: /health, /api/status, the replication exchange, live events and
        // metrics.
        let sync_task = tokio::spawn(sync.serve(app.health_router(), stopped(stop.subscribe())));
        let mut current = config.clone();
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(()) = hangups.recv() => {
                    current = reload(&app, current, &overrides, tls.as_ref());
                }
            }
        }
        drop(pid_file);
        for task in background {
            task.abort();
        }
        tracing::info!("stopping");
        let _ = stop.send(true);
        app.close_sessions();
        let _ = tokio::join!(mcp_task, sync_task);
        let store = Arc::clone(&store);
        let _ = tokio::task::spawn_blocking(move || save_vector_index(&store)).await;
        Ok(())
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `serve.pid` in the data directory while serving, for `haivemind reload`.
struct PidFile(std::path::PathBuf);

impl PidFile {
    fn write(config: &Config) -> Option<Self> {
        let path = config.data_dir().join("serve.pid");
        match std::fs::write(&path, format!("{}\n", std::process::id())) {
            Ok(()) => Some(Self(path)),
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "cannot write the pid file; `haivemind reload` will not find this server (SIGHUP still works)");
                None
            }
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// SIGHUPs, as a channel (none where there are no signals).
fn hangups() -> tokio::sync::mpsc::Receiver<()> {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangup) => {
                tokio::spawn(async move {
                    while hangup.recv().await.is_some() {
                        if sender.send(()).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Err(error) => tracing::warn!(%error, "cannot listen for SIGHUP; reload by restarting"),
        }
    }
    receiver
}

/// Reads the config again and applies what can change while serving; on any failure the
/// running config stays. The outcome goes to the log, the audit log and `reload.json` in
/// the data directory (which `haivemind reload` reads).
fn reload(app: &McpApp, current: Config, overrides: &Overrides, tls: Option<&TlsSwitch>) -> Config {
    let loaded = Config::load()
        .map_err(anyhow::Error::from)
        .and_then(|mut new| overrides.apply(&mut new).map(|()| new));
    let new = match loaded {
        Ok(new) => new,
        Err(error) => {
            let reason = format!("{error:#}");
            refused(app, &current, &reason);
            return current;
        }
    };
    if let Err(error) = tracing_subscriber::EnvFilter::try_new(&new.logging.level) {
        refused(app, &current, &format!("logging.level: {error}"));
        return current;
    }
    match app.reload(&current, &new, tls) {
        Ok(mut reloaded) => {
            if new.logging.level != current.logging.level {
                match crate::commands::set_log_level(&new.logging.level) {
                    Ok(true) => reloaded
                        .applied
                        .push(format!("log level {}", new.logging.level)),
                    Ok(false) => reloaded
                        .needs_restart
                        .push("logging.level (RUST_LOG is set and wins)".into()),
                    Err(error) => reloaded
                        .needs_restart
                        .push(format!("logging.level ({error})")),
                }
            }
            tracing::info!(
                applied = %reloaded.applied.join("; "),
                needs_restart = %reloaded.needs_restart.join("; "),
                "configuration reloaded"
            );
            write_outcome(
                &new,
                json!({"outcome": "applied", "applied": reloaded.applied, "needs_restart": reloaded.needs_restart}),
            );
            new
        }
        Err(error) => {
            refused(app, &current, &error.to_string());
            current
        }
    }
}

fn refused(app: &McpApp, current: &Config, reason: &str) {
    tracing::error!("configuration reload refused, the running configuration stays: {reason}");
    app.audit_reload_refused(reason);
    write_outcome(current, json!({"outcome": "refused", "reason": reason}));
}

fn write_outcome(config: &Config, mut outcome: serde_json::Value) {
    outcome["at"] = json!(haivemind_core::time_format::ms_to_rfc3339(
        haivemind_core::time_format::now_ms()
    ));
    outcome["pid"] = json!(std::process::id());
    let path = config.data_dir().join("reload.json");
    if let Err(error) = std::fs::write(&path, outcome.to_string()) {
        tracing::warn!(%error, path = %path.display(), "cannot record the reload's outcome");
    }
}

/// `haivemind reload`: SIGHUP to the server whose pid is in the data directory, then its
/// outcome from `reload.json`.
pub fn signal_reload(config: &Config, printer: &crate::output::Printer) -> Result<()> {
    let pid_path = config.data_dir().join("serve.pid");
    let pid: u32 = std::fs::read_to_string(&pid_path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .with_context(|| {
            format!(
                "no running `haivemind serve` for {} ({} is missing); under systemd: systemctl reload haivemind",
                config.data_dir().display(),
                pid_path.display()
            )
        })?;
    // A pid file left by a server that died may name another program now.
    let command_line = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !String::from_utf8_lossy(&command_line).contains("haivemind") {
        bail!(
            "process {pid} (from {}) is not a haivemind server; is `haivemind serve` running?",
            pid_path.display()
        );
    }
    let outcome_path = config.data_dir().join("reload.json");
    let before = std::fs::metadata(&outcome_path)
        .and_then(|m| m.modified())
        .ok();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .context("cannot run kill")?;
    if !sent.success() {
        bail!("could not signal process {pid} (is it another user's?)");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let modified = std::fs::metadata(&outcome_path)
            .and_then(|m| m.modified())
            .ok();
        if modified.is_some()
            && modified != before
            && let Some(outcome) = std::fs::read_to_string(&outcome_path)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        {
            let text = match outcome["outcome"].as_str() {
                Some("applied") => {
                    let list = |key: &str| {
                        outcome[key]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|v| v.as_str())
                                    .collect::<Vec<_>>()
                                    .join("\n  ")
                            })
                            .unwrap_or_default()
                    };
                    let mut text = format!("reloaded:\n  {}", list("applied"));
                    let later = list("needs_restart");
                    if !later.is_empty() {
                        text.push_str(&format!(
                            "\nchanged, but only a restart applies:\n  {later}"
                        ));
                    }
                    text
                }
                _ => {
                    let reason = outcome["reason"].as_str().unwrap_or("unknown").to_string();
                    printer.done(outcome, "");
                    bail!(
                        "the server refused the new configuration and keeps the running one: {reason}"
                    );
                }
            };
            printer.done(outcome, &text);
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("the server (process {pid}) did not report a reload within 15 s; see its log");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
