//! OAuth 2.1 state that must outlive a restart: registered clients (RFC 7591, public
//! clients only) and grants. A grant is what one approval on the consent page made: an
//! access token (an `api_tokens` row naming its parent, client, grant, audience and
//! expiry) and a refresh token. Refreshing uses the refresh token up and issues a new pair
//! in the same grant; presenting a used refresh token again means it leaked, so the whole
//! grant is revoked (RFC 9700 §4.14.2). Authorization codes live a minute and only in the
//! server's memory (`crates/server/src/oauth.rs`).
//!
//! Secrets are stored as SHA-256 digests, like every token (see `tokens.rs`).

use haivemind_core::InvalidInput;
use haivemind_core::config::ToolProfile;
use haivemind_core::security::Role;
use haivemind_core::time_format::now_ms;

use crate::db::{OptionalExtension, Transaction, params};
use crate::tokens::{new_token_id, random_id, random_secret, role_of};
use crate::{Store, StoreError, TokenRecord, token_digest};

/// The most clients that may be registered at once. Registration needs no token, so when
/// the table is full the oldest client that never obtained a token makes room.
pub const MAX_OAUTH_CLIENTS: usize = 1_000;

/// A registered client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClient {
    /// `client_id`, `hvc_` and 24 hex digits.
    pub id: String,
    /// `client_name`, for the consent page.
    pub name: String,
    /// The redirect URIs it registered, matched exactly (loopback ports aside).
    pub redirect_uris: Vec<String>,
    /// When it registered, epoch milliseconds.
    pub created_at_ms: i64,
}

/// What one approval grants.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    /// The client it is issued to.
    pub client_id: String,
    /// The client's name, for the access token's name.
    pub client_name: String,
    /// The token whose holder approved it.
    pub parent_id: String,
    /// At most the approving token's role.
    pub role: Role,
    /// The resource (RFC 8707) the tokens are for.
    pub audience: String,
    /// The approving token's tool profile, carried over.
    pub tool_profile: Option<ToolProfile>,
    /// How long the access token lives.
    pub access_ttl_ms: i64,
    /// How long the refresh token lives.
    pub refresh_ttl_ms: i64,
}

/// An access token and a refresh token, just issued: the only moment their secrets exist
/// outside the client.
#[derive(Debug, Clone)]
pub struct IssuedGrant {
    /// The access token's secret.
    pub access_token: String,
    /// The refresh token's secret.
    pub refresh_token: String,
    /// The access token's record.
    pub record: TokenRecord,
    /// Seconds until the access token expires.
    pub expires_in_secs: i64,
}

/// Why a refresh token was refused. Each is `invalid_grant` to the client; the reason is
/// for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshRefusal {
    /// No such refresh token.
    Unknown,
    /// Used before: the grant is revoked now.
    Reused,
    /// Revoked, with its grant or its approving token.
    Revoked,
    /// Past its lifetime.
    Expired,
    /// Issued to another client.
    WrongClient,
    /// Issued for another resource.
    WrongResource,
    /// The token that approved the grant is gone.
    ParentRevoked,
}

impl RefreshRefusal {
    /// The reason as the audit log names it.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshRefusal::Unknown => "unknown_refresh_token",
            RefreshRefusal::Reused => "refresh_token_reused",
            RefreshRefusal::Revoked => "refresh_token_revoked",
            RefreshRefusal::Expired => "refresh_token_expired",
            RefreshRefusal::WrongClient => "wrong_client",
            RefreshRefusal::WrongResource => "wrong_resource",
            RefreshRefusal::ParentRevoked => "approving_token_revoked",
        }
    }
}

/// The outcome of presenting a refresh token.
#[derive(Debug, Clone)]
pub enum Refreshed {
    /// A new pair in the same grant; the presented refresh token is used up.
    Issued(Box<IssuedGrant>),
    /// Refused, and why.
    Refused(RefreshRefusal),
}

impl Store {
    /// Registers a public client (RFC 7591). The caller has validated the redirect URIs.
    pub fn register_oauth_client(
        &self,
        name: &str,
        redirect_uris: &[String],
    ) -> Result<OAuthClient, StoreError> {
        let client = OAuthClient {
            id: random_id("hvc_")?,
            name: name.to_string(),
            redirect_uris: redirect_uris.to_vec(),
            created_at_ms: now_ms(),
        };
        let uris = serde_json::to_string(&client.redirect_uris)
            .map_err(|e| InvalidInput::new("redirect_uris", format!("cannot be stored: {e}")))?;
        self.write(|tx, _| {
            let count: i64 = tx.query_row("SELECT count(*) FROM oauth_clients", params![], |r| r.get::<_, i64>(0))?;
            if count >= MAX_OAUTH_CLIENTS as i64 {
                let removed = tx.execute(
                    "DELETE FROM oauth_clients WHERE id = (SELECT c.id FROM oauth_clients c \
                     WHERE NOT EXISTS (SELECT 1 FROM api_tokens t WHERE t.client_id = c.id) \
                     ORDER BY c.created_at, c.id LIMIT 1)",
                    params![],
                )?;
                if removed == 0 {
                    return Err(InvalidInput::new(
                        "client",
                        format!(
                            "{MAX_OAUTH_CLIENTS} clients are registered and each holds a grant; revoke some first"
                        ),
                    )
                    .into());
                }
            }
            tx.execute(
                "INSERT INTO oauth_clients (id, name, redirect_uris, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![client.id, client.name, uris, client.created_at_ms],
            )?;
            Ok(())
        })?;
        Ok(client)
    }

    /// The registered client `id`, if there is one.
    pub fn oauth_client(&self, id: &str) -> Result<Option<OAuthClient>, StoreError> {
        let reader = self.reader()?;
        let row = reader
            .query_row(
                "SELECT id, name, redirect_uris, created_at FROM oauth_clients WHERE id = ?1",
                params![id],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                },
            )
            .optional()?;
        let Some((id, name, uris, created_at_ms)) = row else {
            return Ok(None);
        };
        let redirect_uris = serde_json::from_str(&uris).map_err(|e| StoreError::Corrupt {
            record: format!("oauth_clients {id}"),
            detail: format!("redirect_uris: {e}"),
        })?;
        Ok(Some(OAuthClient {
            id,
            name,
            redirect_uris,
            created_at_ms,
        }))
    }

    /// Issues the first access and refresh token of a new grant.
    pub fn issue_oauth_grant(&self, request: &GrantRequest) -> Result<IssuedGrant, StoreError> {
        let grant_id = random_id("grant_")?;
        self.write(|tx, _| {
            prune_expired(tx)?;
            issue(tx, request, &grant_id)
        })
    }

    /// Trades a refresh token for a new pair. `parent_is_live` answers for approving
    /// tokens that are not in the database (those of the config file).
    pub fn refresh_oauth_grant(
        &self,
        refresh_token: &str,
        client_id: &str,
        resource: Option<&str>,
        parent_is_live: impl Fn(&str) -> bool,
        access_ttl_ms: i64,
    ) -> Result<Refreshed, StoreError> {
        let digest = token_digest(refresh_token);
        let now = now_ms();
        self.write(|tx, _| {
            let found = tx
                .query_row(
                    "SELECT grant_id, client_id, parent_id, role, audience, tool_profile, \
                     expires_at, used_at, revoked_at FROM oauth_refresh_tokens WHERE digest = ?1",
                    params![&digest[..]],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, String>(3)?,
                            row.get::<_, String>(4)?,
                            row.get::<_, Option<String>>(5)?,
                            row.get::<_, i64>(6)?,
                            row.get::<_, Option<i64>>(7)?,
                            row.get::<_, Option<i64>>(8)?,
                        ))
                    },
                )
                .optional()?;
            let Some((grant_id, owner, parent_id, role, audience, profile, expires, used, revoked)) =
                found
            else {
                return Ok(Refreshed::Refused(RefreshRefusal::Unknown));
            };
            let refusal = if revoked.is_some() {
                Some(RefreshRefusal::Revoked)
            } else if used.is_some() {
                revoke_grant(tx, &grant_id, now)?;
                Some(RefreshRefusal::Reused)
            } else if expires <= now {
                Some(RefreshRefusal::Expired)
            } else if owner != client_id {
                Some(RefreshRefusal::WrongClient)
            } else if resource.is_some_and(|r| r != audience) {
                Some(RefreshRefusal::WrongResource)
            } else if !parent_live(tx, &parent_id, &parent_is_live)? {
                Some(RefreshRefusal::ParentRevoked)
            } else {
                None
            };
            if let Some(refusal) = refusal {
                return Ok(Refreshed::Refused(refusal));
            }
            tx.execute(
                "UPDATE oauth_refresh_tokens SET used_at = ?2 WHERE digest = ?1",
                params![&digest[..], now],
            )?;
            let client_name: String = tx
                .query_row(
                    "SELECT name FROM oauth_clients WHERE id = ?1",
                    params![owner],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or_else(|| owner.clone());
            let request = GrantRequest {
                client_id: owner.clone(),
                client_name,
                parent_id: parent_id.clone(),
                role: role_of(&role)?,
                audience,
                tool_profile: profile.and_then(|p| ToolProfile::parse("tool_profile", &p).ok()),
                access_ttl_ms,
                // The grant's lifetime does not grow by refreshing.
                refresh_ttl_ms: expires - now,
            };
            let issued = issue(tx, &request, &grant_id)?;
            Ok(Refreshed::Issued(Box::new(issued)))
        })
    }
}

fn parent_live(
    tx: &Transaction<'_>,
    parent_id: &str,
    parent_is_live: &impl Fn(&str) -> bool,
) -> Result<bool, StoreError> {
    if !parent_id.starts_with("tok_") {
        return Ok(parent_is_live(parent_id));
    }
    let live: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM api_tokens WHERE id = ?1 AND revoked_at IS NULL",
            params![parent_id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(live.is_some())
}

fn issue(
    tx: &Transaction<'_>,
    request: &GrantRequest,
    grant_id: &str,
) -> Result<IssuedGrant, StoreError> {
    let now = now_ms();
    let id = new_token_id()?;
    let access_token = random_secret()?;
    let refresh_token = random_secret()?;
    let client: String = request.client_name.chars().take(64).collect();
    let name = format!("{client} (oauth {id})");
    let expires_at_ms = now + request.access_ttl_ms;
    let profile = request.tool_profile.map(ToolProfile::as_str);
    tx.execute(
        "INSERT INTO api_tokens (id, name, role, digest, created_at, tool_profile, parent_id, \
         client_id, grant_id, audience, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            id,
            name,
            request.role.as_str(),
            &token_digest(&access_token)[..],
            now,
            profile,
            request.parent_id,
            request.client_id,
            grant_id,
            request.audience,
            expires_at_ms
        ],
    )?;
    tx.execute(
        "INSERT INTO oauth_refresh_tokens (digest, grant_id, client_id, parent_id, role, \
         audience, tool_profile, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            &token_digest(&refresh_token)[..],
            grant_id,
            request.client_id,
            request.parent_id,
            request.role.as_str(),
            request.audience,
            profile,
            now,
            now + request.refresh_ttl_ms
        ],
    )?;
    Ok(IssuedGrant {
        access_token,
        refresh_token,
        record: TokenRecord {
            id,
            name,
            role: request.role,
            created_at_ms: now,
            last_used_ms: None,
            revoked_at_ms: None,
            tool_profile: request.tool_profile,
            oauth: Some(crate::OAuthOrigin {
                parent_id: request.parent_id.clone(),
                client_id: request.client_id.clone(),
                grant_id: grant_id.to_string(),
                audience: request.audience.clone(),
                expires_at_ms,
            }),
        },
        expires_in_secs: request.access_ttl_ms / 1000,
    })
}

/// Revokes every token of a grant.
fn revoke_grant(tx: &Transaction<'_>, grant_id: &str, at: i64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE api_tokens SET revoked_at = ?2 WHERE grant_id = ?1 AND revoked_at IS NULL",
        params![grant_id, at],
    )?;
    tx.execute(
        "UPDATE oauth_refresh_tokens SET revoked_at = ?2 WHERE grant_id = ?1 AND revoked_at IS NULL",
        params![grant_id, at],
    )?;
    Ok(())
}

/// Revokes what the holder of token `parent_id` approved (when it is revoked).
pub(crate) fn revoke_children(
    tx: &Transaction<'_>,
    parent_id: &str,
    at: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE api_tokens SET revoked_at = ?2 WHERE parent_id = ?1 AND revoked_at IS NULL",
        params![parent_id, at],
    )?;
    tx.execute(
        "UPDATE oauth_refresh_tokens SET revoked_at = ?2 WHERE parent_id = ?1 AND revoked_at IS NULL",
        params![parent_id, at],
    )?;
    // A revoked access token is itself a parent of nothing, but its grant's refresh
    // tokens must stop too.
    tx.execute(
        "UPDATE oauth_refresh_tokens SET revoked_at = ?2 WHERE revoked_at IS NULL AND grant_id IN \
         (SELECT grant_id FROM api_tokens WHERE id = ?1 AND grant_id IS NOT NULL)",
        params![parent_id, at],
    )?;
    Ok(())
}

/// Forgets grants' tokens a week after they expired, so the tables do not grow without
/// bound (a week keeps them in `token list` long enough to read what happened).
fn prune_expired(tx: &Transaction<'_>) -> Result<(), StoreError> {
    let before = now_ms() - 7 * 24 * 3_600_000;
    tx.execute(
        "DELETE FROM api_tokens WHERE expires_at IS NOT NULL AND expires_at < ?1",
        params![before],
    )?;
    tx.execute(
        "DELETE FROM oauth_refresh_tokens WHERE expires_at < ?1",
        params![before],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions::new(dir.path().join("db"), "m")).unwrap();
        (dir, store)
    }

    fn grant(store: &Store, parent: &str, client: &OAuthClient) -> IssuedGrant {
        store
            .issue_oauth_grant(&GrantRequest {
                client_id: client.id.clone(),
                client_name: client.name.clone(),
                parent_id: parent.into(),
                role: Role::Agent,
                audience: "http://127.0.0.1:8900/mcp".into(),
                tool_profile: Some(ToolProfile::Core),
                access_ttl_ms: 3_600_000,
                refresh_ttl_ms: 86_400_000,
            })
            .unwrap()
    }

    fn live(store: &Store, secret: &str) -> bool {
        let digest = token_digest(secret);
        store
            .live_token_digests()
            .unwrap()
            .iter()
            .any(|(_, d)| *d == digest)
    }

    #[test]
    fn a_refresh_token_works_once_and_its_reuse_revokes_the_grant() {
        let (_dir, store) = store();
        let parent = store.create_token(Some("person"), Role::Admin).unwrap();
        let client = store
            .register_oauth_client("Claude", &["http://127.0.0.1/cb".into()])
            .unwrap();
        assert_eq!(
            store.oauth_client(&client.id).unwrap(),
            Some(client.clone())
        );
        let first = grant(&store, &parent.record.id, &client);
        assert!(live(&store, &first.access_token));
        let refresh = |secret: &str, client_id: &str| {
            store
                .refresh_oauth_grant(secret, client_id, None, |_| false, 3_600_000)
                .unwrap()
        };
        assert!(matches!(
            refresh(&first.refresh_token, "hvc_other"),
            Refreshed::Refused(RefreshRefusal::WrongClient)
        ));
        let Refreshed::Issued(second) = refresh(&first.refresh_token, &client.id) else {
            panic!("a fresh refresh token is accepted");
        };
        assert_eq!(second.record.tool_profile, Some(ToolProfile::Core));
        assert!(live(&store, &second.access_token));
        // The old refresh token again: someone else holds it, so nothing of the grant lives.
        assert!(matches!(
            refresh(&first.refresh_token, &client.id),
            Refreshed::Refused(RefreshRefusal::Reused)
        ));
        assert!(!live(&store, &first.access_token));
        assert!(!live(&store, &second.access_token));
        assert!(matches!(
            refresh(&second.refresh_token, &client.id),
            Refreshed::Refused(RefreshRefusal::Revoked)
        ));
    }

    #[test]
    fn revoking_the_approving_token_revokes_what_it_approved() {
        let (_dir, store) = store();
        let parent = store.create_token(Some("person"), Role::Agent).unwrap();
        let other = store.create_token(Some("other"), Role::Agent).unwrap();
        let client = store
            .register_oauth_client("IDE", &["http://127.0.0.1/cb".into()])
            .unwrap();
        let mine = grant(&store, &parent.record.id, &client);
        let theirs = grant(&store, &other.record.id, &client);
        store.revoke_token("person").unwrap();
        assert!(!live(&store, &mine.access_token));
        assert!(live(&store, &theirs.access_token));
        assert!(matches!(
            store
                .refresh_oauth_grant(&mine.refresh_token, &client.id, None, |_| true, 1000)
                .unwrap(),
            Refreshed::Refused(RefreshRefusal::Revoked)
        ));
        let listed = store.list_tokens().unwrap();
        let record = listed.iter().find(|t| t.id == mine.record.id).unwrap();
        assert!(record.revoked_at_ms.is_some());
        assert_eq!(record.oauth.as_ref().unwrap().parent_id, parent.record.id);
    }

    #[test]
    fn expired_access_tokens_stop_and_configured_parents_are_asked() {
        let (_dir, store) = store();
        let client = store
            .register_oauth_client("IDE", &["http://127.0.0.1/cb".into()])
            .unwrap();
        let issued = store
            .issue_oauth_grant(&GrantRequest {
                client_id: client.id.clone(),
                client_name: client.name.clone(),
                parent_id: "config:api_token".into(),
                role: Role::Readonly,
                audience: "http://127.0.0.1:8900/mcp".into(),
                tool_profile: None,
                access_ttl_ms: -1,
                refresh_ttl_ms: 86_400_000,
            })
            .unwrap();
        assert!(!live(&store, &issued.access_token), "expired at once");
        assert!(matches!(
            store
                .refresh_oauth_grant(&issued.refresh_token, &client.id, None, |_| false, 1000)
                .unwrap(),
            Refreshed::Refused(RefreshRefusal::ParentRevoked)
        ));
        assert!(matches!(
            store
                .refresh_oauth_grant(
                    &issued.refresh_token,
                    &client.id,
                    None,
                    |id| id == "config:api_token",
                    1000
                )
                .unwrap(),
            Refreshed::Issued(..)
        ));
    }
}
