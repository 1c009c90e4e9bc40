//! Changing a running server's configuration (SIGHUP, `haivemind reload`): what can change
//! in place and what waits for a restart. Everything that can fail is prepared first (the
//! token files read, the certificate loaded); only when all of it worked is anything
//! swapped in, so a config that fails leaves the old one whole. Open MCP sessions, SSE
//! streams and WebSockets are untouched.

use std::sync::Arc;

use haivemind_core::Config;
use haivemind_core::audit::AuditEvent;

use crate::auth::{RateLimiter, TokenSourceError};
use crate::listener::TlsSwitch;
use crate::tls::TlsError;
use crate::{McpApp, tls_acceptor};

/// What a reload did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// What changed in place, one line each.
    pub applied: Vec<String>,
    /// Settings that changed but take effect at the next restart.
    pub needs_restart: Vec<String>,
}

/// Why a reload was refused (nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A token file cannot be read.
    #[error(transparent)]
    Tokens(#[from] TokenSourceError),
    /// The new certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// `Debug` of a section, to tell whether it changed (never printed).
fn differs<T: std::fmt::Debug>(old: &T, new: &T) -> bool {
    format!("{old:?}") != format!("{new:?}")
}

impl McpApp {
    /// Applies what `new` changes from `old` that can change while serving: the tokens of
    /// the config and its token files, the TLS certificate (through `tls`), the rate limit,
    /// and the peers and fleet token of replication. The log level is the binary's.
    pub fn reload(
        &self,
        old: &Config,
        new: &Config,
        tls: Option<&TlsSwitch>,
    ) -> Result<Reloaded, ReloadError> {
        let mut reloaded = Reloaded::default();
        // Prepare: everything that can fail.
        let certificate = match (tls, &new.security.tls.cert_file, &new.security.tls.key_file) {
            (Some(_), Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        let tokens = crate::auth::configured_tokens(new)?;

        // Apply.
        let count = tokens.len();
        self.state.auth.set_configured(tokens);
        reloaded.applied.push(format!(
            "tokens of the config and its token files re-read ({count})"
        ));
        match (tls, certificate) {
            (Some(switch), Some(acceptor)) => {
                switch.replace(acceptor);
                reloaded
                    .applied
                    .push("TLS certificate and key re-read for new connections".into());
            }
            _ if differs(
                &old.security.tls.cert_file.is_some(),
                &new.security.tls.cert_file.is_some(),
            ) =>
            {
                reloaded
                    .needs_restart
                    .push("security.tls (turning TLS on or off)".into());
            }
            _ => {}
        }
        if differs(&old.security.rate_limit, &new.security.rate_limit) {
            let limiter = RateLimiter::new(&new.security.rate_limit).map(Arc::new);
            if let Ok(mut current) = self.state.limiter.write() {
                *current = limiter;
            }
            reloaded.applied.push(format!(
                "rate limit {} requests per minute, bursts of {}",
                new.security.rate_limit.requests_per_minute, new.security.rate_limit.burst
            ));
        }
        // Peers are discovered again on every reload, so a machine that joined the tailnet
        // is picked up by a SIGHUP even when the config itself did not change.
        let sync_port = new.server.sync_port.unwrap_or(new.server.port);
        let peers = haivemind_sync::discover_peers(new, self.state.store.machine_id(), sync_port);
        let peer_names = |peers: &[haivemind_sync::Peer]| -> Vec<String> {
            peers.iter().map(|p| p.machine_id.clone()).collect()
        };
        let discovered_other_peers = self.state.sync_service.get().is_some_and(|service| {
            new.security.api_token.is_some() && peer_names(&service.peers()) != peer_names(&peers)
        });
        if differs(&old.sync, &new.sync)
            || differs(&old.security.api_token, &new.security.api_token)
            || discovered_other_peers
        {
            match (self.state.sync_service.get(), &new.security.api_token) {
                (Some(service), Some(token)) => {
                    let names = peer_names(&peers);
                    service.reconfigure(peers, token.clone());
                    reloaded.applied.push(format!(
                        "replication peers: {}",
                        if names.is_empty() {
                            "none".into()
                        } else {
                            names.join(", ")
                        }
                    ));
                }
                (Some(service), None) => {
                    service.reconfigure(Vec::new(), String::new());
                    reloaded
                        .applied
                        .push("replication stopped: security.api_token is not set".into());
                }
                (None, _) if !peers.is_empty() => reloaded
                    .needs_restart
                    .push("sync.discovery (replication starts at the next restart)".into()),
                (None, _) => {}
            }
        }
        for (key, changed) in [
            (
                "server (host, ports, limits)",
                differs(&old.server, &new.server),
            ),
            ("storage", differs(&old.storage, &new.storage)),
            (
                "security.allowed_networks, allowed_hosts, allowed_origins, require_auth",
                differs(
                    &old.security.allowed_networks,
                    &new.security.allowed_networks,
                ) || differs(&old.security.allowed_hosts, &new.security.allowed_hosts)
                    || differs(&old.security.allowed_origins, &new.security.allowed_origins)
                    || old.security.require_auth != new.security.require_auth,
            ),
            ("embedding", differs(&old.embedding, &new.embedding)),
            ("search", differs(&old.search, &new.search)),
            ("memory", differs(&old.memory, &new.memory)),
            ("mcp.tool_profile", differs(&old.mcp, &new.mcp)),
            ("machine_id", old.machine_id() != new.machine_id()),
            ("connectors", differs(&old.connectors, &new.connectors)),
        ] {
            if changed {
                reloaded.needs_restart.push(key.to_string());
            }
        }
        self.state.audit(
            AuditEvent::new("config_reloaded")
                .with("applied", reloaded.applied.len() as u64)
                .with("needs_restart", reloaded.needs_restart.join("; ")),
        );
        Ok(reloaded)
    }

    /// Audits a refused reload.
    pub fn audit_reload_refused(&self, reason: &str) {
        self.state.audit(
            AuditEvent::new("config_reload_refused")
                .with("reason", haivemind_core::error::excerpt(reason)),
        );
    }
}
