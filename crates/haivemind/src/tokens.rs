//! `haivemind token create|list|revoke`.

use anyhow::Result;
use haivemind_core::Config;
use haivemind_core::audit::AuditEvent;
use haivemind_core::config::ToolProfile;
use haivemind_core::security::Role;
use haivemind_core::time_format::ms_to_rfc3339;
use haivemind_mcp::render::token_json;
use haivemind_store::TokenRecord;
use serde_json::{Value, json};

use crate::cli::TokenCommand;
use crate::node::{open, open_audit};
use crate::output::Printer;

pub fn run(config: &Config, printer: &Printer, action: TokenCommand) -> Result<()> {
    let store = open(config)?;
    let audit = open_audit(config);
    let record = |event: AuditEvent, token: &TokenRecord| {
        if let Some(audit) = &audit {
            audit.record(
                event
                    .with("token_id", token.id.clone())
                    .with("token_name", token.name.clone())
                    .with("role", token.role.as_str())
                    .with("by", "cli"),
            );
        }
    };
    match action {
        TokenCommand::Create {
            role,
            name,
            profile,
        } => {
            let role = Role::parse("--role", &role)?;
            let profile = profile
                .map(|p| ToolProfile::parse("--profile", &p))
                .transpose()?;
            let made = store.create_token_with_profile(name.as_deref(), role, profile)?;
            record(AuditEvent::new("token_created"), &made.record);
            if printer.json {
                let mut value = token_json(&made.record);
                value["token"] = json!(made.secret);
                printer.done(value, "");
            } else {
                eprintln!(
                    "created {} token {} ({}); it is shown once, below. Clients send it as `Authorization: Bearer <token>`.",
                    made.record.role, made.record.id, made.record.name
                );
                printer.done(Value::Null, &made.secret);
            }
        }
        TokenCommand::List => {
            let tokens = store.list_tokens()?;
            if printer.json {
                let list: Vec<Value> = tokens.iter().map(token_json).collect();
                printer.done(json!({ "tokens": list, "total": tokens.len() }), "");
            } else if tokens.is_empty() {
                printer.done(
                    Value::Null,
                    "no tokens; make one with `haivemind token create --role agent`",
                );
            } else {
                let mut text = format!(
                    "{:<16} {:<24} {:<8} {:<7} {:<24} {:<24} {}",
                    "ID", "NAME", "ROLE", "TOOLS", "CREATED", "LAST USED", "REVOKED"
                );
                for t in &tokens {
                    let time =
                        |ms: Option<i64>| ms.map(ms_to_rfc3339).unwrap_or_else(|| "-".into());
                    text.push_str(&format!(
                        "\n{:<16} {:<24} {:<8} {:<7} {:<24} {:<24} {}",
                        t.id,
                        t.name,
                        t.role.as_str(),
                        t.tool_profile.map_or("config", |p| p.as_str()),
                        time(Some(t.created_at_ms)),
                        time(t.last_used_ms),
                        time(t.revoked_at_ms),
                    ));
                    if let Some(oauth) = &t.oauth {
                        text.push_str(&format!(
                            "\n{:<16} OAuth grant {} for client {}, approved by {}, expires {}",
                            "",
                            oauth.grant_id,
                            oauth.client_id,
                            oauth.parent_id,
                            ms_to_rfc3339(oauth.expires_at_ms)
                        ));
                    }
                }
                printer.done(Value::Null, &text);
            }
        }
        TokenCommand::Revoke { token } => {
            let revoked = store.revoke_token(&token)?;
            record(AuditEvent::new("token_revoked"), &revoked);
            printer.done(
                token_json(&revoked),
                &format!(
                    "revoked {} ({}); servers refuse it within a second",
                    revoked.id, revoked.name
                ),
            );
        }
    }
    Ok(())
}
