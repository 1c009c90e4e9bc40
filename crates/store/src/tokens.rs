//! API tokens for the HTTP services: made here, stored as SHA-256 digests, never as text.
//!
//! A token is 32 random bytes shown once as `hv_` and 64 hex digits. Tokens carry enough
//! entropy that a plain SHA-256 is the right digest (a slow password hash protects guessable
//! secrets; these are not guessable). Each token also has a public id (`tok_…`) that logs,
//! the audit log and `token list` use, so the secret never has to be written anywhere again.
//!
//! Tokens live in this node's database but are not memories: they never enter the
//! operation log and never replicate.

use crate::db::{OptionalExtension, params};
use haivemind_core::InvalidInput;
use haivemind_core::config::ToolProfile;
use haivemind_core::security::Role;
use haivemind_core::time_format::now_ms;
use sha2::{Digest, Sha256};

use crate::{Store, StoreError};

/// The prefix of every token secret, so a leaked one is recognisable in a scan.
pub const TOKEN_PREFIX: &str = "hv_";

/// A stored token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public id, `tok_` and 12 hex digits.
    pub id: String,
    /// Its name, for people.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// When it was made, epoch milliseconds.
    pub created_at_ms: i64,
    /// When it was last seen, to the minute; `None` if never.
    pub last_used_ms: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at_ms: Option<i64>,
    /// The tools `tools/list` offers it, if it sets its own.
    pub tool_profile: Option<ToolProfile>,
    /// For an OAuth access token: the grant it belongs to.
    pub oauth: Option<OAuthOrigin>,
}

/// Where an OAuth access token came from (`crates/server/src/oauth.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthOrigin {
    /// The token whose holder approved the grant; revoking it revokes this one.
    pub parent_id: String,
    /// The registered client it was issued to.
    pub client_id: String,
    /// The grant (one authorization and its refreshes).
    pub grant_id: String,
    /// The resource (RFC 8707) it may be presented to.
    pub audience: String,
    /// When it stops working, epoch milliseconds.
    pub expires_at_ms: i64,
}

/// A token just made: the only moment its secret exists outside the caller's hands.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// The stored record.
    pub record: TokenRecord,
    /// The secret, to be shown once.
    pub secret: String,
}

/// The SHA-256 digest a token is stored and compared as.
pub fn token_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.trim().as_bytes()).into()
}

fn random_hex(bytes: usize) -> Result<String, StoreError> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|e| StoreError::Io {
        path: "getrandom".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

pub(crate) fn random_secret() -> Result<String, StoreError> {
    Ok(format!("{TOKEN_PREFIX}{}", random_hex(32)?))
}

pub(crate) fn new_token_id() -> Result<String, StoreError> {
    Ok(format!("tok_{}", random_hex(6)?))
}

pub(crate) fn random_id(prefix: &str) -> Result<String, StoreError> {
    Ok(format!("{prefix}{}", random_hex(12)?))
}

pub(crate) fn role_of(text: &str) -> Result<Role, StoreError> {
    Role::parse("role", text).map_err(|_| StoreError::Corrupt {
        record: "api_tokens.role".into(),
        detail: format!("unknown role {text:?}"),
    })
}

fn record_of(row: &crate::db::Row<'_>) -> crate::db::Result<(TokenRecord, String)> {
    let profile: Option<String> = row.get(6)?;
    let parent_id: Option<String> = row.get(7)?;
    let oauth = match parent_id {
        Some(parent_id) => Some(OAuthOrigin {
            parent_id,
            client_id: row.get::<_, Option<String>>(8)?.unwrap_or_default(),
            grant_id: row.get::<_, Option<String>>(9)?.unwrap_or_default(),
            audience: row.get::<_, Option<String>>(10)?.unwrap_or_default(),
            expires_at_ms: row.get::<_, Option<i64>>(11)?.unwrap_or(0),
        }),
        None => None,
    };
    Ok((
        TokenRecord {
            id: row.get(0)?,
            name: row.get(1)?,
            role: Role::Readonly, // replaced below, after the role text is checked
            created_at_ms: row.get(3)?,
            last_used_ms: row.get(4)?,
            revoked_at_ms: row.get(5)?,
            // A profile this binary does not know offers every tool rather than none.
            tool_profile: profile.and_then(|p| ToolProfile::parse("tool_profile", &p).ok()),
            oauth,
        },
        row.get::<_, String>(2)?,
    ))
}

const COLUMNS: &str = "id, name, role, created_at, last_used_at, revoked_at, tool_profile, \
                       parent_id, client_id, grant_id, audience, expires_at";

impl Store {
    /// Makes a token with `role`, named `name` (or after its id).
    pub fn create_token(&self, name: Option<&str>, role: Role) -> Result<NewToken, StoreError> {
        self.create_token_with_profile(name, role, None)
    }

    /// Makes a token with `role` whose `tools/list` offers `tool_profile` (when given).
    pub fn create_token_with_profile(
        &self,
        name: Option<&str>,
        role: Role,
        tool_profile: Option<ToolProfile>,
    ) -> Result<NewToken, StoreError> {
        let id = new_token_id()?;
        let name = match name.map(str::trim) {
            Some("") => return Err(InvalidInput::new("name", "must not be blank").into()),
            Some(name) if name.len() > 128 => {
                return Err(InvalidInput::new("name", "must be at most 128 bytes").into());
            }
            Some(name) => name.to_string(),
            None => id.clone(),
        };
        let secret = random_secret()?;
        let digest = token_digest(&secret);
        let created_at_ms = now_ms();
        self.write(|tx, _| {
            let taken: Option<String> = tx
                .query_row(
                    "SELECT id FROM api_tokens WHERE name = ?1 AND revoked_at IS NULL",
                    params![name],
                    |row| row.get(0),
                )
                .optional()?;
            if taken.is_some() {
                return Err(InvalidInput::new(
                    "name",
                    format!(
                        "a live token is already named {name:?}; revoke it or pick another name"
                    ),
                )
                .into());
            }
            tx.execute(
                "INSERT INTO api_tokens (id, name, role, digest, created_at, tool_profile) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    id,
                    name,
                    role.as_str(),
                    &digest[..],
                    created_at_ms,
                    tool_profile.map(ToolProfile::as_str)
                ],
            )?;
            Ok(())
        })?;
        Ok(NewToken {
            record: TokenRecord {
                id,
                name,
                role,
                created_at_ms,
                last_used_ms: None,
                revoked_at_ms: None,
                tool_profile,
                oauth: None,
            },
            secret,
        })
    }

    /// Every token, revoked ones too, oldest first.
    pub fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        Ok(self
            .tokens_with_digests(false)?
            .into_iter()
            .map(|(record, _)| record)
            .collect())
    }

    /// Live tokens with their digests, for the server's authenticator: neither revoked nor
    /// expired.
    pub fn live_token_digests(&self) -> Result<Vec<(TokenRecord, [u8; 32])>, StoreError> {
        self.tokens_with_digests(true)
    }

    fn tokens_with_digests(
        &self,
        live_only: bool,
    ) -> Result<Vec<(TokenRecord, [u8; 32])>, StoreError> {
        let reader = self.reader()?;
        let sql = format!(
            "SELECT {COLUMNS}, digest FROM api_tokens WHERE ?1 = 0 OR (revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > ?2)) ORDER BY created_at, id"
        );
        let mut statement = reader.prepare(&sql)?;
        let rows = statement.query_map(params![i64::from(live_only), now_ms()], |row| {
            let (record, role) = record_of(row)?;
            let digest: Vec<u8> = row.get(12)?;
            Ok((record, role, digest))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut record, role, digest) = row?;
            // One damaged row must not stop every other token (and every revocation) from
            // being read: it is skipped, and so refused.
            record.role = match role_of(&role) {
                Ok(role) => role,
                Err(error) => {
                    tracing::error!(token = %record.id, %error, "token skipped");
                    continue;
                }
            };
            let digest: [u8; 32] = digest.try_into().map_err(|_| StoreError::Corrupt {
                record: format!("api_tokens {}", record.id),
                detail: "digest is not 32 bytes".into(),
            })?;
            out.push((record, digest));
        }
        Ok(out)
    }

    /// Revokes the live token with this id or name. Revoking twice is not an error: the
    /// second call answers with the record as it was revoked.
    pub fn revoke_token(&self, id_or_name: &str) -> Result<TokenRecord, StoreError> {
        let key = id_or_name.trim();
        let at = now_ms();
        self.write(|tx, _| {
            let found = tx
                .query_row(
                    &format!(
                        "SELECT {COLUMNS} FROM api_tokens WHERE id = ?1 \
                         OR (name = ?1 AND revoked_at IS NULL) ORDER BY revoked_at IS NULL DESC LIMIT 1"
                    ),
                    [key],
                    record_of,
                )
                .optional()?;
            let Some((mut record, role)) = found else {
                // Not found, not invalid: `DELETE /api/v1/tokens/{id}` answers 404 for it.
                return Err(StoreError::RecordNotFound {
                    kind: "token",
                    id: format!("{:?}", haivemind_core::error::excerpt(key)),
                });
            };
            record.role = role_of(&role)?;
            if record.revoked_at_ms.is_none() {
                tx.execute(
                    "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1",
                    params![record.id, at],
                )?;
                record.revoked_at_ms = Some(at);
            }
            // What its holder approved goes with it: OAuth access and refresh tokens.
            crate::oauth::revoke_children(tx, &record.id, at)?;
            Ok(record)
        })
    }

    /// Notes that the token was used at `at_ms`. Callers do this at most once a minute per
    /// token, so it costs nothing measurable.
    pub fn touch_token(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        self.write(|tx, _| {
            tx.execute(
                "UPDATE api_tokens SET last_used_at = ?2 WHERE id = ?1",
                params![id, at_ms],
            )?;
            Ok(())
        })
    }
}
