//! `security.*`: who may call the HTTP services, from where, and how often; and the roles
//! a token can hold.
//!
//! Secure by default: every route but `/health` needs a token, peers must come from
//! loopback or the Tailscale ranges, a request with an `Origin` header is refused unless
//! the origin is listed, and plain HTTP binds to loopback (`server.host`).

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::InvalidInput;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads only, and never confidential or pii memories.
    Readonly,
    /// Reads and writes memories; soft deletes.
    Agent,
    /// Everything, including hard deletes, bulk deletes and GDPR erasure.
    Admin,
}

impl Role {
    /// Every role, least privileged first.
    pub const ALL: [Role; 3] = [Role::Readonly, Role::Agent, Role::Admin];

    /// The role's name in config, on the command line and in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Readonly => "readonly",
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }

    /// Reads a role name; `field` names the input in the error.
    pub fn parse(field: &str, text: &str) -> Result<Role, InvalidInput> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| InvalidInput::new(field, "must be admin, agent or readonly"))
    }

    /// Whether the role may change memories at all.
    pub fn may_write(self) -> bool {
        self >= Role::Agent
    }

    /// Whether the role may read confidential and pii memories.
    pub fn may_read_restricted(self) -> bool {
        self >= Role::Agent
    }

    /// Whether the role may erase (hard delete, bulk delete, GDPR erasure).
    pub fn may_erase(self) -> bool {
        self == Role::Admin
    }

    /// Whether the role may manage tokens and read the audit log.
    pub fn may_administer(self) -> bool {
        self == Role::Admin
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is making a call, as far as the server could establish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's public id (never the secret), or `local` for the stdio server.
    pub token_id: String,
    /// The token's name, for logs.
    pub name: String,
    /// What the token may do.
    pub role: Role,
    /// The tools `tools/list` offers this token, when the token sets its own
    /// (`haivemind token create --profile`); otherwise `mcp.tool_profile` decides.
    pub tool_profile: Option<crate::config::ToolProfile>,
}

impl Caller {
    /// The local user of the stdio server, who owns the data directory anyway.
    pub fn local() -> Self {
        Self {
            token_id: "local".into(),
            name: "local".into(),
            role: Role::Admin,
            tool_profile: None,
        }
    }
}

/// `security.*`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Whether the HTTP services demand a token. `false` is only accepted while
    /// `server.host` is a loopback address.
    pub require_auth: bool,
    /// The seed's single shared token (or `HAIVEMIND_API_TOKEN`); it acts as an admin token.
    pub api_token: Option<String>,
    /// Files that each hold one token, like the seed's `/etc/haivemind/api-token`.
    pub token_files: Vec<TokenFileConfig>,
    /// Peers allowed to connect, as CIDRs (`100.64.0.0/10`) or single addresses. The
    /// word `tailscale` stands for Tailscale's IPv4 and IPv6 ranges. Empty allows every peer.
    pub allowed_networks: Vec<String>,
    /// `Host` header values accepted on `/mcp` and `/sse` besides loopback names, the
    /// machine id, the host name and the bound address, with or without port.
    pub allowed_hosts: Vec<String>,
    /// Browser origins (`https://app.example.com:443`, `http://localhost:*`) allowed to
    /// call; a request with any other `Origin` header is refused.
    pub allowed_origins: Vec<String>,
    /// TLS; on when both files are set.
    pub tls: TlsConfig,
    /// Per-token request rate.
    pub rate_limit: RateLimitConfig,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            require_auth: true,
            api_token: None,
            token_files: Vec::new(),
            allowed_networks: vec!["loopback".into(), "tailscale".into()],
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            tls: TlsConfig::default(),
            rate_limit: RateLimitConfig::default(),
        }
    }
}

/// One `security.token_files` entry.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFileConfig {
    /// The file; its content, trimmed, is the token.
    pub path: PathBuf,
    /// `admin`, `agent` (default) or `readonly`.
    #[serde(default = "default_file_role")]
    pub role: String,
    /// A name for logs; the file name by default.
    #[serde(default)]
    pub name: Option<String>,
}

fn default_file_role() -> String {
    "agent".into()
}

/// `security.tls.*`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// PEM private key.
    pub key_file: Option<PathBuf>,
    /// PEM certificates trusted when this node connects to peers over TLS (the fleet's own
    /// CA, or the peers' self-signed certificates). Without it, `cert_file` is trusted: a
    /// fleet sharing one certificate needs nothing more.
    pub ca_file: Option<PathBuf>,
}

/// `security.rate_limit.*`: a token bucket per token.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained requests per minute per token; 0 turns the limit off.
    pub requests_per_minute: u32,
    /// Requests a token may make at once before the sustained rate applies.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            requests_per_minute: 6_000,
            burst: 200,
        }
    }
}

/// One entry of an address allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

/// Tailscale's address ranges: CGNAT IPv4 and its ULA IPv6 prefix.
const TAILSCALE: [&str; 2] = ["100.64.0.0/10", "fd7a:115c:a1e0::/48"];
const LOOPBACK: [&str; 2] = ["127.0.0.0/8", "::1/128"];

impl Network {
    /// Reads `10.0.0.0/8`, `::1`, `loopback` or `tailscale` (the last two expand to two
    /// networks each).
    pub fn parse_entry(field: &str, text: &str) -> Result<Vec<Network>, InvalidInput> {
        let text = text.trim();
        let named: &[&str] = match text {
            "tailscale" => &TAILSCALE,
            "loopback" | "localhost" => &LOOPBACK,
            _ => return Ok(vec![Network::parse(field, text)?]),
        };
        named
            .iter()
            .map(|cidr| Network::parse(field, cidr))
            .collect()
    }

    fn parse(field: &str, text: &str) -> Result<Network, InvalidInput> {
        let bad = || {
            InvalidInput::new(
                field,
                format!(
                    "\"{text}\" is not a network; expected a CIDR like 100.64.0.0/10 or fd7a::/48, \
                     an address, \"loopback\" or \"tailscale\""
                ),
            )
        };
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| bad())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Network { address, prefix })
    }

    /// Whether `peer` is inside this network. IPv4 peers seen as IPv6-mapped addresses
    /// (`::ffff:10.0.0.1`, from a dual-stack socket) match IPv4 networks.
    pub fn contains(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
            v4 => v4,
        };
        match (self.address, peer) {
            (IpAddr::V4(net), IpAddr::V4(peer)) => {
                prefix_matches(&net.octets(), &peer.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(peer)) => {
                prefix_matches(&net.octets(), &peer.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_matches(network: &[u8], peer: &[u8], prefix: u8) -> bool {
    let whole = usize::from(prefix / 8);
    if network[..whole] != peer[..whole] {
        return false;
    }
    let rest = prefix % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    network[whole] & mask == peer[whole] & mask
}

impl SecurityConfig {
    /// The allowlist, parsed. Empty means every peer.
    pub fn networks(&self) -> Result<Vec<Network>, InvalidInput> {
        let mut networks = Vec::new();
        for (i, entry) in self.allowed_networks.iter().enumerate() {
            networks.extend(Network::parse_entry(
                &format!("security.allowed_networks[{i}]"),
                entry,
            )?);
        }
        Ok(networks)
    }

    /// Reads the seed's `allowed_origins: ["tailscale"]` as what it meant: peers on the
    /// tailnet may connect. The entry leaves `allowed_origins` (where it is no origin, and
    /// would stop start-up) and `tailscale` joins `allowed_networks` unless that list is
    /// empty (every peer is allowed already). Says what it did, for a warning.
    pub fn adopt_seed_origins(&mut self) -> Option<String> {
        let before = self.allowed_origins.len();
        self.allowed_origins
            .retain(|origin| !origin.trim().eq_ignore_ascii_case("tailscale"));
        if self.allowed_origins.len() == before {
            return None;
        }
        let listed = self
            .allowed_networks
            .iter()
            .any(|n| n.trim().eq_ignore_ascii_case("tailscale"));
        if !self.allowed_networks.is_empty() && !listed {
            self.allowed_networks.push("tailscale".into());
        }
        Some(
            "security.allowed_origins lists \"tailscale\", the seed's way of admitting the tailnet: \
             read as security.allowed_networks including \"tailscale\" (Tailscale's address ranges); \
             allowed_origins is for browser origins only, so move it there to silence this warning"
                .into(),
        )
    }

    /// Checks what a type alone cannot.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        self.networks()?;
        for (i, file) in self.token_files.iter().enumerate() {
            Role::parse(&format!("security.token_files[{i}].role"), &file.role)?;
        }
        if let Some(token) = &self.api_token
            && token.trim().len() < 16
        {
            return Err(InvalidInput::new(
                "security.api_token",
                "must be at least 16 characters (make one with `haivemind token create` or `openssl rand -hex 32`)",
            ));
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => {
                return Err(InvalidInput::new(
                    "security.tls.key_file",
                    "must be set when security.tls.cert_file is",
                ));
            }
            (None, Some(_)) => {
                return Err(InvalidInput::new(
                    "security.tls.cert_file",
                    "must be set when security.tls.key_file is",
                ));
            }
            _ => {}
        }
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            if origin != "null" && !origin.contains("://") {
                return Err(InvalidInput::new(
                    format!("security.allowed_origins[{i}]"),
                    "must be an origin with a scheme, like https://app.example.com:443 or http://localhost:*",
                ));
            }
        }
        if self.rate_limit.requests_per_minute > 0 && self.rate_limit.burst == 0 {
            return Err(InvalidInput::new(
                "security.rate_limit.burst",
                "must be at least 1 while requests_per_minute is set",
            ));
        }
        Ok(())
    }
}

/// Whether `host` (a `server.host` value) is a loopback address or name.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(entries: &[&str], peer: &str) -> bool {
        let config = SecurityConfig {
            allowed_networks: entries.iter().map(|e| e.to_string()).collect(),
            ..SecurityConfig::default()
        };
        let peer: IpAddr = peer.parse().unwrap();
        config.networks().unwrap().iter().any(|n| n.contains(peer))
    }

    #[test]
    fn networks_match_by_prefix() {
        assert!(allows(&["tailscale"], "100.101.5.6"));
        assert!(!allows(&["tailscale"], "100.128.0.1"));
        assert!(allows(&["tailscale"], "fd7a:115c:a1e0::1"));
        assert!(allows(&["loopback"], "127.0.0.2"));
        assert!(allows(&["loopback"], "::ffff:127.0.0.1"));
        assert!(allows(&["10.1.2.0/23"], "10.1.3.255"));
        assert!(!allows(&["10.1.2.0/23"], "10.1.4.0"));
        assert!(allows(&["192.168.1.7"], "192.168.1.7"));
        assert!(!allows(&["192.168.1.7"], "192.168.1.8"));
        assert!(allows(&["0.0.0.0/0"], "8.8.8.8"));
        assert!(!allows(&["0.0.0.0/0"], "::2"));
    }

    #[test]
    fn bad_entries_name_the_field() {
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0/8", "::1/129"] {
            let config = SecurityConfig {
                allowed_networks: vec!["loopback".into(), bad.into()],
                ..SecurityConfig::default()
            };
            let error = config.validate().unwrap_err();
            assert_eq!(error.field, "security.allowed_networks[1]", "{bad}");
        }
    }

    #[test]
    fn roles_order_their_rights() {
        assert!(!Role::Readonly.may_write() && !Role::Readonly.may_read_restricted());
        assert!(Role::Agent.may_write() && !Role::Agent.may_erase());
        assert!(Role::Admin.may_erase());
        assert_eq!(Role::parse("role", "agent").unwrap(), Role::Agent);
        assert!(Role::parse("role", "root").is_err());
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback_host("127.0.0.1") && is_loopback_host("::1"));
        assert!(is_loopback_host("localhost") && is_loopback_host("[::1]"));
        assert!(!is_loopback_host("0.0.0.0") && !is_loopback_host("100.64.1.1"));
    }
}
