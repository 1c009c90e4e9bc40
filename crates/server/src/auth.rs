//! Who is calling: bearer tokens checked against digests in constant time, and a token
//! bucket per token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use haivemind_core::Config;
use haivemind_core::security::{Caller, RateLimitConfig, Role};
use haivemind_store::{Store, token_digest};

/// Why a request was not authenticated. Never carries the presented token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not `Bearer <token>`.
    Malformed,
    /// A bearer token that matches no live token.
    Unknown,
    /// An OAuth access token issued for another server (RFC 8707 audience).
    WrongAudience,
}

impl AuthFailure {
    /// The reason as the audit log and the error body name it.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing_token",
            AuthFailure::Malformed => "malformed_authorization",
            AuthFailure::Unknown => "unknown_token",
            AuthFailure::WrongAudience => "wrong_audience",
        }
    }

    /// What the client is told.
    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::Missing => {
                "a bearer token is required: send `Authorization: Bearer <token>` (make one with `haivemind token create`)"
            }
            AuthFailure::Malformed => "the Authorization header must be `Bearer <token>`",
            AuthFailure::Unknown => "the bearer token is not valid (unknown, expired or revoked)",
            AuthFailure::WrongAudience => {
                "the bearer token was issued for another resource than this server"
            }
        }
    }
}

/// Why the configured tokens could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TokenSourceError {
    /// A `security.token_files` entry could not be read.
    #[error("security.token_files[{index}]: cannot read {path}: {source}")]
    File {
        /// Its index.
        index: usize,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A token file or the api_token is too short to be a secret.
    #[error("{key}: a token must be at least 16 characters")]
    TooShort {
        /// The key at fault.
        key: String,
    },
}

/// A token the server accepts: who it stands for, and its digest.
#[derive(Clone)]
pub(crate) struct KnownToken {
    caller: Caller,
    digest: [u8; 32],
    /// For an OAuth access token: the authority (`host:port`) of the resource it was
    /// issued for, which the request's `Host` must name.
    audience: Option<String>,
}

/// Checks bearer tokens. Tokens made with `haivemind token create` live in the database
/// and are re-read at most once a second, so a new or revoked token takes effect within a
/// second without a restart; tokens from the config file are fixed at start.
pub struct Authenticator {
    store: Arc<Store>,
    require_auth: bool,
    /// Tokens of the config file; replaced whole by [`Authenticator::reload_configured`].
    configured: std::sync::RwLock<Arc<Vec<KnownToken>>>,
    stored: Mutex<(Instant, Arc<Vec<KnownToken>>)>,
}

const RELOAD_EVERY: Duration = Duration::from_secs(1);

impl Authenticator {
    /// Reads the configured tokens (`security.api_token`, `security.token_files`).
    pub fn new(store: Arc<Store>, config: &Config) -> Result<Self, TokenSourceError> {
        let authenticator = Self {
            store,
            require_auth: config.security.require_auth,
            configured: std::sync::RwLock::new(Arc::new(configured_tokens(config)?)),
            stored: Mutex::new((Instant::now(), Arc::new(Vec::new()))),
        };
        authenticator.reload();
        Ok(authenticator)
    }

    /// Puts the config's tokens read again (`haivemind reload`, SIGHUP) in place.
    pub(crate) fn set_configured(&self, tokens: Vec<KnownToken>) {
        if let Ok(mut configured) = self.configured.write() {
            *configured = Arc::new(tokens);
        }
    }

    fn configured(&self) -> Arc<Vec<KnownToken>> {
        self.configured
            .read()
            .map(|c| Arc::clone(&c))
            .unwrap_or_default()
    }

    /// Whether any token exists at all; a server without one can only answer 401.
    pub fn has_tokens(&self) -> bool {
        !self.configured().is_empty() || !self.current().is_empty()
    }

    /// Whether tokens are demanded.
    pub fn require_auth(&self) -> bool {
        self.require_auth
    }

    fn reload(&self) -> Arc<Vec<KnownToken>> {
        // Authentication runs in the request's async task; reading the tokens blocks (and on
        // PostgreSQL drives the client's own runtime), so the worker steps aside for it.
        let read = blocking_here(|| self.store.live_token_digests());
        let tokens = match read {
            Ok(rows) => Arc::new(
                rows.into_iter()
                    // A grant approved with a config token ends when that token leaves the
                    // config.
                    .filter(|(record, _)| {
                        record.oauth.as_ref().is_none_or(|o| {
                            o.parent_id.starts_with("tok_") || self.is_configured(&o.parent_id)
                        })
                    })
                    .map(|(record, digest)| KnownToken {
                        audience: record.oauth.as_ref().map(|o| authority_of(&o.audience)),
                        caller: Caller {
                            token_id: record.id,
                            name: record.name,
                            role: record.role,
                            tool_profile: record.tool_profile,
                        },
                        digest,
                    })
                    .collect(),
            ),
            Err(error) => {
                tracing::error!(%error, "cannot read tokens; keeping the last known set");
                self.stored
                    .lock()
                    .map(|s| Arc::clone(&s.1))
                    .unwrap_or_default()
            }
        };
        tracing::debug!(tokens = tokens.len(), "token set reloaded");
        if let Ok(mut stored) = self.stored.lock() {
            *stored = (Instant::now(), Arc::clone(&tokens));
        }
        tokens
    }

    fn current(&self) -> Arc<Vec<KnownToken>> {
        let cached = self
            .stored
            .lock()
            .ok()
            .filter(|s| s.0.elapsed() < RELOAD_EVERY)
            .map(|s| Arc::clone(&s.1));
        cached.unwrap_or_else(|| self.reload())
    }

    /// Whether `id` names a token of the config file (`config:…`).
    pub fn is_configured(&self, id: &str) -> bool {
        self.configured().iter().any(|t| t.caller.token_id == id)
    }

    /// Who the `Authorization` header value stands for, on a request whose `Host` is
    /// `host` (an OAuth access token only works on the server it was issued for).
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        host: Option<&str>,
    ) -> Result<Caller, AuthFailure> {
        if !self.require_auth {
            return Ok(Caller {
                token_id: "anonymous".into(),
                name: "anonymous (security.require_auth is false)".into(),
                role: Role::Admin,
                tool_profile: None,
            });
        }
        let header = authorization.ok_or(AuthFailure::Missing)?;
        let header = std::str::from_utf8(header).map_err(|_| AuthFailure::Malformed)?;
        let (scheme, token) = header
            .trim()
            .split_once(' ')
            .ok_or(AuthFailure::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthFailure::Malformed);
        }
        let found = self.known(token).ok_or(AuthFailure::Unknown)?;
        match (&found.audience, host) {
            (None, _) => Ok(found.caller),
            (Some(audience), Some(host)) if audience.eq_ignore_ascii_case(host.trim()) => {
                Ok(found.caller)
            }
            _ => Err(AuthFailure::WrongAudience),
        }
    }

    /// Who may approve an OAuth grant with `secret` (typed into the consent page): a
    /// live token that was not itself issued by OAuth, so a grant never outlives the
    /// person's own token by being re-approved with its child.
    pub fn approver(&self, secret: &str) -> Option<Caller> {
        let secret = secret.trim();
        if secret.is_empty() {
            return None;
        }
        self.known(secret)
            .filter(|t| t.audience.is_none())
            .map(|t| t.caller)
    }

    fn known(&self, secret: &str) -> Option<KnownToken> {
        let digest = token_digest(secret);
        if let Some(found) = self.find(&digest, &self.current()) {
            return Some(found);
        }
        // A token made a moment ago is not in the cache yet: look again. That costs one
        // small read per unknown token, and unknown tokens are limited per address.
        self.find(&digest, &self.reload())
    }

    fn find(&self, digest: &[u8; 32], stored: &[KnownToken]) -> Option<KnownToken> {
        // Every candidate is compared in full, and which one matched is only read after
        // the loop, so the time taken says nothing about how close a guess was.
        let mut found: Option<&KnownToken> = None;
        let configured = self.configured();
        for candidate in configured.iter().chain(stored.iter()) {
            if constant_time_eq(&candidate.digest, digest) {
                found = Some(candidate);
            }
        }
        found.cloned()
    }
}

/// Runs blocking work (a database read) from a request's async task: on a multi-threaded
/// runtime the worker steps aside for it; elsewhere it simply runs.
pub(crate) fn blocking_here<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// The `host:port` of a resource URL, as a request's `Host` names it.
pub(crate) fn authority_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let default = if url.starts_with("https://") {
        ":443"
    } else {
        ":80"
    };
    authority
        .strip_suffix(default)
        .unwrap_or(authority)
        .to_ascii_lowercase()
}

/// The tokens `config` names: `security.api_token` and each `security.token_files` entry.
pub(crate) fn configured_tokens(config: &Config) -> Result<Vec<KnownToken>, TokenSourceError> {
    let security = &config.security;
    let mut configured = Vec::new();
    if let Some(token) = &security.api_token {
        configured.push(known("config:api_token", "api_token", Role::Admin, token));
    }
    for (index, file) in security.token_files.iter().enumerate() {
        let text =
            std::fs::read_to_string(&file.path).map_err(|source| TokenSourceError::File {
                index,
                path: file.path.clone(),
                source,
            })?;
        if text.trim().len() < 16 {
            return Err(TokenSourceError::TooShort {
                key: format!("security.token_files[{index}]"),
            });
        }
        let role = Role::parse("role", &file.role).unwrap_or(Role::Agent);
        let name = file.name.clone().unwrap_or_else(|| {
            file.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("token_file_{index}"))
        });
        configured.push(known(
            &format!("config:token_files[{index}]"),
            &name,
            role,
            &text,
        ));
    }
    Ok(configured)
}

fn known(id: &str, name: &str, role: Role, secret: &str) -> KnownToken {
    KnownToken {
        caller: Caller {
            token_id: id.into(),
            name: name.into(),
            role,
            tool_profile: None,
        },
        digest: token_digest(secret),
        audience: None,
    }
}

/// Compares two digests without an early exit.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// A token bucket per token: `burst` calls at once, refilled at `requests_per_minute`.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// The limiter of `security.rate_limit`; `None` when it is off.
    pub fn new(config: &RateLimitConfig) -> Option<Self> {
        (config.requests_per_minute > 0).then(|| Self {
            per_second: f64::from(config.requests_per_minute) / 60.0,
            burst: f64::from(config.burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// A limiter keyed by peer address, with a fixed non-zero rate.
    pub(crate) fn per_address(requests_per_minute: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(requests_per_minute.max(1)) / 60.0,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `token_id`'s bucket, or says how long until one is free.
    pub fn check(&self, token_id: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() > 10_000 {
            // Buckets of tokens idle long enough to be full again carry no state.
            let full_after = self.burst / self.per_second;
            buckets.retain(|_, (_, at)| now.duration_since(*at).as_secs_f64() < full_after);
        }
        let (tokens, at) = buckets
            .entry(token_id.to_string())
            .or_insert((self.burst, now));
        let refilled =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            Ok(())
        } else {
            *tokens = refilled;
            Err(Duration::from_secs_f64((1.0 - refilled) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_a_burst_then_the_rate() {
        let limiter = RateLimiter::new(&RateLimitConfig {
            requests_per_minute: 60,
            burst: 3,
        })
        .unwrap();
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        let wait = limiter.check("a").unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert!(limiter.check("b").is_ok(), "buckets are per token");
    }

    #[test]
    fn new_tokens_work_at_once_and_revoked_ones_stop_within_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            Store::open(haivemind_store::StoreOptions::new(
                dir.path().join("db"),
                "m",
            ))
            .unwrap(),
        );
        let auth = Authenticator::new(Arc::clone(&store), &Config::default()).unwrap();
        assert!(!auth.has_tokens());
        assert_eq!(auth.authenticate(None, None), Err(AuthFailure::Missing));
        assert_eq!(
            auth.authenticate(Some(b"Basic abc"), None),
            Err(AuthFailure::Malformed)
        );
        let made = store.create_token(Some("a"), Role::Readonly).unwrap();
        let header = format!("Bearer {}", made.secret);
        let caller = auth.authenticate(Some(header.as_bytes()), None).unwrap();
        assert_eq!((caller.role, caller.name.as_str()), (Role::Readonly, "a"));
        assert_eq!(
            auth.authenticate(Some(b"Bearer hv_0000"), None),
            Err(AuthFailure::Unknown)
        );
        store.revoke_token("a").unwrap();
        std::thread::sleep(RELOAD_EVERY);
        assert_eq!(
            auth.authenticate(Some(header.as_bytes()), None),
            Err(AuthFailure::Unknown)
        );
    }

    #[test]
    fn digests_compare_equal_only_when_equal() {
        let a = token_digest("hv_abc");
        assert!(constant_time_eq(&a, &token_digest("hv_abc")));
        assert!(!constant_time_eq(&a, &token_digest("hv_abd")));
    }
}
