//! `haivemind serve`: remote MCP on `server.mcp_port`; `/health`, `/api/status` and the
//! replication exchange on the sync port.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use haivemind_core::Config;
use haivemind_core::security::is_loopback_host;
use haivemind_server::{Listener, McpApp, tls_acceptor};

use crate::cli::ServeArgs;
use crate::node::{open_audit, open_with_model, spawn_background_embedding, spawn_hourly_purge};

/// `println!` that ignores a closed stdout.
fn announce(line: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

pub fn run(mut config: Config, args: ServeArgs) -> Result<()> {
    if let Some(host) = args.host {
        config.server.host = host;
    }
    if let Some(port) = args.mcp_port {
        config.server.mcp_port = port;
    }
    if let Some(port) = args.sync_port {
        config.server.sync_port = Some(port);
    }
    // The flags may have moved the server off loopback: check the rules again.
    config.validate()?;
    let tls = match (
        &config.security.tls.cert_file,
        &config.security.tls.key_file,
    ) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    let host = config.server.host.clone();
    if tls.is_none() && !is_loopback_host(&host) {
        tracing::warn!(
            host,
            "serving plain HTTP beyond loopback: tokens cross the network in clear text; set security.tls.cert_file and key_file"
        );
    }
    let (store, _) = open_with_model(&config)?;
    let store = Arc::new(store);
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
        let sync = Listener::bind(&host, sync_port, tls).await?;
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
        announce(&format!("listening mcp {scheme}://{mcp_address}"));
        announce(&format!("listening sync {scheme}://{sync_address}"));
        spawn_background_embedding(&store);
        spawn_hourly_purge(&store, &config);
        let (stop, _) = tokio::sync::watch::channel(false);
        let stopped = |mut receiver: tokio::sync::watch::Receiver<bool>| async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        };
        let mcp_task = tokio::spawn(mcp.serve(app.router(), stopped(stop.subscribe())));
        // The sync port: /health, /api/status, the replication exchange, live events and
        // metrics; spawn_sync starts the op-log watcher and the sync service behind them.
        let sync_task = tokio::spawn(sync.serve(app.health_router(), stopped(stop.subscribe())));
        let background = app.spawn_sync(&config, sync_address.port())?;
        shutdown_signal().await;
        for task in background {
            task.abort();
        }
        tracing::info!("stopping");
        let _ = stop.send(true);
        app.close_sessions();
        let _ = tokio::join!(mcp_task, sync_task);
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
